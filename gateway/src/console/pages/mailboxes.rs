//! The main page (the mailbox table) and the mailbox pages: create, edit, delete, reset
//! password, setup hints. Every change is an API call ([`SignedIn::invoke`]); a failure is
//! shown in the page with the API's message.

use axum::extract::Path;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use minijinja::context;
use minijinja::value::Value;

use super::format;
use super::table::{self, Column, RawQuery, View};
use crate::api::{ListenerInfo, ListenerState, Params};
use crate::console::session::{self, Failure, Form, SignedIn};
use crate::mailbox::{parse_id_or_address, MailboxId};
use crate::service::MailboxInfo;
use crate::store::MailboxStatus;

/// Notices the main page shows after a change (`?notice=`): a fixed list, so the query
/// string can never put text of its own into the page.
const NOTICES: &[(&str, &str)] = &[
    ("created", "notice-mailbox-created"),
    ("saved", "notice-mailbox-saved"),
    ("deleted", "notice-mailbox-deleted"),
    ("password-reset", "notice-mailbox-password-reset"),
];

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
        .collect()
}

/// The id in a mailbox page's path; anything else is a 404 before the API is asked.
fn path_id(id: &str) -> Option<MailboxId> {
    parse_id_or_address(id).ok()
}

fn no_such_mailbox(admin: &SignedIn) -> Response {
    admin.failure_page(&Failure {
        status: StatusCode::NOT_FOUND,
        message: crate::console::i18n::text(admin.lang(), "error-not-found"),
    })
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(value).map_err(|e| Failure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("unexpected answer from the API: {e}"),
    })
}

async fn get_mailbox(admin: &SignedIn, id: &MailboxId) -> Result<MailboxInfo, Failure> {
    decode(
        admin
            .invoke("GetMailbox", params(&[("id", id.as_str())]))
            .await?,
    )
}

/// One mailbox as a template sees it.
fn row(admin: &SignedIn, mailbox: &MailboxInfo) -> Value {
    let lang = admin.lang();
    context! {
        id => mailbox.id.as_str(),
        address => &mailbox.address,
        name => &mailbox.name,
        description => &mailbox.description,
        status => mailbox.status.to_string(),
        status_key => format!("status-{}", mailbox.status),
        active => mailbox.status == MailboxStatus::Active,
        messages => format::count(mailbox.message_count, lang),
        message_count => mailbox.message_count,
        size => format::size(mailbox.message_bytes, lang),
        oldest => mailbox.oldest_message_at.map(format::timestamp),
        blocked => table::blocked(mailbox)
            .into_iter()
            .map(|b| b.message_key())
            .collect::<Vec<_>>(),
    }
}

/// `GET /console/`: the mailbox table, sorted and filtered as the query string says.
pub async fn main_page(admin: SignedIn, uri: Uri) -> Response {
    let query = uri.query().map(parse_query).unwrap_or_default();
    let view = View::from_query(&query);
    let (mailboxes, error) = match admin.invoke("GetMailboxes", Params::new()).await {
        Ok(value) => match decode::<Vec<MailboxInfo>>(value) {
            Ok(list) => (list, None),
            Err(failure) => (Vec::new(), Some(failure.message)),
        },
        Err(failure) => (Vec::new(), Some(failure.message)),
    };
    let total = mailboxes.len();
    let shown = view.apply(mailboxes);
    let rows: Vec<Value> = shown.iter().map(|m| row(&admin, m)).collect();
    let columns: Vec<Value> = Column::ALL
        .iter()
        .map(|&column| {
            let sorted = (view.sort == column).then(|| view.order.as_str());
            context! {
                name => column.as_str(),
                label => format!("column-{}", column.as_str()),
                link => format!("{}{}", session::MAIN_PATH, view.sort_link(column)),
                sorted => sorted,
                aria_sort => match sorted {
                    Some("asc") => "ascending",
                    Some(_) => "descending",
                    None => "none",
                },
            }
        })
        .collect();
    let notice = query
        .notice
        .as_deref()
        .and_then(|n| NOTICES.iter().find(|(name, _)| *name == n))
        .map(|(_, key)| *key);
    admin.page(
        "main.html",
        context! {
            mailboxes => rows,
            columns => columns,
            sort => view.sort.as_str(),
            order => view.order.as_str(),
            filter => view.filter,
            total => total,
            notice => notice,
            error => error,
        },
    )
}

/// The query string's pairs; repeated keys keep the first value.
fn parse_query(query: &str) -> RawQuery {
    let mut raw = RawQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "sort" => &mut raw.sort,
            "order" => &mut raw.order,
            "q" => &mut raw.q,
            "notice" => &mut raw.notice,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    raw
}

/// `GET /console/mailboxes/new`.
pub async fn create_page(admin: SignedIn) -> Response {
    admin.page(
        "mailbox_create.html",
        context! { name => "", description => "", error => None::<String> },
    )
}

/// `POST /console/mailboxes/new`: creates the mailbox and shows its password, this once.
pub async fn create(form: Form<SignedIn>) -> Response {
    let Form {
        guard: admin,
        fields,
    } = form;
    let name = fields.get("name").to_owned();
    let description = fields.get("description").to_owned();
    let mut call = params(&[("name", &name)]);
    if !description.trim().is_empty() {
        call.insert("description".into(), description.clone().into());
    }
    let created = match admin.invoke("CreateMailbox", call).await {
        Ok(value) => value,
        Err(failure) => {
            return crate::console::render::page_with_status(
                failure.status,
                admin.viewer(),
                "mailbox_create.html",
                context! { name => name, description => description, error => failure.message },
            )
        }
    };
    password_page(&admin, created, "created")
}

/// The page that shows a mailbox's new password once (after create or reset). The value
/// goes into this one response only: never stored, never in a URL.
fn password_page(admin: &SignedIn, created: serde_json::Value, kind: &str) -> Response {
    let password = created["password"].as_str().unwrap_or_default().to_owned();
    let mailbox: MailboxInfo = match decode(created) {
        Ok(mailbox) => mailbox,
        Err(failure) => return admin.failure_page(&failure),
    };
    admin.page(
        "mailbox_password.html",
        context! {
            mailbox => row(admin, &mailbox),
            password => password,
            kind => kind,
            error => None::<String>,
        },
    )
}

/// `POST /console/mailboxes/{id}/acknowledge`: the password page's Continue. Without the
/// box ticked the page comes again, without the password (it is gone for good).
pub async fn acknowledge(Path(id): Path<String>, form: Form<SignedIn>) -> Response {
    let Form {
        guard: admin,
        fields,
    } = form;
    let Some(id) = path_id(&id) else {
        return no_such_mailbox(&admin);
    };
    let kind = match fields.get("kind") {
        "reset" => "reset",
        _ => "created",
    };
    if fields.checked("acknowledge") {
        let notice = if kind == "reset" {
            "password-reset"
        } else {
            "created"
        };
        return session::redirect(&format!("{}?notice={notice}", session::MAIN_PATH));
    }
    let mailbox = match get_mailbox(&admin, &id).await {
        Ok(mailbox) => mailbox,
        Err(failure) => return admin.failure_page(&failure),
    };
    crate::console::render::page_with_status(
        StatusCode::BAD_REQUEST,
        admin.viewer(),
        "mailbox_password.html",
        context! {
            mailbox => row(&admin, &mailbox),
            password => None::<String>,
            kind => kind,
            error => crate::console::i18n::text(admin.lang(), "password-acknowledge-required"),
        },
    )
}

/// `GET /console/mailboxes/{id}/edit`.
pub async fn edit_page(admin: SignedIn, Path(id): Path<String>) -> Response {
    let Some(id) = path_id(&id) else {
        return no_such_mailbox(&admin);
    };
    match get_mailbox(&admin, &id).await {
        Ok(mailbox) => admin.page(
            "mailbox_edit.html",
            context! {
                mailbox => row(&admin, &mailbox),
                name => &mailbox.name,
                description => &mailbox.description,
                status => mailbox.status.to_string(),
                error => None::<String>,
            },
        ),
        Err(failure) => admin.failure_page(&failure),
    }
}

/// `POST /console/mailboxes/{id}/edit`: name, description and status in one call.
pub async fn edit(Path(id): Path<String>, form: Form<SignedIn>) -> Response {
    let Form {
        guard: admin,
        fields,
    } = form;
    let Some(id) = path_id(&id) else {
        return no_such_mailbox(&admin);
    };
    let (name, description, status) = (
        fields.get("name").to_owned(),
        fields.get("description").to_owned(),
        fields.get("status").to_owned(),
    );
    let call = params(&[
        ("id", id.as_str()),
        ("name", &name),
        ("description", &description),
        ("status", &status),
    ]);
    match admin.invoke("SetMailboxProperties", call).await {
        Ok(_) => session::redirect(&format!("{}?notice=saved", session::MAIN_PATH)),
        Err(failure) => {
            let mailbox = match get_mailbox(&admin, &id).await {
                Ok(mailbox) => mailbox,
                Err(failure) => return admin.failure_page(&failure),
            };
            crate::console::render::page_with_status(
                failure.status,
                admin.viewer(),
                "mailbox_edit.html",
                context! {
                    mailbox => row(&admin, &mailbox),
                    name => name,
                    description => description,
                    status => status,
                    error => failure.message,
                },
            )
        }
    }
}

/// Which confirmation: delete or reset password.
#[derive(Clone, Copy)]
enum Confirm {
    Delete,
    Reset,
}

impl Confirm {
    fn as_str(self) -> &'static str {
        match self {
            Confirm::Delete => "delete",
            Confirm::Reset => "reset-password",
        }
    }

    /// The API function Yes calls.
    fn function(self) -> &'static str {
        match self {
            Confirm::Delete => "DeleteMailbox",
            Confirm::Reset => "ResetMailboxPassword",
        }
    }
}

/// The Yes/No page; Yes is disabled with the reason when the mailbox does not qualify.
fn confirm_page(
    admin: &SignedIn,
    action: Confirm,
    mailbox: &MailboxInfo,
    error: Option<Failure>,
) -> Response {
    let status = error.as_ref().map_or(StatusCode::OK, |f| f.status);
    crate::console::render::page_with_status(
        status,
        admin.viewer(),
        "mailbox_confirm.html",
        context! {
            action => action.as_str(),
            mailbox => row(admin, mailbox),
            error => error.map(|f| f.message),
        },
    )
}

async fn confirm_get(admin: SignedIn, id: String, action: Confirm) -> Response {
    let Some(id) = path_id(&id) else {
        return no_such_mailbox(&admin);
    };
    match get_mailbox(&admin, &id).await {
        Ok(mailbox) => confirm_page(&admin, action, &mailbox, None),
        Err(failure) => admin.failure_page(&failure),
    }
}

/// `GET /console/mailboxes/{id}/delete`.
pub async fn delete_page(admin: SignedIn, Path(id): Path<String>) -> Response {
    confirm_get(admin, id, Confirm::Delete).await
}

/// `GET /console/mailboxes/{id}/reset-password`.
pub async fn reset_page(admin: SignedIn, Path(id): Path<String>) -> Response {
    confirm_get(admin, id, Confirm::Reset).await
}

/// Yes on a confirmation page: the action's API function on the mailbox, then the main
/// page (deleted) or the new password, shown once (reset).
async fn confirm_post(admin: SignedIn, id: String, action: Confirm) -> Response {
    let Some(id) = path_id(&id) else {
        return no_such_mailbox(&admin);
    };
    match admin
        .invoke(action.function(), params(&[("id", id.as_str())]))
        .await
    {
        Ok(answer) => match action {
            Confirm::Delete => session::redirect(&format!("{}?notice=deleted", session::MAIN_PATH)),
            Confirm::Reset => password_page(&admin, answer, "reset"),
        },
        Err(failure) => refused(&admin, action, &id, failure).await,
    }
}

/// `POST /console/mailboxes/{id}/delete` (Yes).
pub async fn delete(Path(id): Path<String>, form: Form<SignedIn>) -> Response {
    confirm_post(form.guard, id, Confirm::Delete).await
}

/// `POST /console/mailboxes/{id}/reset-password` (Yes): the new password, shown once.
pub async fn reset(Path(id): Path<String>, form: Form<SignedIn>) -> Response {
    confirm_post(form.guard, id, Confirm::Reset).await
}

/// The confirmation page again with the API's refusal (or the error page when the
/// mailbox is gone).
async fn refused(admin: &SignedIn, action: Confirm, id: &MailboxId, failure: Failure) -> Response {
    match get_mailbox(admin, id).await {
        Ok(mailbox) => confirm_page(admin, action, &mailbox, Some(failure)),
        Err(_) => admin.failure_page(&failure),
    }
}

/// The listener `name` among the server's.
fn listener<'a>(listeners: &'a [ListenerInfo], name: &str) -> Option<&'a ListenerInfo> {
    listeners.iter().find(|l| l.name == name)
}

/// `GET /console/mailboxes/{id}/setup`: what to enter where, for this mailbox.
pub async fn setup_page(admin: SignedIn, Path(id): Path<String>) -> Response {
    let Some(id) = path_id(&id) else {
        return no_such_mailbox(&admin);
    };
    let mailbox = match get_mailbox(&admin, &id).await {
        Ok(mailbox) => mailbox,
        Err(failure) => return admin.failure_page(&failure),
    };
    let server = match admin.invoke("GetServerInfo", Params::new()).await {
        Ok(server) => server,
        Err(failure) => return admin.failure_page(&failure),
    };
    let host = server["hostName"].as_str().unwrap_or_default().to_owned();
    let listeners: Vec<ListenerInfo> =
        serde_json::from_value(server["listeners"].clone()).unwrap_or_default();
    let port_of = |name: &str| {
        listener(&listeners, name).map(|l| {
            context! {
                port => l.port,
                listening => l.state == ListenerState::Listening,
            }
        })
    };
    admin.page(
        "mailbox_setup.html",
        context! {
            mailbox => row(&admin, &mailbox),
            host => host,
            proxy_login => format!("remote_user%target_server%{}", mailbox.id.as_str()),
            pop3s => port_of("pop3s"),
            pop3 => port_of("pop3"),
            smtp => port_of("smtp"),
            submission => port_of("submission"),
            smtps => port_of("smtps"),
        },
    )
}

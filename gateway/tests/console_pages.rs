//! The console's mailbox and status pages over HTTPS with a real HTTP client (reqwest over
//! rustls, trusting only the gateway's certificate): what a browser gets, without a browser.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use gateway::api::{Caller, Params};
use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use support::{TestGateway, HOST_NAME};
use test_support::pki::Leaf;

/// A signed-in browser without JavaScript: it keeps the session cookie and follows no
/// redirect on its own, so each test sees the 303s.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

/// One page: status, where a redirect points, and the HTML.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    location: Option<String>,
    html: String,
}

impl Page {
    /// The value of the hidden `csrf` field every signed-in page carries (the sign-out form).
    fn csrf(&self) -> String {
        attribute_after(&self.html, "name=\"csrf\"", "value").expect("a csrf field")
    }

    /// The text of the element with `id` (its first text node, trimmed).
    fn text_of(&self, id: &str) -> Option<String> {
        let start = self.html.find(&format!("id=\"{id}\""))?;
        let rest = &self.html[start..];
        let open_end = rest.find('>')? + 1;
        let close = rest[open_end..].find('<')?;
        Some(unescape(rest[open_end..open_end + close].trim()))
    }

    fn has(&self, needle: &str) -> bool {
        self.html.contains(needle)
    }

    /// The HTML of the table row of mailbox `id`.
    fn row(&self, id: &str) -> Option<&str> {
        let start = self.html.find(&format!("id=\"mailbox-{id}\""))?;
        let end = self.html[start..].find("</tr>")? + start;
        Some(&self.html[start..end])
    }

    /// The mailbox ids of the table's rows, in order.
    fn row_ids(&self) -> Vec<String> {
        self.html
            .match_indices("data-mailbox-id=\"")
            .map(|(at, m)| {
                let rest = &self.html[at + m.len()..];
                rest[..rest.find('"').unwrap_or(0)].to_owned()
            })
            .collect()
    }
}

/// The value of attribute `name` in the tag that contains `marker`.
fn attribute_after(html: &str, marker: &str, name: &str) -> Option<String> {
    let at = html.find(marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let key = format!("{name}=\"");
    let value_start = tag.find(&key)? + key.len();
    let value_end = value_start + tag[value_start..].find('"')?;
    Some(unescape(&tag[value_start..value_end]))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl Browser {
    /// Replaces the initial administrator password (through the API, as the first login
    /// does) and signs in to the console with the new one.
    async fn sign_in(gateway: &TestGateway) -> Self {
        let mut params = Params::new();
        params.insert("currentPassword".into(), "admin".into());
        let answer = gateway
            .api()
            .invoke(
                &Caller::AdminFirstLogin { client: LOCAL },
                "ResetOwnPassword",
                params,
            )
            .await;
        let password = answer.envelope.result["password"]
            .as_str()
            .expect("new admin password")
            .to_owned();
        let (http, base) =
            support::browser::console_client(gateway.console_addr(), &gateway.ca_file());
        let mut browser = Self {
            http,
            base,
            cookie: String::new(),
        };
        let response = browser
            .http
            .post(browser.url("/console/login"))
            .form(&[("user", "admin"), ("password", password.as_str())])
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("__Host-gw_session="))
            .expect("session cookie");
        browser.cookie = cookie.split(';').next().unwrap_or_default().to_owned();
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn page(request: reqwest::RequestBuilder) -> Page {
        let response = request.send().await.expect("HTTPS request");
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let html = response.text().await.expect("body");
        Page {
            status,
            location,
            html,
        }
    }

    async fn get(&self, path: &str) -> Page {
        Self::page(self.http.get(self.url(path)).header(COOKIE, &self.cookie)).await
    }

    async fn get_in(&self, path: &str, language: &str) -> Page {
        Self::page(
            self.http
                .get(self.url(path))
                .header(COOKIE, &self.cookie)
                .header(ACCEPT_LANGUAGE, language),
        )
        .await
    }

    /// A form POST with the session's CSRF token added.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get("/console/status").await.csrf();
        let mut fields = fields.to_vec();
        fields.push(("csrf", &csrf));
        self.post_raw(path, &fields).await
    }

    /// A form POST exactly as given (no token added).
    async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        Self::page(
            self.http
                .post(self.url(path))
                .header(COOKIE, &self.cookie)
                .form(fields),
        )
        .await
    }

    /// Creates a mailbox through the console; its id and the password page.
    async fn create(&self, name: &str, description: &str) -> (String, Page) {
        let page = self
            .post(
                "/console/mailboxes/new",
                &[("name", name), ("description", description)],
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        let address = page.text_of("mailbox-address").expect("the address");
        let id = address.split('@').next().unwrap_or_default().to_owned();
        (id, page)
    }
}

async fn console() -> (TestGateway, Browser) {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let browser = Browser::sign_in(&gateway).await;
    (gateway, browser)
}

#[tokio::test]
async fn create_shows_the_password_once_and_the_table_lists_the_mailbox() {
    let (gateway, browser) = console().await;
    let (id, page) = browser
        .create("Office 365 Journal", "journal of example.com")
        .await;
    let password = page.text_of("new-password").expect("the password is shown");
    assert!(password.len() >= 20, "{password}");
    assert!(page.has("id=\"password-warning\""));
    assert!(page.has("id=\"acknowledge\""));
    // The password is the mailbox's: it unseals the mailbox's key.
    let mailbox_id = gateway::mailbox::MailboxId::parse(&id).expect("mailbox id");
    let secret = gateway::crypto::MailboxPassword::from_user_input(&password);
    gateway
        .gateway()
        .unseal(&mailbox_id, &secret)
        .expect("the shown password opens the mailbox");

    // Continue without the box: the page again, without the password.
    let again = browser
        .post(
            &format!("/console/mailboxes/{id}/acknowledge"),
            &[("kind", "created")],
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        !again.has(&password),
        "the password must never be shown again"
    );
    assert!(again.has("id=\"password-gone\""));
    assert!(again.text_of("error").is_some());

    // With the box: back to the table, which lists the mailbox.
    let done = browser
        .post(
            &format!("/console/mailboxes/{id}/acknowledge"),
            &[("kind", "created"), ("acknowledge", "yes")],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let location = done.location.expect("redirect");
    assert!(!location.contains(&password));
    let main = browser.get(&location).await;
    assert_eq!(main.status, StatusCode::OK);
    assert!(main.has("id=\"notice\""));
    let row = main.row(&id).expect("the new mailbox's row");
    assert!(row.contains("Office 365 Journal"));
    assert!(row.contains("journal of example.com"));
    assert!(row.contains(&format!("{id}@{}", support::EMAIL_DOMAIN)));
    assert!(row.contains("data-copy=\"address-"), "copy button");
    assert!(!main.has(&password));
}

#[tokio::test]
async fn a_refused_create_shows_the_apis_message_in_the_form() {
    let (gateway, browser) = console().await;
    let form = browser.get("/console/mailboxes/new").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.has("id=\"create-form\""));
    let page = browser
        .post(
            "/console/mailboxes/new",
            &[("name", " "), ("description", "typed text")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.text_of("error").unwrap().contains("name"), "{page:?}");
    assert!(page.has("typed text"), "what was typed stays");
    assert!(!page.has("id=\"new-password\""));
    assert!(gateway.gateway().list_mailboxes().unwrap().is_empty());
}

#[tokio::test]
async fn a_change_without_the_csrf_token_is_refused() {
    let (gateway, browser) = console().await;
    let page = browser
        .post_raw("/console/mailboxes/new", &[("name", "no token")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let wrong = browser
        .post_raw(
            "/console/mailboxes/new",
            &[("name", "wrong token"), ("csrf", "0123456789abcdef")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(gateway.gateway().list_mailboxes().unwrap().is_empty());

    let (id, _, _) = gateway.create_mailbox("kept").await;
    for path in ["delete", "reset-password", "edit"] {
        let page = browser
            .post_raw(
                &format!("/console/mailboxes/{}/{path}", id.as_str()),
                &[("name", "x"), ("status", "suspended")],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
    }
    let info = gateway.gateway().mailbox(&id).unwrap();
    assert_eq!(info.name, "kept");
}

#[tokio::test]
async fn delete_and_reset_are_disabled_with_the_reason_until_suspended_and_empty() {
    let (gateway, browser) = console().await;
    let (active, address, _) = gateway.create_mailbox("active one").await;
    let (full, full_address, _) = gateway.create_mailbox("full one").await;
    gateway
        .deliver(&full_address, b"Subject: waiting\r\n\r\nbody\r\n")
        .await;
    gateway
        .gateway()
        .set_status(&full, gateway::store::MailboxStatus::Suspended)
        .await
        .unwrap();
    let _ = address;

    let main = browser.get("/console/").await;
    let row = main.row(active.as_str()).expect("active row");
    assert!(
        row.contains(&format!(
            "id=\"delete-{}\" data-testid=\"delete\" disabled",
            active.as_str()
        )),
        "{row}"
    );
    assert!(row.contains("Suspend the mailbox first."), "{row}");
    let row = main.row(full.as_str()).expect("full row");
    assert!(
        row.contains(&format!(
            "id=\"reset-{}\" data-testid=\"reset-password\" disabled",
            full.as_str()
        )),
        "{row}"
    );
    assert!(row.contains("still holds messages"), "{row}");
    assert!(!row.contains("Suspend the mailbox first."), "{row}");
    // An active mailbox with mail: both steps are named.
    let (busy, busy_address, _) = gateway.create_mailbox("busy one").await;
    gateway
        .deliver(&busy_address, b"Subject: busy\r\n\r\nbody\r\n")
        .await;
    let main = browser.get("/console/").await;
    let row = main.row(busy.as_str()).expect("busy row");
    assert!(row.contains("Suspend the mailbox first."), "{row}");
    assert!(row.contains("still holds messages"), "{row}");
    assert!(!main
        .row(active.as_str())
        .unwrap()
        .contains("still holds messages"));

    // The confirmation page disables Yes; posting anyway gets the API's refusal.
    let confirm = browser
        .get(&format!("/console/mailboxes/{}/delete", active.as_str()))
        .await;
    assert!(confirm.has("id=\"confirm-yes\" data-testid=\"confirm-yes\" class=\"danger\" disabled"));
    let refused = browser
        .post(&format!("/console/mailboxes/{}/delete", full.as_str()), &[])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused
        .text_of("error")
        .unwrap()
        .contains("still holds 1 message"));
    assert!(gateway.gateway().mailbox(&full).is_ok());
}

#[tokio::test]
async fn a_suspended_empty_mailbox_can_be_reset_and_deleted() {
    let (gateway, browser) = console().await;
    let (id, _, old_password) = gateway.create_mailbox("to go").await;
    gateway
        .gateway()
        .set_status(&id, gateway::store::MailboxStatus::Suspended)
        .await
        .unwrap();
    let main = browser.get("/console/").await;
    let row = main.row(id.as_str()).unwrap();
    assert!(row.contains(&format!(
        "href=\"/console/mailboxes/{}/delete\"",
        id.as_str()
    )));
    assert!(!row.contains("disabled"), "{row}");

    let confirm = browser
        .get(&format!(
            "/console/mailboxes/{}/reset-password",
            id.as_str()
        ))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.has("id=\"confirm-no\""));
    let reset = browser
        .post(
            &format!("/console/mailboxes/{}/reset-password", id.as_str()),
            &[],
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{reset:?}");
    let new_password = reset.text_of("new-password").expect("the new password");
    let parsed = gateway::crypto::MailboxPassword::from_user_input(&new_password);
    assert!(gateway.gateway().unseal(&id, &parsed).is_ok());
    assert!(gateway.gateway().unseal(&id, &old_password).is_err());

    let acknowledged = browser
        .post(
            &format!("/console/mailboxes/{}/acknowledge", id.as_str()),
            &[("kind", "reset"), ("acknowledge", "yes")],
        )
        .await;
    assert_eq!(
        acknowledged.location.as_deref(),
        Some("/console/?notice=password-reset")
    );

    let deleted = browser
        .post(&format!("/console/mailboxes/{}/delete", id.as_str()), &[])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(gateway.gateway().mailbox(&id).is_err());
    let main = browser.get(deleted.location.as_deref().unwrap()).await;
    assert!(main.row(id.as_str()).is_none());
    assert!(main.has("id=\"notice\""));
}

#[tokio::test]
async fn edit_changes_name_description_and_status() {
    let (gateway, browser) = console().await;
    let (id, _, _) = gateway.create_mailbox("before").await;
    let form = browser
        .get(&format!("/console/mailboxes/{}/edit", id.as_str()))
        .await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(
        attribute_after(&form.html, "id=\"name\"", "value").as_deref(),
        Some("before")
    );
    let saved = browser
        .post(
            &format!("/console/mailboxes/{}/edit", id.as_str()),
            &[
                ("name", "after"),
                ("description", "new words"),
                ("status", "suspended"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{saved:?}");
    let info = gateway.gateway().mailbox(&id).unwrap();
    assert_eq!(info.name, "after");
    assert_eq!(info.description, "new words");
    assert_eq!(info.status, gateway::store::MailboxStatus::Suspended);
    let main = browser.get("/console/").await;
    assert!(main
        .row(id.as_str())
        .unwrap()
        .contains("data-status=\"suspended\""));

    // A refused change shows the API's message in the form, with what was typed.
    let refused = browser
        .post(
            &format!("/console/mailboxes/{}/edit", id.as_str()),
            &[
                ("name", "  "),
                ("description", "kept text"),
                ("status", "active"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text_of("error").unwrap().contains("name"));
    assert!(refused.has("kept text"));
    assert_eq!(gateway.gateway().mailbox(&id).unwrap().name, "after");
}

#[tokio::test]
async fn the_table_sorts_by_each_column_and_filters() {
    let (gateway, browser) = console().await;
    let (b, b_address, _) = gateway.create_mailbox("Bravo").await;
    let (a, _, _) = gateway.create_mailbox("alpha").await;
    let (c, _, _) = gateway.create_mailbox("Charlie").await;
    gateway
        .deliver(&b_address, b"Subject: one\r\n\r\nbody\r\n")
        .await;
    gateway
        .deliver(&b_address, b"Subject: two\r\n\r\nbody\r\n")
        .await;
    let ids = |list: &[&gateway::mailbox::MailboxId]| -> Vec<String> {
        list.iter().map(|id| id.as_str().to_owned()).collect()
    };

    let by_name = browser.get("/console/").await;
    assert_eq!(by_name.row_ids(), ids(&[&a, &b, &c]));
    assert_eq!(
        attribute_after(&by_name.html, "id=\"sort-name\"", "href").as_deref(),
        Some("/console/?sort=name&order=desc"),
        "the sorted column's link reverses the order"
    );
    assert_eq!(
        attribute_after(&by_name.html, "id=\"sort-size\"", "href").as_deref(),
        Some("/console/?sort=size&order=asc")
    );
    let desc = browser.get("/console/?sort=name&order=desc").await;
    assert_eq!(desc.row_ids(), ids(&[&c, &b, &a]));
    let by_messages = browser.get("/console/?sort=messages&order=desc").await;
    assert_eq!(by_messages.row_ids()[0], b.as_str());
    for column in ["address", "description", "status", "size", "oldest"] {
        let page = browser
            .get(&format!("/console/?sort={column}&order=asc"))
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.row_ids().len(), 3, "{column}");
        assert!(page.has(&format!("id=\"sort-{column}\"")));
    }

    let filtered = browser.get("/console/?q=CHAR").await;
    assert_eq!(filtered.row_ids(), ids(&[&c]));
    assert_eq!(
        attribute_after(&filtered.html, "id=\"filter-q\"", "value").as_deref(),
        Some("CHAR")
    );
    let none = browser.get("/console/?q=%3Cscript%3E").await;
    assert!(none.row_ids().is_empty());
    assert!(none.has("id=\"no-matches\""));
    assert!(!none.has("<script>"), "the filter is escaped");
}

#[tokio::test]
async fn a_message_delivered_over_smtp_shows_in_the_counts_after_a_reload() {
    let (gateway, browser) = console().await;
    let (id, address, _) = gateway.create_mailbox("counted").await;
    let before = browser.get("/console/").await;
    let row = before.row(id.as_str()).unwrap().to_owned();
    assert!(row.contains("data-count=\"0\""), "{row}");
    gateway
        .deliver(&address, b"Subject: counted\r\n\r\nhello\r\n")
        .await;
    let after = browser.get("/console/").await;
    let row = after.row(id.as_str()).unwrap();
    assert!(row.contains("data-count=\"1\""), "{row}");
    assert!(row.contains("UTC"), "the oldest message's time: {row}");
    assert!(!row.contains("0 B<"), "the size grew: {row}");
}

#[tokio::test]
async fn the_status_page_shows_listeners_certificate_and_store() {
    let (gateway, browser) = console().await;
    let page = browser.get("/console/status").await;
    assert_eq!(page.status, StatusCode::OK);
    for name in ["smtp", "submission", "smtps", "pop3", "pop3s", "console"] {
        assert!(page.has(&format!("id=\"listener-{name}\"")), "{name}");
    }
    let console_row_at = page.html.find("id=\"listener-console\"").unwrap();
    assert!(page.html[console_row_at..].contains("data-state=\"listening\""));
    assert!(page.html[console_row_at..].contains(&format!(">{}<", gateway.console_addr().port())));
    let days: i64 = attribute_after(&page.html, "id=\"cert-days-left\"", "data-days")
        .unwrap()
        .parse()
        .unwrap();
    assert!(days > 30, "a fresh self-signed certificate: {days}");
    assert_eq!(
        attribute_after(&page.html, "id=\"cert-days-left\"", "data-urgency").as_deref(),
        Some("ok")
    );
    assert!(page.text_of("cert-names").unwrap().contains(HOST_NAME));
    assert_eq!(
        page.text_of("server-version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(page.text_of("store-size").unwrap().contains('B'));
    assert!(page.has("id=\"no-stale-mailboxes\""));
}

#[tokio::test]
async fn the_status_page_shows_free_disk_space_and_highlights_it_below_the_warning() {
    // A warning threshold no disk is above (1 EiB): the real free space is below it.
    let gateway = TestGateway::start_with_console(|config| {
        config.limits.warn_free_disk_mib = Some(1 << 40);
    })
    .await;
    let browser = Browser::sign_in(&gateway).await;
    let page = browser.get("/console/status").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        attribute_after(&page.html, "id=\"disk-free\"", "data-level").as_deref(),
        Some("warning"),
        "{}",
        page.html
    );
    // Free space of the file system's size, both in binary units.
    let at = page.html.find("id=\"disk-free\"").unwrap();
    let cell = &page.html[at..at + page.html[at..].find("</dd>").unwrap()];
    assert!(
        cell.contains(" of ") && cell.matches("iB").count() >= 2,
        "{cell}"
    );
    assert!(page.has("urgency-warning"));
    assert!(page.has("make room before mail is refused"));
    let seite = browser.get_in("/console/status", "de").await;
    assert!(seite.has("Freier Speicherplatz"), "{}", seite.html);
    assert!(seite.has("Platz schaffen"));
}

#[tokio::test]
async fn the_status_page_shows_whether_snapshots_are_on_and_the_last_ones_time() {
    let (_plain, browser) = console().await;
    let page = browser.get("/console/status").await;
    assert_eq!(
        attribute_after(&page.html, "id=\"snapshots\"", "data-state").as_deref(),
        Some("off")
    );

    let gateway = TestGateway::start_with_console(|config| {
        config.backup.snapshot_interval = "1h".to_owned();
    })
    .await;
    let browser = Browser::sign_in(&gateway).await;
    let page = browser.get("/console/status").await;
    assert_eq!(
        attribute_after(&page.html, "id=\"snapshots\"", "data-state").as_deref(),
        Some("none"),
        "{}",
        page.html
    );
    assert!(page
        .text_of("snapshots")
        .unwrap()
        .contains("none taken yet"));

    let snapshots = gateway.snapshots().expect("snapshots are on");
    let (_, manifest) = tokio::task::spawn_blocking(move || snapshots.take())
        .await
        .unwrap()
        .unwrap();
    let page = browser.get("/console/status").await;
    assert_eq!(
        attribute_after(&page.html, "id=\"snapshots\"", "data-state").as_deref(),
        Some("taken")
    );
    // The manifest's time to the minute, as the page shows times.
    let minute = manifest.created_at[..16].replace('T', " ");
    let shown = page.text_of("snapshots").unwrap();
    assert!(shown.contains(&minute), "{shown} / {minute}");
    let seite = browser.get_in("/console/status", "de").await;
    assert!(seite.text_of("snapshots").unwrap().contains("zuletzt"));
}

#[tokio::test]
async fn the_setup_hints_name_the_address_proxy_login_and_pop3s_settings() {
    let (gateway, browser) = console().await;
    let (id, address, _) = gateway.create_mailbox("hinted").await;
    let page = browser
        .get(&format!("/console/mailboxes/{}/setup", id.as_str()))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.text_of("setup-journal-address"), Some(address));
    assert_eq!(
        page.text_of("setup-proxy-login"),
        Some(format!("remote_user%target_server%{}", id.as_str()))
    );
    assert_eq!(page.text_of("setup-pop3-host").as_deref(), Some(HOST_NAME));
    assert_eq!(
        page.text_of("setup-pop3-port"),
        Some(gateway.pop3s_addr().port().to_string())
    );
    assert_eq!(
        page.text_of("setup-pop3-user").as_deref(),
        Some(id.as_str())
    );
    let missing = browser.get("/console/mailboxes/not-a-mailbox/setup").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_main_page_renders_in_german() {
    let (gateway, browser) = console().await;
    let (id, _, _) = gateway.create_mailbox("Journal").await;
    let page = browser.get_in("/console/", "de-DE,de;q=0.9").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.has("<html lang=\"de\">"));
    assert!(page.has("Postfach anlegen"));
    assert!(page.has("Älteste Nachricht"));
    let row = page.row(id.as_str()).unwrap();
    assert!(row.contains("Aktiv"), "{row}");
    assert!(row.contains("Halten Sie das Postfach zuerst an."), "{row}");
    assert!(!page.has("Create mailbox"));

    // Every other page of this part renders in German too (a text missing or broken in
    // the German catalogue fails the page).
    for (path, expected) in [
        ("/console/status".to_owned(), "Verbleibende Tage"),
        ("/console/mailboxes/new".to_owned(), "Postfach anlegen"),
        (
            format!("/console/mailboxes/{}/edit", id.as_str()),
            "Angehalten",
        ),
        (
            format!("/console/mailboxes/{}/delete", id.as_str()),
            "endgültig löschen",
        ),
        (
            format!("/console/mailboxes/{}/reset-password", id.as_str()),
            "neues Passwort",
        ),
        (
            format!("/console/mailboxes/{}/setup", id.as_str()),
            "Benutzername",
        ),
    ] {
        let page = browser.get_in(&path, "de").await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.has(expected), "{path}: {expected}");
    }
}

impl Browser {
    /// The same session over a client that trusts `ca_pem` instead: after a certificate
    /// change new connections meet the new certificate.
    fn trusting(&self, ca_file: &std::path::Path) -> Self {
        let addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", self.base.rsplit(':').next().unwrap())
                .parse()
                .unwrap();
        let (http, _) = support::browser::console_client(addr, ca_file);
        Self {
            http,
            base: self.base.clone(),
            cookie: self.cookie.clone(),
        }
    }
}

/// The certificate the gateway presents now, as the API reports it.
async fn presented_fingerprint(gateway: &TestGateway) -> String {
    let answer = gateway
        .api()
        .invoke(&Caller::Host, "GetCertificateInfo", Params::new())
        .await;
    answer.envelope.result["sha256Fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer:?}"))
        .to_owned()
}

/// A self-signed PEM certificate and key for `name`, valid for `days` more days.
fn pem_pair(name: &str, days: u64) -> (String, String) {
    let cert = Leaf::names(&[name]).days_left(days).self_signed().unwrap();
    (cert.cert_pem().to_owned(), cert.key_pem().to_owned())
}

#[tokio::test]
async fn the_status_page_offers_the_certificate_actions_and_shows_source_and_key_type() {
    let (_gateway, browser) = console().await;
    let page = browser.get("/console/status").await;
    assert_eq!(page.text_of("cert-key-type").as_deref(), Some("ECDSA"));
    assert_eq!(
        page.text_of("cert-source").as_deref(),
        Some("self-signed by the gateway")
    );
    for link in [
        "/console/certificate/self-signed",
        "/console/certificate/import",
        "/console/certificate/acme",
    ] {
        assert!(page.has(&format!("href=\"{link}\"")), "{link}");
        let form = browser.get(link).await;
        assert_eq!(form.status, StatusCode::OK, "{link}");
        assert!(form.has("name=\"csrf\""), "{link}");
    }
    // "Renew now" only for an ACME certificate.
    assert!(!page.has("id=\"renew-form\""));
}

#[tokio::test]
async fn a_new_self_signed_certificate_from_the_console_is_presented_at_once() {
    let (gateway, browser) = console().await;
    let before = presented_fingerprint(&gateway).await;
    let page = browser
        .post(
            "/console/certificate/self-signed",
            &[("names", "alias.archive.test, 192.0.2.7")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    let fingerprint = page
        .text_of("new-cert-fingerprint")
        .expect("the new fingerprint");
    assert_ne!(fingerprint, before);
    assert_eq!(presented_fingerprint(&gateway).await, fingerprint);
    let names = page.text_of("new-cert-names").unwrap();
    assert!(
        names.contains("alias.archive.test") && names.contains("192.0.2.7"),
        "{names}"
    );

    // The status page, over a connection that meets the new certificate, shows it.
    let browser = browser.trusting(&gateway.ca_file());
    let status = browser.get("/console/status").await;
    assert!(status.has(&fingerprint), "{status:?}");

    // A name that is not one is refused with the API's reason, in the form.
    let refused = browser
        .post(
            "/console/certificate/self-signed",
            &[("names", "not a name!")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let error = refused.text_of("error").expect("an error");
    assert!(
        error.contains("neither a DNS name nor an IP address"),
        "{error}"
    );
    assert_eq!(
        attribute_after(&refused.html, "id=\"names\"", "value").as_deref(),
        Some("not a name!")
    );
    assert_eq!(presented_fingerprint(&gateway).await, fingerprint);
}

#[tokio::test]
async fn an_imported_pem_certificate_is_presented_with_its_warnings() {
    let (gateway, browser) = console().await;
    // Ten days left: accepted, with a warning.
    let (chain, key) = pem_pair(HOST_NAME, 10);
    let page = browser
        .post(
            "/console/certificate/import",
            &[
                ("kind", "pem"),
                ("certificate_chain", &chain),
                ("private_key", &key),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    let fingerprint = page.text_of("new-cert-fingerprint").unwrap();
    assert_eq!(presented_fingerprint(&gateway).await, fingerprint);
    assert!(page.has("id=\"cert-warnings\""), "{page:?}");
    assert!(page.has("30 days or fewer"), "{page:?}");

    // The key of another certificate: refused with the reason, the chain kept in the form,
    // the key not echoed, the certificate in use unchanged.
    let ca = gateway.scratch().join("imported.pem");
    std::fs::write(&ca, &chain).unwrap();
    let browser = browser.trusting(&ca);
    let (_, other_key) = pem_pair(HOST_NAME, 90);
    let refused = browser
        .post(
            "/console/certificate/import",
            &[
                ("kind", "pem"),
                ("certificate_chain", &chain),
                ("private_key", &other_key),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    let error = refused.text_of("error").unwrap();
    assert!(
        error.contains("does not belong to the certificate"),
        "{error}"
    );
    assert!(refused.has("-----BEGIN CERTIFICATE-----"));
    assert!(
        !refused.has("PRIVATE KEY-----\n"),
        "the key is not sent back"
    );
    assert_eq!(presented_fingerprint(&gateway).await, fingerprint);
}

/// `chain` and `key` as a PKCS#12 file with `password`, made by openssl as Windows would
/// (legacy 3DES/RC2), base64.
fn pkcs12_base64(dir: &std::path::Path, chain: &str, key: &str, password: &str) -> String {
    let pem = dir.join("p12-input.pem");
    std::fs::write(&pem, format!("{chain}{key}")).unwrap();
    let out = dir.join("server.pfx");
    let made = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-legacy", "-passout"])
        .arg(format!("pass:{password}"))
        .arg("-in")
        .arg(&pem)
        .arg("-out")
        .arg(&out)
        .status()
        .expect("openssl");
    assert!(made.success());
    data_encoding::BASE64_MIME.encode(&std::fs::read(out).unwrap())
}

#[tokio::test]
async fn a_pkcs12_import_with_the_wrong_password_says_so_and_the_right_one_imports() {
    let (gateway, browser) = console().await;
    let before = presented_fingerprint(&gateway).await;
    let (chain, key) = pem_pair(HOST_NAME, 90);
    let pkcs12 = pkcs12_base64(gateway.scratch(), &chain, &key, "s3cret");

    let wrong = browser
        .post(
            "/console/certificate/import",
            &[
                ("kind", "pkcs12"),
                ("pkcs12", &pkcs12),
                ("password", "guess"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{wrong:?}");
    let error = wrong.text_of("error").unwrap();
    assert!(error.contains("the PKCS#12 password is wrong"), "{error}");
    assert!(!wrong.has("guess"), "the password is not sent back");
    assert_eq!(presented_fingerprint(&gateway).await, before);

    let right = browser
        .post(
            "/console/certificate/import",
            &[
                ("kind", "pkcs12"),
                ("pkcs12", &pkcs12),
                ("password", "s3cret"),
            ],
        )
        .await;
    assert_eq!(right.status, StatusCode::OK, "{right:?}");
    let fingerprint = right.text_of("new-cert-fingerprint").unwrap();
    assert_ne!(fingerprint, before);
    assert_eq!(presented_fingerprint(&gateway).await, fingerprint);
    assert!(
        !right.has("id=\"cert-warnings\""),
        "a good certificate has no warnings"
    );
}

#[tokio::test]
async fn the_acme_form_requires_the_terms_and_shows_a_refusal_as_an_error() {
    let (_gateway, browser) = console().await;
    let form = browser.get("/console/certificate/acme").await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(
        attribute_after(&form.html, "id=\"domains\"", "value").as_deref(),
        Some(HOST_NAME)
    );
    let terms_at = form.html.find("id=\"accept-terms\"").unwrap();
    let tag_end = terms_at + form.html[terms_at..].find('>').unwrap();
    assert!(form.html[terms_at..tag_end].contains("required"));
    assert!(form.has("<label for=\"domains\">"));

    // Without the box: refused before the API is asked, the values kept.
    let page = browser
        .post(
            "/console/certificate/acme",
            &[
                ("domains", "mx.archive.test"),
                ("email", "ops@archive.test"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.text_of("error").unwrap().contains("terms of service"));
    assert_eq!(
        attribute_after(&page.html, "id=\"email\"", "value").as_deref(),
        Some("ops@archive.test")
    );

    // With it: whatever the API answers (this build may not have the function), the
    // answer is shown in the form, not a crash or a blank page.
    let page = browser
        .post(
            "/console/certificate/acme",
            &[
                ("domains", "mx.archive.test"),
                ("accept_terms", "yes"),
                ("directory_url", "https://127.0.0.1:1/dir"),
            ],
        )
        .await;
    if page.status == StatusCode::SEE_OTHER {
        // The function exists and runs: its progress page.
        let location = page.location.unwrap();
        assert!(
            location.starts_with("/console/certificate/progress/"),
            "{location}"
        );
    } else {
        assert!(page.status.is_client_error(), "{page:?}");
        assert!(page.text_of("error").is_some(), "{page:?}");
        assert!(page.has("id=\"acme-form\""));
    }
}

#[tokio::test]
async fn renew_now_without_an_acme_certificate_is_an_error_in_words() {
    let (gateway, browser) = console().await;
    let before = presented_fingerprint(&gateway).await;
    let page = browser.post("/console/certificate/renew", &[]).await;
    assert!(page.status.is_client_error(), "{page:?}");
    assert!(page.text_of("error").is_some(), "{page:?}");
    assert!(page.has("The certificate in use has not changed."));
    assert_eq!(presented_fingerprint(&gateway).await, before);
}

/// Reloads `path` until `done` holds (a run moves on in its own task); bounded.
async fn until(browser: &Browser, path: &str, done: impl Fn(&Page) -> bool) -> Page {
    for _ in 0..1000 {
        let page = browser.get(path).await;
        if done(&page) {
            return page;
        }
        tokio::task::yield_now().await;
    }
    panic!("{path} never got there");
}

#[tokio::test]
async fn the_progress_page_reloads_while_a_run_works_then_shows_the_result_or_the_error() {
    let (gateway, browser) = console().await;
    let api = gateway.api();
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let started = api.jobs().start(|progress| async move {
        progress.update(Some(40), "waiting for the CA to check mx.archive.test");
        let _ = finished.await;
        Ok(serde_json::json!({
            "certificate": {
                "subject": "CN=mx.archive.test", "issuer": "CN=Pebble", "dnsNames": [HOST_NAME],
                "notAfter": "2027-03-01T00:00:00Z", "sha256Fingerprint": "c0ffee",
            },
            "warnings": [],
        }))
    });
    let token = started.envelope.token.unwrap();
    let path = format!("/console/certificate/progress/{token}");

    // The run reports its progress from its own task: reload as the page would.
    let running = until(&browser, &path, |page| page.has("waiting for the CA")).await;
    assert_eq!(running.status, StatusCode::OK);
    assert_eq!(
        attribute_after(&running.html, "http-equiv=\"refresh\"", "content"),
        Some(format!("2;url={path}"))
    );
    let text = running.text_of("progress").unwrap();
    assert!(text.contains("(40 %)"), "{text}");

    finish.send(()).unwrap();
    let done = until(&browser, &path, |page| !page.has("http-equiv=\"refresh\"")).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(
        done.text_of("new-cert-fingerprint").as_deref(),
        Some("c0ffee")
    );

    let failed = api.jobs().start(|_| async {
        Err(gateway::api::ApiError::new(
            502,
            "error",
            "the CA could not reach http://mx.archive.test/.well-known/acme-challenge/x: connection refused; is port 80 forwarded to this machine?",
        ))
    });
    let path = format!(
        "/console/certificate/progress/{}",
        failed.envelope.token.unwrap()
    );
    let page = until(&browser, &path, |page| !page.has("http-equiv=\"refresh\"")).await;
    assert!(
        page.text_of("error")
            .unwrap()
            .contains("is port 80 forwarded"),
        "{page:?}"
    );

    // A token that is not one: 404; one that is unknown: the API's words.
    assert_eq!(
        browser
            .get("/console/certificate/progress/not-a-token")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let unknown = browser.get("/console/certificate/progress/00ff").await;
    assert!(unknown.text_of("error").unwrap().contains("no such token"));
}

/// Follows a long-running action's progress page (it reloads itself with `<meta refresh>`)
/// to its result, as a browser would; bounded, since the order talks to a real CA.
async fn follow_progress(browser: &Browser, started: Page) -> Page {
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{started:?}");
    let path = started.location.expect("the progress page");
    assert!(path.starts_with("/console/certificate/progress/"), "{path}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let page = browser.get(&path).await;
        if !page.has("http-equiv=\"refresh\"") {
            return page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: {page:?}"
        );
        // The page's own refresh interval, shortened: the reload is what a browser does.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_requested_and_renewed_through_the_console_is_presented() {
    use pebble_test_util::{Pebble, PebbleOptions};
    let challenge = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let challenge_port = challenge.local_addr().expect("addr").port();
    let pebble = Pebble::start(PebbleOptions {
        http_port: challenge_port,
        mock_dns: true,
        ..PebbleOptions::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    drop(challenge);
    let directory = pebble.directory_url();
    let ca_file = pebble.ca_file();
    let gateway = TestGateway::start_with_console(|config| {
        config.tls.source =
            gateway::config::CertificateSource::Acme(gateway::config::AcmeSettings {
                directory_url: directory.clone(),
                contact_email: None,
                ca_file: Some(ca_file.clone()),
                domains: vec![HOST_NAME.to_owned()],
                staging_directory_url: None,
            });
        config.listen.acme_http.address = "127.0.0.1".parse().expect("ip");
        config.listen.acme_http.port = challenge_port;
        config.listen.acme_http.enabled = true;
    })
    .await;
    let self_signed = presented_fingerprint(&gateway).await;
    let browser = Browser::sign_in(&gateway).await;
    // The gateway orders its first certificate at start; wait for it so the console's
    // order is the last one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while presented_fingerprint(&gateway).await == self_signed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no first certificate:\n{}",
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = presented_fingerprint(&gateway).await;
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("pebble-root.pem");
    std::fs::write(&root, pebble.issuing_root_pem()).expect("root");
    let browser = browser.trusting(&root);

    // The form, as the page sends it (a checked box, a JSON boolean in the API call).
    let started = browser
        .post(
            "/console/certificate/acme",
            &[
                ("domains", HOST_NAME),
                ("email", "ops@archive.test"),
                ("accept_terms", "on"),
                ("directory_url", directory.as_str()),
            ],
        )
        .await;
    let done = follow_progress(&browser, started).await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}\n{}", pebble.log());
    let ordered = done
        .text_of("new-cert-fingerprint")
        .unwrap_or_else(|| panic!("{done:?}"));
    assert_ne!(ordered, first);
    assert_eq!(presented_fingerprint(&gateway).await, ordered);

    // "Renew now" on the status page: shown for ACME, and it swaps in a new certificate.
    let status = browser.get("/console/status").await;
    assert!(status.has("id=\"cert-renew\""), "{status:?}");
    assert!(status.has("id=\"cert-renewal-next\""), "{status:?}");
    let started = browser.post("/console/certificate/renew", &[]).await;
    let done = follow_progress(&browser, started).await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}\n{}", pebble.log());
    let renewed = done
        .text_of("new-cert-fingerprint")
        .unwrap_or_else(|| panic!("{done:?}"));
    assert_ne!(renewed, ordered);
    assert_eq!(presented_fingerprint(&gateway).await, renewed);
    // The renewal went through the loop: its record says so.
    let info = gateway
        .api()
        .invoke(&Caller::Host, "GetCertificateInfo", Params::new())
        .await;
    let renewal = &info.envelope.result["renewal"];
    assert_eq!(renewal["scheduled"], true, "{info:?}");
    assert_eq!(renewal["consecutiveFailures"], 0, "{info:?}");
    assert!(renewal["lastSuccess"].is_string(), "{info:?}");
}

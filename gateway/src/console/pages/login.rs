//! Sign-in, the first login's forced new password, its acknowledgement, and sign-out.
//!
//! - `GET /console/login`: the form (user name, password); a browser already signed in goes
//!   to the main page.
//! - `POST /console/login`: [`crate::service::Gateway::check_admin_password`], the API's
//!   throttled check. The right password starts a session under a fresh token (the one the
//!   browser presented, if any, ends). The initial `admin`/`admin` is replaced at once
//!   (`ResetOwnPassword`) and the answer is the page that shows the new password once; the
//!   session may do nothing else until it is acknowledged.
//! - `GET|POST /console/new-password`: the acknowledgement ("I have stored this password").
//!   Sent without the box ticked, the page comes back without the password: it is never
//!   stored, so never shown again.
//! - `POST /console/logout`: the session ends on the server.

use axum::http::header::{RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use fluent_templates::fluent_bundle::FluentValue;
use minijinja::context;
use serde_json::json;

use crate::api::http::auth::ADMIN_USER;
use crate::api::{Caller, Params};
use crate::console::i18n;
use crate::console::render::{self, Viewer};
use crate::console::session::{
    clear_cookie, redirect, session_unavailable, set_cookie, Acknowledging, Form, Visitor,
    VisitorForm, LOGIN_PATH, MAIN_PATH,
};
use crate::service::{AdminLogin, ServiceError};

/// The login form, with an error in words when the last attempt failed.
fn login_form(status: StatusCode, viewer: &Viewer, user: &str, error: Option<String>) -> Response {
    render::page_with_status(
        status,
        viewer,
        "login.html",
        context! { user => user, error => error },
    )
}

/// `GET /console/login`.
pub async fn login_page(visitor: Visitor) -> Response {
    let signed_in = match visitor.presented.as_deref() {
        // A session that cannot be checked gets the form: it lets nothing in, and signing
        // in then answers for itself.
        Some(token) => visitor.api.gateway().sessions().get(token).await,
        None => Ok(None),
    };
    if matches!(signed_in, Ok(Some(_))) {
        return redirect(MAIN_PATH);
    }
    login_form(StatusCode::OK, &visitor.viewer, ADMIN_USER, None)
}

/// `POST /console/login`.
pub async fn login(VisitorForm { visitor, fields }: VisitorForm) -> Response {
    let gateway = visitor.api.gateway();
    let lang = visitor.viewer.lang;
    let user = fields.get("user").trim();
    let password = fields.get("password");
    let refused = |status: StatusCode, key: &str| {
        login_form(status, &visitor.viewer, user, Some(i18n::text(lang, key)))
    };
    if let Err(e) = gateway.check_admin_client(visitor.client) {
        return match e {
            ServiceError::InitialAdminPassword => {
                refused(StatusCode::FORBIDDEN, "login-first-on-host")
            }
            other => unavailable(&visitor.viewer, user, &other),
        };
    }
    let login = match gateway
        .check_admin_password(user, password, visitor.client)
        .await
    {
        Ok(login) => login,
        Err(ServiceError::WrongAdminPassword) => {
            return refused(StatusCode::UNAUTHORIZED, "login-wrong")
        }
        Err(ServiceError::Throttled { retry_after }) => {
            // Whole seconds, rounded up: "wait 0 s" would invite an immediate retry.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let message = i18n::text_with(
                lang,
                "login-throttled",
                &[("seconds", FluentValue::from(seconds))],
            );
            let mut response = login_form(
                StatusCode::TOO_MANY_REQUESTS,
                &visitor.viewer,
                user,
                Some(message),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            return response;
        }
        Err(other) => return unavailable(&visitor.viewer, user, &other),
    };
    let sessions = gateway.sessions();
    match login {
        AdminLogin::Valid => {
            let created = sessions
                .create(visitor.presented.as_deref().map(String::as_str), false)
                .await;
            let (token, _) = match created {
                Ok(created) => created,
                Err(e) => return unavailable(&visitor.viewer, user, &e),
            };
            tracing::info!(client = %visitor.client, "administrator signed in to the console");
            let mut response = redirect(MAIN_PATH);
            response
                .headers_mut()
                .insert(SET_COOKIE, set_cookie(&token));
            response
        }
        AdminLogin::InitialPassword => {
            // The first login: the initial password is replaced now, and the new one is
            // shown this once.
            let mut params = Params::new();
            params.insert("currentPassword".into(), json!(password));
            let caller = Caller::AdminFirstLogin {
                client: visitor.client,
            };
            let answer = visitor
                .api
                .invoke(&caller, "ResetOwnPassword", params)
                .await;
            if let Some(error) = answer.envelope.error {
                let status = StatusCode::from_u16(answer.http_status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return login_form(status, &visitor.viewer, user, Some(error.message));
            }
            let Some(new_password) = answer.envelope.result["password"].as_str() else {
                return unavailable(
                    &visitor.viewer,
                    user,
                    &ServiceError::Unavailable("the new password was not returned"),
                );
            };
            let created = sessions
                .create(visitor.presented.as_deref().map(String::as_str), true)
                .await;
            // The password was replaced: it must be shown now, session or not (it is shown
            // only this once). Without a session the acknowledgement cannot be asked for;
            // the next sign-in uses the new password.
            let (token, session) = match created {
                Ok(created) => created,
                Err(e) => {
                    tracing::warn!(error = %e, "no console session after the first login; showing the new password without one");
                    let mut response = new_password_response(
                        StatusCode::OK,
                        &visitor.viewer,
                        Some(new_password),
                        true,
                        None,
                    );
                    response.headers_mut().insert(SET_COOKIE, clear_cookie());
                    return response;
                }
            };
            tracing::info!(
                client = %visitor.client,
                "administrator signed in to the console for the first time; initial password replaced"
            );
            let viewer = Viewer {
                lang,
                csrf: Some(session.csrf().to_owned()),
            };
            let mut response =
                new_password_response(StatusCode::OK, &viewer, Some(new_password), true, None);
            response
                .headers_mut()
                .insert(SET_COOKIE, set_cookie(&token));
            response
        }
    }
}

fn unavailable(viewer: &Viewer, user: &str, error: &ServiceError) -> Response {
    tracing::warn!(error = %error, "console login could not be checked");
    login_form(
        StatusCode::SERVICE_UNAVAILABLE,
        viewer,
        user,
        Some(i18n::text(viewer.lang, "login-unavailable")),
    )
}

/// The page that shows a new password once (`password`), or, without it, asks again for
/// the acknowledgement. `first_login` picks the wording.
pub fn new_password_response(
    status: StatusCode,
    viewer: &Viewer,
    password: Option<&str>,
    first_login: bool,
    error: Option<String>,
) -> Response {
    render::page_with_status(
        status,
        viewer,
        "new_password.html",
        context! {
            password => password,
            first_login => first_login,
            error => error,
        },
    )
}

/// `GET /console/new-password`: only while an acknowledgement is pending.
pub async fn new_password_page(Acknowledging(admin): Acknowledging) -> Response {
    if !admin.session().acknowledgement_pending {
        return redirect(MAIN_PATH);
    }
    new_password_response(StatusCode::OK, admin.viewer(), None, false, None)
}

/// `POST /console/new-password`: the box must be ticked.
pub async fn acknowledge(form: Form<Acknowledging>) -> Response {
    let Form {
        guard: Acknowledging(admin),
        fields,
    } = form;
    if !admin.session().acknowledgement_pending {
        return redirect(MAIN_PATH);
    }
    if !fields.checked("stored") {
        let error = i18n::text(admin.lang(), "new-password-tick-the-box");
        return new_password_response(
            StatusCode::BAD_REQUEST,
            admin.viewer(),
            None,
            false,
            Some(error),
        );
    }
    if admin
        .api()
        .gateway()
        .sessions()
        .acknowledge(admin.token())
        .await
        .is_err()
    {
        return session_unavailable(admin.viewer());
    }
    redirect(MAIN_PATH)
}

/// `POST /console/logout`: ends the session on the server and clears the cookie.
pub async fn logout(form: Form<Acknowledging>) -> Response {
    let Acknowledging(admin) = form.guard;
    if admin
        .api()
        .gateway()
        .sessions()
        .remove(admin.token())
        .await
        .is_err()
    {
        // Still alive on the server: the cookie stays, so signing out can be tried again.
        return session_unavailable(admin.viewer());
    }
    tracing::info!(client = %admin.client(), "administrator signed out of the console");
    let mut response = redirect(LOGIN_PATH);
    response.headers_mut().insert(SET_COOKIE, clear_cookie());
    response
}

//! The Management Console: the administrator's web UI, served with the Management API on
//! the console listener (HTTPS only; [`crate::console_listener`] mounts [`router`] beside the
//! API's routes).
//!
//! Server-rendered HTML that works without JavaScript; `console.js` only adds copy buttons,
//! submits the language drop-down on change and enables the Continue button of a
//! password page once its box is ticked (the server requires the box anyway). The console
//! is one more client of the API: every change calls [`crate::api::Api::invoke`] as
//! [`crate::api::Caller::Admin`] and shows the envelope's error message on failure.
//!
//! Modules: [`session`] (cookie, guards, CSRF), [`render`] (templates), [`i18n`]
//! (catalogues), [`assets`] (CSS, JS, icon), `pages/*` (one file per page or group).
//!
//! # Writing a page handler
//!
//! - **Guard**: take [`session::SignedIn`] as an argument (or [`session::Acknowledging`]
//!   where a pending new-password acknowledgement must not redirect). Without a live
//!   session the request never reaches the handler: the browser gets 303 to the login page.
//! - **GET**: build the page's own context and render it:
//!   `admin.page("main.html", context! { mailboxes => rows })`. The template extends
//!   `layout.html` (`{% extends "layout.html" %}`, fills `{% block title %}` and
//!   `{% block content %}`); `lang`, `csrf` and `signed_in` are added to every context.
//!   Texts come from the catalogues: `{{ t("key") }}` or `{{ t("key", name=value) }}`, with
//!   the key added to both `locales/en/console.ftl` and `locales/de/console.ftl` (a unit
//!   test fails otherwise). New templates are listed in [`render`]'s `TEMPLATES`.
//! - **POST**: take [`session::Form<SignedIn>`] (`Form { guard: admin, fields }`): the
//!   body is read (bounded) and the CSRF token checked before the handler runs; every
//!   `<form method="post">` carries `<input type="hidden" name="csrf" value="{{ csrf }}">`.
//!   Read fields with `fields.get("name")` / `fields.checked("box")`, or hand them on with
//!   `fields.into_params()`. Call the API with `admin.invoke("Function", params).await`;
//!   on `Err(failure)` show `failure.message` (in the form again, or
//!   `admin.failure_page(&failure)`). After a change answer `session::redirect(path)`
//!   (303, post/redirect/get), except for pages that show a password once (render them
//!   directly; never put a password in a URL).
//! - **Headers**: every console response gets the CSP, `no-store` and the other security
//!   headers from this module's middleware; handlers set none of them.
//! - **Routes**: add them in [`router`] (paths per the design: `/console/...`).

pub mod assets;
pub mod i18n;
mod pages;
pub mod render;
pub mod session;
#[cfg(test)]
mod tests;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::api::Api;

/// The console's Content-Security-Policy: only its own scripts, styles and images, no
/// inline script or style, forms only to itself, never framed.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (mounted beside the API's by [`crate::console_listener::router`]).
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(|| async { session::redirect(session::MAIN_PATH) }))
        .route(
            "/console",
            get(|| async { session::redirect(session::MAIN_PATH) }),
        )
        .route("/console/", get(pages::mailboxes::main_page))
        .route(
            "/console/login",
            get(pages::login::login_page).post(pages::login::login),
        )
        .route("/console/logout", post(pages::login::logout))
        .route(
            session::ACKNOWLEDGE_PATH,
            get(pages::login::new_password_page).post(pages::login::acknowledge),
        )
        .route("/console/settings", get(pages::settings::settings_page))
        .route(
            "/console/settings/language",
            post(pages::settings::set_language),
        )
        .route(
            "/console/settings/password",
            post(pages::settings::reset_password),
        )
        .route("/console/status", get(pages::status::status_page))
        .route(
            "/console/certificate/self-signed",
            get(pages::certificate::self_signed_page).post(pages::certificate::self_signed),
        )
        .route(
            "/console/certificate/import",
            get(pages::certificate::import_page).post(pages::certificate::import),
        )
        .route(
            "/console/certificate/acme",
            get(pages::certificate::acme_page).post(pages::certificate::acme),
        )
        .route(
            "/console/certificate/renew",
            post(pages::certificate::renew),
        )
        .route(
            "/console/certificate/progress/{token}",
            get(pages::certificate::progress_page),
        )
        .route(
            "/console/mailboxes/new",
            get(pages::mailboxes::create_page).post(pages::mailboxes::create),
        )
        .route(
            "/console/mailboxes/{id}/acknowledge",
            post(pages::mailboxes::acknowledge),
        )
        .route(
            "/console/mailboxes/{id}/edit",
            get(pages::mailboxes::edit_page).post(pages::mailboxes::edit),
        )
        .route(
            "/console/mailboxes/{id}/delete",
            get(pages::mailboxes::delete_page).post(pages::mailboxes::delete),
        )
        .route(
            "/console/mailboxes/{id}/reset-password",
            get(pages::mailboxes::reset_page).post(pages::mailboxes::reset),
        )
        .route(
            "/console/mailboxes/{id}/setup",
            get(pages::mailboxes::setup_page),
        )
        .route("/console/assets/{name}", get(assets::serve))
        .with_state(api)
        .layer(axum::middleware::map_response(headers))
}

/// The security headers of every console response. Pages are never cached (they show
/// passwords once and the state of the moment); assets say how long they may be.
async fn headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    for (name, value) in [
        (CONTENT_SECURITY_POLICY, CSP),
        (STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: under it browsers send `Origin: null` with every form POST
        // (Fetch, "append a request Origin header"), and the same-origin check would refuse
        // the console's own forms. `same-origin` still sends nothing to other sites.
        (REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether `path` is the console's (its 404 is a console page, not the API's JSON).
pub fn owns_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The console's 404 page, in the visitor's language.
pub async fn not_found(api: &Api, request_headers: &axum::http::HeaderMap) -> Response {
    let viewer = render::Viewer {
        lang: session::visitor_language(api, request_headers),
        csrf: None,
    };
    let message = i18n::text(viewer.lang, "error-not-found");
    headers(render::error_page(
        axum::http::StatusCode::NOT_FOUND,
        &viewer,
        &message,
    ))
    .await
}

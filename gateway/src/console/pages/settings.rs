//! The user menu's Settings: the console language (remembered per administrator, the page
//! changes at once) and resetting the administrator's own password (confirmed with the
//! current one; the new one is shown once and must be acknowledged, and other sessions,
//! signed in with the old password, end).

use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde_json::json;

use super::login::new_password_response;
use crate::api::Params;
use crate::config::Language;
use crate::console::i18n;
use crate::console::session::{redirect, Form, SignedIn};

pub const SETTINGS_PATH: &str = "/console/settings";

/// The settings page, with an error in words for the password form.
fn settings(admin: &SignedIn, status: StatusCode, error: Option<String>) -> Response {
    let languages: Vec<_> = Language::ALL
        .iter()
        .map(|language| {
            context! {
                code => language.as_str(),
                name => i18n::text(admin.lang(), &format!("language-{}", language.as_str())),
                selected => *language == admin.lang(),
            }
        })
        .collect();
    crate::console::render::page_with_status(
        status,
        admin.viewer(),
        "settings.html",
        context! { languages => languages, password_error => error },
    )
}

/// `GET /console/settings`.
pub async fn settings_page(admin: SignedIn) -> Response {
    settings(&admin, StatusCode::OK, None)
}

/// `POST /console/settings/language`: `language` = `en` | `de`.
pub async fn set_language(
    Form {
        guard: admin,
        fields,
    }: Form<SignedIn>,
) -> Response {
    let Ok(language) = fields.get("language").parse::<Language>() else {
        let message = i18n::text(admin.lang(), "settings-language-unknown");
        return crate::console::render::error_page(
            StatusCode::BAD_REQUEST,
            admin.viewer(),
            &message,
        );
    };
    if let Err(e) = admin
        .api()
        .gateway()
        .set_admin_language(Some(language))
        .await
    {
        tracing::warn!(error = %e, "the administrator's language could not be stored");
        let failure = crate::console::session::Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
        };
        return admin.failure_page(&failure);
    }
    tracing::info!(client = %admin.client(), %language, "administrator's console language changed");
    redirect(SETTINGS_PATH)
}

/// `POST /console/settings/password`: `current_password`.
pub async fn reset_password(
    Form {
        guard: admin,
        fields,
    }: Form<SignedIn>,
) -> Response {
    let mut params = Params::new();
    params.insert(
        "currentPassword".into(),
        json!(fields.get("current_password")),
    );
    match admin.invoke("ResetOwnPassword", params).await {
        Ok(result) => {
            let Some(password) = result["password"].as_str() else {
                return settings(
                    &admin,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some(i18n::text(admin.lang(), "error-internal")),
                );
            };
            // The new password is shown whatever happens below: it is shown only now. The
            // failures are logged by the sessions.
            let sessions = admin.api().gateway().sessions();
            let _ = sessions.await_acknowledgement(admin.token()).await;
            if sessions.remove_others(admin.token()).await.is_err() {
                tracing::error!("the other console sessions could not be ended after the password change; they end by themselves within the session limits");
            }
            new_password_response(StatusCode::OK, admin.viewer(), Some(password), false, None)
        }
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => settings(
            &admin,
            StatusCode::UNAUTHORIZED,
            Some(i18n::text(admin.lang(), "settings-password-wrong")),
        ),
        Err(failure) => settings(&admin, failure.status, Some(failure.message)),
    }
}

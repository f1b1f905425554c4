//! Pages from templates: one minijinja environment, templates compiled into the binary.
//!
//! - HTML is escaped automatically (every template name ends in `.html`); templates never
//!   mark input `|safe`.
//! - `t("key")` / `t("key", name=value)` give a text of the page's language from the
//!   catalogue ([`super::i18n`]); `asset("console.css")` gives an asset's URL with its
//!   version, so assets may be cached for long.
//! - Undefined variables are errors, not empty strings: a typo fails the page's test.
//!
//! Every page extends `layout.html` and gets, besides its own context, `lang` (`en`/`de`),
//! `csrf` (the session's token, for forms; absent before sign-in) and `signed_in` (show the
//! user menu); [`page`] adds them from the [`Viewer`].

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::value::{Kwargs, Value};
use minijinja::{context, Environment, Error, ErrorKind, State, UndefinedBehavior};

use super::{assets, i18n};
use crate::config::Language;

/// Every template: name and source.
pub(super) const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    (
        "new_password.html",
        include_str!("templates/new_password.html"),
    ),
    ("settings.html", include_str!("templates/settings.html")),
    ("main.html", include_str!("templates/main.html")),
    ("status.html", include_str!("templates/status.html")),
    (
        "certificate_self_signed.html",
        include_str!("templates/certificate_self_signed.html"),
    ),
    (
        "certificate_import.html",
        include_str!("templates/certificate_import.html"),
    ),
    (
        "certificate_acme.html",
        include_str!("templates/certificate_acme.html"),
    ),
    (
        "certificate_progress.html",
        include_str!("templates/certificate_progress.html"),
    ),
    (
        "certificate_result.html",
        include_str!("templates/certificate_result.html"),
    ),
    (
        "mailbox_create.html",
        include_str!("templates/mailbox_create.html"),
    ),
    (
        "mailbox_password.html",
        include_str!("templates/mailbox_password.html"),
    ),
    (
        "mailbox_edit.html",
        include_str!("templates/mailbox_edit.html"),
    ),
    (
        "mailbox_confirm.html",
        include_str!("templates/mailbox_confirm.html"),
    ),
    (
        "mailbox_setup.html",
        include_str!("templates/mailbox_setup.html"),
    ),
];

/// Who a page is rendered for: the language, and the session's CSRF token once signed in.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub lang: Language,
    /// `Some` once signed in (the user menu and forms need it).
    pub csrf: Option<String>,
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            // The templates are part of the binary: one that does not compile fails every
            // page's test, and the page then answers with the error page.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not compile");
            }
        }
        env.add_function("t", translate);
        env.add_function("asset", asset_url);
        env
    })
}

/// `t("key", name=value, ...)`: the text in the page's language (`lang` in the context).
fn translate(state: &State, key: &str, kwargs: Kwargs) -> Result<String, Error> {
    let lang = state
        .lookup("lang")
        .and_then(|v| v.as_str().and_then(|s| s.parse::<Language>().ok()))
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "t(): no `lang` in context"))?;
    let mut args = Vec::new();
    for name in kwargs.args() {
        let value: Value = kwargs.get(name)?;
        let value = match value.as_i64() {
            Some(number) => fluent_templates::fluent_bundle::FluentValue::from(number),
            None => fluent_templates::fluent_bundle::FluentValue::from(value.to_string()),
        };
        args.push((name, value));
    }
    if !i18n::has_key(lang, key) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("t(): no text {key:?} in the {lang} catalogue"),
        ));
    }
    Ok(i18n::text_with(lang, key, &args))
}

/// `asset("name")`: the URL is built from our own constants (name, hex version), so it is
/// marked safe (minijinja would otherwise write every `/` as `&#x2f;`).
fn asset_url(name: &str) -> Result<Value, Error> {
    assets::url(name)
        .map(Value::from_safe_string)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("asset(): no asset {name:?}"),
            )
        })
}

/// Renders `template` for `viewer` with the page's own `context`, as a 200 page.
pub fn page(viewer: &Viewer, template: &str, context: Value) -> Response {
    page_with_status(StatusCode::OK, viewer, template, context)
}

/// Renders `template` with a status other than 200 (a form shown again with an error: 400,
/// 403, 429...).
pub fn page_with_status(
    status: StatusCode,
    viewer: &Viewer,
    template: &str,
    context: Value,
) -> Response {
    match html(viewer, template, context) {
        Ok(html) => html_response(status, html),
        Err(e) => {
            tracing::error!(template, error = %e, "console page could not be rendered");
            internal_error(viewer.lang)
        }
    }
}

/// The HTML of `template` (tests and [`page`]).
pub fn html(viewer: &Viewer, template: &str, context: Value) -> Result<String, Error> {
    let full = context! {
        lang => viewer.lang.as_str(),
        csrf => viewer.csrf.clone(),
        signed_in => viewer.csrf.is_some(),
        ..context
    };
    environment().get_template(template)?.render(full)
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response()
}

/// The error page: `message` (already in the viewer's language, or the API's message)
/// under a title.
pub fn error_page(status: StatusCode, viewer: &Viewer, message: &str) -> Response {
    page_with_status(
        status,
        viewer,
        "error.html",
        context! { status => status.as_u16(), message => message },
    )
}

/// When even the error page cannot be rendered: a fixed page, no template.
fn internal_error(lang: Language) -> Response {
    let text = i18n::text(lang, "error-internal");
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "<!doctype html><html lang=\"{}\"><meta charset=\"utf-8\"><title>gateway</title><p>{escaped}</p></html>",
            lang.as_str()
        ),
    )
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every key a template uses as `t("key"...)`.
    pub(crate) fn template_keys() -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        for (name, source) in TEMPLATES {
            let mut rest = *source;
            while let Some(start) = rest.find("t(\"") {
                // `t(` preceded by an identifier character is another function (`asset(`).
                let before = rest[..start].chars().last();
                rest = &rest[start + 3..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                if let Some(end) = rest.find('"') {
                    found.insert(((*name).to_owned(), rest[..end].to_owned()));
                }
            }
        }
        found
    }

    #[test]
    fn every_template_compiles() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn every_key_a_template_uses_is_in_every_catalogue() {
        let keys = template_keys();
        assert!(keys.len() > 10, "{keys:?}");
        for (template, key) in &keys {
            for language in Language::ALL {
                assert!(
                    i18n::has_key(language, key),
                    "{template} uses t({key:?}), which the {language} catalogue lacks"
                );
            }
        }
    }

    #[test]
    fn a_key_that_no_catalogue_defines_fails_the_page() {
        let mut env = Environment::new();
        env.add_function("t", translate);
        env.add_template("x.html", "{{ t(\"no-such-key\") }}")
            .unwrap();
        let e = env
            .get_template("x.html")
            .unwrap()
            .render(context! { lang => "en" })
            .unwrap_err();
        assert!(e.to_string().contains("no-such-key"), "{e}");
    }

    #[test]
    fn input_is_escaped() {
        let viewer = Viewer {
            lang: Language::En,
            csrf: None,
        };
        let html = html(
            &viewer,
            "error.html",
            context! { status => 400, message => "<script>alert(1)</script>" },
        )
        .unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}

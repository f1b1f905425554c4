//! The certificate actions of the status page: a new self-signed certificate, an import
//! (PEM chain and key, or PKCS#12), a Let's Encrypt certificate over ACME, and "renew now".
//!
//! Each is one API call. The ACME ones are long-running: the API answers with a token, and
//! the progress page polls `get-status` with it, reloading itself (`<meta refresh>`, no
//! script needed) until the run has finished, then shows the result or the error in words.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use minijinja::value::Value;

use crate::api::{Answer, EnvelopeError, Params, StatusCode as RunStatus};
use crate::console::render;
use crate::console::session::{self, Fields, Form, SignedIn};

/// Where the progress page of a run lives; the token follows.
const PROGRESS_PATH: &str = "/console/certificate/progress/";
/// Seconds between the progress page's reloads.
const REFRESH_SECS: u32 = 2;

/// The error in words: the API's message, then its details (the reason the certificate was
/// refused, say "the PKCS#12 password is wrong"), which the administrator needs to fix it.
fn explain(error: &EnvelopeError) -> String {
    match error.details.as_deref().map(str::trim) {
        Some(details) if !details.is_empty() && details != error.message => {
            format!("{}: {details}", error.message)
        }
        _ => error.message.clone(),
    }
}

fn status_of(answer: &Answer) -> StatusCode {
    StatusCode::from_u16(answer.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A field, trimmed, or None when blank.
fn optional(fields: &Fields, name: &str) -> Option<String> {
    let value = fields.get(name).trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// What the result page shows of a certificate (`CertificateChange` or a bare
/// `CertificateInfo`).
fn certificate_summary(result: &serde_json::Value) -> Option<Value> {
    let cert = if result["certificate"].is_object() {
        &result["certificate"]
    } else {
        result
    };
    let fingerprint = cert["sha256Fingerprint"].as_str()?;
    let names: Vec<String> = ["dnsNames", "ipAddresses"]
        .iter()
        .filter_map(|key| cert[*key].as_array())
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    Some(context! {
        subject => cert["subject"].as_str().unwrap_or_default(),
        issuer => cert["issuer"].as_str().unwrap_or_default(),
        names => names,
        not_after => cert["notAfter"].as_str().unwrap_or_default(),
        fingerprint => fingerprint,
    })
}

fn warnings(result: &serde_json::Value) -> Vec<String> {
    result["warnings"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The page after a finished action: the certificate now in use with any warnings, or
/// the error.
fn result_page(
    admin: &SignedIn,
    status: StatusCode,
    result: Result<&serde_json::Value, String>,
) -> Response {
    let context = match result {
        Ok(result) => context! {
            certificate => certificate_summary(result),
            warnings => warnings(result),
            error => None::<String>,
        },
        Err(error) => context! {
            certificate => None::<Value>,
            warnings => Vec::<String>::new(),
            error => error,
        },
    };
    render::page_with_status(status, admin.viewer(), "certificate_result.html", context)
}

/// Follows a long-running function's first answer: its progress page while it runs, the
/// result when it finished at once, the error otherwise.
fn follow(admin: &SignedIn, answer: &Answer) -> Response {
    if let Some(error) = &answer.envelope.error {
        return result_page(admin, status_of(answer), Err(explain(error)));
    }
    match (&answer.envelope.status_code, &answer.envelope.token) {
        (RunStatus::Running, Some(token)) => session::redirect(&format!("{PROGRESS_PATH}{token}")),
        _ => result_page(admin, StatusCode::OK, Ok(&answer.envelope.result)),
    }
}

/// `GET /console/certificate/self-signed`.
pub async fn self_signed_page(admin: SignedIn) -> Response {
    admin.page(
        "certificate_self_signed.html",
        context! { names => "", error => None::<String> },
    )
}

/// `POST /console/certificate/self-signed`: `CreateSelfSignedCertificate`.
pub async fn self_signed(form: Form<SignedIn>) -> Response {
    let Form {
        guard: admin,
        fields,
    } = form;
    let mut params = Params::new();
    let names = optional(&fields, "names");
    if let Some(names) = &names {
        params.insert("names".into(), names.clone().into());
    }
    let answer = admin.answer("CreateSelfSignedCertificate", params).await;
    match &answer.envelope.error {
        None => result_page(&admin, StatusCode::OK, Ok(&answer.envelope.result)),
        Some(error) => render::page_with_status(
            status_of(&answer),
            admin.viewer(),
            "certificate_self_signed.html",
            context! { names => names.unwrap_or_default(), error => explain(error) },
        ),
    }
}

/// `GET /console/certificate/import`.
pub async fn import_page(admin: SignedIn) -> Response {
    admin.page(
        "certificate_import.html",
        context! { chain => "", error => None::<String> },
    )
}

/// `POST /console/certificate/import`: `ImportCertificate`, from the PEM form (`kind=pem`)
/// or the PKCS#12 form (`kind=pkcs12`, the file as base64: pasted, or read by the page's
/// script from a chosen file, since the console's forms are URL-encoded).
pub async fn import(form: Form<SignedIn>) -> Response {
    let Form {
        guard: admin,
        fields,
    } = form;
    let mut params = Params::new();
    let chain = fields.get("certificate_chain").to_owned();
    if fields.get("kind") == "pkcs12" {
        params.insert("pkcs12".into(), fields.get("pkcs12").into());
        params.insert("password".into(), fields.get("password").into());
    } else {
        params.insert("certificateChain".into(), chain.clone().into());
        params.insert("privateKey".into(), fields.get("private_key").into());
    }
    let answer = admin.answer("ImportCertificate", params).await;
    match &answer.envelope.error {
        None => result_page(&admin, StatusCode::OK, Ok(&answer.envelope.result)),
        // The chain comes back for another try; the key, the file and its password do not
        // (they are secrets, and the page could be kept by the browser).
        Some(error) => render::page_with_status(
            status_of(&answer),
            admin.viewer(),
            "certificate_import.html",
            context! { chain => chain, error => explain(error) },
        ),
    }
}

/// The ACME form with its values.
fn acme_form(
    admin: &SignedIn,
    status: StatusCode,
    fields: Option<&Fields>,
    error: Option<String>,
) -> Response {
    let host_name = admin.api().server().host_name.clone();
    let value = |name: &str| fields.map_or("", |f| f.get(name)).to_owned();
    let domains = fields.map_or(host_name, |f| f.get("domains").to_owned());
    render::page_with_status(
        status,
        admin.viewer(),
        "certificate_acme.html",
        context! {
            domains => domains,
            email => value("email"),
            directory_url => value("directory_url"),
            error => error,
        },
    )
}

/// `GET /console/certificate/acme`.
pub async fn acme_page(admin: SignedIn) -> Response {
    acme_form(&admin, StatusCode::OK, None, None)
}

/// `POST /console/certificate/acme`: `RequestAcmeCertificate`, long-running.
pub async fn acme(form: Form<SignedIn>) -> Response {
    let Form {
        guard: admin,
        fields,
    } = form;
    // The page requires the box too; a form without it is refused before the API is
    // asked, since requesting a certificate means agreeing to the CA's terms.
    if !fields.checked("accept_terms") {
        let message = crate::console::i18n::text(admin.lang(), "acme-terms-required");
        return acme_form(
            &admin,
            StatusCode::BAD_REQUEST,
            Some(&fields),
            Some(message),
        );
    }
    let mut params = Params::new();
    params.insert("domains".into(), fields.get("domains").trim().into());
    params.insert("acceptTermsOfService".into(), true.into());
    if let Some(email) = optional(&fields, "email") {
        params.insert("email".into(), email.into());
    }
    if let Some(url) = optional(&fields, "directory_url") {
        params.insert("directoryUrl".into(), url.into());
    }
    let answer = admin.answer("RequestAcmeCertificate", params).await;
    match &answer.envelope.error {
        // Refused at once (a bad domain, no such function): the form again, to fix it.
        Some(error) => acme_form(
            &admin,
            status_of(&answer),
            Some(&fields),
            Some(explain(error)),
        ),
        None => follow(&admin, &answer),
    }
}

/// `POST /console/certificate/renew`: `RenewCertificate`, long-running.
pub async fn renew(form: Form<SignedIn>) -> Response {
    let admin = form.guard;
    let answer = admin.answer("RenewCertificate", Params::new()).await;
    follow(&admin, &answer)
}

/// `GET /console/certificate/progress/{token}`: where a run stands; reloads itself while it
/// runs.
pub async fn progress_page(admin: SignedIn, Path(token): Path<String>) -> Response {
    // Tokens are hex; anything else is not one of ours and must not reach a page's URL.
    if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return admin.failure_page(&session::Failure {
            status: StatusCode::NOT_FOUND,
            message: crate::console::i18n::text(admin.lang(), "error-not-found"),
        });
    }
    let mut params = Params::new();
    params.insert("token".into(), token.clone().into());
    let answer = admin.api().status(&admin.caller(), params).await;
    if let Some(error) = &answer.envelope.error {
        return result_page(&admin, status_of(&answer), Err(explain(error)));
    }
    match answer.envelope.status_code {
        RunStatus::Running => admin.page(
            "certificate_progress.html",
            context! {
                refresh => REFRESH_SECS,
                url => format!("{PROGRESS_PATH}{token}"),
                percent => answer.envelope.percent_progress,
                text => answer.envelope.status_text,
            },
        ),
        _ => result_page(&admin, StatusCode::OK, Ok(&answer.envelope.result)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_in_words_includes_the_reason() {
        let error = EnvelopeError {
            message: "the certificate was not imported".into(),
            details: Some("the PKCS#12 password is wrong".into()),
            kind: "invalid_input".into(),
        };
        assert_eq!(
            explain(&error),
            "the certificate was not imported: the PKCS#12 password is wrong"
        );
        let plain = EnvelopeError {
            details: None,
            ..error
        };
        assert_eq!(explain(&plain), "the certificate was not imported");
    }

    #[test]
    fn a_summary_reads_a_certificate_change_or_a_bare_certificate() {
        let info = serde_json::json!({
            "subject": "CN=mx.test", "issuer": "CN=R3", "dnsNames": ["mx.test"],
            "ipAddresses": ["192.0.2.1"], "notAfter": "2027-01-01T00:00:00Z",
            "sha256Fingerprint": "ab",
        });
        let change = serde_json::json!({ "certificate": info.clone(), "warnings": ["soon"] });
        for result in [&info, &change] {
            let summary = certificate_summary(result).expect("a certificate");
            assert_eq!(
                summary.get_attr("fingerprint").unwrap().as_str(),
                Some("ab")
            );
            assert_eq!(summary.get_attr("names").unwrap().len(), Some(2));
        }
        assert_eq!(warnings(&change), ["soon"]);
        assert!(certificate_summary(&serde_json::json!({})).is_none());
    }
}

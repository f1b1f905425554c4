//! Function parameters from a request body: a JSON object, form fields, or nothing.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::HeaderMap;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use crate::api::{ApiError, Params};

/// Largest request body: parameters are a few short strings.
pub const BODY_LIMIT: usize = 64 * 1024;

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

fn too_large() -> ApiError {
    ApiError::new(
        413,
        "invalid_input",
        format!("the request body is larger than {} KiB", BODY_LIMIT / 1024),
    )
}

fn unsupported(found: &str) -> ApiError {
    ApiError::new(
        415,
        "invalid_input",
        format!("send parameters as {JSON} (an object) or {FORM}"),
    )
    .with_details(format!("Content-Type: {found}"))
}

/// Refuses a body whose declared length is over [`BODY_LIMIT`] before anything is read.
pub fn check_declared_length(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    Ok(())
}

/// How long a request body may take to arrive when nothing else says.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads at most [`BODY_LIMIT`] bytes of `body`, within `timeout`, and parses them as
/// parameters. An empty body is no parameters, whatever its type.
pub async fn params(
    headers: &HeaderMap,
    body: Body,
    timeout: Duration,
) -> Result<Params, ApiError> {
    check_declared_length(headers)?;
    // A body trickling in byte by byte must not hold the connection (and its slot) forever.
    let Ok(collected) =
        tokio::time::timeout(timeout, Limited::new(body, BODY_LIMIT).collect()).await
    else {
        return Err(ApiError::new(
            408,
            "invalid_input",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        ));
    };
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(_) => {
            return Err(ApiError::new(
                400,
                "invalid_input",
                "the request body could not be read",
            ))
        }
    };
    if bytes.is_empty() {
        return Ok(Params::new());
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(content_type) = content_type else {
        return Err(unsupported("(none)"));
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        JSON => json(&bytes),
        FORM => form(&bytes),
        _ => Err(unsupported(&content_type)),
    }
}

fn json(bytes: &[u8]) -> Result<Params, ApiError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(params)) => Ok(params),
        Ok(_) => Err(ApiError::invalid_parameters(
            "the JSON body must be an object of parameters",
        )),
        Err(e) => Err(ApiError::invalid_parameters(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// Form fields, every value a string. A field given twice is refused rather than guessed.
fn form(bytes: &[u8]) -> Result<Params, ApiError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::invalid_parameters("the form is not UTF-8"));
    }
    let mut params = Params::new();
    for (name, value) in form_urlencoded::parse(bytes) {
        // Percent-escapes that decode to something other than UTF-8 become U+FFFD: refuse
        // them instead of storing a mangled name or description.
        if name.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
            return Err(ApiError::invalid_parameters(
                "a form field is not UTF-8 once decoded",
            ));
        }
        let name = name.into_owned();
        if params.contains_key(&name) {
            return Err(ApiError::invalid_parameters(format!(
                "parameter `{name}` is given more than once"
            )));
        }
        params.insert(name, serde_json::Value::String(value.into_owned()));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        }
        headers
    }

    async fn parse(
        content_type: Option<&'static str>,
        body: &'static [u8],
    ) -> Result<Params, ApiError> {
        params(
            &headers(content_type),
            Body::from(body),
            DEFAULT_BODY_TIMEOUT,
        )
        .await
    }

    #[tokio::test]
    async fn form_fields_become_strings_and_json_objects_pass_through() {
        let form = parse(Some(FORM), b"name=Acme+Corp&description=%C3%A4")
            .await
            .unwrap();
        assert_eq!(form["name"], "Acme Corp");
        assert_eq!(form["description"], "ä");
        let json = parse(Some("Application/JSON; charset=utf-8"), br#"{"id":"x"}"#)
            .await
            .unwrap();
        assert_eq!(json["id"], "x");
        assert!(parse(None, b"").await.unwrap().is_empty());
        assert!(parse(Some("text/plain"), b"").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn repeated_form_fields_are_refused() {
        let e = parse(Some(FORM), b"id=a&id=b").await.unwrap_err();
        assert_eq!(e.http_status, 400);
        assert!(e.details.unwrap().contains("`id`"));
    }

    #[tokio::test]
    async fn undecodable_form_fields_are_refused() {
        assert_eq!(
            parse(Some(FORM), b"name=%FF")
                .await
                .unwrap_err()
                .http_status,
            400
        );
        assert_eq!(
            parse(Some(FORM), b"name=\xff")
                .await
                .unwrap_err()
                .http_status,
            400
        );
    }

    #[tokio::test]
    async fn json_must_be_an_object() {
        for body in [&b"[1]"[..], b"\"x\"", b"{", b"null"] {
            let e = params(&headers(Some(JSON)), Body::from(body), DEFAULT_BODY_TIMEOUT)
                .await
                .unwrap_err();
            assert_eq!(e.http_status, 400, "{body:?}");
            assert_eq!(e.kind, "invalid_input");
        }
    }

    #[tokio::test]
    async fn other_or_missing_content_types_are_unsupported() {
        assert_eq!(
            parse(Some("text/plain"), b"a")
                .await
                .unwrap_err()
                .http_status,
            415
        );
        assert_eq!(parse(None, b"a=b").await.unwrap_err().http_status, 415);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_with_or_without_a_length() {
        let big = vec![b'a'; BODY_LIMIT + 1];
        let e = params(
            &headers(Some(FORM)),
            Body::from(big.clone()),
            DEFAULT_BODY_TIMEOUT,
        )
        .await
        .unwrap_err();
        assert_eq!(e.http_status, 413);
        let mut declared = headers(Some(FORM));
        declared.insert(CONTENT_LENGTH, HeaderValue::from(BODY_LIMIT + 1));
        let e = params(&declared, Body::empty(), DEFAULT_BODY_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(e.http_status, 413);
        let exact = vec![b'a'; BODY_LIMIT];
        let ok = params(
            &headers(Some(FORM)),
            Body::from(exact),
            DEFAULT_BODY_TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(ok.len(), 1);
    }
}

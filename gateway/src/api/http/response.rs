//! Answers as HTTP responses, and the headers every response carries (one place).

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, RETRY_AFTER,
    STRICT_TRANSPORT_SECURITY, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::{Answer, ApiError};

/// The challenge of every 401: HTTP Basic as `admin` (API keys go in `Bearer`).
pub const WWW_AUTHENTICATE_VALUE: &str = "Basic realm=\"gateway\", charset=\"UTF-8\"";

const JSON: &str = "application/json";

/// Headers on every response, whatever produced it.
const SECURITY_HEADERS: &[(axum::http::HeaderName, &str)] = &[
    // Answers hold passwords shown once and the state of the moment: never cached.
    (CACHE_CONTROL, "no-store"),
    (STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (X_FRAME_OPTIONS, "DENY"),
    (CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
    (REFERRER_POLICY, "no-referrer"),
];

/// An API answer as a response: its HTTP status, the envelope as JSON, `Retry-After` for a
/// throttled caller and the Basic challenge on 401.
pub fn answer(answer: Answer) -> Response {
    let status =
        StatusCode::from_u16(answer.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match serde_json::to_vec(&answer.envelope) {
        Ok(body) => body,
        // An envelope is plain data; this cannot happen, but a response must still go out.
        Err(_) => br#"{"error":{"message":"the answer could not be encoded","details":null,"kind":"error"},"statusCode":"failed","token":null,"percentProgress":null,"statusText":null,"result":null}"#.to_vec(),
    };
    let mut response = (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static(JSON))],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Some(seconds) = answer.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(WWW_AUTHENTICATE_VALUE),
        );
    }
    response
}

pub fn error(error: ApiError) -> Response {
    answer(error.into_answer())
}

/// A JSON document that is not an envelope (`/api/openapi.json`).
pub fn json(value: &serde_json::Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static(JSON))],
        body,
    )
        .into_response()
}

/// Middleware for every response the router gives: the security headers, and an envelope
/// instead of any error body that is not JSON (one axum produced on its own, such as an
/// extractor's rejection), so a client always gets the documented shape. (Errors hyper
/// answers at the connection level, such as oversized headers, never reach the router.)
pub async fn finish(mut response: Response) -> Response {
    // The web console's pages (its 404 comes through the listener's fallback, inside this middleware) carry their own
    // headers, a stricter CSP among them.
    if response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/html"))
    {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(JSON.as_bytes()));
    if !is_json && (response.status().is_client_error() || response.status().is_server_error()) {
        let status = response.status();
        let retry_after = response.headers().get(RETRY_AFTER).cloned();
        let allow = response.headers().get(axum::http::header::ALLOW).cloned();
        let message = status
            .canonical_reason()
            .unwrap_or("the request could not be served")
            .to_owned();
        let kind = match status.as_u16() {
            404 => "not_found",
            401 => "unauthorized",
            403 => "forbidden",
            429 => "throttled",
            400..=499 => "invalid_input",
            _ => "error",
        };
        response = error(ApiError::new(status.as_u16(), kind, message));
        if let Some(value) = retry_after {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        if let Some(value) = allow {
            response
                .headers_mut()
                .insert(axum::http::header::ALLOW, value);
        }
    }
    with_security_headers(response).await
}

/// The headers every response carries, and nothing else changed (the health routes' plain
/// text stays as it is).
pub async fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

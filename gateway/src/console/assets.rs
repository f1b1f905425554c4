//! The console's stylesheet, script and icon, compiled into the binary (gateways often sit
//! in networks without internet access: nothing comes from a CDN).
//!
//! Pages link them as `/console/assets/<name>?v=<version>` (the template function
//! `asset(name)`), the version being a hash of the content: a URL with the current version
//! may be cached for a year, since a new release changes the URL.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "pages.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/pages.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("assets/icon.svg"),
    ),
];

fn find(name: &str) -> Option<(usize, &'static str, &'static [u8])> {
    ASSETS
        .iter()
        .enumerate()
        .find(|(_, (n, _, _))| *n == name)
        .map(|(i, (_, content_type, bytes))| (i, *content_type, *bytes))
}

/// Each asset's version: the first 16 hex digits of its SHA-256.
fn versions() -> &'static [String] {
    static VERSIONS: OnceLock<Vec<String>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, bytes)| {
                let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
                data_encoding::HEXLOWER.encode(&digest.as_ref()[..8])
            })
            .collect()
    })
}

/// The URL of asset `name` with its version; `None` for an unknown name.
pub fn url(name: &str) -> Option<String> {
    let (index, _, _) = find(name)?;
    Some(format!("/console/assets/{name}?v={}", versions()[index]))
}

/// `GET /console/assets/{name}?v=<version>`.
pub(super) async fn serve(Path(name): Path<String>, uri: Uri) -> Response {
    let Some((index, content_type, bytes)) = find(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Only the current version is cached for long; an old or missing one is revalidated.
    let version = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(key, _)| key == "v")
        .map(|(_, value)| value.into_owned());
    let cache = if version.as_deref() == Some(versions()[index].as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        bytes,
    )
        .into_response()
}

//! The status page: listeners, certificate, version, uptime (helper "pages" fills this in).

use axum::response::Response;
use minijinja::context;

use crate::console::session::SignedIn;

/// `GET /console/status`.
pub async fn status_page(admin: SignedIn) -> Response {
    admin.page("status.html", context! {})
}

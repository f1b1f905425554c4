//! The main page: the mailbox table and its actions (helper "pages" fills this in).

use axum::response::Response;
use minijinja::context;

use crate::console::session::SignedIn;

/// `GET /console/`.
pub async fn main_page(admin: SignedIn) -> Response {
    admin.page("main.html", context! {})
}

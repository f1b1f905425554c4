//! What the console listener answers: the Management API's routes, the web console's pages,
//! and what needs both: `/metrics` (which a signed-in console session may read too) and the
//! answer for an unknown path (a console page under `/console`, the API's JSON elsewhere).

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::api::http::{auth, client, response};
use crate::api::{Access, Api};

/// Every route; the API's and the console's keep their own response headers.
pub fn router(api: Api) -> Router {
    let listener = Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found);
    crate::api::http::router(api.clone(), listener).merge(crate::console::router(api))
}

/// `GET /metrics`: the Prometheus text, for an API key, the administrator's password or a
/// signed-in console session; anyone else gets the API's 401.
async fn metrics(State(api): State<Api>, request: Request) -> Response {
    let client = client(&request);
    let headers = request.headers();
    let signed_in = match crate::console::session::token(headers) {
        // A session that cannot be checked is not one: the other ways in still work.
        Some(token) => matches!(
            api.gateway().sessions().get(&token).await,
            Ok(Some(session)) if !session.acknowledgement_pending
        ),
        None => false,
    };
    if !signed_in {
        let allowed = match auth::authenticate(&api, headers, client).await {
            Ok(caller) => crate::api::functions::check_access(Access::Admin, &caller),
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = allowed {
            tracing::info!(
                %client,
                status = refusal.http_status,
                kind = refusal.kind,
                "metrics scrape refused"
            );
            return response::error(refusal);
        }
    }
    let certificate = api.server().certificates.clone();
    crate::metrics_endpoint::http::response(api.gateway(), certificate.as_deref())
}

async fn not_found(
    State(api): State<Api>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    // A mistyped console address gets the console's page, not the API's JSON.
    if crate::console::owns_path(uri.path()) {
        return crate::console::not_found(&api, &headers).await;
    }
    crate::api::http::not_found()
}

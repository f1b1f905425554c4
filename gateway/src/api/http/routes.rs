//! The routes of the Management API.
//!
//! `POST /api/invoke/{function}`, `POST /api/get-metadata`, `POST /api/get-status` and
//! `GET /api/openapi.json`; anything else is a 404 or 405 envelope. Each handler
//! authenticates (except the OpenAPI document), reads the parameters and hands them to the
//! one dispatcher, [`Api::invoke`]. `GET /healthz` and `/readyz` are merged in from
//! [`super::health`], without a login and without the envelope.

use std::net::{IpAddr, Ipv4Addr};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::{auth, body, response, BodyTimeout, ClientAddr};
use crate::api::{Access, Api, ApiError, Caller, Params};

/// Every route, with the response headers added to whatever answers; the web console's
/// routes ([`crate::console::router`]) are merged in (one listener).
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/invoke/{function}", post(invoke))
        .route("/api/get-metadata", post(metadata))
        .route("/api/get-status", post(status))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api.clone())
        .layer(axum::middleware::map_response(response::finish))
        .merge(super::health::router(api.clone()))
        .merge(crate::console::router(api))
}

/// The client's address; without one (a request that did not come through the listener)
/// the caller counts as remote, the stricter case.
fn client(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0)
}

/// Authentication, then the parameters: an unauthenticated client gets its 401 before any
/// body is read (a body declared too large is refused first, without a look at anything).
async fn caller_and_params(api: &Api, request: Request) -> Result<(Caller, Params), ApiError> {
    let client = client(&request);
    let body_timeout = request
        .extensions()
        .get::<BodyTimeout>()
        .map_or(body::DEFAULT_BODY_TIMEOUT, |t| t.0);
    let (parts, body) = request.into_parts();
    body::check_declared_length(&parts.headers)?;
    let caller = auth::authenticate(api, &parts.headers, client)
        .await
        .inspect_err(|refusal| {
            // Who was refused and why; never what they presented.
            tracing::info!(
                %client,
                status = refusal.http_status,
                kind = refusal.kind,
                "API login refused"
            );
        })?;
    let params = body::params(&parts.headers, body, body_timeout).await?;
    Ok((caller, params))
}

/// How the audit log names a caller: the API key by its id (not secret), never a credential.
fn caller_name(caller: &Caller) -> String {
    match caller {
        Caller::Host => "host".to_owned(),
        Caller::Admin { .. } => "admin".to_owned(),
        Caller::AdminFirstLogin { .. } => "admin (initial password)".to_owned(),
        Caller::ApiKey { key_id, .. } => format!("API key {key_id}"),
    }
}

async fn invoke(
    State(api): State<Api>,
    function: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let Ok(Path(function)) = function else {
        return response::error(ApiError::invalid_parameters(
            "the function name in the path is malformed",
        ));
    };
    let client = client(&request);
    let (caller, params) = match caller_and_params(&api, request).await {
        Ok(found) => found,
        Err(e) => return response::error(e),
    };
    let answer = api.invoke(&caller, &function, params).await;
    // An audit trail of administration: the function by its registered name only (the
    // path is the client's input), never parameters or results (they hold passwords).
    let name = crate::api::functions::find(&function).map_or("(unknown)", |f| f.name());
    tracing::info!(
        %client,
        caller = %caller_name(&caller),
        function = name,
        status = answer.http_status,
        "API call"
    );
    response::answer(answer)
}

async fn metadata(State(api): State<Api>, request: Request) -> Response {
    let answer = match caller_and_params(&api, request).await {
        Ok((caller, params)) => api.get_metadata(&caller, params),
        Err(e) => e.into_answer(),
    };
    response::answer(answer)
}

/// `get-status` polls a long-running function by its token.
async fn status(State(api): State<Api>, request: Request) -> Response {
    match caller_and_params(&api, request).await {
        Ok((caller, params)) => response::answer(api.status(&caller, params).await),
        Err(e) => response::error(e),
    }
}

/// `GET /metrics`: the Prometheus text, for an API key, the administrator's password or a
/// signed-in console session; anyone else gets the API's 401.
async fn metrics(State(api): State<Api>, request: Request) -> Response {
    let client = client(&request);
    let headers = request.headers();
    let signed_in = crate::console::session::token(headers)
        .and_then(|token| api.gateway().sessions().get(&token))
        .is_some_and(|session| !session.acknowledgement_pending);
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

/// The document describes the API; it holds no secret, so it needs no login.
async fn openapi(State(api): State<Api>) -> Response {
    response::json(&api.openapi())
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
    response::error(ApiError::new(
        404,
        "not_found",
        "no such endpoint: functions are called as POST /api/invoke/<Function>; \
         GET /api/openapi.json describes them",
    ))
}

async fn method_not_allowed() -> Response {
    response::error(ApiError::new(
        405,
        "invalid_input",
        "method not allowed: functions are called with POST, the OpenAPI document with GET",
    ))
}

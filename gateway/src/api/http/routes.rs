//! The routes of the Management API.
//!
//! `POST /api/invoke/{function}`, `POST /api/get-metadata`, `POST /api/get-status` and
//! `GET /api/openapi.json`; anything else is a 404 or 405 envelope. Each handler
//! authenticates (except the OpenAPI document), reads the parameters and hands them to the
//! one dispatcher, [`Api::invoke`]. `GET /healthz` and `/readyz` are merged in from
//! [`super::health`], without a login and without the envelope. The listener adds its own
//! routes and the answer for an unknown path ([`crate::console_listener::router`]).

use std::net::{IpAddr, Ipv4Addr};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::{auth, body, response, BodyTimeout, ClientAddr};
use crate::api::{Api, ApiError, Caller, Params};

/// Every route of the API, with the response headers added to whatever answers, and the
/// health probes. `listener` brings the routes and the fallback of the listener that serves
/// the API; they answer like the API's own (its 405, its headers, an envelope for a bare
/// error), so they go in before those are added.
pub fn router(api: Api, listener: Router<Api>) -> Router {
    Router::new()
        .route("/api/invoke/{function}", post(invoke))
        .route("/api/get-metadata", post(metadata))
        .route("/api/get-status", post(status))
        .route("/api/openapi.json", get(openapi))
        .merge(listener)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api.clone())
        .layer(axum::middleware::map_response(response::finish))
        .merge(super::health::router(api))
}

/// The client's address; without one (a request that did not come through the listener)
/// the caller counts as remote, the stricter case.
pub fn client(request: &Request) -> IpAddr {
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

/// The document describes the API; it holds no secret, so it needs no login.
async fn openapi(State(api): State<Api>) -> Response {
    response::json(&api.openapi())
}

/// The API's answer to a path nothing serves.
pub fn not_found() -> Response {
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

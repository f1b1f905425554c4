//! `/healthz` and `/readyz` on the console listener, for service managers, load balancers
//! and container orchestrators. Both need no login, so both say as little as they can:
//! plain text, fixed phrases, never an address, a path or an error's own text (the log has
//! those).
//!
//! - `/healthz` (liveness): the process serves HTTP. Always `200 ok`.
//! - `/readyz` (readiness): `200 ready`, or `503` with one short reason per line: a listener
//!   that stopped serving, graceful shutdown under way, a store that does not take a commit
//!   (an empty commit through the group commit, probed at most every
//!   `STORE_PROBE_INTERVAL`), free
//!   disk space below `[limits] min_free_disk_mib` outside the reserve (new mail is refused
//!   then).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::response;
use crate::api::Api;

const TEXT: &str = "text/plain; charset=utf-8";

/// The two routes, with the headers every response carries (not the API's JSON envelope:
/// probes read a status code and, at most, a line of text).
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(api)
        .layer(axum::middleware::map_response(
            response::with_security_headers,
        ))
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static(TEXT))],
        body,
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".to_owned())
}

async fn readyz(State(api): State<Api>) -> Response {
    let reasons = not_ready_because(&api).await;
    if reasons.is_empty() {
        return text(StatusCode::OK, "ready\n".to_owned());
    }
    let mut body = String::from("not ready\n");
    for reason in reasons {
        body.push_str(&reason);
        body.push('\n');
    }
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Why the gateway should get no new clients now; empty when ready.
pub async fn not_ready_because(api: &Api) -> Vec<String> {
    let server = api.server();
    let mut reasons = Vec::new();
    if server.is_shutting_down() {
        reasons.push("shutting down".to_owned());
    }
    for service in server.stopped_listeners() {
        reasons.push(format!("listener {service} stopped"));
    }
    if !server.store_writable(api.gateway()).await {
        reasons.push("store does not take writes".to_owned());
    }
    if api.gateway().disk_ready().is_err() {
        reasons.push("free disk space below the minimum".to_owned());
    }
    reasons
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::api::ServerContext;
    use crate::service::Gateway;
    use crate::settings::{LiveSettings, SettingsFile};
    use crate::store::faults::Fault;
    use crate::store::space::testing::FakeVolume;

    const MIB: u64 = 1024 * 1024;

    fn api_over(gateway: Gateway, dir: &std::path::Path) -> Api {
        api_probing_every(gateway, dir, Duration::ZERO)
    }

    fn api_probing_every(gateway: Gateway, dir: &std::path::Path, interval: Duration) -> Api {
        let settings = LiveSettings::new(
            &crate::config::Config::default(),
            gateway.email_domain_handle().clone(),
            None,
            SettingsFile {
                path: dir.join("gateway.toml"),
                create_if_missing: true,
            },
        );
        Api::new(
            gateway,
            settings,
            ServerContext::new("localhost".into(), None, "self-signed")
                .with_store_probe_interval(interval),
        )
    }

    /// Status, content type and body of `GET path` through the whole router.
    async fn get(api: &Api, path: &str) -> (u16, String, String) {
        let response = crate::console_listener::router(api.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert_eq!(
            response.headers().get("cache-control").unwrap(),
            "no-store",
            "the security headers are on health answers too"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn healthz_says_ok_and_nothing_else_without_a_login() {
        let (dir, gateway) = crate::service::test_support::gateway();
        let api = api_over(gateway, dir.path());
        assert_eq!(
            get(&api, "/healthz").await,
            (200, TEXT.into(), "ok\n".into())
        );
        assert_eq!(
            get(&api, "/readyz").await,
            (200, TEXT.into(), "ready\n".into())
        );
    }

    #[tokio::test]
    async fn readyz_is_503_while_the_store_refuses_commits() {
        let (dir, gateway, switch) = crate::service::test_support::faulty_gateway();
        let api = api_over(gateway, dir.path());
        switch.set(Fault::Broken);
        let (status, _, body) = get(&api, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready\nstore does not take writes\n");
        assert!(!body.contains(&dir.path().display().to_string()));
        // Liveness is not readiness: the process still answers.
        assert_eq!(get(&api, "/healthz").await.0, 200);
    }

    #[tokio::test]
    async fn readyz_probes_the_store_at_most_once_per_interval() {
        let (dir, gateway, switch) = crate::service::test_support::faulty_gateway();
        // An interval no test outlives: the second request must get the first probe's result.
        let api = api_probing_every(gateway, dir.path(), Duration::from_secs(3600));
        assert_eq!(get(&api, "/readyz").await.0, 200);
        switch.set(Fault::Broken);
        assert_eq!(get(&api, "/readyz").await.0, 200, "the last probe stands");
    }

    #[tokio::test]
    async fn readyz_is_503_below_the_free_space_minimum() {
        let volume = FakeVolume::with_free(100 * MIB);
        let (dir, gateway) =
            crate::service::test_support::gateway_on(volume.clone(), 10 * MIB, 30 * MIB);
        let api = api_over(gateway, dir.path());
        assert_eq!(get(&api, "/readyz").await.0, 200);
        volume.free.store(25 * MIB, Ordering::SeqCst);
        let (status, _, body) = get(&api, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready\nfree disk space below the minimum\n");
    }

    #[tokio::test]
    async fn readyz_names_a_stopped_listener_and_a_shutdown() {
        let (dir, gateway) = crate::service::test_support::gateway();
        let api = api_over(gateway, dir.path());
        api.server().listener_stopped("pop3s");
        api.server().set_shutting_down();
        let (status, _, body) = get(&api, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready\nshutting down\nlistener pop3s stopped\n");
    }
}

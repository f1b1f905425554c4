//! `/metrics` over HTTP: the response both listeners give, and the optional plain-HTTP
//! listener for a scraper on the gateway's own machine (`[metrics] listen`).
//!
//! The plain listener has no authentication and no TLS, which is why validation keeps it on
//! loopback unless `[metrics] allow_remote = true` says otherwise: the text names mailbox ids
//! and how much mail waits, nothing secret, but nothing for the whole network either. It
//! answers `GET /metrics` and nothing else, with its own small budget of connections and a
//! bound on the wait for request headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;

use crate::net::{serve_connections, ConnectionLimits, Listener, ShutdownSignal};
use crate::service::Gateway;
use crate::tls::CertResolver;

/// The `Content-Type` of the Prometheus text format.
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Connections the plain listener serves at once (a scraper needs one).
const MAX_CONNECTIONS: u32 = 8;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A scrape is one request; a kept-alive connection must not hold a slot for ever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);

/// The scrape as an HTTP response (Prometheus text format, never cached).
pub fn response(gateway: &Gateway, certificate: Option<&CertResolver>) -> Response {
    let text = super::scrape(gateway, certificate);
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT)),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    )
        .into_response()
}

/// The plain-HTTP metrics listener.
#[derive(Clone)]
pub struct MetricsServer {
    router: Router,
    limits: ConnectionLimits,
}

impl MetricsServer {
    pub fn new(gateway: Gateway, certificate: Option<Arc<CertResolver>>) -> Self {
        let router = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let gateway = gateway.clone();
                    let certificate = certificate.clone();
                    async move { response(&gateway, certificate.as_deref()) }
                }),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "only GET /metrics is served here\n") });
        Self {
            router,
            limits: ConnectionLimits::new(MAX_CONNECTIONS, MAX_CONNECTIONS),
        }
    }

    /// Serves until shutdown.
    pub async fn serve<L: Listener>(self, listener: L, shutdown: ShutdownSignal) {
        serve_connections(listener, shutdown, move |stream, peer, shutdown| {
            self.clone().connection(stream, peer, shutdown)
        })
        .await;
    }

    async fn connection<S>(self, stream: S, peer: SocketAddr, mut shutdown: ShutdownSignal)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(_permit) = self.limits.try_acquire(peer.ip()) else {
            tracing::debug!(%peer, "metrics connection refused: too many connections");
            return;
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_headers(32);
        let builder = builder.http1_only();
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(self.router.clone()),
        );
        tokio::pin!(connection);
        let age = tokio::time::sleep(MAX_CONNECTION_AGE);
        tokio::pin!(age);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.triggered() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            _ = &mut age => return,
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
        }
    }
}

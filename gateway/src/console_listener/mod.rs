//! The console listener (HTTPS, 8450 by default): the Management API, the web console,
//! `/healthz`, `/readyz` and `/metrics` on one port. It sits above [`crate::api`] and
//! [`crate::console`] because it mounts both ([`router`]).
//!
//! HTTPS only: the listener speaks TLS from the first byte with the same certificate
//! resolver as the mail listeners (a certificate swap reaches the console too), so a
//! plaintext request never gets an HTTP answer. Connections go through the same admission
//! as every protocol (a budget of connections, per client address too), a bounded TLS
//! handshake and a bounded wait for request headers, and finish their requests in flight on
//! graceful shutdown. Requests are served by hyper (HTTP/1.1, or HTTP/2 when the client
//! asks for it through ALPN) and routed by axum ([`router`]).

mod routes;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

pub use routes::router;

use crate::api::http::{BodyTimeout, ClientAddr, BODY_LIMIT, DEFAULT_BODY_TIMEOUT};
use crate::api::Api;
use crate::net::{serve_connections, ConnectionLimits, Listener, ShutdownSignal};
use crate::tls::CertResolver;

/// Timeouts of the console listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleOptions {
    /// Bound on the TLS handshake: a silent client must not hold a slot.
    pub handshake_timeout: Duration,
    /// Bound on receiving a request's headers (HTTP/1.1): against slow-header clients.
    pub header_read_timeout: Duration,
    /// Bound on receiving a request's body (at most [`BODY_LIMIT`] bytes).
    pub body_timeout: Duration,
    /// After this long a connection is closed gracefully (requests in flight finish): an
    /// idle keep-alive or HTTP/2 connection must not hold its slot forever.
    pub max_connection_age: Duration,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connection_age: Duration::from_secs(10 * 60),
        }
    }
}

/// How long requests in flight may take once a connection reached its maximum age.
const AGE_GRACE: Duration = Duration::from_secs(30);

/// The console's TLS acceptor: the shared server configuration (so the same certificate
/// resolver) plus ALPN for HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(resolver: Arc<CertResolver>) -> TlsAcceptor {
    let mut config = (*crate::tls::server_config(resolver)).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// The HTTPS server of the Management API.
#[derive(Clone)]
pub struct ConsoleServer {
    router: axum::Router,
    metrics: crate::metrics::ListenerMetrics,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    options: ConsoleOptions,
}

impl ConsoleServer {
    pub fn new(
        api: Api,
        resolver: Arc<CertResolver>,
        limits: ConnectionLimits,
        options: ConsoleOptions,
    ) -> Self {
        Self {
            metrics: api.gateway().metrics().listener("console"),
            router: router(api),
            acceptor: tls_acceptor(resolver),
            limits,
            options,
        }
    }

    /// Accepts connections on `listener` until shutdown, then lets open connections finish
    /// their requests within the shutdown's grace period.
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
        let client = peer.ip().to_canonical();
        // Held until the connection ends; a refused client is closed without a word (a
        // plaintext line would only confuse its TLS handshake).
        let _permit = match self.limits.try_acquire(client) {
            Ok(permit) => permit,
            Err(limit) => {
                tracing::info!(%peer, ?limit, "console connection refused: too many connections");
                self.metrics.refused_busy();
                return;
            }
        };
        let _open = self.metrics.session_opened();
        let tls = match tokio::time::timeout(
            self.options.handshake_timeout,
            self.acceptor.accept(stream),
        )
        .await
        {
            Ok(Ok(tls)) => {
                self.metrics.tls_handshake(true);
                tls
            }
            Ok(Err(e)) => {
                self.metrics.tls_handshake(false);
                tracing::debug!(%peer, error = %e, "console TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.tls_handshake(false);
                tracing::debug!(%peer, "console TLS handshake timed out");
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let body_timeout = BodyTimeout(self.options.body_timeout);
        let service =
            self.router
                .clone()
                .map_request(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ClientAddr(client));
                    request.extensions_mut().insert(body_timeout);
                    request
                });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.options.header_read_timeout)
            .max_headers(64)
            // Headers and what is buffered of a body; parameters are small.
            .max_buf_size(BODY_LIMIT + 16 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(32)
            .max_header_list_size(16 * 1024)
            .keep_alive_interval(Some(Duration::from_secs(30)));
        // The protocol is the one ALPN settled, so no sniffing (which has no timeout).
        let builder = if h2 {
            builder.http2_only()
        } else {
            builder.http1_only()
        };
        let connection =
            builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
        tokio::pin!(connection);
        let age = tokio::time::sleep(self.options.max_connection_age);
        tokio::pin!(age);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.triggered() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            _ = &mut age => {
                connection.as_mut().graceful_shutdown();
                // Requests in flight may finish, but not take forever.
                match tokio::time::timeout(AGE_GRACE, connection).await {
                    Ok(result) => result,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "console connection ended with an error");
        }
    }
}

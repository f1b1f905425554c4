//! What the SMTP and POP3 servers share above the accept loop: naming the listener,
//! counting it in metrics, and running each connection inside its `session` span.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument as _;

use tokio_rustls::TlsAcceptor;

use super::{ConnectionLimits, ConnectionPermit, Listener, MaybeTls, ShutdownSignal, TlsMode};
use crate::metrics::{ListenerMetrics, Metrics, OpenSession};

/// A connection that got a slot (and on implicit-TLS ports finished its handshake).
pub struct Admitted<S> {
    pub stream: MaybeTls<S>,
    /// The slot, perhaps one of those kept for pick-up.
    pub permit: ConnectionPermit,
    /// Counts the session as open while it lives.
    pub open: OpenSession,
}

/// A protocol server as its listeners run it. A server gives its listener names, its
/// metrics and how it runs one connection; `serve`, `serve_as`, `handle` and `handle_as` come with them.
pub trait ProtocolServer: Send + Sync + Sized + 'static {
    /// The listener's name in metrics and logs when none is given: with STARTTLS, and
    /// with implicit TLS (`smtp` and `smtps`, `pop3` and `pop3s`).
    const LISTENER_NAMES: (&'static str, &'static str);

    fn metrics(&self) -> &Metrics;

    fn limits(&self) -> &ConnectionLimits;

    fn acceptor(&self) -> &TlsAcceptor;

    /// The protocol's "too many connections" line, sent before closing a connection that
    /// found no slot.
    fn busy_line(&self) -> String;

    fn default_listener_name(mode: TlsMode) -> &'static str {
        match mode {
            TlsMode::StartTls => Self::LISTENER_NAMES.0,
            TlsMode::Implicit => Self::LISTENER_NAMES.1,
        }
    }

    /// Runs one admitted connection to its end (inside its span).
    fn connection<S>(
        &self,
        metrics: &ListenerMetrics,
        session_id: String,
        admitted: Admitted<S>,
        peer: SocketAddr,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Accepts connections until shutdown, then waits (bounded) for the open ones to
    /// finish, under the listener's default name.
    fn serve<L: Listener>(
        self: Arc<Self>,
        listener: L,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) -> impl Future<Output = ()> + Send {
        self.serve_as(Self::default_listener_name(mode), listener, mode, shutdown)
    }

    /// [`Self::serve`] for the listener `name` (`smtp`, `submission`, `smtps`, ...).
    fn serve_as<L: Listener>(
        self: Arc<Self>,
        name: &'static str,
        listener: L,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) -> impl Future<Output = ()> + Send {
        let metrics = self.metrics().listener(name);
        super::serve_connections(listener, shutdown, move |stream, peer, signal| {
            let server = self.clone();
            let metrics = metrics.clone();
            async move { server.handle_as(&metrics, stream, peer, mode, signal).await }
        })
    }

    /// Runs one connection to its end, counted under the listener's default name.
    fn handle<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let metrics = self.metrics().listener(Self::default_listener_name(mode));
            self.handle_as(&metrics, stream, peer, mode, shutdown).await;
        }
    }

    /// Runs one connection of the listener `metrics` counts for to its end, inside a
    /// `session` span that puts the session's id, listener and client on every log line.
    fn handle_as<S>(
        &self,
        metrics: &ListenerMetrics,
        stream: S,
        peer: SocketAddr,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = super::session_id();
        let span = super::session_span(&id, metrics.name(), peer);
        async move {
            let busy = self.busy_line();
            let admitted = super::admit(
                stream,
                peer,
                mode,
                self.limits(),
                self.acceptor(),
                busy.as_bytes(),
                metrics,
            )
            .await;
            let Some((stream, permit)) = admitted else {
                return;
            };
            let open = metrics.session_opened();
            if let Some(tls) = stream.tls_active() {
                tracing::Span::current().record("tls", tls.description());
            }
            let admitted = Admitted {
                stream,
                permit,
                open,
            };
            self.connection(metrics, id, admitted, peer, mode, shutdown)
                .await;
        }
        .instrument(span)
    }
}

/// For the servers' tests: a client that pipelines `command` forever and never reads a
/// reply is disconnected once the server's writes stall. Run with the clock paused.
#[cfg(test)]
pub(crate) async fn assert_a_client_that_never_reads_is_dropped<P: ProtocolServer>(
    server: Arc<P>,
    command: &[u8],
) {
    use tokio::io::AsyncWriteExt as _;
    let (client, server_side) = tokio::io::duplex(4096);
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let shutdown = super::Shutdown::new();
    let signal = shutdown.signal();
    let task = tokio::spawn(async move {
        server
            .handle(server_side, peer, TlsMode::StartTls, signal)
            .await
    });
    // Pipelined commands whose replies fill the connection; the reading half is kept open
    // but never read.
    let (_read, mut write) = tokio::io::split(client);
    let burst = command.repeat(1000);
    tokio::spawn(async move { while write.write_all(&burst).await.is_ok() {} });
    tokio::time::timeout(std::time::Duration::from_secs(3600), task)
        .await
        .expect("the connection is dropped once its writes stall")
        .unwrap();
}

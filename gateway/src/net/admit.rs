use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::{ConnectionLimits, ConnectionPermit, MaybeTls, TlsMode};
use crate::metrics::ListenerMetrics;

/// Bound on a TLS handshake, so a silent client cannot hold a connection slot for the whole
/// command timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The first steps of every protocol connection: take a slot under the connection limits
/// (or send the protocol's `busy` line and close) and, on implicit-TLS ports, complete the
/// handshake. `None` means the connection is already finished. Refusals and handshakes
/// are counted in the listener's `metrics`.
pub async fn admit<S>(
    stream: S,
    peer: SocketAddr,
    mode: TlsMode,
    limits: &ConnectionLimits,
    acceptor: &TlsAcceptor,
    busy: &[u8],
    metrics: &ListenerMetrics,
) -> Option<(MaybeTls<S>, ConnectionPermit)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = MaybeTls::Plain(stream);
    let permit = match limits.try_acquire(peer.ip()) {
        Ok(permit) => permit,
        Err(limit) => {
            tracing::info!(%peer, ?limit, "connection refused: too many connections");
            metrics.refused_busy();
            // On implicit-TLS ports a plaintext line would only confuse the client's
            // handshake, and a flood is no time to spend a handshake on a refusal.
            if mode == TlsMode::StartTls {
                let stall = limits.write_timeout();
                let _ = super::write_all_within(&mut stream, busy, stall).await;
                super::shutdown_within(&mut stream, stall).await;
            }
            return None;
        }
    };
    if mode == TlsMode::Implicit {
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.upgrade(acceptor)).await;
        metrics.tls_handshake(matches!(handshake, Ok(Ok(()))));
        match handshake {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        }
    }
    Some((stream, permit))
}

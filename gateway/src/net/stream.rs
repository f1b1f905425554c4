use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A connection that starts plain and may switch to TLS, either side of it: `T` is the TLS
/// stream over `S` (server side for our listeners, client side toward upstreams).
pub enum Switchable<S, T> {
    Plain(S),
    Tls(Box<T>),
    /// Only while a handshake is running, or after one failed.
    Gone,
}

/// A client connection that starts plain and may switch to TLS (STARTTLS, STLS), or starts
/// in TLS (ports 465 and 995).
pub type MaybeTls<S> = Switchable<S, TlsStream<S>>;

impl<S: AsyncRead + AsyncWrite + Unpin> MaybeTls<S> {
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// Runs the server handshake on a plain stream. Bytes the client sent before the
    /// handshake that the shell has already read stay with the shell (which discards them);
    /// the handshake only sees what follows.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        match std::mem::replace(self, MaybeTls::Gone) {
            MaybeTls::Plain(stream) => {
                let tls = acceptor.accept(stream).await?;
                *self = MaybeTls::Tls(Box::new(tls));
                Ok(())
            }
            other => {
                *self = other;
                Err(io::Error::other("TLS is already active"))
            }
        }
    }

    /// Writes and flushes `pending`, leaving it empty either way. A write that makes no
    /// progress for `stall` fails (see [`write_all_within`]).
    pub async fn write_pending(
        &mut self,
        pending: &mut Vec<u8>,
        stall: Duration,
    ) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let result = write_all_within(self, pending, stall).await;
        pending.clear();
        result
    }

    /// "TLSv1.3 cipher TLS13_AES_256_GCM_SHA384", for trace headers and logs.
    /// The proof that TLS is on, once its handshake is done.
    pub fn tls_active(&self) -> Option<super::TlsActive> {
        match self {
            MaybeTls::Tls(tls) => super::TlsActive::of(tls.get_ref().1),
            _ => None,
        }
    }
}

/// Writes all of `bytes` and flushes, failing with `TimedOut` when the peer accepts nothing
/// for `stall`: a client that stops reading is dropped instead of holding its connection
/// (and whatever the session holds) forever. Progress restarts the clock, so a slow but
/// live reader is never cut off.
pub async fn write_all_within<W>(
    writer: &mut W,
    mut bytes: &[u8],
    stall: Duration,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncWriteExt;
    while !bytes.is_empty() {
        let written = tokio::time::timeout(stall, writer.write(bytes))
            .await
            .map_err(|_| stalled())??;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[written..];
    }
    tokio::time::timeout(stall, writer.flush())
        .await
        .map_err(|_| stalled())?
}

/// Shuts the write side down (TLS close_notify included), giving up after `stall`.
pub async fn shutdown_within<W>(writer: &mut W, stall: Duration)
where
    W: AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(stall, writer.shutdown()).await;
}

/// How long, and how much, [`linger`] reads after the last reply.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
pub const LINGER_BYTES: usize = 256 * 1024;

/// After the last reply and the shutdown of the write side: reads and drops what the client
/// still sends, until it closes, for at most `LINGER_TIME` and `LINGER_BYTES`. Closing
/// a socket with unread input makes the kernel send a reset, which can destroy the final
/// replies (a `552` the client has not read yet) before the client sees them.
pub async fn linger<R>(reader: &mut R)
where
    R: AsyncRead + Unpin + ?Sized,
{
    use tokio::io::AsyncReadExt;
    // On the heap, only while lingering: an array here would sit in every session's future
    // (the future holds the largest state of all its awaits) for the session's whole life.
    let mut buffer = vec![0u8; 16 * 1024];
    let mut total = 0;
    let drain = async {
        while total < LINGER_BYTES {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading")
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost during a TLS handshake",
    )
}

impl<S, T> AsyncRead for Switchable<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Switchable::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Switchable::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Switchable::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S, T> AsyncWrite for Switchable<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Switchable::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Switchable::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Switchable::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Switchable::Plain(s) => Pin::new(s).poll_flush(cx),
            Switchable::Tls(s) => Pin::new(s).poll_flush(cx),
            Switchable::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Switchable::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Switchable::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Switchable::Gone => Poll::Ready(Ok(())),
        }
    }
}

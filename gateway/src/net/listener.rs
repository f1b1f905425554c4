use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite};

/// Something that accepts byte-stream connections: tokio's `TcpListener` in production,
/// turmoil's in the simulation.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Replies are small and latency-bound; Nagle would delay pipelined responses.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

/// How listening sockets are opened (`[limits] listen_backlog`, `tcp_keepalive_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Connections the kernel queues before `accept`.
    pub backlog: u32,
    /// Idle time before TCP keepalive probes start on accepted connections; `None` is off.
    pub keepalive: Option<Duration>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            backlog: 128,
            keepalive: Some(Duration::from_secs(60)),
        }
    }
}

/// A TCP listener whose accepted connections have TCP keepalive on: a peer that vanished
/// without a FIN or RST (a cut cable, a partition, a crashed host) is noticed within a
/// couple of minutes even while the session waits for it, so its slot and any maildrop lock
/// are released long before the 10-minute POP3 autologout.
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    keepalive: Option<Duration>,
}

/// Keepalive probes after the idle time, this far apart, this many before giving up.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
#[cfg(target_os = "linux")]
const KEEPALIVE_RETRIES: u32 = 6;

impl TcpListener {
    /// Binds `addr`. An unspecified IPv6 address (`::`) is bound dual-stack where the
    /// system allows it, so IPv4 clients reach it too; where IPv6 is not available at all
    /// it falls back to `0.0.0.0`. The error is the cause alone: the caller names the
    /// listener.
    pub fn bind(addr: SocketAddr, options: SocketOptions) -> io::Result<Self> {
        let socket = match bind_socket(addr, options.backlog) {
            Err(e) if is_wildcard_v6(addr) && ipv6_unavailable(&e) => {
                let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
                tracing::warn!(%addr, fallback = %v4, error = %e, "IPv6 is not available; listening on IPv4 only");
                bind_socket(v4, options.backlog)?
            }
            other => other?,
        };
        let inner = tokio::net::TcpListener::from_std(socket.into())?;
        Ok(Self {
            inner,
            keepalive: options.keepalive,
        })
    }
}

fn bind_socket(addr: SocketAddr, backlog: u32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std and tokio do on Unix: a restart can bind while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if is_wildcard_v6(addr) {
        // Dual-stack; some systems refuse (OpenBSD), which leaves an IPv6-only listener.
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(%addr, error = %e, "cannot make the listener dual-stack");
        }
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn is_wildcard_v6(addr: SocketAddr) -> bool {
    matches!(addr, SocketAddr::V6(v6) if v6.ip().is_unspecified())
}

/// IPv6 disabled in the kernel (`ipv6.disable=1`: no such address family) or no IPv6
/// address configured at all.
fn ipv6_unavailable(e: &io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    const EADDRNOTAVAIL: i32 = 99;
    matches!(e.raw_os_error(), Some(EAFNOSUPPORT) | Some(EADDRNOTAVAIL))
        || e.kind() == io::ErrorKind::AddrNotAvailable
        || e.kind() == io::ErrorKind::Unsupported
}

fn set_keepalive(stream: &tokio::net::TcpStream, idle: Duration) -> io::Result<()> {
    let params = TcpKeepalive::new().with_time(idle);
    #[cfg(target_os = "linux")]
    let params = params
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    #[cfg(not(target_os = "linux"))]
    let _ = KEEPALIVE_INTERVAL;
    SockRef::from(stream).set_tcp_keepalive(&params)
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = Listener::accept(&mut self.inner).await?;
        if let Some(idle) = self.keepalive {
            if let Err(e) = set_keepalive(&stream, idle) {
                tracing::debug!(%peer, error = %e, "cannot turn TCP keepalive on");
            }
        }
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn answers(listener: &mut TcpListener, to: SocketAddr) {
        let mut client = tokio::net::TcpStream::connect(to).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        server.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        assert!(SockRef::from(&server).keepalive().unwrap());
    }

    #[tokio::test]
    async fn vanished_clients_are_probed_by_tcp_keepalive() {
        let options = SocketOptions {
            backlog: 16,
            keepalive: Some(Duration::from_secs(45)),
        };
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap(), options).unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let socket = SockRef::from(&server);
        assert!(socket.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(
                socket.tcp_keepalive_time().unwrap(),
                Duration::from_secs(45)
            );
            assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
            assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
        }
        // Off when configured so.
        let options = SocketOptions {
            keepalive: None,
            ..options
        };
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap(), options).unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(!SockRef::from(&server).keepalive().unwrap());
    }

    #[tokio::test]
    async fn wildcard_listener_answers_on_ipv6_and_ipv4_loopback() {
        let mut listener =
            TcpListener::bind("[::]:0".parse().unwrap(), SocketOptions::default()).unwrap();
        let port = listener.local_addr().unwrap().port();
        if listener.local_addr().unwrap().is_ipv6() {
            answers(&mut listener, SocketAddr::new("::1".parse().unwrap(), port)).await;
        }
        answers(
            &mut listener,
            SocketAddr::new("127.0.0.1".parse().unwrap(), port),
        )
        .await;
    }
}

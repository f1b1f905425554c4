//! Opening connections to upstream servers: TCP through a [`Connector`] (tokio in
//! production, turmoil in the simulation), then TLS with certificate verification.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::login::ProxyLogin;
use super::throttle::ProxyGuard;
use crate::config::ProxySection;
use crate::net::Switchable;

/// Opens TCP connections to upstream servers.
pub trait Connector: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Production: tokio's TCP with the system resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, host: &str, port: u16) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Why no usable upstream connection came about. The proxy sessions map these to replies.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the upstream server {0} is not allowed by this gateway's configuration")]
    NotAllowed(String),
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("no answer from {0} in time")]
    TimedOut(String),
    #[error("TLS with {target} failed: {source}")]
    Tls { target: String, source: io::Error },
}

/// Everything needed to reach upstreams; one per gateway, shared by all proxy sessions.
pub struct Upstreams<C: Connector> {
    connector: C,
    tls: TlsConnector,
    policy: ProxySection,
    timeout: Duration,
    /// Failed logins, counted across the SMTP and POP3 proxies.
    guard: ProxyGuard,
}

impl<C: Connector> Upstreams<C> {
    pub fn new(connector: C, tls: TlsConnector, policy: ProxySection) -> Arc<Self> {
        Arc::new(Self {
            connector,
            tls,
            timeout: Duration::from_secs(policy.connect_timeout_secs.max(1)),
            guard: ProxyGuard::new(Duration::from_millis(policy.failed_login_delay_ms)),
            policy,
        })
    }

    /// The throttle of proxy logins.
    pub fn guard(&self) -> &ProxyGuard {
        &self.guard
    }

    /// Whether proxy logins are offered at all.
    pub fn enabled(&self) -> bool {
        self.policy.enabled
    }

    /// Connects to the login's server (at `default_port` unless it names one); with
    /// `implicit_tls` the TLS handshake is done before this returns.
    pub async fn open(
        &self,
        login: &ProxyLogin,
        default_port: u16,
        implicit_tls: bool,
    ) -> Result<UpstreamStream<C::Stream>, ConnectError> {
        let target = login.target(default_port);
        if !self.policy.allows_server(&login.host) {
            return Err(ConnectError::NotAllowed(login.host.clone()));
        }
        let port = login.port.unwrap_or(default_port);
        let stream =
            match tokio::time::timeout(self.timeout, self.connector.connect(&login.host, port))
                .await
            {
                Err(_) => return Err(ConnectError::TimedOut(target)),
                Ok(Err(source)) => return Err(ConnectError::Connect { target, source }),
                Ok(Ok(stream)) => stream,
            };
        let mut stream = Switchable::Plain(stream);
        if implicit_tls {
            self.start_tls(&mut stream, login).await?;
        }
        Ok(stream)
    }

    /// The TLS handshake on an open connection, verifying the server's certificate for
    /// the host the client named.
    pub async fn start_tls(
        &self,
        stream: &mut UpstreamStream<C::Stream>,
        login: &ProxyLogin,
    ) -> Result<(), ConnectError> {
        let target = login.host.clone();
        let name = ServerName::try_from(login.host.clone()).map_err(|e| ConnectError::Tls {
            target: target.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let plain = match std::mem::replace(stream, Switchable::Gone) {
            Switchable::Plain(plain) => plain,
            other => {
                *stream = other;
                return Err(ConnectError::Tls {
                    target,
                    source: io::Error::other("TLS is already active"),
                });
            }
        };
        match tokio::time::timeout(self.timeout, self.tls.connect(name, plain)).await {
            Err(_) => Err(ConnectError::TimedOut(target)),
            Ok(Err(source)) => Err(ConnectError::Tls { target, source }),
            Ok(Ok(tls)) => {
                *stream = Switchable::Tls(Box::new(tls));
                Ok(())
            }
        }
    }
}

/// A connection to an upstream: plain until STARTTLS/STLS, or TLS from the start.
pub type UpstreamStream<S> = Switchable<S, TlsStream<S>>;

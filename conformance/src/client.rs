//! The conformance suites' raw protocol client: test-support's wire client for SMTP and POP3
//! over TCP or TLS, set up the suites' way. It writes exactly the bytes it is given (so checks
//! can send malformed, pipelined or smuggled input), parses replies strictly (a line must end
//! in CRLF), and keeps a transcript for the snapshots. Every step is bounded by
//! [`REPLY_TIMEOUT`], so a server that stops answering fails a check instead of hanging the
//! suite.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use test_support::wire::{Conn, Options};
use tokio_rustls::TlsConnector;

pub use test_support::wire::{escape, Reply};

/// How long any single reply may take before the check fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The name the test certificate carries and clients verify.
pub const TLS_NAME: &str = "localhost";

/// A connection with its unread input and transcript: every method of [`Conn`].
pub struct Client(Conn);

impl std::ops::Deref for Client {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.0
    }
}

fn options() -> Options {
    Options::default()
        .timeout(REPLY_TIMEOUT)
        .server_name(TLS_NAME)
        .transcript()
        .strict_line_ends()
}

impl Client {
    /// Plain TCP.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let conn = Conn::connect(addr, options())
            .await
            .with_context(|| format!("connect to {addr}"))?;
        Ok(Self(conn))
    }

    /// Plain TCP from a chosen local address (127.0.0.x), to look like another client.
    pub async fn connect_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> Result<Self> {
        let conn = Conn::connect_from(source, addr, options())
            .await
            .with_context(|| format!("connect to {addr} from {source}"))?;
        Ok(Self(conn))
    }

    /// Implicit TLS (465, 995): the handshake before any protocol byte.
    pub async fn connect_tls(addr: SocketAddr, connector: &TlsConnector) -> Result<Self> {
        let mut client = Self::connect(addr).await?;
        client.upgrade(connector).await.context("TLS handshake")?;
        Ok(client)
    }
}

/// SMTP's sending side of DATA: dot-stuffing and the terminating `.CRLF`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    gateway::smtp::data::dot_stuff(message)
}

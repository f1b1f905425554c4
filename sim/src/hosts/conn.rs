//! A client's connection to the gateway: test-support's wire client over a turmoil socket,
//! plain or TLS, every step given up after a timeout in simulated time (a client's patience).

use std::time::Duration;

use test_support::wire::{self, Options};
use turmoil::net::TcpStream;

/// Why a conversation stopped: an i/o error, a timeout, a close, or something the client
/// does not understand.
pub use test_support::wire::Error as Broken;

pub struct Conn(wire::Conn);

impl Conn {
    pub async fn connect(host: &str, port: u16, patience: Duration) -> Result<Self, Broken> {
        let stream = tokio::time::timeout(patience, TcpStream::connect((host, port)))
            .await
            .map_err(|_| Broken::Timeout)??;
        let options = Options::default()
            .timeout(patience)
            .server_name(crate::tls::HOST_NAME)
            .resets_are_errors();
        Ok(Self(wire::Conn::new(stream, options)))
    }

    /// Wraps the connection in TLS (implicit TLS or after STARTTLS/STLS).
    pub async fn upgrade(&mut self) -> Result<(), Broken> {
        self.0.upgrade(&crate::tls::connector()).await
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.0.send(bytes).await
    }

    /// One line without its CRLF.
    pub async fn line(&mut self) -> Result<Vec<u8>, Broken> {
        self.0.line_bytes().await
    }

    /// Drops the connection without a goodbye (a client dying or a cable pulled).
    pub fn abandon(&mut self) {
        self.0.abandon();
    }
}

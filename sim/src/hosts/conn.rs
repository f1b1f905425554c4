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

/// A POP3 status line: `Ok(text after +OK)` or `Err` with the `-ERR` line.
pub async fn status(conn: &mut Conn) -> Result<Result<String, String>, Broken> {
    let line = conn.line().await?;
    let line = String::from_utf8_lossy(&line).into_owned();
    if let Some(rest) = line.strip_prefix("+OK") {
        Ok(Ok(rest.trim().to_owned()))
    } else if line.starts_with("-ERR") {
        Ok(Err(line))
    } else {
        Err(Broken::Protocol(line))
    }
}

/// A POP3 `+OK` line (its text); `-ERR` breaks the conversation.
pub async fn ok(conn: &mut Conn) -> Result<String, Broken> {
    status(conn).await?.map_err(Broken::Protocol)
}

/// A POP3 multi-line body, un-stuffed, with CRLF line ends. With `cut_at`, the client drops
/// the connection when that line arrives (a client dying in the middle of a RETR).
pub async fn multiline(conn: &mut Conn, cut_at: Option<usize>) -> Result<Vec<u8>, Broken> {
    let mut out = Vec::new();
    let mut lines = 0;
    loop {
        let line = conn.line().await?;
        if line == b"." {
            return Ok(out);
        }
        lines += 1;
        if cut_at == Some(lines) {
            conn.abandon();
            return Err(Broken::Closed);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// Sends `UIDL` and reads the whole listing: (message number, UIDL) in order.
pub async fn uidl_listing(conn: &mut Conn) -> Result<Vec<(String, String)>, Broken> {
    conn.send(b"UIDL\r\n").await?;
    ok(conn).await?;
    let listing = multiline(conn, None).await?;
    let mut out = Vec::new();
    for line in listing.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let line = String::from_utf8_lossy(line);
        let mut parts = line.trim_end().split(' ');
        let (Some(n), Some(uidl)) = (parts.next(), parts.next()) else {
            return Err(Broken::Protocol(format!("UIDL line {line}")));
        };
        out.push((n.to_owned(), uidl.to_owned()));
    }
    Ok(out)
}

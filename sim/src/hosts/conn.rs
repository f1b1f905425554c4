//! A client's connection to the gateway: plain or TLS over a turmoil socket, with reads that
//! give up after a timeout in simulated time (a client's patience).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use turmoil::net::TcpStream;

trait Duplex: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Duplex for T {}

/// Why a conversation stopped.
#[derive(Debug)]
pub enum Broken {
    Io(io::Error),
    Timeout,
    Closed,
    /// The server said something the client does not understand.
    Protocol(String),
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Io(e) => write!(f, "i/o error ({:?})", e.kind()),
            Broken::Timeout => f.write_str("timed out"),
            Broken::Closed => f.write_str("connection closed"),
            Broken::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl From<io::Error> for Broken {
    fn from(e: io::Error) -> Self {
        Broken::Io(e)
    }
}

pub struct Conn {
    stream: Option<Box<dyn Duplex>>,
    buffer: Vec<u8>,
    patience: Duration,
}

impl Conn {
    pub async fn connect(host: &str, port: u16, patience: Duration) -> Result<Self, Broken> {
        let stream = tokio::time::timeout(patience, TcpStream::connect((host, port)))
            .await
            .map_err(|_| Broken::Timeout)??;
        Ok(Self {
            stream: Some(Box::new(stream)),
            buffer: Vec::new(),
            patience,
        })
    }

    /// Wraps the connection in TLS (implicit TLS or after STARTTLS/STLS).
    pub async fn upgrade(&mut self) -> Result<(), Broken> {
        let stream = self.stream.take().ok_or(Broken::Closed)?;
        if !self.buffer.is_empty() {
            return Err(Broken::Protocol(
                "data pipelined before the TLS handshake".into(),
            ));
        }
        let tls = tokio::time::timeout(
            self.patience,
            crate::tls::connector().connect(crate::tls::server_name(), stream),
        )
        .await
        .map_err(|_| Broken::Timeout)??;
        self.stream = Some(Box::new(tls));
        Ok(())
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        let stream = self.stream.as_mut().ok_or(Broken::Closed)?;
        tokio::time::timeout(self.patience, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| Broken::Timeout)??;
        Ok(())
    }

    /// One line without its CRLF.
    pub async fn line(&mut self) -> Result<Vec<u8>, Broken> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line = self.buffer[..end].to_vec();
                self.buffer.drain(..end + 2);
                return Ok(line);
            }
            let stream = self.stream.as_mut().ok_or(Broken::Closed)?;
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(self.patience, stream.read(&mut chunk))
                .await
                .map_err(|_| Broken::Timeout)??;
            if n == 0 {
                return Err(Broken::Closed);
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Drops the connection without a goodbye (a client dying or a cable pulled).
    pub fn abandon(&mut self) {
        self.stream = None;
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

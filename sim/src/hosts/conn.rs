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

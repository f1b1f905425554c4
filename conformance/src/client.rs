//! A raw protocol client for SMTP and POP3 over TCP or TLS: it writes exactly the bytes it is
//! given (so checks can send malformed, pipelined or smuggled input), parses replies strictly,
//! and keeps a transcript for the snapshots. Every read is bounded by [`REPLY_TIMEOUT`], so a
//! server that stops answering fails a check instead of hanging the suite.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// How long any single reply may take before the check fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The name the test certificate carries and clients verify.
pub const TLS_NAME: &str = "localhost";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while a handshake is in progress or after it failed.
    Gone,
}

/// One SMTP reply: its code and the text of each line (after the code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the first line (where the enhanced status code sits).
    pub fn first(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    /// The enhanced status code (RFC 3463) at the start of the first line, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let word = self.first().split(' ').next()?;
        let parts: Vec<&str> = word.split('.').collect();
        let ok = parts.len() == 3
            && parts
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(word)
    }

    /// Errors unless the code is `code`.
    pub fn expect(&self, code: u16) -> Result<&Self> {
        if self.code != code {
            bail!("expected {code}, got {self}");
        }
        Ok(self)
    }

    /// Errors unless the code is one of `codes`.
    pub fn expect_any(&self, codes: &[u16]) -> Result<&Self> {
        if !codes.contains(&self.code) {
            bail!("expected one of {codes:?}, got {self}");
        }
        Ok(self)
    }

    /// Whether a multi-line EHLO reply lists `keyword` (first word, any letter case).
    pub fn has_keyword(&self, keyword: &str) -> bool {
        self.keyword_line(keyword).is_some()
    }

    /// The EHLO line whose first word is `keyword`.
    pub fn keyword_line(&self, keyword: &str) -> Option<&str> {
        self.lines.iter().skip(1).map(String::as_str).find(|l| {
            l.split(' ')
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
        })
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" | "))
    }
}

/// A connection with its unread input and transcript.
pub struct Client {
    conn: Conn,
    buffer: Vec<u8>,
    transcript: Vec<String>,
}

impl Client {
    /// Plain TCP.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connect to {addr} timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        Ok(Self {
            conn: Conn::Plain(stream),
            buffer: Vec::new(),
            transcript: Vec::new(),
        })
    }

    /// Plain TCP from a chosen local address (127.0.0.x), to look like another client.
    pub async fn connect_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let stream = tokio::time::timeout(REPLY_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| anyhow!("connect to {addr} timed out"))??;
        Ok(Self {
            conn: Conn::Plain(stream),
            buffer: Vec::new(),
            transcript: Vec::new(),
        })
    }

    /// Implicit TLS (465, 995): the handshake before any protocol byte.
    pub async fn connect_tls(addr: SocketAddr, connector: &TlsConnector) -> Result<Self> {
        let mut client = Self::connect(addr).await?;
        client.upgrade(connector).await?;
        Ok(client)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }

    /// The negotiated TLS version, e.g. "TLSv1_3".
    pub fn tls_version(&self) -> Option<String> {
        match &self.conn {
            Conn::Tls(tls) => tls.get_ref().1.protocol_version().map(|v| format!("{v:?}")),
            _ => None,
        }
    }

    /// The TLS handshake on the plain stream. Bytes the server sent before it (which a
    /// STARTTLS injection test wants to see) would be read as TLS, so any are an error.
    pub async fn upgrade(&mut self, connector: &TlsConnector) -> Result<()> {
        if !self.buffer.is_empty() {
            bail!(
                "server sent {:?} before the TLS handshake",
                String::from_utf8_lossy(&self.buffer)
            );
        }
        let Conn::Plain(plain) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            bail!("TLS is already active");
        };
        let name = ServerName::try_from(TLS_NAME)?;
        let tls = tokio::time::timeout(REPLY_TIMEOUT, connector.connect(name, plain))
            .await
            .map_err(|_| anyhow!("TLS handshake timed out"))?
            .context("TLS handshake")?;
        self.conn = Conn::Tls(Box::new(tls));
        self.transcript.push("   (TLS handshake)".into());
        Ok(())
    }

    fn io(&mut self) -> Result<&mut dyn Io> {
        match &mut self.conn {
            Conn::Plain(plain) => Ok(plain),
            Conn::Tls(tls) => Ok(&mut **tls),
            Conn::Gone => bail!("connection lost in a TLS handshake"),
        }
    }

    /// Sends bytes as they are, recording each line in the transcript.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> Result<()> {
        let bytes = bytes.as_ref();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            self.transcript.push(format!("C: {}", escape(line)));
        }
        self.send_quiet(bytes).await
    }

    /// Sends bytes with only their length in the transcript (bulk data).
    pub async fn send_quiet(&mut self, bytes: &[u8]) -> Result<()> {
        let io = self.io()?;
        tokio::time::timeout(REPLY_TIMEOUT, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .map_err(|_| anyhow!("write timed out (server not reading?)"))?
        .context("write")
    }

    /// Notes bulk data in the transcript without its bytes.
    pub fn note(&mut self, text: &str) {
        self.transcript.push(format!("   ({text})"));
    }

    /// Reads more input; `false` when the server closed the connection.
    async fn fill(&mut self) -> Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let io = self.io()?;
        let n = match tokio::time::timeout(REPLY_TIMEOUT, io.read(&mut chunk)).await {
            Err(_) => bail!(
                "no reply within {REPLY_TIMEOUT:?}; unread input {:?}",
                String::from_utf8_lossy(&self.buffer)
            ),
            // A reset after the server's last words counts as a close.
            Ok(Err(_)) => 0,
            Ok(Ok(n)) => n,
        };
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// One line with its CRLF removed; errors on close, on a bare LF, or after the timeout.
    pub async fn line(&mut self) -> Result<String> {
        self.try_line()
            .await?
            .ok_or_else(|| anyhow!("connection closed; unread {:?}", self.unread()))
    }

    /// One line, or `None` if the server closed the connection first.
    pub async fn try_line(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buffer.drain(..=pos).collect();
                self.transcript.push(format!("S: {}", escape(&raw)));
                let Some(line) = raw.strip_suffix(b"\r\n") else {
                    bail!("server line not ended by CRLF: {:?}", escape(&raw));
                };
                return Ok(Some(String::from_utf8_lossy(line).into_owned()));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    fn unread(&self) -> String {
        String::from_utf8_lossy(&self.buffer).into_owned()
    }

    /// One SMTP reply, checked against the syntax of RFC 5321 section 4.2: three digits,
    /// then SP (last line) or "-" (continuation), every line with the same code.
    pub async fn reply(&mut self) -> Result<Reply> {
        self.try_reply()
            .await?
            .ok_or_else(|| anyhow!("connection closed before a complete reply"))
    }

    /// One SMTP reply, or `None` on a close before any of it arrived.
    pub async fn try_reply(&mut self) -> Result<Option<Reply>> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            let Some(line) = self.try_line().await? else {
                if code.is_some() {
                    bail!("connection closed inside a multi-line reply");
                }
                return Ok(None);
            };
            let bytes = line.as_bytes();
            if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
                bail!("reply line does not start with a 3-digit code: {line:?}");
            }
            let this: u16 = line[..3].parse()?;
            if !(200..=599).contains(&this) {
                bail!("reply code out of range: {line:?}");
            }
            if code.is_some_and(|c| c != this) {
                bail!("multi-line reply changes its code: {line:?}");
            }
            code = Some(this);
            let last = match bytes.get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => bail!("reply code not followed by SP or '-': {line:?}"),
            };
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if last {
                return Ok(Some(Reply { code: this, lines }));
            }
        }
    }

    /// Sends one SMTP command line (CRLF added) and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply> {
        self.send(format!("{line}\r\n")).await?;
        self.reply().await
    }

    /// Sends one POP3 command line (CRLF added) and reads its status line.
    pub async fn pop(&mut self, line: &str) -> Result<String> {
        self.send(format!("{line}\r\n")).await?;
        self.line().await
    }

    /// Like [`pop`](Self::pop), erroring unless the status is `+OK`.
    pub async fn pop_ok(&mut self, line: &str) -> Result<String> {
        let status = self.pop(line).await?;
        if !status.starts_with("+OK") {
            bail!("{line:?} answered {status:?}");
        }
        Ok(status)
    }

    /// Like [`pop`](Self::pop), erroring unless the status is `-ERR`.
    pub async fn pop_err(&mut self, line: &str) -> Result<String> {
        let status = self.pop(line).await?;
        if !status.starts_with("-ERR") {
            bail!("{line:?} answered {status:?}, expected -ERR");
        }
        Ok(status)
    }

    /// The body of a POP3 multi-line response up to its "." line, byte-unstuffed, every
    /// line ending in CRLF.
    pub async fn multiline(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            if line == "." {
                return Ok(body);
            }
            let line = line.strip_prefix('.').unwrap_or(&line);
            body.extend_from_slice(line.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
    }

    /// The raw body of a multi-line response (bytes, not lossily decoded), unstuffed.
    pub async fn multiline_bytes(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = loop {
                if let Some(pos) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                    break self.buffer.drain(..pos + 2).collect::<Vec<u8>>();
                }
                if !self.fill().await? {
                    bail!("connection closed inside a multi-line response");
                }
            };
            if line == b".\r\n" {
                self.note(&format!("multi-line body, {} octets", body.len()));
                self.transcript.push("S: .\\r\\n".into());
                return Ok(body);
            }
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }

    /// CAPA (POP3, RFC 2449): the capability lines.
    pub async fn capa(&mut self) -> Result<Vec<String>> {
        self.pop_ok("CAPA").await?;
        let body = self.multiline().await?;
        Ok(String::from_utf8_lossy(&body)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Whether the server closes the connection within `wait` (reading and keeping
    /// whatever it sends meanwhile); `false` if it is still open then.
    pub async fn closed_within(&mut self, wait: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut chunk = [0u8; 4096];
            let io = self.io()?;
            match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
                Err(_) => return Ok(false),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(true),
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Bytes received and not yet consumed as lines.
    pub fn take_unread(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
    }

    /// Whether any byte arrives within `wait` (kept for later reads).
    pub async fn anything_within(&mut self, wait: Duration) -> Result<bool> {
        if !self.buffer.is_empty() {
            return Ok(true);
        }
        let mut chunk = [0u8; 4096];
        let io = self.io()?;
        match tokio::time::timeout(wait, io.read(&mut chunk)).await {
            Err(_) => Ok(false),
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// The transcript so far, one line per entry ("C: ", "S: ", or a note).
    pub fn transcript(&self) -> &[String] {
        &self.transcript
    }
}

/// A wire line as printable text: CR and LF shown as `\r` and `\n`, other control bytes and
/// non-UTF-8 bytes as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// SMTP's sending side of DATA: dot-stuffing and the terminating `.CRLF`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    gateway::smtp::data::dot_stuff(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_invalid_utf8() {
        assert_eq!(escape(b"A\x00b\r\n"), "A\\x00b\\r\\n");
        assert_eq!(escape(b"\xff\xfe ok"), "\\xff\\xfe ok");
        assert_eq!(escape("grüße".as_bytes()), "grüße");
    }

    #[test]
    fn enhanced_code_is_recognised_only_in_its_syntax() {
        let r = |t: &str| Reply {
            code: 250,
            lines: vec![t.into()],
        };
        assert_eq!(r("2.1.0 ok").enhanced(), Some("2.1.0"));
        assert_eq!(r("2.1.0").enhanced(), Some("2.1.0"));
        assert_eq!(r("2.1 ok").enhanced(), None);
        assert_eq!(r("ok 2.1.0").enhanced(), None);
        assert_eq!(r("2.1000.0 x").enhanced(), None);
    }
}

//! The conversation of one listener check, sans-IO: a short script per protocol, fed the
//! server's bytes; it says what to send, when to start TLS, and when it is done. The shell
//! (`net`) moves the bytes and runs the handshakes.
//!
//! - SMTP with STARTTLS (25, 587): `220` greeting, `EHLO`, `250` listing `STARTTLS`,
//!   `STARTTLS`, `220`, TLS, `EHLO`, `250`, `QUIT`, `221`.
//! - SMTP over TLS (465): TLS, `220`, `EHLO`, `250`, `QUIT`, `221`.
//! - POP3 with STLS (110): `+OK` greeting, `STLS`, `+OK`, TLS, `QUIT`, `+OK`.
//! - POP3 over TLS (995): TLS, `+OK` greeting, `QUIT`, `+OK`.
//! - HTTPS (the console): TLS, `GET /healthz`, `HTTP/1.1 200`.
//!
//! Replies are parsed with the proxy's client parsers (multi-line SMTP replies, POP3
//! `+OK`/`-ERR`), so the probe reads what the proxy reads.

use crate::pop3::client::response::{parse_status, StatusLine};
use crate::smtp::client::{Extensions, ReplyError, ReplyReader};

/// Longest line the probe buffers (POP3 status lines, the HTTP status line).
const MAX_LINE: usize = 4096;

/// How a listener is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    SmtpStartTls,
    SmtpImplicitTls,
    Pop3Stls,
    Pop3ImplicitTls,
    Https,
    /// A TCP connection is all (the ACME HTTP-01 listener).
    Tcp,
}

impl Protocol {
    /// How the gateway's listener `service` (a `[listen.*]` name) is spoken to.
    pub fn of_service(service: &str) -> Self {
        match service {
            "smtp" | "submission" => Protocol::SmtpStartTls,
            "smtps" => Protocol::SmtpImplicitTls,
            "pop3" => Protocol::Pop3Stls,
            "pop3s" => Protocol::Pop3ImplicitTls,
            "console" => Protocol::Https,
            _ => Protocol::Tcp,
        }
    }

    /// How the status line names the way TLS is reached.
    pub fn tls_name(self) -> Option<&'static str> {
        match self {
            Protocol::SmtpStartTls => Some("STARTTLS"),
            Protocol::Pop3Stls => Some("STLS"),
            Protocol::SmtpImplicitTls | Protocol::Pop3ImplicitTls | Protocol::Https => Some("TLS"),
            Protocol::Tcp => None,
        }
    }
}

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Send(Vec<u8>),
    /// Start TLS now (nothing may be buffered from before).
    Tls,
    /// An SMTP reply with this code; `Some(keyword)`: an EHLO reply that must list it.
    Smtp(u16, Option<&'static str>),
    /// A POP3 `+OK`.
    Pop3Ok,
    /// An HTTP status line with 200.
    Http200,
}

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Send(Vec<u8>),
    StartTls,
    /// Read more bytes and feed them to [`Probe::received`].
    Read,
    Done,
}

/// Why a conversation failed: the server's answer, or its absence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("expected {expected}, got: {got}")]
    Unexpected { expected: String, got: String },
    #[error("STARTTLS is not offered")]
    NoStartTls,
    #[error("bytes arrived before the TLS handshake that the server must not send")]
    InjectedBeforeTls,
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("the server closed the connection")]
    Closed,
}

/// A running conversation.
#[derive(Debug)]
pub struct Probe {
    steps: Vec<Step>,
    at: usize,
    smtp: ReplyReader,
    buf: Vec<u8>,
}

impl Probe {
    /// The script for `protocol`; `host` is what the probe names itself (EHLO) and the
    /// server (HTTP `Host`). Implicit TLS is part of the script: the shell connects and
    /// asks [`Probe::poll`].
    pub fn new(protocol: Protocol, host: &str) -> Self {
        let ehlo = |name: &str| Step::Send(format!("EHLO {name}\r\n").into_bytes());
        let line = |text: &str| Step::Send(format!("{text}\r\n").into_bytes());
        let steps = match protocol {
            Protocol::SmtpStartTls => vec![
                Step::Smtp(220, None),
                ehlo("gateway-check"),
                Step::Smtp(250, Some("STARTTLS")),
                line("STARTTLS"),
                Step::Smtp(220, None),
                Step::Tls,
                ehlo("gateway-check"),
                Step::Smtp(250, None),
                line("QUIT"),
                Step::Smtp(221, None),
            ],
            Protocol::SmtpImplicitTls => vec![
                Step::Tls,
                Step::Smtp(220, None),
                ehlo("gateway-check"),
                Step::Smtp(250, None),
                line("QUIT"),
                Step::Smtp(221, None),
            ],
            Protocol::Pop3Stls => vec![
                Step::Pop3Ok,
                line("STLS"),
                Step::Pop3Ok,
                Step::Tls,
                line("QUIT"),
                Step::Pop3Ok,
            ],
            Protocol::Pop3ImplicitTls => {
                vec![Step::Tls, Step::Pop3Ok, line("QUIT"), Step::Pop3Ok]
            }
            Protocol::Https => vec![
                Step::Tls,
                Step::Send(
                    format!(
                        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gateway-check\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes(),
                ),
                Step::Http200,
            ],
            Protocol::Tcp => Vec::new(),
        };
        Self {
            steps,
            at: 0,
            smtp: ReplyReader::new(),
            buf: Vec::new(),
        }
    }

    /// What to do now. `Send` and `StartTls` count as done once returned.
    pub fn poll(&mut self) -> Result<Next, ProbeError> {
        loop {
            let Some(step) = self.steps.get(self.at) else {
                return Ok(Next::Done);
            };
            match step {
                Step::Send(bytes) => {
                    let bytes = bytes.clone();
                    self.at += 1;
                    return Ok(Next::Send(bytes));
                }
                Step::Tls => {
                    // Whatever came before the handshake and was not read as an answer was
                    // sent in plaintext by someone: never carry it into the TLS session.
                    if self.smtp.has_buffered() || !self.buf.is_empty() {
                        return Err(ProbeError::InjectedBeforeTls);
                    }
                    self.at += 1;
                    return Ok(Next::StartTls);
                }
                Step::Smtp(..) | Step::Pop3Ok | Step::Http200 => {
                    // The answer may have come with an earlier read already.
                    let before = self.at;
                    self.advance()?;
                    if self.at == before {
                        return Ok(Next::Read);
                    }
                }
            }
        }
    }

    /// Bytes from the server; checks every answer they complete.
    pub fn received(&mut self, bytes: &[u8]) -> Result<(), ProbeError> {
        match self.steps.get(self.at) {
            Some(Step::Smtp(..)) => self.smtp.push(bytes),
            _ => {
                self.buf.extend_from_slice(bytes);
                if self.buf.len() > MAX_LINE && memchr::memchr(b'\n', &self.buf).is_none() {
                    return Err(ProbeError::Malformed("line too long".into()));
                }
            }
        }
        self.advance()
    }

    /// The server closed the connection where the script expected more.
    pub fn closed(&self) -> ProbeError {
        ProbeError::Closed
    }

    /// Consumes every complete answer the current steps expect.
    fn advance(&mut self) -> Result<(), ProbeError> {
        loop {
            match self.steps.get(self.at).cloned() {
                Some(Step::Smtp(code, keyword)) => {
                    let reply = match self.smtp.next_reply() {
                        Ok(Some(reply)) => reply,
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(smtp_error(e)),
                    };
                    if reply.code() != code {
                        return Err(ProbeError::Unexpected {
                            expected: code.to_string(),
                            got: one_line(&format!(
                                "{} {}",
                                reply.code(),
                                reply.lines().join(" / ")
                            )),
                        });
                    }
                    if let Some(keyword) = keyword {
                        if !Extensions::from_ehlo(&reply).has(keyword) {
                            return Err(ProbeError::NoStartTls);
                        }
                    }
                }
                Some(Step::Pop3Ok) => {
                    let Some(line) = self.take_line() else {
                        return Ok(());
                    };
                    match parse_status(&line) {
                        Ok(StatusLine::Status(r)) if r.is_ok() => {}
                        _ => {
                            return Err(ProbeError::Unexpected {
                                expected: "+OK".into(),
                                got: one_line(&String::from_utf8_lossy(&line)),
                            })
                        }
                    }
                }
                Some(Step::Http200) => {
                    let Some(line) = self.take_line() else {
                        return Ok(());
                    };
                    let text = String::from_utf8_lossy(&line);
                    let mut words = text.split_ascii_whitespace();
                    let version = words.next().unwrap_or_default();
                    let status = words.next().unwrap_or_default();
                    if !version.starts_with("HTTP/") || status != "200" {
                        return Err(ProbeError::Unexpected {
                            expected: "HTTP 200".into(),
                            got: one_line(&text),
                        });
                    }
                    // The rest (headers, "ok") is not needed: the status says it all.
                    self.buf.clear();
                }
                // A step the shell drives, or the end.
                _ => return Ok(()),
            }
            self.at += 1;
        }
    }

    /// One line from the buffer without its line end, if a whole one is there.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let lf = memchr::memchr(b'\n', &self.buf)?;
        let mut line: Vec<u8> = self.buf.drain(..=lf).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(line)
    }
}

fn smtp_error(e: ReplyError) -> ProbeError {
    ProbeError::Malformed(e.to_string())
}

/// At most one short line of the server's text for the status line.
fn one_line(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    match clean.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &clean[..cut]),
        None => clean.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `probe` against canned server output, one chunk per read; returns what it sent
    /// and how it ended.
    fn converse(protocol: Protocol, server: &[&[u8]]) -> (Vec<String>, Result<(), ProbeError>) {
        let mut probe = Probe::new(protocol, "mx.test");
        let mut sent = Vec::new();
        let mut chunks = server.iter();
        let end = loop {
            match probe.poll() {
                Ok(Next::Send(bytes)) => sent.push(String::from_utf8(bytes).unwrap()),
                Ok(Next::StartTls) => sent.push("<tls>".into()),
                Ok(Next::Done) => break Ok(()),
                Ok(Next::Read) => match chunks.next() {
                    Some(chunk) => {
                        if let Err(e) = probe.received(chunk) {
                            break Err(e);
                        }
                    }
                    None => break Err(probe.closed()),
                },
                Err(e) => break Err(e),
            }
        };
        (sent, end)
    }

    #[test]
    fn smtp_starttls_with_multi_line_replies_split_anywhere() {
        let (sent, end) = converse(
            Protocol::SmtpStartTls,
            &[
                b"220-mx.test ESMTP\r\n220 hello\r\n",
                b"250-mx.test\r\n250-PIPE",
                b"LINING\r\n250-STARTTLS\r\n250 SIZE 1000\r\n",
                b"220 2.0.0 go ahead\r\n",
                b"250-mx.test\r\n250 SIZE 1000\r\n",
                b"221 2.0.0 bye\r\n",
            ],
        );
        assert_eq!(end, Ok(()));
        assert_eq!(
            sent,
            [
                "EHLO gateway-check\r\n",
                "STARTTLS\r\n",
                "<tls>",
                "EHLO gateway-check\r\n",
                "QUIT\r\n"
            ]
        );
    }

    #[test]
    fn smtp_without_starttls_or_with_a_refusing_greeting_fails() {
        let (_, end) = converse(
            Protocol::SmtpStartTls,
            &[b"220 mx\r\n", b"250-mx\r\n250 SIZE 10\r\n"],
        );
        assert_eq!(end, Err(ProbeError::NoStartTls));
        let (_, end) = converse(Protocol::SmtpImplicitTls, &[b"554 5.3.2 not now\r\n"]);
        assert_eq!(
            end,
            Err(ProbeError::Unexpected {
                expected: "220".into(),
                got: "554 not now".into()
            })
        );
        let (_, end) = converse(Protocol::SmtpImplicitTls, &[b"hello there\r\n"]);
        assert!(matches!(end, Err(ProbeError::Malformed(_))), "{end:?}");
        let (_, end) = converse(Protocol::SmtpImplicitTls, &[b"220 mx\r\n"]);
        assert_eq!(end, Err(ProbeError::Closed));
    }

    #[test]
    fn a_reply_piggybacked_on_the_starttls_answer_is_refused() {
        let (sent, end) = converse(
            Protocol::SmtpStartTls,
            &[
                b"220 mx\r\n",
                b"250-mx\r\n250 STARTTLS\r\n",
                b"220 go ahead\r\n250 injected\r\n",
            ],
        );
        assert_eq!(end, Err(ProbeError::InjectedBeforeTls));
        assert!(!sent.contains(&"<tls>".to_owned()));
        let (_, end) = converse(
            Protocol::Pop3Stls,
            &[b"+OK ready\r\n", b"+OK begin\r\n+OK x\r\n"],
        );
        assert_eq!(end, Err(ProbeError::InjectedBeforeTls));
    }

    #[test]
    fn pop3_stls_and_implicit() {
        let (sent, end) = converse(
            Protocol::Pop3Stls,
            &[b"+OK POP3 ready\r\n", b"+OK Begin TLS\r\n", b"+OK bye\r\n"],
        );
        assert_eq!(end, Ok(()));
        assert_eq!(sent, ["STLS\r\n", "<tls>", "QUIT\r\n"]);
        let (sent, end) = converse(Protocol::Pop3ImplicitTls, &[b"+O", b"K hi\r\n", b"+ok\r\n"]);
        assert_eq!(end, Ok(()));
        assert_eq!(sent, ["<tls>", "QUIT\r\n"]);
        let (_, end) = converse(
            Protocol::Pop3Stls,
            &[b"+OK\r\n", b"-ERR [SYS/TEMP] no TLS\r\n"],
        );
        assert_eq!(
            end,
            Err(ProbeError::Unexpected {
                expected: "+OK".into(),
                got: "-ERR [SYS/TEMP] no TLS".into()
            })
        );
        let long = vec![b'+'; MAX_LINE + 1];
        let (_, end) = converse(Protocol::Pop3ImplicitTls, &[&long]);
        assert!(matches!(end, Err(ProbeError::Malformed(_))), "{end:?}");
    }

    #[test]
    fn https_wants_a_200_status_line() {
        let (sent, end) = converse(
            Protocol::Https,
            &[b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nok\n"],
        );
        assert_eq!(end, Ok(()));
        assert!(sent[1].starts_with("GET /healthz HTTP/1.1\r\nHost: mx.test\r\n"));
        let (_, end) = converse(Protocol::Https, &[b"HTTP/1.1 503 Service Unavailable\r\n"]);
        assert!(matches!(end, Err(ProbeError::Unexpected { .. })), "{end:?}");
    }

    proptest::proptest! {
        /// However the server's bytes are cut into reads, the conversation is the same.
        #[test]
        fn replies_split_at_any_points_read_the_same(cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let whole: &[u8] = b"220-mx.test ESMTP\r\n220 hello\r\n250-mx.test\r\n250-STARTTLS\r\n250 SIZE 1000\r\n";
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (whole.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([whole.len()]) {
                if cut > from {
                    chunks.push(&whole[from..cut]);
                    from = cut;
                }
            }
            let mut probe = Probe::new(Protocol::SmtpStartTls, "mx.test");
            let mut sent = Vec::new();
            let mut chunks = chunks.into_iter();
            loop {
                match probe.poll().unwrap() {
                    Next::Send(bytes) => sent.push(bytes),
                    Next::Read => match chunks.next() {
                        Some(chunk) => probe.received(chunk).unwrap(),
                        None => break,
                    },
                    other => proptest::prop_assert!(false, "{other:?}"),
                }
            }
            proptest::prop_assert_eq!(sent, vec![b"EHLO gateway-check\r\n".to_vec(), b"STARTTLS\r\n".to_vec()]);
        }
    }

    #[test]
    fn tcp_needs_no_conversation() {
        assert_eq!(converse(Protocol::Tcp, &[]), (Vec::new(), Ok(())));
    }
}

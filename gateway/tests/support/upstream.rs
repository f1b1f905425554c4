//! Scripted fake upstream servers (SMTP and POP3, STARTTLS/STLS or implicit TLS) for the
//! proxy's failure tests: each misbehaves in one chosen way. Real upstreams (Postfix,
//! Dovecot) are in `tests/proxy_real.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How the fake misbehaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// STARTTLS / STLS is not offered.
    NoTls,
    /// Every login is refused.
    RejectAuth,
    /// POP3: every login is refused with `[IN-USE]`: right credentials, locked maildrop.
    MaildropInUse,
    /// This recipient gets 550 (SMTP).
    RejectRecipient(String),
    /// The connection drops after this many body lines (SMTP DATA or POP3 RETR).
    DropInBody(usize),
    /// The message is refused after the final dot (SMTP).
    RejectMessage,
    /// SMTP: offers PIPELINING, and answers MAIL and RCPT only once DATA has come: a client
    /// that waits for each reply before its next command waits forever. (No real server
    /// holds replies that long; here it proves the group came in one go.)
    AnswersOnlyWholeGroups,
}

/// What the fake saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Complete messages accepted (SMTP) — unstuffed, as the fake received them.
    pub messages: Vec<Vec<u8>>,
    /// Every command line, with credentials as sent (to check they only came after TLS).
    pub plaintext_lines: Vec<String>,
    /// POP3 message numbers deleted in a completed UPDATE.
    pub deleted: Vec<usize>,
    /// TCP connections accepted.
    pub connections: usize,
    /// POP3 RETR, TOP and DELE commands, in order.
    pub message_commands: Vec<String>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    /// The CA file the gateway must trust for this fake (its self-signed certificate).
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Pop3,
}

impl FakeUpstream {
    /// Starts a fake on 127.0.0.1. `implicit`: TLS from the first byte. `mailbox`: the
    /// POP3 maildrop.
    pub async fn start(
        protocol: Protocol,
        implicit: bool,
        fault: Fault,
        mailbox: Vec<Vec<u8>>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let material =
            gateway::tls::load_or_create_self_signed(dir.path(), "127.0.0.1").expect("cert");
        let ca_file = dir
            .path()
            .join(gateway::tls::TLS_DIR)
            .join(gateway::tls::SELF_SIGNED_CERT_FILE);
        let acceptor = gateway::tls::acceptor(Arc::new(gateway::tls::CertResolver::new(material)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state.lock().expect("seen").connections += 1;
                let acceptor = acceptor.clone();
                let fault = fault.clone();
                let seen = state.clone();
                let mailbox = mailbox.clone();
                tokio::spawn(async move {
                    let script = Script {
                        fault,
                        seen,
                        mailbox,
                    };
                    if implicit {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            script.run(protocol, tls, true, None).await;
                        }
                    } else {
                        script.run(protocol, stream, false, Some(acceptor)).await;
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            ca_file,
            _dir: dir,
        }
    }

    /// The `server` part of a proxy login for this fake.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}

struct Script {
    fault: Fault,
    seen: Arc<Mutex<Seen>>,
    mailbox: Vec<Vec<u8>>,
}

/// Either side of STARTTLS, boxed so one loop handles both.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Script {
    async fn run<S>(self, protocol: Protocol, stream: S, tls: bool, acceptor: Option<TlsAcceptor>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut conn: BufReader<Box<dyn Stream>> = BufReader::new(Box::new(stream));
        let mut tls = tls;
        let greeting: &[u8] = match protocol {
            Protocol::Smtp => b"220 fake.upstream ESMTP\r\n",
            Protocol::Pop3 => b"+OK fake POP3 ready\r\n",
        };
        if conn.get_mut().write_all(greeting).await.is_err() {
            return;
        }
        let mut in_data = false;
        let mut body = Vec::new();
        let mut body_lines = 0usize;
        let mut user_ok = false;
        let mut deleted = Vec::new();
        let mut held = Vec::new();
        loop {
            let mut line = String::new();
            match conn.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if !tls {
                self.seen.lock().unwrap().plaintext_lines.push(line.clone());
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            if protocol == Protocol::Pop3 && ["RETR", "TOP ", "DELE"].contains(&verb.as_str()) {
                let command = line.trim_end().to_owned();
                self.seen.lock().unwrap().message_commands.push(command);
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    let reply: &[u8] = if self.fault == Fault::RejectMessage {
                        b"554 5.7.1 message refused by policy\r\n"
                    } else {
                        self.seen
                            .lock()
                            .unwrap()
                            .messages
                            .push(std::mem::take(&mut body));
                        b"250 2.0.0 queued as FAKE1\r\n"
                    };
                    body.clear();
                    if conn.get_mut().write_all(reply).await.is_err() {
                        return;
                    }
                } else {
                    body_lines += 1;
                    if self.fault == Fault::DropInBody(body_lines) {
                        return;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    body.extend_from_slice(unstuffed.as_bytes());
                }
                continue;
            }
            let upper = line.trim_end().to_ascii_uppercase();
            let verb = upper.split(' ').next().unwrap_or("").to_owned();
            let reply: Vec<u8> = match (protocol, verb.as_str()) {
                (Protocol::Smtp, "EHLO") => {
                    let mut r =
                        "250-fake.upstream\r\n250-8BITMIME\r\n250-SIZE 100000000\r\n".to_owned();
                    if self.fault == Fault::AnswersOnlyWholeGroups {
                        r.push_str("250-PIPELINING\r\n");
                    }
                    if !tls && self.fault != Fault::NoTls {
                        r.push_str("250-STARTTLS\r\n");
                    }
                    if tls {
                        r.push_str("250-AUTH PLAIN LOGIN\r\n");
                    }
                    r.push_str("250 ENHANCEDSTATUSCODES\r\n");
                    r.into_bytes()
                }
                (Protocol::Smtp, "STARTTLS") | (Protocol::Pop3, "STLS") => {
                    let ok: &[u8] = if protocol == Protocol::Smtp {
                        b"220 2.0.0 go ahead\r\n"
                    } else {
                        b"+OK begin TLS\r\n"
                    };
                    if conn.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                    let Some(acceptor) = acceptor.clone() else {
                        return;
                    };
                    let inner = conn.into_inner();
                    let Ok(upgraded) = acceptor.accept(inner).await else {
                        return;
                    };
                    conn = BufReader::new(Box::new(upgraded));
                    tls = true;
                    continue;
                }
                (Protocol::Smtp, "AUTH") => {
                    if self.fault == Fault::RejectAuth {
                        b"535 5.7.8 authentication failed\r\n".to_vec()
                    } else {
                        b"235 2.7.0 ok\r\n".to_vec()
                    }
                }
                (Protocol::Smtp, "MAIL") => b"250 2.1.0 ok\r\n".to_vec(),
                (Protocol::Smtp, "RCPT") => match &self.fault {
                    Fault::RejectRecipient(who) if upper.contains(&who.to_ascii_uppercase()) => {
                        b"550 5.1.1 no such user\r\n".to_vec()
                    }
                    _ => b"250 2.1.5 ok\r\n".to_vec(),
                },
                (Protocol::Smtp, "DATA") => {
                    in_data = true;
                    let mut replies = std::mem::take(&mut held);
                    replies.extend_from_slice(b"354 go ahead\r\n");
                    replies
                }
                (Protocol::Smtp, "RSET") | (Protocol::Smtp, "NOOP") => b"250 2.0.0 ok\r\n".to_vec(),
                (Protocol::Smtp, "QUIT") => {
                    let _ = conn.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
                    return;
                }
                (Protocol::Pop3, "CAPA") => {
                    let mut r = "+OK\r\nUIDL\r\nTOP\r\nUSER\r\n".to_owned();
                    if !tls && self.fault != Fault::NoTls {
                        r.push_str("STLS\r\n");
                    }
                    r.push_str(".\r\n");
                    r.into_bytes()
                }
                (Protocol::Pop3, "USER") => b"+OK\r\n".to_vec(),
                (Protocol::Pop3, "PASS") => {
                    if self.fault == Fault::RejectAuth {
                        b"-ERR [AUTH] invalid login\r\n".to_vec()
                    } else if self.fault == Fault::MaildropInUse {
                        b"-ERR [IN-USE] maildrop locked\r\n".to_vec()
                    } else {
                        user_ok = true;
                        b"+OK logged in\r\n".to_vec()
                    }
                }
                (Protocol::Pop3, _) if !user_ok => b"-ERR not logged in\r\n".to_vec(),
                (Protocol::Pop3, "STAT") => {
                    let size: usize = self.mailbox.iter().map(Vec::len).sum();
                    format!("+OK {} {size}\r\n", self.mailbox.len()).into_bytes()
                }
                (Protocol::Pop3, "UIDL") => match number(&upper) {
                    Some(n) if n >= 1 && n <= self.mailbox.len() => {
                        format!("+OK {n} uid-{n}\r\n").into_bytes()
                    }
                    Some(_) => b"-ERR no such message\r\n".to_vec(),
                    None => {
                        let mut r = "+OK\r\n".to_owned();
                        for n in 1..=self.mailbox.len() {
                            r.push_str(&format!("{n} uid-{n}\r\n"));
                        }
                        r.push_str(".\r\n");
                        r.into_bytes()
                    }
                },
                (Protocol::Pop3, "LIST") => {
                    let mut r = "+OK\r\n".to_owned();
                    for (i, m) in self.mailbox.iter().enumerate() {
                        r.push_str(&format!("{} {}\r\n", i + 1, m.len()));
                    }
                    r.push_str(".\r\n");
                    r.into_bytes()
                }
                (Protocol::Pop3, "RETR") => match number(&upper) {
                    Some(n) if n >= 1 && n <= self.mailbox.len() => {
                        let message = &self.mailbox[n - 1];
                        let mut r = format!("+OK {} octets\r\n", message.len()).into_bytes();
                        for (i, line) in message.split_inclusive(|&b| b == b'\n').enumerate() {
                            if self.fault == Fault::DropInBody(i + 1) {
                                let _ = conn.get_mut().write_all(&r).await;
                                return;
                            }
                            if line.starts_with(b".") {
                                r.push(b'.');
                            }
                            r.extend_from_slice(line);
                        }
                        r.extend_from_slice(b".\r\n");
                        r
                    }
                    _ => b"-ERR no such message\r\n".to_vec(),
                },
                (Protocol::Pop3, "TOP") => match number(&upper) {
                    Some(n) if n >= 1 && n <= self.mailbox.len() => {
                        // The header, the empty line, then at most `lines` body lines.
                        let message = &self.mailbox[n - 1];
                        let lines: usize = upper
                            .split(' ')
                            .nth(2)
                            .and_then(|l| l.parse().ok())
                            .unwrap_or(0);
                        let mut r = b"+OK\r\n".to_vec();
                        let mut body = None;
                        for line in message.split_inclusive(|&b| b == b'\n') {
                            match body {
                                Some(count) if count >= lines => break,
                                Some(count) => body = Some(count + 1),
                                None if line == b"\r\n" => body = Some(0),
                                None => {}
                            }
                            if line.starts_with(b".") {
                                r.push(b'.');
                            }
                            r.extend_from_slice(line);
                        }
                        r.extend_from_slice(b".\r\n");
                        r
                    }
                    _ => b"-ERR no such message\r\n".to_vec(),
                },
                (Protocol::Pop3, "DELE") => {
                    if let Some(n) = number(&upper) {
                        deleted.push(n);
                    }
                    b"+OK deleted\r\n".to_vec()
                }
                (Protocol::Pop3, "NOOP") | (Protocol::Pop3, "RSET") => b"+OK\r\n".to_vec(),
                (Protocol::Pop3, "QUIT") => {
                    self.seen.lock().unwrap().deleted.append(&mut deleted);
                    let _ = conn.get_mut().write_all(b"+OK bye\r\n").await;
                    return;
                }
                (Protocol::Smtp, _) => b"500 5.5.2 unknown command\r\n".to_vec(),
                (Protocol::Pop3, _) => b"-ERR unknown command\r\n".to_vec(),
            };
            if self.fault == Fault::AnswersOnlyWholeGroups
                && ["MAIL", "RCPT"].contains(&verb.as_str())
            {
                held.extend_from_slice(&reply);
                continue;
            }
            if conn.get_mut().write_all(&reply).await.is_err() {
                return;
            }
            let _ = conn.get_mut().flush().await;
        }
    }
}

fn number(upper: &str) -> Option<usize> {
    upper.split(' ').nth(1)?.parse().ok()
}

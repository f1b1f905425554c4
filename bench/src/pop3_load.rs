//! POP3 drain client: what an archiver does with each mailbox. One connection per mailbox
//! (plaintext or implicit TLS): USER/PASS, STAT, then RETR and DELE of every message in
//! turn, and QUIT (which commits the deletions). Multi-line responses are parsed as they
//! stream in (dot-unstuffing, `.` CRLF terminator); message bytes are counted and optionally
//! checked against what was sent.
//!
//! Several clients run concurrently, each draining its own mailbox; the figures cover the
//! whole drain, logins included, from the first connect to the last QUIT answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use test_support::wire::Conn;
use tokio::net::TcpStream;

use crate::load::{tls_client, LoadReport, StartGate, TlsClient, TlsTarget};

/// Longest trace prefix a server may put before the expected content ([`Verify::AfterTrace`]).
const MAX_TRACE: usize = 4096;

/// A mailbox to drain.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub password: String,
    /// What each of its messages must be.
    pub expect: Verify,
}

/// What every retrieved message must be.
#[derive(Clone, Debug, Default)]
pub enum Verify {
    /// Count bytes only.
    #[default]
    Nothing,
    /// Exactly this many bytes.
    Length(u64),
    /// Exactly these bytes (compared as they stream in).
    Exact(Arc<Vec<u8>>),
    /// These bytes, after header fields the server prepended (its `Received:` trace, at
    /// most 4 KiB): what a gateway that received the message over SMTP serves.
    AfterTrace(Arc<Vec<u8>>),
}

impl Verify {
    /// Whether a whole message passes (what the drain checks as it streams).
    pub fn matches(&self, message: &[u8]) -> bool {
        let mut collected = Vec::new();
        let mut check = Check::new(self, &mut collected);
        check.feed(message);
        check.finish(message.len() as u64)
    }
}

#[derive(Clone, Debug)]
pub struct DrainConfig {
    pub addr: SocketAddr,
    /// Implicit TLS (POP3S) when set; plaintext otherwise.
    pub tls: Option<TlsTarget>,
    /// One concurrent client per account.
    pub accounts: Vec<Account>,
    /// DELE every message after its RETR (QUIT then commits the deletions).
    pub delete: bool,
    /// Give up (and report what was done) after this long.
    pub timeout: Duration,
}

/// What a drain achieved, all clients together.
#[derive(Clone, Debug, Default)]
pub struct DrainReport {
    pub clients: usize,
    /// Messages announced by STAT.
    pub announced: u64,
    /// Messages retrieved in full.
    pub messages: u64,
    /// Content bytes of the retrieved messages (after unstuffing, without the terminator).
    pub bytes: u64,
    /// Retrieved messages that did not match [`Verify`].
    pub mismatched: u64,
    /// Clients that finished with QUIT answered +OK.
    pub completed: usize,
    /// From the first connect to the last client done.
    pub elapsed: Duration,
    /// Slowest time from connect to the answer to PASS.
    pub slowest_login: Duration,
    /// Negotiated TLS version and cipher suite, if TLS.
    pub tls: Option<String>,
    pub first_error: Option<String>,
}

impl DrainReport {
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Message content, 10^6 bytes per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    /// Every client finished, retrieved all STAT announced, and every message matched.
    pub fn is_complete(&self) -> bool {
        self.first_error.is_none()
            && self.completed == self.clients
            && self.messages == self.announced
            && self.mismatched == 0
    }

    pub fn summary(&self) -> String {
        format!(
            "{} clients: {}/{} messages, {:.1} MB in {:.2} s = {:.0} msg/s, {:.1} MB/s; \
             slowest login {:.0} ms{}{}{}",
            self.clients,
            self.messages,
            self.announced,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.messages_per_sec(),
            self.mb_per_sec(),
            self.slowest_login.as_secs_f64() * 1e3,
            self.tls
                .as_ref()
                .map(|t| format!("; {t}"))
                .unwrap_or_default(),
            if self.mismatched > 0 {
                format!("; {} MISMATCHED", self.mismatched)
            } else {
                String::new()
            },
            self.first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        )
    }
}

/// Whether something accepts TCP connections at `addr` (a quick probe, 2 s at most).
pub async fn reachable(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Drains every account concurrently and returns when all clients are done (or the
/// timeout struck: the report then carries the error and what was done until then).
pub async fn drain(config: DrainConfig) -> anyhow::Result<DrainReport> {
    let tls = config.tls.as_ref().map(tls_client).transpose()?;
    let config = Arc::new(config);
    let tls = Arc::new(tls);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for account in config.accounts.clone() {
        let (config, tls) = (config.clone(), tls.clone());
        tasks.spawn(async move {
            let mut result = ClientResult::default();
            let outcome = tokio::time::timeout(
                config.timeout,
                client(&config, tls.as_ref().as_ref(), &account, start, &mut result),
            )
            .await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result.error = Some(format!("{}: {e:#}", account.user)),
                Err(_) => {
                    result.error = Some(format!(
                        "{}: not done after {:?}",
                        account.user, config.timeout
                    ))
                }
            }
            result
        });
    }
    let mut report = DrainReport {
        clients: config.accounts.len(),
        ..DrainReport::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let r = joined?;
        report.announced += r.announced;
        report.messages += r.messages;
        report.bytes += r.bytes;
        report.mismatched += r.mismatched;
        report.completed += usize::from(r.completed);
        report.slowest_login = report.slowest_login.max(r.login);
        if report.tls.is_none() {
            report.tls = r.tls;
        }
        if report.first_error.is_none() {
            report.first_error = r.error;
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// A paced pick-up: what an archiver fetching at a steady rate does.
#[derive(Clone, Debug)]
pub struct PickupConfig {
    pub addr: SocketAddr,
    /// Implicit TLS (POP3S) when set; plaintext otherwise.
    pub tls: Option<TlsTarget>,
    /// One session per account (a POP3 mailbox admits one session at a time).
    pub accounts: Vec<Account>,
    /// Offered rate, bits of message per second, all sessions together.
    pub rate_bps: f64,
    /// The size the rate counts per message (what was sent into the mailboxes).
    pub message_bytes: usize,
    /// Messages are due during this long, from the moment every session has logged in.
    pub duration: Duration,
}

/// Runs a paced pick-up: every session logs in, then RETRs and DELEs its messages in turn,
/// each at the time the shared [`crate::load::Pacer`] hands out, until the schedule ends or
/// its mailbox is empty, and QUITs. A message's latency runs from its scheduled time to the
/// end of its content; `accepted` counts messages retrieved in full, `failed` the sessions
/// that broke off with an error (each loses at most the message in flight). The elapsed
/// time ends with the last message retrieved (at least the schedule's length): the QUITs
/// that commit the deletions come after it.
pub async fn pickup(config: PickupConfig) -> anyhow::Result<LoadReport> {
    let tls = Arc::new(config.tls.as_ref().map(tls_client).transpose()?);
    let mut gate = StartGate::new();
    let mut tasks = tokio::task::JoinSet::new();
    for account in config.accounts.clone() {
        let (tls, ticket, addr) = (tls.clone(), gate.ticket(), config.addr);
        tasks.spawn(async move {
            let (mut latencies, mut last) = (Vec::new(), None);
            let outcome: anyhow::Result<()> = async {
                let (mut conn, _) = connect(addr, tls.as_ref().as_ref()).await?;
                login(&mut conn, &account).await?;
                let (messages, _) = stat(&mut conn).await?;
                let pacer = ticket.wait().await.context("the run never started")?;
                for n in 1..=messages {
                    let Some(due) = pacer.next().await else { break };
                    ok(&conn.pop(&format!("RETR {n}")).await?, "RETR")?;
                    conn.multiline_with(|_| ()).await?;
                    latencies.push(due.elapsed());
                    last = Some(tokio::time::Instant::now());
                    ok(&conn.pop(&format!("DELE {n}")).await?, "DELE")?;
                }
                ok(&conn.pop("QUIT").await?, "QUIT")
            }
            .await;
            let error = outcome.err().map(|e| format!("{}: {e:#}", account.user));
            (latencies, last, error)
        });
    }
    let start = gate
        .open(config.rate_bps, config.message_bytes, Some(config.duration))
        .await
        .start();
    let mut report = LoadReport {
        sessions: config.accounts.len(),
        size: config.message_bytes,
        offered_bps: Some(config.rate_bps),
        ..LoadReport::default()
    };
    let mut last = start;
    while let Some(joined) = tasks.join_next().await {
        let (latencies, done, error) = joined?;
        last = last.max(done.unwrap_or(start));
        report.accepted += latencies.len() as u64;
        report.latencies.extend(latencies);
        if error.is_some() {
            report.failed += 1;
            report.first_error = report.first_error.or(error);
        }
    }
    report.elapsed = (last - start).max(config.duration);
    report.latencies.sort();
    Ok(report)
}

/// Counts how many messages a mailbox holds (a STAT session, no changes).
pub async fn count(
    addr: SocketAddr,
    tls: Option<&TlsTarget>,
    account: &Account,
) -> anyhow::Result<u64> {
    let tls = tls.map(tls_client).transpose()?;
    let mut conn = connect(addr, tls.as_ref()).await?.0;
    login(&mut conn, account).await?;
    let (messages, _) = stat(&mut conn).await?;
    conn.pop("QUIT").await?;
    Ok(messages)
}

#[derive(Default)]
struct ClientResult {
    announced: u64,
    messages: u64,
    bytes: u64,
    mismatched: u64,
    completed: bool,
    login: Duration,
    tls: Option<String>,
    error: Option<String>,
}

async fn connect(
    addr: SocketAddr,
    tls: Option<&TlsClient>,
) -> anyhow::Result<(Conn, Option<String>)> {
    let mut conn = crate::load::connect(addr, tls).await?;
    let described = match tls {
        Some(_) => Some(
            conn.tls_description()
                .context("no TLS version or cipher suite")?,
        ),
        None => None,
    };
    let greeting = conn.line().await.context("greeting")?;
    ok(&greeting, "greeting")?;
    Ok((conn, described))
}

async fn login(conn: &mut Conn, account: &Account) -> anyhow::Result<()> {
    let reply = conn.pop(&format!("USER {}", account.user)).await?;
    ok(&reply, "USER")?;
    let reply = conn.pop(&format!("PASS {}", account.password)).await?;
    ok(&reply, "PASS")
}

async fn stat(conn: &mut Conn) -> anyhow::Result<(u64, u64)> {
    let reply = conn.pop("STAT").await?;
    ok(&reply, "STAT")?;
    let mut fields = reply.split_whitespace().skip(1).map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(messages)), Some(Ok(octets))) => Ok((messages, octets)),
        _ => bail!("malformed STAT reply {reply:?}"),
    }
}

async fn client(
    config: &DrainConfig,
    tls: Option<&TlsClient>,
    account: &Account,
    start: Instant,
    result: &mut ClientResult,
) -> anyhow::Result<()> {
    let (mut conn, described) = connect(config.addr, tls).await?;
    result.tls = described;
    login(&mut conn, account).await?;
    result.login = start.elapsed();
    let (messages, _) = stat(&mut conn).await?;
    result.announced = messages;
    let mut collected = Vec::new();
    for n in 1..=messages {
        let reply = conn.pop(&format!("RETR {n}")).await?;
        ok(&reply, "RETR")?;
        let mut check = Check::new(&account.expect, &mut collected);
        let bytes = conn.multiline_with(|piece| check.feed(piece)).await?;
        result.messages += 1;
        result.bytes += bytes;
        if !check.finish(bytes) {
            result.mismatched += 1;
        }
        if config.delete {
            let reply = conn.pop(&format!("DELE {n}")).await?;
            ok(&reply, "DELE")?;
        }
    }
    let reply = conn.pop("QUIT").await?;
    ok(&reply, "QUIT")?;
    result.completed = true;
    Ok(())
}

fn ok(reply: &str, what: &str) -> anyhow::Result<()> {
    if reply.starts_with("+OK") {
        Ok(())
    } else {
        bail!("{what}: {reply}")
    }
}

/// Checks one message against [`Verify`] as its pieces arrive.
struct Check<'a> {
    verify: &'a Verify,
    /// Bytes seen so far ([`Verify::Exact`]).
    position: usize,
    matches: bool,
    /// The whole message ([`Verify::AfterTrace`] only), reused between messages.
    collected: &'a mut Vec<u8>,
}

impl<'a> Check<'a> {
    fn new(verify: &'a Verify, collected: &'a mut Vec<u8>) -> Self {
        collected.clear();
        Self {
            verify,
            position: 0,
            matches: true,
            collected,
        }
    }

    fn feed(&mut self, piece: &[u8]) {
        match self.verify {
            Verify::Nothing | Verify::Length(_) => {}
            Verify::Exact(expected) => {
                let end = self.position + piece.len();
                self.matches &= expected.get(self.position..end) == Some(piece);
                self.position = end;
            }
            Verify::AfterTrace(expected) => {
                if self.collected.len() + piece.len() <= expected.len() + MAX_TRACE {
                    self.collected.extend_from_slice(piece);
                } else {
                    self.matches = false;
                }
            }
        }
    }

    fn finish(self, total: u64) -> bool {
        match self.verify {
            Verify::Nothing => true,
            Verify::Length(len) => total == *len,
            Verify::Exact(expected) => self.matches && total == expected.len() as u64,
            Verify::AfterTrace(expected) => {
                self.matches
                    && self.collected.ends_with(expected)
                    && is_trace(&self.collected[..self.collected.len() - expected.len()])
            }
        }
    }
}

/// Whether `prefix` is nothing but header fields (folded lines included) ending in CRLF:
/// the `Received:` trace a server prepends (or a `Return-Path:`, should one come along).
fn is_trace(prefix: &[u8]) -> bool {
    let Some(fields) = prefix.strip_suffix(b"\r\n") else {
        return prefix.is_empty();
    };
    fields.split(|&b| b == b'\n').enumerate().all(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let folded = i > 0 && matches!(line.first(), Some(b' ' | b'\t'));
        let field = line
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|colon| colon > 0 && line[..colon].iter().all(|b| b.is_ascii_graphic()));
        folded || field
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification() {
        let sent = Arc::new(b"From: a\r\n\r\nbody\r\n".to_vec());
        let run = |verify: &Verify, message: &[u8]| {
            let mut collected = Vec::new();
            let mut check = Check::new(verify, &mut collected);
            for piece in message.chunks(3) {
                check.feed(piece);
            }
            check.finish(message.len() as u64)
        };
        let exact = Verify::Exact(sent.clone());
        assert!(run(&exact, &sent));
        assert!(!run(&exact, b"From: a\r\n\r\nbodY\r\n"));
        assert!(!run(&exact, &sent[..sent.len() - 1]));
        let traced = Verify::AfterTrace(sent.clone());
        let mut served = b"Received: from x ([127.0.0.1])\r\n\tby y; date\r\n".to_vec();
        served.extend_from_slice(&sent);
        assert!(run(&traced, &served));
        assert!(run(&traced, &sent));
        let prefixed = |prefix: &[u8]| [prefix, &sent].concat();
        assert!(run(&traced, &prefixed(b"Return-Path: <a@b>\r\n")));
        assert!(!run(&traced, &prefixed(b"garbage\r\n")));
        assert!(!run(&traced, &prefixed(b" folded first\r\n")));
        assert!(!run(&traced, &prefixed(b"Received: no line end")));
        assert!(!run(&traced, &prefixed(b"Received from x\r\n")));
        assert!(!run(&traced, &served[..served.len() - 1]));
        assert!(run(&Verify::Length(sent.len() as u64), &sent));
        assert!(!run(&Verify::Length(3), &sent));
    }
}

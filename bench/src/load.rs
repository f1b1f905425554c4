//! SMTP load generator: N concurrent sessions, each sending messages of one size over one
//! connection (MAIL, RCPT and DATA pipelined when the server offers PIPELINING), until a
//! total number of messages or a duration is reached. Only messages the server answered
//! with 250 after the data count.
//!
//! Closed loop by default: each session sends its next message as soon as the last one was
//! answered. With an offered rate (`rate_bps`) the load is open loop instead: a [`Pacer`]
//! hands out send times at that rate, every session waits for the next one, and a message's
//! latency counts from its scheduled time, so a server that falls behind shows it in the
//! latency instead of slowing the generator down (no coordinated omission).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use test_support::wire::{Conn, Options};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How to reach the server over TLS.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    /// PEM file of the certificate(s) to trust (the gateway's self-signed certificate).
    pub ca_file: PathBuf,
    /// Name the certificate must carry.
    pub server_name: String,
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    /// Implicit TLS (SMTPS) when set; plaintext otherwise.
    pub tls: Option<TlsTarget>,
    pub sessions: usize,
    /// Stop after this many messages were started (all sessions together).
    pub messages: Option<u64>,
    /// Stop starting new messages after this long.
    pub duration: Option<Duration>,
    /// Size of each message in bytes (headers included), before dot-stuffing.
    pub size: usize,
    pub from: String,
    pub to: String,
    /// Send MAIL, RCPT and DATA in one write (only if the server offers PIPELINING).
    pub pipelining: bool,
    /// Log in with AUTH PLAIN (user, password) after EHLO; needs `tls`.
    pub auth: Option<(String, String)>,
    /// Offered rate in bits of message per second (open loop, see the module docs); with a
    /// `duration`, messages are due during that long from the moment every session is
    /// connected. None: closed loop.
    pub rate_bps: Option<f64>,
}

/// Open-loop pacing, a token bucket: tokens (send times) are issued at the offered rate, one
/// per message, starting at `start`; every message takes the next token and waits until its
/// time. A sender that comes late gets a token that is already due and goes at once: the
/// backlog is sent as fast as the sessions can, and the latency counts from the token's time.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    interval: Duration,
    /// No tokens at or after this time.
    end: Option<Instant>,
    issued: AtomicU64,
}

impl Pacer {
    /// Tokens for messages of `message_bytes` at `rate_bps` bits per second, from `start`
    /// for `duration` (forever without).
    pub fn new(
        start: Instant,
        rate_bps: f64,
        message_bytes: usize,
        duration: Option<Duration>,
    ) -> Self {
        Self {
            start,
            interval: Duration::from_secs_f64(message_bytes as f64 * 8.0 / rate_bps),
            end: duration.map(|d| start + d),
            issued: AtomicU64::new(0),
        }
    }

    /// When the first token is due.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The time between two tokens.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Takes the next token: its time, or None when the run is over.
    pub fn claim(&self) -> Option<Instant> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let due = self.start + self.interval.mul_f64(n as f64);
        match self.end {
            Some(end) if due >= end => None,
            _ => Some(due),
        }
    }

    /// Takes the next token and waits until it is due; returns its time.
    pub async fn next(&self) -> Option<Instant> {
        let due = self.claim()?;
        tokio::time::sleep_until(due).await;
        Some(due)
    }
}

/// What a run achieved.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub sessions: usize,
    pub size: usize,
    /// Messages answered 250 after their data.
    pub accepted: u64,
    /// Messages refused or lost (non-2xx reply, broken connection).
    pub failed: u64,
    /// Closed loop: from the start to the last session done. Paced: from the first due
    /// time to the last reply, and at least the schedule's length, so that a schedule
    /// holding a single large message does not look like a burst at link speed.
    pub elapsed: Duration,
    /// The offered rate (bits per second) of a paced run.
    pub offered_bps: Option<f64>,
    /// Latency from MAIL FROM (paced: from the message's scheduled time) to the final 250,
    /// sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Where each accepted message's time went, sorted: its envelope (MAIL FROM sent to the
    /// `354` for DATA) and its end of data (the whole message written to the final reply:
    /// what the server does after the final dot, such as a proxy's copy and its upstream's
    /// verdict). The rest is sending the message.
    pub(crate) envelopes: Vec<Duration>,
    pub(crate) ends_of_data: Vec<Duration>,
    /// First error seen, for diagnosis.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// Runs that went on together (the sessions split between gateway nodes) as one: their
    /// sessions and messages added up, the longest one's time, every latency.
    pub fn combine(reports: Vec<LoadReport>) -> LoadReport {
        let mut all = LoadReport::default();
        for report in reports {
            all.sessions += report.sessions;
            all.size = report.size;
            all.accepted += report.accepted;
            all.failed += report.failed;
            all.elapsed = all.elapsed.max(report.elapsed);
            all.latencies.extend(report.latencies);
            all.envelopes.extend(report.envelopes);
            all.ends_of_data.extend(report.ends_of_data);
            all.first_error = all.first_error.or(report.first_error);
        }
        all.sort();
        all
    }

    pub fn messages_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    /// The offered rate of a paced run, megabits per second.
    pub fn offered_mbit_per_sec(&self) -> Option<f64> {
        self.offered_bps.map(|bps| bps / 1e6)
    }

    /// Accepted message bytes, in megabits per second (achieved, for a paced run).
    pub fn mbit_per_sec(&self) -> f64 {
        self.accepted as f64 * self.size as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Latency percentile (0..=100) over accepted messages.
    pub fn latency(&self, percentile: f64) -> Duration {
        percentile_of(&self.latencies, percentile)
    }

    /// The median envelope of an accepted message: from its MAIL FROM sent to the `354`
    /// for its DATA.
    pub fn envelope_median(&self) -> Duration {
        percentile_of(&self.envelopes, 50.0)
    }

    /// The median end of data of an accepted message: from the whole message written to
    /// its final reply.
    pub fn end_of_data_median(&self) -> Duration {
        percentile_of(&self.ends_of_data, 50.0)
    }

    fn sort(&mut self) {
        self.latencies.sort();
        self.envelopes.sort();
        self.ends_of_data.sort();
    }

    pub fn summary(&self) -> String {
        format!(
            "{} sessions, {} B: {} accepted, {} failed in {:.2} s = {:.0} msg/s, {:.1} Mbit/s{}; \
             latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
            self.sessions,
            self.size,
            self.accepted,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.messages_per_sec(),
            self.mbit_per_sec(),
            self.offered_mbit_per_sec()
                .map(|o| format!(" (offered {o:.1})"))
                .unwrap_or_default(),
            ms(self.latency(50.0)),
            ms(self.latency(90.0)),
            ms(self.latency(99.0)),
            ms(self.latency(100.0)),
            self.first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A message of exactly `size` bytes (CRLF line ends, lines of at most 78 characters),
/// followed by the end-of-data marker. No line starts with a dot, so no stuffing is needed.
pub fn build_message(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut msg = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: smtp benchmark\r\n\
         Message-ID: <bench@gateway.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u32 = 0x2545_f491;
    // Body lines of 1..=76 characters plus CRLF; the last lines are sized so the total is
    // exact whenever the headers leave at least 3 bytes.
    while msg.len() + 3 <= size {
        let remaining = size - msg.len();
        let line = match remaining - 2 {
            n if n <= 76 => n,
            n if n - 76 < 3 => 70,
            _ => 76,
        };
        for _ in 0..line {
            // xorshift: cheap, incompressible-looking text.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            msg.push(ALPHABET[(state % 64) as usize]);
        }
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b".\r\n");
    msg
}

struct Shared {
    config: LoadConfig,
    message: Vec<u8>,
    started: AtomicU64,
    deadline: Option<Instant>,
    tls: Option<TlsClient>,
}

impl Shared {
    /// Claims the next message: the time its latency counts from (paced: once it is due),
    /// or None when the run is over.
    async fn claim(&self, pacer: Option<&Pacer>) -> Option<Instant> {
        let at = match pacer {
            Some(pacer) => pacer.next().await?,
            None if self.deadline.is_some_and(|d| Instant::now() >= d) => return None,
            None => Instant::now(),
        };
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        self.config.messages.is_none_or(|max| n < max).then_some(at)
    }
}

/// Starts a paced run once every session is connected, so that connection set-up is not
/// part of the paced load: each session holds a [`Ticket`] and uses it when it is ready
/// (or drops it when it failed); [`StartGate::open`] waits for all of them and starts the
/// [`Pacer`] the tickets then hand out.
pub struct StartGate {
    ready_tx: tokio::sync::mpsc::Sender<()>,
    ready_rx: tokio::sync::mpsc::Receiver<()>,
    pacer_tx: tokio::sync::watch::Sender<Option<Arc<Pacer>>>,
    tickets: usize,
}

/// A session's part of a [`StartGate`].
pub struct Ticket {
    ready: tokio::sync::mpsc::Sender<()>,
    pacer: tokio::sync::watch::Receiver<Option<Arc<Pacer>>>,
}

impl StartGate {
    pub fn new() -> Self {
        // Every ticket sends at most once before it is dropped: no sender waits long.
        let (ready_tx, ready_rx) = tokio::sync::mpsc::channel(1024);
        Self {
            ready_tx,
            ready_rx,
            pacer_tx: tokio::sync::watch::channel(None).0,
            tickets: 0,
        }
    }

    pub fn ticket(&mut self) -> Ticket {
        self.tickets += 1;
        Ticket {
            ready: self.ready_tx.clone(),
            pacer: self.pacer_tx.subscribe(),
        }
    }

    /// Waits until every ticket was used or dropped, then starts tokens at `rate_bps` for
    /// messages of `message_bytes` for `duration`.
    pub async fn open(
        self,
        rate_bps: f64,
        message_bytes: usize,
        duration: Option<Duration>,
    ) -> Arc<Pacer> {
        let Self {
            ready_tx,
            mut ready_rx,
            pacer_tx,
            tickets,
        } = self;
        // Now only the tickets hold senders: the channel closes when the last one is used
        // or dropped (its session failed before it was ready).
        drop(ready_tx);
        let mut ready = 0;
        while ready < tickets && ready_rx.recv().await.is_some() {
            ready += 1;
        }
        let pacer = Arc::new(Pacer::new(
            Instant::now(),
            rate_bps,
            message_bytes,
            duration,
        ));
        // Tickets check the value before they look at whether the sender is gone.
        let _ = pacer_tx.send(Some(pacer.clone()));
        pacer
    }
}

impl Default for StartGate {
    fn default() -> Self {
        Self::new()
    }
}

impl Ticket {
    /// Says this session is ready and waits for the pacer.
    pub async fn wait(mut self) -> Option<Arc<Pacer>> {
        let _ = self.ready.send(()).await;
        drop(self.ready);
        let pacer = self.pacer.wait_for(Option::is_some).await.ok()?;
        pacer.clone()
    }
}

/// `percentile` (0..=100) of `sorted`; zero when it is empty.
fn percentile_of(sorted: &[Duration], percentile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (percentile / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[derive(Default)]
struct SessionResult {
    accepted: u64,
    failed: u64,
    latencies: Vec<Duration>,
    envelopes: Vec<Duration>,
    ends_of_data: Vec<Duration>,
    error: Option<String>,
}

/// What a TLS client of a [`TlsTarget`] needs: the connector (trusting only its
/// certificates) and the name to verify.
pub type TlsClient = (tokio_rustls::TlsConnector, String);

/// A TLS client for `target`.
pub fn tls_client(target: &TlsTarget) -> anyhow::Result<TlsClient> {
    Ok((
        test_support::pki::connector_for_file(&target.ca_file)?,
        target.server_name.clone(),
    ))
}

/// A connection to `addr` (TCP_NODELAY: requests go out at once), TLS first with `tls`.
/// No time limit on any step: the runners have their own.
pub async fn connect(addr: SocketAddr, tls: Option<&TlsClient>) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let mut options = Options::default().resets_are_errors();
    if let Some((_, name)) = tls {
        options = options.server_name(name);
    }
    let mut conn = Conn::new(tcp, options);
    if let Some((connector, _)) = tls {
        conn.upgrade(connector).await.context("TLS handshake")?;
    }
    Ok(conn)
}

/// Opens `count` SMTP sessions to `addr` (TLS first with `tls`) that read the greeting and
/// then wait, at most `in_flight` being opened at a time: a burst would overflow the accept
/// queue, and a connection dropped from it after the handshake (SYN cookies) would wait for
/// a greeting forever.
pub async fn open_idle(
    addr: SocketAddr,
    tls: Option<&TlsClient>,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<Conn>> {
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    for _ in 0..count {
        let tls = tls.cloned();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _slot = gate.acquire_owned().await?;
            let mut conn = connect(addr, tls.as_ref()).await?;
            conn.reply().await?.expect(220).context("greeting")?;
            anyhow::Ok(conn)
        });
    }
    let mut conns = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        conns.push(joined??);
    }
    Ok(conns)
}

/// Delivers `count` messages of `size` bytes to `to` over plaintext SMTP (closed loop,
/// `sessions` sessions, ten minutes at most) and fails unless all were accepted: filling
/// mailboxes before a measurement.
pub async fn deliver(
    addr: SocketAddr,
    (from, to): (&str, &str),
    size: usize,
    count: u64,
    sessions: usize,
) -> anyhow::Result<()> {
    let report = run(LoadConfig {
        addr,
        tls: None,
        sessions,
        messages: Some(count),
        duration: Some(Duration::from_secs(600)),
        size,
        from: from.to_owned(),
        to: to.to_owned(),
        pipelining: true,
        auth: None,
        rate_bps: None,
    })
    .await?;
    if report.accepted != count {
        bail!("delivering {count} messages: {}", report.summary());
    }
    Ok(())
}

/// Runs the load and returns when every session has finished.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    if config.messages.is_none() && config.duration.is_none() {
        bail!("give a number of messages or a duration");
    }
    if config.rate_bps.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("the offered rate must be positive");
    }
    let tls = config.tls.as_ref().map(tls_client).transpose()?;
    let mut start = Instant::now();
    let shared = Arc::new(Shared {
        message: build_message(config.size, &config.from, &config.to),
        deadline: config.duration.map(|d| start + d),
        started: AtomicU64::new(0),
        tls,
        config,
    });
    let mut gate = StartGate::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..shared.config.sessions {
        let shared = shared.clone();
        let ticket = shared.config.rate_bps.map(|_| gate.ticket());
        tasks.spawn(async move {
            let mut result = SessionResult::default();
            if let Err(e) = session(&shared, ticket, &mut result).await {
                result.error = Some(format!("{e:#}"));
            }
            result
        });
    }
    if let Some(rate) = shared.config.rate_bps {
        let pacer = gate
            .open(rate, shared.config.size, shared.config.duration)
            .await;
        start = pacer.start();
    }
    let mut report = LoadReport {
        sessions: shared.config.sessions,
        size: shared.config.size,
        offered_bps: shared.config.rate_bps,
        ..LoadReport::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let result = joined?;
        report.accepted += result.accepted;
        report.failed += result.failed;
        report.latencies.extend(result.latencies);
        report.envelopes.extend(result.envelopes);
        report.ends_of_data.extend(result.ends_of_data);
        if report.first_error.is_none() {
            report.first_error = result.error;
        }
    }
    report.elapsed = match (shared.config.rate_bps, shared.config.duration) {
        (Some(_), Some(schedule)) => start.elapsed().max(schedule),
        _ => start.elapsed(),
    };
    report.sort();
    Ok(report)
}

async fn session(
    shared: &Shared,
    ticket: Option<Ticket>,
    result: &mut SessionResult,
) -> anyhow::Result<()> {
    let mut conn = connect(shared.config.addr, shared.tls.as_ref()).await?;
    conn.reply().await?.expect(220).context("greeting")?;
    let ehlo = conn.command("EHLO loadgen.gateway.test").await?;
    ehlo.expect(250).context("EHLO")?;
    let pipelining = shared.config.pipelining && ehlo.lines.iter().any(|l| l == "PIPELINING");
    if let Some((user, password)) = &shared.config.auth {
        let plain = data_encoding::BASE64.encode(format!("\0{user}\0{password}").as_bytes());
        conn.command(&format!("AUTH PLAIN {plain}"))
            .await?
            .expect(235)
            .context("AUTH")?;
    }

    let envelope = format!(
        "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        shared.config.from, shared.config.to
    );
    let commands: Vec<&str> = envelope.split_inclusive("\r\n").collect();
    let pacer = match ticket {
        Some(ticket) => Some(ticket.wait().await.context("the run never started")?),
        None => None,
    };
    let mut in_transaction = false;
    let outcome: anyhow::Result<()> = async {
        while let Some(t0) = shared.claim(pacer.as_deref()).await {
            in_transaction = true;
            let envelope_sent = Instant::now();
            if pipelining {
                conn.send(&envelope).await?;
                conn.reply().await?.expect(250).context("MAIL")?;
                conn.reply().await?.expect(250).context("RCPT")?;
                conn.reply().await?.expect(354).context("DATA")?;
            } else {
                for (command, code) in commands.iter().zip([250, 250, 354]) {
                    conn.send(command).await?;
                    conn.reply()
                        .await?
                        .expect(code)
                        .with_context(|| command.trim_end().to_owned())?;
                }
            }
            let go_ahead = Instant::now();
            conn.send(&shared.message).await?;
            let written = Instant::now();
            let reply = conn.reply().await?;
            in_transaction = false;
            if reply.code == 250 {
                result.accepted += 1;
                result.latencies.push(t0.elapsed());
                result.envelopes.push(go_ahead - envelope_sent);
                result.ends_of_data.push(written.elapsed());
            } else {
                result.failed += 1;
                if result.error.is_none() {
                    result.error = Some(format!(
                        "end of data: {} {}",
                        reply.code,
                        reply.lines.join(" / ")
                    ));
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        if in_transaction {
            result.failed += 1;
        }
        return Err(e);
    }
    conn.send("QUIT\r\n").await?;
    let _ = conn.reply().await;
    conn.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_at_the_offered_rate_until_the_end() {
        let start = Instant::now();
        // 1 MiB at 100 Mbit/s: one message every 83.886 ms.
        let pacer = Pacer::new(start, 100e6, 1 << 20, Some(Duration::from_secs(1)));
        assert_eq!(pacer.interval().as_micros(), 83_886);
        let dues: Vec<Duration> = std::iter::from_fn(|| pacer.claim())
            .map(|due| due - start)
            .collect();
        assert_eq!(dues.len(), 12, "1 s / 83.9 ms");
        assert_eq!(dues[0], Duration::ZERO);
        for pair in dues.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap.abs_diff(pacer.interval()) <= Duration::from_nanos(2),
                "{gap:?}"
            );
        }
        assert!(pacer.claim().is_none(), "no tokens after the end");
    }

    #[tokio::test(start_paused = true)]
    async fn senders_wait_for_their_token_and_late_ones_keep_its_time() {
        let start = Instant::now();
        // 10 ms between tokens.
        let pacer = Pacer::new(start, 8_000.0, 10, None);
        assert_eq!(pacer.next().await, Some(start));
        assert_eq!(Instant::now(), start, "the first token is due at once");
        let second = pacer.next().await.unwrap();
        assert_eq!(second - start, Duration::from_millis(10));
        assert_eq!(Instant::now(), second, "waited exactly until it was due");
        // A slow server keeps the sender busy for 35 ms: the tokens due meanwhile go at
        // once, each with its own time, so the latency counts from there.
        tokio::time::advance(Duration::from_millis(35)).await;
        let late = Instant::now();
        let third = pacer.next().await.unwrap();
        let fourth = pacer.next().await.unwrap();
        assert_eq!(
            (third - start, fourth - start),
            (Duration::from_millis(20), Duration::from_millis(30))
        );
        assert_eq!(Instant::now(), late, "no waiting for tokens already due");
        let fifth = pacer.next().await.unwrap();
        assert_eq!(fifth - start, Duration::from_millis(40));
        assert_eq!(Instant::now(), late, "due at 40 ms, now is 45 ms: at once");
        // Caught up: the next token is in the future again.
        let sixth = pacer.next().await.unwrap();
        assert_eq!(sixth - start, Duration::from_millis(50));
        assert_eq!(Instant::now(), sixth);
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_opens_when_every_session_is_ready_or_gone() {
        let mut gate = StartGate::new();
        let tickets: Vec<Ticket> = (0..3).map(|_| gate.ticket()).collect();
        let mut tickets = tickets.into_iter();
        let (a, b, failed) = (
            tickets.next().unwrap(),
            tickets.next().unwrap(),
            tickets.next().unwrap(),
        );
        let a = tokio::spawn(a.wait());
        // The second session takes 50 ms to connect: the clock starts after that.
        let b = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.wait().await
        });
        drop(failed);
        let before = Instant::now();
        let pacer = gate.open(8_000.0, 10, None).await;
        assert_eq!(pacer.start() - before, Duration::from_millis(50));
        for session in [a, b] {
            let got = session.await.unwrap().expect("a pacer");
            assert!(Arc::ptr_eq(&got, &pacer));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_senders_share_one_schedule() {
        let start = Instant::now();
        let pacer = Arc::new(Pacer::new(
            start,
            8_000.0,
            10,
            Some(Duration::from_millis(100)),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let pacer = pacer.clone();
            tasks.spawn(async move {
                let mut sent = Vec::new();
                while let Some(due) = pacer.next().await {
                    sent.push((due - start, Instant::now() - start));
                }
                sent
            });
        }
        let mut all: Vec<(Duration, Duration)> = tasks.join_all().await.concat();
        all.sort();
        let dues: Vec<u128> = all.iter().map(|(due, _)| due.as_millis()).collect();
        assert_eq!(dues, (0..10).map(|i| i * 10).collect::<Vec<u128>>());
        assert!(
            all.iter().all(|(due, went)| due == went),
            "each went when due"
        );
    }

    #[test]
    fn combined_runs_take_the_median_phase_of_every_message() {
        let ms = Duration::from_millis;
        let run = |envelopes: &[u64], ends: &[u64]| LoadReport {
            envelopes: envelopes.iter().map(|&e| ms(e)).collect(),
            ends_of_data: ends.iter().map(|&e| ms(e)).collect(),
            ..LoadReport::default()
        };
        let all = LoadReport::combine(vec![run(&[5, 1], &[30, 10]), run(&[2], &[20])]);
        assert_eq!(all.envelope_median(), ms(2));
        assert_eq!(all.end_of_data_median(), ms(20));
        assert_eq!(LoadReport::default().envelope_median(), Duration::ZERO);
    }

    #[test]
    fn message_has_the_requested_size() {
        for size in [300, 301, 302, 303, 10 * 1024, 1024 * 1024 + 3] {
            let m = build_message(size, "a@b.test", "c@d.test");
            assert_eq!(m.len() - 3, size);
            assert!(m.ends_with(b"\r\n.\r\n"));
            let dots = m.windows(2).filter(|w| *w == b"\n.").count();
            assert_eq!(dots, 1, "only the end-of-data line starts with a dot");
            assert!(m.split(|&b| b == b'\n').all(|l| l.len() <= 80));
        }
    }
}

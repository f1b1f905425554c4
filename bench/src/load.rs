//! SMTP load generator: N concurrent sessions, each sending messages of one size over one
//! connection (MAIL, RCPT and DATA pipelined when the server offers PIPELINING), until a
//! total number of messages or a duration is reached. Only messages the server answered
//! with 250 after the data count.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use test_support::wire::{Conn, Options};
use tokio::net::TcpStream;

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
    pub elapsed: Duration,
    /// Latency from MAIL FROM to the final 250, sorted.
    latencies: Vec<Duration>,
    /// First error seen, for diagnosis.
    pub first_error: Option<String>,
}

impl LoadReport {
    pub fn messages_per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    /// Accepted message bytes, in megabits per second.
    pub fn mbit_per_sec(&self) -> f64 {
        self.accepted as f64 * self.size as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Latency percentile (0..=100) over accepted messages.
    pub fn latency(&self, percentile: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (percentile / 100.0 * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }

    pub fn summary(&self) -> String {
        format!(
            "{} sessions, {} B: {} accepted, {} failed in {:.2} s = {:.0} msg/s, {:.1} Mbit/s; \
             latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
            self.sessions,
            self.size,
            self.accepted,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.messages_per_sec(),
            self.mbit_per_sec(),
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
    /// Claims the next message, or None when the run is over.
    fn claim(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        self.config.messages.is_none_or(|max| n < max)
    }
}

#[derive(Default)]
struct SessionResult {
    accepted: u64,
    failed: u64,
    latencies: Vec<Duration>,
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

/// Runs the load and returns when every session has finished.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    if config.messages.is_none() && config.duration.is_none() {
        bail!("give a number of messages or a duration");
    }
    let tls = config.tls.as_ref().map(tls_client).transpose()?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        message: build_message(config.size, &config.from, &config.to),
        deadline: config.duration.map(|d| start + d),
        started: AtomicU64::new(0),
        tls,
        config,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..shared.config.sessions {
        let shared = shared.clone();
        tasks.spawn(async move {
            let mut result = SessionResult::default();
            if let Err(e) = session(&shared, &mut result).await {
                result.error = Some(format!("{e:#}"));
            }
            result
        });
    }
    let mut report = LoadReport {
        sessions: shared.config.sessions,
        size: shared.config.size,
        ..LoadReport::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let result = joined?;
        report.accepted += result.accepted;
        report.failed += result.failed;
        report.latencies.extend(result.latencies);
        if report.first_error.is_none() {
            report.first_error = result.error;
        }
    }
    report.elapsed = start.elapsed();
    report.latencies.sort();
    Ok(report)
}

async fn session(shared: &Shared, result: &mut SessionResult) -> anyhow::Result<()> {
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
    let mut in_transaction = false;
    let outcome: anyhow::Result<()> = async {
        while shared.claim() {
            let t0 = Instant::now();
            in_transaction = true;
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
            conn.send(&shared.message).await?;
            let reply = conn.reply().await?;
            in_transaction = false;
            if reply.code == 250 {
                result.accepted += 1;
                result.latencies.push(t0.elapsed());
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

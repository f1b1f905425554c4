//! TLS benchmark of the gateway: full and resumed TLS 1.3 handshakes per second on SMTPS,
//! the gateway's CPU time per handshake, and the memory an idle session holds after its
//! handshake on SMTPS (465), POP3S (995) and, for comparison, plain SMTP (25).
//!
//! `cargo run --release -p bench --bin tls_bench [-- --clients 1,2,4 --seconds 5 ...]`
//!
//! The gateway runs as a child process (see [`bench::gateway_proc`]) with its own
//! self-signed ECDSA P-256 certificate. The client runs in this process, on the same cores:
//! - handshakes: `clients` tasks each connect over 127.0.0.1, complete a TLS 1.3 handshake
//!   (verifying the certificate), read the `220` greeting (so the server's side of the
//!   handshake is done too) and close, for `seconds`. Full: the client keeps no session;
//!   resumed: the tasks share an in-memory session store, so each connection uses the ticket
//!   the previous one got;
//! - memory: `sessions` connections are opened (handshake done, greeting read) and held
//!   idle; the gateway's VmRSS and RssAnon before and after, divided by the count.
//!
//! What an idle session holds (from the code): no read buffer of its own (reads land in one
//! buffer per worker thread), the connection's tokio task (its future holds the session's
//! largest state inline, about 4 KiB for SMTP in a release build), and with TLS rustls'
//! record buffer (4 KiB, zero-filled) plus its traffic keys. The second fill shows what
//! reused memory costs in a gateway that has been running a while.
//!
//! Prints a Markdown report and writes it to `<target dir>/bench-reports/tls.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::gateway_proc::{self, open_descriptors, proc_status_kib, GatewayProcess, HOST_NAME};
use bench::results::{Better, Results};
use bench::util::{cpu_seconds, prepare_run, write_report};
use clap::Parser;
use gateway::config::LogLevel;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{version::TLS13, ClientConfig, HandshakeKind};
use tokio_rustls::TlsConnector;

/// Connections opened at once while filling the memory phase (below the listen backlog).
const OPENING_IN_FLIGHT: usize = 32;
/// More open descriptors than an idle gateway child has (listeners, store, runtime).
const IDLE_DESCRIPTORS: usize = 64;
/// Cap on one connection's handshake and greeting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(about = "TLS handshakes/s, resumption and per-session memory of the gateway")]
struct Args {
    /// Concurrent handshaking clients.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
    clients: Vec<usize>,
    /// Seconds per handshake cell.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Idle sessions held per listener for the memory figures.
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// The gateway's log level (error, warn, info, debug, trace): by default its own
    /// default, so per-connection logging costs what it costs in production.
    #[arg(long, default_value_t = LogLevel::default(), value_parser = log_level)]
    log_level: LogLevel,
    /// A short run: 1 second per cell, 200 sessions.
    #[arg(long)]
    quick: bool,
    /// Report file (default: `<target dir>/bench-reports/tls.md`).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Whether a cell's client keeps sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Resumed,
}

struct HandshakeCell {
    mode: Mode,
    clients: usize,
    elapsed: Duration,
    /// Completed connections (handshake and greeting).
    completed: u64,
    /// Of those, resumed handshakes.
    resumed: u64,
    failed: u64,
    gateway_cpu: f64,
    client_cpu: f64,
}

impl HandshakeCell {
    fn per_sec(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }

    fn ms_per_handshake(&self, cpu: f64) -> f64 {
        cpu * 1e3 / self.completed.max(1) as f64
    }
}

struct MemoryCell {
    listener: &'static str,
    sessions: usize,
    rss_before: u64,
    rss_open: u64,
    anon_before: u64,
    anon_open: u64,
    rss_closed: u64,
    rss_reopened: u64,
}

impl MemoryCell {
    fn kib_per_session(&self, before: u64, after: u64) -> f64 {
        after.saturating_sub(before) as f64 / self.sessions.max(1) as f64
    }
}

fn log_level(name: &str) -> Result<LogLevel, String> {
    LogLevel::ALL
        .into_iter()
        .find(|level| level.as_str() == name)
        .ok_or_else(|| format!("not a log level: {name}"))
}

fn main() -> anyhow::Result<()> {
    if let Some(child) = gateway_proc::child_if_asked() {
        return child;
    }
    let mut args = Args::parse();
    if args.quick {
        args.seconds = 1.0;
        args.sessions = 200;
    }
    if args.clients.contains(&0) || args.seconds <= 0.0 {
        bail!("--clients must be at least 1 and --seconds positive");
    }
    let (scratch, out) = prepare_run("tls", args.out.clone())?;
    // The child inherits the raised limit: it holds one descriptor per session, this
    // process one per client connection.
    let fd_limit = gateway::net::raise_open_files_limit()
        .map(|limits| limits.now)
        .ok();
    let mut notes = vec![fd_limit_note(fd_limit, args.sessions)];

    let mut config = gateway_proc::bench_config(&scratch.join("gateway"));
    config.listen.pop3s.enabled = true;
    config.gateway.log_level = args.log_level;
    let connections = u32::try_from(args.sessions + 100).unwrap_or(u32::MAX);
    config.limits.max_connections = connections;
    config.limits.max_connections_per_ip = connections;
    // The memory phase holds sessions that never log in.
    config.limits.preauth_timeout_secs = 600;
    let gateway = GatewayProcess::start_with(&config)?;
    let pid = gateway.pid();
    let pop3s = gateway
        .service("pop3s")
        .context("the gateway started no pop3s listener")?;
    eprintln!(
        "gateway pid {pid}: smtp {} smtps {} pop3s {pop3s}",
        gateway.smtp, gateway.smtps
    );
    if let Some(limit) = child_fd_limit(pid) {
        notes.push(format!("The gateway child's open-files limit: {limit}."));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pem = std::fs::read(&gateway.ca_file)?;
    let negotiated = runtime.block_on(describe(gateway.smtps, &pem))?;
    eprintln!("negotiated: {negotiated}");

    let mut handshakes = Vec::new();
    for mode in [Mode::Full, Mode::Resumed] {
        // Warm-up: the gateway's worker threads, the allocator and (resumed) the store.
        let connector = connector(&pem, mode)?;
        runtime.block_on(handshake_cell(
            gateway.smtps,
            &connector,
            1,
            Duration::from_millis(300),
            pid,
        ))?;
        for &clients in &args.clients {
            let cell = runtime.block_on(handshake_cell(
                gateway.smtps,
                &connector,
                clients,
                Duration::from_secs_f64(args.seconds),
                pid,
            ))?;
            let cell = HandshakeCell { mode, ..cell };
            eprintln!(
                "{mode:?} x{clients}: {:.0} handshakes/s ({} resumed, {} failed), gateway {:.3} ms CPU each",
                cell.per_sec(),
                cell.resumed,
                cell.failed,
                cell.ms_per_handshake(cell.gateway_cpu)
            );
            handshakes.push(cell);
        }
    }

    if let Err(e) = gateway.stop() {
        notes.push(format!("Gateway stop: {e:#}"));
    }

    // Each listener on a fresh child: memory freed by one cell stays with the allocator and
    // would be reused by the next, hiding what its sessions cost.
    let mut memory = Vec::new();
    let full = connector(&pem, Mode::Full)?;
    for (listener, service, tls) in [
        ("SMTPS 465", "smtps", true),
        ("POP3S 995", "pop3s", true),
        ("SMTP 25 (plain)", "smtp", false),
    ] {
        let gateway = GatewayProcess::start_with(&config)?;
        let addr = match service {
            "smtps" => Some(gateway.smtps),
            "smtp" => Some(gateway.smtp),
            other => gateway.service(other),
        }
        .with_context(|| format!("the gateway started no {service} listener"))?;
        let cell = runtime.block_on(memory_cell(
            listener,
            addr,
            tls.then_some(&full),
            args.sessions,
            gateway.pid(),
        ))?;
        eprintln!(
            "{listener}: {:.1} KiB RSS per idle session ({:.1} on the second fill)",
            cell.kib_per_session(cell.rss_before, cell.rss_open),
            cell.kib_per_session(cell.rss_before, cell.rss_reopened)
        );
        memory.push(cell);
        if let Err(e) = gateway.stop() {
            notes.push(format!("Gateway stop after {listener}: {e:#}"));
        }
    }
    drop(runtime);
    let report = render(&handshakes, &memory, &negotiated, &args, &notes);
    println!("{report}");
    write_report(&out, &report)?;
    let json = results(&handshakes, &memory, args.quick).write_beside(&out)?;
    eprintln!("report written to {} and {}", out.display(), json.display());
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Raises this process's soft open-files limit to its hard limit; returns the soft limit
/// now in force.
fn fd_limit_note(limit: Option<u64>, sessions: usize) -> String {
    let limit = limit.map_or_else(|| "unlimited".to_owned(), |l| l.to_string());
    format!(
        "Open-files limit of the runner (raised to its hard limit; the gateway child \
         inherits it): {limit}; the memory phase holds {sessions} connections at a time. \
         `gateway serve` raises its own soft limit to the hard one (under systemd \
         `LimitNOFILE=65536` from `contrib/gateway.service`)."
    )
}

/// "Max open files" of another process, from /proc.
fn child_fd_limit(pid: u32) -> Option<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(format!("soft {}, hard {}", fields.get(3)?, fields.get(4)?))
}

/// A TLS 1.3 client trusting only the gateway's certificate; `Full` keeps no sessions.
fn connector(pem: &[u8], mode: Mode) -> anyhow::Result<TlsConnector> {
    let roots = test_support::pki::roots(pem)?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    if mode == Mode::Full {
        config.resumption = Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Reads one line (the greeting) and checks it is a positive one.
async fn greeting<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<()> {
    let mut line = [0u8; 512];
    let mut got = 0;
    while !line[..got].ends_with(b"\r\n") {
        if got == line.len() {
            bail!("greeting longer than {} bytes", line.len());
        }
        let n = stream.read(&mut line[got..]).await?;
        if n == 0 {
            bail!("closed before the greeting");
        }
        got += n;
    }
    if !(line.starts_with(b"220") || line.starts_with(b"+OK")) {
        bail!("greeting {:?}", String::from_utf8_lossy(&line[..got]));
    }
    Ok(())
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// One connection: TCP, the TLS handshake, the greeting.
async fn open_tls(addr: SocketAddr, connector: &TlsConnector) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(HOST_NAME)?.to_owned();
    let mut tls = connector.connect(name, tcp).await?;
    greeting(&mut tls).await?;
    Ok(tls)
}

async fn open_plain(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    greeting(&mut tcp).await?;
    Ok(tcp)
}

/// Protocol, cipher suite and key exchange group of one connection.
async fn describe(addr: SocketAddr, pem: &[u8]) -> anyhow::Result<String> {
    let tls = open_tls(addr, &connector(pem, Mode::Full)?).await?;
    let conn = tls.get_ref().1;
    Ok(format!(
        "{:?}, {:?}, key exchange {:?}",
        conn.protocol_version().context("no version")?,
        conn.negotiated_cipher_suite().context("no suite")?.suite(),
        conn.negotiated_key_exchange_group()
            .context("no key exchange")?
            .name()
    ))
}

/// `clients` tasks handshaking in a loop for `duration`.
async fn handshake_cell(
    addr: SocketAddr,
    connector: &TlsConnector,
    clients: usize,
    duration: Duration,
    pid: u32,
) -> anyhow::Result<HandshakeCell> {
    let gateway_cpu = cpu_seconds(pid);
    let client_cpu = cpu_seconds(std::process::id());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let connector = connector.clone();
        tasks.spawn(async move {
            let (mut completed, mut resumed, mut failed) = (0u64, 0u64, 0u64);
            let mut first_error = None;
            while Instant::now() < deadline {
                match tokio::time::timeout(CONNECT_TIMEOUT, open_tls(addr, &connector)).await {
                    Ok(Ok(tls)) => {
                        completed += 1;
                        if tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                            resumed += 1;
                        }
                    }
                    Ok(Err(e)) => {
                        failed += 1;
                        first_error.get_or_insert(format!("{e:#}"));
                    }
                    Err(_) => {
                        failed += 1;
                        first_error.get_or_insert("timed out".to_owned());
                    }
                }
            }
            (completed, resumed, failed, first_error)
        });
    }
    let mut cell = HandshakeCell {
        mode: Mode::Full,
        clients,
        elapsed: Duration::ZERO,
        completed: 0,
        resumed: 0,
        failed: 0,
        gateway_cpu: 0.0,
        client_cpu: 0.0,
    };
    while let Some(joined) = tasks.join_next().await {
        let (completed, resumed, failed, first_error) = joined?;
        cell.completed += completed;
        cell.resumed += resumed;
        cell.failed += failed;
        if let Some(e) = first_error {
            eprintln!("    a connection failed: {e}");
        }
    }
    cell.elapsed = start.elapsed();
    cell.gateway_cpu = cpu_seconds(pid) - gateway_cpu;
    cell.client_cpu = cpu_seconds(std::process::id()) - client_cpu;
    Ok(cell)
}

/// Opens `sessions` idle connections to `addr` (TLS with `tls`) and measures the gateway's
/// memory before, while they are open, after they closed, and with as many open again (now
/// in memory the allocator got back from the first ones, as in a gateway that has run a
/// while).
async fn memory_cell(
    listener: &'static str,
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
    sessions: usize,
    pid: u32,
) -> anyhow::Result<MemoryCell> {
    // One session first, so that what every listener allocates once (its first task, the
    // TLS configuration's first use) is in "before".
    drop(fill(listener, addr, tls, 1).await?);
    wait_closed(pid).await;
    let rss_before = proc_status_kib(pid, "VmRSS")?;
    let anon_before = proc_status_kib(pid, "RssAnon")?;
    let held = fill(listener, addr, tls, sessions).await?;
    let rss_open = proc_status_kib(pid, "VmRSS")?;
    let anon_open = proc_status_kib(pid, "RssAnon")?;
    drop(held);
    wait_closed(pid).await;
    let rss_closed = proc_status_kib(pid, "VmRSS")?;
    let held = fill(listener, addr, tls, sessions).await?;
    let rss_reopened = proc_status_kib(pid, "VmRSS")?;
    drop(held);
    wait_closed(pid).await;
    Ok(MemoryCell {
        listener,
        sessions,
        rss_before,
        rss_open,
        anon_before,
        anon_open,
        rss_closed,
        rss_reopened,
    })
}

/// An idle connection the memory phase holds open until it drops it.
type Held = Box<dyn Send>;

/// `sessions` connections to `addr`, each past its greeting, opened [`OPENING_IN_FLIGHT`]
/// at a time.
async fn fill(
    listener: &str,
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
    sessions: usize,
) -> anyhow::Result<Vec<Held>> {
    let mut held = Vec::with_capacity(sessions);
    let mut opening = tokio::task::JoinSet::new();
    let mut started = 0;
    while held.len() < sessions {
        while started < sessions && opening.len() < OPENING_IN_FLIGHT {
            started += 1;
            let tls = tls.cloned();
            opening.spawn(tokio::time::timeout(CONNECT_TIMEOUT, async move {
                match tls {
                    Some(connector) => open_tls(addr, &connector)
                        .await
                        .map(|t| Box::new(t) as Held),
                    None => open_plain(addr).await.map(|t| Box::new(t) as Held),
                }
            }));
        }
        let Some(joined) = opening.join_next().await else {
            bail!("{listener}: no connection in flight");
        };
        let session = joined?
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|opened| opened)
            .with_context(|| format!("{listener} session"))?;
        held.push(session);
    }
    Ok(held)
}

/// Waits (up to 10 s) until the gateway has closed the connections the runner dropped.
async fn wait_closed(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_descriptors(pid).is_ok_and(|n| n > IDLE_DESCRIPTORS) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn results(handshakes: &[HandshakeCell], memory: &[MemoryCell], quick: bool) -> Results {
    let mut results = Results::new("tls", quick);
    for c in handshakes {
        let parts = [format!("{:?}", c.mode), format!("{} clients", c.clients)];
        let parts = [parts[0].as_str(), parts[1].as_str()];
        results.add(&parts, "handshakes/s", Better::Higher, c.per_sec(), None);
        let cpu = c.ms_per_handshake(c.gateway_cpu);
        results.add(&parts, "gateway CPU ms each", Better::Lower, cpu, None);
    }
    for m in memory {
        let parts = [m.listener, "idle"];
        let first = m.kib_per_session(m.rss_before, m.rss_open);
        results.add(&parts, "KiB per session", Better::Lower, first, None);
        let again = m.kib_per_session(m.rss_before, m.rss_reopened);
        results.add(
            &parts,
            "KiB per session, second fill",
            Better::Lower,
            again,
            None,
        );
    }
    results
}

fn render(
    handshakes: &[HandshakeCell],
    memory: &[MemoryCell],
    negotiated: &str,
    args: &Args,
    notes: &[String],
) -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut s = String::new();
    let _ = writeln!(s, "# TLS handshakes, resumption and per-session memory\n");
    let _ = writeln!(
        s,
        "Machine: {cpus} CPUs, client (this runner) and gateway (child process) on the same \
         cores over 127.0.0.1. Certificate: the gateway's self-signed ECDSA P-256; \
         negotiated: {negotiated}. Each connection: TCP connect, TLS 1.3 handshake \
         (the client verifies the certificate), read the SMTPS `220` greeting, close. \
         {:.0} s per cell. CPU from /proc/PID/stat (10 ms ticks). Gateway log level: {}.\n",
        args.seconds, args.log_level
    );
    let _ = writeln!(
        s,
        "| handshake | clients | connections | handshakes/s | resumed | failed | gateway CPU ms/handshake | client CPU ms/handshake | gateway alone on {cpus} cores (projected) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in handshakes {
        let gateway_ms = c.ms_per_handshake(c.gateway_cpu);
        let projected = if gateway_ms > 0.0 {
            format!("{:.0}/s", cpus as f64 * 1e3 / gateway_ms)
        } else {
            "—".to_owned()
        };
        let _ = writeln!(
            s,
            "| {:?} | {} | {} | {:.0} | {} | {} | {gateway_ms:.3} | {:.3} | {projected} |",
            c.mode,
            c.clients,
            c.completed,
            c.per_sec(),
            c.resumed,
            c.failed,
            c.ms_per_handshake(c.client_cpu),
        );
    }
    let _ = writeln!(
        s,
        "\nTarget: at least 3,000 full TLS 1.3 handshakes/s with the ECDSA certificate. The \
         projection divides the cores by the gateway's CPU per handshake: the rate the \
         gateway could sustain with the machine to itself (clients elsewhere)."
    );

    let _ = writeln!(s, "\n## Memory per idle session\n");
    let _ = writeln!(
        s,
        "Each listener on a freshly started gateway child, after one session opened and \
         closed. Sessions opened {OPENING_IN_FLIGHT} at a time and held idle after the \
         greeting (TLS: handshake complete, full handshakes). The gateway's VmRSS and \
         RssAnon (KiB) before and with them open; after closing them, the VmRSS the process \
         keeps (allocator caches); then as many sessions opened again: the second fill reuses \
         freed memory, as in a gateway that has been running a while.\n"
    );
    let _ = writeln!(
        s,
        "| listener | sessions | VmRSS before | VmRSS open | KiB/session (VmRSS) | KiB/session (RssAnon) | VmRSS after close | VmRSS open again | KiB/session, second fill |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in memory {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {:.1} |",
            m.listener,
            m.sessions,
            m.rss_before,
            m.rss_open,
            m.kib_per_session(m.rss_before, m.rss_open),
            m.kib_per_session(m.anon_before, m.anon_open),
            m.rss_closed,
            m.rss_reopened,
            m.kib_per_session(m.rss_before, m.rss_reopened),
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for note in notes {
            let _ = writeln!(s, "- {note}");
        }
    }
    s
}

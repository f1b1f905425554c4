//! SMTP throughput benchmark: the gateway against a local Postfix delivering to a Maildir.
//!
//! `cargo run --release -p bench --bin smtp_bench [-- --skip-postfix --skip-rss ...]`
//!
//! For each message size (10 KiB, 1 MiB) and session count (1, 20, 100) it starts a fresh
//! gateway (a child process on a data directory under the cargo target directory, so on the
//! real disk where fsync costs what it costs) and measures:
//! - plaintext SMTP with Postfix's `smtp-source` (`-d`: many messages per connection),
//! - plaintext SMTP with our `smtp_load` generator (PIPELINING of MAIL/RCPT/DATA),
//! - implicit TLS (SMTPS) with our generator;
//!
//! then the same smtp-source and smtp_load runs against a throwaway Postfix (accepted: 250s
//! received; delivered: until every message is in the Maildir). Finally the peak RSS of a
//! gateway receiving one 50 MiB message. Prints a Markdown report and writes it to
//! `<target dir>/bench-reports/smtp.md`, its figures to `smtp.json` beside it
//! ([`bench::results`]).
//!
//! `--quick`: a smoke run (10 KiB, 1 and 4 sessions, a few dozen messages, one 4 MiB message
//! for the memory run, Postfix included) that fails if anything fails, Postfix too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::backends;
use bench::gateway_proc::{self, proc_status_kib, GatewayProcess, HOST_NAME};
use bench::load::{self, LoadConfig, LoadReport, TlsTarget};
use bench::postfix::{self, Postfix};
use bench::results::{Better, Results};
use bench::util::{
    cpu_seconds, filesystem_of, human, median_by, prepare_run, write_report, KIB, MIB,
};
use clap::Parser;

const FROM: &str = "loadgen@client.bench.test";
/// Safety cap on one load-generator run; counts stay valid if it triggers.
const MAX_RUN: Duration = Duration::from_secs(20);
const SMTP_SOURCE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Parser)]
#[command(about = "SMTP throughput of the gateway, with Postfix as the baseline")]
struct Args {
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [10 * KIB, MIB])]
    sizes: Vec<usize>,
    /// Concurrent session counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 20, 100])]
    sessions: Vec<usize>,
    /// Scale every cell's message count (e.g. 0.25 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Rounds of every cell, each round the gateway's cells then Postfix's; each cell
    /// reports its median round (by msg/s), so a slow minute of a shared machine moves
    /// neither side alone.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Do not run (or install) Postfix.
    #[arg(long)]
    skip_postfix: bool,
    /// Do not run smtp-source (our generator only).
    #[arg(long)]
    skip_smtp_source: bool,
    /// Skip the peak-memory runs.
    #[arg(long)]
    skip_rss: bool,
    /// Message sizes for the peak-memory runs, MiB (one fresh gateway each).
    #[arg(long, value_delimiter = ',', default_values_t = [50, 90])]
    rss_mib: Vec<usize>,
    /// Report file (default: `<target dir>/bench-reports/smtp.md`); the JSON results go
    /// beside it (`.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Smoke run: small sizes and counts (overrides the options above); a failing Postfix
    /// baseline fails the run.
    #[arg(long)]
    quick: bool,
    /// `postgres`: instead of the Postfix comparison, the same intake on redb, on one
    /// gateway node on PostgreSQL and on two nodes sharing it (pipelined plain SMTP);
    /// written to `smtp-store.md` / `.json`.
    #[arg(long, value_enum, default_value_t = StoreArg::Redb)]
    store: StoreArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreArg {
    Redb,
    Postgres,
}

/// Messages per cell: enough for a stable figure, a few seconds at most.
fn messages_for(size: usize, sessions: usize, scale: f64) -> u64 {
    let base: u64 = match (size >= 512 * KIB, sessions) {
        (false, 1) => 1000,
        (false, _) => 5000,
        (true, 1) => 150,
        (true, _) => 400,
    };
    ((base as f64 * scale).round() as u64).max(sessions as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Source,
    Load,
    LoadTls,
}

impl Client {
    fn label(self) -> &'static str {
        match self {
            Client::Source => "smtp-source, plain",
            Client::Load => "smtp_load, plain",
            Client::LoadTls => "smtp_load, TLS",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Default)]
struct Figure {
    messages: u64,
    elapsed: Duration,
    size: usize,
    /// p50 and p99 latency (ms), our generator only.
    latency: Option<(f64, f64)>,
    /// CPU time the server used (gateway child only), seconds.
    server_cpu: Option<f64>,
    /// Postfix only: time until every accepted message was in the Maildir.
    delivered: Option<Duration>,
}

impl Figure {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
    fn mbit(&self) -> f64 {
        self.rate() * self.size as f64 * 8.0 / 1e6
    }
    fn delivered_rate(&self) -> Option<f64> {
        self.delivered
            .map(|d| self.messages as f64 / d.as_secs_f64())
    }
}

#[derive(Debug, Clone)]
struct Row {
    size: usize,
    sessions: usize,
    client: Client,
    gateway: Option<Figure>,
    postfix: Option<Figure>,
}

fn main() -> anyhow::Result<()> {
    if let Some(child) = gateway_proc::child_if_asked() {
        return child;
    }
    let mut args = Args::parse();
    if args.quick {
        args.sizes = vec![10 * KIB];
        args.sessions = vec![1, 4];
        args.scale = 0.01;
        args.rss_mib = vec![4];
        args.runs = 1;
    }
    if args.store == StoreArg::Postgres {
        return store_comparison(&args);
    }
    let (scratch, out) = prepare_run("smtp", args.out.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rounds = Vec::new();
    let mut notes = Vec::new();
    let runs = args.runs.max(1);
    for round in 1..=runs {
        eprintln!("round {round} of {runs}");
        let mut rows = Vec::new();
        for &size in &args.sizes {
            for &sessions in &args.sessions {
                let messages = messages_for(size, sessions, args.scale);
                rows.extend(gateway_cell(
                    &runtime, &args, &scratch, size, sessions, messages,
                )?);
            }
        }
        if !args.skip_postfix {
            if let Err(e) = postfix_cells(&runtime, &args, &scratch, &mut rows) {
                eprintln!("Postfix baseline failed in round {round}: {e:#}");
                notes.push(format!("Postfix baseline failed in round {round}: {e:#}"));
            }
        }
        rounds.push(rows);
    }
    let rows = median_rows(rounds);

    let mut rss = Vec::new();
    if !args.skip_rss {
        let cache_mib = rss_cache_mib(args.quick);
        for cache_full in [false, true] {
            for &mib in &args.rss_mib {
                rss.push(peak_rss(&runtime, &scratch, mib, cache_mib, cache_full)?);
            }
        }
    }

    let report = render(&rows, runs, &rss, &notes, &scratch);
    println!("{report}");
    write_report(&out, &report)?;
    let json = results(&rows, &rss, args.quick).write_beside(&out)?;
    eprintln!("report written to {} and {}", out.display(), json.display());
    let _ = std::fs::remove_dir_all(&scratch);
    if args.quick && !notes.is_empty() {
        bail!("{}", notes.join("; "));
    }
    Ok(())
}

/// `--store postgres`: every size and session count on each backend setup, one run.
fn store_comparison(args: &Args) -> anyhow::Result<()> {
    let (scratch, out) = prepare_run("smtp-store", args.out.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut database = backends::Database::start()?;
    let mut cells = Vec::new();
    for &size in &args.sizes {
        for &sessions in &args.sessions {
            let messages = messages_for(size, sessions, args.scale);
            eprintln!(
                "store backends: {} x {sessions} sessions, {messages} messages",
                human(size)
            );
            for setup in backends::Setup::ALL {
                cells.push(backends::cell(
                    &runtime,
                    Some(&mut database),
                    setup,
                    &scratch,
                    backends::Work {
                        size,
                        sessions,
                        messages,
                        max_run: MAX_RUN,
                    },
                )?);
            }
        }
    }
    let report = render_store(&cells, &scratch);
    println!("{report}");
    write_report(&out, &report)?;
    let mut results = Results::new("smtp-store", args.quick);
    for cell in &cells {
        let (size, sessions) = (human(cell.load.size), format!("{} sessions", cell.sessions));
        let parts = [size.as_str(), sessions.as_str(), cell.setup.label()];
        results.add(&parts, "msg/s", Better::Higher, cell.rate(), None);
        results.add(&parts, "p99 ms", Better::Lower, cell.latency_ms(99.0), None);
        let gateway = cell.per_1000(cell.gateway_cpu);
        results.add(
            &parts,
            "gateway CPU s/1000 msg",
            Better::Lower,
            gateway,
            None,
        );
        if let Some(db) = cell.database_cpu {
            let db = cell.per_1000(db);
            results.add(&parts, "database CPU s/1000 msg", Better::Lower, db, None);
        }
    }
    let json = results.write_beside(&out)?;
    eprintln!("report written to {} and {}", out.display(), json.display());
    drop(database);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn render_store(cells: &[backends::Cell], scratch: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# SMTP intake by store backend
"
    );
    let _ = writeln!(
        s,
        "Machine: {} CPUs; load generator, gateway node(s) and PostgreSQL on the same \
         machine over 127.0.0.1, data on `{}`. Pipelined plain SMTP; with two nodes the \
         sessions are split between them and both deliver to one mailbox. Every 250 is a \
         durable commit: redb's fsync, or PostgreSQL's commit with `synchronous_commit = on` \
         and `fsync = on` (the WAL flushed).\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        filesystem_of(scratch)
    );
    let _ = writeln!(
        s,
        "| size | sessions | store | messages | msg/s | vs redb | p50 / p99 ms | gateway CPU s/1000 msg | database CPU s/1000 msg |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for cell in cells {
        let redb = cells
            .iter()
            .find(|c| {
                c.setup == backends::Setup::Redb
                    && c.load.size == cell.load.size
                    && c.sessions == cell.sessions
            })
            .map(backends::Cell::rate);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {} | {:.1} / {:.1} | {:.2} | {} |",
            human(cell.load.size),
            cell.sessions,
            cell.setup.label(),
            cell.load.accepted,
            cell.rate(),
            redb.filter(|r| *r > 0.0)
                .map_or("—".to_owned(), |r| format!("{:.2}x", cell.rate() / r)),
            cell.latency_ms(50.0),
            cell.latency_ms(99.0),
            cell.per_1000(cell.gateway_cpu),
            cell.database_cpu
                .map_or("—".to_owned(), |c| format!("{:.2}", cell.per_1000(c))),
        );
    }
    s
}

fn our_load(
    runtime: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    tls: Option<TlsTarget>,
    size: usize,
    sessions: usize,
    messages: u64,
    to: &str,
) -> anyhow::Result<LoadReport> {
    let report = runtime.block_on(load::run(LoadConfig {
        addr,
        tls,
        sessions,
        messages: Some(messages),
        duration: Some(MAX_RUN),
        size,
        from: FROM.to_owned(),
        to: to.to_owned(),
        pipelining: true,
        auth: None,
        rate_bps: None,
    }))?;
    eprintln!("    {}", report.summary());
    if report.accepted == 0 {
        bail!("no message accepted: {:?}", report.first_error);
    }
    Ok(report)
}

fn from_load(report: &LoadReport) -> Figure {
    Figure {
        messages: report.accepted,
        elapsed: report.elapsed,
        size: report.size,
        latency: Some((
            report.latency(50.0).as_secs_f64() * 1e3,
            report.latency(99.0).as_secs_f64() * 1e3,
        )),
        ..Figure::default()
    }
}

fn gateway_cell(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    scratch: &Path,
    size: usize,
    sessions: usize,
    messages: u64,
) -> anyhow::Result<Vec<Row>> {
    eprintln!(
        "gateway: {} x {sessions} sessions, {messages} messages",
        human(size)
    );
    let data_dir = scratch.join(format!("gateway-{size}-{sessions}"));
    let gw = GatewayProcess::start(&data_dir)?;
    let mut rows = Vec::new();
    let mut sent = 0;
    let clients = [Client::Source, Client::Load, Client::LoadTls];
    for client in clients {
        if client == Client::Source && args.skip_smtp_source {
            continue;
        }
        let cpu0 = cpu_seconds(gw.pid());
        let mut figure = match client {
            Client::Source => {
                let r = postfix::smtp_source(
                    gw.smtp,
                    sessions,
                    messages,
                    size,
                    FROM,
                    &gw.mailbox,
                    SMTP_SOURCE_TIMEOUT,
                )?;
                eprintln!(
                    "    smtp-source: {} messages in {:.2} s",
                    r.messages,
                    r.elapsed.as_secs_f64()
                );
                Figure {
                    messages: r.messages,
                    elapsed: r.elapsed,
                    size,
                    ..Figure::default()
                }
            }
            Client::Load | Client::LoadTls => {
                let tls = (client == Client::LoadTls).then(|| TlsTarget {
                    ca_file: gw.ca_file.clone(),
                    server_name: HOST_NAME.to_owned(),
                });
                let addr = if tls.is_some() { gw.smtps } else { gw.smtp };
                from_load(&our_load(
                    runtime,
                    addr,
                    tls,
                    size,
                    sessions,
                    messages,
                    &gw.mailbox,
                )?)
            }
        };
        figure.server_cpu = Some(cpu_seconds(gw.pid()) - cpu0);
        sent += figure.messages;
        rows.push(Row {
            size,
            sessions,
            client,
            gateway: Some(figure),
            postfix: None,
        });
    }
    let stored = gw.stop()?;
    if stored != sent {
        bail!("the gateway stored {stored} messages but the clients counted {sent} accepted");
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(rows)
}

/// Each cell's median round: the gateway's and Postfix's figures each from their own
/// median run by msg/s (latency and CPU come with that run). Every round holds the same
/// cells in the same order.
fn median_rows(rounds: Vec<Vec<Row>>) -> Vec<Row> {
    let mut rounds = rounds.into_iter();
    let Some(mut rows) = rounds.next() else {
        return Vec::new();
    };
    let rest: Vec<Vec<Row>> = rounds.collect();
    for (index, row) in rows.iter_mut().enumerate() {
        let same = || rest.iter().filter_map(|round| round.get(index));
        row.gateway = median_figure(row.gateway.take(), same().map(|r| r.gateway.clone()));
        row.postfix = median_figure(row.postfix.take(), same().map(|r| r.postfix.clone()));
    }
    rows
}

/// The figure with the median rate.
fn median_figure(
    first: Option<Figure>,
    others: impl Iterator<Item = Option<Figure>>,
) -> Option<Figure> {
    median_by(
        first.into_iter().chain(others.flatten()).collect(),
        Figure::rate,
    )
}

fn postfix_cells(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    scratch: &Path,
    rows: &mut [Row],
) -> anyhow::Result<()> {
    postfix::ensure_installed()?;
    let pf = Postfix::start(&scratch.join("postfix"))?;
    eprintln!(
        "postfix: listening on {} (log {})",
        pf.addr,
        pf.log_path().display()
    );
    for row in rows.iter_mut() {
        let (size, sessions) = (row.size, row.sessions);
        let messages = messages_for(size, sessions, args.scale);
        pf.clear_maildir()?;
        let (start, mut figure) = match row.client {
            Client::Source => {
                eprintln!(
                    "postfix: {} x {sessions} sessions, smtp-source",
                    human(size)
                );
                let r = postfix::smtp_source(
                    pf.addr,
                    sessions,
                    messages,
                    size,
                    FROM,
                    postfix::RECIPIENT,
                    SMTP_SOURCE_TIMEOUT,
                )?;
                eprintln!(
                    "    smtp-source: {} messages in {:.2} s",
                    r.messages,
                    r.elapsed.as_secs_f64()
                );
                (
                    r.start,
                    Figure {
                        messages: r.messages,
                        elapsed: r.elapsed,
                        size,
                        ..Figure::default()
                    },
                )
            }
            Client::Load => {
                eprintln!("postfix: {} x {sessions} sessions, smtp_load", human(size));
                let start = Instant::now();
                let r = our_load(
                    runtime,
                    pf.addr,
                    None,
                    size,
                    sessions,
                    messages,
                    postfix::RECIPIENT,
                )?;
                (start, from_load(&r))
            }
            Client::LoadTls => continue,
        };
        let delivered_at = pf
            .wait_delivered(figure.messages, Duration::from_secs(120))
            .with_context(|| {
                format!(
                    "Postfix delivered only {} of {} messages within 120 s",
                    pf.delivered(),
                    figure.messages
                )
            })?;
        figure.delivered = Some(delivered_at - start);
        eprintln!(
            "    delivered to the Maildir after {:.2} s",
            (delivered_at - start).as_secs_f64()
        );
        row.postfix = Some(figure);
    }
    pf.clear_maildir()?;
    pf.stop()
}

struct Rss {
    size_mib: usize,
    /// The store cache was already full (of earlier messages) when the message came.
    cache_full: bool,
    cache_mib: u64,
    before_rss_kib: u64,
    before_hwm_kib: u64,
    after_hwm_kib: u64,
    /// Whether VmHWM was reset to the current RSS before the message.
    hwm_reset: bool,
    elapsed: Duration,
}

/// The store cache of the memory runs: the default on a machine with 1 GiB or more, named
/// so that the warm run knows how much to write to fill it (a smaller one in the smoke run).
fn rss_cache_mib(quick: bool) -> u64 {
    if quick {
        16
    } else {
        64
    }
}

/// One large message into a fresh gateway, its peak memory (VmHWM) before and after. With
/// `cache_full`, one and a half times the store cache of 1 MiB messages go first: redb keeps
/// the pages it writes in that cache until it is full, so on a fresh process a large
/// message's growth is mostly the cache filling to its configured size; once it is full, the
/// growth left is what the message itself costs.
fn peak_rss(
    runtime: &tokio::runtime::Runtime,
    scratch: &Path,
    size_mib: usize,
    cache_mib: u64,
    cache_full: bool,
) -> anyhow::Result<Rss> {
    let state = if cache_full { "full" } else { "empty" };
    eprintln!("peak memory: one {size_mib} MiB message, store cache of {cache_mib} MiB {state}");
    let data_dir = scratch.join("gateway-rss");
    let mut config = gateway_proc::bench_config(&data_dir);
    config.limits.store_cache_mib = Some(cache_mib);
    let gw = GatewayProcess::start_with(&config)?;
    // Warm up (threads, buffers) with small messages so the baseline is a working gateway.
    our_load(runtime, gw.smtp, None, 10 * KIB, 4, 20, &gw.mailbox)?;
    let mut expected = 21;
    if cache_full {
        let fill = cache_mib * 3 / 2;
        our_load(runtime, gw.smtp, None, MIB, 4, fill, &gw.mailbox)?;
        expected += fill;
    }
    // Reset the peak to the current RSS (Linux: "5" > clear_refs), so start-up work (the
    // mailbox key's Argon2id, 19 MiB) does not mask the message's own peak.
    let reset = std::fs::write(format!("/proc/{}/clear_refs", gw.pid()), "5").is_ok();
    let before_rss_kib = proc_status_kib(gw.pid(), "VmRSS")?;
    let before_hwm_kib = proc_status_kib(gw.pid(), "VmHWM")?;
    let r = our_load(runtime, gw.smtp, None, size_mib * MIB, 1, 1, &gw.mailbox)?;
    let after_hwm_kib = proc_status_kib(gw.pid(), "VmHWM")?;
    let stored = gw.stop()?;
    if stored != expected {
        bail!("expected {expected} stored messages, found {stored}");
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(Rss {
        size_mib,
        cache_full,
        cache_mib,
        before_rss_kib,
        before_hwm_kib,
        after_hwm_kib,
        hwm_reset: reset,
        elapsed: r.elapsed,
    })
}

/// The figures of the report's tables as JSON cells.
fn results(rows: &[Row], rss: &[Rss], quick: bool) -> Results {
    let mut r = Results::new("smtp", quick);
    for row in rows {
        let (size, sessions) = (human(row.size), format!("{} sessions", row.sessions));
        let parts = [size.as_str(), sessions.as_str(), row.client.label()];
        let p = row.postfix.as_ref();
        if let Some(g) = &row.gateway {
            let accepted = p.map(|f| ("Postfix accepted", f.rate()));
            r.add(&parts, "msg/s", Better::Higher, g.rate(), accepted);
            if let Some((p50, p99)) = g.latency {
                r.add(&parts, "p50 ms", Better::Lower, p50, None);
                r.add(&parts, "p99 ms", Better::Lower, p99, None);
            }
            if let (Some(cpu), true) = (g.server_cpu, g.messages > 0) {
                let per_1000 = cpu / g.messages as f64 * 1000.0;
                r.add(&parts, "CPU s/1000 msg", Better::Lower, per_1000, None);
            }
        }
        if let Some(delivered) = p.and_then(Figure::delivered_rate) {
            let metric = "Postfix delivered msg/s";
            r.add(&parts, metric, Better::Higher, delivered, None);
        }
    }
    for m in rss {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let message = if m.cache_full {
            format!("{} MiB message, store cache full", m.size_mib)
        } else {
            format!("{} MiB message", m.size_mib)
        };
        let parts = ["peak memory", message.as_str()];
        let growth = mib(m.after_hwm_kib.saturating_sub(m.before_hwm_kib));
        r.add(&parts, "VmHWM growth MiB", Better::Lower, growth, None);
        let after = mib(m.after_hwm_kib);
        r.add(&parts, "VmHWM after MiB", Better::Lower, after, None);
    }
    r
}

fn render(rows: &[Row], runs: usize, rss: &[Rss], notes: &[String], scratch: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# SMTP throughput: gateway vs Postfix\n");
    let _ = writeln!(
        s,
        "Machine: {} CPUs, load generator and server on the same machine over 127.0.0.1. \
         Data directories on `{}`. Every gateway 250 means the encrypted message is \
         durably committed (fsync); Postfix answers 250 after fsyncing its queue file and \
         delivers to the Maildir afterwards (\"delivered\" = until the last message is in \
         the Maildir). Each figure is the median of {runs} round(s) (by msg/s; each round \
         runs the gateway's cells, then Postfix's), with that run's latency and CPU.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        filesystem_of(scratch)
    );
    let _ = writeln!(
        s,
        "| size | sessions | client | messages | gateway msg/s | gateway Mbit/s | gateway p50 / p99 ms | gateway CPU s/1000 msg | Postfix accepted msg/s | Postfix accepted Mbit/s | Postfix delivered msg/s | gateway / Postfix (accepted) | gateway / Postfix (delivered) |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let dash = || "—".to_owned();
    for row in rows {
        let g = row.gateway.as_ref();
        let p = row.postfix.as_ref();
        let ratio = |gw: Option<f64>, pf: Option<f64>| match (gw, pf) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => dash(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            human(row.size),
            row.sessions,
            row.client.label(),
            g.map(|f| f.messages.to_string()).unwrap_or_else(dash),
            g.map(|f| format!("{:.0}", f.rate())).unwrap_or_else(dash),
            g.map(|f| format!("{:.0}", f.mbit())).unwrap_or_else(dash),
            g.and_then(|f| f.latency)
                .map(|(p50, p99)| format!("{p50:.1} / {p99:.1}"))
                .unwrap_or_else(dash),
            g.and_then(|f| f.server_cpu.map(|c| c / f.messages as f64 * 1000.0))
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(dash),
            p.map(|f| format!("{:.0}", f.rate())).unwrap_or_else(dash),
            p.map(|f| format!("{:.0}", f.mbit())).unwrap_or_else(dash),
            p.and_then(Figure::delivered_rate)
                .map(|r| format!("{r:.0}"))
                .unwrap_or_else(dash),
            ratio(g.map(Figure::rate), p.map(Figure::rate)),
            ratio(g.map(Figure::rate), p.and_then(Figure::delivered_rate)),
        );
    }
    if !rss.is_empty() {
        let _ = writeln!(
            s,
            "\n## Peak memory of the gateway while one large message streams in\n\n\
             | message | store cache ({} MiB) | RSS before | VmHWM before | VmHWM after the message | growth | transfer time |\n\
             |---:|---|---:|---:|---:|---:|---:|",
            rss[0].cache_mib
        );
        for r in rss {
            let _ = writeln!(
                s,
                "| {} MiB | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} s |",
                r.size_mib,
                if r.cache_full {
                    "full of earlier mail"
                } else {
                    "empty (fresh process)"
                },
                r.before_rss_kib as f64 / 1024.0,
                r.before_hwm_kib as f64 / 1024.0,
                r.after_hwm_kib as f64 / 1024.0,
                r.after_hwm_kib.saturating_sub(r.before_hwm_kib) as f64 / 1024.0,
                r.elapsed.as_secs_f64()
            );
        }
        let r = &rss[0];
        let _ = writeln!(
            s,
            "\nThe gateway runs as a child process; VmHWM is read from /proc/PID/status{}. \
             Messages are sealed in chunks of just under 64 KiB as they arrive and spill to an unlinked \
             spool file beyond `limits.spool_memory_kib`. Compare the sizes: growth that \
             levels off means memory is bounded whatever the message size. The store (redb) \
             keeps the pages it writes in its cache (`limits.store_cache_mib`, set here) until \
             that is full, so on a fresh process a large message mostly fills the cache; with \
             the cache already full of earlier mail, as it is once a gateway has run a while, \
             the growth is what the message itself costs.",
            if r.hwm_reset {
                ", reset to the current RSS just before the message (clear_refs)"
            } else {
                " (could not be reset: it includes the start-up peak)"
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(messages: u64, cpu: f64) -> Figure {
        Figure {
            messages,
            elapsed: Duration::from_secs(1),
            size: 10 * KIB,
            server_cpu: Some(cpu),
            ..Figure::default()
        }
    }

    fn row(gateway: u64, postfix: Option<u64>) -> Row {
        Row {
            size: 10 * KIB,
            sessions: 20,
            client: Client::Source,
            gateway: Some(figure(gateway, gateway as f64)),
            postfix: postfix.map(|m| figure(m, 0.0)),
        }
    }

    /// Each side of each cell is its own median run, with that run's other figures.
    #[test]
    fn each_cell_reports_each_sides_median_round() {
        let rounds = vec![
            vec![row(900, Some(80)), row(10, None)],
            vec![row(700, Some(95)), row(30, None)],
            vec![row(800, Some(70)), row(20, None)],
        ];
        let rows = median_rows(rounds);
        let gateway = rows[0].gateway.as_ref().unwrap();
        assert_eq!(gateway.messages, 800);
        assert_eq!(gateway.server_cpu, Some(800.0), "the CPU of the median run");
        assert_eq!(rows[0].postfix.as_ref().unwrap().messages, 80);
        assert_eq!(rows[1].gateway.as_ref().unwrap().messages, 20);
        assert!(rows[1].postfix.is_none());
    }

    #[test]
    fn one_round_is_its_own_median_and_an_even_count_takes_the_lower_middle() {
        let rows = median_rows(vec![vec![row(5, Some(3))]]);
        assert_eq!(rows[0].gateway.as_ref().unwrap().messages, 5);
        let rows = median_rows(vec![vec![row(5, None)], vec![row(9, None)]]);
        assert_eq!(rows[0].gateway.as_ref().unwrap().messages, 5);
        assert!(median_rows(Vec::new()).is_empty());
    }
}

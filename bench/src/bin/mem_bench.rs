//! Session memory: what idle connections cost the gateway, and whether memory comes back
//! after a flood.
//!
//! `cargo xtask bench mem`, or `cargo run --release -p bench --bin mem_bench [-- --sessions
//! 10000 --flood 1000 --settle 12]`
//!
//! One gateway child (fresh data directory), measured from outside through
//! `/proc/<pid>/status` (VmRSS), in this order:
//! 1. fresh: after a short warm-up (a few messages, so threads and the store are up);
//! 2. `--sessions` idle plaintext SMTP sessions (greeting read), then closed;
//! 3. the same number of idle implicit-TLS sessions (handshake done, greeting read), closed;
//! 4. a flood: `--flood` concurrent sessions each sending 10 KiB messages, then closed;
//! 5. idle plaintext sessions again, on the heap the flood left behind, then closed.
//!
//! After each close the runner waits until the gateway has let go of the sockets (its open
//! descriptors are back to where they were) and `--settle` seconds more before reading RSS.
//! Prints a Markdown report and writes it to `<target dir>/bench-reports/mem.md`, with the
//! figures as JSON beside it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use bench::gateway_proc::{self, open_descriptors, proc_status_kib, GatewayProcess, HOST_NAME};
use bench::load::{self, LoadConfig, TlsTarget};
use bench::results::{Better, Results};
use bench::util::{ensure_open_files, prepare_run, write_report, KIB};
use clap::Parser;

const FROM: &str = "loadgen@client.bench.test";

#[derive(Debug, Parser)]
#[command(about = "Memory of idle sessions and after a flood")]
struct Args {
    /// Idle sessions opened at once in each idle phase.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Concurrent sending sessions of the flood.
    #[arg(long, default_value_t = 1_000)]
    flood: usize,
    /// Messages (10 KiB) each flood session sends.
    #[arg(long, default_value_t = 5)]
    flood_messages: u64,
    /// Seconds to wait after a phase's connections closed before reading RSS again: the
    /// allocator (jemalloc) purges freed pages within about five seconds of freeing them.
    #[arg(long, default_value_t = 12.0)]
    settle: f64,
    /// The store's cache (`[limits] store_cache_mib`; the default when not given): after a
    /// flood it holds written pages up to this size, which is a cache, not a leak.
    #[arg(long)]
    store_cache_mib: Option<u64>,
    /// A short smoke run (200 sessions, a flood of 20, no settling).
    #[arg(long)]
    quick: bool,
    /// Report file (default: `<target dir>/bench-reports/mem.md`).
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Phase {
    /// Stable part of the result cells' ids.
    id: &'static str,
    name: String,
    sessions: usize,
    /// RSS before the sessions opened, with them open, and after they closed (KiB).
    before: u64,
    open: u64,
    after: u64,
}

impl Phase {
    fn per_session_kib(&self) -> f64 {
        (self.open as f64 - self.before as f64) / self.sessions.max(1) as f64
    }
}

fn main() -> anyhow::Result<()> {
    if let Some(child) = gateway_proc::child_if_asked() {
        return child;
    }
    let mut args = Args::parse();
    if args.quick {
        args.sessions = 200;
        args.flood = 20;
        args.flood_messages = 2;
        args.settle = 0.0;
    }
    // Each process (this one, the gateway child) holds one descriptor per session.
    let want = args.sessions.max(args.flood) as u64 + 1024;
    ensure_open_files(want)?;
    let (scratch, out) = prepare_run("mem", args.out.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let data_dir = scratch.join("gateway-mem");
    let mut config = gateway_proc::bench_config(&data_dir);
    let most = (args.sessions.max(args.flood) + 100) as u32;
    config.limits.max_connections = most;
    config.limits.max_connections_per_ip = most;
    config.limits.listen_backlog = 1024;
    if let Some(mib) = args.store_cache_mib {
        config.limits.store_cache_mib = Some(mib);
    }
    let gw = GatewayProcess::start_with(&config)?;
    let tls = load::tls_client(&TlsTarget {
        ca_file: gw.ca_file.clone(),
        server_name: HOST_NAME.to_owned(),
    })?;
    let pid = gw.pid();
    let settle = Duration::from_secs_f64(args.settle);

    accepted_some(
        "the warm-up",
        &runtime.block_on(load::run(flood(&gw, 4, 5)))?,
    )?;
    let fds = open_descriptors(pid)?;
    let fresh = rss(pid)?;
    let mut phases = Vec::new();

    phases.push(idle(
        &runtime,
        &gw,
        fds,
        ("idle plain", "idle SMTP, plain (25)"),
        args.sessions,
        None,
        settle,
    )?);
    phases.push(idle(
        &runtime,
        &gw,
        fds,
        ("idle TLS", "idle SMTPS, TLS (465)"),
        args.sessions,
        Some(&tls),
        settle,
    )?);

    let before = rss(pid)?;
    let started = Instant::now();
    let peak = runtime.block_on(async {
        let load = tokio::spawn(load::run(flood(&gw, args.flood, args.flood_messages)));
        let mut peak = 0;
        while !load.is_finished() {
            peak = peak.max(rss(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = load.await??;
        eprintln!("flood: {}", report.summary());
        accepted_some("the flood", &report)?;
        anyhow::Ok(peak)
    })?;
    wait_for_fds(pid, fds, settle)?;
    let flood_phase = Phase {
        id: "flood",
        name: format!(
            "flood: {} sessions x {} messages of 10 KiB (peak while open)",
            args.flood, args.flood_messages
        ),
        sessions: args.flood,
        before,
        open: peak,
        after: rss(pid)?,
    };
    let flood_time = started.elapsed();
    phases.push(flood_phase);

    phases.push(idle(
        &runtime,
        &gw,
        fds,
        (
            "idle plain after flood",
            "idle SMTP, plain (25), after the flood",
        ),
        args.sessions,
        None,
        settle,
    )?);

    let stored = gw.stop()?;
    let report = render(&args, fresh, &phases, flood_time, stored);
    println!("{report}");
    write_report(&out, &report)?;
    let json = results(&args, fresh, &phases).write_beside(&out)?;
    eprintln!("report written to {} and {}", out.display(), json.display());
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Opens `count` sessions that read the greeting and then wait, measures, closes them.
fn idle(
    runtime: &tokio::runtime::Runtime,
    gw: &GatewayProcess,
    fds: usize,
    (id, name): (&'static str, &str),
    count: usize,
    tls: Option<&load::TlsClient>,
    settle: Duration,
) -> anyhow::Result<Phase> {
    eprintln!("{name}: {count} sessions");
    let pid = gw.pid();
    let addr = if tls.is_some() { gw.smtps } else { gw.smtp };
    let before = rss(pid)?;
    let conns = runtime.block_on(load::open_idle(addr, tls, count, 64))?;
    let open = rss(pid)?;
    drop(conns);
    wait_for_fds(pid, fds, settle)?;
    Ok(Phase {
        id,
        name: name.to_owned(),
        sessions: count,
        before,
        open,
        after: rss(pid)?,
    })
}

/// `sessions` sessions sending `each` 10 KiB messages (the warm-up and the flood).
fn flood(gw: &GatewayProcess, sessions: usize, each: u64) -> LoadConfig {
    LoadConfig {
        addr: gw.smtp,
        tls: None,
        sessions,
        messages: Some(sessions as u64 * each),
        duration: Some(Duration::from_secs(120)),
        size: 10 * KIB,
        from: FROM.to_owned(),
        to: gw.mailbox.clone(),
        pipelining: true,
        auth: None,
        rate_bps: None,
    }
}

fn accepted_some(what: &str, report: &load::LoadReport) -> anyhow::Result<()> {
    if report.accepted == 0 {
        bail!("{what} got no message accepted: {:?}", report.first_error);
    }
    Ok(())
}

fn rss(pid: u32) -> anyhow::Result<u64> {
    proc_status_kib(pid, "VmRSS")
}

/// Waits until the gateway holds no more descriptors than `fds` (its sessions are gone),
/// then `settle` longer.
fn wait_for_fds(pid: u32, fds: usize, settle: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_descriptors(pid)? > fds {
        if Instant::now() > deadline {
            bail!(
                "the gateway still holds {} descriptors (expected {fds})",
                open_descriptors(pid)?
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(settle);
    Ok(())
}

fn results(args: &Args, fresh: u64, phases: &[Phase]) -> Results {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut results = Results::new("mem", args.quick);
    results.add(&["fresh"], "RSS MiB", Better::Lower, mib(fresh), None);
    for p in phases {
        let parts = [p.id, &format!("{} sessions", p.sessions)];
        results.add(
            &parts,
            "KiB per session",
            Better::Lower,
            p.per_session_kib(),
            None,
        );
        results.add(&parts, "RSS open MiB", Better::Lower, mib(p.open), None);
        results.add(
            &parts,
            "RSS after close MiB",
            Better::Lower,
            mib(p.after),
            None,
        );
    }
    results
}

fn render(args: &Args, fresh: u64, phases: &[Phase], flood_time: Duration, stored: u64) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut s = String::new();
    let _ = writeln!(s, "# Session memory\n");
    let _ = writeln!(
        s,
        "One gateway process; RSS from /proc. Fresh after warm-up: {:.1} MiB. \
         {} messages stored in all (flood took {:.1} s).\n",
        mib(fresh),
        stored,
        flood_time.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| phase | sessions | RSS before (MiB) | open (MiB) | KiB per session | after close (MiB) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for p in phases {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p.name,
            p.sessions,
            mib(p.before),
            mib(p.open),
            p.per_session_kib(),
            mib(p.after)
        );
    }
    let _ = writeln!(
        s,
        "\n{} idle sessions per phase, flood of {} sessions.",
        args.sessions, args.flood
    );
    s
}

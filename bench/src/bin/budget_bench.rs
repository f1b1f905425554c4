//! The product's budget as a benchmark: the gateway inside a 512 MiB memory limit, offered
//! paced load at exactly 100 Mbit/s of each kind of traffic.
//!
//! `cargo xtask bench budget`, or `cargo run --release -p bench --bin budget_bench [--
//! --seconds 10 --rate-mbit 100 --idle 2000 --sessions 10000]`
//!
//! One gateway child (SMTP, SMTPS, POP3S; the proxy to a local Postfix from
//! `upstream-test-util`) under a memory limit ([`bench::cgroup`]: a cgroup where the
//! machine has one, else `prlimit --as`; the report says which). Open-loop load
//! ([`bench::load::Pacer`]): messages are due at the offered rate and their latency counts
//! from when they were due. Cells, each `--seconds` long:
//! - journal ingest over SMTPS (implicit TLS) of 10 KiB and of 1 MiB messages;
//! - pick-up over POP3S (RETR + DELE) of 10 KiB and 1 MiB messages delivered beforehand,
//!   one session per mailbox;
//! - proxy: SMTPS + AUTH as `user%upstream%mailbox`, 1 MiB, relayed to Postfix over TLS
//!   with an encrypted copy stored;
//! - the mix: a third of the rate each of ingest (10 KiB), pick-up (1 MiB) and proxy
//!   (1 MiB) with `--idle` idle TLS sessions open;
//! - `--sessions` sessions in all: idle TLS sessions plus the mix's paced ones.
//!
//! For each: the gateway's CPU share of one core (its CPU time over the cell's wall time,
//! connection set-up included), RSS at the end and its peak (VmHWM, reset before the cell,
//! once the RSS has settled after the cell before it),
//! the memory group's peak, and per traffic kind p50/p99 reply latency and offered vs
//! achieved Mbit/s. Then the headroom of ingest: the highest multiple of the rate that
//! still holds p99 <= 100 ms and achieves 95 % of what it offers (doubling, then bisecting).
//! A gateway killed by the limit fails the run. Markdown report in
//! `<target dir>/bench-reports/budget.md`, JSON beside it.
//!
//! `--quick`: a smoke run (2 Mbit/s, 2 s per cell, a few sessions, headroom up to 2x) that
//! takes every code path, the memory limit included.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bench::cgroup::{Counters, Mechanism, MemoryLimit};
use bench::gateway_proc::{self, proc_status_kib, GatewayProcess, HOST_NAME};
use bench::load::{self, LoadConfig, LoadReport, TlsTarget};
use bench::pop3_load::{self, Account, DrainConfig, PickupConfig, Verify};
use bench::results::{Better, Results};
use bench::util::{
    cpu_seconds, ensure_open_files, filesystem_of, human, median_by, prepare_run, write_report,
    KIB, MIB,
};
use clap::Parser;
use upstream_test_util::Provider;

const FROM: &str = "journal@tenant.bench.test";
/// The address-space limit of a quick run where no memory group can be made.
const QUICK_RLIMIT_BYTES: u64 = 16 * 1024 * MIB as u64;
/// The latency bound of the headroom search.
const P99_BOUND: Duration = Duration::from_millis(100);
/// A run achieving less than this share of its offered rate falls short.
const ACHIEVED_SHARE: f64 = 0.95;
/// [`settle_rss`]: at most this long, settled after this long without a fall of more than
/// this much.
const SETTLE_MAX: Duration = Duration::from_secs(20);
const SETTLE_QUIET: Duration = Duration::from_secs(3);
const SETTLE_FALL_KIB: u64 = 1024;
/// Bisection steps after the doubling found a rate that fails.
const BISECTIONS: usize = 3;
/// Connections being opened at once (see [`load::open_idle`]).
const OPENING: usize = 64;

#[derive(Debug, Parser)]
#[command(about = "The gateway's budget: CPU, memory and latency at 100 Mbit/s under 512 MiB")]
struct Args {
    /// Offered rate of each cell, Mbit/s of message content.
    #[arg(long, default_value_t = 100.0)]
    rate_mbit: f64,
    /// Length of each cell's schedule, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The memory limit, MiB.
    #[arg(long, default_value_t = 512)]
    limit_mib: u64,
    /// Idle TLS sessions open during the mix.
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Runs of the mix (the cell the CPU and memory targets are read from); the median run
    /// by CPU is reported, the others' figures beside it.
    #[arg(long, default_value_t = 3)]
    mix_runs: usize,
    /// Sessions in all (idle TLS plus the mix's paced ones) in the last phase.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Length of each headroom probe, seconds.
    #[arg(long, default_value_t = 5.0)]
    headroom_seconds: f64,
    /// Highest multiple of the rate the headroom search tries.
    #[arg(long, default_value_t = 32.0)]
    headroom_max: f64,
    /// Mailboxes (one POP3S session each) the pick-up uses.
    #[arg(long, default_value_t = 4)]
    pickup_sessions: usize,
    /// The store's cache (`[limits] store_cache_mib`; the gateway's default when not given).
    #[arg(long)]
    store_cache_mib: Option<u64>,
    /// Limit memory with `prlimit --as` (RLIMIT_AS) even where a cgroup is available: the
    /// last resort, tried on purpose.
    #[arg(long)]
    rlimit: bool,
    /// Report file (default: `<target dir>/bench-reports/budget.md`); JSON beside it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Smoke run: a low rate, short cells, a few sessions (overrides the options above).
    #[arg(long)]
    quick: bool,
}

/// One traffic kind's part of a cell.
struct Part {
    kind: String,
    report: LoadReport,
}

impl Part {
    fn p(&self, percentile: f64) -> f64 {
        self.report.latency(percentile).as_secs_f64() * 1e3
    }

    fn holds(&self) -> bool {
        self.report.failed == 0
            && self.report.accepted > 0
            && self.report.latency(99.0) <= P99_BOUND
            && self.report.mbit_per_sec()
                >= ACHIEVED_SHARE * self.report.offered_mbit_per_sec().unwrap_or(0.0)
    }
}

/// A measured cell.
struct Cell {
    /// Stable id part of its JSON cells.
    id: String,
    parts: Vec<Part>,
    idle: usize,
    /// RSS when the cell began, after [`settle_rss`].
    settled_kib: u64,
    wall: Duration,
    cpu: f64,
    rss_kib: u64,
    hwm_kib: u64,
    hwm_reset: bool,
    group: Counters,
    group_reset: bool,
}

impl Cell {
    fn cpu_share(&self) -> f64 {
        self.cpu / self.wall.as_secs_f64()
    }
}

/// One probe of the headroom search.
struct Probe {
    multiple: f64,
    part: Part,
}

/// The next multiple to try: doubling from 1x while every probe holds (up to `max`), then
/// `BISECTIONS` steps between the highest that held (`good`, 0 when none) and the lowest
/// that did not (`bad`). None: done.
fn next_multiple(good: f64, bad: Option<f64>, max: f64, bisected: usize) -> Option<f64> {
    match bad {
        None => {
            let next = if good == 0.0 { 1.0 } else { good * 2.0 };
            (next <= max).then_some(next)
        }
        Some(bad) => (bisected < BISECTIONS).then_some((good + bad) / 2.0),
    }
}

/// Sessions for a paced run: enough to carry the rate if every reply took the p99 bound,
/// with half again as many in reserve.
fn sessions_for(rate_bps: f64, size: usize) -> usize {
    let per_sec = rate_bps / (size as f64 * 8.0);
    ((per_sec * P99_BOUND.as_secs_f64() * 1.5).ceil() as usize).clamp(4, 600)
}

/// Messages a paced run of `seconds` at `rate_bps` schedules.
fn scheduled(rate_bps: f64, size: usize, seconds: f64) -> u64 {
    (rate_bps * seconds / (size as f64 * 8.0)).ceil() as u64
}

struct Bench {
    args: Args,
    runtime: tokio::runtime::Runtime,
    gw: GatewayProcess,
    limit: MemoryLimit,
    /// The pick-up mailboxes: (id, address, password).
    pickup: Vec<(String, String, String)>,
    /// The proxy's upstream and the login to use through the gateway, if it started.
    proxy: Option<(Provider, String, String)>,
    tls: TlsTarget,
    /// How the gateway child ended, once it did.
    ended: Option<ExitStatus>,
}

fn main() -> anyhow::Result<()> {
    if let Some(child) = gateway_proc::child_if_asked() {
        return child;
    }
    let mut args = Args::parse();
    if args.quick {
        args.rate_mbit = 2.0;
        args.seconds = 2.0;
        args.idle = 20;
        args.sessions = 60;
        args.headroom_seconds = 1.0;
        args.headroom_max = 2.0;
        args.pickup_sessions = 2;
        args.mix_runs = 1;
    }
    if args.rate_mbit <= 0.0 || args.seconds <= 0.0 || args.pickup_sessions == 0 {
        bail!("--rate-mbit, --seconds and --pickup-sessions must be positive");
    }
    // The runner and the gateway each hold one descriptor per session.
    let want = args.sessions.max(args.idle) as u64 + 1024;
    ensure_open_files(want)?;
    let (scratch, out) = prepare_run("budget", args.out.clone())?;
    let group = format!("gateway-budget-{}", std::process::id());
    let mut limit = MemoryLimit::establish(args.limit_mib * MIB as u64, &group, args.rlimit)?;
    if args.quick && !args.rlimit && limit.mechanism == Mechanism::Rlimit {
        // An address-space limit of the budget refuses the gateway's reservations (thread
        // stacks, allocator arenas) long before its memory is near the budget: POP3 logins
        // fail in Argon2id. The smoke run is about code paths, so it takes a roomy one.
        let passed_over = std::mem::take(&mut limit.passed_over);
        drop(limit);
        limit = MemoryLimit::establish(QUICK_RLIMIT_BYTES, &group, true)?;
        limit.passed_over = passed_over;
        limit.passed_over.push(format!(
            "a {} MiB RLIMIT_AS for this quick run: only an address-space limit is available, \
             and one of the budget's size refuses the gateway's reservations",
            QUICK_RLIMIT_BYTES / MIB as u64
        ));
    }
    eprintln!("{}", limit.describe());
    let mut bench = Bench::start(args, &scratch, limit)?;
    let mut done = Done::default();
    if let Err(e) = bench.cells(&mut done) {
        done.notes.push(format!("**The run failed**: {e:#}"));
    }
    // The gateway stops before the memory group goes (only an empty group can be removed).
    let Bench {
        args,
        gw,
        limit,
        ended,
        ..
    } = bench;
    let stored = match ended {
        Some(status) => {
            done.notes
                .push(format!("**The gateway ended early**: {status}."));
            None
        }
        None => match gw.stop() {
            Ok(stored) => Some(stored),
            Err(e) => {
                done.notes
                    .push(format!("**The gateway did not stop cleanly**: {e:#}"));
                None
            }
        },
    };
    let report = render(&args, &limit, ended.is_some(), &done, stored, &scratch);
    println!("{report}");
    write_report(&out, &report)?;
    let json = results(&args, &done).write_beside(&out)?;
    eprintln!("report written to {} and {}", out.display(), json.display());
    drop(limit);
    let _ = std::fs::remove_dir_all(&scratch);
    if done.notes.iter().any(|n| n.starts_with("**")) {
        bail!("the budget run failed (see the report's notes)");
    }
    Ok(())
}

/// What the run measured and noted; failures are notes in bold.
#[derive(Default)]
struct Done {
    cells: Vec<Cell>,
    /// Per traffic kind, the headroom probes in the order they ran.
    headroom: Vec<(String, Vec<Probe>)>,
    notes: Vec<String>,
}

impl Bench {
    fn start(args: Args, scratch: &Path, limit: MemoryLimit) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let mut config = gateway_proc::bench_config(&scratch.join("gateway"));
        config.listen.pop3s.enabled = true;
        let most = (args.sessions.max(args.idle) + 1000) as u32;
        config.limits.max_connections = most;
        config.limits.max_connections_per_ip = most;
        config.limits.listen_backlog = 1024;
        // Idle sessions read the greeting and say nothing: keep them past the default
        // 60 s before a first command (the 10,000 take a while to open).
        config.limits.preauth_timeout_secs = 3600;
        if let Some(mib) = args.store_cache_mib {
            config.limits.store_cache_mib = Some(mib);
        }
        let proxy = match Provider::start() {
            Ok(provider) => {
                config.proxy.ca_files = vec![provider.ca_file().to_owned()];
                config.proxy.system_roots = false;
                // The upstream runs on loopback, on ports of its own.
                config.proxy.allow_private_networks = true;
                config.proxy.allowed_ports.clear();
                Some(provider)
            }
            Err(e) => {
                eprintln!("no upstream for the proxy: {e:#}");
                None
            }
        };
        let mut mailboxes =
            gateway_proc::create_mailboxes(&config, "budget", 1 + args.pickup_sessions)?;
        let pickup = mailboxes.split_off(1);
        let journal_id = mailboxes[0].0.clone();
        let gw = GatewayProcess::start_wrapped(&config, &limit.wrapper())?;
        eprintln!("gateway: pid {}, smtps {}", gw.pid(), gw.smtps);
        let proxy = proxy.map(|provider| {
            let (user, password) = provider.user(0);
            let login = format!("{user}%{}%{journal_id}", provider.smtps_addr());
            let password = password.to_owned();
            (provider, login, password)
        });
        let tls = TlsTarget {
            ca_file: gw.ca_file.clone(),
            server_name: HOST_NAME.to_owned(),
        };
        Ok(Self {
            args,
            runtime,
            gw,
            limit,
            pickup,
            proxy,
            tls,
            ended: None,
        })
    }

    fn rate(&self) -> f64 {
        self.args.rate_mbit * 1e6
    }

    fn schedule(&self) -> Duration {
        Duration::from_secs_f64(self.args.seconds)
    }

    /// Every cell and the headroom, into `done` as they complete.
    fn cells(&mut self, done: &mut Done) -> anyhow::Result<()> {
        let Done {
            cells,
            headroom,
            notes,
        } = done;
        let rate = self.rate();
        let at = format!("{} Mbit/s", self.args.rate_mbit);
        for size in [10 * KIB, MIB] {
            let id = format!("ingest {}/{at}", human(size));
            let part = move |b: &Bench| b.ingest(rate, size, b.schedule());
            cells.push(self.cell(id, 0, part)?);
        }
        for size in [10 * KIB, MIB] {
            self.fill_pickup(rate, size, self.args.seconds)?;
            let id = format!("pick-up {}/{at}", human(size));
            cells.push(self.cell(id, 0, move |b| b.pickup(rate, size))?);
            self.empty_pickup()?;
        }
        if self.proxy.is_some() {
            let id = format!("proxy 1 MiB/{at}");
            cells.push(self.cell(id, 0, move |b| b.proxied(rate, MIB))?);
        } else {
            notes.push(
                "No proxy cell: the upstream (Postfix and Dovecot from upstream-test-util) \
                 did not start; the mix splits its rate between ingest and pick-up."
                    .into(),
            );
        }
        let idle = self.args.idle;
        let mut mixes = Vec::new();
        for _ in 0..self.args.mix_runs.max(1) {
            mixes.push(self.mix(format!("mix + {idle} idle TLS/{at}"), idle)?);
        }
        let (mix, note) = median_mix(mixes);
        cells.push(mix);
        notes.extend(note);

        for size in [10 * KIB, MIB] {
            let probes = self.headroom(size)?;
            headroom.push((format!("ingest {}", human(size)), probes));
        }

        let paced = self.mix_sessions();
        let idle = self.args.sessions.saturating_sub(paced);
        let id = format!(
            "{} sessions (mix + {idle} idle TLS)/{at}",
            self.args.sessions
        );
        cells.push(self.mix(id, idle)?);
        if self.args.quick {
            let missing: Vec<&str> = cells
                .iter()
                .flat_map(|c| &c.parts)
                .filter(|p| p.report.accepted == 0 || p.report.failed > 0)
                .map(|p| p.kind.as_str())
                .collect();
            if !missing.is_empty() {
                bail!("no or failed messages in {}", missing.join(", "));
            }
        }
        Ok(())
    }

    /// Measures one cell around `load`, with `idle` idle TLS sessions open meanwhile.
    fn cell(
        &mut self,
        id: String,
        idle: usize,
        load: impl FnOnce(&Bench) -> anyhow::Result<Vec<Part>>,
    ) -> anyhow::Result<Cell> {
        eprintln!("== {id}");
        let pid = self.gw.pid();
        let idle_conns = if idle > 0 {
            let tls = load::tls_client(&self.tls)?;
            let opened = Instant::now();
            let conns = self
                .runtime
                .block_on(load::open_idle(self.gw.smtps, Some(&tls), idle, OPENING))
                .with_context(|| format!("opening {idle} idle TLS sessions"))?;
            eprintln!(
                "    {idle} idle TLS sessions open after {:.1} s",
                opened.elapsed().as_secs_f64()
            );
            conns
        } else {
            Vec::new()
        };
        let settled_kib = settle_rss(pid);
        // Peaks from here on: VmHWM back to the current RSS (Linux: "5" > clear_refs), the
        // group's peak to its current usage.
        let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let group_reset = self.limit.reset_peak(pid);
        let cpu0 = cpu_seconds(pid);
        let started = Instant::now();
        let parts = load(self);
        let wall = started.elapsed();
        let cpu = cpu_seconds(pid) - cpu0;
        let rss_kib = proc_status_kib(pid, "VmRSS").unwrap_or(0);
        let hwm_kib = proc_status_kib(pid, "VmHWM").unwrap_or(0);
        let group = self.limit.counters(pid);
        drop(idle_conns);
        self.check_alive(&id)?;
        let parts = parts?;
        for part in &parts {
            eprintln!("    {}: {}", part.kind, part.report.summary());
        }
        Ok(Cell {
            id,
            parts,
            idle,
            settled_kib,
            wall,
            cpu,
            rss_kib,
            hwm_kib,
            hwm_reset,
            group,
            group_reset,
        })
    }

    /// Fails when the gateway is gone, saying whether the memory limit killed it.
    fn check_alive(&mut self, during: &str) -> anyhow::Result<()> {
        let oom = self.limit.counters(self.gw.pid()).oom_kills.unwrap_or(0);
        if let Some(status) = self.gw.exited()? {
            self.ended = Some(status);
            bail!("the gateway died during {during}: {status}; OOM kills in its group: {oom}");
        }
        if oom > 0 {
            bail!("the memory limit's OOM killer struck {oom} time(s) during {during}");
        }
        Ok(())
    }

    fn ingest_config(&self, rate: f64, size: usize, schedule: Duration) -> LoadConfig {
        LoadConfig {
            addr: self.gw.smtps,
            tls: Some(self.tls.clone()),
            sessions: sessions_for(rate, size),
            messages: None,
            duration: Some(schedule),
            size,
            from: FROM.to_owned(),
            to: self.gw.mailbox.clone(),
            pipelining: true,
            auth: None,
            rate_bps: Some(rate),
        }
    }

    fn ingest(&self, rate: f64, size: usize, schedule: Duration) -> anyhow::Result<Vec<Part>> {
        let report = self
            .runtime
            .block_on(load::run(self.ingest_config(rate, size, schedule)))?;
        Ok(vec![Part {
            kind: format!("ingest {}", human(size)),
            report,
        }])
    }

    fn pickup_config(&self, rate: f64, size: usize) -> PickupConfig {
        PickupConfig {
            addr: self.gw.service("pop3s").unwrap_or(self.gw.smtps),
            tls: Some(self.tls.clone()),
            accounts: self.accounts(),
            rate_bps: rate,
            message_bytes: size,
            duration: self.schedule(),
        }
    }

    fn pickup(&self, rate: f64, size: usize) -> anyhow::Result<Vec<Part>> {
        let report = self
            .runtime
            .block_on(pop3_load::pickup(self.pickup_config(rate, size)))?;
        Ok(vec![Part {
            kind: format!("pick-up {}", human(size)),
            report,
        }])
    }

    fn accounts(&self) -> Vec<Account> {
        self.pickup
            .iter()
            .map(|(id, _, password)| Account {
                user: id.clone(),
                password: password.clone(),
                expect: Verify::Nothing,
            })
            .collect()
    }

    /// Delivers what a pick-up at `rate` for `seconds` needs into the pick-up mailboxes
    /// (over plaintext SMTP, closed loop, untimed), a fifth more for the uneven split.
    fn fill_pickup(&self, rate: f64, size: usize, seconds: f64) -> anyhow::Result<()> {
        let sessions = self.pickup.len() as u64;
        let each = (scheduled(rate, size, seconds) * 6 / 5).div_ceil(sessions) + 2;
        eprintln!(
            "    filling {sessions} pick-up mailboxes with {each} x {}",
            human(size)
        );
        for (_, address, _) in &self.pickup {
            let sessions = if size >= 512 * KIB { 2 } else { 8 };
            let deliver = load::deliver(self.gw.smtp, (FROM, address), size, each, sessions);
            self.runtime.block_on(deliver).context("pick-up fill")?;
        }
        Ok(())
    }

    /// Removes what a pick-up left (untimed), so the next one starts on its own messages.
    fn empty_pickup(&self) -> anyhow::Result<()> {
        let report = self.runtime.block_on(pop3_load::drain(DrainConfig {
            addr: self.gw.service("pop3s").unwrap_or(self.gw.smtps),
            tls: Some(self.tls.clone()),
            accounts: self.accounts(),
            delete: true,
            timeout: Duration::from_secs(600),
        }))?;
        if !report.is_complete() {
            bail!("emptying the pick-up mailboxes: {}", report.summary());
        }
        Ok(())
    }

    fn proxy_config(&self, rate: f64, size: usize) -> anyhow::Result<LoadConfig> {
        let (provider, login, password) = self.proxy.as_ref().ok_or_else(|| anyhow!("no proxy"))?;
        Ok(LoadConfig {
            addr: self.gw.smtps,
            tls: Some(self.tls.clone()),
            sessions: sessions_for(rate, size),
            messages: None,
            duration: Some(self.schedule()),
            size,
            from: provider.user(0).0.to_owned(),
            to: "sink@example.org".into(),
            pipelining: false,
            auth: Some((login.clone(), password.clone())),
            rate_bps: Some(rate),
        })
    }

    fn proxied(&self, rate: f64, size: usize) -> anyhow::Result<Vec<Part>> {
        let report = self
            .runtime
            .block_on(load::run(self.proxy_config(rate, size)?))?;
        Ok(vec![Part {
            kind: format!("proxy {}", human(size)),
            report,
        }])
    }

    /// The mix's share of the rate per kind: thirds, or halves without the proxy.
    fn mix_share(&self) -> f64 {
        self.rate() / if self.proxy.is_some() { 3.0 } else { 2.0 }
    }

    /// Paced sessions the mix opens.
    fn mix_sessions(&self) -> usize {
        let share = self.mix_share();
        sessions_for(share, 10 * KIB)
            + self.pickup.len()
            + self.proxy.as_ref().map_or(0, |_| sessions_for(share, MIB))
    }

    /// The mix: ingest 10 KiB, pick-up 1 MiB and proxy 1 MiB at once, with `idle` idle TLS
    /// sessions open.
    fn mix(&mut self, id: String, idle: usize) -> anyhow::Result<Cell> {
        let share = self.mix_share();
        self.fill_pickup(share, MIB, self.args.seconds)?;
        let cell = self.cell(id, idle, move |b| {
            let ingest = b.ingest_config(share, 10 * KIB, b.schedule());
            let pickup = b.pickup_config(share, MIB);
            let proxy = b
                .proxy
                .is_some()
                .then(|| b.proxy_config(share, MIB))
                .transpose()?;
            b.runtime.block_on(async {
                let ingest = tokio::spawn(load::run(ingest));
                let pickup = tokio::spawn(pop3_load::pickup(pickup));
                let proxy = proxy.map(|p| tokio::spawn(load::run(p)));
                let mut parts = vec![
                    Part {
                        kind: "ingest 10 KiB".into(),
                        report: ingest.await??,
                    },
                    Part {
                        kind: "pick-up 1 MiB".into(),
                        report: pickup.await??,
                    },
                ];
                if let Some(proxy) = proxy {
                    parts.push(Part {
                        kind: "proxy 1 MiB".into(),
                        report: proxy.await??,
                    });
                }
                anyhow::Ok(parts)
            })
        })?;
        self.empty_pickup()?;
        Ok(cell)
    }

    /// The headroom search for ingest of `size`.
    fn headroom(&mut self, size: usize) -> anyhow::Result<Vec<Probe>> {
        let (mut good, mut bad, mut bisected) = (0.0, None, 0);
        let mut probes = Vec::new();
        let schedule = Duration::from_secs_f64(self.args.headroom_seconds);
        while let Some(multiple) = next_multiple(good, bad, self.args.headroom_max, bisected) {
            let rate = self.rate() * multiple;
            eprintln!("== headroom: ingest {} at {multiple}x", human(size));
            let report = self
                .runtime
                .block_on(load::run(self.ingest_config(rate, size, schedule)))?;
            self.check_alive(&format!("the headroom probe at {multiple}x"))?;
            let part = Part {
                kind: format!("ingest {}", human(size)),
                report,
            };
            eprintln!("    {}", part.report.summary());
            if bad.is_some() {
                bisected += 1;
            }
            if part.holds() {
                good = multiple;
            } else {
                bad = Some(multiple);
            }
            probes.push(Probe { multiple, part });
        }
        Ok(probes)
    }
}

/// Waits (at most [`SETTLE_MAX`]) until the gateway's RSS stops falling: the allocator hands
/// freed memory back within about five seconds of freeing it, so right after a cell the RSS
/// still holds that cell's garbage, and the next cell's peak (VmHWM, reset to the RSS at its
/// start) would count it. Settled: no fall of more than [`SETTLE_FALL_KIB`] over
/// [`SETTLE_QUIET`]. Returns the RSS then.
fn settle_rss(pid: u32) -> u64 {
    let rss = || proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let started = Instant::now();
    let mut quiet_since = (Instant::now(), rss());
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss();
        if now + SETTLE_FALL_KIB < quiet_since.1 {
            quiet_since = (Instant::now(), now);
        } else if quiet_since.0.elapsed() >= SETTLE_QUIET || started.elapsed() >= SETTLE_MAX {
            return now;
        }
    }
}

/// The run of the mix with the median CPU share (the lower middle of an even count), and a
/// note of every run's CPU share and peak RSS when there was more than one.
fn median_mix(runs: Vec<Cell>) -> (Cell, Option<String>) {
    let note = (runs.len() > 1).then(|| {
        let each: Vec<String> = runs
            .iter()
            .map(|c| {
                format!(
                    "{:.1} % / {:.1} MiB (from {:.1})",
                    c.cpu_share() * 100.0,
                    mib(c.hwm_kib),
                    mib(c.settled_kib)
                )
            })
            .collect();
        format!(
            "The mix ran {} times; CPU share of one core / peak RSS (from the settled RSS at \
             its start) of each run, in the order they ran: {}. The tables and targets show \
             the median run by CPU.",
            runs.len(),
            each.join(", ")
        )
    });
    let median = median_by(runs, Cell::cpu_share).expect("the mix runs at least once");
    (median, note)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A group counter in bytes as MiB for the table, a dash where there is none.
fn group_mib(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.1}", b as f64 / MIB as f64))
        .unwrap_or_else(|| "—".into())
}

fn results(args: &Args, done: &Done) -> Results {
    let mut r = Results::new("budget", args.quick);
    for cell in &done.cells {
        let id = [cell.id.as_str()];
        r.add(
            &id,
            "CPU % of one core",
            Better::Lower,
            cell.cpu_share() * 100.0,
            None,
        );
        r.add(&id, "RSS end MiB", Better::Lower, mib(cell.rss_kib), None);
        r.add(&id, "VmHWM MiB", Better::Lower, mib(cell.hwm_kib), None);
        if let Some(peak) = cell.group.peak {
            let peak = peak as f64 / MIB as f64;
            r.add(&id, "memory group peak MiB", Better::Lower, peak, None);
        }
        if let Some(anon) = cell.group.anon {
            let anon = anon as f64 / MIB as f64;
            r.add(&id, "memory group anon end MiB", Better::Lower, anon, None);
        }
        for part in &cell.parts {
            let parts = [cell.id.as_str(), part.kind.as_str()];
            r.add(&parts, "p50 ms", Better::Lower, part.p(50.0), None);
            r.add(&parts, "p99 ms", Better::Lower, part.p(99.0), None);
            let achieved = part.report.mbit_per_sec();
            r.add(&parts, "achieved Mbit/s", Better::Higher, achieved, None);
        }
    }
    for (kind, probes) in &done.headroom {
        let best = highest_held(probes);
        let id = [kind.as_str(), "headroom"];
        r.add(&id, "multiple of the rate", Better::Higher, best, None);
    }
    r
}

fn highest_held(probes: &[Probe]) -> f64 {
    probes
        .iter()
        .filter(|p| p.part.holds())
        .map(|p| p.multiple)
        .fold(0.0, f64::max)
}

fn render(
    args: &Args,
    limit: &MemoryLimit,
    killed: bool,
    done: &Done,
    stored: Option<u64>,
    scratch: &Path,
) -> String {
    let (cells, headroom, notes) = (&done.cells, &done.headroom, &done.notes);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# The budget: {} Mbit/s under {} MiB\n",
        args.rate_mbit, args.limit_mib
    );
    let _ = writeln!(
        s,
        "Machine: {} CPUs shared by the gateway, the load generator (this process) and, for \
         the proxy, Postfix; all over 127.0.0.1. Data on `{}`. {} The store's cache: {}.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        filesystem_of(scratch),
        limit.describe(),
        match args.store_cache_mib {
            Some(mib) => format!("{mib} MiB (`--store-cache-mib`)"),
            None => "the gateway's default".to_owned(),
        }
    );
    let _ = writeln!(
        s,
        "Open-loop load: messages are due at the offered rate for {} s per cell and each \
         reply's latency counts from when its message was due (ingest and proxy: MAIL to the \
         final 250; pick-up: RETR to the end of the message). CPU: the gateway's user + \
         system time over the cell's wall time (idle and paced sessions' set-up included), \
         as a share of one core. VmHWM: the gateway's peak RSS during the cell{}. Group \
         peak: the memory group's peak usage during the cell, page cache included{}: the \
         files the gateway writes fill the group up to its limit, and the kernel then \
         reclaims cache (each time counts as the limit hit, not as a kill). Group anon: \
         the group's anonymous memory (no cache) at the cell's end. Idle sessions: TLS \
         handshake done, greeting read, then silent; the gateway's \
         `limits.preauth_timeout_secs` is raised to 3600 for the run so it keeps them \
         (default 60 s), and its connection limits to the session count.\n",
        args.seconds,
        if cells.iter().all(|c| c.hwm_reset) {
            " (reset before it)"
        } else {
            " (could not be reset: since start-up)"
        },
        if cells.iter().all(|c| c.group_reset) {
            " (reset before it)"
        } else {
            " (not resettable here: since start-up)"
        },
    );
    let _ = writeln!(
        s,
        "| cell | traffic | sessions | offered Mbit/s | achieved Mbit/s | p50 ms | p99 ms | CPU % of one core | RSS end MiB | VmHWM MiB | group peak MiB | group anon end MiB |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for cell in cells {
        for (i, part) in cell.parts.iter().enumerate() {
            let whole = |text: String| if i == 0 { text } else { String::new() };
            let r = &part.report;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
                whole(cell.id.clone()),
                part.kind,
                r.sessions,
                r.offered_mbit_per_sec().unwrap_or(0.0),
                r.mbit_per_sec(),
                part.p(50.0),
                part.p(99.0),
                whole(format!("{:.1}", cell.cpu_share() * 100.0)),
                whole(format!("{:.1}", mib(cell.rss_kib))),
                whole(format!("{:.1}", mib(cell.hwm_kib))),
                whole(group_mib(cell.group.peak)),
                whole(group_mib(cell.group.anon)),
            );
        }
        if cell.idle > 0 {
            let _ = writeln!(s, "| | idle TLS sessions | {} | | | | | | | | |", cell.idle);
        }
    }

    let _ = writeln!(s, "\n## Headroom\n");
    let _ = writeln!(
        s,
        "The rate doubles from 1x until a probe fails (p99 over {} ms, less than {:.0} % of \
         the offered rate achieved, or a refused message), then {BISECTIONS} bisections; \
         {} s per probe, at most {}x. The load generator shares the CPUs with the gateway, \
         so at high multiples it competes with what it measures.\n",
        P99_BOUND.as_millis(),
        ACHIEVED_SHARE * 100.0,
        args.headroom_seconds,
        args.headroom_max
    );
    let _ = writeln!(s, "| traffic | highest sustained multiple | probes (multiple: achieved Mbit/s, p99 ms, held) |");
    let _ = writeln!(s, "|---|---:|---|");
    for (kind, probes) in headroom {
        let tried: Vec<String> = probes
            .iter()
            .map(|p| {
                format!(
                    "{}x: {:.0}, {:.1}, {}",
                    p.multiple,
                    p.part.report.mbit_per_sec(),
                    p.part.p(99.0),
                    if p.part.holds() { "yes" } else { "no" }
                )
            })
            .collect();
        let best = highest_held(probes);
        let capped = probes
            .last()
            .is_some_and(|p| p.part.holds() && p.multiple >= args.headroom_max);
        let _ = writeln!(
            s,
            "| {kind} | {}{best}x ({:.0} Mbit/s) | {} |",
            if capped { "≥ " } else { "" },
            best * args.rate_mbit,
            tried.join("; ")
        );
    }

    let _ = writeln!(s, "\n## Targets\n");
    let mix = cells.iter().find(|c| c.id.starts_with("mix"));
    if let Some(mix) = mix {
        let cpu = mix.cpu_share() * 100.0;
        let hwm = mib(mix.hwm_kib);
        let _ = writeln!(
            s,
            "- Mixed load at {} Mbit/s: CPU {cpu:.1} % of one core (target < 25 %: {}); \
             peak RSS {hwm:.1} MiB (target < 128 MiB: {}).",
            args.rate_mbit,
            if cpu < 25.0 { "met" } else { "missed" },
            if hwm < 128.0 { "met" } else { "missed" },
        );
    }
    if let Some(all) = cells.iter().find(|c| c.id.contains("sessions (mix")) {
        let _ = writeln!(
            s,
            "- {} concurrent sessions ({} idle TLS + the mix's paced ones) inside the {} MiB \
             limit: {}; peak RSS {:.1} MiB, group peak {} MiB, limit hit {} time(s), OOM kills {}.",
            args.sessions,
            all.idle,
            args.limit_mib,
            if killed { "KILLED" } else { "not killed" },
            mib(all.hwm_kib),
            group_mib(all.group.peak),
            all.group
                .hit_limit
                .map_or_else(|| "—".into(), |n| n.to_string()),
            all.group
                .oom_kills
                .map_or_else(|| "—".into(), |n| n.to_string()),
        );
    }
    if let Some(stored) = stored {
        let _ = writeln!(
            s,
            "- Messages stored in the journal mailbox at the end: {stored}."
        );
    }
    if args.quick {
        let _ = writeln!(s, "\nSmoke run (`--quick`): the figures mean nothing.");
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

    fn mix_run(cpu_seconds: f64, hwm_mib: u64) -> Cell {
        Cell {
            id: "mix".into(),
            parts: Vec::new(),
            idle: 0,
            settled_kib: 100 * 1024,
            wall: Duration::from_secs(10),
            cpu: cpu_seconds,
            rss_kib: 0,
            hwm_kib: hwm_mib * 1024,
            hwm_reset: true,
            group: Counters::default(),
            group_reset: true,
        }
    }

    #[test]
    fn the_mix_reports_its_median_run_by_cpu_and_names_every_run() {
        let (median, note) = median_mix(vec![
            mix_run(3.1, 120),
            mix_run(2.2, 110),
            mix_run(2.5, 115),
        ]);
        assert_eq!(median.cpu, 2.5);
        assert_eq!(median.hwm_kib, 115 * 1024, "the median run's own peak");
        let note = note.expect("three runs are named");
        assert!(
            note.contains(
                "31.0 % / 120.0 MiB (from 100.0), 22.0 % / 110.0 MiB (from 100.0), \
                 25.0 % / 115.0 MiB (from 100.0)"
            ),
            "{note}"
        );
        let (only, note) = median_mix(vec![mix_run(1.0, 100)]);
        assert_eq!(only.cpu, 1.0);
        assert!(note.is_none(), "one run needs no note");
    }

    /// The search as the runner drives it, against a gateway that holds up to `limit`.
    fn search(limit: f64, max: f64) -> Vec<f64> {
        let (mut good, mut bad, mut bisected) = (0.0, None, 0);
        let mut tried = Vec::new();
        while let Some(m) = next_multiple(good, bad, max, bisected) {
            tried.push(m);
            if bad.is_some() {
                bisected += 1;
            }
            if m <= limit {
                good = m;
            } else {
                bad = Some(m);
            }
        }
        tried
    }

    #[test]
    fn headroom_doubles_then_bisects() {
        assert_eq!(search(5.0, 32.0), [1.0, 2.0, 4.0, 8.0, 6.0, 5.0, 5.5]);
        // Everything holds: up to the cap.
        assert_eq!(search(100.0, 8.0), [1.0, 2.0, 4.0, 8.0]);
        // Not even 1x holds: bisect below it.
        assert_eq!(search(0.3, 32.0), [1.0, 0.5, 0.25, 0.375]);
    }

    #[test]
    fn enough_sessions_for_the_rate() {
        // 10 KiB at 100 Mbit/s: 1221 messages a second, 0.1 s each at worst, 1.5x.
        assert_eq!(sessions_for(100e6, 10 * KIB), 184);
        assert_eq!(sessions_for(100e6, MIB), 4);
        assert_eq!(sessions_for(1e12, 10 * KIB), 600);
        assert_eq!(scheduled(100e6, MIB, 10.0), 120);
    }
}

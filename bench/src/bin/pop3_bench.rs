//! POP3 drain benchmark: how fast an archiver empties gateway mailboxes over POP3S, with a
//! throwaway Dovecot pop3d on a Maildir as the baseline.
//!
//! `cargo run --release -p bench --bin pop3_bench [-- --clients 1 --repeats 3 ...]`
//!
//! For each message size (10 KiB: 2,000 messages; 1 MiB: 200) and client count (one
//! connection per mailbox, the messages split evenly between the mailboxes), and `repeats`
//! times over:
//! - gateway: fill its mailboxes over SMTP (untimed; each stored message is the gateway's
//!   `Received:` header plus what was sent), then time the drain over POP3S: USER/PASS
//!   (which unseals the mailbox key), STAT, RETR + DELE of every message (decrypted as it
//!   streams), QUIT;
//! - Dovecot: write the same messages (with a `Received:` header of the same shape) into
//!   the Maildirs and index them (untimed), then time the same drain over POP3S, and over
//!   plaintext POP3 for reference.
//!
//! The median run of each cell goes into a Markdown table, printed and written to
//! `<target dir>/bench-reports/pop3.md`, its figures to `pop3.json` beside it
//! ([`bench::results`]). The gateway runs as a child process with POP3 and
//! POP3S enabled on ephemeral ports; when its build starts no `pop3s` listener (or it
//! refuses connections) the gateway cells say so and Dovecot is still measured.
//!
//! `--quick`: a smoke run (10 KiB, 20 messages, 1 and 2 clients, one run, Dovecot included)
//! that fails if any cell fails or is unavailable.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bench::dovecot::{self, Dovecot};
use bench::gateway_proc::{self, GatewayProcess, HOST_NAME};
use bench::load::{self, TlsTarget};
use bench::pop3_load::{self, Account, DrainConfig, DrainReport, Verify};
use bench::results::{Better, Results};
use bench::util::{
    cpu_seconds, cpu_seconds_when_idle, filesystem_of, human, prepare_run, write_report, KIB, MIB,
};
use clap::Parser;

const FROM: &str = "loadgen@client.bench.test";
/// Cap on one drain; a drain that hits it is reported as failed.
const MAX_DRAIN: Duration = Duration::from_secs(120);
const NOT_IN_BUILD: &str = "gateway POP3 not available in this build";

#[derive(Debug, Parser)]
#[command(about = "POP3 drain throughput of the gateway, with Dovecot as the baseline")]
struct Args {
    /// Message sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [10 * KIB, MIB])]
    sizes: Vec<usize>,
    /// Concurrent clients, one mailbox each (the messages are split between them).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    clients: Vec<usize>,
    /// Runs per cell (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Scale every cell's message count (e.g. 0.25 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Do not run the gateway.
    #[arg(long)]
    skip_gateway: bool,
    /// Do not run (or install) Dovecot.
    #[arg(long)]
    skip_dovecot: bool,
    /// Report file (default: `<target dir>/bench-reports/pop3.md`); the JSON results go
    /// beside it (`.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Smoke run: small size and counts (overrides the options above); any failed or
    /// unavailable cell fails the run.
    #[arg(long)]
    quick: bool,
}

/// Messages per cell, all mailboxes together: a few seconds of draining at most.
fn messages_for(size: usize, clients: usize, scale: f64) -> u64 {
    let base: u64 = if size >= 512 * KIB { 200 } else { 2000 };
    ((base as f64 * scale).round() as u64).max(clients as u64)
}

/// The runs of one server and transport in one cell, or why there are none.
#[derive(Debug, Clone)]
enum Outcome {
    Runs(Vec<DrainReport>),
    Unavailable(String),
    Failed(String),
    Skipped,
}

impl Outcome {
    /// The run with the median drain time.
    fn median(&self) -> Option<&DrainReport> {
        let Outcome::Runs(runs) = self else {
            return None;
        };
        let mut sorted: Vec<&DrainReport> = runs.iter().collect();
        sorted.sort_by_key(|r| r.elapsed);
        sorted.get(sorted.len() / 2).copied()
    }
}

/// The gateway's CPU seconds for one drain.
#[derive(Debug, Clone, Copy)]
struct DrainCpu {
    /// From the first login to the last QUIT's reply.
    drain: f64,
    /// Until the gateway had been idle for a moment: with what the QUITs left for after
    /// their reply (the store removing the deleted messages' chunks).
    until_idle: f64,
}

struct Cell {
    size: usize,
    clients: usize,
    messages: u64,
    gateway: Outcome,
    /// Gateway CPU seconds (user + system) of each drain, in the order of the runs.
    gateway_cpu: Vec<DrainCpu>,
    dovecot_tls: Outcome,
    dovecot_plain: Outcome,
}

fn main() -> anyhow::Result<()> {
    if let Some(child) = gateway_proc::child_if_asked() {
        return child;
    }
    let mut args = Args::parse();
    if args.quick {
        args.sizes = vec![10 * KIB];
        args.clients = vec![1, 2];
        args.repeats = 1;
        args.scale = 0.01;
    }
    if args.repeats == 0 || args.clients.contains(&0) {
        bail!("--repeats and --clients must be at least 1");
    }
    let (scratch, out) = prepare_run("pop3", args.out.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let mut notes = Vec::new();

    let mut gateway = if args.skip_gateway {
        Err(Outcome::Skipped)
    } else {
        match GatewaySide::start(&runtime, &scratch.join("gateway"), max_clients) {
            Ok(side) => Ok(side),
            Err(outcome) => {
                if let Outcome::Unavailable(why) | Outcome::Failed(why) = &outcome {
                    eprintln!("gateway: {why}");
                    notes.push(format!("Gateway: {why}."));
                }
                Err(outcome)
            }
        }
    };
    let mut dovecot = if args.skip_dovecot {
        Err(Outcome::Skipped)
    } else {
        match dovecot::ensure_installed()
            .and_then(|()| Dovecot::start(&scratch.join("dovecot"), max_clients))
        {
            Ok(d) => {
                eprintln!(
                    "dovecot: pop3 {} pop3s {} (log {})",
                    d.pop3,
                    d.pop3s,
                    d.log_path().display()
                );
                notes.push(format!(
                    "Dovecot {} (Debian package) pop3d: Maildir, `pop3_uidl_format = \
                     %08Xu%08Xv`, otherwise default settings (`mail_fsync = optimized`, \
                     one login process per connection); TLS by OpenSSL with an ECDSA P-256 \
                     certificate like the gateway's.",
                    dovecot::version().unwrap_or_else(|| "(unknown version)".into())
                ));
                Ok(d)
            }
            Err(e) => {
                eprintln!("Dovecot failed to start: {e:#}");
                notes.push(format!("Dovecot failed to start: {e:#}"));
                Err(Outcome::Failed(format!("{e:#}")))
            }
        }
    };

    let mut cells = Vec::new();
    for &size in &args.sizes {
        for &clients in &args.clients {
            let per_mailbox = messages_for(size, clients, args.scale).div_ceil(clients as u64);
            let mut cell = Cell {
                size,
                clients,
                messages: per_mailbox * clients as u64,
                gateway: Outcome::Skipped,
                gateway_cpu: Vec::new(),
                dovecot_tls: Outcome::Skipped,
                dovecot_plain: Outcome::Skipped,
            };
            eprintln!(
                "== {} x {} messages, {clients} client(s)",
                human(size),
                cell.messages
            );
            cell.gateway = match &mut gateway {
                Ok(side) => {
                    let (outcome, cpu) =
                        side.cell(&runtime, size, clients, per_mailbox, args.repeats);
                    cell.gateway_cpu = cpu;
                    outcome
                }
                Err(outcome) => outcome.clone(),
            };
            match &mut dovecot {
                Ok(d) => {
                    cell.dovecot_tls =
                        dovecot_cell(&runtime, d, true, size, clients, per_mailbox, args.repeats);
                    cell.dovecot_plain =
                        dovecot_cell(&runtime, d, false, size, clients, per_mailbox, args.repeats);
                }
                Err(outcome) => {
                    cell.dovecot_tls = outcome.clone();
                    cell.dovecot_plain = outcome.clone();
                }
            }
            cells.push(cell);
        }
    }

    let mut failures: Vec<String> = cells
        .iter()
        .flat_map(|c| [&c.gateway, &c.dovecot_tls, &c.dovecot_plain])
        .filter_map(|o| match o {
            Outcome::Failed(why) | Outcome::Unavailable(why) => Some(why.clone()),
            Outcome::Runs(_) | Outcome::Skipped => None,
        })
        .collect();
    if let Ok(side) = gateway {
        if let Err(e) = side.stop() {
            failures.push(format!("Gateway stop: {e:#}"));
            notes.push(format!("Gateway stop: {e:#}"));
        }
    }
    if let Ok(d) = dovecot {
        if let Err(e) = d.stop() {
            failures.push(format!("Dovecot stop: {e:#}"));
            notes.push(format!("Dovecot stop: {e:#}"));
        }
    }

    let report = render(&cells, &notes, &scratch, args.repeats);
    println!("{report}");
    write_report(&out, &report)?;
    let json = results(&cells, args.quick).write_beside(&out)?;
    eprintln!("report written to {} and {}", out.display(), json.display());
    let _ = std::fs::remove_dir_all(&scratch);
    if args.quick && !failures.is_empty() {
        failures.sort();
        failures.dedup();
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// A `Received:` header of the shape the gateway prepends to mail it got over plaintext
/// SMTP from the load generator, for Dovecot's copies of the messages.
fn received_header() -> Vec<u8> {
    format!(
        "Received: from loadgen.gateway.test ([127.0.0.1])\r\n\
         \tby {HOST_NAME} with ESMTP id 0123456789abcdefghijklmnop.1;\r\n\
         \tSun, 23 Nov 2025 12:00:00 +0000\r\n"
    )
    .into_bytes()
}

/// The message content as sent over SMTP (without the end-of-data line).
fn content(size: usize, to: &str) -> Vec<u8> {
    let mut message = load::build_message(size, FROM, to);
    message.truncate(message.len() - 3);
    message
}

fn log_run(label: &str, report: &DrainReport) {
    eprintln!("    {label}: {}", report.summary());
}

/// Runs one drain; an incomplete one (error, missing or mismatched messages) fails the cell.
fn drain(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    tls: Option<TlsTarget>,
    accounts: Vec<Account>,
) -> anyhow::Result<DrainReport> {
    let report = runtime.block_on(pop3_load::drain(DrainConfig {
        addr,
        tls,
        accounts,
        delete: true,
        timeout: MAX_DRAIN,
    }))?;
    if !report.is_complete() {
        bail!("incomplete drain: {}", report.summary());
    }
    Ok(report)
}

/// The gateway child with POP3 enabled and one mailbox per client.
struct GatewaySide {
    process: GatewayProcess,
    pop3s: SocketAddr,
    /// id, address, password.
    mailboxes: Vec<(String, String, String)>,
}

impl GatewaySide {
    /// Starts the gateway; `Err` tells why its cells cannot be measured.
    fn start(
        runtime: &tokio::runtime::Runtime,
        data_dir: &Path,
        mailboxes: usize,
    ) -> Result<Self, Outcome> {
        let failed = |e: anyhow::Error| Outcome::Failed(format!("{e:#}"));
        let mut config = gateway_proc::bench_config(data_dir);
        // The POP3 listeners: `[listen.pop3]` (STLS) and `[listen.pop3s]` (implicit TLS).
        for listener in [&mut config.listen.pop3, &mut config.listen.pop3s] {
            listener.address = "127.0.0.1".parse().expect("literal address");
            listener.port = 0;
            listener.enabled = true;
        }
        let mailboxes =
            gateway_proc::create_mailboxes(&config, "bench", mailboxes).map_err(failed)?;
        let process = GatewayProcess::start_with(&config).map_err(failed)?;
        eprintln!(
            "gateway: smtp {}, other listeners {:?}",
            process.smtp, process.services
        );
        let Some(pop3s) = process.service("pop3s") else {
            return Err(Outcome::Unavailable(format!(
                "{NOT_IN_BUILD} (no pop3s listener started)"
            )));
        };
        if !runtime.block_on(pop3_load::reachable(pop3s)) {
            return Err(Outcome::Unavailable(format!(
                "{NOT_IN_BUILD} (connection to pop3s at {pop3s} refused)"
            )));
        }
        Ok(Self {
            process,
            pop3s,
            mailboxes,
        })
    }

    fn tls(&self) -> TlsTarget {
        TlsTarget {
            ca_file: self.process.ca_file.clone(),
            server_name: HOST_NAME.to_owned(),
        }
    }

    /// Fills `clients` mailboxes with `per_mailbox` messages each over SMTP.
    fn fill(
        &self,
        runtime: &tokio::runtime::Runtime,
        size: usize,
        clients: usize,
        per_mailbox: u64,
    ) -> anyhow::Result<()> {
        for (_, address, _) in &self.mailboxes[..clients] {
            let sessions = if size >= 512 * KIB { 2 } else { 8 };
            let smtp = self.process.smtp;
            let deliver = load::deliver(smtp, (FROM, address), size, per_mailbox, sessions);
            runtime.block_on(deliver).context("SMTP fill")?;
        }
        Ok(())
    }

    fn accounts(&self, size: usize, clients: usize) -> Vec<Account> {
        self.mailboxes[..clients]
            .iter()
            .map(|(id, address, password)| Account {
                user: id.clone(),
                password: password.clone(),
                expect: Verify::AfterTrace(Arc::new(content(size, address))),
            })
            .collect()
    }

    /// `repeats` fill-and-drain runs; the gateway's CPU seconds during each drain.
    fn cell(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        size: usize,
        clients: usize,
        per_mailbox: u64,
        repeats: usize,
    ) -> (Outcome, Vec<DrainCpu>) {
        let mut runs = Vec::new();
        let mut cpu = Vec::new();
        for run in 0..repeats {
            let outcome = (|| {
                self.fill(runtime, size, clients, per_mailbox)?;
                let cpu0 = cpu_seconds(self.process.pid());
                let report = drain(
                    runtime,
                    self.pop3s,
                    Some(self.tls()),
                    self.accounts(size, clients),
                )?;
                let used = DrainCpu {
                    drain: cpu_seconds(self.process.pid()) - cpu0,
                    until_idle: cpu_seconds_when_idle(
                        self.process.pid(),
                        Duration::from_millis(300),
                        Duration::from_secs(20),
                    ) - cpu0,
                };
                log_run(&format!("gateway pop3s run {}", run + 1), &report);
                for account in self.accounts(size, clients) {
                    let left = runtime.block_on(pop3_load::count(
                        self.pop3s,
                        Some(&self.tls()),
                        &account,
                    ))?;
                    if left != 0 {
                        bail!("{left} messages left in {} after QUIT", account.user);
                    }
                }
                anyhow::Ok((report, used))
            })();
            match outcome {
                Ok((report, used)) => {
                    runs.push(report);
                    cpu.push(used);
                }
                Err(e) => {
                    eprintln!("    gateway failed: {e:#}");
                    return (Outcome::Failed(format!("{e:#}")), cpu);
                }
            }
        }
        (Outcome::Runs(runs), cpu)
    }

    fn stop(self) -> anyhow::Result<()> {
        let left = self.process.stop()?;
        if left != 0 {
            bail!("{left} messages left in the first mailbox");
        }
        Ok(())
    }
}

fn dovecot_cell(
    runtime: &tokio::runtime::Runtime,
    dovecot: &mut Dovecot,
    tls: bool,
    size: usize,
    clients: usize,
    per_mailbox: u64,
    repeats: usize,
) -> Outcome {
    let mut message = received_header();
    message.extend_from_slice(&content(size, "bench@dovecot.bench.test"));
    let message = Arc::new(message);
    let accounts: Vec<Account> = dovecot.accounts()[..clients]
        .iter()
        .map(|a| Account {
            expect: Verify::Exact(message.clone()),
            ..a.clone()
        })
        .collect();
    let (addr, target, label) = if tls {
        (dovecot.pop3s, Some(dovecot.tls_target()), "pop3s")
    } else {
        (dovecot.pop3, None, "pop3")
    };
    let mut runs = Vec::new();
    for run in 0..repeats {
        let outcome = (|| {
            for user in 0..clients {
                dovecot.fill(user, &message, per_mailbox)?;
            }
            let report = drain(runtime, addr, target.clone(), accounts.clone())?;
            log_run(&format!("dovecot {label} run {}", run + 1), &report);
            for user in 0..clients {
                let left = dovecot.stored(user);
                if left != 0 {
                    bail!("{left} messages left in Dovecot's Maildir {user} after QUIT");
                }
            }
            anyhow::Ok(report)
        })();
        match outcome {
            Ok(report) => runs.push(report),
            Err(e) => {
                eprintln!("    dovecot {label} failed: {e:#}");
                return Outcome::Failed(format!("{e:#}"));
            }
        }
    }
    Outcome::Runs(runs)
}

/// The figures of the report's first table as JSON cells.
fn results(cells: &[Cell], quick: bool) -> Results {
    let mut r = Results::new("pop3", quick);
    for cell in cells {
        let (size, clients) = (human(cell.size), format!("{} clients", cell.clients));
        let parts = [size.as_str(), clients.as_str()];
        let dovecot = cell.dovecot_tls.median().map(|d| d.messages_per_sec());
        if let Some(g) = cell.gateway.median() {
            let rate = g.messages_per_sec();
            let peer = dovecot.map(|d| ("Dovecot POP3S", d));
            r.add(&parts, "POP3S msg/s", Better::Higher, rate, peer);
            let login = g.slowest_login.as_secs_f64() * 1e3;
            r.add(&parts, "POP3S slowest login ms", Better::Lower, login, None);
        }
        if let Some(p) = cell.dovecot_plain.median() {
            let rate = p.messages_per_sec();
            r.add(&parts, "Dovecot POP3 msg/s", Better::Higher, rate, None);
        }
    }
    r
}

fn render(cells: &[Cell], notes: &[String], scratch: &Path, repeats: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# POP3 drain throughput: gateway vs Dovecot\n");
    let _ = writeln!(
        s,
        "Machine: {} CPUs, client and servers on the same machine over 127.0.0.1; data on \
         `{}`. One client per mailbox, the cell's messages split evenly between the \
         mailboxes; each client logs in (USER/PASS), STATs, RETRs and DELEs every message \
         and QUITs (deletions committed). Times cover the whole drain, logins included \
         (the gateway unseals the mailbox key at login: Argon2id). MB = 10^6 bytes of \
         message content (un-stuffed). Median of {repeats} runs, each on freshly filled \
         mailboxes: the gateway's over SMTP (each stored message = its `Received:` header \
         + what was sent), Dovecot's written into the Maildirs with a header of the same \
         shape and indexed by `doveadm` before the timer starts. Every message is checked \
         against what was sent. The gateway's CPU is its user + system time during the \
         drain and, in brackets, until it has been idle for 0.3 s after it: the store \
         removes deleted messages' chunks after the QUIT's reply, and that work counts \
         there.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        filesystem_of(scratch)
    );
    let _ = writeln!(
        s,
        "| size | clients | messages | gateway POP3S msg/s | gateway POP3S MB/s | Dovecot POP3S msg/s | Dovecot POP3S MB/s | gateway / Dovecot (POP3S) | Dovecot plain POP3 msg/s | Dovecot plain POP3 MB/s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rate = |o: &Outcome| match o {
        Outcome::Runs(_) => {
            let m = o.median().expect("at least one run");
            (
                format!("{:.0}", m.messages_per_sec()),
                format!("{:.1}", m.mb_per_sec()),
            )
        }
        Outcome::Unavailable(_) => ("n/a".into(), "n/a".into()),
        Outcome::Failed(_) => ("failed".into(), "failed".into()),
        Outcome::Skipped => ("—".into(), "—".into()),
    };
    for cell in cells {
        let (g_msgs, g_mb) = rate(&cell.gateway);
        let (d_msgs, d_mb) = rate(&cell.dovecot_tls);
        let (p_msgs, p_mb) = rate(&cell.dovecot_plain);
        let ratio = match (cell.gateway.median(), cell.dovecot_tls.median()) {
            (Some(g), Some(d)) => format!("{:.2}x", g.messages_per_sec() / d.messages_per_sec()),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {g_msgs} | {g_mb} | {d_msgs} | {d_mb} | {ratio} | {p_msgs} | {p_mb} |",
            human(cell.size),
            cell.clients,
            cell.messages,
        );
    }
    let _ = writeln!(
        s,
        "\nTarget: the gateway at least 2x Dovecot's POP3S throughput while decrypting, in every cell (issue #17)."
    );
    if cells
        .iter()
        .any(|c| matches!(c.gateway, Outcome::Unavailable(_)))
    {
        let _ = writeln!(s, "\n**{NOT_IN_BUILD}**: the gateway cells are n/a.");
    }

    let _ = writeln!(s, "\n## Every run\n");
    let _ = writeln!(
        s,
        "| size | clients | server | run | messages | seconds | msg/s | MB/s | slowest login ms | server CPU s (until idle) | TLS |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for cell in cells {
        for (label, outcome, cpu) in [
            ("gateway POP3S", &cell.gateway, &cell.gateway_cpu[..]),
            ("Dovecot POP3S", &cell.dovecot_tls, &[][..]),
            ("Dovecot POP3", &cell.dovecot_plain, &[][..]),
        ] {
            match outcome {
                Outcome::Runs(runs) => {
                    for (i, r) in runs.iter().enumerate() {
                        let _ = writeln!(
                            s,
                            "| {} | {} | {label} | {} | {} | {:.3} | {:.0} | {:.1} | {:.0} | {} | {} |",
                            human(cell.size),
                            cell.clients,
                            i + 1,
                            r.messages,
                            r.elapsed.as_secs_f64(),
                            r.messages_per_sec(),
                            r.mb_per_sec(),
                            r.slowest_login.as_secs_f64() * 1e3,
                            cpu.get(i)
                                .map(|c| format!("{:.2} ({:.2})", c.drain, c.until_idle))
                                .unwrap_or_else(|| "—".into()),
                            r.tls.as_deref().unwrap_or("plaintext"),
                        );
                    }
                }
                Outcome::Unavailable(why) | Outcome::Failed(why) => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {label} | — | — | — | — | — | — | — | {} |",
                        human(cell.size),
                        cell.clients,
                        why.replace('|', "/")
                    );
                }
                Outcome::Skipped => {}
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for note in notes {
            let _ = writeln!(s, "- {note}");
        }
    }
    s
}

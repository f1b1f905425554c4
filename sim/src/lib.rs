//! Deterministic simulation of the gateway under network and disk faults (issue #6).
//!
//! A run is a function of its seed. [`run`] builds a turmoil world with:
//! - the gateway host ([`hosts::gateway`]): the real SMTP and POP3 servers of the `gateway`
//!   crate (sans-IO sessions and their stream-generic shells) over turmoil sockets, on a redb
//!   store on the simulated [`disk::Disk`], with commits inline (no writer thread) and ids
//!   drawn from the seed;
//! - journal senders ([`hosts::sender`]) that deliver labelled messages and retry until 250;
//! - an archiver ([`hosts::archiver`]) that empties the mailboxes over POP3S;
//! - a driver (here) that injects the plan's faults ([`scenario`]): crashes and restarts,
//!   power cuts in the middle of a commit, stalled or cut links, a full disk; the clients
//!   themselves drop connections mid-DATA, after the dot and mid-RETR, and dribble data.
//!
//! What the clients see goes into a ledger; after the run one more power cut hits the disk,
//! the store is reopened offline and [`invariants`] checks the ledger against it. The event
//! log ([`trace`]) holds deterministic facts only, so its hash identifies a run.
//!
//! Determinism: turmoil's network and every choice of the plan follow the seed; the store
//! commits on the calling task; mailbox, message and session ids come from the seed
//! (`gateway::random::seeded_ids`); a crash cuts the gateway's outgoing packets before tokio
//! drops its tasks (in an order that follows process-wide task ids); no TLS session cache
//! outlives a run. Left outside: key material, nonces and TLS randomness (they change
//! bytes, never sizes or decisions), and tokio's `select!` branch order, which turmoil can
//! seed only under `--cfg tokio_unstable` (`cargo xtask sim` builds with it).
//!
//! [`Bug`] names the deliberately wrong variants the checks must catch.
//!
//! Proxy mode (the `proxy` scenario) adds an upstream provider ([`hosts::upstream`]): a
//! submission server reached through turmoil, which records what it took and refuses
//! messages after the dot, drops connections mid-data or after the dot, and stalls, while
//! the gateway crashes and loses power. Proxy clients ([`hosts::proxy_client`]) log in with
//! `AUTH PLAIN` as `user%upstream:587%<mailbox>` and retry until 250; the rules (no 250 and
//! nothing upstream without a durable copy, no copy of a refused message) are in
//! [`invariants`].
//!
//! The `pop3-proxy` scenario gives the upstream POP3 maildrops ([`hosts::upstream_pop3`]:
//! implicit TLS and STLS, faults mid-RETR, stalls, logins refused for a while); POP3 proxy
//! clients ([`hosts::pop3_client`]) log in to the gateway as `user%upstream%<mailbox>` and
//! retrieve them over several sessions, again and again, deleting some and breaking off
//! some, as the gateway crashes and loses power and links stall or break. The rules (no `.`
//! before the copy is durable, one copy per UIDL, deletions upstream only after DELE and
//! QUIT and a copy) are in [`invariants`].
//!
//! The `guessing` scenario adds attackers ([`hosts::attacker`]) guessing the password of the
//! archiver's mailbox from their own addresses while the archiver picks up; the archiver
//! must never be refused (any `-ERR` to its login other than `[IN-USE]` is a violation).

#![forbid(unsafe_code)]

pub mod disk;
pub mod hosts;
pub mod invariants;
pub mod paths;
pub mod scenario;
pub mod tls;
pub mod trace;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use gateway::crypto::MailboxPassword;
use gateway::random::seeded_ids;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use disk::{Disk, DiskBug};
use hosts::gateway::NAME as GATEWAY;
use hosts::upstream::NAME as UPSTREAM;
use hosts::Shared;
use invariants::FinalMailbox;
use scenario::{Fault, Mailboxes, Plan, Scenario};
use trace::Trace;

/// How many mailboxes every run has.
const MAILBOXES: usize = 2;
/// A run that is still going after this much simulated time has hung.
const TIME_LIMIT: Duration = Duration::from_secs(3 * 3600);

/// A deliberately wrong variant, to show that the checks can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The gateway's store commits without syncing (`Store::skip_sync_for_tests`), so SMTP
    /// answers 250 before the message is durable.
    UnsyncedCommit,
    /// The disk's sync lies ([`DiskBug::LyingSync`]).
    LyingDisk,
}

impl Bug {
    pub const ALL: [Bug; 2] = [Bug::UnsyncedCommit, Bug::LyingDisk];

    pub fn name(self) -> &'static str {
        match self {
            Bug::UnsyncedCommit => "unsynced-commit",
            Bug::LyingDisk => "lying-disk",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub seed: u64,
    pub scenario: Scenario,
    pub bug: Option<Bug>,
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub options: Options,
    pub trace: Trace,
    pub violations: Vec<String>,
    pub sim_time: Duration,
    /// What the gateway ran on its production paths (group commit, blocking jobs).
    pub paths: paths::Paths,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

thread_local! {
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Records every panic on this thread (tokio swallows a panicking connection task, so the
/// run would not notice otherwise), then lets the usual hook print it.
fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.borrow_mut().push(info.to_string()));
            previous(info);
        }));
    });
    PANICS.with(|p| p.borrow_mut().clear());
}

/// A runtime for the store's writer task outside the simulation (before and after a run).
fn offline_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())
}

/// Creates the mailboxes on a fresh disk, as `gateway mailbox create` would before `serve`.
fn create_mailboxes(disk: &Disk) -> Result<Mailboxes, String> {
    let runtime = offline_runtime()?;
    let _inside = runtime.enter();
    let store = hosts::gateway::open_store(disk).map_err(|e| e.to_string())?;
    let gateway = hosts::gateway::service(store);
    let mut out = Vec::new();
    for i in 0..MAILBOXES {
        let created = runtime
            .block_on(gateway.create_mailbox(&format!("journal {i}"), ""))
            .map_err(|e| e.to_string())?;
        out.push((
            created.info.id,
            created.password.reveal_for_display().to_string(),
        ));
    }
    Ok(out)
}

/// Reads every mailbox back from the disk, offline, after the run.
fn read_store(disk: &Disk, mailboxes: &Mailboxes) -> Result<Vec<FinalMailbox>, String> {
    let runtime = offline_runtime()?;
    let _inside = runtime.enter();
    let store = hosts::gateway::open_store(disk).map_err(|e| format!("store: {e}"))?;
    let gateway = hosts::gateway::service(store);
    let mut out = Vec::new();
    for (id, password) in mailboxes {
        let key = gateway
            .unseal(id, &MailboxPassword::from_user_input(password))
            .map_err(|e| format!("unseal: {e}"))?;
        let mut messages = FinalMailbox::new();
        for summary in gateway
            .list_messages(id)
            .map_err(|e| format!("list: {e}"))?
        {
            let (_, body) = gateway
                .read_message(&key, summary.seq)
                .map_err(|e| format!("read {}: {e}", summary.id))?;
            messages.insert(summary.id, body);
        }
        out.push(messages);
    }
    Ok(out)
}

/// Runs one seed.
pub fn run(options: Options) -> Outcome {
    watch_panics();
    seeded_ids::set(Some(options.seed));
    let outcome = run_seeded(options);
    seeded_ids::set(None);
    outcome
}

fn run_seeded(options: Options) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let disk = Disk::new(rng.random(), None);
    let shared = Rc::new(Shared::default());
    let mut violations = Vec::new();
    let mailboxes = match create_mailboxes(&disk) {
        Ok(m) => m,
        Err(e) => {
            return Outcome {
                options,
                trace: Trace::default(),
                violations: vec![format!("setting up the mailboxes failed: {e}")],
                sim_time: Duration::ZERO,
                paths: paths::Paths::default(),
            }
        }
    };
    // The wrong variant starts after the set-up, so the mailboxes themselves are durable.
    if options.bug == Some(Bug::LyingDisk) {
        disk.set_bug(Some(DiskBug::LyingSync));
    }
    let skip_sync = options.bug == Some(Bug::UnsyncedCommit);
    let plan = Plan::draw(options.scenario, &mut rng, &mailboxes);
    // Count from here: the set-up's commits are not the run's.
    paths::take();
    shared.trace.borrow_mut().push(
        Duration::ZERO,
        "driver",
        format!(
            "scenario {} seed {}: {} senders ({} messages), faults {:?} until {:?}",
            options.scenario.name(),
            options.seed,
            plan.senders.len(),
            plan.senders.iter().map(|s| s.messages.len()).sum::<usize>(),
            plan.faults,
            plan.faults_end
        ),
    );

    let mut sim = turmoil::Builder::new()
        .rng_seed(rng.random())
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000))
        .simulation_duration(TIME_LIMIT)
        .tick_duration(Duration::from_millis(10))
        .min_message_latency(plan.min_latency)
        .max_message_latency(plan.max_latency)
        .build();
    {
        let (disk, shared) = (disk.clone(), shared.clone());
        let proxy = plan.proxy.is_some();
        sim.host(GATEWAY, move || {
            hosts::gateway::run(disk.clone(), shared.clone(), skip_sync, proxy)
        });
    }
    if let Some(proxy) = &plan.proxy {
        let (upstream, shared) = (proxy.upstream.clone(), shared.clone());
        sim.host(UPSTREAM, move || {
            hosts::upstream::run(upstream.clone(), shared.clone())
        });
    }
    shared.senders_left.set(
        plan.senders.len()
            + plan
                .proxy
                .as_ref()
                .map_or(0, |p| p.clients.len() + p.pop3_clients.len()),
    );
    for sender in &plan.senders {
        let client_rng = SmallRng::seed_from_u64(rng.random());
        sim.client(
            sender.name.as_str(),
            hosts::sender::run(sender.clone(), shared.clone(), client_rng),
        );
    }
    for client in plan.proxy.iter().flat_map(|p| &p.clients) {
        let client_rng = SmallRng::seed_from_u64(rng.random());
        sim.client(
            client.name.as_str(),
            hosts::proxy_client::run(client.clone(), shared.clone(), client_rng),
        );
    }
    for client in plan.proxy.iter().flat_map(|p| &p.pop3_clients) {
        let client_rng = SmallRng::seed_from_u64(rng.random());
        sim.client(
            client.name.as_str(),
            hosts::pop3_client::run(client.clone(), shared.clone(), client_rng),
        );
    }
    let archiver_rng = SmallRng::seed_from_u64(rng.random());
    sim.client(
        "archiver",
        hosts::archiver::run(plan.archiver.clone(), shared.clone(), archiver_rng),
    );
    for attacker in &plan.attackers {
        let attacker_rng = SmallRng::seed_from_u64(rng.random());
        sim.client(
            attacker.name.as_str(),
            hosts::attacker::run(attacker.clone(), shared.clone(), attacker_rng),
        );
    }

    let finished = drive(&mut sim, &plan, &disk, &shared, &mut violations);
    let sim_time = sim.elapsed();
    // The end of the run is one more power cut: everything acknowledged must survive it.
    disk.crash();
    if finished {
        sim.crash(GATEWAY);
        drop(sim);
    } else {
        // A panic left the world half-stepped; dropping it could panic again.
        std::mem::forget(sim);
    }
    disk.power_on();
    let paths = paths::take();
    let final_store = match read_store(&disk, &mailboxes) {
        Ok(store) => store,
        Err(e) => {
            violations.push(format!("the store cannot be read after the run: {e}"));
            Vec::new()
        }
    };
    for (i, mailbox) in final_store.iter().enumerate() {
        let labels: Vec<String> = mailbox
            .values()
            .map(|m| {
                invariants::message_of(m)
                    .and_then(|(_, m)| invariants::label_of(m))
                    .unwrap_or_else(|| "?".into())
            })
            .collect();
        shared.trace.borrow_mut().push(
            sim_time,
            "driver",
            format!("mailbox {i} after the run: {labels:?}"),
        );
    }
    violations.extend(shared.ledger.borrow().check(&final_store));
    for panic in PANICS.with(|p| p.borrow_mut().split_off(0)) {
        violations.push(format!("panic: {panic}"));
    }
    for v in &violations {
        shared
            .trace
            .borrow_mut()
            .push(sim_time, "driver", format!("VIOLATION {v}"));
    }
    let trace = shared.trace.borrow().clone();
    Outcome {
        options,
        trace,
        violations,
        sim_time,
        paths,
    }
}

/// Crashes the gateway host. The gateway's outgoing packets are cut first: a dead machine
/// sends nothing (what was still on its way out is lost with it), and tokio drops the dead
/// runtime's tasks in an order that follows its process-wide task ids, so the FINs their
/// sockets would send would make a run depend on the runs before it in the same process.
fn crash_gateway(sim: &mut turmoil::Sim<'_>, clients: &[String], links: &[Link]) {
    for client in clients {
        sim.partition_oneway(GATEWAY, client.as_str());
    }
    sim.crash(GATEWAY);
    for client in clients {
        sim.repair_oneway(GATEWAY, client.as_str());
    }
    // The link faults in force stay in force.
    for (_, client, cut) in links {
        if *cut {
            sim.partition(client.as_str(), GATEWAY);
        } else {
            sim.hold(client.as_str(), GATEWAY);
        }
    }
}

/// A link fault in force: until when, which client, cut (true) or held.
type Link = (Duration, String, bool);

fn heal_link(sim: &mut turmoil::Sim<'_>, client: &str, cut: bool) {
    if cut {
        sim.repair(client, GATEWAY);
    } else {
        sim.release(client, GATEWAY);
    }
}

/// Steps the world and injects the faults; false if a panic cut the run short.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    plan: &Plan,
    disk: &Disk,
    shared: &Shared,
    violations: &mut Vec<String>,
) -> bool {
    let log = |at: Duration, what: String| shared.trace.borrow_mut().push(at, "driver", what);
    let mut faults: VecDeque<(Duration, Fault)> = plan.faults.iter().cloned().collect();
    let mut restart_at: Option<Duration> = None;
    let mut cut_down: Option<Duration> = None;
    // Links held or cut, until when (true: cut).
    let mut stalls: Vec<Link> = Vec::new();
    let clients: Vec<String> = plan
        .senders
        .iter()
        .map(|s| s.name.clone())
        .chain(plan.proxy.iter().flat_map(|p| {
            p.clients
                .iter()
                .map(|c| c.name.clone())
                .chain(p.pop3_clients.iter().map(|c| c.name.clone()))
                .chain(std::iter::once(UPSTREAM.to_owned()))
        }))
        .chain(std::iter::once("archiver".to_owned()))
        .collect();
    let mut disk_free_at: Option<Duration> = None;
    let mut healed = false;
    loop {
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step()));
        let done = match step {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                violations.push(format!("the simulation stopped: {e}"));
                return true;
            }
            Err(_) => {
                violations.push("a host panicked out of the simulation".into());
                return false;
            }
        };
        let now = sim.elapsed();
        if let Some(report) = disk.take_cut() {
            log(
                now,
                format!(
                    "power cut in a commit: kept {} of {} unsynced writes{}",
                    report.kept,
                    report.pending,
                    if report.torn { ", one torn" } else { "" }
                ),
            );
            crash_gateway(sim, &clients, &stalls);
            restart_at = Some(now + cut_down.take().unwrap_or(Duration::from_secs(1)));
        }
        if restart_at.is_some_and(|at| at <= now) {
            restart_at = None;
            disk.power_on();
            sim.bounce(GATEWAY);
            log(now, "gateway restarted".into());
        }
        stalls.retain(|(until, client, cut)| {
            if *until <= now {
                heal_link(sim, client, *cut);
                log(now, format!("link {client} <-> gateway flows again"));
                false
            } else {
                true
            }
        });
        if disk_free_at.is_some_and(|at| at <= now) {
            disk_free_at = None;
            disk.free();
            log(now, "disk has space again".into());
        }
        while !healed && faults.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, fault)) = faults.pop_front() else {
                break;
            };
            match fault {
                Fault::Crash { down } if restart_at.is_none() => {
                    let report = disk.crash();
                    crash_gateway(sim, &clients, &stalls);
                    restart_at = Some(now + down);
                    cut_down = None;
                    disk.disarm_cut();
                    log(
                        now,
                        format!(
                            "gateway crashed ({} unsynced writes, {} kept) for {down:?}",
                            report.pending, report.kept
                        ),
                    );
                }
                Fault::CutAtSync { n, down } if restart_at.is_none() && cut_down.is_none() => {
                    disk.cut_power_at_sync(n);
                    cut_down = Some(down);
                    log(now, format!("power will fail at sync {n} from now"));
                }
                Fault::Stall { client, for_ } => {
                    sim.hold(client.as_str(), GATEWAY);
                    log(
                        now,
                        format!("link {client} <-> gateway stalls for {for_:?}"),
                    );
                    stalls.push((now + for_, client, false));
                }
                Fault::Partition { client, for_ } => {
                    sim.partition(client.as_str(), GATEWAY);
                    log(now, format!("link {client} <-> gateway cut for {for_:?}"));
                    stalls.push((now + for_, client, true));
                }
                Fault::DiskFull { slack, for_ } => {
                    disk.fill(slack);
                    disk_free_at = Some(now + for_);
                    log(now, format!("disk full ({slack} bytes left) for {for_:?}"));
                }
                skipped => log(now, format!("skipped {skipped:?}: the gateway is down")),
            }
        }
        if !healed && now >= plan.faults_end {
            healed = true;
            disk.disarm_cut();
            cut_down = None;
            for (_, client, cut) in stalls.drain(..) {
                heal_link(sim, &client, cut);
            }
            disk.free();
            disk_free_at = None;
            if restart_at.take().is_some() {
                disk.power_on();
                sim.bounce(GATEWAY);
            }
            shared.faults_over.set(true);
            log(now, "faults over".into());
        }
        if done {
            return true;
        }
    }
}

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
//! The `cluster` scenario ([`cluster`]) runs two gateway nodes, each on its own store on
//! one model of a networked database they share (`gateway::store::model`), with the
//! senders and the archiver using either node; the faults are node crashes, a node cut off
//! from the database, database restarts and commits whose connection breaks after or
//! without taking effect. The seeds without a named scenario never pick it
//! ([`scenario::Scenario::ALL`] is the single-node ones); CI runs a batch of its own.
//!
//! The `guessing` scenario adds attackers ([`hosts::attacker`]) guessing the password of the
//! archiver's mailbox from their own addresses while the archiver picks up; the archiver
//! must never be refused (any `-ERR` to its login other than `[IN-USE]` is a violation).

#![forbid(unsafe_code)]

pub mod cluster;
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
use gateway::store::{Store, StoreError};
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
    /// The cluster's shared database reports commits before it flushes them, and a restart
    /// loses what was not flushed yet (`ModelDatabase::lose_unflushed_commits`).
    UnflushedCommit,
    /// A cluster node takes a commit whose connection broke for one that happened
    /// (`ModelDatabase::trust_lost_commits`), so it acknowledges what may not be stored.
    TrustedLostCommit,
}

impl Bug {
    pub const ALL: [Bug; 4] = [
        Bug::UnsyncedCommit,
        Bug::LyingDisk,
        Bug::UnflushedCommit,
        Bug::TrustedLostCommit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::UnsyncedCommit => "unsynced-commit",
            Bug::LyingDisk => "lying-disk",
            Bug::UnflushedCommit => "unflushed-commit",
            Bug::TrustedLostCommit => "trusted-lost-commit",
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

/// Opens a store offline (before or after a run).
type OpenStore<'a> = &'a dyn Fn() -> Result<Store, StoreError>;

/// Creates the mailboxes in a fresh store, as `gateway mailbox create` would before `serve`.
fn create_mailboxes(open: OpenStore<'_>) -> Result<Mailboxes, String> {
    let runtime = offline_runtime()?;
    let _inside = runtime.enter();
    let store = open().map_err(|e| e.to_string())?;
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

/// What the store holds after the run: every mailbox's messages, and the mailboxes whose
/// counters disagree with them.
type FinalStore = (Vec<FinalMailbox>, Vec<String>);

/// Reads every mailbox back from the store, offline, after the run, and checks that each
/// mailbox's message count and bytes are those of the messages it holds.
fn read_store(open: OpenStore<'_>, mailboxes: &Mailboxes) -> Result<FinalStore, String> {
    let runtime = offline_runtime()?;
    let _inside = runtime.enter();
    let store = open().map_err(|e| format!("store: {e}"))?;
    let gateway = hosts::gateway::service(store);
    let mut out = Vec::new();
    let mut counters = Vec::new();
    for (i, (id, password)) in mailboxes.iter().enumerate() {
        let info = gateway.mailbox(id).map_err(|e| format!("mailbox: {e}"))?;
        let summaries = gateway
            .list_messages(id)
            .map_err(|e| format!("list: {e}"))?;
        let bytes: u64 = summaries.iter().map(|s| s.size).sum();
        if (info.message_count, info.message_bytes) != (summaries.len() as u64, bytes) {
            counters.push(format!(
                "mailbox {i} counts {} messages of {} bytes but holds {} of {bytes}",
                info.message_count,
                info.message_bytes,
                summaries.len()
            ));
        }
        let key = gateway
            .unseal(id, &MailboxPassword::from_user_input(password))
            .map_err(|e| format!("unseal: {e}"))?;
        let mut messages = FinalMailbox::new();
        for summary in summaries {
            let (_, body) = gateway
                .read_message(&key, summary.seq)
                .map_err(|e| format!("read {}: {e}", summary.id))?;
            messages.insert(summary.id, body);
        }
        out.push(messages);
    }
    Ok((out, counters))
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
    if options.scenario == Scenario::Cluster {
        return cluster::run(options, rng);
    }
    let shared = Rc::new(Shared::default());
    let mut violations = Vec::new();
    let mailboxes = match create_mailboxes(&|| hosts::gateway::open_store(&disk)) {
        Ok(m) => m,
        Err(e) => return not_set_up(options, &e),
    };
    // The wrong variant starts after the set-up, so the mailboxes themselves are durable.
    if options.bug == Some(Bug::LyingDisk) {
        disk.set_bug(Some(DiskBug::LyingSync));
    }
    let skip_sync = options.bug == Some(Bug::UnsyncedCommit);
    let plan = Plan::draw(options.scenario, &mut rng, &mailboxes);
    let mut sim = begin(options, &plan, &shared, &mut rng);
    {
        let (disk, shared) = (disk.clone(), shared.clone());
        let proxy = plan.proxy.is_some();
        sim.host(GATEWAY, move || {
            let at = hosts::gateway::StoreAt::Disk(disk.clone());
            hosts::gateway::run(GATEWAY, at, shared.clone(), skip_sync, proxy)
        });
    }
    if let Some(proxy) = &plan.proxy {
        let (upstream, shared) = (proxy.upstream.clone(), shared.clone());
        sim.host(UPSTREAM, move || {
            hosts::upstream::run(upstream.clone(), shared.clone())
        });
    }
    clients(&mut sim, &plan, &shared, &mut rng);

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
    // Taken before the store is read back: reading unseals, and that is not the run's.
    let paths = paths::take();
    let final_store = read_store(&|| hosts::gateway::open_store(&disk), &mailboxes);
    conclude(options, &shared, violations, (sim_time, paths), final_store)
}

/// The outcome of a run whose mailboxes could not be created.
fn not_set_up(options: Options, e: &str) -> Outcome {
    Outcome {
        options,
        trace: Trace::default(),
        violations: vec![format!("setting up the mailboxes failed: {e}")],
        sim_time: Duration::ZERO,
        paths: paths::Paths::default(),
    }
}

/// Starts counting the run's paths, logs its plan and builds its world.
fn begin<'a>(
    options: Options,
    plan: &Plan,
    shared: &Shared,
    rng: &mut SmallRng,
) -> turmoil::Sim<'a> {
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
    turmoil::Builder::new()
        .rng_seed(rng.random())
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000))
        .simulation_duration(TIME_LIMIT)
        .tick_duration(Duration::from_millis(10))
        .min_message_latency(plan.min_latency)
        .max_message_latency(plan.max_latency)
        .build()
}

/// The plan's clients: senders, proxy clients, the archiver, attackers.
fn clients(sim: &mut turmoil::Sim<'_>, plan: &Plan, shared: &Rc<Shared>, rng: &mut SmallRng) {
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
}

/// Checks what the clients saw against the store read back after the run.
fn conclude(
    options: Options,
    shared: &Shared,
    mut violations: Vec<String>,
    (sim_time, paths): (Duration, paths::Paths),
    final_store: Result<FinalStore, String>,
) -> Outcome {
    let final_store = match final_store {
        Ok((store, counters)) => {
            violations.extend(counters);
            store
        }
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
fn crash_gateway(sim: &mut turmoil::Sim<'_>, host: &str, clients: &[String], links: &[Link]) {
    for client in clients {
        sim.partition_oneway(host, client.as_str());
    }
    sim.crash(host);
    for client in clients {
        sim.repair_oneway(host, client.as_str());
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

/// The next fault due by `now`, unless the faults are over.
fn next_due(
    faults: &mut VecDeque<(Duration, Fault)>,
    now: Duration,
    healed: bool,
) -> Option<Fault> {
    if healed || faults.front().is_none_or(|(at, _)| *at > now) {
        return None;
    }
    faults.pop_front().map(|(_, fault)| fault)
}

/// Steps the world once: `Ok(done)`, or `Err(finished)` when the run ends here (a host
/// failed: true; a panic cut the run short: false).
fn step(sim: &mut turmoil::Sim<'_>, violations: &mut Vec<String>) -> Result<bool, bool> {
    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step()));
    match step {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => {
            violations.push(format!("the simulation stopped: {e}"));
            Err(true)
        }
        Err(_) => {
            violations.push("a host panicked out of the simulation".into());
            Err(false)
        }
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
        let done = match step(sim, violations) {
            Ok(done) => done,
            Err(finished) => return finished,
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
            crash_gateway(sim, GATEWAY, &clients, &stalls);
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
        while let Some(fault) = next_due(&mut faults, now, healed) {
            match fault {
                Fault::Crash { down } if restart_at.is_none() => {
                    let report = disk.crash();
                    crash_gateway(sim, GATEWAY, &clients, &stalls);
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

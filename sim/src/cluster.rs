//! The `cluster` scenario's run: two gateway nodes ([`NODES`]), each the real servers of
//! [`hosts::gateway`] on its own store, both on one model of a shared database
//! ([`ModelDatabase`]). Senders deliver through either node and the archiver picks up
//! through either, while the driver crashes nodes, cuts a node off the database, restarts
//! the database, and makes a commit lose its connection after or without taking effect.
//!
//! The rules are the single node's ([`crate::invariants`]): what the store answered 250 for
//! is there at the end (after one more database restart) or was archived, nothing a session
//! did not delete in a completed UPDATE goes away, counters match the messages. A commit
//! whose outcome a node could not know is never acknowledged, so its sender retries and the
//! message may be stored twice: the rules allow duplicates of journaled messages.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gateway::store::model::{ModelDatabase, NodeId};
use rand::rngs::SmallRng;

use crate::hosts::gateway::{open_model_store, StoreAt, NODES};
use crate::hosts::{self, Shared};
use crate::scenario::{Fault, Plan};
use crate::{
    begin, clients, conclude, crash_gateway, create_mailboxes, next_due, not_set_up, paths,
    read_store, step, Bug, Options, Outcome,
};

/// The connection the offline tools (creating the mailboxes, reading back) use.
const OFFLINE: NodeId = NODES.len();

/// With the wrong variant on, how often the database writes what it reported committed
/// (PostgreSQL's `wal_writer_delay` is 200 ms by default; with `synchronous_commit = off`
/// a commit waits up to three of them).
const FLUSH_INTERVAL: Duration = Duration::from_millis(600);

pub(crate) fn run(options: Options, mut rng: SmallRng) -> Outcome {
    let db = ModelDatabase::new();
    let shared = Rc::new(Shared::default());
    let mailboxes = match create_mailboxes(&|| open_model_store(&db, OFFLINE)) {
        Ok(m) => m,
        Err(e) => return not_set_up(options, &e),
    };
    // After the set-up, so the mailboxes themselves are flushed.
    match options.bug {
        Some(Bug::UnflushedCommit) => db.lose_unflushed_commits(true),
        Some(Bug::TrustedLostCommit) => db.trust_lost_commits(true),
        _ => {}
    }
    let plan = Plan::draw(options.scenario, &mut rng, &mailboxes);
    for (node, latency) in plan
        .cluster
        .iter()
        .flat_map(|c| c.latency.iter().enumerate())
    {
        db.set_latency(node, *latency);
    }
    let mut sim = begin(options, &plan, &shared, &mut rng);
    for (node, name) in NODES.into_iter().enumerate() {
        let (db, shared) = (db.clone(), shared.clone());
        sim.host(name, move || {
            let at = StoreAt::Model(db.clone(), node);
            hosts::gateway::run(name, at, shared.clone(), false, false)
        });
    }
    clients(&mut sim, &plan, &shared, &mut rng);

    let mut violations = Vec::new();
    let finished = drive(&mut sim, &plan, &db, &shared, &mut violations);
    let sim_time = sim.elapsed();
    if finished {
        for name in NODES {
            sim.crash(name);
        }
        drop(sim);
    } else {
        // A panic left the world half-stepped; dropping it could panic again.
        std::mem::forget(sim);
    }
    // The end of the run is one more database restart: everything acknowledged must
    // survive it.
    heal(&db);
    db.stop();
    db.start();
    // Taken before the store is read back: reading unseals, and that is not the run's.
    let paths = paths::take();
    let final_store = read_store(&|| open_model_store(&db, OFFLINE), &mailboxes);
    conclude(options, &shared, violations, (sim_time, paths), final_store)
}

/// Ends every database fault: partitions healed, the server up, no commit armed to fail.
fn heal(db: &ModelDatabase) {
    for node in 0..NODES.len() {
        db.partition(node, false);
    }
    db.start();
    db.arm_ambiguous_commit(None);
}

/// Steps the world and injects the faults; false if a panic cut the run short.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    plan: &Plan,
    db: &Arc<ModelDatabase>,
    shared: &Shared,
    violations: &mut Vec<String>,
) -> bool {
    let log = |at: Duration, what: String| shared.trace.borrow_mut().push(at, "driver", what);
    let mut faults: VecDeque<(Duration, Fault)> = plan.faults.iter().cloned().collect();
    let clients: Vec<String> = plan
        .senders
        .iter()
        .map(|s| s.name.clone())
        .chain(std::iter::once("archiver".to_owned()))
        .collect();
    // Crashed nodes, until when; partitioned nodes, until when; the database down, until.
    let mut restarts: Vec<(Duration, NodeId)> = Vec::new();
    let mut partitions: Vec<(Duration, NodeId)> = Vec::new();
    let mut db_up_at: Option<Duration> = None;
    let mut armed = None;
    let mut next_flush = FLUSH_INTERVAL;
    let mut healed = false;
    loop {
        let done = match step(sim, violations) {
            Ok(done) => done,
            Err(finished) => return finished,
        };
        let now = sim.elapsed();
        if now >= next_flush {
            db.flush();
            next_flush = now + FLUSH_INTERVAL;
        }
        if let Some(applied) = armed {
            if !db.ambiguous_commit_armed() {
                armed = None;
                log(
                    now,
                    format!(
                        "a commit lost its connection {} taking effect",
                        if applied { "after" } else { "without" }
                    ),
                );
            }
        }
        restarts.retain(|&(at, node)| {
            let due = at <= now;
            if due {
                sim.bounce(NODES[node]);
                log(now, format!("{} restarted", NODES[node]));
            }
            !due
        });
        partitions.retain(|&(at, node)| {
            let due = at <= now;
            if due {
                db.partition(node, false);
                log(now, format!("{} <-> database flows again", NODES[node]));
            }
            !due
        });
        if db_up_at.is_some_and(|at| at <= now) {
            db_up_at = None;
            db.start();
            log(now, "database up again".into());
        }
        while let Some(fault) = next_due(&mut faults, now, healed) {
            match fault {
                Fault::NodeCrash { node, down } if restarts.iter().all(|(_, n)| *n != node) => {
                    crash_gateway(sim, NODES[node], &clients, &[]);
                    restarts.push((now + down, node));
                    log(now, format!("{} crashed for {down:?}", NODES[node]));
                }
                Fault::DbPartition { node, for_ } => {
                    db.partition(node, true);
                    // An overlapping cut of the same link lasts until the later end.
                    let until = partitions
                        .iter()
                        .filter(|(_, n)| *n == node)
                        .map(|(at, _)| *at)
                        .fold(now + for_, Duration::max);
                    partitions.retain(|(_, n)| *n != node);
                    partitions.push((until, node));
                    log(
                        now,
                        format!("{} <-> database cut for {for_:?}", NODES[node]),
                    );
                }
                Fault::DbRestart { down } if db_up_at.is_none() => {
                    db.stop();
                    db_up_at = Some(now + down);
                    log(now, format!("database restarts, down for {down:?}"));
                }
                Fault::AmbiguousCommit { applied } => {
                    db.arm_ambiguous_commit(Some(applied));
                    armed = Some(applied);
                    log(
                        now,
                        format!("the next commit will lose its connection (applied: {applied})"),
                    );
                }
                skipped => log(now, format!("skipped {skipped:?}")),
            }
        }
        if !healed && now >= plan.faults_end {
            healed = true;
            heal(db);
            if armed.take().is_some() {
                log(now, "no commit met the armed connection loss".into());
            }
            partitions.clear();
            db_up_at = None;
            for (_, node) in restarts.drain(..) {
                sim.bounce(NODES[node]);
            }
            shared.faults_over.set(true);
            log(now, "faults over".into());
        }
        if done {
            return true;
        }
    }
}

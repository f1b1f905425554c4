//! The gateway's production paths as the simulation runs them, counted: the executor the
//! simulated gateway is given runs its blocking jobs (Argon2id unseals, messages whose
//! opening needs a key agreement, compactions) and the store's group-commit writer as tasks
//! of the simulated runtime, and this module counts what ran, so the CI seeds can show these
//! paths are taken.

use std::cell::Cell;
use std::time::Duration;

use gateway::exec::{Background, Executor, Job, RuntimeTasks, Spawn};
use gateway::store::CommitObserver;

/// What one run's gateway did on its production paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Paths {
    /// Argon2id unseals run off the session tasks.
    pub unseals: u64,
    /// Messages opened off the session's task because they needed a key agreement (the
    /// first of each epoch a session reads).
    pub key_agreements: u64,
    /// Other blocking jobs (compactions).
    pub other_jobs: u64,
    /// Durable group commits.
    pub commits: u64,
    /// Commits that made more than one write durable at once.
    pub shared_commits: u64,
    /// The most writes one commit made durable.
    pub largest_batch: usize,
    /// Envelopes the SMTP proxy sent the upstream as one pipelined group (MAIL came with
    /// the next command already behind it).
    pub pipelined_groups: u64,
}

thread_local! {
    // Each run is one thread's turmoil simulation, so per-thread counts are per run.
    static PATHS: Cell<Paths> = const { Cell::new(Paths { unseals: 0, key_agreements: 0, other_jobs: 0, commits: 0, shared_commits: 0, largest_batch: 0, pipelined_groups: 0 }) };
}

fn update(change: impl FnOnce(&mut Paths)) {
    PATHS.with(|paths| {
        let mut now = paths.get();
        change(&mut now);
        paths.set(now);
    });
}

/// The simulated upstream got a MAIL with the next command already behind it.
pub fn pipelined_group() {
    update(|p| p.pipelined_groups += 1);
}

/// Starts counting a new run; returns what the previous one counted.
pub fn take() -> Paths {
    PATHS.with(|paths| paths.replace(Paths::default()))
}

/// The executor the simulated gateway gets: the gateway's own [`RuntimeTasks`], counted.
pub fn executor() -> Executor {
    Executor::new(Counted)
}

struct Counted;

impl Spawn for Counted {
    fn blocking(&self, what: &'static str, job: Job) {
        update(|p| match what {
            "unseal" => p.unseals += 1,
            "key-agreement" => p.key_agreements += 1,
            _ => p.other_jobs += 1,
        });
        RuntimeTasks.blocking(what, job);
    }

    fn background(
        &self,
        name: &str,
        work: Background,
    ) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
        RuntimeTasks.background(name, work)
    }
}

/// Counts the store's group commits (set before the service's own observer, which then
/// stays unset: the simulation reads no metrics).
pub struct Commits;

impl CommitObserver for Commits {
    fn committed(&self, requests: usize, _took: Duration) {
        update(|p| {
            p.commits += 1;
            if requests > 1 {
                p.shared_commits += 1;
            }
            p.largest_batch = p.largest_batch.max(requests);
        });
    }
}

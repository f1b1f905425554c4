//! The group-commit writer.
//!
//! redb allows one write transaction at a time and a durable commit costs one fsync, so the
//! store funnels every write through one loop (its own thread in production, see
//! [`crate::exec`]). While a commit is syncing, new requests queue up; the next round takes all of them into one transaction and one fsync. Under load
//! that amortises the fsync over the batch, so durability does not cap throughput.
//!
//! Sharing a transaction must not mean sharing a fate. A request that fails on its own (its
//! input cannot be read, a record it reads is damaged, it panics) may have written part of its
//! work, and redb cannot undo part of a transaction; so the transaction is dropped, that
//! request alone is told, and the others run again in a fresh one. Only a failure of the
//! storage itself fails the whole batch and reopens the database. The loop survives panics:
//! each request runs under `catch_unwind`, and so does each batch as a whole.
//!
//! When no request waits, the loop removes the chunks of retired messages (see
//! [`Writes::retire_message`]), one small commit at a time, so a deletion's commit (a POP3
//! QUIT) does not wait for every chunk page it frees to be read.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::exec::Executor;

use super::durable::Synced;
use super::{CommitObserver, Durable, StoreError, Writes};

/// One unit of work inside a shared transaction. It must check its preconditions before
/// writing anything and report a broken rule inside its `Ok` value, leaving the transaction
/// untouched. An `Err` that is a storage failure ([`StoreError::is_storage_failure`]) fails
/// the whole batch; any other `Err`, or a panic, fails this request alone. It may run more
/// than once (when another request of its batch fails), so it must not consume what it
/// captured: hence `Fn`.
pub type WriteFn = Box<dyn Fn(&dyn Writes) -> Result<Outcome, StoreError> + Send>;
pub type Outcome = Box<dyn std::any::Any + Send>;

type Reply = oneshot::Sender<Result<(Outcome, Durable), StoreError>>;

pub struct Request {
    pub work: WriteFn,
    pub reply: Reply,
}

/// How often a batch runs again after losing a conflict with another node's transaction
/// (a deadlock PostgreSQL broke by aborting ours) before its requests are told.
const CONFLICT_RETRIES: u32 = 3;

/// Most requests in one transaction, so one huge batch cannot delay its first request's reply
/// without bound.
const MAX_BATCH: usize = 256;

/// Chunks of retired messages one purge commit removes (64 pages of 64 KiB: a 4 MiB
/// message), so a request that arrives during a purge waits for little more than that.
pub const PURGE_BUDGET: u32 = 64;

/// While the database is closed after a storage error, the writer tries to reopen it this
/// often (doubling up to the maximum), so reads recover even when no write comes.
const REOPEN_FIRST_PAUSE: Duration = Duration::from_millis(20);
const REOPEN_MAX_PAUSE: Duration = Duration::from_secs(2);

/// What the writer needs from a backend: transactions to run requests in, a durable commit
/// (the only way to a [`Synced`] proof), and a way back after the storage failed. The redb
/// engine is `redb_engine`; the writer's rules (batching, one request's failure is its own,
/// a storage failure fails the batch) are the same for every backend.
pub trait WriteEngine: Send + 'static {
    type Txn<'a>: Writes
    where
        Self: 'a;

    /// Whether the database is open (false while closed after a storage failure).
    fn is_open(&self) -> bool;

    /// How long a batch waits before it starts: the model database's round trip in the
    /// simulation (the only place a wait can be in simulated time, as every other call is
    /// synchronous). Real backends take their time inside their calls: `None`.
    fn batch_delay(&self) -> Option<Duration> {
        None
    }

    /// Makes the database ready for a batch, reopening it first if a failure closed it.
    fn prepare(&mut self) -> Result<(), StoreError>;

    /// A new transaction. An error here is a storage failure: the batch fails.
    fn begin(&mut self) -> Result<Self::Txn<'_>, StoreError>;

    /// Commits `txn` durably.
    fn commit(txn: Self::Txn<'_>) -> Result<Synced, StoreError>;

    /// Throws `txn` away.
    fn discard(txn: Self::Txn<'_>);

    /// Lets go of what [`WriteEngine::prepare`] took for the batch.
    fn release(&mut self);

    /// Closes the database after a storage failure; readers see [`StoreError::Reopening`]
    /// until a reopen succeeds.
    fn close(&mut self);

    /// One attempt at reopening after [`WriteEngine::close`].
    fn try_reopen(&mut self) -> Result<(), StoreError>;

    /// Whether a test asked the writer to panic outside any request.
    #[cfg(test)]
    fn crash_requested(&self) -> bool {
        false
    }
}

/// Where the store's commit observer (the metrics) is set, once, after opening.
pub type ObserverCell = Arc<std::sync::OnceLock<Arc<dyn CommitObserver>>>;

/// Starts the writer loop on `executor` (production: its own thread; the simulation: a task
/// of its runtime). The loop ends when every sender is gone; join the handle, if any, to know
/// the database is closed. While `purge` is set, the loop removes chunks of retired messages
/// whenever no request waits ([`Writes::purge_chunks`]); it starts set, for chunks a
/// previous run left.
pub fn spawn<E: WriteEngine>(
    engine: E,
    observer: ObserverCell,
    purge: Arc<AtomicBool>,
    executor: &Executor,
) -> std::io::Result<(
    mpsc::UnboundedSender<Request>,
    Option<std::thread::JoinHandle<()>>,
)> {
    let (tx, rx) = mpsc::unbounded_channel::<Request>();
    let thread = executor.background("store-writer", run(engine, observer, purge, rx))?;
    Ok((tx, thread))
}

/// Takes every request waiting into one batch and commits it, until every sender is gone.
/// A panic outside the requests (each runs under its own `catch_unwind`) closes the database
/// and the loop goes on: a fresh open starts from the last commit.
async fn run<E: WriteEngine>(
    mut engine: E,
    observer: ObserverCell,
    purge: Arc<AtomicBool>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    let mut pause = REOPEN_FIRST_PAUSE;
    loop {
        // One purge commit per turn, and only with no request waiting: requests never wait
        // for more than one. A purge that fails stops until the next retirement asks again;
        // at shutdown what is left waits for the next start.
        if rx.is_empty()
            && !rx.is_closed()
            && engine.is_open()
            && purge.swap(false, Ordering::AcqRel)
        {
            if purge_step(&mut engine) {
                purge.store(true, Ordering::Release);
            }
            continue;
        }
        // Wakes now and then even when idle: something other than a commit (a compaction on
        // a full disk) may have closed the database, and reads wait for the reopen.
        let open = engine.is_open();
        let wait = if open { REOPEN_MAX_PAUSE } else { pause };
        let first = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(_elapsed) => {
                if !open {
                    pause = match engine.try_reopen() {
                        Ok(()) => REOPEN_FIRST_PAUSE,
                        Err(_) => (pause * 2).min(REOPEN_MAX_PAUSE),
                    };
                }
                continue;
            }
        };
        if let Some(delay) = engine.batch_delay() {
            // Requests arriving meanwhile join the batch, as during a real round trip.
            tokio::time::sleep(delay).await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        guarded(&mut engine, |engine| {
            #[cfg(test)]
            if engine.crash_requested() {
                panic!("writer crash requested by a test");
            }
            commit_batch(engine, batch, observer.get().map(|o| &**o));
        });
    }
}

/// Runs `commit` on `engine`; a panic outside the requests (each runs under its own
/// `catch_unwind`) closes the database, and the writer goes on: a fresh open starts from the
/// last commit.
fn guarded<E: WriteEngine>(engine: &mut E, commit: impl FnOnce(&mut E)) {
    if panic::catch_unwind(AssertUnwindSafe(|| commit(&mut *engine))).is_err() {
        tracing::error!("the store writer failed unexpectedly; restarting it");
        engine.release();
        engine.close();
    }
}

/// One commit removing at most [`PURGE_BUDGET`] chunks of retired messages, with the
/// failure handling of any batch; whether chunks are left to remove.
fn purge_step<E: WriteEngine>(engine: &mut E) -> bool {
    let (reply, mut outcome) = oneshot::channel();
    let work: WriteFn = Box::new(|t| Ok(Box::new(t.purge_chunks(PURGE_BUDGET)?) as Outcome));
    // Not told to the commit observer: its metrics count the requests a commit answers.
    guarded(engine, |engine| {
        commit_batch(engine, vec![Request { work, reply }], None)
    });
    // `commit_batch` answers every request before it returns; after a panic the reply is
    // gone, and nothing is purged until the next deletion.
    match outcome.try_recv() {
        Ok(Ok((more, _))) => more.downcast::<bool>().is_ok_and(|more| *more),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "removing the chunks of deleted messages failed; tried again after the next deletion");
            false
        }
        Err(_) => false,
    }
}

/// Commits a batch: every request gets its reply, each committed one with its `Durable`.
pub fn commit_batch<E: WriteEngine>(
    engine: &mut E,
    mut batch: Vec<Request>,
    observer: Option<&dyn CommitObserver>,
) {
    // Each round either ends the batch, leaves one request fewer, or counts a conflict, so
    // this ends.
    let mut conflicts = 0;
    while !batch.is_empty() {
        if let Err(e) = engine.prepare() {
            return fail_all(batch, &e);
        }
        let round = commit_round(engine, batch, observer);
        engine.release();
        match round {
            Round::Done => return,
            Round::Again(rest) => batch = rest,
            Round::Conflict(all, e) => {
                conflicts += 1;
                if conflicts > CONFLICT_RETRIES {
                    return fail_all(all, &e);
                }
                tracing::debug!(error = %e, "a batch lost a conflict; it runs again");
                batch = all;
            }
            Round::StorageFailed => {
                engine.close();
                // Right away if no reader holds the old file; else the writer retries.
                let _ = engine.try_reopen();
                return;
            }
        }
    }
}

enum Round {
    /// Every request was answered.
    Done,
    /// One request failed on its own and was answered; these run again in a new transaction.
    Again(Vec<Request>),
    /// Another transaction won a conflict: nothing was committed or answered, and the whole
    /// batch may run again.
    Conflict(Vec<Request>, StoreError),
    /// The storage failed; every request was answered with the error.
    StorageFailed,
}

/// Runs the requests in one transaction.
fn commit_round<E: WriteEngine>(
    engine: &mut E,
    mut batch: Vec<Request>,
    observer: Option<&dyn CommitObserver>,
) -> Round {
    let started = std::time::Instant::now();
    // Moving `engine` into the closure makes it run once, so the transaction may borrow it.
    let begin = move || {
        let engine = engine;
        engine.begin()
    };
    let txn = match panic::catch_unwind(AssertUnwindSafe(begin)) {
        Ok(Ok(txn)) => txn,
        Ok(Err(e)) => return storage_failed(batch, &e),
        Err(_) => return storage_failed(batch, &panicked("starting a write transaction")),
    };
    let mut results = Vec::with_capacity(batch.len());
    let mut failure = None;
    for (index, request) in batch.iter().enumerate() {
        match panic::catch_unwind(AssertUnwindSafe(|| (request.work)(&txn))) {
            Ok(Ok(outcome)) => results.push(outcome),
            Ok(Err(e)) => {
                failure = Some((index, e));
                break;
            }
            Err(_) => {
                failure = Some((index, panicked("a write request")));
                break;
            }
        }
    }
    if let Some((index, e)) = failure {
        // The transaction may hold part of the failed request's writes: drop all of it.
        discard::<E>(txn);
        if e.is_conflict() {
            return Round::Conflict(batch, e);
        }
        if e.is_storage_failure() {
            return storage_failed(batch, &e);
        }
        // The failure is this request's own: answer it, and let the others run again.
        tracing::warn!(error = %e, "one write failed on its own; its batch runs again without it");
        let culprit = batch.remove(index);
        let _ = culprit.reply.send(Err(e));
        return Round::Again(batch);
    }
    match panic::catch_unwind(AssertUnwindSafe(|| E::commit(txn))) {
        Ok(Ok(synced)) => {
            tracing::trace!(requests = batch.len(), "store commit");
            if let Some(observer) = observer {
                observer.committed(batch.len(), started.elapsed());
            }
            for (request, result) in batch.into_iter().zip(results) {
                let _ = request.reply.send(Ok((result, synced.proof())));
            }
            Round::Done
        }
        Ok(Err(e)) if e.is_conflict() => Round::Conflict(batch, e),
        Ok(Err(e)) => storage_failed(batch, &e),
        Err(_) => storage_failed(batch, &panicked("committing")),
    }
}

/// Drops a transaction without committing. A panic while dropping is contained; the next
/// round's `begin` shows whether the database is still usable.
fn discard<E: WriteEngine>(txn: E::Txn<'_>) {
    let _ = panic::catch_unwind(AssertUnwindSafe(|| E::discard(txn)));
}

fn panicked(what: &str) -> StoreError {
    tracing::error!("the store writer caught a panic in {what}");
    StoreError::Internal(format!("{what} failed unexpectedly; nothing was committed"))
}

fn storage_failed(batch: Vec<Request>, e: &StoreError) -> Round {
    fail_all(batch, e);
    Round::StorageFailed
}

fn fail_all(batch: Vec<Request>, e: &StoreError) {
    tracing::error!(error = %e, requests = batch.len(), "store write failed");
    for request in batch {
        let _ = request.reply.send(Err(e.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailboxId;
    use crate::store::handle::DbHandle;
    use crate::store::redb_engine::RedbEngine;
    use crate::store::Reads;
    use redb::Database;

    type Answer = oneshot::Receiver<Result<(Outcome, Durable), StoreError>>;

    const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn mailbox() -> MailboxId {
        MailboxId::parse("mbx-00000000000000000000000000000001").unwrap()
    }

    fn handle() -> (tempfile::TempDir, Arc<DbHandle>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.redb");
        let (handle, _) = DbHandle::open(Box::new(move || Ok(Database::create(&path)?))).unwrap();
        (dir, Arc::new(handle))
    }

    fn request(
        work: impl Fn(&dyn Writes) -> Result<(), StoreError> + Send + 'static,
    ) -> (Request, Answer) {
        let (reply, answer) = oneshot::channel();
        let work: WriteFn = Box::new(move |txn| work(txn).map(|()| Box::new(()) as Outcome));
        (Request { work, reply }, answer)
    }

    /// Records `key` as a retrieval key: a row any test write can leave behind.
    fn put(key: &'static str) -> impl Fn(&dyn Writes) -> Result<(), StoreError> {
        move |txn| txn.put_retrieved(&mailbox(), key.as_bytes(), 1)
    }

    fn keys(handle: &DbHandle) -> Vec<String> {
        let db = handle.current().unwrap();
        let txn = redb::ReadableDatabase::begin_read(&*db).unwrap();
        KEYS.iter()
            .filter(|key| txn.retrieved(&mailbox(), key.as_bytes()).unwrap_or(false))
            .map(|key| key.to_string())
            .collect()
    }

    fn outcome(mut answer: Answer) -> Result<(), StoreError> {
        answer.try_recv().unwrap().map(|_| ())
    }

    #[test]
    fn writes_failing_on_their_own_leave_the_rest_of_their_batch_committed() {
        let (_dir, handle) = handle();
        let (a, a_answer) = request(put("a"));
        // Writes part of its work, then finds its own input unreadable.
        let (b, b_answer) = request(|txn| {
            put("b")(txn)?;
            Err(StoreError::Input("spool: unexpected end of file".into()))
        });
        let (c, c_answer) = request(put("c"));
        // Writes part of its work, then panics.
        let (d, d_answer) = request(|txn| {
            put("d")(txn)?;
            panic!("a bug in one request");
        });
        let (e, e_answer) = request(put("e"));
        commit_batch(
            &mut RedbEngine::new(handle.clone()),
            vec![a, b, c, d, e],
            None,
        );

        assert_eq!(outcome(a_answer), Ok(()));
        assert!(matches!(outcome(b_answer), Err(StoreError::Input(_))));
        assert_eq!(outcome(c_answer), Ok(()));
        assert!(matches!(outcome(d_answer), Err(StoreError::Internal(_))));
        assert_eq!(outcome(e_answer), Ok(()));
        assert_eq!(keys(&handle), ["a", "c", "e"], "nothing of b or d was kept");
        assert_eq!(handle.reopens(), 0, "no storage error, no reopen");
    }

    #[test]
    fn a_storage_failure_fails_the_whole_batch_and_reopens() {
        let (_dir, handle) = handle();
        let (a, a_answer) = request(put("a"));
        let (b, b_answer) = request(|_| Err(StoreError::Io("disk error".into())));
        commit_batch(&mut RedbEngine::new(handle.clone()), vec![a, b], None);
        assert!(matches!(outcome(a_answer), Err(StoreError::Io(_))));
        assert!(matches!(outcome(b_answer), Err(StoreError::Io(_))));
        assert_eq!(handle.reopens(), 1);
        assert!(keys(&handle).is_empty());
    }

    #[test]
    fn a_batch_that_loses_a_conflict_runs_again_whole() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let (_dir, handle) = handle();
        let (a, a_answer) = request(put("a"));
        let tries = Arc::new(AtomicU32::new(0));
        let counted = tries.clone();
        // Another node's transaction wins the first time only.
        let (b, b_answer) = request(move |txn| {
            put("b")(txn)?;
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(StoreError::Conflict("deadlock detected".into()));
            }
            Ok(())
        });
        commit_batch(&mut RedbEngine::new(handle.clone()), vec![a, b], None);
        assert_eq!(outcome(a_answer), Ok(()));
        assert_eq!(
            outcome(b_answer),
            Ok(()),
            "the conflict is not the request's fault"
        );
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        assert_eq!(keys(&handle), ["a", "b"]);
        assert_eq!(handle.reopens(), 0, "a conflict is not a storage failure");
    }

    #[test]
    fn a_batch_that_keeps_losing_conflicts_is_told_after_a_few_tries() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let (_dir, handle) = handle();
        let (a, a_answer) = request(put("a"));
        let tries = Arc::new(AtomicU32::new(0));
        let counted = tries.clone();
        let (b, b_answer) = request(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Conflict("deadlock detected".into()))
        });
        commit_batch(&mut RedbEngine::new(handle.clone()), vec![a, b], None);
        assert!(matches!(outcome(a_answer), Err(StoreError::Conflict(_))));
        assert!(matches!(outcome(b_answer), Err(StoreError::Conflict(_))));
        assert_eq!(tries.load(Ordering::SeqCst), CONFLICT_RETRIES + 1);
        assert!(keys(&handle).is_empty(), "nothing was committed");
    }
}

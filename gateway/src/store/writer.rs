//! The group-commit writer.
//!
//! redb allows one write transaction at a time and a durable commit costs one fsync, so the
//! store funnels every write through one thread. While a commit is syncing, new requests
//! queue up; the next round takes all of them into one transaction and one fsync. Under load
//! that amortises the fsync over the batch, so durability does not cap throughput.

use std::sync::mpsc;
use std::sync::Arc;

use redb::WriteTransaction;

use super::handle::DbHandle;
use tokio::sync::oneshot;

use super::durable::Synced;
use super::{Durable, StoreError};

/// One unit of work inside a shared transaction. It must check its preconditions before
/// writing anything and report a broken rule inside its `Ok` value, leaving the transaction
/// untouched, because other requests' writes share it. A storage error (`Err`) aborts the
/// whole batch instead, and every request in it is told.
pub type WriteFn = Box<dyn FnOnce(&WriteTransaction) -> Result<Outcome, StoreError> + Send>;
pub type Outcome = Box<dyn std::any::Any + Send>;

type Reply = oneshot::Sender<Result<(Outcome, Durable), StoreError>>;

pub struct Request {
    pub work: WriteFn,
    pub reply: Reply,
}

/// Most requests in one transaction, so one huge batch cannot delay its first request's reply
/// without bound.
const MAX_BATCH: usize = 256;

pub fn spawn(
    db: Arc<DbHandle>,
) -> std::io::Result<(mpsc::Sender<Request>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Request>();
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || run(db, rx))?;
    Ok((tx, thread))
}

fn run(db: Arc<DbHandle>, rx: mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit_batch(&db, batch);
    }
}

pub fn commit_batch(handle: &DbHandle, batch: Vec<Request>) {
    let db = match handle.get() {
        Ok(db) => db,
        Err(e) => return fail_all(batch, e),
    };
    #[cfg(feature = "test-support")]
    let skip_sync = handle.skip_sync.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "test-support"))]
    let skip_sync = false;
    let failed = commit_on(&db, batch, skip_sync);
    drop(db);
    if failed {
        // redb refuses everything after an I/O error until reopened.
        let _ = handle.reopen();
    }
}

/// Runs one batch; true if storage failed (and the database needs reopening). `skip_sync`
/// is the wrong variant a test-support build can switch on (see `Store::skip_sync_for_tests`).
fn commit_on(db: &redb::Database, batch: Vec<Request>, skip_sync: bool) -> bool {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            fail_all(batch, StoreError::from(e));
            return true;
        }
    };
    if skip_sync {
        if let Err(e) = txn.set_durability(redb::Durability::None) {
            fail_all(batch, StoreError::Corrupt(e.to_string()));
            return true;
        }
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for request in batch {
        match (request.work)(&txn) {
            Err(e) => {
                // The transaction may hold partial writes of this request: abort all of it.
                drop(txn);
                let mut pending = replies;
                pending.push(request.reply);
                for reply in pending {
                    let _ = reply.send(Err(e.clone()));
                }
                return true;
            }
            Ok(outcome) => {
                results.push(outcome);
                replies.push(request.reply);
            }
        }
    }
    match Synced::commit(txn) {
        Ok(synced) => {
            tracing::trace!(requests = replies.len(), "store commit");
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok((result, synced.proof())));
            }
            false
        }
        Err(e) => {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "store commit failed");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            true
        }
    }
}

fn fail_all(batch: Vec<Request>, e: StoreError) {
    tracing::error!(error = %e, "store write transaction could not start");
    for request in batch {
        let _ = request.reply.send(Err(e.clone()));
    }
}

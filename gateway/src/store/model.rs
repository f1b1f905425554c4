//! A model of a networked database that several gateway nodes share (issue #18), for the
//! simulator and tests (feature `test-support`): the tables of the redb and PostgreSQL
//! schemas in memory, and the faults a network and a database server bring.
//!
//! [`ModelDatabase`] is the server, shared as `Arc`; [`Store::open_model`](super::Store::open_model)
//! opens one node's store on it: a writer connection (`ModelEngine`, driven by the same
//! group-commit writer as every backend, committing through `Synced::commit_model`, the
//! one way to a proof) and reads (`ModelReadSource`).
//!
//! Semantics, simplified from PostgreSQL's `READ COMMITTED` with row locks:
//! - a write transaction works on its own copy of the committed tables (so it sees its own
//!   writes) and its commit replaces them at once: atomic;
//! - one write transaction at a time in the whole database: `begin` while another node's
//!   transaction is open fails with [`StoreError::Conflict`], which the writer retries. That
//!   is stricter than row locks (two mailboxes' writes serialise too) but never weaker, and
//!   it never blocks: the simulation runs every node on one thread;
//! - reads outside a write are one statement each on the committed tables, as `PgRead`'s
//!   autocommit statements: no consistent view across calls.
//!
//! Faults, set by whoever drives the model (the simulator, from its seed):
//! - [`ModelDatabase::partition`]: a node's calls fail with [`StoreError::Io`] (a timeout on
//!   a connection that still looks open); reconnecting fails until healed;
//! - [`ModelDatabase::stop`] / [`ModelDatabase::start`]: a server restart. Every connection
//!   breaks (open transactions are lost, committed data stays); reconnecting fails while it
//!   is down and works once it is up;
//! - [`ModelDatabase::arm_ambiguous_commit`]: the next commit loses its connection at the
//!   moment of `COMMIT`: the node sees [`StoreError::Io`], and the commit either took
//!   effect or did not, as armed. The node must not acknowledge, and may store a message
//!   twice when its sender retries;
//! - [`ModelDatabase::set_latency`]: a node's round trip, waited (in the runtime's time)
//!   before each batch of its writer (the writer engine's `batch_delay`).
//!   Reads and the statements inside a write are synchronous calls and take no time.
//!
//! And the deliberately wrong variants the simulator must catch:
//! [`ModelDatabase::lose_unflushed_commits`], the server reports commits before they are
//! flushed (PostgreSQL's `synchronous_commit = off`), and what [`ModelDatabase::flush`] has
//! not yet written is lost at the next restart; [`ModelDatabase::trust_lost_commits`], a
//! node takes a connection lost at `COMMIT` for a commit that happened.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::durable::Synced;
use super::writer::WriteEngine;
use super::{
    AdminRecord, ApiKeyRecord, MailboxRecord, MessageRecord, ReadSource, Reads, StoreError, Writes,
};
use crate::crypto::MessageId;
use crate::mailbox::MailboxId;

/// A node of the cluster, as the database tells its connections apart.
pub type NodeId = usize;

/// The tables, as in `schema` (records kept decoded; chunks shared, as they never change).
#[derive(Clone)]
struct Tables {
    next_seq: u64,
    mailboxes: BTreeMap<MailboxId, MailboxRecord>,
    messages: BTreeMap<(MailboxId, u64), MessageRecord>,
    chunks: BTreeMap<(MessageId, u32), Arc<[u8]>>,
    retrieved: BTreeMap<(MailboxId, Vec<u8>), u64>,
    admin: AdminRecord,
    api_keys: BTreeMap<String, ApiKeyRecord>,
}

impl Default for Tables {
    /// A migrated, empty database: the initial administrator, sequence numbers from 1.
    fn default() -> Self {
        Self {
            next_seq: 1,
            mailboxes: BTreeMap::new(),
            messages: BTreeMap::new(),
            chunks: BTreeMap::new(),
            retrieved: BTreeMap::new(),
            admin: AdminRecord::initial(),
            api_keys: BTreeMap::new(),
        }
    }
}

impl Tables {
    fn mailbox_messages<'t>(
        &'t self,
        id: &MailboxId,
    ) -> impl Iterator<Item = (u64, &'t MessageRecord)> + 't {
        self.messages
            .range((id.clone(), 0)..=(id.clone(), u64::MAX))
            .map(|((_, seq), record)| (*seq, record))
    }
}

/// The server's state.
struct Server {
    tables: Tables,
    /// With the wrong variant on: the tables as last flushed, which a restart goes back to.
    flushed: Option<Tables>,
    up: bool,
    /// Bumped at every restart: connections of an older incarnation are broken.
    incarnation: u64,
    /// Per node, bumped when its writer's connection broke (an ambiguous commit).
    writer_generation: BTreeMap<NodeId, u64>,
    partitioned: BTreeSet<NodeId>,
    latency: BTreeMap<NodeId, Duration>,
    /// The open write transaction, if any (its serial number).
    writing: Option<u64>,
    serials: u64,
    /// The next commit loses its connection; true: after taking effect.
    ambiguous: Option<bool>,
    /// The wrong variant: a commit that lost its connection is reported as done.
    trust_lost: bool,
}

/// The shared database. Its methods are the faults; nodes reach it through
/// [`Store::open_model`](super::Store::open_model).
pub struct ModelDatabase {
    server: Mutex<Server>,
}

impl ModelDatabase {
    /// A running server with empty (migrated) tables.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            server: Mutex::new(Server {
                tables: Tables::default(),
                flushed: None,
                up: true,
                incarnation: 0,
                writer_generation: BTreeMap::new(),
                partitioned: BTreeSet::new(),
                latency: BTreeMap::new(),
                writing: None,
                serials: 0,
                ambiguous: None,
                trust_lost: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Server> {
        self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts (`true`) or heals the network between `node` and the database.
    pub fn partition(&self, node: NodeId, cut: bool) {
        let mut server = self.lock();
        if cut {
            server.partitioned.insert(node);
        } else {
            server.partitioned.remove(&node);
        }
    }

    /// Stops the server: every connection breaks, open transactions are lost, and with the
    /// wrong variant on, so is everything committed since the last [`Self::flush`].
    pub fn stop(&self) {
        let mut server = self.lock();
        server.up = false;
        server.incarnation += 1;
        server.writing = None;
        if let Some(flushed) = &server.flushed {
            server.tables = flushed.clone();
        }
    }

    /// Starts the server again; nodes reconnect.
    pub fn start(&self) {
        self.lock().up = true;
    }

    /// The next commit (whichever node makes it) loses its connection at `COMMIT`; it takes
    /// effect if `applied`. `None` disarms.
    pub fn arm_ambiguous_commit(&self, applied: Option<bool>) {
        self.lock().ambiguous = applied;
    }

    /// Whether an armed ambiguous commit is still waiting for a commit.
    pub fn ambiguous_commit_armed(&self) -> bool {
        self.lock().ambiguous.is_some()
    }

    /// `node`'s round trip to the database, waited before each of its writer's batches.
    pub fn set_latency(&self, node: NodeId, latency: Duration) {
        self.lock().latency.insert(node, latency);
    }

    /// The wrong variant: from now on commits are reported before they are flushed, and a
    /// restart loses what [`Self::flush`] has not written yet.
    pub fn lose_unflushed_commits(&self, on: bool) {
        let mut server = self.lock();
        server.flushed = on.then(|| server.tables.clone());
    }

    /// The wrong variant: from now on a commit that loses its connection (an armed
    /// ambiguous commit) is reported to the node as done, whether it took effect or not.
    pub fn trust_lost_commits(&self, on: bool) {
        self.lock().trust_lost = on;
    }

    /// Writes what was committed (the WAL writer's periodic flush, with the wrong variant on;
    /// without it every commit is flushed before it is reported).
    pub fn flush(&self) {
        let mut server = self.lock();
        if server.flushed.is_some() {
            server.flushed = Some(server.tables.clone());
        }
    }

    /// The server, if `link` reaches it: up, not partitioned, its connection not broken.
    fn reach(&self, link: &Link) -> Result<MutexGuard<'_, Server>, StoreError> {
        let server = self.lock();
        if server.partitioned.contains(&link.node) {
            return Err(StoreError::Io(
                "the database did not answer (network partition)".into(),
            ));
        }
        if !server.up || !link.alive(&server) {
            return Err(StoreError::Io(
                "the connection to the database was closed".into(),
            ));
        }
        Ok(server)
    }

    /// A new connection for `node` (a writer's, if `writer`).
    fn connect(self: &Arc<Self>, node: NodeId, writer: bool) -> Result<Link, StoreError> {
        let server = self.lock();
        if server.partitioned.contains(&node) {
            return Err(StoreError::Io(
                "cannot connect to the database (network partition)".into(),
            ));
        }
        if !server.up {
            return Err(StoreError::Io(
                "cannot connect to the database: it is down".into(),
            ));
        }
        Ok(Link {
            db: self.clone(),
            node,
            incarnation: server.incarnation,
            writer_generation: writer
                .then(|| server.writer_generation.get(&node).copied().unwrap_or(0)),
        })
    }
}

/// One connection: whose, and which server incarnation it was opened on.
struct Link {
    db: Arc<ModelDatabase>,
    node: NodeId,
    incarnation: u64,
    /// The writer's connection generation (`None` for read connections).
    writer_generation: Option<u64>,
}

impl Link {
    /// Whether the server has not closed this connection (what a client can tell without
    /// a round trip: a partition does not show).
    fn alive(&self, server: &Server) -> bool {
        server.incarnation == self.incarnation
            && self.writer_generation.is_none_or(|generation| {
                server
                    .writer_generation
                    .get(&self.node)
                    .copied()
                    .unwrap_or(0)
                    == generation
            })
    }
}

/// The storage boundary over a view of the tables: [`Committed`] or [`InTransaction`].
pub(super) struct Model<V>(V);

/// Where reads look.
trait View {
    fn view<R>(&self, read: impl FnOnce(&Tables) -> R) -> Result<R, StoreError>;
}

/// Reads outside a write: each call reads the committed tables.
pub(super) struct Committed(Link);

impl View for Committed {
    fn view<R>(&self, read: impl FnOnce(&Tables) -> R) -> Result<R, StoreError> {
        let server = self.0.db.reach(&self.0)?;
        Ok(read(&server.tables))
    }
}

/// A write transaction: its own copy of the tables, applied whole at commit.
pub(super) struct InTransaction<'a> {
    link: &'a Link,
    serial: u64,
    tables: RefCell<Tables>,
}

impl InTransaction<'_> {
    /// Fails like a statement on the connection would, if the connection is gone.
    fn check(&self) -> Result<(), StoreError> {
        let server = self.link.db.reach(self.link)?;
        if server.writing != Some(self.serial) {
            return Err(StoreError::Io(
                "the transaction was lost with its connection".into(),
            ));
        }
        Ok(())
    }

    fn change<R>(&self, write: impl FnOnce(&mut Tables) -> R) -> Result<R, StoreError> {
        self.check()?;
        Ok(write(&mut self.tables.borrow_mut()))
    }
}

impl View for InTransaction<'_> {
    fn view<R>(&self, read: impl FnOnce(&Tables) -> R) -> Result<R, StoreError> {
        self.check()?;
        Ok(read(&self.tables.borrow()))
    }
}

impl Drop for InTransaction<'_> {
    /// A transaction dropped without a commit is rolled back: the database is free again.
    fn drop(&mut self) {
        let mut server = self.link.db.lock();
        if server.writing == Some(self.serial) {
            server.writing = None;
        }
    }
}

pub(super) type ModelWrite<'a> = Model<InTransaction<'a>>;

impl ModelWrite<'_> {
    /// Commits, and when the commit is reported the proof may be made. An armed ambiguous
    /// commit breaks the connection here, after or without applying the tables.
    pub(super) fn commit(self) -> Result<(), StoreError> {
        let txn = &self.0;
        txn.check()?;
        let mut server = txn.link.db.lock();
        server.writing = None;
        let tables = std::mem::take(&mut *txn.tables.borrow_mut());
        let Some(applied) = server.ambiguous.take() else {
            server.tables = tables;
            return Ok(());
        };
        if applied {
            server.tables = tables;
        }
        *server.writer_generation.entry(txn.link.node).or_default() += 1;
        if server.trust_lost {
            return Ok(());
        }
        Err(StoreError::Io(
            "the connection to the database broke during COMMIT; its outcome is unknown".into(),
        ))
    }
}

impl<V: View> Reads for Model<V> {
    fn mailbox(&self, id: &MailboxId) -> Result<Option<MailboxRecord>, StoreError> {
        self.0.view(|t| t.mailboxes.get(id).cloned())
    }

    fn mailboxes(&self) -> Result<Vec<MailboxRecord>, StoreError> {
        self.0.view(|t| t.mailboxes.values().cloned().collect())
    }

    fn messages(&self, id: &MailboxId) -> Result<Vec<(u64, MessageRecord)>, StoreError> {
        self.0.view(|t| {
            t.mailbox_messages(id)
                .map(|(seq, record)| (seq, record.clone()))
                .collect()
        })
    }

    fn message(&self, id: &MailboxId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.0.view(|t| t.messages.get(&(id.clone(), seq)).cloned())
    }

    fn oldest_message_at(&self, id: &MailboxId) -> Result<Option<u64>, StoreError> {
        self.0.view(|t| {
            t.mailbox_messages(id)
                .next()
                .map(|(_, record)| record.received_at)
        })
    }

    fn chunk(&self, id: MessageId, index: u32) -> Result<Vec<u8>, StoreError> {
        self.0
            .view(|t| t.chunks.get(&(id, index)).map(|sealed| sealed.to_vec()))?
            .ok_or_else(|| StoreError::Corrupt(format!("message {id} lacks chunk {index}")))
    }

    fn retrieved(&self, mailbox: &MailboxId, key: &[u8]) -> Result<bool, StoreError> {
        self.0
            .view(|t| t.retrieved.contains_key(&(mailbox.clone(), key.to_vec())))
    }

    fn admin(&self) -> Result<AdminRecord, StoreError> {
        self.0.view(|t| t.admin.clone())
    }

    fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.0.view(|t| t.api_keys.get(id).cloned())
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.0.view(|t| t.api_keys.values().cloned().collect())
    }

    fn api_key_count(&self) -> Result<u64, StoreError> {
        self.0.view(|t| t.api_keys.len() as u64)
    }
}

impl Writes for ModelWrite<'_> {
    /// No shared leases in the model (see `Store::open_model`): the node's in-process lock
    /// is the fence, as with redb.
    fn holds_lease(&self, _: &super::coordination::Lease) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn put_mailbox(&self, record: &MailboxRecord) -> Result<(), StoreError> {
        self.0.change(|t| {
            t.mailboxes.insert(record.id.clone(), record.clone());
        })
    }

    fn remove_mailbox(&self, id: &MailboxId) -> Result<(), StoreError> {
        self.0.change(|t| {
            t.mailboxes.remove(id);
        })
    }

    fn put_admin(&self, record: &AdminRecord) -> Result<(), StoreError> {
        self.0.change(|t| t.admin = record.clone())
    }

    fn put_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.0.change(|t| {
            t.api_keys.insert(record.id.clone(), record.clone());
        })
    }

    fn remove_api_key(&self, id: &str) -> Result<bool, StoreError> {
        self.0.change(|t| t.api_keys.remove(id).is_some())
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        self.0.change(|t| {
            let seq = t.next_seq;
            t.next_seq += 1;
            seq
        })
    }

    fn put_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
        record: &MessageRecord,
    ) -> Result<(), StoreError> {
        self.0.change(|t| {
            t.messages.insert((mailbox.clone(), seq), record.clone());
        })
    }

    fn put_chunk(&self, id: MessageId, index: u32, sealed: &[u8]) -> Result<(), StoreError> {
        self.0.change(|t| {
            t.chunks.insert((id, index), sealed.into());
        })
    }

    fn remove_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.0.change(|t| {
            let record = t.messages.remove(&(mailbox.clone(), seq))?;
            t.chunks.retain(|(id, _), _| *id != record.id);
            Some(record)
        })
    }

    fn put_retrieved(
        &self,
        mailbox: &MailboxId,
        key: &[u8],
        at_millis: u64,
    ) -> Result<(), StoreError> {
        self.0.change(|t| {
            t.retrieved
                .insert((mailbox.clone(), key.to_vec()), at_millis);
        })
    }

    fn remove_retrieved(&self, mailbox: &MailboxId) -> Result<(), StoreError> {
        self.0
            .change(|t| t.retrieved.retain(|(m, _), _| m != mailbox))
    }
}

/// One node's writer connection, replaced whenever it broke, before the next batch (as
/// `PgEngine`).
pub(super) struct ModelEngine {
    db: Arc<ModelDatabase>,
    node: NodeId,
    link: Option<Link>,
}

impl ModelEngine {
    /// Connects `node`'s writer; fails while the database is out of reach.
    pub(super) fn connect(db: Arc<ModelDatabase>, node: NodeId) -> Result<Self, StoreError> {
        let link = db.connect(node, true)?;
        Ok(Self {
            db,
            node,
            link: Some(link),
        })
    }
}

impl WriteEngine for ModelEngine {
    type Txn<'a> = ModelWrite<'a>;

    fn is_open(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|link| link.alive(&self.db.lock()))
    }

    fn batch_delay(&self) -> Option<Duration> {
        self.db.lock().latency.get(&self.node).copied()
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        if !self.is_open() {
            self.try_reopen()?;
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<ModelWrite<'_>, StoreError> {
        let link = self.link.as_ref().ok_or(StoreError::Reopening)?;
        let mut server = link.db.reach(link)?;
        if server.writing.is_some() {
            return Err(StoreError::Conflict(
                "another node's transaction holds the lock".into(),
            ));
        }
        server.serials += 1;
        let serial = server.serials;
        server.writing = Some(serial);
        let tables = RefCell::new(server.tables.clone());
        Ok(Model(InTransaction {
            link,
            serial,
            tables,
        }))
    }

    fn commit(txn: ModelWrite<'_>) -> Result<Synced, StoreError> {
        Synced::commit_model(txn)
    }

    fn discard(txn: ModelWrite<'_>) {
        drop(txn);
    }

    fn release(&mut self) {}

    fn close(&mut self) {
        self.link = None;
    }

    fn try_reopen(&mut self) -> Result<(), StoreError> {
        self.link = None;
        self.link = Some(self.db.connect(self.node, true)?);
        Ok(())
    }
}

/// A node's reads: each snapshot is a read connection of that node.
pub(super) struct ModelReadSource {
    pub(super) db: Arc<ModelDatabase>,
    pub(super) node: NodeId,
}

impl ReadSource for ModelReadSource {
    fn snapshot(&self) -> Result<Box<dyn Reads + Send + Sync>, StoreError> {
        let link = self
            .db
            .connect(self.node, false)
            .map_err(|_| StoreError::Reopening)?;
        Ok(Box::new(Model(Committed(link))))
    }

    fn transfer_source(&self) -> Result<Box<dyn super::transfer::Source>, StoreError> {
        Err(StoreError::Internal(
            "the simulator's model database is not copied (no backups in the simulation)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn mailbox() -> MailboxId {
        MailboxId::parse("mbx-00000000000000000000000000000001").unwrap()
    }

    fn open(db: &Arc<ModelDatabase>, node: NodeId) -> Store {
        Store::open_model(db.clone(), node, &StoreOptions::default()).unwrap()
    }

    fn put(key: &'static [u8]) -> impl Fn(&dyn Writes) -> Result<(), StoreError> {
        move |txn| txn.put_retrieved(&mailbox(), key, 1)
    }

    fn has(store: &Store, key: &[u8]) -> bool {
        store.read().unwrap().retrieved(&mailbox(), key).unwrap()
    }

    #[test]
    fn two_nodes_see_each_others_commits_and_share_the_sequence() {
        let db = ModelDatabase::new();
        let (a, b) = (open(&db, 0), open(&db, 1));
        a.write_blocking(put(b"a")).unwrap();
        assert!(has(&b, b"a"));
        let first = a.write_blocking(|t| t.next_seq()).unwrap().value;
        let second = b.write_blocking(|t| t.next_seq()).unwrap().value;
        assert_eq!((first, second), (1, 2));
        assert_eq!(b.read().unwrap().admin().unwrap(), AdminRecord::initial());
    }

    #[test]
    fn a_write_sees_its_own_changes_and_a_failed_one_leaves_nothing() {
        let db = ModelDatabase::new();
        let a = open(&db, 0);
        let seen = a
            .write_blocking(|t| {
                t.put_retrieved(&mailbox(), b"k", 1)?;
                t.retrieved(&mailbox(), b"k")
            })
            .unwrap();
        assert!(seen.value);
        let failed = a.write_blocking(|t| -> Result<(), StoreError> {
            t.put_retrieved(&mailbox(), b"x", 1)?;
            Err(StoreError::Input("spool".into()))
        });
        assert!(matches!(failed, Err(StoreError::Input(_))));
        assert!(!has(&a, b"x"));
    }

    #[test]
    fn an_open_transaction_makes_another_nodes_begin_conflict() {
        let db = ModelDatabase::new();
        let mut a = ModelEngine::connect(db.clone(), 0).unwrap();
        let mut b = ModelEngine::connect(db.clone(), 1).unwrap();
        let txn = a.begin().unwrap();
        assert!(matches!(b.begin().err(), Some(StoreError::Conflict(_))));
        ModelEngine::discard(txn);
        assert!(b.begin().is_ok(), "free again after the rollback");
    }

    #[test]
    fn a_partitioned_node_fails_until_healed_while_the_other_works() {
        let db = ModelDatabase::new();
        let (a, b) = (open(&db, 0), open(&db, 1));
        db.partition(0, true);
        assert!(matches!(
            a.write_blocking(put(b"a")),
            Err(StoreError::Io(_))
        ));
        assert!(matches!(a.read().err(), Some(StoreError::Reopening)));
        b.write_blocking(put(b"b")).unwrap();
        db.partition(0, false);
        a.write_blocking(put(b"a")).unwrap();
        assert!(has(&a, b"b") && has(&b, b"a"));
    }

    #[test]
    fn a_restart_breaks_connections_and_keeps_what_was_committed() {
        let db = ModelDatabase::new();
        let a = open(&db, 0);
        a.write_blocking(put(b"a")).unwrap();
        let held = a.read().unwrap();
        db.stop();
        assert!(matches!(
            a.write_blocking(put(b"b")),
            Err(StoreError::Io(_))
        ));
        db.start();
        assert!(
            matches!(held.retrieved(&mailbox(), b"a"), Err(StoreError::Io(_))),
            "a connection from before the restart stays broken"
        );
        a.write_blocking(put(b"b")).unwrap();
        assert!(has(&a, b"a") && has(&a, b"b"));
    }

    #[test]
    fn a_transaction_open_across_a_restart_is_lost() {
        let db = ModelDatabase::new();
        let mut a = ModelEngine::connect(db.clone(), 0).unwrap();
        let txn = a.begin().unwrap();
        txn.put_retrieved(&mailbox(), b"k", 1).unwrap();
        db.stop();
        db.start();
        assert!(matches!(ModelEngine::commit(txn), Err(StoreError::Io(_))));
        assert!(!a.is_open(), "the server closed the connection");
        a.prepare().unwrap();
        let txn = a.begin().unwrap();
        assert!(
            !txn.retrieved(&mailbox(), b"k").unwrap(),
            "nothing of it stayed"
        );
    }

    /// The round trip is waited in the runtime's time, before the batch: a write on a
    /// node 50 ms away is durable no sooner than 50 ms after it was asked for.
    #[test]
    fn a_nodes_latency_delays_its_commits_in_the_runtimes_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let db = ModelDatabase::new();
        db.set_latency(0, Duration::from_millis(50));
        let options = StoreOptions {
            executor: crate::exec::Executor::runtime_tasks(),
            ..StoreOptions::default()
        };
        let took = runtime.block_on(async {
            let a = Store::open_model(db.clone(), 0, &options).unwrap();
            let started = tokio::time::Instant::now();
            a.write(put(b"a")).await.unwrap();
            started.elapsed()
        });
        assert!(took >= Duration::from_millis(50), "{took:?}");
    }

    #[test]
    fn an_ambiguous_commit_fails_either_way_and_the_writer_reconnects() {
        for applied in [false, true] {
            let db = ModelDatabase::new();
            let a = open(&db, 0);
            db.arm_ambiguous_commit(Some(applied));
            assert!(matches!(
                a.write_blocking(put(b"a")),
                Err(StoreError::Io(_))
            ));
            assert!(!db.ambiguous_commit_armed());
            assert_eq!(has(&a, b"a"), applied);
            a.write_blocking(put(b"b")).unwrap();
            assert!(has(&a, b"b"));
        }
    }

    #[test]
    fn the_wrong_variant_reports_a_lost_commit_as_done() {
        let db = ModelDatabase::new();
        let a = open(&db, 0);
        db.trust_lost_commits(true);
        db.arm_ambiguous_commit(Some(false));
        assert!(a.write_blocking(put(b"a")).is_ok(), "reported");
        assert!(!has(&a, b"a"), "yet never applied");
    }

    #[test]
    fn the_wrong_variant_loses_unflushed_commits_at_a_restart() {
        let db = ModelDatabase::new();
        let a = open(&db, 0);
        db.lose_unflushed_commits(true);
        a.write_blocking(put(b"flushed")).unwrap();
        db.flush();
        a.write_blocking(put(b"unflushed")).unwrap();
        db.stop();
        db.start();
        assert!(has(&a, b"flushed"));
        assert!(!has(&a, b"unflushed"), "reported, then lost");
    }
}

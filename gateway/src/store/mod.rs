//! The store: mailboxes, message metadata and sealed message chunks.
//!
//! Everything in it is either public (mailbox names, sizes, arrival times, public keys) or
//! sealed (private keys, envelopes, bodies). The service layer reads and writes it only
//! through the storage boundary ([`Reads`], [`Writes`]), so its rules do not depend on the
//! backend: redb, one file (the default; `redb_access` implements the boundary on it), or
//! PostgreSQL shared by several nodes ([`postgres`]). Writes go through one group-commit
//! loop (`writer`), run where [`StoreOptions::executor`] puts it; reads use the backend's
//! concurrent read transactions or connections.
//! [`transfer`] moves every row between backends (`gateway store copy`, and
//! [`Store::copy_to`] for backups, which writes a redb file whatever the backend).

mod access;
pub mod coordination;
mod copy;
mod durable;
mod error;
pub mod faults;
mod handle;
#[cfg(any(test, feature = "test-support"))]
pub mod model;
pub mod postgres;
mod redb_access;
mod redb_engine;
pub mod schema;
pub mod space;
pub mod transfer;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::{mpsc, oneshot};

pub use access::{Reads, Writes};
pub use coordination::{Coordination, Lease, SessionKey, SessionLimits, SharedFailures};
pub use copy::CopyCounts;
pub use durable::Durable;
pub use error::StoreError;
pub use schema::{AdminRecord, ApiKeyRecord, MailboxRecord, MailboxStatus, MessageRecord};
pub use space::{DataDirVolume, Space, SpaceStatus, Volume};

use crate::exec::Executor;
use crate::mailbox::MailboxId;
use schema::{
    ADMIN, ADMIN_ACCOUNT, API_KEYS, CHUNKS, MAILBOXES, MESSAGES, META, META_SCHEMA_VERSION, PURGE,
    RETRIEVED, SCHEMA_VERSION,
};

/// Told of every durable group commit: how many writes it made durable and how long the
/// transaction and its fsync took (the metrics' commit latency and batch size). Called on
/// the writer thread, so it must be quick.
pub trait CommitObserver: Send + Sync {
    fn committed(&self, requests: usize, took: std::time::Duration);
}

/// Retires messages and tells the writer (see [`Store::purge_signal`]). Raised inside the
/// write, before its commit, the signal is there for the writer as soon as that commit is
/// done.
#[derive(Clone, Debug)]
pub struct PurgeSignal(Arc<std::sync::atomic::AtomicBool>);

impl PurgeSignal {
    /// [`Writes::retire_message`], raising the signal so the writer purges after the commit.
    pub fn retire(
        &self,
        t: &dyn Writes,
        mailbox: &MailboxId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.0.store(true, std::sync::atomic::Ordering::Release);
        t.retire_message(mailbox, seq)
    }
}

/// A committed write: its result and the proof that it is on stable storage.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub durable: Durable,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb's page cache. redb defaults to 1 GiB; the gateway must stay within 512 MB.
    pub cache_bytes: usize,
    /// Where the group-commit writer and blocking store work run: production's threads, or
    /// tasks of the simulated runtime (so group commit runs in simulated time under the seed).
    pub executor: Executor,
    /// The space reserve, given back when opening or recovering the store finds the disk
    /// full (see [`space`]). `None`: no reserve.
    pub space: Option<Arc<Space>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            executor: Executor::threads(),
            space: None,
        }
    }
}

/// A PostgreSQL database to open the store on ([`Store::open_postgres`]).
#[derive(Clone)]
pub struct PostgresTarget {
    /// Where and as whom to connect (the password included, when there is one).
    pub config: tokio_postgres::Config,
    /// Timeouts and TLS.
    pub options: postgres::PgOptions,
    /// Connections for reads (the writer has one more).
    pub read_connections: usize,
    /// Create or upgrade the tables at open.
    pub migrate: bool,
    /// Names the database in messages (host and database, never the password).
    pub label: String,
}

/// How often a compaction tries to find the database idle, and how long it waits between.
const COMPACT_ATTEMPTS: u32 = 20;
const COMPACT_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// The store. Cheap to clone; all clones share one database and one writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    writer: mpsc::UnboundedSender<writer::Request>,
    /// `None` when the writer is a task (the simulation).
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Told of every durable group commit; the writer reads it.
    observer: writer::ObserverCell,
    path: PathBuf,
    space: Option<Arc<Space>>,
    executor: Executor,
    /// Leases and shared throttle counts: with other nodes on a shared database, or alone.
    coordination: Arc<dyn Coordination>,
    /// Set when retired messages' chunks wait; the writer removes them when idle.
    purge: Arc<std::sync::atomic::AtomicBool>,
}

/// Where reads come from, and what only one kind of backend can do.
enum Backend {
    /// The embedded store: snapshots, compaction and copies work on the redb file.
    Redb(Arc<handle::DbHandle>),
    /// A database other processes may share.
    Shared(Arc<dyn ReadSource>),
}

/// Snapshots of a shared backend.
pub trait ReadSource: Send + Sync {
    /// A view to read through; [`StoreError::Reopening`] while the database is out of reach.
    fn snapshot(&self) -> Result<Box<dyn Reads + Send + Sync>, StoreError>;

    /// One consistent view of every row, for a copy ([`Store::copy_to`]).
    fn transfer_source(&self) -> Result<Box<dyn transfer::Source>, StoreError>;
}

impl Drop for Inner {
    /// Closing the channel lets the writer finish its batch and exit; joining it means the
    /// database is closed (and its file lock released) once the last `Store` is gone.
    fn drop(&mut self) {
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.writer, closed));
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store file at `path`, checks or sets the schema version, and
    /// starts the writer thread.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        create_private(path)?;
        let file = path.to_owned();
        let cache = options.cache_bytes;
        Self::start(
            Box::new(move || Ok(Database::builder().set_cache_size(cache).create(&file)?)),
            path,
            options,
        )
    }

    /// Opens a store on any redb backend: the fault-injecting disk of tests and the
    /// simulation's disk model. `make_backend` is called again whenever the store must reopen
    /// after a storage error; `label` stands in for the path in messages.
    pub fn open_with_backend<B, F>(
        make_backend: F,
        label: &Path,
        options: &StoreOptions,
    ) -> Result<Self, StoreError>
    where
        B: redb::StorageBackend,
        F: Fn() -> std::io::Result<B> + Send + Sync + 'static,
    {
        let cache = options.cache_bytes;
        Self::start(
            Box::new(move || {
                Ok(Database::builder()
                    .set_cache_size(cache)
                    .create_with_backend(make_backend()?)?)
            }),
            label,
            options,
        )
    }

    fn start(
        opener: handle::Opener,
        path: &Path,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        // Opening recovers after a crash and initialising commits: on a full disk both
        // need the reserve's room, and so does every reopen after a failed commit.
        let space = options.space.clone();
        let opener: handle::Opener =
            Box::new(move || space::with_reserve(space.as_deref(), &opener));
        let (db, first) = handle::DbHandle::open(opener)?;
        space::with_reserve(options.space.as_deref(), || Self::initialise(&first))?;
        drop(first);
        let db = Arc::new(db);
        Self::with_engine(
            redb_engine::RedbEngine::new(db.clone()),
            Backend::Redb(db),
            Arc::new(coordination::Local),
            path,
            options,
        )
    }

    /// Opens the store on a PostgreSQL database that other gateway nodes may share: creates
    /// or upgrades its tables when `target.migrate` says so (else checks they are current),
    /// opens the writer's connection and the read connections, and starts the writer.
    pub fn open_postgres(
        target: &PostgresTarget,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let connector = Arc::new(postgres::Connector::new(
            target.config.clone(),
            target.options.clone(),
        )?);
        let mut writer = connector.connect()?;
        if target.migrate {
            postgres::migrate(&mut writer)?;
        } else {
            postgres::check(&writer)?;
        }
        let reads = postgres::PgReads::open(connector.clone(), target.read_connections)?;
        Self::with_engine(
            postgres::PgEngine::new(connector, writer),
            Backend::Shared(Arc::new(postgres::PgReadSource(reads.clone()))),
            Arc::new(postgres::PgCoordination::new(reads)),
            Path::new(&target.label),
            options,
        )
    }

    /// Opens `node`'s store on the simulator's model of a shared database (see [`model`]):
    /// fails while the model is out of the node's reach, as a connect would.
    #[cfg(any(test, feature = "test-support"))]
    pub fn open_model(
        db: Arc<model::ModelDatabase>,
        node: model::NodeId,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let engine = model::ModelEngine::connect(db.clone(), node)?;
        Self::with_engine(
            engine,
            Backend::Shared(Arc::new(model::ModelReadSource { db, node })),
            // The simulated archiver holds one maildrop session at a time: the model keeps
            // no shared leases or throttles.
            Arc::new(coordination::Local),
            Path::new(&format!("model-database/node-{node}")),
            options,
        )
    }

    /// Starts the writer on `engine`; reads come from `backend`.
    fn with_engine<E: writer::WriteEngine>(
        engine: E,
        backend: Backend,
        coordination: Arc<dyn Coordination>,
        path: &Path,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let observer = writer::ObserverCell::default();
        // Set at start for chunks a previous run left queued.
        let queue = matches!(backend, Backend::Redb(_));
        let purge = Arc::new(std::sync::atomic::AtomicBool::new(queue));
        let (writer, writer_thread) =
            writer::spawn(engine, observer.clone(), purge.clone(), &options.executor)?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                writer,
                writer_thread,
                observer,
                path: path.to_owned(),
                space: options.space.clone(),
                executor: options.executor.clone(),
                coordination,
                purge,
            }),
        })
    }

    /// The redb database's handle; `None` on a shared backend.
    fn redb(&self) -> Option<&Arc<handle::DbHandle>> {
        match &self.inner.backend {
            Backend::Redb(db) => Some(db),
            Backend::Shared(_) => None,
        }
    }

    fn initialise(db: &Database) -> Result<(), StoreError> {
        Self::migrate(db)?;
        let txn = db.begin_write()?;
        create_tables(&txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Checks the schema version and brings an older store up to [`SCHEMA_VERSION`].
    fn migrate(db: &Database) -> Result<(), StoreError> {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(META_SCHEMA_VERSION)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::TooNew {
                        found: v,
                        supported: SCHEMA_VERSION,
                    })
                }
                Some(SCHEMA_VERSION) => {}
                older => {
                    // 2 → 3: retrieval records were unkeyed hashes. They cannot be keyed now
                    // (the names and ids they hash are not known), and kept they would go on
                    // confirming guesses to whoever holds the file; so they go. At worst the
                    // proxy stores a message it copied before once more: a duplicate, never
                    // a loss. (From 1 the retrieval table is created empty below.)
                    if older == Some(2) {
                        let mut retrieved = txn.open_table(RETRIEVED)?;
                        let dropped = retrieved.len()?;
                        retrieved.retain(|_, _| false)?;
                        tracing::info!(
                            dropped,
                            "store upgraded: unkeyed retrieval records dropped (the proxy may store a message it copied before once more)"
                        );
                    }
                    // → 4, and every new store: the administrator account, with the initial
                    // password that is good only to set a new one. (→ 5 changes nothing
                    // stored: format 1 messages stay as they are and readable. → 6: the purge
                    // queue, created empty with the other tables.)
                    let mut admin = txn.open_table(ADMIN)?;
                    if admin.get(ADMIN_ACCOUNT)?.is_none() {
                        admin.insert(ADMIN_ACCOUNT, AdminRecord::initial().encode().as_slice())?;
                    }
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The store file; for a shared database, a label naming it (no file is there).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The space reserve the store was opened with.
    pub fn space(&self) -> Option<&Arc<Space>> {
        self.inner.space.as_ref()
    }

    /// Compacts the store file so that pages freed by deletions go back to the file
    /// system. Reads and writes wait while it runs. Returns false if it could not run now
    /// (a read or a commit was in progress throughout a few tries).
    pub async fn compact(&self) -> Result<bool, StoreError> {
        for attempt in 1..=COMPACT_ATTEMPTS {
            let store = self.clone();
            let tried = self
                .inner
                .executor
                .run("compact", move || store.compact_once())
                .await
                .map_err(|_| StoreError::Closed)?;
            if let Some(done) = tried {
                return done;
            }
            // Busy: a batch or a read holds the database; it lets go shortly (and on the
            // simulation's one thread, only once this task waits).
            if attempt < COMPACT_ATTEMPTS {
                tokio::time::sleep(COMPACT_PAUSE).await;
            }
        }
        Ok(false)
    }

    /// What nodes sharing this store agree on: maildrop leases and login failure counts.
    pub fn coordination(&self) -> &Arc<dyn Coordination> {
        &self.inner.coordination
    }

    /// Where this store runs blocking work; the service runs its own there too.
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// [`Store::compact`] on the calling thread (start-up, outside any runtime).
    pub fn compact_blocking(&self) -> Result<bool, StoreError> {
        for attempt in 1..=COMPACT_ATTEMPTS {
            if let Some(done) = self.compact_once() {
                return done;
            }
            if attempt < COMPACT_ATTEMPTS {
                std::thread::sleep(COMPACT_PAUSE);
            }
        }
        Ok(false)
    }

    /// One try; `None` while a batch or a read holds the database. A shared database
    /// reclaims space by itself (autovacuum): nothing to do.
    fn compact_once(&self) -> Option<Result<bool, StoreError>> {
        let db = self.redb()?;
        match db.exclusive(space::compact) {
            Some(Ok(false)) | None => None,
            Some(done) => Some(done),
        }
    }

    /// What a write that retires messages ([`Writes::retire_message`]) raises, so the writer
    /// removes their chunks once no request waits; `None` where the backend has no purge
    /// queue (a shared database removes chunks with their message).
    pub fn purge_signal(&self) -> Option<PurgeSignal> {
        match self.inner.backend {
            Backend::Redb(_) => Some(PurgeSignal(self.inner.purge.clone())),
            Backend::Shared(_) => None,
        }
    }

    /// Removes every chunk retired messages left, one commit of at most
    /// `PURGE_BUDGET` chunks after another, as the idle writer would (before a
    /// compaction, so it gives their space back too).
    pub async fn purge_retired(&self) -> Result<(), StoreError> {
        while self
            .write(|t| t.purge_chunks(writer::PURGE_BUDGET))
            .await?
            .value
        {}
        Ok(())
    }

    /// Runs `work` inside the next group commit and waits until that commit is durable.
    ///
    /// `work` shares its transaction with other writes, so it checks its preconditions before
    /// writing and reports a broken rule inside its `Ok` value. It may run more than once
    /// (when another write of its batch fails on its own, the batch runs again without it),
    /// hence `Fn`. An error it returns, or a panic, fails this write alone unless it is a
    /// storage failure ([`StoreError::is_storage_failure`]), which fails the batch.
    pub async fn write<T, F>(&self, work: F) -> Result<Committed<T>, StoreError>
    where
        T: Send + 'static,
        F: Fn(&dyn Writes) -> Result<T, StoreError> + Send + 'static,
    {
        let rx = self.submit(work)?;
        Self::unpack(rx.await.map_err(|_| Self::abandoned())?)
    }

    /// [`Store::write`] for callers outside an async runtime (the CLI, tests).
    pub fn write_blocking<T, F>(&self, work: F) -> Result<Committed<T>, StoreError>
    where
        T: Send + 'static,
        F: Fn(&dyn Writes) -> Result<T, StoreError> + Send + 'static,
    {
        let rx = self.submit(work)?;
        Self::unpack(rx.blocking_recv().map_err(|_| Self::abandoned())?)
    }

    /// The writer dropped a reply without answering: only a panic outside any request can do
    /// that (the writer answers everything it takes, and drains its queue at shutdown).
    fn abandoned() -> StoreError {
        StoreError::Internal("the store writer restarted; nothing was committed".into())
    }

    #[allow(clippy::type_complexity)]
    fn submit<T, F>(
        &self,
        work: F,
    ) -> Result<oneshot::Receiver<Result<(writer::Outcome, Durable), StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: Fn(&dyn Writes) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let work: writer::WriteFn =
            Box::new(move |txn| work(txn).map(|v| Box::new(v) as writer::Outcome));
        let request = writer::Request { work, reply };
        self.inner
            .writer
            .send(request)
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    fn unpack<T: 'static>(
        result: Result<(writer::Outcome, Durable), StoreError>,
    ) -> Result<Committed<T>, StoreError> {
        let (outcome, durable) = result?;
        let value = *outcome
            .downcast::<T>()
            .expect("the writer returns the type its request produced");
        Ok(Committed { value, durable })
    }

    /// The deliberately wrong variant the simulation must catch: from now on commits return
    /// (and hand out their `Durable` proof, so SMTP answers 250) without syncing, as if
    /// someone had traded the fsync for speed. Test-support builds only.
    #[cfg(feature = "test-support")]
    pub fn skip_sync_for_tests(&self, skip: bool) {
        if let Some(db) = self.redb() {
            db.skip_sync
                .store(skip, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A consistent snapshot for reading. While the database is closed after a storage error
    /// this fails with [`StoreError::Reopening`] at once: the writer reopens it, never an
    /// async worker (a reopen waits for readers of the old file).
    pub fn read(&self) -> Result<Snapshot, StoreError> {
        let reads: Box<dyn Reads + Send + Sync> = match &self.inner.backend {
            Backend::Redb(db) => Box::new(redb_snapshot(db)?),
            Backend::Shared(source) => source.snapshot()?,
        };
        Ok(Snapshot { reads })
    }

    /// Tells `observer` of every durable group commit from now on. The first observer set
    /// stays (a store shared by two services reports to the first one's metrics).
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.inner.observer.set(observer);
    }

    /// How often the redb database was reopened after a storage error since the store
    /// opened (0 for a shared database).
    pub fn reopens(&self) -> u64 {
        self.redb().map_or(0, |db| db.reopens())
    }
}

/// Creates every table (redb creates a table when a write transaction first opens it), so a
/// store has them all, also the empty ones.
fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(MAILBOXES)?;
    txn.open_table(MESSAGES)?;
    txn.open_table(CHUNKS)?;
    txn.open_table(PURGE)?;
    txn.open_table(RETRIEVED)?;
    txn.open_table(ADMIN)?;
    txn.open_table(API_KEYS)?;
    Ok(())
}

/// A redb read transaction on the current database (what [`Store::read`] wraps).
fn redb_snapshot(db: &handle::DbHandle) -> Result<redb::ReadTransaction, StoreError> {
    let db = db.current().ok_or(StoreError::Reopening)?;
    Ok(db.begin_read()?)
}

/// Creates the store file readable by its owner only (whatever the umask), or tightens an
/// existing one. redb then opens the empty file as a new database.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    drop(options.open(path)?);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if mode & !0o600 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o600))?;
            tracing::info!(path = %path.display(), from = format_args!("{mode:o}"), "tightened the store file's permissions to 600");
        }
    }
    Ok(())
}

/// A read-only, consistent view of the store: a backend's read transaction, read through
/// [`Reads`] (its methods are callable on the snapshot directly).
pub struct Snapshot {
    reads: Box<dyn Reads + Send + Sync>,
}

impl std::ops::Deref for Snapshot {
    type Target = dyn Reads + Send + Sync;

    fn deref(&self) -> &Self::Target {
        &*self.reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailboxId;

    fn open_temp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&dir.path().join("gateway.redb"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn schema_version_is_recorded_and_newer_versions_are_refused() {
        let (dir, store) = open_temp();
        store
            .write_blocking(|txn| {
                let mut meta = txn.redb_for_tests().unwrap().open_table(META)?;
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION + 1)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let err = Store::open(&dir.path().join("gateway.redb"), &StoreOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }

    #[test]
    fn upgrading_drops_unkeyed_retrieval_records() {
        let (dir, store) = open_temp();
        let mailbox = MailboxId::generate();
        store
            .write_blocking(move |txn| {
                let raw = txn.redb_for_tests().unwrap();
                raw.open_table(META)?.insert(META_SCHEMA_VERSION, 2)?;
                txn.put_retrieved(&mailbox, &[1; 32], 5)
            })
            .unwrap();
        drop(store);
        let store =
            Store::open(&dir.path().join("gateway.redb"), &StoreOptions::default()).unwrap();
        let snapshot = redb_snapshot(store.redb().unwrap()).unwrap();
        let meta = snapshot.open_table(META).unwrap();
        assert_eq!(
            meta.get(META_SCHEMA_VERSION).unwrap().unwrap().value(),
            SCHEMA_VERSION
        );
        assert_eq!(snapshot.open_table(RETRIEVED).unwrap().len().unwrap(), 0);
    }

    #[test]
    fn a_new_store_starts_with_the_initial_administrator_password() {
        let (_dir, store) = open_temp();
        let admin = store.read().unwrap().admin().unwrap();
        assert_eq!(admin, AdminRecord::initial());
        assert!(admin.initial);
        assert!(store.read().unwrap().api_keys().unwrap().is_empty());
    }

    /// A store as version 3 left it: no administrator account, no API key table.
    fn downgrade_to_v3(store: &Store) {
        store
            .write_blocking(|txn| {
                let txn = txn.redb_for_tests().unwrap();
                txn.open_table(META)?.insert(META_SCHEMA_VERSION, 3)?;
                txn.delete_table(ADMIN)?;
                txn.delete_table(API_KEYS)?;
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn upgrading_from_3_adds_the_initial_administrator_and_keeps_mailboxes() {
        let (dir, store) = open_temp();
        let mailbox = MailboxId::generate();
        store
            .write_blocking(move |txn| txn.put_retrieved(&mailbox, &[1; 32], 5))
            .unwrap();
        downgrade_to_v3(&store);
        {
            let snapshot = store.read().unwrap();
            assert!(snapshot.admin().is_err(), "really a v3 store");
        }
        drop(store);
        let store =
            Store::open(&dir.path().join("gateway.redb"), &StoreOptions::default()).unwrap();
        let snapshot = redb_snapshot(store.redb().unwrap()).unwrap();
        let meta = snapshot.open_table(META).unwrap();
        assert_eq!(
            meta.get(META_SCHEMA_VERSION).unwrap().unwrap().value(),
            SCHEMA_VERSION
        );
        assert_eq!(snapshot.admin().unwrap(), AdminRecord::initial());
        assert!(snapshot.api_keys().unwrap().is_empty());
        assert_eq!(
            snapshot.open_table(RETRIEVED).unwrap().len().unwrap(),
            1,
            "3 → 4 keeps the keyed retrieval records"
        );
    }

    #[test]
    fn reopening_a_current_store_keeps_a_changed_administrator_password() {
        let (dir, store) = open_temp();
        let changed = AdminRecord {
            password_hash: "$argon2id$changed".into(),
            initial: false,
            changed_at: Some(7),
            language: Some(crate::config::Language::De),
        };
        let stored = changed.clone();
        store.write_blocking(move |t| t.put_admin(&stored)).unwrap();
        drop(store);
        let store =
            Store::open(&dir.path().join("gateway.redb"), &StoreOptions::default()).unwrap();
        assert_eq!(store.read().unwrap().admin().unwrap(), changed);
    }

    #[cfg(unix)]
    #[test]
    fn the_store_file_is_private_whatever_the_umask() {
        use crate::fs::mode;
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = open_temp();
        let path = dir.path().join("gateway.redb");
        assert_eq!(mode(&path), 0o600, "created private");
        drop(store);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(mode(&path), 0o600, "tightened at start");
    }

    #[test]
    fn a_second_process_cannot_open_the_same_store() {
        let (dir, _store) = open_temp();
        let again = Store::open(&dir.path().join("gateway.redb"), &StoreOptions::default());
        assert!(
            matches!(again, Err(StoreError::Locked)),
            "{:?}",
            again.err()
        );
    }

    /// The simulation's placement: the writer is a task of the runtime, with no thread to
    /// join, and writes submitted together still share one commit.
    #[test]
    fn a_writer_on_runtime_tasks_group_commits() {
        struct Batches(std::sync::Mutex<Vec<usize>>);
        impl CommitObserver for Batches {
            fn committed(&self, requests: usize, _took: std::time::Duration) {
                self.0.lock().unwrap().push(requests);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.redb");
        let options = StoreOptions {
            executor: Executor::runtime_tasks(),
            ..StoreOptions::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let batches = Arc::new(Batches(Default::default()));
        let seqs = runtime.block_on(async {
            let store = Store::open(&path, &options).unwrap();
            assert!(store.inner.writer_thread.is_none());
            store.observe_commits(batches.clone());
            // Spawned together: each queues its request before the writer task runs.
            let mut writes = tokio::task::JoinSet::new();
            for _ in 0..5 {
                let store = store.clone();
                writes.spawn(async move { store.write(|t| t.next_seq()).await.unwrap().value });
            }
            let mut seqs = writes.join_all().await;
            seqs.sort_unstable();
            seqs
        });
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(
            *batches.0.lock().unwrap(),
            [5],
            "one commit for the five writes"
        );
    }

    #[test]
    fn panicking_request_does_not_stop_the_writer() {
        let (_dir, store) = open_temp();
        let err = store
            .write_blocking(|txn| -> Result<u64, StoreError> {
                txn.next_seq()?;
                panic!("a bug in one request");
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)), "{err}");
        assert_eq!(
            store.write_blocking(|t| t.next_seq()).unwrap().value,
            1,
            "later writes land, and nothing of the panicking one did"
        );
    }

    #[test]
    fn the_writer_restarts_after_failing_outside_any_request() {
        let (_dir, store) = open_temp();
        store
            .redb()
            .unwrap()
            .crash_writer
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = store.write_blocking(|t| t.next_seq()).unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)), "{err}");
        assert_eq!(store.write_blocking(|t| t.next_seq()).unwrap().value, 1);
        assert!(store.read().is_ok());
    }

    #[test]
    fn concurrent_writes_share_commits_and_all_land() {
        let (_dir, store) = open_temp();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let count = runtime.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..200 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    store.write(|t| t.next_seq()).await.unwrap().value
                }));
            }
            let mut seqs = Vec::new();
            for t in tasks {
                seqs.push(t.await.unwrap());
            }
            seqs.sort();
            seqs.dedup();
            seqs.len()
        });
        assert_eq!(count, 200, "every write landed with a distinct sequence");
    }

    /// Stores message `n` with its chunks in `mailbox` under sequence `n`.
    fn put(t: &dyn Writes, mailbox: &MailboxId, n: u8, chunks: u32) -> Result<(), StoreError> {
        let record = MessageRecord::sample(n, chunks);
        t.put_message(mailbox, u64::from(n), &record)?;
        for index in 0..chunks {
            t.put_chunk(record.id, index, &[n; 8])?;
        }
        Ok(())
    }

    /// (message id byte, chunk index) of every chunk, and the purge queue, as a write sees them.
    #[allow(clippy::type_complexity)]
    fn chunks_and_queue(t: &dyn Writes) -> Result<(Vec<(u8, u32)>, Vec<(u8, u32)>), StoreError> {
        let raw = t.redb_for_tests().unwrap();
        let mut chunks = Vec::new();
        for entry in raw.open_table(CHUNKS)?.iter()? {
            let (id, index) = entry?.0.value();
            chunks.push(((id & 0xff) as u8, index));
        }
        let mut queue = Vec::new();
        for entry in raw.open_table(PURGE)?.iter()? {
            let (id, count) = entry?;
            queue.push(((id.value() & 0xff) as u8, count.value()));
        }
        Ok((chunks, queue))
    }

    #[test]
    fn a_retired_message_is_gone_at_once_and_its_chunks_go_in_purges_of_a_budget_each() {
        let (_dir, store) = open_temp();
        let mailbox = MailboxId::generate();
        // One transaction, so the idle writer's own purges cannot interleave.
        store
            .write_blocking(move |t| {
                put(t, &mailbox, 1, 5)?;
                put(t, &mailbox, 2, 3)?;
                put(t, &mailbox, 3, 2)?;
                assert_eq!(
                    t.retire_message(&mailbox, 1)?.map(|r| r.chunk_count),
                    Some(5)
                );
                assert_eq!(
                    t.retire_message(&mailbox, 2)?.map(|r| r.chunk_count),
                    Some(3)
                );
                assert_eq!(t.retire_message(&mailbox, 9)?, None, "no such message");
                assert_eq!(t.message(&mailbox, 1)?, None, "no reader finds it any more");
                assert_eq!(t.messages(&mailbox)?.len(), 1);
                let (chunks, queue) = chunks_and_queue(t)?;
                assert_eq!(chunks.len(), 10, "the chunks wait");
                assert_eq!(queue, [(1, 5), (2, 3)]);

                assert!(t.purge_chunks(4)?, "more to do");
                let (chunks, queue) = chunks_and_queue(t)?;
                assert_eq!(
                    queue,
                    [(1, 4)],
                    "2 (the newer) went, then the last chunk of 1"
                );
                assert!(chunks.contains(&(1, 3)) && !chunks.contains(&(1, 4)));
                assert!(!chunks.iter().any(|&(id, _)| id == 2));

                assert!(!t.purge_chunks(4)?, "nothing left");
                let (chunks, queue) = chunks_and_queue(t)?;
                assert_eq!(
                    chunks,
                    [(3, 0), (3, 1)],
                    "only the live message's chunks are left"
                );
                assert_eq!(queue, []);
                assert!(!t.purge_chunks(4)?);

                assert!(t.remove_message(&mailbox, 3)?.is_some());
                assert_eq!(
                    chunks_and_queue(t)?,
                    (vec![], vec![]),
                    "removing is at once"
                );
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn chunks_a_previous_run_left_queued_are_purged_once_the_store_reopens() {
        let (dir, store) = open_temp();
        let mailbox = MailboxId::generate();
        // Retired without raising the purge signal: as a crash right after the commit leaves it.
        store
            .write_blocking(move |t| {
                put(t, &mailbox, 1, 3)?;
                t.retire_message(&mailbox, 1).map(|_| ())
            })
            .unwrap();
        drop(store);
        let store =
            Store::open(&dir.path().join("gateway.redb"), &StoreOptions::default()).unwrap();
        // Each write gives the writer a turn; it purges in the first one nothing waits in.
        let purged = (0..100).any(|_| {
            store.write_blocking(|t| chunks_and_queue(t)).unwrap().value == (vec![], vec![])
        });
        assert!(purged, "the writer purges what the last run left");
    }
}

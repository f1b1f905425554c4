//! The one service layer. Every rule about mailboxes, messages, the administrator account and
//! API keys lives here: CLI, console, API and protocols call it and never re-implement a rule.

mod admin;
mod api_key;
mod copies;
mod disk;
mod disk_usage;
mod error;
mod health;
mod mailboxes;
mod messages;
mod permissions;
mod pickup;
mod retrieval;
mod sessions;
mod shared_settings;
mod shared_tls;
mod spool;
mod stats;
mod store_backend;
mod trace;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use admin::{AdminLogin, ApiKeyInfo, NewApiKey};
pub use api_key::ApiKey;
pub use copies::ProxiedCopy;
pub use disk_usage::{
    watch_free_space, DiskCrossing, DiskLevel, DiskUsage, DiskWatch, DISK_WATCH_PERIOD,
};
pub use error::ServiceError;
pub use mailboxes::{MailboxInfo, NewMailbox};
pub use messages::{MessageDraft, MessageReader, MessageSummary, StoredForReading, StoredMessage};
pub use permissions::prepare_data_dir;
pub use pickup::{
    Holder, LeasePolicy, LoginRefused, Maildrop, Pickup, PickupPolicy, CLIENT_POLICY,
    MAILBOX_POLICY, MAX_MAILBOX_DELAY,
};
pub use retrieval::{RetrievalSecret, RETRIEVAL_KEY_FILE};
pub use sessions::{
    Session, SessionPolicy, SessionToken, Sessions, DEFAULT_SESSION_POLICY, TOUCH_AFTER,
};
pub use stats::ServiceStats;
pub use store_backend::postgres_target;

use crate::config::Config;
use crate::crypto::{KdfParams, SealingEpochs};
use crate::metrics::Metrics;
use crate::settings::EmailDomain;
use crate::store::Store;

/// Unix milliseconds; injectable so simulations run on simulated time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// How often ended sealing epochs are dropped ([`Gateway::expire_epochs`]): an epoch's
/// secret stays in memory at most this long after [`crate::crypto::EPOCH_MAX_AGE_MS`].
pub const EPOCH_SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "gateway.redb";
/// Folder of the spool inside the data directory.
pub const SPOOL_DIR: &str = "spool";

/// What the service needs besides the store.
#[derive(Clone)]
pub struct ServiceOptions {
    /// Live: shared with the SMTP sessions and changed by `LiveSettings`.
    pub email_domain: EmailDomain,
    pub kdf: KdfParams,
    pub spool_dir: PathBuf,
    /// Sealed bytes a draft keeps in memory before spilling to its spool file.
    pub spool_memory_bytes: usize,
    /// Sealed bytes all drafts together keep in memory; beyond it they spill too.
    pub spool_memory_total_bytes: u64,
    /// Bytes all spool files together may hold; beyond it drafts fail as a full disk.
    pub spool_max_bytes: u64,
    pub max_message_size: u64,
    /// New mail is refused while less than this many bytes are free outside the space
    /// reserve (`[limits] min_free_disk_mib`); 0 refuses only what does not fit.
    pub min_free_disk: u64,
    /// Below this many bytes free the log warns and monitoring says WARNING
    /// (`[limits] warn_free_disk_mib`); not below `min_free_disk`.
    pub warn_free_disk: u64,
    pub clock: Clock,
    /// Maildrop leases on a shared store (how long a dead node holds a maildrop).
    pub lease: LeasePolicy,
}

impl ServiceOptions {
    pub fn from_config(config: &Config) -> Self {
        Self {
            email_domain: EmailDomain::new(config.gateway.email_domain.as_str()),
            kdf: KdfParams::default(),
            spool_dir: config.gateway.data_dir.join(SPOOL_DIR),
            spool_memory_bytes: config.limits.spool_memory_bytes() as usize,
            spool_memory_total_bytes: config.limits.spool_memory_total_bytes(),
            spool_max_bytes: config.limits.spool_max_bytes(),
            max_message_size: config.limits.max_message_size,
            min_free_disk: config.limits.min_free_disk_bytes(),
            warn_free_disk: config.limits.warn_free_disk_bytes(),
            clock: system_clock(),
            lease: LeasePolicy::default(),
        }
    }
}

/// The service: cheap to clone, shared by every session and front end.
#[derive(Clone)]
pub struct Gateway {
    store: Store,
    options: Arc<ServiceOptions>,
    /// Keys the POP3 proxy's one-copy records; kept outside the store file.
    retrieval: Arc<RetrievalSecret>,
    spool_budget: Arc<spool::SpoolBudget>,
    stats: Arc<ServiceStats>,
    intake: Arc<disk::IntakeState>,
    /// Administrator login throttles and password check slots, shared by every transport.
    admin: Arc<admin::AdminGuard>,
    /// The administrator's sign-in sessions (the web console): in memory, or in the
    /// database when other nodes share the store.
    sessions: Arc<Sessions>,
    /// This gateway's metrics: the front ends count through it, the store reports commits.
    metrics: Metrics,
    /// Each mailbox's current sealing epoch: one HPKE setup per epoch, not per message.
    epochs: Arc<SealingEpochs>,
}

impl Gateway {
    pub fn new(store: Store, options: ServiceOptions, retrieval: RetrievalSecret) -> Self {
        let metrics = Metrics::new();
        store.observe_commits(Arc::new(metrics.clone()));
        let admin = Arc::new(admin::AdminGuard::new(store.coordination().clone()));
        let sessions = Arc::new(Sessions::for_store(
            DEFAULT_SESSION_POLICY,
            store.coordination(),
            store.executor(),
        ));
        Self {
            metrics,
            store,
            spool_budget: spool::SpoolBudget::new(
                options.spool_max_bytes,
                options.spool_memory_total_bytes,
            ),
            options: Arc::new(options),
            retrieval: Arc::new(retrieval),
            stats: Arc::default(),
            intake: Arc::default(),
            admin,
            sessions,
            epochs: Arc::default(),
        }
    }

    /// The administrator's sign-in sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Bytes the messages in progress hold in spool files now.
    pub fn spool_used(&self) -> u64 {
        self.spool_budget.used()
    }

    /// Opens the store in the configured data directory (created, or tightened, to be the
    /// gateway user's alone), with the retrieval secret and the space reserve beside it (the
    /// reserve is given back if the store cannot be opened on a full disk otherwise).
    pub fn open(config: &Config) -> Result<Self, ServiceError> {
        Self::open_with_options(config, ServiceOptions::from_config(config))
    }

    /// [`Gateway::open`] with service options of the caller's (tests shorten the lease).
    pub fn open_with_options(
        config: &Config,
        options: ServiceOptions,
    ) -> Result<Self, ServiceError> {
        let data_dir = &config.gateway.data_dir;
        prepare_data_dir(data_dir)?;
        let store = store_backend::open_store(config, data_dir)?;
        // After the store: its lock keeps a second gateway from racing to create the secret.
        let retrieval = RetrievalSecret::load_or_create(data_dir)?;
        let gateway = Self::new(store, options, retrieval);
        gateway.prepare_disk();
        gateway.adopt_shared_email_domain()?;
        gateway.check_shared_retrieval_key()?;
        Ok(gateway)
    }

    /// The proxy's login throttle, counting failures on every node that shares the store.
    pub fn proxy_guard(
        &self,
        failure_delay: std::time::Duration,
    ) -> crate::proxy::throttle::ProxyGuard {
        crate::proxy::throttle::ProxyGuard::shared(
            failure_delay,
            self.store.coordination().clone(),
            self.retrieval.proxy_account_names(),
        )
    }

    /// The email domain now; it may change while the gateway runs (`SetSettings`).
    pub fn email_domain(&self) -> Arc<str> {
        self.options.email_domain.get()
    }

    /// The shared email domain, for the SMTP sessions and the live settings.
    pub fn email_domain_handle(&self) -> &EmailDomain {
        &self.options.email_domain
    }

    /// The store, for what copies it whole (backups, snapshots) and this crate's tests;
    /// everything else goes through the service's methods.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Where the store lives (start-up messages).
    pub fn store_path(&self) -> &Path {
        self.store.path()
    }

    /// Integration tests that damage the store on purpose reach past the service here
    /// (they build without `test-support`, so it cannot be behind that feature). Nothing
    /// else calls it: `cargo xtask tidy` refuses a call outside tests.
    #[doc(hidden)]
    pub fn store_for_tests(&self) -> &Store {
        &self.store
    }

    /// Where blocking work runs (Argon2id unseals, opening messages ahead): the store's.
    pub fn executor(&self) -> &crate::exec::Executor {
        self.store.executor()
    }

    /// The metrics every front end of this gateway counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the service counted since it started.
    pub fn stats(&self) -> &ServiceStats {
        &self.stats
    }

    fn now(&self) -> u64 {
        (self.options.clock)()
    }

    /// The service clock as a date, for trace headers.
    pub fn now_utc(&self) -> time::OffsetDateTime {
        let nanos = i128::from(self.now()) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_FILE)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::store::{Space, StoreOptions};

    pub fn test_secret() -> RetrievalSecret {
        RetrievalSecret::from_bytes(&[7; 32])
    }

    /// Service options for a test gateway in `dir`: cheap key derivation, no disk minimum.
    fn options_in(dir: &std::path::Path) -> ServiceOptions {
        ServiceOptions {
            email_domain: "archive.example".into(),
            kdf: KdfParams::insecure_for_tests(),
            spool_dir: dir.join(SPOOL_DIR),
            spool_memory_bytes: 128 * 1024,
            spool_memory_total_bytes: u64::MAX,
            spool_max_bytes: u64::MAX,
            max_message_size: 100 * 1024 * 1024,
            min_free_disk: 0,
            warn_free_disk: 0,
            clock: system_clock(),
            lease: LeasePolicy::default(),
        }
    }

    /// A gateway on a temporary directory with cheap key derivation.
    pub fn gateway() -> (tempfile::TempDir, Gateway) {
        gateway_with(|_| {})
    }

    /// Names the PostgreSQL database the service's behaviour tests run on instead of redb
    /// (`cargo xtask ci` runs them both ways). Each test directory gets a schema of its own
    /// there, so tests stay apart and reopening a directory reopens its data.
    pub const POSTGRES_URL_VAR: &str = "GATEWAY_TEST_POSTGRES_URL";

    /// The store of the test directory `dir`: redb in it, or its schema in the database
    /// [`POSTGRES_URL_VAR`] names (unless the directory already holds a redb store, which
    /// [`redb_gateway`] made).
    pub fn test_store(dir: &std::path::Path, options: &StoreOptions) -> Store {
        let Some(mut config) = postgres_for(dir) else {
            return Store::open(&store_path(dir), options).unwrap();
        };
        let schema = schema_of(dir);
        create_schema(&config, &schema);
        config.options(format!("-c search_path={schema}"));
        let target = crate::store::PostgresTarget {
            label: format!("postgres test schema {schema}"),
            config,
            options: crate::store::postgres::PgOptions::default(),
            read_connections: 2,
            migrate: true,
        };
        Store::open_postgres(&target, options).unwrap()
    }

    /// The schema of test directory `dir`, named from it: the same directory, the same schema.
    fn schema_of(dir: &std::path::Path) -> String {
        let digest =
            ring::digest::digest(&ring::digest::SHA256, dir.as_os_str().as_encoded_bytes());
        let schema: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("test_{schema}")
    }

    /// Moves every console session of test directory `dir` back by `by`, as if that much
    /// time had passed, when its store is on PostgreSQL (whose clock tests on paused time
    /// cannot advance); nothing on redb, whose sessions follow tokio's clock.
    pub fn age_shared_sessions(dir: &std::path::Path, by: std::time::Duration) {
        let Some(config) = postgres_for(dir) else {
            return;
        };
        let sql = format!(
            "UPDATE {schema}.console_sessions \
             SET created_at = created_at - make_interval(secs => {secs}), \
                 last_seen = last_seen - make_interval(secs => {secs})",
            schema = schema_of(dir),
            secs = by.as_secs_f64()
        );
        on_own_thread(config, |client| async move {
            client.batch_execute(&sql).await.unwrap();
        });
    }

    /// The database the store of test directory `dir` is on: `None` for redb (no
    /// [`POSTGRES_URL_VAR`], or a redb store already in the directory).
    fn postgres_for(dir: &std::path::Path) -> Option<tokio_postgres::Config> {
        let url = std::env::var(POSTGRES_URL_VAR).ok()?;
        if store_path(dir).exists() {
            return None;
        }
        Some(url.parse().expect(POSTGRES_URL_VAR))
    }

    /// Every byte the store of test directory `dir` keeps on disk: the redb file, or (on
    /// PostgreSQL) every file of the database server's data directory, WAL included, after a
    /// checkpoint wrote everything out. For tests that a secret is never stored.
    pub fn stored_bytes(dir: &std::path::Path) -> Vec<u8> {
        let Some(config) = postgres_for(dir) else {
            return std::fs::read(store_path(dir)).unwrap();
        };
        let data_dir = on_own_thread(config, |client| async move {
            client.batch_execute("CHECKPOINT").await.unwrap();
            let row = client.query_one("SHOW data_directory", &[]).await.unwrap();
            row.get::<_, String>(0)
        });
        let mut bytes = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(data_dir)];
        while let Some(path) = stack.pop() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(content) = std::fs::read(&path) {
                    bytes.extend(content);
                }
            }
        }
        bytes
    }

    /// Runs `work` with a client of `config` on a thread of its own (tests may call this
    /// inside a runtime, where another one cannot run).
    fn on_own_thread<T, F, W>(config: tokio_postgres::Config, work: W) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
        W: FnOnce(tokio_postgres::Client) -> F + Send + 'static,
    {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
                let driver = tokio::spawn(connection);
                let out = work(client).await;
                let _ = driver.await;
                out
            })
        })
        .join()
        .unwrap()
    }

    /// Creates `schema` if missing, on a thread of its own (tests may call this inside a
    /// runtime, where another one cannot run).
    fn create_schema(config: &tokio_postgres::Config, schema: &str) {
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
        on_own_thread(config.clone(), |client| async move {
            client.batch_execute(&sql).await.unwrap();
        });
    }

    pub fn gateway_with(adjust: impl FnOnce(&mut ServiceOptions)) -> (tempfile::TempDir, Gateway) {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), &StoreOptions::default());
        let mut options = options_in(dir.path());
        adjust(&mut options);
        (dir, Gateway::new(store, options, test_secret()))
    }

    /// A gateway on redb whatever [`POSTGRES_URL_VAR`] says, for tests of redb's own file
    /// (its upgrades from older layouts).
    pub fn redb_gateway() -> (tempfile::TempDir, Gateway) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&store_path(dir.path()), &StoreOptions::default()).unwrap();
        let gateway = Gateway::new(store, options_in(dir.path()), test_secret());
        (dir, gateway)
    }

    /// A gateway whose blocking work and store writer are tasks of the test's runtime, for
    /// tests on paused time (a thread would run outside it). Call inside the runtime.
    pub fn gateway_on_runtime_tasks() -> (tempfile::TempDir, Gateway) {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            executor: crate::exec::Executor::runtime_tasks(),
            ..StoreOptions::default()
        };
        let store = test_store(dir.path(), &options);
        let gateway = Gateway::new(store, options_in(dir.path()), test_secret());
        (dir, gateway)
    }

    /// A gateway on the store already in `dir` (opened again, as after a restart).
    pub fn gateway_in(dir: &std::path::Path) -> Gateway {
        let store = test_store(dir, &StoreOptions::default());
        Gateway::new(store, options_in(dir), test_secret())
    }

    /// A gateway whose file system is `volume`, with a reserve and a free-space minimum.
    pub fn gateway_on(
        volume: Arc<dyn crate::store::Volume>,
        reserve: u64,
        min_free_disk: u64,
    ) -> (tempfile::TempDir, Gateway) {
        gateway_on_warning(volume, reserve, min_free_disk, 0)
    }

    /// A gateway whose file system is `volume`, with a warning threshold too.
    pub fn gateway_on_warning(
        volume: Arc<dyn crate::store::Volume>,
        reserve: u64,
        min_free_disk: u64,
        warn_free_disk: u64,
    ) -> (tempfile::TempDir, Gateway) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &store_path(dir.path()),
            &StoreOptions {
                space: Some(Arc::new(Space::new(volume, reserve))),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let options = ServiceOptions {
            min_free_disk,
            warn_free_disk,
            ..options_in(dir.path())
        };
        (dir, Gateway::new(store, options, test_secret()))
    }

    /// A gateway whose disk fails on command.
    pub fn faulty_gateway() -> (
        tempfile::TempDir,
        Gateway,
        crate::store::faults::FaultSwitch,
    ) {
        faulty_gateway_with(crate::store::faults::FaultSwitch::default(), None)
    }

    /// A gateway whose disk fails as `switch` says, with a space reserve if given.
    pub fn faulty_gateway_with(
        switch: crate::store::faults::FaultSwitch,
        space: Option<Arc<Space>>,
    ) -> (
        tempfile::TempDir,
        Gateway,
        crate::store::faults::FaultSwitch,
    ) {
        use crate::store::faults::FaultyBackend;
        let (dir, _) = gateway();
        let path = store_path(dir.path()).with_extension("faulty.redb");
        let (file_path, disk) = (path.clone(), switch.clone());
        let store = Store::open_with_backend(
            move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&file_path)?;
                let inner =
                    redb::backends::FileBackend::new(file).map_err(std::io::Error::other)?;
                Ok(FaultyBackend::new(inner, disk.clone()))
            },
            &path,
            &StoreOptions {
                space,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let options = ServiceOptions {
            spool_memory_bytes: 64 * 1024,
            ..options_in(dir.path())
        };
        (dir, Gateway::new(store, options, test_secret()), switch)
    }
}

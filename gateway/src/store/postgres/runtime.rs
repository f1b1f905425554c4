//! Connections: the runtime thread that drives their sockets, and the clients the store's
//! synchronous calls use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls, Statement};

use super::access::PgWrite;
use super::tls::Rustls;
use super::Deadline;
use crate::store::StoreError;

/// How to connect: TLS, and how long a connection may take and a statement may run.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connecting, TLS and authentication (unless the connection settings name their own).
    pub connect_timeout: Duration,
    /// The server cancels a statement that runs longer (`statement_timeout`), including one
    /// waiting for another node's row lock; the store then reports [`StoreError::Io`].
    pub statement_timeout: Duration,
    /// Sent data that the server has not acknowledged after this long closes the connection
    /// (`TCP_USER_TIMEOUT`); with TCP keepalives, a vanished server or network fails calls
    /// instead of hanging them. A call that gets no answer within `statement_timeout` plus
    /// this fails with [`StoreError::Io`] whatever the server does (it may be frozen).
    pub network_timeout: Duration,
    /// TLS to the server, required and verified against this configuration's roots (the
    /// certificate must name the host the settings connect to). `None`: the settings'
    /// `sslmode` decides, without TLS support, so only plain connections work.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            network_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Idle time before TCP keepalives probe the server.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);

/// The thread that drives every connection of the backend: a current-thread tokio runtime,
/// so connections work the same whether the callers are plain threads or tokio workers.
/// Dropping it closes every connection (their clients then fail with [`StoreError::Io`]).
pub struct PgRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PgRuntime {
    pub fn start() -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                // Tasks spawned through the handle run while this waits.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Opens a connection driven by this runtime, sets its statement timeout, and checks
    /// that the server keeps what it commits (`synchronous_commit` is not `off`, else
    /// [`StoreError::NotDurable`]).
    pub fn connect(
        &self,
        config: &tokio_postgres::Config,
        options: &PgOptions,
    ) -> Result<PgClient, StoreError> {
        let mut config = config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(options.network_timeout);
        }
        config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
        let tls = options.tls.clone();
        if tls.is_some() {
            // Never `prefer`: a server (or a man in the middle) declining TLS must not get
            // the password in clear.
            config.ssl_mode(SslMode::Require);
        }
        // The connection's end (error or not) shows in the client's next call.
        let task = self.handle.spawn(async move {
            Ok::<_, tokio_postgres::Error>(match tls {
                Some(tls) => {
                    let (client, connection) = config.connect(Rustls(tls)).await?;
                    tokio::spawn(async move { drop(connection.await) });
                    client
                }
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(async move { drop(connection.await) });
                    client
                }
            })
        });
        let client = super::block_on(task)
            .map_err(|_| StoreError::Io("the PostgreSQL runtime thread is gone".into()))??;
        // Past the server's own limit, with time for the cancellation to come back.
        let deadline = Deadline::new(options.statement_timeout + options.network_timeout);
        deadline.wait(client.batch_execute(&format!(
            "SET statement_timeout = {}",
            options.statement_timeout.as_millis()
        )))?;
        let row = deadline.wait(client.query_one("SHOW synchronous_commit", &[]))?;
        let level: String = row
            .try_get(0)
            .map_err(|e| StoreError::Corrupt(format!("SHOW synchronous_commit: {e}")))?;
        if level == "off" {
            return Err(StoreError::NotDurable(
                "synchronous_commit is off, so a crash of the server loses commits it has \
                 reported; set it to on (or remote_write, remote_apply, local)"
                    .into(),
            ));
        }
        Ok(PgClient {
            client,
            statements: Statements::default(),
            deadline,
        })
    }
}

impl Drop for PgRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection and the statements prepared on it.
pub struct PgClient {
    pub(super) client: Client,
    pub(super) statements: Statements,
    pub(super) deadline: Deadline,
}

impl PgClient {
    /// Starts a write transaction (`READ COMMITTED`; see [`PgWrite`] for the locks it takes).
    pub fn begin(&mut self) -> Result<PgWrite<'_>, StoreError> {
        let Self {
            client,
            statements,
            deadline,
        } = self;
        let txn = deadline.wait(client.transaction())?;
        Ok(PgWrite::new(txn, statements, deadline))
    }

    /// Whether the connection is gone (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// Statements prepared on one connection, by their text, so each is parsed once per
/// connection.
#[derive(Default)]
pub(super) struct Statements {
    prepared: Mutex<HashMap<&'static str, Statement>>,
}

impl Statements {
    pub(super) fn get(
        &self,
        sql: &'static str,
        prepare: impl FnOnce(&'static str) -> Result<Statement, StoreError>,
    ) -> Result<Statement, StoreError> {
        let cached = self.lock().get(sql).cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = prepare(sql)?;
        self.lock().insert(sql, statement.clone());
        Ok(statement)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Statement>> {
        // The map stays valid whatever panicked while holding it.
        self.prepared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

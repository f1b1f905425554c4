//! The store on PostgreSQL: the group-commit writer's engine (one connection of its own)
//! and the connections snapshots read through.
//!
//! A node that loses the database fails what it is asked to do with [`StoreError::Io`] or
//! [`StoreError::Reopening`], which the protocols answer with 451 / `-ERR [SYS/TEMP]`, and
//! recovers by itself: the writer reconnects before its next batch (and every few seconds
//! while idle), readers' connections are replaced in the background, never on an async
//! worker (connecting may take the whole connect timeout).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{PgClient, PgOptions, PgRead, PgRuntime, PgWrite};
use crate::store::durable::Synced;
use crate::store::transfer::Source;
use crate::store::writer::WriteEngine;
use crate::store::{ReadSource, Reads, StoreError};

/// How to reach the database: the runtime that drives the connections, the settings, and
/// the timeouts and TLS.
pub struct Connector {
    runtime: PgRuntime,
    config: tokio_postgres::Config,
    options: PgOptions,
}

impl Connector {
    pub fn new(config: tokio_postgres::Config, options: PgOptions) -> Result<Self, StoreError> {
        Ok(Self {
            runtime: PgRuntime::start()?,
            config,
            options,
        })
    }

    pub fn connect(&self) -> Result<PgClient, StoreError> {
        self.runtime.connect(&self.config, &self.options)
    }
}

/// The writer's connection. It is replaced whenever it failed, before the next batch.
pub struct PgEngine {
    connector: Arc<Connector>,
    client: Option<PgClient>,
}

impl PgEngine {
    pub fn new(connector: Arc<Connector>, client: PgClient) -> Self {
        Self {
            connector,
            client: Some(client),
        }
    }
}

impl WriteEngine for PgEngine {
    type Txn<'a> = PgWrite<'a>;

    fn is_open(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        if !self.is_open() {
            self.try_reopen()?;
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<PgWrite<'_>, StoreError> {
        self.client.as_mut().ok_or(StoreError::Reopening)?.begin()
    }

    fn commit(txn: PgWrite<'_>) -> Result<Synced, StoreError> {
        txn.commit()
    }

    fn discard(txn: PgWrite<'_>) {
        // Dropping sends the ROLLBACK; the connection runs it before the next statement.
        drop(txn);
    }

    fn release(&mut self) {}

    fn close(&mut self) {
        self.client = None;
    }

    fn try_reopen(&mut self) -> Result<(), StoreError> {
        self.client = None;
        match self.connector.connect() {
            Ok(client) => {
                self.client = Some(client);
                tracing::warn!("reconnected to the PostgreSQL store");
                Ok(())
            }
            Err(e) => {
                tracing::debug!(error = %e, "the PostgreSQL store is still out of reach");
                Err(e)
            }
        }
    }
}

/// The connections snapshots read through, used in turn. tokio-postgres pipelines the
/// statements of concurrent callers on one connection, so a few serve many sessions.
pub struct PgReads {
    connector: Arc<Connector>,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Slot {
    client: Mutex<Option<Arc<PgClient>>>,
    reconnecting: Arc<AtomicBool>,
}

impl PgReads {
    /// `connections` connections (at least one), opened now: a store that cannot read at
    /// start fails to open rather than failing its first sessions.
    pub fn open(connector: Arc<Connector>, connections: usize) -> Result<Arc<Self>, StoreError> {
        let slots = (0..connections.max(1))
            .map(|_| {
                let client = connector.connect()?;
                Ok(Slot {
                    client: Mutex::new(Some(Arc::new(client))),
                    reconnecting: Arc::default(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Arc::new(Self {
            connector,
            slots,
            next: AtomicUsize::new(0),
        }))
    }

    /// A live connection, starting at the next slot in turn; dead ones are replaced in the
    /// background. `None` if none is alive.
    pub(super) fn client(self: &Arc<Self>) -> Option<Arc<PgClient>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.slots.len() {
            let index = (start + offset) % self.slots.len();
            let slot = &self.slots[index];
            let current = slot
                .client
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            match current {
                Some(client) if !client.is_closed() => return Some(client),
                _ => self.replace(index),
            }
        }
        None
    }

    /// Opens a new connection for slot `index` on a thread of its own (once at a time).
    fn replace(self: &Arc<Self>, index: usize) {
        let slot = &self.slots[index];
        if slot.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let reads = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("postgres-reconnect".into())
            .spawn(move || {
                let slot = &reads.slots[index];
                match reads.connector.connect() {
                    Ok(client) => {
                        *slot.client.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(Arc::new(client));
                    }
                    Err(e) => tracing::debug!(error = %e, "a PostgreSQL read connection is still out of reach"),
                }
                slot.reconnecting.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            slot.reconnecting.store(false, Ordering::Release);
        }
    }
}

/// The read side as the store sees it.
pub struct PgReadSource(pub Arc<PgReads>);

impl ReadSource for PgReadSource {
    fn snapshot(&self) -> Result<Box<dyn Reads + Send + Sync>, StoreError> {
        let client = self.0.client().ok_or(StoreError::Reopening)?;
        Ok(Box::new(PgRead::new(client)))
    }

    /// A connection of its own: the copy's transaction holds it throughout.
    fn transfer_source(&self) -> Result<Box<dyn Source>, StoreError> {
        Ok(Box::new(self.0.connector.source()?))
    }
}

//! The storage boundary ([`Reads`](super::Reads), [`Writes`](super::Writes)) on PostgreSQL,
//! for several gateway nodes sharing one database (issue #18). The embedded redb store stays
//! the default; this backend keeps redb's records byte for byte (`schema`'s encodings), so
//! rows can be copied between the two.
//!
//! - [`PgRuntime`]: one thread running a current-thread tokio runtime that drives every
//!   connection of the backend. The boundary's methods are synchronous and are called from
//!   the store's writer thread and from inside tokio workers (also current-thread runtimes);
//!   the client half of tokio-postgres only talks to its connection through channels, so
//!   each call waits on its future with `futures_executor::block_on`, which works on any
//!   thread, inside a runtime or not, while the socket work happens on the runtime thread.
//!   Each wait is bounded ([`PgOptions::statement_timeout`] plus
//!   [`PgOptions::network_timeout`]), by a timer on the runtime thread, so a frozen server
//!   fails calls with [`StoreError::Io`] instead of hanging them. Never call the boundary
//!   from the runtime thread itself (nothing in the backend does): it would wait for itself.
//! - [`PgClient`]: one connection with its prepared statements; [`PgClient::begin`] starts a
//!   [`PgWrite`], and [`PgRead`] reads through a shared client.
//! - [`migrate`]: creates or upgrades the tables ([`SCHEMA_VERSION`]).
//! - [`PgSource`], [`PgSink`]: every row out of and into a database, for copies between
//!   backends (`store::transfer`).
//! - TLS to the server with rustls, verifying its certificate ([`PgOptions::tls`]).
//!
//! Failures map to [`StoreError`]: a lost or unreachable server is
//! [`StoreError::Io`] (temporary: a node that loses the database answers 451, never 250),
//! another node winning a conflict is [`StoreError::Conflict`].

mod access;
mod coordination;
mod engine;
mod error;
mod runtime;
mod schema;
#[cfg(test)]
mod tests;
mod tls;
mod transfer;

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

pub use access::{Autocommit, InTransaction, Pg, PgRead, PgWrite};
pub use coordination::{PgCoordination, PRUNE_EVERY};
pub use engine::{Connector, PgEngine, PgReadSource, PgReads};
pub use runtime::{PgClient, PgOptions, PgRuntime};
pub use schema::{check, migrate, version, SCHEMA_VERSION};
pub use transfer::{PgSink, PgSource};

use super::StoreError;

/// How long a call on a connection may wait for the server, beyond which it fails with
/// [`StoreError::Io`] instead of hanging: the server's own `statement_timeout` cannot end a
/// wait on a server that is frozen (or a network that swallows packets while the kernel
/// still acknowledges them), so the client keeps its own clock, on the runtime thread.
#[derive(Debug, Clone)]
pub(in crate::store) struct Deadline {
    runtime: tokio::runtime::Handle,
    limit: Duration,
}

impl Deadline {
    /// Waits for a client future on the calling thread (see the module docs for why this is
    /// safe on any thread), at most for the limit. A call that runs out leaves its
    /// connection in an unknown state: the caller must not use it for the same transaction
    /// again (a write's transaction is lost; a commit's outcome is unknown, so the write was
    /// not acknowledged and may be retried).
    pub(in crate::store) fn wait<T>(
        &self,
        work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let limit = self.limit;
        // The sleep is made inside the task: its timer is the runtime thread's.
        let mut timer = self
            .runtime
            .spawn(async move { tokio::time::sleep(limit).await });
        let mut work = pin!(work);
        let outcome = futures_executor::block_on(poll_fn(|cx| {
            if let Poll::Ready(result) = work.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(StoreError::from));
            }
            match std::pin::Pin::new(&mut timer).poll(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Err(StoreError::Io(format!(
                    "PostgreSQL did not answer within {:?}",
                    self.limit
                )))),
                Poll::Ready(Err(_)) => Poll::Ready(Err(StoreError::Io(
                    "the PostgreSQL runtime thread is gone".into(),
                ))),
                Poll::Pending => Poll::Pending,
            }
        }));
        timer.abort();
        outcome
    }
}

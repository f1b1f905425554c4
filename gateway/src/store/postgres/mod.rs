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
//! - [`PgClient`]: one connection with its prepared statements; [`PgClient::begin`] starts a
//!   [`PgWrite`], and [`PgRead`] reads through a shared client.
//! - [`migrate`]: creates or upgrades the tables ([`SCHEMA_VERSION`]).
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

use std::future::Future;

pub use access::{Autocommit, InTransaction, Pg, PgRead, PgWrite};
pub use coordination::PgCoordination;
pub use engine::{Connector, PgEngine, PgReadSource, PgReads};
pub use runtime::{PgClient, PgOptions, PgRuntime};
pub use schema::{check, migrate, SCHEMA_VERSION};

use super::StoreError;

/// Waits for a client future on the calling thread (see the module docs for why this is
/// safe on any thread).
fn wait<T>(work: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, StoreError> {
    Ok(futures_executor::block_on(work)?)
}

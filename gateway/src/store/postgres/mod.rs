//! The storage boundary ([`Reads`](super::Reads), [`Writes`](super::Writes)) on PostgreSQL,
//! for several gateway nodes sharing one database (issue #18). The embedded redb store stays
//! the default; this backend keeps redb's records byte for byte (`schema`'s encodings), so
//! rows can be copied between the two.
//!
//! - [`PgRuntime`]: one thread running a current-thread tokio runtime that drives every
//!   connection of the backend. The boundary's methods are synchronous and are called from
//!   the store's writer thread and from inside tokio workers (also current-thread runtimes);
//!   the client half of tokio-postgres only talks to its connection through channels, so
//!   each call waits on its future by parking the calling thread (`block_on`), which works
//!   on any thread, inside a runtime or not, while the socket work happens on the runtime
//!   thread. Each wait is bounded ([`PgOptions::statement_timeout`] plus
//!   [`PgOptions::network_timeout`]) by the park's own timeout, so a frozen server fails
//!   calls with [`StoreError::Io`] instead of hanging them. Never call the boundary
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

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

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
    limit: Duration,
}

impl Deadline {
    pub(in crate::store) fn new(limit: Duration) -> Self {
        Self { limit }
    }

    /// Waits for a client future on the calling thread (see the module docs for why this is
    /// safe on any thread), at most for the limit. A call that runs out leaves its
    /// connection in an unknown state: the caller must not use it for the same transaction
    /// again (a write's transaction is lost; a commit's outcome is unknown, so the write was
    /// not acknowledged and may be retried).
    pub(in crate::store) fn wait<T>(
        &self,
        work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        match poll_until(pin!(work), Some(Instant::now() + self.limit)) {
            Some(result) => Ok(result?),
            None => Err(StoreError::Io(format!(
                "PostgreSQL did not answer within {:?}",
                self.limit
            ))),
        }
    }
}

/// Wakes the thread that waits in [`block_on`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits for `work` on the calling thread, parking it until the connection's task on the
/// runtime thread wakes it: no runtime is needed here, nor a timer task per call.
pub(in crate::store) fn block_on<F: Future>(work: F) -> F::Output {
    let mut work = pin!(work);
    loop {
        // Without a deadline it only returns when done.
        if let Some(output) = poll_until(work.as_mut(), None) {
            return output;
        }
    }
}

/// [`block_on`] until `deadline` at most (the park's own timeout): `None` when it passed.
fn poll_until<F: Future>(
    mut work: std::pin::Pin<&mut F>,
    deadline: Option<Instant>,
) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = work.as_mut().poll(&mut cx) {
            return Some(output);
        }
        // Woken early or spuriously: poll again and see.
        match deadline {
            None => std::thread::park(),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                _ => return None,
            },
        }
    }
}

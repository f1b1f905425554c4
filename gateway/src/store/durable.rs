//! The proof that a write reached stable storage, and the one place that can make it.
//!
//! [`Durable`] has no public constructor and none visible to the rest of the store: the only
//! way to get one is [`Synced::commit`], which commits a redb write transaction (or
//! [`Synced::commit_postgres`], a PostgreSQL one, or in test-support builds
//! `Synced::commit_model`, the simulator's model database), and the writer hands one proof
//! to each request of that commit. A protocol session needs the proof before it may
//! acknowledge a message, so skipping the commit does not compile.

use redb::{CommitError, WriteTransaction};

use super::StoreError;

/// Proof that a commit reached stable storage. Only the store's commit path can create one,
/// so a protocol session that needs it before acknowledging a message cannot skip the commit.
#[derive(Debug)]
#[must_use]
pub struct Durable {
    _private: (),
}

impl Durable {
    /// For this crate's state-machine tests that model a store which has committed. Compiled
    /// only into unit tests, never into a library another crate (or the binary) links.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self { _private: () }
    }
}

/// A write transaction that committed. It is the only source of [`Durable`] proofs.
pub(super) struct Synced {
    _private: (),
}

impl Synced {
    /// Commits `txn`; with redb's default durability this returns after the fsync.
    pub(super) fn commit(txn: WriteTransaction) -> Result<Self, CommitError> {
        txn.commit()?;
        Ok(Self { _private: () })
    }

    /// Commits a PostgreSQL transaction; returns once the server reports the commit.
    ///
    /// What that report means is the server's `synchronous_commit`:
    /// - `on` (the default): the commit's WAL is flushed to the primary's disk; with
    ///   `synchronous_standby_names` set, also flushed on the synchronous standbys.
    /// - `remote_write` / `remote_apply`: as `on` locally, and the synchronous standbys have
    ///   written it to their operating system (`remote_write`) or applied it
    ///   (`remote_apply`); without synchronous standbys both are `local`.
    /// - `local`: flushed on the primary only, never waiting for a standby (a failover may
    ///   lose it).
    /// - `off`: not flushed at all before the report; a server crash loses it. The
    ///   PostgreSQL store refuses such a server at connect ([`StoreError::NotDurable`]), so
    ///   every proof made here stands for at least a local flush.
    ///
    /// A commit that outlasts `deadline` (a synchronous standby that is down makes the
    /// server wait for it indefinitely) is an error: its outcome is unknown, so nothing is
    /// acknowledged, and a retry may store a message twice but never loses one.
    pub(super) fn commit_postgres(
        txn: tokio_postgres::Transaction<'_>,
        deadline: &super::postgres::Deadline,
    ) -> Result<Self, StoreError> {
        deadline.wait(txn.commit())?;
        Ok(Self { _private: () })
    }

    /// Commits a transaction of the simulator's model database ([`super::model`]); returns
    /// once the model reports the commit.
    #[cfg(any(test, feature = "test-support"))]
    pub(super) fn commit_model(txn: super::model::ModelWrite<'_>) -> Result<Self, StoreError> {
        txn.commit()?;
        Ok(Self { _private: () })
    }

    /// One proof per request that shared the commit.
    pub(super) fn proof(&self) -> Durable {
        Durable { _private: () }
    }
}

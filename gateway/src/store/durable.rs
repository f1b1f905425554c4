//! The proof that a write reached stable storage, and the one place that can make it.
//!
//! [`Durable`] has no public constructor and none visible to the rest of the store: the only
//! way to get one is [`Synced::commit`], which commits a redb write transaction, and the
//! writer hands one proof to each request of that commit. A protocol session needs the proof
//! before it may acknowledge a message, so skipping the commit does not compile.

use redb::{CommitError, WriteTransaction};

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

    /// One proof per request that shared the commit.
    pub(super) fn proof(&self) -> Durable {
        Durable { _private: () }
    }
}

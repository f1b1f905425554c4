//! The redb store.

/// Proof that a commit reached stable storage. Only the store's commit path can create one,
/// so a protocol session that needs it before acknowledging a message cannot skip the commit.
#[derive(Debug)]
#[must_use]
pub struct Durable {
    _private: (),
}

impl Durable {
    pub(crate) fn after_sync() -> Self {
        Self { _private: () }
    }

    /// For state-machine tests that model a store which has committed.
    #[cfg(any(test, feature = "test-support"))]
    pub fn for_tests() -> Self {
        Self::after_sync()
    }
}

//! Store errors, classified by what a protocol should tell its client.

/// Why the store could not do what was asked. Messages name the problem, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk (or the file system's quota) is full; nothing was committed.
    #[error("storage is full: {0}")]
    Full(String),
    /// Any other I/O failure; nothing was committed.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The database file or a record in it is damaged.
    #[error("the store is damaged: {0}")]
    Corrupt(String),
    /// Another process has the store open.
    #[error("the store is in use by another gateway process")]
    Locked,
    /// The database's tables are older than this gateway's (or missing) and the gateway was
    /// told not to upgrade them itself.
    #[error("{0}")]
    Outdated(String),
    /// The store was written by a newer gateway.
    #[error("the store has schema version {found}; this gateway supports up to {supported}")]
    TooNew { found: u64, supported: u64 },
    /// The writer thread is gone (the gateway is shutting down).
    #[error("the store is closed")]
    Closed,
    /// The database is closed after a storage error and the writer thread is reopening it;
    /// nothing was done, and a later attempt may succeed.
    #[error("the store is being reopened after a storage error")]
    Reopening,
    /// A write's own input (for example a message's spool file) could not be read. Only that
    /// write failed and nothing of it was committed; the store itself is fine.
    #[error("a write's input could not be read: {0}")]
    Input(String),
    /// Another transaction won a conflict (a shared database's serialization failure or
    /// deadlock, SQLSTATE 40001 or 40P01): nothing of this transaction was committed, the
    /// database is fine, and running the whole transaction again is safe.
    #[error("the transaction conflicted with another one: {0}")]
    Conflict(String),
    /// The database is set up so that a commit it reports may still be lost (PostgreSQL with
    /// `synchronous_commit = off`); the store refuses to acknowledge mail on it.
    #[error("the database does not keep what it commits: {0}")]
    NotDurable(String),
    /// A write failed on a bug (it panicked). Only that write failed and nothing of it was
    /// committed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the error means the database itself failed, so that the transaction it
    /// happened in is lost for every write sharing it and redb must be reopened before it
    /// works again (after an I/O error it refuses everything: "previous I/O error"). Every
    /// other error belongs to the one write that met it.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, StoreError::Full(_) | StoreError::Io(_))
    }

    /// Whether another transaction won a conflict ([`StoreError::Conflict`]): retrying the
    /// whole transaction is safe and may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}

const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull
            || matches!(e.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
        {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Io(e.to_string())
        }
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
            redb::Error::Io(io) => io.into(),
            redb::Error::Corrupted(what) => StoreError::Corrupt(what),
            other => StoreError::Io(other.to_string()),
        }
    }
}

macro_rules! via_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}

via_redb_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

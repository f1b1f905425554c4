//! Why a backup or a restore did not happen. Every message says what to do.

use std::path::PathBuf;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target of a backup, or the data directory of a restore, holds something.
    #[error("{} is not empty: {what} only into an empty or new directory, so nothing is ever overwritten", .path.display())]
    NotEmpty { path: PathBuf, what: &'static str },
    /// The path is a file, not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A path the caller gave cannot be used as given.
    #[error("{0}")]
    InvalidPath(String),
    /// No manifest: not a backup, or one that did not finish.
    #[error("{} holds no backup: {} is missing (not a backup directory, or a backup that did not finish; a data directory's snapshots are in its snapshots/ folder)", .dir.display(), super::MANIFEST_FILE)]
    NoManifest { dir: PathBuf },
    /// The manifest is not what this gateway writes.
    #[error("the manifest {} is damaged: {problem}", .path.display())]
    BadManifest { path: PathBuf, problem: String },
    /// Written by a newer gateway, in a format this one does not know.
    #[error("the backup has format version {found}; this gateway reads up to {supported}: restore it with the gateway version that wrote it ({written_by}) or a newer one")]
    NewerFormat {
        found: u32,
        supported: u32,
        written_by: String,
    },
    /// The store in the backup has a schema this gateway does not know.
    #[error("the backup's store has schema version {found}; this gateway supports up to {supported}: restore it with the gateway version that wrote it ({written_by}) or a newer one")]
    NewerSchema {
        found: u64,
        supported: u64,
        written_by: String,
    },
    /// A file differs from what the manifest recorded: damaged or altered.
    #[error("{} does not match the backup's manifest ({problem}): the backup is damaged or was altered; nothing was restored", .path.display())]
    Mismatch { path: PathBuf, problem: String },
    /// A gateway runs on the data directory.
    #[error("a gateway is running on {}: stop it first; restore only writes into an empty data directory", .0.display())]
    GatewayRunning(PathBuf),
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BackupError {
    pub(crate) fn io<'a>(
        action: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| BackupError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// Whether the caller can fix it (a 4xx), as opposed to a failing disk or store.
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, BackupError::Io { .. } | BackupError::Store(_))
    }
}

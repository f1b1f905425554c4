//! Backups while the gateway runs, their restore, and the rolling snapshot.
//!
//! A backup is a directory: a consistent copy of the store ([`crate::store::Store::copy_to`],
//! one read transaction; a redb file also when the store is PostgreSQL), the proxy's retrieval key, the certificates (`tls/`) and the
//! configuration file, and last a [`Manifest`] with each file's SHA-256. Messages stay as
//! the store holds them, sealed per mailbox: a backup reveals no more than the store does,
//! but it does hold the TLS private key and the retrieval key, so it is written 0700/0600.
//!
//! Every file is written under a temporary name, synced and renamed; the manifest comes
//! last, so a backup without one did not finish and restore refuses it. The snapshot
//! ([`Snapshots`]) writes the same layout into `<data_dir>/snapshots/` and gives it its
//! name only when complete, so a file-level copy of the data directory taken at any moment
//! holds at least one complete, consistent backup.

mod create;
mod error;
mod files;
mod manifest;
mod restore;
mod snapshot;

pub use create::{create_backup, prepare_target, Sources};
pub use error::BackupError;
pub use manifest::{hash_file, BackupKind, FileEntry, Manifest};
pub use restore::{locate, restore};
pub use snapshot::{last_snapshot_at, latest_snapshot, Snapshots, KEEP_SNAPSHOTS, SNAPSHOTS_DIR};

/// The manifest's `format`.
pub const FORMAT: &str = "gateway-backup";
/// The layout version this gateway writes and the newest it restores.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name inside a backup.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The store's file name inside a backup (the data directory's own name for it).
pub const STORE_FILE: &str = crate::service::STORE_FILE;
/// The configuration file's name inside a backup.
pub const CONFIG_FILE: &str = "gateway.toml";
/// Where network callers of `CreateBackup` put their backups, inside the data directory.
pub const BACKUPS_DIR: &str = "backups";

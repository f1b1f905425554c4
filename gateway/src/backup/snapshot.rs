//! The rolling snapshot in the data directory (`[backup] snapshot_interval`).
//!
//! Administrators back up the data directory with their own tools, which copy files one by
//! one while the gateway writes: the live store file may be caught half-written. So the
//! gateway keeps complete backups in `<data_dir>/snapshots/`: each is written under a
//! `.partial-` name and renamed to its time (`20261204T201500.123Z`) only when complete and
//! synced, and the previous one is kept, so a copy of the folder taken at any moment holds
//! at least one complete, consistent snapshot (unless the copy takes longer than the
//! interval). `gateway restore --from <copy>/snapshots` takes the newest one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::files::{create_private_dir, sync_dir};
use super::{create_backup, BackupError, BackupKind, Manifest, Sources, MANIFEST_FILE};
use crate::net::ShutdownSignal;

/// The snapshots' folder inside the data directory.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Complete snapshots kept: the newest and the one before, which a copy that began before
/// the newest was complete still finds whole.
pub const KEEP_SNAPSHOTS: usize = 2;
const PARTIAL_PREFIX: &str = ".partial-";

/// Takes the snapshots of one gateway.
#[derive(Clone)]
pub struct Snapshots {
    sources: Sources,
    taken: watch::Sender<u64>,
}

impl Snapshots {
    pub fn new(sources: Sources) -> Self {
        Self {
            sources,
            taken: watch::Sender::new(0),
        }
    }

    /// `<data_dir>/snapshots`.
    pub fn dir(&self) -> PathBuf {
        self.sources.data_dir.join(SNAPSHOTS_DIR)
    }

    /// Counts the snapshots taken since start: a test or a status page waits on it.
    pub fn taken(&self) -> watch::Receiver<u64> {
        self.taken.subscribe()
    }

    /// Writes a new snapshot, then removes all but the [`KEEP_SNAPSHOTS`] newest ones and
    /// whatever an interrupted snapshot left. Blocking: the whole store is copied.
    pub fn take(&self) -> Result<(PathBuf, Manifest), BackupError> {
        let dir = self.dir();
        create_private_dir(&dir)?;
        remove_partial(&dir);
        let now = time::OffsetDateTime::now_utc();
        let name = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond()
        );
        let partial = dir.join(format!("{PARTIAL_PREFIX}{name}"));
        let manifest = create_backup(
            &self.sources,
            &partial,
            BackupKind::Snapshot,
            &mut |_, _| {},
        )?;
        // Two snapshots within a millisecond: the later one sorts after (`…Z-1`).
        let mut done = dir.join(&name);
        let mut n = 0;
        while done.exists() {
            n += 1;
            done = dir.join(format!("{name}-{n}"));
        }
        std::fs::rename(&partial, &done).map_err(BackupError::io("cannot rename", &partial))?;
        sync_dir(&dir)?;
        for old in complete(&dir).into_iter().rev().skip(KEEP_SNAPSHOTS) {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove an old snapshot");
            }
        }
        self.taken.send_modify(|n| *n += 1);
        Ok((done, manifest))
    }

    /// Takes a snapshot every `interval` until shutdown (the first one `interval` after
    /// start). A failed snapshot is logged and tried again at the next tick; the previous
    /// ones stay.
    pub async fn run(self, interval: Duration, mut shutdown: ShutdownSignal) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        // A snapshot that took longer than the interval is followed by a full interval,
        // not by a burst of catch-up snapshots.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.triggered() => return,
                _ = ticks.tick() => {}
            }
            let snapshots = self.clone();
            match tokio::task::spawn_blocking(move || snapshots.take()).await {
                Ok(Ok((path, manifest))) => tracing::info!(
                    path = %path.display(),
                    mailboxes = manifest.mailboxes,
                    messages = manifest.messages,
                    "snapshot written"
                ),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "snapshot failed; the previous ones are kept, trying again at the next interval")
                }
                Err(e) => tracing::error!(error = %e, "snapshot failed"),
            }
        }
    }
}

/// The complete snapshots in `dir`, oldest first.
fn complete(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    found.sort();
    found
}

/// When the newest complete snapshot in `<data_dir>/snapshots` read the store (its
/// manifest's RFC 3339 time); `None` when there is none (or its manifest is unreadable).
pub fn last_snapshot_at(data_dir: &Path) -> Option<String> {
    let newest = latest_snapshot(&data_dir.join(SNAPSHOTS_DIR))?;
    Manifest::read(&newest).ok().map(|m| m.created_at)
}

/// The newest complete snapshot in a snapshots folder.
pub fn latest_snapshot(dir: &Path) -> Option<PathBuf> {
    complete(dir).pop()
}

fn remove_partial(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(PARTIAL_PREFIX)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    #[test]
    fn snapshots_roll_keeping_the_two_newest_complete_ones() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(
            &data.path().join(super::super::STORE_FILE),
            &StoreOptions::default(),
        )
        .unwrap();
        let snapshots = Snapshots::new(Sources {
            store,
            data_dir: data.path().to_owned(),
            config_file: None,
        });
        // What a crash in the middle of a snapshot leaves.
        let leftover = snapshots.dir().join(".partial-20200101T000000.000Z");
        std::fs::create_dir_all(&leftover).unwrap();
        let taken = snapshots.taken();
        let mut paths = Vec::new();
        for _ in 0..3 {
            let (path, manifest) = snapshots.take().unwrap();
            manifest.verify(&path).unwrap();
            paths.push(path);
        }
        assert_eq!(*taken.borrow(), 3);
        assert_eq!(complete(&snapshots.dir()), paths[1..].to_vec());
        assert_eq!(latest_snapshot(&snapshots.dir()), Some(paths[2].clone()));
        assert!(!leftover.exists());
    }
}

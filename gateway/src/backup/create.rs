//! Writing a backup of a running (or stopped) gateway.

use std::path::{Path, PathBuf};

use super::files::{self, copy_file, create_private_dir, is_missing_or_empty, sync_dir};
use super::{BackupError, BackupKind, FileEntry, Manifest, CONFIG_FILE, MANIFEST_FILE, STORE_FILE};
use crate::service::RETRIEVAL_KEY_FILE;
use crate::store::Store;
use crate::tls::TLS_DIR;

/// What a backup is taken of.
#[derive(Clone)]
pub struct Sources {
    pub store: Store,
    /// The retrieval key and `tls/` are read from here.
    pub data_dir: PathBuf,
    /// The configuration file, if the gateway has one.
    pub config_file: Option<PathBuf>,
}

/// Checks that `target` can take a backup: missing, or an empty directory.
pub fn prepare_target(target: &Path) -> Result<(), BackupError> {
    if is_missing_or_empty(target)? {
        Ok(())
    } else {
        Err(BackupError::NotEmpty {
            path: target.to_owned(),
            what: "a backup is written",
        })
    }
}

/// Writes a backup of `sources` into `target` (missing or empty). `progress` hears the
/// percentage done and what is being done. On failure, what was written is removed.
pub fn create_backup(
    sources: &Sources,
    target: &Path,
    kind: BackupKind,
    progress: &mut dyn FnMut(u8, &str),
) -> Result<Manifest, BackupError> {
    prepare_target(target)?;
    let existed = target.exists();
    if !existed {
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent)?;
        }
        // Not recursive: if another backup created it meanwhile, this one stops here
        // instead of writing into (and then cleaning up) the other's directory.
        crate::fs::create_new_private_dir(target).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::NotEmpty {
                path: target.to_owned(),
                what: "a backup is written",
            },
            _ => BackupError::io("cannot create", target)(e),
        })?;
    }
    let written = write_backup(sources, target, kind, progress);
    if written.is_err() {
        if existed {
            files::empty_dir(target);
        } else if let Err(e) = std::fs::remove_dir_all(target) {
            tracing::warn!(path = %target.display(), error = %e, "cannot remove a failed backup");
        }
    }
    written
}

fn write_backup(
    sources: &Sources,
    target: &Path,
    kind: BackupKind,
    progress: &mut dyn FnMut(u8, &str),
) -> Result<Manifest, BackupError> {
    progress(0, "copying the store");
    let created_at = now_rfc3339();
    // A name no listed file has, so a crash leaves nothing that looks like a store.
    let partial = target.join(format!(".{STORE_FILE}.partial"));
    let mut last = 0;
    let counts = sources.store.copy_to(&partial, &mut |done, total| {
        // The store is nearly all of the work: 0..95 %.
        let percent = (done.saturating_mul(95) / total.max(1)).min(95) as u8;
        if percent != last {
            last = percent;
            progress(percent, "copying the store");
        }
    });
    let counts = match counts {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    let mut manifest = Manifest::new(kind, counts, created_at);
    let (bytes, sha256) = super::hash_file(&partial)?;
    let store = target.join(STORE_FILE);
    std::fs::rename(&partial, &store).map_err(BackupError::io("cannot create", &store))?;
    manifest.files.push(FileEntry {
        path: STORE_FILE.to_owned(),
        bytes,
        sha256,
    });

    progress(96, "copying the keys, certificates and configuration");
    let key = sources.data_dir.join(RETRIEVAL_KEY_FILE);
    if key.exists() {
        add(&mut manifest, &key, target, RETRIEVAL_KEY_FILE)?;
    }
    let tls = sources.data_dir.join(TLS_DIR);
    if tls.is_dir() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&tls).map_err(BackupError::io("cannot read", &tls))? {
            let entry = entry.map_err(BackupError::io("cannot read", &tls))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Regular files only; temporary files of a certificate change in flight stay.
            if entry.file_type().is_ok_and(|t| t.is_file()) && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        if !names.is_empty() {
            create_private_dir(&target.join(TLS_DIR))?;
        }
        for name in names {
            add(
                &mut manifest,
                &tls.join(&name),
                target,
                &format!("{TLS_DIR}/{name}"),
            )?;
        }
    }
    if let Some(config) = sources.config_file.as_deref().filter(|c| c.is_file()) {
        add(&mut manifest, config, target, CONFIG_FILE)?;
    }
    sync_dir(target)?;
    // Last: its presence says the backup is complete.
    files::write_bytes(&target.join(MANIFEST_FILE), &manifest.to_json())?;
    progress(100, "done");
    Ok(manifest)
}

fn add(manifest: &mut Manifest, src: &Path, target: &Path, name: &str) -> Result<(), BackupError> {
    let (bytes, sha256) = copy_file(src, &target.join(name))?;
    manifest.files.push(FileEntry {
        path: name.to_owned(),
        bytes,
        sha256,
    });
    Ok(())
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> (tempfile::TempDir, Sources) {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(
            &data.path().join(STORE_FILE),
            &crate::store::StoreOptions::default(),
        )
        .unwrap();
        std::fs::write(data.path().join(RETRIEVAL_KEY_FILE), [1u8; 32]).unwrap();
        std::fs::create_dir(data.path().join(TLS_DIR)).unwrap();
        std::fs::write(data.path().join(TLS_DIR).join("self-signed.key.pem"), "key").unwrap();
        std::fs::write(data.path().join(TLS_DIR).join(".partial-x"), "half").unwrap();
        let config = data.path().join("gateway.toml");
        std::fs::write(&config, "[gateway]\n").unwrap();
        let sources = Sources {
            store,
            data_dir: data.path().to_owned(),
            config_file: Some(config),
        };
        (data, sources)
    }

    #[test]
    fn a_backup_lists_every_file_it_holds_and_verifies() {
        let (_data, sources) = sources();
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("b");
        let mut seen = Vec::new();
        let manifest = create_backup(&sources, &target, BackupKind::Backup, &mut |p, _| {
            seen.push(p)
        })
        .unwrap();
        let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                STORE_FILE,
                RETRIEVAL_KEY_FILE,
                "tls/self-signed.key.pem",
                CONFIG_FILE
            ]
        );
        assert_eq!(seen.last(), Some(&100));
        assert_eq!(Manifest::read(&target).unwrap(), manifest);
        manifest.verify(&target).unwrap();
        assert_eq!(manifest.kind, BackupKind::Backup);
        assert_eq!((manifest.mailboxes, manifest.messages), (0, 0));
    }

    #[test]
    fn a_non_empty_target_is_refused_and_left_alone() {
        let (_data, sources) = sources();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("precious"), "x").unwrap();
        let err =
            create_backup(&sources, out.path(), BackupKind::Backup, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, BackupError::NotEmpty { .. }), "{err}");
        assert!(err.to_string().contains("empty or new directory"), "{err}");
        assert_eq!(std::fs::read(out.path().join("precious")).unwrap(), b"x");
        let file = out.path().join("precious");
        let err = create_backup(&sources, &file, BackupKind::Backup, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, BackupError::NotADirectory(_)), "{err}");
    }
}

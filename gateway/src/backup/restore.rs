//! Restoring a backup into an empty data directory.

use std::path::{Path, PathBuf};

use super::files::{self, copy_file, create_private_dir, is_missing_or_empty};
use super::{latest_snapshot, BackupError, Manifest, CONFIG_FILE, MANIFEST_FILE, SNAPSHOTS_DIR};
use crate::store::schema::SCHEMA_VERSION;
use crate::store::{Store, StoreOptions};

/// The backup `from` names: a backup directory, a snapshots folder (its newest complete
/// snapshot), or a copy of a data directory (the newest snapshot in its `snapshots/`).
pub fn locate(from: &Path) -> Result<PathBuf, BackupError> {
    if from.join(MANIFEST_FILE).exists() {
        return Ok(from.to_owned());
    }
    if let Some(latest) = latest_snapshot(from) {
        return Ok(latest);
    }
    if let Some(latest) = latest_snapshot(&from.join(SNAPSHOTS_DIR)) {
        return Ok(latest);
    }
    if !from.exists() {
        return Err(BackupError::InvalidPath(format!(
            "{} does not exist",
            from.display()
        )));
    }
    Err(BackupError::NoManifest {
        dir: from.to_owned(),
    })
}

/// Checks the backup at `from` ([`locate`]) against its manifest and copies it into
/// `data_dir`, which must be missing or empty; the configuration file goes to
/// `config_to` if given (a new file). Nothing is written unless every check passed, and a
/// failure half-way removes what was written. Returns the backup used and its manifest.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    config_to: Option<&Path>,
) -> Result<(PathBuf, Manifest), BackupError> {
    let source = locate(from)?;
    let manifest = Manifest::read(&source)?;
    if manifest.schema_version > SCHEMA_VERSION {
        return Err(BackupError::NewerSchema {
            found: manifest.schema_version,
            supported: SCHEMA_VERSION,
            written_by: manifest.gateway_version.clone(),
        });
    }
    manifest.verify(&source)?;
    if !is_missing_or_empty(data_dir)? {
        return Err(BackupError::NotEmpty {
            path: data_dir.to_owned(),
            what: "a backup is restored",
        });
    }
    if let Some(config_to) = config_to {
        if config_to.exists() {
            return Err(BackupError::InvalidPath(format!(
                "{} exists already: restore writes the configuration only to a new file",
                config_to.display()
            )));
        }
    }
    let existed = data_dir.exists();
    // Created (0700, parents too) as every start of the gateway prepares it.
    crate::service::prepare_data_dir(data_dir)
        .map_err(BackupError::io("cannot prepare", data_dir))?;
    let mut config_written = None;
    let copied =
        copy_all(&source, &manifest, data_dir, config_to, &mut config_written).and_then(|()| {
            // The store opens (redb checks its own pages) before we call it restored.
            let store = Store::open(&data_dir.join(super::STORE_FILE), &StoreOptions::default())?;
            drop(store);
            Ok(())
        });
    if let Err(e) = copied {
        if existed {
            files::empty_dir(data_dir);
        } else {
            let _ = std::fs::remove_dir_all(data_dir);
        }
        if let Some(config) = config_written {
            let _ = std::fs::remove_file(config);
        }
        return Err(e);
    }
    Ok((source, manifest))
}

fn copy_all(
    source: &Path,
    manifest: &Manifest,
    data_dir: &Path,
    config_to: Option<&Path>,
    config_written: &mut Option<PathBuf>,
) -> Result<(), BackupError> {
    for entry in &manifest.files {
        let src = manifest.path_of(source, entry)?;
        let dest = if entry.path == CONFIG_FILE {
            match config_to {
                Some(config_to) => config_to.to_owned(),
                None => continue,
            }
        } else {
            manifest.path_of(data_dir, entry)?
        };
        if let Some(parent) = dest.parent() {
            if entry.path != CONFIG_FILE {
                create_private_dir(parent)?;
            }
        }
        let (bytes, sha256) = copy_file(&src, &dest)?;
        if entry.path == CONFIG_FILE {
            *config_written = Some(dest.clone());
        }
        // Checked again as copied: the backup could change between the check and the copy.
        if bytes != entry.bytes || sha256 != entry.sha256 {
            return Err(BackupError::Mismatch {
                path: src,
                problem: "it changed while it was restored".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{create_backup, BackupKind, Sources, STORE_FILE};
    use super::*;

    fn backup() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let store = Store::open(&data.join(STORE_FILE), &StoreOptions::default()).unwrap();
        std::fs::write(root.path().join("gateway.toml"), "[gateway]\n").unwrap();
        let sources = Sources {
            store,
            data_dir: data,
            config_file: Some(root.path().join("gateway.toml")),
        };
        let target = root.path().join("backup");
        create_backup(&sources, &target, BackupKind::Backup, &mut |_, _| {}).unwrap();
        (root, target)
    }

    #[test]
    fn a_backup_restores_into_a_new_directory_with_its_configuration() {
        let (root, backup) = backup();
        let data = root.path().join("restored");
        let config = root.path().join("restored.toml");
        let (used, manifest) = restore(&backup, &data, Some(&config)).unwrap();
        assert_eq!(used, backup);
        assert_eq!(manifest.schema_version, SCHEMA_VERSION);
        assert!(data.join(STORE_FILE).is_file());
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "[gateway]\n");
        assert!(
            !data.join(CONFIG_FILE).exists(),
            "the configuration goes where asked only"
        );
    }

    #[test]
    fn restore_refuses_a_data_directory_that_holds_anything() {
        let (root, backup) = backup();
        let data = root.path().join("restored");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("gateway.redb"), "live data").unwrap();
        let err = restore(&backup, &data, None).unwrap_err();
        assert!(matches!(err, BackupError::NotEmpty { .. }), "{err}");
        assert_eq!(
            std::fs::read(data.join("gateway.redb")).unwrap(),
            b"live data"
        );
    }

    #[test]
    fn a_tampered_backup_is_refused_and_nothing_is_written() {
        let (root, backup) = backup();
        let store = backup.join(STORE_FILE);
        let mut bytes = std::fs::read(&store).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&store, bytes).unwrap();
        let data = root.path().join("restored");
        let err = restore(&backup, &data, None).unwrap_err();
        assert!(matches!(err, BackupError::Mismatch { .. }), "{err}");
        assert!(!data.exists(), "nothing restored");
    }

    #[test]
    fn a_store_of_a_newer_schema_is_refused() {
        let (root, backup) = backup();
        let mut manifest = Manifest::read(&backup).unwrap();
        manifest.schema_version = SCHEMA_VERSION + 1;
        manifest.gateway_version = "9.9.9".into();
        std::fs::write(backup.join(MANIFEST_FILE), manifest.to_json()).unwrap();
        let err = restore(&backup, &root.path().join("restored"), None).unwrap_err();
        assert!(matches!(err, BackupError::NewerSchema { .. }), "{err}");
        assert!(err.to_string().contains("9.9.9"), "{err}");
    }

    #[test]
    fn an_unfinished_backup_is_no_backup() {
        let (root, backup) = backup();
        std::fs::remove_file(backup.join(MANIFEST_FILE)).unwrap();
        let err = restore(&backup, &root.path().join("restored"), None).unwrap_err();
        assert!(matches!(err, BackupError::NoManifest { .. }), "{err}");
    }
}

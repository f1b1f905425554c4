//! The manifest: what a backup holds, who wrote it, and each file's SHA-256.
//!
//! It is written last, under its name only once complete, so a backup without one did not
//! finish. Restore reads it first and refuses a backup whose files differ from it.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{BackupError, FORMAT, FORMAT_VERSION, MANIFEST_FILE, STORE_FILE};

/// Why the backup was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// `gateway backup` or `CreateBackup`.
    Backup,
    /// The rolling snapshot in the data directory (`[backup] snapshot_interval`).
    Snapshot,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the backup directory, `/`-separated (`gateway.redb`, `tls/...`).
    pub path: String,
    pub bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always `gateway-backup`.
    pub format: String,
    /// Bumped when the layout changes; restore refuses versions newer than it knows.
    pub format_version: u32,
    /// The version of the gateway that wrote it.
    pub gateway_version: String,
    /// When the store was read, RFC 3339 UTC.
    pub created_at: String,
    pub kind: BackupKind,
    /// The store's schema version.
    pub schema_version: u64,
    pub mailboxes: u64,
    pub messages: u64,
    /// Every file with its size and checksum; the store first.
    pub files: Vec<FileEntry>,
}

/// The largest manifest read: a few files, so anything bigger is not one.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

impl Manifest {
    pub fn new(kind: BackupKind, counts: crate::store::CopyCounts, created_at: String) -> Self {
        Self {
            format: FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            gateway_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_at,
            kind,
            schema_version: counts.schema_version,
            mailboxes: counts.mailboxes,
            messages: counts.messages,
            files: Vec::new(),
        }
    }

    /// Reads and checks the manifest of the backup in `dir`: its format, its version, and
    /// that each file it names stays inside `dir`. The files themselves: [`Manifest::verify`].
    pub fn read(dir: &Path) -> Result<Self, BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NoManifest {
                    dir: dir.to_owned(),
                })
            }
            Err(e) => return Err(BackupError::io("cannot read", &path)(e)),
        };
        let mut text = Vec::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(BackupError::io("cannot read", &path))?;
        let bad = |problem: String| BackupError::BadManifest {
            path: path.clone(),
            problem,
        };
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad("larger than any manifest".into()));
        }
        // The version first, so a newer layout is reported as such, not as damage.
        let header: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if header["format"] != FORMAT {
            return Err(bad(format!("not a {FORMAT} manifest")));
        }
        let version = header["formatVersion"]
            .as_u64()
            .ok_or_else(|| bad("formatVersion is missing".into()))?;
        if version > u64::from(FORMAT_VERSION) {
            return Err(BackupError::NewerFormat {
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
                written_by: header["gatewayVersion"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned(),
            });
        }
        let manifest: Manifest = serde_json::from_value(header).map_err(|e| bad(e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        for entry in &manifest.files {
            relative_path(&entry.path).ok_or_else(|| {
                bad(format!(
                    "`{}` is not a plain path inside the backup",
                    entry.path
                ))
            })?;
            if !seen.insert(entry.path.as_str()) {
                return Err(bad(format!("`{}` is listed twice", entry.path)));
            }
        }
        if !seen.contains(STORE_FILE) {
            return Err(bad(format!("it lists no {STORE_FILE}")));
        }
        Ok(manifest)
    }

    /// Checks every file against its size and SHA-256.
    pub fn verify(&self, dir: &Path) -> Result<(), BackupError> {
        for entry in &self.files {
            let path = self.path_of(dir, entry)?;
            let (bytes, sha256) = hash_file(&path)?;
            if bytes != entry.bytes {
                return Err(BackupError::Mismatch {
                    path,
                    problem: format!("{bytes} bytes, {} recorded", entry.bytes),
                });
            }
            if sha256 != entry.sha256 {
                return Err(BackupError::Mismatch {
                    path,
                    problem: "its SHA-256 differs".into(),
                });
            }
        }
        Ok(())
    }

    /// Where `entry` is inside the backup at `dir`.
    pub fn path_of(&self, dir: &Path, entry: &FileEntry) -> Result<PathBuf, BackupError> {
        let relative = relative_path(&entry.path).ok_or_else(|| BackupError::BadManifest {
            path: dir.join(MANIFEST_FILE),
            problem: format!("`{}` is not a plain path inside the backup", entry.path),
        })?;
        Ok(dir.join(relative))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("manifests always serialise");
        text.push(b'\n');
        text
    }
}

/// A manifest path as a relative path of plain names: nothing that could reach outside
/// the directory it is joined to.
fn relative_path(path: &str) -> Option<PathBuf> {
    let relative = PathBuf::from(path);
    let plain = !path.is_empty()
        && !path.contains('\\')
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    plain.then_some(relative)
}

/// The size and lowercase-hex SHA-256 of a regular file (a link is refused: a backup holds
/// files only).
pub fn hash_file(path: &Path) -> Result<(u64, String), BackupError> {
    let meta = std::fs::symlink_metadata(path).map_err(BackupError::io("cannot read", path))?;
    if !meta.is_file() {
        return Err(BackupError::Mismatch {
            path: path.to_owned(),
            problem: "not a regular file".into(),
        });
    }
    let mut file = std::fs::File::open(path).map_err(BackupError::io("cannot read", path))?;
    let mut hasher = Hasher::default();
    std::io::copy(&mut file, &mut hasher).map_err(BackupError::io("cannot read", path))?;
    Ok(hasher.finish())
}

/// SHA-256 and a byte count over what is written to it.
pub struct Hasher {
    digest: ring::digest::Context,
    bytes: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        }
    }
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
        self.bytes += data.len() as u64;
    }

    pub fn finish(self) -> (u64, String) {
        let hex = data_encoding::HEXLOWER.encode(self.digest.finish().as_ref());
        (self.bytes, hex)
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CopyCounts;

    fn manifest_with(files: &[(&str, &[u8])], dir: &Path) -> Manifest {
        let counts = CopyCounts {
            schema_version: 4,
            mailboxes: 1,
            messages: 2,
        };
        let mut manifest = Manifest::new(BackupKind::Backup, counts, "2026-01-01T00:00:00Z".into());
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            let (bytes, sha256) = hash_file(&path).unwrap();
            manifest.files.push(FileEntry {
                path: (*name).to_owned(),
                bytes,
                sha256,
            });
        }
        std::fs::write(dir.join(MANIFEST_FILE), manifest.to_json()).unwrap();
        manifest
    }

    #[test]
    fn sha256_is_the_standard_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            hash_file(&path).unwrap(),
            (
                3,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_owned()
            )
        );
    }

    #[test]
    fn a_manifest_round_trips_and_verifies_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let written = manifest_with(
            &[(STORE_FILE, b"store"), ("tls/self-signed.key.pem", b"key")],
            dir.path(),
        );
        let read = Manifest::read(dir.path()).unwrap();
        assert_eq!(read, written);
        read.verify(dir.path()).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap())
                .unwrap();
        for key in [
            "format",
            "formatVersion",
            "gatewayVersion",
            "createdAt",
            "messages",
            "mailboxes",
            "files",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }

    #[test]
    fn a_changed_byte_or_size_is_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = manifest_with(&[(STORE_FILE, b"store")], dir.path());
        std::fs::write(dir.path().join(STORE_FILE), b"stork").unwrap();
        let err = manifest.verify(dir.path()).unwrap_err();
        assert!(matches!(err, BackupError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("SHA-256"), "{err}");
        std::fs::write(dir.path().join(STORE_FILE), b"stores").unwrap();
        let err = manifest.verify(dir.path()).unwrap_err();
        assert!(err.to_string().contains("6 bytes, 5 recorded"), "{err}");
        std::fs::remove_file(dir.path().join(STORE_FILE)).unwrap();
        assert!(manifest.verify(dir.path()).is_err());
    }

    #[test]
    fn a_newer_format_is_refused_by_version_not_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut json: serde_json::Value =
            serde_json::to_value(manifest_with(&[(STORE_FILE, b"s")], dir.path())).unwrap();
        json["formatVersion"] = (FORMAT_VERSION + 1).into();
        json["somethingNew"] = true.into();
        json["gatewayVersion"] = "9.0.0".into();
        std::fs::write(dir.path().join(MANIFEST_FILE), json.to_string()).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(matches!(err, BackupError::NewerFormat { .. }), "{err}");
        assert!(err.to_string().contains("9.0.0"), "{err}");
    }

    #[test]
    fn paths_outside_the_backup_and_missing_stores_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = manifest_with(&[(STORE_FILE, b"s")], dir.path());
        for bad in ["../x", "/etc/passwd", "tls/../../x", "", "a\\b"] {
            let mut tampered = manifest.clone();
            tampered.files.push(FileEntry {
                path: bad.into(),
                bytes: 0,
                sha256: String::new(),
            });
            std::fs::write(dir.path().join(MANIFEST_FILE), tampered.to_json()).unwrap();
            let err = Manifest::read(dir.path()).unwrap_err();
            assert!(
                matches!(err, BackupError::BadManifest { .. }),
                "{bad}: {err}"
            );
        }
        let mut storeless = manifest.clone();
        storeless.files.clear();
        std::fs::write(dir.path().join(MANIFEST_FILE), storeless.to_json()).unwrap();
        assert!(Manifest::read(dir.path()).is_err());
        std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(matches!(
            Manifest::read(dir.path()),
            Err(BackupError::NoManifest { .. })
        ));
    }
}

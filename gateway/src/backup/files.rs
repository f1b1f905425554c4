//! Writing files so that a crash leaves either nothing or the whole file under its name.

use std::io::{Read, Write};
use std::path::Path;

use super::manifest::Hasher;
use super::BackupError;

/// Creates `dir` (and missing parents) readable by the owner only.
pub fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    crate::fs::create_private_dir(dir).map_err(BackupError::io("cannot create", dir))
}

/// Whether `dir` is missing or an empty directory; a file is an error.
pub fn is_missing_or_empty(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(_) if dir.exists() && !dir.is_dir() => Err(BackupError::NotADirectory(dir.to_owned())),
        Err(e) => Err(BackupError::io("cannot read", dir)(e)),
    }
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    crate::fs::sync_dir(dir).map_err(BackupError::io("cannot sync", dir))
}

/// Copies `src` to `dest` (0600) through a synced temporary file in `dest`'s directory,
/// renamed into place; returns the bytes and SHA-256 of what was written.
pub fn copy_file(src: &Path, dest: &Path) -> Result<(u64, String), BackupError> {
    let mut input = std::fs::File::open(src).map_err(BackupError::io("cannot read", src))?;
    write_file(dest, |out, hasher| {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match input.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BackupError::io("cannot read", src)(e)),
            };
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n])
                .map_err(BackupError::io("cannot write", dest))?;
        }
    })
}

/// Writes `bytes` to `dest` (0600) as [`copy_file`] does.
pub fn write_bytes(dest: &Path, bytes: &[u8]) -> Result<(u64, String), BackupError> {
    write_file(dest, |out, hasher| {
        hasher.update(bytes);
        out.write_all(bytes)
            .map_err(BackupError::io("cannot write", dest))
    })
}

fn write_file(
    dest: &Path,
    fill: impl FnOnce(&mut std::fs::File, &mut Hasher) -> Result<(), BackupError>,
) -> Result<(u64, String), BackupError> {
    let dir = dest
        .parent()
        .ok_or_else(|| BackupError::InvalidPath(format!("{} has no parent", dest.display())))?;
    // tempfile creates it 0600 whatever the umask.
    let mut temp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(BackupError::io("cannot create a file in", dir))?;
    let mut hasher = Hasher::default();
    fill(temp.as_file_mut(), &mut hasher)?;
    temp.as_file()
        .sync_all()
        .map_err(BackupError::io("cannot sync", dest))?;
    temp.persist_noclobber(dest)
        .map_err(|e| BackupError::io("cannot create", dest)(e.error))?;
    sync_dir(dir)?;
    Ok(hasher.finish())
}

/// Removes everything inside `dir`, keeping `dir` itself (best effort: used to undo a
/// backup or restore that failed half-way in a directory that was empty before).
pub fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove what a failed backup or restore left");
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_are_private_complete_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, vec![7u8; 200_000]).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dest = dir.path().join("dest");
        let (bytes, sha256) = copy_file(&src, &dest).unwrap();
        assert_eq!(bytes, 200_000);
        assert_eq!(
            (bytes, sha256),
            super::super::hash_file(&dest).unwrap(),
            "the checksum is of what was written"
        );
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(copy_file(&src, &dest).is_err(), "an existing file stays");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }
}

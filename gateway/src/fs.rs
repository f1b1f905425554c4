//! Files written so that a crash leaves the old content or the new, never a torn file, in
//! directories only the owner can read: what TLS material, backups and log files share.
//! The errors are the cause alone; the caller names what it was doing.

use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` (and missing parents) readable by the owner only (0700 on Unix). An
/// existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `dir` (its parent must exist) readable by the owner only; fails if it exists.
pub fn create_new_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a directory's entries (creations, renames) durable. Nothing to do off Unix.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` through a synced temporary file (a `.tmp-` name, so directory
/// listings can pass it over, created with `mode` so it is never readable by others) in
/// `dir`, the directory of `path`, renamed over `path`: a reader
/// sees the old file or the new one, never a torn one. The rename is made durable by
/// [`sync_dir`], which the caller calls once after all its files.
pub fn write_atomically(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// For tests: the permission bits of `path` (`0o700`, `0o600`, ...).
#[cfg(all(test, unix))]
pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_are_the_owners_and_only_the_new_one_refuses_an_existing_dir() {
        let base = tempfile::tempdir().unwrap();
        let nested = base.path().join("a/b");
        create_private_dir(&nested).unwrap();
        create_private_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        let new = base.path().join("new");
        create_new_private_dir(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        assert!(create_new_private_dir(&new).is_err());
        assert!(create_new_private_dir(&base.path().join("x/y")).is_err());
        sync_dir(&nested).unwrap();
    }

    #[test]
    fn atomic_writes_replace_the_file_with_the_mode_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomically(dir.path(), &path, b"old", 0o644).unwrap();
        write_atomically(dir.path(), &path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("missing");
        assert!(write_atomically(&missing, &missing.join("f"), b"x", 0o600).is_err());
    }
}

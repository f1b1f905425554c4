//! Owner-only permissions on the data directory and what it holds, whatever the umask.

use std::path::Path;

/// Gives `path` at most `mode` (0700 for directories, 0600 for files): bits beyond it are
/// removed, with a log line when an existing file or directory was more open.
#[cfg(unix)]
pub fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))?;
        tracing::info!(
            path = %path.display(),
            from = format_args!("{current:o}"),
            to = format_args!("{:o}", current & mode),
            "tightened permissions: only the gateway's user may read its data"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn tighten(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Creates the data directory (0700) if missing and tightens it if it exists. A directory
/// the gateway's user does not own (and so cannot tighten) is used with a warning.
pub fn prepare_data_dir(data_dir: &Path) -> std::io::Result<()> {
    crate::fs::create_private_dir(data_dir)?;
    if let Err(e) = tighten(data_dir, 0o700) {
        tracing::warn!(path = %data_dir.display(), error = %e, "cannot make the data directory private to the gateway's user");
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::fs::mode;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_data_directory_is_private_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/data");
        prepare_data_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        let existing = root.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_data_dir(&existing).unwrap();
        assert_eq!(mode(&existing), 0o700, "tightened at start");
    }
}

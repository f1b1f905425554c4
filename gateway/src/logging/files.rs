//! Log files in the data directory: `<data_dir>/logs/gateway.log.YYYY-MM-DD` (UTC), a new
//! one every day (`tracing-appender`), and the ones past `[logging] retention_days`
//! removed.
//!
//! Files are deleted by the date in their name, not by count: after weeks of downtime the
//! old files go at the next start even though few were written since. While the gateway
//! runs, the appender keeps at most `retention_days` files as each day's file is opened.
//! Only names of exactly this shape are touched; anything else in the directory stays.

use std::path::{Path, PathBuf};

use time::{Date, Duration, OffsetDateTime};
use tracing_appender::rolling::{RollingFileAppender, Rotation};

/// The folder of the log files inside the data directory.
pub const LOG_DIR: &str = "logs";
/// Each day's file is this, a dot and the date.
pub const FILE_PREFIX: &str = "gateway.log";

/// The log directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot write log files to {}: {cause}", directory.display())]
pub struct LogFileError {
    pub directory: PathBuf,
    pub cause: std::io::Error,
}

/// Creates `directory` (owner only), removes files past `retention_days` and opens the
/// appender; also returns how many old files were removed.
pub fn open(
    directory: &Path,
    retention_days: u32,
) -> Result<(RollingFileAppender, usize), LogFileError> {
    let fail = |cause| LogFileError {
        directory: directory.to_owned(),
        cause,
    };
    create_private_dir(directory).map_err(fail)?;
    let today = OffsetDateTime::now_utc().date();
    let removed = prune(directory, retention_days, today).map_err(fail)?;
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(FILE_PREFIX)
        .max_log_files(retention_days.max(1) as usize)
        .build(directory)
        .map_err(|e| fail(std::io::Error::other(e.to_string())))?;
    Ok((appender, removed))
}

fn create_private_dir(directory: &Path) -> std::io::Result<()> {
    crate::fs::create_private_dir(directory)?;
    // An existing directory made by hand may be more open: lines name clients.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The date of a log file's name, if it is one.
pub fn file_date(name: &str) -> Option<Date> {
    let date = name.strip_prefix(FILE_PREFIX)?.strip_prefix('.')?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(date, format).ok()
}

/// Deletes the log files in `directory` dated `retention_days` or more days before
/// `today`, so `retention_days` files remain at most (today's included). Returns how many
/// were deleted.
pub fn prune(directory: &Path, retention_days: u32, today: Date) -> std::io::Result<usize> {
    let oldest_kept = today - Duration::days(i64::from(retention_days.max(1)) - 1);
    let mut removed = 0;
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(date) = name.to_str().and_then(file_date) else {
            continue;
        };
        if date < oldest_kept && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_past_the_retention_are_deleted_by_their_date_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "gateway.log.2026-11-19",
            "gateway.log.2026-11-20",
            "gateway.log.2026-11-21",
            "gateway.log.2026-12-03",
            "gateway.log.2026-12-04",
            // Not ours, or not a date: kept whatever their age.
            "gateway.log.2020-01-01.gz",
            "gateway.log.yesterday",
            "other.log.2020-01-01",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        // A directory with a log file's name is not deleted either.
        std::fs::create_dir(dir.path().join("gateway.log.2019-05-05")).unwrap();

        let removed = prune(dir.path(), 14, date!(2026 - 12 - 04)).unwrap();
        assert_eq!(removed, 2);
        assert_eq!(
            names(dir.path()),
            [
                "gateway.log.2019-05-05",
                "gateway.log.2020-01-01.gz",
                "gateway.log.2026-11-21",
                "gateway.log.2026-12-03",
                "gateway.log.2026-12-04",
                "gateway.log.yesterday",
                "notes.txt",
                "other.log.2020-01-01",
            ]
        );
        // A day later the oldest of the fourteen goes too.
        assert_eq!(prune(dir.path(), 14, date!(2026 - 12 - 05)).unwrap(), 1);
        // One day of retention keeps today's file only.
        assert_eq!(prune(dir.path(), 1, date!(2026 - 12 - 05)).unwrap(), 2);
        assert!(!names(dir.path())
            .iter()
            .any(|n| n.starts_with("gateway.log.2026")));
    }

    #[test]
    fn the_appender_writes_todays_file_in_a_private_directory() {
        let data = tempfile::tempdir().unwrap();
        let directory = data.path().join(LOG_DIR);
        let old = "gateway.log.2000-01-01";
        create_private_dir(&directory).unwrap();
        std::fs::write(directory.join(old), b"old").unwrap();

        let (appender, removed) = open(&directory, 14).unwrap();
        assert_eq!(removed, 1);
        let (subscriber, _control) = crate::logging::subscriber_with(
            crate::config::LogLevel::Info,
            None,
            vec![crate::logging::output(
                appender,
                crate::config::LogFormat::Text,
                false,
            )],
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(marker = "file-output-check", "a line for the file");
        });
        let files: Vec<String> = names(&directory);
        assert_eq!(files.len(), 1, "{files:?}");
        let date = file_date(&files[0]).expect("a dated log file");
        assert!(date >= OffsetDateTime::now_utc().date() - Duration::days(1));
        let text = std::fs::read_to_string(directory.join(&files[0])).unwrap();
        assert!(text.contains("file-output-check"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "no colour codes in files: {text:?}"
        );
        #[cfg(unix)]
        assert_eq!(crate::fs::mode(&directory), 0o700);
    }
}

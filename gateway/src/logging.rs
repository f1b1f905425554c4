//! Logging set-up: the configured level, overridable by `RUST_LOG`, and changeable while the
//! gateway runs (`SetSettings`, SIGHUP) through [`LogControl`].
//!
//! Lines go to stderr (journald takes them from there) and, with `[logging] file = true`, to
//! daily files in `<data_dir>/logs` ([`files`]); as readable text or as JSON lines
//! (`[logging] format`). One filter decides for every output, so a level change reaches
//! stderr and the files at once, without touching a connection.
//!
//! Every protocol connection runs inside a `session` span (id, listener, client address,
//! TLS version once known, mailbox after RCPT or login), so each of its lines carries them;
//! in JSON they are the `span` object. Passwords, keys and message contents are never
//! logged: credentials live in types whose `Debug` hides them and no call site logs a body.

mod fields;
pub mod files;
#[cfg(test)]
mod session_tests;

use std::path::PathBuf;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogLevel};

/// Changes the filter of the installed subscriber. Cheap to clone.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` as given at start, when it was set and valid: it keeps deciding what is
    /// logged, whatever the configured level says.
    rust_log: Option<String>,
}

/// What [`LogControl::set_level`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelChange {
    /// The new level decides from now on.
    Applied,
    /// `RUST_LOG` was set at start and still decides; the level takes effect once the
    /// gateway runs without it.
    OverriddenByRustLog,
}

/// The subscriber is gone (it only is in tests that dropped theirs).
#[derive(Debug, thiserror::Error)]
#[error("cannot change the log filter")]
pub struct LogError(#[source] reload::Error);

impl LogControl {
    /// Logs at `level` from now on, unless `RUST_LOG` decides.
    pub fn set_level(&self, level: LogLevel) -> Result<LevelChange, LogError> {
        if self.rust_log.is_some() {
            return Ok(LevelChange::OverriddenByRustLog);
        }
        // `reload` also rebuilds tracing's per-call-site cache, so call sites the old level
        // disabled are asked again.
        self.handle.reload(level_filter(level)).map_err(LogError)?;
        Ok(LevelChange::Applied)
    }

    /// `RUST_LOG` as given at start, when it overrides the configured level.
    pub fn rust_log(&self) -> Option<&str> {
        self.rust_log.as_deref()
    }
}

/// The filter for a configured level. redb's own logging stays at warnings: its debug
/// output is about pages, not mail.
fn level_filter(level: LogLevel) -> EnvFilter {
    EnvFilter::new(format!("{},redb=warn", level.as_str()))
}

/// The subscriber and the control of its filter. `rust_log` (the environment variable's
/// value) wins over `level` when it is set, non-empty and valid; an invalid value is ignored
/// as before, so a typo cannot silence the gateway.
pub(crate) fn subscriber<W>(
    level: LogLevel,
    rust_log: Option<String>,
    writer: W,
) -> (impl tracing::Subscriber + Send + Sync, LogControl)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber_with(level, rust_log, vec![output(writer, LogFormat::Text, true)])
}

/// The filter every output shares.
type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// One output: a formatting layer that writes to `writer`.
pub(crate) type Output = Box<dyn Layer<Filtered> + Send + Sync>;

/// An output writing `format` to `writer`; `ansi` colours text (a terminal, never a file).
pub(crate) fn output<W>(writer: W, format: LogFormat, ansi: bool) -> Output
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(fields::SpanFields::default())
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        // The event's fields at the top level, the session span's fields under `span`.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    }
}

/// The subscriber with `outputs` behind one reloadable filter.
pub(crate) fn subscriber_with(
    level: LogLevel,
    rust_log: Option<String>,
    outputs: Vec<Output>,
) -> (impl tracing::Subscriber + Send + Sync, LogControl) {
    let from_env = rust_log
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| {
            EnvFilter::try_new(&value)
                .ok()
                .map(|filter| (filter, value))
        });
    let (filter, rust_log) = match from_env {
        Some((filter, value)) => (filter, Some(value)),
        None => (level_filter(level), None),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let subscriber = Registry::default().with(filter).with(outputs);
    (subscriber, LogControl { handle, rust_log })
}

/// Where and how `gateway serve` logs (`[logging]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub level: LogLevel,
    pub format: LogFormat,
    /// Daily files in this directory (`<data_dir>/logs`), or none.
    pub directory: Option<PathBuf>,
    pub retention_days: u32,
}

impl LogOptions {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            level: config.gateway.log_level,
            format: config.logging.format,
            directory: config
                .logging
                .file
                .then(|| config.gateway.data_dir.join(files::LOG_DIR)),
            retention_days: config.logging.retention_days,
        }
    }
}

/// Installs the global subscriber for `gateway serve`: stderr, and the daily files when
/// configured (their directory is created, 0700, and files past the retention removed).
///
/// Returns the control of the level, or `None` when a subscriber was installed before.
pub fn init_with(options: &LogOptions) -> Result<Option<LogControl>, files::LogFileError> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut outputs = vec![output(std::io::stderr, options.format, ansi)];
    let mut pruned = None;
    if let Some(directory) = &options.directory {
        let (appender, removed) = files::open(directory, options.retention_days)?;
        outputs.push(output(appender, options.format, false));
        pruned = Some(removed);
    }
    let (subscriber, control) =
        subscriber_with(options.level, std::env::var("RUST_LOG").ok(), outputs);
    let control = subscriber.try_init().ok().map(|()| control);
    if let (Some(directory), Some(removed)) = (&options.directory, pruned) {
        tracing::info!(
            directory = %directory.display(),
            retention_days = options.retention_days,
            removed,
            "logging to daily files"
        );
    }
    Ok(control)
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level so an
/// administrator can turn on detail for one module without editing the file.
///
/// Returns the control of the level, or `None` when a subscriber was installed before (tests
/// call this more than once; the first one stays).
pub fn init(level: LogLevel) -> Option<LogControl> {
    let (subscriber, control) = subscriber(level, std::env::var("RUST_LOG").ok(), std::io::stderr);
    subscriber.try_init().ok().map(|()| control)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::{Arc, Mutex, PoisonError};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::Captured;

    use super::*;

    #[test]
    fn setting_the_level_changes_what_is_logged_at_once() {
        let captured = Captured::default();
        let writer = captured.clone();
        let (subscriber, control) = subscriber(LogLevel::Info, None, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("debug before the change");
            tracing::info!("info before the change");
            assert_eq!(
                control.set_level(LogLevel::Debug).ok(),
                Some(LevelChange::Applied)
            );
            tracing::debug!("debug after the change");
            assert_eq!(
                control.set_level(LogLevel::Warn).ok(),
                Some(LevelChange::Applied)
            );
            tracing::info!("info after warn");
            tracing::warn!("warning after warn");
        });
        let text = captured.text();
        assert!(!text.contains("debug before the change"), "{text}");
        assert!(text.contains("info before the change"), "{text}");
        assert!(text.contains("debug after the change"), "{text}");
        assert!(!text.contains("info after warn"), "{text}");
        assert!(text.contains("warning after warn"), "{text}");
    }

    #[test]
    fn rust_log_set_at_start_keeps_deciding() {
        let captured = Captured::default();
        let writer = captured.clone();
        let (subscriber, control) =
            subscriber(LogLevel::Info, Some("warn".into()), move || writer.clone());
        assert_eq!(control.rust_log(), Some("warn"));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("info under RUST_LOG=warn");
            assert_eq!(
                control.set_level(LogLevel::Debug).ok(),
                Some(LevelChange::OverriddenByRustLog)
            );
            tracing::debug!("debug under RUST_LOG=warn");
            tracing::warn!("warning under RUST_LOG=warn");
        });
        let text = captured.text();
        assert!(!text.contains("info under"), "{text}");
        assert!(!text.contains("debug under"), "{text}");
        assert!(text.contains("warning under"), "{text}");
    }

    #[test]
    fn empty_or_invalid_rust_log_leaves_the_configured_level_in_charge() {
        for value in ["", "  ", "gateway=loud"] {
            let (_subscriber, control) =
                subscriber(LogLevel::Info, Some(value.into()), std::io::sink);
            assert_eq!(control.rust_log(), None, "{value:?}");
        }
    }
}

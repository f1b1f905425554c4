//! Logging set-up: the configured level, overridable by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level so an
/// administrator can turn on detail for one module without editing the file.
pub fn init(level: LogLevel) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},redb=warn", level.as_str())));
    // Ignore the error of a second initialisation (tests call this more than once).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

//! The one TOML configuration file, its defaults and validation.
//!
//! Every value has a default, so the gateway runs with no file at all
//! ([`Config::default`]). A file is parsed with [`Config::from_toml_str`] or
//! [`Config::load`], both of which reject unknown keys and then run
//! [`Config::validate`]. Errors are one line naming the key ([`ConfigError`]).
//! [`DEFAULT_TEMPLATE`] is the commented file `gateway config init` writes.

mod error;
mod model;
mod network;
mod template;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, ParseError};
pub use model::{
    detect_host_name, parse_interval, AcmeRenewal, AcmeSettings, BackupSection, CertificateSource,
    Config, ConsoleSection, GatewaySection, Language, LimitsSection, ListenSection, Listener,
    LogLevel, Pop3Section, ProxySection, SmtpSection, TlsSection, UnknownValue,
    DEFAULT_EMAIL_DOMAIN, LETS_ENCRYPT_DIRECTORY, LETS_ENCRYPT_STAGING_DIRECTORY,
};
pub use model::{
    DatabaseTls, LogFormat, LoggingSection, MetricsSection, StoreBackend, StoreSection,
};
pub use network::IpNetwork;
pub use template::DEFAULT_TEMPLATE;
pub(crate) use validate::validate_email_domain;
pub use validate::{is_dns_name, is_email_address, is_https_url, validate_store};

/// The configuration file's name: the CLI looks for it in the working directory, and a
/// gateway started without one keeps settings changes in a file of this name in its data
/// directory.
pub const DEFAULT_CONFIG_FILE: &str = "gateway.toml";

impl Config {
    /// Parses and validates a configuration from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(ParseError::from_toml(&e, text)))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file. A missing file is an error here;
    /// the caller decides whether a missing *default* path means "use defaults".
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Config::from_toml_str(&text).map_err(|e| e.in_file(path.to_owned()))
    }

    /// Checks the rules the types cannot express; reports the first broken one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// Applies command-line / environment overrides (`--data-dir`, `GATEWAY_DATA_DIR`).
    /// `None` keeps the file's value.
    pub fn overridden(mut self, data_dir: Option<PathBuf>) -> Config {
        if let Some(dir) = data_dir {
            self.gateway.data_dir = dir;
        }
        self
    }

    /// The services that will listen, with their socket addresses, in file order.
    /// Disabled listeners are left out, as is `acme_http` unless `tls.source = "acme"`.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        self.active_listeners()
            .into_iter()
            .map(|(name, l)| (name, l.socket_addr()))
            .collect()
    }

    /// The configuration as TOML (all keys explicit), e.g. for `gateway config show`.
    pub fn to_toml_string(&self) -> String {
        // Every field is a plain string, number, bool, table or array of strings, which
        // the toml serializer always accepts; the fallback is for completeness only.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests;

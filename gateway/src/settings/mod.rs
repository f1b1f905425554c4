//! The settings an administrator changes while the gateway runs: the email domain, the log
//! level and the console's default language (what the product's Configuration Tool sets).
//!
//! [`LiveSettings`] is the one place they change, whichever front end asks (API
//! `SetSettings`, `gateway settings set`, SIGHUP for the log level). A change is validated
//! with the configuration file's own rules, written into the configuration file (comments
//! kept, see [`config_file`]) and only then made live, so a change that cannot be saved
//! changes nothing and a restart always keeps what the administrator set.
//!
//! - The email domain is an [`EmailDomain`] handle the service and every SMTP session share:
//!   the next RCPT checks against the new domain, and mailbox addresses show it.
//! - The log level swaps the subscriber's filter ([`crate::logging::LogControl`]); when
//!   `RUST_LOG` was set at start it keeps deciding until the gateway runs without it.
//! - The console language is a default the console reads when it renders a page.

pub mod config_file;
mod email_domain;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

pub use config_file::{ConfigFileError, SettingsFile};
pub use email_domain::EmailDomain;

use crate::config::{validate_email_domain, Config, ConfigError, Language, LogLevel};
use crate::logging::{LevelChange, LogControl};
use crate::store::coordination::{Coordination, EMAIL_DOMAIN_SETTING};
use crate::store::StoreError;

/// The settings as they are now (`GetSettings`, `gateway settings show`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub email_domain: String,
    pub log_level: LogLevel,
    pub console_language: Language,
}

/// A change of some settings; `None` keeps a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsChange {
    pub email_domain: Option<String>,
    pub log_level: Option<LogLevel>,
    pub console_language: Option<Language>,
}

impl SettingsChange {
    /// From the names front ends receive (API parameters, command-line options); an unknown
    /// name is refused naming its configuration key.
    pub fn parse(
        email_domain: Option<&str>,
        log_level: Option<&str>,
        console_language: Option<&str>,
    ) -> Result<Self, SettingsError> {
        let invalid = |key: &str, e: crate::config::UnknownValue| {
            SettingsError::Invalid(ConfigError::Invalid {
                key: key.to_owned(),
                message: e.to_string(),
            })
        };
        Ok(SettingsChange {
            email_domain: email_domain.map(str::to_owned),
            log_level: log_level
                .map(str::parse)
                .transpose()
                .map_err(|e| invalid("gateway.log_level", e))?,
            console_language: console_language
                .map(str::parse)
                .transpose()
                .map_err(|e| invalid("console.language", e))?,
        })
    }

    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    /// The configuration file's rules for these keys (the level and language are valid by
    /// their types).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(domain) = &self.email_domain {
            validate_email_domain(domain).map_err(SettingsError::Invalid)?;
        }
        Ok(())
    }
}

/// Why a change was not made. In every case nothing changed, neither the file nor the
/// running gateway.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value breaks the configuration's rules; the message names the key.
    #[error(transparent)]
    Invalid(ConfigError),
    /// The configuration file could not be updated (unreadable, not writable, edited by
    /// hand into an invalid state...).
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// SIGHUP: the configuration file cannot be loaded; the running settings stay.
    #[error(transparent)]
    Reload(ConfigError),
    /// The blocking task that writes the file did not finish (the runtime is shutting down).
    #[error("the settings change was interrupted (the gateway is stopping)")]
    Interrupted,
    /// The store the nodes share could not take the new email domain; nothing changed.
    #[error("the email domain could not be published to the other nodes: {0}")]
    Shared(StoreError),
}

impl SettingsError {
    /// The caller sent a value that is not allowed (as opposed to a problem of the host).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, SettingsError::Invalid(_))
    }
}

/// What a SIGHUP reload of the configuration file found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reload {
    /// The log level before and after, when the file's differs from the running one.
    pub log_level: Option<(LogLevel, LogLevel)>,
    /// `RUST_LOG` decides anyway.
    pub overridden_by_rust_log: bool,
    /// Settings whose file value differs from the running one but that a reload does not
    /// apply (key and file value): they need `SetSettings` or a restart.
    pub not_applied: Vec<(&'static str, String)>,
}

/// The live settings, shared by every front end. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct LiveSettings {
    inner: Arc<Inner>,
}

struct Inner {
    email_domain: EmailDomain,
    values: RwLock<Values>,
    log: Option<LogControl>,
    file: SettingsFile,
    /// One change at a time, so the file and the live values always change together.
    changing: Mutex<()>,
    /// On a store several nodes share: where the email domain is published for all of them.
    shared: std::sync::OnceLock<Arc<dyn Coordination>>,
}

#[derive(Clone, Copy)]
struct Values {
    log_level: LogLevel,
    console_language: Language,
}

impl LiveSettings {
    /// The settings of `config` as the gateway started with them. `email_domain` is the
    /// service's handle ([`crate::service::Gateway::email_domain_handle`]), so changes reach
    /// it; `log` is `None` where this process does not own the subscriber (tests, the CLI on
    /// a stopped gateway): the level is then only written to the file.
    pub fn new(
        config: &Config,
        email_domain: EmailDomain,
        log: Option<LogControl>,
        file: SettingsFile,
    ) -> Self {
        LiveSettings {
            inner: Arc::new(Inner {
                email_domain,
                values: RwLock::new(Values {
                    log_level: config.gateway.log_level,
                    console_language: config.console.language,
                }),
                log,
                file,
                changing: Mutex::new(()),
                shared: std::sync::OnceLock::new(),
            }),
        }
    }

    /// From now on an email domain change is published through `coordination` for every
    /// node of a shared store (before it is saved here) ([`crate::store::coordination`]).
    pub fn share_through(&self, coordination: Arc<dyn Coordination>) {
        let _ = self.inner.shared.set(coordination);
    }

    /// The settings now.
    pub fn current(&self) -> Settings {
        let values = self.values();
        Settings {
            email_domain: self.inner.email_domain.get().to_string(),
            log_level: values.log_level,
            console_language: values.console_language,
        }
    }

    /// The shared email domain.
    pub fn email_domain(&self) -> &EmailDomain {
        &self.inner.email_domain
    }

    /// The console language for users who have not chosen one.
    pub fn console_language(&self) -> Language {
        self.values().console_language
    }

    /// The configuration file changes are written to.
    pub fn config_file(&self) -> &Path {
        &self.inner.file.path
    }

    /// `RUST_LOG` as given at start, when it decides what is logged instead of the level.
    pub fn rust_log(&self) -> Option<&str> {
        self.inner.log.as_ref().and_then(LogControl::rust_log)
    }

    /// Validates `change`, writes it into the configuration file, then makes it live.
    /// Blocks on file I/O (a small file and two fsyncs); async callers use [`Self::apply`].
    pub fn apply_blocking(&self, change: SettingsChange) -> Result<Settings, SettingsError> {
        change.validate()?;
        if change.is_empty() {
            return Ok(self.current());
        }
        let _one_at_a_time = self
            .inner
            .changing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = self.current();
        // The nodes' shared value first: if that fails nothing changed anywhere; if the file
        // fails after it, every node (this one too) follows the published domain anyway.
        if let (Some(domain), Some(shared)) = (&change.email_domain, self.inner.shared.get()) {
            if shared.is_shared() {
                shared
                    .publish_setting(EMAIL_DOMAIN_SETTING, domain)
                    .map_err(SettingsError::Shared)?;
            }
        }
        config_file::update(&self.inner.file, &change)?;
        // Saved: from here on nothing can fail, so the running gateway and the file agree.
        if let Some(domain) = &change.email_domain {
            self.inner.email_domain.set(domain.as_str());
        }
        {
            let mut values = self
                .inner
                .values
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(level) = change.log_level {
                values.log_level = level;
            }
            if let Some(language) = change.console_language {
                values.console_language = language;
            }
        }
        if let Some(level) = change.log_level {
            self.set_log_level(level);
        }
        let after = self.current();
        tracing::info!(
            file = %self.inner.file.path.display(),
            email_domain = %Changed(&before.email_domain, &after.email_domain),
            log_level = %Changed(&before.log_level, &after.log_level),
            console_language = %Changed(&before.console_language, &after.console_language),
            "settings changed and saved"
        );
        Ok(after)
    }

    /// Writes `[tls]` for a certificate source chosen at run time, so a restart keeps it
    /// (the certificate manager has already made it live).
    pub async fn save_tls_source(
        &self,
        source: crate::config::CertificateSource,
    ) -> Result<(), SettingsError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = this
                .inner
                .changing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            config_file::update_tls(&this.inner.file, &source)?;
            tracing::info!(
                file = %this.inner.file.path.display(),
                source = source.name(),
                "[tls] saved"
            );
            Ok(())
        })
        .await
        .map_err(|_| SettingsError::Interrupted)?
    }

    /// [`Self::apply_blocking`] on tokio's blocking threads.
    pub async fn apply(&self, change: SettingsChange) -> Result<Settings, SettingsError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.apply_blocking(change))
            .await
            .map_err(|_| SettingsError::Interrupted)?
    }

    /// SIGHUP: re-reads the configuration file and applies its log level; other settings
    /// that differ are reported, not applied (they change through [`Self::apply`], which
    /// also saves them, or a restart). Without a file there is nothing to reload.
    pub fn reload_log_level(&self) -> Result<Reload, SettingsError> {
        self.reload().map(|(reload, _)| reload)
    }

    /// [`Self::reload_log_level`], also handing back the configuration it read (`None`
    /// without a file), so the rest of a SIGHUP needs no second read.
    pub fn reload(&self) -> Result<(Reload, Option<Config>), SettingsError> {
        let _one_at_a_time = self
            .inner
            .changing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let config = match Config::load(&self.inner.file.path) {
            Ok(config) => config,
            Err(ConfigError::Read { cause, .. })
                if cause.kind() == std::io::ErrorKind::NotFound
                    && self.inner.file.create_if_missing =>
            {
                let nothing = Reload {
                    log_level: None,
                    overridden_by_rust_log: false,
                    not_applied: Vec::new(),
                };
                return Ok((nothing, None));
            }
            Err(e) => return Err(SettingsError::Reload(e)),
        };
        let before = self.current();
        let mut not_applied = Vec::new();
        if config.gateway.email_domain != before.email_domain {
            not_applied.push(("gateway.email_domain", config.gateway.email_domain.clone()));
        }
        if config.console.language != before.console_language {
            not_applied.push(("console.language", config.console.language.to_string()));
        }
        let level = config.gateway.log_level;
        let mut reload = Reload {
            log_level: None,
            overridden_by_rust_log: false,
            not_applied,
        };
        if level != before.log_level {
            self.inner
                .values
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .log_level = level;
            reload.overridden_by_rust_log = !self.set_log_level(level);
            reload.log_level = Some((before.log_level, level));
        }
        Ok((reload, Some(config)))
    }

    /// Swaps the subscriber's filter; false when `RUST_LOG` keeps deciding. A failure to
    /// swap (no subscriber any more) is logged: the level is saved and applies at the
    /// next start.
    fn set_log_level(&self, level: LogLevel) -> bool {
        let Some(log) = &self.inner.log else {
            return true;
        };
        match log.set_level(level) {
            Ok(LevelChange::Applied) => true,
            Ok(LevelChange::OverriddenByRustLog) => {
                tracing::info!(
                    level = %level,
                    rust_log = log.rust_log().unwrap_or_default(),
                    "log level saved; RUST_LOG was set at start and decides what is logged until the gateway runs without it"
                );
                false
            }
            Err(e) => {
                tracing::warn!(level = %level, error = %e, "log level saved but not applied");
                true
            }
        }
    }

    fn values(&self) -> Values {
        *self
            .inner
            .values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for LiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSettings")
            .field("current", &self.current())
            .field("file", &self.inner.file)
            .finish_non_exhaustive()
    }
}

/// A setting in a log line: `old -> new`, or the value alone when unchanged.
struct Changed<'a, T>(&'a T, &'a T);

impl<T: std::fmt::Display + PartialEq> std::fmt::Display for Changed<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == self.1 {
            write!(f, "{}", self.1)
        } else {
            write!(f, "{} -> {}", self.0, self.1)
        }
    }
}

#[cfg(test)]
mod tests;

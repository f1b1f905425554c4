//! SIGHUP (`systemctl reload gateway`): re-reads the configuration file, applies the log
//! level, presents the certificate files again (`source = "files"`: a certificate renewed by
//! another tool is taken up without a restart), and names every other change that only a
//! restart applies. Every SIGHUP is answered with log lines saying what happened.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{CertificateSource, Config};
use crate::settings::{LiveSettings, Reload};
use crate::tls::CertificateManager;

/// Keys a reload applies itself, or that other commands change at run time: never reported
/// as needing a restart.
const LIVE_KEYS: [&str; 3] = [
    "gateway.log_level",
    "gateway.email_domain",
    "console.language",
];

/// `[tls]` keys other than these name the certificate, which SIGHUP (files) or the `gateway
/// cert` commands (which rewrite `[tls]` themselves) change while the gateway runs.
const TLS_KEYS_NEEDING_RESTART: [&str; 2] =
    ["tls.acme_renew_after_days", "tls.acme_renew_before_days"];

/// What `serve` started with, for telling what a reload cannot apply.
pub struct Started {
    /// The effective configuration (data directory override applied).
    pub config: Config,
    /// `--data-dir` / `GATEWAY_DATA_DIR`, which also wins over a changed file.
    pub data_dir_override: Option<PathBuf>,
}

pub async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    settings: LiveSettings,
    certificates: Arc<CertificateManager>,
    started: Started,
) {
    while hangup.recv().await.is_some() {
        let reader = settings.clone();
        let file = settings.config_file().display().to_string();
        let config = match tokio::task::spawn_blocking(move || reader.reload()).await {
            Ok(Ok((reload, config))) => {
                log_reload(&file, &reload, &settings);
                config
            }
            Ok(Err(e)) => {
                tracing::error!(file, error = %e, "SIGHUP: configuration not reloaded; the running settings stay");
                continue;
            }
            Err(_) => return, // the runtime is shutting down
        };
        // No file (never written): nothing else can have changed.
        let Some(config) = config else {
            continue;
        };
        let config = config.overridden(started.data_dir_override.clone());
        reload_certificate_files(&certificates, &config).await;
        for key in needing_restart(&started.config, &config) {
            tracing::warn!(
                file,
                key,
                "SIGHUP: this setting changed in the file and takes effect after a restart"
            );
        }
    }
}

fn log_reload(file: &str, reload: &Reload, settings: &LiveSettings) {
    match reload.log_level {
        Some((old, new)) if reload.overridden_by_rust_log => tracing::info!(
            file,
            log_level = %format_args!("{old} -> {new}"),
            "SIGHUP: log level reloaded; RUST_LOG was set at start and still decides what is logged"
        ),
        Some((old, new)) => tracing::info!(
            file,
            log_level = %format_args!("{old} -> {new}"),
            "SIGHUP: log level reloaded"
        ),
        None => tracing::info!(
            file,
            log_level = %settings.current().log_level,
            "SIGHUP: configuration re-read; log level unchanged"
        ),
    }
    for (key, value) in &reload.not_applied {
        tracing::warn!(
            file,
            key,
            value,
            "SIGHUP reloads the log level only: this setting differs from the running value; change it with `gateway settings set` (or restart)"
        );
    }
}

/// With `source = "files"` in use and in the file: loads the files the file names now and
/// presents them when they hold another certificate. A file that cannot be used leaves the
/// current certificate in place.
async fn reload_certificate_files(certificates: &CertificateManager, config: &Config) {
    let CertificateSource::Files {
        certificate_chain,
        private_key,
    } = &config.tls.source
    else {
        return;
    };
    if certificates.source() != "files" {
        return;
    }
    let (chain, key) = (certificate_chain.clone(), private_key.clone());
    let loaded =
        tokio::task::spawn_blocking(move || crate::tls::load_pem_files(&chain, &key)).await;
    let material = match loaded {
        Ok(Ok(material)) => material,
        Ok(Err(e)) => {
            tracing::error!(path = %certificate_chain.display(), error = %e, "SIGHUP: certificate files not reloaded; the current certificate stays");
            return;
        }
        Err(_) => return,
    };
    let current = certificates
        .resolver()
        .map(|r| r.current().fingerprint().to_owned());
    if current.as_deref() == Some(material.fingerprint()) {
        tracing::info!(path = %certificate_chain.display(), "SIGHUP: certificate files unchanged");
        return;
    }
    certificates.put_in_use(&material, "files").await;
    tracing::info!(
        path = %certificate_chain.display(),
        certificate = %material.fingerprint(),
        "SIGHUP: certificate reloaded from its files; new connections get it"
    );
}

/// The keys (`section.key`, listeners as `listen.smtp.port`) whose value in `new` differs
/// from the running configuration, leaving out what is applied at run time.
pub fn needing_restart(running: &Config, new: &Config) -> Vec<String> {
    let (running, new) = (flatten(running), flatten(new));
    let mut keys: Vec<String> = running
        .keys()
        .chain(new.keys())
        .filter(|key| running.get(*key) != new.get(*key))
        .filter(|key| !LIVE_KEYS.contains(&key.as_str()))
        .filter(|key| !key.starts_with("tls.") || TLS_KEYS_NEEDING_RESTART.contains(&key.as_str()))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Every leaf of the configuration as `a.b.c` → its TOML text.
fn flatten(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // Every field serializes (see `Config::to_toml_string`); nothing to compare otherwise.
    if let Ok(value) = toml::Value::try_from(config) {
        walk(String::new(), &value, &mut out);
    }
    out
}

fn walk(prefix: String, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                walk(path, value, out);
            }
        }
        leaf => {
            out.insert(prefix, leaf.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text).expect("valid configuration")
    }

    #[test]
    fn listener_and_limit_changes_need_a_restart_live_settings_do_not() {
        let running = config("");
        let new = config(
            "[gateway]\nlog_level = \"debug\"\nemail_domain = \"archive.example\"\n\
             [listen.smtp]\nport = 2525\n[limits]\nmax_recipients = 7\n\
             [console]\nlanguage = \"de\"\n",
        );
        assert_eq!(
            needing_restart(&running, &new),
            ["limits.max_recipients", "listen.smtp.port"]
        );
        assert!(needing_restart(&running, &config("")).is_empty());
    }

    /// The certificate commands rewrite `[tls]` while the gateway runs, so only the
    /// renewal policy, read at start, is named.
    #[test]
    fn certificate_choice_is_not_a_restart_but_the_renewal_policy_is() {
        let running = config("");
        let files = config(
            "[tls]\nsource = \"files\"\ncertificate_chain = \"/c.pem\"\nprivate_key = \"/k.pem\"\n",
        );
        assert!(needing_restart(&running, &files).is_empty());
        let acme = config("[tls]\nsource = \"acme\"\nacme_renew_after_days = 20\n");
        assert_eq!(
            needing_restart(&config("[tls]\nsource = \"acme\"\n"), &acme),
            ["tls.acme_renew_after_days"]
        );
    }
}

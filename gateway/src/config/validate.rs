//! Semantic checks that serde's types cannot express. The first broken rule is reported,
//! naming its key.

use std::net::IpAddr;

use super::error::ConfigError;
use super::model::{
    AcmeRenewal, CertificateSource, Config, DatabaseTls, Listener, StoreBackend, StoreSection,
};

const MIN_MESSAGE_SIZE: u64 = 1024;
const MAX_MESSAGE_SIZE: u64 = 2 * 1024 * 1024 * 1024;
/// 1 TiB of cache; beyond that a typo is likelier than a real machine.
const MAX_STORE_CACHE_MIB: u64 = 1024 * 1024;
/// 1 GiB per draft; beyond that a typo is likelier than a real need.
const MAX_SPOOL_MEMORY_KIB: u64 = 1024 * 1024;
/// 64 GiB for all drafts together, likewise.
const MAX_SPOOL_MEMORY_TOTAL_MIB: u64 = 64 * 1024;
/// An hour; longer client timeouts would just keep dead connections.
const MAX_TIMEOUT_SECS: u64 = 3600;
/// A day for one SMTP transaction.
const MAX_TRANSACTION_SECS: u64 = 24 * 3600;
/// Linux caps the backlog at net.core.somaxconn (4096 by default) anyway.
const MAX_LISTEN_BACKLOG: u32 = 65_535;
/// 1 TiB: more is a typo.
const MAX_MIN_FREE_DISK_MIB: u64 = 1024 * 1024;
/// 4 GiB: a deletion or recovery never needs that much.
const MAX_DISK_RESERVE_MIB: u64 = 4096;
/// A login delay above a minute would just look like a hung server.
const MAX_FAILED_LOGIN_DELAY_MS: u64 = 60_000;

/// Whether `name` is a DNS host name: dot-separated labels of ASCII letters, digits and
/// hyphens, each 1–63 long and not starting or ending with a hyphen, 253 bytes in all.
/// One trailing dot (the root) is not accepted: names here go into SMTP greetings.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `url` is an `https://` URL with a host and no white space: what an ACME
/// directory's address must be.
pub fn is_https_url(url: &str) -> bool {
    let host = url
        .strip_prefix("https://")
        .map(|rest| rest.split(['/', ':']).next().unwrap_or(""));
    matches!(host, Some(h) if !h.is_empty()) && !url.chars().any(char::is_whitespace)
}

/// Whether `email` looks like an address a CA can write to: a non-empty local part, `@`, a
/// DNS name, no white space.
pub fn is_email_address(email: &str) -> bool {
    email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && is_dns_name(domain))
        && !email.chars().any(char::is_whitespace)
}

pub(crate) fn validate(config: &Config) -> Result<(), ConfigError> {
    validate_gateway(config)?;
    validate_listen(config)?;
    validate_tls(&config.tls.source)?;
    validate_acme_renewal(&config.tls.acme_renewal)?;
    validate_limits(config)?;
    validate_pop3(config)?;
    validate_proxy(config)?;
    validate_metrics(config)?;
    validate_logging(config)?;
    validate_backup(config)?;
    validate_store(&config.store)?;
    Ok(())
}

/// The rules of `[store]`, also for a database named on the command line
/// (`gateway store copy`).
pub fn validate_store(store: &StoreSection) -> Result<(), ConfigError> {
    match store.backend {
        StoreBackend::Redb => {
            if !store.url.is_empty() {
                return Err(ConfigError::invalid(
                    "store.url",
                    "is set, but store.backend is \"redb\"; set backend = \"postgres\" to use it",
                ));
            }
            Ok(())
        }
        StoreBackend::Postgres => {
            if store.url.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "store.url",
                    "must name the database when store.backend is \"postgres\"",
                ));
            }
            // The parser's message never repeats the text it was given (it may hold a
            // password).
            let parsed: tokio_postgres::Config = store.url.parse().map_err(|e| {
                ConfigError::invalid("store.url", format!("is not a PostgreSQL URL: {e}"))
            })?;
            if parsed.get_password().is_some() {
                return Err(ConfigError::invalid(
                    "store.url",
                    "holds a password; put it in store.password_file instead (this file \
                     goes into backups and is shown by `gateway config`)",
                ));
            }
            if parsed.get_hosts().is_empty() {
                return Err(ConfigError::invalid("store.url", "names no host"));
            }
            if store.tls == DatabaseTls::Off && !all_local(parsed.get_hosts()) {
                return Err(ConfigError::invalid(
                    "store.tls",
                    "\"off\" is only for a database on this machine (a loopback address or \
                     a Unix socket): credentials and mail never cross a network unencrypted",
                ));
            }
            between("store.pool_size", store.pool_size.into(), (1, 256), "")
        }
    }
}

/// Whether every host is this machine: a Unix socket, `localhost` or a loopback address.
fn all_local(hosts: &[tokio_postgres::config::Host]) -> bool {
    hosts.iter().all(|host| match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

fn validate_backup(config: &Config) -> Result<(), ConfigError> {
    super::model::parse_interval(&config.backup.snapshot_interval)
        .map(drop)
        .map_err(|message| ConfigError::invalid("backup.snapshot_interval", message))
}

fn dns_name(key: &str, value: &str) -> Result<(), ConfigError> {
    if is_dns_name(value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "`{value}` is not a valid DNS name (letters, digits, hyphens and dots; \
                 labels of 1 to 63 characters not starting or ending with a hyphen; \
                 at most 253 characters)"
            ),
        ))
    }
}

/// The rule for `gateway.email_domain`, for settings changed while the gateway runs.
pub(crate) fn validate_email_domain(value: &str) -> Result<(), ConfigError> {
    dns_name("gateway.email_domain", value)
}

fn validate_gateway(config: &Config) -> Result<(), ConfigError> {
    let g = &config.gateway;
    dns_name("gateway.email_domain", &g.email_domain)?;
    dns_name("gateway.host_name", &g.host_name)?;
    if g.data_dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid(
            "gateway.data_dir",
            "must not be empty",
        ));
    }
    Ok(())
}

fn validate_listen(config: &Config) -> Result<(), ConfigError> {
    let active = config.active_listeners();
    for (name, listener) in &active {
        if listener.port == 0 {
            return Err(ConfigError::invalid(
                format!("listen.{name}.port"),
                "must not be 0 while the listener is enabled (set enabled = false to turn it off)",
            ));
        }
    }
    for (i, (name_a, a)) in active.iter().enumerate() {
        for (name_b, b) in active.iter().skip(i + 1) {
            if a.port == b.port && addresses_overlap(a.address, b.address) {
                return Err(ConfigError::invalid(
                    format!("listen.{name_b}"),
                    format!(
                        "{} conflicts with listen.{name_a} ({}); two enabled listeners \
                         cannot bind the same port",
                        b.socket_addr(),
                        a.socket_addr()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether binding both addresses on one port would fail: identical addresses, or a
/// wildcard that covers the other. `::` is treated as covering IPv4 too, since Linux
/// binds it dual-stack by default.
fn addresses_overlap(a: IpAddr, b: IpAddr) -> bool {
    let covers = |wild: IpAddr, other: IpAddr| match wild {
        IpAddr::V6(w) if w.is_unspecified() => true,
        IpAddr::V4(w) if w.is_unspecified() => other.is_ipv4(),
        _ => false,
    };
    a == b || covers(a, b) || covers(b, a)
}

fn validate_tls(source: &CertificateSource) -> Result<(), ConfigError> {
    match source {
        CertificateSource::SelfSigned => Ok(()),
        CertificateSource::Files {
            certificate_chain,
            private_key,
        } => {
            if certificate_chain.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    "tls.certificate_chain",
                    "must name a PEM file when tls.source = \"files\"",
                ));
            }
            if private_key.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    "tls.private_key",
                    "must name a PEM file when tls.source = \"files\"",
                ));
            }
            Ok(())
        }
        CertificateSource::Acme(acme) => {
            for name in &acme.domains {
                if !is_dns_name(name) {
                    return Err(ConfigError::invalid(
                        "tls.acme_domains",
                        format!(
                            "`{name}` is not a DNS name (HTTP-01 cannot prove wildcards or addresses)"
                        ),
                    ));
                }
            }
            for (key, url) in [
                (
                    "tls.acme_staging_directory_url",
                    acme.staging_directory_url.as_ref(),
                ),
                ("tls.acme_directory_url", Some(&acme.directory_url)),
            ] {
                if let Some(url) = url.filter(|url| !is_https_url(url)) {
                    return Err(ConfigError::invalid(
                        key,
                        format!("must be an https:// URL, got `{url}`"),
                    ));
                }
            }
            if let Some(email) = &acme.contact_email {
                if !is_email_address(email) {
                    return Err(ConfigError::invalid(
                        "tls.acme_contact_email",
                        format!("`{email}` is not an email address"),
                    ));
                }
            }
            if acme
                .ca_file
                .as_ref()
                .is_some_and(|p| p.as_os_str().is_empty())
            {
                return Err(ConfigError::invalid(
                    "tls.acme_ca_file",
                    "must not be empty (leave the key out to use the system roots)",
                ));
            }
            Ok(())
        }
    }
}

/// Longest renewal setting accepted: a year is already longer than any publicly trusted
/// certificate lives (398 days at most, and shrinking), so more is a typo.
const MAX_RENEWAL_DAYS: u32 = 365;

fn validate_acme_renewal(renewal: &AcmeRenewal) -> Result<(), ConfigError> {
    for (key, days) in [
        ("tls.acme_renew_after_days", renewal.renew_after_days),
        ("tls.acme_renew_before_days", renewal.renew_before_days),
    ] {
        between(key, days.into(), (1, MAX_RENEWAL_DAYS.into()), " days")?;
    }
    Ok(())
}

fn validate_limits(config: &Config) -> Result<(), ConfigError> {
    let l = &config.limits;
    between(
        "limits.max_message_size",
        l.max_message_size,
        (MIN_MESSAGE_SIZE, MAX_MESSAGE_SIZE),
        " bytes",
    )?;
    at_least_one("limits.max_recipients", l.max_recipients.into())?;
    at_least_one("limits.max_connections", l.max_connections.into())?;
    at_least_one(
        "limits.max_connections_per_ip",
        l.max_connections_per_ip.into(),
    )?;
    if l.max_connections_per_ip > l.max_connections {
        return Err(ConfigError::invalid(
            "limits.max_connections_per_ip",
            format!(
                "must not exceed limits.max_connections ({}), got {}",
                l.max_connections, l.max_connections_per_ip
            ),
        ));
    }
    if let Some(mib) = l.store_cache_mib {
        between(
            "limits.store_cache_mib",
            mib,
            (1, MAX_STORE_CACHE_MIB),
            " MiB",
        )?;
    }
    at_least_one("limits.spool_max_mib", l.spool_max_mib)?;
    for (key, value, max) in [
        (
            "limits.write_timeout_secs",
            l.write_timeout_secs,
            MAX_TIMEOUT_SECS,
        ),
        (
            "limits.preauth_timeout_secs",
            l.preauth_timeout_secs,
            MAX_TIMEOUT_SECS,
        ),
        (
            "limits.transaction_timeout_secs",
            l.transaction_timeout_secs,
            MAX_TRANSACTION_SECS,
        ),
        (
            "limits.shutdown_grace_secs",
            l.shutdown_grace_secs,
            MAX_TIMEOUT_SECS,
        ),
    ] {
        one_to(key, value, max, " seconds")?;
    }
    at_most(
        "limits.tcp_keepalive_secs",
        l.tcp_keepalive_secs,
        MAX_TIMEOUT_SECS,
        " seconds (0 = off)",
    )?;
    one_to(
        "limits.listen_backlog",
        l.listen_backlog.into(),
        MAX_LISTEN_BACKLOG.into(),
        "",
    )?;
    at_most(
        "limits.spool_memory_kib",
        l.spool_memory_kib,
        MAX_SPOOL_MEMORY_KIB,
        " KiB",
    )?;
    at_most(
        "limits.spool_memory_total_mib",
        l.spool_memory_total_mib,
        MAX_SPOOL_MEMORY_TOTAL_MIB,
        " MiB",
    )?;
    at_most(
        "limits.min_free_disk_mib",
        l.min_free_disk_mib,
        MAX_MIN_FREE_DISK_MIB,
        " MiB",
    )?;
    match l.warn_free_disk_mib {
        Some(warn) if warn < l.min_free_disk_mib => {
            return Err(ConfigError::invalid(
                "limits.warn_free_disk_mib",
                format!(
                    "must be at least min_free_disk_mib ({} MiB) so the warning comes before \
                     mail is refused, got {warn}",
                    l.min_free_disk_mib
                ),
            ));
        }
        _ => {}
    }
    at_most(
        "limits.disk_reserve_mib",
        l.disk_reserve_mib,
        MAX_DISK_RESERVE_MIB,
        " MiB",
    )
}

fn validate_pop3(config: &Config) -> Result<(), ConfigError> {
    let p = &config.pop3;
    at_least_one(
        "pop3.max_concurrent_unseals",
        p.max_concurrent_unseals.into(),
    )?;
    at_most(
        "pop3.lock_takeover_secs",
        p.lock_takeover_secs,
        MAX_TIMEOUT_SECS,
        " seconds (0 = never)",
    )?;
    at_most(
        "pop3.failed_login_delay_ms",
        p.failed_login_delay_ms,
        MAX_FAILED_LOGIN_DELAY_MS,
        " ms",
    )
}

fn validate_proxy(config: &Config) -> Result<(), ConfigError> {
    let p = &config.proxy;
    one_to(
        "proxy.connect_timeout_secs",
        p.connect_timeout_secs,
        600,
        " seconds",
    )?;
    at_most(
        "proxy.failed_login_delay_ms",
        p.failed_login_delay_ms,
        MAX_FAILED_LOGIN_DELAY_MS,
        " ms",
    )?;
    if p.enabled && !p.system_roots && p.ca_files.is_empty() {
        return Err(ConfigError::invalid(
            "proxy.ca_files",
            "with system_roots = false, name at least one CA file (no upstream could be verified)",
        ));
    }
    if p.allowed_ports.contains(&0) {
        return Err(ConfigError::invalid(
            "proxy.allowed_ports",
            "port 0 cannot be connected to",
        ));
    }
    Ok(())
}

/// Log files are kept at least a day and at most ten years.
const MAX_RETENTION_DAYS: u32 = 3650;

fn validate_metrics(config: &Config) -> Result<(), ConfigError> {
    let m = &config.metrics;
    let Some(addr) = m.listen else {
        return Ok(());
    };
    if addr.port() == 0 {
        return Err(ConfigError::invalid(
            "metrics.listen",
            "needs a port (e.g. 127.0.0.1:9450)",
        ));
    }
    // The plain listener has no login and no TLS: it stays on this machine unless the
    // administrator says otherwise.
    if !addr.ip().to_canonical().is_loopback() && !m.allow_remote {
        return Err(ConfigError::invalid(
            "metrics.listen",
            format!(
                "{addr} is not a loopback address; the metrics listener has no login and no \
                 TLS, so use 127.0.0.1 or ::1 (a scraper elsewhere can use /metrics on the \
                 console port with an API key), or set metrics.allow_remote = true"
            ),
        ));
    }
    for (name, listener) in config.active_listeners() {
        if listener.port == addr.port() && addresses_overlap(listener.address, addr.ip()) {
            return Err(ConfigError::invalid(
                "metrics.listen",
                format!(
                    "{addr} conflicts with listen.{name} ({})",
                    listener.socket_addr()
                ),
            ));
        }
    }
    Ok(())
}

fn validate_logging(config: &Config) -> Result<(), ConfigError> {
    one_to(
        "logging.retention_days",
        config.logging.retention_days.into(),
        MAX_RETENTION_DAYS.into(),
        " days",
    )
}

/// `value` within `min..=max`; the message reads "must be between {min} and {max}{unit}".
fn between(key: &str, value: u64, (min, max): (u64, u64), unit: &str) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be between {min} and {max}{unit}, got {value}"),
        ))
    }
}

/// `value` within `1..=max`; the message reads "must be 1 to {max}{unit}".
fn one_to(key: &str, value: u64, max: u64, unit: &str) -> Result<(), ConfigError> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be 1 to {max}{unit}, got {value}"),
        ))
    }
}

/// `value` at most `max`; `unit` follows the maximum in the message.
fn at_most(key: &str, value: u64, max: u64, unit: &str) -> Result<(), ConfigError> {
    if value <= max {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be at most {max}{unit}, got {value}"),
        ))
    }
}

fn at_least_one(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be at least 1, got 0"))
    } else {
        Ok(())
    }
}

impl Config {
    /// Enabled listeners that will actually be opened: `acme_http` only counts when the
    /// certificate comes from ACME.
    pub(crate) fn active_listeners(&self) -> Vec<(&'static str, Listener)> {
        let acme = matches!(self.tls.source, CertificateSource::Acme(_));
        self.listen
            .all()
            .into_iter()
            .filter(|(name, l)| l.enabled && (acme || *name != "acme_http"))
            .map(|(name, l)| (name, *l))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for good in [
            "localhost",
            "mx1.example.com",
            "a",
            "x-y.Example.ORG",
            "123.example",
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(long_name.len(), 254);
        for bad in [
            "",
            ".",
            "example.com.",
            ".example.com",
            "a..b",
            "-a.com",
            "a-.com",
            "under_score.com",
            "sp ace.com",
            "ünicode.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
        assert!(is_dns_name(&long_name[1..]));
    }

    #[test]
    fn range_rules_name_the_key_the_bound_and_the_value() {
        let message = |r: Result<(), ConfigError>| r.unwrap_err().to_string();
        assert!(between("k", 5, (1, 5), " MiB").is_ok());
        assert!(one_to("k", 1, 1, "").is_ok());
        assert!(at_most("k", 0, 0, " ms").is_ok());
        for (got, want) in [
            (
                message(between("a.b", 0, (1, 5), " MiB")),
                "must be between 1 and 5 MiB, got 0",
            ),
            (
                message(one_to("a.b", 6, 5, " seconds")),
                "must be 1 to 5 seconds, got 6",
            ),
            (message(one_to("a.b", 0, 5, "")), "must be 1 to 5, got 0"),
            (
                message(at_most("a.b", 6, 5, " ms")),
                "must be at most 5 ms, got 6",
            ),
        ] {
            assert!(got.contains("a.b") && got.contains(want), "{got}");
        }
    }

    #[test]
    fn https_urls_and_email_addresses() {
        for good in [
            "https://acme.example/dir",
            "https://localhost:14000/dir",
            "https://h",
        ] {
            assert!(is_https_url(good), "{good}");
        }
        for bad in [
            "http://acme.example/dir",
            "https://",
            "https:///dir",
            "https://:1/",
            "https://a b/",
            "acme.example",
        ] {
            assert!(!is_https_url(bad), "{bad}");
        }
        for good in ["admin@example.com", "a.b+c@mx1.example"] {
            assert!(is_email_address(good), "{good}");
        }
        for bad in [
            "admin",
            "@example.com",
            "admin@",
            "admin@exa mple.com",
            " admin@example.com",
            "a@b@c",
        ] {
            assert!(!is_email_address(bad), "{bad}");
        }
    }

    #[test]
    fn overlap_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("test address");
        assert!(addresses_overlap(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(addresses_overlap(ip("::"), ip("127.0.0.1")));
        assert!(addresses_overlap(ip("::1"), ip("::1")));
        assert!(!addresses_overlap(ip("0.0.0.0"), ip("::1")));
        assert!(!addresses_overlap(ip("127.0.0.1"), ip("127.0.0.2")));
    }
}

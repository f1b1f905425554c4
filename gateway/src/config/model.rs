//! The configuration data model: one struct per TOML section, each with its defaults.
//!
//! Every section is `#[serde(default)]` (a missing key keeps its default) and
//! `#[serde(deny_unknown_fields)]` (a misspelt key is an error, not silently ignored).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::network::IpNetwork;
use super::validate::is_dns_name;

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewaySection,
    pub listen: ListenSection,
    pub tls: TlsSection,
    pub limits: LimitsSection,
    pub smtp: SmtpSection,
    pub pop3: Pop3Section,
    pub proxy: ProxySection,
    pub console: ConsoleSection,
    pub metrics: MetricsSection,
    pub logging: LoggingSection,
    pub backup: BackupSection,
    pub store: StoreSection,
}

/// `[gateway]`: identity and storage.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySection {
    /// Domain of the gateway's own mailbox addresses.
    pub email_domain: String,
    /// Name used in SMTP greetings and the self-signed certificate.
    pub host_name: String,
    /// Directory holding the store, spool and keys.
    pub data_dir: PathBuf,
    pub log_level: LogLevel,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            email_domain: DEFAULT_EMAIL_DOMAIN.to_owned(),
            host_name: detect_host_name(),
            data_dir: PathBuf::from("./gateway-data"),
            log_level: LogLevel::Info,
        }
    }
}

/// The machine's host name from /etc/hostname, else `$HOSTNAME`, else "localhost".
/// A value that is not a valid DNS name is skipped, so the defaults always validate.
pub fn detect_host_name() -> String {
    let file = std::fs::read_to_string("/etc/hostname").ok();
    let env = std::env::var("HOSTNAME").ok();
    pick_host_name(file.as_deref(), env.as_deref())
}

fn pick_host_name(file: Option<&str>, env: Option<&str>) -> String {
    [file, env]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|name| is_dns_name(name))
        .unwrap_or("localhost")
        .to_owned()
}

/// `gateway.log_level`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The lowercase name, as `tracing_subscriber::EnvFilter` accepts it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];
}

/// A name that is not one of a setting's values (`"verbose"` as a log level).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not {what} (expected {expected})")]
pub struct UnknownValue {
    pub value: String,
    pub what: &'static str,
    pub expected: &'static str,
}

impl std::str::FromStr for LogLevel {
    type Err = UnknownValue;

    /// The names the configuration file uses, in any letter case.
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        LogLevel::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownValue {
                value: s.to_owned(),
                what: "a log level",
                expected: "error, warn, info, debug or trace",
            })
    }
}

/// One listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: IpAddr,
    pub port: u16,
    pub enabled: bool,
}

impl Listener {
    /// An enabled listener on all interfaces: `::`, which the server binds dual-stack
    /// (IPv4 and IPv6), or IPv4 alone where the system has no IPv6.
    pub fn any(port: u16) -> Self {
        Listener {
            address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port,
            enabled: true,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// `[listen.*]`: one listener per service.
///
/// Each `[listen.<service>]` table may give any subset of `address`, `port`, `enabled`;
/// the rest come from that service's defaults (which differ per service, hence the
/// conversion through a private all-optional shape rather than a plain `#[serde(default)]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "RawListenSection", into = "RawListenSection")]
pub struct ListenSection {
    /// Journal target and MX (plain SMTP, STARTTLS offered).
    pub smtp: Listener,
    /// SMTP over implicit TLS.
    pub smtps: Listener,
    /// Message submission (STARTTLS).
    pub submission: Listener,
    /// Plain POP3 (STARTTLS/STLS offered).
    pub pop3: Listener,
    /// POP3 over implicit TLS.
    pub pop3s: Listener,
    /// The web console.
    pub console: Listener,
    /// ACME HTTP-01 challenges; only opened when `tls.source = "acme"`.
    pub acme_http: Listener,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            smtp: Listener::any(25),
            smtps: Listener::any(465),
            submission: Listener::any(587),
            pop3: Listener::any(110),
            pop3s: Listener::any(995),
            console: Listener::any(8450),
            acme_http: Listener::any(80),
        }
    }
}

impl ListenSection {
    /// The listeners' TOML names, in file order.
    pub const NAMES: [&'static str; 7] = [
        "smtp",
        "smtps",
        "submission",
        "pop3",
        "pop3s",
        "console",
        "acme_http",
    ];

    /// Every listener with its TOML name, in file order.
    pub fn all(&self) -> [(&'static str, &Listener); 7] {
        let listeners = [
            &self.smtp,
            &self.smtps,
            &self.submission,
            &self.pop3,
            &self.pop3s,
            &self.console,
            &self.acme_http,
        ];
        std::array::from_fn(|i| (Self::NAMES[i], listeners[i]))
    }
}

/// The on-disk shape of one listener: every key optional.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
}

impl RawListener {
    fn or(self, default: Listener) -> Listener {
        Listener {
            address: self.address.unwrap_or(default.address),
            port: self.port.unwrap_or(default.port),
            enabled: self.enabled.unwrap_or(default.enabled),
        }
    }
}

impl From<Listener> for RawListener {
    fn from(l: Listener) -> Self {
        RawListener {
            address: Some(l.address),
            port: Some(l.port),
            enabled: Some(l.enabled),
        }
    }
}

/// The on-disk shape of `[listen]`; see `ListenSection`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawListenSection {
    smtp: RawListener,
    smtps: RawListener,
    submission: RawListener,
    pop3: RawListener,
    pop3s: RawListener,
    console: RawListener,
    acme_http: RawListener,
}

impl From<RawListenSection> for ListenSection {
    fn from(raw: RawListenSection) -> Self {
        let d = ListenSection::default();
        ListenSection {
            smtp: raw.smtp.or(d.smtp),
            smtps: raw.smtps.or(d.smtps),
            submission: raw.submission.or(d.submission),
            pop3: raw.pop3.or(d.pop3),
            pop3s: raw.pop3s.or(d.pop3s),
            console: raw.console.or(d.console),
            acme_http: raw.acme_http.or(d.acme_http),
        }
    }
}

impl From<ListenSection> for RawListenSection {
    fn from(l: ListenSection) -> Self {
        RawListenSection {
            smtp: l.smtp.into(),
            smtps: l.smtps.into(),
            submission: l.submission.into(),
            pop3: l.pop3.into(),
            pop3s: l.pop3s.into(),
            console: l.console.into(),
            acme_http: l.acme_http.into(),
        }
    }
}

/// `[tls]`: where the server certificate comes from. The TOML keys sit directly in
/// `[tls]`, selected by `source`; see [`CertificateSource`].
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "RawTls", into = "RawTls")]
pub struct TlsSection {
    pub source: CertificateSource,
    /// When the ACME certificate is renewed (`acme_renew_after_days`,
    /// `acme_renew_before_days`); only settable with source = "acme".
    pub acme_renewal: AcmeRenewal,
}

/// `[tls] acme_renew_after_days` / `acme_renew_before_days`: an ACME certificate is renewed
/// when it is `renew_after_days` old or has `renew_before_days` or fewer left, whichever
/// comes first. Should `renew_before_days` not fit the certificate's lifetime (CAs move to
/// shorter ones), renewal falls back to two thirds of the lifetime, so it never renews right
/// after every issuance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcmeRenewal {
    pub renew_after_days: u32,
    pub renew_before_days: u32,
}

impl Default for AcmeRenewal {
    /// Let's Encrypt's 90-day certificates: renewed at day 60, 30 days before they end.
    fn default() -> Self {
        Self {
            renew_after_days: 60,
            renew_before_days: 30,
        }
    }
}

/// The email domain until the administrator sets one: nothing from outside can reach it.
pub const DEFAULT_EMAIL_DOMAIN: &str = "localhost";

/// Let's Encrypt's production ACME directory.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Let's Encrypt's staging ACME directory: untrusted certificates, generous rate limits.
pub const LETS_ENCRYPT_STAGING_DIRECTORY: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `tls.source` and the keys that belong to it:
///
/// ```toml
/// [tls]
/// source = "self-signed"            # generated and kept in data_dir
///
/// [tls]
/// source = "files"
/// certificate_chain = "/etc/gateway/chain.pem"
/// private_key = "/etc/gateway/key.pem"
///
/// [tls]
/// source = "acme"
/// acme_directory_url = "https://acme-v02.api.letsencrypt.org/directory"  # optional
/// acme_contact_email = "postmaster@example.com"                          # optional
/// acme_ca_file = "/etc/gateway/test-ca.pem"                              # optional
/// acme_renew_after_days = 60                                             # optional
/// acme_renew_before_days = 30                                            # optional
/// acme_domains = ["mail.example.com"]                   # optional, default [host_name]
/// acme_staging_directory_url = "https://acme-staging-v02.api.letsencrypt.org/directory"
/// ```
///
/// A key that does not belong to the chosen source is an error.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CertificateSource {
    /// A certificate for `gateway.host_name`, generated on first start.
    #[default]
    SelfSigned,
    /// PEM files maintained by someone else (re-read on reload).
    Files {
        certificate_chain: PathBuf,
        private_key: PathBuf,
    },
    /// Obtained and renewed over ACME (HTTP-01 on `listen.acme_http`).
    Acme(AcmeSettings),
}

/// What to order over ACME and where: the `acme_*` keys of `[tls]` but the renewal days
/// (those are [`AcmeRenewal`]), as configured or as chosen through
/// `RequestAcmeCertificate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    /// `acme_directory_url`.
    pub directory_url: String,
    /// `acme_contact_email`.
    pub contact_email: Option<String>,
    /// `acme_ca_file`: a PEM file trusted for the ACME server's HTTPS on top of the
    /// system's roots (test CAs such as Pebble).
    pub ca_file: Option<PathBuf>,
    /// `acme_domains`: the names to order; empty means `[gateway.host_name]`.
    pub domains: Vec<String>,
    /// `acme_staging_directory_url`: where a new setup is tried first (its certificate
    /// discarded); `None`: no trial. Defaults to Let's Encrypt's staging directory when the
    /// directory is Let's Encrypt's production one.
    pub staging_directory_url: Option<String>,
}

impl CertificateSource {
    /// The source's name as the configuration file and `GetCertificateInfo` write it.
    pub fn name(&self) -> &'static str {
        match self {
            CertificateSource::SelfSigned => "self-signed",
            CertificateSource::Files { .. } => "files",
            CertificateSource::Acme(_) => "acme",
        }
    }

    /// The ACME settings, when the source is ACME.
    pub fn acme(&self) -> Option<&AcmeSettings> {
        match self {
            CertificateSource::Acme(settings) => Some(settings),
            _ => None,
        }
    }
}

/// The on-disk shape of `[tls]`: flat, every key optional. Converting it checks that the
/// keys present fit `source` (serde's tagged enums silently ignore extra keys on unit
/// variants, so the check is done by hand).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawTls {
    source: SourceKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_chain: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acme_directory_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acme_contact_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acme_ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acme_renew_after_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acme_renew_before_days: Option<u32>,
    acme_domains: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acme_staging_directory_url: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum SourceKind {
    #[default]
    SelfSigned,
    Files,
    Acme,
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            SourceKind::SelfSigned => "self-signed",
            SourceKind::Files => "files",
            SourceKind::Acme => "acme",
        }
    }
}

impl TryFrom<RawTls> for TlsSection {
    type Error = String;

    fn try_from(raw: RawTls) -> Result<Self, String> {
        let kind = raw.source;
        // Keys that belong to another source are refused, so a forgotten `source` line
        // cannot silently fall back to a self-signed certificate.
        let foreign = |key: &str, present: bool, owner: SourceKind| {
            if present && kind != owner {
                Err(format!(
                    "`{key}` only applies when source = \"{}\" (source is \"{}\")",
                    owner.name(),
                    kind.name()
                ))
            } else {
                Ok(())
            }
        };
        foreign(
            "certificate_chain",
            raw.certificate_chain.is_some(),
            SourceKind::Files,
        )?;
        foreign("private_key", raw.private_key.is_some(), SourceKind::Files)?;
        foreign(
            "acme_directory_url",
            raw.acme_directory_url.is_some(),
            SourceKind::Acme,
        )?;
        foreign(
            "acme_contact_email",
            raw.acme_contact_email.is_some(),
            SourceKind::Acme,
        )?;
        foreign("acme_ca_file", raw.acme_ca_file.is_some(), SourceKind::Acme)?;
        foreign(
            "acme_renew_after_days",
            raw.acme_renew_after_days.is_some(),
            SourceKind::Acme,
        )?;
        foreign(
            "acme_renew_before_days",
            raw.acme_renew_before_days.is_some(),
            SourceKind::Acme,
        )?;
        let renewal_default = AcmeRenewal::default();
        let acme_renewal = AcmeRenewal {
            renew_after_days: raw
                .acme_renew_after_days
                .unwrap_or(renewal_default.renew_after_days),
            renew_before_days: raw
                .acme_renew_before_days
                .unwrap_or(renewal_default.renew_before_days),
        };
        foreign("acme_domains", raw.acme_domains.is_some(), SourceKind::Acme)?;
        foreign(
            "acme_staging_directory_url",
            raw.acme_staging_directory_url.is_some(),
            SourceKind::Acme,
        )?;
        let required = |key: &str, value: Option<PathBuf>| {
            value.ok_or_else(|| format!("source = \"files\" requires `{key}`"))
        };
        let source = match kind {
            SourceKind::SelfSigned => CertificateSource::SelfSigned,
            SourceKind::Files => CertificateSource::Files {
                certificate_chain: required("certificate_chain", raw.certificate_chain)?,
                private_key: required("private_key", raw.private_key)?,
            },
            SourceKind::Acme => {
                let directory_url = raw
                    .acme_directory_url
                    .unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_owned());
                // Let's Encrypt's staging directory is the natural trial for its production
                // one; another CA's staging directory must be named.
                let staging_directory_url = raw.acme_staging_directory_url.or_else(|| {
                    (directory_url == LETS_ENCRYPT_DIRECTORY)
                        .then(|| LETS_ENCRYPT_STAGING_DIRECTORY.to_owned())
                });
                CertificateSource::Acme(AcmeSettings {
                    directory_url,
                    contact_email: raw.acme_contact_email,
                    ca_file: raw.acme_ca_file,
                    domains: raw.acme_domains.unwrap_or_default(),
                    staging_directory_url,
                })
            }
        };
        Ok(TlsSection {
            source,
            acme_renewal,
        })
    }
}

impl From<TlsSection> for RawTls {
    fn from(tls: TlsSection) -> Self {
        // Written only when they differ from the defaults (and so only with source = "acme").
        let renewal = tls.acme_renewal;
        let default = AcmeRenewal::default();
        let acme_renew_after_days = (renewal.renew_after_days != default.renew_after_days)
            .then_some(renewal.renew_after_days);
        let acme_renew_before_days = (renewal.renew_before_days != default.renew_before_days)
            .then_some(renewal.renew_before_days);
        let raw = match tls.source {
            CertificateSource::SelfSigned => RawTls::default(),
            CertificateSource::Files {
                certificate_chain,
                private_key,
            } => RawTls {
                source: SourceKind::Files,
                certificate_chain: Some(certificate_chain),
                private_key: Some(private_key),
                ..RawTls::default()
            },
            CertificateSource::Acme(acme) => RawTls {
                source: SourceKind::Acme,
                acme_directory_url: Some(acme.directory_url),
                acme_contact_email: acme.contact_email,
                acme_ca_file: acme.ca_file,
                acme_domains: (!acme.domains.is_empty()).then_some(acme.domains),
                acme_staging_directory_url: acme.staging_directory_url,
                ..RawTls::default()
            },
        };
        RawTls {
            acme_renew_after_days,
            acme_renew_before_days,
            ..raw
        }
    }
}

/// `warn_free_disk_mib` when the file does not set it (and `min_free_disk_mib` is lower).
pub const DEFAULT_WARN_FREE_DISK_MIB: u64 = 1024;

/// `[limits]`: resource bounds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest accepted message, in bytes (advertised as SMTP SIZE).
    pub max_message_size: u64,
    /// Most RCPT TO per SMTP transaction.
    pub max_recipients: u32,
    /// Most simultaneous client connections, for each of SMTP, POP3 and the console (each
    /// has its own budget, so a flood on one cannot lock the others out).
    pub max_connections: u32,
    /// Most simultaneous connections from one IP address, for each of them.
    pub max_connections_per_ip: u32,
    /// redb page cache, in MiB; when not set, a sixteenth of the memory the gateway may use
    /// (its control group's limit or the machine's RAM), between 16 and 64 MiB.
    pub store_cache_mib: Option<u64>,
    /// Sealed bytes a message draft keeps in memory before spilling to its spool file, KiB.
    pub spool_memory_kib: u64,
    /// Sealed bytes all messages in progress together keep in memory, MiB; beyond it their
    /// chunks spill to spool files (without it: connections × `spool_memory_kib`).
    pub spool_memory_total_mib: u64,
    /// Most bytes all messages in progress may hold in spool files together, MiB; beyond
    /// it new data gets `452 4.3.1` (without it: connections × max_message_size).
    pub spool_max_mib: u64,
    /// Seconds a write to a client may make no progress before the connection is dropped.
    pub write_timeout_secs: u64,
    /// Seconds a client may stay silent before it has proved itself: SMTP before its first
    /// MAIL (or AUTH), POP3 before login. After that the RFC idle timeouts apply.
    pub preauth_timeout_secs: u64,
    /// Seconds a whole SMTP transaction (MAIL to the end of its data) may take.
    pub transaction_timeout_secs: u64,
    /// Of `max_connections` per protocol, POP3 slots kept for pick-up clients (addresses
    /// that logged in to a mailbox before, and `[pop3] trusted_networks`); strangers and
    /// proxy clients never get them. At most half of `max_connections` is reserved,
    /// whatever this says.
    pub reserved_pickup_slots: u32,
    /// Seconds of silence after which TCP keepalive probes a connection (0: off), so a
    /// vanished client releases its slot and maildrop lock within minutes.
    pub tcp_keepalive_secs: u64,
    /// Connections the kernel queues per listener before the gateway accepts them.
    pub listen_backlog: u32,
    /// Seconds `gateway serve` lets open connections finish after a stop signal.
    pub shutdown_grace_secs: u64,
    /// New mail is refused (SMTP 452 4.3.1) while less than this is free on the data
    /// directory's file system (not counting the space reserve), MiB.
    pub min_free_disk_mib: u64,
    /// A preallocated file in the data directory, given back when the disk is full so that
    /// deletions and the store's recovery can still commit, MiB (0: none).
    pub disk_reserve_mib: u64,
    /// Below this many MiB free (outside the reserve) the log warns, once per crossing,
    /// `gateway check` says WARNING and the console highlights the free space; at least
    /// `min_free_disk_mib`, so the warning comes before mail is refused. Unset (as in a
    /// configuration written before it existed): 1024 MiB, or `min_free_disk_mib` when that
    /// is higher, so an upgrade never turns a working configuration into an invalid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn_free_disk_mib: Option<u64>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_message_size: 100 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 500,
            max_connections_per_ip: 20,
            store_cache_mib: None,
            spool_memory_kib: 2048,
            spool_memory_total_mib: 64,
            spool_max_mib: 2048,
            write_timeout_secs: 60,
            preauth_timeout_secs: 60,
            transaction_timeout_secs: 1800,
            reserved_pickup_slots: 10,
            tcp_keepalive_secs: 60,
            listen_backlog: 128,
            shutdown_grace_secs: 30,
            min_free_disk_mib: 256,
            disk_reserve_mib: 32,
            warn_free_disk_mib: None,
        }
    }
}

impl LimitsSection {
    /// `store_cache_mib` in bytes (validation bounds it, so this cannot overflow), or the
    /// default for this machine's memory ([`crate::host_memory::default_store_cache`]).
    pub fn store_cache_bytes(&self) -> u64 {
        match self.store_cache_mib {
            Some(mib) => mib.saturating_mul(1024 * 1024),
            None => crate::host_memory::default_store_cache(crate::host_memory::current()),
        }
    }

    /// `spool_memory_kib` in bytes.
    pub fn spool_memory_bytes(&self) -> u64 {
        self.spool_memory_kib.saturating_mul(1024)
    }

    /// `spool_memory_total_mib` in bytes.
    pub fn spool_memory_total_bytes(&self) -> u64 {
        self.spool_memory_total_mib.saturating_mul(1024 * 1024)
    }

    /// The POP3 slots actually reserved: at most half of `max_connections`, so a small
    /// `max_connections` never leaves strangers no slot at all.
    pub fn reserved_pickup(&self) -> u32 {
        self.reserved_pickup_slots.min(self.max_connections / 2)
    }

    /// `spool_max_mib` in bytes.
    pub fn spool_max_bytes(&self) -> u64 {
        self.spool_max_mib.saturating_mul(1024 * 1024)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    pub fn preauth_timeout(&self) -> Duration {
        Duration::from_secs(self.preauth_timeout_secs)
    }

    pub fn transaction_timeout(&self) -> Duration {
        Duration::from_secs(self.transaction_timeout_secs)
    }

    /// `None` when keepalive is off.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        (self.tcp_keepalive_secs > 0).then(|| Duration::from_secs(self.tcp_keepalive_secs))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// `min_free_disk_mib` in bytes.
    pub fn min_free_disk_bytes(&self) -> u64 {
        self.min_free_disk_mib.saturating_mul(1024 * 1024)
    }

    /// `warn_free_disk_mib` in bytes (see the field for the value when it is unset).
    pub fn warn_free_disk_bytes(&self) -> u64 {
        self.warn_free_disk_mib
            .unwrap_or(DEFAULT_WARN_FREE_DISK_MIB.max(self.min_free_disk_mib))
            .saturating_mul(1024 * 1024)
    }

    /// `disk_reserve_mib` in bytes.
    pub fn disk_reserve_bytes(&self) -> u64 {
        self.disk_reserve_mib.saturating_mul(1024 * 1024)
    }
}

/// `[smtp]`: SMTP server policy.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSection {
    /// When true, MAIL FROM before STARTTLS is refused with 530.
    pub require_tls: bool,
    /// Clients allowed to connect; empty means everyone.
    pub allowed_networks: Vec<IpNetwork>,
    /// The mailbox that receives mail for `<postmaster>` and `postmaster@<email_domain>`
    /// (RFC 5321 §4.5.1); unset, such mail is refused.
    pub postmaster_mailbox: Option<crate::mailbox::MailboxId>,
}

impl SmtpSection {
    /// Whether a client at `ip` may use the SMTP listeners.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed_networks.is_empty() || self.allowed_networks.iter().any(|n| n.contains(ip))
    }
}

/// `[pop3]`: POP3 server policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pop3Section {
    /// How many mailbox key unseals (Argon2id) may run at once; bounds memory and CPU.
    pub max_concurrent_unseals: u32,
    /// Pause before answering a failed login, in milliseconds (slows guessing).
    pub failed_login_delay_ms: u64,
    /// Seconds a logged-in session must have waited for a command before a new login with
    /// the mailbox password takes the maildrop over (ending it without UPDATE); 0: never.
    pub lock_takeover_secs: u64,
    /// The archiver's networks: logins from them are never throttled or delayed by what
    /// other clients did, and get a password check slot of their own.
    pub trusted_networks: Vec<IpNetwork>,
}

impl Default for Pop3Section {
    fn default() -> Self {
        Pop3Section {
            max_concurrent_unseals: 4,
            failed_login_delay_ms: 2000,
            lock_takeover_secs: 60,
            trusted_networks: Vec::new(),
        }
    }
}

impl Pop3Section {
    /// `None` when takeovers are off.
    pub fn lock_takeover(&self) -> Option<Duration> {
        (self.lock_takeover_secs > 0).then(|| Duration::from_secs(self.lock_takeover_secs))
    }
}

/// `[proxy]`: SMTP and POP3 proxy mode (`remote_user%target_server%mailbox_id` logins).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySection {
    /// Offer proxy logins (SMTP AUTH after TLS, POP3 `user%server%mailbox`).
    pub enabled: bool,
    /// Extra CA certificates (PEM files) trusted for upstream servers, on top of the
    /// system's trust roots.
    pub ca_files: Vec<PathBuf>,
    /// Trust the operating system's root certificates for upstream servers.
    pub system_roots: bool,
    /// Upstream servers clients may name (host names or addresses, compared without
    /// letter case); empty means any. Without a list, anyone holding a mailbox id can make
    /// the gateway open TLS connections to any host.
    pub allowed_servers: Vec<String>,
    /// Seconds to wait for an upstream's TCP connection and TLS handshake.
    pub connect_timeout_secs: u64,
    /// Let clients name upstreams whose addresses are not globally reachable (loopback,
    /// private ranges, link-local...). Off by default, so the proxy cannot be used to
    /// reach the gateway's own network.
    pub allow_private_networks: bool,
    /// Upstream ports clients may name; empty means any. By default the SMTP and POP3
    /// ports, so the proxy cannot be pointed at other services.
    pub allowed_ports: Vec<u16>,
    /// Pause before answering a proxy login the upstream refused, in milliseconds; failed
    /// logins are also throttled per client and per remote account.
    pub failed_login_delay_ms: u64,
}

/// The mail ports the proxy connects to by default: SMTP, SMTPS, submission, POP3, POP3S.
/// IMAP's are left out: the proxy does not speak IMAP.
pub const DEFAULT_PROXY_PORTS: [u16; 5] = [25, 465, 587, 110, 995];

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            enabled: true,
            ca_files: Vec::new(),
            system_roots: true,
            allowed_servers: Vec::new(),
            connect_timeout_secs: 30,
            allow_private_networks: false,
            allowed_ports: DEFAULT_PROXY_PORTS.to_vec(),
            failed_login_delay_ms: 2000,
        }
    }
}

impl ProxySection {
    /// The pause before answering a proxy login the upstream refused.
    pub fn failed_login_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.failed_login_delay_ms)
    }

    /// Whether clients may name `port` on their upstream.
    pub fn allows_port(&self, port: u16) -> bool {
        self.allowed_ports.is_empty() || self.allowed_ports.contains(&port)
    }

    /// Whether clients may name `host` as their upstream.
    pub fn allows_server(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allowed_servers.is_empty()
            || self
                .allowed_servers
                .iter()
                .any(|allowed| allowed.trim_end_matches('.').eq_ignore_ascii_case(host))
    }
}

/// `[console]`: the web console.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSection {
    /// The console's language for users who have not chosen one.
    pub language: Language,
}

/// `[metrics]`: Prometheus metrics. `/metrics` on the console listener is always there
/// (behind the API's authentication); this section adds a plain-HTTP listener for a local
/// scraper and bounds the per-mailbox series.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `GET /metrics` over plain HTTP, without authentication, on this address
    /// (e.g. `127.0.0.1:9450`); unset: no such listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Let `listen` be an address other than loopback. The listener has no authentication
    /// and no TLS, so this is for a scraper on a network the administrator trusts.
    pub allow_remote: bool,
    /// Per-mailbox series (messages waiting, oldest message) only while there are at most
    /// this many mailboxes; totals always. Bounds the number of series a scrape returns.
    pub per_mailbox_limit: u32,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: None,
            allow_remote: false,
            per_mailbox_limit: 50,
        }
    }
}

/// `[logging]`: where log lines go besides stderr, and their format.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSection {
    /// Also write log files to `<data_dir>/logs`, one per day (`gateway.log.YYYY-MM-DD`).
    pub file: bool,
    /// Log files older than this many days are deleted (at start and at each day's turn).
    pub retention_days: u32,
    /// `text` (readable lines) or `json` (one JSON object per line), for stderr and files.
    pub format: LogFormat,
}

impl Default for LoggingSection {
    fn default() -> Self {
        Self {
            file: false,
            retention_days: 14,
            format: LogFormat::Text,
        }
    }
}

/// The format of log lines (`logging.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[store]`: where mail and accounts are kept.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `redb` (one file in the data directory) or `postgres` (a database several gateways
    /// share).
    pub backend: StoreBackend,
    /// PostgreSQL only: the connection URL (`postgres://user@host:port/database`) or
    /// key=value string, without a password (that goes in `password_file`).
    pub url: String,
    /// PostgreSQL only: a file holding the database password (its first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// PostgreSQL only: connections this node opens for reads (writes have one of their own).
    pub pool_size: u32,
    /// PostgreSQL only: `verify` (TLS, the server's certificate checked against the system's
    /// roots and `ca_file`) or `off` (only to a database on this machine: loopback or a Unix
    /// socket).
    pub tls: DatabaseTls,
    /// PostgreSQL only: a PEM file with the CA that signed the database's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL only: create or upgrade the schema at start (else `gateway store migrate`
    /// must have done it).
    pub migrate: bool,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: StoreBackend::Redb,
            url: String::new(),
            password_file: None,
            pool_size: 8,
            tls: DatabaseTls::Verify,
            ca_file: None,
            migrate: true,
        }
    }
}

/// `store.backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Redb,
    Postgres,
}

/// `store.tls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseTls {
    #[default]
    Verify,
    Off,
}

/// `[backup]`: the rolling snapshot a file-level backup of the data directory relies on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSection {
    /// How often the running gateway writes a consistent snapshot of its store (with the
    /// retrieval key, certificates and configuration) to `<data_dir>/snapshots/`: a number
    /// with `s`, `m`, `h` or `d` (`"1h"`), or `"off"`. Off by default: each snapshot is a
    /// full copy of the store, which doubles (with the previous one kept, triples) the
    /// disk space the store takes.
    pub snapshot_interval: String,
}

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            snapshot_interval: "off".to_owned(),
        }
    }
}

impl BackupSection {
    /// The snapshot interval; `None` when snapshots are off. An unparsable value is `None`
    /// too, but validation refuses it before anything runs.
    pub fn snapshot_interval(&self) -> Option<Duration> {
        parse_interval(&self.snapshot_interval).ok().flatten()
    }
}

/// Parses `"off"`, `""` (off) or a whole number with a unit: `s`, `m`, `h` or `d`.
pub fn parse_interval(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` lacks a unit (s, m, h or d), e.g. \"1h\""))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number, e.g. \"1h\""))?;
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}`: the unit must be s, m, h or d (or the whole value \"off\")"
            ))
        }
    };
    let seconds = number
        .checked_mul(scale)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("`{text}` must be more than 0 (or \"off\")"))?;
    Ok(Some(Duration::from_secs(seconds)))
}

/// A language of the web console (`console.language`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    De,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::En, Language::De];

    /// The ISO 639-1 code, as the configuration file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::De => "de",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Language {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        Language::ALL
            .into_iter()
            .find(|language| language.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownValue {
                value: s.to_owned(),
                what: "a console language",
                expected: "en or de",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_detection_prefers_file_and_skips_invalid() {
        assert_eq!(pick_host_name(Some("mx1\n"), Some("other")), "mx1");
        assert_eq!(pick_host_name(Some("  \n"), Some("envhost")), "envhost");
        assert_eq!(pick_host_name(Some("bad_name!"), None), "localhost");
        assert_eq!(pick_host_name(None, None), "localhost");
        assert!(is_dns_name(&detect_host_name()));
    }

    #[test]
    fn smtp_allows_everyone_when_list_empty() {
        let mut smtp = SmtpSection::default();
        let ip: IpAddr = "198.51.100.1".parse().expect("test address");
        assert!(smtp.allows(ip));
        smtp.allowed_networks = vec!["10.0.0.0/8".parse().expect("valid")];
        assert!(!smtp.allows(ip));
        assert!(smtp.allows("10.9.8.7".parse().expect("test address")));
    }

    #[test]
    fn snapshot_intervals_parse_with_units_or_off() {
        assert_eq!(parse_interval("off"), Ok(None));
        assert_eq!(parse_interval(""), Ok(None));
        assert_eq!(parse_interval("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_interval("15m"), Ok(Some(Duration::from_secs(900))));
        assert_eq!(parse_interval(" 1h "), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(parse_interval("2d"), Ok(Some(Duration::from_secs(172_800))));
        for bad in ["1", "h", "0h", "1w", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        assert_eq!(BackupSection::default().snapshot_interval(), None);
    }

    #[test]
    fn log_level_names() {
        assert_eq!(LogLevel::Warn.to_string(), "warn");
        assert_eq!(LogLevel::default(), LogLevel::Info);
    }

    #[test]
    fn log_levels_and_languages_parse_from_their_names_only() {
        for level in LogLevel::ALL {
            assert_eq!(level.as_str().parse(), Ok(level));
        }
        assert_eq!("DEBUG".parse(), Ok(LogLevel::Debug));
        let error = "verbose".parse::<LogLevel>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "`verbose` is not a log level (expected error, warn, info, debug or trace)"
        );
        for language in Language::ALL {
            assert_eq!(language.as_str().parse(), Ok(language));
        }
        assert_eq!(Language::default(), Language::En);
        assert!("fr".parse::<Language>().is_err());
        assert!("".parse::<Language>().is_err());
    }
}

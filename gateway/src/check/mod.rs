//! `gateway check`: a monitoring probe in the Nagios/Icinga plugin convention.
//!
//! It connects to every enabled listener of the configuration as a client would (STARTTLS
//! on 25 and 587, implicit TLS on 465 and 995, STLS on 110, HTTPS on the console), finishes
//! each TLS handshake whatever the certificate (it monitors, it does not trust), and reads
//! how many days the presented certificate has left. Optionally it asks the running gateway
//! through its control socket how long the oldest message has waited for pick-up: mail
//! that waits for days means the archiver stopped.
//!
//! - `probe`: each protocol's short conversation, sans-IO.
//! - `net`: sockets and TLS, the one part that touches the network.
//! - `status`: states (worst wins), the status line and performance data.
//! - `waiting`: the waiting-mail part, over the control socket.
//! - `disk`: the free-disk-space part, over the control socket.
//! - `control`: asking the running gateway through its control socket.

mod control;
mod disk;
pub mod net;
pub mod probe;
pub mod status;
mod waiting;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;

pub use status::{Finding, Perf, Report, State};

use crate::config::{Config, ListenSection};
use net::{Answered, Target};
use probe::Protocol;

/// What to check and the thresholds.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Connect here instead of the configured addresses (a remote gateway).
    pub host: Option<String>,
    /// Ports instead of the configured ones, by listener name.
    pub ports: Vec<(String, u16)>,
    /// Only these listeners (all enabled ones when empty).
    pub only: Vec<String>,
    /// For each listener: connect, conversation and handshakes together.
    pub timeout: Duration,
    /// Fewer days left than this: WARNING; than `crit_days`: CRITICAL.
    pub warn_days: u32,
    pub crit_days: u32,
    /// Mail waiting at least this long: WARNING / CRITICAL. Neither: not checked.
    pub warn_waiting: Option<Duration>,
    pub crit_waiting: Option<Duration>,
    /// Check the free disk space (also on when a disk threshold is given).
    pub disk: bool,
    /// Less free than this many MiB: WARNING / CRITICAL; unset: the gateway's own
    /// `[limits] warn_free_disk_mib` / `min_free_disk_mib`.
    pub warn_disk_mib: Option<u64>,
    pub crit_disk_mib: Option<u64>,
}

impl CheckOptions {
    /// Whether the free-disk-space part runs.
    pub fn checks_disk(&self) -> bool {
        self.disk || self.warn_disk_mib.is_some() || self.crit_disk_mib.is_some()
    }
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            host: None,
            ports: Vec::new(),
            only: Vec::new(),
            timeout: Duration::from_secs(10),
            warn_days: 30,
            crit_days: 7,
            warn_waiting: None,
            crit_waiting: None,
            disk: false,
            warn_disk_mib: None,
            crit_disk_mib: None,
        }
    }
}

/// Options that contradict themselves or the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("no listener is named {0:?} (listeners: smtp, submission, smtps, pop3, pop3s, console, acme_http)")]
    UnknownListener(String),
    #[error("--crit-days ({crit}) must not be more than --warn-days ({warn})")]
    DayThresholds { warn: u32, crit: u32 },
    #[error("--crit-waiting must not be shorter than --warn-waiting")]
    WaitingThresholds,
    #[error("--crit-disk-mib ({crit}) must not be more than --warn-disk-mib ({warn})")]
    DiskThresholds { warn: u64, crit: u64 },
    #[error("--timeout must be more than 0")]
    ZeroTimeout,
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

/// Runs the whole check; `now` decides the days left and the ages.
pub async fn run(config: &Config, options: &CheckOptions, now: SystemTime) -> Report {
    match try_run(config, options, now).await {
        Ok(report) => report,
        Err(e) => Report::unknown(e.to_string()),
    }
}

async fn try_run(
    config: &Config,
    options: &CheckOptions,
    now: SystemTime,
) -> Result<Report, UsageError> {
    validate(options)?;
    let targets = targets(config, options).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, target) in targets.into_iter().enumerate() {
        let timeout = options.timeout;
        tasks.spawn(async move { (index, net::check(target, timeout).await) });
    }
    let waiting = async {
        if options.warn_waiting.is_none() && options.crit_waiting.is_none() {
            return None;
        }
        Some(waiting::check(config, options, now).await)
    };
    let disk = async {
        if !options.checks_disk() {
            return None;
        }
        Some(disk::check(config, options).await)
    };
    let (mut answered, waiting, disk) = tokio::join!(
        async {
            let mut all = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                if let Ok(one) = joined {
                    all.push(one);
                }
            }
            all
        },
        waiting,
        disk
    );
    answered.sort_by_key(|(index, _)| *index);

    let mut report = Report::default();
    let mut min_days: Option<i64> = None;
    for (_, one) in &answered {
        let (finding, perf, days) = listener_finding(one, options, now);
        report.findings.push(finding);
        report.perf.extend(perf);
        if let Some(days) = days {
            min_days = Some(min_days.map_or(days, |m| m.min(days)));
        }
    }
    let mut summary = match answered.len() {
        1 => "1 listener answers".to_owned(),
        n => format!("{n} listeners answer"),
    };
    if let Some(days) = min_days {
        summary.push_str(&format!(", certificate valid {days} days"));
    }
    if let Some((finding, perf)) = waiting {
        summary.push_str(&format!(", {}", finding.text));
        report.findings.push(finding);
        report.perf.extend(perf);
    }
    if let Some((finding, perf)) = disk {
        summary.push_str(&format!(", {}", finding.text));
        report.findings.push(finding);
        report.perf.extend(perf);
    }
    report.ok_summary = summary;
    Ok(report)
}

fn validate(options: &CheckOptions) -> Result<(), UsageError> {
    for name in options
        .ports
        .iter()
        .map(|(name, _)| name)
        .chain(&options.only)
    {
        if !ListenSection::NAMES.contains(&name.as_str()) {
            return Err(UsageError::UnknownListener(name.clone()));
        }
    }
    if options.crit_days > options.warn_days {
        return Err(UsageError::DayThresholds {
            warn: options.warn_days,
            crit: options.crit_days,
        });
    }
    if let (Some(warn), Some(crit)) = (options.warn_waiting, options.crit_waiting) {
        if crit < warn {
            return Err(UsageError::WaitingThresholds);
        }
    }
    if let (Some(warn), Some(crit)) = (options.warn_disk_mib, options.crit_disk_mib) {
        if crit > warn {
            return Err(UsageError::DiskThresholds { warn, crit });
        }
    }
    if options.timeout.is_zero() {
        return Err(UsageError::ZeroTimeout);
    }
    Ok(())
}

/// The listeners to check, with where to connect and the name to present.
async fn targets(config: &Config, options: &CheckOptions) -> Result<Vec<Target>, UsageError> {
    let remote = match &options.host {
        Some(host) => Some(resolve(host).await?),
        None => None,
    };
    let server_name = server_name(options.host.as_deref(), &config.gateway.host_name);
    let mut targets = Vec::new();
    for (service, configured) in config.listeners() {
        if !options.only.is_empty() && !options.only.iter().any(|o| o == service) {
            continue;
        }
        let port = options
            .ports
            .iter()
            .rev()
            .find(|(name, _)| name == service)
            .map_or(configured.port(), |(_, port)| *port);
        let ip = remote.unwrap_or_else(|| local_ip(configured.ip()));
        targets.push(Target {
            service,
            addr: SocketAddr::new(ip, port),
            protocol: Protocol::of_service(service),
            server_name: server_name.clone().unwrap_or_else(|| ServerName::from(ip)),
        });
    }
    Ok(targets)
}

/// A listener on every interface is reached on loopback; IPv4's, since a listener on `::`
/// falls back to IPv4 alone where the system has no IPv6.
fn local_ip(configured: IpAddr) -> IpAddr {
    match configured {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other,
    }
}

/// The name sent as SNI and HTTP `Host`: the host given if it is a name, else the
/// gateway's host name; `None`: the address itself.
fn server_name(host: Option<&str>, host_name: &str) -> Option<ServerName<'static>> {
    if let Some(host) = host {
        if host.parse::<IpAddr>().is_err() {
            if let Ok(name) = ServerName::try_from(host.to_owned()) {
                return Some(name);
            }
        }
    }
    ServerName::try_from(host_name.to_owned())
        .ok()
        .filter(|name| matches!(name, ServerName::DnsName(_)))
}

async fn resolve(host: &str) -> Result<IpAddr, UsageError> {
    // `[::1]` as written in URLs, too.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip);
    }
    let found = tokio::net::lookup_host((bare, 0))
        .await
        .map_err(|e| UsageError::Resolve {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .map(|addr| addr.ip())
        .collect::<Vec<_>>();
    // IPv4 first, as for the loopback default: the more likely to be reachable.
    found
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| UsageError::Resolve {
            host: host.to_owned(),
            reason: "no address".into(),
        })
}

/// The finding for one listener, its performance data, and its certificate's days left.
fn listener_finding(
    one: &Answered,
    options: &CheckOptions,
    now: SystemTime,
) -> (Finding, Vec<Perf>, Option<i64>) {
    let service = one.target.service;
    let at = format!("{service} {}", one.target.addr);
    let mut perf = vec![Perf::new(
        format!("{service}_time"),
        format!("{:.3}s", one.elapsed.as_secs_f64()),
    )
    .min("0")];
    let tls = match &one.result {
        Err(reason) => {
            return (
                Finding::new(State::Critical, format!("{at}: {reason}")),
                perf,
                None,
            )
        }
        Ok(None) => {
            return (
                Finding::new(State::Ok, format!("{at}: connects")),
                perf,
                None,
            )
        }
        Ok(Some(tls)) => tls,
    };
    let days = crate::tls::days_left(tls.not_after, now);
    perf.push(
        Perf::new(format!("{service}_cert_days"), days.to_string()).thresholds(
            format!("{}:", options.warn_days),
            format!("{}:", options.crit_days),
        ),
    );
    let until = time::OffsetDateTime::from(tls.not_after).date();
    let how = one.target.protocol.tls_name().unwrap_or("TLS");
    let (state, validity) = if tls.not_after <= now {
        (State::Critical, format!("certificate expired on {until}"))
    } else if days < i64::from(options.crit_days) {
        (
            State::Critical,
            format!("certificate expires in {days} days (on {until})"),
        )
    } else if days < i64::from(options.warn_days) {
        (
            State::Warning,
            format!("certificate expires in {days} days (on {until})"),
        )
    } else {
        (
            State::Ok,
            format!("certificate valid {days} days (until {until})"),
        )
    };
    let text = format!("{at}: {how} {}, {validity}", tls.version);
    (Finding::new(state, text), perf, Some(days))
}

/// `90`, `90s`, `30m`, `24h`, `2d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 90s, 30m, 24h, 2d)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h or d)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `2d 3h`, `45m`, `12s`: an age for people.
pub fn human(age: Duration) -> String {
    let secs = age.as_secs();
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn durations_are_parsed_with_units_and_refused_without_sense() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "h", "1.5h", "-1s", "3w", "1 h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(45 * 60 + 3)), "45m");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 60)), "3h 1m");
        assert_eq!(human(Duration::from_secs(2 * 86_400 + 3 * 3600)), "2d 3h");
    }

    #[test]
    fn contradicting_options_are_refused() {
        let bad = |adjust: fn(&mut CheckOptions)| {
            let mut options = CheckOptions::default();
            adjust(&mut options);
            validate(&options).unwrap_err()
        };
        assert!(matches!(
            bad(|o| o.ports.push(("imap".into(), 143))),
            UsageError::UnknownListener(_)
        ));
        assert!(matches!(
            bad(|o| o.crit_days = 40),
            UsageError::DayThresholds { .. }
        ));
        assert_eq!(
            bad(|o| {
                o.warn_waiting = Some(Duration::from_secs(60));
                o.crit_waiting = Some(Duration::from_secs(59));
            }),
            UsageError::WaitingThresholds
        );
        assert_eq!(bad(|o| o.timeout = Duration::ZERO), UsageError::ZeroTimeout);
        validate(&CheckOptions::default()).unwrap();
    }

    #[test]
    fn listeners_on_every_interface_are_reached_on_loopback() {
        assert_eq!(
            local_ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            local_ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            local_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            server_name(None, "mx.example.com"),
            Some(ServerName::try_from("mx.example.com").unwrap())
        );
        assert_eq!(
            server_name(Some("gw.example.net"), "mx.example.com"),
            Some(ServerName::try_from("gw.example.net").unwrap())
        );
        assert_eq!(
            server_name(Some("127.0.0.2"), "mx.example.com"),
            Some(ServerName::try_from("mx.example.com").unwrap())
        );
        assert_eq!(server_name(None, "10.0.0.1"), None);
    }
}

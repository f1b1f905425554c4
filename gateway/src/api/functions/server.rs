//! Server functions: what runs, and the certificate it presents.

use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;

use super::{Function, NoParams};
use crate::api::{Api, ApiError, Caller, ListenerInfo};

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub version: String,
    pub host_name: String,
    pub email_domain: String,
    /// Unix milliseconds.
    pub started_at: u64,
    pub uptime_seconds: u64,
    pub listeners: Vec<ListenerInfo>,
    /// Bytes the store file takes on disk (every mailbox's encrypted messages and the
    /// records); `null` when its size cannot be read.
    pub store_bytes: Option<u64>,
    /// Bytes free on the data directory's file system, the space reserve not counted (as
    /// the refusal of new mail counts them); `null` when the file system cannot tell.
    pub free_disk_bytes: Option<u64>,
    /// Size of the data directory's file system; `null` when it cannot tell.
    pub total_disk_bytes: Option<u64>,
    /// Below this much free space the gateway warns (`[limits] warn_free_disk_mib`).
    pub warn_free_disk_bytes: u64,
    /// Below this much free space new mail is refused (`[limits] min_free_disk_mib`).
    pub min_free_disk_bytes: u64,
    /// `ok`, `warning` (below the warning threshold) or `critical` (below the minimum);
    /// `null` when the free space is unknown.
    pub disk_level: Option<String>,
    /// Seconds between rolling snapshots (`[backup] snapshot_interval`); `null`: off.
    pub snapshot_interval_seconds: Option<u64>,
    /// When the newest complete snapshot in `<data_dir>/snapshots` read the store, RFC
    /// 3339; `null` when there is none yet (or snapshots are off).
    pub last_snapshot_at: Option<String>,
}

pub struct GetServerInfo;

impl Function for GetServerInfo {
    const NAME: &'static str = "GetServerInfo";
    const SUMMARY: &'static str =
        "Version, host name, email domain, uptime, store size, free disk space with its \
         thresholds, and the listeners with their state.";
    type Params = NoParams;
    type Output = ServerInfo;

    async fn call(api: &Api, _: &Caller, _: NoParams) -> Result<ServerInfo, ApiError> {
        let server = api.server();
        let gateway = api.gateway();
        let disk = gateway.disk_usage();
        Ok(ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host_name: server.host_name.clone(),
            email_domain: api.gateway().email_domain().to_string(),
            started_at: server.started_at,
            uptime_seconds: server.uptime_seconds(),
            listeners: server.listeners(),
            store_bytes: disk.store,
            free_disk_bytes: disk.free,
            total_disk_bytes: disk.total,
            warn_free_disk_bytes: gateway.warn_free_disk(),
            min_free_disk_bytes: gateway.min_free_disk(),
            disk_level: disk
                .free
                .map(|free| gateway.disk_level(free).as_str().to_owned()),
            snapshot_interval_seconds: server.snapshot_interval().map(|i| i.as_secs()),
            last_snapshot_at: server
                .snapshot_interval()
                .and(server.data_dir())
                .and_then(crate::backup::last_snapshot_at),
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Whole days until `notAfter`; negative once expired.
    pub days_left: i64,
    pub sha256_fingerprint: String,
    /// The private key's algorithm: `RSA`, `ECDSA` or `ED25519`.
    pub key_type: String,
    /// `self-signed`, `imported`, `files` or `acme`.
    pub source: String,
    /// Automatic renewal, when the source is `acme` (only `GetCertificateInfo` fills it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub renewal: Option<RenewalInfo>,
}

/// The ACME renewal's record and plan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewalInfo {
    /// RFC 3339: when the certificate is due by `acme_renew_after_days` /
    /// `acme_renew_before_days`.
    pub due: Option<String>,
    /// RFC 3339: when the next attempt is planned (the due date, or later after failures).
    pub next_attempt: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure in words; `null` after a success.
    pub last_error: Option<String>,
    /// RFC 3339: when a certificate was last obtained.
    pub last_success: Option<String>,
    /// RFC 3339: when the last attempt ended.
    pub last_attempt: Option<String>,
    /// Whether this process renews on schedule (false while the gateway is stopped: the
    /// plan is what `serve` will follow).
    pub scheduled: bool,
}

fn renewal_info(
    api: &Api,
    material: &crate::tls::CertifiedMaterial,
    now: SystemTime,
) -> Option<RenewalInfo> {
    let manager = api.server().certificate_manager();
    let status = manager.renewal_status(Some(material.info()))?;
    let state = &status.state;
    let next_attempt = if status.scheduled {
        state.next_attempt
    } else {
        // What `serve` would plan at start from this record.
        let info = material.info();
        Some(crate::tls::acme::renewal::first_attempt(
            &manager.renewal_policy(),
            info.not_before,
            info.not_after,
            state,
            now,
        ))
    };
    Some(RenewalInfo {
        due: status.due.map(rfc3339),
        next_attempt: next_attempt.map(rfc3339),
        consecutive_failures: state.consecutive_failures,
        last_error: state.last_error.clone(),
        last_success: state.last_success.map(rfc3339),
        last_attempt: state.last_attempt.map(rfc3339),
        scheduled: status.scheduled,
    })
}

pub struct GetCertificateInfo;

impl Function for GetCertificateInfo {
    const NAME: &'static str = "GetCertificateInfo";
    const SUMMARY: &'static str =
        "The certificate every listener presents: names, issuer, validity and days left.";
    type Params = NoParams;
    type Output = CertificateInfo;

    async fn call(api: &Api, _: &Caller, _: NoParams) -> Result<CertificateInfo, ApiError> {
        let server = api.server();
        let now = SystemTime::now();
        if let Some(resolver) = &server.certificates {
            let current = resolver.current();
            let mut info = certificate_info(&current, server.certificate_source(), now);
            if info.source == "acme" {
                info.renewal = renewal_info(api, &current, now);
            }
            return Ok(info);
        }
        // Stopped: what the next start will present, when it is already in the data
        // directory (an imported or a stored self-signed certificate).
        let stored = server
            .data_dir()
            .and_then(|dir| stored_certificate(dir, server.certificate_source()));
        match stored {
            Some((material, source)) => {
                let mut info = certificate_info(&material, source, now);
                if source == "acme" {
                    info.renewal = renewal_info(api, &material, now);
                }
                Ok(info)
            }
            None => Err(ApiError::new(
                503,
                "error",
                "the gateway is not running; `gateway serve` loads the certificate",
            )),
        }
    }
}

fn stored_certificate(
    data_dir: &std::path::Path,
    source: &'static str,
) -> Option<(crate::tls::CertifiedMaterial, &'static str)> {
    match source {
        "imported" => crate::tls::load_imported(data_dir)?
            .ok()
            .map(|m| (m, "imported")),
        "acme" => crate::tls::acme::load_acme(data_dir)?
            .ok()
            .map(|m| (m, "acme")),
        "self-signed" => {
            let dir = data_dir.join(crate::tls::TLS_DIR);
            crate::tls::load_pem_files(
                &dir.join(crate::tls::SELF_SIGNED_CERT_FILE),
                &dir.join(crate::tls::SELF_SIGNED_KEY_FILE),
            )
            .ok()
            .map(|m| (m, "self-signed"))
        }
        _ => None,
    }
}

/// What the API says of a certificate.
pub(super) fn certificate_info(
    material: &crate::tls::CertifiedMaterial,
    source: &str,
    now: SystemTime,
) -> CertificateInfo {
    let info = material.info();
    CertificateInfo {
        subject: info.subject.clone(),
        issuer: info.issuer.clone(),
        dns_names: info.dns_names.clone(),
        ip_addresses: info.ip_addresses.iter().map(|ip| ip.to_string()).collect(),
        not_before: rfc3339(info.not_before),
        not_after: rfc3339(info.not_after),
        days_left: crate::tls::days_left(info.not_after, now),
        sha256_fingerprint: info.sha256_fingerprint.clone(),
        key_type: format!("{:?}", material.certified_key().key.algorithm()),
        source: source.to_owned(),
        renewal: None,
    }
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

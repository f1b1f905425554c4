//! A certificate chain with its signing key, plus what an admin wants to see about it.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What the leaf certificate says, for logs, the console and renewal decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject distinguished name, e.g. `CN=mail.example.com`.
    pub subject: String,
    /// Issuer distinguished name (equal to `subject` for a self-signed certificate).
    pub issuer: String,
    /// DNS names from the subjectAltName extension, as written (may contain wildcards).
    pub dns_names: Vec<String>,
    /// IP addresses from the subjectAltName extension.
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// SHA-256 of the leaf certificate's DER, lowercase hex without separators.
    pub sha256_fingerprint: String,
}

impl CertificateInfo {
    /// Reads the metadata out of a DER certificate. The error is a human-readable reason.
    pub(crate) fn from_leaf_der(der: &[u8]) -> Result<Self, String> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("trailing data after the certificate".to_owned());
        }
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("subjectAltName: {e}"))?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            dns_names,
            ip_addresses,
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
            sha256_fingerprint: data_encoding::HEXLOWER.encode(digest.as_ref()),
        })
    }

    /// Whether a client connecting to `host_name` would find it in the certificate's SANs
    /// (case-insensitive; a `*.` wildcard covers exactly one leftmost label). The subject CN
    /// is ignored, as current clients ignore it.
    pub fn covers(&self, host_name: &str) -> bool {
        let host_name = host_name.trim_end_matches('.');
        if let Ok(ip) = host_name.parse::<IpAddr>() {
            return self.ip_addresses.contains(&ip);
        }
        self.dns_names
            .iter()
            .any(|pattern| dns_name_matches(pattern.trim_end_matches('.'), host_name))
    }

    /// Whether the certificate is outside its validity period at `now + margin`, or not yet
    /// valid at `now`.
    pub fn invalid_within(&self, now: SystemTime, margin: Duration) -> bool {
        let horizon = now.checked_add(margin).unwrap_or(now);
        now < self.not_before || horizon >= self.not_after
    }
}

fn dns_name_matches(pattern: &str, host_name: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host_name) {
        return true;
    }
    match (pattern.strip_prefix("*."), host_name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && suffix.eq_ignore_ascii_case(rest)
        }
        _ => false,
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    // Out-of-range dates clamp to the epoch; they only matter for display and expiry checks,
    // and a certificate dated that absurdly is treated as expired.
    if unix_seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

/// A certificate chain (leaf first) with its matching signing key, ready for rustls, and the
/// leaf's metadata. Cheap to clone.
#[derive(Clone)]
pub struct CertifiedMaterial {
    key: Arc<CertifiedKey>,
    info: Arc<CertificateInfo>,
}

impl CertifiedMaterial {
    /// The caller guarantees that `info` describes `key.cert[0]` and that the chain is not
    /// empty (the loaders check both).
    pub(crate) fn new(key: Arc<CertifiedKey>, info: CertificateInfo) -> Self {
        Self {
            key,
            info: Arc::new(info),
        }
    }

    /// What rustls serves.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// SHA-256 fingerprint of the leaf, lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.info.sha256_fingerprint
    }

    pub fn not_after(&self) -> SystemTime {
        self.info.not_after
    }
}

// Hand-written so that no formatting of this type can ever reach the signing key.
impl fmt::Debug for CertifiedMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedMaterial")
            .field("chain_len", &self.key.cert.len())
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Whole days from `now` until `not_after`, rounded down; negative once past (a certificate
/// that expired a second ago has -1 days left).
pub fn days_left(not_after: SystemTime, now: SystemTime) -> i64 {
    let seconds = match not_after.duration_since(now) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(past) => -(past.duration().as_secs() as i64),
    };
    seconds.div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_round_down_and_expired_ones_are_negative() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(days_left(now + day * 30 + Duration::from_secs(5), now), 30);
        assert_eq!(days_left(now + day * 10, now), 10);
        assert_eq!(days_left(now + day * 10 - Duration::from_secs(1), now), 9);
        assert_eq!(days_left(now + Duration::from_secs(86_399), now), 0);
        assert_eq!(days_left(now, now), 0);
        assert_eq!(days_left(now - Duration::from_secs(1), now), -1);
        assert_eq!(days_left(now - day * 2, now), -2);
    }

    fn info(dns: &[&str], ips: &[&str]) -> CertificateInfo {
        CertificateInfo {
            subject: String::new(),
            issuer: String::new(),
            dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
            ip_addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH + Duration::from_secs(1000),
            sha256_fingerprint: String::new(),
        }
    }

    #[test]
    fn covers_exact_wildcard_and_ip() {
        let i = info(&["Mail.Example.com", "*.example.org"], &["::1"]);
        assert!(i.covers("mail.example.com"));
        assert!(i.covers("mail.example.com."));
        assert!(i.covers("a.example.org"));
        assert!(!i.covers("example.org"));
        assert!(!i.covers("a.b.example.org"));
        assert!(!i.covers("other.example.com"));
        assert!(i.covers("::1"));
        assert!(!i.covers("127.0.0.1"));
    }

    #[test]
    fn validity_window() {
        let i = info(&[], &[]);
        let margin = Duration::from_secs(100);
        assert!(!i.invalid_within(UNIX_EPOCH + Duration::from_secs(10), margin));
        assert!(i.invalid_within(UNIX_EPOCH + Duration::from_secs(950), margin));
        assert!(i.invalid_within(UNIX_EPOCH + Duration::from_secs(2000), margin));
        let mut later = i.clone();
        later.not_before = UNIX_EPOCH + Duration::from_secs(500);
        assert!(later.invalid_within(UNIX_EPOCH + Duration::from_secs(10), margin));
    }
}

//! The self-signed certificate used when the admin configured none: generated on first start,
//! kept in the data directory, reused afterwards, regenerated when it no longer fits.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};

use super::error::TlsError;
use super::material::CertifiedMaterial;
use super::pem_files::{load_pem_files, parse_pem};

/// Sub-directory of the data directory holding TLS material.
pub const TLS_DIR: &str = "tls";
pub const SELF_SIGNED_CERT_FILE: &str = "self-signed.crt.pem";
pub const SELF_SIGNED_KEY_FILE: &str = "self-signed.key.pem";

/// 825 days: the longest lifetime some clients (Apple) accept for a server certificate.
const VALIDITY: time::Duration = time::Duration::days(825);
/// Regenerate this long before expiry so that a long-running gateway never serves an expired
/// certificate between restarts it has no control over.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Backdating tolerates clients whose clock runs a little behind ours.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Returns the self-signed certificate for `host_name` from `<data_dir>/tls/`, creating or
/// regenerating it when needed.
pub fn load_or_create_self_signed(
    data_dir: &Path,
    host_name: &str,
) -> Result<CertifiedMaterial, TlsError> {
    load_or_create_at(data_dir, host_name, SystemTime::now()).map(|(material, _)| material)
}

/// What [`load_or_create_at`] did, so tests can check the decision without capturing logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Reused,
    Created,
    Regenerated(Reason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Missing half of the pair, unparsable, or key and certificate do not match.
    Unusable(String),
    HostNameChanged,
    /// Expired, about to, or not yet valid (the clock moved back).
    OutsideValidity,
}

pub(crate) fn load_or_create_at(
    data_dir: &Path,
    host_name: &str,
    now: SystemTime,
) -> Result<(CertifiedMaterial, Outcome), TlsError> {
    let dir = data_dir.join(TLS_DIR);
    let cert_path = dir.join(SELF_SIGNED_CERT_FILE);
    let key_path = dir.join(SELF_SIGNED_KEY_FILE);

    let outcome = if !cert_path.exists() && !key_path.exists() {
        tracing::info!(
            dir = %dir.display(),
            host_name,
            "no TLS certificate configured; generating a self-signed one"
        );
        Outcome::Created
    } else {
        match load_pem_files(&cert_path, &key_path) {
            Ok(material) => {
                let info = material.info();
                if !info.covers(host_name) {
                    tracing::info!(
                        host_name,
                        names = ?info.dns_names,
                        "stored self-signed certificate does not name the host name; regenerating"
                    );
                    Outcome::Regenerated(Reason::HostNameChanged)
                } else if info.invalid_within(now, RENEW_BEFORE) {
                    tracing::info!(
                        not_after = %time::OffsetDateTime::from(info.not_after),
                        "stored self-signed certificate expires soon or is not valid now; regenerating"
                    );
                    Outcome::Regenerated(Reason::OutsideValidity)
                } else {
                    tracing::info!(
                        path = %cert_path.display(),
                        sha256 = material.fingerprint(),
                        not_after = %time::OffsetDateTime::from(info.not_after),
                        "using stored self-signed certificate"
                    );
                    return Ok((material, Outcome::Reused));
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "stored self-signed certificate is unusable; generating a new one"
                );
                Outcome::Regenerated(Reason::Unusable(e.to_string()))
            }
        }
    };

    let material = store(data_dir, generate(host_name, now)?)?;
    tracing::info!(
        path = %cert_path.display(),
        host_name,
        sha256 = material.fingerprint(),
        not_after = %time::OffsetDateTime::from(material.not_after()),
        "generated self-signed certificate; clients must be told to trust this fingerprint"
    );
    Ok((material, outcome))
}

/// PEM certificate and PKCS#8 key for `host_name`, ECDSA P-256.
fn generate(host_name: &str, now: SystemTime) -> Result<(String, String), TlsError> {
    generate_with_names(host_name, &[], now)
}

/// Creates a new self-signed certificate for `host_name` plus `extra` names (DNS names or
/// IP literals), stores it where [`load_or_create_self_signed`] finds it on later starts
/// (it is reused as long as it still names the host name), and returns it.
pub fn create_self_signed(
    data_dir: &Path,
    host_name: &str,
    extra: &[String],
) -> Result<CertifiedMaterial, TlsError> {
    store(
        data_dir,
        generate_with_names(host_name, extra, SystemTime::now())?,
    )
}

/// Stores a generated pair where [`load_or_create_self_signed`] finds it and returns it as
/// it was parsed, so the served material is exactly what later starts will load.
pub(crate) fn store(
    data_dir: &Path,
    (cert_pem, key_pem): (String, String),
) -> Result<CertifiedMaterial, TlsError> {
    let dir = data_dir.join(TLS_DIR);
    let cert_path = dir.join(SELF_SIGNED_CERT_FILE);
    let key_path = dir.join(SELF_SIGNED_KEY_FILE);
    let material = parse_pem(
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
        &cert_path,
        &key_path,
    )?;
    create_private_dir(&dir)?;
    // Key first: if we crash between the two renames, the next start sees a mismatched pair
    // and regenerates, rather than serving a certificate whose key is lost.
    write_atomically(&dir, &key_path, key_pem.as_bytes(), 0o600)?;
    write_atomically(&dir, &cert_path, cert_pem.as_bytes(), 0o644)?;
    sync_dir(&dir)?;
    Ok(material)
}

fn generate_with_names(
    host_name: &str,
    extra: &[String],
    now: SystemTime,
) -> Result<(String, String), TlsError> {
    let fail = |reason: String| TlsError::Generate {
        host_name: host_name.to_owned(),
        reason,
    };
    if host_name.is_empty() {
        return Err(fail("the host name is empty".to_owned()));
    }
    // Local names too, so an admin can reach the console on the machine itself.
    let mut names = vec![host_name.to_owned()];
    let locals = ["localhost", "127.0.0.1", "::1"].map(str::to_owned);
    for name in extra.iter().chain(locals.iter()) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.clone());
        }
    }
    // `new` turns IP literals into IP SANs and rejects non-ASCII names.
    let mut params = CertificateParams::new(names).map_err(|e| fail(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    // RFC 5280 caps the CN at 64 characters; the SAN carries the name regardless.
    if host_name.len() <= 64 {
        dn.push(DnType::CommonName, host_name);
    }
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::from(now);
    // The whole span, backdating included, stays within 825 days: scanners (testssl.sh)
    // measure notBefore to notAfter, not from now.
    params.not_before = now - BACKDATE;
    params.not_after = now - BACKDATE + VALIDITY;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

    let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// [`crate::fs::create_private_dir`], failing with the directory's name.
pub(super) fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    crate::fs::create_private_dir(dir).map_err(write_failed(dir))
}

/// [`crate::fs::write_atomically`]: the mode is set at creation so the key is never
/// readable by others.
pub(super) fn write_atomically(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), TlsError> {
    crate::fs::write_atomically(dir, path, bytes, mode).map_err(write_failed(path))
}

/// Makes the renames durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    crate::fs::sync_dir(dir).map_err(write_failed(dir))
}

fn write_failed(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Write {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    #[test]
    fn first_start_creates_then_reuses() {
        let data = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (first, outcome) = load_or_create_at(data.path(), "mail.example.com", now).unwrap();
        assert_eq!(outcome, Outcome::Created);
        let dir = data.path().join(TLS_DIR);
        assert!(dir.join(SELF_SIGNED_CERT_FILE).is_file());
        assert!(dir.join(SELF_SIGNED_KEY_FILE).is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join(SELF_SIGNED_KEY_FILE)), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        // No temp files left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);

        let info = first.info();
        assert_eq!(info.subject, "CN=mail.example.com");
        assert_eq!(info.subject, info.issuer);
        for name in ["mail.example.com", "localhost", "127.0.0.1", "::1"] {
            assert!(info.covers(name), "{name}");
        }
        let lifetime = info.not_after.duration_since(now).unwrap();
        assert!(
            lifetime > 824 * DAY && lifetime <= 825 * DAY,
            "{lifetime:?}"
        );
        let span = info.not_after.duration_since(info.not_before).unwrap();
        assert!(span <= 825 * DAY, "validity span {span:?}");

        let (second, outcome) = load_or_create_at(data.path(), "mail.example.com", now).unwrap();
        assert_eq!(outcome, Outcome::Reused);
        assert_eq!(second.fingerprint(), first.fingerprint());

        // The public entry point agrees.
        let third = load_or_create_self_signed(data.path(), "mail.example.com").unwrap();
        assert_eq!(third.fingerprint(), first.fingerprint());
    }

    #[test]
    fn host_name_change_regenerates() {
        let data = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (first, _) = load_or_create_at(data.path(), "old.example.com", now).unwrap();
        let (second, outcome) = load_or_create_at(data.path(), "new.example.com", now).unwrap();
        assert_eq!(outcome, Outcome::Regenerated(Reason::HostNameChanged));
        assert_ne!(second.fingerprint(), first.fingerprint());
        assert!(second.info().covers("new.example.com"));
        assert!(!second.info().covers("old.example.com"));
        // Host names compare case-insensitively, so a case change alone keeps the certificate.
        let (third, outcome) = load_or_create_at(data.path(), "NEW.example.com", now).unwrap();
        assert_eq!(outcome, Outcome::Reused);
        assert_eq!(third.fingerprint(), second.fingerprint());
    }

    #[test]
    fn near_expiry_and_clock_skew_regenerate() {
        let data = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (first, _) = load_or_create_at(data.path(), "mail.example.com", now).unwrap();

        let (same, outcome) =
            load_or_create_at(data.path(), "mail.example.com", now + 790 * DAY).unwrap();
        assert_eq!(outcome, Outcome::Reused);
        assert_eq!(same.fingerprint(), first.fingerprint());

        let later = now + 800 * DAY;
        let (renewed, outcome) = load_or_create_at(data.path(), "mail.example.com", later).unwrap();
        assert_eq!(outcome, Outcome::Regenerated(Reason::OutsideValidity));
        assert_ne!(renewed.fingerprint(), first.fingerprint());

        // Back in time before the renewed certificate's start: not yet valid.
        let (_, outcome) = load_or_create_at(data.path(), "mail.example.com", now).unwrap();
        assert_eq!(outcome, Outcome::Regenerated(Reason::OutsideValidity));
    }

    #[test]
    fn corrupted_or_half_missing_files_regenerate() {
        let data = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (first, _) = load_or_create_at(data.path(), "mail.example.com", now).unwrap();
        let dir = data.path().join(TLS_DIR);

        fs::write(dir.join(SELF_SIGNED_CERT_FILE), "garbage").unwrap();
        let (second, outcome) = load_or_create_at(data.path(), "mail.example.com", now).unwrap();
        assert!(
            matches!(outcome, Outcome::Regenerated(Reason::Unusable(_))),
            "{outcome:?}"
        );
        assert_ne!(second.fingerprint(), first.fingerprint());

        fs::remove_file(dir.join(SELF_SIGNED_KEY_FILE)).unwrap();
        let (third, outcome) = load_or_create_at(data.path(), "mail.example.com", now).unwrap();
        assert!(
            matches!(outcome, Outcome::Regenerated(Reason::Unusable(_))),
            "{outcome:?}"
        );
        assert_ne!(third.fingerprint(), second.fingerprint());

        // A key from another pair (as after a crash between the two renames).
        let other = tempfile::tempdir().unwrap();
        load_or_create_at(other.path(), "mail.example.com", now).unwrap();
        fs::copy(
            other.path().join(TLS_DIR).join(SELF_SIGNED_KEY_FILE),
            dir.join(SELF_SIGNED_KEY_FILE),
        )
        .unwrap();
        let (_, outcome) = load_or_create_at(data.path(), "mail.example.com", now).unwrap();
        assert!(
            matches!(outcome, Outcome::Regenerated(Reason::Unusable(ref r)) if r.contains("does not belong")),
            "{outcome:?}"
        );
    }

    #[test]
    fn ip_host_name_and_bad_names() {
        let data = tempfile::tempdir().unwrap();
        let m = load_or_create_self_signed(data.path(), "192.0.2.7").unwrap();
        assert!(m
            .info()
            .ip_addresses
            .contains(&"192.0.2.7".parse().unwrap()));
        assert!(m.info().covers("192.0.2.7"));

        let data = tempfile::tempdir().unwrap();
        let err = load_or_create_self_signed(data.path(), "").unwrap_err();
        assert!(matches!(err, TlsError::Generate { .. }));
        let err = load_or_create_self_signed(data.path(), "mäil.example.com").unwrap_err();
        assert!(matches!(err, TlsError::Generate { .. }), "{err}");
    }
}

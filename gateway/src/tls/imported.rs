//! A certificate the administrator chose at run time (Management API `ImportCertificate`,
//! `gateway cert import`): checked, stored in the data directory and preferred over the
//! self-signed one on later starts.
//!
//! How the choice survives a restart: the pair is written to `<data_dir>/tls/imported.*.pem`
//! (both 0600, atomically, key first); while `[tls] source = "self-signed"` (the default)
//! start-up serves that pair when it exists. Creating a new self-signed certificate removes
//! it again. With `source = "files"` the configured files keep precedence.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::error::TlsError;
use super::material::CertifiedMaterial;
use super::pem_files::{load_pem_files, parse_pem};
use super::self_signed::{create_private_dir, sync_dir, write_atomically, TLS_DIR};

pub const IMPORTED_CERT_FILE: &str = "imported.crt.pem";
pub const IMPORTED_KEY_FILE: &str = "imported.key.pem";

/// A certificate this close to expiry is accepted with a warning.
const SOON: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What an administrator should be told about a certificate that is still accepted: clients
/// may reject it, but refusing it would leave the old one, which may be worse.
pub fn warnings(material: &CertifiedMaterial, host_name: &str, now: SystemTime) -> Vec<String> {
    let info = material.info();
    let mut warnings = Vec::new();
    if !info.covers(host_name) {
        warnings.push(format!(
            "the certificate does not name the host name {host_name} (it names {}); clients \
             connecting by that name will reject it",
            names(material)
        ));
    }
    let date = |at: SystemTime| {
        time::OffsetDateTime::from(at)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    if now < info.not_before {
        warnings.push(format!(
            "the certificate is not valid yet (from {}); clients will reject it until then",
            date(info.not_before)
        ));
    } else if now >= info.not_after {
        warnings.push(format!(
            "the certificate expired on {}; clients will reject it",
            date(info.not_after)
        ));
    } else if info.invalid_within(now, SOON) {
        warnings.push(format!(
            "the certificate expires on {}, in 30 days or fewer; replace it soon",
            date(info.not_after)
        ));
    }
    warnings
}

fn names(material: &CertifiedMaterial) -> String {
    let info = material.info();
    let all: Vec<String> = info
        .dns_names
        .iter()
        .cloned()
        .chain(info.ip_addresses.iter().map(|ip| ip.to_string()))
        .collect();
    if all.is_empty() {
        "no names".to_owned()
    } else {
        all.join(", ")
    }
}

/// Checks a PEM chain (leaf first) and its key, and stores them as the chosen certificate.
/// Nothing is written when the pair is unusable.
pub fn import_pem(
    data_dir: &Path,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedMaterial, TlsError> {
    let dir = data_dir.join(TLS_DIR);
    let cert_path = dir.join(IMPORTED_CERT_FILE);
    let key_path = dir.join(IMPORTED_KEY_FILE);
    let material = parse_pem(
        chain_pem,
        key_pem,
        Path::new("the certificate chain"),
        Path::new("the private key"),
    )?;
    create_private_dir(&dir)?;
    // Key first: a crash between the renames leaves a mismatched pair, which start-up
    // refuses (and falls back to self-signed) rather than serving a lost key's certificate.
    write_atomically(&dir, &key_path, key_pem, 0o600)?;
    write_atomically(&dir, &cert_path, chain_pem, 0o600)?;
    sync_dir(&dir)?;
    Ok(material)
}

/// Checks a PKCS#12 file (`.p12`/`.pfx`: legacy 3DES/RC2 as older Windows exports, or
/// AES-256 PBES2) and stores its first key with its chain as the chosen certificate.
pub fn import_pkcs12(
    data_dir: &Path,
    pkcs12: &[u8],
    password: &str,
) -> Result<CertifiedMaterial, TlsError> {
    let (chain_pem, key_pem) = pkcs12_to_pem(pkcs12, password)?;
    import_pem(data_dir, chain_pem.as_bytes(), key_pem.as_bytes())
}

/// The chain (leaf first) and the PKCS#8 key of a PKCS#12 file, as PEM.
fn pkcs12_to_pem(pkcs12: &[u8], password: &str) -> Result<(String, String), TlsError> {
    use p12_keystore::error::Error;
    use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
    let store = KeyStore::from_pkcs12(pkcs12, password, Pkcs12ImportPolicy::Strict).map_err(
        |e| match e {
            // The MAC is keyed by the password: a mismatch means a wrong password (or a
            // damaged file, which the admin finds out by trying the password again).
            Error::MacError(_) => TlsError::Pkcs12Password,
            other => TlsError::Pkcs12 {
                reason: other.to_string(),
            },
        },
    )?;
    let (_, chain) = store.private_key_chain().ok_or_else(|| TlsError::Pkcs12 {
        reason: "it holds no private key with its certificate".to_owned(),
    })?;
    if chain.certs().is_empty() {
        return Err(TlsError::Pkcs12 {
            reason: "it holds no certificate for its private key".to_owned(),
        });
    }
    let chain_pem: String = chain
        .certs()
        .iter()
        .map(|cert| pem_block("CERTIFICATE", cert.as_der()))
        .collect();
    Ok((chain_pem, pem_block("PRIVATE KEY", chain.key().as_der())))
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let base64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The chosen certificate, if one was imported. `None` when there is none; an error when it
/// is there but unusable.
pub fn load_imported(data_dir: &Path) -> Option<Result<CertifiedMaterial, TlsError>> {
    let dir = data_dir.join(TLS_DIR);
    let cert_path = dir.join(IMPORTED_CERT_FILE);
    let key_path = dir.join(IMPORTED_KEY_FILE);
    if !cert_path.exists() && !key_path.exists() {
        return None;
    }
    Some(load_pem_files(&cert_path, &key_path))
}

/// Forgets the chosen certificate, so that start-up serves the self-signed one again.
pub fn forget_imported(data_dir: &Path) -> Result<(), TlsError> {
    let dir = data_dir.join(TLS_DIR);
    for name in [IMPORTED_CERT_FILE, IMPORTED_KEY_FILE] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(TlsError::Write { path, source }),
        }
    }
    if dir.exists() {
        sync_dir(&dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn pair(name: &str, not_after_days: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(400);
        params.not_after = now + time::Duration::days(not_after_days);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn imported_pair_is_stored_private_and_loaded_back() {
        let data = tempfile::tempdir().unwrap();
        let (chain, key) = pair("mail.example.com", 90);
        let material = import_pem(data.path(), chain.as_bytes(), key.as_bytes()).unwrap();
        let loaded = load_imported(data.path()).unwrap().unwrap();
        assert_eq!(loaded.fingerprint(), material.fingerprint());
        #[cfg(unix)]
        for name in [IMPORTED_CERT_FILE, IMPORTED_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(data.path().join(TLS_DIR).join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        forget_imported(data.path()).unwrap();
        assert!(load_imported(data.path()).is_none());
    }

    #[test]
    fn key_of_another_certificate_is_refused_and_nothing_is_written() {
        let data = tempfile::tempdir().unwrap();
        let (chain, _) = pair("mail.example.com", 90);
        let (_, other_key) = pair("mail.example.com", 90);
        let err = import_pem(data.path(), chain.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(load_imported(data.path()).is_none());
    }

    #[test]
    fn expired_soon_expiring_and_misnamed_certificates_get_warnings() {
        let data = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (chain, key) = pair("mail.example.com", 90);
        let good = parse_pem(chain.as_bytes(), key.as_bytes(), data.path(), data.path()).unwrap();
        assert!(warnings(&good, "mail.example.com", now).is_empty());
        let misnamed = warnings(&good, "other.example.com", now);
        assert!(misnamed[0].contains("does not name"), "{misnamed:?}");

        let (chain, key) = pair("mail.example.com", 10);
        let soon = parse_pem(chain.as_bytes(), key.as_bytes(), data.path(), data.path()).unwrap();
        let w = warnings(&soon, "mail.example.com", now);
        assert!(w[0].contains("30 days or fewer"), "{w:?}");

        let (chain, key) = pair("mail.example.com", -1);
        let expired =
            parse_pem(chain.as_bytes(), key.as_bytes(), data.path(), data.path()).unwrap();
        let w = warnings(&expired, "mail.example.com", now);
        assert!(w[0].contains("expired"), "{w:?}");
        // Accepted all the same: the import stores it.
        import_pem(data.path(), chain.as_bytes(), key.as_bytes()).unwrap();

        let not_yet = warnings(&good, "mail.example.com", now - 500 * DAY);
        assert!(not_yet[0].contains("not valid yet"), "{not_yet:?}");
    }

    /// A PKCS#12 file made by `openssl pkcs12 -export` with `extra` arguments.
    fn openssl_pkcs12(dir: &Path, days_left: i64, extra: &[&str]) -> Vec<u8> {
        let (chain, key) = pair("mail.example.com", days_left);
        let (chain_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
        fs::write(&chain_path, chain).unwrap();
        fs::write(&key_path, key).unwrap();
        let out_path = dir.join("out.p12");
        let status = std::process::Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:s3cret", "-in"])
            .arg(&chain_path)
            .arg("-inkey")
            .arg(&key_path)
            .arg("-out")
            .arg(&out_path)
            .args(extra)
            .status()
            .unwrap();
        assert!(status.success());
        fs::read(out_path).unwrap()
    }

    #[test]
    fn legacy_and_modern_pkcs12_files_import_with_the_right_password() {
        let work = tempfile::tempdir().unwrap();
        let legacy = openssl_pkcs12(work.path(), 90, &["-legacy"]);
        let modern = openssl_pkcs12(
            work.path(),
            90,
            &["-certpbe", "AES-256-CBC", "-keypbe", "AES-256-CBC"],
        );
        for (what, file) in [("legacy 3DES/RC2", legacy), ("AES-256", modern)] {
            let data = tempfile::tempdir().unwrap();
            let material = import_pkcs12(data.path(), &file, "s3cret")
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(material.info().covers("mail.example.com"), "{what}");
            let loaded = load_imported(data.path()).unwrap().unwrap();
            assert_eq!(loaded.fingerprint(), material.fingerprint(), "{what}");
        }
    }

    #[test]
    fn pkcs12_with_a_wrong_password_is_refused_and_nothing_is_written() {
        let work = tempfile::tempdir().unwrap();
        let file = openssl_pkcs12(work.path(), 90, &[]);
        let data = tempfile::tempdir().unwrap();
        let err = import_pkcs12(data.path(), &file, "guess").unwrap_err();
        assert!(matches!(err, TlsError::Pkcs12Password), "{err}");
        assert!(load_imported(data.path()).is_none());
        let err = import_pkcs12(data.path(), b"not a pkcs12 file", "s3cret").unwrap_err();
        assert!(matches!(err, TlsError::Pkcs12 { .. }), "{err}");
    }

    #[test]
    fn expired_pkcs12_certificate_is_imported_with_a_warning() {
        let work = tempfile::tempdir().unwrap();
        let file = openssl_pkcs12(work.path(), -3, &[]);
        let data = tempfile::tempdir().unwrap();
        let material = import_pkcs12(data.path(), &file, "s3cret").unwrap();
        let w = warnings(&material, "mail.example.com", SystemTime::now());
        assert!(w[0].contains("expired"), "{w:?}");
    }
}

//! TLS certificate material for every listener: a self-signed certificate generated on first
//! start, or PEM files the admin provides, served through a [`CertResolver`] whose
//! certificate can be replaced at run time (ACME renewals) without restarting listeners.
//!
//! `serve` calls [`prepare`] once, builds one [`acceptor`] per listener from the returned
//! resolver, and keeps the resolver to [`CertResolver::swap`] later.

pub mod acme;
mod client;
mod error;
mod imported;
mod manager;
mod material;
mod pem_files;
mod resolver;
mod self_signed;
mod server_config;
mod shared;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use client::{client_config, upstream_connector, UpstreamTrust};
pub use error::TlsError;
pub use imported::{
    forget_imported, import_pem, import_pkcs12, load_imported, warnings, IMPORTED_CERT_FILE,
    IMPORTED_KEY_FILE,
};
pub use manager::{CertificateManager, ChallengePort};
pub use material::{days_left, CertificateInfo, CertifiedMaterial};
pub use pem_files::{load_pem_files, parse_pem};
pub use resolver::CertResolver;
pub use self_signed::{
    create_self_signed, load_or_create_self_signed, SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE,
    TLS_DIR,
};
pub use server_config::{acceptor, server_config, PROTOCOL_VERSIONS};
pub use shared::{shared_source, CertificateShare, SharedAcme, SharedCertificate};

/// Where the certificate comes from. The configuration maps its own type onto this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSourceSpec {
    /// Generated and kept under `<data_dir>/tls/`.
    SelfSigned,
    /// Admin-provided PEM files: the chain (leaf first) and its private key. Relative paths
    /// are resolved against the working directory, so the config layer should pass
    /// absolute ones.
    Files { chain: PathBuf, key: PathBuf },
    /// Ordered over ACME and kept under `<data_dir>/tls/acme/`; until the first order
    /// succeeds, the self-signed certificate is served.
    Acme,
}

/// Loads (or creates) the certificate and wraps it in a resolver for the listeners. Returns
/// the material too, for the start-up summary.
pub fn prepare(
    spec: &CertificateSourceSpec,
    data_dir: &Path,
    host_name: &str,
) -> Result<(Arc<CertResolver>, CertifiedMaterial), TlsError> {
    let material = match spec {
        CertificateSourceSpec::SelfSigned => match load_imported(data_dir) {
            Some(Ok(material)) => {
                report_files(
                    &material,
                    &data_dir.join(TLS_DIR),
                    host_name,
                    SystemTime::now(),
                );
                material
            }
            // An unusable import must not keep the gateway from accepting mail.
            Some(Err(e)) => {
                tracing::error!(error = %e, "the imported TLS certificate is unusable; serving the self-signed one");
                load_or_create_self_signed(data_dir, host_name)?
            }
            None => load_or_create_self_signed(data_dir, host_name)?,
        },
        CertificateSourceSpec::Acme => match acme::load_acme(data_dir) {
            Some(Ok(material)) => {
                report_files(
                    &material,
                    &acme::acme_dir(data_dir),
                    host_name,
                    SystemTime::now(),
                );
                material
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "the stored ACME certificate is unusable; serving the self-signed one until a new one is issued");
                load_or_create_self_signed(data_dir, host_name)?
            }
            None => load_or_create_self_signed(data_dir, host_name)?,
        },
        CertificateSourceSpec::Files { chain, key } => {
            let material = load_pem_files(chain, key)?;
            report_files(&material, chain, host_name, SystemTime::now());
            material
        }
    };
    Ok((Arc::new(CertResolver::new(material.clone())), material))
}

/// The name `GetCertificateInfo` reports for the source start-up chose: an imported
/// certificate takes the place of the self-signed one.
pub fn source_name(configured: &'static str, data_dir: &Path) -> &'static str {
    if configured == "self-signed" && matches!(load_imported(data_dir), Some(Ok(_))) {
        "imported"
    } else {
        configured
    }
}

/// Warns about an admin-provided certificate clients will reject, but still starts: a mail
/// gateway whose certificate lapsed should keep accepting mail (many SMTP clients do not
/// verify), and the admin sees the warning.
fn report_files(material: &CertifiedMaterial, chain: &Path, host_name: &str, now: SystemTime) {
    let info = material.info();
    tracing::info!(
        path = %chain.display(),
        subject = %info.subject,
        issuer = %info.issuer,
        sha256 = material.fingerprint(),
        not_after = %time::OffsetDateTime::from(info.not_after),
        "loaded TLS certificate"
    );
    if !info.covers(host_name) {
        tracing::warn!(
            host_name,
            names = ?info.dns_names,
            "the TLS certificate does not name the configured host name; clients will reject it"
        );
    }
    if info.invalid_within(now, Duration::ZERO) {
        tracing::warn!(
            not_before = %time::OffsetDateTime::from(info.not_before),
            not_after = %time::OffsetDateTime::from(info.not_after),
            "the TLS certificate is not valid now; clients will reject it"
        );
    } else if info.invalid_within(now, Duration::from_secs(14 * 24 * 60 * 60)) {
        tracing::warn!(
            not_after = %time::OffsetDateTime::from(info.not_after),
            "the TLS certificate expires within 14 days"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_self_signed_and_files_agree() {
        let data = tempfile::tempdir().unwrap();
        let (resolver, material) = prepare(
            &CertificateSourceSpec::SelfSigned,
            data.path(),
            "mail.example.com",
        )
        .unwrap();
        assert_eq!(resolver.current().fingerprint(), material.fingerprint());

        let dir = data.path().join(TLS_DIR);
        let spec = CertificateSourceSpec::Files {
            chain: dir.join(SELF_SIGNED_CERT_FILE),
            key: dir.join(SELF_SIGNED_KEY_FILE),
        };
        let (resolver, from_files) = prepare(&spec, data.path(), "other.example.com").unwrap();
        assert_eq!(from_files.fingerprint(), material.fingerprint());
        assert_eq!(resolver.current().fingerprint(), material.fingerprint());
    }

    #[test]
    fn prepare_files_error_names_the_path() {
        let data = tempfile::tempdir().unwrap();
        let spec = CertificateSourceSpec::Files {
            chain: data.path().join("missing.crt"),
            key: data.path().join("missing.key"),
        };
        let err = prepare(&spec, data.path(), "mail.example.com").unwrap_err();
        assert!(err.to_string().contains("missing.crt"), "{err}");
    }
}

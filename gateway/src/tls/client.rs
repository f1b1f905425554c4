//! TLS toward upstream servers (proxy mode): certificates are verified against the system's
//! trust roots and any CA files the administrator adds. There is no way to turn
//! verification off: an upstream with an invalid certificate is refused, never accepted
//! silently.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, CertificateDer};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{TlsError, PROTOCOL_VERSIONS};

/// Where upstream trust comes from.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTrust {
    /// The operating system's root certificates.
    pub system_roots: bool,
    /// Extra PEM files with CA certificates.
    pub ca_files: Vec<PathBuf>,
}

/// A connector for upstream connections; build once and share.
pub fn upstream_connector(trust: &UpstreamTrust) -> Result<TlsConnector, TlsError> {
    Ok(TlsConnector::from(client_config(trust)?))
}

/// A verifying TLS client configuration trusting what `trust` says (upstream servers, the
/// PostgreSQL store's database).
pub fn client_config(trust: &UpstreamTrust) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    if trust.system_roots {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "could not load some system root certificates");
        }
        // Individual unparsable roots are skipped, as every TLS client does.
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system root certificates for upstream TLS");
    }
    for path in &trust.ca_files {
        let pem = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => TlsError::NotFound { path: path.clone() },
            _ => TlsError::Read {
                path: path.clone(),
                source,
            },
        })?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|source| TlsError::InvalidPem {
                path: path.clone(),
                source,
            })?;
            roots
                .add(cert)
                .map_err(|error| TlsError::InvalidCertificate {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            found += 1;
        }
        if found == 0 {
            return Err(TlsError::NoCertificate { path: path.clone() });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .expect("ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let trust = UpstreamTrust {
            system_roots: false,
            ca_files: vec![missing],
        };
        assert!(matches!(
            upstream_connector(&trust),
            Err(TlsError::NotFound { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let trust = UpstreamTrust {
            system_roots: false,
            ca_files: vec![empty],
        };
        assert!(matches!(
            upstream_connector(&trust),
            Err(TlsError::NoCertificate { .. })
        ));
    }

    #[test]
    fn a_generated_ca_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let material = crate::tls::load_or_create_self_signed(dir.path(), "gw.test").unwrap();
        let pem = dir.path().join("ca.pem");
        let mut text = String::new();
        for cert in material.chain() {
            text.push_str(&pem_encode(cert));
        }
        std::fs::write(&pem, text).unwrap();
        let trust = UpstreamTrust {
            system_roots: true,
            ca_files: vec![pem],
        };
        assert!(upstream_connector(&trust).is_ok());
    }

    fn pem_encode(cert: &rustls::pki_types::CertificateDer<'_>) -> String {
        let body = data_encoding::BASE64.encode(cert.as_ref());
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }
}

//! What ACME keeps in `<data_dir>/tls/acme/`: one account per directory URL
//! (`account-<16 hex of sha256(url)>.json`, instant-acme's credentials with the account's
//! private key), and the certificate in use (`chain.pem`, `key.pem`). Every file is 0600 and
//! written atomically, so a crash leaves the old file or the new one.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;

use crate::tls::self_signed::{create_private_dir, sync_dir, write_atomically, TLS_DIR};
use crate::tls::{load_pem_files, parse_pem, CertifiedMaterial, TlsError};

/// Under the TLS directory.
pub const ACME_DIR: &str = "acme";
pub const ACME_CHAIN_FILE: &str = "chain.pem";
pub const ACME_KEY_FILE: &str = "key.pem";

pub fn acme_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR).join(ACME_DIR)
}

/// Names the account of a directory URL (16 hex digits of its SHA-256): a test CA and
/// Let's Encrypt never share an account.
pub fn account_id(directory_url: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, directory_url.as_bytes());
    data_encoding::HEXLOWER.encode(&digest.as_ref()[..8])
}

/// The account file for a directory URL.
pub fn account_path(data_dir: &Path, directory_url: &str) -> PathBuf {
    acme_dir(data_dir).join(format!("account-{}.json", account_id(directory_url)))
}

/// The stored credentials for `directory_url`, if any.
pub fn read_account(data_dir: &Path, directory_url: &str) -> Result<Option<Vec<u8>>, TlsError> {
    let path = account_path(data_dir, directory_url);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Read { path, source }),
    }
}

pub fn write_account(data_dir: &Path, directory_url: &str, json: &[u8]) -> Result<(), TlsError> {
    let dir = acme_dir(data_dir);
    create_private_dir(&dir)?;
    write_atomically(&dir, &account_path(data_dir, directory_url), json, 0o600)?;
    sync_dir(&dir)
}

/// Where a CA certificate given through the API (`caPem`) is kept for `acme_ca_file`.
pub const ACME_CA_FILE: &str = "ca.pem";

/// Checks that `pem` holds certificates and stores it as the ACME server's extra trust;
/// returns its path.
pub fn store_ca_pem(data_dir: &Path, pem: &[u8]) -> Result<PathBuf, TlsError> {
    let dir = acme_dir(data_dir);
    let path = dir.join(ACME_CA_FILE);
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::InvalidPem {
            path: path.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path });
    }
    create_private_dir(&dir)?;
    write_atomically(&dir, &path, pem, 0o600)?;
    sync_dir(&dir)?;
    Ok(path)
}

/// Checks and stores an issued chain with its key; nothing is replaced when they are
/// unusable.
pub fn store_certificate(
    data_dir: &Path,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedMaterial, TlsError> {
    let dir = acme_dir(data_dir);
    let chain_path = dir.join(ACME_CHAIN_FILE);
    let key_path = dir.join(ACME_KEY_FILE);
    let material = parse_pem(chain_pem, key_pem, &chain_path, &key_path)?;
    create_private_dir(&dir)?;
    // Key first: a crash between the renames leaves a mismatched pair, which loading
    // refuses, rather than a chain whose key is lost.
    write_atomically(&dir, &key_path, key_pem, 0o600)?;
    write_atomically(&dir, &chain_path, chain_pem, 0o600)?;
    sync_dir(&dir)?;
    Ok(material)
}

/// The stored ACME certificate: `None` when there is none yet, an error when it is there
/// but unusable.
pub fn load_acme(data_dir: &Path) -> Option<Result<CertifiedMaterial, TlsError>> {
    let dir = acme_dir(data_dir);
    let chain_path = dir.join(ACME_CHAIN_FILE);
    let key_path = dir.join(ACME_KEY_FILE);
    if !chain_path.exists() && !key_path.exists() {
        return None;
    }
    Some(load_pem_files(&chain_path, &key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_per_directory_and_private() {
        let data = tempfile::tempdir().unwrap();
        let a = "https://acme-v02.api.letsencrypt.org/directory";
        let b = "https://acme-staging-v02.api.letsencrypt.org/directory";
        assert_ne!(account_path(data.path(), a), account_path(data.path(), b));
        assert!(read_account(data.path(), a).unwrap().is_none());
        write_account(data.path(), a, b"{}").unwrap();
        assert_eq!(read_account(data.path(), a).unwrap().unwrap(), b"{}");
        assert!(read_account(data.path(), b).unwrap().is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(account_path(data.path(), a))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_unusable_chain_replaces_nothing() {
        let data = tempfile::tempdir().unwrap();
        assert!(load_acme(data.path()).is_none());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mail.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let stored = store_certificate(
            data.path(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let err = store_certificate(
            data.path(),
            cert.pem().as_bytes(),
            other.serialize_pem().as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        let loaded = load_acme(data.path()).unwrap().unwrap();
        assert_eq!(loaded.fingerprint(), stored.fingerprint());
    }
}

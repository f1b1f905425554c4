//! Certificate chain and private key from PEM files the admin provides.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::error::TlsError;
use super::material::{CertificateInfo, CertifiedMaterial};

/// Loads a PEM certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 RSA or SEC1
/// EC). Both may be the same file. Checks that the key belongs to the leaf certificate.
pub fn load_pem_files(chain: &Path, key: &Path) -> Result<CertifiedMaterial, TlsError> {
    let chain_pem = read(chain)?;
    let key_pem = read(key)?;
    parse_pem(&chain_pem, &key_pem, chain, key)
}

/// [`load_pem_files`] on bytes already in memory; the paths only name the origin in errors.
pub fn parse_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
    chain_path: &Path,
    key_path: &Path,
) -> Result<CertifiedMaterial, TlsError> {
    let certs = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<CertificateDer<'static>>, pem::Error>>()
        .map_err(|source| TlsError::InvalidPem {
            path: chain_path.to_owned(),
            source,
        })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate {
            path: chain_path.to_owned(),
        });
    };
    let info =
        CertificateInfo::from_leaf_der(leaf).map_err(|reason| TlsError::InvalidCertificate {
            path: chain_path.to_owned(),
            reason,
        })?;

    let key_der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => Some(key),
        Err(pem::Error::NoItemsFound) => None,
        Err(source) => {
            return Err(TlsError::InvalidPem {
                path: key_path.to_owned(),
                source,
            })
        }
    };
    let key_der = key_der.ok_or_else(|| match unsupported_key_label(key_pem) {
        Some(reason) => TlsError::UnsupportedKey {
            path: key_path.to_owned(),
            reason,
        },
        None => TlsError::NoPrivateKey {
            path: key_path.to_owned(),
        },
    })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|_| {
        TlsError::UnsupportedKey {
            path: key_path.to_owned(),
            reason: "not an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key".to_owned(),
        }
    })?;

    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // `Unknown` means the key type cannot report its public key; nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                chain: chain_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(e) => {
            return Err(TlsError::InvalidCertificate {
                path: chain_path.to_owned(),
                reason: e.to_string(),
            })
        }
    }
    Ok(CertifiedMaterial::new(Arc::new(certified), info))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::NotFound {
            path: path.to_owned(),
        },
        _ => TlsError::Read {
            path: path.to_owned(),
            source,
        },
    })
}

/// When no usable key was found, names a private-key PEM block that was present but is not
/// supported (an encrypted key is the usual mistake), so the admin is not told "no key".
fn unsupported_key_label(pem: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(pem);
    let label = text.lines().find_map(|line| {
        let label = line
            .trim()
            .strip_prefix("-----BEGIN ")?
            .strip_suffix("-----")?;
        label.contains("PRIVATE KEY").then(|| label.to_owned())
    })?;
    Some(if label.contains("ENCRYPTED") {
        "the key is encrypted; store it unencrypted (e.g. `openssl pkey -in key.pem -out plain.pem`) with mode 0600".to_owned()
    } else {
        format!("\"{label}\" blocks are not supported")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn leaf_and_key(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn good_chain_and_key_load() {
        let dir = tempfile::tempdir().unwrap();
        let (leaf, key) = leaf_and_key("mail.example.com");
        let (ca, _) = leaf_and_key("ca.example.com");
        let chain = write(dir.path(), "chain.pem", &format!("{leaf}{ca}"));
        let key = write(dir.path(), "key.pem", &key);
        let material = load_pem_files(&chain, &key).unwrap();
        assert_eq!(material.chain().len(), 2);
        assert!(material.info().covers("mail.example.com"));
        assert!(!material.info().covers("ca.example.com"));
        assert_eq!(material.fingerprint().len(), 64);
    }

    #[test]
    fn chain_and_key_in_one_file_load() {
        let dir = tempfile::tempdir().unwrap();
        let (leaf, key) = leaf_and_key("mail.example.com");
        let both = write(dir.path(), "both.pem", &format!("{key}{leaf}"));
        assert!(load_pem_files(&both, &both).is_ok());
    }

    #[test]
    fn pkcs1_rsa_and_sec1_ec_keys_load() {
        // rcgen cannot produce these encodings; the fixtures were made with openssl.
        let dir = tempfile::tempdir().unwrap();
        for (name, cert, key) in [
            (
                "rsa.test",
                include_str!("testdata/rsa.crt.pem"),
                include_str!("testdata/rsa-pkcs1.key.pem"),
            ),
            (
                "ec.test",
                include_str!("testdata/ec.crt.pem"),
                include_str!("testdata/ec-sec1.key.pem"),
            ),
        ] {
            let chain = write(dir.path(), &format!("{name}.crt"), cert);
            let key = write(dir.path(), &format!("{name}.key"), key);
            let material = load_pem_files(&chain, &key).unwrap();
            assert!(material.info().covers(name));
            assert_eq!(material.info().subject, format!("CN={name}"));
        }
    }

    #[test]
    fn undecodable_key_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let (leaf, _) = leaf_and_key("mail.example.com");
        let chain = write(dir.path(), "chain.pem", &leaf);
        let bogus = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let key = write(dir.path(), "key.pem", bogus);
        let err = load_pem_files(&chain, &key).unwrap_err();
        assert!(
            matches!(err, TlsError::UnsupportedKey { ref path, .. } if *path == key),
            "{err}"
        );
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (leaf, key) = leaf_and_key("mail.example.com");
        let chain = write(dir.path(), "chain.pem", &leaf);
        let key_path = write(dir.path(), "key.pem", &key);
        let absent = dir.path().join("absent.pem");

        let err = load_pem_files(&absent, &key_path).unwrap_err();
        assert!(matches!(err, TlsError::NotFound { ref path } if *path == absent));
        assert!(err.to_string().contains("absent.pem"));

        let err = load_pem_files(&chain, &absent).unwrap_err();
        assert!(matches!(err, TlsError::NotFound { ref path } if *path == absent));

        // A directory is there but unreadable as a file.
        let err = load_pem_files(dir.path(), &key_path).unwrap_err();
        assert!(matches!(err, TlsError::Read { ref path, .. } if path == dir.path()));
    }

    #[test]
    fn no_certificate_and_no_key_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let (leaf, key) = leaf_and_key("mail.example.com");
        let chain = write(dir.path(), "chain.pem", &leaf);
        let key_path = write(dir.path(), "key.pem", &key);
        let junk = write(dir.path(), "junk.pem", "not pem at all\n");

        let err = load_pem_files(&key_path, &key_path).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { ref path } if *path == key_path));

        let err = load_pem_files(&chain, &junk).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { ref path } if *path == junk));
        assert!(err.to_string().contains("junk.pem"));
    }

    #[test]
    fn garbage_certificate_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = leaf_and_key("mail.example.com");
        let chain = write(
            dir.path(),
            "chain.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let key = write(dir.path(), "key.pem", &key);
        let err = load_pem_files(&chain, &key).unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidCertificate { ref path, .. } if *path == chain),
            "{err}"
        );
    }

    #[test]
    fn encrypted_key_is_unsupported_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (leaf, _) = leaf_and_key("mail.example.com");
        let chain = write(dir.path(), "chain.pem", &leaf);
        let key = write(
            dir.path(),
            "key.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let err = load_pem_files(&chain, &key).unwrap_err();
        assert!(matches!(err, TlsError::UnsupportedKey { ref path, .. } if *path == key));
        assert!(err.to_string().contains("encrypted"), "{err}");
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (leaf, _) = leaf_and_key("mail.example.com");
        let (_, other_key) = leaf_and_key("mail.example.com");
        let chain = write(dir.path(), "chain.pem", &leaf);
        let key = write(dir.path(), "key.pem", &other_key);
        let err = load_pem_files(&chain, &key).unwrap_err();
        assert!(
            matches!(err, TlsError::KeyMismatch { chain: ref c, key: ref k } if *c == chain && *k == key),
            "{err}"
        );
    }
}

//! The certificate the nodes of a shared store present alike: every node behind one MX name
//! must show the same certificate, and only one of them may order it from the CA.
//!
//! [`CertificateShare`] is what the [`super::CertificateManager`] needs from the database:
//! the certificate in use with its key, the ACME account, the HTTP-01 answers of an order
//! (the CA may ask any node), and a task only one node holds while it orders. The service
//! layer implements it on the store's coordination; the private key and the account leave
//! the node only sealed under a secret the nodes share. With one node (the embedded store)
//! there is no share and the data directory is the whole truth.
//!
//! Certificates from `[tls] source = "files"` are the operator's to distribute and stay
//! out of it: such a node presents its own files and neither publishes nor follows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::acme;
use super::self_signed::{SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE, TLS_DIR};
use super::{parse_pem, CertifiedMaterial, TlsError, IMPORTED_CERT_FILE, IMPORTED_KEY_FILE};
use crate::config::AcmeSettings;

/// Blocking calls on the shared database; the manager runs them off the async workers.
pub trait CertificateShare: Send + Sync {
    /// The certificate the nodes present, as last published; `None` before any was.
    fn certificate(&self) -> Result<Option<SharedCertificate>, TlsError>;

    /// Makes `certificate` the one every node presents (they follow within seconds).
    fn publish_certificate(&self, certificate: &SharedCertificate) -> Result<(), TlsError>;

    /// The ACME account credentials (instant-acme's JSON) for `directory_url`.
    fn account(&self, directory_url: &str) -> Result<Option<Zeroizing<Vec<u8>>>, TlsError>;

    fn publish_account(&self, directory_url: &str, credentials: &[u8]) -> Result<(), TlsError>;

    /// Makes every node's challenge listener answer `token` while an order waits for it.
    fn publish_challenge(&self, token: &str, key_authorization: &str) -> Result<(), TlsError>;

    /// The answer another node published for `token`.
    fn challenge(&self, token: &str) -> Result<Option<String>, TlsError>;

    fn withdraw_challenge(&self, token: &str) -> Result<(), TlsError>;

    /// Takes the right to order a certificate for `ttl` unless another node holds it. True:
    /// this node may order now.
    fn take_ordering(&self, ttl: Duration) -> Result<bool, TlsError>;

    fn release_ordering(&self) -> Result<(), TlsError>;
}

/// Where a shared ACME certificate came from, so any node can renew it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedAcme {
    pub directory_url: String,
    pub contact_email: Option<String>,
    pub domains: Vec<String>,
    pub staging_directory_url: Option<String>,
    /// The extra CA for the ACME server's HTTPS, as PEM (a path would name one node's file).
    pub ca_pem: Option<String>,
}

/// The certificate every node presents, with its key in clear: it only exists in memory
/// and in the node's data directory, never in the database unsealed.
#[derive(Clone)]
pub struct SharedCertificate {
    /// `self-signed`, `imported` or `acme` (as [`super::CertificateManager::source`]).
    pub source: &'static str,
    pub chain_pem: String,
    pub key_pem: Zeroizing<String>,
    /// With `source = "acme"`: the order's settings.
    pub acme: Option<SharedAcme>,
    /// A node's own self-signed certificate, published at its start because none was: not
    /// a choice anyone made, so a node configured for ACME does not follow it (it orders,
    /// and what it gets replaces this for every node).
    pub by_default: bool,
}

impl std::fmt::Debug for SharedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCertificate")
            .field("source", &self.source)
            .field("acme", &self.acme)
            .field("by_default", &self.by_default)
            .finish_non_exhaustive()
    }
}

/// The sources a shared certificate may have, by the name [`SharedCertificate::source`]
/// carries.
pub fn shared_source(name: &str) -> Option<&'static str> {
    ["self-signed", "imported", "acme"]
        .into_iter()
        .find(|known| *known == name)
}

impl SharedCertificate {
    /// The certificate as rustls takes it; an error when the pair is unusable.
    pub fn material(&self) -> Result<CertifiedMaterial, TlsError> {
        parse_pem(
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
            Path::new("the shared certificate"),
            Path::new("the shared private key"),
        )
    }

    /// The certificate `source` presents on this node, read from its files in `data_dir`;
    /// `None` for `files` (not shared) and when the files are not there (an ACME
    /// certificate not yet issued).
    pub fn from_data_dir(
        data_dir: &Path,
        source: &'static str,
        acme: Option<&AcmeSettings>,
    ) -> Result<Option<Self>, TlsError> {
        let Some((chain_path, key_path)) = files_of(data_dir, source) else {
            return Ok(None);
        };
        let chain_pem = match std::fs::read_to_string(&chain_path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TlsError::Read {
                    path: chain_path,
                    source,
                })
            }
        };
        let key_pem = Zeroizing::new(std::fs::read_to_string(&key_path).map_err(|source| {
            TlsError::Read {
                path: key_path.clone(),
                source,
            }
        })?);
        let acme =
            match (source, acme) {
                ("acme", Some(settings)) => Some(SharedAcme {
                    directory_url: settings.directory_url.clone(),
                    contact_email: settings.contact_email.clone(),
                    domains: settings.domains.clone(),
                    staging_directory_url: settings.staging_directory_url.clone(),
                    ca_pem: match &settings.ca_file {
                        Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                            TlsError::Read {
                                path: path.clone(),
                                source,
                            }
                        })?),
                        None => None,
                    },
                }),
                _ => None,
            };
        Ok(Some(Self {
            source,
            chain_pem,
            key_pem,
            acme,
            by_default: false,
        }))
    }

    /// Writes the certificate into `data_dir` where its source keeps it, so this node's
    /// files agree with what it presents (a restart before the database answers starts on
    /// them); returns it parsed, and for ACME the settings to renew with.
    pub fn install(
        &self,
        data_dir: &Path,
    ) -> Result<(CertifiedMaterial, Option<AcmeSettings>), TlsError> {
        let material = match self.source {
            "self-signed" => {
                let material = super::self_signed::store(
                    data_dir,
                    (self.chain_pem.clone(), self.key_pem.to_string()),
                )?;
                super::forget_imported(data_dir)?;
                material
            }
            "imported" => {
                super::import_pem(data_dir, self.chain_pem.as_bytes(), self.key_pem.as_bytes())?
            }
            _ => acme::store_certificate(
                data_dir,
                self.chain_pem.as_bytes(),
                self.key_pem.as_bytes(),
            )?,
        };
        let settings = match &self.acme {
            Some(shared) if self.source == "acme" => {
                let ca_file = match &shared.ca_pem {
                    Some(pem) => Some(acme::store_ca_pem(data_dir, pem.as_bytes())?),
                    None => None,
                };
                Some(AcmeSettings {
                    directory_url: shared.directory_url.clone(),
                    contact_email: shared.contact_email.clone(),
                    ca_file,
                    domains: shared.domains.clone(),
                    staging_directory_url: shared.staging_directory_url.clone(),
                })
            }
            _ => None,
        };
        Ok((material, settings))
    }
}

/// (chain, key) files of a shared source in `data_dir`.
fn files_of(data_dir: &Path, source: &str) -> Option<(PathBuf, PathBuf)> {
    let tls = data_dir.join(TLS_DIR);
    match source {
        "self-signed" => Some((
            tls.join(SELF_SIGNED_CERT_FILE),
            tls.join(SELF_SIGNED_KEY_FILE),
        )),
        "imported" => Some((tls.join(IMPORTED_CERT_FILE), tls.join(IMPORTED_KEY_FILE))),
        "acme" => {
            let dir = acme::acme_dir(data_dir);
            Some((
                dir.join(acme::ACME_CHAIN_FILE),
                dir.join(acme::ACME_KEY_FILE),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::acme::ACME_CA_FILE;

    fn installed_ca_file(data_dir: &Path) -> PathBuf {
        acme::acme_dir(data_dir).join(ACME_CA_FILE)
    }

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_read_from_one_node_installs_on_another_under_its_source() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (chain, key) = pair("mail.example.com");
        let imported =
            super::super::import_pem(a.path(), chain.as_bytes(), key.as_bytes()).unwrap();
        let shared = SharedCertificate::from_data_dir(a.path(), "imported", None)
            .unwrap()
            .unwrap();
        assert_eq!(
            shared.material().unwrap().fingerprint(),
            imported.fingerprint()
        );
        let (installed, settings) = shared.install(b.path()).unwrap();
        assert_eq!(installed.fingerprint(), imported.fingerprint());
        assert!(settings.is_none());
        let loaded = super::super::load_imported(b.path()).unwrap().unwrap();
        assert_eq!(loaded.fingerprint(), imported.fingerprint());

        // A self-signed one replaces the import, as choosing it by hand does.
        let (chain, key) = pair("other.example.com");
        let self_signed = SharedCertificate {
            source: "self-signed",
            chain_pem: chain,
            key_pem: Zeroizing::new(key),
            acme: None,
            by_default: false,
        };
        let (installed, _) = self_signed.install(b.path()).unwrap();
        assert!(super::super::load_imported(b.path()).is_none());
        let (_, loaded) = super::super::prepare(
            &super::super::CertificateSourceSpec::SelfSigned,
            b.path(),
            "other.example.com",
        )
        .unwrap();
        assert_eq!(loaded.fingerprint(), installed.fingerprint());
    }

    #[test]
    fn an_acme_certificate_carries_its_settings_and_ca_to_the_next_node() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (chain, key) = pair("mail.example.com");
        acme::store_certificate(a.path(), chain.as_bytes(), key.as_bytes()).unwrap();
        let (ca, _) = pair("ca.test");
        let ca_file = acme::store_ca_pem(a.path(), ca.as_bytes()).unwrap();
        let settings = AcmeSettings {
            directory_url: "https://acme.test/dir".into(),
            contact_email: Some("hostmaster@example.com".into()),
            ca_file: Some(ca_file),
            domains: vec!["mail.example.com".into()],
            staging_directory_url: None,
        };
        let shared = SharedCertificate::from_data_dir(a.path(), "acme", Some(&settings))
            .unwrap()
            .unwrap();
        assert_eq!(
            shared.acme.as_ref().unwrap().ca_pem.as_deref(),
            Some(ca.as_str())
        );
        let (_, installed) = shared.install(b.path()).unwrap();
        let installed = installed.unwrap();
        assert_eq!(installed.ca_file, Some(installed_ca_file(b.path())));
        assert_eq!(
            std::fs::read_to_string(installed_ca_file(b.path())).unwrap(),
            ca
        );
        assert_eq!(installed.domains, settings.domains);
        assert!(acme::load_acme(b.path()).unwrap().is_ok());
        // Not issued yet, and files: nothing to share.
        let empty = tempfile::tempdir().unwrap();
        assert!(
            SharedCertificate::from_data_dir(empty.path(), "acme", Some(&settings))
                .unwrap()
                .is_none()
        );
        assert!(SharedCertificate::from_data_dir(a.path(), "files", None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_mismatched_pair_is_not_installed() {
        let b = tempfile::tempdir().unwrap();
        let (chain, _) = pair("mail.example.com");
        let (_, other_key) = pair("mail.example.com");
        let shared = SharedCertificate {
            source: "imported",
            chain_pem: chain,
            key_pem: Zeroizing::new(other_key),
            acme: None,
            by_default: false,
        };
        assert!(matches!(
            shared.material(),
            Err(TlsError::KeyMismatch { .. })
        ));
        assert!(shared.install(b.path()).is_err());
        assert!(super::super::load_imported(b.path()).is_none());
    }
}

/// A share in memory for tests: what the database holds, with a switch that makes every
/// call fail (the database out of reach).
#[cfg(test)]
pub(crate) mod memory {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use zeroize::Zeroizing;

    use super::{CertificateShare, SharedCertificate};
    use crate::tls::TlsError;

    #[derive(Default)]
    pub(crate) struct Database {
        pub certificate: Option<SharedCertificate>,
        pub accounts: HashMap<String, Vec<u8>>,
        pub challenges: HashMap<String, String>,
        /// The node holding the ordering task.
        pub ordering: Option<String>,
    }

    #[derive(Default)]
    pub(crate) struct MemoryShare {
        pub database: Mutex<Database>,
        pub down: AtomicBool,
    }

    /// One node's view of a [`MemoryShare`].
    pub(crate) struct Node {
        shared: Arc<MemoryShare>,
        name: String,
    }

    impl MemoryShare {
        pub fn node(self: &Arc<Self>, name: &str) -> Arc<dyn CertificateShare> {
            Arc::new(Node {
                shared: self.clone(),
                name: name.to_owned(),
            })
        }

        pub fn db(&self) -> std::sync::MutexGuard<'_, Database> {
            self.database.lock().unwrap()
        }
    }

    impl Node {
        fn db(&self) -> Result<std::sync::MutexGuard<'_, Database>, TlsError> {
            if self.shared.down.load(Ordering::Relaxed) {
                return Err(TlsError::Shared {
                    reason: "the database is out of reach".into(),
                });
            }
            Ok(self.shared.db())
        }
    }

    impl CertificateShare for Node {
        fn certificate(&self) -> Result<Option<SharedCertificate>, TlsError> {
            Ok(self.db()?.certificate.clone())
        }
        fn publish_certificate(&self, certificate: &SharedCertificate) -> Result<(), TlsError> {
            self.db()?.certificate = Some(certificate.clone());
            Ok(())
        }
        fn account(&self, url: &str) -> Result<Option<Zeroizing<Vec<u8>>>, TlsError> {
            Ok(self.db()?.accounts.get(url).cloned().map(Zeroizing::new))
        }
        fn publish_account(&self, url: &str, credentials: &[u8]) -> Result<(), TlsError> {
            self.db()?
                .accounts
                .insert(url.to_owned(), credentials.to_vec());
            Ok(())
        }
        fn publish_challenge(&self, token: &str, answer: &str) -> Result<(), TlsError> {
            self.db()?
                .challenges
                .insert(token.to_owned(), answer.to_owned());
            Ok(())
        }
        fn challenge(&self, token: &str) -> Result<Option<String>, TlsError> {
            Ok(self.db()?.challenges.get(token).cloned())
        }
        fn withdraw_challenge(&self, token: &str) -> Result<(), TlsError> {
            self.db()?.challenges.remove(token);
            Ok(())
        }
        fn take_ordering(&self, _: Duration) -> Result<bool, TlsError> {
            let mut db = self.db()?;
            match &db.ordering {
                Some(holder) if *holder != self.name => Ok(false),
                _ => {
                    db.ordering = Some(self.name.clone());
                    Ok(true)
                }
            }
        }
        fn release_ordering(&self) -> Result<(), TlsError> {
            let mut db = self.db()?;
            if db.ordering.as_deref() == Some(self.name.as_str()) {
                db.ordering = None;
            }
            Ok(())
        }
    }
}

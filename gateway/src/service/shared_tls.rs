//! The certificate store of the nodes sharing one database ([`crate::tls::CertificateShare`]),
//! on the store's coordination: the certificate and the ACME accounts as shared settings
//! whose secrets are sealed under the nodes' common `retrieval.key` (a dump of the database
//! gives neither the private key nor the account away), the HTTP-01 answers of an order in
//! the clear (they are public by design: the CA fetches them over plain HTTP), and the
//! ordering task as a lease on the database's clock.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Gateway, RetrievalSecret};
use crate::store::Coordination;
use crate::tls::{shared_source, CertificateShare, SharedAcme, SharedCertificate, TlsError};

/// The shared setting holding the certificate every node presents.
const CERTIFICATE: &str = "tls.certificate";
/// Prefix of an ACME account's setting (then 16 hex digits of the directory URL's SHA-256).
const ACCOUNT_PREFIX: &str = "tls.acme_account.";
/// Prefix of an HTTP-01 answer's setting (then the token).
const CHALLENGE_PREFIX: &str = "tls.http01.";
/// The task a node holds while it orders a certificate.
const ORDERING_TASK: &str = "acme-order";

/// The certificate as the database holds it.
#[derive(Serialize, Deserialize)]
struct Record {
    source: String,
    chain_pem: String,
    /// The private key's PEM, sealed ([`RetrievalSecret::seal`]) under [`CERTIFICATE`].
    sealed_key: String,
    acme: Option<SharedAcme>,
    #[serde(default)]
    by_default: bool,
}

struct StoreCertificateShare {
    coordination: Arc<dyn Coordination>,
    secret: Arc<RetrievalSecret>,
    node: Arc<str>,
}

fn shared_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Shared {
        reason: e.to_string(),
    }
}

fn account_setting(directory_url: &str) -> String {
    format!(
        "{ACCOUNT_PREFIX}{}",
        crate::tls::acme::account_id(directory_url)
    )
}

impl CertificateShare for StoreCertificateShare {
    fn certificate(&self) -> Result<Option<SharedCertificate>, TlsError> {
        let Some(text) = self
            .coordination
            .shared_setting(CERTIFICATE)
            .map_err(shared_error)?
        else {
            return Ok(None);
        };
        let record: Record = serde_json::from_str(&text)
            .map_err(|e| shared_error(format!("the stored record is unreadable: {e}")))?;
        let source = shared_source(&record.source).ok_or_else(|| {
            shared_error(format!("unknown certificate source {:?}", record.source))
        })?;
        let key = self
            .secret
            .open(CERTIFICATE, &record.sealed_key)
            .ok_or_else(|| {
                shared_error(
                    "its private key does not open with this node's retrieval.key (copy the \
                     file from another node)",
                )
            })?;
        let key_pem = String::from_utf8(key.to_vec())
            .map_err(|_| shared_error("its private key is not PEM text"))?;
        Ok(Some(SharedCertificate {
            source,
            chain_pem: record.chain_pem,
            key_pem: Zeroizing::new(key_pem),
            acme: record.acme,
            by_default: record.by_default,
        }))
    }

    fn publish_certificate(&self, certificate: &SharedCertificate) -> Result<(), TlsError> {
        let record = Record {
            source: certificate.source.to_owned(),
            chain_pem: certificate.chain_pem.clone(),
            sealed_key: self
                .secret
                .seal(CERTIFICATE, certificate.key_pem.as_bytes()),
            acme: certificate.acme.clone(),
            by_default: certificate.by_default,
        };
        let text = serde_json::to_string(&record).map_err(shared_error)?;
        self.coordination
            .publish_setting(CERTIFICATE, &text)
            .map_err(shared_error)
    }

    fn account(&self, directory_url: &str) -> Result<Option<Zeroizing<Vec<u8>>>, TlsError> {
        let name = account_setting(directory_url);
        let Some(sealed) = self
            .coordination
            .shared_setting(&name)
            .map_err(shared_error)?
        else {
            return Ok(None);
        };
        self.secret.open(&name, &sealed).map(Some).ok_or_else(|| {
            shared_error("the ACME account does not open with this node's retrieval.key")
        })
    }

    fn publish_account(&self, directory_url: &str, credentials: &[u8]) -> Result<(), TlsError> {
        let name = account_setting(directory_url);
        self.coordination
            .publish_setting(&name, &self.secret.seal(&name, credentials))
            .map_err(shared_error)
    }

    fn publish_challenge(&self, token: &str, key_authorization: &str) -> Result<(), TlsError> {
        self.coordination
            .publish_setting(&format!("{CHALLENGE_PREFIX}{token}"), key_authorization)
            .map_err(shared_error)
    }

    fn challenge(&self, token: &str) -> Result<Option<String>, TlsError> {
        self.coordination
            .shared_setting(&format!("{CHALLENGE_PREFIX}{token}"))
            .map_err(shared_error)
    }

    fn withdraw_challenge(&self, token: &str) -> Result<(), TlsError> {
        self.coordination
            .withdraw_setting(&format!("{CHALLENGE_PREFIX}{token}"))
            .map_err(shared_error)
    }

    fn take_ordering(&self, ttl: Duration) -> Result<bool, TlsError> {
        self.coordination
            .take_task(ORDERING_TASK, &self.node, ttl)
            .map_err(shared_error)
    }

    fn release_ordering(&self) -> Result<(), TlsError> {
        self.coordination
            .release_task(ORDERING_TASK, &self.node)
            .map_err(shared_error)
    }
}

impl Gateway {
    /// What the certificate manager shares with the other nodes of this store; `None` for
    /// a store nobody shares.
    pub fn certificate_share(&self) -> Option<Arc<dyn CertificateShare>> {
        let coordination = self.store.coordination();
        if !coordination.is_shared() {
            return None;
        }
        Some(Arc::new(StoreCertificateShare {
            coordination: coordination.clone(),
            secret: self.retrieval.clone(),
            node: super::pickup::node_name(),
        }))
    }
}

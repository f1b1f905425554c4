//! The one place listeners get their certificate from, so it can be replaced while they run.

use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::material::CertifiedMaterial;

/// Serves the current certificate to every handshake, whatever name the client asked for
/// (the gateway has one host name; clients connecting by IP send no SNI at all). Swapping
/// affects full handshakes that start afterwards; established connections, and clients
/// resuming a session negotiated before the swap, keep the certificate they authenticated.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<CertifiedMaterial>,
}

impl CertResolver {
    pub fn new(material: CertifiedMaterial) -> Self {
        Self {
            current: RwLock::new(material),
        }
    }

    /// Replaces the certificate for all later handshakes, e.g. after an ACME renewal.
    pub fn swap(&self, new: CertifiedMaterial) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        tracing::info!(
            old_sha256 = current.fingerprint(),
            new_sha256 = new.fingerprint(),
            "TLS certificate replaced"
        );
        *current = new;
    }

    pub fn current(&self) -> CertifiedMaterial {
        // Poisoning cannot leave a half-written value (swap only assigns), so ignore it.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .certified_key(),
        ))
    }
}

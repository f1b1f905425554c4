//! TLS material for a run: one self-signed certificate for the gateway host and the upstream
//! provider (it names both; turmoil resolves the host name `upstream`), made once per
//! process (key generation is slow and its randomness is not part of any trace), and the
//! client configuration that trusts exactly it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use gateway::tls::{CertResolver, CertifiedMaterial};
use rustls::pki_types::ServerName;
use test_support::pki::{self, Leaf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name the clients expect in the gateway's certificate (the gateway expects the
/// upstream's host name, [`crate::hosts::upstream::NAME`]).
pub const HOST_NAME: &str = "gateway.sim";

struct Material {
    server: CertifiedMaterial,
    client: Arc<rustls::ClientConfig>,
}

fn material() -> &'static Material {
    static MATERIAL: OnceLock<Material> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        // rcgen's default validity (1975 to 4096) covers the real clock that rustls reads.
        let cert = Leaf::names(&[HOST_NAME, crate::hosts::upstream::NAME])
            .self_signed()
            .expect("rcgen makes a certificate for a plain DNS name");
        let server = gateway::tls::parse_pem(
            cert.chain_pem().as_bytes(),
            cert.key_pem().as_bytes(),
            Path::new("sim.crt"),
            Path::new("sim.key"),
        )
        .expect("the gateway accepts rcgen's certificate");
        let client = pki::client_config(cert.cert_pem().as_bytes())
            .expect("a self-signed certificate is a valid root");
        // One configuration serves every run in the process: a session cache in it would
        // carry tickets from one run into the next and make runs depend on their order.
        let mut client = client;
        client.resumption = rustls::client::Resumption::disabled();
        Material {
            server,
            client: Arc::new(client),
        }
    })
}

/// The gateway's acceptor.
pub fn acceptor() -> TlsAcceptor {
    gateway::tls::acceptor(Arc::new(CertResolver::new(material().server.clone())))
}

/// A client connector trusting the gateway's certificate.
pub fn connector() -> TlsConnector {
    TlsConnector::from(material().client.clone())
}

/// The server name the clients verify.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(HOST_NAME).expect("a valid DNS name")
}

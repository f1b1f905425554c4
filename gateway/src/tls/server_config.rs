//! rustls server configuration shared by every TLS listener (SMTP, POP3, console).
//!
//! # Session resumption
//!
//! TLS 1.3 clients resume with stateless tickets from rustls' ring `Ticketer`: ChaCha20-
//! Poly1305 under a random key held only in memory, replaced every 6 hours; the previous
//! key still opens tickets for the next 6, so a ticket works for 6 to 12 hours and tickets
//! advertise a 12-hour lifetime. No ticket key is ever written to disk: a restart makes
//! every outstanding ticket a full handshake, which is the price of not having a long-lived
//! secret to protect. rustls checks no ticket age itself; after a long idle spell the first
//! rotation only demotes the key, so an older ticket may still open. Clients drop tickets
//! past their lifetime (RFC 8446 4.6.1), and resumption is `psk_dhe_ke` only, so every
//! resumed connection still runs a fresh key exchange (forward secrecy).
//!
//! Each call to [`server_config`] makes its own ticket key and session cache: the SMTP
//! listeners (25, 587, 465) share one, POP3 (110, 995) another, the console a third, so a
//! session from one protocol cannot be resumed on another.
//!
//! A certificate swap ([`CertResolver::swap`]) does not end resumption: a resumed session
//! authenticates by the secret of the handshake that created it, so the client keeps the
//! identity it verified then (the old certificate) until its ticket expires. That is not a
//! weakness: the certificate's key plays no part in resumption, so someone holding a
//! replaced (even compromised) key gains nothing from tickets; only sessions that were
//! already established with the server continue.

use std::sync::Arc;

use rustls::server::ServerSessionMemoryCache;
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, SupportedProtocolVersion};
use tokio_rustls::TlsAcceptor;

use super::resolver::CertResolver;

/// TLS 1.3 and 1.2 only: older versions are insecure (RFC 8996). rustls cannot speak them
/// anyway; listing the versions here keeps the policy visible and testable.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// TLS 1.3 tickets sent after each handshake. A client that reconnects one connection at a
/// time (the POP3 archiver, an MTA's queue runner) uses one ticket and gets a new one each
/// time, so one is enough. Stateless tickets are not single-use on our side: OpenSSL-based
/// clients that resume parallel connections from one stored session (Postfix's session
/// cache) resume them all; only clients that take each ticket once (rustls) do a full
/// handshake for a second parallel connection. rustls' default of two would cost each
/// handshake another ticket encryption and record (no difference measurable in
/// `tls_bench` on a shared machine).
pub const TLS13_TICKETS: usize = 1;

/// Sessions remembered for TLS 1.2 clients that resume by session id rather than a ticket
/// (TLS 1.3 resumption never uses this cache once a ticketer is set). Entries are a few
/// hundred bytes; the cache evicts when full, so this bounds its memory per listener group.
pub const SESSION_CACHE_ENTRIES: usize = 256;

/// Server configuration with the ring provider and no client authentication, serving
/// whatever `resolver` currently holds, with its own ticket key and session cache (see the
/// module docs). Callers needing ALPN (the console) clone the config and set
/// `alpn_protocols`; a clone shares the ticket key.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        // Only fails if the provider offers no cipher suite for these versions; the ring
        // default provider offers several for both, so this is a build-time fact.
        .expect("ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // The provider lists its suites strongest first (AES-256-GCM, then AES-128-GCM, then
    // ChaCha20-Poly1305); a client's order must not talk the server down that list, and
    // TLS scanners flag a server without its own cipher order.
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    // Fails only if the system's random source does; a gateway without one cannot do TLS
    // at all, so it goes without resumption rather than refusing to start.
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        Err(e) => tracing::error!(error = %e, "no TLS session tickets: cannot make a ticket key"),
    }
    config.send_tls13_tickets = TLS13_TICKETS;
    Arc::new(config)
}

/// A tokio acceptor over [`server_config`].
pub fn acceptor(resolver: Arc<CertResolver>) -> TlsAcceptor {
    TlsAcceptor::from(server_config(resolver))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::describe_connection;
    use crate::tls::{load_or_create_self_signed, CertifiedMaterial};
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::ClientConfig;
    use rustls::{HandshakeKind, ProtocolVersion, ServerConnection};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    const HOST: &str = "mail.example.com";

    fn material(host: &str) -> (tempfile::TempDir, CertifiedMaterial) {
        let dir = tempfile::tempdir().unwrap();
        let m = load_or_create_self_signed(dir.path(), host).unwrap();
        (dir, m)
    }

    fn client(
        trusted: &[&CertifiedMaterial],
        versions: &[&'static SupportedProtocolVersion],
    ) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for m in trusted {
            roots.add(m.chain()[0].clone()).unwrap();
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// One connection: the client sends "ping", the server answers "pong" (after its
    /// tickets, so the client has them when this returns). Returns the server's description
    /// and the leaf certificate the client saw.
    async fn exchange(
        acceptor: &TlsAcceptor,
        connector: &TlsConnector,
    ) -> (Option<String>, CertificateDer<'static>) {
        let (description, leaf, _) = exchange_kind(acceptor, connector).await;
        (description, leaf)
    }

    /// [`exchange`], also returning how the client's handshake went.
    async fn exchange_kind(
        acceptor: &TlsAcceptor,
        connector: &TlsConnector,
    ) -> (Option<String>, CertificateDer<'static>, HandshakeKind) {
        let (client_io, server_io) = tokio::io::duplex(16 * 1024);
        let acceptor = acceptor.clone();
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.unwrap();
            let description = describe_connection(tls.get_ref().1);
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            tls.write_all(b"pong").await.unwrap();
            tls.flush().await.unwrap();
            description
        });
        let name = ServerName::try_from(HOST).unwrap();
        let mut tls = connector.connect(name, client_io).await.unwrap();
        tls.write_all(b"ping").await.unwrap();
        tls.flush().await.unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let kind = tls.get_ref().1.handshake_kind().unwrap();
        (server.await.unwrap(), leaf, kind)
    }

    #[tokio::test]
    async fn handshake_with_trusting_client() {
        let (_dir, m) = material(HOST);
        let acceptor = acceptor(Arc::new(CertResolver::new(m.clone())));

        let (description, leaf) = exchange(&acceptor, &client(&[&m], &[&TLS13])).await;
        assert_eq!(
            description.as_deref(),
            Some("TLSv1.3 cipher TLS13_AES_256_GCM_SHA384")
        );
        assert_eq!(leaf, m.chain()[0]);

        let (description, _) = exchange(&acceptor, &client(&[&m], &[&TLS12])).await;
        let description = description.unwrap();
        assert!(
            description.starts_with("TLSv1.2 cipher TLS_ECDHE_ECDSA_WITH_"),
            "{description}"
        );
    }

    #[tokio::test]
    async fn swap_applies_to_new_handshakes_without_new_config() {
        let (_d1, first) = material(HOST);
        let (_d2, second) = material(HOST);
        assert_ne!(first.fingerprint(), second.fingerprint());
        let resolver = Arc::new(CertResolver::new(first.clone()));
        let acceptor = acceptor(Arc::clone(&resolver));
        // A fresh client each time: a client with a cached session would resume it, and a
        // resumed session carries the original certificate (see the test below).
        let connector = || client(&[&first, &second], PROTOCOL_VERSIONS);

        let (_, leaf) = exchange(&acceptor, &connector()).await;
        assert_eq!(leaf, first.chain()[0]);

        resolver.swap(second.clone());
        assert_eq!(resolver.current().fingerprint(), second.fingerprint());
        let (_, leaf) = exchange(&acceptor, &connector()).await;
        assert_eq!(leaf, second.chain()[0]);
    }

    #[tokio::test]
    async fn a_client_with_a_stored_session_resumes_it() {
        let (_dir, m) = material(HOST);
        let acceptor = acceptor(Arc::new(CertResolver::new(m.clone())));
        for version in [&TLS13, &TLS12] {
            // rustls clients keep sessions in memory by default.
            let connector = client(&[&m], &[version]);
            let (_, _, kind) = exchange_kind(&acceptor, &connector).await;
            assert_eq!(kind, HandshakeKind::Full, "{version:?}");
            for _ in 0..3 {
                let (description, leaf, kind) = exchange_kind(&acceptor, &connector).await;
                assert_eq!(kind, HandshakeKind::Resumed, "{version:?}");
                assert_eq!(leaf, m.chain()[0]);
                assert!(description.is_some());
            }
            // Without a stored session, a full handshake.
            let (_, _, kind) = exchange_kind(&acceptor, &client(&[&m], &[version])).await;
            assert_eq!(kind, HandshakeKind::Full, "{version:?}");
        }
    }

    #[test]
    fn tickets_are_stateless_with_the_documented_lifetime() {
        let (_dir, m) = material(HOST);
        let config = server_config(Arc::new(CertResolver::new(m)));
        assert!(config.ticketer.enabled());
        // 12 hours, as the module docs say (6-hour key rotation, previous key kept).
        assert_eq!(config.ticketer.lifetime(), 12 * 60 * 60);
        assert_eq!(config.send_tls13_tickets, TLS13_TICKETS);
    }

    /// SMTP and POP3 build their configurations separately: a session from one is not
    /// resumed on the other, although both serve the same certificate.
    #[tokio::test]
    async fn separate_configs_do_not_resume_each_others_sessions() {
        let (_dir, m) = material(HOST);
        let resolver = Arc::new(CertResolver::new(m.clone()));
        let smtp = acceptor(Arc::clone(&resolver));
        let pop3 = acceptor(resolver);
        let connector = client(&[&m], PROTOCOL_VERSIONS);
        let (_, _, kind) = exchange_kind(&smtp, &connector).await;
        assert_eq!(kind, HandshakeKind::Full);
        let (_, _, kind) = exchange_kind(&pop3, &connector).await;
        assert_eq!(kind, HandshakeKind::Full);
        let (_, _, kind) = exchange_kind(&pop3, &connector).await;
        assert_eq!(kind, HandshakeKind::Resumed);
    }

    /// After a swap, a client resuming an earlier session keeps the certificate it verified
    /// then (resumption authenticates by that session's secret, not by the certificate's
    /// key); a client without a session gets the new certificate.
    #[tokio::test]
    async fn a_resumed_session_keeps_the_certificate_it_verified_before_a_swap() {
        let (_d1, first) = material(HOST);
        let (_d2, second) = material(HOST);
        let resolver = Arc::new(CertResolver::new(first.clone()));
        let acceptor = acceptor(Arc::clone(&resolver));
        let connector = client(&[&first, &second], &[&TLS13]);
        let (_, leaf, kind) = exchange_kind(&acceptor, &connector).await;
        assert_eq!(
            (leaf, kind),
            (first.chain()[0].clone(), HandshakeKind::Full)
        );

        resolver.swap(second.clone());
        let (_, leaf, kind) = exchange_kind(&acceptor, &connector).await;
        assert_eq!(
            (leaf, kind),
            (first.chain()[0].clone(), HandshakeKind::Resumed)
        );
        let fresh = client(&[&first, &second], &[&TLS13]);
        let (_, leaf, kind) = exchange_kind(&acceptor, &fresh).await;
        assert_eq!(
            (leaf, kind),
            (second.chain()[0].clone(), HandshakeKind::Full)
        );
    }

    /// A TLS 1.2 client that prefers ChaCha20 still gets the server's first choice.
    #[tokio::test]
    async fn server_cipher_order_wins_over_the_clients() {
        use rustls::crypto::ring::cipher_suite;
        let (_dir, m) = material(HOST);
        let config = server_config(Arc::new(CertResolver::new(m.clone())));
        assert!(config.ignore_client_order);
        let acceptor = TlsAcceptor::from(config);

        let mut roots = rustls::RootCertStore::empty();
        roots.add(m.chain()[0].clone()).unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ];
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (description, _) = exchange(&acceptor, &TlsConnector::from(Arc::new(client))).await;
        assert_eq!(
            description.as_deref(),
            Some("TLSv1.2 cipher TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
        );
    }

    #[test]
    fn only_tls12_and_tls13_are_enabled() {
        let versions: Vec<_> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
        assert_eq!(
            versions,
            [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2]
        );
    }

    #[test]
    fn tls11_client_hello_is_refused() {
        let (_dir, m) = material(HOST);
        let config = server_config(Arc::new(CertResolver::new(m)));
        let mut conn = ServerConnection::new(config).unwrap();
        // A TLS 1.1 ClientHello: legacy_version 3.2, no supported_versions extension,
        // offering TLS_RSA_WITH_AES_128_CBC_SHA and the null compression method.
        let mut body = vec![0x03, 0x02];
        body.extend_from_slice(&[0x42; 32]);
        body.extend_from_slice(&[0x00, 0x00, 0x02, 0x00, 0x2f, 0x01, 0x00]);
        let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
        record.extend_from_slice(&handshake);

        conn.read_tls(&mut &record[..]).unwrap();
        let err = conn.process_new_packets().unwrap_err();
        assert!(matches!(err, rustls::Error::PeerIncompatible(_)), "{err:?}");
        assert!(describe_connection(&conn).is_none());
    }
}

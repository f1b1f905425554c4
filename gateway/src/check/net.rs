//! The one part of the check that touches sockets: connect to a listener, drive its
//! [`Probe`] conversation, run the TLS handshakes, and note the certificate presented.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::probe::{Next, Probe, Protocol};
use crate::tls::CertificateInfo;

/// One listener to check.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `[listen.*]` name.
    pub service: &'static str,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// Sent as SNI and HTTP `Host`.
    pub server_name: ServerName<'static>,
}

/// What a listener showed of its TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSeen {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    pub not_after: SystemTime,
    pub subject: String,
}

/// How one listener answered.
#[derive(Debug, Clone)]
pub struct Answered {
    pub target: Target,
    pub elapsed: Duration,
    /// `Err`: why it is not usable, in a few words.
    pub result: Result<Option<TlsSeen>, String>,
}

/// A client configuration that completes any handshake: the check monitors what a
/// listener presents, it does not decide whether to trust it. Handshake signatures are
/// still verified (the server must hold the key of the certificate it shows).
pub fn any_certificate(alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(crate::tls::PROTOCOL_VERSIONS)
        .expect("ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a handshake takes the stream over.
    Gone,
}

/// Checks one listener, all of it (connect, conversation, handshakes) within `timeout`.
pub async fn check(target: Target, timeout: Duration) -> Answered {
    let started = Instant::now();
    let result = match tokio::time::timeout(timeout, converse(&target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs_f64())),
    };
    Answered {
        target,
        elapsed: started.elapsed(),
        result,
    }
}

async fn converse(target: &Target) -> Result<Option<TlsSeen>, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("cannot connect: {}", io_reason(&e)))?;
    let host = match &target.server_name {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => target.addr.ip().to_string(),
    };
    let mut probe = Probe::new(target.protocol, &host);
    let connector = match target.protocol {
        Protocol::Https => any_certificate(&[b"http/1.1"]),
        _ => any_certificate(&[]),
    };
    let mut conn = Conn::Plain(tcp);
    let mut seen = None;
    let mut chunk = vec![0u8; 4096];
    loop {
        match probe.poll().map_err(|e| e.to_string())? {
            Next::Done => return Ok(seen),
            Next::Send(bytes) => {
                let written = match &mut conn {
                    Conn::Plain(s) => s.write_all(&bytes).await,
                    Conn::Tls(s) => s.write_all(&bytes).await,
                    Conn::Gone => return Err("connection lost".into()),
                };
                written.map_err(|e| format!("cannot send: {}", io_reason(&e)))?;
            }
            Next::StartTls => {
                let Conn::Plain(tcp) = std::mem::replace(&mut conn, Conn::Gone) else {
                    return Err("TLS requested twice".into());
                };
                let tls = connector
                    .connect(target.server_name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                seen = Some(tls_seen(tls.get_ref().1)?);
                conn = Conn::Tls(Box::new(tls));
            }
            Next::Read => {
                let read = match &mut conn {
                    Conn::Plain(s) => s.read(&mut chunk).await,
                    Conn::Tls(s) => s.read(&mut chunk).await,
                    Conn::Gone => return Err("connection lost".into()),
                };
                match read {
                    Ok(0) => return Err(probe.closed().to_string()),
                    Ok(n) => probe.received(&chunk[..n]).map_err(|e| e.to_string())?,
                    Err(e) => return Err(format!("cannot read: {}", io_reason(&e))),
                }
            }
        }
    }
}

fn tls_seen(connection: &rustls::ClientConnection) -> Result<TlsSeen, String> {
    let leaf = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("no certificate presented")?;
    let info = CertificateInfo::from_leaf_der(leaf.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let version = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_owned(),
    };
    Ok(TlsSeen {
        version,
        not_after: info.not_after,
        subject: info.subject,
    })
}

/// An I/O error without the `(os error N)` tail.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_lowercase(),
        None => text,
    }
}

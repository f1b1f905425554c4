//! TLS to the database: rustls (the gateway's ring provider) under tokio-postgres, verifying
//! the server's certificate and name against the roots of the caller's `ClientConfig`.
//!
//! Our own small connector rather than tokio-postgres-rustls, which would bring a second
//! version of x509-cert into the tree. It offers SCRAM channel binding
//! (`tls-server-end-point`, RFC 5929) for certificates signed with RSA PKCS#1 or ECDSA over
//! SHA-1/SHA-256/384/512, as PostgreSQL computes it; for others (Ed25519, RSA-PSS) it offers
//! none, and the password exchange still runs inside the verified TLS session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ring::digest;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Makes a verified TLS connection for each host of the connection settings.
#[derive(Clone)]
pub(super) struct Rustls(pub(super) Arc<rustls::ClientConfig>);

pub(super) struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

pub(super) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> MakeTlsConnect<S> for Rustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = Error;

    /// `host` is the name (or address) the settings connect to; the certificate must be
    /// issued for it.
    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, Error> {
        Ok(Connect {
            config: self.0.clone(),
            name: ServerName::try_from(host)?.to_owned(),
        })
    }
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Stream<S>, Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { Ok(Stream(connector.connect(self.name, stream).await?)) })
    }
}

/// The hash RFC 5929 takes for a certificate's signature algorithm (MD5 and SHA-1 become
/// SHA-256), for the algorithms whose hash PostgreSQL can tell; `None` for others.
fn end_point_hash(signature_algorithm: &str) -> Option<&'static digest::Algorithm> {
    match signature_algorithm {
        // md5/sha1/sha256 WithRSAEncryption, ecdsa-with-SHA1/SHA256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => Some(&digest::SHA256),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Some(&digest::SHA384),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Some(&digest::SHA512),
        _ => None,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let Some(certificate) = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
        else {
            return ChannelBinding::none();
        };
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate) else {
            return ChannelBinding::none();
        };
        match end_point_hash(&parsed.signature_algorithm.algorithm.to_id_string()) {
            Some(hash) => ChannelBinding::tls_server_end_point(
                digest::digest(hash, certificate).as_ref().to_vec(),
            ),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

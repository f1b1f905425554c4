//! Errors of the TLS-material module. Every variant about a file names the file, because the
//! admin who reads the message has to know which one to fix.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("TLS file {path} does not exist")]
    NotFound { path: PathBuf },

    #[error("cannot read TLS file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write TLS file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },

    #[error("{path} is not valid PEM: {source}")]
    InvalidPem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },

    #[error("{path} contains no PEM certificate (expected \"BEGIN CERTIFICATE\")")]
    NoCertificate { path: PathBuf },

    #[error("the certificate in {path} cannot be parsed: {reason}")]
    InvalidCertificate { path: PathBuf, reason: String },

    #[error(
        "{path} contains no private key (expected PKCS#8 \"BEGIN PRIVATE KEY\", \
         PKCS#1 \"BEGIN RSA PRIVATE KEY\" or SEC1 \"BEGIN EC PRIVATE KEY\")"
    )]
    NoPrivateKey { path: PathBuf },

    #[error("the private key in {path} is not supported: {reason}")]
    UnsupportedKey { path: PathBuf, reason: String },

    #[error("the private key in {key} does not belong to the certificate in {chain}")]
    KeyMismatch { chain: PathBuf, key: PathBuf },

    #[error("cannot generate a self-signed certificate for {host_name:?}: {reason}")]
    Generate { host_name: String, reason: String },

    /// The certificate, account or challenge answers the nodes of a shared store keep in
    /// the database cannot be read or written.
    #[error("the certificate the nodes share: {reason}")]
    Shared { reason: String },

    #[error("the PKCS#12 password is wrong")]
    Pkcs12Password,

    #[error("the PKCS#12 file cannot be read: {reason}")]
    Pkcs12 { reason: String },
}

//! TLS certificate material for every listener.

mod error;
mod material;
mod pem_files;
mod self_signed;

pub use error::TlsError;
pub use material::{CertificateInfo, CertifiedMaterial};
pub use pem_files::{load_pem_files, parse_pem};
pub use self_signed::{
    load_or_create_self_signed, SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE, TLS_DIR,
};

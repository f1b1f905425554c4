//! TLS certificate material for every listener.

mod error;
mod material;
mod pem_files;

pub use error::TlsError;
pub use material::{CertificateInfo, CertifiedMaterial};
pub use pem_files::{load_pem_files, parse_pem};

/// Why a cryptographic operation failed. Messages never include key material.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The password did not open the sealed private key.
    #[error("wrong mailbox password")]
    WrongPassword,
    /// Ciphertext failed authentication: tampered, truncated, reordered or moved.
    #[error("message ciphertext failed authentication (damaged or tampered)")]
    Tampered,
    /// Stored key material is malformed or of a version this build does not know.
    #[error("unsupported or malformed key material: {0}")]
    Malformed(&'static str),
    /// The key-derivation parameters are outside what this build accepts.
    #[error("key-derivation parameters out of range: {0}")]
    KdfParams(String),
    /// The stored key-derivation parameters would cost more than this build allows per
    /// attempt (a damaged or tampered record); refused before deriving anything.
    #[error("key-derivation parameters above the accepted maximum: {0:?}")]
    KdfTooCostly(super::KdfParams),
    /// Sealing failed (an HPKE context was used beyond its message limit).
    #[error("encryption failed")]
    Seal,
}

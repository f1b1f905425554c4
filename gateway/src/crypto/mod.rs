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

mod error;
mod keys;
mod message;
mod password;
mod password_hash;
mod secret;
mod serde_hex;
mod wiping_buffer;

pub use error::CryptoError;
pub use keys::{KdfParams, SealedKeyPair, UnsealedKey, SUITE};
pub use message::{
    Envelope, MessageId, MessageOpener, MessageSealer, SealedHeader, CHUNK_SIZE, TAG_SIZE,
};
pub use password::{AdminPassword, MailboxPassword};
pub use password_hash::{
    hash_password, verify_password, INITIAL_ADMIN_PASSWORD, INITIAL_ADMIN_PASSWORD_HASH,
};
pub use secret::Secret;
#[cfg(test)]
pub(crate) use wiping_buffer::contains as test_contains;
pub use wiping_buffer::{decode_secret, WipingBuffer};

/// Fills `buf` from the OS CSPRNG. Failure of the OS generator leaves nothing safe to do, so
/// it aborts the operation with a panic rather than continuing with predictable bytes.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// Fills `buf` for an identifier (mailbox, message, SMTP session): from the OS CSPRNG, so ids
/// cannot be guessed, except where a test-support build seeded `seeded_ids` on this thread.
/// Keys, salts, nonces and passwords always come from [`fill_random`].
pub fn fill_random_id(buf: &mut [u8]) {
    #[cfg(feature = "test-support")]
    if seeded_ids::fill(buf) {
        return;
    }
    fill_random(buf);
}

/// Ids as a function of a seed, for the deterministic simulation: ids are keys in the store,
/// so their order shapes redb's pages and, through them, what a simulated crash tears. The
/// simulation runs all its hosts on one thread, hence a thread-local generator.
#[cfg(feature = "test-support")]
pub mod seeded_ids {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Ids made on this thread follow `seed` from now on; `None` returns to the OS generator.
    pub fn set(seed: Option<u64>) {
        STATE.with(|state| state.set(seed));
    }

    /// SplitMix64; predictable on purpose, never used without a seed.
    pub(super) fn fill(buf: &mut [u8]) -> bool {
        STATE.with(|state| {
            let Some(mut x) = state.get() else {
                return false;
            };
            for piece in buf.chunks_mut(8) {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                piece.copy_from_slice(&z.to_le_bytes()[..piece.len()]);
            }
            state.set(Some(x));
            true
        })
    }
}

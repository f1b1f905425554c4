//! Argon2id password hashes as PHC strings, for the administrator's password. (Mailbox
//! passwords are never hashed: they seal a key instead, see [`super::SealedKeyPair`].)

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, Params, PasswordHasher, PasswordVerifier};

use super::{CryptoError, KdfParams};

/// The administrator's password on a fresh install: good only to set a new one.
pub const INITIAL_ADMIN_PASSWORD: &str = "admin";

/// The Argon2id hash of [`INITIAL_ADMIN_PASSWORD`] a new store starts with (default
/// parameters, fixed salt). Precomputed so that opening a store costs no derivation; the
/// password is public anyway, so a shared salt gives nothing away.
pub const INITIAL_ADMIN_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Z2F0ZXdheS1pbml0aWFsIQ$2P89qdVvuNVziWDV1PdSWw6JZDRL4KRmbK0vIdoYBU0";

const SALT_BYTES: usize = 16;

/// Hashes `password` with fresh salt under `kdf`, as a PHC string
/// (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
pub fn hash_password(password: &[u8], kdf: KdfParams) -> Result<String, CryptoError> {
    let mut salt = [0u8; SALT_BYTES];
    crate::random::fill_random(&mut salt);
    let argon2 = kdf.argon2()?;
    let hash = super::kdf_gate::run(|| argon2.hash_password_with_salt(password, &salt))
        .map_err(|e| CryptoError::KdfParams(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `stored`. A malformed hash, another algorithm
/// than Argon2id, or parameters above the caps of [`KdfParams::check`] (a damaged or
/// tampered record) are errors, found before anything is derived.
pub fn verify_password(password: &[u8], stored: &str) -> Result<bool, CryptoError> {
    let hash = PasswordHash::new(stored).map_err(|_| CryptoError::Malformed("password hash"))?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(CryptoError::Malformed("password hash algorithm"));
    }
    let params =
        Params::try_from(&hash).map_err(|_| CryptoError::Malformed("password hash parameters"))?;
    KdfParams {
        m_cost_kib: params.m_cost(),
        t_cost: params.t_cost(),
        p_cost: params.p_cost(),
    }
    .check()?;
    match super::kdf_gate::run(|| Argon2::default().verify_password(password, &hash)) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(CryptoError::KdfParams(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_hash_is_argon2id_of_admin_and_nothing_else() {
        assert!(verify_password(
            INITIAL_ADMIN_PASSWORD.as_bytes(),
            INITIAL_ADMIN_PASSWORD_HASH
        )
        .unwrap());
        for other in ["Admin", "admin ", "", "password"] {
            assert!(!verify_password(other.as_bytes(), INITIAL_ADMIN_PASSWORD_HASH).unwrap());
        }
    }

    #[test]
    fn hashes_verify_their_password_only_and_are_salted() {
        let kdf = KdfParams::insecure_for_tests();
        let first = hash_password(b"secret", kdf).unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{first}");
        assert!(!first.contains("secret"));
        assert!(verify_password(b"secret", &first).unwrap());
        assert!(!verify_password(b"secret!", &first).unwrap());
        assert_ne!(hash_password(b"secret", kdf).unwrap(), first, "fresh salt");
    }

    #[test]
    fn damaged_or_costly_hashes_are_errors_before_any_derivation() {
        let costly = "$argon2id$v=19$m=4194304,t=10,p=1$Z2F0ZXdheS1pbml0aWFsIQ$2P89qdVvuNVziWDV1PdSWw6JZDRL4KRmbK0vIdoYBU0";
        assert!(matches!(
            verify_password(b"admin", costly),
            Err(CryptoError::KdfTooCostly(_))
        ));
        let argon2i = INITIAL_ADMIN_PASSWORD_HASH.replace("argon2id", "argon2i");
        assert!(verify_password(b"admin", &argon2i).is_err());
        for bad in ["", "admin", "$argon2id$", "$argon2id$v=19$m=x$$"] {
            assert!(verify_password(b"admin", bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_stored_text_is_an_answer_not_a_panic(stored in "\\PC{0,120}") {
            let _ = verify_password(b"admin", &stored);
        }
    }
}

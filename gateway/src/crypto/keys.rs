//! Per-mailbox HPKE key pairs, with the private key sealed under the mailbox password.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use hpke::{Deserializable, Kem as _, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CryptoError, MailboxPassword};
use crate::mailbox::MailboxId;

pub(super) type Kem = hpke::kem::X25519HkdfSha256;
pub(super) type Kdf = hpke::kdf::HkdfSha256;
pub(super) type Aead256 = hpke::aead::AesGcm256;

/// The HPKE suite of format version 1, recorded in every sealed key pair.
pub const SUITE: &str = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM";
const FORMAT_VERSION: u8 = 1;
const SALT_BYTES: usize = 16;
const NONCE_BYTES: usize = 24;
const KEY_SEAL_LABEL: &[u8] = b"gateway/sealed-key/v1\0";

/// Upper bounds on stored Argon2 parameters, close to the defaults: a damaged or hostile
/// record must not turn each login attempt into a gigabyte or a second of work. Memory and
/// passes are also bounded together, since the time one derivation takes grows with their
/// product: 64 MiB × 2 passes or 32 MiB × 4, at most (the defaults use 38 MiB-passes).
pub const MAX_M_COST_KIB: u32 = 64 * 1024;
pub const MAX_T_COST: u32 = 4;
pub const MAX_P_COST: u32 = 4;
pub const MAX_M_COST_KIB_TIMES_T_COST: u64 = 128 * 1024;

/// Argon2id parameters, stored beside each sealed key so they can be raised later without
/// breaking existing mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// OWASP's Argon2id baseline (19 MiB, 2 passes, 1 lane). The passwords carry 160 random
    /// bits, so the KDF guards against nothing weaker than the password; more memory would
    /// only cost the gateway's 512 MB budget under concurrent logins.
    fn default() -> Self {
        Self {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Parameters small enough for fast tests; never used by the service.
    #[cfg(any(test, feature = "test-support"))]
    pub fn insecure_for_tests() -> Self {
        Self {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Refuses parameters above the caps, before anything is derived with them.
    pub fn check(&self) -> Result<(), CryptoError> {
        let within = self.m_cost_kib <= MAX_M_COST_KIB
            && self.t_cost <= MAX_T_COST
            && self.p_cost <= MAX_P_COST
            && u64::from(self.m_cost_kib) * u64::from(self.t_cost) <= MAX_M_COST_KIB_TIMES_T_COST;
        if within {
            Ok(())
        } else {
            Err(CryptoError::KdfTooCostly(*self))
        }
    }

    pub(super) fn argon2(&self) -> Result<Argon2<'static>, CryptoError> {
        self.check()?;
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| CryptoError::KdfParams(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    fn derive(
        &self,
        password: &MailboxPassword,
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        let argon2 = self.argon2()?;
        #[cfg(test)]
        tests::DERIVATIONS.with(|n| n.set(n.get() + 1));
        super::kdf_gate::run(|| {
            argon2.hash_password_into(password.kdf_input(), salt, key.as_mut())
        })
        .map_err(|e| CryptoError::KdfParams(e.to_string()))?;
        Ok(key)
    }
}

/// A mailbox key pair as stored: public key in clear, private key sealed.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealedKeyPair {
    pub format: u8,
    pub suite: String,
    #[serde(with = "super::serde_hex")]
    pub public_key: Vec<u8>,
    pub kdf: KdfParams,
    #[serde(with = "super::serde_hex")]
    pub salt: Vec<u8>,
    #[serde(with = "super::serde_hex")]
    pub nonce: Vec<u8>,
    #[serde(with = "super::serde_hex")]
    pub sealed_private_key: Vec<u8>,
}

impl std::fmt::Debug for SealedKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKeyPair")
            .field("format", &self.format)
            .field("suite", &self.suite)
            .field("kdf", &self.kdf)
            .finish_non_exhaustive()
    }
}

/// A mailbox's private key, opened for one session. Zeroized on drop (x25519-dalek's
/// `StaticSecret` wipes itself), as are the epoch secrets it recovered.
pub struct UnsealedKey {
    pub(super) private_key: <Kem as hpke::Kem>::PrivateKey,
    pub(super) mailbox: MailboxId,
    /// Format 2 epochs this key opened lately, so a session pays one DH per epoch.
    pub(super) epochs: super::epoch::OpenedEpochs,
}

impl std::fmt::Debug for UnsealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UnsealedKey({}, <redacted>)", self.mailbox)
    }
}

impl UnsealedKey {
    pub fn mailbox(&self) -> &MailboxId {
        &self.mailbox
    }

    /// Whether opening the message `header` heads needs no key agreement: format 2, in an
    /// epoch this key opened lately. Otherwise [`super::MessageOpener::new`] runs an X25519
    /// (format 1: for every message; format 2: once per epoch).
    pub fn opens_without_key_agreement(&self, header: &super::SealedHeader) -> bool {
        header.format == super::MessageFormat::V2 && self.epochs.knows(&header.encapped_key)
    }
}

fn key_seal_aad(mailbox: &MailboxId, public_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(KEY_SEAL_LABEL.len() + 40 + public_key.len());
    aad.extend_from_slice(KEY_SEAL_LABEL);
    aad.extend_from_slice(mailbox.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(public_key);
    aad
}

impl SealedKeyPair {
    /// Generates a key pair for `mailbox` and seals its private key under `password`.
    pub fn generate(
        mailbox: &MailboxId,
        password: &MailboxPassword,
        kdf: KdfParams,
    ) -> Result<Self, CryptoError> {
        let (private_key, public_key) = Kem::gen_keypair();
        let public_key = public_key.to_bytes().to_vec();
        let mut salt = vec![0u8; SALT_BYTES];
        crate::random::fill_random(&mut salt);
        let mut nonce = vec![0u8; NONCE_BYTES];
        crate::random::fill_random(&mut nonce);

        let kek = kdf.derive(password, &salt)?;
        let cipher = XChaCha20Poly1305::new_from_slice(kek.as_ref())
            .map_err(|_| CryptoError::Malformed("key length"))?;
        let mut private_bytes = Zeroizing::new([0u8; 32]);
        private_key.write_exact(private_bytes.as_mut());
        let aad = key_seal_aad(mailbox, &public_key);
        let nonce_array: [u8; NONCE_BYTES] = nonce
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed("nonce length"))?;
        let sealed_private_key = cipher
            .encrypt(
                &nonce_array.into(),
                Payload {
                    msg: private_bytes.as_slice(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok(Self {
            format: FORMAT_VERSION,
            suite: SUITE.to_owned(),
            public_key,
            kdf,
            salt,
            nonce,
            sealed_private_key,
        })
    }

    /// Opens the private key. A wrong password is detected by the seal failing to open.
    pub fn unseal(
        &self,
        mailbox: &MailboxId,
        password: &MailboxPassword,
    ) -> Result<UnsealedKey, CryptoError> {
        self.check_format()?;
        // A tampered record must not choose how much each login attempt costs.
        self.kdf.check()?;
        let kek = self.kdf.derive(password, &self.salt)?;
        let cipher = XChaCha20Poly1305::new_from_slice(kek.as_ref())
            .map_err(|_| CryptoError::Malformed("key length"))?;
        let nonce: [u8; NONCE_BYTES] = self
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed("nonce length"))?;
        let aad = key_seal_aad(mailbox, &self.public_key);
        let opened = Zeroizing::new(
            cipher
                .decrypt(
                    &nonce.into(),
                    Payload {
                        msg: &self.sealed_private_key,
                        aad: &aad,
                    },
                )
                .map_err(|_| CryptoError::WrongPassword)?,
        );
        let private_key = <Kem as hpke::Kem>::PrivateKey::from_bytes(&opened)
            .map_err(|_| CryptoError::Malformed("private key"))?;
        // The stored public key must belong to the private key, or mail sealed to it would be
        // unreadable; catching that here names the real problem.
        if Kem::sk_to_pk(&private_key).to_bytes().as_slice() != self.public_key.as_slice() {
            return Err(CryptoError::Malformed(
                "public key does not match private key",
            ));
        }
        Ok(UnsealedKey {
            private_key,
            mailbox: mailbox.clone(),
            epochs: Default::default(),
        })
    }

    pub(super) fn hpke_public_key(&self) -> Result<<Kem as hpke::Kem>::PublicKey, CryptoError> {
        self.check_format()?;
        <Kem as hpke::Kem>::PublicKey::from_bytes(&self.public_key)
            .map_err(|_| CryptoError::Malformed("public key"))
    }

    fn check_format(&self) -> Result<(), CryptoError> {
        if self.format != FORMAT_VERSION || self.suite != SUITE {
            return Err(CryptoError::Malformed("unknown key format or suite"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    thread_local! {
        /// Argon2 derivations run on this thread.
        pub(super) static DERIVATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn derivations() -> u64 {
        DERIVATIONS.with(|n| n.get())
    }

    #[test]
    fn tampered_record_with_huge_kdf_parameters_is_refused_without_deriving() {
        let mailbox = MailboxId::generate();
        let password = MailboxPassword::generate();
        let sealed =
            SealedKeyPair::generate(&mailbox, &password, KdfParams::insecure_for_tests()).unwrap();
        let hostile = [
            (1024 * 1024, 64, 16), // what the old caps let through
            (MAX_M_COST_KIB + 1, 1, 1),
            (8 * 1024, MAX_T_COST + 1, 1),
            (8 * 1024, 1, MAX_P_COST + 1),
            (MAX_M_COST_KIB, 4, 1), // each within its cap, the product not
        ];
        for (m_cost_kib, t_cost, p_cost) in hostile {
            let mut tampered = sealed.clone();
            tampered.kdf = KdfParams {
                m_cost_kib,
                t_cost,
                p_cost,
            };
            let before = derivations();
            assert_eq!(
                tampered.unseal(&mailbox, &password).unwrap_err(),
                CryptoError::KdfTooCostly(tampered.kdf)
            );
            assert_eq!(derivations(), before, "refused before any derivation");
        }
        let before = derivations();
        assert!(sealed.unseal(&mailbox, &password).is_ok());
        assert_eq!(derivations(), before + 1);
    }

    #[test]
    fn default_parameters_are_within_the_caps() {
        assert_eq!(KdfParams::default().check(), Ok(()));
    }

    proptest! {
        #[test]
        fn accepted_kdf_parameters_never_exceed_the_caps(
            m_cost_kib in prop_oneof![0u32..=256 * 1024, any::<u32>()],
            t_cost in prop_oneof![0u32..=8, any::<u32>()],
            p_cost in prop_oneof![0u32..=8, any::<u32>()],
        ) {
            let params = KdfParams { m_cost_kib, t_cost, p_cost };
            let within = m_cost_kib <= 64 * 1024
                && t_cost <= 4
                && p_cost <= 4
                && u64::from(m_cost_kib) * u64::from(t_cost) <= 128 * 1024;
            prop_assert_eq!(params.check().is_ok(), within);
            if !within {
                static SEALED: std::sync::OnceLock<(MailboxId, MailboxPassword, SealedKeyPair)> =
                    std::sync::OnceLock::new();
                let (mailbox, password, sealed) = SEALED.get_or_init(|| {
                    let mailbox = MailboxId::generate();
                    let password = MailboxPassword::generate();
                    let sealed = SealedKeyPair::generate(
                        &mailbox,
                        &password,
                        KdfParams::insecure_for_tests(),
                    )
                    .unwrap();
                    (mailbox, password, sealed)
                });
                let tampered = SealedKeyPair { kdf: params, ..sealed.clone() };
                let before = derivations();
                prop_assert_eq!(
                    tampered.unseal(mailbox, password).unwrap_err(),
                    CryptoError::KdfTooCostly(params)
                );
                prop_assert_eq!(derivations(), before, "refused before any derivation");
            }
        }
    }

    #[test]
    fn right_password_opens_wrong_password_fails() {
        let mailbox = MailboxId::generate();
        let password = MailboxPassword::generate();
        let sealed =
            SealedKeyPair::generate(&mailbox, &password, KdfParams::insecure_for_tests()).unwrap();
        assert!(sealed.unseal(&mailbox, &password).is_ok());
        let typed = MailboxPassword::from_user_input(&password.reveal_for_display());
        assert!(sealed.unseal(&mailbox, &typed).is_ok());
        let wrong = MailboxPassword::generate();
        assert_eq!(
            sealed.unseal(&mailbox, &wrong).unwrap_err(),
            CryptoError::WrongPassword
        );
    }

    #[test]
    fn sealed_key_is_bound_to_its_mailbox() {
        let mailbox = MailboxId::generate();
        let password = MailboxPassword::generate();
        let sealed =
            SealedKeyPair::generate(&mailbox, &password, KdfParams::insecure_for_tests()).unwrap();
        let other = MailboxId::generate();
        assert_eq!(
            sealed.unseal(&other, &password).unwrap_err(),
            CryptoError::WrongPassword
        );
    }

    #[test]
    fn stored_record_holds_no_password_and_round_trips() {
        let mailbox = MailboxId::generate();
        let password = MailboxPassword::generate();
        let sealed =
            SealedKeyPair::generate(&mailbox, &password, KdfParams::insecure_for_tests()).unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        let shown = password.reveal_for_display();
        assert!(!json.contains(std::str::from_utf8(password.kdf_input()).unwrap()));
        assert!(!json.contains(shown.as_str()));
        let back: SealedKeyPair = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sealed);
        assert!(back.unseal(&mailbox, &password).is_ok());
    }

    #[test]
    fn hostile_kdf_parameters_are_refused() {
        let mailbox = MailboxId::generate();
        let password = MailboxPassword::generate();
        let mut sealed =
            SealedKeyPair::generate(&mailbox, &password, KdfParams::insecure_for_tests()).unwrap();
        sealed.kdf.m_cost_kib = u32::MAX;
        assert!(matches!(
            sealed.unseal(&mailbox, &password),
            Err(CryptoError::KdfTooCostly(_))
        ));
    }

    #[test]
    fn default_parameters_meet_the_floor() {
        let p = KdfParams::default();
        assert!(p.m_cost_kib >= 19 * 1024 && p.t_cost >= 2 && p.p_cost >= 1);
    }
}

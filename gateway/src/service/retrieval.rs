//! The secret that keys the POP3 proxy's one-copy records.
//!
//! The store keeps, per mailbox, a record of every upstream message the proxy copied, so a
//! message left on the upstream is not copied again. An unkeyed hash of (remote user, server,
//! UIDL) would let anyone holding the store file confirm a guess ("did alice@ at this provider
//! fetch through the gateway?") from a staff list. So the record's key is an HMAC-SHA256 under
//! a secret kept outside the store file, in `<data_dir>/retrieval.key`: a copy of the store
//! alone confirms nothing.
//!
//! Losing the file only costs the one-copy memory: the proxy may store a message again, a
//! duplicate in the archive and never a loss.

use std::io::Write;
use std::path::Path;

use ring::{aead, hmac};
use zeroize::Zeroizing;

use super::messages::RetrievalKey;
use super::ServiceError;
use crate::proxy::throttle::AccountNames;

/// File name of the secret inside the data directory.
pub const RETRIEVAL_KEY_FILE: &str = "retrieval.key";

const SECRET_BYTES: usize = 32;
/// Domain separation, so the secret keys nothing else by accident.
const LABEL: &[u8] = b"gateway/retrieved/v1\0";
/// What [`RetrievalSecret::fingerprint`] signs: never a record key's input.
const FINGERPRINT_LABEL: &[u8] = b"gateway/retrieval-key-fingerprint/v1\0";
/// Derives the key [`RetrievalSecret::seal`] uses: the nodes of a shared store already hold
/// this secret alike, and it never leaves them.
const SEAL_LABEL: &[u8] = b"gateway/shared-secrets-seal/v1\0";
/// `seal`'s output: version byte, nonce, ciphertext with its tag.
const SEAL_VERSION: u8 = 1;
/// What [`RetrievalSecret::proxy_account_names`] derives its key from.
const ACCOUNT_NAMES_LABEL: &[u8] = b"gateway/proxy-account-names-key/v1\0";

/// The HMAC key the store's retrieval records are made with. Never printed.
#[derive(Clone)]
pub struct RetrievalSecret(hmac::Key);

impl std::fmt::Debug for RetrievalSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetrievalSecret(<redacted>)")
    }
}

impl RetrievalSecret {
    pub fn from_bytes(bytes: &[u8; SECRET_BYTES]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Reads the secret from the data directory, creating it at the first start: 32 bytes
    /// from the OS CSPRNG, in a file only the owner can read, written in full before it
    /// appears under its name (a crash leaves no half-written secret).
    pub fn load_or_create(data_dir: &Path) -> Result<Self, ServiceError> {
        let path = data_dir.join(RETRIEVAL_KEY_FILE);
        let bad = |problem: String| ServiceError::InvalidInput {
            field: RETRIEVAL_KEY_FILE,
            problem,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let secret: &[u8; SECRET_BYTES] = bytes.as_slice().try_into().map_err(|_| {
                    bad(format!(
                        "{} holds {} bytes, not {SECRET_BYTES}; restore it from a backup, or delete it to start a new one (the proxy may then store a message it copied before once more)",
                        path.display(),
                        bytes.len()
                    ))
                })?;
                super::permissions::tighten(&path, 0o600)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                Ok(Self::from_bytes(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
                crate::random::fill_random(secret.as_mut());
                Self::create(data_dir, &path, &secret)
                    .map_err(|e| bad(format!("cannot create {}: {e}", path.display())))?;
                tracing::info!(path = %path.display(), "created the proxy's retrieval key");
                Ok(Self::from_bytes(&secret))
            }
            Err(e) => Err(bad(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn create(dir: &Path, path: &Path, secret: &[u8; SECRET_BYTES]) -> std::io::Result<()> {
        // tempfile creates the file 0600; it gets its name only once written and synced.
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(secret)?;
        file.as_file().sync_all()?;
        file.persist_noclobber(path).map_err(|e| e.error)?;
        // The name itself must survive a crash, or the next start makes a new secret.
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Names this secret without revealing it (an HMAC of a fixed label under it): nodes of
    /// a shared store compare theirs, since different secrets would each keep a copy of the
    /// same upstream message.
    pub(super) fn fingerprint(&self) -> String {
        let tag = hmac::sign(&self.0, FINGERPRINT_LABEL);
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Seals `secret` (a private key, ACME account credentials) for the shared database, so
    /// a copy of the database alone (a dump, a backup, a replica) does not give it away.
    /// `name` is what it is stored under: bound in as associated data, so one sealed value
    /// cannot be passed off as another. ChaCha20-Poly1305 with a random nonce under a key
    /// derived from this secret; base64url text.
    pub fn seal(&self, name: &str, secret: &[u8]) -> String {
        let mut nonce = [0u8; aead::NONCE_LEN];
        crate::random::fill_random(&mut nonce);
        let key = self.seal_key();
        let mut sealed = Zeroizing::new(secret.to_vec());
        // Only fails for inputs beyond ChaCha20's 256 GiB limit.
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .expect("a secret far below the AEAD's size limit");
        let mut out = Vec::with_capacity(1 + nonce.len() + sealed.len() + aead::MAX_TAG_LEN);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out.extend_from_slice(tag.as_ref());
        data_encoding::BASE64URL_NOPAD.encode(&out)
    }

    /// Opens what [`Self::seal`] made under `name`; `None` when it was made under another
    /// secret or name, or was altered.
    pub fn open(&self, name: &str, sealed: &str) -> Option<Zeroizing<Vec<u8>>> {
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(sealed.as_bytes())
            .ok()?;
        let (&version, rest) = bytes.split_first()?;
        if version != SEAL_VERSION || rest.len() < aead::NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .seal_key()
            .open_in_place(nonce, aead::Aad::from(name.as_bytes()), &mut buffer)
            .ok()?
            .len();
        buffer.truncate(plain);
        Some(buffer)
    }

    fn seal_key(&self) -> aead::LessSafeKey {
        let derived = hmac::sign(&self.0, SEAL_LABEL);
        // HMAC-SHA256 gives exactly ChaCha20-Poly1305's 32 key bytes.
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, derived.as_ref())
            .expect("a 32-byte key");
        aead::LessSafeKey::new(unbound)
    }

    /// The key the proxy's login throttle names remote accounts with in the failure table
    /// the nodes share: derived from this secret (which every node of a store has), never
    /// the secret itself.
    pub(super) fn proxy_account_names(&self) -> AccountNames {
        let derived = hmac::sign(&self.0, ACCOUNT_NAMES_LABEL);
        let mut key = Zeroizing::new([0u8; SECRET_BYTES]);
        key.copy_from_slice(derived.as_ref());
        AccountNames::new(&key)
    }

    /// The key a retrieval record is stored under.
    pub(super) fn record_key(&self, key: &RetrievalKey) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(LABEL);
        context.update(key.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(context.sign().as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_tells_secrets_apart_and_names_the_same_one_alike() {
        let (a, b) = (
            RetrievalSecret::from_bytes(&[1; 32]),
            RetrievalSecret::from_bytes(&[2; 32]),
        );
        assert_eq!(
            a.fingerprint(),
            RetrievalSecret::from_bytes(&[1; 32]).fingerprint()
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 32);
    }

    #[test]
    fn a_sealed_secret_opens_only_under_its_secret_and_name_and_unaltered() {
        let secret = RetrievalSecret::from_bytes(&[7; 32]);
        let sealed = secret.seal("tls.certificate", b"-----BEGIN PRIVATE KEY-----");
        assert!(!sealed.contains("PRIVATE"), "{sealed}");
        assert_eq!(
            secret
                .open("tls.certificate", &sealed)
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"-----BEGIN PRIVATE KEY-----"[..])
        );
        // Random nonces: sealing twice gives different text.
        assert_ne!(
            sealed,
            secret.seal("tls.certificate", b"-----BEGIN PRIVATE KEY-----")
        );
        assert!(
            secret.open("tls.acme_account", &sealed).is_none(),
            "another name"
        );
        assert!(RetrievalSecret::from_bytes(&[8; 32])
            .open("tls.certificate", &sealed)
            .is_none());
        let mut altered = sealed.into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(secret.open("tls.certificate", &altered).is_none());
        assert!(secret.open("tls.certificate", "").is_none());
        assert!(secret.open("tls.certificate", "not base64!").is_none());
    }

    #[test]
    fn the_secret_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let key = RetrievalKey::new("alice", "pop.example:995", "UID-1");
        let first = RetrievalSecret::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(RETRIEVAL_KEY_FILE);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = RetrievalSecret::load_or_create(dir.path()).unwrap();
        assert_eq!(first.record_key(&key), again.record_key(&key));
        let other = RetrievalSecret::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(first.record_key(&key), other.record_key(&key));
        assert_ne!(&first.record_key(&key)[..], key.as_bytes());
        // Nothing else is left in the directory (no temporary file).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_damaged_secret_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RETRIEVAL_KEY_FILE);
        std::fs::write(&path, b"short").unwrap();
        assert!(RetrievalSecret::load_or_create(dir.path()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }
}

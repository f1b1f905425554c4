//! Streaming message encryption in bounded chunks.

use std::collections::BTreeMap;
use std::fmt;

use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keys::{Aead256, Kdf, Kem};
use super::{CryptoError, SealedKeyPair, UnsealedKey};
use crate::mailbox::MailboxId;

/// Plaintext bytes per body chunk. A sealed chunk (plus its 16-byte tag, its table key and
/// redb's page header) still fits one 64 KiB page, since redb rounds every value's page up to
/// a power of two and a chunk of exactly 64 KiB would occupy 128 KiB.
pub const CHUNK_SIZE: usize = 64 * 1024 - 512;
/// Authentication tag bytes added to every sealed record.
pub const TAG_SIZE: usize = 16;

const LABEL: &[u8] = b"gateway/msg/v1\0";
const KIND_ENVELOPE: u8 = 0;
const KIND_BODY: u8 = 1;

/// A message's random 128-bit id. Chosen before encryption starts (it is bound into every
/// chunk), stable for the message's life and unique, so it also serves as the POP3 UIDL.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        crate::random::fill_random_id(&mut bytes);
        Self(bytes)
    }

    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

/// The envelope of a message: who sent it to whom, plus trace attributes (direction, remote
/// user, target server in proxy mode). Stored encrypted, never in clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// What a reader needs besides the chunks: the HPKE encapsulated key and the sealed envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedHeader {
    pub encapped_key: Vec<u8>,
    pub sealed_envelope: Vec<u8>,
}

impl fmt::Debug for SealedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedHeader({} + {} bytes)",
            self.encapped_key.len(),
            self.sealed_envelope.len()
        )
    }
}

fn info(mailbox: &MailboxId, id: MessageId) -> Vec<u8> {
    let mut info = Vec::with_capacity(LABEL.len() + 40 + 16);
    info.extend_from_slice(LABEL);
    info.extend_from_slice(mailbox.as_str().as_bytes());
    info.push(0);
    info.extend_from_slice(&id.0);
    info
}

/// Associated data of one record: label, kind, mailbox, message, index, last flag.
struct Aad {
    bytes: Vec<u8>,
    fixed_len: usize,
}

impl Aad {
    fn new(mailbox: &MailboxId, id: MessageId) -> Self {
        let bytes = info(mailbox, id);
        let fixed_len = bytes.len();
        Self { bytes, fixed_len }
    }

    fn for_record(&mut self, kind: u8, index: u32, last: bool) -> &[u8] {
        self.bytes.truncate(self.fixed_len);
        self.bytes.push(kind);
        self.bytes.extend_from_slice(&index.to_be_bytes());
        self.bytes.push(u8::from(last));
        &self.bytes
    }
}

type SenderCtx = hpke::aead::AeadCtxS<Aead256, Kdf, Kem>;
type ReceiverCtx = hpke::aead::AeadCtxR<Aead256, Kdf, Kem>;

/// Encrypts one message as it streams in. Holds at most one chunk of plaintext.
pub struct MessageSealer {
    ctx: SenderCtx,
    aad: Aad,
    pending: Zeroizing<Vec<u8>>,
    next_index: u32,
    plaintext_len: u64,
}

impl MessageSealer {
    /// Starts a message to `keys`' public key; the envelope is sealed at once.
    pub fn new(
        keys: &SealedKeyPair,
        mailbox: &MailboxId,
        id: MessageId,
        envelope: &Envelope,
    ) -> Result<(SealedHeader, Self), CryptoError> {
        let public_key = keys.hpke_public_key()?;
        let (encapped_key, mut ctx) = hpke::setup_sender::<Aead256, Kdf, Kem>(
            &OpModeS::Base,
            &public_key,
            &info(mailbox, id),
        )
        .map_err(|_| CryptoError::Seal)?;
        let mut aad = Aad::new(mailbox, id);
        let envelope_json =
            Zeroizing::new(serde_json::to_vec(envelope).map_err(|_| CryptoError::Seal)?);
        let sealed_envelope = ctx
            .seal(&envelope_json, aad.for_record(KIND_ENVELOPE, 0, true))
            .map_err(|_| CryptoError::Seal)?;
        let header = SealedHeader {
            encapped_key: encapped_key.to_bytes().to_vec(),
            sealed_envelope,
        };
        let sealer = Self {
            ctx,
            aad,
            pending: Zeroizing::new(Vec::with_capacity(CHUNK_SIZE + TAG_SIZE)),
            next_index: 0,
            plaintext_len: 0,
        };
        Ok((header, sealer))
    }

    /// Adds plaintext; calls `emit` with each sealed chunk that is complete. A full chunk is
    /// only sealed once more data arrives, because the last chunk must carry the last flag.
    pub fn push<E>(
        &mut self,
        mut data: &[u8],
        emit: &mut impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CryptoError>,
    {
        self.plaintext_len += data.len() as u64;
        while !data.is_empty() {
            if self.pending.len() == CHUNK_SIZE {
                let sealed = self.seal_pending(false)?;
                emit(sealed)?;
            }
            let room = CHUNK_SIZE - self.pending.len();
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the final chunk (possibly empty, so even an empty body has a last chunk) and
    /// returns it with the plaintext length and the number of chunks.
    pub fn finish(mut self) -> Result<(Vec<u8>, u64, u32), CryptoError> {
        let last = self.seal_pending(true)?;
        Ok((last, self.plaintext_len, self.next_index))
    }

    fn seal_pending(&mut self, last: bool) -> Result<Vec<u8>, CryptoError> {
        let index = self.next_index;
        self.next_index = index.checked_add(1).ok_or(CryptoError::Seal)?;
        let aad = self.aad.for_record(KIND_BODY, index, last);
        let tag = self
            .ctx
            .seal_inout_detached(self.pending.as_mut_slice().into(), aad)
            .map_err(|_| CryptoError::Seal)?;
        // Ciphertext now fills `pending`; hand it over and start a fresh buffer.
        let mut sealed = std::mem::replace(
            &mut *self.pending,
            Vec::with_capacity(if last { 0 } else { CHUNK_SIZE + TAG_SIZE }),
        );
        sealed.extend_from_slice(&tag.to_bytes());
        Ok(sealed)
    }
}

/// Decrypts one message chunk by chunk, in order.
pub struct MessageOpener {
    ctx: ReceiverCtx,
    aad: Aad,
    next_index: u32,
    chunk_count: u32,
}

impl MessageOpener {
    /// Opens the envelope; body chunks follow through [`MessageOpener::open_next`].
    /// `chunk_count` comes from the stored metadata; a wrong count makes the last-chunk flag
    /// disagree with what was sealed, so tampering with it fails authentication.
    pub fn new(
        key: &UnsealedKey,
        id: MessageId,
        header: &SealedHeader,
        chunk_count: u32,
    ) -> Result<(Envelope, Self), CryptoError> {
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&header.encapped_key)
            .map_err(|_| CryptoError::Tampered)?;
        let mut ctx = hpke::setup_receiver::<Aead256, Kdf, Kem>(
            &OpModeR::Base,
            &key.private_key,
            &encapped,
            &info(&key.mailbox, id),
        )
        .map_err(|_| CryptoError::Tampered)?;
        let mut aad = Aad::new(&key.mailbox, id);
        let envelope_json = Zeroizing::new(
            ctx.open(
                &header.sealed_envelope,
                aad.for_record(KIND_ENVELOPE, 0, true),
            )
            .map_err(|_| CryptoError::Tampered)?,
        );
        let envelope = serde_json::from_slice(&envelope_json).map_err(|_| CryptoError::Tampered)?;
        if chunk_count == 0 {
            return Err(CryptoError::Tampered);
        }
        let opener = Self {
            ctx,
            aad,
            next_index: 0,
            chunk_count,
        };
        Ok((envelope, opener))
    }

    /// Decrypts the next chunk in place and returns its plaintext.
    pub fn open_next(&mut self, mut sealed: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        if self.next_index >= self.chunk_count {
            return Err(CryptoError::Tampered);
        }
        let index = self.next_index;
        let last = index + 1 == self.chunk_count;
        let body_len = sealed
            .len()
            .checked_sub(TAG_SIZE)
            .ok_or(CryptoError::Tampered)?;
        let tag = hpke::aead::AeadTag::<Aead256>::from_bytes(&sealed[body_len..])
            .map_err(|_| CryptoError::Tampered)?;
        sealed.truncate(body_len);
        let aad = self.aad.for_record(KIND_BODY, index, last);
        self.ctx
            .open_inout_detached(sealed.as_mut_slice().into(), aad, &tag)
            .map_err(|_| CryptoError::Tampered)?;
        self.next_index += 1;
        Ok(sealed)
    }

    /// True once every chunk has been opened.
    pub fn is_complete(&self) -> bool {
        self.next_index == self.chunk_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KdfParams, MailboxPassword};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    struct Fixture {
        mailbox: MailboxId,
        password: MailboxPassword,
        keys: SealedKeyPair,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let mailbox = MailboxId::generate();
            let password = MailboxPassword::generate();
            let keys =
                SealedKeyPair::generate(&mailbox, &password, KdfParams::insecure_for_tests())
                    .unwrap();
            Fixture {
                mailbox,
                password,
                keys,
            }
        })
    }

    fn envelope() -> Envelope {
        Envelope {
            mail_from: "sender@example.org".into(),
            rcpt_to: vec!["a@example.com".into()],
            attributes: BTreeMap::new(),
        }
    }

    /// Seals `body` fed in pieces of `piece` bytes; returns header, chunks and length.
    fn seal(body: &[u8], id: MessageId, piece: usize) -> (SealedHeader, Vec<Vec<u8>>, u64) {
        let f = fixture();
        let (header, mut sealer) =
            MessageSealer::new(&f.keys, &f.mailbox, id, &envelope()).unwrap();
        let mut chunks = Vec::new();
        for part in body.chunks(piece.max(1)) {
            sealer
                .push(part, &mut |c| {
                    chunks.push(c);
                    Ok::<_, CryptoError>(())
                })
                .unwrap();
        }
        let (last, len, count) = sealer.finish().unwrap();
        chunks.push(last);
        assert_eq!(count as usize, chunks.len());
        (header, chunks, len)
    }

    fn open(
        mailbox: &MailboxId,
        id: MessageId,
        header: &SealedHeader,
        chunks: &[Vec<u8>],
    ) -> Result<Vec<u8>, CryptoError> {
        let key = fixture().keys.unseal(mailbox, &fixture().password)?;
        let (env, mut opener) = MessageOpener::new(&key, id, header, chunks.len() as u32)?;
        assert_eq!(env, envelope());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(opener.open_next(c.clone())?);
        }
        assert!(opener.is_complete());
        Ok(out)
    }

    fn body_of(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn chunk_boundaries_round_trip() {
        let f = fixture();
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            2 * CHUNK_SIZE,
            2 * CHUNK_SIZE + 1,
        ] {
            let body = body_of(len, 7);
            let id = MessageId::generate();
            let (header, chunks, plen) = seal(&body, id, 4096);
            assert_eq!(plen, len as u64);
            assert_eq!(chunks.len(), len.div_ceil(CHUNK_SIZE).max(1));
            assert!(chunks.iter().all(|c| c.len() <= CHUNK_SIZE + TAG_SIZE));
            assert_eq!(
                open(&f.mailbox, id, &header, &chunks).unwrap(),
                body,
                "len {len}"
            );
        }
    }

    #[test]
    fn several_mebibytes_round_trip() {
        let body = body_of(5 * 1024 * 1024 + 3, 1);
        let id = MessageId::generate();
        let (header, chunks, _) = seal(&body, id, 100_000);
        assert_eq!(
            open(&fixture().mailbox, id, &header, &chunks).unwrap(),
            body
        );
    }

    #[test]
    fn wrong_password_cannot_open() {
        let f = fixture();
        let wrong = MailboxPassword::generate();
        assert_eq!(
            f.keys.unseal(&f.mailbox, &wrong).unwrap_err(),
            CryptoError::WrongPassword
        );
    }

    #[test]
    fn truncation_reordering_and_transplanting_fail() {
        let f = fixture();
        let body = body_of(3 * CHUNK_SIZE + 10, 3);
        let id = MessageId::generate();
        let (header, chunks, _) = seal(&body, id, CHUNK_SIZE);
        assert_eq!(chunks.len(), 4);

        // Truncated: drop the last chunk (the new last lacks the last flag).
        assert_eq!(
            open(&f.mailbox, id, &header, &chunks[..3]),
            Err(CryptoError::Tampered)
        );
        // Extended: a chunk appended after the last.
        let mut longer = chunks.clone();
        longer.push(chunks[1].clone());
        assert_eq!(
            open(&f.mailbox, id, &header, &longer),
            Err(CryptoError::Tampered)
        );
        // Reordered.
        let mut swapped = chunks.clone();
        swapped.swap(1, 2);
        assert_eq!(
            open(&f.mailbox, id, &header, &swapped),
            Err(CryptoError::Tampered)
        );
        // Flipped bit.
        let mut flipped = chunks.clone();
        flipped[2][5] ^= 1;
        assert_eq!(
            open(&f.mailbox, id, &header, &flipped),
            Err(CryptoError::Tampered)
        );
        // Transplanted into another message id.
        assert_eq!(
            open(&f.mailbox, MessageId::generate(), &header, &chunks),
            Err(CryptoError::Tampered)
        );
        // A chunk from another message of the same mailbox.
        let other_id = MessageId::generate();
        let (_, other_chunks, _) = seal(&body, other_id, CHUNK_SIZE);
        let mut mixed = chunks.clone();
        mixed[1] = other_chunks[1].clone();
        assert_eq!(
            open(&f.mailbox, id, &header, &mixed),
            Err(CryptoError::Tampered)
        );
    }

    #[test]
    fn moving_to_another_mailbox_fails() {
        let f = fixture();
        let body = body_of(1000, 9);
        let id = MessageId::generate();
        let (header, chunks, _) = seal(&body, id, 1000);
        // Same private key, other mailbox id: the info and AAD differ, so nothing opens.
        let key = f.keys.unseal(&f.mailbox, &f.password).unwrap();
        let moved = UnsealedKey {
            private_key: key.private_key.clone(),
            mailbox: MailboxId::generate(),
        };
        let result = MessageOpener::new(&moved, id, &header, chunks.len() as u32);
        assert!(matches!(result, Err(CryptoError::Tampered)));
    }

    #[test]
    fn envelope_is_not_stored_in_clear() {
        let (header, _, _) = seal(b"hello", MessageId::generate(), 5);
        let needle = b"sender@example.org";
        assert!(!header
            .sealed_envelope
            .windows(needle.len())
            .any(|w| w == needle));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn round_trip_any_size_any_split(
            len in prop_oneof![
                0usize..300,
                (CHUNK_SIZE - 2)..(CHUNK_SIZE + 3),
                (2 * CHUNK_SIZE - 2)..(2 * CHUNK_SIZE + 3),
                0usize..(3 * 1024 * 1024),
            ],
            piece in 1usize..200_000,
            seed: u8,
        ) {
            let body = body_of(len, seed);
            let id = MessageId::generate();
            let (header, chunks, plen) = seal(&body, id, piece);
            prop_assert_eq!(plen, len as u64);
            prop_assert_eq!(open(&fixture().mailbox, id, &header, &chunks).unwrap(), body);
        }

        #[test]
        fn any_single_bit_flip_is_detected(len in 0usize..(2 * CHUNK_SIZE + 5), bit: usize) {
            let body = body_of(len, 5);
            let id = MessageId::generate();
            let (header, mut chunks, _) = seal(&body, id, 8192);
            let total: usize = chunks.iter().map(|c| c.len()).sum();
            let mut at = (bit / 8) % total;
            for c in chunks.iter_mut() {
                if at < c.len() { c[at] ^= 1 << (bit % 8); break; }
                at -= c.len();
            }
            prop_assert_eq!(open(&fixture().mailbox, id, &header, &chunks), Err(CryptoError::Tampered));
        }
    }
}

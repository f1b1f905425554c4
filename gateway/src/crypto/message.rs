//! Streaming message encryption in bounded chunks, in two formats: 1, one HPKE context per
//! message ([`MessageSealer::new`], still read and kept as a reference writer), and 2, the
//! service's, per-message keys from a mailbox epoch's secret (see `super::epoch`).

use std::collections::BTreeMap;
use std::fmt;

use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::epoch::{EpochSecret, MessageCipher, MESSAGE_LABEL};
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

/// A message's 128-bit id. Chosen before encryption starts (it is bound into every chunk),
/// stable for the message's life and unique, so it also serves as the POP3 UIDL.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fully random id, for tests and benchmarks where the order of ids does not matter;
    /// the service makes ids with [`Self::generate_at`].
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        crate::random::fill_random_id(&mut bytes);
        Self(bytes)
    }

    /// An id for a message received at `unix_ms`: 48 bits of that time, then 80 random bits.
    ///
    /// Time first so that new messages sort after the ones before them: their chunks are
    /// appended to the store's chunk table instead of landing on a random page of it, which
    /// each commit would read, copy and write back with its neighbours (a tenth of the
    /// gateway's CPU at 20 SMTP sessions of 10 KiB). The id stays unguessable, and unique:
    /// the per-message key is derived from the mailbox, the sealing epoch and the id, so two
    /// ids alike in one mailbox and epoch would reuse a key, and 80 random bits per
    /// millisecond make that as unlikely as with 128 random ones at any real rate.
    pub fn generate_at(unix_ms: u64) -> Self {
        let mut bytes = [0u8; 16];
        crate::random::fill_random_id(&mut bytes);
        let order = crate::random::id_order(unix_ms);
        bytes[..6].copy_from_slice(&order.to_be_bytes()[2..]);
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

/// How a message was sealed; stored with it, so every format ever written stays readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    /// One HPKE context per message (an X25519 DH each); its sequence numbers are the nonces.
    V1,
    /// AES-256-GCM under a per-message key derived from a mailbox epoch's HPKE-exported
    /// secret; the encapsulated key is the epoch's, shared by its messages.
    V2,
}

/// What a reader needs besides the chunks: the format, the HPKE encapsulated key and the
/// sealed envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedHeader {
    pub format: MessageFormat,
    pub encapped_key: Vec<u8>,
    pub sealed_envelope: Vec<u8>,
}

impl fmt::Debug for SealedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedHeader({:?}, {} + {} bytes)",
            self.format,
            self.encapped_key.len(),
            self.sealed_envelope.len()
        )
    }
}

/// The format's label, then mailbox and message: HPKE info (1), HKDF info (2), and the
/// start of every record's associated data (both).
pub(super) fn info(label: &[u8], mailbox: &MailboxId, id: MessageId) -> Vec<u8> {
    let mut info = Vec::with_capacity(label.len() + 40 + 16);
    info.extend_from_slice(label);
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
    fn new(label: &[u8], mailbox: &MailboxId, id: MessageId) -> Self {
        let bytes = info(label, mailbox, id);
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

/// What seals a message's records.
enum SealCipher {
    /// Format 1: the HPKE context, whose sequence number is each record's nonce.
    V1(SenderCtx),
    /// Format 2: the message's own key, with the nonce from kind and index.
    V2(MessageCipher),
}

impl SealCipher {
    fn seal(
        &mut self,
        kind: u8,
        index: u32,
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<[u8; TAG_SIZE], CryptoError> {
        match self {
            SealCipher::V1(ctx) => {
                let tag = ctx
                    .seal_inout_detached(buffer.into(), aad)
                    .map_err(|_| CryptoError::Seal)?;
                tag.to_bytes()
                    .as_slice()
                    .try_into()
                    .map_err(|_| CryptoError::Seal)
            }
            SealCipher::V2(cipher) => cipher.seal(kind, index, aad, buffer),
        }
    }
}

/// What opens a message's records; the counterpart of [`SealCipher`].
enum OpenCipher {
    V1(ReceiverCtx),
    V2(MessageCipher),
}

impl OpenCipher {
    fn open(
        &mut self,
        kind: u8,
        index: u32,
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        match self {
            OpenCipher::V1(ctx) => {
                let tag = hpke::aead::AeadTag::<Aead256>::from_bytes(tag)
                    .map_err(|_| CryptoError::Tampered)?;
                ctx.open_inout_detached(buffer.into(), aad, &tag)
                    .map_err(|_| CryptoError::Tampered)
            }
            OpenCipher::V2(cipher) => cipher.open(kind, index, aad, buffer, tag),
        }
    }
}

/// Encrypts one message as it streams in. Holds at most one chunk of plaintext.
pub struct MessageSealer {
    cipher: SealCipher,
    aad: Aad,
    pending: Zeroizing<Vec<u8>>,
    next_index: u32,
    plaintext_len: u64,
}

impl MessageSealer {
    /// Starts a message to `keys`' public key in format 1 (one HPKE setup, so one X25519 DH,
    /// per message); the envelope is sealed at once. The service seals in format 2
    /// ([`super::SealingEpochs::sealer`]); this writer stays as the reference for format 1.
    pub fn new(
        keys: &SealedKeyPair,
        mailbox: &MailboxId,
        id: MessageId,
        envelope: &Envelope,
    ) -> Result<(SealedHeader, Self), CryptoError> {
        let public_key = keys.hpke_public_key()?;
        let (encapped_key, ctx) = hpke::setup_sender::<Aead256, Kdf, Kem>(
            &OpModeS::Base,
            &public_key,
            &info(LABEL, mailbox, id),
        )
        .map_err(|_| CryptoError::Seal)?;
        Self::start(
            SealCipher::V1(ctx),
            MessageFormat::V1,
            encapped_key.to_bytes().to_vec(),
            Aad::new(LABEL, mailbox, id),
            envelope,
        )
    }

    /// Starts a message in format 2, under a key derived from the epoch's secret.
    pub(super) fn in_epoch(
        secret: &EpochSecret,
        encapped_key: &[u8],
        mailbox: &MailboxId,
        id: MessageId,
        envelope: &Envelope,
    ) -> Result<(SealedHeader, Self), CryptoError> {
        Self::start(
            SealCipher::V2(MessageCipher::derive(secret, mailbox, id)),
            MessageFormat::V2,
            encapped_key.to_vec(),
            Aad::new(MESSAGE_LABEL, mailbox, id),
            envelope,
        )
    }

    fn start(
        mut cipher: SealCipher,
        format: MessageFormat,
        encapped_key: Vec<u8>,
        mut aad: Aad,
        envelope: &Envelope,
    ) -> Result<(SealedHeader, Self), CryptoError> {
        let mut sealed_envelope =
            Zeroizing::new(serde_json::to_vec(envelope).map_err(|_| CryptoError::Seal)?);
        let tag = cipher.seal(
            KIND_ENVELOPE,
            0,
            aad.for_record(KIND_ENVELOPE, 0, true),
            sealed_envelope.as_mut_slice(),
        )?;
        // Ciphertext now: no longer secret, so out of the wiping wrapper.
        let mut sealed_envelope = std::mem::take(&mut *sealed_envelope);
        sealed_envelope.extend_from_slice(&tag);
        let header = SealedHeader {
            format,
            encapped_key,
            sealed_envelope,
        };
        let sealer = Self {
            cipher,
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
            .cipher
            .seal(KIND_BODY, index, aad, self.pending.as_mut_slice())?;
        // Ciphertext now fills `pending`; hand it over and start a fresh buffer.
        let mut sealed = std::mem::replace(
            &mut *self.pending,
            Vec::with_capacity(if last { 0 } else { CHUNK_SIZE + TAG_SIZE }),
        );
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }
}

/// Decrypts one message chunk by chunk, in order.
pub struct MessageOpener {
    cipher: OpenCipher,
    aad: Aad,
    next_index: u32,
    chunk_count: u32,
}

impl MessageOpener {
    /// Opens the envelope; body chunks follow through [`MessageOpener::open_next`]. Reads
    /// either format. In format 2 the key remembers the last few epochs it opened, so the
    /// messages of one epoch cost one DH together.
    /// `chunk_count` comes from the stored metadata; a wrong count makes the last-chunk flag
    /// disagree with what was sealed, so tampering with it fails authentication.
    pub fn new(
        key: &UnsealedKey,
        id: MessageId,
        header: &SealedHeader,
        chunk_count: u32,
    ) -> Result<(Envelope, Self), CryptoError> {
        let (mut cipher, mut aad) = match header.format {
            MessageFormat::V1 => {
                let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&header.encapped_key)
                    .map_err(|_| CryptoError::Tampered)?;
                let ctx = hpke::setup_receiver::<Aead256, Kdf, Kem>(
                    &OpModeR::Base,
                    &key.private_key,
                    &encapped,
                    &info(LABEL, &key.mailbox, id),
                )
                .map_err(|_| CryptoError::Tampered)?;
                (OpenCipher::V1(ctx), Aad::new(LABEL, &key.mailbox, id))
            }
            MessageFormat::V2 => {
                let secret =
                    key.epochs
                        .secret(&key.private_key, &key.mailbox, &header.encapped_key)?;
                (
                    OpenCipher::V2(MessageCipher::derive(&secret, &key.mailbox, id)),
                    Aad::new(MESSAGE_LABEL, &key.mailbox, id),
                )
            }
        };
        let sealed = &header.sealed_envelope;
        let body_len = sealed
            .len()
            .checked_sub(TAG_SIZE)
            .ok_or(CryptoError::Tampered)?;
        let mut envelope_json = Zeroizing::new(sealed[..body_len].to_vec());
        cipher.open(
            KIND_ENVELOPE,
            0,
            aad.for_record(KIND_ENVELOPE, 0, true),
            envelope_json.as_mut_slice(),
            &sealed[body_len..],
        )?;
        let envelope = serde_json::from_slice(&envelope_json).map_err(|_| CryptoError::Tampered)?;
        if chunk_count == 0 {
            return Err(CryptoError::Tampered);
        }
        let opener = Self {
            cipher,
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
        let (body, tag) = sealed.split_at_mut(body_len);
        let aad = self.aad.for_record(KIND_BODY, index, last);
        self.cipher.open(KIND_BODY, index, aad, body, tag)?;
        sealed.truncate(body_len);
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
        let started = MessageSealer::new(&f.keys, &f.mailbox, id, &envelope()).unwrap();
        seal_with(started, body, piece)
    }

    /// Feeds `body` to a started sealer in pieces of `piece` bytes.
    fn seal_with(
        (header, mut sealer): (SealedHeader, MessageSealer),
        body: &[u8],
        piece: usize,
    ) -> (SealedHeader, Vec<Vec<u8>>, u64) {
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
        open_with(&key, id, header, chunks)
    }

    /// Opens one message with `key` and checks the envelope.
    fn open_with(
        key: &UnsealedKey,
        id: MessageId,
        header: &SealedHeader,
        chunks: &[Vec<u8>],
    ) -> Result<Vec<u8>, CryptoError> {
        let (env, mut opener) = MessageOpener::new(key, id, header, chunks.len() as u32)?;
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
            epochs: Default::default(),
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

    #[test]
    fn time_ordered_ids_sort_by_time_and_stay_random_within_a_millisecond() {
        let (a, b) = (MessageId::generate_at(1_000), MessageId::generate_at(1_000));
        let later = MessageId::generate_at(1_001);
        assert_eq!(a.0[..6], 1_000u64.to_be_bytes()[2..]);
        assert_eq!(a.0[..6], b.0[..6]);
        assert_ne!(a.0[6..], b.0[6..], "80 random bits after the time");
        assert!(a < later && b < later);
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

    /// Format 2: messages sealed in mailbox epochs ([`crate::crypto::SealingEpochs`]).
    mod format_2 {
        use super::*;
        use crate::crypto::{EpochLimits, SealingEpochs};

        const T0: u64 = 1_700_000_000_000;

        fn limits(max_messages: u32) -> EpochLimits {
            EpochLimits {
                max_age_ms: 60_000,
                max_messages,
            }
        }

        fn seal_v2(
            epochs: &SealingEpochs,
            body: &[u8],
            id: MessageId,
            piece: usize,
            now: u64,
        ) -> (SealedHeader, Vec<Vec<u8>>, u64) {
            let f = fixture();
            let started = epochs
                .sealer(&f.keys, &f.mailbox, id, &envelope(), now)
                .unwrap();
            assert_eq!(started.0.format, MessageFormat::V2);
            seal_with(started, body, piece)
        }

        /// A message as stored: id, header, chunks.
        type Sealed = (MessageId, SealedHeader, Vec<Vec<u8>>);

        /// Opens with one key for the whole list, as a POP3 session does.
        fn open_all(key: &UnsealedKey, messages: &[Sealed]) -> Result<Vec<Vec<u8>>, CryptoError> {
            messages
                .iter()
                .map(|(id, header, chunks)| open_with(key, *id, header, chunks))
                .collect()
        }

        fn key() -> UnsealedKey {
            let f = fixture();
            f.keys.unseal(&f.mailbox, &f.password).unwrap()
        }

        /// A message of four chunks and another of the same epoch, for the tamper tests.
        fn two_of_one_epoch() -> (Sealed, Sealed) {
            let epochs = SealingEpochs::new(limits(10));
            let body = body_of(3 * CHUNK_SIZE + 10, 4);
            let (a, b) = (MessageId::generate(), MessageId::generate());
            let (ha, ca, _) = seal_v2(&epochs, &body, a, CHUNK_SIZE, T0);
            let (hb, cb, _) = seal_v2(&epochs, &body, b, CHUNK_SIZE, T0 + 1);
            assert_eq!(ha.encapped_key, hb.encapped_key, "one epoch");
            // Same body, same index, yet other ciphertext: each message has its own key (one
            // shared key would reuse every nonce).
            assert_ne!(ca[0][..CHUNK_SIZE], cb[0][..CHUNK_SIZE]);
            ((a, ha, ca), (b, hb, cb))
        }

        #[test]
        fn a_message_of_one_epoch_opens_and_its_records_stay_in_place() {
            let ((a, ha, ca), (b, hb, cb)) = two_of_one_epoch();
            let key = key();
            let both = open_all(
                &key,
                &[(a, ha.clone(), ca.clone()), (b, hb.clone(), cb.clone())],
            )
            .unwrap();
            assert_eq!(both[0], body_of(3 * CHUNK_SIZE + 10, 4));
            assert_eq!(both[0], both[1]);

            let open_a = |header: &SealedHeader, chunks: &[Vec<u8>]| {
                open(&fixture().mailbox, a, header, chunks)
            };
            // A chunk of the other message of the same epoch, at the same index.
            let mut mixed = ca.clone();
            mixed[1] = cb[1].clone();
            assert_eq!(open_a(&ha, &mixed), Err(CryptoError::Tampered));
            // The other message's header (same encapsulated key, other sealed envelope).
            assert_eq!(open_a(&hb, &ca), Err(CryptoError::Tampered));
            // Truncated: the last chunk missing.
            assert_eq!(open_a(&ha, &ca[..3]), Err(CryptoError::Tampered));
            // Extended, reordered, flipped.
            let mut longer = ca.clone();
            longer.push(ca[1].clone());
            assert_eq!(open_a(&ha, &longer), Err(CryptoError::Tampered));
            let mut swapped = ca.clone();
            swapped.swap(1, 2);
            assert_eq!(open_a(&ha, &swapped), Err(CryptoError::Tampered));
            let mut flipped = ca.clone();
            flipped[0][3] ^= 0x10;
            assert_eq!(open_a(&ha, &flipped), Err(CryptoError::Tampered));
            let mut flipped = ha.clone();
            flipped.encapped_key[0] ^= 1;
            assert_eq!(open_a(&flipped, &ca), Err(CryptoError::Tampered));
            // The whole message under another id.
            assert_eq!(
                open(&fixture().mailbox, MessageId::generate(), &ha, &ca),
                Err(CryptoError::Tampered)
            );
            // Read as format 1, it does not open either.
            let mut as_v1 = ha.clone();
            as_v1.format = MessageFormat::V1;
            assert_eq!(open_a(&as_v1, &ca), Err(CryptoError::Tampered));
        }

        #[test]
        fn records_moved_to_another_mailbox_fail() {
            let f = fixture();
            let epochs = SealingEpochs::new(limits(10));
            let body = body_of(2 * CHUNK_SIZE, 6);
            let id = MessageId::generate();
            let (header, chunks, _) = seal_v2(&epochs, &body, id, CHUNK_SIZE, T0);
            // The same private key under another mailbox id: the epoch's HPKE info, the
            // message key and the AAD all differ.
            let other_mailbox = MailboxId::generate();
            let moved = UnsealedKey {
                private_key: key().private_key.clone(),
                mailbox: other_mailbox.clone(),
                epochs: Default::default(),
            };
            assert!(matches!(
                MessageOpener::new(&moved, id, &header, chunks.len() as u32),
                Err(CryptoError::Tampered)
            ));
            // A chunk of a message (same id, same index) sealed to another mailbox.
            let password = MailboxPassword::generate();
            let other_keys =
                SealedKeyPair::generate(&other_mailbox, &password, KdfParams::insecure_for_tests())
                    .unwrap();
            let started = epochs
                .sealer(&other_keys, &other_mailbox, id, &envelope(), T0)
                .unwrap();
            let (_, other_chunks, _) = seal_with(started, &body, CHUNK_SIZE);
            let mut mixed = chunks.clone();
            mixed[0] = other_chunks[0].clone();
            assert_eq!(
                open(&f.mailbox, id, &header, &mixed),
                Err(CryptoError::Tampered)
            );
            assert_eq!(open(&f.mailbox, id, &header, &chunks).unwrap(), body);
        }

        #[test]
        fn an_epoch_ends_after_its_message_limit_its_age_or_a_clock_going_back() {
            let epochs = SealingEpochs::new(limits(3));
            let encapped = |now| {
                seal_v2(&epochs, b"x", MessageId::generate(), 1, now)
                    .0
                    .encapped_key
            };
            let first = encapped(T0);
            assert_eq!(encapped(T0 + 1), first);
            assert_eq!(encapped(T0 + 2), first);
            let second = encapped(T0 + 3);
            assert_ne!(second, first, "the fourth message starts a new epoch");
            assert_eq!(encapped(T0 + 60_002), second, "59.999 s old: still live");
            let third = encapped(T0 + 60_003);
            assert_ne!(third, second, "60 s old: a new epoch");
            assert_ne!(encapped(T0 + 60_002), third, "the clock went back");
            assert_eq!(epochs.len(), 1, "one mailbox, one epoch");
        }

        #[test]
        fn a_new_key_pair_starts_a_new_epoch() {
            let f = fixture();
            let epochs = SealingEpochs::new(limits(100));
            let id = MessageId::generate();
            let (before, _, _) = seal_v2(&epochs, b"old", id, 3, T0);
            // The password was reset: same mailbox, new key pair.
            let password = MailboxPassword::generate();
            let reset =
                SealedKeyPair::generate(&f.mailbox, &password, KdfParams::insecure_for_tests())
                    .unwrap();
            let started = epochs
                .sealer(&reset, &f.mailbox, id, &envelope(), T0 + 1)
                .unwrap();
            let (after, chunks, _) = seal_with(started, b"new", 3);
            assert_ne!(after.encapped_key, before.encapped_key);
            let new_key = reset.unseal(&f.mailbox, &password).unwrap();
            assert_eq!(
                open_all(&new_key, &[(id, after.clone(), chunks.clone())]).unwrap(),
                vec![b"new".to_vec()]
            );
            assert!(matches!(
                open_all(&key(), &[(id, after, chunks)]),
                Err(CryptoError::Tampered)
            ));
            // And back to the first key: not the epoch sealed to it before the reset.
            let (again, _, _) = seal_v2(&epochs, b"x", MessageId::generate(), 1, T0 + 2);
            assert_ne!(again.encapped_key, before.encapped_key);
        }

        #[test]
        fn expire_drops_ended_epochs_only() {
            let f = fixture();
            let epochs = SealingEpochs::new(limits(100));
            let other = MailboxId::generate();
            let password = MailboxPassword::generate();
            let other_keys =
                SealedKeyPair::generate(&other, &password, KdfParams::insecure_for_tests())
                    .unwrap();
            seal_v2(&epochs, b"a", MessageId::generate(), 1, T0);
            epochs
                .sealer(
                    &other_keys,
                    &other,
                    MessageId::generate(),
                    &envelope(),
                    T0 + 30_000,
                )
                .unwrap();
            assert_eq!(epochs.len(), 2);
            epochs.expire(T0 + 59_999);
            assert_eq!(epochs.len(), 2);
            epochs.expire(T0 + 60_000);
            assert_eq!(epochs.len(), 1, "{} ended", f.mailbox);
            epochs.expire(T0 + 90_000);
            assert!(epochs.is_empty());
        }

        /// `count` messages of 100 bytes, sealed one millisecond apart in epochs of two.
        fn small_messages_in_epochs_of_two(count: u8) -> Vec<Sealed> {
            let epochs = SealingEpochs::new(limits(2));
            (0..count)
                .map(|i| {
                    let id = MessageId::generate();
                    let (h, c, _) = seal_v2(&epochs, &body_of(100, i), id, 7, T0 + u64::from(i));
                    (id, h, c)
                })
                .collect()
        }

        #[test]
        fn a_reader_decapsulates_once_per_epoch() {
            let messages = small_messages_in_epochs_of_two(5);
            let key = key();
            let bodies = open_all(&key, &messages).unwrap();
            assert_eq!(bodies[4], body_of(100, 4));
            assert_eq!(key.epochs.len(), 3, "epochs of 2 + 2 + 1 messages");
            // Cached or not, the result is the same (and a second pass uses the cache).
            assert_eq!(open_all(&key, &messages).unwrap(), bodies);
            assert_eq!(key.epochs.len(), 3);
        }

        #[test]
        fn only_a_format_2_message_of_an_epoch_opened_before_needs_no_key_agreement() {
            let messages = small_messages_in_epochs_of_two(3);
            let key = key();
            let (first, second, next_epoch) = (&messages[0].1, &messages[1].1, &messages[2].1);
            assert!(!key.opens_without_key_agreement(first));
            open_all(&key, &messages[..1]).unwrap();
            assert!(key.opens_without_key_agreement(first));
            assert!(key.opens_without_key_agreement(second), "the same epoch");
            assert!(!key.opens_without_key_agreement(next_epoch));
            // Format 1 agrees on a key for every message, opened before or not.
            let id = MessageId::generate();
            let (v1, chunks, _) = seal(&body_of(100, 9), id, 64);
            open_with(&key, id, &v1, &chunks).unwrap();
            assert!(!key.opens_without_key_agreement(&v1));
        }

        /// Written by format 1 before format 2 existed (the sealer then was the one that
        /// `MessageSealer::new` still is); a throwaway key pair with test KDF parameters.
        #[test]
        fn a_fixed_format_1_message_still_opens() {
            let mailbox = MailboxId::parse("mbx-9d9d921c100db32a2961945110bcc0f9").unwrap();
            let password =
                MailboxPassword::from_user_input("UANU-M4QA-CFYU-OYPT-YJNH-KHKV-5K7P-AF3S");
            let keys: SealedKeyPair = serde_json::from_str(
                r#"{"format":1,"suite":"DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM","public_key":"f35691af65b5e9aabd5bfd74d36ff716d806686d211512614ff935caa3576939","kdf":{"m_cost_kib":64,"t_cost":1,"p_cost":1},"salt":"335e39b63c357fc8aa56a3d040c20ef2","nonce":"fb819cad5a033fa316778b33991dcfb1a62c01d876e4410e","sealed_private_key":"3000f597a055ccf6f875afa8ac68809db2ad0fdb5db333ae089d43daa4190845c3c25d77a844e86358eb59048f325bfc"}"#,
            )
            .unwrap();
            let hex = |s: &str| data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap();
            let id = MessageId::from_hex("a012ffdb1d74e1f30b1b6f8c4b84903d").unwrap();
            let header = SealedHeader {
                format: MessageFormat::V1,
                encapped_key: hex("a5774df28c9b34fa095bb7ce0946c4c7b6f5630ee30e31e58932d043f00ae03b"),
                sealed_envelope: hex("806b04276d59dc9937cea760526cc8faaea0acd4cb1efe2dd1134e5862a001212626d7f29c454f93c65663b6ee9dd9200967cb540a7ae7db970ead3a38367f8db6d759c08f3275165db7ed"),
            };
            let chunk = hex("e18d33320aa6099693cd57264a93e60c4fa054c5acefbe20744ed82f78f541cb708418a40bedd0ca5a262e3471bde69809929fb8");
            let key = keys.unseal(&mailbox, &password).unwrap();
            let (env, mut opener) = MessageOpener::new(&key, id, &header, 1).unwrap();
            assert_eq!(env.mail_from, "old@example.org");
            assert_eq!(env.rcpt_to, vec!["a@example.com".to_owned()]);
            assert_eq!(
                opener.open_next(chunk.clone()).unwrap(),
                b"Subject: v1\r\n\r\nwritten by format 1\r\n"
            );
            assert!(opener.is_complete());
            // Bound to its format: read as format 2 it fails.
            let as_v2 = SealedHeader {
                format: MessageFormat::V2,
                ..header
            };
            assert!(matches!(
                MessageOpener::new(&key, id, &as_v2, 1),
                Err(CryptoError::Tampered)
            ));
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

            /// Any bodies, any split into pushes, any number of messages in one epoch or across
            /// epoch boundaries (by count and by time), opened in order by one key.
            #[test]
            fn round_trip_any_messages_across_epochs(
                messages in proptest::collection::vec(
                    (prop_oneof![
                        0usize..300,
                        (CHUNK_SIZE - 2)..(CHUNK_SIZE + 3),
                        0usize..(2 * CHUNK_SIZE + 100),
                    ], 1usize..100_000, any::<u8>(), 0u64..40_000),
                    1..8,
                ),
                max_messages in 1u32..5,
            ) {
                let epochs = SealingEpochs::new(limits(max_messages));
                let mut now = T0;
                let mut sealed = Vec::new();
                let mut bodies = Vec::new();
                for (len, piece, seed, step) in messages {
                    now += step;
                    let body = body_of(len, seed);
                    let id = MessageId::generate();
                    let (header, chunks, plen) = seal_v2(&epochs, &body, id, piece, now);
                    prop_assert_eq!(plen, len as u64);
                    sealed.push((id, header, chunks));
                    bodies.push(body);
                }
                prop_assert_eq!(open_all(&key(), &sealed).unwrap(), bodies);
            }
        }
    }
}

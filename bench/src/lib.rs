//! Benchmarks of the gateway.
//!
//! - crate root: shared helpers for the criterion benches (mailboxes, bodies, sealing).
//! - [`load`]: an SMTP load generator (plain or implicit TLS), used by the `smtp_load`
//!   binary and by the `smtp_bench` runner.
//! - [`gateway_proc`]: the gateway run as a child process for the runner.
//! - [`backends`]: SMTP intake on redb and on PostgreSQL with one and two nodes
//!   (`smtp_bench --store postgres`).
//! - [`disk`]: the cost of one durable write on the gateway's disk, and the ceiling it puts
//!   on the proxy at one session.
//! - [`cgroup`]: a memory limit around that child (cgroup, systemd scope or RLIMIT_AS).
//! - [`postfix`]: a throwaway local Postfix delivering to a Maildir, the baseline.
//! - [`pop3_load`]: a POP3 drain client (RETR + DELE every message, plain or implicit TLS),
//!   used by the `pop3_bench` runner.
//! - [`dovecot`]: a throwaway local Dovecot pop3d on a Maildir, the POP3 baseline.
//! - [`results`]: the runners' JSON results (`<name>.json` beside the report), for
//!   `cargo xtask bench compare`.
//! - [`util`]: helpers the runners share.

pub mod backends;
pub mod cgroup;
pub mod delay;
pub mod disk;
pub mod dovecot;
pub mod gateway_proc;
pub mod load;
pub mod pop3_load;
pub mod postfix;
pub mod results;
pub mod tls_relay;
pub mod util;

use std::collections::BTreeMap;

use gateway::crypto::{
    CryptoError, Envelope, KdfParams, MailboxPassword, MessageId, MessageOpener, SealedHeader,
    SealedKeyPair, SealingEpochs, UnsealedKey,
};
use gateway::mailbox::MailboxId;

/// How the sealer is fed: 64 KiB pieces, like reads from a network socket.
pub const READ_PIECE: usize = 64 * 1024;

/// A mailbox with its password and sealed key pair.
pub struct Mailbox {
    pub id: MailboxId,
    pub password: MailboxPassword,
    pub keys: SealedKeyPair,
}

impl Mailbox {
    /// A mailbox whose key is sealed with the service's default Argon2id parameters
    /// (slow to create and to unseal: that is what the unseal benchmark measures).
    pub fn with_default_kdf() -> Self {
        Self::with_kdf(KdfParams::default())
    }

    /// A mailbox whose key is sealed with cheap Argon2 parameters (64 KiB, one pass), for
    /// benchmarks that do not measure the KDF. Spelled out rather than taken from
    /// `KdfParams::insecure_for_tests`, so the gateway's `test-support` feature stays off.
    pub fn with_cheap_kdf() -> Self {
        Self::with_kdf(KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        })
    }

    fn with_kdf(kdf: KdfParams) -> Self {
        let id = MailboxId::generate();
        let password = MailboxPassword::generate();
        let keys = SealedKeyPair::generate(&id, &password, kdf).expect("generate key pair");
        Self { id, password, keys }
    }

    pub fn unseal(&self) -> UnsealedKey {
        self.keys
            .unseal(&self.id, &self.password)
            .expect("unseal with the right password")
    }
}

/// A typical journal envelope.
pub fn envelope() -> Envelope {
    Envelope {
        mail_from: "sender@example.org".into(),
        rcpt_to: vec!["alice@example.com".into(), "bob@example.com".into()],
        attributes: BTreeMap::new(),
    }
}

/// `len` deterministic pseudo-random bytes (xorshift64*, seeded by `seed`). Not
/// compressible, so it stands in for both mail bodies and ciphertext.
pub fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A message sealed to a mailbox: everything the store would keep.
pub struct SealedMessage {
    pub id: MessageId,
    pub header: SealedHeader,
    pub chunks: Vec<Vec<u8>>,
    pub plaintext_len: u64,
}

/// Seals `body` for `mailbox` as the service does (format 2, in an epoch of its own),
/// feeding the sealer [`READ_PIECE`] bytes at a time.
pub fn seal(mailbox: &Mailbox, body: &[u8]) -> SealedMessage {
    let id = MessageId::generate_at(gateway::service::system_clock()());
    let (header, mut sealer) = SealingEpochs::default()
        .sealer(&mailbox.keys, &mailbox.id, id, &envelope(), 0)
        .expect("start sealing");
    let mut chunks = Vec::with_capacity(body.len() / gateway::crypto::CHUNK_SIZE + 1);
    for piece in body.chunks(READ_PIECE) {
        sealer
            .push(piece, &mut |chunk| {
                chunks.push(chunk);
                Ok::<_, CryptoError>(())
            })
            .expect("seal chunk");
    }
    let (last, plaintext_len, count) = sealer.finish().expect("seal last chunk");
    chunks.push(last);
    debug_assert_eq!(count as usize, chunks.len());
    SealedMessage {
        id,
        header,
        chunks,
        plaintext_len,
    }
}

/// Opens a sealed message and returns the number of plaintext bytes.
pub fn open(key: &UnsealedKey, message: &SealedMessage) -> u64 {
    let (_, mut opener) = MessageOpener::new(
        key,
        message.id,
        &message.header,
        message.chunks.len() as u32,
    )
    .expect("open header");
    let mut total = 0u64;
    for chunk in &message.chunks {
        total += opener.open_next(chunk.clone()).expect("open chunk").len() as u64;
    }
    debug_assert!(opener.is_complete());
    total
}

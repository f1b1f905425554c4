//! Tables and record encodings. Bump [`SCHEMA_VERSION`] and add a migration in
//! `Store::open` whenever a table or record layout changes.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::crypto::{MessageFormat, MessageId, SealedHeader, SealedKeyPair};
use crate::mailbox::MailboxId;

/// 1: mailboxes, messages, chunks. 2: adds [`RETRIEVED`] (proxy mode). 3: [`RETRIEVED`] keys
/// are HMACs under a secret outside the store (the unkeyed ones of 2 are dropped). 4: adds
/// [`ADMIN`] (starting with the initial password) and [`API_KEYS`]. 5: [`MessageRecord`]s
/// of format 2 ([`MessageFormat::V2`]); nothing to migrate, but a build that knows only 4
/// refuses the store instead of calling new messages corrupt. 6: adds [`PURGE`]; a build
/// that knows only 5 would leave the chunks queued there on the disk for ever, so it refuses
/// the store.
pub const SCHEMA_VERSION: u64 = 6;

/// Store-wide counters and the schema version.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_NEXT_SEQ: &str = "next_message_seq";

/// Mailbox id → JSON [`MailboxRecord`]. Few, small, and read by people debugging: JSON.
pub const MAILBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("mailboxes");

/// (mailbox id, arrival sequence) → binary [`MessageRecord`]. The sequence orders a mailbox's
/// messages by arrival, which is the order POP3 presents them in.
pub const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");

/// (message id, chunk index) → sealed chunk.
pub const CHUNKS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("chunks");

/// Message id → how many of its chunks are still to be removed: those with the indices
/// below it. A message deleted while the disk has room leaves its record at once and its
/// chunks here; the writer removes them when nothing else waits, so a POP3 QUIT does not
/// wait for the pages of every chunk it deletes to be read and freed.
pub const PURGE: TableDefinition<u128, u32> = TableDefinition::new("purge");

/// (mailbox id, retrieval key) → unix milliseconds of the first copy. The POP3 proxy keeps
/// one copy per upstream message; the key is an HMAC-SHA256, under a secret kept outside this
/// file, of a hash of the remote user, the upstream server and the upstream's UIDL, so
/// neither names nor ids are kept in clear and a copy of the file cannot confirm a guess. Entries
/// outlive the copies (an archiver picks those up) so a message left on the upstream is
/// not copied again at the next retrieval.
pub const RETRIEVED: TableDefinition<(&str, &[u8]), u64> = TableDefinition::new("retrieved");

/// Account name → JSON [`AdminRecord`]. One row, [`ADMIN_ACCOUNT`]; a table so that more
/// accounts could follow without a new layout.
pub const ADMIN: TableDefinition<&str, &[u8]> = TableDefinition::new("admin");
/// The administrator's account name, the one key of [`ADMIN`].
pub const ADMIN_ACCOUNT: &str = "admin";

/// API key id → JSON [`ApiKeyRecord`]. The key's secret is not stored, only its hash.
pub const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");

/// The administrator account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRecord {
    /// Argon2id PHC string of the password.
    pub password_hash: String,
    /// Still the initial password of a fresh install, good only to set a new one.
    pub initial: bool,
    /// Unix milliseconds of the last change; `None` while the password is the initial one.
    pub changed_at: Option<u64>,
    /// The web console's language the administrator chose; `None`: the browser's or the
    /// configured default. Absent in records written before the console (hence the default;
    /// records are JSON, so no schema change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<crate::config::Language>,
}

impl AdminRecord {
    /// What a new store (or one upgraded from before accounts existed) starts with.
    pub fn initial() -> Self {
        Self {
            password_hash: crate::crypto::INITIAL_ADMIN_PASSWORD_HASH.to_owned(),
            initial: true,
            changed_at: None,
            language: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("admin records always serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("admin record: {e}")))
    }
}

impl std::fmt::Debug for AdminRecord {
    /// The hash stays out of logs: it is what a guesser would work on.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRecord")
            .field("initial", &self.initial)
            .field("changed_at", &self.changed_at)
            .field("language", &self.language)
            .finish_non_exhaustive()
    }
}

/// An API key as stored: its name and times, and a hash of its secret (see
/// `service::admin` for the key format and the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// Lowercase hex.
    pub secret_hash: String,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix milliseconds, updated at most about once a minute; `None`: never used.
    pub last_used_at: Option<u64>,
}

impl ApiKeyRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("API key records always serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("API key record: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MailboxStatus {
    Active,
    Suspended,
}

impl std::fmt::Display for MailboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MailboxStatus::Active => "active",
            MailboxStatus::Suspended => "suspended",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxRecord {
    pub id: MailboxId,
    pub name: String,
    pub description: String,
    pub status: MailboxStatus,
    /// Unix milliseconds.
    pub created_at: u64,
    pub message_count: u64,
    /// Sum of the plaintext sizes of the stored messages.
    pub message_bytes: u64,
    pub keys: SealedKeyPair,
}

impl serde::Serialize for MailboxId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MailboxId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        MailboxId::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl MailboxRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("mailbox records always serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("mailbox record: {e}")))
    }
}

/// A stored message's metadata. Only the size and arrival time are in clear; the envelope is
/// sealed inside `header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: MessageId,
    /// Unix milliseconds.
    pub received_at: u64,
    /// Plaintext size in bytes (what POP3 LIST reports).
    pub size: u64,
    pub chunk_count: u32,
    pub header: SealedHeader,
}

/// A record's first byte: its layout version, which is also the message's sealing format
/// (the layout is the same for both).
fn record_version(format: MessageFormat) -> u8 {
    match format {
        MessageFormat::V1 => 1,
        MessageFormat::V2 => 2,
    }
}

impl MessageRecord {
    /// Message `n` of a test: every field derived from `n`, with `chunk_count` chunks.
    #[cfg(test)]
    pub(crate) fn sample(n: u8, chunk_count: u32) -> Self {
        Self {
            id: MessageId([n; 16]),
            received_at: 1_700_000_000_000 + u64::from(n),
            size: 1000 * u64::from(n),
            chunk_count,
            header: SealedHeader {
                format: MessageFormat::V2,
                encapped_key: vec![n; 32],
                sealed_envelope: vec![n; 40],
            },
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let h = &self.header;
        let mut out = Vec::with_capacity(48 + h.encapped_key.len() + h.sealed_envelope.len());
        out.push(record_version(h.format));
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.received_at.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.chunk_count.to_be_bytes());
        for field in [&h.encapped_key, &h.sealed_envelope] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let bad = || StoreError::Corrupt("message record".into());
        let mut r = Reader(bytes);
        let format = match r.take(1).ok_or_else(bad)? {
            [1] => MessageFormat::V1,
            [2] => MessageFormat::V2,
            _ => return Err(bad()),
        };
        let id = MessageId(r.array().ok_or_else(bad)?);
        let received_at = u64::from_be_bytes(r.array().ok_or_else(bad)?);
        let size = u64::from_be_bytes(r.array().ok_or_else(bad)?);
        let chunk_count = u32::from_be_bytes(r.array().ok_or_else(bad)?);
        let encapped_key = r.field().ok_or_else(bad)?;
        let sealed_envelope = r.field().ok_or_else(bad)?;
        if !r.0.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            id,
            received_at,
            size,
            chunk_count,
            header: SealedHeader {
                format,
                encapped_key,
                sealed_envelope,
            },
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn field(&mut self) -> Option<Vec<u8>> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        Some(self.take(len)?.to_vec())
    }
}

pub fn chunk_key(id: MessageId, index: u32) -> (u128, u32) {
    (u128::from_be_bytes(id.0), index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A record as format 1 wrote it (before format 2 existed): version 1, id, time, size,
    /// count, then the two length-prefixed fields.
    #[test]
    fn records_written_before_format_2_still_decode_as_format_1() {
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(&[7; 16]);
        bytes.extend_from_slice(&5u64.to_be_bytes());
        bytes.extend_from_slice(&10u64.to_be_bytes());
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(&32u32.to_be_bytes());
        bytes.extend_from_slice(&[0xEE; 32]);
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(b"env");
        let record = MessageRecord::decode(&bytes).unwrap();
        assert_eq!(record.header.format, MessageFormat::V1);
        assert_eq!(record.header.encapped_key, vec![0xEE; 32]);
        assert_eq!(record.encode(), bytes, "re-encoded unchanged");
        bytes[0] = 2;
        assert_eq!(
            MessageRecord::decode(&bytes).unwrap().header.format,
            MessageFormat::V2
        );
        bytes[0] = 3;
        assert!(MessageRecord::decode(&bytes).is_err(), "an unknown format");
    }

    proptest! {
        #[test]
        fn message_records_round_trip(id: [u8; 16], at: u64, size: u64, count: u32,
                                      v2: bool,
                                      enc in proptest::collection::vec(any::<u8>(), 0..64),
                                      env in proptest::collection::vec(any::<u8>(), 0..300)) {
            let format = if v2 { MessageFormat::V2 } else { MessageFormat::V1 };
            let rec = MessageRecord { id: MessageId(id), received_at: at, size, chunk_count: count,
                header: SealedHeader { format, encapped_key: enc, sealed_envelope: env } };
            prop_assert_eq!(MessageRecord::decode(&rec.encode()).unwrap(), rec);
        }

        #[test]
        fn damaged_message_records_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MessageRecord::decode(&bytes);
        }
    }
}

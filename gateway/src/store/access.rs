//! The storage boundary: what the service layer may read and write, whatever the backend.
//!
//! The service's rules (a mailbox must be active to take mail, one copy per retrieval key,
//! a password reset needs an empty suspended mailbox, ...) are written once, as closures over
//! these two traits, and run inside a backend's transaction: [`Reads`] in a snapshot or a
//! write, [`Writes`] in a group commit ([`super::Store::write`]). A backend implements them
//! for its transaction types; the redb backend is `redb_access`. Inside a write, the reads
//! see that write's own changes, and a backend must make a check and the writes that depend
//! on it one atomic step (redb has one writer; a shared database needs row locks).
//!
//! Every method is synchronous: the closures run on the store's writer, and a snapshot's
//! reads are short lookups.

use crate::crypto::MessageId;
use crate::mailbox::MailboxId;

use super::coordination::Lease;
use super::{AdminRecord, ApiKeyRecord, MailboxRecord, MessageRecord, StoreError};

/// Lookups, in a snapshot or inside a write.
pub trait Reads {
    fn mailbox(&self, id: &MailboxId) -> Result<Option<MailboxRecord>, StoreError>;

    /// Every mailbox, by id.
    fn mailboxes(&self) -> Result<Vec<MailboxRecord>, StoreError>;

    /// A mailbox's messages in arrival order, with their sequence numbers.
    fn messages(&self, id: &MailboxId) -> Result<Vec<(u64, MessageRecord)>, StoreError>;

    /// One message's record, by arrival sequence.
    fn message(&self, id: &MailboxId, seq: u64) -> Result<Option<MessageRecord>, StoreError>;

    /// Arrival time (unix milliseconds) of the mailbox's oldest stored message.
    fn oldest_message_at(&self, id: &MailboxId) -> Result<Option<u64>, StoreError>;

    /// One sealed chunk of a message; a missing chunk is [`StoreError::Corrupt`].
    fn chunk(&self, id: MessageId, index: u32) -> Result<Vec<u8>, StoreError>;

    /// Whether the POP3 proxy already stored a copy under this retrieval key.
    fn retrieved(&self, mailbox: &MailboxId, key: &[u8]) -> Result<bool, StoreError>;

    /// The administrator account (present in every opened store).
    fn admin(&self) -> Result<AdminRecord, StoreError>;

    fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every API key, by id.
    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// How many API keys exist.
    fn api_key_count(&self) -> Result<u64, StoreError>;
}

/// Changes, inside a [`super::Store::write`] closure. Nothing is visible to others, or
/// durable, before the group commit returns.
pub trait Writes: Reads {
    fn put_mailbox(&self, record: &MailboxRecord) -> Result<(), StoreError>;

    fn remove_mailbox(&self, id: &MailboxId) -> Result<(), StoreError>;

    fn put_admin(&self, record: &AdminRecord) -> Result<(), StoreError>;

    fn put_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError>;

    /// Removes an API key; whether it existed.
    fn remove_api_key(&self, id: &str) -> Result<bool, StoreError>;

    /// Allocates the next arrival sequence number (store-wide, so it never repeats).
    fn next_seq(&self) -> Result<u64, StoreError>;

    fn put_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
        record: &MessageRecord,
    ) -> Result<(), StoreError>;

    fn put_chunk(&self, id: MessageId, index: u32, sealed: &[u8]) -> Result<(), StoreError>;

    /// Removes a message and its chunks; returns its record if it existed.
    fn remove_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError>;

    /// Removes a message like [`Writes::remove_message`], but where the backend has a purge
    /// queue (redb) leaves its chunks there for [`Writes::purge_chunks`]: no reader can reach
    /// them once the record is gone, and removing them costs a read of every chunk's page.
    fn retire_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.remove_message(mailbox, seq)
    }

    /// Removes at most `budget` chunks of retired messages; whether any are left.
    fn purge_chunks(&self, _budget: u32) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn put_retrieved(
        &self,
        mailbox: &MailboxId,
        key: &[u8],
        at_millis: u64,
    ) -> Result<(), StoreError>;

    /// Forgets every retrieval key of a mailbox (when the mailbox is deleted).
    fn remove_retrieved(&self, mailbox: &MailboxId) -> Result<(), StoreError>;

    /// The fence of a POP3 UPDATE: whether `lease` still holds its maildrop, checked inside
    /// the write so that no other session can take the maildrop before this write commits.
    /// On the embedded store one node is all there is and its in-process lock is the fence:
    /// always true.
    fn holds_lease(&self, lease: &Lease) -> Result<bool, StoreError>;

    /// The redb transaction underneath, for tests that must do what no rule allows (damage a
    /// message, put back an old schema). `None` on other backends. Integration tests build
    /// without `test-support`, so this cannot be behind it; `cargo xtask tidy` refuses a call
    /// outside tests.
    #[doc(hidden)]
    fn redb_for_tests(&self) -> Option<&redb::WriteTransaction> {
        None
    }
}

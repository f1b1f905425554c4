//! The storage boundary ([`Reads`], [`Writes`]) on redb: the tables of `schema` in a read or
//! write transaction. Reads are written once, for whichever transaction opens the tables.

use redb::{
    Key, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, Value,
    WriteTransaction,
};

use super::access::{Reads, Writes};
use super::coordination::Lease;
use super::schema::{
    self, ADMIN, ADMIN_ACCOUNT, API_KEYS, CHUNKS, MAILBOXES, MESSAGES, META, PURGE, RETRIEVED,
};
use super::{AdminRecord, ApiKeyRecord, MailboxRecord, MessageRecord, StoreError};
use crate::crypto::MessageId;
use crate::mailbox::MailboxId;

/// A redb transaction the tables can be read through: a snapshot or a write.
pub(super) trait Tables {
    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError>;
}

impl Tables for ReadTransaction {
    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(definition)?)
    }
}

impl Tables for WriteTransaction {
    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(definition)?)
    }
}

/// Every record of a table keyed by name, decoded, in key order.
fn decode_all<T>(
    txn: &impl Tables,
    definition: TableDefinition<&'static str, &'static [u8]>,
    decode: fn(&[u8]) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let table = txn.table(definition)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (_, value) = entry?;
        out.push(decode(value.value())?);
    }
    Ok(out)
}

/// Removes a message's record; the record if it existed.
fn remove_record(
    txn: &WriteTransaction,
    mailbox: &MailboxId,
    seq: u64,
) -> Result<Option<MessageRecord>, StoreError> {
    txn.open_table(MESSAGES)?
        .remove((mailbox.as_str(), seq))?
        .map(|v| MessageRecord::decode(v.value()))
        .transpose()
}

fn missing_admin() -> StoreError {
    StoreError::Corrupt("the administrator account is missing".into())
}

impl<T: Tables> Reads for T {
    fn mailbox(&self, id: &MailboxId) -> Result<Option<MailboxRecord>, StoreError> {
        let table = self.table(MAILBOXES)?;
        let value = table.get(id.as_str())?;
        value.map(|v| MailboxRecord::decode(v.value())).transpose()
    }

    fn mailboxes(&self) -> Result<Vec<MailboxRecord>, StoreError> {
        decode_all(self, MAILBOXES, MailboxRecord::decode)
    }

    fn messages(&self, id: &MailboxId) -> Result<Vec<(u64, MessageRecord)>, StoreError> {
        let table = self.table(MESSAGES)?;
        let mut out = Vec::new();
        for entry in table.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))? {
            let (key, value) = entry?;
            out.push((key.value().1, MessageRecord::decode(value.value())?));
        }
        Ok(out)
    }

    fn message(&self, id: &MailboxId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        let table = self.table(MESSAGES)?;
        let value = table.get((id.as_str(), seq))?;
        value.map(|v| MessageRecord::decode(v.value())).transpose()
    }

    /// The first row of the mailbox's range, so one lookup whatever the mailbox holds.
    fn oldest_message_at(&self, id: &MailboxId) -> Result<Option<u64>, StoreError> {
        let table = self.table(MESSAGES)?;
        let first = table
            .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?
            .next()
            .transpose()?;
        first
            .map(|(_, value)| MessageRecord::decode(value.value()).map(|r| r.received_at))
            .transpose()
    }

    fn chunk(&self, id: MessageId, index: u32) -> Result<Vec<u8>, StoreError> {
        let table = self.table(CHUNKS)?;
        let value = table
            .get(schema::chunk_key(id, index))?
            .ok_or_else(|| StoreError::Corrupt(format!("message {id} lacks chunk {index}")))?;
        Ok(value.value().to_vec())
    }

    fn retrieved(&self, mailbox: &MailboxId, key: &[u8]) -> Result<bool, StoreError> {
        let table = self.table(RETRIEVED)?;
        let found = table.get((mailbox.as_str(), key))?.is_some();
        Ok(found)
    }

    fn admin(&self) -> Result<AdminRecord, StoreError> {
        let table = self.table(ADMIN)?;
        let value = table.get(ADMIN_ACCOUNT)?.ok_or_else(missing_admin)?;
        AdminRecord::decode(value.value())
    }

    fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let table = self.table(API_KEYS)?;
        let value = table.get(id)?;
        value.map(|v| ApiKeyRecord::decode(v.value())).transpose()
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        decode_all(self, API_KEYS, ApiKeyRecord::decode)
    }

    fn api_key_count(&self) -> Result<u64, StoreError> {
        Ok(self.table(API_KEYS)?.len()?)
    }
}

impl Writes for WriteTransaction {
    fn put_mailbox(&self, record: &MailboxRecord) -> Result<(), StoreError> {
        let mut table = self.open_table(MAILBOXES)?;
        table.insert(record.id.as_str(), record.encode().as_slice())?;
        Ok(())
    }

    fn remove_mailbox(&self, id: &MailboxId) -> Result<(), StoreError> {
        let mut table = self.open_table(MAILBOXES)?;
        table.remove(id.as_str())?;
        Ok(())
    }

    fn put_admin(&self, record: &AdminRecord) -> Result<(), StoreError> {
        let mut table = self.open_table(ADMIN)?;
        table.insert(ADMIN_ACCOUNT, record.encode().as_slice())?;
        Ok(())
    }

    fn put_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut table = self.open_table(API_KEYS)?;
        table.insert(record.id.as_str(), record.encode().as_slice())?;
        Ok(())
    }

    fn remove_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let mut table = self.open_table(API_KEYS)?;
        let removed = table.remove(id)?.is_some();
        Ok(removed)
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        let mut meta = self.open_table(META)?;
        let seq = meta
            .get(schema::META_NEXT_SEQ)?
            .map(|v| v.value())
            .unwrap_or(1);
        meta.insert(schema::META_NEXT_SEQ, seq + 1)?;
        Ok(seq)
    }

    fn put_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
        record: &MessageRecord,
    ) -> Result<(), StoreError> {
        let mut table = self.open_table(MESSAGES)?;
        table.insert((mailbox.as_str(), seq), record.encode().as_slice())?;
        Ok(())
    }

    fn put_chunk(&self, id: MessageId, index: u32, sealed: &[u8]) -> Result<(), StoreError> {
        let mut table = self.open_table(CHUNKS)?;
        table.insert(schema::chunk_key(id, index), sealed)?;
        Ok(())
    }

    fn remove_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let Some(record) = remove_record(self, mailbox, seq)? else {
            return Ok(None);
        };
        let mut chunks = self.open_table(CHUNKS)?;
        for index in 0..record.chunk_count {
            chunks.remove(schema::chunk_key(record.id, index))?;
        }
        Ok(Some(record))
    }

    fn retire_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let Some(record) = remove_record(self, mailbox, seq)? else {
            return Ok(None);
        };
        if record.chunk_count > 0 {
            let (id, _) = schema::chunk_key(record.id, 0);
            self.open_table(PURGE)?.insert(id, record.chunk_count)?;
        }
        Ok(Some(record))
    }

    fn purge_chunks(&self, budget: u32) -> Result<bool, StoreError> {
        let mut queue = self.open_table(PURGE)?;
        let mut chunks = self.open_table(CHUNKS)?;
        let mut left = budget;
        while left > 0 {
            // Newest message first (ids begin with their arrival time): its pages are the
            // likeliest still in the cache from the retrieval that preceded the deletion.
            let Some((id, count)) = queue.last()?.map(|(k, v)| (k.value(), v.value())) else {
                return Ok(false);
            };
            // From the last chunk down, so the entry always names the chunks still there.
            let rest = count.saturating_sub(left);
            for index in rest..count {
                chunks.remove((id, index))?;
            }
            if rest == 0 {
                queue.remove(id)?;
            } else {
                queue.insert(id, rest)?;
            }
            left -= count - rest;
        }
        Ok(!queue.is_empty()?)
    }

    fn put_retrieved(
        &self,
        mailbox: &MailboxId,
        key: &[u8],
        at_millis: u64,
    ) -> Result<(), StoreError> {
        let mut table = self.open_table(RETRIEVED)?;
        table.insert((mailbox.as_str(), key), at_millis)?;
        Ok(())
    }

    fn remove_retrieved(&self, mailbox: &MailboxId) -> Result<(), StoreError> {
        let mut table = self.open_table(RETRIEVED)?;
        // Keys are HMAC-SHA256 outputs (32 bytes); 33 bytes of 0xff sort after all of them.
        let upper = [0xffu8; 33];
        table.retain_in(
            (mailbox.as_str(), &[][..])..=(mailbox.as_str(), &upper[..]),
            |_, _| false,
        )?;
        Ok(())
    }

    fn redb_for_tests(&self) -> Option<&WriteTransaction> {
        Some(self)
    }

    /// One node: its in-process maildrop lock is the fence (see [`Writes::holds_lease`]).
    fn holds_lease(&self, _: &Lease) -> Result<bool, StoreError> {
        Ok(true)
    }
}

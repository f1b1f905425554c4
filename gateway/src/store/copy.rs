//! A consistent copy of the whole store into a new database file, while the gateway runs.
//!
//! The copy reads everything through one redb read transaction, so it sees the store as one
//! commit left it: a message is in it with all its chunks or not at all, whatever the writer
//! commits meanwhile (redb keeps the pages that transaction sees until it ends). It writes a
//! fresh database rather than copying the file's bytes: the live file changes under a byte
//! copy, and a fresh file holds no freed pages.

use std::path::Path;

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableTable, ReadableTableMetadata,
    TableDefinition, Value,
};

use super::schema::{
    ADMIN, API_KEYS, CHUNKS, MAILBOXES, MESSAGES, META, META_SCHEMA_VERSION, RETRIEVED,
};
use super::{create_private, Store, StoreError};

/// Rows written per transaction of the copy: bounds the memory a copy of a large store
/// holds before it reaches the file (chunks are at most a few tens of KiB).
const ROWS_PER_TRANSACTION: usize = 256;

/// What a copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyCounts {
    pub schema_version: u64,
    pub mailboxes: u64,
    pub messages: u64,
}

impl Store {
    /// Writes a consistent copy of the store to `dest` (a new file, created 0600; an existing
    /// one is an error) and syncs it. `progress` is told the rows copied so far and the total.
    /// The live store keeps taking writes throughout.
    pub fn copy_to(
        &self,
        dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CopyCounts, StoreError> {
        let snapshot = self.redb_snapshot()?;
        copy_snapshot(&snapshot, dest, progress)
    }
}

/// [`Store::copy_to`] on a read transaction.
fn copy_snapshot(
    src: &ReadTransaction,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyCounts, StoreError> {
    if dest.exists() {
        return Err(StoreError::Io(format!(
            "{} exists already; a copy is only written to a new file",
            dest.display()
        )));
    }
    let counts = CopyCounts {
        schema_version: src
            .open_table(META)?
            .get(META_SCHEMA_VERSION)?
            .map(|v| v.value())
            .ok_or_else(|| StoreError::Corrupt("the schema version is missing".into()))?,
        mailboxes: src.open_table(MAILBOXES)?.len()?,
        messages: src.open_table(MESSAGES)?.len()?,
    };
    let total = src.open_table(META)?.len()?
        + counts.mailboxes
        + counts.messages
        + src.open_table(CHUNKS)?.len()?
        + src.open_table(RETRIEVED)?.len()?
        + src.open_table(ADMIN)?.len()?
        + src.open_table(API_KEYS)?.len()?;
    create_private(dest)?;
    // A small cache: the copy writes each page once and reads none back.
    let db = Database::builder()
        .set_cache_size(16 * 1024 * 1024)
        .create(dest)?;
    let mut done = 0u64;
    let mut report = |n: u64| {
        done += n;
        progress(done, total);
    };
    copy_table(src, &db, META, &mut report)?;
    copy_table(src, &db, MAILBOXES, &mut report)?;
    copy_table(src, &db, MESSAGES, &mut report)?;
    copy_table(src, &db, CHUNKS, &mut report)?;
    copy_table(src, &db, RETRIEVED, &mut report)?;
    copy_table(src, &db, ADMIN, &mut report)?;
    copy_table(src, &db, API_KEYS, &mut report)?;
    // The batches above are not durable on their own; this empty commit syncs them all.
    let txn = db.begin_write()?;
    txn.commit()?;
    drop(db);
    std::fs::File::open(dest)?.sync_all()?;
    Ok(counts)
}

/// Copies one table (created even when empty) in transactions of a bounded size.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dest: &Database,
    table: TableDefinition<K, V>,
    report: &mut dyn FnMut(u64),
) -> Result<(), StoreError> {
    let source = src.open_table(table)?;
    let mut rows = source.iter()?.peekable();
    loop {
        let mut txn = dest.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut copied = 0;
        {
            let mut target = txn.open_table(table)?;
            while copied < ROWS_PER_TRANSACTION {
                let Some(row) = rows.next() else { break };
                let (key, value) = row?;
                target.insert(key.value(), value.value())?;
                copied += 1;
            }
        }
        txn.commit()?;
        report(copied as u64);
        if rows.peek().is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreOptions;
    use super::*;
    use crate::mailbox::MailboxId;
    use redb::ReadableDatabase;

    fn open(path: &Path) -> Store {
        Store::open(path, &StoreOptions::default()).unwrap()
    }

    #[test]
    fn a_copy_holds_every_table_row_for_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("live.redb"));
        let mailbox = MailboxId::generate();
        // More rows than one copy transaction takes, so the batching is crossed.
        store
            .write_blocking(move |t| {
                for i in 0..(ROWS_PER_TRANSACTION as u32 * 2 + 7) {
                    let id = crate::crypto::MessageId([i as u8; 16]);
                    t.put_chunk(id, i, &[i as u8; 40])?;
                }
                t.put_retrieved(&mailbox, &[9; 32], 42)?;
                t.next_seq()?;
                Ok(())
            })
            .unwrap();
        let dest = dir.path().join("copy.redb");
        let mut reports = Vec::new();
        let counts = store
            .copy_to(&dest, &mut |done, total| reports.push((done, total)))
            .unwrap();
        assert_eq!(counts.schema_version, super::super::SCHEMA_VERSION);
        let (done, total) = *reports.last().unwrap();
        assert_eq!(done, total, "the last report is complete");
        assert!(reports.windows(2).all(|w| w[0].0 <= w[1].0));

        let live = store.redb_snapshot().unwrap();
        let copy = Database::open(&dest).unwrap();
        let copy = copy.begin_read().unwrap();
        let chunks = |t: &ReadTransaction| -> Vec<((u128, u32), Vec<u8>)> {
            t.open_table(CHUNKS)
                .unwrap()
                .iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value(), v.value().to_vec())
                })
                .collect()
        };
        assert_eq!(chunks(&copy), chunks(&live));
        assert_eq!(
            copy.open_table(RETRIEVED).unwrap().len().unwrap(),
            1,
            "the proxy's one-copy records come along"
        );
        assert_eq!(
            copy.open_table(META)
                .unwrap()
                .get(super::super::schema::META_NEXT_SEQ)
                .unwrap()
                .unwrap()
                .value(),
            2,
            "the sequence continues where the store was, so ids never repeat"
        );
        assert_eq!(copy.open_table(ADMIN).unwrap().len().unwrap(), 1);
    }

    #[test]
    fn a_copy_is_the_store_as_one_commit_left_it_whatever_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("live.redb"));
        store.write_blocking(|t| t.next_seq()).unwrap();
        let snapshot = store.redb_snapshot().unwrap();
        // Written after the snapshot began: not in the copy.
        store.write_blocking(|t| t.next_seq()).unwrap();
        let dest = dir.path().join("copy.redb");
        copy_snapshot(&snapshot, &dest, &mut |_, _| {}).unwrap();
        drop(snapshot);
        let copy = open(&dest);
        assert_eq!(
            copy.write_blocking(|t| t.next_seq()).unwrap().value,
            2,
            "the copy opens as a store, at the first commit"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_copy_is_private_and_never_overwrites_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("live.redb"));
        let dest = dir.path().join("copy.redb");
        store.copy_to(&dest, &mut |_, _| {}).unwrap();
        assert_eq!(crate::fs::mode(&dest), 0o600);
        let again = store.copy_to(&dest, &mut |_, _| {});
        assert!(matches!(again, Err(StoreError::Io(_))), "{again:?}");
    }
}

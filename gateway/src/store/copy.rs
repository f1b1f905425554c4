//! A consistent copy of the whole store into a new database file, while the gateway runs.
//!
//! The copy reads everything through one redb read transaction, so it sees the store as one
//! commit left it: a message is in it with all its chunks or not at all, whatever the writer
//! commits meanwhile (redb keeps the pages that transaction sees until it ends). It writes a
//! fresh database rather than copying the file's bytes: the live file changes under a byte
//! copy, and a fresh file holds no freed pages.

use std::path::Path;

use super::transfer::{self, RedbSink, RedbSource, Source, Table};
use super::{Backend, Store, StoreError, SCHEMA_VERSION};

/// What a copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyCounts {
    /// The copy's redb schema version (a copy is a redb file whatever the backend).
    pub schema_version: u64,
    pub mailboxes: u64,
    pub messages: u64,
}

impl Store {
    /// Writes a consistent copy of the store to `dest` (a new redb file, created 0600; an
    /// existing one is an error) and syncs it. `progress` is told the rows copied so far and
    /// the total. The live store keeps taking writes throughout. A store on PostgreSQL is
    /// read in one `REPEATABLE READ` transaction and copied into the same redb format, so a
    /// backup is one format whatever the backend (`gateway store copy` moves it back).
    pub fn copy_to(
        &self,
        dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CopyCounts, StoreError> {
        let mut source = self.transfer_source()?;
        copy_source(&mut *source, dest, progress)
    }

    /// One consistent view of every row, for a copy.
    pub fn transfer_source(&self) -> Result<Box<dyn Source>, StoreError> {
        match &self.inner.backend {
            Backend::Redb(db) => Ok(Box::new(RedbSource::new(super::redb_snapshot(db)?))),
            Backend::Shared(reads) => reads.transfer_source(),
        }
    }
}

/// [`Store::copy_to`] from a source; a failed copy leaves no file behind.
fn copy_source(
    source: &mut dyn Source,
    dest: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyCounts, StoreError> {
    let mut sink = RedbSink::create(dest)?;
    match transfer::copy(source, &mut sink, progress) {
        Ok(summary) => Ok(CopyCounts {
            schema_version: SCHEMA_VERSION,
            mailboxes: summary.rows(Table::Mailboxes),
            messages: summary.rows(Table::Messages),
        }),
        Err(e) => {
            drop(sink);
            let _ = std::fs::remove_file(dest);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::StoreOptions;
    use super::*;
    use crate::mailbox::MailboxId;
    use crate::store::schema::{ADMIN, CHUNKS, META, PURGE, RETRIEVED};
    use crate::store::transfer::BATCH_ROWS;
    use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};

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
                for i in 0..(BATCH_ROWS as u32 * 2 + 7) {
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

        let live = super::super::redb_snapshot(store.redb().unwrap()).unwrap();
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
        let snapshot = super::super::redb_snapshot(store.redb().unwrap()).unwrap();
        // Written after the snapshot began: not in the copy.
        store.write_blocking(|t| t.next_seq()).unwrap();
        let dest = dir.path().join("copy.redb");
        copy_source(&mut RedbSource::new(snapshot), &dest, &mut |_, _| {}).unwrap();
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

    #[test]
    fn a_copy_leaves_out_the_chunks_waiting_in_the_purge_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.redb");
        drop(open(&path));
        // The file without a writer, so no purge runs while the queue is looked at.
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut chunks = txn.open_table(CHUNKS).unwrap();
            for (id, count) in [(1u128, 3u32), (2, 2), (3, 4)] {
                for index in 0..count {
                    chunks.insert((id, index), &[id as u8; 8][..]).unwrap();
                }
            }
            // Message 1 retired whole, 3 half purged (its chunks 0 and 1 are left).
            let mut queue = txn.open_table(PURGE).unwrap();
            queue.insert(1, 3).unwrap();
            chunks.remove((3, 3)).unwrap();
            chunks.remove((3, 2)).unwrap();
            queue.insert(3, 2).unwrap();
        }
        txn.commit().unwrap();
        let mut source = RedbSource::new(db.begin_read().unwrap());
        assert_eq!(
            source.count(Table::Chunks).unwrap(),
            2,
            "only message 2's chunks"
        );
        let dest = dir.path().join("copy.redb");
        copy_source(&mut source, &dest, &mut |_, _| {}).unwrap();
        let copy = Database::open(&dest).unwrap();
        let copy = copy.begin_read().unwrap();
        let keys: Vec<(u128, u32)> = copy
            .open_table(CHUNKS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value())
            .collect();
        assert_eq!(keys, [(2, 0), (2, 1)]);
    }
}

//! Every row of a store, moved between backends: `gateway store copy` (redb ⇄ PostgreSQL)
//! and [`Store::copy_to`](super::Store::copy_to) (backups, always a redb file).
//!
//! A [`Source`] reads one consistent view of a store (redb: one read transaction;
//! PostgreSQL: one `REPEATABLE READ READ ONLY` transaction) table by table, in key order, in
//! batches of at most [`BATCH_ROWS`] rows, so a copy never holds more than a batch of chunks
//! in memory. A [`Sink`] writes the batches to a new store. The rows are the records'
//! bytes, never decoded: sealed messages stay sealed, and a copy is byte for byte.
//!
//! [`copy`] returns a [`Summary`] of what it read (rows per table, a SHA-256 over each
//! table's rows in key order, and the arrival counter); [`summarise`] computes the same by
//! reading a store back, and [`verify`] compares the two.

use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use sha2::{Digest, Sha256};

use super::schema::{
    ADMIN, API_KEYS, CHUNKS, MAILBOXES, MESSAGES, META, META_NEXT_SEQ, META_SCHEMA_VERSION, PURGE,
    RETRIEVED, SCHEMA_VERSION,
};
use super::StoreError;

/// Rows per batch: bounds the memory a copy holds (chunks are at most about 64 KiB each).
pub const BATCH_ROWS: usize = 256;

/// The tables a copy moves, in the order it moves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Mailboxes,
    Messages,
    Chunks,
    Retrieved,
    Admin,
    ApiKeys,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Mailboxes,
        Table::Messages,
        Table::Chunks,
        Table::Retrieved,
        Table::Admin,
        Table::ApiKeys,
    ];

    /// The table's name in both backends.
    pub fn name(self) -> &'static str {
        match self {
            Table::Mailboxes => "mailboxes",
            Table::Messages => "messages",
            Table::Chunks => "chunks",
            Table::Retrieved => "retrieved",
            Table::Admin => "admin",
            Table::ApiKeys => "api_keys",
        }
    }
}

/// One row of one table, as stored: keys as typed values, records as their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Mailbox {
        id: String,
        record: Vec<u8>,
    },
    Message {
        mailbox: String,
        seq: u64,
        record: Vec<u8>,
    },
    Chunk {
        message: [u8; 16],
        index: u32,
        sealed: Vec<u8>,
    },
    Retrieved {
        mailbox: String,
        key: Vec<u8>,
        at_millis: u64,
    },
    Admin {
        account: String,
        record: Vec<u8>,
    },
    ApiKey {
        id: String,
        record: Vec<u8>,
    },
}

impl Row {
    pub fn table(&self) -> Table {
        match self {
            Row::Mailbox { .. } => Table::Mailboxes,
            Row::Message { .. } => Table::Messages,
            Row::Chunk { .. } => Table::Chunks,
            Row::Retrieved { .. } => Table::Retrieved,
            Row::Admin { .. } => Table::Admin,
            Row::ApiKey { .. } => Table::ApiKeys,
        }
    }

    /// Feeds the row to a digest, every field length-prefixed so no two rows feed the same.
    fn digest(&self, hash: &mut Sha256) {
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        match self {
            Row::Mailbox { id, record } | Row::ApiKey { id, record } => {
                field(id.as_bytes());
                field(record);
            }
            Row::Admin { account, record } => {
                field(account.as_bytes());
                field(record);
            }
            Row::Message {
                mailbox,
                seq,
                record,
            } => {
                field(mailbox.as_bytes());
                field(&seq.to_be_bytes());
                field(record);
            }
            Row::Chunk {
                message,
                index,
                sealed,
            } => {
                field(message);
                field(&index.to_be_bytes());
                field(sealed);
            }
            Row::Retrieved {
                mailbox,
                key,
                at_millis,
            } => {
                field(mailbox.as_bytes());
                field(key);
                field(&at_millis.to_be_bytes());
            }
        }
    }
}

/// One consistent view of a store, read table by table.
pub trait Source {
    /// How many rows `table` holds.
    fn count(&mut self, table: Table) -> Result<u64, StoreError>;

    /// Hands `table`'s rows to `batch` in key order, at most [`BATCH_ROWS`] at a time.
    fn rows(
        &mut self,
        table: Table,
        batch: &mut dyn FnMut(Vec<Row>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The next arrival sequence number the store would hand out.
    fn next_seq(&mut self) -> Result<u64, StoreError>;
}

/// A new, empty store being filled.
pub trait Sink {
    /// Writes one batch of rows of one table.
    fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError>;

    /// Sets the arrival counter and makes everything durable.
    fn finish(&mut self, next_seq: u64) -> Result<(), StoreError>;
}

/// Rows and SHA-256 of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSummary {
    pub table: Table,
    pub rows: u64,
    pub sha256: [u8; 32],
}

/// What a store holds, as [`copy`] read it or [`summarise`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// In [`Table::ALL`]'s order.
    pub tables: Vec<TableSummary>,
    pub next_seq: u64,
}

impl Summary {
    pub fn rows(&self, table: Table) -> u64 {
        self.tables
            .iter()
            .find(|t| t.table == table)
            .map_or(0, |t| t.rows)
    }

    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Why a copy does not match its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the copy differs from its source: {}", .0.join("; "))]
pub struct Mismatch(pub Vec<String>);

/// Copies every row of `source` into `sink`, then the arrival counter. `progress` is told
/// the rows copied so far and the total. Returns what was read.
pub fn copy(
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Summary, StoreError> {
    let mut total = 0;
    for table in Table::ALL {
        total += source.count(table)?;
    }
    let mut done = 0;
    let summary = walk(source, &mut |rows| {
        done += rows.len() as u64;
        sink.write(rows)?;
        progress(done, total);
        Ok(())
    })?;
    sink.finish(summary.next_seq)?;
    Ok(summary)
}

/// Reads every row of `source` and summarises it.
pub fn summarise(source: &mut dyn Source) -> Result<Summary, StoreError> {
    walk(source, &mut |_| Ok(()))
}

/// Reads `copy` back and compares it with what [`copy`] read from the source.
pub fn verify(
    expected: &Summary,
    copy: &mut dyn Source,
) -> Result<Result<(), Mismatch>, StoreError> {
    let found = summarise(copy)?;
    let mut differences = Vec::new();
    for (want, got) in expected.tables.iter().zip(&found.tables) {
        if want.rows != got.rows {
            differences.push(format!(
                "{}: {} rows, the source {}",
                want.table.name(),
                got.rows,
                want.rows
            ));
        } else if want.sha256 != got.sha256 {
            differences.push(format!("{}: the rows' SHA-256 differs", want.table.name()));
        }
    }
    if expected.next_seq != found.next_seq {
        differences.push(format!(
            "the arrival counter is {}, the source's {}",
            found.next_seq, expected.next_seq
        ));
    }
    Ok(if differences.is_empty() {
        Ok(())
    } else {
        Err(Mismatch(differences))
    })
}

/// Every table's rows through `visit`, summarised; the counter last (on a shared database
/// it may move meanwhile, and read last it is past every row read).
fn walk(
    source: &mut dyn Source,
    visit: &mut dyn FnMut(Vec<Row>) -> Result<(), StoreError>,
) -> Result<Summary, StoreError> {
    let mut tables = Vec::with_capacity(Table::ALL.len());
    for table in Table::ALL {
        let mut hash = Sha256::new();
        let mut rows = 0u64;
        source.rows(table, &mut |batch| {
            for row in &batch {
                if row.table() != table {
                    return Err(StoreError::Internal(format!(
                        "a {} row among the {} rows",
                        row.table().name(),
                        table.name()
                    )));
                }
                row.digest(&mut hash);
            }
            rows += batch.len() as u64;
            visit(batch)
        })?;
        tables.push(TableSummary {
            table,
            rows,
            sha256: hash.finalize().into(),
        });
    }
    Ok(Summary {
        tables,
        next_seq: source.next_seq()?,
    })
}

/// A redb store read through one read transaction: a live store's snapshot, or a file
/// opened read-only.
pub struct RedbSource {
    txn: ReadTransaction,
}

impl RedbSource {
    pub fn new(txn: ReadTransaction) -> Self {
        Self { txn }
    }

    /// Opens a store file read-only (nothing is written to it, not even a migration). A
    /// file a running gateway holds is [`StoreError::Locked`]; an older schema, or a file
    /// that needs the recovery a crash leaves to the next open, must be opened by the
    /// gateway first (`gateway store migrate`).
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Io(format!("{} is not a file", path.display())));
        }
        let db = redb::ReadOnlyDatabase::open(path).map_err(|e| match e {
            redb::DatabaseError::RepairAborted => StoreError::Outdated(format!(
                "{} was not closed cleanly; open it with the gateway once (`gateway store \
                 migrate`) so it recovers, then copy it",
                path.display()
            )),
            other => other.into(),
        })?;
        let txn = db.begin_read()?;
        let version = match txn.open_table(META) {
            Ok(meta) => meta.get(META_SCHEMA_VERSION)?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        match version {
            Some(SCHEMA_VERSION) => Ok(Self { txn }),
            Some(found) if found > SCHEMA_VERSION => Err(StoreError::TooNew {
                found,
                supported: SCHEMA_VERSION,
            }),
            found => Err(StoreError::Outdated(format!(
                "{} has schema version {}, not {SCHEMA_VERSION}; open it with this gateway \
                 once (`gateway store migrate`) so it is upgraded, then copy it",
                path.display(),
                found.map_or("none".to_owned(), |v| v.to_string())
            ))),
        }
    }

    /// Retired messages whose chunks still wait in the purge queue: id → how many. (A copy
    /// this module wrote has no queue until the gateway first opens it.)
    fn retired(&self) -> Result<std::collections::HashMap<u128, u32>, StoreError> {
        let mut retired = std::collections::HashMap::new();
        let queue = match self.txn.open_table(PURGE) {
            Ok(queue) => queue,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(retired),
            Err(e) => return Err(e.into()),
        };
        for entry in queue.iter()? {
            let (id, count) = entry?;
            retired.insert(id.value(), count.value());
        }
        Ok(retired)
    }

    /// Every row of a table, as `row` turns it into one (`None`: left out).
    fn each<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
        row: impl Fn(K::SelfType<'_>, V::SelfType<'_>) -> Option<Row>,
        batch: &mut dyn FnMut(Vec<Row>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let table = self.txn.open_table(definition)?;
        let mut rows = Vec::with_capacity(BATCH_ROWS);
        for entry in table.iter()? {
            let (key, value) = entry?;
            rows.extend(row(key.value(), value.value()));
            if rows.len() == BATCH_ROWS {
                batch(std::mem::replace(&mut rows, Vec::with_capacity(BATCH_ROWS)))?;
            }
        }
        if !rows.is_empty() {
            batch(rows)?;
        }
        Ok(())
    }
}

impl Source for RedbSource {
    fn count(&mut self, table: Table) -> Result<u64, StoreError> {
        let txn = &self.txn;
        Ok(match table {
            Table::Mailboxes => txn.open_table(MAILBOXES)?.len()?,
            Table::Messages => txn.open_table(MESSAGES)?.len()?,
            Table::Chunks => {
                let retired: u64 = self.retired()?.values().map(|&n| u64::from(n)).sum();
                self.txn.open_table(CHUNKS)?.len()?.saturating_sub(retired)
            }
            Table::Retrieved => txn.open_table(RETRIEVED)?.len()?,
            Table::Admin => txn.open_table(ADMIN)?.len()?,
            Table::ApiKeys => txn.open_table(API_KEYS)?.len()?,
        })
    }

    fn rows(
        &mut self,
        table: Table,
        batch: &mut dyn FnMut(Vec<Row>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match table {
            Table::Mailboxes => self.each(
                MAILBOXES,
                |id, record| {
                    Some(Row::Mailbox {
                        id: id.to_owned(),
                        record: record.to_vec(),
                    })
                },
                batch,
            ),
            Table::Messages => self.each(
                MESSAGES,
                |(mailbox, seq), record| {
                    Some(Row::Message {
                        mailbox: mailbox.to_owned(),
                        seq,
                        record: record.to_vec(),
                    })
                },
                batch,
            ),
            Table::Chunks => {
                // Chunks of retired messages are garbage waiting for the writer: left out.
                let retired = self.retired()?;
                self.each(
                    CHUNKS,
                    |(message, index), sealed| {
                        (!retired.contains_key(&message)).then(|| Row::Chunk {
                            message: message.to_be_bytes(),
                            index,
                            sealed: sealed.to_vec(),
                        })
                    },
                    batch,
                )
            }
            Table::Retrieved => self.each(
                RETRIEVED,
                |(mailbox, key), at_millis| {
                    Some(Row::Retrieved {
                        mailbox: mailbox.to_owned(),
                        key: key.to_vec(),
                        at_millis,
                    })
                },
                batch,
            ),
            Table::Admin => self.each(
                ADMIN,
                |account, record| {
                    Some(Row::Admin {
                        account: account.to_owned(),
                        record: record.to_vec(),
                    })
                },
                batch,
            ),
            Table::ApiKeys => self.each(
                API_KEYS,
                |id, record| {
                    Some(Row::ApiKey {
                        id: id.to_owned(),
                        record: record.to_vec(),
                    })
                },
                batch,
            ),
        }
    }

    fn next_seq(&mut self) -> Result<u64, StoreError> {
        let meta = self.txn.open_table(META)?;
        let next = meta.get(META_NEXT_SEQ)?.map(|v| v.value());
        Ok(next.unwrap_or(1))
    }
}

/// A new redb store file being filled: every batch is its own transaction, not synced; the
/// last one writes the schema version and the counter, and syncs them all.
pub struct RedbSink {
    db: Option<Database>,
    path: PathBuf,
}

impl RedbSink {
    /// Creates `path` (owner-only); an existing file is an error, never overwritten.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::Io(format!(
                "{} exists already; a copy is only written to a new file",
                path.display()
            )),
            _ => StoreError::from(e),
        })?;
        // A small cache: the copy writes each page once and reads none back.
        let db = Database::builder()
            .set_cache_size(16 * 1024 * 1024)
            .create(path)?;
        Ok(Self {
            db: Some(db),
            path: path.to_owned(),
        })
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::Internal("the copy is finished".into()))
    }
}

impl Sink for RedbSink {
    fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        for row in rows {
            match row {
                Row::Mailbox { id, record } => {
                    txn.open_table(MAILBOXES)?
                        .insert(id.as_str(), &record[..])?;
                }
                Row::Message {
                    mailbox,
                    seq,
                    record,
                } => {
                    txn.open_table(MESSAGES)?
                        .insert((mailbox.as_str(), seq), &record[..])?;
                }
                Row::Chunk {
                    message,
                    index,
                    sealed,
                } => {
                    txn.open_table(CHUNKS)?
                        .insert((u128::from_be_bytes(message), index), &sealed[..])?;
                }
                Row::Retrieved {
                    mailbox,
                    key,
                    at_millis,
                } => {
                    txn.open_table(RETRIEVED)?
                        .insert((mailbox.as_str(), &key[..]), at_millis)?;
                }
                Row::Admin { account, record } => {
                    txn.open_table(ADMIN)?
                        .insert(account.as_str(), &record[..])?;
                }
                Row::ApiKey { id, record } => {
                    txn.open_table(API_KEYS)?.insert(id.as_str(), &record[..])?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn finish(&mut self, next_seq: u64) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)?;
            meta.insert(META_NEXT_SEQ, next_seq)?;
        }
        super::create_tables(&txn)?;
        // Durable: it syncs the batches before it too.
        txn.commit()?;
        drop(self.db.take());
        std::fs::File::open(&self.path)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    #[test]
    fn a_file_in_use_or_of_another_schema_is_not_read_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let held = RedbSource::open_file(&path).err();
        assert_eq!(held, Some(StoreError::Locked), "a running gateway holds it");
        store
            .write_blocking(|w| {
                let raw = w.redb_for_tests().expect("redb");
                raw.open_table(META)?.insert(META_SCHEMA_VERSION, 4)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let older = RedbSource::open_file(&path).err().expect("refused");
        assert!(
            matches!(older, StoreError::Outdated(_))
                && older.to_string().contains("gateway store migrate"),
            "{older}"
        );
        let db = redb::ReadOnlyDatabase::open(&path).unwrap();
        let version = db
            .begin_read()
            .unwrap()
            .open_table(META)
            .unwrap()
            .get(META_SCHEMA_VERSION)
            .unwrap()
            .map(|v| v.value());
        assert_eq!(version, Some(4), "not upgraded behind the caller's back");
        drop(db);
        let missing = RedbSource::open_file(&dir.path().join("missing.redb")).err();
        assert!(matches!(missing, Some(StoreError::Io(_))), "{missing:?}");
    }
}

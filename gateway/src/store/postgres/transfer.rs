//! Copies to and from PostgreSQL ([`crate::store::transfer`]): a [`PgSource`] reads every
//! row in one `REPEATABLE READ READ ONLY` transaction through a cursor, a [`PgSink`] writes
//! them in one transaction, a batch per statement, so a copy that fails leaves the database
//! as empty as it found it.

use std::sync::Arc;

use tokio_postgres::types::ToSql;
use tokio_postgres::Row as PgRow;

use super::access::{column, from_bigint, to_bigint, to_index};
use super::runtime::PgClient;
use super::Connector;
use crate::store::schema::ADMIN_ACCOUNT;
use crate::store::transfer::{Row, Sink, Source, Table, BATCH_ROWS};
use crate::store::{AdminRecord, StoreError};

/// `SELECT` of a table's rows in the key order redb keeps them in (text keys are `C`
/// collated, `bytea` compares as bytes, and a message id's bytes are big-endian).
fn select(table: Table) -> &'static str {
    match table {
        Table::Mailboxes => "SELECT id, record FROM mailboxes ORDER BY id",
        Table::Messages => "SELECT mailbox, seq, record FROM messages ORDER BY mailbox, seq",
        Table::Chunks => "SELECT message_id, idx, sealed FROM chunks ORDER BY message_id, idx",
        Table::Retrieved => "SELECT mailbox, key, at_millis FROM retrieved ORDER BY mailbox, key",
        Table::Admin => "SELECT account, record FROM admin ORDER BY account",
        Table::ApiKeys => "SELECT id, record FROM api_keys ORDER BY id",
    }
}

fn decode(table: Table, row: &PgRow) -> Result<Row, StoreError> {
    Ok(match table {
        Table::Mailboxes => Row::Mailbox {
            id: column(row, 0)?,
            record: column(row, 1)?,
        },
        Table::Messages => Row::Message {
            mailbox: column(row, 0)?,
            seq: from_bigint(column(row, 1)?, "sequence number")?,
            record: column(row, 2)?,
        },
        Table::Chunks => {
            let id: Vec<u8> = column(row, 0)?;
            let index: i32 = column(row, 1)?;
            Row::Chunk {
                message: id.try_into().map_err(|_| {
                    StoreError::Corrupt("a chunk's message id is not 16 bytes".into())
                })?,
                index: u32::try_from(index)
                    .map_err(|_| StoreError::Corrupt(format!("chunk index {index}")))?,
                sealed: column(row, 2)?,
            }
        }
        Table::Retrieved => Row::Retrieved {
            mailbox: column(row, 0)?,
            key: column(row, 1)?,
            at_millis: from_bigint(column(row, 2)?, "time")?,
        },
        Table::Admin => Row::Admin {
            account: column(row, 0)?,
            record: column(row, 1)?,
        },
        Table::ApiKeys => Row::ApiKey {
            id: column(row, 0)?,
            record: column(row, 1)?,
        },
    })
}

/// Waits for a copy's call as long as the server works on it (counting a large table or a
/// batch of chunks may take longer than a mail session's limit, see `Deadline`); a dead
/// server still fails it through the connection's network timeout.
fn wait<T>(
    work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    Ok(super::block_on(work)?)
}

/// A copy's statements (counting a large table, a batch of chunks) may take longer than
/// the store's statement timeout, which is for mail sessions; a dead server still fails
/// them (the connection's network timeout).
const NO_TIMEOUT: &str = "SET LOCAL statement_timeout = 0";

impl Connector {
    /// A new connection reading every row of the database, whose tables must be at this
    /// gateway's version, in one transaction.
    pub fn source(self: &Arc<Self>) -> Result<PgSource, StoreError> {
        let client = self.connect()?;
        super::check(&client)?;
        wait(client.client.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {NO_TIMEOUT}"
        )))?;
        Ok(PgSource {
            client,
            _connector: self.clone(),
        })
    }

    /// A new connection filling the database, after creating or upgrading its tables; a
    /// database whose tables hold anything but what a new one holds (the initial
    /// administrator) is refused.
    pub fn sink(self: &Arc<Self>) -> Result<PgSink, StoreError> {
        let mut client = self.connect()?;
        super::migrate(&mut client)?;
        // Waiting for the lock is bounded by the connection's statement timeout; the copy
        // after it is not.
        wait(client.client.batch_execute(&format!(
            "BEGIN; LOCK TABLE mailboxes, messages, chunks, retrieved, admin, api_keys \
             IN EXCLUSIVE MODE; {NO_TIMEOUT}"
        )))?;
        let sink = PgSink {
            client,
            open: true,
            _connector: self.clone(),
        };
        if let Some(what) = sink.holds()? {
            return Err(StoreError::Io(format!(
                "the database is not empty ({what}); copy only into a new database, or empty \
                 this one first (drop its gateway tables, e.g. `DROP TABLE gateway_schema, \
                 mailboxes, messages, chunks, retrieved, admin, api_keys; DROP SEQUENCE \
                 message_seq;`)"
            )));
        }
        Ok(sink)
    }
}

/// Every row of a migrated database as one transaction saw it. Nothing is written: the
/// transaction is `READ ONLY`, and it ends with the connection.
pub struct PgSource {
    client: PgClient,
    /// The runtime thread that drives the connection lives as long as this.
    _connector: Arc<Connector>,
}

impl Source for PgSource {
    fn count(&mut self, table: Table) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM {}", table.name());
        let row = wait(self.client.client.query_one(sql.as_str(), &[]))?;
        from_bigint(column(&row, 0)?, "row count")
    }

    fn rows(
        &mut self,
        table: Table,
        batch: &mut dyn FnMut(Vec<Row>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let client = &self.client.client;
        wait(client.batch_execute(&format!(
            "DECLARE transfer NO SCROLL CURSOR FOR {}",
            select(table)
        )))?;
        let fetch = format!("FETCH FORWARD {BATCH_ROWS} FROM transfer");
        loop {
            let rows = wait(client.query(fetch.as_str(), &[]))?;
            if rows.is_empty() {
                break;
            }
            let rows = rows
                .iter()
                .map(|row| decode(table, row))
                .collect::<Result<Vec<_>, _>>()?;
            batch(rows)?;
        }
        wait(client.batch_execute("CLOSE transfer"))
    }

    /// What `nextval` would return. A sequence is outside transactions: read after the
    /// rows, the value is past every row's.
    fn next_seq(&mut self) -> Result<u64, StoreError> {
        let row = wait(
            self.client
                .client
                .query_one("SELECT last_value, is_called FROM message_seq", &[]),
        )?;
        let last = from_bigint(column(&row, 0)?, "sequence number")?;
        let called: bool = column(&row, 1)?;
        Ok(if called { last + 1 } else { last })
    }
}

/// An empty database being filled, in one transaction that holds the tables against other
/// writers (a gateway node started meanwhile waits, or fails, instead of mixing in rows).
pub struct PgSink {
    client: PgClient,
    open: bool,
    _connector: Arc<Connector>,
}

impl PgSink {
    /// What the tables hold beyond a new database's initial administrator, if anything.
    fn holds(&self) -> Result<Option<String>, StoreError> {
        let client = &self.client.client;
        for table in Table::ALL {
            let rows: i64 = if table == Table::Admin {
                let row = wait(client.query_one(
                    "SELECT count(*) FROM admin WHERE account <> $1 OR record <> $2",
                    &[&ADMIN_ACCOUNT, &AdminRecord::initial().encode()],
                ))?;
                column(&row, 0)?
            } else {
                let sql = format!("SELECT count(*) FROM {}", table.name());
                column(&wait(client.query_one(sql.as_str(), &[]))?, 0)?
            };
            if rows > 0 {
                return Ok(Some(format!("{rows} rows in {}", table.name())));
            }
        }
        Ok(None)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(), StoreError> {
        wait(self.client.client.execute(sql, params)).map(drop)
    }
}

impl Sink for PgSink {
    /// One statement per batch: the rows go in as arrays, `unnest`ed into the table.
    fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let (mut texts, mut keys, mut numbers, mut indexes, mut blobs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let table = first.table();
        for row in rows {
            if row.table() != table {
                return Err(StoreError::Internal("a batch mixes tables".into()));
            }
            match row {
                Row::Mailbox { id: text, record }
                | Row::Admin {
                    account: text,
                    record,
                }
                | Row::ApiKey { id: text, record } => {
                    texts.push(text);
                    blobs.push(record);
                }
                Row::Message {
                    mailbox,
                    seq,
                    record,
                } => {
                    texts.push(mailbox);
                    numbers.push(to_bigint(seq, "sequence number")?);
                    blobs.push(record);
                }
                Row::Chunk {
                    message,
                    index,
                    sealed,
                } => {
                    keys.push(message.to_vec());
                    indexes.push(to_index(index)?);
                    blobs.push(sealed);
                }
                Row::Retrieved {
                    mailbox,
                    key,
                    at_millis,
                } => {
                    texts.push(mailbox);
                    keys.push(key);
                    numbers.push(to_bigint(at_millis, "time")?);
                }
            }
        }
        match table {
            Table::Mailboxes => self.execute(
                "INSERT INTO mailboxes (id, record) SELECT * FROM unnest($1::text[], $2::bytea[])",
                &[&texts, &blobs],
            ),
            Table::Messages => self.execute(
                "INSERT INTO messages (mailbox, seq, record) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])",
                &[&texts, &numbers, &blobs],
            ),
            Table::Chunks => self.execute(
                "INSERT INTO chunks (message_id, idx, sealed) \
                 SELECT * FROM unnest($1::bytea[], $2::integer[], $3::bytea[])",
                &[&keys, &indexes, &blobs],
            ),
            Table::Retrieved => self.execute(
                "INSERT INTO retrieved (mailbox, key, at_millis) \
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[])",
                &[&texts, &keys, &numbers],
            ),
            // The new database's initial administrator gives way to the source's.
            Table::Admin => self.execute(
                "INSERT INTO admin (account, record) \
                 SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (account) DO UPDATE SET record = EXCLUDED.record",
                &[&texts, &blobs],
            ),
            Table::ApiKeys => self.execute(
                "INSERT INTO api_keys (id, record) SELECT * FROM unnest($1::text[], $2::bytea[])",
                &[&texts, &blobs],
            ),
        }
    }

    /// Sets the sequence so the next message gets `next_seq` (ids never repeat after the
    /// move), and commits.
    fn finish(&mut self, next_seq: u64) -> Result<(), StoreError> {
        self.execute(
            "SELECT setval('message_seq', $1, false)",
            &[&to_bigint(next_seq, "sequence number")?],
        )?;
        wait(self.client.client.batch_execute("COMMIT"))?;
        self.open = false;
        Ok(())
    }
}

impl Drop for PgSink {
    /// An unfinished copy is rolled back (closing the connection would too, later).
    fn drop(&mut self) {
        if self.open {
            let _ = wait(self.client.client.batch_execute("ROLLBACK"));
        }
    }
}

//! [`Reads`] and [`Writes`] as SQL statements on the tables of `schema`.
//!
//! Several nodes write at once, so a check and the writes that depend on it must be one
//! atomic step across nodes (redb got that from its single writer). Inside a write
//! (`READ COMMITTED`), the reads a rule checks lock what they read:
//! - [`Reads::mailbox`] is `SELECT … FOR UPDATE`: deliveries, deletions and edits of one
//!   mailbox serialise across nodes, and the second sees the first's committed record. The
//!   one-copy check of `retrieved` that a delivery makes after locking the mailbox is safe
//!   for the same reason.
//! - [`Reads::admin`] and [`Reads::api_key`] lock their row too (the password reset is a
//!   compare-and-set; noting an API key's use must not resurrect a revoked key).
//! - [`Reads::api_key_count`] locks the table against inserts (`SHARE ROW EXCLUSIVE`, which
//!   also conflicts with itself), so two nodes cannot both pass the key limit.
//!
//! Row locks taken in different orders by two nodes can deadlock; PostgreSQL then aborts one
//! transaction, reported as [`StoreError::Conflict`] (retrying it is safe).
//!
//! Reads outside a write ([`PgRead`]) are one autocommit statement each: unlike a redb
//! snapshot there is no consistent view across calls. Chunks never change once committed,
//! so a reader sees a message whole or not at all, provided nothing deletes it meanwhile
//! (deletions are fenced by the maildrop lock).

use std::sync::Arc;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Transaction};

use super::runtime::{PgClient, Statements};
use super::Deadline;
use crate::crypto::MessageId;
use crate::mailbox::MailboxId;
use crate::store::coordination::Lease;
use crate::store::schema::ADMIN_ACCOUNT;
use crate::store::{
    AdminRecord, ApiKeyRecord, MailboxRecord, MessageRecord, Reads, StoreError, Writes,
};

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Where the boundary's statements run: [`Autocommit`] or [`InTransaction`].
pub trait Session {
    /// Whether this is a write, whose reads lock what they read.
    const WRITES: bool;

    /// Runs a statement (prepared once per connection) and returns its rows; changes without
    /// `RETURNING` return none.
    fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, StoreError>;
}

/// The storage boundary over statements run in `S`.
pub struct Pg<S>(S);

/// Reads outside a write: every call is one autocommit statement on a shared connection.
pub type PgRead = Pg<Autocommit>;

/// A write transaction: [`Reads`] (seeing its own changes) and [`Writes`].
pub type PgWrite<'a> = Pg<InTransaction<'a>>;

/// A shared connection, each statement its own transaction.
pub struct Autocommit(Arc<PgClient>);

/// A transaction on a connection, with that connection's prepared statements.
pub struct InTransaction<'a> {
    txn: Transaction<'a>,
    statements: &'a Statements,
    deadline: &'a Deadline,
}

impl PgRead {
    pub fn new(client: Arc<PgClient>) -> Self {
        Pg(Autocommit(client))
    }
}

impl<'a> PgWrite<'a> {
    pub(super) fn new(
        txn: Transaction<'a>,
        statements: &'a Statements,
        deadline: &'a Deadline,
    ) -> Self {
        Pg(InTransaction {
            txn,
            statements,
            deadline,
        })
    }

    /// Commits; the proof of durability for the store's writer.
    pub(in crate::store) fn commit(self) -> Result<crate::store::durable::Synced, StoreError> {
        crate::store::durable::Synced::commit_postgres(self.0.txn, self.0.deadline)
    }

    /// Rolls back every change of the transaction (dropping it does too, without waiting).
    pub fn rollback(self) -> Result<(), StoreError> {
        self.0.deadline.wait(self.0.txn.rollback())
    }
}

impl Session for Autocommit {
    const WRITES: bool = false;

    fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let PgClient {
            client,
            statements,
            deadline,
        } = &*self.0;
        let statement = statements.get(sql, |sql| deadline.wait(client.prepare(sql)))?;
        deadline.wait(client.query(&statement, params))
    }
}

impl Session for InTransaction<'_> {
    const WRITES: bool = true;

    fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let deadline = self.deadline;
        let statement = self
            .statements
            .get(sql, |sql| deadline.wait(self.txn.prepare(sql)))?;
        deadline.wait(self.txn.query(&statement, params))
    }
}

/// A column of a row, or [`StoreError::Corrupt`].
pub(super) fn column<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
}

/// `bigint` holds the store's u64 counters; every value the gateway writes fits.
pub(super) fn to_bigint(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Internal(format!("{what} {value} is too large")))
}

pub(super) fn from_bigint(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}

/// `integer` holds a chunk's index; a message has far fewer than 2^31 chunks.
pub(super) fn to_index(index: u32) -> Result<i32, StoreError> {
    i32::try_from(index)
        .map_err(|_| StoreError::Internal(format!("chunk index {index} is too large")))
}

impl<S: Session> Pg<S> {
    /// The first column of each row, decoded as a record.
    fn records<T>(
        &self,
        sql: &'static str,
        params: Params<'_>,
        decode: fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.0.query(sql, params)?;
        rows.iter().map(|row| decode(column(row, 0)?)).collect()
    }

    /// The record in the first column of the one row a key selects, if any.
    fn record<T>(
        &self,
        sql: &'static str,
        params: Params<'_>,
        decode: fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.records(sql, params, decode)?.into_iter().next())
    }
}

impl<S: Session> Reads for Pg<S> {
    fn mailbox(&self, id: &MailboxId) -> Result<Option<MailboxRecord>, StoreError> {
        let sql = if S::WRITES {
            "SELECT record FROM mailboxes WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT record FROM mailboxes WHERE id = $1"
        };
        self.record(sql, &[&id.as_str()], MailboxRecord::decode)
    }

    fn mailboxes(&self) -> Result<Vec<MailboxRecord>, StoreError> {
        self.records(
            "SELECT record FROM mailboxes ORDER BY id",
            &[],
            MailboxRecord::decode,
        )
    }

    fn messages(&self, id: &MailboxId) -> Result<Vec<(u64, MessageRecord)>, StoreError> {
        let rows = self.0.query(
            "SELECT seq, record FROM messages WHERE mailbox = $1 ORDER BY seq",
            &[&id.as_str()],
        )?;
        rows.iter()
            .map(|row| {
                let seq = from_bigint(column(row, 0)?, "sequence number")?;
                Ok((seq, MessageRecord::decode(column(row, 1)?)?))
            })
            .collect()
    }

    fn message(&self, id: &MailboxId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.record(
            "SELECT record FROM messages WHERE mailbox = $1 AND seq = $2",
            &[&id.as_str(), &to_bigint(seq, "sequence number")?],
            MessageRecord::decode,
        )
    }

    fn oldest_message_at(&self, id: &MailboxId) -> Result<Option<u64>, StoreError> {
        let oldest = self.record(
            "SELECT record FROM messages WHERE mailbox = $1 ORDER BY seq LIMIT 1",
            &[&id.as_str()],
            MessageRecord::decode,
        )?;
        Ok(oldest.map(|record| record.received_at))
    }

    fn chunk(&self, id: MessageId, index: u32) -> Result<Vec<u8>, StoreError> {
        let rows = self.0.query(
            "SELECT sealed FROM chunks WHERE message_id = $1 AND idx = $2",
            &[&&id.0[..], &to_index(index)?],
        )?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt(format!("message {id} lacks chunk {index}")))?;
        column(row, 0)
    }

    fn retrieved(&self, mailbox: &MailboxId, key: &[u8]) -> Result<bool, StoreError> {
        let rows = self.0.query(
            "SELECT 1 FROM retrieved WHERE mailbox = $1 AND key = $2",
            &[&mailbox.as_str(), &key],
        )?;
        Ok(!rows.is_empty())
    }

    fn admin(&self) -> Result<AdminRecord, StoreError> {
        let sql = if S::WRITES {
            "SELECT record FROM admin WHERE account = $1 FOR UPDATE"
        } else {
            "SELECT record FROM admin WHERE account = $1"
        };
        self.record(sql, &[&ADMIN_ACCOUNT], AdminRecord::decode)?
            .ok_or_else(|| StoreError::Corrupt("the administrator account is missing".into()))
    }

    fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = if S::WRITES {
            "SELECT record FROM api_keys WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT record FROM api_keys WHERE id = $1"
        };
        self.record(sql, &[&id], ApiKeyRecord::decode)
    }

    fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.records(
            "SELECT record FROM api_keys ORDER BY id",
            &[],
            ApiKeyRecord::decode,
        )
    }

    fn api_key_count(&self) -> Result<u64, StoreError> {
        if S::WRITES {
            // Held to the end of the transaction: no other node adds a key meanwhile.
            self.0
                .query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE", &[])?;
        }
        let rows = self.0.query("SELECT count(*) FROM api_keys", &[])?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("count(*) returned no row".into()))?;
        from_bigint(column(row, 0)?, "API key count")
    }
}

impl Writes for PgWrite<'_> {
    fn put_mailbox(&self, record: &MailboxRecord) -> Result<(), StoreError> {
        self.0.query(
            "INSERT INTO mailboxes (id, record) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&record.id.as_str(), &record.encode()],
        )?;
        Ok(())
    }

    fn remove_mailbox(&self, id: &MailboxId) -> Result<(), StoreError> {
        self.0
            .query("DELETE FROM mailboxes WHERE id = $1", &[&id.as_str()])?;
        Ok(())
    }

    fn put_admin(&self, record: &AdminRecord) -> Result<(), StoreError> {
        self.0.query(
            "INSERT INTO admin (account, record) VALUES ($1, $2) \
             ON CONFLICT (account) DO UPDATE SET record = EXCLUDED.record",
            &[&ADMIN_ACCOUNT, &record.encode()],
        )?;
        Ok(())
    }

    fn put_api_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.0.query(
            "INSERT INTO api_keys (id, record) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&record.id.as_str(), &record.encode()],
        )?;
        Ok(())
    }

    fn remove_api_key(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self
            .0
            .query("DELETE FROM api_keys WHERE id = $1 RETURNING id", &[&id])?;
        Ok(!removed.is_empty())
    }

    /// From the `message_seq` sequence: never repeats, even after a rollback, but numbers
    /// of rolled-back transactions are skipped (gaps), and with several nodes the order of
    /// commits may differ from the order of numbers. POP3 numbers messages at login from
    /// what is stored then, so neither matters.
    fn next_seq(&self) -> Result<u64, StoreError> {
        let rows = self.0.query("SELECT nextval('message_seq')", &[])?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("nextval returned no row".into()))?;
        from_bigint(column(row, 0)?, "sequence number")
    }

    fn put_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
        record: &MessageRecord,
    ) -> Result<(), StoreError> {
        self.0.query(
            "INSERT INTO messages (mailbox, seq, record) VALUES ($1, $2, $3) \
             ON CONFLICT (mailbox, seq) DO UPDATE SET record = EXCLUDED.record",
            &[
                &mailbox.as_str(),
                &to_bigint(seq, "sequence number")?,
                &record.encode(),
            ],
        )?;
        Ok(())
    }

    fn put_chunk(&self, id: MessageId, index: u32, sealed: &[u8]) -> Result<(), StoreError> {
        self.0.query(
            "INSERT INTO chunks (message_id, idx, sealed) VALUES ($1, $2, $3) \
             ON CONFLICT (message_id, idx) DO UPDATE SET sealed = EXCLUDED.sealed",
            &[&&id.0[..], &to_index(index)?, &sealed],
        )?;
        Ok(())
    }

    fn remove_message(
        &self,
        mailbox: &MailboxId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let removed = self.records(
            "DELETE FROM messages WHERE mailbox = $1 AND seq = $2 RETURNING record",
            &[&mailbox.as_str(), &to_bigint(seq, "sequence number")?],
            MessageRecord::decode,
        )?;
        let Some(record) = removed.into_iter().next() else {
            return Ok(None);
        };
        self.0.query(
            "DELETE FROM chunks WHERE message_id = $1",
            &[&&record.id.0[..]],
        )?;
        Ok(Some(record))
    }

    fn put_retrieved(
        &self,
        mailbox: &MailboxId,
        key: &[u8],
        at_millis: u64,
    ) -> Result<(), StoreError> {
        self.0.query(
            "INSERT INTO retrieved (mailbox, key, at_millis) VALUES ($1, $2, $3) \
             ON CONFLICT (mailbox, key) DO UPDATE SET at_millis = EXCLUDED.at_millis",
            &[&mailbox.as_str(), &key, &to_bigint(at_millis, "time")?],
        )?;
        Ok(())
    }

    fn remove_retrieved(&self, mailbox: &MailboxId) -> Result<(), StoreError> {
        self.0.query(
            "DELETE FROM retrieved WHERE mailbox = $1",
            &[&mailbox.as_str()],
        )?;
        Ok(())
    }

    /// `FOR SHARE`: a session of another node taking the lease (its `INSERT … ON CONFLICT
    /// DO UPDATE`) waits until this write has committed, and then finds it expired or not.
    fn holds_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let rows = self.0.query(
            "SELECT 1 FROM maildrop_leases \
             WHERE mailbox = $1 AND node = $2 AND token = $3 AND expires_at > clock_timestamp() \
             FOR SHARE",
            &[&lease.mailbox.as_str(), &&*lease.node, &lease.token],
        )?;
        Ok(!rows.is_empty())
    }
}

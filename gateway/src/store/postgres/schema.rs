//! The PostgreSQL tables and their migrations.
//!
//! The tables mirror redb's (`store::schema`), with the same record encodings, so rows copy
//! between the backends byte for byte. Text keys use the `C` collation, so they sort by
//! bytes as redb's `&str` keys do, whatever the database's locale. The arrival counter is a
//! sequence (`message_seq`): it never repeats, also across nodes and rolled-back
//! transactions, but may leave gaps.
//!
//! The version numbering is this backend's own, starting at 1: redb's `SCHEMA_VERSION` (5)
//! counts changes of redb's layout that never existed here; version 1 holds what redb's
//! version 5 holds. A later change to a record's encoding changes both. Version 2 adds what
//! only several nodes need: the POP3 maildrop leases and the shared login failure counts
//! (`store::coordination`); version 3 the settings every node follows; version 4 the
//! administrator's console sessions.

use tokio_postgres::{GenericClient, Transaction};

use super::access::column;
use super::runtime::PgClient;
use super::Deadline;
use crate::store::schema::ADMIN_ACCOUNT;
use crate::store::{AdminRecord, StoreError};

/// The newest version of the tables this gateway knows.
pub const SCHEMA_VERSION: u32 = 4;

/// The key of the advisory lock that migrations hold, so that nodes starting together
/// migrate one after the other (`gateway` in ASCII).
const MIGRATION_LOCK: i64 = 0x0067_6174_6577_6179;

/// Version 1: the tables of redb's version 5.
const V1: &str = r#"
CREATE TABLE mailboxes (id text COLLATE "C" PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE messages (
    mailbox text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (mailbox, seq)
);
CREATE TABLE chunks (
    message_id bytea NOT NULL,
    idx integer NOT NULL,
    sealed bytea NOT NULL,
    PRIMARY KEY (message_id, idx)
);
-- Sealed chunks do not compress: store them out of line without trying.
ALTER TABLE chunks ALTER COLUMN sealed SET STORAGE EXTERNAL;
CREATE TABLE retrieved (
    mailbox text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    at_millis bigint NOT NULL,
    PRIMARY KEY (mailbox, key)
);
CREATE TABLE admin (account text COLLATE "C" PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE api_keys (id text COLLATE "C" PRIMARY KEY, record bytea NOT NULL);
CREATE SEQUENCE message_seq AS bigint START 1;
"#;

/// Version 2: coordination between nodes. Times are the database's (`clock_timestamp()`),
/// never a node's, so nodes with skewed clocks agree on when a lease expired.
const V2: &str = r#"
CREATE TABLE maildrop_leases (
    mailbox text COLLATE "C" PRIMARY KEY,
    node text NOT NULL,
    token bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE login_failures (
    scope text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    attempts integer NOT NULL,
    last_failure timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
"#;

/// Version 3: the settings every node follows (`store::coordination`), e.g. the email domain.
const V3: &str = r#"
CREATE TABLE shared_settings (
    name text COLLATE "C" PRIMARY KEY,
    value text NOT NULL,
    changed_at timestamptz NOT NULL
);
"#;

/// Version 4: the administrator's console sessions, so that any node knows a cookie another
/// node issued. Keyed by SHA-256 of the token (a read of the table gives no usable cookie);
/// the CSRF token is derived from the token, so nothing else is kept. Times are the
/// database's.
const V4: &str = r#"
CREATE TABLE console_sessions (
    key bytea PRIMARY KEY,
    created_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    acknowledgement_pending boolean NOT NULL
);
"#;

/// Creates the tables or brings them to [`SCHEMA_VERSION`], in one transaction under an
/// advisory lock (two nodes starting at once do not race), and adds the initial
/// administrator when there is none, as redb's store does. Refuses a database of a newer
/// gateway ([`StoreError::TooNew`]). Safe to run at every start; returns the version.
pub fn migrate(client: &mut PgClient) -> Result<u32, StoreError> {
    let deadline = &client.deadline;
    let txn = deadline.wait(client.client.transaction())?;
    let version = migrate_in(&txn, deadline)?;
    deadline.wait(txn.commit())?;
    Ok(version)
}

fn migrate_in(txn: &Transaction<'_>, deadline: &Deadline) -> Result<u32, StoreError> {
    deadline.wait(txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]))?;
    match stored_version(txn, deadline)? {
        None => {
            // One row at most (`one` is always true and the key).
            deadline.wait(txn.batch_execute(
                "CREATE TABLE gateway_schema (\
                     one boolean PRIMARY KEY DEFAULT true CHECK (one), \
                     version integer NOT NULL)",
            ))?;
            for step in [V1, V2, V3, V4] {
                deadline.wait(txn.batch_execute(step))?;
            }
            deadline.wait(txn.execute(
                "INSERT INTO gateway_schema (version) VALUES ($1)",
                &[&(SCHEMA_VERSION as i32)],
            ))?;
        }
        Some(version @ 1..=3) => {
            // Each version's changes after the one the tables are at.
            for step in &[V2, V3, V4][version as usize - 1..] {
                deadline.wait(txn.batch_execute(step))?;
            }
            deadline.wait(txn.execute(
                "UPDATE gateway_schema SET version = $1",
                &[&(SCHEMA_VERSION as i32)],
            ))?;
        }
        Some(version) if version > SCHEMA_VERSION as i32 => {
            return Err(StoreError::TooNew {
                found: version as u64,
                supported: SCHEMA_VERSION.into(),
            });
        }
        Some(version) if version < 1 => {
            return Err(StoreError::Corrupt(format!(
                "gateway_schema has version {version}"
            )));
        }
        Some(_) => {}
    }
    deadline.wait(txn.execute(
        "INSERT INTO admin (account, record) VALUES ($1, $2) ON CONFLICT (account) DO NOTHING",
        &[&ADMIN_ACCOUNT, &AdminRecord::initial().encode()],
    ))?;
    Ok(SCHEMA_VERSION)
}

/// The version in `gateway_schema`; `None` before the first migration. Looked up rather
/// than created `IF NOT EXISTS`, so that on migrated tables a role without the right to
/// create tables can start a node.
fn stored_version(
    client: &impl GenericClient,
    deadline: &Deadline,
) -> Result<Option<i32>, StoreError> {
    let exists: bool = column(
        &deadline
            .wait(client.query_one("SELECT to_regclass('gateway_schema') IS NOT NULL", &[]))?,
        0,
    )?;
    if !exists {
        return Ok(None);
    }
    deadline
        .wait(client.query_opt("SELECT version FROM gateway_schema", &[]))?
        .map(|row| column(&row, 0))
        .transpose()
}

/// The version of the database's tables; `None` when the gateway never created them.
pub fn version(client: &PgClient) -> Result<Option<u32>, StoreError> {
    stored_version(&client.client, &client.deadline)?
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("gateway_schema has version {v}")))
        })
        .transpose()
}

/// Checks, without changing anything, that the tables are at [`SCHEMA_VERSION`] (for a
/// node started with `[store] migrate = false`).
pub fn check(client: &PgClient) -> Result<(), StoreError> {
    match version(client)? {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) if found > SCHEMA_VERSION => Err(StoreError::TooNew {
            found: found.into(),
            supported: SCHEMA_VERSION.into(),
        }),
        found => Err(StoreError::Outdated(format!(
            "the database's tables are not at version {SCHEMA_VERSION} (found {}); run \
             `gateway store migrate`, or set [store] migrate = true",
            found.map_or("none".to_owned(), |v| v.to_string())
        ))),
    }
}

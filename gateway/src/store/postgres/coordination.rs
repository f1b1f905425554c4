//! [`Coordination`] on PostgreSQL: maildrop leases, shared login failure counts, shared
//! settings and console sessions, each call one autocommit statement on a read connection. Every time is the database's
//! (`clock_timestamp()`), so the nodes' clocks never matter.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::engine::PgReads;
use super::runtime::PgClient;
use crate::store::coordination::{Coordination, Lease, SessionKey, SessionLimits, SharedFailures};
use crate::store::StoreError;

/// Leases and failure counts of a store on PostgreSQL.
pub struct PgCoordination {
    reads: Arc<PgReads>,
    /// Failures recorded by this node, so that every [`PRUNE_EVERY`]th also deletes the
    /// scope's rows that were quiet long enough to be forgotten.
    recorded: AtomicU32,
}

/// How often recording a failure also prunes forgotten ones: an attacker from many
/// addresses leaves at most the rows of one `forget_after`, not one row per address ever.
pub const PRUNE_EVERY: u32 = 256;

impl PgCoordination {
    pub fn new(reads: Arc<PgReads>) -> Self {
        Self {
            reads,
            recorded: AtomicU32::new(0),
        }
    }

    fn client(&self) -> Result<Arc<PgClient>, StoreError> {
        self.reads.client().ok_or(StoreError::Reopening)
    }
}

/// Seconds, as `make_interval` takes them.
fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl Coordination for PgCoordination {
    fn is_shared(&self) -> bool {
        true
    }

    /// One statement: the row is inserted, or replaced when it expired or is this node's;
    /// a row of another node that has not expired stays, and no row comes back.
    fn take_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let client = self.client()?;
        let rows = client.deadline.wait(client.client.query(
            "INSERT INTO maildrop_leases (mailbox, node, token, expires_at) \
             VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4)) \
             ON CONFLICT (mailbox) DO UPDATE \
             SET node = EXCLUDED.node, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at \
             WHERE maildrop_leases.expires_at <= clock_timestamp() \
                OR maildrop_leases.node = EXCLUDED.node \
             RETURNING token",
            &[
                &lease.mailbox.as_str(),
                &&*lease.node,
                &lease.token,
                &secs(ttl),
            ],
        ))?;
        Ok(!rows.is_empty())
    }

    /// A lease that expired but that nobody took is still this session's: nothing else
    /// could have touched the maildrop meanwhile, so renewing it is safe.
    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let client = self.client()?;
        let renewed = client.deadline.wait(client.client.execute(
            "UPDATE maildrop_leases SET expires_at = clock_timestamp() + make_interval(secs => $4) \
             WHERE mailbox = $1 AND node = $2 AND token = $3",
            &[&lease.mailbox.as_str(), &&*lease.node, &lease.token, &secs(ttl)],
        ))?;
        Ok(renewed > 0)
    }

    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let client = self.client()?;
        client.deadline.wait(client.client.execute(
            "DELETE FROM maildrop_leases WHERE mailbox = $1 AND node = $2 AND token = $3",
            &[&lease.mailbox.as_str(), &&*lease.node, &lease.token],
        ))?;
        Ok(())
    }

    fn failures(
        &self,
        scope: &str,
        key: &str,
        forget_after: Duration,
    ) -> Result<Option<SharedFailures>, StoreError> {
        let client = self.client()?;
        let row = client.deadline.wait(client.client.query_opt(
            "SELECT attempts, extract(epoch FROM clock_timestamp() - last_failure)::float8 \
             FROM login_failures \
             WHERE scope = $1 AND key = $2 \
               AND last_failure + make_interval(secs => $3) > clock_timestamp()",
            &[&scope, &key, &secs(forget_after)],
        ))?;
        row.map(|row| {
            let attempts: i32 = row
                .try_get(0)
                .map_err(|e| StoreError::Corrupt(format!("login_failures: {e}")))?;
            let since: f64 = row
                .try_get(1)
                .map_err(|e| StoreError::Corrupt(format!("login_failures: {e}")))?;
            Ok(SharedFailures {
                attempts: u32::try_from(attempts).unwrap_or(0),
                since_last: Duration::try_from_secs_f64(since).unwrap_or(Duration::ZERO),
            })
        })
        .transpose()
    }

    fn record_failure(
        &self,
        scope: &str,
        key: &str,
        forget_after: Duration,
    ) -> Result<u32, StoreError> {
        let client = self.client()?;
        let row = client.deadline.wait(client.client.query_one(
            "INSERT INTO login_failures AS f (scope, key, attempts, last_failure) \
             VALUES ($1, $2, 1, clock_timestamp()) \
             ON CONFLICT (scope, key) DO UPDATE \
             SET attempts = CASE \
                     WHEN f.last_failure + make_interval(secs => $3) <= clock_timestamp() THEN 1 \
                     ELSE least(f.attempts, 1000000) + 1 END, \
                 last_failure = clock_timestamp() \
             RETURNING attempts",
            &[&scope, &key, &secs(forget_after)],
        ))?;
        let attempts: i32 = row
            .try_get(0)
            .map_err(|e| StoreError::Corrupt(format!("login_failures: {e}")))?;
        if self.recorded.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            client.deadline.wait(client.client.execute(
                "DELETE FROM login_failures \
                 WHERE scope = $1 AND last_failure + make_interval(secs => $2) <= clock_timestamp()",
                &[&scope, &secs(forget_after)],
            ))?;
        }
        Ok(u32::try_from(attempts).unwrap_or(0))
    }

    fn clear_failures(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        let client = self.client()?;
        client.deadline.wait(client.client.execute(
            "DELETE FROM login_failures WHERE scope = $1 AND key = $2",
            &[&scope, &key],
        ))?;
        Ok(())
    }

    fn shared_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let client = self.client()?;
        let row = client.deadline.wait(client.client.query_opt(
            "SELECT value FROM shared_settings WHERE name = $1",
            &[&name],
        ))?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("shared_settings: {e}")))
    }

    fn publish_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let client = self.client()?;
        client.deadline.wait(client.client.execute(
            "INSERT INTO shared_settings (name, value, changed_at) \
             VALUES ($1, $2, clock_timestamp()) \
             ON CONFLICT (name) DO UPDATE SET value = $2, changed_at = clock_timestamp()",
            &[&name, &value],
        ))?;
        Ok(())
    }

    fn withdraw_setting(&self, name: &str) -> Result<(), StoreError> {
        let client = self.client()?;
        client.deadline.wait(
            client
                .client
                .execute("DELETE FROM shared_settings WHERE name = $1", &[&name]),
        )?;
        Ok(())
    }

    /// A task is a lease row like a maildrop's, under a name no mailbox id can take
    /// (those start with `mbx-`).
    fn take_task(&self, task: &str, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let client = self.client()?;
        let rows = client.deadline.wait(client.client.query(
            "INSERT INTO maildrop_leases (mailbox, node, token, expires_at) \
             VALUES ($1, $2, 0, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (mailbox) DO UPDATE \
             SET node = EXCLUDED.node, expires_at = EXCLUDED.expires_at \
             WHERE maildrop_leases.expires_at <= clock_timestamp() \
                OR maildrop_leases.node = EXCLUDED.node \
             RETURNING token",
            &[&task_key(task), &node, &secs(ttl)],
        ))?;
        Ok(!rows.is_empty())
    }

    fn release_task(&self, task: &str, node: &str) -> Result<(), StoreError> {
        let client = self.client()?;
        client.deadline.wait(client.client.execute(
            "DELETE FROM maildrop_leases WHERE mailbox = $1 AND node = $2",
            &[&task_key(task), &node],
        ))?;
        Ok(())
    }

    /// One statement: the replaced session and every ended one are deleted, then the
    /// idlest live ones beyond `capacity - 1` (the rows the statement's snapshot holds,
    /// less those just ended), and the new row comes in. Two nodes creating at once may
    /// leave one row over the bound until the next creation trims it.
    fn create_session(
        &self,
        key: &SessionKey,
        replaces: Option<&SessionKey>,
        acknowledgement_pending: bool,
        limits: &SessionLimits,
    ) -> Result<(), StoreError> {
        let client = self.client()?;
        let keep = i64::try_from(limits.capacity.max(1) - 1).unwrap_or(i64::MAX);
        client.deadline.wait(client.client.execute(
            "WITH ended AS ( \
                 DELETE FROM console_sessions \
                 WHERE key = $2 \
                    OR last_seen + make_interval(secs => $4) <= clock_timestamp() \
                    OR created_at + make_interval(secs => $5) <= clock_timestamp() \
                 RETURNING key), \
             crowded AS ( \
                 DELETE FROM console_sessions WHERE key IN ( \
                     SELECT key FROM console_sessions \
                     WHERE key NOT IN (SELECT key FROM ended) \
                     ORDER BY last_seen DESC OFFSET $6)) \
             INSERT INTO console_sessions (key, created_at, last_seen, acknowledgement_pending) \
             VALUES ($1, clock_timestamp(), clock_timestamp(), $3)",
            &[
                &key.as_slice(),
                &replaces.map(|k| k.as_slice()),
                &acknowledgement_pending,
                &secs(limits.idle),
                &secs(limits.absolute),
                &keep,
            ],
        ))?;
        Ok(())
    }

    /// One statement: the live row is read, and its `last_seen` moved to now only when it
    /// is older than `touch_after` (an ended row stays until the next creation prunes it).
    fn session(
        &self,
        key: &SessionKey,
        limits: &SessionLimits,
    ) -> Result<Option<bool>, StoreError> {
        let client = self.client()?;
        let row = client.deadline.wait(client.client.query_opt(
            "WITH live AS ( \
                 SELECT key, acknowledgement_pending, \
                        last_seen + make_interval(secs => $4) <= clock_timestamp() AS stale \
                 FROM console_sessions \
                 WHERE key = $1 \
                   AND last_seen + make_interval(secs => $2) > clock_timestamp() \
                   AND created_at + make_interval(secs => $3) > clock_timestamp()), \
             touched AS ( \
                 UPDATE console_sessions SET last_seen = clock_timestamp() \
                 WHERE key IN (SELECT key FROM live WHERE stale)) \
             SELECT acknowledgement_pending FROM live",
            &[
                &key.as_slice(),
                &secs(limits.idle),
                &secs(limits.absolute),
                &secs(limits.touch_after),
            ],
        ))?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("console_sessions: {e}")))
    }

    fn set_session_pending(&self, key: &SessionKey, pending: bool) -> Result<bool, StoreError> {
        let client = self.client()?;
        let changed = client.deadline.wait(client.client.execute(
            "UPDATE console_sessions SET acknowledgement_pending = $2 WHERE key = $1",
            &[&key.as_slice(), &pending],
        ))?;
        Ok(changed > 0)
    }

    fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        let client = self.client()?;
        client.deadline.wait(client.client.execute(
            "DELETE FROM console_sessions WHERE key = $1",
            &[&key.as_slice()],
        ))?;
        Ok(())
    }

    fn remove_other_sessions(&self, keep: &SessionKey) -> Result<(), StoreError> {
        let client = self.client()?;
        client.deadline.wait(client.client.execute(
            "DELETE FROM console_sessions WHERE key <> $1",
            &[&keep.as_slice()],
        ))?;
        Ok(())
    }
}

fn task_key(task: &str) -> String {
    format!("task:{task}")
}

//! The PostgreSQL backend against a real throwaway server (postgres-test-util): the same
//! records as redb for the same writes, the locks that make checks atomic across nodes,
//! migrations, and failures.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use postgres_test_util::{Postgres, PostgresOptions};

use super::*;
use crate::crypto::{KdfParams, MessageId, SealedKeyPair};
use crate::mailbox::MailboxId;
use crate::store::transfer::{
    copy, verify, Mismatch, RedbSink, RedbSource, Row, Source, Summary, Table, BATCH_ROWS,
};
use crate::store::{
    AdminRecord, ApiKeyRecord, Coordination, Lease, MailboxRecord, MailboxStatus, MessageRecord,
    Reads, SessionKey, SessionLimits, Store, StoreOptions, Writes,
};

/// A server, the runtime that drives our connections to it, and its connection settings.
struct Db {
    runtime: PgRuntime,
    config: tokio_postgres::Config,
    pg: Postgres,
}

impl Db {
    /// Fails (never skips) when PostgreSQL is not installed. No fsync: no test here cuts
    /// the power, and a killed server still finds its WAL in the page cache.
    fn start() -> Self {
        let pg = Postgres::create(PostgresOptions {
            fsync: false,
            ..PostgresOptions::default()
        })
        .unwrap_or_else(|err| panic!("{err}"));
        let config = pg.url().parse().expect("the fixture's URL parses");
        Self {
            runtime: PgRuntime::start().expect("runtime thread"),
            config,
            pg,
        }
    }

    fn connect(&self) -> Result<PgClient, StoreError> {
        self.runtime.connect(&self.config, &PgOptions::default())
    }

    fn client(&self) -> PgClient {
        self.connect().expect("connect")
    }

    /// A connection to a migrated database.
    fn migrated(&self) -> PgClient {
        let mut client = self.client();
        assert_eq!(migrate(&mut client).expect("migrate"), SCHEMA_VERSION);
        client
    }

    /// Connections of a copy's own (`transfer`).
    fn connector(&self) -> Arc<Connector> {
        Arc::new(Connector::new(self.config.clone(), PgOptions::default()).expect("connector"))
    }

    fn reader(&self) -> PgRead {
        PgRead::new(Arc::new(self.client()))
    }

    fn psql(&self, sql: &str) -> String {
        self.pg.psql("gateway", sql).expect("psql")
    }
}

fn mailbox_id(digit: char) -> MailboxId {
    MailboxId::parse(&format!("mbx-{}", digit.to_string().repeat(32))).expect("mailbox id")
}

fn mailbox(id: &MailboxId, name: &str) -> MailboxRecord {
    MailboxRecord {
        id: id.clone(),
        name: name.into(),
        description: format!("{name}'s archive"),
        status: MailboxStatus::Active,
        created_at: 1_700_000_000_000,
        message_count: 0,
        message_bytes: 0,
        keys: SealedKeyPair {
            format: 1,
            suite: "test".into(),
            public_key: vec![7; 32],
            kdf: KdfParams::insecure_for_tests(),
            salt: vec![1; 16],
            nonce: vec![2; 24],
            sealed_private_key: vec![3; 48],
        },
    }
}

fn api_key(id: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        name: format!("key {id}"),
        secret_hash: "ab".repeat(32),
        created_at: 5,
        last_used_at: None,
    }
}

/// Every kind of change, written once for any backend; returns what the changes returned.
fn scenario(w: &dyn Writes) -> Result<Vec<String>, StoreError> {
    let mut log = Vec::new();
    let (a, b, c) = (mailbox_id('a'), mailbox_id('b'), mailbox_id('c'));
    w.put_mailbox(&mailbox(&a, "first"))?;
    w.put_mailbox(&mailbox(&b, "second"))?;
    let mut renamed = mailbox(&a, "first, renamed");
    renamed.message_count = 2;
    w.put_mailbox(&renamed)?;
    w.put_mailbox(&mailbox(&c, "gone"))?;
    w.remove_mailbox(&c)?;
    for (to, n) in [(&a, 1u8), (&a, 2), (&b, 3)] {
        let seq = w.next_seq()?;
        log.push(format!("seq {seq}"));
        let record = MessageRecord::sample(n, 2);
        for index in 0..2 {
            w.put_chunk(record.id, index, &[n, index as u8, 0xAA])?;
        }
        w.put_message(to, seq, &record)?;
    }
    let first = w.messages(&a)?.first().map(|(seq, _)| *seq).unwrap_or(0);
    log.push(format!("removed {:?}", w.remove_message(&a, first)?));
    log.push(format!("removed again {:?}", w.remove_message(&a, first)?));
    w.put_retrieved(&a, &[1; 32], 10)?;
    w.put_retrieved(&a, &[2; 32], 11)?;
    w.put_retrieved(&b, &[1; 32], 12)?;
    w.put_retrieved(&b, &[1; 32], 13)?;
    w.remove_retrieved(&a)?;
    let mut admin = w.admin()?;
    admin.initial = false;
    admin.changed_at = Some(99);
    admin.password_hash = "$argon2id$changed".into();
    w.put_admin(&admin)?;
    for id in ["k1", "k2", "k3"] {
        w.put_api_key(&api_key(id))?;
    }
    let mut used = api_key("k3");
    used.last_used_at = Some(77);
    w.put_api_key(&used)?;
    log.push(format!("remove k2: {}", w.remove_api_key("k2")?));
    log.push(format!("remove k9: {}", w.remove_api_key("k9")?));
    Ok(log)
}

/// Everything [`Reads`] can say about what [`scenario`] wrote, one line per call.
fn observe(r: &dyn Reads) -> Vec<String> {
    let mut out = vec![format!("mailboxes {:?}", r.mailboxes())];
    for digit in ['a', 'b', 'c'] {
        let id = mailbox_id(digit);
        out.push(format!("mailbox {digit} {:?}", r.mailbox(&id)));
        out.push(format!("messages {digit} {:?}", r.messages(&id)));
        out.push(format!("oldest {digit} {:?}", r.oldest_message_at(&id)));
        for seq in 0..5 {
            let record = r.message(&id, seq).map(|m| m.map(|m| m.encode()));
            out.push(format!("message {digit} {seq} {record:?}"));
        }
        for key in [[1u8; 32], [2; 32]] {
            out.push(format!("retrieved {digit} {:?}", r.retrieved(&id, &key)));
        }
    }
    for n in 1..=3 {
        for index in 0..3 {
            out.push(format!(
                "chunk {n} {index} {:?}",
                r.chunk(MessageId([n; 16]), index)
            ));
        }
    }
    out.push(format!("admin {:?}", r.admin().map(|a| a.encode())));
    for id in ["k1", "k2", "k3"] {
        out.push(format!("api key {id} {:?}", r.api_key(id)));
    }
    out.push(format!("api keys {:?}", r.api_keys()));
    out.push(format!("api key count {:?}", r.api_key_count()));
    out
}

#[test]
fn every_method_gives_what_redb_gives_for_the_same_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb"), &StoreOptions::default()).unwrap();
    let redb_inside = store
        .write_blocking(|w| Ok((scenario(w), observe(w))))
        .unwrap()
        .value;
    let redb_after = observe(&*store.read().unwrap());

    let db = Db::start();
    let mut client = db.migrated();
    let write = client.begin().unwrap();
    let pg_inside = (scenario(&write), observe(&write));
    write.commit().unwrap();
    let pg_after = observe(&db.reader());

    assert!(pg_inside.0.is_ok(), "{:?}", pg_inside.0);
    assert_eq!(pg_inside, redb_inside, "inside the write");
    assert_eq!(pg_after, redb_after, "after the commit");
    // What the comparison relies on, spelled out (so an empty store on both sides fails).
    let read = db.reader();
    let (a, b) = (mailbox_id('a'), mailbox_id('b'));
    assert_eq!(read.mailboxes().unwrap().len(), 2);
    assert_eq!(read.messages(&a).unwrap().len(), 1);
    assert!(
        matches!(read.chunk(MessageId([1; 16]), 0), Err(StoreError::Corrupt(e)) if e.contains("lacks chunk 0")),
        "the removed message's chunks are gone"
    );
    assert_eq!(read.chunk(MessageId([2; 16]), 1).unwrap(), vec![2, 1, 0xAA]);
    assert!(!read.retrieved(&a, &[1; 32]).unwrap(), "a's keys forgotten");
    assert!(read.retrieved(&b, &[1; 32]).unwrap(), "b's key kept");
    assert_eq!(read.api_key_count().unwrap(), 2);
}

#[test]
fn removing_a_message_removes_its_chunks_and_only_its_own() {
    let db = Db::start();
    let mut client = db.migrated();
    let a = mailbox_id('a');
    let write = client.begin().unwrap();
    for n in [1, 2] {
        let record = MessageRecord::sample(n, 3);
        for index in 0..3 {
            write.put_chunk(record.id, index, &[n; 100]).unwrap();
        }
        write.put_message(&a, u64::from(n), &record).unwrap();
    }
    write.commit().unwrap();
    let write = client.begin().unwrap();
    assert_eq!(
        write.remove_message(&a, 1).unwrap(),
        Some(MessageRecord::sample(1, 3))
    );
    write.commit().unwrap();
    assert_eq!(
        db.psql("SELECT message_id, count(*) FROM chunks GROUP BY 1"),
        format!("\\x{}|3\n", "02".repeat(16))
    );
}

#[test]
fn sequence_numbers_never_repeat_even_after_a_rollback() {
    let db = Db::start();
    let mut first = db.migrated();
    let mut second = db.client();
    let mut seen = std::collections::BTreeSet::new();
    let write = first.begin().unwrap();
    let rolled_back = write.next_seq().unwrap();
    write.rollback().unwrap();
    seen.insert(rolled_back);
    for _ in 0..5 {
        for client in [&mut first, &mut second] {
            let write = client.begin().unwrap();
            let seq = write.next_seq().unwrap();
            // Dropped without a commit: rolled back too.
            drop(write);
            assert!(seen.insert(seq), "{seq} came twice");
        }
    }
    let write = first.begin().unwrap();
    let seq = write.next_seq().unwrap();
    write.commit().unwrap();
    assert!(seen.insert(seq), "{seq} came twice");
    assert_eq!(seen.len(), 12);
}

#[test]
fn migrate_is_idempotent_and_nodes_starting_together_do_not_race() {
    let db = Db::start();
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut client = db.client();
                    barrier.wait();
                    migrate(&mut client)
                })
            })
            .collect();
        for run in runs {
            assert_eq!(run.join().unwrap(), Ok(SCHEMA_VERSION));
        }
    });
    // Again, after a change: the administrator is not reset.
    let mut client = db.client();
    let write = client.begin().unwrap();
    let mut admin = write.admin().unwrap();
    admin.initial = false;
    write.put_admin(&admin).unwrap();
    write.commit().unwrap();
    assert_eq!(migrate(&mut client), Ok(SCHEMA_VERSION));
    assert!(!db.reader().admin().unwrap().initial);
    assert_eq!(db.psql("SELECT count(*) FROM admin"), "1\n");
    assert_eq!(
        db.psql("SELECT version FROM gateway_schema"),
        format!("{SCHEMA_VERSION}\n")
    );
}

#[test]
fn a_new_database_starts_with_the_initial_administrator() {
    let db = Db::start();
    db.migrated();
    assert_eq!(db.reader().admin().unwrap(), AdminRecord::initial());
}

#[test]
fn migrate_refuses_a_database_of_a_newer_gateway() {
    let db = Db::start();
    db.migrated();
    db.psql(&format!(
        "UPDATE gateway_schema SET version = {}",
        SCHEMA_VERSION + 1
    ));
    assert_eq!(
        migrate(&mut db.client()),
        Err(StoreError::TooNew {
            found: u64::from(SCHEMA_VERSION) + 1,
            supported: SCHEMA_VERSION.into()
        })
    );
}

/// Waits until `n` sessions of the database wait for a lock (polled: the other threads are
/// blocked inside PostgreSQL, where nothing else can tell us).
fn await_lock_waiters(db: &Db, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = "SELECT count(*) FROM pg_stat_activity \
               WHERE datname = current_database() AND wait_event_type = 'Lock'";
    while db.psql(sql).trim() != n.to_string() {
        assert!(Instant::now() < deadline, "nobody waits for the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_writes_checking_one_mailbox_serialise() {
    let db = Db::start();
    let mut first = db.migrated();
    let mut second = db.client();
    let a = mailbox_id('a');
    let setup = first.begin().unwrap();
    setup.put_mailbox(&mailbox(&a, "shared")).unwrap();
    setup.commit().unwrap();

    let increment = |write: &PgWrite<'_>| {
        let mut record = write.mailbox(&a).unwrap().expect("mailbox");
        record.message_count += 1;
        write.put_mailbox(&record).unwrap();
    };
    let write = first.begin().unwrap();
    let mut record = write.mailbox(&a).unwrap().expect("mailbox");
    std::thread::scope(|s| {
        let other = s.spawn(|| {
            let write = second.begin().unwrap();
            increment(&write);
            write.commit().unwrap();
        });
        // The second node's check waits for the first one's transaction...
        await_lock_waiters(&db, 1);
        record.message_count += 1;
        write.put_mailbox(&record).unwrap();
        write.commit().unwrap();
        // ... and then sees its committed change.
        other.join().unwrap();
    });
    assert_eq!(db.reader().mailbox(&a).unwrap().unwrap().message_count, 2);
}

#[test]
fn counting_api_keys_in_a_write_holds_off_other_nodes_keys() {
    let db = Db::start();
    let mut first = db.migrated();
    let mut second = db.client();
    let write = first.begin().unwrap();
    assert_eq!(write.api_key_count().unwrap(), 0);
    std::thread::scope(|s| {
        let other = s.spawn(|| {
            let write = second.begin().unwrap();
            let count = write.api_key_count().unwrap();
            write.put_api_key(&api_key("k2")).unwrap();
            write.commit().unwrap();
            count
        });
        await_lock_waiters(&db, 1);
        write.put_api_key(&api_key("k1")).unwrap();
        write.commit().unwrap();
        assert_eq!(
            other.join().unwrap(),
            1,
            "the second count saw the first key"
        );
    });
}

#[test]
fn a_deadlock_between_nodes_is_a_conflict_for_one_of_them() {
    let db = Db::start();
    let mut first = db.migrated();
    let mut second = db.client();
    let (a, b) = (mailbox_id('a'), mailbox_id('b'));
    let setup = first.begin().unwrap();
    setup.put_mailbox(&mailbox(&a, "a")).unwrap();
    setup.put_mailbox(&mailbox(&b, "b")).unwrap();
    setup.commit().unwrap();

    let one = first.begin().unwrap();
    one.mailbox(&a).unwrap();
    let (mine, theirs) = std::thread::scope(|s| {
        let other = s.spawn(|| {
            let two = second.begin().unwrap();
            two.mailbox(&b).unwrap();
            let result = two.mailbox(&a).map(drop);
            if result.is_ok() {
                two.commit().unwrap();
            }
            result
        });
        await_lock_waiters(&db, 1);
        let result = one.mailbox(&b).map(drop);
        drop(one);
        (result, other.join().unwrap())
    });
    let conflict = |r: &Result<(), StoreError>| r.as_ref().is_err_and(StoreError::is_conflict);
    assert!(
        conflict(&mine) != conflict(&theirs),
        "exactly one conflict: {mine:?} {theirs:?}"
    );
    let lost = mine.clone().and(theirs.clone()).unwrap_err();
    assert!(!lost.is_storage_failure(), "{lost}");
    assert!(lost.to_string().contains("40P01"), "{lost}");
}

#[tokio::test]
async fn reads_and_writes_work_inside_a_current_thread_runtime() {
    let db = Db::start();
    let mut client = db.migrated();
    let write = client.begin().unwrap();
    write.put_api_key(&api_key("k1")).unwrap();
    write.commit().unwrap();
    // What a `Snapshot` holds.
    let read: Box<dyn Reads + Send + Sync> = Box::new(PgRead::new(Arc::new(client)));
    assert_eq!(read.api_key("k1").unwrap(), Some(api_key("k1")));
    assert_eq!(read.admin().unwrap(), AdminRecord::initial());
}

#[test]
fn a_killed_server_fails_calls_with_io_and_a_new_connection_works_after_restart() {
    let mut db = Db::start();
    let mut writer = db.migrated();
    let read = db.reader();
    db.pg.kill().unwrap();

    let started = Instant::now();
    assert!(matches!(read.admin(), Err(StoreError::Io(_))));
    assert!(matches!(writer.begin().map(drop), Err(StoreError::Io(_))));
    assert!(matches!(db.connect().map(drop), Err(StoreError::Io(_))));
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    assert!(writer.is_closed());

    db.pg.start().unwrap();
    let mut writer = db.client();
    let write = writer.begin().unwrap();
    write.put_api_key(&api_key("k1")).unwrap();
    write.commit().unwrap();
    assert_eq!(db.reader().api_key_count(), Ok(1));
}

#[test]
fn a_server_that_does_not_keep_its_commits_is_refused() {
    let db = Db::start();
    db.psql("ALTER DATABASE gateway SET synchronous_commit = off");
    let refused = db.connect().map(drop).unwrap_err();
    assert!(matches!(refused, StoreError::NotDurable(_)), "{refused}");
    for level in ["local", "remote_write", "on"] {
        db.psql(&format!(
            "ALTER DATABASE gateway SET synchronous_commit = {level}"
        ));
        assert!(db.connect().is_ok(), "{level}");
    }
}

#[test]
fn error_messages_never_name_the_password() {
    let db = Db::start();
    let mut config = db.config.clone();
    config.password("wrong-secret-password");
    let refused = db
        .runtime
        .connect(&config, &PgOptions::default())
        .map(drop)
        .unwrap_err();
    assert!(matches!(refused, StoreError::Io(_)), "{refused}");
    let text = format!("{refused} {refused:?}");
    assert!(!text.contains("wrong-secret-password"), "{text}");
    assert!(!text.contains(db.pg.password()), "{text}");
}

/// A server that accepts TLS only, and options trusting `ca_pem`.
fn tls_db(ca_pem: Option<&str>) -> (Db, PgOptions) {
    let pg = Postgres::create(PostgresOptions {
        fsync: false,
        tls: postgres_test_util::Tls::Required,
        ..PostgresOptions::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    let ca = ca_pem.unwrap_or_else(|| pg.ca_pem().expect("a CA with TLS"));
    let client_config = test_support::pki::client_config(ca.as_bytes()).expect("client config");
    let options = PgOptions {
        tls: Some(Arc::new(client_config)),
        ..PgOptions::default()
    };
    let config = pg.url().parse().expect("the fixture's URL parses");
    let db = Db {
        runtime: PgRuntime::start().expect("runtime thread"),
        config,
        pg,
    };
    (db, options)
}

#[test]
fn tls_verifies_the_server_and_binds_the_password_exchange_to_it() {
    let (db, options) = tls_db(None);
    let mut config = db.config.clone();
    // Fails unless the channel binding we offer is the one the server computes.
    config.channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let mut client = db.runtime.connect(&config, &options).expect("TLS connect");
    assert_eq!(migrate(&mut client), Ok(SCHEMA_VERSION));
    let encrypted = super::block_on(client.client.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    ))
    .expect("pg_stat_ssl");
    assert!(encrypted.get::<_, bool>(0));

    // The server takes TLS only (hostssl): without it, no connection.
    let plain = db.connect().map(drop).unwrap_err();
    assert!(matches!(plain, StoreError::Io(_)), "{plain}");
}

#[test]
fn tls_refuses_a_server_the_roots_do_not_vouch_for() {
    let stranger = test_support::pki::Ca::new("another CA").expect("CA");
    let (db, options) = tls_db(Some(&stranger.pem()));
    let refused = db
        .runtime
        .connect(&db.config, &options)
        .map(drop)
        .unwrap_err();
    assert!(matches!(refused, StoreError::Io(_)), "{refused}");
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
}

#[test]
fn a_node_whose_role_may_only_read_and_write_rows_starts_on_a_migrated_database() {
    let db = Db::start();
    db.migrated();
    db.psql(
        "CREATE ROLE node LOGIN PASSWORD 'node-password'; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO node; \
         GRANT USAGE ON SEQUENCE message_seq TO node",
    );
    let mut config = db.config.clone();
    config.user("node").password("node-password");
    let mut client = db.runtime.connect(&config, &PgOptions::default()).unwrap();
    assert_eq!(migrate(&mut client), Ok(SCHEMA_VERSION));
    let write = client.begin().unwrap();
    assert_eq!(write.next_seq(), Ok(1));
    assert_eq!(write.api_key_count(), Ok(0));
    write.commit().unwrap();
}

/// Coordination through read connections of their own, as a node's store has.
fn coordination(db: &Db) -> PgCoordination {
    db.migrated();
    let connector = Connector::new(db.config.clone(), PgOptions::default()).unwrap();
    PgCoordination::new(PgReads::open(Arc::new(connector), 1).unwrap())
}

fn lease(mailbox: &MailboxId, node: &str, token: i64) -> Lease {
    Lease {
        mailbox: mailbox.clone(),
        node: node.into(),
        token,
    }
}

/// Waits (polling the database's clock) until every lease of `mailbox` has expired.
fn await_expiry(db: &Db, mailbox: &MailboxId) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!(
        "SELECT count(*) FROM maildrop_leases WHERE mailbox = '{}' AND expires_at > clock_timestamp()",
        mailbox.as_str()
    );
    while db.psql(&sql) != "0\n" {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LONG: Duration = Duration::from_secs(600);
const BRIEF: Duration = Duration::from_millis(300);

#[test]
fn a_lease_is_granted_once_renewed_by_its_holder_and_released() {
    let db = Db::start();
    let shared = coordination(&db);
    let m = mailbox_id('1');
    let (first, other) = (lease(&m, "node-1", 1), lease(&m, "node-2", 2));
    assert_eq!(shared.take_lease(&first, LONG), Ok(true));
    assert_eq!(shared.take_lease(&other, LONG), Ok(false), "another node's");
    assert_eq!(shared.renew_lease(&first, LONG), Ok(true));
    assert_eq!(shared.renew_lease(&other, LONG), Ok(false));
    // A lease of the node's own is left over (its in-process lock decided it is free).
    let again = lease(&m, "node-1", 3);
    assert_eq!(shared.take_lease(&again, LONG), Ok(true));
    assert_eq!(shared.renew_lease(&first, LONG), Ok(false), "replaced");
    // Releasing an old token leaves the current lease alone.
    shared.release_lease(&first).unwrap();
    assert_eq!(shared.take_lease(&other, LONG), Ok(false));
    shared.release_lease(&again).unwrap();
    assert_eq!(shared.take_lease(&other, LONG), Ok(true));
    // Other maildrops are untouched.
    assert_eq!(
        shared.take_lease(&lease(&mailbox_id('2'), "node-1", 4), LONG),
        Ok(true)
    );
}

#[test]
fn an_expired_lease_may_be_taken_and_fences_its_old_holder() {
    let db = Db::start();
    let shared = coordination(&db);
    let m = mailbox_id('1');
    let (dead, taker) = (lease(&m, "node-1", 1), lease(&m, "node-2", 2));
    assert_eq!(shared.take_lease(&dead, BRIEF), Ok(true));
    assert_eq!(shared.take_lease(&taker, LONG), Ok(false));
    await_expiry(&db, &m);
    // Expired but untouched: the holder may still renew it (nobody else held the maildrop).
    let mut writer = db.client();
    let write = writer.begin().unwrap();
    assert_eq!(write.holds_lease(&dead), Ok(false), "expired: no deletions");
    write.rollback().unwrap();
    assert_eq!(shared.renew_lease(&dead, BRIEF), Ok(true));
    await_expiry(&db, &m);

    assert_eq!(shared.take_lease(&taker, LONG), Ok(true));
    assert_eq!(shared.renew_lease(&dead, LONG), Ok(false), "lost");
    let write = writer.begin().unwrap();
    assert_eq!(write.holds_lease(&dead), Ok(false));
    assert_eq!(write.holds_lease(&taker), Ok(true));
    write.commit().unwrap();
}

#[test]
fn a_frozen_server_fails_calls_with_io_instead_of_hanging() {
    use rustix::process::{kill_process, Pid, Signal};

    let db = Db::start();
    let options = PgOptions {
        statement_timeout: Duration::from_millis(200),
        network_timeout: Duration::from_millis(300),
        ..PgOptions::default()
    };
    let mut client = db.runtime.connect(&db.config, &options).unwrap();
    assert_eq!(migrate(&mut client), Ok(SCHEMA_VERSION));
    let pid: i32 = super::block_on(client.client.query_one("SELECT pg_backend_pid()", &[]))
        .unwrap()
        .get(0);
    let backend = Pid::from_raw(pid).expect("a backend's pid");
    // Its kernel still acknowledges our packets, and its statement_timeout cannot fire.
    kill_process(backend, Signal::STOP).unwrap();
    let started = Instant::now();
    let frozen = client.begin().map(drop);
    kill_process(backend, Signal::CONT).unwrap();
    assert!(
        matches!(&frozen, Err(StoreError::Io(e)) if e.contains("did not answer")),
        "{frozen:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Every row a source holds, table after table.
fn all_rows(source: &mut dyn Source) -> Vec<Row> {
    let mut out = Vec::new();
    for table in Table::ALL {
        source
            .rows(table, &mut |batch| {
                out.extend(batch);
                Ok(())
            })
            .expect("rows");
    }
    out
}

/// A redb store after [`scenario`], with more chunks than one batch holds.
fn filled_redb(path: &std::path::Path) -> Store {
    let store = Store::open(path, &StoreOptions::default()).unwrap();
    store.write_blocking(|w| scenario(w).map(drop)).unwrap();
    store
        .write_blocking(|w| {
            for index in 0..(BATCH_ROWS as u32 + 9) {
                w.put_chunk(MessageId([0xEE; 16]), index, &[index as u8; 100])?;
            }
            Ok(())
        })
        .unwrap();
    store
}

/// Copies `store` into the database (which must be empty).
fn copy_into(db: &Db, store: &Store) -> Summary {
    let mut sink = db.connector().sink().unwrap();
    copy(
        &mut *store.transfer_source().unwrap(),
        &mut sink,
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn a_store_moves_to_postgres_and_back_row_for_row() {
    let db = Db::start();
    let dir = tempfile::tempdir().unwrap();
    let store = filled_redb(&dir.path().join("live.redb"));
    let original = all_rows(&mut *store.transfer_source().unwrap());

    let there = copy_into(&db, &store);
    // The scenario leaves two messages of two chunks each.
    assert_eq!(there.rows(Table::Chunks), 4 + BATCH_ROWS as u64 + 9);
    verify(&there, &mut db.connector().source().unwrap())
        .unwrap()
        .expect("the PostgreSQL copy matches");
    assert_eq!(all_rows(&mut db.connector().source().unwrap()), original);

    let back_path = dir.path().join("back.redb");
    let mut sink = RedbSink::create(&back_path).unwrap();
    let mut reports = Vec::new();
    let back = copy(
        &mut db.connector().source().unwrap(),
        &mut sink,
        &mut |done, total| reports.push((done, total)),
    )
    .unwrap();
    drop(sink);
    assert_eq!(
        back, there,
        "the same counts, checksums and counter both ways"
    );
    let total = there.total_rows();
    assert_eq!(reports.last(), Some(&(total, total)));
    verify(&back, &mut RedbSource::open_file(&back_path).unwrap())
        .unwrap()
        .expect("the redb copy matches");
    assert_eq!(
        all_rows(&mut RedbSource::open_file(&back_path).unwrap()),
        original,
        "byte for byte after the round trip"
    );

    // The copy is a store that reads as the original, and arrivals continue after the
    // original's last number on every backend.
    let copied = Store::open(&back_path, &StoreOptions::default()).unwrap();
    assert_eq!(
        observe(&*copied.read().unwrap()),
        observe(&*store.read().unwrap())
    );
    let next = store.write_blocking(|w| w.next_seq()).unwrap().value;
    assert_eq!(copied.write_blocking(|w| w.next_seq()).unwrap().value, next);
    let mut client = db.client();
    let txn = client.begin().unwrap();
    assert_eq!(txn.next_seq().unwrap(), next);
}

#[test]
fn a_database_that_holds_rows_is_refused_as_a_destination() {
    let db = Db::start();
    // A new database, and one that only holds what migrating it created, are empty.
    drop(db.connector().sink().expect("a new database"));
    drop(db.connector().sink().expect("a migrated, unused database"));
    let mut client = db.migrated();
    let txn = client.begin().unwrap();
    txn.put_mailbox(&mailbox(&mailbox_id('a'), "kept")).unwrap();
    let _synced = txn.commit().unwrap();
    let refused = db.connector().sink().err().expect("refused");
    assert!(
        refused
            .to_string()
            .contains("not empty (1 rows in mailboxes)")
            && refused.to_string().contains("DROP TABLE"),
        "{refused}"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM mailboxes"),
        "1\n",
        "untouched"
    );
}

#[test]
fn a_damaged_or_incomplete_copy_fails_the_verification() {
    let db = Db::start();
    let dir = tempfile::tempdir().unwrap();
    let store = filled_redb(&dir.path().join("live.redb"));
    let copied = copy_into(&db, &store);

    db.psql(
        "UPDATE chunks SET sealed = sealed || '\\x00'::bytea \
         WHERE (message_id, idx) = (SELECT message_id, idx FROM chunks LIMIT 1)",
    );
    let found = verify(&copied, &mut db.connector().source().unwrap()).unwrap();
    assert_eq!(
        found,
        Err(Mismatch(vec!["chunks: the rows' SHA-256 differs".into()]))
    );

    db.psql("DELETE FROM api_keys WHERE id = 'k1'");
    db.psql("SELECT setval('message_seq', 1, false)");
    let found = verify(&copied, &mut db.connector().source().unwrap())
        .unwrap()
        .unwrap_err();
    assert_eq!(found.0.len(), 3, "{found}");
    assert!(
        found.0[1].contains("api_keys: 1 rows, the source 2"),
        "{found}"
    );
    assert!(found.0[2].contains("arrival counter is 1"), "{found}");
}

#[test]
fn a_taker_waits_for_the_deletion_that_checked_the_lease() {
    let db = Db::start();
    let shared = coordination(&db);
    let m = mailbox_id('1');
    let (holder, taker) = (lease(&m, "node-1", 1), lease(&m, "node-2", 2));
    assert_eq!(shared.take_lease(&holder, BRIEF), Ok(true));
    let mut writer = db.client();
    let write = writer.begin().unwrap();
    assert_eq!(write.holds_lease(&holder), Ok(true));
    // The lease expires while the deletion's transaction is still open.
    await_expiry(&db, &m);
    std::thread::scope(|s| {
        let taking = s.spawn(|| shared.take_lease(&taker, LONG));
        await_lock_waiters(&db, 1);
        assert!(!taking.is_finished(), "the taker waits for the deletion");
        write.commit().unwrap();
        assert_eq!(taking.join().unwrap(), Ok(true));
    });
}

#[test]
fn failures_count_across_connections_until_forgotten_or_cleared() {
    let db = Db::start();
    let (one, two) = (coordination(&db), coordination(&db));
    for n in 1..=3 {
        assert_eq!(one.record_failure("pop3-client", "192.0.2.7", LONG), Ok(n));
    }
    let seen = two
        .failures("pop3-client", "192.0.2.7", LONG)
        .unwrap()
        .unwrap();
    assert_eq!(seen.attempts, 3);
    assert!(seen.since_last < Duration::from_secs(60), "{seen:?}");
    assert_eq!(two.failures("admin-client", "192.0.2.7", LONG), Ok(None));
    assert_eq!(two.failures("pop3-client", "192.0.2.8", LONG), Ok(None));
    two.clear_failures("pop3-client", "192.0.2.7").unwrap();
    assert_eq!(one.failures("pop3-client", "192.0.2.7", LONG), Ok(None));

    // Quiet for `forget_after`: forgotten, and counting starts afresh.
    assert_eq!(one.record_failure("admin-account", "admin", BRIEF), Ok(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    while one
        .failures("admin-account", "admin", BRIEF)
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "never forgotten");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(one.record_failure("admin-account", "admin", BRIEF), Ok(1));
}

#[test]
fn forgotten_failures_are_pruned_now_and_then() {
    let db = Db::start();
    let shared = coordination(&db);
    let forget = Duration::from_secs(60);
    shared.record_failure("scope", "old", forget).unwrap();
    shared.record_failure("other-scope", "old", forget).unwrap();
    db.psql("UPDATE login_failures SET last_failure = clock_timestamp() - interval '1 hour'");
    shared.record_failure("scope", "recent", forget).unwrap();
    let rows = || db.psql("SELECT scope || '/' || key FROM login_failures ORDER BY 1");
    // Until the PRUNE_EVERYth failure this node records, nothing is deleted.
    for _ in 4..PRUNE_EVERY {
        shared.record_failure("scope", "recent", forget).unwrap();
    }
    assert_eq!(rows(), "other-scope/old\nscope/old\nscope/recent\n");
    shared.record_failure("scope", "recent", forget).unwrap();
    assert_eq!(
        rows(),
        "other-scope/old\nscope/recent\n",
        "the scope's quiet rows are gone, the recent one and other scopes stay"
    );
}

#[tokio::test]
async fn a_throttle_counts_the_failures_another_node_saw() {
    use crate::throttle::{ClientKey, SharedThrottle};
    let db = Db::start();
    let policy = crate::service::CLIENT_POLICY;
    let node_a = SharedThrottle::new(policy, "pop3-client", Arc::new(coordination(&db)));
    let node_b = SharedThrottle::new(policy, "pop3-client", Arc::new(coordination(&db)));
    let alone = SharedThrottle::local(policy);
    let client = ClientKey::from("192.0.2.7".parse::<std::net::IpAddr>().unwrap());
    for _ in 0..policy.free_attempts {
        assert_eq!(node_a.begin(&client), Ok(Duration::ZERO));
        node_a.failed(&client);
    }
    // B saw none of them, yet the next attempt waits about the policy's first wait, as it
    // would on A; a node counting alone would let it start at once.
    let wait = node_b.begin(&client).unwrap();
    assert!(wait > policy.base / 2 && wait <= policy.base, "{wait:?}");
    assert_eq!(alone.begin(&client), Ok(Duration::ZERO));
}

#[tokio::test]
async fn a_proxy_account_throttled_on_one_node_is_on_the_other_under_a_name_only() {
    use crate::proxy::throttle::{AccountNames, ProxyGuard, ACCOUNT_POLICY};
    use crate::proxy::ProxyLogin;
    let db = Db::start();
    let names = AccountNames::new(&[9; 32]);
    let node = || ProxyGuard::shared(Duration::ZERO, Arc::new(coordination(&db)), names.clone());
    let (node_a, node_b) = (node(), node());
    let alone = ProxyGuard::new(Duration::ZERO);
    let login = ProxyLogin::parse(
        "Alice@Example.com%mail.example.com%mbx-0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    // A new client each time: only the account's count matters here.
    let client = |n: u8| std::net::IpAddr::from([192, 0, 2, n]);
    for n in 0..ACCOUNT_POLICY.free_attempts as u8 {
        let attempt = node_a.admit(client(n), &login).unwrap();
        assert_eq!(attempt.wait, Duration::ZERO);
        let _ = node_a.failed(attempt);
    }
    // B saw none of them, yet its next login waits about the account's first wait, and the
    // one after that would wait beyond what is queued: refused. Alone it would start at once.
    let next = node_b.admit(client(100), &login).unwrap();
    let base = ACCOUNT_POLICY.base;
    assert!(next.wait > base / 2 && next.wait <= base, "{:?}", next.wait);
    assert!(node_b.admit(client(101), &login).is_err());
    assert_eq!(
        alone.admit(client(100), &login).unwrap().wait,
        Duration::ZERO
    );

    // The shared table names the account by an HMAC alone.
    let rows = db.psql("SELECT key FROM login_failures WHERE scope = 'proxy-account'");
    assert_eq!(rows.lines().count(), 1, "{rows}");
    assert_eq!(rows.trim().len(), 32, "{rows}");
    assert!(
        !rows.contains("alice") && !rows.contains("example"),
        "{rows}"
    );
    // The owner's success clears it for every node.
    node_b.succeeded(next);
    assert_eq!(
        db.psql("SELECT count(*) FROM login_failures WHERE scope = 'proxy-account'"),
        "0\n"
    );
}

#[test]
fn a_version_1_database_gains_the_coordination_tables_and_keeps_its_rows() {
    let db = Db::start();
    let mut client = db.migrated();
    let write = client.begin().unwrap();
    write.put_api_key(&api_key("k1")).unwrap();
    write.commit().unwrap();
    // What a gateway of version 1 left.
    db.psql(
        "DROP TABLE maildrop_leases; DROP TABLE login_failures; DROP TABLE shared_settings; \
         DROP TABLE console_sessions; UPDATE gateway_schema SET version = 1",
    );
    assert!(matches!(check(&client), Err(StoreError::Outdated(_))));
    assert_eq!(migrate(&mut client), Ok(SCHEMA_VERSION));
    check(&client).unwrap();
    assert_eq!(db.reader().api_key_count(), Ok(1));
    let shared = coordination(&db);
    assert_eq!(
        shared.take_lease(&lease(&mailbox_id('1'), "node-1", 1), LONG),
        Ok(true)
    );
    // What a gateway of version 2 left: the leases stay, the shared settings come.
    db.psql(
        "DROP TABLE shared_settings; DROP TABLE console_sessions; \
         UPDATE gateway_schema SET version = 2",
    );
    assert_eq!(migrate(&mut client), Ok(SCHEMA_VERSION));
    assert_eq!(
        db.psql("SELECT count(*) FROM maildrop_leases"),
        "1\n",
        "version 2's rows are kept"
    );
    shared
        .publish_setting("email_domain", "example.net")
        .unwrap();
    assert_eq!(
        shared.shared_setting("email_domain"),
        Ok(Some("example.net".into()))
    );
}

#[test]
fn a_published_setting_is_read_by_every_node_and_replaced_by_the_next() {
    let db = Db::start();
    let (a, b) = (coordination(&db), coordination(&db));
    assert_eq!(b.shared_setting("email_domain"), Ok(None));
    a.publish_setting("email_domain", "one.example").unwrap();
    assert_eq!(
        b.shared_setting("email_domain"),
        Ok(Some("one.example".into()))
    );
    b.publish_setting("email_domain", "two.example").unwrap();
    assert_eq!(
        a.shared_setting("email_domain"),
        Ok(Some("two.example".into()))
    );
    assert_eq!(a.shared_setting("other"), Ok(None));
}

#[test]
fn a_withdrawn_setting_is_gone_for_every_node() {
    let db = Db::start();
    let (a, b) = (coordination(&db), coordination(&db));
    a.publish_setting("tls.http01.token", "answer").unwrap();
    assert_eq!(
        b.shared_setting("tls.http01.token"),
        Ok(Some("answer".into()))
    );
    b.withdraw_setting("tls.http01.token").unwrap();
    assert_eq!(a.shared_setting("tls.http01.token"), Ok(None));
    // Withdrawing what is not there is no error.
    a.withdraw_setting("tls.http01.token").unwrap();
}

#[test]
fn a_task_is_held_by_one_node_until_released_or_expired_and_no_maildrop_sees_it() {
    let db = Db::start();
    let (a, b) = (coordination(&db), coordination(&db));
    assert_eq!(a.take_task("order", "node-a", LONG), Ok(true));
    assert_eq!(b.take_task("order", "node-b", LONG), Ok(false));
    assert_eq!(a.take_task("order", "node-a", LONG), Ok(true), "its own");
    // Another task, and a maildrop, are separate.
    assert_eq!(b.take_task("other", "node-b", LONG), Ok(true));
    let m = mailbox_id('1');
    assert_eq!(b.take_lease(&lease(&m, "node-b", 1), LONG), Ok(true));
    // Only the holder's release counts.
    b.release_task("order", "node-b").unwrap();
    assert_eq!(b.take_task("order", "node-b", LONG), Ok(false));
    a.release_task("order", "node-a").unwrap();
    assert_eq!(b.take_task("order", "node-b", BRIEF), Ok(true));
    // A holder that died: its task is free once its time ran out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.take_task("order", "node-a", LONG) != Ok(true) {
        assert!(Instant::now() < deadline, "the task never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_version_3_database_gains_the_sessions_table_and_keeps_its_rows() {
    let db = Db::start();
    let mut client = db.migrated();
    let shared = coordination(&db);
    shared
        .publish_setting("email_domain", "example.net")
        .unwrap();
    assert!(shared
        .take_lease(&lease(&mailbox_id('3'), "node-3", 3), LONG)
        .unwrap());
    // What a gateway of version 3 left.
    db.psql("DROP TABLE console_sessions; UPDATE gateway_schema SET version = 3");
    assert!(matches!(check(&client), Err(StoreError::Outdated(_))));
    assert_eq!(migrate(&mut client), Ok(SCHEMA_VERSION));
    check(&client).unwrap();
    assert_eq!(
        shared.shared_setting("email_domain"),
        Ok(Some("example.net".into())),
        "version 3's rows are kept"
    );
    assert_eq!(db.psql("SELECT count(*) FROM maildrop_leases"), "1\n");
    shared
        .create_session(&session_key(1), None, false, &SESSIONS)
        .unwrap();
    assert_eq!(shared.session(&session_key(1), &SESSIONS), Ok(Some(false)));
}

fn session_key(n: u8) -> SessionKey {
    [n; 32]
}

/// Long enough that nothing ends by itself during a test; times are moved with SQL.
const SESSIONS: SessionLimits = SessionLimits {
    idle: Duration::from_secs(30 * 60),
    absolute: Duration::from_secs(12 * 60 * 60),
    capacity: 1000,
    touch_after: Duration::from_secs(5),
};

/// Moves session `n`'s times back: `created` and `seen` seconds ago.
fn age_session(db: &Db, n: u8, created: u32, seen: u32) {
    db.psql(&format!(
        "UPDATE console_sessions \
         SET created_at = clock_timestamp() - make_interval(secs => {created}), \
             last_seen = clock_timestamp() - make_interval(secs => {seen}) \
         WHERE key = '\\x{}'",
        data_encoding::HEXLOWER.encode(&session_key(n))
    ));
}

#[test]
fn a_session_created_on_one_node_is_found_acknowledged_and_removed_on_another() {
    let db = Db::start();
    let (a, b) = (coordination(&db), coordination(&db));
    a.create_session(&session_key(1), None, true, &SESSIONS)
        .unwrap();
    assert_eq!(b.session(&session_key(1), &SESSIONS), Ok(Some(true)));
    assert_eq!(b.session(&session_key(2), &SESSIONS), Ok(None));
    assert_eq!(b.set_session_pending(&session_key(1), false), Ok(true));
    assert_eq!(a.session(&session_key(1), &SESSIONS), Ok(Some(false)));
    assert_eq!(a.set_session_pending(&session_key(2), false), Ok(false));
    // Only the key is stored: 32 bytes, the token's hash, and nothing else secret.
    assert_eq!(db.psql("SELECT length(key) FROM console_sessions"), "32\n");
    b.remove_session(&session_key(1)).unwrap();
    assert_eq!(a.session(&session_key(1), &SESSIONS), Ok(None));
    // A sign-in that presents an old token ends it.
    a.create_session(&session_key(3), None, false, &SESSIONS)
        .unwrap();
    a.create_session(&session_key(4), Some(&session_key(3)), false, &SESSIONS)
        .unwrap();
    assert_eq!(b.session(&session_key(3), &SESSIONS), Ok(None));
    a.create_session(&session_key(5), None, false, &SESSIONS)
        .unwrap();
    b.remove_other_sessions(&session_key(5)).unwrap();
    assert_eq!(a.session(&session_key(4), &SESSIONS), Ok(None));
    assert_eq!(a.session(&session_key(5), &SESSIONS), Ok(Some(false)));
}

#[test]
fn a_session_ends_after_its_idle_time_and_after_its_absolute_time() {
    let db = Db::start();
    let node = coordination(&db);
    for n in 1..=3 {
        node.create_session(&session_key(n), None, false, &SESSIONS)
            .unwrap();
    }
    let (idle, absolute) = (30 * 60, 12 * 60 * 60);
    // Seen just before the idle time ran out: alive, and seen now.
    age_session(&db, 1, idle + 5, idle - 5);
    assert_eq!(node.session(&session_key(1), &SESSIONS), Ok(Some(false)));
    assert_eq!(
        db.psql(&format!(
            "SELECT last_seen > clock_timestamp() - interval '60 seconds' FROM console_sessions \
             WHERE key = '\\x{}'",
            data_encoding::HEXLOWER.encode(&session_key(1))
        )),
        "t\n",
        "the lookup recorded the session as seen"
    );
    age_session(&db, 2, idle + 5, idle);
    assert_eq!(node.session(&session_key(2), &SESSIONS), Ok(None), "idle");
    age_session(&db, 3, absolute, 1);
    assert_eq!(
        node.session(&session_key(3), &SESSIONS),
        Ok(None),
        "absolute"
    );
    // A policy of zero ends every session at once.
    let none = SessionLimits {
        idle: Duration::ZERO,
        ..SESSIONS
    };
    assert_eq!(node.session(&session_key(1), &none), Ok(None));
}

#[test]
fn a_lookup_writes_last_seen_only_when_it_is_older_than_touch_after() {
    let db = Db::start();
    let node = coordination(&db);
    node.create_session(&session_key(1), None, false, &SESSIONS)
        .unwrap();
    age_session(&db, 1, 100, 3);
    let seen =
        "SELECT round(extract(epoch FROM clock_timestamp() - last_seen)) FROM console_sessions";
    assert_eq!(node.session(&session_key(1), &SESSIONS), Ok(Some(false)));
    assert_eq!(db.psql(seen), "3\n", "seen 3 s ago: not written again");
    age_session(&db, 1, 100, 6);
    assert_eq!(node.session(&session_key(1), &SESSIONS), Ok(Some(false)));
    assert_eq!(db.psql(seen), "0\n", "seen 6 s ago: written");
}

#[test]
fn creating_a_session_prunes_ended_ones_then_the_idlest_within_capacity() {
    let db = Db::start();
    let node = coordination(&db);
    let three = SessionLimits {
        capacity: 3,
        ..SESSIONS
    };
    for n in 1..=3 {
        node.create_session(&session_key(n), None, false, &three)
            .unwrap();
    }
    // 1 ended (idle); 2 is idlest of the live ones.
    age_session(&db, 1, 3600, 3600);
    age_session(&db, 2, 60, 50);
    age_session(&db, 3, 60, 10);
    node.create_session(&session_key(4), None, false, &three)
        .unwrap();
    let keys = "SELECT string_agg(get_byte(key, 0)::text, ',' ORDER BY key) FROM console_sessions";
    assert_eq!(db.psql(keys), "2,3,4\n", "the ended one goes first");
    node.create_session(&session_key(5), None, false, &three)
        .unwrap();
    assert_eq!(db.psql(keys), "3,4,5\n", "then the idlest");
    for n in [3, 4, 5] {
        assert_eq!(
            node.session(&session_key(n), &three),
            Ok(Some(false)),
            "{n}"
        );
    }
}

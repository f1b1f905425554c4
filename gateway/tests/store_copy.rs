//! Moving a store between redb and PostgreSQL with `gateway store copy` (run as a process),
//! or between two PostgreSQL servers (a password file for each), `gateway store migrate`,
//! and backups of a gateway whose store is PostgreSQL. Every copy is opened by a gateway
//! afterwards and its messages read with the mailbox's password.
//!
//! The database is a throwaway cluster from Debian's `postgresql` (postgres-test-util).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use gateway::config::Config;
use gateway::service::Gateway;
use gateway::store::postgres::SCHEMA_VERSION;
use postgres_test_util::{Postgres, PostgresOptions};
use support::{messages, use_database, use_named_database, TestGateway};

fn database() -> Postgres {
    Postgres::create(PostgresOptions::default()).expect("a throwaway PostgreSQL")
}

/// Runs the `gateway` binary in `dir` with `PGPASSWORD` set to `password`, if any.
fn gateway_cli(dir: &Path, args: &[&str], password: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .args(args)
        .current_dir(dir)
        .env("GATEWAY_DATA_DIR", dir.join("cli-data"))
        .env_remove("GATEWAY_CONFIG")
        .env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command.output().expect("run gateway")
}

fn succeeds(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_saying(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(stderr.contains(says), "{stderr}");
}

/// The summary `store copy` prints: rows and SHA-256 of each table, and the counter.
fn table_lines(printed: &str) -> Vec<String> {
    printed
        .lines()
        .filter(|line| line.starts_with("  "))
        .map(str::to_owned)
        .collect()
}

/// A URL for the command line: no password in it.
fn url(pg: &Postgres, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{database}", pg.port())
}

/// A gateway on a redb store in `data_dir` (listeners not started).
fn redb_gateway(data_dir: &Path) -> Gateway {
    let mut config = Config::default();
    config.gateway.data_dir = data_dir.to_owned();
    Gateway::open(&config).expect("open the redb copy")
}

/// A gateway on `database` of `pg` (listeners not started).
fn postgres_gateway(pg: &Postgres, database: &str, scratch: &Path) -> Gateway {
    let mut config = Config::default();
    config.gateway.data_dir = scratch.join(format!("{database}-node"));
    use_named_database(
        &mut config,
        pg,
        database,
        &scratch.join(format!("{database}-password")),
    );
    Gateway::open(&config).expect("open the PostgreSQL copy")
}

/// A running gateway on `pg`'s database, its password in `<dir>/node-password`.
async fn node(pg: &Postgres, dir: &Path) -> TestGateway {
    TestGateway::start_with(|config| use_database(config, pg, &dir.join("node-password"))).await
}

fn message(subject: &str, body_lines: usize) -> Vec<u8> {
    let mut text = format!(
        "From: sender@example.org\r\nTo: archive@example.org\r\nSubject: {subject}\r\n\r\n"
    );
    for n in 0..body_lines {
        text.push_str(&format!(
            "line {n} of {subject}, long enough to fill chunks quickly\r\n"
        ));
    }
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_from_postgres_to_redb_and_back_readable_with_its_password() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let gw = node(&pg, dir).await;
    let (id, address, password) = gw.create_mailbox("moving").await;
    gw.deliver(&address, &message("small", 3)).await;
    // Several chunks of 64 KiB.
    gw.deliver(&address, &message("large", 4000)).await;
    let expected = gw.messages(&id, &password);
    assert_eq!(expected.len(), 2);

    // PostgreSQL → redb while the node runs: the copy reads one consistent view.
    let redb_dir = dir.join("redb-data");
    std::fs::create_dir_all(&redb_dir).unwrap();
    let redb_file = redb_dir.join("gateway.redb");
    let to_redb = [
        "store",
        "copy",
        "--from",
        &url(&pg, pg.database()),
        "--to",
        redb_file.to_str().unwrap(),
        "--tls",
        "off",
    ];
    let out = gateway_cli(dir, &to_redb, Some(pg.password()));
    let printed = succeeds(&out);
    assert!(
        printed.contains("The copy holds the same rows"),
        "{printed}"
    );
    let first_summary = table_lines(&printed);
    assert!(
        first_summary.iter().any(|l| l.contains("chunks")),
        "{printed}"
    );
    // Never over an existing file.
    fails_saying(
        &gateway_cli(dir, &to_redb, Some(pg.password())),
        "a copy goes to a new file",
    );

    // A gateway opened on the file finds the mailbox and reads every message with its password.
    let on_redb = redb_gateway(&redb_dir);
    assert_eq!(messages(&on_redb, &id, &password), expected);
    let from_redb = |to: &str| {
        vec![
            "store".to_owned(),
            "copy".to_owned(),
            "--from".to_owned(),
            redb_file.to_str().unwrap().to_owned(),
            "--to".to_owned(),
            to.to_owned(),
            "--password-file".to_owned(),
            dir.join("node-password").to_str().unwrap().to_owned(),
            "--tls".to_owned(),
            "off".to_owned(),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        gateway_cli(dir, &args, None)
    };
    pg.create_database("moved").unwrap();
    // The source is in use: redb's lock says so, and nothing is copied.
    fails_saying(
        &run(from_redb(&url(&pg, "moved"))),
        "in use by a running gateway",
    );
    drop(on_redb);

    // redb → a new PostgreSQL database, then a gateway on it.
    let printed = succeeds(&run(from_redb(&url(&pg, "moved"))));
    assert!(
        printed.contains("The copy holds the same rows"),
        "{printed}"
    );
    let on_moved = postgres_gateway(&pg, "moved", dir);
    assert_eq!(messages(&on_moved, &id, &password), expected);
    assert_eq!(
        on_moved.list_mailboxes().unwrap().len(),
        gw.gateway().list_mailboxes().unwrap().len()
    );
    assert_eq!(
        table_lines(&printed),
        first_summary,
        "the same rows and checksums"
    );

    // And back into redb once more: the same rows after redb → PostgreSQL → redb.
    let back_dir = dir.join("back-data");
    std::fs::create_dir_all(&back_dir).unwrap();
    let back_file = back_dir.join("gateway.redb");
    let back = [
        "store",
        "copy",
        "--from",
        &url(&pg, "moved"),
        "--to",
        back_file.to_str().unwrap(),
        "--tls",
        "off",
    ];
    let printed = succeeds(&gateway_cli(dir, &back, Some(pg.password())));
    assert_eq!(table_lines(&printed), first_summary);
    assert_eq!(messages(&redb_gateway(&back_dir), &id, &password), expected);

    // Not into a database that holds a store, and never with a password on the command line.
    fails_saying(
        &run(from_redb(&url(&pg, "moved"))),
        "the database is not empty",
    );
    let with_password = format!(
        "postgres://postgres:{}@127.0.0.1:{}/moved",
        pg.password(),
        pg.port()
    );
    let out = run(from_redb(&with_password));
    fails_saying(&out, "--to holds a password");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(pg.password()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_between_two_postgres_servers_each_with_its_own_password() {
    let (pg, other) = (database(), database());
    assert_ne!(pg.password(), other.password());
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let gw = node(&pg, dir).await;
    let (id, address, password) = gw.create_mailbox("across servers").await;
    gw.deliver(&address, &message("across", 20)).await;
    let expected = gw.messages(&id, &password);
    other.create_database("moved").unwrap();
    let other_password = dir.join("other-password");
    std::fs::write(&other_password, other.password()).unwrap();
    let (from, to) = (url(&pg, pg.database()), url(&other, "moved"));
    let copy = |password_flags: &[&str]| {
        let mut args = vec![
            "store", "copy", "--from", &from, "--to", &to, "--tls", "off",
        ];
        args.extend_from_slice(password_flags);
        gateway_cli(dir, &args, None)
    };
    let (ours, theirs) = (
        dir.join("node-password").to_str().unwrap().to_owned(),
        other_password.to_str().unwrap().to_owned(),
    );
    // One password for both, as before: the second server refuses it.
    fails_saying(&copy(&["--password-file", &ours]), "cannot copy into");
    let printed = succeeds(&copy(&[
        "--from-password-file",
        &ours,
        "--to-password-file",
        &theirs,
    ]));
    assert!(
        printed.contains("The copy holds the same rows"),
        "{printed}"
    );
    let moved = postgres_gateway(&other, "moved", dir);
    assert_eq!(messages(&moved, &id, &password), expected);
}

#[test]
fn store_migrate_creates_the_tables_once() {
    let pg = database();
    pg.create_database("fresh").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let password_file = dir.join("password");
    std::fs::write(&password_file, pg.password()).unwrap();
    let config_file = dir.join("gateway.toml");
    std::fs::write(
        &config_file,
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\ntls = \"off\"\n",
            url(&pg, "fresh"),
            password_file.display()
        ),
    )
    .unwrap();
    let migrate = [
        "--config",
        config_file.to_str().unwrap(),
        "store",
        "migrate",
    ];
    let first = succeeds(&gateway_cli(dir, &migrate, None));
    assert!(
        first.contains(&format!(
            "schema version none (new database) -> {SCHEMA_VERSION}"
        )),
        "{first}"
    );
    let again = succeeds(&gateway_cli(dir, &migrate, None));
    assert!(
        again.contains(&format!(
            "schema version {SCHEMA_VERSION} -> {SCHEMA_VERSION}"
        )),
        "{again}"
    );
    assert_eq!(
        pg.psql("fresh", "SELECT version FROM gateway_schema")
            .unwrap(),
        format!("{SCHEMA_VERSION}\n")
    );
    assert_eq!(
        pg.psql("fresh", "SELECT count(*) FROM admin").unwrap(),
        "1\n",
        "the initial administrator, once"
    );

    // redb (a directory without the PostgreSQL configuration): opening the file creates
    // and upgrades it.
    let elsewhere = dir.join("redb");
    std::fs::create_dir(&elsewhere).unwrap();
    let redb = succeeds(&gateway_cli(&elsewhere, &["store", "migrate"], None));
    assert!(redb.contains("at schema version"), "{redb}");
    assert!(elsewhere.join("cli-data").join("gateway.redb").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_postgres_gateway_restores_into_redb_with_every_message() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let gw = node(&pg, dir).await;
    let (id, address, password) = gw.create_mailbox("backed up").await;
    for n in 0..3 {
        gw.deliver(&address, &message(&format!("message {n}"), 50 + n))
            .await;
    }
    let expected = gw.messages(&id, &password);

    let backup = dir.join("backup");
    let sources = gateway::backup::Sources {
        store: gw.gateway().store_for_tests().clone(),
        data_dir: gw.config.gateway.data_dir.clone(),
        config_file: None,
    };
    let manifest = gateway::backup::create_backup(
        &sources,
        &backup,
        gateway::backup::BackupKind::Backup,
        &mut |_, _| {},
    )
    .expect("backup of a PostgreSQL store");
    assert_eq!((manifest.mailboxes, manifest.messages), (1, 3));
    assert_eq!(
        manifest.schema_version,
        gateway::store::schema::SCHEMA_VERSION,
        "a redb file, whatever the backend"
    );

    let restored = dir.join("restored");
    gateway::backup::restore(&backup, &restored, None).expect("restore");
    let on_redb = redb_gateway(&restored);
    assert_eq!(messages(&on_redb, &id, &password), expected);
}

//! Gateway nodes sharing one PostgreSQL database (`[store] backend = "postgres"`): mail that
//! one node accepted is picked up through the other, byte for byte, and a node that loses
//! the database answers 451, never 250, and recovers by itself when it returns.
//!
//! The database is a throwaway cluster from Debian's `postgresql` (postgres-test-util); the
//! nodes run in this process on their own loopback ports and data directories.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use gateway::config::{Config, DatabaseTls, StoreBackend};
use gateway::crypto::{Envelope, MailboxPassword};
use gateway::mailbox::MailboxId;
use gateway::service::Gateway;
use postgres_test_util::{Postgres, PostgresOptions};
use support::{Client, Pop3Client, TestGateway};

fn database() -> Postgres {
    Postgres::create(PostgresOptions::default()).expect("a throwaway PostgreSQL")
}

/// Points `config` at the database: the URL without the password, which goes into a file
/// only the gateway reads (as an administrator would set it up).
fn use_database(config: &mut Config, pg: &Postgres, password_file: &Path) {
    std::fs::write(password_file, pg.password()).expect("password file");
    config.store.backend = StoreBackend::Postgres;
    config.store.url = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        pg.port(),
        pg.database()
    );
    config.store.password_file = Some(password_file.to_owned());
    // Loopback: the only place a plain connection is accepted.
    config.store.tls = DatabaseTls::Off;
    config.store.pool_size = 2;
}

/// A node on the shared database.
async fn node(pg: &Postgres, scratch: &Path, name: &str) -> TestGateway {
    let password_file = scratch.join(format!("{name}-db-password"));
    TestGateway::start_with(|config| use_database(config, pg, &password_file)).await
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: sender@example.org\r\nTo: archive@example.org\r\nSubject: {subject}\r\n\r\n\
         Body of {subject}.\r\nA second line.\r\n"
    )
    .into_bytes()
}

/// One SMTP transaction; the reply to the end of the data (or to the first refused step).
async fn try_deliver(gw: &TestGateway, to: &str, body: &[u8]) -> u16 {
    let (mut client, greeting) = Client::connect(gw.smtp_addr()).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    client.ehlo().await.expect(250, "");
    let code = async {
        for command in [
            "MAIL FROM:<a@example.org>".to_owned(),
            format!("RCPT TO:<{to}>"),
        ] {
            let reply = client.command(&command).await;
            if reply.code != 250 {
                return reply.code;
            }
        }
        let reply = client.command("DATA").await;
        if reply.code != 354 {
            return reply.code;
        }
        client.send(support::dot_stuff(body)).await;
        client.reply().await.code
    }
    .await;
    let _ = client.command("QUIT").await;
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_accepted_by_one_node_is_picked_up_through_the_other() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node(&pg, scratch.path(), "a").await;
    let b = node(&pg, scratch.path(), "b").await;

    // Created through A, known to B at once: one database.
    let (id, address, password) = a.create_mailbox("shared").await;
    assert_eq!(b.gateway().mailbox(&id).unwrap().id, id);

    a.deliver(&address, &message("through A")).await;
    b.deliver(&address, &message("through B")).await;
    let stored = a.messages(&id, &password);
    assert_eq!(stored.len(), 2);
    assert_eq!(
        b.messages(&id, &password),
        stored,
        "both nodes read the same bytes"
    );

    // The archiver picks everything up through B and deletes it.
    let (mut pop3, greeting) = Pop3Client::connect_tls(b.pop3s_addr(), &b.tls_connector()).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let login = pop3
        .login(&id.to_string(), password.reveal_for_display().as_str())
        .await;
    assert!(login.starts_with("+OK"), "{login}");
    assert_eq!(pop3.stat().await.0, 2);
    for (n, expected) in stored.iter().enumerate() {
        assert_eq!(&pop3.retr(n + 1).await, expected, "RETR {}", n + 1);
        pop3.ok(&format!("DELE {}", n + 1)).await;
    }
    pop3.ok("QUIT").await;
    assert_eq!(a.message_count(&id), 0, "A sees B's deletions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_its_database_answers_451_and_recovers_when_it_returns() {
    let mut pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node(&pg, scratch.path(), "a").await;
    let (id, address, password) = a.create_mailbox("outage").await;
    a.deliver(&address, &message("before")).await;

    pg.stop().expect("stop PostgreSQL");
    for attempt in 0..3 {
        let code = try_deliver(&a, &address, &message("during")).await;
        assert_eq!(
            code / 100,
            4,
            "attempt {attempt}: a temporary refusal, never 250"
        );
    }

    pg.start().expect("start PostgreSQL again");
    // The node reconnects by itself; nothing but more mail tells it the database is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match try_deliver(&a, &address, &message("after")).await {
            250 => break,
            code => {
                assert_eq!(code / 100, 4, "only temporary refusals while it recovers");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no recovery within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let subjects: Vec<String> = a
        .messages(&id, &password)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(subjects.len(), 2, "only what was acknowledged is there");
    assert!(subjects[0].contains("Subject: before"));
    assert!(subjects[1].contains("Subject: after"));
}

/// Deterministic body of message `n`, from a few bytes to several chunks.
fn body(n: u64) -> Vec<u8> {
    let len = [40, 10_000, 200_000, 70_000][(n % 4) as usize];
    let mut out = format!("Subject: message {n}\r\n\r\n").into_bytes();
    out.extend((0..len).map(|i| b'a' + ((i as u64 * 7 + n) % 26) as u8));
    out
}

/// A node's configuration on the database, in its own data directory under `scratch`.
fn node_config(pg: &Postgres, scratch: &Path, name: &str) -> Config {
    let mut config = Config::default();
    config.gateway.data_dir = scratch.join(name);
    use_database(
        &mut config,
        pg,
        &scratch.join(format!("{name}-db-password")),
    );
    config
}

/// The child node: stores messages into the mailbox from four concurrent writers until it
/// is killed, printing `stored N` once message N's commit returned (as a 250 would be
/// sent) and `refused N` when it failed (as a 451 would be).
#[test]
fn child_node_stores_until_killed() {
    let Ok(config) = std::env::var("CLUSTER_CHILD_CONFIG") else {
        return; // Only meaningful as the child of the tests below.
    };
    let config = Config::load(Path::new(&config)).unwrap();
    let mailbox = MailboxId::parse(&std::env::var("CLUSTER_CHILD_MAILBOX").unwrap()).unwrap();
    let gateway = Gateway::open(&config).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let gateway = gateway.clone();
            let mailbox = mailbox.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0.. {
                    let n = round * 4 + worker;
                    let stored = async {
                        let mut draft = gateway
                            .begin_message(std::slice::from_ref(&mailbox), &Envelope::default())?;
                        draft.write(&body(n))?;
                        gateway.commit(draft).await
                    }
                    .await;
                    match stored {
                        Ok(_) => println!("stored {n}"),
                        Err(_) => {
                            println!("refused {n}");
                            // As a client would, before its next try.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// Node A as a child process storing into `mailbox`, and its output.
fn start_child_node(config: &Config, scratch: &Path, mailbox: &MailboxId) -> (Child, ChildStdout) {
    let path = scratch.join("child-node.toml");
    std::fs::create_dir_all(&config.gateway.data_dir).unwrap();
    std::fs::write(&path, config.to_toml_string()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_node_stores_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CLUSTER_CHILD_CONFIG", &path)
        .env("CLUSTER_CHILD_MAILBOX", mailbox.as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdout)
}

/// What the child printed: acknowledged and refused message numbers.
#[derive(Default)]
struct Outcomes {
    stored: BTreeSet<u64>,
    refused: usize,
}

impl Outcomes {
    fn note(&mut self, line: &str) {
        if let Some(n) = line.strip_prefix("stored ") {
            self.stored.insert(n.parse().unwrap());
        } else if line.starts_with("refused ") {
            self.refused += 1;
        }
    }

    /// Reads lines until `done` holds.
    fn until(
        &mut self,
        lines: &mut impl Iterator<Item = std::io::Result<String>>,
        done: impl Fn(&Self) -> bool,
    ) {
        while !done(self) {
            let line = lines.next().expect("the child node ended early").unwrap();
            self.note(&line);
        }
    }
}

/// Every acknowledged message is in the mailbox, read through another node, byte for byte
/// and once; the counters match.
fn assert_all_there(
    node: &Gateway,
    mailbox: &MailboxId,
    password: &MailboxPassword,
    acknowledged: &BTreeSet<u64>,
) {
    let key = node.unseal(mailbox, password).unwrap();
    let mut found = BTreeSet::new();
    let listed = node.list_messages(mailbox).unwrap();
    for message in &listed {
        let (_, bytes) = node
            .read_message(&key, message.seq)
            .expect("every stored message decrypts");
        let n: u64 = String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            .strip_prefix("Subject: message ")
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("a message the child wrote");
        assert_eq!(bytes, body(n), "message {n} is byte-identical");
        assert!(found.insert(n), "message {n} stored once");
    }
    for n in acknowledged {
        assert!(found.contains(n), "acknowledged message {n} was lost");
    }
    assert_eq!(
        node.mailbox(mailbox).unwrap().message_count as usize,
        listed.len()
    );
}

/// Opens node B in this process (its own data directory) and creates the mailbox.
fn node_b(config: &Config) -> (Gateway, MailboxId, MailboxPassword) {
    std::fs::create_dir_all(&config.gateway.data_dir).unwrap();
    let gateway = Gateway::open(config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let created = runtime
        .block_on(gateway.create_mailbox("cluster", ""))
        .unwrap();
    let shown = created.password.reveal_for_display().to_string();
    (
        gateway,
        created.info.id,
        MailboxPassword::from_user_input(&shown),
    )
}

#[test]
fn sigkill_of_a_node_under_load_loses_nothing_it_acknowledged() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let (b, mailbox, password) = node_b(&node_config(&pg, scratch.path(), "b"));
    let (mut child, stdout) = start_child_node(
        &node_config(&pg, scratch.path(), "a"),
        scratch.path(),
        &mailbox,
    );
    let mut lines = BufReader::new(stdout).lines();
    let mut outcomes = Outcomes::default();
    outcomes.until(&mut lines, |o| o.stored.len() >= 60);
    child.kill().unwrap(); // SIGKILL: no destructors, no clean close.
    child.wait().unwrap();
    for line in lines.map_while(Result::ok) {
        outcomes.note(&line);
    }
    assert_all_there(&b, &mailbox, &password, &outcomes.stored);
}

#[test]
fn restarting_the_database_under_load_refuses_for_a_while_then_recovers_losing_nothing() {
    let mut pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let (b, mailbox, password) = node_b(&node_config(&pg, scratch.path(), "b"));
    let (mut child, stdout) = start_child_node(
        &node_config(&pg, scratch.path(), "a"),
        scratch.path(),
        &mailbox,
    );
    let mut lines = BufReader::new(stdout).lines();
    let mut outcomes = Outcomes::default();
    outcomes.until(&mut lines, |o| o.stored.len() >= 20);
    // An immediate stop (as a crash of the server would) while commits are in flight.
    pg.kill().expect("kill PostgreSQL");
    outcomes.until(&mut lines, |o| o.refused >= 8);
    let before_restart = outcomes.stored.len();
    pg.start().expect("PostgreSQL recovers and starts again");
    outcomes.until(&mut lines, |o| o.stored.len() >= before_restart + 20);
    child.kill().unwrap();
    child.wait().unwrap();
    for line in lines.map_while(Result::ok) {
        outcomes.note(&line);
    }
    // Node B's connections died with the server too; its reads come back by themselves.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b.list_messages(&mailbox).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "node B never reconnected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_all_there(&b, &mailbox, &password, &outcomes.stored);
}

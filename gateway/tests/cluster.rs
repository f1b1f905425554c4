//! Gateway nodes sharing one PostgreSQL database (`[store] backend = "postgres"`): mail that
//! one node accepted is picked up through the other, byte for byte, and a node that loses
//! the database answers 451, never 250, and recovers by itself when it returns.
//!
//! The database is a throwaway cluster from Debian's `postgresql` (postgres-test-util); the
//! nodes run in this process on their own loopback ports and data directories.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use gateway::config::Config;
use gateway::crypto::MailboxPassword;
use gateway::mailbox::MailboxId;
use gateway::service::Gateway;
use postgres_test_util::{Postgres, PostgresOptions};
use support::storing::{assert_all_there, store_until_killed, Outcomes};
use support::{use_database, Client, Pop3Client, TestGateway};

fn database() -> Postgres {
    Postgres::create(PostgresOptions::default()).expect("a throwaway PostgreSQL")
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

/// The child node: stores into the mailbox until killed (see `support::storing`).
#[test]
fn child_node_stores_until_killed() {
    let Ok(config) = std::env::var("CLUSTER_CHILD_CONFIG") else {
        return; // Only meaningful as the child of the tests below.
    };
    let config = Config::load(Path::new(&config)).unwrap();
    let mailbox = MailboxId::parse(&std::env::var("CLUSTER_CHILD_MAILBOX").unwrap()).unwrap();
    store_until_killed(Gateway::open(&config).unwrap(), mailbox);
}

/// Node B in this process, with a new mailbox, and node A as a child process storing into
/// it; the lines A prints.
struct Pair {
    b: Gateway,
    mailbox: MailboxId,
    password: MailboxPassword,
    a: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    outcomes: Outcomes,
}

impl Pair {
    fn start(pg: &Postgres, scratch: &Path) -> Self {
        let config = node_config(pg, scratch, "b");
        std::fs::create_dir_all(&config.gateway.data_dir).unwrap();
        let b = Gateway::open(&config).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let created = runtime.block_on(b.create_mailbox("cluster", "")).unwrap();
        let shown = created.password.reveal_for_display().to_string();
        let mailbox = created.info.id;

        let config = node_config(pg, scratch, "a");
        let path = scratch.join("child-node.toml");
        std::fs::create_dir_all(&config.gateway.data_dir).unwrap();
        std::fs::write(&path, config.to_toml_string()).unwrap();
        let mut a = Command::new(std::env::current_exe().unwrap())
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
        let lines = BufReader::new(a.stdout.take().unwrap()).lines();
        Self {
            b,
            mailbox,
            password: MailboxPassword::from_user_input(&shown),
            a,
            lines,
            outcomes: Outcomes::default(),
        }
    }

    /// Reads node A's lines until `done` holds.
    fn until(&mut self, done: impl Fn(&Outcomes) -> bool) {
        self.outcomes.until(&mut self.lines, done);
    }

    /// SIGKILLs node A (no destructors, no clean close), then checks through node B that
    /// everything A acknowledged is there.
    fn kill_a_and_check(mut self) {
        self.a.kill().unwrap();
        self.a.wait().unwrap();
        self.outcomes.drain(self.lines);
        // Node B's connections may have died with a restarted server; its reads come back
        // by themselves.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.b.list_messages(&self.mailbox).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "node B never reconnected"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_all_there(
            &self.b,
            &self.mailbox,
            &self.password,
            &self.outcomes.stored,
        );
    }
}

#[test]
fn sigkill_of_a_node_under_load_loses_nothing_it_acknowledged() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let mut pair = Pair::start(&pg, scratch.path());
    pair.until(|o| o.stored.len() >= 60);
    pair.kill_a_and_check();
}

#[test]
fn restarting_the_database_under_load_refuses_for_a_while_then_recovers_losing_nothing() {
    let mut pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let mut pair = Pair::start(&pg, scratch.path());
    pair.until(|o| o.stored.len() >= 20);
    // An immediate stop (as a crash of the server would) while commits are in flight.
    pg.kill().expect("kill PostgreSQL");
    pair.until(|o| o.refused >= 8);
    let before_restart = pair.outcomes.stored.len();
    pg.start().expect("PostgreSQL recovers and starts again");
    pair.until(|o| o.stored.len() >= before_restart + 20);
    pair.kill_a_and_check();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pop3_proxy_client_alternating_between_nodes_gets_one_copy_per_message() {
    use support::proxying::{login, provider, python, trust_provider};
    let provider = provider().await;
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    // Every node has the first node's retrieval key, as the README asks.
    let key = [0x5a_u8; 32];
    let node = |name: &'static str, key: [u8; 32]| {
        let password_file = scratch.path().join(format!("{name}-db-password"));
        let provider = &provider;
        let pg = &pg;
        TestGateway::start_with(move |config| {
            use_database(config, pg, &password_file);
            trust_provider(config, provider);
            std::fs::create_dir_all(&config.gateway.data_dir).unwrap();
            let path = config
                .gateway
                .data_dir
                .join(gateway::service::RETRIEVAL_KEY_FILE);
            std::fs::write(path, key).unwrap();
        })
    };
    let a = node("a", key).await;
    let b = node("b", key).await;
    let (id, _, password) = a.create_mailbox("office").await;
    let (user, secret) = provider.user(0);
    let messages: Vec<Vec<u8>> = (1..=3)
        .map(|i| format!("Subject: inbox {i}\r\n\r\nbody {i}\r\n").into_bytes())
        .collect();
    for message in &messages {
        provider.put_message(0, message).unwrap();
    }
    let out = scratch.path().join("fetched");
    std::fs::create_dir_all(&out).unwrap();
    let out = out.to_str().unwrap();
    let pop3s = login(user, provider.pop3s_addr(), &id);
    let fetch = |gw: &TestGateway| {
        let port = gw.pop3s_addr().port().to_string();
        let pop3s = pop3s.clone();
        async move { python(&["pop3", &port, "ssl", &pop3s, secret, out]).await }
    };
    // A, then B, then A again: the messages stay upstream and are fetched each time.
    for gw in [&a, &b, &a] {
        assert_eq!(fetch(gw).await, "3");
    }
    assert_eq!(
        a.message_count(&id),
        3,
        "one copy per upstream message, whichever node"
    );
    let copies = b.messages(&id, &password);
    assert_eq!(copies.len(), 3);

    // A node started without the shared key cannot recognise the others' records: it keeps
    // copies of its own (duplicates, never a loss). This is why the key must be copied.
    let c = node("c", [0xc3; 32]).await;
    assert_eq!(fetch(&c).await, "3");
    assert_eq!(a.message_count(&id), 6);
}

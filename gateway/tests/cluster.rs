//! Gateway nodes sharing one PostgreSQL database (`[store] backend = "postgres"`): mail that
//! one node accepted is picked up through the other, byte for byte, and a node that loses
//! the database answers 451, never 250, and recovers by itself when it returns.
//!
//! The POP3 maildrop lock holds across nodes (a lease in the database that a dead node's
//! expiry frees, and that fences a session which lost it), and failed logins (POP3,
//! administrator, proxy) count across nodes.
//! expiry frees, and that fences a session which lost it), failed logins count across
//! nodes, and a console session signed in through one node works on, and is signed out
//! through, any other.
//!
//! The database is a throwaway cluster from Debian's `postgresql` (postgres-test-util); the
//! nodes run in this process on their own loopback ports and data directories.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use gateway::config::Config;
use gateway::crypto::MailboxPassword;
use gateway::mailbox::MailboxId;
use gateway::service::{Gateway, LeasePolicy, ServiceError, CLIENT_POLICY};
use postgres_test_util::{Postgres, PostgresOptions};
use support::browser::{first_login, Browser};
use support::storing::{assert_all_there, store_until_killed, Outcomes};
use support::{database_url, point_at, use_database, Client, Pop3Client, TestGateway};

fn database() -> Postgres {
    Postgres::create(PostgresOptions::default()).expect("a throwaway PostgreSQL")
}

/// A node on the shared database.
async fn node(pg: &Postgres, scratch: &Path, name: &str) -> TestGateway {
    let password_file = scratch.join(format!("{name}-db-password"));
    TestGateway::start_with(|config| use_database(config, pg, &password_file)).await
}

/// A node with its console listening (on its own certificate).
async fn node_with_console(pg: &Postgres, scratch: &Path, name: &str) -> TestGateway {
    let password_file = scratch.join(format!("{name}-db-password"));
    TestGateway::start_with_console(|config| use_database(config, pg, &password_file)).await
}

/// A node whose maildrop leases last and are renewed as `lease` says.
async fn node_with_lease(
    pg: &Postgres,
    scratch: &Path,
    name: &str,
    lease: LeasePolicy,
) -> TestGateway {
    let password_file = scratch.join(format!("{name}-db-password"));
    TestGateway::start_with_options(
        |config| use_database(config, pg, &password_file),
        |options| options.lease = lease,
    )
    .await
}

/// Short leases, so a dead node's maildrops come free within seconds.
const SHORT_LEASE: LeasePolicy = LeasePolicy {
    ttl: Duration::from_secs(4),
    renew_every: Duration::from_millis(500),
};

/// A POP3S session on `gw` and the answer to its login.
async fn pop3_login(
    gw: &TestGateway,
    id: &MailboxId,
    password: &MailboxPassword,
) -> (Pop3Client, String) {
    let (mut pop3, greeting) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let reply = pop3
        .login(id.as_str(), password.reveal_for_display().as_str())
        .await;
    (pop3, reply)
}

/// Logs in on `gw` again and again while the answer is `[IN-USE]`, up to `within`; the
/// session that got in, and how many logins were refused first.
async fn login_once_free(
    gw: &TestGateway,
    id: &MailboxId,
    password: &MailboxPassword,
    within: Duration,
) -> (Pop3Client, u32) {
    let deadline = tokio::time::Instant::now() + within;
    let mut refused = 0;
    loop {
        let (pop3, reply) = pop3_login(gw, id, password).await;
        if reply.starts_with("+OK") {
            return (pop3, refused);
        }
        assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the maildrop was not free within {within:?}"
        );
        refused += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
        let mut a = support::child_test("child_node_stores_until_killed")
            .env("CLUSTER_CHILD_CONFIG", &path)
            .env("CLUSTER_CHILD_MAILBOX", mailbox.as_str())
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
    // Every node has the same retrieval key (support::point_at), as the README asks.
    let node = |name: &'static str| {
        let password_file = scratch.path().join(format!("{name}-db-password"));
        let provider = &provider;
        let pg = &pg;
        TestGateway::start_with(move |config| {
            use_database(config, pg, &password_file);
            trust_provider(config, provider);
        })
    };
    let a = node("a").await;
    let b = node("b").await;
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

    // A node with a key of its own could not recognise the others' records and would keep
    // copies of its own: it refuses to start, saying what to copy.
    let mut config = node_config(&pg, scratch.path(), "c");
    std::fs::write(
        config
            .gateway
            .data_dir
            .join(gateway::service::RETRIEVAL_KEY_FILE),
        [0xc3_u8; 32],
    )
    .unwrap();
    trust_provider(&mut config, &provider);
    match Gateway::open(&config) {
        Err(ServiceError::StoreSettings(why)) => assert!(why.contains("retrieval.key"), "{why}"),
        other => panic!(
            "a node with another retrieval key started: {:?}",
            other.err()
        ),
    }
    assert_eq!(a.message_count(&id), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_archiver_on_another_node_gets_in_use() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node(&pg, scratch.path(), "a").await;
    let b = node(&pg, scratch.path(), "b").await;
    let (id, address, password) = a.create_mailbox("in-use").await;
    a.deliver(&address, &message("held")).await;

    let (mut on_b, login) = pop3_login(&b, &id, &password).await;
    assert!(login.starts_with("+OK"), "{login}");
    let (_refused, login) = pop3_login(&a, &id, &password).await;
    assert!(login.starts_with("-ERR [IN-USE]"), "{login}");

    on_b.ok("QUIT").await;
    // QUIT's answer comes after the lease is released: the next login on A gets in.
    let (mut on_a, login) = pop3_login(&a, &id, &password).await;
    assert!(login.starts_with("+OK"), "{login}");
    assert_eq!(on_a.stat().await.0, 1);
    on_a.ok("QUIT").await;
}

/// What the child prints once it holds the maildrop.
const HOLDING: &str = "child node holds the maildrop";

/// The dying node of `the_lease_of_a_node_that_dies_expires`: a gateway process on the
/// database holding a maildrop until it is killed. Runs only as that test's child (the test
/// binary re-executes itself, as `crash.rs` does); the mailbox password arrives on stdin.
#[test]
fn child_node_holds_a_maildrop() {
    let (Ok(url), Ok(password_file), Ok(mailbox)) = (
        std::env::var("CLUSTER_CHILD_URL"),
        std::env::var("CLUSTER_CHILD_PASSWORD_FILE"),
        std::env::var("CLUSTER_CHILD_MAILBOX"),
    ) else {
        return;
    };
    let mailbox = MailboxId::parse(&mailbox).unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let password = MailboxPassword::from_user_input(line.trim());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let node = TestGateway::start_with_options(
            |config| point_at(config, &url, Path::new(&password_file)),
            |options| options.lease = SHORT_LEASE,
        )
        .await;
        let (_session, login) = pop3_login(&node, &mailbox, &password).await;
        assert!(login.starts_with("+OK"), "{login}");
        println!("{HOLDING}");
        std::future::pending::<()>().await;
    });
}

/// A child process that does not outlive a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_a_node_that_dies_expires() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    // Without takeover: a login would otherwise wait for the dead node's answer (none
    // comes) and get in once the lease expired, never seeing `[IN-USE]`.
    let a = takeover_node(&pg, scratch.path(), "a", 0).await;
    let (id, address, password) = a.create_mailbox("dies").await;
    a.deliver(&address, &message("kept")).await;

    let password_file = scratch.path().join("child-db-password");
    std::fs::write(&password_file, pg.password()).unwrap();
    let mut child = KillOnDrop(
        support::child_test("child_node_holds_a_maildrop")
            .env("CLUSTER_CHILD_URL", database_url(&pg))
            .env("CLUSTER_CHILD_PASSWORD_FILE", &password_file)
            .env("CLUSTER_CHILD_MAILBOX", id.as_str())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    writeln!(stdin, "{}", password.reveal_for_display().as_str()).unwrap();
    drop(stdin);
    let stdout = child.0.stdout.take().unwrap();
    let held = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest may print the test's name on the same line first.
            .any(|line| line.ends_with(HOLDING))
    });
    assert!(
        held.await.unwrap(),
        "the child node never held the maildrop"
    );
    let (_refused, login) = pop3_login(&a, &id, &password).await;
    assert!(login.starts_with("-ERR [IN-USE]"), "{login}");

    // SIGKILL: no more renewals, no release, no goodbye to the database.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(
        pg.psql(pg.database(), "SELECT count(*) FROM maildrop_leases")
            .unwrap(),
        "1\n",
        "the dead node's lease is still there"
    );
    // Renewed at most SHORT_LEASE.renew_every before the kill, it holds a few seconds more,
    // then the maildrop is A's.
    let (mut on_a, refused) = login_once_free(&a, &id, &password, Duration::from_secs(30)).await;
    assert!(
        refused >= 1,
        "the lease held for a while after its node died"
    );
    assert_eq!(on_a.stat().await.0, 1);
    on_a.ok("QUIT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_lease_was_taken_deletes_nothing() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node_with_lease(&pg, scratch.path(), "a", SHORT_LEASE).await;
    // B's renewals never come in time (as if its database connection stalled): its lease
    // expires a second after the login while its session goes on.
    let stalled = LeasePolicy {
        ttl: Duration::from_secs(1),
        renew_every: Duration::from_secs(3600),
    };
    let b = node_with_lease(&pg, scratch.path(), "b", stalled).await;
    let (id, address, password) = a.create_mailbox("fenced").await;
    a.deliver(&address, &message("first")).await;
    a.deliver(&address, &message("second")).await;

    let (mut on_b, login) = pop3_login(&b, &id, &password).await;
    assert!(login.starts_with("+OK"), "{login}");
    let (mut on_a, _) = login_once_free(&a, &id, &password, Duration::from_secs(30)).await;

    // B still thinks it holds the maildrop; its UPDATE must not delete.
    on_b.ok("DELE 1").await;
    on_b.ok("DELE 2").await;
    let reply = on_b.command("QUIT").await;
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    assert_eq!(a.message_count(&id), 2, "nothing was deleted");
    assert_eq!(on_a.stat().await.0, 2);
    on_a.ok("QUIT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_on_one_node_count_on_the_other() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node(&pg, scratch.path(), "a").await;
    let b = node(&pg, scratch.path(), "b").await;
    let attacker: IpAddr = "192.0.2.7".parse().unwrap();

    // The attempts A lets through without a wait, all failed.
    for _ in 0..CLIENT_POLICY.free_attempts {
        let refused = a
            .gateway()
            .check_admin_password("admin", "guess", attacker)
            .await;
        assert_eq!(refused, Err(ServiceError::WrongAdminPassword));
    }
    // On B, alone, four more could start at once; counting A's failures, they are queued
    // behind ever longer waits and the fourth is refused at once.
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let gateway = b.gateway();
        attempts.spawn(async move {
            gateway
                .check_admin_password("admin", "guess", attacker)
                .await
        });
    }
    let first = attempts.join_next().await.unwrap().unwrap();
    assert!(
        matches!(first, Err(ServiceError::Throttled { .. })),
        "{first:?}"
    );
    attempts.abort_all();
    // Another client is not affected.
    let other: IpAddr = "192.0.2.8".parse().unwrap();
    assert_eq!(
        b.gateway()
            .check_admin_password("admin", "guess", other)
            .await,
        Err(ServiceError::WrongAdminPassword)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_domain_set_through_one_node_is_followed_by_the_others() {
    use gateway::settings::SettingsChange;
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node(&pg, scratch.path(), "a").await;
    let b = node(&pg, scratch.path(), "b").await;
    let (id, _, password) = a.create_mailbox("moved").await;
    let change = SettingsChange {
        email_domain: Some("moved.example".into()),
        ..SettingsChange::default()
    };
    a.api().settings().apply(change).await.unwrap();
    // B follows within seconds, with nothing but the database between the two nodes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while &*b.gateway().email_domain() != "moved.example" {
        assert!(tokio::time::Instant::now() < deadline, "B never followed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_address = format!("{id}@moved.example");
    assert_eq!(try_deliver(&b, &new_address, &message("moved")).await, 250);
    let old_address = format!("{id}@{}", support::EMAIL_DOMAIN);
    assert_ne!(try_deliver(&b, &old_address, &message("old")).await, 250);
    assert_eq!(a.messages(&id, &password).len(), 1);
    // A node started later with the old domain in its configuration takes the shared one.
    let c = node(&pg, scratch.path(), "c").await;
    assert_eq!(&*c.gateway().email_domain(), "moved.example");
}

/// Whether `gw`'s SMTPS listener presents the certificate in `ca_pem` (a client trusting
/// only it completes the handshake for the host name).
async fn presents(gw: &TestGateway, ca_pem: &str) -> bool {
    let connector = test_support::pki::connector(ca_pem.as_bytes()).expect("trust");
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::connect(
            &connector,
            rustls::pki_types::ServerName::try_from(support::HOST_NAME).expect("name"),
            tokio::net::TcpStream::connect(gw.smtps_addr())
                .await
                .expect("connect"),
        ),
    )
    .await
    .expect("handshake in time");
    conn.is_ok()
}

/// Waits until `gw` presents the certificate in `ca_pem` (nodes follow within seconds).
async fn until_presented(gw: &TestGateway, ca_pem: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !presents(gw, ca_pem).await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_presents_the_certificate_imported_through_one() {
    use gateway::api::{Caller, Params};
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node(&pg, scratch.path(), "a").await;
    let b = node(&pg, scratch.path(), "b").await;
    // B started on the certificate A published first, A's self-signed one.
    let a_self_signed = std::fs::read_to_string(a.ca_file()).unwrap();
    assert!(
        presents(&b, &a_self_signed).await,
        "B presents A's certificate"
    );

    let imported = test_support::pki::Leaf::names(&[support::HOST_NAME])
        .days_left(60)
        .self_signed()
        .unwrap();
    let mut params = Params::new();
    params.insert("certificateChain".into(), imported.cert_pem().into());
    params.insert("privateKey".into(), imported.key_pem().into());
    let answer = a
        .api()
        .invoke(&Caller::Host, "ImportCertificate", params)
        .await;
    assert!(answer.envelope.error.is_none(), "{answer:?}");
    assert!(presents(&a, imported.cert_pem()).await);
    until_presented(&b, imported.cert_pem(), "B never presented the import").await;

    // The database holds the key sealed, never in the clear.
    let stored = pg
        .psql(
            pg.database(),
            "SELECT value FROM shared_settings WHERE name = 'tls.certificate'",
        )
        .unwrap();
    assert!(stored.contains("BEGIN CERTIFICATE"), "{stored}");
    assert!(!stored.contains("PRIVATE KEY"), "{stored}");
    let key_body: String = imported
        .key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!stored.replace("\\n", "").contains(&key_body[..40]));

    // A node started later presents it from the start.
    let c = node(&pg, scratch.path(), "c").await;
    assert!(presents(&c, imported.cert_pem()).await);
}

/// A node on the shared database with its challenge listener enabled on a free port.
async fn acme_node(pg: &Postgres, scratch: &Path, name: &str) -> TestGateway {
    let password_file = scratch.join(format!("{name}-db-password"));
    TestGateway::start_with(|config| {
        use_database(config, pg, &password_file);
        config.listen.acme_http.address = "127.0.0.1".parse().unwrap();
        config.listen.acme_http.port = 0;
        config.listen.acme_http.enabled = true;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_orders_another_answers_the_ca_and_both_present_and_renew_one_certificate() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    // Every node of a shared store keeps its challenge listener open (here on a free port).
    let a = acme_node(&pg, scratch.path(), "a").await;
    let b = acme_node(&pg, scratch.path(), "b").await;
    // The CA dials B's challenge port only: A's order succeeds only if B answers its
    // tokens from the database.
    let pebble = pebble_test_util::Pebble::start(pebble_test_util::PebbleOptions {
        http_port: b.running_address("acme_http").port(),
        mock_dns: true,
        ..pebble_test_util::PebbleOptions::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    let ca_file = scratch.path().join("pebble-ca.pem");
    std::fs::write(&ca_file, pebble.ca_pem()).unwrap();

    let settings = gateway::config::AcmeSettings {
        directory_url: pebble.directory_url(),
        contact_email: Some("postmaster@example.test".into()),
        ca_file: Some(ca_file),
        domains: vec![support::HOST_NAME.to_owned()],
        staging_directory_url: None,
    };
    let a_manager = a.api().server().certificate_manager().clone();
    let first = a_manager
        .request_acme(settings, false)
        .await
        .unwrap_or_else(|e| panic!("A's order, answered by B: {e}"));
    let root = pebble.issuing_root_pem().to_owned();
    assert!(presents(&a, &root).await);
    until_presented(&b, &root, "B never presented A's ACME certificate").await;
    let b_manager = b.api().server().certificate_manager().clone();
    assert_eq!(b_manager.source(), "acme");
    assert!(b_manager.renewal_handle().is_some(), "B renews too");

    // Exactly one node orders at a time: while another holds the ordering task, a
    // renewal through A is refused and orders nothing.
    pg.psql(
        pg.database(),
        "INSERT INTO maildrop_leases (mailbox, node, token, expires_at) \
         VALUES ('task:acme-order', 'elsewhere', 0, clock_timestamp() + interval '10 minutes')",
    )
    .unwrap();
    let refused = a_manager.renew_now().await;
    assert!(
        matches!(
            refused,
            Err(gateway::tls::acme::AcmeError::OrderedElsewhere)
        ),
        "{refused:?}"
    );
    pg.psql(
        pg.database(),
        "DELETE FROM maildrop_leases WHERE node = 'elsewhere'",
    )
    .unwrap();

    // B renews (with the account A registered), A follows.
    let renewed = b_manager.renew().await.unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(renewed.fingerprint(), first.fingerprint());
    let account = |gw: &TestGateway| {
        std::fs::read(gateway::tls::acme::account_path(
            &gw.config.gateway.data_dir,
            &pebble.directory_url(),
        ))
        .unwrap()
    };
    assert_eq!(account(&b), account(&a), "one account for the nodes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while a_manager.resolver().unwrap().current().fingerprint() != renewed.fingerprint() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never followed B's renewal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(presents(&a, &root).await);
    // Nobody holds the task after the orders, and no challenge answer was left behind.
    assert_eq!(
        pg.psql(
            pg.database(),
            "SELECT count(*) FROM maildrop_leases WHERE mailbox LIKE 'task:%'"
        )
        .unwrap()
        .trim(),
        "0"
    );
    assert_eq!(
        pg.psql(
            pg.database(),
            "SELECT count(*) FROM shared_settings WHERE name LIKE 'tls.http01.%'"
        )
        .unwrap()
        .trim(),
        "0"
    );
}

/// A node whose idle POP3 sessions may be taken over after `takeover_secs`, with short
/// leases renewed every half second.
async fn takeover_node(
    pg: &Postgres,
    scratch: &Path,
    name: &str,
    takeover_secs: u64,
) -> TestGateway {
    let password_file = scratch.join(format!("{name}-db-password"));
    TestGateway::start_with_options(
        |config| {
            use_database(config, pg, &password_file);
            config.pop3.lock_takeover_secs = takeover_secs;
        },
        |options| options.lease = SHORT_LEASE,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_on_one_node_is_taken_over_by_a_login_on_another_without_deleting() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = takeover_node(&pg, scratch.path(), "a", 1).await;
    let b = takeover_node(&pg, scratch.path(), "b", 1).await;
    let (id, address, password) = a.create_mailbox("takeover").await;
    a.deliver(&address, &message("held")).await;
    let (mut vanished, login) = pop3_login(&a, &id, &password).await;
    assert!(login.starts_with("+OK"), "{login}");
    vanished.ok("DELE 1").await;

    // The client on A goes silent. Once its session has waited for a command for the
    // takeover time, a login on B gets in; the old session's DELE never took effect.
    let (mut archiver, _) = login_once_free(&b, &id, &password, Duration::from_secs(60)).await;
    assert_eq!(
        archiver.stat().await.0,
        1,
        "the old session deleted something"
    );
    let told = String::from_utf8_lossy(&vanished.until_closed().await).into_owned();
    assert!(told.contains("-ERR [IN-USE]"), "{told:?}");
    archiver.ok("DELE 1").await;
    archiver.ok("QUIT").await;
    assert_eq!(b.message_count(&id), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_is_not_idle_long_enough_keeps_its_maildrop_against_another_node() {
    a_holder_refuses_a_takeover(3600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_takeover_refuses_another_nodes_request_at_once() {
    a_holder_refuses_a_takeover(0).await;
}

/// A holds a maildrop under `takeover_secs` (0: off) and is asked by B, which would take
/// over after a second: B gets `[IN-USE]` at A's next renewal (not after waiting out its
/// whole time), and A's session goes on.
async fn a_holder_refuses_a_takeover(takeover_secs: u64) {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = takeover_node(&pg, scratch.path(), "a", takeover_secs).await;
    // B would wait two minutes for an answer: only A's refusal ends its login sooner.
    let password_file = scratch.path().join("b-db-password");
    let b = TestGateway::start_with_options(
        |config| {
            use_database(config, &pg, &password_file);
            config.pop3.lock_takeover_secs = 1;
        },
        |options| {
            options.lease = LeasePolicy {
                ttl: Duration::from_secs(300),
                renew_every: Duration::from_secs(120),
            }
        },
    )
    .await;
    let (id, address, password) = a.create_mailbox("kept").await;
    a.deliver(&address, &message("kept")).await;
    let (mut holder, login) = pop3_login(&a, &id, &password).await;
    assert!(login.starts_with("+OK"), "{login}");
    let (_refused, login) =
        tokio::time::timeout(Duration::from_secs(60), pop3_login(&b, &id, &password))
            .await
            .expect("A answered B's request (B alone would wait two minutes)");
    assert!(login.starts_with("-ERR [IN-USE]"), "{login}");
    // The holder's session goes on as before; no request is left behind.
    assert_eq!(holder.stat().await.0, 1);
    holder.ok("QUIT").await;
    assert_eq!(
        pg.psql(
            pg.database(),
            "SELECT count(*) FROM shared_settings WHERE name LIKE 'pop3.takeover.%'"
        )
        .unwrap()
        .trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_proxy_logins_on_one_node_count_on_the_other() {
    use gateway::proxy::throttle::CLIENT_POLICY as PROXY_CLIENT_POLICY;
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let node = |name: &str| {
        let password_file = scratch.path().join(format!("{name}-db-password"));
        let pg = &pg;
        TestGateway::start_with(move |config| {
            use_database(config, pg, &password_file);
            config.proxy.failed_login_delay_ms = 0;
        })
    };
    let a = node("a").await;
    let b = node("b").await;
    // A proxy login for a mailbox nobody has: refused before any upstream is asked, and
    // counted against the client.
    let login = format!(
        "someone@example.net%mail.example.net%{}",
        MailboxId::generate()
    );
    let try_login = |gw: &TestGateway| {
        let (addr, tls) = (gw.pop3s_addr(), gw.tls_connector());
        let login = login.clone();
        async move {
            let (mut pop3, greeting) = Pop3Client::connect_tls(addr, &tls).await;
            assert!(greeting.starts_with("+OK"), "{greeting}");
            pop3.login(&login, "guess").await
        }
    };
    for _ in 0..PROXY_CLIENT_POLICY.free_attempts {
        let reply = try_login(&a).await;
        assert!(reply.starts_with("-ERR"), "{reply}");
        assert!(!reply.contains("too many"), "{reply}");
    }
    // On B, alone, four more could start at once; counting A's failures, they are queued
    // behind ever longer waits and the fourth is refused at once.
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..4 {
        attempts.spawn(try_login(&b));
    }
    let first = attempts.join_next().await.unwrap().unwrap();
    assert!(
        first.starts_with("-ERR [SYS/TEMP] too many failed logins"),
        "{first}"
    );
    attempts.abort_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_domain_set_on_a_stopped_node_is_followed_by_the_running_ones() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node(&pg, scratch.path(), "a").await;
    // B is stopped: `gateway settings set` finds no control socket and opens the store.
    let b = node_config(&pg, scratch.path(), "b");
    let file = scratch.path().join("b.toml");
    std::fs::write(&file, b.to_toml_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(&file)
        .args(["settings", "set", "--email-domain", "stopped.example"])
        .env_remove("GATEWAY_CONFIG")
        .env_remove("GATEWAY_DATA_DIR")
        .output()
        .expect("run gateway");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = Config::load(&file).unwrap();
    assert_eq!(saved.gateway.email_domain, "stopped.example");
    // A follows within seconds, with nothing but the database between them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while &*a.gateway().email_domain() != "stopped.example" {
        assert!(tokio::time::Instant::now() < deadline, "A never followed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_signed_in_on_one_node_works_on_and_ends_through_the_other() {
    let pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node_with_console(&pg, scratch.path(), "a").await;
    let b = node_with_console(&pg, scratch.path(), "b").await;
    let mut on_a = Browser::new(&a);
    first_login(&mut on_a).await;
    let main_a = on_a.get("/console/").await;
    main_a.expect_ok();
    let cookie = on_a.token.clone().expect("a session cookie from A");

    // The same cookie on B: a page that needs a session, and a form with its CSRF token.
    let mut on_b = Browser::new(&b);
    on_b.token = Some(cookie.clone());
    let settings = on_b.get("/console/settings").await;
    settings.expect_ok();
    assert_eq!(
        settings.csrf(),
        main_a.csrf(),
        "every node knows the session's token"
    );
    on_b.post(
        "/console/settings/language",
        &[("csrf", &settings.csrf()), ("language", "de")],
    )
    .await
    .expect_redirect("/console/settings");
    assert!(on_a
        .get("/console/settings")
        .await
        .body
        .contains("lang=\"de\""));
    // A forged token is refused on B as on A.
    let forged = on_b
        .post(
            "/console/settings/language",
            &[("csrf", "forged"), ("language", "en")],
        )
        .await;
    assert_eq!(forged.status, reqwest::StatusCode::FORBIDDEN);

    // Signing out through B ends the session on A too.
    let csrf = on_b.get("/console/").await.csrf();
    on_b.post("/console/logout", &[("csrf", &csrf)])
        .await
        .expect_redirect("/console/login");
    assert_eq!(on_b.token, None, "B's answer cleared the cookie");
    on_a.token = Some(cookie);
    on_a.get("/console/")
        .await
        .expect_redirect("/console/login");
    on_a.get("/console/settings")
        .await
        .expect_redirect("/console/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_that_cannot_be_checked_lets_nothing_in_and_keeps_its_cookie() {
    let mut pg = database();
    let scratch = tempfile::tempdir().unwrap();
    let a = node_with_console(&pg, scratch.path(), "a").await;
    let mut browser = Browser::new(&a);
    first_login(&mut browser).await;
    browser.get("/console/settings").await.expect_ok();

    pg.stop().expect("stop PostgreSQL");
    let page = browser.get("/console/settings").await;
    assert_eq!(
        page.status,
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "{page:#?}"
    );
    assert!(page.body.contains("session cannot be checked"), "{page:#?}");
    assert!(
        !page.headers.contains_key(reqwest::header::SET_COOKIE),
        "a passing outage does not sign the administrator out"
    );
    assert!(browser.token.is_some());

    pg.start().expect("start PostgreSQL again");
    // The node reconnects by itself; the same cookie works again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = browser.get("/console/settings").await;
        if page.status == reqwest::StatusCode::OK {
            break;
        }
        assert_eq!(
            page.status,
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "{page:#?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

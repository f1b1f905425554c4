//! Shared harness for the SMTP and POP3 integration tests: an in-process gateway listening
//! on 127.0.0.1 with free ports and a self-signed certificate, raw SMTP and POP3 clients over
//! TCP or TLS, and helpers to deliver messages and read back what was stored.
#![allow(dead_code)] // Not every test binary uses every helper.

pub mod browser;
pub mod proxying;
pub mod storing;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway::config::Config;
use gateway::crypto::MailboxPassword;
use gateway::mailbox::MailboxId;
use gateway::server::Running;
use gateway::service::{Gateway, ServiceOptions};
use gateway::tls::{CertificateSourceSpec, SELF_SIGNED_CERT_FILE, TLS_DIR};
use test_support::wire::{self, Conn, Options};
use tokio_rustls::TlsConnector;

/// The domain of the test gateway's mailbox addresses.
pub const EMAIL_DOMAIN: &str = "archive.test";
/// The test gateway's host name (in greetings and the certificate).
pub const HOST_NAME: &str = "mx.archive.test";

/// How long a test waits for any single reply before failing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Every message of a mailbox in `gateway`, decrypted, in arrival order.
pub fn messages(gateway: &Gateway, id: &MailboxId, password: &MailboxPassword) -> Vec<Vec<u8>> {
    let summaries = gateway.list_messages(id).expect("list messages");
    if summaries.is_empty() {
        return Vec::new();
    }
    let key = gateway.unseal(id, password).expect("unseal");
    summaries
        .iter()
        .map(|summary| {
            gateway
                .read_message(&key, summary.seq)
                .expect("read message")
                .1
        })
        .collect()
}

/// Points `config` at a PostgreSQL database of `pg` (its own by default): the URL without
/// the password, which goes into a file only the gateway reads (as an administrator would
/// set it up).
pub fn use_database(config: &mut Config, pg: &postgres_test_util::Postgres, password_file: &Path) {
    use_named_database(config, pg, pg.database(), password_file);
}

/// [`use_database`] for another database of the same server.
pub fn use_named_database(
    config: &mut Config,
    pg: &postgres_test_util::Postgres,
    database: &str,
    password_file: &Path,
) {
    std::fs::write(password_file, pg.password()).expect("password file");
    let url = format!("postgres://postgres@127.0.0.1:{}/{database}", pg.port());
    point_at(config, &url, password_file);
}

/// The URL of `pg`'s test database, without the password.
pub fn database_url(pg: &postgres_test_util::Postgres) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        pg.port(),
        pg.database()
    )
}

/// This test binary run again as a child process doing only the test `name` (which does
/// its part when the caller's environment variables say so), its stdout piped, its stderr
/// dropped: the crash and cluster tests' way to a process they can kill.
pub fn child_test(name: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    command
}

/// The proxy retrieval key every test node of a shared database has, as an administrator
/// copies it to each node (`retrieval.key` in the data directory).
pub const SHARED_RETRIEVAL_KEY: [u8; 32] = [0x5a; 32];

/// Points `config` at the database `url` with the password in `password_file`, and gives
/// its data directory the nodes' shared retrieval key.
pub fn point_at(config: &mut Config, url: &str, password_file: &Path) {
    std::fs::create_dir_all(&config.gateway.data_dir).expect("data dir");
    std::fs::write(
        config
            .gateway
            .data_dir
            .join(gateway::service::RETRIEVAL_KEY_FILE),
        SHARED_RETRIEVAL_KEY,
    )
    .expect("retrieval key");
    config.store.backend = gateway::config::StoreBackend::Postgres;
    config.store.url = url.to_owned();
    config.store.password_file = Some(password_file.to_owned());
    // Loopback: the only place a plain connection is accepted.
    config.store.tls = gateway::config::DatabaseTls::Off;
    config.store.pool_size = 2;
}

/// A gateway with its SMTP and POP3 listeners running on free local ports.
pub struct TestGateway {
    dir: tempfile::TempDir,
    pub config: Config,
    gateway: Gateway,
    running: Option<Running>,
    smtp: SocketAddr,
    submission: SocketAddr,
    smtps: SocketAddr,
    pop3: SocketAddr,
    pop3s: SocketAddr,
    console: Option<SocketAddr>,
    api: gateway::api::Api,
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test defaults, adjusted by `adjust` before anything is opened.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_options(adjust, |_| {}).await
    }

    /// [`TestGateway::start_with`], with the service options from the configuration
    /// adjusted by `adjust_options` (what no setting reaches, such as the maildrop lease).
    pub async fn start_with_options(
        adjust: impl FnOnce(&mut Config),
        adjust_options: impl FnOnce(&mut ServiceOptions),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.gateway.data_dir = dir.path().join("data");
        config.gateway.email_domain = EMAIL_DOMAIN.to_owned();
        config.gateway.host_name = HOST_NAME.to_owned();
        let local = |listener: &mut gateway::config::Listener| {
            listener.address = "127.0.0.1".parse().expect("ip");
            listener.port = 0;
            listener.enabled = true;
        };
        local(&mut config.listen.smtp);
        local(&mut config.listen.submission);
        local(&mut config.listen.smtps);
        local(&mut config.listen.pop3);
        local(&mut config.listen.pop3s);
        // Failed POP3 logins pause briefly, so the brute-force tests stay fast.
        config.pop3.failed_login_delay_ms = 10;
        config.proxy.failed_login_delay_ms = 10;
        for off in [&mut config.listen.console, &mut config.listen.acme_http] {
            off.enabled = false;
        }
        adjust(&mut config);
        std::fs::create_dir_all(&config.gateway.data_dir).expect("data dir");

        let mut options = ServiceOptions::from_config(&config);
        adjust_options(&mut options);
        let gateway = Gateway::open_with_options(&config, options).expect("open gateway");
        let (resolver, _material) = gateway::tls::prepare(
            &CertificateSourceSpec::SelfSigned,
            &config.gateway.data_dir,
            &config.gateway.host_name,
        )
        .expect("TLS material");
        let running = gateway::server::start(&config, gateway.clone(), resolver)
            .await
            .expect("start listeners");
        let addr = |service: &str| {
            running
                .address(service)
                .unwrap_or_else(|| panic!("{service} listener"))
        };
        let (smtp, submission, smtps) = (addr("smtp"), addr("submission"), addr("smtps"));
        let (pop3, pop3s) = (addr("pop3"), addr("pop3s"));
        let console = running.address("console");
        let api = running.api().clone();
        Self {
            dir,
            config,
            gateway,
            running: Some(running),
            smtp,
            submission,
            smtps,
            pop3,
            pop3s,
            console,
            api,
        }
    }

    /// Starts with the Management API's HTTPS listener on a free local port too.
    pub async fn start_with_console(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(|config| {
            config.listen.console.address = "127.0.0.1".parse().expect("ip");
            config.listen.console.port = 0;
            config.listen.console.enabled = true;
            adjust(config);
        })
        .await
    }

    /// The Management API's HTTPS listener (only with [`Self::start_with_console`]).
    pub fn console_addr(&self) -> SocketAddr {
        self.console.expect("the console listener runs")
    }

    /// The address a running listener bound (`metrics` too, when configured).
    pub fn running_address(&self, service: &str) -> SocketAddr {
        self.running
            .as_ref()
            .and_then(|running| running.address(service))
            .unwrap_or_else(|| panic!("the {service} listener runs"))
    }

    /// The Management API the listeners serve.
    pub fn api(&self) -> gateway::api::Api {
        self.api.clone()
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp
    }

    pub fn submission_addr(&self) -> SocketAddr {
        self.submission
    }

    pub fn smtps_addr(&self) -> SocketAddr {
        self.smtps
    }

    /// POP3 with STLS (port 110 in production).
    pub fn pop3_addr(&self) -> SocketAddr {
        self.pop3
    }

    /// POP3 over implicit TLS (port 995 in production).
    pub fn pop3s_addr(&self) -> SocketAddr {
        self.pop3s
    }

    /// The self-signed certificate, for clients to trust as their only CA.
    pub fn ca_file(&self) -> PathBuf {
        self.config
            .gateway
            .data_dir
            .join(TLS_DIR)
            .join(SELF_SIGNED_CERT_FILE)
    }

    /// A scratch directory for client-side files (bodies, transcripts).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The same service instance the server uses (the store is opened once).
    pub fn gateway(&self) -> Gateway {
        self.gateway.clone()
    }

    /// An active mailbox: its id, address and password.
    pub async fn create_mailbox(&self, name: &str) -> (MailboxId, String, MailboxPassword) {
        let created = self
            .gateway
            .create_mailbox(name, "integration test")
            .await
            .expect("create mailbox");
        (created.info.id, created.info.address, created.password)
    }

    /// Every message of a mailbox, decrypted, in arrival order.
    pub fn messages(&self, id: &MailboxId, password: &MailboxPassword) -> Vec<Vec<u8>> {
        messages(&self.gateway, id, password)
    }

    pub fn message_count(&self, id: &MailboxId) -> usize {
        self.gateway.list_messages(id).expect("list messages").len()
    }

    /// Delivers `message` to `to` over plain SMTP (one transaction, 250 expected).
    pub async fn deliver(&self, to: &str, message: &[u8]) {
        let (mut client, greeting) = Client::connect(self.smtp).await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        client.ehlo().await.expect(250, "");
        client
            .send_message("a@example.org", &[to], message)
            .await
            .expect(250, "2.0.0");
        client.command("QUIT").await.expect(221, "2.0.0");
    }

    /// The rolling snapshot, when the configuration turned it on.
    pub fn snapshots(&self) -> Option<gateway::backup::Snapshots> {
        self.running.as_ref()?.snapshots().cloned()
    }

    /// Hands the running listeners over, e.g. to stop them concurrently.
    pub fn take_running(&mut self) -> Running {
        self.running.take().expect("listeners still running")
    }

    /// Graceful shutdown of the listeners (no-op if already taken).
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(60), running.stop())
                .await
                .expect("graceful stop finished");
        }
    }

    /// A rustls client configuration trusting only this gateway's certificate.
    pub fn tls_connector(&self) -> TlsConnector {
        tls_connector(&self.ca_file())
    }
}

/// A rustls client configuration trusting only the certificates in `ca_file`.
pub fn client_config(ca_file: &Path) -> tokio_rustls::rustls::ClientConfig {
    test_support::pki::client_config(&std::fs::read(ca_file).expect("read CA file"))
        .expect("trust the CA file")
}

pub fn tls_connector(ca_file: &Path) -> TlsConnector {
    test_support::pki::connector_for_file(ca_file).expect("trust the CA file")
}

/// Splits a stored message into our `Received:` header (with its folded lines) and exactly
/// the bytes the client sent.
pub fn split_received(stored: &[u8]) -> (String, &[u8]) {
    assert!(
        stored.starts_with(b"Received: "),
        "stored message does not start with our Received header: {:?}",
        String::from_utf8_lossy(&stored[..stored.len().min(200)])
    );
    let mut at = 0;
    loop {
        let end = at
            + stored[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("Received header ends with CRLF")
            + 2;
        at = end;
        if !matches!(stored.get(at), Some(b' ' | b'\t')) {
            break;
        }
    }
    let header = String::from_utf8(stored[..at].to_vec()).expect("Received header is ASCII");
    (header, &stored[at..])
}

/// Asserts the Received header records TLS exactly when it was used.
pub fn assert_received(header: &str, tls: bool) {
    assert!(
        header.contains(&format!("by {HOST_NAME} with ")),
        "{header}"
    );
    if tls {
        assert!(header.contains("with ESMTPS "), "{header}");
        assert!(
            header.contains("(using TLSv1.3 cipher ") || header.contains("(using TLSv1.2 cipher "),
            "{header}"
        );
    } else {
        assert!(header.contains("with ESMTP "), "{header}");
        assert!(!header.contains("using TLS"), "{header}");
    }
}

/// One SMTP reply (test-support's, with its `code` and `lines`), with the test's assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub wire::Reply);

impl std::ops::Deref for Reply {
    type Target = wire::Reply;

    fn deref(&self) -> &wire::Reply {
        &self.0
    }
}

impl Reply {
    /// Asserts the code and that the first line starts with `prefix` (e.g. an enhanced code).
    pub fn expect(&self, code: u16, prefix: &str) -> &Self {
        assert_eq!(self.code, code, "unexpected reply {self:?}");
        assert!(
            self.lines[0].starts_with(prefix),
            "reply {self:?} does not start with {prefix:?}"
        );
        self
    }
}

/// Parses every complete reply in `bytes` (multi-line replies joined).
pub fn parse_replies(bytes: &[u8]) -> Vec<Reply> {
    wire::parse_replies(bytes)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(bytes)))
        .into_iter()
        .map(Reply)
        .collect()
}

/// How the tests' clients talk: every step within [`REPLY_TIMEOUT`], TLS verifying
/// `localhost`.
fn options() -> Options {
    Options::default().timeout(REPLY_TIMEOUT)
}

/// Panics with what went wrong and what was received but not consumed.
fn failed(conn: &Conn, what: &str, error: wire::Error) -> ! {
    panic!(
        "{what}: {error}; unread {:?}",
        String::from_utf8_lossy(conn.unread())
    )
}

/// A raw test client of protocol `P` ([`Smtp`] or [`Pop3`]): test-support's wire client
/// writing whatever bytes it is given, every failure failing the test.
pub struct TestClient<P> {
    conn: Conn,
    protocol: std::marker::PhantomData<P>,
}

/// SMTP, for [`TestClient`].
pub struct Smtp;
/// POP3, for [`TestClient`].
pub struct Pop3;

/// A raw SMTP client: writes whatever bytes it is given and parses replies.
pub type Client = TestClient<Smtp>;
/// A raw POP3 client: writes whatever bytes it is given and reads status lines and
/// multi-line responses exactly as they arrive.
pub type Pop3Client = TestClient<Pop3>;

impl<P> TestClient<P> {
    fn new(conn: Conn) -> Self {
        Self {
            conn,
            protocol: std::marker::PhantomData,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    pub fn tls_handshake_kind(&self) -> Option<tokio_rustls::rustls::HandshakeKind> {
        self.conn.tls_handshake_kind()
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        if let Err(e) = self.conn.send(bytes).await {
            failed(&self.conn, "write", e);
        }
    }

    /// The TLS handshake on the plain stream, which must have no unread bytes left.
    pub async fn upgrade(&mut self, connector: &TlsConnector) {
        if let Err(e) = self.conn.upgrade(connector).await {
            failed(&self.conn, "TLS handshake", e);
        }
    }

    /// Waits up to `wait` for any byte from the server; `None` if nothing arrived (an empty
    /// vector: the server closed the connection).
    pub async fn bytes_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        self.conn.bytes_within(wait).await.expect("read")
    }

    /// Reads until the server closes the connection; returns whatever it sent meanwhile.
    pub async fn until_closed(&mut self) -> Vec<u8> {
        match self.conn.until_closed().await {
            Ok(bytes) => bytes,
            Err(e) => failed(&self.conn, "the server does not close the connection", e),
        }
    }
}

impl Client {
    /// Connects in plain text and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> (Self, Reply) {
        let mut client = Self::connect_no_greeting(addr).await;
        let greeting = client.reply().await;
        (client, greeting)
    }

    pub async fn connect_no_greeting(addr: SocketAddr) -> Self {
        let conn = Conn::connect(addr, options()).await.expect("connect");
        Self::new(conn)
    }

    /// Connects with implicit TLS (port 465) and reads the greeting.
    pub async fn connect_tls(addr: SocketAddr, connector: &TlsConnector) -> (Self, Reply) {
        let conn = Conn::connect_tls(addr, connector, options())
            .await
            .expect("TLS handshake");
        let mut client = Self::new(conn);
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Sends one command line (CRLF appended) and reads its reply.
    pub async fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Reads one complete reply (fails the test after [`REPLY_TIMEOUT`]).
    pub async fn reply(&mut self) -> Reply {
        match self.conn.reply().await {
            Ok(reply) => Reply(reply),
            Err(e) => failed(&self.conn, "no complete reply", e),
        }
    }

    /// The next reply, or `None` if the server closed the connection first.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        match self.conn.try_reply().await {
            Ok(reply) => reply.map(Reply),
            Err(wire::Error::Closed) => None,
            Err(wire::Error::Protocol(what)) if what.starts_with("connection closed") => None,
            Err(e) => failed(&self.conn, "no complete reply", e),
        }
    }

    /// Reads `n` replies.
    pub async fn replies(&mut self, n: usize) -> Vec<Reply> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.reply().await);
        }
        out
    }

    /// Reads until the server closes the connection; returns every reply it sent.
    pub async fn replies_until_close(&mut self) -> Vec<Reply> {
        let bytes = self.until_closed().await;
        parse_replies(&bytes)
    }

    /// EHLO: its reply.
    pub async fn ehlo(&mut self) -> Reply {
        self.command("EHLO client.example.org").await
    }

    /// STARTTLS (expects 220) and the handshake; the session starts over, so send EHLO.
    pub async fn starttls(&mut self, connector: &TlsConnector) {
        self.command("STARTTLS").await.expect(220, "2.0.0");
        self.upgrade(connector).await;
    }

    /// MAIL, one RCPT per recipient (each must get 250), DATA (354), the dot-stuffed body
    /// and its end; returns the reply to the end of data.
    pub async fn send_message(&mut self, from: &str, to: &[&str], message: &[u8]) -> Reply {
        self.command(&format!("MAIL FROM:<{from}>"))
            .await
            .expect(250, "2.1.0");
        for rcpt in to {
            self.command(&format!("RCPT TO:<{rcpt}>"))
                .await
                .expect(250, "2.1.5");
        }
        self.command("DATA").await.expect(354, "");
        self.send(dot_stuff(message)).await;
        self.reply().await
    }
}

/// The sending side of DATA, from the library (dot-stuffing plus `.CRLF`).
pub use gateway::smtp::data::dot_stuff;

/// A message of CRLF lines exercising transparency and line rules: a leading-dot line, a
/// lone-dot line, an 8-bit UTF-8 line, 998-octet lines (the longest legal) and empty lines.
pub fn tricky_message(subject: &str) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(
        format!(
            "From: Sender <a@example.org>\r\nTo: archive@{EMAIL_DOMAIN}\r\nSubject: {subject}\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n"
        )
        .as_bytes(),
    );
    m.extend_from_slice(b"first line\r\n");
    m.extend_from_slice(b".a line starting with a dot\r\n");
    m.extend_from_slice(b"..two dots\r\n");
    m.extend_from_slice(b".\r\n");
    m.extend_from_slice(b"\r\n\r\n");
    m.extend_from_slice("8-bit: Grüße, naïve café, 日本語, emoji 📨\r\n".as_bytes());
    m.extend(std::iter::repeat_n(b'x', 998));
    m.extend_from_slice(b"\r\n");
    m.push(b'.');
    m.extend(std::iter::repeat_n(b'y', 997));
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice(b"\r\nlast line\r\n");
    m
}

/// A message of about `size` bytes of 78-octet lines (several encryption chunks).
pub fn large_message(subject: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: a@example.org\r\nSubject: {subject}\r\n\r\n").into_bytes();
    let mut n: u64 = 0;
    while m.len() < size {
        // Lines vary, and every 50th starts with a dot.
        let lead = if n.is_multiple_of(50) { "." } else { "" };
        let line = format!(
            "{lead}{n:08} {}\r\n",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-"
        );
        m.extend_from_slice(line.as_bytes());
        n += 1;
    }
    m
}

impl Pop3Client {
    /// Connects in plain text (the STLS port) and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> (Self, String) {
        let conn = Conn::connect(addr, options()).await.expect("connect");
        Self::greeted(conn).await
    }

    /// Connects with implicit TLS from a chosen local address (e.g. 127.0.0.2, to look like
    /// another client) and reads the greeting.
    pub async fn connect_tls_from(
        source: std::net::Ipv4Addr,
        addr: SocketAddr,
        connector: &TlsConnector,
    ) -> (Self, String) {
        let mut conn = Conn::connect_from(source, addr, options())
            .await
            .expect("connect from the local address");
        conn.upgrade(connector).await.expect("TLS handshake");
        Self::greeted(conn).await
    }

    /// Connects with implicit TLS (port 995) and reads the greeting.
    pub async fn connect_tls(addr: SocketAddr, connector: &TlsConnector) -> (Self, String) {
        let conn = Conn::connect_tls(addr, connector, options())
            .await
            .expect("TLS handshake");
        Self::greeted(conn).await
    }

    async fn greeted(conn: Conn) -> (Self, String) {
        let mut client = Self::new(conn);
        let greeting = client.line().await;
        (client, greeting)
    }

    /// Sends one command line (CRLF appended) and reads the status line.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n")).await;
        self.line().await
    }

    /// Like [`command`](Self::command), asserting a `+OK`.
    pub async fn ok(&mut self, line: &str) -> String {
        let reply = self.command(line).await;
        assert!(reply.starts_with("+OK"), "{line:?} answered {reply:?}");
        reply
    }

    /// Reads one line (without CRLF); fails the test on close or after [`REPLY_TIMEOUT`].
    pub async fn line(&mut self) -> String {
        match self.conn.line().await {
            Ok(line) => line,
            Err(e) => failed(&self.conn, "no complete line", e),
        }
    }

    /// The next line, or `None` if the server closed the connection first.
    pub async fn try_line(&mut self) -> Option<String> {
        match self.conn.try_line().await {
            Ok(line) => line,
            Err(e) => failed(&self.conn, "no complete line", e),
        }
    }

    /// The body of a multi-line response up to its `.` line, un-dot-stuffed, CRLF kept.
    pub async fn multiline(&mut self) -> Vec<u8> {
        match self.conn.multiline_bytes().await {
            Ok(body) => body,
            Err(e) => failed(&self.conn, "no complete multi-line response", e),
        }
    }

    /// A command answered with `+OK` and a multi-line body; returns the body.
    pub async fn ok_multiline(&mut self, line: &str) -> Vec<u8> {
        self.ok(line).await;
        self.multiline().await
    }

    /// RETR `n`: the message as the server holds it.
    pub async fn retr(&mut self, n: usize) -> Vec<u8> {
        self.ok_multiline(&format!("RETR {n}")).await
    }

    /// STLS (expects `+OK`) and the handshake.
    pub async fn stls(&mut self, connector: &TlsConnector) {
        self.ok("STLS").await;
        self.upgrade(connector).await;
    }

    /// USER and PASS; returns the answer to PASS (USER must get `+OK`).
    pub async fn login(&mut self, user: &str, password: &str) -> String {
        self.ok(&format!("USER {user}")).await;
        self.command(&format!("PASS {password}")).await
    }

    /// CAPA: the capability lines.
    pub async fn capa(&mut self) -> Vec<String> {
        let body = self.ok_multiline("CAPA").await;
        String::from_utf8(body)
            .expect("CAPA is ASCII")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// STAT: message count and octets.
    pub async fn stat(&mut self) -> (usize, u64) {
        let reply = self.ok("STAT").await;
        let mut words = reply.split(' ').skip(1);
        let count = words.next().and_then(|w| w.parse().ok());
        let octets = words.next().and_then(|w| w.parse().ok());
        match (count, octets) {
            (Some(count), Some(octets)) => (count, octets),
            _ => panic!("malformed STAT reply {reply:?}"),
        }
    }
}

//! The POP3 listeners end to end: real sockets on 127.0.0.1, real clients (Python's poplib,
//! fetchmail, curl) and a raw client that writes exact bytes, against messages delivered
//! over SMTP and read back decrypted with the mailbox password.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway::crypto::MailboxPassword;
use gateway::mailbox::MailboxId;
use gateway::store::MailboxStatus;
use serde_json::Value;
use support::{large_message, split_received, tricky_message, Pop3Client, TestGateway};

/// A mailbox with messages in it, as the tests use it.
struct Filled {
    id: MailboxId,
    address: String,
    password: MailboxPassword,
    /// What was sent over SMTP, in order.
    sent: Vec<Vec<u8>>,
    /// What the gateway stored (our Received header + the sent bytes), decrypted.
    stored: Vec<Vec<u8>>,
}

impl Filled {
    /// The password as an archiver types it: grouped with dashes.
    fn pass(&self) -> String {
        self.password.reveal_for_display().to_string()
    }

    fn user(&self) -> String {
        self.id.to_string()
    }
}

/// A short plain message with a few lines, one of them starting with a dot.
fn small_message(subject: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: archive@example.org\r\nSubject: {subject}\r\n\r\n\
         body line one\r\n.dot line\r\nbody line three\r\nbody line four\r\n"
    )
    .into_bytes()
}

/// Creates a mailbox and delivers `messages` to it over SMTP; checks what was stored.
async fn filled(gw: &TestGateway, name: &str, messages: Vec<Vec<u8>>) -> Filled {
    let (id, address, password) = gw.create_mailbox(name).await;
    for message in &messages {
        gw.deliver(&address, message).await;
    }
    let stored = gw.messages(&id, &password);
    assert_eq!(stored.len(), messages.len(), "every message stored");
    for (stored, sent) in stored.iter().zip(&messages) {
        let (_, body) = split_received(stored);
        assert_same(body, sent, "stored vs sent");
    }
    Filled {
        id,
        address,
        password,
        sent: messages,
        stored,
    }
}

/// The three messages of the client tests: tricky lines, ~3 MiB, and a small one.
fn three_messages(tag: &str) -> Vec<Vec<u8>> {
    vec![
        tricky_message(&format!("{tag} tricky")),
        large_message(&format!("{tag} large"), 3 * 1024 * 1024),
        small_message(&format!("{tag} small")),
    ]
}

/// Byte equality with a useful message on failure.
fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    assert!(
        actual == expected,
        "{what}: {} vs {} bytes; first difference at {:?}\nactual:   {:?}\nexpected: {:?}",
        actual.len(),
        expected.len(),
        actual.iter().zip(expected).position(|(a, b)| a != b),
        String::from_utf8_lossy(&actual[..actual.len().min(300)]),
        String::from_utf8_lossy(&expected[..expected.len().min(300)]),
    );
}

fn unique_path(gw: &TestGateway, stem: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    gw.scratch().join(format!("{stem}-{n}"))
}

/// Whether `tool` can run here; on CI its absence is a failure, elsewhere a skip.
fn tool_available(tool: &str, version_arg: &str) -> bool {
    match std::process::Command::new(tool).arg(version_arg).output() {
        Ok(out) if out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty() => true,
        result => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{tool} is required on CI (apt-get install {tool}) but cannot run: {result:?}"
            );
            eprintln!("SKIPPED: {tool} is not installed (apt-get install -y {tool})");
            false
        }
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A new POP3S session logged in with USER/PASS.
async fn pop3s_login(gw: &TestGateway, user: &str, pass: &str) -> Pop3Client {
    let (mut client, greeting) =
        Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let reply = client.login(user, pass).await;
    assert!(reply.starts_with("+OK"), "login refused: {reply}");
    client
}

/// A new POP3S session's login, retried while the maildrop lock is still held by a session
/// the server has not yet seen end.
async fn pop3s_login_when_free(gw: &TestGateway, user: &str, pass: &str) -> Pop3Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (mut client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
        let reply = client.login(user, pass).await;
        if reply.starts_with("+OK") {
            return client;
        }
        assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "maildrop lock never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- 1. Python poplib -----

async fn poplib(
    gw: &TestGateway,
    port: u16,
    mode: &str,
    mailbox: &Filled,
    out_dir: &Path,
) -> Value {
    std::fs::create_dir_all(out_dir).unwrap();
    let request = serde_json::json!({
        "port": port,
        "mode": mode,
        "cafile": gw.ca_file(),
        "user": mailbox.user(),
        "password": mailbox.pass(),
        "out_dir": out_dir,
        "top": [1, 2],
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/poplib_fetch.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(request.to_string())
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "poplib client failed: {}",
        output_text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

/// Headers, the blank line and the first `n` body lines of `message`.
fn top_of(message: &[u8], n: usize) -> Vec<u8> {
    let split = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header/body separator")
        + 4;
    let mut end = split;
    for _ in 0..n {
        end += message[end..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("body line")
            + 2;
    }
    message[..end].to_vec()
}

async fn poplib_empties_mailbox(mode: &str) {
    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, &format!("poplib {mode}"), three_messages(mode)).await;
    let port = match mode {
        "ssl" => gw.pop3s_addr().port(),
        _ => gw.pop3_addr().port(),
    };
    let out_dir = unique_path(&gw, "poplib");
    let report = poplib(&gw, port, mode, &mailbox, &out_dir).await;

    // Capabilities: inside TLS, login offered and STLS not; before STLS the other way round.
    let capa = report["capa"].as_object().expect("capa");
    assert!(capa.contains_key("USER"), "{report}");
    assert_eq!(capa["SASL"], serde_json::json!(["PLAIN"]), "{report}");
    assert!(
        capa.contains_key("UIDL") && capa.contains_key("TOP"),
        "{report}"
    );
    assert!(!capa.contains_key("STLS"), "{report}");
    if mode == "stls" {
        let before = report["capa_before_tls"]
            .as_object()
            .expect("capa before TLS");
        assert!(before.contains_key("STLS"), "{report}");
        assert!(
            !before.contains_key("USER") && !before.contains_key("SASL"),
            "{report}"
        );
        let refused = report["user_before_tls"].as_str().unwrap();
        assert!(refused.starts_with("-ERR [AUTH] TLS required"), "{report}");
    }
    for tls in report["tls"].as_array().unwrap() {
        assert!(
            matches!(tls.as_str(), Some("TLSv1.3" | "TLSv1.2")),
            "{report}"
        );
    }

    // STAT and LIST match what is stored.
    let sizes: Vec<u64> = mailbox.stored.iter().map(|m| m.len() as u64).collect();
    assert_eq!(
        report["stat"],
        serde_json::json!([3, sizes.iter().sum::<u64>()]),
        "{report}"
    );
    assert_eq!(
        report["list"],
        serde_json::json!([[1, sizes[0]], [2, sizes[1]], [3, sizes[2]]]),
        "{report}"
    );

    // UIDL: unique, and the same in the next session.
    let uids: Vec<&str> = report["uidl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[1].as_str().unwrap())
        .collect();
    assert_eq!(uids.len(), 3, "{report}");
    let unique: std::collections::HashSet<_> = uids.iter().collect();
    assert_eq!(unique.len(), 3, "UIDs are unique: {report}");
    assert_eq!(report["uidl"], report["uidl_again"], "UIDs are stable");

    // RETR: byte-identical to what is stored, and to what was sent after our header.
    for (i, stored) in mailbox.stored.iter().enumerate() {
        let retrieved = std::fs::read(out_dir.join(format!("retr-{}", i + 1))).unwrap();
        assert_same(&retrieved, stored, &format!("RETR {}", i + 1));
        let (_, body) = split_received(&retrieved);
        assert_same(
            body,
            &mailbox.sent[i],
            &format!("RETR {} after Received", i + 1),
        );
    }

    // TOP 1 2: the headers and two body lines (one of which starts with a dot).
    let top = std::fs::read(report["top_file"].as_str().unwrap()).unwrap();
    let expected_top = top_of(&mailbox.stored[0], 2);
    assert!(expected_top.ends_with(b"first line\r\n.a line starting with a dot\r\n"));
    assert_same(&top, &expected_top, "TOP 1 2");

    // DELE all and QUIT: gone from the store; a new session saw STAT 0.
    for dele in report["dele"].as_array().unwrap() {
        assert!(dele.as_str().unwrap().starts_with("+OK"), "{report}");
    }
    assert!(
        report["quit"].as_str().unwrap().starts_with("+OK"),
        "{report}"
    );
    assert_eq!(report["final_stat"], serde_json::json!([0, 0]), "{report}");
    assert_eq!(gw.message_count(&mailbox.id), 0);
    assert!(gw.messages(&mailbox.id, &mailbox.password).is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poplib_pop3s_retrieves_and_empties_mailbox() {
    poplib_empties_mailbox("ssl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poplib_stls_retrieves_and_empties_mailbox() {
    poplib_empties_mailbox("stls").await;
}

// ----- 2. fetchmail -----

struct Fetchmail {
    home: PathBuf,
    out_dir: PathBuf,
    mda: PathBuf,
}

impl Fetchmail {
    /// A HOME with a `.fetchmailrc` (mode 0600) holding the password, and an MDA that
    /// writes each message to its own numbered file.
    fn new(gw: &TestGateway, mailbox: &Filled) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let home = unique_path(gw, "fetchmail-home");
        let out_dir = home.join("delivered");
        std::fs::create_dir_all(&out_dir).unwrap();
        let rc = home.join(".fetchmailrc");
        std::fs::write(
            &rc,
            format!(
                "poll localhost user \"{}\" password \"{}\"\n",
                mailbox.user(),
                mailbox.pass()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mda = home.join("mda.sh");
        std::fs::write(
            &mda,
            "#!/bin/sh\nn=$(ls \"$1\" | wc -l)\nexec cat > \"$1/$n.eml\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&mda, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { home, out_dir, mda }
    }

    /// Runs fetchmail once with `options` (TLS, port, keep) added to the common ones.
    async fn run(&self, gw: &TestGateway, user: &str, options: &[&str]) -> Output {
        let out = tokio::process::Command::new("fetchmail")
            .env("HOME", &self.home)
            .env_remove("FETCHMAILHOME")
            .env_remove("FETCHMAILUSER")
            .args(["-f"])
            .arg(self.home.join(".fetchmailrc"))
            .args(["--pidfile"])
            .arg(self.home.join("fetchmail.pid"))
            .args(["-v", "--nosyslog", "--all", "-p", "POP3", "-u", user])
            .args(["--sslcertck", "--sslcertfile"])
            .arg(gw.ca_file())
            .args(["--sslproto", "TLS1.2+"])
            .arg("--mda")
            .arg(format!("{} {}", self.mda.display(), self.out_dir.display()))
            .args(options)
            // fetchmail matches only DNS names in the certificate, not IP addresses.
            .arg("localhost")
            .output()
            .await
            .expect("fetchmail runs");
        assert!(
            out.status.success(),
            "fetchmail failed: {}",
            output_text(&out)
        );
        out
    }

    /// The messages the MDA received, in order.
    fn delivered(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(&self.out_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let n = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                (n, p)
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| std::fs::read(p).unwrap())
            .collect()
    }
}

/// CRLF to LF, as an MDA receives messages from fetchmail.
fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Each delivered message, from our Received header on, equals the stored one (line ends
/// normalised: fetchmail hands an MDA LF lines and may add its own headers on top).
fn assert_fetched(delivered: &[Vec<u8>], stored: &[Vec<u8>], log: &str) {
    assert_eq!(delivered.len(), stored.len(), "messages delivered\n{log}");
    for (i, (got, want)) in delivered.iter().zip(stored).enumerate() {
        let got = lf(got);
        let want = lf(want);
        let first_line = &want[..want.iter().position(|&b| b == b'\n').unwrap() + 1];
        let start = got
            .windows(first_line.len())
            .position(|w| w == first_line)
            .unwrap_or_else(|| {
                panic!(
                    "message {}: our Received header not found in {:?}\n{log}",
                    i + 1,
                    String::from_utf8_lossy(&got[..got.len().min(500)])
                )
            });
        assert_same(
            &got[start..],
            &want,
            &format!("fetchmail message {}", i + 1),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_pop3s_nokeep_empties_mailbox() {
    if !tool_available("fetchmail", "--version") {
        return;
    }
    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, "fetchmail nokeep", three_messages("fetchmail")).await;
    let fetchmail = Fetchmail::new(&gw, &mailbox);
    let port = gw.pop3s_addr().port().to_string();
    let out = fetchmail
        .run(&gw, &mailbox.user(), &["--ssl", "-P", &port, "--nokeep"])
        .await;
    let log = output_text(&out);
    assert!(log.contains("TLSv1."), "fetchmail used TLS\n{log}");
    assert_fetched(&fetchmail.delivered(), &mailbox.stored, &log);
    assert_eq!(
        gw.message_count(&mailbox.id),
        0,
        "deleted after retrieval\n{log}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_stls_keep_leaves_messages() {
    if !tool_available("fetchmail", "--version") {
        return;
    }
    let mut gw = TestGateway::start().await;
    let messages = vec![tricky_message("fetchmail keep"), small_message("keep")];
    let mailbox = filled(&gw, "fetchmail keep", messages).await;
    let fetchmail = Fetchmail::new(&gw, &mailbox);
    let port = gw.pop3_addr().port().to_string();
    // No --ssl: on the plain port, --sslproto makes fetchmail insist on STLS.
    let out = fetchmail
        .run(&gw, &mailbox.user(), &["-P", &port, "--keep", "--uidl"])
        .await;
    let log = output_text(&out);
    // The password only crossed after the upgrade.
    let upgraded = log.find("upgrade to TLS succeeded");
    let user_sent = log.find("POP3> USER");
    assert!(
        upgraded.is_some() && upgraded < user_sent,
        "fetchmail logged in after STLS\n{log}"
    );
    assert!(!log.contains("POP3> DELE"), "--keep deletes nothing\n{log}");
    assert_fetched(&fetchmail.delivered(), &mailbox.stored, &log);
    assert_eq!(
        gw.messages(&mailbox.id, &mailbox.password),
        mailbox.stored,
        "kept on the server\n{log}"
    );
    gw.stop().await;
}

// ----- 3. curl -----

async fn curl(gw: &TestGateway, mailbox: &Filled, url: &str) -> Vec<u8> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--ssl-reqd", "--cacert"])
        .arg(gw.ca_file())
        .arg("-u")
        .arg(format!("{}:{}", mailbox.user(), mailbox.pass()))
        .arg(url)
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {url} failed: {}",
        output_text(&out)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_pop3s_and_stls_retrieve_and_list() {
    if !tool_available("curl", "--version") {
        return;
    }
    let mut gw = TestGateway::start().await;
    let messages = vec![tricky_message("curl"), small_message("curl 2")];
    let mailbox = filled(&gw, "curl", messages).await;
    let pop3s = gw.pop3s_addr().port();
    let pop3 = gw.pop3_addr().port();

    let first = curl(&gw, &mailbox, &format!("pop3s://127.0.0.1:{pop3s}/1")).await;
    assert_same(&first, &mailbox.stored[0], "curl pop3s RETR 1");
    let second = curl(&gw, &mailbox, &format!("pop3://127.0.0.1:{pop3}/2")).await;
    assert_same(&second, &mailbox.stored[1], "curl pop3 STLS RETR 2");

    let expected_list = format!(
        "1 {}\r\n2 {}\r\n",
        mailbox.stored[0].len(),
        mailbox.stored[1].len()
    );
    let list = curl(&gw, &mailbox, &format!("pop3s://127.0.0.1:{pop3s}/")).await;
    assert_eq!(String::from_utf8_lossy(&list), expected_list);
    let list = curl(&gw, &mailbox, &format!("pop3://127.0.0.1:{pop3}/")).await;
    assert_eq!(String::from_utf8_lossy(&list), expected_list);

    // curl only reads: everything is still there.
    assert_eq!(gw.message_count(&mailbox.id), 2);
    gw.stop().await;
}

// ----- TLS session resumption (the archiver reconnecting every few minutes) -----

/// A client that kept the session of its last connection resumes it (no certificate, no
/// signature); one without a stored session does a full handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3s_session_is_resumed_by_a_client_that_kept_it() {
    use tokio_rustls::rustls::HandshakeKind::{Full, Resumed};
    let mut gw = TestGateway::start().await;
    // rustls clients keep sessions in memory by default.
    let archiver = gw.tls_connector();
    for expected in [Full, Resumed, Resumed] {
        let (mut client, greeting) = Pop3Client::connect_tls(gw.pop3s_addr(), &archiver).await;
        assert!(greeting.starts_with("+OK"), "{greeting}");
        assert_eq!(client.tls_handshake_kind(), Some(expected));
        client.ok("QUIT").await;
    }
    let (client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    assert_eq!(client.tls_handshake_kind(), Some(Full));
    gw.stop().await;
}

/// `openssl s_client` on 995 with `-sess_in`/`-sess_out`; its output.
async fn s_client_pop3s(gw: &TestGateway, session: &[&std::ffi::OsStr]) -> String {
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(gw.pop3s_addr().to_string())
        .args(["-verify_return_error", "-CAfile"])
        .arg(gw.ca_file())
        .args(["-crlf", "-ign_eof"])
        .args(session)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().expect("piped");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"QUIT\n")
        .await
        .expect("write to openssl");
    drop(stdin);
    let out = child.wait_with_output().await.expect("openssl runs");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("+OK"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_resumes_a_pop3s_session() {
    if !tool_available("openssl", "version") {
        return;
    }
    let mut gw = TestGateway::start().await;
    let session = unique_path(&gw, "openssl-session.pem");
    let first = s_client_pop3s(&gw, &["-sess_out".as_ref(), session.as_os_str()]).await;
    assert!(first.contains("\nNew, TLSv1.3"), "{first}");
    // The same stored session twice: tickets are not single-use on the server, so clients
    // that resume several connections from one session (Postfix's cache) resume them all.
    for _ in 0..2 {
        let again = s_client_pop3s(&gw, &["-sess_in".as_ref(), session.as_os_str()]).await;
        assert!(again.contains("\nReused, TLSv1.3"), "{again}");
    }
    gw.stop().await;
}

// ----- 4. Protocol and security over raw TCP -----

fn plain_auth(authzid: &str, authcid: &str, password: &str) -> String {
    data_encoding::BASE64.encode(format!("{authzid}\0{authcid}\0{password}").as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_clear_are_refused_and_not_counted() {
    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, "clear", vec![small_message("clear")]).await;
    let (user, pass) = (mailbox.user(), mailbox.pass());

    let (mut clear, greeting) = Pop3Client::connect(gw.pop3_addr()).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let capa = clear.capa().await;
    assert!(capa.iter().any(|c| c == "STLS"), "{capa:?}");
    assert!(
        !capa.iter().any(|c| c == "USER" || c.starts_with("SASL")),
        "{capa:?}"
    );
    // More correct-password attempts in clear than the per-address failure limit (10):
    // none may log in, and none may count as a failed login.
    for _ in 0..4 {
        let reply = clear.command(&format!("USER {user}")).await;
        assert!(reply.starts_with("-ERR [AUTH] TLS required"), "{reply}");
        let reply = clear.command(&format!("PASS {pass}")).await;
        assert!(reply.starts_with("-ERR [AUTH] TLS required"), "{reply}");
        let reply = clear
            .command(&format!("AUTH PLAIN {}", plain_auth("", &user, &pass)))
            .await;
        assert!(reply.starts_with("-ERR [AUTH] TLS required"), "{reply}");
    }
    let reply = clear.command("AUTH PLAIN").await;
    assert!(reply.starts_with("-ERR [AUTH] TLS required"), "{reply}");
    let reply = clear.command("STAT").await;
    assert!(reply.starts_with("-ERR"), "not logged in: {reply}");

    // Neither locked nor throttled: another session logs in while this one is open...
    let mut other = pop3s_login(&gw, &user, &pass).await;
    assert_eq!(other.stat().await.0, 1);
    other.ok("QUIT").await;
    // ...and the same connection, after STLS, logs in with the same password.
    clear.stls(&gw.tls_connector()).await;
    let reply = clear.login(&user, &pass).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(clear.stat().await.0, 1);
    clear.ok("QUIT").await;
    assert_eq!(gw.message_count(&mailbox.id), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stls_discards_pipelined_plaintext() {
    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, "stls injection", vec![small_message("stls")]).await;
    let (mut client, _) = Pop3Client::connect(gw.pop3_addr()).await;
    client.send("STLS\r\nCAPA\r\n").await;
    let reply = client.line().await;
    assert!(reply.starts_with("+OK"), "{reply}");
    // Nothing else in plain text: the injected CAPA is not answered before the handshake.
    assert_eq!(client.bytes_within(Duration::from_millis(200)).await, None);
    client.upgrade(&gw.tls_connector()).await;
    // Inside TLS the injected CAPA is not answered either: this timeout is the assertion.
    let injected = client.bytes_within(Duration::from_millis(500)).await;
    assert_eq!(
        injected.as_deref().map(String::from_utf8_lossy),
        None,
        "plaintext pipelined behind STLS was executed inside TLS"
    );
    let capa = client.capa().await;
    assert!(!capa.iter().any(|c| c == "STLS"), "{capa:?}");
    assert!(capa.iter().any(|c| c == "SASL PLAIN"), "{capa:?}");
    assert!(capa.iter().any(|c| c == "USER"), "{capa:?}");
    // Exactly one CAPA answer: a held-back injected CAPA would be answered now, behind ours.
    let extra = client.bytes_within(Duration::from_millis(300)).await;
    assert_eq!(
        extra.as_deref().map(String::from_utf8_lossy),
        None,
        "the CAPA pipelined behind STLS was answered inside TLS"
    );
    let reply = client.command("STLS").await;
    assert!(reply.starts_with("-ERR"), "STLS twice: {reply}");
    let reply = client.login(&mailbox.user(), &mailbox.pass()).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    client.ok("QUIT").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_session_is_refused_while_maildrop_is_locked() {
    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, "locked", vec![small_message("lock")]).await;
    let (user, pass) = (mailbox.user(), mailbox.pass());
    let mut first = pop3s_login(&gw, &user, &pass).await;

    let (mut second, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    let reply = second.login(&user, &pass).await;
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    // Also over STLS, and with AUTH PLAIN.
    let (mut third, _) = Pop3Client::connect(gw.pop3_addr()).await;
    third.stls(&gw.tls_connector()).await;
    let reply = third
        .command(&format!("AUTH PLAIN {}", plain_auth("", &user, &pass)))
        .await;
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    third.ok("QUIT").await;

    first.ok("DELE 1").await;
    let reply = first.ok("QUIT").await;
    assert!(reply.contains("1 messages deleted"), "{reply}");
    // The refused session may try again (IN-USE is not a failed login) and now gets in.
    let reply = second.login(&user, &pass).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(second.stat().await, (0, 0));
    second.ok("QUIT").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_deletes_nothing() {
    let mut gw = TestGateway::start().await;
    let messages = vec![small_message("drop 1"), small_message("drop 2")];
    let mailbox = filled(&gw, "dropped", messages).await;
    let (user, pass) = (mailbox.user(), mailbox.pass());
    let mut client = pop3s_login(&gw, &user, &pass).await;
    client.ok("DELE 1").await;
    client.ok("DELE 2").await;
    assert_eq!(client.stat().await, (0, 0));
    drop(client); // no QUIT

    let mut client = pop3s_login_when_free(&gw, &user, &pass).await;
    assert_eq!(client.stat().await.0, 2);
    assert_same(&client.retr(1).await, &mailbox.stored[0], "RETR 1");
    client.ok("QUIT").await;
    assert_eq!(gw.messages(&mailbox.id, &mailbox.password), mailbox.stored);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_close_the_session_then_throttle_the_address() {
    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, "guessed", vec![small_message("guess")]).await;
    let user = mailbox.user();
    let wrong = "AAAA-BBBB-CCCC-DDDD";

    // Three wrong passwords in one session: three -ERR [AUTH], then the server hangs up.
    let (mut client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    for _ in 0..3 {
        let reply = client.login(&user, wrong).await;
        assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    }
    let rest = client.until_closed().await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // An unknown mailbox and a SASL attempt count too.
    let (mut client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    let reply = client.login("mbx-nosuchmailbox", wrong).await;
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    let reply = client
        .command(&format!("AUTH PLAIN {}", plain_auth("", &user, wrong)))
        .await;
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");

    // Ten guesses at once from here: each is counted as it starts, so a few are queued
    // behind growing waits and the rest are refused at once, before any password check.
    let mut guesses = Vec::new();
    for _ in 0..10 {
        let (client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
        guesses.push(client);
    }
    for client in &mut guesses {
        client
            .send(format!("USER {user}\r\nPASS {wrong}\r\n"))
            .await;
    }
    let mut refused = 0;
    for client in &mut guesses {
        assert!(client.line().await.starts_with("+OK"));
        if let Ok(reply) = tokio::time::timeout(Duration::from_millis(500), client.line()).await {
            if reply.starts_with("-ERR [SYS/TEMP]") {
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 3,
        "only {refused} of 10 parallel guesses were refused"
    );

    // (That the right password then waits its turn too is shown on paused time in the
    // shell's unit tests; here the waits would depend on how fast this machine is.)
    // Another address is not affected.
    let source = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let (mut client, _) =
        Pop3Client::connect_tls_from(source, gw.pop3s_addr(), &gw.tls_connector()).await;
    let reply = client.login(&user, &mailbox.pass()).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    client.ok("QUIT").await;
    drop(guesses);

    assert_eq!(gw.message_count(&mailbox.id), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rset_undoes_dele() {
    let mut gw = TestGateway::start().await;
    let messages = vec![small_message("rset 1"), small_message("rset 2")];
    let mailbox = filled(&gw, "rset", messages).await;
    let mut client = pop3s_login(&gw, &mailbox.user(), &mailbox.pass()).await;
    let total = client.stat().await;
    assert_eq!(total.0, 2);
    client.ok("DELE 1").await;
    assert_eq!(client.stat().await, (1, mailbox.stored[1].len() as u64));
    let reply = client.command("RETR 1").await;
    assert!(
        reply.starts_with("-ERR"),
        "deleted message retrieved: {reply}"
    );
    let reply = client.command("DELE 1").await;
    assert!(reply.starts_with("-ERR"), "deleted twice: {reply}");
    client.ok("RSET").await;
    assert_eq!(client.stat().await, total);
    assert_same(
        &client.retr(1).await,
        &mailbox.stored[0],
        "RETR 1 after RSET",
    );
    let reply = client.ok("QUIT").await;
    assert!(!reply.contains("deleted"), "{reply}");
    assert_eq!(gw.messages(&mailbox.id, &mailbox.password), mailbox.stored);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_forms() {
    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, "login forms", vec![small_message("forms")]).await;
    let (user, pass) = (mailbox.user(), mailbox.pass());
    let connector = gw.tls_connector();

    // AUTH PLAIN with an initial response.
    let (mut client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &connector).await;
    client
        .ok(&format!("AUTH PLAIN {}", plain_auth("", &user, &pass)))
        .await;
    assert_eq!(client.stat().await.0, 1);
    client.ok("QUIT").await;

    // AUTH PLAIN answering the "+ " continuation, after STLS, authzid = authcid.
    let (mut client, _) = Pop3Client::connect(gw.pop3_addr()).await;
    client.stls(&connector).await;
    let reply = client.command("AUTH PLAIN").await;
    assert_eq!(reply.trim_end(), "+", "continuation: {reply:?}");
    client.ok(&plain_auth(&user, &user, &pass)).await;
    assert_eq!(client.stat().await.0, 1);
    client.ok("QUIT").await;

    // USER with the full address, the password in lower case without dashes.
    let loose = pass.replace('-', "").to_ascii_lowercase();
    let mut client = pop3s_login(&gw, &mailbox.address, &loose).await;
    assert_eq!(client.stat().await.0, 1);
    client.ok("QUIT").await;

    // Commands are case-insensitive, and so is the address.
    let (mut client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &connector).await;
    client
        .ok(&format!("user {}", mailbox.address.to_ascii_uppercase()))
        .await;
    client.ok(&format!("pass {pass}")).await;
    assert_eq!(client.stat().await.0, 1);
    client.ok("quit").await;

    // A cancelled AUTH does not log in and does not end the session.
    let (mut client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &connector).await;
    client.command("AUTH PLAIN").await;
    let reply = client.command("*").await;
    assert!(reply.starts_with("-ERR"), "{reply}");
    let reply = client.login(&user, &pass).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    client.ok("QUIT").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_mailbox_can_still_be_emptied() {
    let mut gw = TestGateway::start().await;
    let messages = vec![small_message("suspended 1"), tricky_message("suspended 2")];
    let mailbox = filled(&gw, "suspended", messages).await;
    gw.gateway()
        .set_status(&mailbox.id, MailboxStatus::Suspended)
        .await
        .unwrap();
    let mut client = pop3s_login(&gw, &mailbox.user(), &mailbox.pass()).await;
    assert_eq!(client.stat().await.0, 2);
    for n in 1..=2 {
        assert_same(&client.retr(n).await, &mailbox.stored[n - 1], "RETR");
        client.ok(&format!("DELE {n}")).await;
    }
    let reply = client.ok("QUIT").await;
    assert!(reply.contains("2 messages deleted"), "{reply}");
    assert_eq!(gw.message_count(&mailbox.id), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    let mut gw = TestGateway::start().await;
    let messages = vec![tricky_message("pipelined 1"), small_message("pipelined 2")];
    let mailbox = filled(&gw, "pipelined", messages).await;
    let (mut client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    // Everything in one write, the login included (RFC 2449 PIPELINING).
    client
        .send(format!(
            "USER {}\r\nPASS {}\r\nSTAT\r\nLIST 2\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nTOP 2 99\r\n\
             RETR 3\r\nDELE 1\r\nLIST\r\nQUIT\r\n",
            mailbox.user(),
            mailbox.pass()
        ))
        .await;
    let sizes: Vec<usize> = mailbox.stored.iter().map(Vec::len).collect();
    assert!(client.line().await.starts_with("+OK"), "USER");
    assert!(client
        .line()
        .await
        .starts_with("+OK maildrop has 2 messages"));
    assert_eq!(
        client.line().await,
        format!("+OK 2 {}", sizes[0] + sizes[1])
    );
    assert_eq!(client.line().await, format!("+OK 2 {}", sizes[1]));
    assert!(client.line().await.starts_with("+OK"), "UIDL");
    let uidl = String::from_utf8(client.multiline().await).unwrap();
    assert_eq!(uidl.lines().count(), 2, "{uidl}");
    assert!(client.line().await.starts_with("+OK"), "RETR 1");
    assert_same(
        &client.multiline().await,
        &mailbox.stored[0],
        "pipelined RETR 1",
    );
    assert!(client.line().await.starts_with("+OK"), "TOP 2 0");
    assert_same(
        &client.multiline().await,
        &top_of(&mailbox.stored[1], 0),
        "TOP 2 0",
    );
    assert!(client.line().await.starts_with("+OK"), "TOP 2 99");
    assert_same(&client.multiline().await, &mailbox.stored[1], "TOP 2 99");
    assert!(client.line().await.starts_with("-ERR"), "RETR 3 of 2");
    assert!(client.line().await.starts_with("+OK"), "DELE 1");
    assert!(client.line().await.starts_with("+OK"), "LIST");
    let list = client.multiline().await;
    assert_eq!(
        String::from_utf8_lossy(&list),
        format!("2 {}\r\n", sizes[1])
    );
    let quit = client.line().await;
    assert!(quit.contains("1 messages deleted"), "{quit}");
    assert!(client.until_closed().await.is_empty());
    assert_eq!(
        gw.messages(&mailbox.id, &mailbox.password),
        &mailbox.stored[1..]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_sessions_without_deleting() {
    let mut gw = TestGateway::start().await;
    let messages = vec![small_message("shutdown 1"), small_message("shutdown 2")];
    let mailbox = filled(&gw, "shutdown", messages).await;
    let mut client = pop3s_login(&gw, &mailbox.user(), &mailbox.pass()).await;
    client.ok("DELE 1").await;
    let (mut waiting, _) = Pop3Client::connect(gw.pop3_addr()).await;

    let stop = tokio::spawn(gw.take_running().stop());
    let reply = client.line().await;
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    assert!(client.until_closed().await.is_empty());
    let reply = waiting.line().await;
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    tokio::time::timeout(Duration::from_secs(60), stop)
        .await
        .expect("shutdown finishes")
        .unwrap();
    // No QUIT, so no UPDATE: the marked message is still there.
    assert_eq!(gw.messages(&mailbox.id, &mailbox.password), mailbox.stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited_separately_from_smtp() {
    let mut gw = TestGateway::start_with(|c| c.limits.max_connections_per_ip = 2).await;
    let mailbox = filled(&gw, "limited", vec![small_message("limited")]).await;
    let (first, _) = Pop3Client::connect(gw.pop3_addr()).await;
    let (mut second, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;

    // The STLS port says why; the TLS port can only hang up.
    let (mut refused, greeting) = Pop3Client::connect(gw.pop3_addr()).await;
    assert!(greeting.starts_with("-ERR [SYS/TEMP]"), "{greeting}");
    assert!(refused.until_closed().await.is_empty());
    let mut raw = tokio::net::TcpStream::connect(gw.pop3s_addr())
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read(&mut raw, &mut byte),
    )
    .await
    .expect("closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // SMTP has its own budget: mail still arrives while POP3 is full.
    gw.deliver(&mailbox.address, &small_message("while full"))
        .await;

    // A slot frees when a session ends.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (mut client, greeting) = Pop3Client::connect(gw.pop3_addr()).await;
        if greeting.starts_with("+OK") {
            client.ok("QUIT").await;
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = second.login(&mailbox.user(), &mailbox.pass()).await;
    assert!(reply.starts_with("+OK maildrop has 2 messages"), "{reply}");
    second.ok("QUIT").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_queue_for_one_unseal_slot() {
    let mut gw = TestGateway::start_with(|c| c.pop3.max_concurrent_unseals = 1).await;
    let mut mailboxes = Vec::new();
    for n in 0..4 {
        let name = format!("queued {n}");
        mailboxes.push(filled(&gw, &name, vec![small_message(&name)]).await);
    }
    // Each first fails once (the slot must come back on the failure path too), then logs in.
    let empty = |mailbox: &Filled| {
        let (user, pass) = (mailbox.user(), mailbox.pass());
        let gw = &gw;
        async move {
            let (mut client, _) =
                Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
            let reply = client.login(&user, "AAAA-BBBB-CCCC-DDDD").await;
            assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
            let reply = client.login(&user, &pass).await;
            assert!(reply.starts_with("+OK"), "{reply}");
            let message = client.retr(1).await;
            client.ok("DELE 1").await;
            client.ok("QUIT").await;
            message
        }
    };
    let (a, b, c, d) = tokio::join!(
        empty(&mailboxes[0]),
        empty(&mailboxes[1]),
        empty(&mailboxes[2]),
        empty(&mailboxes[3])
    );
    for (mailbox, message) in mailboxes.iter().zip([a, b, c, d]) {
        assert_same(&message, &mailbox.stored[0], "concurrent RETR");
        assert_eq!(gw.message_count(&mailbox.id), 0);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_password_is_never_refused_after_others_failed() {
    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, "targeted", vec![small_message("targeted")]).await;
    let wrong = "AAAA-BBBB-CCCC-DDDD";
    // 30 failures against the mailbox (before the fix, its wall), three from each of ten
    // addresses, all at once; their answers come slower as the mailbox's delay grows.
    let guess = |host: u8| {
        let gw = &gw;
        let user = mailbox.user();
        async move {
            let source = std::net::Ipv4Addr::new(127, 0, 0, host);
            let (mut client, _) =
                Pop3Client::connect_tls_from(source, gw.pop3s_addr(), &gw.tls_connector()).await;
            let reply = client.login(&user, wrong).await;
            assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
        }
    };
    let mut guesses = Vec::new();
    for host in 2..=11u8 {
        for _ in 0..3 {
            guesses.push(guess(host));
        }
    }
    join_all(guesses).await;
    // The archiver, from its own address, logs in and empties the mailbox.
    let mut client = pop3s_login(&gw, &mailbox.user(), &mailbox.pass()).await;
    assert_same(&client.retr(1).await, &mailbox.stored[0], "RETR 1");
    client.ok("DELE 1").await;
    client.ok("QUIT").await;
    assert_eq!(gw.message_count(&mailbox.id), 0);
    gw.stop().await;
}

/// Runs futures concurrently on this task (no extra dependency for one helper).
async fn join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_message_is_refused_permanently_and_the_rest_are_picked_up() {
    use gateway::crypto::MessageId;
    use gateway::store::schema::{chunk_key, CHUNKS};

    let mut gw = TestGateway::start().await;
    let mailbox = filled(&gw, "damaged", three_messages("damaged")).await;
    // Break the second message: its first sealed chunk disappears from the store.
    let service = gw.gateway();
    let uid = service.list_messages(&mailbox.id).unwrap()[1].id.clone();
    let mut raw = [0u8; 16];
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&uid[2 * i..2 * i + 2], 16).unwrap();
    }
    let id = MessageId(raw);
    service
        .store_for_tests()
        .write(move |txn| {
            let mut chunks = txn.redb_for_tests().unwrap().open_table(CHUNKS)?;
            chunks.remove(chunk_key(id, 0))?;
            Ok(())
        })
        .await
        .unwrap();

    let mut client = pop3s_login(&gw, &mailbox.user(), &mailbox.pass()).await;
    assert_same(&client.retr(1).await, &mailbox.stored[0], "RETR 1");
    // Permanent, so the archiver does not retry it forever; counted; the session goes on.
    for _ in 0..2 {
        let reply = client.command("RETR 2").await;
        assert!(
            reply.starts_with("-ERR [SYS/PERM] message is damaged"),
            "{reply}"
        );
    }
    assert_eq!(service.stats().damaged_messages(), 2);
    assert_same(&client.retr(3).await, &mailbox.stored[2], "RETR 3");
    client.ok("DELE 1").await;
    client.ok("DELE 3").await;
    client.ok("QUIT").await;
    assert_eq!(gw.message_count(&mailbox.id), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickup_gets_in_when_slots_are_full() {
    let mut gw = TestGateway::start_with(|c| {
        c.limits.max_connections = 4;
        c.limits.max_connections_per_ip = 4;
        c.limits.reserved_pickup_slots = 2;
    })
    .await;
    let mailbox = filled(&gw, "reserved", vec![small_message("reserved")]).await;
    // The archiver has picked up from this address before.
    let mut earlier = pop3s_login(&gw, &mailbox.user(), &mailbox.pass()).await;
    earlier.ok("QUIT").await;
    drop(earlier);

    // Strangers take every slot they can get.
    let mut flood = Vec::new();
    loop {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let stream = socket.connect(gw.pop3_addr()).await.unwrap();
        let mut reader = tokio::io::BufReader::new(stream);
        let mut greeting = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut greeting)
            .await
            .unwrap();
        if greeting.starts_with("-ERR [SYS/TEMP]") {
            break;
        }
        assert!(greeting.starts_with("+OK"), "{greeting}");
        flood.push(reader);
        assert!(
            flood.len() <= 4,
            "strangers took more than the unreserved slots"
        );
    }
    // (One may still be held by the earlier session while it closes.)
    assert!(
        (1..=2).contains(&flood.len()),
        "strangers get the unreserved slots only: {}",
        flood.len()
    );

    // The archiver still gets in, and picks up.
    let (mut client, greeting) =
        Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let reply = client.login(&mailbox.user(), &mailbox.pass()).await;
    assert!(reply.starts_with("+OK maildrop has 1 message"), "{reply}");
    client.ok("QUIT").await;
    drop(flood);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_is_taken_over_by_a_new_login_without_deleting() {
    let mut gw = TestGateway::start_with(|c| c.pop3.lock_takeover_secs = 1).await;
    let mailbox = filled(&gw, "takeover", vec![small_message("takeover")]).await;
    let mut vanished = pop3s_login(&gw, &mailbox.user(), &mailbox.pass()).await;
    vanished.ok("DELE 1").await;

    // The client goes silent, as after a network partition. Right away the mailbox is
    // still in use.
    let (mut early, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    let reply = early.login(&mailbox.user(), &mailbox.pass()).await;
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    drop(early);

    // Once the old session has waited for a command for the takeover time, a login with
    // the password gets in; the old session's DELE never took effect.
    let mut archiver = pop3s_login_when_free(&gw, &mailbox.user(), &mailbox.pass()).await;
    assert_eq!(
        archiver.stat().await.0,
        1,
        "the old session deleted something"
    );
    let told = String::from_utf8_lossy(&vanished.until_closed().await).into_owned();
    assert!(told.contains("-ERR [IN-USE]"), "{told:?}");
    archiver.ok("DELE 1").await;
    archiver.ok("QUIT").await;
    assert_eq!(gw.message_count(&mailbox.id), 0);
    gw.stop().await;
}

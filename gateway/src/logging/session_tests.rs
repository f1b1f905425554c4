//! What a session's log lines hold: its span on every line, one line per stored and
//! picked-up message, no secret and no message content, and a level change in the middle
//! of a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;

use super::test_support::Captured;
use super::*;
use crate::config::SmtpSection;
use crate::net::{ConnectionLimits, ProtocolServer as _, Shutdown, TlsMode};
use crate::pop3::{Pop3Server, Pop3Settings};
use crate::service::Gateway;
use crate::smtp::{SessionConfig, SmtpServer};
use crate::tls::{CertResolver, CertifiedMaterial};

const BODY_SECRET: &str = "BODY-CONTENT-4f1c9a-never-logged";
const ADMIN_SECRET: &str = "Admin-Password-77e1-never-logged";
const KEY_SECRET: &str = "gwk_0123456789abcdef_key-secret-never-logged";

fn smtp_server(gateway: &Gateway, resolver: &Arc<CertResolver>) -> Arc<SmtpServer> {
    SmtpServer::new(
        gateway.clone(),
        SessionConfig {
            host_name: "gw.test".into(),
            email_domain: "archive.example".into(),
            max_message_size: 1024 * 1024,
            max_recipients: 10,
            require_tls: false,
            tls_available: true,
            max_errors: 10,
            proxy: false,
            postmaster: None,
            preauth_timeout: Duration::from_secs(60),
            transaction_timeout: Duration::from_secs(1800),
        },
        crate::tls::acceptor(resolver.clone()),
        ConnectionLimits::new(10, 10),
        SmtpSection::default(),
    )
}

fn pop3_server(gateway: &Gateway, resolver: &Arc<CertResolver>) -> Arc<Pop3Server> {
    Pop3Server::new(
        gateway.clone(),
        Pop3Settings {
            host_name: "gw.test".into(),
            preauth_timeout: crate::pop3::DEFAULT_PREAUTH_TIMEOUT,
            pickup: crate::service::PickupPolicy {
                max_concurrent_unseals: 1,
                failed_login_delay: Duration::ZERO,
                trusted_networks: Vec::new(),
                lock_takeover: None,
            },
        },
        crate::tls::acceptor(resolver.clone()),
        ConnectionLimits::new(10, 10),
    )
}

/// Reads reply lines until one starts with `until` (or the stream ends).
async fn read_until<R: AsyncRead + Unpin>(lines: &mut BufReader<R>, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return seen,
            Ok(_) => {}
        }
        let done = line.starts_with(until);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    line: &str,
    until: &str,
) -> Vec<String> {
    stream.get_mut().write_all(line.as_bytes()).await.unwrap();
    read_until(stream, until).await
}

fn tls_client(material: &CertifiedMaterial) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(material.chain()[0].clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Delivers one message with `body` to `rcpt` over an in-memory connection.
async fn deliver(server: &Arc<SmtpServer>, rcpt: &str, body: &str) -> Vec<String> {
    deliver_many(server, &[rcpt], body, 1).await
}

/// Delivers `count` messages with `body`, one after another over one connection, each to
/// the next of `rcpts` in turn.
async fn deliver_many(
    server: &Arc<SmtpServer>,
    rcpts: &[&str],
    body: &str,
    count: usize,
) -> Vec<String> {
    let (client, server_side) = tokio::io::duplex(1 << 20);
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let shutdown = Shutdown::new();
    let task = {
        let (server, signal) = (server.clone(), shutdown.signal());
        tokio::spawn(async move {
            server
                .handle(server_side, peer, TlsMode::StartTls, signal)
                .await
        })
    };
    let mut stream = BufReader::new(client);
    let mut replies = read_until(&mut stream, "220 ").await;
    replies.extend(command(&mut stream, "EHLO client.test\r\n", "250 ").await);
    for rcpt in rcpts.iter().cycle().take(count) {
        replies.extend(command(&mut stream, "MAIL FROM:<j@tenant.example>\r\n", "250 ").await);
        replies.extend(command(&mut stream, &format!("RCPT TO:<{rcpt}>\r\n"), "250 ").await);
        replies.extend(command(&mut stream, "DATA\r\n", "354 ").await);
        let message = format!("Subject: t\r\n\r\n{body}\r\n.\r\n");
        replies.extend(command(&mut stream, &message, "250 ").await);
    }
    replies.extend(command(&mut stream, "QUIT\r\n", "221 ").await);
    task.await.unwrap();
    replies
}

/// Logs into the mailbox over POP3S, retrieves and deletes message 1.
async fn pick_up(
    server: &Arc<Pop3Server>,
    material: &CertifiedMaterial,
    mailbox: &str,
    password: &str,
) -> Vec<String> {
    let (client, server_side) = tokio::io::duplex(1 << 20);
    let peer: SocketAddr = "192.0.2.8:40001".parse().unwrap();
    let shutdown = Shutdown::new();
    let task = {
        let (server, signal) = (server.clone(), shutdown.signal());
        tokio::spawn(async move {
            server
                .handle(server_side, peer, TlsMode::Implicit, signal)
                .await
        })
    };
    let name = rustls::pki_types::ServerName::try_from("gw.test").unwrap();
    let tls = tls_client(material).connect(name, client).await.unwrap();
    let mut stream = BufReader::new(tls);
    let mut replies = read_until(&mut stream, "+OK").await;
    replies.extend(command(&mut stream, &format!("USER {mailbox}\r\n"), "+OK").await);
    replies.extend(command(&mut stream, &format!("PASS {password}\r\n"), "").await);
    replies.extend(command(&mut stream, "RETR 1\r\n", ".\r").await);
    replies.extend(command(&mut stream, "DELE 1\r\n", "").await);
    replies.extend(command(&mut stream, "QUIT\r\n", "").await);
    task.await.unwrap();
    replies
}

struct Fixture {
    _dir: tempfile::TempDir,
    gateway: Gateway,
    material: CertifiedMaterial,
    resolver: Arc<CertResolver>,
}

fn fixture() -> Fixture {
    let (dir, gateway) = crate::service::test_support::gateway();
    let material = crate::tls::load_or_create_self_signed(dir.path(), "gw.test").unwrap();
    let resolver = Arc::new(CertResolver::new(material.clone()));
    Fixture {
        _dir: dir,
        gateway,
        material,
        resolver,
    }
}

/// The JSON objects of the captured lines.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

#[tokio::test]
async fn session_logs_carry_their_span_and_never_a_password_key_or_message_content() {
    let text = Captured::default();
    let json = Captured::default();
    let (text_writer, json_writer) = (text.clone(), json.clone());
    // Everything, at the most verbose level, in both formats.
    let (subscriber, _control) = subscriber_with(
        LogLevel::Trace,
        None,
        vec![
            output(move || text_writer.clone(), LogFormat::Text, false),
            output(move || json_writer.clone(), LogFormat::Json, false),
        ],
    );
    let _default = tracing::subscriber::set_default(subscriber);

    let f = fixture();
    let created = f.gateway.create_mailbox("archive", "").await.unwrap();
    let mailbox = created.info.id.to_string();
    let password = created.password.reveal_for_display().to_string();

    let replies = deliver(
        &smtp_server(&f.gateway, &f.resolver),
        &created.info.address,
        BODY_SECRET,
    )
    .await;
    assert!(
        replies.iter().any(|r| r.starts_with("250 2.0.0")),
        "{replies:?}"
    );
    let replies = pick_up(
        &pop3_server(&f.gateway, &f.resolver),
        &f.material,
        &mailbox,
        &password,
    )
    .await;
    assert!(
        replies.iter().any(|r| r.contains(BODY_SECRET)),
        "the archiver got the message: {replies:?}"
    );
    // A wrong administrator password and an unknown API key, as the API checks them.
    let client = "192.0.2.9".parse().unwrap();
    assert!(f
        .gateway
        .check_admin_password("admin", ADMIN_SECRET, client)
        .await
        .is_err());
    assert!(f.gateway.check_api_key(KEY_SECRET, client).await.is_err());

    let (text, json) = (text.text(), json.text());
    for secret in [BODY_SECRET, password.as_str(), ADMIN_SECRET, KEY_SECRET] {
        assert!(!text.contains(secret), "{secret} in the log:\n{text}");
        assert!(!json.contains(secret), "{secret} in the JSON log:\n{json}");
    }
    // The password without its dashes, in case something prints it normalised.
    let compact: String = password.chars().filter(|c| *c != '-').collect();
    assert!(!text.contains(&compact) && !json.contains(&compact));

    // One line per stored and per picked-up message, with size and id, inside the session
    // span (its id, listener, client and mailbox).
    let lines = json_lines(&json);
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message && l["level"] == "INFO")
            .unwrap_or_else(|| panic!("no `{message}` line in\n{json}"))
    };
    let stored = find("message stored");
    let picked = find("message picked up");
    assert_eq!(stored["mailbox"], mailbox.as_str());
    assert!(stored["size"].as_u64().unwrap() > BODY_SECRET.len() as u64);
    assert_eq!(
        stored["id"], picked["id"],
        "the same message id in both lines"
    );
    assert_eq!(stored["span"]["listener"], "smtp");
    assert_eq!(stored["span"]["client"], "192.0.2.7:40000");
    assert_eq!(picked["span"]["listener"], "pop3s");
    assert_eq!(picked["span"]["mailbox"], mailbox.as_str());
    assert!(picked["span"]["tls"].as_str().unwrap().contains("TLS"));
    assert_eq!(picked["size"], stored["size"]);
    // Every line of the SMTP session carries its id; the two sessions' ids differ.
    let smtp_id = stored["span"]["id"].as_str().unwrap();
    let pop3_id = picked["span"]["id"].as_str().unwrap();
    assert_eq!(smtp_id.len(), 16);
    assert_ne!(smtp_id, pop3_id);
    let smtp_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["span"]["listener"] == "smtp")
        .collect();
    assert!(smtp_lines.len() >= 2, "{json}");
    assert!(smtp_lines.iter().all(|l| l["span"]["id"] == smtp_id));
    // The text format names the session too.
    assert!(
        text.lines()
            .any(|l| l.contains("message stored") && l.contains(&format!("id={smtp_id}"))),
        "{text}"
    );
}

/// Delivers `count` messages over one SMTP connection, logged as text at `info`, to new
/// mailboxes named `names` in turn. Returns the mailboxes and the unstyled "message stored"
/// lines.
async fn stored_lines_of_one_connection(
    names: &[&str],
    count: usize,
) -> (Vec<crate::service::MailboxInfo>, Vec<String>) {
    let captured = Captured::default();
    let writer = captured.clone();
    let (subscriber, _control) = subscriber(LogLevel::Info, None, move || writer.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let f = fixture();
    let mut mailboxes = Vec::new();
    for name in names {
        mailboxes.push(f.gateway.create_mailbox(name, "").await.unwrap().info);
    }
    let addresses: Vec<&str> = mailboxes.iter().map(|m| m.address.as_str()).collect();
    let replies = deliver_many(
        &smtp_server(&f.gateway, &f.resolver),
        &addresses,
        "body",
        count,
    )
    .await;
    let accepted = replies
        .iter()
        .filter(|r| r.starts_with("250 2.0.0"))
        .count();
    assert_eq!(accepted, count, "{replies:?}");
    // The test subscriber styles its text as for a terminal.
    let text = ::test_support::process::strip_ansi(&captured.text());
    let stored: Vec<String> = text
        .lines()
        .filter(|l| l.contains("message stored"))
        .map(str::to_owned)
        .collect();
    assert_eq!(stored.len(), count, "{text}");
    (mailboxes, stored)
}

#[tokio::test]
async fn a_connection_delivering_many_messages_names_its_mailbox_once_per_line() {
    let (mailboxes, stored) = stored_lines_of_one_connection(&["archive"], 40).await;
    // The span records the mailbox at every recipient; its text must not grow with them.
    for line in &stored {
        assert_eq!(
            line.matches("mailbox=").count(),
            2,
            "span and event: {line}"
        );
        assert!(
            line.contains(&format!("mailbox={}", mailboxes[0].id)),
            "{line}"
        );
    }
    let length = |line: &str| line.len() - line.find(" INFO ").unwrap();
    assert_eq!(length(&stored[0]), length(&stored[39]), "{stored:?}");
}

#[tokio::test]
async fn a_connection_alternating_mailboxes_names_the_current_one_once_per_line() {
    let (mailboxes, stored) = stored_lines_of_one_connection(&["a", "b"], 20).await;
    for (n, line) in stored.iter().enumerate() {
        let mailbox = &mailboxes[n % 2].id;
        let (span, event) = line.split_once("}:").expect(line);
        assert_eq!(span.matches("mailbox=").count(), 1, "{line}");
        assert!(span.ends_with(&format!("mailbox={mailbox}")), "{line}");
        assert!(event.contains(&format!("mailbox={mailbox}")), "{line}");
    }
}

#[tokio::test]
async fn the_level_changes_mid_connection_with_file_output_and_the_connection_goes_on() {
    let logs = tempfile::tempdir().unwrap();
    let (appender, _) = files::open(logs.path(), 14).unwrap();
    let (subscriber, control) = subscriber_with(
        LogLevel::Info,
        None,
        vec![
            output(std::io::sink, LogFormat::Text, false),
            output(appender, LogFormat::Json, false),
        ],
    );
    let _default = tracing::subscriber::set_default(subscriber);
    let f = fixture();
    let created = f.gateway.create_mailbox("archive", "").await.unwrap();
    let server = smtp_server(&f.gateway, &f.resolver);

    let (client, server_side) = tokio::io::duplex(1 << 20);
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let shutdown = Shutdown::new();
    let signal = shutdown.signal();
    let task = tokio::spawn(async move {
        server
            .handle(server_side, peer, TlsMode::StartTls, signal)
            .await
    });
    let mut stream = BufReader::new(client);
    read_until(&mut stream, "220 ").await;
    command(&mut stream, "EHLO client.test\r\n", "250 ").await;
    // The service logs each stored copy at debug: not yet.
    assert_eq!(
        control.set_level(LogLevel::Debug).ok(),
        Some(LevelChange::Applied)
    );
    command(&mut stream, "MAIL FROM:<j@tenant.example>\r\n", "250 ").await;
    let rcpt = format!("RCPT TO:<{}>\r\n", created.info.address);
    command(&mut stream, &rcpt, "250 ").await;
    command(&mut stream, "DATA\r\n", "354 ").await;
    let accepted = command(&mut stream, "Subject: t\r\n\r\nhello\r\n.\r\n", "250 ").await;
    assert!(
        accepted.last().unwrap().starts_with("250 2.0.0"),
        "{accepted:?}"
    );
    command(&mut stream, "QUIT\r\n", "221 ").await;
    task.await.unwrap();

    let file = std::fs::read_dir(logs.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let lines = json_lines(&std::fs::read_to_string(file).unwrap());
    let debug_stored = lines
        .iter()
        .find(|l| l["level"] == "DEBUG" && l["message"] == "message stored")
        .expect("the debug line written after the change");
    // Still inside the connection that was open when the level changed.
    assert_eq!(debug_stored["span"]["listener"], "smtp");
    assert!(lines.iter().all(|l| l["level"] != "TRACE"));
}

//! #14's "Show": a real `gateway serve` configured for ACME against Pebble obtains a
//! certificate; every listener (SMTP and submission with STARTTLS, SMTPS, POP3 with STLS,
//! POP3S, the console) presents it to a client that trusts only Pebble's issuing root; then
//! `gateway cert renew` swaps in a new one while an SMTP session sits mid-transaction, and
//! that session still completes its message with 250.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pebble_test_util::{Pebble, PebbleOptions};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader as AsyncBufReader,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod served;
use served::{gateway, hold_free_ports, listen_sections, ok_json, Served, LISTENERS};

const HOST: &str = "mail.example.test";
const EMAIL_DOMAIN: &str = "archive.example.test";

/// A client that trusts only Pebble's issuing root. Without session resumption: a resumed
/// session reports the certificate of the session it resumes, not the one presented now.
fn connector(root_pem: &str) -> TlsConnector {
    let mut config = test_support::pki::client_config(root_pem.as_bytes()).expect("root PEM");
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads one (possibly multi-line) reply; returns its last line.
async fn reply<R: AsyncRead + Unpin>(reader: &mut AsyncBufReader<R>) -> String {
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.expect("read reply");
        assert!(n > 0, "connection closed");
        // SMTP continuation lines have '-' after the code; POP3 answers are one line.
        if !(line.len() > 3 && line.as_bytes()[3] == b'-') {
            return line;
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut AsyncBufReader<S>,
    line: &str,
    expect: &str,
) {
    stream
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .expect("write");
    let answer = reply(stream).await;
    assert!(answer.starts_with(expect), "{line}: {answer}");
}

#[derive(Clone, Copy, Debug)]
enum Start {
    Implicit,
    SmtpStartTls,
    Pop3Stls,
}

/// The handshake as each listener's clients do it; the leaf's SHA-256 (the handshake only
/// succeeds when the chain verifies for HOST against Pebble's root).
async fn presented(addr: SocketAddr, start: Start, tls: &TlsConnector) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut plain = AsyncBufReader::new(tcp);
    match start {
        Start::Implicit => {}
        Start::SmtpStartTls => {
            assert!(reply(&mut plain).await.starts_with("220"));
            command(&mut plain, "EHLO client.example.org", "250").await;
            command(&mut plain, "STARTTLS", "220").await;
        }
        Start::Pop3Stls => {
            assert!(reply(&mut plain).await.starts_with("+OK"));
            command(&mut plain, "STLS", "+OK").await;
        }
    }
    let stream = tls
        .connect(
            ServerName::try_from(HOST.to_owned()).expect("name"),
            plain.into_inner(),
        )
        .await
        .unwrap_or_else(|e| panic!("{start:?} handshake on {addr}: {e}"));
    let (_, session) = stream.get_ref();
    fingerprint(&session.peer_certificates().expect("peer certificates")[0])
}

fn write_config(dir: &Path, pebble: &Pebble, ports: &[u16]) {
    let mut text = format!(
        "[gateway]\nemail_domain = \"{EMAIL_DOMAIN}\"\nhost_name = \"{HOST}\"\nlog_level = \"info\"\n\n\
         [tls]\nsource = \"acme\"\nacme_directory_url = \"{}\"\nacme_ca_file = \"{}\"\n\
         acme_contact_email = \"postmaster@example.test\"\n\n",
        pebble.directory_url(),
        pebble.ca_file().display()
    );
    text.push_str(&listen_sections(&LISTENERS, ports));
    std::fs::write(dir.join("gateway.toml"), text).expect("write config");
}

/// Distinct free ports for [`LISTENERS`], held until just before the gateway binds them,
/// and Pebble dialling the last one (`acme_http`) for HTTP-01.
fn ports_and_pebble() -> (Vec<std::net::TcpListener>, Vec<u16>, Pebble) {
    let (held, ports) = hold_free_ports(LISTENERS.len());
    let pebble = Pebble::start(PebbleOptions {
        http_port: ports[6],
        mock_dns: true,
        ..PebbleOptions::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    (held, ports, pebble)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_presents_the_acme_certificate_and_a_renewal_keeps_open_sessions() {
    let (held, ports, pebble) = ports_and_pebble();
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    write_config(d, &pebble, &ports);
    drop(held);

    let mut served = Served::start(d);
    // Nothing was stored: the gateway starts on its self-signed certificate and orders.
    served.wait_for(&["TLS certificate replaced"]);
    let shown = ok_json(d, &["cert", "show", "--json"]);
    assert_eq!(shown["source"], "acme", "{shown}");
    let first = shown["sha256Fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();

    let tls = connector(pebble.issuing_root_pem());
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let listeners = [
        ("smtp (25, STARTTLS)", addr(0), Start::SmtpStartTls),
        ("smtps (465)", addr(1), Start::Implicit),
        ("submission (587, STARTTLS)", addr(2), Start::SmtpStartTls),
        ("pop3 (110, STLS)", addr(3), Start::Pop3Stls),
        ("pop3s (995)", addr(4), Start::Implicit),
        ("console (8450)", addr(5), Start::Implicit),
    ];
    for (name, addr, start) in listeners {
        assert_eq!(presented(addr, start, &tls).await, first, "{name}");
    }

    // A journal delivery in progress: TLS, the envelope given, DATA accepted.
    let created = ok_json(d, &["mailbox", "create", "--name", "Sales", "--json"]);
    let address = created["address"].as_str().expect("address").to_owned();
    let tcp = TcpStream::connect(addr(0)).await.expect("connect");
    let mut plain = AsyncBufReader::new(tcp);
    assert!(reply(&mut plain).await.starts_with("220"));
    command(&mut plain, "EHLO journal.example.org", "250").await;
    command(&mut plain, "STARTTLS", "220").await;
    let secured = tls
        .connect(
            ServerName::try_from(HOST.to_owned()).expect("name"),
            plain.into_inner(),
        )
        .await
        .expect("STARTTLS handshake");
    let mut session = AsyncBufReader::new(secured);
    command(&mut session, "EHLO journal.example.org", "250").await;
    command(&mut session, "MAIL FROM:<journal@example.org>", "250").await;
    command(&mut session, &format!("RCPT TO:<{address}>"), "250").await;
    command(&mut session, "DATA", "354").await;
    session
        .get_mut()
        .write_all(b"Subject: before the renewal\r\n\r\nfirst half\r\n")
        .await
        .expect("write");

    // The renewal, through the control socket, while the session waits.
    let cli = {
        let d = d.to_owned();
        tokio::task::spawn_blocking(move || ok_json(&d, &["cert", "renew", "--json"]))
    };
    let renewed = cli.await.expect("cert renew");
    let second = renewed["certificate"]["sha256Fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    assert_ne!(second, first, "a new certificate");
    assert_eq!(renewed["certificate"]["source"], "acme");
    for (name, addr, start) in listeners {
        assert_eq!(
            presented(addr, start, &tls).await,
            second,
            "{name} after the renewal"
        );
    }

    // The open session finishes its message on the old certificate.
    session
        .get_mut()
        .write_all(b"second half\r\n.\r\n")
        .await
        .expect("write");
    let done = reply(&mut session).await;
    assert!(done.starts_with("250"), "end of data: {done}");
    command(&mut session, "QUIT", "221").await;
    let (_, old) = session.get_ref().get_ref();
    assert_eq!(
        fingerprint(&old.peer_certificates().expect("peer")[0]),
        first,
        "the session kept the certificate it started with"
    );
}

#[test]
fn cert_acme_on_a_stopped_gateway_orders_in_process_and_rewrites_tls() {
    let (held, ports, pebble) = ports_and_pebble();
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    write_config(d, &pebble, &ports);
    // Start from a self-signed configuration with a comment to keep.
    let text = std::fs::read_to_string(d.join("gateway.toml")).expect("config");
    let start = text.find("[tls]").expect("tls");
    let end = text[start..].find("[listen").expect("listen") + start;
    let text = format!(
        "{}[tls]\n# chosen by the installer\nsource = \"self-signed\"\n\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(d.join("gateway.toml"), text).expect("config");
    drop(held);
    let ca_file = pebble.ca_file();
    let directory = pebble.directory_url();
    let args = [
        "cert",
        "acme",
        "--domain",
        HOST,
        "--email",
        "postmaster@example.test",
        "--directory",
        directory.as_str(),
        "--ca-file",
        ca_file.to_str().expect("path"),
        "--json",
    ];

    let refused = gateway(d, &args);
    assert!(!refused.status.success());
    // With --json the error is a JSON object on stdout.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(said.contains("--accept-tos"), "{said}");

    let mut with_tos = args.to_vec();
    with_tos.push("--accept-tos");
    let ordered = ok_json(d, &with_tos);
    assert_eq!(ordered["certificate"]["source"], "acme", "{ordered}");
    let config = std::fs::read_to_string(d.join("gateway.toml")).expect("config");
    assert!(
        config.contains("# chosen by the installer\nsource = \"acme\"")
            && config.contains(&format!("acme_directory_url = \"{directory}\""))
            && config.contains(&format!("acme_domains = [\"{HOST}\"]")),
        "{config}"
    );
    // What the next start serves.
    let shown = ok_json(d, &["cert", "show", "--json"]);
    assert_eq!(
        shown["sha256Fingerprint"], ordered["certificate"]["sha256Fingerprint"],
        "{shown}"
    );
}

/// A certificate for HOST that started `age` ago, as an earlier order would have left it in
/// the data directory; returns its SHA-256.
fn store_old_acme_certificate(data_dir: &Path, age: Duration) -> String {
    let cert = test_support::pki::Leaf::names(&[HOST])
        .valid(age, 30 * test_support::pki::DAY)
        .self_signed()
        .expect("certificate");
    let dir = data_dir.join("tls").join("acme");
    std::fs::create_dir_all(&dir).expect("acme dir");
    std::fs::write(dir.join("chain.pem"), cert.cert_pem()).expect("chain");
    std::fs::write(dir.join("key.pem"), cert.key_pem()).expect("key");
    fingerprint(cert.der())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_certificate_past_its_renewal_date_is_renewed_by_itself_and_presented() {
    let (held, ports, pebble) = ports_and_pebble();
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    write_config(d, &pebble, &ports);
    // Renew at one day of age: the stored certificate is two days old, so due at start.
    let text = std::fs::read_to_string(d.join("gateway.toml")).expect("config");
    let text = text.replace("[tls]\n", "[tls]\nacme_renew_after_days = 1\n");
    std::fs::write(d.join("gateway.toml"), text).expect("config");
    let old = store_old_acme_certificate(&d.join("data"), Duration::from_secs(2 * 24 * 3600));
    drop(held);

    let mut served = Served::start(d);
    // No command from anyone: the loop finds the certificate due and renews it.
    served.wait_for(&["renewed the ACME certificate"]);
    let shown = ok_json(d, &["cert", "show", "--json"]);
    let new = shown["sha256Fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    assert_ne!(new, old, "{shown}");
    assert_eq!(shown["source"], "acme");
    let renewal = &shown["renewal"];
    assert_eq!(renewal["scheduled"], true, "{shown}");
    assert_eq!(renewal["consecutiveFailures"], 0, "{shown}");
    assert!(renewal["lastSuccess"].is_string(), "{shown}");
    assert!(renewal["lastError"].is_null(), "{shown}");
    // A day after the new certificate's start, per acme_renew_after_days.
    assert!(renewal["nextAttempt"].is_string(), "{shown}");
    // Presented on the listeners, issued by Pebble (the handshake checks the chain).
    let tls = connector(pebble.issuing_root_pem());
    let smtps = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    assert_eq!(presented(smtps, Start::Implicit, &tls).await, new);
    // The record is on disk for the next start.
    let state: Value = serde_json::from_slice(
        &std::fs::read(d.join("data/tls/acme/renewal.json")).expect("renewal.json"),
    )
    .expect("JSON");
    assert_eq!(state["consecutiveFailures"], 0, "{state}");
    assert!(state["lastSuccess"].is_u64(), "{state}");
}

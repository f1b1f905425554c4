//! Proxy mode against real upstreams: Debian's Postfix (submission with STARTTLS, and SMTPS)
//! and Dovecot (POP3 with STLS, and POP3S) from `upstream-test-util`, with a test CA the
//! gateway is configured to trust; clients are Python's smtplib and poplib, swaks and
//! fetchmail. Every copy must decrypt to exactly what was sent or retrieved.

mod support;

use std::time::Duration;

use support::proxying::{gateway_for, login, provider, python};
use upstream_test_util::{as_submitted, Provider};

const MESSAGE: &[u8] = b"From: alice@provider.test\r\nTo: bob@example.org\r\nSubject: via the gateway\r\n\r\nHello through the proxy.\r\n.a line with a leading dot\r\n\r\nRegards\r\n";

/// The stored copy without our trace header block.
fn without_trace(copy: &[u8]) -> (String, Vec<u8>) {
    let mut rest = copy;
    let mut headers = String::new();
    while rest.starts_with(b"X-Gateway-") {
        let end = rest.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        headers.push_str(std::str::from_utf8(&rest[..end]).unwrap());
        rest = &rest[end..];
    }
    (headers, rest.to_vec())
}

async fn wait_sent(provider: &Provider, count: usize) -> Vec<Vec<u8>> {
    // Postfix delivers a few milliseconds after its 250; the fixture polls with a deadline.
    let result = std::thread::scope(|s| {
        s.spawn(|| provider.wait_sent(count, Duration::from_secs(30)))
            .join()
            .unwrap()
    });
    result.unwrap_or_else(|e| panic!("{e:#}\n{}", provider.log_tail(40)))
}

#[tokio::test(flavor = "multi_thread")]
async fn smtplib_through_the_proxy_to_postfix_submission_and_smtps() {
    let provider = provider().await;
    let gw = gateway_for(&provider).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (user, secret) = provider.user(0);
    let file = gw.scratch().join("message.eml");
    std::fs::write(&file, MESSAGE).unwrap();
    let file = file.to_str().unwrap();

    let submission = login(user, provider.submission_addr(), &id);
    let port = gw.submission_addr().port().to_string();
    let args = [
        "smtp",
        &port,
        "starttls",
        &submission,
        secret,
        user,
        "bob@example.org",
        file,
    ];
    assert_eq!(python(&args).await, "sent");
    let smtps = login(user, provider.smtps_addr(), &id);
    let port = gw.smtps_addr().port().to_string();
    let args = [
        "smtp",
        &port,
        "ssl",
        &smtps,
        secret,
        user,
        "carol@example.net",
        file,
    ];
    assert_eq!(python(&args).await, "sent");

    let sent = wait_sent(&provider, 2).await;
    for delivered in &sent {
        assert_eq!(
            as_submitted(delivered),
            MESSAGE,
            "Postfix got the message unchanged"
        );
    }
    let copies = gw.messages(&id, &password);
    assert_eq!(copies.len(), 2);
    for (copy, (server, to)) in copies.iter().zip([
        (provider.submission_addr(), "bob@example.org"),
        (provider.smtps_addr(), "carol@example.net"),
    ]) {
        let (headers, body) = without_trace(copy);
        assert_eq!(body, MESSAGE, "the copy decrypts byte-identical");
        assert!(
            headers.contains("X-Gateway-Direction: sent\r\n"),
            "{headers}"
        );
        assert!(headers.contains(&format!("X-Gateway-Remote-User: {user}\r\n")));
        assert!(
            headers.contains(&format!("X-Gateway-Server: {server}\r\n")),
            "{headers}"
        );
        assert!(headers.contains(&format!("X-Gateway-Envelope-To: <{to}>\r\n")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn swaks_through_the_proxy_and_postfix_refusals() {
    let provider = provider().await;
    let gw = gateway_for(&provider).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (user, secret) = provider.user(1);
    let swaks = |login: String, password: &str, to: &str| {
        let mut command = tokio::process::Command::new("swaks");
        command
            .args(["--server", "127.0.0.1", "--port"])
            .arg(gw.submission_addr().port().to_string())
            .args(["--tls", "--auth", "PLAIN", "--auth-user"])
            .arg(login)
            .args(["--auth-password", password, "--from", user, "--to", to])
            .args(["--header", "Subject: swaks via proxy"]);
        command
    };
    let submission = login(user, provider.submission_addr(), &id);
    let out = swaks(submission.clone(), secret, "dave@example.org")
        .output()
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "Postfix's reply relayed: {transcript}"
    );

    // Postfix refuses the recipient: its 550 reaches swaks, and nothing is archived.
    let out = swaks(submission.clone(), secret, provider.refused_recipient())
        .output()
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("550 5.1.1"), "{transcript}");
    // Wrong password: Postfix's 535 is relayed as ours.
    let out = swaks(submission, "wrong-password", "dave@example.org")
        .output()
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("535 5.7.8"), "{transcript}");

    wait_sent(&provider, 1).await;
    let copies = gw.messages(&id, &password);
    assert_eq!(
        copies.len(),
        1,
        "only the message Postfix accepted is archived"
    );
    assert!(without_trace(&copies[0])
        .1
        .windows(24)
        .any(|w| w == b"Subject: swaks via proxy"));
}

/// swaks pipelining MAIL, both RCPTs and DATA (RFC 2920): Postfix offers PIPELINING, so
/// the group goes to it in one write and its replies come back in order.
#[tokio::test(flavor = "multi_thread")]
async fn swaks_pipelining_through_the_proxy_to_postfix() {
    let provider = provider().await;
    let gw = gateway_for(&provider).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (user, secret) = provider.user(0);
    let swaks = |to: &str| {
        let mut command = tokio::process::Command::new("swaks");
        command
            .args(["--server", "127.0.0.1", "--port"])
            .arg(gw.submission_addr().port().to_string())
            .args(["--tls", "--pipeline", "--auth", "PLAIN", "--auth-user"])
            .arg(login(user, provider.submission_addr(), &id))
            .args(["--auth-password", secret, "--from", user, "--to", to])
            .args(["--header", "Subject: pipelined via proxy"]);
        command
    };
    let refused = provider.refused_recipient();
    let out = swaks(&format!("{refused},erin@example.org"))
        .output()
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    for relayed in ["550 5.1.1", "354 ", "250 2.0.0 Ok: queued as"] {
        assert!(transcript.contains(relayed), "{relayed}: {transcript}");
    }

    // Every recipient refused: Postfix refuses the pipelined DATA too, and that is relayed.
    let out = swaks(refused).output().await.unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("554 5.5.1"), "{transcript}");

    let sent = wait_sent(&provider, 1).await;
    assert!(sent[0]
        .windows(27)
        .any(|w| w == b"Subject: pipelined via prox"));
    let copies = gw.messages(&id, &password);
    assert_eq!(copies.len(), 1, "only the message Postfix took is archived");
    let (trace, _) = without_trace(&copies[0]);
    assert!(trace.contains("<erin@example.org>"), "{trace}");
    assert!(!trace.contains(refused), "{trace}");
}

#[tokio::test(flavor = "multi_thread")]
async fn poplib_through_the_proxy_to_dovecot_pop3_and_pop3s_one_copy_each() {
    let provider = provider().await;
    let gw = gateway_for(&provider).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (user, secret) = provider.user(0);
    let messages: Vec<Vec<u8>> = (1..=3)
        .map(|i| format!("Subject: inbox {i}\r\n\r\nbody {i}\r\n.dot\r\n").into_bytes())
        .collect();
    for message in &messages {
        provider.put_message(0, message).unwrap();
    }
    let out_dir = gw.scratch().join("fetched");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.to_str().unwrap();

    let pop3 = login(user, provider.pop3_addr(), &id);
    let port = gw.pop3_addr().port().to_string();
    assert_eq!(
        python(&["pop3", &port, "stls", &pop3, secret, out]).await,
        "3"
    );
    for (n, message) in messages.iter().enumerate() {
        assert_eq!(
            &std::fs::read(out_dir.join((n + 1).to_string())).unwrap(),
            message
        );
    }
    // Fetching again (messages left on the server) adds no copies. POP3S is another
    // server address, so its first retrieval makes its own copies, and its second none.
    assert_eq!(
        python(&["pop3", &port, "stls", &pop3, secret, out]).await,
        "3"
    );
    assert_eq!(gw.message_count(&id), 3, "one copy per upstream message");
    let pop3s = login(user, provider.pop3s_addr(), &id);
    let port = gw.pop3s_addr().port().to_string();
    assert_eq!(
        python(&["pop3", &port, "ssl", &pop3s, secret, out]).await,
        "3"
    );
    assert_eq!(
        python(&["pop3", &port, "ssl", &pop3s, secret, out]).await,
        "3"
    );

    let copies = gw.messages(&id, &password);
    assert_eq!(copies.len(), 6);
    for (i, copy) in copies.iter().enumerate() {
        let (headers, body) = without_trace(copy);
        assert_eq!(body, messages[i % 3], "copies decrypt byte-identical");
        assert!(headers.contains("X-Gateway-Direction: received\r\n"));
        assert!(headers.contains(&format!("X-Gateway-Remote-User: {user}\r\n")));
    }
    assert_eq!(
        provider.pop3_message_count(0),
        3,
        "nothing deleted upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fetchmail_through_the_proxy_deletes_upstream_and_archives() {
    use std::os::unix::fs::PermissionsExt;
    let provider = provider().await;
    let gw = gateway_for(&provider).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (user, secret) = provider.user(2);
    let messages: Vec<Vec<u8>> = (1..=2)
        .map(|i| format!("Subject: fetch {i}\r\n\r\nline {i}\r\n").into_bytes())
        .collect();
    for message in &messages {
        provider.put_message(2, message).unwrap();
    }
    let home = gw.scratch().join("fetchmail-home");
    std::fs::create_dir_all(&home).unwrap();
    let login = login(user, provider.pop3s_addr(), &id);
    let rc = home.join(".fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 port {} protocol POP3 user \"{login}\" password \"{secret}\" ssl\n",
            gw.pop3s_addr().port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out_dir = home.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mda = home.join("mda.sh");
    std::fs::write(&mda, "#!/bin/sh\ncat > \"$1/$(date +%s%N)\"\n").unwrap();
    std::fs::set_permissions(&mda, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = tokio::process::Command::new("fetchmail")
        .env("HOME", &home)
        .arg("-f")
        .arg(&rc)
        .arg("--pidfile")
        .arg(home.join("pid"))
        .args([
            "-v",
            "--nosyslog",
            "--all",
            "--nokeep",
            "--sslcertck",
            "--sslcertfile",
        ])
        .arg(gw.ca_file())
        .arg("--sslcommonname")
        .arg("localhost")
        .arg("--mda")
        .arg(format!("{} {}", mda.display(), out_dir.display()))
        .output()
        .await
        .expect("run fetchmail");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fetchmail failed: {log}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 2, "{log}");
    assert_eq!(
        provider.pop3_message_count(2),
        0,
        "fetchmail's DELE+QUIT reached Dovecot: {log}"
    );
    let copies = gw.messages(&id, &password);
    assert_eq!(copies.len(), 2);
    for (copy, message) in copies.iter().zip(&messages) {
        assert_eq!(&without_trace(copy).1, message);
    }
}

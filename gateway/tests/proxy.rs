//! Proxy mode end to end against scripted fake upstreams on loopback: the happy paths over
//! STARTTLS/STLS and implicit TLS, and every failure the issue names (upstream down,
//! without TLS, refusing AUTH, refusing a recipient, dropping in the middle of DATA or
//! RETR), each checked for the client's reply and for exactly the copies the mailbox holds.

mod support;

use gateway::crypto::MailboxPassword;
use gateway::mailbox::MailboxId;
use gateway::store::MailboxStatus;
use support::upstream::{FakeUpstream, Fault, Protocol};
use support::{Client, Pop3Client, TestGateway};

const USER: &str = "alice@provider.test";
const PASSWORD: &str = "upstream-Secret-1";
const MESSAGE: &[u8] = b"From: alice@provider.test\r\nTo: bob@example.org\r\nSubject: proxied\r\n\r\nHello\r\n.leading dot\r\n\r\nBye\r\n";

async fn gateway_trusting(upstream: &FakeUpstream) -> TestGateway {
    let ca = upstream.ca_file.clone();
    TestGateway::start_with(move |config| {
        config.proxy.ca_files = vec![ca];
        config.proxy.system_roots = false;
        // The fakes run on loopback, on ports of their own.
        config.proxy.allow_private_networks = true;
        config.proxy.allowed_ports.clear();
    })
    .await
}

fn login(upstream: &FakeUpstream, mailbox: &MailboxId) -> String {
    format!("{USER}%{}%{mailbox}", upstream.target())
}

fn auth_plain(login: &str, password: &str) -> String {
    let raw = format!("\0{login}\0{password}");
    format!(
        "AUTH PLAIN {}",
        data_encoding::BASE64.encode(raw.as_bytes())
    )
}

/// A proxy client on the submission port, through STARTTLS, EHLO and AUTH; returns the
/// reply to AUTH.
async fn smtp_login(gw: &TestGateway, login: &str, implicit: bool) -> (Client, support::Reply) {
    let mut client = if implicit {
        let (client, greeting) = Client::connect_tls(gw.smtps_addr(), &gw.tls_connector()).await;
        greeting.expect(220, "");
        client
    } else {
        let (mut client, greeting) = Client::connect(gw.submission_addr()).await;
        greeting.expect(220, "");
        let ehlo = client.ehlo().await;
        assert!(!ehlo.text().contains("AUTH"), "AUTH offered before TLS");
        client.starttls(&gw.tls_connector()).await;
        client
    };
    let ehlo = client.ehlo().await;
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    let reply = client.command(&auth_plain(login, PASSWORD)).await;
    (client, reply)
}

/// A stored copy: the trace header block and the message after it.
fn split_trace(copy: &[u8]) -> (String, Vec<u8>) {
    let mut headers = String::new();
    let mut rest = copy;
    while rest.starts_with(b"X-Gateway-") {
        let end = rest.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        headers.push_str(std::str::from_utf8(&rest[..end]).unwrap());
        rest = &rest[end..];
    }
    (headers, rest.to_vec())
}

fn copies(gw: &TestGateway, id: &MailboxId, password: &MailboxPassword) -> Vec<(String, Vec<u8>)> {
    gw.messages(id, password)
        .iter()
        .map(|m| split_trace(m))
        .collect()
}

#[tokio::test]
async fn smtp_proxy_starttls_relays_and_stores_one_copy() {
    let upstream = FakeUpstream::start(Protocol::Smtp, false, Fault::None, vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (mut client, reply) = smtp_login(&gw, &login(&upstream, &id), false).await;
    reply.expect(235, "2.7.0");
    let reply = client
        .send_message(USER, &["bob@example.org", "carol@example.net"], MESSAGE)
        .await;
    reply.expect(250, "2.0.0");
    assert!(
        reply.text().contains("queued as FAKE1"),
        "the upstream's reply is relayed: {reply:?}"
    );
    client.command("QUIT").await.expect(221, "");

    let seen = upstream.seen.lock().unwrap();
    assert_eq!(
        seen.messages,
        vec![MESSAGE.to_vec()],
        "upstream got the message unchanged"
    );
    for line in &seen.plaintext_lines {
        assert!(
            !line.to_ascii_uppercase().starts_with("AUTH"),
            "credentials in plaintext: {line}"
        );
    }
    drop(seen);
    let stored = copies(&gw, &id, &password);
    assert_eq!(stored.len(), 1);
    let (headers, body) = &stored[0];
    assert_eq!(body, MESSAGE, "the copy decrypts to exactly what was sent");
    assert_eq!(
        headers,
        &format!(
            "X-Gateway-Direction: sent\r\nX-Gateway-Remote-User: {USER}\r\nX-Gateway-Server: {}\r\n\
             X-Gateway-Envelope-From: <{USER}>\r\nX-Gateway-Envelope-To: <bob@example.org>\r\n\
             X-Gateway-Envelope-To: <carol@example.net>\r\n",
            upstream.target()
        )
    );
}

#[tokio::test]
async fn smtp_proxy_implicit_tls_uses_implicit_tls_upstream() {
    let upstream = FakeUpstream::start(Protocol::Smtp, true, Fault::None, vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (mut client, reply) = smtp_login(&gw, &login(&upstream, &id), true).await;
    reply.expect(235, "2.7.0");
    client
        .send_message(USER, &["bob@example.org"], MESSAGE)
        .await
        .expect(250, "2.0.0");
    assert_eq!(upstream.seen.lock().unwrap().messages.len(), 1);
    assert!(upstream.seen.lock().unwrap().plaintext_lines.is_empty());
    assert_eq!(copies(&gw, &id, &password).len(), 1);
}

#[tokio::test]
async fn smtp_proxy_login_failures() {
    // Upstream down: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    let upstream = FakeUpstream::start(Protocol::Smtp, false, Fault::None, vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (_, reply) = smtp_login(&gw, &format!("{USER}%127.0.0.1:{dead_port}%{id}"), false).await;
    reply.expect(454, "4.7.0");
    // Generic: the client learns nothing of what answers where (the log has the detail).
    assert_eq!(
        reply.text(),
        "4.7.0 cannot use the upstream server, try again later"
    );

    // Unknown mailbox: permanent; suspended: temporary.
    let unknown = MailboxId::generate();
    let (_, reply) = smtp_login(&gw, &login(&upstream, &unknown), false).await;
    reply.expect(535, "5.7.8");
    assert!(reply.text().contains("no such mailbox"), "{reply:?}");
    let (suspended, _, _) = gw.create_mailbox("suspended").await;
    gw.gateway()
        .set_status(&suspended, MailboxStatus::Suspended)
        .await
        .unwrap();
    let (_, reply) = smtp_login(&gw, &login(&upstream, &suspended), false).await;
    reply.expect(454, "4.7.0");

    // Not a proxy login at all.
    let (_, reply) = smtp_login(&gw, "just-a-user", false).await;
    reply.expect(535, "5.7.8");
    assert_eq!(gw.message_count(&id), 0);
}

#[tokio::test]
async fn smtp_proxy_refuses_an_upstream_without_starttls() {
    let upstream = FakeUpstream::start(Protocol::Smtp, false, Fault::NoTls, vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (_, reply) = smtp_login(&gw, &login(&upstream, &id), false).await;
    reply.expect(454, "4.7.0");
    assert!(
        reply.text().contains("does not offer STARTTLS"),
        "{reply:?}"
    );
    let seen = upstream.seen.lock().unwrap();
    assert!(
        seen.plaintext_lines
            .iter()
            .all(|l| !l.to_ascii_uppercase().starts_with("AUTH")),
        "credentials must never be sent without TLS: {:?}",
        seen.plaintext_lines
    );
}

#[tokio::test]
async fn smtp_proxy_refuses_an_upstream_certificate_it_cannot_verify() {
    let upstream = FakeUpstream::start(Protocol::Smtp, true, Fault::None, vec![]).await;
    // The gateway trusts some other CA, not the fake's certificate.
    let other = FakeUpstream::start(Protocol::Smtp, true, Fault::None, vec![]).await;
    let gw = gateway_trusting(&other).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (_, reply) = smtp_login(&gw, &login(&upstream, &id), true).await;
    reply.expect(454, "4.7.0");
    assert_eq!(
        reply.text(),
        "4.7.0 cannot use the upstream server, try again later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_proxy_logins_are_throttled_per_account() {
    let upstream = FakeUpstream::start(Protocol::Smtp, true, Fault::RejectAuth, vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    // Six clients spray one account at once (before the fix, all six went upstream).
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (mut client, greeting) =
            Client::connect_tls(gw.smtps_addr(), &gw.tls_connector()).await;
        greeting.expect(220, "");
        client.ehlo().await;
        clients.push(client);
    }
    let auth = auth_plain(&login(&upstream, &id), PASSWORD);
    for client in &mut clients {
        client.send(format!("{auth}\r\n")).await;
    }
    let mut throttled = 0;
    for client in &mut clients {
        let reply = client.reply().await;
        if reply.code == 454 {
            assert!(reply.text().contains("too many failed logins"), "{reply:?}");
            throttled += 1;
        } else {
            reply.expect(535, "5.7.8");
        }
    }
    assert!(throttled >= 2, "only {throttled} of 6 were throttled");
    // Another account is not affected.
    let other = format!("someone-else%{}%{id}", upstream.target());
    let (_, reply) = smtp_login(&gw, &other, true).await;
    reply.expect(535, "5.7.8");
}

#[tokio::test]
async fn smtp_proxy_relays_an_auth_refusal() {
    let upstream = FakeUpstream::start(Protocol::Smtp, false, Fault::RejectAuth, vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (_, reply) = smtp_login(&gw, &login(&upstream, &id), false).await;
    reply.expect(535, "5.7.8");
    assert!(reply.text().contains("authentication failed"), "{reply:?}");
}

#[tokio::test]
async fn smtp_proxy_refused_recipient_is_relayed_and_left_out_of_the_copy() {
    let upstream = FakeUpstream::start(
        Protocol::Smtp,
        false,
        Fault::RejectRecipient("nobody@example.org".into()),
        vec![],
    )
    .await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (mut client, reply) = smtp_login(&gw, &login(&upstream, &id), false).await;
    reply.expect(235, "");
    client
        .command(&format!("MAIL FROM:<{USER}>"))
        .await
        .expect(250, "");
    client
        .command("RCPT TO:<nobody@example.org>")
        .await
        .expect(550, "5.1.1");
    client
        .command("RCPT TO:<bob@example.org>")
        .await
        .expect(250, "");
    client.command("DATA").await.expect(354, "");
    client.send(support::dot_stuff(MESSAGE)).await;
    client.reply().await.expect(250, "2.0.0");
    let stored = copies(&gw, &id, &password);
    assert_eq!(stored.len(), 1);
    assert!(stored[0]
        .0
        .contains("X-Gateway-Envelope-To: <bob@example.org>"));
    assert!(!stored[0].0.contains("nobody"));
}

/// A client that pipelines MAIL, RCPT and DATA (RFC 2920) to an upstream that offers
/// PIPELINING: the three go upstream in one write, so the client waits for one round trip
/// to the upstream, not three. This upstream answers only once DATA has come: relayed one
/// at a time, MAIL's reply would never come.
#[tokio::test]
async fn smtp_proxy_sends_a_pipelined_envelope_upstream_in_one_go() {
    let upstream =
        FakeUpstream::start(Protocol::Smtp, true, Fault::AnswersOnlyWholeGroups, vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (mut client, reply) = smtp_login(&gw, &login(&upstream, &id), true).await;
    reply.expect(235, "");
    client
        .send(format!(
            "MAIL FROM:<{USER}>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n"
        ))
        .await;
    for code in [250, 250, 250, 354] {
        client.reply().await.expect(code, "");
    }
    client.send(support::dot_stuff(MESSAGE)).await;
    client.reply().await.expect(250, "2.0.0");
    let stored = copies(&gw, &id, &password);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, MESSAGE);
    assert!(
        stored[0].0.contains(
            "X-Gateway-Envelope-To: <bob@example.org>\r\nX-Gateway-Envelope-To: <carol@example.org>\r\n"
        ),
        "{}",
        stored[0].0
    );
    assert_eq!(upstream.seen.lock().unwrap().messages, [MESSAGE.to_vec()]);
}

#[tokio::test]
async fn smtp_proxy_upstream_dropping_in_data_leaves_no_copy() {
    let upstream = FakeUpstream::start(Protocol::Smtp, false, Fault::DropInBody(2), vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (mut client, reply) = smtp_login(&gw, &login(&upstream, &id), false).await;
    reply.expect(235, "");
    let big: Vec<u8> = MESSAGE
        .iter()
        .copied()
        .chain(b"line of filler text\r\n".repeat(20_000))
        .collect();
    client
        .command(&format!("MAIL FROM:<{USER}>"))
        .await
        .expect(250, "");
    client
        .command("RCPT TO:<bob@example.org>")
        .await
        .expect(250, "");
    client.command("DATA").await.expect(354, "");
    client.send(support::dot_stuff(&big)).await;
    let replies = client.replies_until_close().await;
    assert!(
        replies.first().is_some_and(|r| r.code == 451),
        "a temporary failure after the data: {replies:?}"
    );
    assert!(replies.iter().all(|r| r.code != 250));
    assert_eq!(
        gw.message_count(&id),
        0,
        "nothing was sent, nothing is archived as sent"
    );
}

#[tokio::test]
async fn smtp_proxy_message_refused_after_the_dot_is_not_archived() {
    let upstream = FakeUpstream::start(Protocol::Smtp, false, Fault::RejectMessage, vec![]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (mut client, reply) = smtp_login(&gw, &login(&upstream, &id), false).await;
    reply.expect(235, "");
    let reply = client
        .send_message(USER, &["bob@example.org"], MESSAGE)
        .await;
    reply.expect(554, "5.7.1");
    assert_eq!(gw.message_count(&id), 0);
    // The session goes on.
    client.command("NOOP").await.expect(250, "");
}

// ----- POP3 -----

fn maildrop() -> Vec<Vec<u8>> {
    vec![
        b"Subject: one\r\n\r\nfirst message\r\n.dot line\r\n".to_vec(),
        b"Subject: two\r\n\r\nsecond message\r\n".to_vec(),
    ]
}

async fn pop3_login(gw: &TestGateway, login: &str, implicit: bool) -> (Pop3Client, String) {
    let mut client = if implicit {
        Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector())
            .await
            .0
    } else {
        let (mut client, _) = Pop3Client::connect(gw.pop3_addr()).await;
        client.stls(&gw.tls_connector()).await;
        client
    };
    let reply = client.login(login, PASSWORD).await;
    (client, reply)
}

#[tokio::test]
async fn pop3_proxy_stls_relays_and_keeps_one_copy_per_message() {
    let upstream = FakeUpstream::start(Protocol::Pop3, false, Fault::None, maildrop()).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (mut client, reply) = pop3_login(&gw, &login(&upstream, &id), false).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(client.retr(1).await, maildrop()[0]);
    assert_eq!(
        client.retr(1).await,
        maildrop()[0],
        "a second RETR relays again"
    );
    let list = client.ok_multiline("UIDL").await;
    assert_eq!(list, b"1 uid-1\r\n2 uid-2\r\n");
    assert_eq!(client.retr(2).await, maildrop()[1]);
    client.ok("DELE 1").await;
    client.ok("QUIT").await;
    assert_eq!(upstream.seen.lock().unwrap().deleted, vec![1]);

    // The client left message 2 on the server and fetches it again: no second copy.
    let (mut client, reply) = pop3_login(&gw, &login(&upstream, &id), false).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(client.retr(2).await, maildrop()[1]);
    // TOP is not a full retrieval: relayed, not stored.
    client.ok_multiline("TOP 1 0").await;
    client.ok("QUIT").await;

    let stored = copies(&gw, &id, &password);
    assert_eq!(stored.len(), 2, "one copy per upstream message");
    for ((headers, body), original) in stored.iter().zip(maildrop()) {
        assert_eq!(body, &original, "copies decrypt byte-identical");
        assert!(headers.starts_with(&format!(
            "X-Gateway-Direction: received\r\nX-Gateway-Remote-User: {USER}\r\nX-Gateway-Server: {}\r\n",
            upstream.target()
        )), "{headers}");
    }
    assert!(upstream
        .seen
        .lock()
        .unwrap()
        .plaintext_lines
        .iter()
        .all(|l| !l.starts_with("PASS")));
}

#[tokio::test]
async fn pop3_proxy_implicit_tls_with_sasl_plain() {
    let upstream = FakeUpstream::start(Protocol::Pop3, true, Fault::None, maildrop()).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (mut client, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    let sasl =
        data_encoding::BASE64.encode(format!("\0{}\0{PASSWORD}", login(&upstream, &id)).as_bytes());
    let reply = client.command(&format!("AUTH PLAIN {sasl}")).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    assert_eq!(client.retr(1).await, maildrop()[0]);
    // A client that vanishes without QUIT deletes nothing upstream.
    client.ok("DELE 1").await;
    drop(client);
    assert_eq!(copies(&gw, &id, &password).len(), 1);
}

#[tokio::test]
async fn pop3_proxy_failures() {
    // Upstream without STLS.
    let upstream = FakeUpstream::start(Protocol::Pop3, false, Fault::NoTls, maildrop()).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (_, reply) = pop3_login(&gw, &login(&upstream, &id), false).await;
    assert!(
        reply.starts_with("-ERR [SYS/TEMP]") && reply.contains("STLS"),
        "{reply}"
    );
    assert!(upstream
        .seen
        .lock()
        .unwrap()
        .plaintext_lines
        .iter()
        .all(|l| !l.starts_with("PASS") && !l.starts_with("USER")));

    // Upstream refuses the credentials.
    let upstream = FakeUpstream::start(Protocol::Pop3, false, Fault::RejectAuth, maildrop()).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (_, reply) = pop3_login(&gw, &login(&upstream, &id), false).await;
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");

    // Unknown mailbox.
    let (_, reply) = pop3_login(&gw, &login(&upstream, &MailboxId::generate()), false).await;
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
}

/// `[IN-USE]` means the password was right (RFC 2449 §8.1.2): relayed as such, and never
/// counted as a failed guess, however often the client retries.
#[tokio::test]
async fn pop3_proxy_relays_a_locked_upstream_maildrop_without_throttling() {
    let upstream =
        FakeUpstream::start(Protocol::Pop3, false, Fault::MaildropInUse, maildrop()).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    // More attempts than the throttle lets a guessing client make (see
    // failed_proxy_logins_are_throttled_per_account).
    for attempt in 0..8 {
        let (_, reply) = pop3_login(&gw, &login(&upstream, &id), false).await;
        assert!(
            reply.starts_with("-ERR [IN-USE]") && reply.contains("maildrop locked"),
            "attempt {attempt}: {reply}"
        );
    }
    assert_eq!(upstream.seen.lock().unwrap().connections, 8);
}

#[tokio::test]
async fn pop3_proxy_upstream_dropping_in_retr_stores_nothing() {
    let upstream =
        FakeUpstream::start(Protocol::Pop3, false, Fault::DropInBody(3), maildrop()).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (mut client, reply) = pop3_login(&gw, &login(&upstream, &id), false).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    client.send("RETR 1\r\n").await;
    let rest = client.until_closed().await;
    assert!(
        !rest.ends_with(b"\r\n.\r\n"),
        "a broken message must not look complete: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(gw.message_count(&id), 0);
}

#[tokio::test]
async fn proxy_targets_can_be_restricted() {
    let upstream = FakeUpstream::start(Protocol::Smtp, false, Fault::None, vec![]).await;
    let ca = upstream.ca_file.clone();
    let gw = TestGateway::start_with(move |config| {
        config.proxy.ca_files = vec![ca];
        config.proxy.allowed_servers = vec!["mail.provider.example".into()];
    })
    .await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (_, reply) = smtp_login(&gw, &login(&upstream, &id), false).await;
    reply.expect(454, "4.7.0");
    assert!(reply.text().contains("not allowed"), "{reply:?}");
    assert!(
        upstream.seen.lock().unwrap().plaintext_lines.is_empty(),
        "no connection was made"
    );
}

#[tokio::test]
async fn proxy_refuses_a_loopback_target_by_default() {
    // The only target this test names is loopback, and the gateway must not even connect.
    for protocol in [Protocol::Smtp, Protocol::Pop3] {
        let upstream = FakeUpstream::start(protocol, false, Fault::None, maildrop()).await;
        let ca = upstream.ca_file.clone();
        let port = upstream.addr.port();
        // The default policy, with the fake's port allowed so only the address is at issue.
        let gw = TestGateway::start_with(move |config| {
            config.proxy.ca_files = vec![ca];
            config.proxy.allowed_ports.push(port);
        })
        .await;
        let (id, _, _) = gw.create_mailbox("office").await;
        for server in [
            upstream.target(),
            format!("127.1:{port}"),
            format!("2130706433:{port}"),
            format!("[::ffff:127.0.0.1]:{port}"),
        ] {
            let login = format!("{USER}%{server}%{id}");
            let reply = match protocol {
                Protocol::Smtp => {
                    let (_, reply) = smtp_login(&gw, &login, false).await;
                    reply.expect(454, "4.7.0");
                    reply.text()
                }
                Protocol::Pop3 => {
                    let (_, reply) = pop3_login(&gw, &login, false).await;
                    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
                    reply
                }
            };
            assert!(
                reply.contains("this upstream server is not allowed by the gateway"),
                "{server}: {reply}"
            );
            assert!(
                !reply.contains("127.0.0.1") && !reply.contains("refused"),
                "no detail for the client: {reply}"
            );
        }
        assert_eq!(upstream.seen.lock().unwrap().connections, 0);
    }
}

#[tokio::test]
async fn proxy_refuses_other_than_mail_ports_by_default() {
    let upstream = FakeUpstream::start(Protocol::Smtp, false, Fault::None, vec![]).await;
    let ca = upstream.ca_file.clone();
    let gw = TestGateway::start_with(move |config| {
        config.proxy.ca_files = vec![ca];
        config.proxy.allow_private_networks = true;
    })
    .await;
    let (id, _, _) = gw.create_mailbox("office").await;
    let (_, reply) = smtp_login(&gw, &login(&upstream, &id), false).await;
    reply.expect(454, "4.7.0");
    assert!(reply.text().contains("not allowed"), "{reply:?}");
    assert_eq!(upstream.seen.lock().unwrap().connections, 0);
}

#[tokio::test]
async fn proxy_mode_can_be_turned_off() {
    let gw = TestGateway::start_with(|config| config.proxy.enabled = false).await;
    let (mut client, greeting) = Client::connect(gw.submission_addr()).await;
    greeting.expect(220, "");
    client.ehlo().await;
    client.starttls(&gw.tls_connector()).await;
    let ehlo = client.ehlo().await;
    assert!(!ehlo.text().contains("AUTH"), "{ehlo:?}");
    client
        .command(&auth_plain(
            "u%h%mbx-0123456789abcdef0123456789abcdef",
            "pw",
        ))
        .await
        .expect(502, "5.5.1");
}

#[tokio::test]
async fn pop3_proxy_keeps_a_copy_of_what_top_and_dele_would_pass_unarchived() {
    let upstream = FakeUpstream::start(Protocol::Pop3, false, Fault::None, maildrop()).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, _, password) = gw.create_mailbox("office").await;
    let (mut client, reply) = pop3_login(&gw, &login(&upstream, &id), false).await;
    assert!(reply.starts_with("+OK"), "{reply}");

    // A TOP with a line count past the message's end hands over the whole message.
    assert_eq!(client.ok_multiline("TOP 1 1000000").await, maildrop()[0]);
    // A partial TOP is not a copy.
    assert_eq!(
        client.ok_multiline("TOP 2 0").await,
        b"Subject: two\r\n\r\n"
    );
    assert_eq!(copies(&gw, &id, &password).len(), 1);
    // Message 2 was never retrieved: it is fetched and stored before its DELE goes up.
    client.ok("DELE 2").await;
    assert_eq!(copies(&gw, &id, &password).len(), 2);
    // Message 1 is archived (by the TOP): its DELE goes straight up.
    client.ok("DELE 1").await;
    client.ok("QUIT").await;

    let seen = upstream.seen.lock().unwrap();
    assert_eq!(seen.deleted, vec![2, 1]);
    assert_eq!(
        seen.message_commands,
        ["TOP 1 1000001", "TOP 2 1", "RETR 2", "DELE 2", "DELE 1"]
    );
    drop(seen);
    let stored = copies(&gw, &id, &password);
    let bodies: Vec<&Vec<u8>> = stored.iter().map(|(_, body)| body).collect();
    assert_eq!(bodies, [&maildrop()[0], &maildrop()[1]]);
}

#[tokio::test]
async fn stored_copies_rename_incoming_gateway_trace_fields() {
    let forged: &[u8] = b"From: mallory@evil.example\r\nX-Gateway-Remote-User: ceo@example.com\r\n\
        x-gateway-direction:\r\n sent\r\nSubject: forged\r\n\r\nX-Gateway-Server: body text\r\n";
    let renamed: &[u8] = b"From: mallory@evil.example\r\nX-Original-X-Gateway-Remote-User: ceo@example.com\r\n\
        X-Original-x-gateway-direction:\r\n sent\r\nSubject: forged\r\n\r\nX-Gateway-Server: body text\r\n";

    // Retrieved through the POP3 proxy.
    let upstream =
        FakeUpstream::start(Protocol::Pop3, false, Fault::None, vec![forged.to_vec()]).await;
    let gw = gateway_trusting(&upstream).await;
    let (id, address, password) = gw.create_mailbox("office").await;
    let (mut client, _) = pop3_login(&gw, &login(&upstream, &id), false).await;
    assert_eq!(
        client.retr(1).await,
        forged,
        "the client gets the message unchanged"
    );
    client.ok("QUIT").await;
    // Sent through the SMTP proxy.
    let smtp = FakeUpstream::start(Protocol::Smtp, false, Fault::None, vec![]).await;
    let gw_smtp = gateway_trusting(&smtp).await;
    let (smtp_id, _, smtp_password) = gw_smtp.create_mailbox("office").await;
    let (mut client, reply) = smtp_login(&gw_smtp, &login(&smtp, &smtp_id), false).await;
    reply.expect(235, "");
    client
        .send_message(USER, &["bob@example.org"], forged)
        .await
        .expect(250, "");
    assert_eq!(smtp.seen.lock().unwrap().messages, vec![forged.to_vec()]);

    for (headers, body) in
        copies(&gw, &id, &password)
            .into_iter()
            .chain(copies(&gw_smtp, &smtp_id, &smtp_password))
    {
        assert!(headers.contains(&format!("X-Gateway-Remote-User: {USER}\r\n")));
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(renamed)
        );
    }

    // Delivered as journal mail.
    gw.deliver(&address, forged).await;
    let journal = gw.messages(&id, &password).pop().expect("journal copy");
    let (_, journal) = support::split_received(&journal);
    assert_eq!(
        String::from_utf8_lossy(journal),
        String::from_utf8_lossy(renamed)
    );
}

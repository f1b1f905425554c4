//! The SMTP suite: RFC 5321 and the extensions the journal target announces (SIZE,
//! PIPELINING, STARTTLS, ENHANCEDSTATUSCODES, 8BITMIME, SMTPUTF8, CHUNKING).

use anyhow::{bail, ensure, Context, Result};

use crate::client::{dot_stuff, Client, Reply};
use crate::matrix::{Level, Suite};
use crate::target::{Mailbox, Service, Target, EMAIL_DOMAIN};
use crate::Check;

crate::requirement_fn!(Suite::Smtp);

pub fn checks() -> Vec<Check> {
    use Level::*;
    crate::checks![
        r("smtp.greeting", "5321", "3.1, 4.2", Must, "a 220 greeting that names the server, in reply syntax, on every SMTP listener") => greeting,
        r("smtp.ehlo", "5321", "4.1.1.1", Must, "EHLO is answered 250 with the server's name and one extension keyword per line") => ehlo,
        r("smtp.helo", "5321", "4.1.1.1", Must, "HELO is answered 250 and a transaction can follow it") => helo,
        r("smtp.minimum-commands", "5321", "4.5.1", Must, "the minimum command set is implemented: NOOP and RSET get 250, VRFY is not 500/502") => minimum_commands,
        r("smtp.postmaster", "5321", "4.5.1", Must, "RCPT TO:<Postmaster> and <postmaster@our domain> are accepted, in any letter case, once [smtp] postmaster_mailbox names a mailbox") => postmaster,
        r("smtp.quit", "5321", "4.1.1.10", Must, "QUIT is answered 221 and the server closes the connection") => quit,
        r("smtp.rset", "5321", "4.1.1.5", Must, "RSET aborts the transaction: a RCPT after it is out of sequence") => rset_clears,
        r("smtp.ehlo-resets", "5321", "4.1.4", Must, "EHLO in a transaction resets it as RSET does") => ehlo_resets,
        r("smtp.sequence", "5321", "4.1.4, 3.3", Must, "commands out of order are refused with 503 (RCPT before MAIL, DATA before RCPT, MAIL inside a transaction)") => sequence,
        r("smtp.unknown-command", "5321", "4.2, 4.2.4", Must, "an unrecognised command gets exactly one 500 reply and the session goes on") => unknown_command,
        r("smtp.case-insensitive", "5321", "2.4", Must, "command verbs and the FROM:/TO: keywords are case-insensitive") => case_insensitive,
        r("smtp.null-sender", "5321", "4.5.5", Must, "the null reverse-path MAIL FROM:<> is accepted (bounces)") => null_sender,
        r("smtp.transparency", "5321", "4.5.2", Must, "a leading dot added by the sender is removed; the message is stored as sent") => transparency,
        r("smtp.text-line-1000", "5321", "4.5.3.1.6", Must, "a text line of 1000 octets including CRLF is accepted intact") => text_line_1000,
        r("smtp.command-line-512", "5321", "4.5.3.1.4", Must, "a command line of 512 octets including CRLF is accepted") => command_line_512,
        r("smtp.recipients-100", "5321", "4.5.3.1.8", Must, "a transaction with 100 recipients is accepted") => recipients_100,
        r("smtp.too-many-recipients", "5321", "4.5.3.1.10", Should, "a RCPT beyond the configured recipient limit gets the temporary 452, not 552, and the transaction goes on") => too_many_recipients,
        r("smtp.quoted-local-part", "5321", "4.1.2", Must, "a quoted-string local part in MAIL FROM is accepted") => quoted_local_part,
        r("smtp.source-route", "5321", "4.1.1.3, C", Must, "a forward-path with a source route is accepted and the route ignored") => source_route,
        r("smtp.received", "5321", "4.4", Must, "the stored message starts with a Received: trace field naming this server") => received_trace,
        r("smtp.server-timeout", "5321", "4.5.3.2.7", Should, "the server waits at least 5 minutes for the next command (checked from the gateway's constant)") => server_timeout,
        r("smtp.no-relay", "5321", "3.6.1, 7.1", May, "a recipient in a foreign domain is refused (no open relay; servers may decline to relay)") => no_relay,
        r("size.keyword", "1870", "3, 4", Must, "EHLO announces SIZE with the configured maximum message size") => size_keyword,
        r("size.declared", "1870", "6.1", Must, "MAIL FROM with SIZE= over the maximum is refused with 552") => size_declared,
        r("size.exceeded", "1870", "4, 6.3", Must, "a message over the maximum is refused with 552 after DATA and nothing is stored") => size_exceeded,
        r("pipelining.keyword", "2920", "3", Must, "EHLO announces PIPELINING") => pipelining_keyword,
        r("pipelining.order", "2920", "3.1", Must, "a pipelined group (MAIL, RCPTs, DATA) in one write gets its replies in order; the message is stored") => pipelining_order,
        r("starttls.keyword", "3207", "4", Must, "EHLO announces STARTTLS on 25 and 587 before TLS") => starttls_keyword,
        r("starttls.handshake", "3207", "4", Must, "STARTTLS is answered 220 and the TLS handshake follows") => starttls_handshake,
        r("starttls.not-after-tls", "3207", "4.2", Must, "STARTTLS is not announced after TLS and a second STARTTLS is refused") => starttls_not_after_tls,
        r("starttls.syntax", "3207", "4", Should, "STARTTLS with a parameter is refused with 501") => starttls_syntax,
        r("starttls.reset", "3207", "4.2", Must, "after TLS the server has forgotten the session: a transaction begun before is gone") => starttls_reset,
        r("starttls.not-required-25", "3207", "4", Must, "the public MX port delivers without TLS (TLS is not required on port 25 by default)") => port25_plain,
        r("enhanced.keyword", "2034", "3", Must, "EHLO announces ENHANCEDSTATUSCODES") => enhanced_keyword,
        r("enhanced.every-reply", "2034", "4", Must, "every 2xx/4xx/5xx reply except greeting and EHLO/HELO carries an enhanced code whose class matches") => enhanced_every_reply,
        r("enhanced.codes", "3463", "3.2, 3.4, 3.6", Should, "codes are the defined ones: unknown mailbox 5.1.1, syntax 5.5.2/5.5.4, too big 5.3.4, bad sequence 5.5.1") => enhanced_codes,
        r("8bitmime.keyword", "6152", "2", Must, "EHLO announces 8BITMIME") => eightbit_keyword,
        r("8bitmime.body", "6152", "3", Must, "BODY=8BITMIME is accepted and 8-bit octets are stored unchanged") => eightbit_body,
        r("8bitmime.7bit", "6152", "3", Must, "BODY=7BIT is accepted") => body_7bit,
        r("8bitmime.unknown-body", "5321", "4.1.1.11", Should, "an unknown BODY value is refused with 501 or 555") => body_unknown,
        r("smtputf8.keyword", "6531", "3.1", Must, "EHLO announces SMTPUTF8") => utf8_keyword,
        r("smtputf8.sender", "6531", "3.2, 3.3", Must, "MAIL FROM:<UTF-8 address> SMTPUTF8 is accepted and the message delivered") => utf8_sender,
        r("smtputf8.required", "6531", "3.4, 3.5", Must, "a UTF-8 address without the SMTPUTF8 parameter is refused") => utf8_required,
        r("chunking.keyword", "3030", "2", Must, "EHLO announces CHUNKING") => chunking_keyword,
        r("chunking.bdat-last", "3030", "2", Must, "BDAT n LAST delivers exactly the n octets sent") => bdat_last,
        r("chunking.bdat-chunks", "3030", "2", Must, "several BDAT chunks and a final BDAT 0 LAST deliver their concatenation") => bdat_chunks,
        r("chunking.errors-consume", "3030", "2", Must, "a refused BDAT still consumes its octets; the next command is read as a command") => bdat_errors_consume,
        r("chunking.no-data-mix", "3030", "2", Must, "DATA after BDAT in the same transaction is refused with 503") => bdat_then_data,
        r("auth.not-before-tls", "4954", "4", Must, "AUTH is not announced before TLS, and AUTH before TLS is refused with 538 5.7.11") => auth_not_before_tls,
        r("auth.announced-after-tls", "4954", "3", Must, "after STARTTLS and on port 465, EHLO announces AUTH PLAIN LOGIN") => auth_announced,
        r("auth.unknown-mechanism", "4954", "4", Must, "an unsupported mechanism is refused with 504 5.5.4") => auth_unknown_mechanism,
        r("auth.cancel", "4954", "4", Must, "a `*` answer to the 334 challenge cancels with 501") => auth_cancel,
        r("auth.bad-base64", "4954", "4", Must, "a response that is not base64 is refused with 501 5.5.2") => auth_bad_base64,
        r("auth.bad-credentials", "4954", "6", Must, "credentials that cannot log in are refused with 535 5.7.8 and the session goes on") => auth_bad_credentials,
        r("auth.not-in-transaction", "4954", "4", Must, "AUTH inside a mail transaction is refused with 503") => auth_in_transaction,
    ]
}

/// A client with its greeting read and EHLO sent, on `service` (TLS already on for 465).
pub async fn session(t: &Target, service: Service) -> Result<(Client, Reply)> {
    let mut c = if service.implicit_tls() {
        Client::connect_tls(t.addr(service), t.connector()).await?
    } else {
        Client::connect(t.addr(service)).await?
    };
    c.reply().await?.expect(220).context("greeting")?;
    let ehlo = c.command("EHLO client.example.org").await?;
    ehlo.expect(250).context("EHLO")?;
    Ok((c, ehlo))
}

/// A session on port 25 with STARTTLS done and EHLO sent again.
pub async fn tls_session(t: &Target) -> Result<(Client, Reply)> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("STARTTLS").await?.expect(220)?;
    c.upgrade(t.connector()).await?;
    let ehlo = c.command("EHLO client.example.org").await?;
    ehlo.expect(250)?;
    Ok((c, ehlo))
}

/// MAIL, RCPT, DATA and the message; the reply to the end of data.
pub async fn send_message(c: &mut Client, from: &str, to: &str, message: &[u8]) -> Result<Reply> {
    c.command(&format!("MAIL FROM:<{from}>"))
        .await?
        .expect(250)?;
    c.command(&format!("RCPT TO:<{to}>")).await?.expect(250)?;
    c.command("DATA").await?.expect(354)?;
    c.send(dot_stuff(message)).await?;
    Ok(c.reply().await?)
}

/// After a refusal that may end the session (input past a limit): either a `421` follows
/// and the server closes, or the session goes on (NOOP gets 250).
pub async fn usable_or_closed(c: &mut Client) -> Result<()> {
    if c.anything_within(std::time::Duration::from_secs(2)).await? {
        let reply = c.reply().await?;
        ensure!(reply.code == 421, "after the refusal: {reply}");
        ensure!(
            c.closed_within(std::time::Duration::from_secs(10)).await?,
            "421 but not closed"
        );
        return Ok(());
    }
    c.command("NOOP").await?.expect(250)?;
    Ok(())
}

/// RCPT TO the mailbox: its reply.
pub async fn rcpt(c: &mut Client, mb: &Mailbox) -> Result<Reply> {
    Ok(c.command(&format!("RCPT TO:<{}>", mb.address)).await?)
}

/// A small message.
pub fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: archive@{EMAIL_DOMAIN}\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

/// Checks the mailbox holds exactly one message: our Received: field followed by exactly
/// `sent`.
pub fn assert_stored(t: &Target, mailbox: &Mailbox, sent: &[u8]) -> Result<()> {
    let stored = t.messages(mailbox)?;
    ensure!(
        stored.len() == 1,
        "{} messages stored, expected 1",
        stored.len()
    );
    let stored = &stored[0];
    ensure!(
        stored.starts_with(b"Received: "),
        "stored message does not start with Received:"
    );
    ensure!(
        stored.ends_with(sent),
        "stored message differs from what was sent ({} vs {} octets)",
        stored.len(),
        sent.len()
    );
    Ok(())
}

async fn greeting(t: &Target) -> Result<()> {
    for service in [Service::Smtp, Service::Submission, Service::Smtps] {
        let mut c = if service.implicit_tls() {
            Client::connect_tls(t.addr(service), t.connector()).await?
        } else {
            Client::connect(t.addr(service)).await?
        };
        let g = c.reply().await?;
        g.expect(220).with_context(|| service.name())?;
        ensure!(
            g.first().split(' ').next().is_some_and(|w| w.contains('.')),
            "{}: greeting does not start with the server's domain: {g}",
            service.name()
        );
    }
    Ok(())
}

async fn ehlo(t: &Target) -> Result<()> {
    let (_, ehlo) = session(t, Service::Smtp).await?;
    ensure!(ehlo.lines.len() > 1, "EHLO lists no extension: {ehlo}");
    ensure!(
        ehlo.first().starts_with(crate::target::HOST_NAME),
        "first EHLO line is not the server name: {ehlo}"
    );
    for line in &ehlo.lines[1..] {
        let keyword = line.split(' ').next().unwrap_or("");
        ensure!(
            !keyword.is_empty()
                && keyword
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "malformed EHLO keyword line {line:?}"
        );
    }
    Ok(())
}

async fn helo(t: &Target) -> Result<()> {
    let mb = t.mailbox("helo").await?;
    let mut c = Client::connect(t.addr(Service::Smtp)).await?;
    c.reply().await?.expect(220)?;
    c.command("HELO client.example.org").await?.expect(250)?;
    send_message(&mut c, "a@example.org", &mb.address, &message("helo"))
        .await?
        .expect(250)?;
    Ok(())
}

async fn minimum_commands(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("NOOP").await?.expect(250).context("NOOP")?;
    c.command("NOOP anything at all")
        .await?
        .expect(250)
        .context("NOOP with argument")?;
    c.command("RSET").await?.expect(250).context("RSET")?;
    let vrfy = c.command("VRFY postmaster").await?;
    ensure!(
        !matches!(vrfy.code, 500 | 502),
        "VRFY not implemented: {vrfy}"
    );
    Ok(())
}

async fn postmaster(_default: &Target) -> Result<()> {
    // The postmaster mailbox must exist before the configuration can name it: create it in
    // a store, close that, then start a gateway on the same data directory.
    let data = tempfile::tempdir()?;
    let mut config = gateway::config::Config::default();
    config.gateway.data_dir = data.path().to_owned();
    config.gateway.email_domain = EMAIL_DOMAIN.to_owned();
    let id = {
        let service = gateway::service::Gateway::open(&config)
            .map_err(|e| anyhow::anyhow!("open gateway: {e}"))?;
        let created = service
            .create_mailbox("postmaster", "conformance")
            .await
            .map_err(|e| anyhow::anyhow!("create mailbox: {e}"))?;
        created.info.id
    };
    let dir = data.path().to_owned();
    let t = Target::start_with(move |c| {
        c.gateway.data_dir = dir;
        c.smtp.postmaster_mailbox = Some(id);
    })
    .await?;
    let (mut c, _) = session(&t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    for rcpt in [
        "<postmaster>".to_owned(),
        "<Postmaster>".to_owned(),
        format!("<postmaster@{EMAIL_DOMAIN}>"),
        format!("<POSTMASTER@{EMAIL_DOMAIN}>"),
    ] {
        c.command(&format!("RCPT TO:{rcpt}"))
            .await?
            .expect(250)
            .with_context(|| format!("RCPT TO:{rcpt}"))?;
    }
    Ok(())
}

async fn quit(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("QUIT").await?.expect(221)?;
    ensure!(
        c.closed_within(std::time::Duration::from_secs(10)).await?,
        "connection still open after 221"
    );
    Ok(())
}

/// MAIL, then `between`, then RCPT: the RCPT must be out of sequence (503).
async fn forgets_transaction(t: &Target, between: &str) -> Result<()> {
    let mb = t.mailbox("reset").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    c.command(between).await?.expect(250)?;
    rcpt(&mut c, &mb)
        .await?
        .expect(503)
        .with_context(|| format!("RCPT after {between}"))?;
    Ok(())
}

async fn rset_clears(t: &Target) -> Result<()> {
    forgets_transaction(t, "RSET").await
}

async fn ehlo_resets(t: &Target) -> Result<()> {
    forgets_transaction(t, "EHLO again.example.org").await
}

async fn sequence(t: &Target) -> Result<()> {
    let mb = t.mailbox("sequence").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    rcpt(&mut c, &mb)
        .await?
        .expect(503)
        .context("RCPT before MAIL")?;
    c.command("DATA")
        .await?
        .expect_any(&[503, 554])
        .context("DATA before MAIL")?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    c.command("DATA")
        .await?
        .expect_any(&[503, 554])
        .context("DATA before RCPT")?;
    c.command("MAIL FROM:<b@example.org>")
        .await?
        .expect(503)
        .context("nested MAIL")?;
    c.command("NOOP").await?.expect(250)?;
    Ok(())
}

async fn unknown_command(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("FROBNICATE now").await?.expect(500)?;
    // Exactly one reply: the next command's reply comes next.
    c.command("NOOP")
        .await?
        .expect(250)
        .context("after the unknown command")?;
    Ok(())
}

async fn case_insensitive(t: &Target) -> Result<()> {
    let mb = t.mailbox("case").await?;
    let mut c = Client::connect(t.addr(Service::Smtp)).await?;
    c.reply().await?.expect(220)?;
    c.command("ehlo client.example.org").await?.expect(250)?;
    c.command("mail from:<a@example.org>").await?.expect(250)?;
    c.command(&format!("rCpT tO:<{}>", mb.address))
        .await?
        .expect(250)?;
    c.command("data").await?.expect(354)?;
    let m = message("case");
    c.send(dot_stuff(&m)).await?;
    c.reply().await?.expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn null_sender(t: &Target) -> Result<()> {
    let mb = t.mailbox("null").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let m = message("bounce");
    c.command("MAIL FROM:<>").await?.expect(250)?;
    rcpt(&mut c, &mb).await?.expect(250)?;
    c.command("DATA").await?.expect(354)?;
    c.send(dot_stuff(&m)).await?;
    c.reply().await?.expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn transparency(t: &Target) -> Result<()> {
    let mb = t.mailbox("transparency").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let m = b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\n. space\r\nend\r\n".to_vec();
    send_message(&mut c, "a@example.org", &mb.address, &m)
        .await?
        .expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn text_line_1000(t: &Target) -> Result<()> {
    let mb = t.mailbox("long-line").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let mut m = b"Subject: long\r\n\r\n".to_vec();
    m.extend(std::iter::repeat_n(b'x', 998));
    m.extend_from_slice(b"\r\n.");
    m.extend(std::iter::repeat_n(b'y', 997));
    m.extend_from_slice(b"\r\n");
    send_message(&mut c, "a@example.org", &mb.address, &m)
        .await?
        .expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn command_line_512(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    let line = format!("NOOP {}", "a".repeat(512 - 2 - 5));
    ensure!(line.len() + 2 == 512);
    c.command(&line).await?.expect(250)?;
    // And a path of the maximal 256 octets (with brackets) in MAIL.
    let local = "l".repeat(64);
    let domain = format!(
        "{}.example.org",
        "d".repeat(254 - 64 - 1 - ".example.org".len())
    );
    let path = format!("<{local}@{domain}>");
    ensure!(path.len() == 256, "path is {} octets", path.len());
    c.command(&format!("MAIL FROM:{path}"))
        .await?
        .expect(250)
        .context("256-octet path")?;
    Ok(())
}

async fn recipients_100(t: &Target) -> Result<()> {
    // 100 distinct mailboxes: a repeated recipient is accepted once and would not fill the
    // recipient buffer the RFC sizes.
    let mut boxes = Vec::with_capacity(100);
    for i in 0..100 {
        boxes.push(t.mailbox(&format!("hundred-{i}")).await?);
    }
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    for (i, mb) in boxes.iter().enumerate() {
        rcpt(&mut c, mb)
            .await?
            .expect(250)
            .with_context(|| format!("recipient {}", i + 1))?;
    }
    c.command("DATA").await?.expect(354)?;
    c.send(dot_stuff(&message("hundred"))).await?;
    c.reply().await?.expect(250)?;
    for mb in [&boxes[0], &boxes[99]] {
        ensure!(
            t.message_count(mb)? == 1,
            "not delivered to every recipient"
        );
    }
    Ok(())
}

async fn too_many_recipients(_: &Target) -> Result<()> {
    let mut t = Target::start_with(|c| c.limits.max_recipients = 3).await?;
    // Distinct mailboxes: a repeated recipient is accepted once and does not count.
    let mut boxes = Vec::new();
    for i in 0..4 {
        boxes.push(t.mailbox(&format!("limit-{i}")).await?);
    }
    let (mut c, _) = session(&t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    for mb in &boxes[..3] {
        rcpt(&mut c, mb).await?.expect(250)?;
    }
    rcpt(&mut c, &boxes[3])
        .await?
        .expect(452)
        .context("4th recipient")?;
    c.command("DATA").await?.expect(354)?;
    let m = message("limit");
    c.send(dot_stuff(&m)).await?;
    c.reply().await?.expect(250)?;
    t.stop().await;
    Ok(())
}

async fn quoted_local_part(t: &Target) -> Result<()> {
    let mb = t.mailbox("quoted").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<\"john q. public\\\"x\"@example.org>")
        .await?
        .expect(250)?;
    rcpt(&mut c, &mb).await?.expect(250)?;
    Ok(())
}

async fn source_route(t: &Target) -> Result<()> {
    let mb = t.mailbox("route").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<@relay.example.org:a@example.org>")
        .await?
        .expect(250)
        .context("reverse-path with route")?;
    c.command(&format!(
        "RCPT TO:<@one.example,@two.example:{}>",
        mb.address
    ))
    .await?
    .expect(250)
    .context("forward-path with route")?;
    c.command("DATA").await?.expect(354)?;
    let m = message("route");
    c.send(dot_stuff(&m)).await?;
    c.reply().await?.expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn received_trace(t: &Target) -> Result<()> {
    let mb = t.mailbox("received").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let m = message("trace");
    send_message(&mut c, "a@example.org", &mb.address, &m)
        .await?
        .expect(250)?;
    let stored = t.messages(&mb)?;
    let first = stored.first().context("nothing stored")?;
    let head = String::from_utf8_lossy(&first[..first.len().min(400)]).into_owned();
    ensure!(
        head.starts_with("Received: from "),
        "no Received: from at the top: {head:?}"
    );
    ensure!(
        head.contains(&format!("by {}", crate::target::HOST_NAME)),
        "Received: does not name this server: {head:?}"
    );
    Ok(())
}

async fn server_timeout(_: &Target) -> Result<()> {
    let timeout = gateway::smtp::session::COMMAND_TIMEOUT;
    ensure!(timeout.as_secs() >= 300, "command timeout is {timeout:?}");
    Ok(())
}

async fn no_relay(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    let reply = c.command("RCPT TO:<victim@elsewhere.example>").await?;
    ensure!(reply.code >= 500, "foreign recipient answered {reply}");
    Ok(())
}

async fn size_keyword(t: &Target) -> Result<()> {
    let (_, ehlo) = session(t, Service::Smtp).await?;
    let line = ehlo.keyword_line("SIZE").context("SIZE not announced")?;
    let want = format!("SIZE {}", t.config.limits.max_message_size);
    ensure!(line == want, "announced {line:?}, configured {want:?}");
    Ok(())
}

async fn small_target() -> Result<Target> {
    Target::start_with(|c| c.limits.max_message_size = 4096).await
}

async fn size_declared(_: &Target) -> Result<()> {
    let mut t = small_target().await?;
    let (mut c, _) = session(&t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org> SIZE=4096")
        .await?
        .expect(250)
        .context("SIZE at the limit")?;
    c.command("RSET").await?.expect(250)?;
    c.command("MAIL FROM:<a@example.org> SIZE=4097")
        .await?
        .expect(552)
        .context("SIZE over the limit")?;
    t.stop().await;
    Ok(())
}

async fn size_exceeded(_: &Target) -> Result<()> {
    let mut t = small_target().await?;
    let mb = t.mailbox("big").await?;
    let (mut c, _) = session(&t, Service::Smtp).await?;
    let mut m = b"Subject: big\r\n\r\n".to_vec();
    while m.len() < 8192 {
        m.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    send_message(&mut c, "a@example.org", &mb.address, &m)
        .await?
        .expect(552)?;
    ensure!(t.message_count(&mb)? == 0, "oversized message was stored");
    usable_or_closed(&mut c)
        .await
        .context("session after 552")?;
    t.stop().await;
    Ok(())
}

async fn keyword(t: &Target, keyword: &str) -> Result<()> {
    let (_, ehlo) = session(t, Service::Smtp).await?;
    ensure!(ehlo.has_keyword(keyword), "{keyword} not announced: {ehlo}");
    Ok(())
}

async fn pipelining_keyword(t: &Target) -> Result<()> {
    keyword(t, "PIPELINING").await
}

async fn pipelining_order(t: &Target) -> Result<()> {
    let mb = t.mailbox("pipelined").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.send(format!(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<{0}>\r\nRCPT TO:<nobody@{EMAIL_DOMAIN}>\r\nRCPT TO:<{0}>\r\nDATA\r\n",
        mb.address
    ))
    .await?;
    let codes: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(c.reply().await?.code);
        }
        v
    };
    ensure!(
        codes == [250, 250, 550, 250, 354],
        "replies {codes:?}, expected [250, 250, 550, 250, 354]"
    );
    let m = message("pipelined");
    c.send(dot_stuff(&m)).await?;
    c.reply().await?.expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn starttls_keyword(t: &Target) -> Result<()> {
    for service in [Service::Smtp, Service::Submission] {
        let (_, ehlo) = session(t, service).await?;
        ensure!(
            ehlo.has_keyword("STARTTLS"),
            "{}: STARTTLS not announced",
            service.name()
        );
    }
    Ok(())
}

async fn starttls_handshake(t: &Target) -> Result<()> {
    for service in [Service::Smtp, Service::Submission] {
        let (mut c, _) = session(t, service).await?;
        c.command("STARTTLS").await?.expect(220)?;
        c.upgrade(t.connector())
            .await
            .with_context(|| service.name())?;
        c.command("EHLO client.example.org").await?.expect(250)?;
    }
    Ok(())
}

async fn starttls_not_after_tls(t: &Target) -> Result<()> {
    let (mut c, ehlo) = tls_session(t).await?;
    ensure!(
        !ehlo.has_keyword("STARTTLS"),
        "STARTTLS announced inside TLS: {ehlo}"
    );
    let again = c.command("STARTTLS").await?;
    ensure!(again.code >= 500, "second STARTTLS answered {again}");
    let (_, ehlo) = session(t, Service::Smtps).await?;
    ensure!(
        !ehlo.has_keyword("STARTTLS"),
        "STARTTLS announced on implicit TLS: {ehlo}"
    );
    Ok(())
}

async fn starttls_syntax(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("STARTTLS now").await?.expect(501)?;
    Ok(())
}

async fn starttls_reset(t: &Target) -> Result<()> {
    let mb = t.mailbox("starttls-reset").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    let reply = c.command("STARTTLS").await?;
    if reply.code != 220 {
        // Refusing STARTTLS inside a transaction also keeps the states apart.
        ensure!(
            reply.code == 503,
            "STARTTLS inside a transaction answered {reply}"
        );
        return Ok(());
    }
    c.upgrade(t.connector()).await?;
    c.command("EHLO client.example.org").await?.expect(250)?;
    rcpt(&mut c, &mb)
        .await?
        .expect(503)
        .context("RCPT after TLS with MAIL before it")?;
    Ok(())
}

async fn port25_plain(t: &Target) -> Result<()> {
    let mb = t.mailbox("plain").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let m = message("plain");
    send_message(&mut c, "a@example.org", &mb.address, &m)
        .await?
        .expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn enhanced_keyword(t: &Target) -> Result<()> {
    keyword(t, "ENHANCEDSTATUSCODES").await
}

/// Replies from a session that visits successes, refusals and errors of every kind.
async fn varied_replies(t: &Target) -> Result<Vec<(String, Reply)>> {
    let mb = t.mailbox("varied").await?;
    let mut out = Vec::new();
    // Several sessions: one session with this many errors would reach the error limit
    // (a 421 close, which `sec.*` rows cover).
    let (mut c, _) = session(t, Service::Smtp).await?;
    for (i, cmd) in [
        "NOOP".to_owned(),
        "VRFY someone".to_owned(),
        "RCPT TO:<x@y.example>".to_owned(),
        "MAIL FROM:a@example.org".to_owned(),
        "MAIL FROM:<a@example.org> FROB=1".to_owned(),
        "MAIL FROM:<a@example.org>".to_owned(),
        format!("RCPT TO:<nobody@{EMAIL_DOMAIN}>"),
        "RCPT TO:<victim@elsewhere.example>".to_owned(),
        format!("RCPT TO:<{}>", mb.address),
        "HELO client.example.org".to_owned(),
        "RSET".to_owned(),
        "FROBNICATE".to_owned(),
        "HELP".to_owned(),
        "EXPN list".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        if i == 5 || i == 10 {
            c.command("QUIT").await?;
            (c, _) = session(t, Service::Smtp).await?;
            if i == 10 {
                c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
                rcpt(&mut c, &mb).await?.expect(250)?;
            }
        }
        let reply = c.command(&cmd).await?;
        out.push((cmd, reply));
    }
    out.push(("DATA".into(), c.command("DATA").await?));
    out.push(("QUIT".into(), c.command("QUIT").await?));
    // A chunk size that cannot be parsed loses the framing: a 421 close, last.
    let (mut c, _) = session(t, Service::Smtp).await?;
    out.push(("BDAT x".into(), c.command("BDAT x").await?));
    Ok(out)
}

async fn enhanced_every_reply(t: &Target) -> Result<()> {
    for (cmd, reply) in varied_replies(t).await? {
        // RFC 2034 exempts replies to HELO and EHLO, and 3xx replies.
        if reply.code / 100 == 3 || cmd.starts_with("HELO") {
            continue;
        }
        let code = reply
            .enhanced()
            .with_context(|| format!("{cmd:?} answered {reply} without an enhanced code"))?;
        ensure!(
            code.as_bytes()[0] == b'0' + (reply.code / 100) as u8,
            "{cmd:?}: class of {code} does not match {}",
            reply.code
        );
        let subject: u16 = code.split('.').nth(1).unwrap_or("").parse()?;
        ensure!(
            subject <= 7,
            "{cmd:?}: subject {subject} in {code} is not defined by RFC 3463"
        );
    }
    Ok(())
}

async fn enhanced_codes(t: &Target) -> Result<()> {
    let mb = t.mailbox("codes").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let check = |reply: Reply, want: &[&str], what: &str| -> Result<()> {
        let code = reply.enhanced().unwrap_or("none");
        if !want.contains(&code) {
            bail!("{what}: got {reply}, expected {want:?}");
        }
        Ok(())
    };
    check(
        c.command("RCPT TO:<x@y.example>").await?,
        &["5.5.1"],
        "bad sequence",
    )?;
    check(
        c.command("MAIL FROM:a@example.org").await?,
        &["5.5.2", "5.5.4", "5.1.7"],
        "syntax",
    )?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    check(
        c.command(&format!("RCPT TO:<nobody@{EMAIL_DOMAIN}>"))
            .await?,
        &["5.1.1"],
        "unknown mailbox",
    )?;
    check(rcpt(&mut c, &mb).await?, &["2.1.5"], "recipient ok")?;
    c.command("RSET").await?;
    let size = t.config.limits.max_message_size + 1;
    check(
        c.command(&format!("MAIL FROM:<a@example.org> SIZE={size}"))
            .await?,
        &["5.3.4"],
        "too big",
    )?;
    Ok(())
}

async fn eightbit_keyword(t: &Target) -> Result<()> {
    keyword(t, "8BITMIME").await
}

fn eightbit_message() -> Vec<u8> {
    let mut m = b"Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    m.extend_from_slice(b"Gr\xfc\xdfe \xe9t\xe9 \x80\xff\xfe\r\n");
    m.extend_from_slice("UTF-8 too: naïve café 日本\r\n".as_bytes());
    m
}

async fn eightbit_body(t: &Target) -> Result<()> {
    let mb = t.mailbox("8bit").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org> BODY=8BITMIME")
        .await?
        .expect(250)?;
    rcpt(&mut c, &mb).await?.expect(250)?;
    c.command("DATA").await?.expect(354)?;
    let m = eightbit_message();
    c.send(dot_stuff(&m)).await?;
    c.reply().await?.expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn body_7bit(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org> BODY=7BIT")
        .await?
        .expect(250)?;
    Ok(())
}

async fn body_unknown(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org> BODY=9BIT")
        .await?
        .expect_any(&[501, 555])?;
    Ok(())
}

async fn utf8_keyword(t: &Target) -> Result<()> {
    keyword(t, "SMTPUTF8").await
}

async fn utf8_sender(t: &Target) -> Result<()> {
    let mb = t.mailbox("utf8").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<jöran.ñandú@exämple.org> SMTPUTF8 BODY=8BITMIME")
        .await?
        .expect(250)?;
    rcpt(&mut c, &mb).await?.expect(250)?;
    c.command("DATA").await?.expect(354)?;
    let m = "From: Jöran <jöran.ñandú@exämple.org>\r\nSubject: Grüße 📨\r\n\r\nUTF-8 headers and body.\r\n".as_bytes().to_vec();
    c.send(dot_stuff(&m)).await?;
    c.reply().await?.expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn utf8_required(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    let reply = c.command("MAIL FROM:<jöran@exämple.org>").await?;
    ensure!(
        reply.code >= 500,
        "UTF-8 address without SMTPUTF8 answered {reply}"
    );
    Ok(())
}

async fn chunking_keyword(t: &Target) -> Result<()> {
    keyword(t, "CHUNKING").await
}

/// Text whose chunk boundaries below fall inside a CRLF and just before a lone-dot line,
/// with 8-bit octets. Bare CR or LF stays out: without BINARYMIME, BDAT carries text lines
/// too, and the gateway refuses them (see `sec.bare-lf-data`).
fn chunked_content() -> Vec<u8> {
    let mut m = b"Subject: bdat\r\n\r\nline\r".to_vec();
    m.extend_from_slice(b"\n.\r\n..\r\nGr\xc3\xbc\xc3\x9fe\r\nlast line\r\n");
    m
}

async fn bdat_last(t: &Target) -> Result<()> {
    let mb = t.mailbox("bdat").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let m = b"Subject: bdat\r\n\r\n..two dots stay two\r\n.\r\nend\r\n".to_vec();
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    rcpt(&mut c, &mb).await?.expect(250)?;
    c.send(format!("BDAT {} LAST\r\n", m.len())).await?;
    c.send(&m).await?;
    c.reply().await?.expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn bdat_chunks(t: &Target) -> Result<()> {
    let mb = t.mailbox("bdat-chunks").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let m = chunked_content();
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    rcpt(&mut c, &mb).await?.expect(250)?;
    let (a, b) = m.split_at(22);
    for chunk in [a, b] {
        c.send(format!("BDAT {}\r\n", chunk.len())).await?;
        c.send_quiet(chunk).await?;
        c.reply().await?.expect(250)?;
    }
    c.command("BDAT 0 LAST").await?.expect(250)?;
    assert_stored(t, &mb, &m)
}

async fn bdat_errors_consume(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    // Without MAIL: refused, but the 9 octets ("NOOP\r\nxyz") are chunk data, not commands.
    c.send("BDAT 9\r\nNOOP\r\nxyzRSET\r\n").await?;
    c.reply().await?.expect(503).context("BDAT without MAIL")?;
    c.reply()
        .await?
        .expect(250)
        .context("RSET after the chunk")?;
    c.command("NOOP").await?.expect(250)?;
    Ok(())
}

async fn bdat_then_data(t: &Target) -> Result<()> {
    let mb = t.mailbox("bdat-data").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    rcpt(&mut c, &mb).await?.expect(250)?;
    c.send("BDAT 5\r\nhello").await?;
    c.reply().await?.expect(250)?;
    c.command("DATA")
        .await?
        .expect(503)
        .context("DATA after BDAT")?;
    Ok(())
}

async fn auth_not_before_tls(t: &Target) -> Result<()> {
    for service in [Service::Smtp, Service::Submission] {
        let (mut c, ehlo) = session(t, service).await?;
        ensure!(
            !ehlo.has_keyword("AUTH"),
            "{}: AUTH announced in plaintext: {ehlo}",
            service.name()
        );
        let reply = c.command("AUTH PLAIN AHVzZXIAcGFzcw==").await?;
        reply.expect(538)?;
        ensure!(reply.to_string().contains("5.7.11"), "{reply}");
    }
    Ok(())
}

async fn auth_announced(t: &Target) -> Result<()> {
    let (_, ehlo) = tls_session(t).await?;
    ensure!(
        ehlo.to_string().contains("AUTH PLAIN LOGIN"),
        "after STARTTLS: {ehlo}"
    );
    let (_, ehlo) = session(t, Service::Smtps).await?;
    ensure!(
        ehlo.to_string().contains("AUTH PLAIN LOGIN"),
        "on 465: {ehlo}"
    );
    Ok(())
}

async fn auth_unknown_mechanism(t: &Target) -> Result<()> {
    let (mut c, _) = tls_session(t).await?;
    let reply = c.command("AUTH CRAM-MD5").await?;
    reply.expect(504)?;
    ensure!(reply.to_string().contains("5.5.4"), "{reply}");
    Ok(())
}

async fn auth_cancel(t: &Target) -> Result<()> {
    let (mut c, _) = tls_session(t).await?;
    c.command("AUTH PLAIN").await?.expect(334)?;
    c.command("*").await?.expect(501)?;
    c.command("NOOP").await?.expect(250)?;
    Ok(())
}

async fn auth_bad_base64(t: &Target) -> Result<()> {
    let (mut c, _) = tls_session(t).await?;
    let reply = c.command("AUTH PLAIN !!!not-base64").await?;
    reply.expect(501)?;
    ensure!(reply.to_string().contains("5.5.2"), "{reply}");
    Ok(())
}

async fn auth_bad_credentials(t: &Target) -> Result<()> {
    let (mut c, _) = tls_session(t).await?;
    // Not a proxy login (user%server%mailbox): cannot succeed.
    let reply = c.command("AUTH PLAIN AHVzZXIAcGFzcw==").await?;
    reply.expect(535)?;
    ensure!(reply.to_string().contains("5.7.8"), "{reply}");
    c.command("NOOP").await?.expect(250)?;
    Ok(())
}

async fn auth_in_transaction(t: &Target) -> Result<()> {
    let (mut c, _) = tls_session(t).await?;
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    c.command("AUTH PLAIN AHVzZXIAcGFzcw==")
        .await?
        .expect(503)?;
    Ok(())
}

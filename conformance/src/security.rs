//! The security suite: the well-known attacks on STARTTLS and SMTP, malformed and overlong
//! input, and resource exhaustion within the configured limits. Each row names the RFC rule
//! it defends; where the RFC only describes the protocol, the row's level is the gateway's
//! own policy and its title says so.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::matrix::{Level, Suite};
use crate::pop3::{filled, login, plain, pop3_plain, pop3_stls, pop3s, three};
use crate::smtp::{message, session, tls_session};
use crate::target::{Service, Target, EMAIL_DOMAIN};
use crate::Check;

crate::requirement_fn!(Suite::Security);

pub fn checks() -> Vec<Check> {
    use Level::*;
    crate::checks![
        r("sec.starttls-injection", "3207", "4.2, 5", Must, "plaintext pipelined behind STARTTLS is discarded, never executed inside TLS") => starttls_injection,
        r("sec.stls-injection", "2595", "4", Must, "plaintext pipelined behind STLS is discarded, never executed inside TLS") => stls_injection,
        r("sec.pop3-no-credentials-before-tls", "8314", "3, 2595 4", Must, "POP3 refuses USER, PASS and AUTH before TLS (policy), and does not count them as failures") => pop3_no_credentials_before_tls,
        r("sec.smtp-no-auth-before-tls", "4954", "4, 8314 3", Must, "SMTP offers and accepts no AUTH before TLS (policy)") => smtp_no_auth_before_tls,
        r("sec.capabilities-tls", "3207", "4.2, 2595 4", Must, "capabilities are recomputed after TLS: SMTP drops STARTTLS only; POP3 drops STLS and adds USER and SASL") => capabilities_tls,
        r("sec.smuggling", "5321", "4.1.1.4, 2.3.8", Must, "no SMTP smuggling: none of the 10 known end-of-data variants ends the data or starts a second transaction") => smuggling,
        r("sec.bare-lf-data", "5321", "2.3.8", Should, "bare LF or CR in DATA is refused (554) and nothing stored") => bare_lf_data,
        r("sec.overlong-command", "5321", "4.5.3.1.4, 4.5.3.1.10", Should, "an overlong SMTP command (10 KB, and 100 KB without CRLF) gets 500 or a 421 close, within bounded memory") => overlong_command,
        r("sec.overlong-data-line", "5321", "4.5.3.1.6", Must, "a 5000-octet text line is stored intact or refused; never split or truncated") => overlong_data_line,
        r("sec.pop3-overlong", "2449", "4", Should, "an overlong POP3 command (1000 octets) gets -ERR and the session goes on") => pop3_overlong,
        r("sec.nul-smtp", "5321", "2.3.1, 4.1.1", Should, "NUL bytes in SMTP commands and addresses are refused; the session goes on") => nul_smtp,
        r("sec.nul-pop3", "1939", "3", Should, "NUL bytes in POP3 commands are refused; the session goes on") => nul_pop3,
        r("sec.invalid-utf8", "6531", "3.3", Must, "an address that is not valid UTF-8 is refused, with SMTPUTF8 too") => invalid_utf8,
        r("sec.address-syntax", "5321", "4.1.2", Must, "malformed paths (a@b@c, unbalanced quote, no brackets around junk, <> as recipient) are refused and the session goes on") => address_syntax,
        r("sec.address-literal", "5321", "4.1.3", Should, "an address literal domain (a@[192.0.2.1]) is accepted in MAIL FROM") => address_literal,
        r("sec.utf8-foreign-rcpt", "6531", "3.2", Should, "an internationalised recipient outside our domain is refused as a foreign recipient, not as a syntax error") => utf8_foreign_rcpt,
        r("sec.smtp-big-pipeline", "2920", "3.1", Must, "6000 pipelined SMTP commands in one burst are all answered, in order, while the client keeps writing") => smtp_big_pipeline,
        r("sec.pop3-big-pipeline", "2449", "6.6", Must, "5000 pipelined POP3 commands in one burst are all answered, in order") => pop3_big_pipeline,
        r("sec.slow-loris", "5321", "4.5.3.2", Should, "clients dribbling a byte at a time do not delay others (idle timeouts: [limits] preauth_timeout_secs before MAIL or login, then 5 and 10 minutes; not tested here)") => slow_loris,
        r("sec.smtp-flood", "5321", "3.8, 4.2.3", Must, "connections over the per-address and total limits get 421 and are closed; freed slots are reused") => smtp_flood,
        r("sec.pop3-flood", "1939", "4", Must, "POP3 connections over the per-address limit get -ERR and are closed; SMTP's budget is separate") => pop3_flood,
        r("sec.proxy-private-targets", "6890", "2.2", Must, "a proxy login naming a loopback or other non-global target, in any spelling, is refused with a generic reason and no connection (policy)") => proxy_private_targets,
        r("sec.write-timeout", "5321", "4.5.3.2", Must, "a client that stops reading its replies is disconnected after [limits] write_timeout_secs (policy), SMTP and POP3") => write_timeout,
        r("sec.archiver-lockout", "1939", "13", Must, "after 30 failed logins for a mailbox from ten other clients, the archiver's right password still logs in (policy: failures are throttled per client and only delay the mailbox, never wall it off)") => archiver_lockout,
    ]
}

async fn starttls_injection(t: &Target) -> Result<()> {
    let mb = t.mailbox("inject").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.send(format!(
        "STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<{}>\r\n",
        mb.address
    ))
    .await?;
    c.reply().await?.expect(220)?;
    // `upgrade` refuses when the server answered anything else in clear.
    c.upgrade(t.connector()).await?;
    let ehlo = c
        .command("EHLO client.example.org")
        .await
        .context("first reply inside TLS")?;
    ensure!(
        ehlo.code == 250 && ehlo.lines.len() > 1,
        "first reply inside TLS is not ours to EHLO: {ehlo}"
    );
    c.command(&format!("RCPT TO:<{}>", mb.address))
        .await?
        .expect(503)
        .context("injected MAIL was executed")?;
    Ok(())
}

async fn stls_injection(t: &Target) -> Result<()> {
    let mb = t.mailbox("stls-inject").await?;
    let mut c = pop3_plain(t).await?;
    c.send(format!("STLS\r\nUSER {}\r\n", mb.user())).await?;
    let ok = c.line().await?;
    ensure!(ok.starts_with("+OK"), "STLS answered {ok:?}");
    c.upgrade(t.connector()).await?;
    // Had the injected USER run, PASS would log in.
    let pass = c.pop(&format!("PASS {}", mb.pass())).await?;
    ensure!(
        pass.starts_with("-ERR"),
        "PASS after injected USER answered {pass:?}"
    );
    Ok(())
}

async fn pop3_no_credentials_before_tls(t: &Target) -> Result<()> {
    let mb = t.mailbox("clear").await?;
    let mut c = pop3_plain(t).await?;
    // More attempts than the per-session failure limit: none may count as a failed login.
    for _ in 0..4 {
        c.pop_err(&format!("USER {}", mb.user())).await?;
        c.pop_err(&format!("PASS {}", mb.pass())).await?;
        c.pop_err(&format!("AUTH PLAIN {}", plain(&mb.user(), &mb.pass())))
            .await?;
    }
    c.pop_ok("STLS").await?;
    c.upgrade(t.connector()).await?;
    c.pop_ok(&format!("AUTH PLAIN {}", plain(&mb.user(), &mb.pass())))
        .await?;
    Ok(())
}

async fn smtp_no_auth_before_tls(t: &Target) -> Result<()> {
    for service in [Service::Smtp, Service::Submission] {
        let (mut c, ehlo) = session(t, service).await?;
        ensure!(
            !ehlo.has_keyword("AUTH"),
            "{}: AUTH offered in clear: {ehlo}",
            service.name()
        );
        let reply = c.command("AUTH PLAIN AGEAYg==").await?;
        ensure!(
            reply.code >= 500,
            "{}: AUTH in clear answered {reply}",
            service.name()
        );
    }
    Ok(())
}

async fn capabilities_tls(t: &Target) -> Result<()> {
    let (_, before) = session(t, Service::Smtp).await?;
    let (_, after) = tls_session(t).await?;
    let words = |r: &crate::client::Reply| -> Vec<String> {
        r.lines[1..]
            .iter()
            .map(|l| l.to_ascii_uppercase())
            .filter(|l| l != "STARTTLS" && !l.starts_with("AUTH"))
            .collect()
    };
    ensure!(
        words(&before) == words(&after),
        "SMTP capabilities differ beyond STARTTLS/AUTH: {before} vs {after}"
    );
    let mut p = pop3_plain(t).await?;
    let before = p.capa().await?;
    p.pop_ok("STLS").await?;
    p.upgrade(t.connector()).await?;
    let after = p.capa().await?;
    let has = |caps: &[String], w: &str| caps.iter().any(|l| l.split(' ').next() == Some(w));
    ensure!(
        has(&before, "STLS") && !has(&after, "STLS"),
        "STLS before {before:?}, after {after:?}"
    );
    ensure!(
        !has(&before, "USER") && has(&after, "USER"),
        "USER before {before:?}, after {after:?}"
    );
    ensure!(
        !has(&before, "SASL") && has(&after, "SASL"),
        "SASL before {before:?}, after {after:?}"
    );
    Ok(())
}

async fn smuggling(t: &Target) -> Result<()> {
    for (i, variant) in gateway::smtp::data::SMUGGLING_VARIANTS.iter().enumerate() {
        let mb = t.mailbox(&format!("smuggle-{i}")).await?;
        let (mut c, _) = session(t, Service::Smtp).await?;
        c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
        c.command(&format!("RCPT TO:<{}>", mb.address))
            .await?
            .expect(250)?;
        c.command("DATA").await?.expect(354)?;
        let mut data = b"Subject: outer\r\n\r\nouter body".to_vec();
        data.extend_from_slice(variant);
        data.extend_from_slice(
            format!("MAIL FROM:<evil@example.org>\r\nRCPT TO:<{}>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n", mb.address).as_bytes(),
        );
        data.extend_from_slice(b"\r\n.\r\n");
        c.send(&data).await?;
        let end = c.reply().await?;
        ensure!(
            matches!(end.code, 250 | 554 | 550 | 500),
            "variant {i} {:?}: end of data answered {end}",
            crate::client::escape(variant)
        );
        c.send("QUIT\r\n").await?;
        let mut extra = Vec::new();
        while let Some(reply) = c.try_reply().await? {
            extra.push(reply.code);
        }
        ensure!(
            extra == [221],
            "variant {i} {:?}: replies after the data {extra:?} (smuggled commands ran?)",
            crate::client::escape(variant)
        );
        let stored = t.messages(&mb)?;
        ensure!(
            stored.len() <= 1,
            "variant {i}: {} messages stored",
            stored.len()
        );
        if end.code == 250 {
            ensure!(
                stored
                    .first()
                    .is_some_and(|m| m.ends_with(&data[..data.len() - 3])),
                "variant {i}: accepted but not stored as sent"
            );
        }
    }
    Ok(())
}

async fn bare_lf_data(t: &Target) -> Result<()> {
    for body in [
        &b"Subject: x\r\n\r\nbare\nlf\r\n"[..],
        b"Subject: x\r\n\r\nbare\rcr\r\n",
    ] {
        let mb = t.mailbox("bare").await?;
        let (mut c, _) = session(t, Service::Smtp).await?;
        let reply = crate::smtp::send_message(&mut c, "a@example.org", &mb.address, body).await?;
        ensure!(
            reply.code == 554,
            "{:?} answered {reply}",
            crate::client::escape(body)
        );
        ensure!(t.message_count(&mb)? == 0, "stored");
    }
    Ok(())
}

async fn overlong_command(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.send(format!("NOOP {}\r\n", "A".repeat(10_000))).await?;
    let reply = c.reply().await?;
    match reply.code {
        500 => crate::smtp::usable_or_closed(&mut c)
            .await
            .context("after the overlong line")?,
        421 => ensure!(
            c.closed_within(Duration::from_secs(10)).await?,
            "421 but not closed"
        ),
        _ => bail!("10 KB command answered {reply}"),
    }
    // 100 KB with no line end: the server must answer or close, not buffer it all forever.
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.note("100 KB without CRLF");
    let sent = c.send_quiet(&vec![b'B'; 100_000]).await;
    if sent.is_ok() {
        c.send_quiet(b"\r\n").await.ok();
        match c.try_reply().await {
            Ok(Some(reply)) => ensure!(
                matches!(reply.code, 500 | 421),
                "100 KB line answered {reply}"
            ),
            // Closing the connection on it (no reply, or a reset) is as good as a 500.
            Ok(None) => {}
            Err(err) => bail!("100 KB line: {err:#}"),
        }
    }
    Ok(())
}

async fn overlong_data_line(t: &Target) -> Result<()> {
    let mb = t.mailbox("long-data").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    let mut m = b"Subject: long\r\n\r\n".to_vec();
    m.extend(std::iter::repeat_n(b'z', 5000));
    m.extend_from_slice(b"\r\nafter\r\n");
    let reply = crate::smtp::send_message(&mut c, "a@example.org", &mb.address, &m).await?;
    let stored = t.messages(&mb)?;
    match reply.code {
        250 => ensure!(
            stored.len() == 1 && stored[0].ends_with(&m),
            "accepted but stored altered"
        ),
        500..=599 => ensure!(stored.is_empty(), "refused but stored"),
        _ => bail!("answered {reply}"),
    }
    c.command("NOOP").await?.expect(250)?;
    Ok(())
}

async fn pop3_overlong(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    c.pop_err(&format!("NOOP {}", "x".repeat(1000))).await?;
    c.capa().await?;
    Ok(())
}

/// Sends each raw line in one session: every one must be refused (5xx) and the session
/// must still work after them.
async fn refused_then_usable(t: &Target, lines: &[&[u8]]) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    for line in lines {
        c.send(line).await?;
        let reply = c.reply().await?;
        ensure!(
            reply.code >= 500,
            "{:?} answered {reply}",
            crate::client::escape(line)
        );
    }
    c.command("MAIL FROM:<a@example.org>")
        .await?
        .expect(250)
        .context("session after the refused lines")?;
    Ok(())
}

async fn nul_smtp(t: &Target) -> Result<()> {
    refused_then_usable(
        t,
        &[
            b"NO\0OP\r\n",
            b"MAIL FROM:<a\0b@example.org>\r\n",
            b"EHLO x\0y\r\n",
        ],
    )
    .await
}

async fn nul_pop3(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    c.send(b"US\0ER x\r\n").await?;
    let status = c.line().await?;
    ensure!(status.starts_with("-ERR"), "answered {status:?}");
    c.capa().await?;
    Ok(())
}

async fn invalid_utf8(t: &Target) -> Result<()> {
    refused_then_usable(
        t,
        &[
            b"MAIL FROM:<j\xff\xfe@example.org> SMTPUTF8\r\n",
            b"MAIL FROM:<a@ex\xc3ample.org> SMTPUTF8\r\n",
        ],
    )
    .await
}

async fn address_syntax(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    for bad in [
        "MAIL FROM:<a@b@example.org>",
        "MAIL FROM:<\"unbalanced@example.org>",
        "MAIL FROM:<a@example.org",
        "MAIL FROM:<a b@example.org>",
        "MAIL FROM:<a@-bad-.example>",
        "MAIL FROM:",
    ] {
        let reply = c.command(bad).await?;
        ensure!(
            matches!(reply.code, 501 | 553 | 555),
            "{bad:?} answered {reply}"
        );
    }
    c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
    for bad in ["RCPT TO:<>", "RCPT TO:<@>", "RCPT TO:<a@b@c.example>"] {
        let reply = c.command(bad).await?;
        ensure!(reply.code >= 500, "{bad:?} answered {reply}");
    }
    c.command("NOOP").await?.expect(250)?;
    Ok(())
}

async fn address_literal(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@[192.0.2.1]>").await?.expect(250)?;
    c.command("RSET").await?;
    c.command("MAIL FROM:<a@[IPv6:2001:db8::1]>")
        .await?
        .expect(250)?;
    Ok(())
}

async fn utf8_foreign_rcpt(t: &Target) -> Result<()> {
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.command("MAIL FROM:<a@example.org> SMTPUTF8")
        .await?
        .expect(250)?;
    let reply = c.command("RCPT TO:<пример@испытание.example>").await?;
    ensure!(reply.code == 550, "answered {reply}");
    let reply = c
        .command(&format!("RCPT TO:<ünknown@{EMAIL_DOMAIN}>"))
        .await?;
    ensure!(
        reply.code == 550,
        "unknown UTF-8 local part in our domain answered {reply}"
    );
    Ok(())
}

/// Writes `input` while reading; returns the first line of every reply the reader sees
/// until `count` complete replies (by `is_end`) arrived.
async fn burst<S>(
    stream: S,
    input: Vec<u8>,
    count: usize,
    is_end: fn(&str) -> bool,
) -> Result<Vec<String>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        wr.write_all(&input).await?;
        wr.flush().await?;
        anyhow::Ok(wr)
    });
    let mut lines = Vec::with_capacity(count);
    let mut buffer = Vec::new();
    let read = async {
        let mut chunk = vec![0u8; 64 * 1024];
        while lines.len() < count {
            while let Some(pos) = buffer.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = buffer.drain(..pos + 2).collect();
                let line = String::from_utf8_lossy(&line[..pos]).into_owned();
                if is_end(&line) {
                    lines.push(line);
                }
            }
            if lines.len() >= count {
                break;
            }
            let n = rd.read(&mut chunk).await?;
            ensure!(n > 0, "closed after {} replies", lines.len());
            buffer.extend_from_slice(&chunk[..n]);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .map_err(|_| anyhow::anyhow!("stalled after {} replies", lines.len()))??;
    writer.await??;
    Ok(lines)
}

async fn smtp_big_pipeline(t: &Target) -> Result<()> {
    let mb = t.mailbox("burst").await?;
    let mut stream = tokio::net::TcpStream::connect(t.addr(Service::Smtp)).await?;
    // Greeting, then a burst of 2000 × (MAIL, RCPT, RSET).
    let mut greeting = [0u8; 512];
    let n = stream.read(&mut greeting).await?;
    ensure!(greeting[..n].starts_with(b"220"), "greeting");
    let mut input = b"EHLO burst.example.org\r\n".to_vec();
    for _ in 0..2000 {
        input.extend_from_slice(
            format!(
                "MAIL FROM:<a@example.org>\r\nRCPT TO:<{}>\r\nRSET\r\n",
                mb.address
            )
            .as_bytes(),
        );
    }
    let last_lines = burst(stream, input, 6001, |l| l.as_bytes().get(3) == Some(&b' ')).await?;
    ensure!(last_lines[0].starts_with("250 "), "EHLO: {}", last_lines[0]);
    for (i, line) in last_lines[1..].iter().enumerate() {
        ensure!(
            line.starts_with("250 "),
            "reply {} of the burst: {line}",
            i + 1
        );
    }
    Ok(())
}

async fn pop3_big_pipeline(t: &Target) -> Result<()> {
    let mb = filled(t, "pop-burst", &three("burst")).await?;
    let tcp = tokio::net::TcpStream::connect(t.addr(Service::Pop3s)).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(crate::client::TLS_NAME)?;
    let mut tls = t.connector().connect(name, tcp).await?;
    let mut greeting = [0u8; 512];
    let n = tls.read(&mut greeting).await?;
    ensure!(greeting[..n].starts_with(b"+OK"), "greeting");
    let mut input = format!("AUTH PLAIN {}\r\n", plain(&mb.user(), &mb.pass())).into_bytes();
    for i in 0..5000 {
        input.extend_from_slice(if i % 2 == 0 { b"NOOP\r\n" } else { b"STAT\r\n" });
    }
    let lines = burst(tls, input, 5001, |l| {
        l.starts_with("+OK") || l.starts_with("-ERR")
    })
    .await?;
    for (i, line) in lines.iter().enumerate() {
        ensure!(line.starts_with("+OK"), "answer {i}: {line}");
        if i > 0 && i % 2 == 0 {
            ensure!(line.starts_with("+OK 3 "), "answer {i} to STAT: {line}");
        }
    }
    Ok(())
}

async fn slow_loris(_: &Target) -> Result<()> {
    let mut t = Target::start_with(|c| c.limits.max_connections_per_ip = 20).await?;
    let mb = t.mailbox("loris").await?;
    let mut slow = Vec::new();
    for i in 0..8u8 {
        let source = Ipv4Addr::new(127, 0, 0, 10 + i);
        let mut c = Client::connect_from(source, t.addr(Service::Smtp)).await?;
        c.reply().await?.expect(220)?;
        slow.push(c);
    }
    // Half-open TLS on 465: a TCP connection that never sends its ClientHello.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(t.addr(Service::Smtps)).await?);
    }
    let command = b"EHLO slow.example.org\r\n";
    let started = tokio::time::Instant::now();
    for (step, byte) in command.iter().enumerate() {
        for c in &mut slow {
            c.send_quiet(&[*byte]).await?;
        }
        if step == 3 {
            // Meanwhile a normal client delivers at full speed.
            let (mut c, _) = session(&t, Service::Smtp).await?;
            let m = message("beside the loris");
            crate::smtp::send_message(&mut c, "a@example.org", &mb.address, &m)
                .await?
                .expect(250)?;
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "normal delivery took {:?}",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &mut slow {
        c.reply()
            .await?
            .expect(250)
            .context("the slow client's EHLO")?;
    }
    drop(silent);
    t.stop().await;
    Ok(())
}

/// Connects from `source` and returns the first reply line (or `None` when closed).
async fn first_line(
    source: Ipv4Addr,
    addr: std::net::SocketAddr,
) -> Result<(Client, Option<String>)> {
    let mut c = Client::connect_from(source, addr).await?;
    let line = c.try_line().await?;
    Ok((c, line))
}

async fn smtp_flood(_: &Target) -> Result<()> {
    let mut t = Target::start_with(|c| {
        c.limits.max_connections_per_ip = 3;
        c.limits.max_connections = 5;
    })
    .await?;
    let addr = t.addr(Service::Smtp);
    let mut held = Vec::new();
    for _ in 0..3 {
        let (c, line) = first_line(Ipv4Addr::new(127, 0, 0, 1), addr).await?;
        ensure!(
            line.as_deref().is_some_and(|l| l.starts_with("220")),
            "within limits: {line:?}"
        );
        held.push(c);
    }
    let (mut over, line) = first_line(Ipv4Addr::new(127, 0, 0, 1), addr).await?;
    ensure!(
        line.as_deref().is_some_and(|l| l.starts_with("421")),
        "4th from one address: {line:?}"
    );
    ensure!(
        over.closed_within(Duration::from_secs(10)).await?,
        "421 but not closed"
    );
    for i in 0..2u8 {
        let (c, line) = first_line(Ipv4Addr::new(127, 0, 0, 2 + i), addr).await?;
        ensure!(
            line.as_deref().is_some_and(|l| l.starts_with("220")),
            "other address within the total: {line:?}"
        );
        held.push(c);
    }
    let (_, line) = first_line(Ipv4Addr::new(127, 0, 0, 9), addr).await?;
    ensure!(
        line.as_deref().is_some_and(|l| l.starts_with("421")),
        "6th in total: {line:?}"
    );
    // Free one slot with QUIT; once the server closed it, a new client is served.
    let mut first = held.remove(0);
    first.command("QUIT").await?.expect(221)?;
    first.closed_within(Duration::from_secs(10)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, line) = first_line(Ipv4Addr::new(127, 0, 0, 1), addr).await?;
        if line.as_deref().is_some_and(|l| l.starts_with("220")) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "freed slot not reused: {line:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    t.stop().await;
    Ok(())
}

async fn pop3_flood(_: &Target) -> Result<()> {
    let mut t = Target::start_with(|c| c.limits.max_connections_per_ip = 2).await?;
    let addr = t.addr(Service::Pop3);
    let mut held = Vec::new();
    for _ in 0..2 {
        let (c, line) = first_line(Ipv4Addr::LOCALHOST, addr).await?;
        ensure!(
            line.as_deref().is_some_and(|l| l.starts_with("+OK")),
            "within limits: {line:?}"
        );
        held.push(c);
    }
    let (mut over, line) = first_line(Ipv4Addr::LOCALHOST, addr).await?;
    ensure!(
        line.as_deref().is_some_and(|l| l.starts_with("-ERR")),
        "3rd from one address: {line:?}"
    );
    ensure!(
        over.closed_within(Duration::from_secs(10)).await?,
        "-ERR but not closed"
    );
    // SMTP from the same address is still served.
    let (_, line) = first_line(Ipv4Addr::LOCALHOST, t.addr(Service::Smtp)).await?;
    ensure!(
        line.as_deref().is_some_and(|l| l.starts_with("220")),
        "SMTP beside a POP3 flood: {line:?}"
    );
    let mb = filled(&t, "flood", &three("flood")).await?;
    drop(held);
    // Logging in works again once the held connections are gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match login(&t, &mb).await {
            Ok(_) => break,
            Err(err) => ensure!(
                tokio::time::Instant::now() < deadline,
                "no login after the flood: {err:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.stop().await;
    Ok(())
}

/// The proxy is no way into the gateway's own network: with the default policy (the
/// listener's port allowed, so only the address is at issue), logins naming a loopback
/// listener are refused before any connection. Only loopback is ever named.
async fn proxy_private_targets(_: &Target) -> Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let mut t = Target::start_with(|c| c.proxy.allowed_ports.push(port)).await?;
    let mb = t.mailbox("proxy-private").await?;
    for server in [
        format!("127.0.0.1:{port}"),
        format!("127.1:{port}"),
        format!("2130706433:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let user = format!("someone@example.org%{server}%{}", mb.user());
        let mut c = pop3_stls(&t).await?;
        c.pop_ok(&format!("USER {user}")).await?;
        let reply = c.pop("PASS upstream-secret").await?;
        ensure!(
            reply.starts_with("-ERR") && reply.contains("not allowed") && !reply.contains("127."),
            "POP3 proxy login to {server} answered {reply:?}"
        );
        let (mut c, _) = session(&t, Service::Submission).await?;
        c.command("STARTTLS").await?.expect(220)?;
        c.upgrade(t.connector()).await?;
        c.command("EHLO client.example.org").await?.expect(250)?;
        let reply = c
            .command(&format!("AUTH PLAIN {}", plain(&user, "upstream-secret")))
            .await?;
        ensure!(
            reply.code == 454 && reply.to_string().contains("not allowed"),
            "SMTP proxy login to {server} answered {reply}"
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => bail!("the gateway connected to the loopback target (from {peer})"),
        Err(e) => return Err(e.into()),
    }
    t.stop().await;
    Ok(())
}

/// Pipelines commands and never reads the replies: once the server's writes stall for the
/// write timeout, it drops the connection, and the client's writes start failing.
async fn write_timeout(_: &Target) -> Result<()> {
    let mut t = Target::start_with(|c| c.limits.write_timeout_secs = 2).await?;
    for (service, command) in [
        (Service::Smtp, &b"NOOP\r\n"[..]),
        (Service::Pop3, &b"CAPA\r\n"[..]),
    ] {
        let mut stream = tokio::net::TcpStream::connect(t.addr(service)).await?;
        let burst = command.repeat(4096);
        let write_until_dropped = async { while stream.write_all(&burst).await.is_ok() {} };
        let dropped = tokio::time::timeout(Duration::from_secs(60), write_until_dropped)
            .await
            .is_ok();
        ensure!(
            dropped,
            "{service:?}: a client that never reads was still connected after 60 s"
        );
    }
    t.stop().await;
    Ok(())
}

/// One wrong-password login over 110 with STLS from `source`; expects `-ERR [AUTH]`.
async fn wrong_login(
    source: Ipv4Addr,
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    user: String,
) -> Result<()> {
    let mut c = Client::connect_from(source, addr).await?;
    let greeting = c.line().await?;
    ensure!(greeting.starts_with("+OK"), "greeting {greeting:?}");
    c.pop_ok("STLS").await?;
    c.upgrade(&connector).await?;
    let reply = c
        .pop_err(&format!(
            "AUTH PLAIN {}",
            plain(&user, "AAAA-BBBB-CCCC-DDDD")
        ))
        .await?;
    ensure!(
        reply.starts_with("-ERR [AUTH]"),
        "wrong password: {reply:?}"
    );
    Ok(())
}

async fn archiver_lockout(t: &Target) -> Result<()> {
    let mb = filled(t, "lockout", &three("lockout")).await?;
    // 30 failures (the old per-mailbox wall), three from each of 127.0.0.2-11, at once.
    let mut guesses = tokio::task::JoinSet::new();
    for host in 2..=11u8 {
        for _ in 0..3 {
            guesses.spawn(wrong_login(
                Ipv4Addr::new(127, 0, 0, host),
                t.addr(Service::Pop3),
                t.connector().clone(),
                mb.user(),
            ));
        }
    }
    while let Some(done) = guesses.join_next().await {
        done.context("guessing client")??;
    }
    let mut c = login(t, &mb)
        .await
        .context("the archiver's right password after others failed")?;
    let stat = c.pop_ok("STAT").await?;
    ensure!(stat.starts_with("+OK 3 "), "STAT {stat:?}");
    c.pop_ok("QUIT").await?;
    Ok(())
}

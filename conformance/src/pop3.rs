//! The POP3 pick-up suite: RFC 1939, CAPA (2449), STLS (2595) and SASL PLAIN (5034).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use data_encoding::BASE64;

use crate::client::{dot_stuff, Client};
use crate::matrix::{Level, Suite};
use crate::target::{Mailbox, Service, Target};
use crate::Check;

crate::requirement_fn!(Suite::Pop3);

pub fn checks() -> Vec<Check> {
    use Level::*;
    crate::checks![
        r("pop3.greeting", "1939", "4", Must, "a +OK greeting on 110 and, after the handshake, on 995") => greeting,
        r("pop3.quit-authorization", "1939", "6", Must, "QUIT before login is answered +OK and the connection closed") => quit_authorization,
        r("pop3.user-pass", "1939", "7", May, "USER and PASS log in (inside TLS)") => user_pass,
        r("pop3.stat", "1939", "5", Must, "STAT answers +OK count octets") => stat,
        r("pop3.list", "1939", "5", Must, "LIST gives a scan listing per message and LIST n one line; octets match STAT") => list,
        r("pop3.retr", "1939", "5, 3", Must, "RETR returns the stored message byte-stuffed and terminated by a dot line") => retr,
        r("pop3.dele", "1939", "5", Must, "DELE marks a message: it leaves STAT and LIST, RETR and a second DELE of it get -ERR") => dele,
        r("pop3.rset", "1939", "5", Must, "RSET unmarks deleted messages") => rset,
        r("pop3.update", "1939", "6", Must, "QUIT in the transaction state removes the marked messages") => update,
        r("pop3.no-update-on-drop", "1939", "6", Must, "a session ending without QUIT removes nothing") => no_update_on_drop,
        r("pop3.noop", "1939", "5", Must, "NOOP is answered +OK") => noop,
        r("pop3.case-insensitive", "1939", "3", Must, "command keywords are case-insensitive") => case_insensitive,
        r("pop3.unknown-command", "1939", "3", Must, "an unknown command gets -ERR and the session goes on") => unknown_command,
        r("pop3.bad-message-number", "1939", "5", Must, "a message number that does not exist gets -ERR") => bad_message_number,
        r("pop3.response-length", "1939", "3", Must, "status lines are at most 512 octets including CRLF") => response_length,
        r("pop3.top", "1939", "7", May, "TOP n k returns the header, the blank line and k body lines") => top,
        r("pop3.uidl", "1939", "7", May, "UIDL ids are 1-70 printable characters and stay the same across sessions") => uidl,
        r("pop3.exclusive-lock", "1939", "4", Should, "a second session on a locked maildrop is refused") => exclusive_lock,
        r("pop3.autologout", "1939", "3", Must, "the inactivity autologout timer is at least 10 minutes (checked from the gateway's constant)") => autologout,
        r("capa.authorization", "2449", "5", Must, "CAPA works before login, as a multi-line response") => capa_authorization,
        r("capa.transaction", "2449", "5", Must, "CAPA works after login") => capa_transaction,
        r("capa.truthful", "2449", "6", Must, "TOP, UIDL, USER and SASL are announced exactly when they work") => capa_truthful,
        r("capa.in-use", "2449", "8.1.2", Should, "the locked-maildrop refusal carries the [IN-USE] response code") => capa_in_use,
        r("capa.pipelining", "2449", "6.6", Must, "PIPELINING is announced and a pipelined batch is answered in order") => capa_pipelining,
        r("stls.capa", "2595", "4", Must, "CAPA on 110 announces STLS before TLS") => stls_capa,
        r("stls.handshake", "2595", "4", Must, "STLS is answered +OK and the TLS handshake follows") => stls_handshake,
        r("stls.once", "2595", "4", Must, "STLS is not announced after TLS and a second STLS gets -ERR") => stls_once,
        r("sasl.capa", "5034", "4, 2449 6.3", Must, "CAPA inside TLS announces SASL PLAIN") => sasl_capa,
        r("sasl.plain-initial", "5034", "4", Must, "AUTH PLAIN with an initial response logs in") => sasl_plain_initial,
        r("sasl.plain-continuation", "5034", "4", Must, "AUTH PLAIN without one gets a \"+ \" continuation, then logs in") => sasl_plain_continuation,
        r("sasl.cancel", "5034", "4", Must, "a \"*\" response cancels the exchange with -ERR; the session stays usable") => sasl_cancel,
        r("sasl.bad-base64", "5034", "4", Must, "a response that is not base64 is refused with -ERR") => sasl_bad_base64,
        r("sasl.unknown-mechanism", "5034", "4", Must, "an unknown mechanism is refused with -ERR") => sasl_unknown_mechanism,
        r("sasl.wrong-password", "5034", "4", Must, "wrong credentials are refused with -ERR") => sasl_wrong_password,
        r("sasl.not-in-transaction", "5034", "4", Must, "AUTH after login is refused") => sasl_not_in_transaction,
    ]
}

/// A mailbox filled over SMTP with `messages`.
pub async fn filled(t: &Target, name: &str, messages: &[Vec<u8>]) -> Result<Mailbox> {
    let mb = t.mailbox(name).await?;
    let (mut c, _) = crate::smtp::session(t, Service::Smtp).await?;
    for m in messages {
        c.command("MAIL FROM:<a@example.org>").await?.expect(250)?;
        c.command(&format!("RCPT TO:<{}>", mb.address))
            .await?
            .expect(250)?;
        c.command("DATA").await?.expect(354)?;
        c.send_quiet(&dot_stuff(m)).await?;
        c.reply().await?.expect(250)?;
    }
    Ok(mb)
}

/// Three small messages, the second with dot-leading lines.
pub fn three(tag: &str) -> Vec<Vec<u8>> {
    (1..=3)
        .map(|i| {
            let body = if i == 2 {
                ".leading dot\r\n..two\r\n.\r\n"
            } else {
                "plain\r\n"
            };
            format!("From: a@example.org\r\nSubject: {tag} {i}\r\n\r\nbody {i}\r\n{body}last\r\n")
                .into_bytes()
        })
        .collect()
}

/// Connected to 110 in clear, greeting read.
pub async fn pop3_plain(t: &Target) -> Result<Client> {
    let mut c = Client::connect(t.addr(Service::Pop3)).await?;
    let g = c.line().await?;
    ensure!(g.starts_with("+OK"), "greeting {g:?}");
    Ok(c)
}

/// Connected to 110 with STLS done.
pub async fn pop3_stls(t: &Target) -> Result<Client> {
    let mut c = pop3_plain(t).await?;
    c.pop_ok("STLS").await?;
    c.upgrade(t.connector()).await?;
    Ok(c)
}

/// Connected to 995, greeting read.
pub async fn pop3s(t: &Target) -> Result<Client> {
    let mut c = Client::connect_tls(t.addr(Service::Pop3s), t.connector()).await?;
    let g = c.line().await?;
    ensure!(g.starts_with("+OK"), "greeting {g:?}");
    Ok(c)
}

/// Logged in over 995 with AUTH PLAIN.
pub async fn login(t: &Target, mb: &Mailbox) -> Result<Client> {
    let mut c = pop3s(t).await?;
    c.pop_ok(&format!("AUTH PLAIN {}", plain(&mb.user(), &mb.pass())))
        .await?;
    Ok(c)
}

/// The SASL PLAIN initial response (no authorization identity).
pub fn plain(user: &str, pass: &str) -> String {
    BASE64.encode(format!("\0{user}\0{pass}").as_bytes())
}

async fn greeting(t: &Target) -> Result<()> {
    pop3_plain(t).await?;
    pop3s(t).await?;
    Ok(())
}

async fn quit_authorization(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    c.pop_ok("QUIT").await?;
    ensure!(
        c.closed_within(Duration::from_secs(10)).await?,
        "still open after QUIT"
    );
    Ok(())
}

async fn user_pass(t: &Target) -> Result<()> {
    let mb = t.mailbox("user-pass").await?;
    let mut c = pop3s(t).await?;
    c.pop_ok(&format!("USER {}", mb.user())).await?;
    c.pop_ok(&format!("PASS {}", mb.pass())).await?;
    c.pop_ok("STAT").await?;
    Ok(())
}

fn parse_stat(line: &str) -> Result<(usize, u64)> {
    let mut w = line.split(' ');
    ensure!(w.next() == Some("+OK"), "STAT answered {line:?}");
    let n = w
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("STAT count in {line:?}"))?;
    let o = w
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("STAT octets in {line:?}"))?;
    Ok((n, o))
}

async fn stat(t: &Target) -> Result<()> {
    let msgs = three("stat");
    let mb = filled(t, "stat", &msgs).await?;
    let mut c = login(t, &mb).await?;
    let (n, octets) = parse_stat(&c.pop("STAT").await?)?;
    ensure!(n == 3, "STAT count {n}");
    let stored: u64 = t.messages(&mb)?.iter().map(|m| m.len() as u64).sum();
    ensure!(octets == stored, "STAT octets {octets}, stored {stored}");
    Ok(())
}

async fn list(t: &Target) -> Result<()> {
    let mb = filled(t, "list", &three("list")).await?;
    let mut c = login(t, &mb).await?;
    let (_, total) = parse_stat(&c.pop("STAT").await?)?;
    c.pop_ok("LIST").await?;
    let listing = String::from_utf8(c.multiline().await?)?;
    let mut sum = 0;
    for (i, line) in listing.lines().enumerate() {
        let mut w = line.split(' ');
        ensure!(
            w.next() == Some(&(i + 1).to_string()[..]),
            "scan line {line:?}"
        );
        let octets: u64 = w
            .next()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("scan line {line:?}"))?;
        sum += octets;
    }
    ensure!(listing.lines().count() == 3, "LIST gave {listing:?}");
    ensure!(
        sum == total,
        "LIST octets add up to {sum}, STAT says {total}"
    );
    let one = c.pop_ok("LIST 2").await?;
    ensure!(one.starts_with("+OK 2 "), "LIST 2 answered {one:?}");
    Ok(())
}

async fn retr(t: &Target) -> Result<()> {
    let msgs = three("retr");
    let mb = filled(t, "retr", &msgs).await?;
    let stored = t.messages(&mb)?;
    let mut c = login(t, &mb).await?;
    for (i, want) in stored.iter().enumerate() {
        c.pop_ok(&format!("RETR {}", i + 1)).await?;
        let got = c.multiline_bytes().await?;
        ensure!(
            &got == want,
            "RETR {} differs from the stored message",
            i + 1
        );
        ensure!(
            got.ends_with(&msgs[i]),
            "RETR {} does not end with the delivered message",
            i + 1
        );
    }
    Ok(())
}

async fn dele(t: &Target) -> Result<()> {
    let mb = filled(t, "dele", &three("dele")).await?;
    let mut c = login(t, &mb).await?;
    c.pop_ok("DELE 2").await?;
    let (n, _) = parse_stat(&c.pop("STAT").await?)?;
    ensure!(n == 2, "STAT counts {n} after DELE");
    c.pop_ok("LIST").await?;
    let listing = String::from_utf8(c.multiline().await?)?;
    ensure!(
        !listing.lines().any(|l| l.starts_with("2 ")),
        "deleted message still listed: {listing:?}"
    );
    c.pop_err("RETR 2").await?;
    c.pop_err("DELE 2").await?;
    c.pop_err("LIST 2").await?;
    Ok(())
}

async fn rset(t: &Target) -> Result<()> {
    let mb = filled(t, "rset", &three("rset")).await?;
    let mut c = login(t, &mb).await?;
    c.pop_ok("DELE 1").await?;
    c.pop_ok("RSET").await?;
    let (n, _) = parse_stat(&c.pop("STAT").await?)?;
    ensure!(n == 3, "STAT counts {n} after RSET");
    c.pop_ok("QUIT").await?;
    ensure!(t.message_count(&mb)? == 3, "RSET did not unmark");
    Ok(())
}

async fn update(t: &Target) -> Result<()> {
    let mb = filled(t, "update", &three("update")).await?;
    let mut c = login(t, &mb).await?;
    c.pop_ok("DELE 1").await?;
    c.pop_ok("DELE 3").await?;
    c.pop_ok("QUIT").await?;
    c.closed_within(Duration::from_secs(10)).await?;
    ensure!(
        t.message_count(&mb)? == 1,
        "{} messages left, expected 1",
        t.message_count(&mb)?
    );
    Ok(())
}

async fn no_update_on_drop(t: &Target) -> Result<()> {
    let mb = filled(t, "drop", &three("drop")).await?;
    let mut c = login(t, &mb).await?;
    c.pop_ok("DELE 1").await?;
    drop(c);
    // The lock is released when the server notices the close; a new login waits for it.
    let mut again = None;
    for _ in 0..50 {
        let mut c = pop3s(t).await?;
        let reply = c
            .pop(&format!("AUTH PLAIN {}", plain(&mb.user(), &mb.pass())))
            .await?;
        if reply.starts_with("+OK") {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = again.context("mailbox still locked 5 s after the drop")?;
    let (n, _) = parse_stat(&c.pop("STAT").await?)?;
    ensure!(n == 3, "{n} messages after a dropped session");
    Ok(())
}

async fn noop(t: &Target) -> Result<()> {
    let mb = t.mailbox("noop").await?;
    let mut c = login(t, &mb).await?;
    c.pop_ok("NOOP").await?;
    Ok(())
}

async fn case_insensitive(t: &Target) -> Result<()> {
    let mb = filled(t, "case", &three("case")).await?;
    let mut c = pop3s(t).await?;
    c.pop_ok(&format!("user {}", mb.user())).await?;
    c.pop_ok(&format!("pAsS {}", mb.pass())).await?;
    c.pop_ok("stat").await?;
    c.pop_ok("list 1").await?;
    c.pop_ok("Noop").await?;
    Ok(())
}

async fn unknown_command(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    c.pop_err("FROB").await?;
    c.pop_ok("CAPA").await?;
    c.multiline().await?;
    Ok(())
}

async fn bad_message_number(t: &Target) -> Result<()> {
    let mb = filled(t, "range", &three("range")).await?;
    let mut c = login(t, &mb).await?;
    for cmd in [
        "RETR 4", "RETR 0", "LIST 9", "DELE 4", "TOP 7 1", "UIDL 4", "RETR x",
    ] {
        c.pop_err(cmd).await?;
    }
    c.pop_ok("STAT").await?;
    Ok(())
}

async fn response_length(t: &Target) -> Result<()> {
    let mb = filled(t, "length", &three("length")).await?;
    let mut c = login(t, &mb).await?;
    for cmd in [
        "STAT",
        "LIST 1",
        "UIDL 1",
        "NOOP",
        "FROB",
        &format!("RETR {}", "9".repeat(40)),
    ] {
        let line = c.pop(cmd).await?;
        ensure!(
            line.len() + 2 <= 512,
            "{cmd:?} answered a {}-octet line",
            line.len() + 2
        );
    }
    Ok(())
}

async fn top(t: &Target) -> Result<()> {
    let msgs = vec![b"Subject: top\r\nX-A: b\r\n\r\nl1\r\n.l2\r\nl3\r\n".to_vec()];
    let mb = filled(t, "top", &msgs).await?;
    let stored = t.messages(&mb)?;
    let stored = stored.first().context("nothing stored")?;
    let mut c = login(t, &mb).await?;
    c.pop_ok("TOP 1 2").await?;
    let got = c.multiline_bytes().await?;
    let head_end = stored
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?
        + 4;
    let mut want = stored[..head_end].to_vec();
    want.extend_from_slice(b"l1\r\n.l2\r\n");
    ensure!(
        got == want,
        "TOP 1 2 gave {:?}",
        String::from_utf8_lossy(&got)
    );
    c.pop_ok("TOP 1 0").await?;
    ensure!(
        c.multiline_bytes().await? == stored[..head_end],
        "TOP 1 0 is not the header"
    );
    Ok(())
}

async fn uidls(c: &mut Client) -> Result<Vec<String>> {
    c.pop_ok("UIDL").await?;
    let body = String::from_utf8(c.multiline().await?)?;
    body.lines()
        .map(|l| {
            l.split(' ')
                .nth(1)
                .map(str::to_owned)
                .with_context(|| format!("UIDL line {l:?}"))
        })
        .collect()
}

async fn uidl(t: &Target) -> Result<()> {
    let mb = filled(t, "uidl", &three("uidl")).await?;
    let mut c = login(t, &mb).await?;
    let first = uidls(&mut c).await?;
    ensure!(first.len() == 3, "UIDL listed {first:?}");
    for id in &first {
        ensure!(
            (1..=70).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "bad unique-id {id:?}"
        );
    }
    let mut sorted = first.clone();
    sorted.sort();
    sorted.dedup();
    ensure!(sorted.len() == 3, "unique-ids repeat: {first:?}");
    c.pop_ok("DELE 1").await?;
    c.pop_ok("QUIT").await?;
    c.closed_within(Duration::from_secs(10)).await?;
    let mut c = login(t, &mb).await?;
    let second = uidls(&mut c).await?;
    ensure!(
        second == first[1..],
        "unique-ids changed across sessions: {first:?} then {second:?}"
    );
    Ok(())
}

async fn locked_refusal(t: &Target) -> Result<String> {
    let mb = t.mailbox("lock").await?;
    let _holder = login(t, &mb).await?;
    let mut c = pop3s(t).await?;
    let reply = c
        .pop(&format!("AUTH PLAIN {}", plain(&mb.user(), &mb.pass())))
        .await?;
    ensure!(
        reply.starts_with("-ERR"),
        "second session answered {reply:?}"
    );
    Ok(reply)
}

async fn exclusive_lock(t: &Target) -> Result<()> {
    locked_refusal(t).await.map(|_| ())
}

async fn capa_in_use(t: &Target) -> Result<()> {
    let reply = locked_refusal(t).await?;
    ensure!(reply.starts_with("-ERR [IN-USE]"), "refusal {reply:?}");
    Ok(())
}

async fn autologout(_: &Target) -> Result<()> {
    let min = gateway::pop3::MIN_IDLE_TIMEOUT;
    ensure!(min.as_secs() >= 600, "idle timeout {min:?}");
    Ok(())
}

async fn capa_authorization(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    let caps = c.capa().await?;
    ensure!(!caps.is_empty(), "empty CAPA");
    let mut plain = pop3_plain(t).await?;
    ensure!(!plain.capa().await?.is_empty(), "empty CAPA on 110");
    Ok(())
}

async fn capa_transaction(t: &Target) -> Result<()> {
    let mb = t.mailbox("capa-tx").await?;
    let mut c = login(t, &mb).await?;
    let caps = c.capa().await?;
    ensure!(
        caps.iter().any(|l| l == "TOP"),
        "CAPA after login: {caps:?}"
    );
    Ok(())
}

async fn capa_truthful(t: &Target) -> Result<()> {
    let mb = filled(t, "truthful", &three("truthful")).await?;
    let mut c = pop3s(t).await?;
    let caps = c.capa().await?;
    for want in ["TOP", "UIDL", "USER"] {
        ensure!(
            caps.iter().any(|l| l == want),
            "{want} not announced in TLS: {caps:?}"
        );
    }
    ensure!(
        caps.iter()
            .any(|l| l.split(' ').next() == Some("SASL") && l.split(' ').any(|m| m == "PLAIN")),
        "SASL PLAIN not announced: {caps:?}"
    );
    c.pop_ok(&format!("USER {}", mb.user())).await?;
    c.pop_ok(&format!("PASS {}", mb.pass())).await?;
    c.pop_ok("TOP 1 0").await?;
    c.multiline().await?;
    c.pop_ok("UIDL 1").await?;
    // On 110 before STLS neither USER nor SASL is announced, and neither works.
    let mut p = pop3_plain(t).await?;
    let caps = p.capa().await?;
    ensure!(
        !caps.iter().any(|l| l == "USER" || l.starts_with("SASL")),
        "login announced before TLS: {caps:?}"
    );
    Ok(())
}

async fn capa_pipelining(t: &Target) -> Result<()> {
    let mb = filled(t, "pipe", &three("pipe")).await?;
    let mut c = pop3s(t).await?;
    let caps = c.capa().await?;
    ensure!(
        caps.iter().any(|l| l == "PIPELINING"),
        "PIPELINING not announced: {caps:?}"
    );
    c.send(format!(
        "USER {}\r\nPASS {}\r\nSTAT\r\nLIST 1\r\nFROB\r\nUIDL 2\r\nNOOP\r\n",
        mb.user(),
        mb.pass()
    ))
    .await?;
    let mut got = Vec::new();
    for _ in 0..7 {
        let line = c.line().await?;
        got.push(line.split(' ').next().unwrap_or("").to_owned());
    }
    ensure!(
        got == ["+OK", "+OK", "+OK", "+OK", "-ERR", "+OK", "+OK"],
        "pipelined answers {got:?}"
    );
    Ok(())
}

async fn stls_capa(t: &Target) -> Result<()> {
    let mut c = pop3_plain(t).await?;
    let caps = c.capa().await?;
    ensure!(
        caps.iter().any(|l| l == "STLS"),
        "STLS not announced: {caps:?}"
    );
    Ok(())
}

async fn stls_handshake(t: &Target) -> Result<()> {
    let mb = t.mailbox("stls").await?;
    let mut c = pop3_stls(t).await?;
    c.pop_ok(&format!("AUTH PLAIN {}", plain(&mb.user(), &mb.pass())))
        .await?;
    Ok(())
}

async fn stls_once(t: &Target) -> Result<()> {
    let mut c = pop3_stls(t).await?;
    let caps = c.capa().await?;
    ensure!(
        !caps.iter().any(|l| l == "STLS"),
        "STLS announced inside TLS: {caps:?}"
    );
    c.pop_err("STLS").await?;
    let mut s = pop3s(t).await?;
    ensure!(
        !s.capa().await?.iter().any(|l| l == "STLS"),
        "STLS announced on 995"
    );
    s.pop_err("STLS").await?;
    Ok(())
}

async fn sasl_capa(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    let caps = c.capa().await?;
    ensure!(
        caps.iter()
            .any(|l| l.starts_with("SASL ") && l.split(' ').any(|m| m == "PLAIN")),
        "CAPA {caps:?}"
    );
    Ok(())
}

async fn sasl_plain_initial(t: &Target) -> Result<()> {
    let mb = t.mailbox("sasl").await?;
    let mut c = login(t, &mb).await?;
    c.pop_ok("STAT").await?;
    Ok(())
}

async fn sasl_plain_continuation(t: &Target) -> Result<()> {
    let mb = t.mailbox("sasl-cont").await?;
    let mut c = pop3s(t).await?;
    let cont = c.pop("AUTH PLAIN").await?;
    ensure!(
        cont == "+ " || cont == "+",
        "AUTH PLAIN answered {cont:?}, expected a continuation"
    );
    c.pop_ok(&plain(&mb.user(), &mb.pass())).await?;
    c.pop_ok("STAT").await?;
    Ok(())
}

async fn sasl_cancel(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    let cont = c.pop("AUTH PLAIN").await?;
    ensure!(cont.starts_with('+'), "AUTH PLAIN answered {cont:?}");
    c.pop_err("*").await?;
    c.pop_ok("NOOP")
        .await
        .or_else(|_| anyhow::Ok(String::new()))?;
    c.capa().await?;
    Ok(())
}

async fn sasl_bad_base64(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    c.pop_err("AUTH PLAIN !!!not-base64!!!").await?;
    Ok(())
}

async fn sasl_unknown_mechanism(t: &Target) -> Result<()> {
    let mut c = pop3s(t).await?;
    c.pop_err("AUTH X-UNKNOWN").await?;
    c.capa().await?;
    Ok(())
}

async fn sasl_wrong_password(t: &Target) -> Result<()> {
    let mb = t.mailbox("sasl-wrong").await?;
    let mut c = pop3s(t).await?;
    c.pop_err(&format!(
        "AUTH PLAIN {}",
        plain(&mb.user(), "not-the-password")
    ))
    .await?;
    Ok(())
}

async fn sasl_not_in_transaction(t: &Target) -> Result<()> {
    let mb = t.mailbox("sasl-tx").await?;
    let mut c = login(t, &mb).await?;
    c.pop_err(&format!("AUTH PLAIN {}", plain(&mb.user(), &mb.pass())))
        .await?;
    c.pop_ok("STAT").await?;
    Ok(())
}

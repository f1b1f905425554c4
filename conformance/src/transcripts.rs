//! Canonical sessions as wire transcripts, for the insta snapshots in
//! `conformance/tests/snapshots/`. What differs from run to run is redacted: mailbox ids,
//! passwords and SASL credentials, queue ids, message sizes (the Received: field carries
//! the date and TLS cipher) and unique-ids.

use anyhow::Result;

use crate::client::{dot_stuff, Client};
use crate::pop3::{filled, plain, three};
use crate::smtp::session;
use crate::target::{Mailbox, Service, Target, EMAIL_DOMAIN};

/// Every canonical transcript by name, in a fixed order.
pub async fn all(t: &Target) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("smtp_delivery", smtp_delivery(t).await?),
        ("smtp_starttls", smtp_starttls(t).await?),
        ("smtp_errors", smtp_errors(t).await?),
        ("smtp_bdat", smtp_bdat(t).await?),
        ("pop3_stls_capabilities", pop3_stls(t).await?),
        ("pop3_pickup", pop3_pickup(t).await?),
    ])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Smtp,
    Pop3,
}

/// Joins a client's transcript with `secrets` replaced by their placeholders.
fn render(c: &Client, protocol: Protocol, secrets: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for line in c.transcript() {
        let mut line = line.clone();
        for (secret, placeholder) in secrets {
            if !secret.is_empty() {
                line = line.replace(secret, placeholder);
            }
        }
        out.push_str(&redact_line(&line, protocol));
        out.push('\n');
    }
    out
}

/// Redacts the run-dependent parts of one transcript line.
fn redact_line(line: &str, protocol: Protocol) -> String {
    if let Some(at) = line.find("queued as ") {
        return format!("{}queued as <queue-id>\\r\\n", &line[..at]);
    }
    if line.starts_with("   (multi-line body, ") {
        return "   (multi-line body)".into();
    }
    let Some(text) = line.strip_prefix("S: ") else {
        return line.to_owned();
    };
    if protocol == Protocol::Smtp {
        return line.to_owned();
    }
    let number = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
    // Every POP3 size includes our Received: field, whose length varies with the date.
    let words: Vec<String> = text
        .trim_end_matches("\\r\\n")
        .split(' ')
        .map(str::to_owned)
        .collect();
    let mut words = words;
    for i in 1..words.len() {
        if words[i].trim_end_matches(')') == "octets"
            && number(words[i - 1].trim_start_matches('('))
        {
            words[i - 1] = if words[i - 1].starts_with('(') {
                "(<n>".into()
            } else {
                "<n>".into()
            };
        }
    }
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let redacted = match w.as_slice() {
        // STAT and LIST n: "+OK count octets" / "+OK n octets".
        ["+OK", a, b] if number(a) && number(b) => format!("+OK {a} <n>"),
        // A scan listing line.
        [a, b] if number(a) && number(b) => format!("{a} <n>"),
        // A unique-id listing line, or UIDL n.
        [a, _] if number(a) => format!("{a} <uid>"),
        ["+OK", a, b] if number(a) && *b != "octets" => format!("+OK {a} <uid>"),
        _ => w.join(" "),
    };
    format!("S: {redacted}\\r\\n")
}

fn mailbox_secrets(mb: &Mailbox) -> Vec<(String, &'static str)> {
    vec![
        (plain(&mb.user(), &mb.pass()), "<credentials>"),
        (mb.pass(), "<password>"),
        (mb.user(), "mbx-<id>"),
    ]
}

fn as_refs<'a>(v: &'a [(String, &'static str)]) -> Vec<(&'a str, &'static str)> {
    v.iter().map(|(a, b)| (a.as_str(), *b)).collect()
}

async fn smtp_delivery(t: &Target) -> Result<String> {
    let mb = t.mailbox("transcript").await?;
    let mut c = Client::connect(t.addr(Service::Smtp)).await?;
    c.reply().await?;
    c.command("EHLO client.example.org").await?;
    c.command("MAIL FROM:<sender@example.org> BODY=8BITMIME")
        .await?;
    c.command(&format!("RCPT TO:<{}>", mb.address)).await?;
    c.command(&format!("RCPT TO:<nobody@{EMAIL_DOMAIN}>"))
        .await?;
    c.command("DATA").await?;
    c.send(dot_stuff(
        b"Subject: canonical\r\n\r\n.leading dot\r\nGr\xc3\xbc\xc3\x9fe\r\n",
    ))
    .await?;
    c.reply().await?;
    c.command("QUIT").await?;
    Ok(render(&c, Protocol::Smtp, &as_refs(&mailbox_secrets(&mb))))
}

async fn smtp_starttls(t: &Target) -> Result<String> {
    let mut c = Client::connect(t.addr(Service::Submission)).await?;
    c.reply().await?;
    c.command("EHLO client.example.org").await?;
    c.send("STARTTLS\r\nNOOP injected\r\n").await?;
    c.reply().await?;
    c.upgrade(t.connector()).await?;
    c.command("EHLO client.example.org").await?;
    c.command("STARTTLS").await?;
    c.command("QUIT").await?;
    Ok(render(&c, Protocol::Smtp, &[]))
}

async fn smtp_errors(t: &Target) -> Result<String> {
    // Two sessions: one with all these errors would reach the error limit and be closed.
    let mut out = String::new();
    for commands in [
        &[
            "RCPT TO:<x@example.org>",
            "DATA",
            "MAIL FROM:a@example.org",
            "MAIL FROM:<a@example.org> SIZE=999999999999",
            "MAIL FROM:<a@example.org> BODY=9BIT",
            "MAIL FROM:<jöran@exämple.org>",
            "MAIL FROM:<a@example.org>",
            "MAIL FROM:<b@example.org>",
            "RCPT TO:<victim@elsewhere.example>",
            "QUIT",
        ][..],
        &[
            "MAIL FROM:<a@example.org>",
            "RCPT TO:<nobody@archive.test>",
            "RCPT TO:<postmaster>",
            "STARTTLS now",
            "VRFY someone",
            "EXPN list",
            "HELP",
            "FROBNICATE",
            "RSET",
            "QUIT",
        ],
    ] {
        let (mut c, _) = session(t, Service::Smtp).await?;
        for cmd in commands {
            c.command(cmd).await?;
        }
        out.push_str(&render(&c, Protocol::Smtp, &[]));
        out.push_str("   ---\n");
    }
    Ok(out)
}

async fn smtp_bdat(t: &Target) -> Result<String> {
    let mb = t.mailbox("bdat-transcript").await?;
    let (mut c, _) = session(t, Service::Smtp).await?;
    c.send("BDAT 9\r\nNOOP\r\nxyz").await?;
    c.reply().await?;
    c.command("MAIL FROM:<a@example.org>").await?;
    c.command(&format!("RCPT TO:<{}>", mb.address)).await?;
    c.send("BDAT 12\r\nSubject: b\r\n").await?;
    c.reply().await?;
    c.send("BDAT 7 LAST\r\n\r\nbody\r\n").await?;
    c.reply().await?;
    c.command("QUIT").await?;
    Ok(render(&c, Protocol::Smtp, &as_refs(&mailbox_secrets(&mb))))
}

async fn pop3_stls(t: &Target) -> Result<String> {
    let mut c = crate::pop3::pop3_plain(t).await?;
    c.capa().await?;
    c.pop("USER someone").await?;
    c.send("STLS\r\nCAPA\r\n").await?;
    c.line().await?;
    c.upgrade(t.connector()).await?;
    c.capa().await?;
    c.pop("STLS").await?;
    c.pop("QUIT").await?;
    Ok(render(&c, Protocol::Pop3, &[]))
}

async fn pop3_pickup(t: &Target) -> Result<String> {
    let mb = filled(t, "pickup-transcript", &three("pickup")).await?;
    let mut c = Client::connect_tls(t.addr(Service::Pop3s), t.connector()).await?;
    c.line().await?;
    c.pop(&format!("AUTH PLAIN {}", plain(&mb.user(), &mb.pass())))
        .await?;
    c.pop("STAT").await?;
    c.pop("LIST").await?;
    c.multiline().await?;
    c.pop("UIDL 1").await?;
    c.pop("RETR 2").await?;
    c.multiline_bytes().await?;
    c.pop("DELE 1").await?;
    c.pop("RETR 1").await?;
    c.pop("RSET").await?;
    c.pop("TOP 9 0").await?;
    c.pop("QUIT").await?;
    Ok(render(&c, Protocol::Pop3, &as_refs(&mailbox_secrets(&mb))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_sizes_uids_and_queue_ids() {
        let pop = |l: &str| redact_line(l, Protocol::Pop3);
        assert_eq!(pop("S: +OK 3 1234\\r\\n"), "S: +OK 3 <n>\\r\\n");
        assert_eq!(pop("S: +OK 218 octets\\r\\n"), "S: +OK <n> octets\\r\\n");
        assert_eq!(
            pop("S: +OK maildrop has 3 messages (620 octets)\\r\\n"),
            "S: +OK maildrop has 3 messages (<n> octets)\\r\\n"
        );
        assert_eq!(pop("S: 2 456\\r\\n"), "S: 2 <n>\\r\\n");
        assert_eq!(pop("S: 2 a1b2-c\\r\\n"), "S: 2 <uid>\\r\\n");
        assert_eq!(pop("S: +OK 1 a1b2\\r\\n"), "S: +OK 1 <uid>\\r\\n");
        assert_eq!(pop("C: STAT\\r\\n"), "C: STAT\\r\\n");
        assert_eq!(
            pop("S: +OK capability list follows\\r\\n"),
            "S: +OK capability list follows\\r\\n"
        );
        let smtp = |l: &str| redact_line(l, Protocol::Smtp);
        assert_eq!(smtp("S: 250 CHUNKING\\r\\n"), "S: 250 CHUNKING\\r\\n");
        assert_eq!(
            smtp("S: 250 2.0.0 Ok: queued as S3.1\\r\\n"),
            "S: 250 2.0.0 Ok: queued as <queue-id>\\r\\n"
        );
    }
}

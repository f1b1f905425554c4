//! The SMTP command parser (`gateway::smtp::command`), fed one arbitrary command line.
//!
//! Beyond never panicking:
//! - SMTPUTF8 only ever permits more: a line that parses without it parses the same with it.
//! - Every parsed command, written back the way the proxy relays it (paths through their
//!   `Display`, parameters through `MailParams`'s), parses to the same command: what the
//!   gateway forwards means what the client sent.
//! - Parsed values respect the limits the parser promises (path and domain lengths, AUTH
//!   mechanism names).

#![no_main]

use gateway::smtp::address::{ForwardPath, ReversePath, MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH};
use gateway::smtp::command::Command;
use gateway_fuzz::auth_line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let strict = Command::parse(line, false);
    let lenient = Command::parse(line, true);
    if let Ok(command) = &strict {
        assert_eq!(
            lenient.as_ref(),
            Ok(command),
            "SMTPUTF8 changed a valid parse"
        );
    }
    let Ok(command) = lenient else {
        return;
    };
    check_limits(&command);
    let written = write(&command);
    assert!(
        !written.contains(['\r', '\n', '\0']),
        "written command carries a line break: {written:?}"
    );
    assert_eq!(
        Command::parse(written.as_bytes(), true),
        Ok(command),
        "written form {written:?} of {:?} does not parse back",
        String::from_utf8_lossy(line)
    );
});

/// The command as a client (or the proxy, towards its upstream) writes it.
fn write(command: &Command) -> String {
    match command {
        Command::Helo { domain } => format!("HELO {domain}"),
        Command::Ehlo { domain } => format!("EHLO {domain}"),
        Command::Mail { from, params } => {
            let params = params.to_string();
            if params.is_empty() {
                format!("MAIL FROM:<{from}>")
            } else {
                format!("MAIL FROM:<{from}> {params}")
            }
        }
        Command::Rcpt {
            to: ForwardPath::Postmaster,
        } => "RCPT TO:<Postmaster>".to_owned(),
        Command::Rcpt {
            to: ForwardPath::Mailbox(mailbox),
        } => format!("RCPT TO:<{mailbox}>"),
        Command::Data => "DATA".to_owned(),
        Command::Bdat { size, last: false } => format!("BDAT {size}"),
        Command::Bdat { size, last: true } => format!("BDAT {size} LAST"),
        Command::Rset => "RSET".to_owned(),
        Command::Noop => "NOOP".to_owned(),
        Command::Quit => "QUIT".to_owned(),
        Command::Vrfy => "VRFY x".to_owned(),
        Command::Expn => "EXPN x".to_owned(),
        Command::Help => "HELP".to_owned(),
        Command::StartTls => "STARTTLS".to_owned(),
        Command::Auth {
            mechanism,
            initial_response,
        } => auth_line(mechanism, initial_response.as_deref()),
    }
}

fn check_limits(command: &Command) {
    let mailbox = match command {
        Command::Mail {
            from: ReversePath::Mailbox(mailbox),
            ..
        }
        | Command::Rcpt {
            to: ForwardPath::Mailbox(mailbox),
        } => mailbox,
        // Address literals have no length of their own; the session's line limit bounds them.
        Command::Helo { domain } | Command::Ehlo { domain } if !domain.starts_with('[') => {
            assert!(
                !domain.is_empty() && domain.len() <= MAX_DOMAIN,
                "{domain:?}"
            );
            return;
        }
        Command::Auth { mechanism, .. } => {
            assert!(
                (1..=20).contains(&mechanism.len())
                    && mechanism.bytes().all(|b| b.is_ascii_uppercase()
                        || b.is_ascii_digit()
                        || b == b'-'
                        || b == b'_'),
                "{mechanism:?}"
            );
            return;
        }
        _ => return,
    };
    assert!(mailbox.local_part.len() <= MAX_LOCAL_PART, "{mailbox:?}");
    assert!(mailbox.domain.as_str().len() <= MAX_DOMAIN, "{mailbox:?}");
    // `<` + address + `>`, the address as written back (quotes and escapes included).
    assert!(mailbox.to_string().len() + 2 <= MAX_PATH, "{mailbox:?}");
}

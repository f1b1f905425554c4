//! A whole SMTP journal-target session (`gateway::smtp::Session`, sans-IO), fed a client's
//! byte stream (one selector byte, then the stream; see `Split`): commands, pipelining,
//! DATA and BDAT bodies, limits, errors. The shell is played here: mailbox ids answer by
//! their last digit (active, unknown, suspended, lookup failed), and every commit fails
//! temporarily, because the proof of a durable commit exists only inside the store.
//!
//! - Split independence: the bytes sent, the lookups, the messages (envelope and content)
//!   and their ends or aborts are the same whether the stream arrives whole or in pieces.
//!   Only an aborted message's content is left out: the shell drops it, and how much of it
//!   came out before the session saw the violation depends on the reads.
//! - No message content outside a message (after its end or abort).
//! - A message handed to the shell for commit is CRLF lines with none over 1000 octets.
//! - `Close` comes exactly once, last.

#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::mailbox::MailboxId;
use gateway::net::{Machine as _, Now};
use gateway::smtp::data::MAX_TEXT_LINE;
use gateway::smtp::interface::{ClientInfo, CommitFailure, Event as Output, RecipientStatus};
use gateway::smtp::{Machine, Session, SessionConfig};
use gateway_fuzz::{crlf_lines, Split};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::new(data) else {
        return;
    };
    let whole = converse(&[split.payload]);
    let pieces = converse(split.pieces());
    assert_eq!(whole, pieces, "the session depends on how reads split");
});

/// Everything the session did, with message content and sent bytes joined across outputs.
#[derive(Debug, PartialEq)]
enum Event {
    Sent(Vec<u8>),
    Lookup(String),
    MessageStart(String),
    MessageData(Vec<u8>),
    MessageEnd,
    MessageAbort(String),
    Close,
}

fn converse(pieces: &[&[u8]]) -> Vec<Event> {
    let config = SessionConfig {
        host_name: "mx.archive.example".into(),
        email_domain: "archive.example".into(),
        max_message_size: 10_000,
        max_recipients: 3,
        require_tls: false,
        tls_available: false,
        max_errors: 10,
        proxy: false,
        postmaster: MailboxId::parse("mbx-00000000000000000000000000000000").ok(),
        preauth_timeout: Duration::from_secs(60),
        transaction_timeout: Duration::from_secs(1800),
    };
    let client = ClientInfo {
        peer: Some([192, 0, 2, 7].into()),
        tls: None,
        allowed: true,
        session_id: "S1".into(),
    };
    let now = Now {
        instant: Instant::now(),
        utc: OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_715_000_000),
    };
    let mut session = Machine::Session(Session::new(Arc::new(config), client, now.instant));
    let mut events = Vec::new();
    drain(&mut session, &mut events);
    for piece in pieces {
        if !session.wants_input() {
            break;
        }
        session.handle_input(piece, now);
        drain(&mut session, &mut events);
    }
    session.handle_connection_lost();
    drain(&mut session, &mut events);
    assert_eq!(events.last(), Some(&Event::Close), "{events:?}");
    events
}

fn drain(session: &mut Machine, events: &mut Vec<Event>) {
    loop {
        let mut bytes = Vec::new();
        session.poll_transmit(Instant::now(), &mut bytes);
        if !bytes.is_empty() {
            assert_ne!(events.last(), Some(&Event::Close), "bytes after Close");
            match events.last_mut() {
                Some(Event::Sent(sent)) => sent.extend_from_slice(&bytes),
                _ => events.push(Event::Sent(bytes)),
            }
        }
        let Some(output) = session.poll_event() else {
            return;
        };
        assert_ne!(events.last(), Some(&Event::Close), "{output:?} after Close");
        let event = match output {
            Output::LookupRecipient(id) => {
                let id = id.to_string();
                session
                    .session()
                    .expect("a journal session")
                    .recipient_status(match id.as_bytes().last().map(|b| b % 4) {
                        Some(0) => RecipientStatus::Active,
                        Some(1) => RecipientStatus::Unknown,
                        Some(2) => RecipientStatus::Suspended,
                        _ => RecipientStatus::Unavailable,
                    });
                Event::Lookup(id)
            }
            Output::MessageStart(envelope) => Event::MessageStart(format!("{envelope:?}")),
            Output::MessageData(bytes) => {
                assert!(
                    open_message(events).is_some(),
                    "MessageData outside a message"
                );
                if let Some(Event::MessageData(data)) = events.last_mut() {
                    data.extend_from_slice(&bytes);
                    continue;
                }
                Event::MessageData(bytes)
            }
            Output::MessageEnd => {
                let start = open_message(events).expect("MessageEnd without MessageStart");
                let content: Vec<u8> = events[start..]
                    .iter()
                    .filter_map(|e| match e {
                        Event::MessageData(data) => Some(data.as_slice()),
                        _ => None,
                    })
                    .flatten()
                    .copied()
                    .collect();
                let lines = crlf_lines(&content).expect("a message to commit is CRLF lines");
                for line in lines {
                    assert!(
                        line.len() + 2 <= MAX_TEXT_LINE,
                        "line of {} octets",
                        line.len()
                    );
                }
                session
                    .session()
                    .expect("a journal session")
                    .commit_result(Err(CommitFailure::Temporary));
                Event::MessageEnd
            }
            Output::MessageAbort(reason) => {
                // Leave out the aborted content (see the module documentation).
                let start = open_message(events).expect("MessageAbort without MessageStart");
                let rest: Vec<Event> = events.drain(start + 1..).collect();
                for event in rest {
                    match (event, events.last_mut()) {
                        (Event::MessageData(_), _) => {}
                        (Event::Sent(more), Some(Event::Sent(sent))) => sent.extend(more),
                        (event, _) => events.push(event),
                    }
                }
                Event::MessageAbort(format!("{reason:?}"))
            }
            Output::Close => Event::Close,
            other @ (Output::StartTls | Output::ProxyLogin(_) | Output::Upstream(_)) => {
                panic!("{other:?} without TLS or proxy mode")
            }
        };
        events.push(event);
    }
}

/// The index of the `MessageStart` of the message still open, if one is.
fn open_message(events: &[Event]) -> Option<usize> {
    let last = events.iter().rposition(|e| {
        matches!(
            e,
            Event::MessageStart(_) | Event::MessageEnd | Event::MessageAbort(_)
        )
    })?;
    matches!(events[last], Event::MessageStart(_)).then_some(last)
}

//! The POP3 command parser (`gateway::pop3::command`) and the server session's line framing,
//! fed a stream of client input (one selector byte, then the bytes; see `Split`).
//!
//! - Every line of the stream that parses, written back canonically, parses to the same
//!   command, and `is_auth_line` agrees with the parser about AUTH.
//! - A `pop3::Session` before login (plaintext, no STLS, so no credentials are ever looked
//!   at) answers exactly the same bytes and asks for exactly the same actions whether the
//!   stream arrives in one read or in the fuzzer's pieces: its framing (bounded lines,
//!   overlong lines dropped to their LF, pipelining) does not depend on how reads split.

#![no_main]

use std::time::Instant;

use gateway::net::{Machine, Now};
use gateway::pop3::command::{is_auth_line, parse, Command};
use gateway::pop3::response::Reply;
use gateway::pop3::{Action, AuthFailure, Session, SessionConfig};
use gateway_fuzz::{auth_line, Split};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::new(data) else {
        return;
    };
    for line in split.payload.split(|&b| b == b'\n') {
        check_line(line.strip_suffix(b"\r").unwrap_or(line));
    }
    let whole = converse(&[split.payload]);
    let pieces = converse(split.pieces());
    assert_eq!(
        whole, pieces,
        "the session's answers depend on how reads split"
    );
});

fn check_line(line: &[u8]) {
    let Ok(command) = parse(line) else {
        return;
    };
    assert_eq!(
        matches!(command, Command::Auth { .. }),
        is_auth_line(line),
        "is_auth_line disagrees with the parser"
    );
    let written = write(command);
    assert_eq!(
        parse(written.as_bytes()),
        Ok(command),
        "written form {written:?} does not parse back"
    );
}

/// The command as a client writes it.
fn write(command: Command) -> String {
    match command {
        Command::User(name) => format!("USER {name}"),
        Command::Pass(password) => format!("PASS {password}"),
        Command::Auth {
            mechanism,
            initial_response,
        } => auth_line(mechanism, initial_response),
        Command::Capa => "CAPA".to_owned(),
        Command::Stls => "STLS".to_owned(),
        Command::Stat => "STAT".to_owned(),
        Command::List(None) => "LIST".to_owned(),
        Command::List(Some(n)) => format!("LIST {n}"),
        Command::Uidl(None) => "UIDL".to_owned(),
        Command::Uidl(Some(n)) => format!("UIDL {n}"),
        Command::Retr(n) => format!("RETR {n}"),
        Command::Top { message, lines } => format!("TOP {message} {lines}"),
        Command::Dele(n) => format!("DELE {n}"),
        Command::Rset => "RSET".to_owned(),
        Command::Noop => "NOOP".to_owned(),
        Command::Quit => "QUIT".to_owned(),
    }
}

/// What the session said and asked for, with the client's bytes arriving in `pieces`.
#[derive(Debug, PartialEq)]
struct Transcript {
    sent: Vec<u8>,
    actions: Vec<String>,
}

fn converse(pieces: &[&[u8]]) -> Transcript {
    // Time stands still: no timer runs out here.
    let now = Now {
        instant: Instant::now(),
        utc: OffsetDateTime::UNIX_EPOCH,
    };
    let mut session = Session::new(SessionConfig::new("pop.example", None, false), now.instant);
    let mut transcript = Transcript {
        sent: Vec::new(),
        actions: Vec::new(),
    };
    drain(&mut session, &mut transcript);
    for piece in pieces {
        if !session.wants_input() {
            break;
        }
        session.handle_input(piece, now);
        drain(&mut session, &mut transcript);
    }
    session.handle_connection_lost();
    drain(&mut session, &mut transcript);
    assert_eq!(
        transcript.actions.last().map(String::as_str),
        Some("Close"),
        "the session must end in exactly one Close"
    );
    transcript
}

/// Plays the shell: every login fails like a wrong password (there is no TLS, so none can
/// reach the store anyway).
fn drain(session: &mut Session, transcript: &mut Transcript) {
    loop {
        let before = transcript.sent.len();
        session.poll_transmit(std::time::Instant::now(), &mut transcript.sent);
        assert!(
            !closed(transcript) || transcript.sent.len() == before,
            "bytes after Close"
        );
        let Some(action) = session.poll_event() else {
            return;
        };
        let name = match &action {
            Action::ProxyLogin { .. } => "ProxyLogin",
            Action::StartTls => "StartTls",
            Action::Authenticate { .. } => "Authenticate",
            Action::RejectLogin => "RejectLogin",
            Action::StreamMessage { .. } => "StreamMessage",
            Action::Commit { .. } => "Commit",
            Action::Close => "Close",
        };
        assert!(!closed(transcript), "output after Close");
        transcript.actions.push(name.to_owned());
        match action {
            Action::Authenticate { .. } | Action::RejectLogin => {
                session.auth_result(Err(AuthFailure::WrongCredentials))
            }
            Action::ProxyLogin { .. } => session.proxy_result(Err(Reply::err("no"))),
            Action::StartTls | Action::StreamMessage { .. } | Action::Commit { .. } => {
                panic!("{name} without TLS and before login")
            }
            Action::Close => {}
        }
    }
}

fn closed(transcript: &Transcript) -> bool {
    transcript.actions.last().map(String::as_str) == Some("Close")
}

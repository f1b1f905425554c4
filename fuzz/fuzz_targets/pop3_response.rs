//! The POP3 proxy's upstream client (`gateway::pop3::client::UpstreamPop3`): its
//! status-line, CAPA, UIDL and multi-line readers and the un-stuffer, fed an arbitrary
//! upstream byte stream (one selector byte, then the stream; see `Split`). Bit 0x40 of the
//! selector starts on port 110 with STLS instead of implicit TLS; bit 0x20 gives a password
//! too long for AUTH PLAIN's initial response. Once logged in the proxy asks for one request
//! of every kind (queued, as a client pipelining them would).
//!
//! - Split independence, measured against the most patient upstream (one byte per read):
//!   the pieces give the same outputs (multi-line data compared as one stream), except that
//!   bytes arriving together with an answer before the core asked for them may end the
//!   session as early data; then everything before that failure is what the patient run
//!   produced up to there.
//! - Outputs keep their promises: credentials are never sent before TLS, every command is one
//!   line, every relayed status line is one line, data pieces, UIDL batches and CAPA lists
//!   stay within their limits, UIDs are 1 to 70 printable characters, and `Close` comes
//!   exactly once, last.

#![no_main]

use std::time::Instant;

use gateway::crypto::Secret;
use gateway::net::{Machine, Now};
use gateway::pop3::client::{
    Output, Request, Response, UpstreamConfig, UpstreamError, UpstreamPop3, UpstreamTls,
    MAX_CAPABILITIES, MAX_DATA_PIECE, MAX_LISTING_BATCH, MAX_UID_LEN,
};
use gateway_fuzz::Split;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

const REQUESTS: &[Request] = &[
    Request::Stat,
    Request::List(None),
    Request::List(Some(1)),
    Request::Uidl(None),
    Request::Uidl(Some(1)),
    Request::Retr(1),
    Request::Top(1, 0),
    Request::Dele(1),
    Request::Noop,
    Request::Rset,
    Request::Quit,
];

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::new(data) else {
        return;
    };
    let setup = Setup {
        tls: if data[0] & 0x40 != 0 {
            UpstreamTls::Stls
        } else {
            UpstreamTls::Implicit
        },
        password: if data[0] & 0x20 != 0 {
            "p".repeat(300)
        } else {
            "secret".to_owned()
        },
    };
    let bytewise: Vec<&[u8]> = split.payload.chunks(1).collect();
    let patient = setup.converse(&bytewise);
    let pieces = setup.converse(split.pieces());
    if patient == pieces {
        return;
    }
    let early_data = matches!(
        pieces.as_slice(),
        [.., Event::Failed(error), Event::Close] if is_early_data(error)
    );
    assert!(
        early_data,
        "the outputs depend on how reads split:\n  patient: {patient:?}\n  pieces:  {pieces:?}"
    );
    let before = &pieces[..pieces.len() - 2];
    assert!(
        is_prefix(before, &patient),
        "early data, but what came before differs:\n  patient: {patient:?}\n  pieces:  {pieces:?}"
    );
});

fn is_early_data(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::ResponseInjection => true,
        UpstreamError::Protocol(message) => {
            message == "the upstream sent data before it was asked"
                || message == "the upstream sent data nobody asked for"
        }
        _ => false,
    }
}

/// `short` is the start of `long`, where its last data may be the start of the data there.
fn is_prefix(short: &[Event], long: &[Event]) -> bool {
    let Some((last, rest)) = short.split_last() else {
        return true;
    };
    if long.len() < short.len() || rest != &long[..rest.len()] {
        return false;
    }
    match (last, &long[rest.len()]) {
        (Event::Data(start), Event::Data(whole)) => whole.starts_with(start),
        (last, other) => last == other,
    }
}

/// An output with data pieces and UIDL batches merged, so that runs compare as streams.
#[derive(Debug, PartialEq)]
enum Event {
    Send(Vec<u8>),
    StartTls,
    LoggedIn(Vec<String>),
    Response(Response),
    UniqueId(u32, String),
    MultiLineStart(Response),
    Data(Vec<u8>),
    Listing(Vec<(u32, String)>),
    End,
    Failed(UpstreamError),
    Close,
}

struct Setup {
    tls: UpstreamTls,
    password: String,
}

impl Setup {
    fn converse(&self, pieces: &[&[u8]]) -> Vec<Event> {
        let config = UpstreamConfig::new(self.tls, "user", Secret::new(self.password.clone()));
        // Time stands still: no timer runs out here.
        let now = Now {
            instant: Instant::now(),
            utc: OffsetDateTime::UNIX_EPOCH,
        };
        let mut core = UpstreamPop3::new(config, now.instant);
        let mut run = Run {
            events: Vec::new(),
            tls: self.tls == UpstreamTls::Implicit,
        };
        run.drain(&mut core);
        for piece in pieces {
            if !core.wants_input() {
                break;
            }
            core.handle_input(piece, now);
            run.drain(&mut core);
        }
        core.handle_connection_lost();
        run.drain(&mut core);
        assert!(
            matches!(run.events.last(), Some(Event::Close)),
            "{:?}",
            run.events
        );
        run.events
    }
}

struct Run {
    events: Vec<Event>,
    /// TLS is up (implicit, or after `StartTls`): only then may credentials leave.
    tls: bool,
}

impl Run {
    /// Plays the proxy: completes every TLS handshake at once and, once logged in, asks for
    /// every request. The core sends a command only after the answer to the one before, so
    /// its events come first, then what it sends.
    fn drain(&mut self, core: &mut UpstreamPop3) {
        loop {
            if let Some(output) = core.poll_event() {
                self.output(core, output);
                continue;
            }
            let mut bytes = Vec::new();
            core.poll_transmit(std::time::Instant::now(), &mut bytes);
            if bytes.is_empty() {
                return;
            }
            // Only the SASL cancel written as the core gave up may follow its Close here.
            assert!(
                !matches!(self.events.last(), Some(Event::Close)) || bytes[..] == b"*\r\n"[..],
                "bytes after Close"
            );
            assert!(
                bytes.ends_with(b"\r\n") && bytes.iter().filter(|&&b| b == b'\n').count() == 1,
                "a command is one line"
            );
            assert!(
                self.tls || bytes[..] == b"CAPA\r\n"[..] || bytes[..] == b"STLS\r\n"[..],
                "sent {:?} before TLS",
                String::from_utf8_lossy(&bytes)
            );
            self.events.push(Event::Send(bytes));
        }
    }

    fn output(&mut self, core: &mut UpstreamPop3, output: Output) {
        assert!(
            !matches!(self.events.last(), Some(Event::Close)),
            "{output:?} after Close"
        );
        let event = match output {
            Output::StartTls => {
                self.tls = true;
                core.tls_established();
                Event::StartTls
            }
            Output::LoggedIn { capabilities } => {
                assert!(capabilities.lines().len() <= MAX_CAPABILITIES);
                for line in capabilities.lines() {
                    assert!(!line.chars().any(char::is_control), "{line:?}");
                }
                for &request in REQUESTS {
                    let _ = core.command(request);
                }
                Event::LoggedIn(capabilities.lines().to_vec())
            }
            Output::Response(response) => {
                check_status_line(&response);
                Event::Response(response)
            }
            Output::UniqueId { message, uid } => {
                check_uid(&uid);
                Event::UniqueId(message, uid)
            }
            Output::MultiLineStart(response) => {
                check_status_line(&response);
                Event::MultiLineStart(response)
            }
            Output::MultiLineData(bytes) => {
                assert!(!bytes.is_empty() && bytes.len() <= MAX_DATA_PIECE);
                if let Some(Event::Data(data)) = self.events.last_mut() {
                    data.extend_from_slice(&bytes);
                    return;
                }
                Event::Data(bytes)
            }
            Output::UidlListing(entries) => {
                assert!(!entries.is_empty() && entries.len() <= MAX_LISTING_BATCH);
                for (_, uid) in &entries {
                    check_uid(uid);
                }
                if let Some(Event::Listing(listing)) = self.events.last_mut() {
                    listing.extend(entries);
                    return;
                }
                Event::Listing(entries)
            }
            Output::MultiLineEnd => Event::End,
            Output::Failed(error) => Event::Failed(error),
            Output::Close => Event::Close,
        };
        self.events.push(event);
    }
}

/// Relayed to the mail client as it is: exactly one line.
fn check_status_line(response: &Response) {
    let mut line = Vec::new();
    response.write_to(&mut line);
    let text = line
        .strip_suffix(b"\r\n")
        .expect("a status line ends in CRLF");
    assert!(
        !text.contains(&b'\r') && !text.contains(&b'\n'),
        "status line {:?} would be relayed as more than one line",
        String::from_utf8_lossy(&line)
    );
}

fn check_uid(uid: &str) {
    assert!(
        (1..=MAX_UID_LEN).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "uid {uid:?}"
    );
}

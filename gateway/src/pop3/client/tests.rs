//! Upstream client tests: scripted upstream transcripts (insta snapshot of the happy path),
//! the no-downgrade and injection guarantees, and properties of the multi-line reader.

use proptest::prelude::*;

use super::*;
use std::time::Duration;

use crate::net::Machine;
use crate::pop3::timer::testing::{at, run_out};
use crate::wire::dot::tests::expected as expected_content;
use crate::wire::dot::Stuffer;

const USER: &str = "alice@example.net";
const PASSWORD: &str = "s3cret-Pa55word";

fn config(tls: UpstreamTls) -> UpstreamConfig {
    UpstreamConfig::new(tls, USER, UpstreamPassword::new(PASSWORD))
}

/// base64("\0alice@example.net\0s3cret-Pa55word")
fn plain_b64() -> String {
    data_encoding::BASE64.encode(format!("\0{USER}\0{PASSWORD}").as_bytes())
}

/// Drives the core against a scripted upstream and records a transcript: `S:` upstream
/// lines fed in, `C:` lines the core sends, `O:` other outputs, `E:` shell events.
struct Harness {
    core: UpstreamPop3,
    transcript: String,
    /// Every byte the core ever sent, and the bytes it sent before TLS was established.
    sent: Vec<u8>,
    sent_before_tls: Vec<u8>,
    tls: bool,
    unsent: Vec<u8>,
    outputs: Vec<Output>,
    /// Concatenated MultiLineData.
    data: Vec<u8>,
}

impl Harness {
    fn new(tls: UpstreamTls) -> Self {
        Self::with_config(config(tls))
    }

    fn with_config(config: UpstreamConfig) -> Self {
        let tls = config.tls == UpstreamTls::Implicit;
        let mut harness = Self {
            core: UpstreamPop3::new(config, std::time::Instant::now()),
            transcript: String::new(),
            sent: Vec::new(),
            sent_before_tls: Vec::new(),
            tls,
            unsent: Vec::new(),
            outputs: Vec::new(),
            data: Vec::new(),
        };
        harness.drain();
        harness
    }

    /// The upstream sends these lines (CRLF added to each) in one read.
    fn server(&mut self, lines: &[&str]) {
        let mut bytes = Vec::new();
        for line in lines {
            self.transcript.push_str(&format!("S: {line}\n"));
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        self.core
            .handle_input(&bytes, at(std::time::Instant::now()));
        self.drain();
    }

    fn server_raw(&mut self, bytes: &[u8]) {
        self.transcript
            .push_str(&format!("S: {:?}\n", String::from_utf8_lossy(bytes)));
        self.core.handle_input(bytes, at(std::time::Instant::now()));
        self.drain();
    }

    fn event(&mut self, name: &str, f: impl FnOnce(&mut UpstreamPop3)) {
        self.transcript.push_str(&format!("E: {name}\n"));
        f(&mut self.core);
        self.drain();
    }

    fn tls_established(&mut self) {
        self.tls = true;
        self.event("tls_established", |c| c.tls_established());
    }

    fn request(&mut self, request: Request) {
        self.event(&format!("command({request:?})"), |c| {
            c.command(request).unwrap()
        });
    }

    /// Events first, then the bytes: the core sends its next command only after the answer
    /// to the one before.
    fn drain(&mut self) {
        while let Some(output) = self.core.poll_event() {
            if let Output::MultiLineData(bytes) = &output {
                assert!(!bytes.is_empty() && bytes.len() <= MAX_DATA_PIECE);
                self.data.extend_from_slice(bytes);
            }
            self.transcript.push_str(&format!("O: {output:?}\n"));
            self.outputs.push(output);
        }
        let mut bytes = Vec::new();
        self.core
            .poll_transmit(std::time::Instant::now(), &mut bytes);
        self.sent.extend_from_slice(&bytes);
        if !self.tls {
            self.sent_before_tls.extend_from_slice(&bytes);
        }
        self.unsent.extend_from_slice(&bytes);
        while let Some(end) = self.unsent.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = self.unsent.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&line[..end]).into_owned();
            assert!(!text.contains(['\r', '\n']), "bare line end sent: {text:?}");
            self.transcript.push_str(&format!("C: {text}\n"));
        }
    }

    fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    fn failure(&self) -> Option<&UpstreamError> {
        self.outputs.iter().find_map(|o| match o {
            Output::Failed(e) => Some(e),
            _ => None,
        })
    }

    fn closes(&self) -> usize {
        self.outputs
            .iter()
            .filter(|o| matches!(o, Output::Close))
            .count()
    }

    fn credentials_sent_before_tls(&self) -> bool {
        let sent = String::from_utf8_lossy(&self.sent_before_tls);
        sent.contains(USER)
            || sent.contains(PASSWORD)
            || sent.contains(&plain_b64())
            || sent.contains("USER")
            || sent.contains("PASS")
            || sent.contains("AUTH")
    }

    /// Greeting, CAPA with STLS, STLS, handshake, CAPA over TLS with `caps`.
    fn through_stls(&mut self, caps: &[&str]) {
        self.server(&["+OK POP3 upstream ready <1896.697170952@upstream.example>"]);
        self.server(&["+OK", "TOP", "UIDL", "STLS", "USER", "."]);
        self.server(&["+OK Begin TLS negotiation"]);
        assert!(matches!(self.outputs.last(), Some(Output::StartTls)));
        assert!(!self.core.wants_input());
        self.tls_established();
        let mut lines = vec!["+OK capability list follows"];
        lines.extend_from_slice(caps);
        lines.push(".");
        self.server(&lines);
    }

    fn logged_in(&self) -> bool {
        self.outputs
            .iter()
            .any(|o| matches!(o, Output::LoggedIn { .. }))
    }
}

const MESSAGE_WIRE: &str = "+OK 120 octets\r\nFrom: a@example.net\r\nSubject: dots\r\n\r\n..leading dot\r\n...\r\nend.\r\n.\r\n";
const MESSAGE: &[u8] =
    b"From: a@example.net\r\nSubject: dots\r\n\r\n.leading dot\r\n..\r\nend.\r\n";

#[test]
fn happy_path_stls_auth_plain_transcript() {
    let mut h = Harness::new(UpstreamTls::Stls);
    h.through_stls(&["TOP", "UIDL", "USER", "SASL PLAIN LOGIN", "PIPELINING"]);
    h.server(&["+OK maildrop locked and ready"]);
    assert!(h.logged_in());
    assert!(h.core.is_idle());
    h.request(Request::Stat);
    h.server(&["+OK 2 320"]);
    h.request(Request::Uidl(None));
    h.server(&[
        "+OK unique-id listing follows",
        "1 whqtswO00WBw418f9t5JxYwZ",
        "2 QhdPYR:00WBw1Ph7x7",
        ".",
    ]);
    h.request(Request::Uidl(Some(1)));
    h.server(&["+OK 1 whqtswO00WBw418f9t5JxYwZ"]);
    h.request(Request::Retr(1));
    h.server_raw(MESSAGE_WIRE.as_bytes());
    h.request(Request::Dele(1));
    h.server(&["+OK message 1 deleted"]);
    h.request(Request::Retr(9));
    h.server(&["-ERR no such message"]);
    h.request(Request::Quit);
    h.server(&["+OK dewey POP3 server signing off (1 message deleted)"]);
    assert_eq!(h.data, MESSAGE);
    assert_eq!(h.closes(), 1);
    assert!(h.failure().is_none());
    assert!(!h.credentials_sent_before_tls());
    assert!(String::from_utf8_lossy(&h.sent).contains(&format!("AUTH PLAIN {}\r\n", plain_b64())));
    insta::assert_snapshot!(h.transcript);
}

#[test]
fn typed_answers() {
    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server(&["+OK hi"]);
    h.server(&["+OK", "SASL PLAIN", "."]);
    h.server(&["+OK welcome"]);
    let outputs = h.take_outputs();
    let Some(Output::LoggedIn { capabilities }) = outputs.last() else {
        panic!("{outputs:?}")
    };
    assert!(capabilities.sasl_plain());
    h.request(Request::Stat);
    h.server(&["+OK 2 320"]);
    h.request(Request::Uidl(Some(2)));
    h.server(&["+OK 2 abc"]);
    h.request(Request::Uidl(None));
    h.server(&["+OK", "1 x", "2 abc", "."]);
    h.request(Request::List(None));
    h.server(&["+OK 2 messages", "1 120", "2 200", "."]);
    let outputs = h.take_outputs();
    assert!(matches!(&outputs[0], Output::Response(r) if r.two_numbers() == Some((2, 320))));
    assert!(
        matches!(&outputs[1], Output::UniqueId { message: 2, uid } if uid == "abc"),
        "{outputs:?}"
    );
    assert!(matches!(&outputs[2], Output::MultiLineStart(r) if r.is_ok()));
    assert!(
        matches!(&outputs[3], Output::UidlListing(e) if *e == [(1, "x".to_owned()), (2, "abc".to_owned())])
    );
    assert!(matches!(&outputs[4], Output::MultiLineEnd));
    assert!(matches!(&outputs[5], Output::MultiLineStart(_)));
    assert!(matches!(&outputs[6], Output::MultiLineData(d) if d == b"1 120\r\n2 200\r\n"));
    assert!(matches!(&outputs[7], Output::MultiLineEnd));
    assert_eq!(outputs.len(), 8);
    // A malformed UIDL answer is a protocol error.
    h.request(Request::Uidl(Some(3)));
    h.server(&["+OK 4 abc"]);
    assert!(matches!(h.failure(), Some(UpstreamError::Protocol(_))));
}

#[test]
fn user_pass_when_sasl_plain_is_not_offered() {
    let mut h = Harness::new(UpstreamTls::Stls);
    h.through_stls(&["TOP", "UIDL", "USER", "SASL LOGIN XOAUTH2"]);
    h.server(&["+OK send PASS"]);
    h.server(&["+OK logged in"]);
    assert!(h.logged_in());
    let sent = String::from_utf8_lossy(&h.sent).into_owned();
    assert!(
        sent.ends_with(&format!("USER {USER}\r\nPASS {PASSWORD}\r\n")),
        "{sent}"
    );
    assert!(!sent.contains("AUTH"));
    assert!(!h.credentials_sent_before_tls());
}

#[test]
fn implicit_tls_logs_in_directly() {
    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server(&["+OK ready"]);
    // CAPA unsupported: USER/PASS.
    h.server(&["-ERR unknown command"]);
    h.server(&["+OK"]);
    h.server(&["+OK"]);
    assert!(h.logged_in());
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::StartTls)));
    assert_eq!(
        String::from_utf8_lossy(&h.sent),
        format!("CAPA\r\nUSER {USER}\r\nPASS {PASSWORD}\r\n")
    );
    let outputs = h.take_outputs();
    assert!(
        matches!(&outputs[..], [Output::LoggedIn { capabilities }] if capabilities.lines().is_empty())
    );
    // tls_established out of place is ignored.
    h.tls_established();
    assert!(h.outputs.is_empty() && h.core.is_idle());
}

#[test]
fn no_stls_in_capa_fails_without_sending_credentials() {
    let mut h = Harness::new(UpstreamTls::Stls);
    h.server(&["+OK ready"]);
    h.server(&["+OK", "TOP", "UIDL", "USER", "SASL PLAIN", "."]);
    assert_eq!(h.failure(), Some(&UpstreamError::NoTls));
    assert_eq!(h.closes(), 1);
    assert_eq!(h.sent, b"CAPA\r\n");
    assert!(!h.credentials_sent_before_tls());
    // Whatever follows is ignored; requests are refused.
    h.server(&["+OK"]);
    assert_eq!(h.core.command(Request::Stat), Err(RequestError::Closing));
    assert_eq!(h.sent, b"CAPA\r\n");
}

#[test]
fn capa_error_without_tls_is_no_tls() {
    let mut h = Harness::new(UpstreamTls::Stls);
    h.server(&["+OK ready"]);
    h.server(&["-ERR what?"]);
    assert_eq!(h.failure(), Some(&UpstreamError::NoTls));
    assert_eq!(h.sent, b"CAPA\r\n");
}

#[test]
fn stls_refused_fails_without_sending_credentials() {
    let mut h = Harness::new(UpstreamTls::Stls);
    h.server(&["+OK ready"]);
    h.server(&["+OK", "STLS", "."]);
    h.server(&["-ERR [SYS/TEMP] TLS unavailable"]);
    assert_eq!(h.failure(), Some(&UpstreamError::NoTls));
    assert_eq!(h.sent, b"CAPA\r\nSTLS\r\n");
    assert!(!h.credentials_sent_before_tls());
    // A shell that calls tls_established anyway gets nothing sent.
    h.tls_established();
    assert_eq!(h.sent, b"CAPA\r\nSTLS\r\n");
}

#[test]
fn response_injection_after_stls_is_refused() {
    let mut h = Harness::new(UpstreamTls::Stls);
    h.server(&["+OK ready"]);
    h.server(&["+OK", "STLS", "."]);
    h.server_raw(b"+OK begin TLS\r\n+OK injected\r\n");
    assert_eq!(h.failure(), Some(&UpstreamError::ResponseInjection));
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::StartTls)));
    assert_eq!(h.closes(), 1);
    h.tls_established();
    assert_eq!(h.sent, b"CAPA\r\nSTLS\r\n");

    // The same bytes in a later read, before the handshake.
    let mut h = Harness::new(UpstreamTls::Stls);
    h.server(&["+OK ready"]);
    h.server(&["+OK", "STLS", "."]);
    h.server(&["+OK begin TLS"]);
    assert!(matches!(h.outputs.last(), Some(Output::StartTls)));
    h.server_raw(b"+OK injected\r\n");
    assert_eq!(h.failure(), Some(&UpstreamError::ResponseInjection));
    h.tls_established();
    assert!(!h.credentials_sent_before_tls());
    assert_eq!(h.sent, b"CAPA\r\nSTLS\r\n");
}

#[test]
fn rejected_logins() {
    let mut h = Harness::new(UpstreamTls::Stls);
    h.through_stls(&["USER"]);
    h.server(&["+OK"]);
    h.server(&["-ERR [AUTH] invalid password"]);
    match h.failure() {
        Some(UpstreamError::AuthRejected(r)) => {
            assert_eq!((r.code(), r.text()), (Some("AUTH"), "invalid password"))
        }
        other => panic!("{other:?}"),
    }
    assert!(!h.logged_in());
    assert_eq!(h.closes(), 1);

    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server(&["+OK"]);
    h.server(&["+OK", "SASL PLAIN", "."]);
    h.server(&["-ERR [IN-USE] locked"]);
    assert!(
        matches!(h.failure(), Some(UpstreamError::AuthRejected(r)) if r.code() == Some("IN-USE"))
    );

    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server(&["+OK"]);
    h.server(&["-ERR"]);
    h.server(&["-ERR no such user"]);
    assert!(matches!(h.failure(), Some(UpstreamError::AuthRejected(_))));
    // PASS was never sent.
    assert!(!String::from_utf8_lossy(&h.sent).contains("PASS"));
}

#[test]
fn greeting_error_and_challenge_after_initial_response() {
    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server(&["-ERR [SYS/TEMP] overloaded"]);
    assert!(
        matches!(h.failure(), Some(UpstreamError::Unavailable(r)) if r.code() == Some("SYS/TEMP"))
    );
    assert!(h.sent.is_empty());

    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server(&["+OK"]);
    h.server(&["+OK", "SASL PLAIN", "."]);
    h.server(&["+ "]);
    assert!(matches!(h.failure(), Some(UpstreamError::Protocol(_))));
    assert!(String::from_utf8_lossy(&h.sent).ends_with("\r\n*\r\n"));
}

#[test]
fn long_credentials_use_the_plain_continuation() {
    let password = "p".repeat(300);
    let mut h = Harness::with_config(UpstreamConfig::new(
        UpstreamTls::Implicit,
        USER,
        UpstreamPassword::new(password.clone()),
    ));
    h.server(&["+OK"]);
    h.server(&["+OK", "SASL PLAIN", "."]);
    assert!(String::from_utf8_lossy(&h.sent).ends_with("CAPA\r\nAUTH PLAIN\r\n"));
    h.server(&["+ "]);
    let b64 = data_encoding::BASE64.encode(format!("\0{USER}\0{password}").as_bytes());
    assert!(String::from_utf8_lossy(&h.sent).ends_with(&format!("AUTH PLAIN\r\n{b64}\r\n")));
    h.server(&["+OK"]);
    assert!(h.logged_in());
}

#[test]
fn credentials_with_line_breaks_are_never_sent() {
    for (user, password) in [("a\r\nDELE 1", "pw"), ("a", "pw\r\nDELE 1"), ("a", "p\0w")] {
        let mut h = Harness::with_config(UpstreamConfig::new(
            UpstreamTls::Implicit,
            user,
            UpstreamPassword::new(password),
        ));
        assert_eq!(h.failure(), Some(&UpstreamError::UnsendableCredentials));
        h.server(&["+OK", "+OK"]);
        assert!(h.sent.is_empty());
    }
}

#[test]
fn overlong_line_is_a_protocol_error() {
    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server_raw(&vec![b'+'; MAX_RESPONSE_LINE + 10]);
    assert!(matches!(h.failure(), Some(UpstreamError::Protocol(m)) if m.contains("longer")));
    assert_eq!(h.closes(), 1);
    // But a message body may have lines of any length.
    let mut h = logged_in_implicit();
    h.request(Request::Retr(1));
    let line = vec![b'x'; 100_000];
    let mut wire = b"+OK\r\n".to_vec();
    wire.extend_from_slice(&line);
    wire.extend_from_slice(b"\r\n.\r\n");
    h.server_raw(&wire);
    assert!(h.failure().is_none());
    assert_eq!(h.data.len(), line.len() + 2);
    assert!(h.core.is_idle());
}

#[test]
fn unsolicited_data_is_a_protocol_error() {
    let mut h = logged_in_implicit();
    h.server(&["+OK surprise"]);
    assert!(matches!(h.failure(), Some(UpstreamError::Protocol(_))));
    // Bytes after a complete answer, before the next request was sent.
    let mut h = logged_in_implicit();
    h.request(Request::Noop);
    h.server(&["+OK", "+OK early"]);
    assert!(matches!(h.failure(), Some(UpstreamError::Protocol(_))));
}

#[test]
fn requests_queue_and_refusals() {
    let mut h = Harness::new(UpstreamTls::Implicit);
    assert_eq!(
        h.core.command(Request::Stat),
        Err(RequestError::NotLoggedIn)
    );
    h.server(&["+OK"]);
    h.server(&["-ERR"]);
    h.server(&["+OK"]);
    assert_eq!(
        h.core.command(Request::Stat),
        Err(RequestError::NotLoggedIn)
    );
    h.server(&["+OK"]);
    h.request(Request::Retr(1));
    h.request(Request::Dele(1));
    h.request(Request::Quit);
    assert_eq!(h.core.command(Request::Noop), Err(RequestError::Closing));
    // Only RETR is on the wire so far.
    assert!(String::from_utf8_lossy(&h.sent).ends_with("PASS s3cret-Pa55word\r\nRETR 1\r\n"));
    h.server_raw(b"+OK\r\nbody\r\n.\r\n");
    assert!(String::from_utf8_lossy(&h.sent).ends_with("RETR 1\r\nDELE 1\r\n"));
    h.server(&["+OK"]);
    assert!(String::from_utf8_lossy(&h.sent).ends_with("DELE 1\r\nQUIT\r\n"));
    h.server(&["+OK bye"]);
    assert!(h.core.is_closed());
    assert_eq!(h.closes(), 1);
    assert!(h.failure().is_none());
    h.event("connection_lost", |c| c.handle_connection_lost());
    assert!(h.failure().is_none());

    let mut h = logged_in_implicit();
    h.request(Request::Noop);
    for _ in 0..MAX_QUEUED_REQUESTS {
        h.request(Request::Noop);
    }
    assert_eq!(h.core.command(Request::Noop), Err(RequestError::QueueFull));
}

#[test]
fn lost_connection_and_timeout_mid_message() {
    let mut h = logged_in_implicit();
    h.request(Request::Retr(1));
    h.server_raw(b"+OK\r\npart of a mess");
    assert!(h.core.awaiting_upstream());
    h.event("connection_lost", |c| c.handle_connection_lost());
    assert_eq!(h.failure(), Some(&UpstreamError::Closed));
    assert!(!h.outputs.iter().any(|o| matches!(o, Output::MultiLineEnd)));
    assert_eq!(h.closes(), 1);
    h.event("timed_out", run_out);
    assert_eq!(h.closes(), 1);

    let mut h = logged_in_implicit();
    assert!(!h.core.awaiting_upstream());
    h.request(Request::Stat);
    h.event("timed_out", run_out);
    assert_eq!(h.failure(), Some(&UpstreamError::TimedOut));
}

#[test]
fn large_messages_stream_in_bounded_pieces() {
    let mut h = logged_in_implicit();
    h.request(Request::Retr(1));
    let body: Vec<u8> = (0..200_000u32)
        .map(|i| if i % 77 == 0 { b'\n' } else { b'.' })
        .collect();
    let mut wire = b"+OK\r\n".to_vec();
    let mut stuffer = Stuffer::new();
    stuffer.feed(&body, &mut wire);
    stuffer.finish(&mut wire);
    h.server_raw(&wire);
    assert!(h.failure().is_none());
    // Harness::drain asserts every piece is at most MAX_DATA_PIECE.
    let pieces = h
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::MultiLineData(_)))
        .count();
    assert!(pieces > 10);
    assert_eq!(h.data, expected_content(&body));
}

#[test]
fn secrets_never_in_debug() {
    let config = config(UpstreamTls::Stls);
    let debug = format!("{config:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(debug.contains("redacted"));
    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server(&["+OK"]);
    h.server(&["+OK", "."]);
    h.server(&["+OK"]);
    let mut core = UpstreamPop3::new(config, std::time::Instant::now());
    core.handle_input(b"+OK\r\n", at(std::time::Instant::now()));
    let debug = format!("{core:?} {:?}", h.core);
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert_eq!(
        h.transcript.matches(PASSWORD).count(),
        1,
        "only the C: PASS line"
    );
}

fn logged_in_implicit() -> Harness {
    let mut h = Harness::new(UpstreamTls::Implicit);
    h.server(&["+OK"]);
    h.server(&["+OK", "USER", "."]);
    h.server(&["+OK"]);
    h.server(&["+OK"]);
    assert!(h.logged_in());
    h.take_outputs();
    h
}

/// Feeds `RETR`'s answer to a logged-in core in pieces; returns the content and whether
/// the answer ended cleanly.
fn retr_in_pieces(wire: &[u8], cuts: &[usize]) -> (Vec<u8>, bool) {
    let mut h = logged_in_implicit();
    h.core.command(Request::Retr(1)).unwrap();
    h.drain();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for cut in cuts.into_iter().chain([wire.len()]) {
        h.core
            .handle_input(&wire[start..cut], at(std::time::Instant::now()));
        h.drain();
        start = cut;
    }
    let ended = h.failure().is_none()
        && h.core.is_idle()
        && matches!(h.outputs.last(), Some(Output::MultiLineEnd));
    (h.data, ended)
}

#[test]
fn retr_split_at_every_byte_boundary() {
    let wire = MESSAGE_WIRE.as_bytes();
    for split in 0..=wire.len() {
        assert_eq!(
            retr_in_pieces(wire, &[split]),
            (MESSAGE.to_vec(), true),
            "split at {split}"
        );
    }
    let every: Vec<usize> = (0..wire.len()).collect();
    assert_eq!(retr_in_pieces(wire, &every), (MESSAGE.to_vec(), true));
}

proptest! {
    #[test]
    fn retr_pieces_do_not_matter(
        body in proptest::collection::vec(
            prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut wire = b"+OK message follows\r\n".to_vec();
        let mut stuffer = Stuffer::new();
        stuffer.feed(&body, &mut wire);
        stuffer.finish(&mut wire);
        let (content, ended) = retr_in_pieces(&wire, &cuts);
        prop_assert!(ended);
        prop_assert_eq!(content, expected_content(&body));
        // Byte by byte too.
        let every: Vec<usize> = (0..wire.len()).collect();
        let (content, ended) = retr_in_pieces(&wire, &every);
        prop_assert!(ended);
        prop_assert_eq!(content, expected_content(&body));
    }

    #[test]
    fn arbitrary_upstream_bytes_never_panic_nor_leak_credentials(
        stls in any::<bool>(),
        script in proptest::collection::vec(
            prop_oneof![
                3 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Step::Bytes),
                3 => prop_oneof![
                    Just("+OK\r\n"), Just("-ERR x\r\n"), Just("+OK\r\nSTLS\r\nSASL PLAIN\r\n.\r\n"),
                    Just("+ \r\n"), Just(".\r\n"), Just("1 abc\r\n"), Just("..x\r\n"),
                    Just("+OK 1 abc\r\n"),
                ].prop_map(|s| Step::Bytes(s.as_bytes().to_vec())),
                1 => Just(Step::Tls),
                1 => (0u8..9, any::<u32>()).prop_map(|(k, n)| Step::Command(k, n)),
                1 => Just(Step::Lost),
                1 => Just(Step::Timeout),
            ],
            0..40),
    ) {
        let tls = if stls { UpstreamTls::Stls } else { UpstreamTls::Implicit };
        let mut h = Harness::new(tls);
        let mut tls_started = false;
        for step in script {
            match step {
                Step::Bytes(bytes) => h.core.handle_input(&bytes, at(std::time::Instant::now())),
                Step::Tls => {
                    // A well-behaved shell only completes a handshake it was asked for.
                    if h.outputs.iter().any(|o| matches!(o, Output::StartTls)) && !tls_started {
                        tls_started = true;
                        h.tls = true;
                        h.core.tls_established();
                    }
                }
                Step::Command(k, n) => {
                    let request = match k {
                        0 => Request::Stat,
                        1 => Request::List(Some(n)),
                        2 => Request::Uidl(None),
                        3 => Request::Uidl(Some(n)),
                        4 => Request::Retr(n),
                        5 => Request::Top(n, n),
                        6 => Request::Dele(n),
                        7 => Request::Rset,
                        _ => Request::Quit,
                    };
                    let _ = h.core.command(request);
                }
                Step::Lost => h.core.handle_connection_lost(),
                Step::Timeout => run_out(&mut h.core),
            }
            h.drain();
        }
        prop_assert!(!h.credentials_sent_before_tls());
        prop_assert!(h.closes() <= 1);
        if let Some(close) = h.outputs.iter().position(|o| matches!(o, Output::Close)) {
            prop_assert_eq!(close, h.outputs.len() - 1, "nothing after Close");
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Bytes(Vec<u8>),
    Tls,
    Command(u8, u32),
    Lost,
    Timeout,
}

#[test]
fn the_response_timer_runs_only_while_an_answer_is_awaited() {
    let start = std::time::Instant::now();
    let mut core = UpstreamPop3::new(config(UpstreamTls::Implicit), start);
    assert_eq!(core.poll_timeout(), Some(start + RESPONSE_TIMEOUT));
    // A read moves the deadline.
    let later = start + Duration::from_secs(100);
    core.handle_input(b"+OK\r\n", at(later));
    assert_eq!(core.poll_timeout(), Some(later + RESPONSE_TIMEOUT));
    core.handle_timeout(at(later + RESPONSE_TIMEOUT - Duration::from_nanos(1)));
    assert!(!core.is_closed());
    core.handle_timeout(at(later + RESPONSE_TIMEOUT));
    assert!(core.is_closed());
    assert!(std::iter::from_fn(|| core.poll_event())
        .any(|o| matches!(o, Output::Failed(UpstreamError::TimedOut))));

    // Logged in and idle: no timer. A request starts it from the driver's next look.
    let mut h = logged_in_implicit();
    assert_eq!(h.core.poll_timeout(), None);
    h.core.command(Request::Noop).unwrap();
    let due = h.core.poll_timeout().expect("awaiting the answer");
    let look = due + Duration::from_secs(7);
    h.core.handle_timeout(at(look));
    assert!(!h.core.is_closed(), "a restart does not fire");
    assert_eq!(h.core.poll_timeout(), Some(look + RESPONSE_TIMEOUT));
}

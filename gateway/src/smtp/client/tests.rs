//! Scripted upstream transcripts (a fake server feeding canned replies), the no-downgrade
//! and no-injection guarantees, and property tests over splits and arbitrary bytes.

use std::fmt::Write as _;
use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::net::{Machine as _, Now};
use crate::smtp::data::BodyViolation;
use crate::smtp::{EnhancedStatus, Reply};
use crate::wire::undot::decode_dot_terminated;
use crate::wire::undot::tests::crlf_lines;

const USER: &str = "alice@provider.example";
const PASSWORD: &str = "dummy-Passw0rd";

const GREETING: &[u8] = b"220 smtp.provider.example ESMTP ready\r\n";
const EHLO_BEFORE_TLS: &[u8] = b"250-smtp.provider.example hello\r\n250-PIPELINING\r\n\
250-SIZE 35882577\r\n250-8BITMIME\r\n250 STARTTLS\r\n";
const EHLO_AFTER_TLS: &[u8] = b"250-smtp.provider.example hello\r\n250-PIPELINING\r\n\
250-SIZE 35882577\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN\r\n";
const EHLO_LOGIN_ONLY: &[u8] = b"250-smtp.provider.example\r\n250 AUTH LOGIN\r\n";
const BODY: &[u8] = b"Subject: hi\r\n\r\n.hidden\r\n..two\r\n.\r\nend\r\n";

fn config(tls: UpstreamTls) -> UpstreamConfig {
    UpstreamConfig {
        ehlo_name: "gateway.example".into(),
        tls,
        credentials: Credentials::new(USER, PASSWORD),
        auth_preference: AuthPreference::default(),
    }
}

fn secrets() -> Vec<String> {
    vec![
        PASSWORD.to_owned(),
        data_encoding::BASE64.encode(PASSWORD.as_bytes()),
        data_encoding::BASE64.encode(format!("\0{USER}\0{PASSWORD}").as_bytes()),
        data_encoding::BASE64.encode(USER.as_bytes()),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Plays the shell and the upstream: feeds canned replies, collects what the core sends
/// and every other output, and writes a transcript.
struct Fake {
    core: UpstreamSmtp,
    /// The time commands leave at.
    at: Instant,
    /// Everything sent so far.
    sent: Vec<u8>,
    /// What was sent before `tls_established` (StartTls mode).
    sent_in_plaintext: Vec<u8>,
    tls_done: bool,
    events: Vec<Event>,
    transcript: String,
    /// How replies are cut into reads.
    cuts: Vec<usize>,
    /// Sent bytes not yet in the transcript (a line cut across two sends).
    unprinted: Vec<u8>,
}

impl Fake {
    fn new(tls: UpstreamTls) -> Self {
        let at = Instant::now();
        Self {
            core: UpstreamSmtp::new(config(tls), at).unwrap(),
            at,
            sent: Vec::new(),
            sent_in_plaintext: Vec::new(),
            tls_done: tls == UpstreamTls::Implicit,
            events: Vec::new(),
            transcript: String::new(),
            cuts: Vec::new(),
            unprinted: Vec::new(),
        }
    }

    fn with_cuts(mut self, cuts: Vec<usize>) -> Self {
        self.cuts = cuts;
        self
    }

    /// The upstream sends `bytes` (in reads cut at `self.cuts`).
    fn server(&mut self, bytes: &[u8]) {
        for line in String::from_utf8_lossy(bytes).split_inclusive("\r\n") {
            writeln!(self.transcript, "S: {}", line.trim_end_matches("\r\n")).unwrap();
        }
        let mut cuts: Vec<usize> = self
            .cuts
            .iter()
            .map(|cut| cut % (bytes.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            if cut > start {
                self.core.receive(&bytes[start..cut]);
            }
            start = cut;
        }
        self.drain();
    }

    fn tls_established(&mut self) {
        self.transcript.push_str("-- TLS handshake\n");
        self.tls_done = true;
        self.core.tls_established();
        self.drain();
    }

    /// The core's timer fires at `instant`.
    fn timer_at(&mut self, instant: Instant) {
        self.at = instant;
        self.core.handle_timeout(Now {
            instant,
            utc: time::OffsetDateTime::UNIX_EPOCH,
        });
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            let mut bytes = Vec::new();
            self.core.poll_transmit(self.at, &mut bytes);
            let output = if bytes.is_empty() {
                match self.core.poll_event() {
                    Some(event) => Some(event),
                    None => return,
                }
            } else {
                None
            };
            match output {
                None => {
                    // Body pieces are cut anywhere: the transcript shows whole lines.
                    self.unprinted.extend_from_slice(&bytes);
                    while let Some(end) = self.unprinted.windows(2).position(|w| w == b"\r\n") {
                        let line: Vec<u8> = self.unprinted.drain(..end + 2).collect();
                        let line = String::from_utf8_lossy(&line[..end]);
                        writeln!(self.transcript, "C: {line}").unwrap();
                    }
                    if !self.tls_done {
                        self.sent_in_plaintext.extend_from_slice(&bytes);
                    }
                    self.sent.extend_from_slice(&bytes);
                }
                Some(other) => {
                    writeln!(self.transcript, "-- {}", describe(&other)).unwrap();
                    self.events.push(other);
                }
            }
        }
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn take_sent(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.sent)
    }

    /// Greeting, EHLO, STARTTLS, handshake, EHLO, AUTH PLAIN: ready for a transaction.
    fn login_starttls(&mut self) {
        self.server(GREETING);
        self.server(EHLO_BEFORE_TLS);
        self.server(b"220 2.0.0 ready to start TLS\r\n");
        assert_eq!(self.take_events(), vec![Event::StartTls]);
        self.tls_established();
        self.server(EHLO_AFTER_TLS);
        self.server(b"235 2.7.0 authenticated\r\n");
        assert!(matches!(self.take_events()[..], [Event::Ready { .. }]));
    }

    fn assert_no_credentials_sent(&self) {
        for secret in secrets() {
            assert!(
                !contains(&self.sent, secret.as_bytes()),
                "{secret} was sent"
            );
        }
        assert!(!contains(&self.sent, b"AUTH"));
    }

    fn assert_failed(&mut self, error: UpstreamError) {
        assert_eq!(
            self.take_events(),
            vec![Event::Failed(error), Event::Closed]
        );
        assert!(self.core.is_closed());
    }
}

/// One output in the transcript: replies as the proxy would relay them.
fn describe(output: &Event) -> String {
    let wire = |reply: &Reply| reply.to_string().trim_end().replace("\r\n", " | ");
    match output {
        Event::Ready { extensions } => {
            let keywords: Vec<&str> = extensions.list.iter().map(|e| e.keyword.as_str()).collect();
            format!("Ready {}", keywords.join(" "))
        }
        Event::RcptResult { index, reply } => format!("RcptResult {index}: {}", wire(reply)),
        Event::MailRejected(reply) => format!("MailRejected: {}", wire(reply)),
        Event::DataAccepted(reply) => format!("DataAccepted: {}", wire(reply)),
        Event::DataRejected(reply) => format!("DataRejected: {}", wire(reply)),
        other => format!("{other:?}"),
    }
}

fn recipients(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| (*r).to_owned()).collect()
}

/// The full happy path; returns the fake for inspection.
fn happy_path(cuts: Vec<usize>) -> Fake {
    let mut fake = Fake::new(UpstreamTls::StartTls).with_cuts(cuts);
    fake.login_starttls();
    fake.core
        .send_envelope(
            "alice@provider.example",
            "SIZE=120 BODY=8BITMIME",
            &recipients(&["bob@example.org", "carol@example.net"]),
        )
        .unwrap();
    fake.drain();
    fake.server(b"250 2.1.0 sender ok\r\n");
    fake.server(b"250 2.1.5 recipient ok\r\n");
    fake.server(b"250 2.1.5 recipient ok\r\n");
    fake.server(b"354 go ahead\r\n");
    fake.core.data_chunk(&BODY[..20]).unwrap();
    fake.core.data_chunk(&BODY[20..]).unwrap();
    fake.core.data_end().unwrap();
    fake.drain();
    fake.server(b"250 2.0.0 queued as 12345\r\n");
    fake.core.quit();
    fake.drain();
    fake.server(b"221 2.0.0 bye\r\n");
    fake
}

#[test]
fn happy_path_starttls_auth_plain_two_recipients() {
    let fake = happy_path(Vec::new());
    insta::assert_snapshot!(fake.transcript);
    let ok = |detail| Reply::new(250, EnhancedStatus::new(2, 1, detail), "recipient ok");
    assert_eq!(
        fake.events,
        vec![
            Event::RcptResult {
                index: 0,
                reply: ok(5)
            },
            Event::RcptResult {
                index: 1,
                reply: ok(5)
            },
            Event::DataReady,
            Event::DataAccepted(Reply::new(
                250,
                EnhancedStatus::new(2, 0, 0),
                "queued as 12345"
            )),
            Event::Closed,
        ]
    );
}

#[test]
fn ready_carries_the_extensions_after_tls() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.server(GREETING);
    fake.server(EHLO_BEFORE_TLS);
    fake.server(b"220 go\r\n");
    fake.take_events();
    fake.tls_established();
    fake.server(EHLO_AFTER_TLS);
    fake.server(b"235 ok\r\n");
    let events = fake.take_events();
    let [Event::Ready { extensions }] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(extensions.has("ENHANCEDSTATUSCODES"));
    assert!(!extensions.has("STARTTLS"));
    assert_eq!(extensions.size_limit(), Some(35_882_577));
    assert!(fake.core.is_ready());
    assert!(fake.core.tls_active());
}

#[test]
fn auth_login_fallback() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.server(GREETING);
    fake.server(EHLO_BEFORE_TLS);
    fake.server(b"220 go\r\n");
    fake.tls_established();
    fake.take_sent();
    fake.server(EHLO_LOGIN_ONLY);
    assert_eq!(fake.take_sent(), b"AUTH LOGIN\r\n");
    fake.server(b"334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        fake.take_sent(),
        format!("{}\r\n", data_encoding::BASE64.encode(USER.as_bytes())).as_bytes()
    );
    fake.server(b"334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        fake.take_sent(),
        format!("{}\r\n", data_encoding::BASE64.encode(PASSWORD.as_bytes())).as_bytes()
    );
    fake.server(b"235 2.7.0 ok\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [Event::StartTls, Event::Ready { .. }]
    ));
}

#[test]
fn login_preference_is_honoured() {
    let mut config = config(UpstreamTls::Implicit);
    config.auth_preference = AuthPreference::LoginThenPlain;
    let start = Instant::now();
    let mut core = UpstreamSmtp::new(config, start).unwrap();
    core.receive(GREETING);
    core.receive(EHLO_AFTER_TLS);
    let mut sent = Vec::new();
    core.poll_transmit(start, &mut sent);
    assert!(sent.ends_with(b"AUTH LOGIN\r\n"));
}

#[test]
fn implicit_tls_path() {
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(GREETING);
    assert_eq!(fake.take_sent(), b"EHLO gateway.example\r\n");
    fake.server(EHLO_AFTER_TLS);
    let plain = data_encoding::BASE64.encode(format!("\0{USER}\0{PASSWORD}").as_bytes());
    assert_eq!(
        fake.take_sent(),
        format!("AUTH PLAIN {plain}\r\n").as_bytes()
    );
    fake.server(b"235 2.7.0 ok\r\n");
    assert!(matches!(fake.take_events()[..], [Event::Ready { .. }]));
}

#[test]
fn no_starttls_advertised_is_no_tls_and_nothing_else_is_sent() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.server(GREETING);
    // A downgrade: STARTTLS stripped, AUTH offered in plaintext.
    fake.server(b"250-smtp.provider.example\r\n250 AUTH PLAIN LOGIN\r\n");
    fake.assert_failed(UpstreamError::NoTls);
    assert_eq!(fake.sent, b"EHLO gateway.example\r\n");
    fake.assert_no_credentials_sent();
}

#[test]
fn starttls_refused_is_no_tls() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.server(GREETING);
    fake.server(EHLO_BEFORE_TLS);
    fake.server(b"454 4.7.0 TLS not available\r\n");
    fake.assert_failed(UpstreamError::NoTls);
    fake.assert_no_credentials_sent();
}

#[test]
fn bytes_after_the_starttls_reply_are_injection() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.server(GREETING);
    fake.server(EHLO_BEFORE_TLS);
    fake.server(b"220 ready\r\n250 injected\r\n");
    fake.assert_failed(UpstreamError::ResponseInjection);
    fake.assert_no_credentials_sent();
}

#[test]
fn bytes_in_a_later_read_before_the_handshake_are_injection() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.server(GREETING);
    fake.server(EHLO_BEFORE_TLS);
    fake.server(b"220 ready\r\n");
    assert_eq!(fake.take_events(), vec![Event::StartTls]);
    fake.server(b"2");
    fake.assert_failed(UpstreamError::ResponseInjection);
    // A late tls_established changes nothing.
    fake.tls_established();
    assert!(fake.take_events().is_empty());
    fake.assert_no_credentials_sent();
}

#[test]
fn a_partial_line_after_the_starttls_reply_is_injection_too() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.server(GREETING);
    fake.server(EHLO_BEFORE_TLS);
    fake.server(b"220 ready\r\n2");
    fake.assert_failed(UpstreamError::ResponseInjection);
}

#[test]
fn credentials_are_never_sent_before_tls_established() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    // Everything an upstream (or a man in the middle) could say before the handshake.
    for reply in [
        GREETING,
        b"250-x\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n",
        b"220 go\r\n",
    ] {
        fake.server(reply);
        // tls_established is not called; a misbehaving shell keeps feeding replies.
        fake.server(b"334 VXNlcm5hbWU6\r\n");
        fake.server(b"235 ok\r\n");
    }
    assert!(!fake.core.tls_active());
    assert!(fake.sent_in_plaintext == fake.sent);
    fake.assert_no_credentials_sent();
}

#[test]
fn auth_rejected() {
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(GREETING);
    fake.server(EHLO_AFTER_TLS);
    fake.server(b"535 5.7.8 authentication credentials invalid\r\n");
    fake.assert_failed(UpstreamError::AuthRejected(Reply::new(
        535,
        EnhancedStatus::new(5, 7, 8),
        "authentication credentials invalid",
    )));
}

#[test]
fn auth_login_rejected_at_the_password() {
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(GREETING);
    fake.server(EHLO_LOGIN_ONLY);
    fake.server(b"334 VXNlcm5hbWU6\r\n");
    fake.server(b"334 UGFzc3dvcmQ6\r\n");
    fake.server(b"535 5.7.8 no\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [Event::Failed(UpstreamError::AuthRejected(_)), Event::Closed]
    ));
}

#[test]
fn no_usable_mechanism_is_auth_unavailable() {
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(GREETING);
    fake.server(b"250-x\r\n250 AUTH XOAUTH2 CRAM-MD5\r\n");
    fake.assert_failed(UpstreamError::AuthUnavailable);
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(GREETING);
    fake.server(b"250 x\r\n");
    fake.assert_failed(UpstreamError::AuthUnavailable);
}

#[test]
fn greeting_other_than_220_is_rejected() {
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(b"554 5.7.1 go away\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [Event::Failed(UpstreamError::Rejected(ref reply)), Event::Closed] if reply.code() == 554
    ));
    assert!(fake.sent.is_empty());
}

fn ready_fake() -> Fake {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.login_starttls();
    fake.take_sent();
    fake
}

#[test]
fn refused_recipient_is_reported_with_the_upstream_reply() {
    let mut fake = ready_fake();
    fake.core
        .send_envelope("a@x.example", "", &recipients(&["bob@y", "nobody@y"]))
        .unwrap();
    fake.drain();
    fake.server(b"250 2.1.0 ok\r\n");
    fake.server(b"250 2.1.5 ok\r\n");
    fake.server(b"550 5.1.1 <nobody@y>: user unknown\r\n");
    assert_eq!(
        fake.take_sent(),
        b"MAIL FROM:<a@x.example>\r\nRCPT TO:<bob@y>\r\nRCPT TO:<nobody@y>\r\nDATA\r\n"
    );
    let events = fake.take_events();
    assert_eq!(
        events[1],
        Event::RcptResult {
            index: 1,
            reply: Reply::new(
                550,
                EnhancedStatus::new(5, 1, 1),
                "<nobody@y>: user unknown"
            )
        }
    );
    // The proxy can relay it as is.
    let Event::RcptResult { reply, .. } = &events[1] else {
        unreachable!()
    };
    assert_eq!(reply.to_bytes(), b"550 5.1.1 <nobody@y>: user unknown\r\n");
}

#[test]
fn all_recipients_refused_resets_the_transaction() {
    let mut fake = ready_fake();
    fake.core
        .send_envelope("a@x", "", &recipients(&["b@y"]))
        .unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    fake.server(b"550 5.1.1 unknown\r\n");
    assert_eq!(
        fake.take_sent(),
        b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRSET\r\n"
    );
    assert!(!fake.core.is_ready());
    fake.server(b"250 2.0.0 ok\r\n");
    let events = fake.take_events();
    assert_eq!(events.last(), Some(&Event::NoRecipientAccepted));
    assert!(fake.core.is_ready());
}

#[test]
fn message_refused_after_the_final_dot() {
    let mut fake = ready_fake();
    fake.core
        .send_envelope("a@x", "", &recipients(&["b@y"]))
        .unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    fake.server(b"250 ok\r\n");
    fake.server(b"354 go\r\n");
    fake.core.data_chunk(b"hello\r\n").unwrap();
    fake.core.data_end().unwrap();
    fake.drain();
    fake.server(b"554 5.7.1 spam\r\n");
    assert_eq!(
        fake.take_events().last(),
        Some(&Event::DataRejected(Reply::new(
            554,
            EnhancedStatus::new(5, 7, 1),
            "spam"
        )))
    );
    assert!(fake.core.is_ready());
}

#[test]
fn data_command_refused_resets_then_reports() {
    let mut fake = ready_fake();
    fake.core
        .send_envelope("a@x", "", &recipients(&["b@y"]))
        .unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    fake.server(b"250 ok\r\n");
    fake.server(b"554 5.5.1 no valid recipients\r\n");
    assert!(fake.take_sent().ends_with(b"DATA\r\nRSET\r\n"));
    fake.server(b"250 ok\r\n");
    assert!(matches!(
        fake.take_events().last(),
        Some(Event::DataRejected(reply)) if reply.code() == 554
    ));
    assert!(fake.core.is_ready());
}

#[test]
fn mail_refused_leaves_the_core_idle() {
    let mut fake = ready_fake();
    fake.core
        .send_envelope("a@x", "", &recipients(&["b@y"]))
        .unwrap();
    fake.drain();
    fake.server(b"553 5.7.1 sender not allowed\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [Event::MailRejected(ref reply)] if reply.code() == 553
    ));
    assert!(fake.core.is_ready());
    fake.core.reset().unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    assert_eq!(fake.take_events(), vec![Event::ResetDone]);
}

#[test]
fn mail_params_follow_the_upstream_extensions() {
    let mut fake = ready_fake();
    fake.core
        .send_envelope(
            "",
            "size=100 BODY=8BITMIME RET=HDRS ENVID=x",
            &recipients(&["b@y"]),
        )
        .unwrap();
    fake.drain();
    assert_eq!(fake.take_sent(), b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n");
}

#[test]
fn requests_are_checked() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    let rcpt = recipients(&["b@y"]);
    assert_eq!(
        fake.core.send_envelope("a@x", "", &rcpt),
        Err(UsageError::NotReady)
    );
    assert_eq!(fake.core.data_chunk(b"x"), Err(UsageError::NotReady));
    assert_eq!(fake.core.reset(), Err(UsageError::NotReady));
    let mut fake = ready_fake();
    for (from, params, rcpt, error) in [
        (
            "a@x\r\nRCPT TO:<evil@z>",
            "",
            recipients(&["b@y"]),
            UsageError::InvalidEnvelope,
        ),
        (
            "a@x",
            "",
            recipients(&["b@y\nDATA"]),
            UsageError::InvalidEnvelope,
        ),
        (
            "a@x",
            "SIZE=1\r\nRSET",
            recipients(&["b@y"]),
            UsageError::InvalidEnvelope,
        ),
        ("a@x", "", recipients(&[""]), UsageError::InvalidEnvelope),
        ("a@x", "", vec![], UsageError::NoRecipients),
        (
            "a@x",
            "SMTPUTF8",
            recipients(&["b@y"]),
            UsageError::Unsupported("SMTPUTF8"),
        ),
        (
            "a@x",
            "",
            recipients(&["bjørn@y"]),
            UsageError::Unsupported("SMTPUTF8"),
        ),
        (
            "a@x",
            "BODY=BINARYMIME",
            recipients(&["b@y"]),
            UsageError::Unsupported("BINARYMIME"),
        ),
    ] {
        assert_eq!(fake.core.send_envelope(from, params, &rcpt), Err(error));
    }
    fake.drain();
    assert!(fake.take_sent().is_empty());
    assert!(fake.core.is_ready());
}

#[test]
fn bare_line_ends_in_the_body_fail_without_the_final_dot() {
    for (body, violation) in [
        (
            &b"ok\r\nsmuggled\n.\nMAIL FROM:<x>\r\n"[..],
            BodyViolation::BareLf,
        ),
        (b"ok\r\nbad\r.\r\n", BodyViolation::BareCr),
    ] {
        let mut fake = ready_fake();
        fake.core
            .send_envelope("a@x", "", &recipients(&["b@y"]))
            .unwrap();
        fake.drain();
        fake.server(b"250 ok\r\n");
        fake.server(b"250 ok\r\n");
        fake.server(b"354 go\r\n");
        fake.take_sent();
        fake.take_events();
        fake.core.data_chunk(body).unwrap();
        fake.drain();
        fake.assert_failed(UpstreamError::Body(violation));
        assert!(!contains(&fake.sent, b"MAIL"));
        assert!(!contains(&fake.sent, b"\r\n.\r\n"));
        assert_eq!(fake.core.data_end(), Err(UsageError::Closed));
    }
}

#[test]
fn a_hanging_cr_at_data_end_fails() {
    let mut fake = ready_fake();
    fake.core
        .send_envelope("a@x", "", &recipients(&["b@y"]))
        .unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    fake.server(b"250 ok\r\n");
    fake.server(b"354 go\r\n");
    fake.take_events();
    fake.core.data_chunk(b"x\r").unwrap();
    fake.core.data_end().unwrap();
    fake.drain();
    fake.assert_failed(UpstreamError::Body(BodyViolation::BareCr));
}

#[test]
fn service_closing_at_any_point() {
    let mut fake = ready_fake();
    fake.core
        .send_envelope("a@x", "", &recipients(&["b@y"]))
        .unwrap();
    fake.drain();
    fake.server(b"421 4.4.2 timeout\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [
            Event::Failed(UpstreamError::ServiceClosing(_)),
            Event::Closed
        ]
    ));
    // While idle, too.
    let mut fake = ready_fake();
    fake.server(b"421 4.3.2 shutting down\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [
            Event::Failed(UpstreamError::ServiceClosing(_)),
            Event::Closed
        ]
    ));
}

#[test]
fn unsolicited_and_early_replies_are_protocol_errors() {
    let mut fake = ready_fake();
    fake.server(b"250 surprise\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [Event::Failed(UpstreamError::Protocol(_)), Event::Closed]
    ));
    // A reply to a command we have not sent yet.
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(b"220 hi\r\n250 early\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [Event::Failed(UpstreamError::Protocol(_)), Event::Closed]
    ));
}

#[test]
fn overlong_and_malformed_replies_are_protocol_errors() {
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(&vec![b'2'; MAX_REPLY_LINE + 10]);
    assert!(matches!(
        fake.take_events()[..],
        [Event::Failed(UpstreamError::Protocol(_)), Event::Closed]
    ));
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(b"hello\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [Event::Failed(UpstreamError::Protocol(_)), Event::Closed]
    ));
}

#[test]
fn quit_lost_connection_and_timeouts() {
    let mut fake = ready_fake();
    fake.core.quit();
    fake.drain();
    assert_eq!(fake.take_sent(), b"QUIT\r\n");
    // The upstream hangs up without a 221: still an orderly close.
    fake.core.connection_lost();
    fake.drain();
    assert_eq!(fake.take_events(), vec![Event::Closed]);
    fake.core.connection_lost();
    assert_eq!(fake.core.poll_timeout(), None);
    let later = fake.at + DATA_TERMINATION_TIMEOUT * 2;
    fake.timer_at(later);
    assert!(fake.take_events().is_empty());

    let mut fake = Fake::new(UpstreamTls::StartTls);
    let deadline = fake.at + COMMAND_TIMEOUT;
    assert_eq!(fake.core.poll_timeout(), Some(deadline));
    fake.timer_at(deadline);
    fake.assert_failed(UpstreamError::TimedOut);

    let mut fake = ready_fake();
    assert_eq!(fake.core.poll_timeout(), None);
    fake.core.connection_lost();
    fake.drain();
    fake.assert_failed(UpstreamError::ConnectionLost);

    // quit() while busy closes at once, without QUIT.
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.core.quit();
    fake.drain();
    assert_eq!(fake.take_events(), vec![Event::Closed]);
    assert!(fake.sent.is_empty());
}

#[test]
fn debug_output_never_shows_the_password() {
    let config = config(UpstreamTls::StartTls);
    let shown = format!("{config:?} {:?}", config.credentials);
    assert!(shown.contains(USER));
    let fake = happy_path(Vec::new());
    let shown = format!("{shown} {:?} {:?}", fake.core, fake.events);
    for secret in secrets().iter().take(3) {
        assert!(!shown.contains(secret.as_str()), "{shown}");
    }
    // The AUTH line is only ever transmitted, never part of an event or the core's Debug.
    let start = Instant::now();
    let mut core = UpstreamSmtp::new(config, start).unwrap();
    core.receive(GREETING);
    core.receive(EHLO_BEFORE_TLS);
    core.receive(b"220 go\r\n");
    core.tls_established();
    core.receive(EHLO_AFTER_TLS);
    let mut sent = Vec::new();
    let mut events = Vec::new();
    loop {
        core.poll_transmit(start, &mut sent);
        match core.poll_event() {
            Some(event) => events.push(event),
            None => break,
        }
    }
    assert!(contains(&sent, secrets()[2].as_bytes()));
    let shown = format!("{events:?} {core:?}");
    for secret in secrets() {
        assert!(!shown.contains(&secret), "{shown}");
    }
}

#[test]
fn invalid_configurations_are_refused() {
    let mut bad = config(UpstreamTls::Implicit);
    bad.ehlo_name = "gate way".into();
    assert_eq!(
        UpstreamSmtp::new(bad, Instant::now()).err(),
        Some(ConfigError::EhloName)
    );
    let mut bad = config(UpstreamTls::Implicit);
    bad.credentials = Credentials::new("a\0b", "pw");
    assert_eq!(
        UpstreamSmtp::new(bad, Instant::now()).err(),
        Some(ConfigError::Username)
    );
    let mut bad = config(UpstreamTls::Implicit);
    bad.credentials = Credentials::new("a", "");
    assert_eq!(
        UpstreamSmtp::new(bad, Instant::now()).err(),
        Some(ConfigError::Password)
    );
}

#[test]
fn every_split_of_the_multi_line_ehlo_reply_gives_the_same_result() {
    for cut in 0..=EHLO_AFTER_TLS.len() {
        let mut fake = Fake::new(UpstreamTls::Implicit);
        fake.server(GREETING);
        fake.core.receive(&EHLO_AFTER_TLS[..cut]);
        fake.core.receive(&EHLO_AFTER_TLS[cut..]);
        fake.drain();
        fake.server(b"235 ok\r\n");
        let events = fake.take_events();
        let [Event::Ready { extensions }] = &events[..] else {
            panic!("cut {cut}: {events:?}")
        };
        assert_eq!(extensions.list.len(), 5);
        assert!(contains(&fake.sent, b"AUTH PLAIN"));
    }
}

/// A pipelined group whose four replies come in one write, cut into reads at `cuts`.
fn pipelined_group(cuts: Vec<usize>) -> Vec<String> {
    let mut fake = ready_fake().with_cuts(cuts);
    fake.core
        .pipeline("a@b.example", "", &recipients(&["c@d", "e@f"]), true)
        .unwrap();
    fake.drain();
    fake.server(b"250-sender\r\n250 ok\r\n550 5.1.1 no\r\n250 2.1.5 ok\r\n354 go\r\n");
    reply_codes(&fake.take_events())
}

proptest! {
    /// However a pipelined group's replies are cut into reads, each is taken in turn.
    #[test]
    fn pipelined_replies_cut_anywhere(cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        prop_assert_eq!(
            pipelined_group(cuts),
            ["mail 250", "rcpt 0 550", "rcpt 1 250", "data ready"]
        );
    }

    /// However the upstream's bytes are cut into reads, the conversation is the same.
    #[test]
    fn read_boundaries_do_not_matter(cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let reference = happy_path(Vec::new());
        let fake = happy_path(cuts);
        prop_assert_eq!(fake.events, reference.events);
        prop_assert_eq!(fake.sent, reference.sent);
    }

    /// Arbitrary upstream bytes in any state never panic, never put credentials on the
    /// wire before TLS, and end at most one Closed.
    #[test]
    fn arbitrary_upstream_bytes(
        prefix in 0usize..6,
        reads in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![
                    Just(b'2'), Just(b'3'), Just(b'5'), Just(b'0'), Just(b' '), Just(b'-'),
                    Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>(),
                ],
                0..40,
            ),
            0..8,
        ),
    ) {
        let mut fake = Fake::new(UpstreamTls::StartTls);
        let script: [&[u8]; 5] = [
            GREETING,
            EHLO_BEFORE_TLS,
            b"220 go\r\n",
            EHLO_AFTER_TLS,
            b"235 ok\r\n",
        ];
        for (step, reply) in script.iter().enumerate().take(prefix) {
            fake.server(reply);
            if step == 2 {
                fake.tls_established();
            }
        }
        for read in &reads {
            fake.server(read);
        }
        fake.core.quit();
        fake.core.connection_lost();
        fake.drain();
        for secret in secrets() {
            prop_assert!(!contains(&fake.sent_in_plaintext, secret.as_bytes()));
        }
        prop_assert!(!contains(&fake.sent_in_plaintext, b"AUTH"));
        let closed = fake.events.iter().filter(|e| **e == Event::Closed).count();
        prop_assert_eq!(closed, 1);
        prop_assert_eq!(fake.events.last(), Some(&Event::Closed));
    }

    /// The body as sent, read back by the server side's DATA decoder, is the body exactly.
    #[test]
    fn sent_body_decodes_to_the_original(
        body in crlf_lines("[.a-z ]{0,12}", 10),
        cuts in proptest::collection::vec(any::<usize>(), 0..5),
    ) {
        let mut fake = ready_fake();
        fake.core.send_envelope("a@x", "", &recipients(&["b@y"])).unwrap();
        fake.drain();
        fake.server(b"250 ok\r\n");
        fake.server(b"250 ok\r\n");
        fake.server(b"354 go\r\n");
        fake.take_sent();
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        for cut in cuts.into_iter().chain([body.len()]) {
            fake.core.data_chunk(&body[start..cut]).unwrap();
            start = cut;
        }
        fake.core.data_end().unwrap();
        fake.drain();
        let wire = fake.take_sent();
        prop_assert_eq!(decode_dot_terminated(&wire), Ok(body));
    }
}

#[test]
fn stepwise_transaction_relays_each_reply() {
    let mut fake = Fake::new(UpstreamTls::StartTls);
    fake.login_starttls();
    fake.take_sent();
    // Nothing but MAIL may start a stepwise transaction.
    assert_eq!(fake.core.rcpt("bob@example.org"), Err(UsageError::NotReady));
    fake.core.mail("alice@provider.example", "SIZE=10").unwrap();
    fake.drain();
    assert_eq!(
        fake.take_sent(),
        b"MAIL FROM:<alice@provider.example> SIZE=10\r\n"
    );
    fake.server(b"250 2.1.0 sender ok\r\n");
    assert!(matches!(fake.take_events()[..], [Event::MailAccepted(_)]));
    // DATA needs an accepted recipient.
    assert_eq!(fake.core.data(), Err(UsageError::NoRecipients));
    fake.core.rcpt("nobody@example.org").unwrap();
    fake.drain();
    fake.server(b"550 5.1.1 no such user\r\n");
    let events = fake.take_events();
    assert!(
        matches!(&events[..], [Event::RcptResult { index: 0, reply }] if reply.code() == 550),
        "{events:?}"
    );
    assert_eq!(fake.core.data(), Err(UsageError::NoRecipients));
    fake.core.rcpt("bob@example.org").unwrap();
    fake.drain();
    fake.server(b"250 2.1.5 ok\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [Event::RcptResult { index: 1, .. }]
    ));
    fake.take_sent();
    fake.core.data().unwrap();
    fake.drain();
    assert_eq!(fake.take_sent(), b"DATA\r\n");
    fake.server(b"354 go\r\n");
    assert_eq!(fake.take_events(), vec![Event::DataReady]);
    fake.core.data_chunk(b"Subject: x\r\n\r\n.dot\r\n").unwrap();
    fake.core.data_end().unwrap();
    fake.drain();
    assert_eq!(fake.take_sent(), b"Subject: x\r\n\r\n..dot\r\n.\r\n");
    fake.server(b"250 2.0.0 queued\r\n");
    assert!(matches!(fake.take_events()[..], [Event::DataAccepted(_)]));
    assert!(fake.core.is_ready());
}

#[test]
fn stepwise_mail_rejected_and_reset() {
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(GREETING);
    fake.server(EHLO_AFTER_TLS);
    fake.server(b"235 ok\r\n");
    fake.take_events();
    fake.core.mail("a@b.example", "").unwrap();
    fake.drain();
    fake.server(b"553 5.7.1 sender not owned by user\r\n");
    assert!(matches!(fake.take_events()[..], [Event::MailRejected(_)]));
    assert!(fake.core.is_ready());
    // A client's RSET in the middle of the envelope resets the upstream too.
    fake.core.mail("a@b.example", "").unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    fake.take_events();
    fake.take_sent();
    fake.core.reset().unwrap();
    fake.drain();
    assert_eq!(fake.take_sent(), b"RSET\r\n");
    fake.server(b"250 ok\r\n");
    assert_eq!(fake.take_events(), vec![Event::ResetDone]);
    // Command injection through a recipient is impossible.
    fake.core.mail("a@b.example", "").unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    assert_eq!(
        fake.core.rcpt("x@y\r\nRCPT TO:<z@w>"),
        Err(UsageError::InvalidEnvelope)
    );
}

/// Each wait for a reply is due its RFC 5321 timeout after the command left, not after
/// the core was created or last heard from.
#[test]
fn deadlines_count_from_the_command_that_left() {
    let mut fake = ready_fake();
    assert_eq!(
        fake.core.poll_timeout(),
        None,
        "idle: the proxy's policy applies"
    );
    fake.at += std::time::Duration::from_secs(3600);
    fake.core.mail("a@example.org", "").unwrap();
    fake.drain();
    let deadline = fake.at + COMMAND_TIMEOUT;
    assert_eq!(fake.core.poll_timeout(), Some(deadline));
    // A timer from an earlier deadline does nothing.
    fake.timer_at(deadline - std::time::Duration::from_secs(1));
    assert!(fake.take_events().is_empty());
    fake.server(b"250 ok\r\n");
    fake.core.rcpt("b@example.org").unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    fake.core.data().unwrap();
    fake.drain();
    assert_eq!(
        fake.core.poll_timeout(),
        Some(fake.at + DATA_INITIATION_TIMEOUT)
    );
    fake.server(b"354 go\r\n");
    fake.at += std::time::Duration::from_secs(60);
    fake.core.data_chunk(b"line\r\n").unwrap();
    fake.drain();
    assert_eq!(fake.core.poll_timeout(), Some(fake.at + DATA_BLOCK_TIMEOUT));
    fake.core.data_end().unwrap();
    fake.drain();
    let deadline = fake.at + DATA_TERMINATION_TIMEOUT;
    assert_eq!(fake.core.poll_timeout(), Some(deadline));
    fake.take_events();
    fake.timer_at(deadline);
    fake.assert_failed(UpstreamError::TimedOut);
}

fn reply_codes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|event| match event {
            Event::MailAccepted(reply) => format!("mail {}", reply.code()),
            Event::MailRejected(reply) => format!("mail refused {}", reply.code()),
            Event::RcptResult { index, reply } => format!("rcpt {index} {}", reply.code()),
            Event::DataReady => "data ready".to_owned(),
            Event::DataRejected(reply) => format!("data refused {}", reply.code()),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_pipelined_group_leaves_in_one_write_and_its_replies_may_come_together() {
    let mut fake = ready_fake();
    let rcpt = recipients(&["nobody@example.org", "bob@example.org"]);
    fake.core
        .pipeline("alice@provider.example", "SIZE=10", &rcpt, true)
        .unwrap();
    let mut write = Vec::new();
    fake.core.poll_transmit(fake.at, &mut write);
    assert_eq!(
        write,
        b"MAIL FROM:<alice@provider.example> SIZE=10\r\nRCPT TO:<nobody@example.org>\r\n\
RCPT TO:<bob@example.org>\r\nDATA\r\n"
    );
    assert_eq!(
        fake.core.poll_timeout(),
        Some(fake.at + COMMAND_TIMEOUT),
        "the group's first reply is due a command's time after it left"
    );
    fake.server(b"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go\r\n");
    assert_eq!(
        reply_codes(&fake.take_events()),
        ["mail 250", "rcpt 0 550", "rcpt 1 250", "data ready"]
    );
    fake.core.data_chunk(b".dot\r\n").unwrap();
    fake.core.data_end().unwrap();
    fake.drain();
    assert_eq!(fake.take_sent(), b"..dot\r\n.\r\n");
    fake.server(b"250 2.0.0 queued\r\n");
    assert!(matches!(fake.take_events()[..], [Event::DataAccepted(_)]));
    assert!(fake.core.is_ready());
}

/// A group's replies are each due a command's timeout after the one before, not all of them
/// within one timeout of the group's write.
#[test]
fn each_reply_of_a_pipelined_group_gets_its_own_timeout() {
    let mut fake = ready_fake();
    let rcpt = recipients(&["a@d.example", "b@d.example", "c@d.example"]);
    fake.core.pipeline("x@y.example", "", &rcpt, true).unwrap();
    fake.drain();
    let four_minutes = std::time::Duration::from_secs(4 * 60);
    // MAIL's and the three RCPTs' replies, four minutes apart: 16 minutes in all.
    for reply in 1..=4 {
        let at = fake.at + four_minutes;
        let now = Now {
            instant: at,
            utc: time::OffsetDateTime::UNIX_EPOCH,
        };
        fake.core.handle_input(b"250 ok\r\n", now);
        fake.at = at;
        // The last RCPT's reply leaves DATA's 354 to wait for.
        let due = if reply < 4 {
            COMMAND_TIMEOUT
        } else {
            DATA_INITIATION_TIMEOUT
        };
        assert_eq!(
            fake.core.poll_timeout(),
            Some(at + due),
            "after reply {reply}"
        );
        fake.timer_at(at + due - std::time::Duration::from_secs(1));
        assert!(!fake.core.is_closed(), "timed out after reply {reply}");
        fake.at = at;
    }
    fake.take_events();
    fake.timer_at(fake.at + DATA_INITIATION_TIMEOUT);
    fake.assert_failed(UpstreamError::TimedOut);
}

#[test]
fn a_connection_lost_in_the_middle_of_a_groups_replies_fails_once() {
    let mut fake = ready_fake();
    fake.core
        .pipeline("x@y.example", "", &recipients(&["a@d.example"]), true)
        .unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    assert_eq!(reply_codes(&fake.take_events()), ["mail 250"]);
    fake.core.connection_lost();
    fake.drain();
    fake.assert_failed(UpstreamError::ConnectionLost);
}

#[test]
fn a_pipelined_group_behind_a_refused_mail_counts_for_nothing() {
    let mut fake = ready_fake();
    fake.core
        .pipeline("a@b.example", "", &recipients(&["c@d.example"]), true)
        .unwrap();
    fake.drain();
    fake.take_sent();
    // A server that takes the RCPT and DATA anyway: the lone dot ends it, nothing is sent.
    fake.server(b"553 5.7.1 sender not owned\r\n250 2.1.5 ok\r\n354 go\r\n");
    assert_eq!(
        reply_codes(&fake.take_events()),
        ["mail refused 553", "rcpt 0 250"]
    );
    assert_eq!(fake.take_sent(), b".\r\n");
    assert_eq!(
        fake.core.poll_timeout(),
        Some(fake.at + DATA_TERMINATION_TIMEOUT)
    );
    // Whatever the upstream makes of the empty message, the proxy hears the refusal.
    fake.server(b"250 2.0.0 queued as nothing\r\n");
    let events = fake.take_events();
    assert!(
        matches!(&events[..], [Event::DataRejected(reply)] if reply.code() == 554
            && reply.status() == Some(EnhancedStatus::new(5, 5, 1))),
        "{events:?}"
    );
    assert!(fake.core.is_ready());

    // The usual answer: DATA refused too; the upstream is reset before the next one.
    fake.core
        .pipeline("a@b.example", "", &recipients(&["c@d.example"]), true)
        .unwrap();
    fake.drain();
    fake.take_sent();
    fake.server(b"553 5.7.1 sender not owned\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n");
    assert_eq!(
        reply_codes(&fake.take_events()),
        ["mail refused 553", "rcpt 0 503"]
    );
    assert_eq!(fake.take_sent(), b"RSET\r\n");
    fake.server(b"250 2.0.0 ok\r\n");
    assert_eq!(reply_codes(&fake.take_events()), ["data refused 503"]);
    assert!(fake.core.is_ready());
}

#[test]
fn a_pipelined_group_without_data_goes_on_stepwise() {
    let mut fake = ready_fake();
    fake.core
        .pipeline("a@b.example", "", &recipients(&["nobody@d.example"]), false)
        .unwrap();
    fake.drain();
    assert_eq!(
        fake.take_sent(),
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@d.example>\r\n"
    );
    fake.server(b"250 ok\r\n550 no\r\n");
    assert_eq!(reply_codes(&fake.take_events()), ["mail 250", "rcpt 0 550"]);
    assert_eq!(fake.core.data(), Err(UsageError::NoRecipients));
    fake.core.rcpt("c@d.example").unwrap();
    fake.drain();
    fake.server(b"250 ok\r\n");
    assert_eq!(reply_codes(&fake.take_events()), ["rcpt 1 250"]);
    // Stepwise again: a reply nobody asked for is still an error.
    fake.core.data().unwrap();
    fake.drain();
    fake.server(b"354 go\r\n250 surprise\r\n");
    assert!(matches!(
        fake.take_events()[..],
        [
            Event::DataReady,
            Event::Failed(UpstreamError::Protocol(_)),
            Event::Closed
        ]
    ));
}

#[test]
fn pipelining_needs_the_extension_a_recipient_and_an_idle_core() {
    let mut fake = Fake::new(UpstreamTls::Implicit);
    fake.server(GREETING);
    fake.server(b"250-smtp.provider.example\r\n250 AUTH PLAIN\r\n");
    fake.server(b"235 ok\r\n");
    fake.take_events();
    assert!(!fake.core.pipelining());
    let rcpt = recipients(&["c@d.example"]);
    assert_eq!(
        fake.core.pipeline("a@b.example", "", &rcpt, true),
        Err(UsageError::Unsupported("PIPELINING"))
    );
    let mut fake = ready_fake();
    assert!(fake.core.pipelining());
    assert_eq!(
        fake.core.pipeline("a@b.example", "", &[], true),
        Err(UsageError::NoRecipients)
    );
    assert_eq!(
        fake.core
            .pipeline("a@b.example", "", &recipients(&["x@y\r\nDATA"]), true),
        Err(UsageError::InvalidEnvelope)
    );
    fake.core.pipeline("a@b.example", "", &rcpt, true).unwrap();
    assert_eq!(
        fake.core.pipeline("a@b.example", "", &rcpt, true),
        Err(UsageError::NotReady)
    );
    fake.take_sent();
    assert!(fake.sent.is_empty());
}

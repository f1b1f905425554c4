//! Session tests: canonical transcripts (insta snapshots), the smuggling and pipelining
//! guarantees, and a property test over arbitrary input.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use time::macros::datetime;
use time::OffsetDateTime;

use super::data::SMUGGLING_VARIANTS;
use super::interface::{AuthFailure, UpstreamCommand};
use super::*;
use crate::mailbox::MailboxId;
use crate::net::{Machine as _, Now, TlsActive};
use crate::store::Durable;

const NOW: OffsetDateTime = datetime!(2024-05-06 07:08:09 UTC);
const ALICE: &str = "mbx-0000000000000000000000000000000a";
const BOB: &str = "mbx-0000000000000000000000000000000b";
const SUSPENDED: &str = "mbx-00000000000000000000000000000005";
const UNKNOWN: &str = "mbx-0000000000000000000000000000dead";

fn config() -> SessionConfig {
    SessionConfig {
        host_name: "mx.archive.example".into(),
        email_domain: "archive.example".into(),
        max_message_size: 10_000,
        max_recipients: 3,
        require_tls: false,
        tls_available: true,
        max_errors: 10,
        proxy: false,
        postmaster: None,
        preauth_timeout: Duration::from_secs(60),
        transaction_timeout: Duration::from_secs(1800),
    }
}

fn proxy_config() -> SessionConfig {
    SessionConfig {
        proxy: true,
        ..config()
    }
}

fn client() -> ClientInfo {
    ClientInfo {
        peer: Some("192.0.2.7".parse().unwrap()),
        tls: None,
        allowed: true,
        session_id: "S1".into(),
    }
}

/// A message as the shell would have stored it.
#[derive(Debug)]
struct Stored {
    envelope: Envelope,
    body: Vec<u8>,
}

/// Plays the shell: answers lookups from a table, commits (or not) and writes a transcript.
struct Harness {
    session: Machine,
    /// The instant `NOW` stands for, and the instant of the latest input.
    start: Instant,
    at: Instant,
    transcript: String,
    mailboxes: HashMap<MailboxId, RecipientStatus>,
    draft: Option<(Envelope, Vec<u8>)>,
    stored: Vec<Stored>,
    /// `None`: leave commits pending for the test to answer.
    commit_with: Option<fn() -> Result<Durable, CommitFailure>>,
    commit_pending: bool,
    closed: bool,
    tls_requested: bool,
    /// Scripted upstream replies (proxy mode); defaults: 250, and 354 to DATA.
    upstream: VecDeque<Reply>,
    /// The answer to a proxy login.
    auth_answer: Result<(), AuthFailure>,
    /// The upstream of a proxy login offers PIPELINING.
    upstream_pipelining: bool,
    /// How long after the latest input the upstream answers.
    upstream_delay: Duration,
    /// The upstream connection fails after this many more replies.
    upstream_fails_after: Option<usize>,
}

impl Harness {
    fn new() -> Self {
        Self::with(config(), client())
    }

    fn with(config: SessionConfig, client: ClientInfo) -> Self {
        let mailboxes = [
            (ALICE, RecipientStatus::Active),
            (BOB, RecipientStatus::Active),
            (SUSPENDED, RecipientStatus::Suspended),
        ]
        .into_iter()
        .map(|(id, status)| (MailboxId::parse(id).unwrap(), status))
        .collect();
        let start = Instant::now();
        let mut harness = Self {
            session: Machine::Session(Session::new(Arc::new(config), client, start)),
            start,
            at: start,
            transcript: String::new(),
            mailboxes,
            draft: None,
            stored: Vec::new(),
            commit_with: Some(|| Ok(Durable::for_tests())),
            commit_pending: false,
            closed: false,
            tls_requested: false,
            upstream: VecDeque::new(),
            auth_answer: Ok(()),
            upstream_pipelining: false,
            upstream_delay: Duration::ZERO,
            upstream_fails_after: None,
        };
        harness.drain();
        harness
    }

    /// One write from the client.
    fn client(&mut self, bytes: &[u8]) {
        self.client_at(bytes, NOW);
    }

    /// One write from the client at a given time.
    fn client_at(&mut self, bytes: &[u8], now: OffsetDateTime) {
        for line in bytes.split_inclusive(|&byte| byte == b'\n') {
            writeln!(self.transcript, "C: {}", escape(line)).unwrap();
        }
        let now = self.now_at(now);
        self.at = now.instant;
        self.session.handle_input(bytes, now);
        self.drain();
    }

    /// `utc` as the session sees it: the instant is as far from `start` as `utc` from `NOW`.
    fn now_at(&self, utc: OffsetDateTime) -> Now {
        let offset = Duration::try_from(utc - NOW).expect("not before NOW");
        Now {
            instant: self.start + offset,
            utc,
        }
    }

    /// The time of the latest input.
    fn now(&self) -> Now {
        let offset = time::Duration::try_from(self.at - self.start).unwrap();
        Now {
            instant: self.at,
            utc: NOW + offset,
        }
    }

    /// How long after the latest input the session's timer fires.
    fn timeout(&self) -> Duration {
        self.session.poll_timeout().expect("a timer runs") - self.at
    }

    /// The session's timer fires at its deadline.
    fn fire_timer(&mut self) {
        let deadline = self.session.poll_timeout().expect("a timer runs");
        self.at = deadline;
        let now = self.now();
        self.session.handle_timeout(now);
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            let mut bytes = Vec::new();
            self.session.poll_transmit(self.at, &mut bytes);
            if !bytes.is_empty() {
                // One block per write (replies with no event between them), so coalescing
                // shows in the transcript.
                for line in bytes.split_inclusive(|&byte| byte == b'\n') {
                    writeln!(self.transcript, "S: {}", escape(line)).unwrap();
                }
                self.transcript.push_str("   ---\n");
            }
            let Some(output) = self.session.poll_event() else {
                return;
            };
            match output {
                Event::LookupRecipient(id) => {
                    let status = self
                        .mailboxes
                        .get(&id)
                        .copied()
                        .unwrap_or(RecipientStatus::Unknown);
                    writeln!(self.transcript, "~ lookup {id} -> {status:?}").unwrap();
                    self.session
                        .session()
                        .expect("session")
                        .recipient_status(status);
                }
                Event::MessageStart(envelope) => {
                    writeln!(self.transcript, "~ message start {envelope:?}").unwrap();
                    assert!(self.draft.is_none(), "MessageStart while a message is open");
                    self.draft = Some((envelope, Vec::new()));
                }
                Event::MessageData(bytes) => {
                    let (_, body) = self
                        .draft
                        .as_mut()
                        .expect("MessageData without MessageStart");
                    body.extend_from_slice(&bytes);
                }
                Event::MessageEnd => {
                    let (envelope, body) =
                        self.draft.take().expect("MessageEnd without MessageStart");
                    writeln!(self.transcript, "~ message end, {} octets:", body.len()).unwrap();
                    for line in body.split_inclusive(|&byte| byte == b'\n') {
                        writeln!(self.transcript, "  | {}", escape(line)).unwrap();
                    }
                    self.stored.push(Stored { envelope, body });
                    if let Machine::Relay(relay) = &mut self.session {
                        writeln!(self.transcript, "~ copy durable, final dot upstream").unwrap();
                        let reply = self.upstream.pop_front().unwrap_or_else(|| {
                            Reply::new(250, EnhancedStatus::new(2, 0, 0), "queued upstream")
                        });
                        let result = if reply.code() == 250 {
                            Ok((Durable::for_tests(), reply))
                        } else {
                            Err(reply)
                        };
                        relay.message_relayed(result, self.at + self.upstream_delay);
                        continue;
                    }
                    match self.commit_with {
                        Some(commit) => {
                            writeln!(self.transcript, "~ commit").unwrap();
                            self.session
                                .session()
                                .expect("session")
                                .commit_result(commit());
                        }
                        None => self.commit_pending = true,
                    }
                }
                Event::MessageAbort(reason) => {
                    writeln!(self.transcript, "~ message abort {reason:?}").unwrap();
                    assert!(
                        self.draft.take().is_some(),
                        "MessageAbort without MessageStart"
                    );
                }
                Event::StartTls => {
                    writeln!(self.transcript, "~ start TLS").unwrap();
                    self.tls_requested = true;
                }
                Event::Close => {
                    writeln!(self.transcript, "~ close").unwrap();
                    self.closed = true;
                }
                Event::ProxyLogin(credentials) => {
                    let login = &credentials.login;
                    writeln!(
                        self.transcript,
                        "~ proxy login user={} host={} port={:?} mailbox={} password={}",
                        login.remote_user,
                        login.host,
                        login.port,
                        login.mailbox,
                        credentials.password.expose().len()
                    )
                    .unwrap();
                    match self.auth_answer.clone() {
                        Ok(()) => self.session.login_accepted(self.upstream_pipelining),
                        Err(failure) => self
                            .session
                            .session()
                            .expect("session")
                            .auth_failed(failure),
                    }
                }
                Event::Upstream(command) => {
                    writeln!(self.transcript, "~ upstream {command:?}").unwrap();
                    // A reply for each command of a group, DATA's last.
                    let (commands, data) = match &command {
                        UpstreamCommand::Group { rcpt, data, .. } => (1 + rcpt.len(), *data),
                        UpstreamCommand::Data => (0, true),
                        _ => (1, false),
                    };
                    let defaults = std::iter::repeat_n(
                        Reply::new(250, EnhancedStatus::new(2, 0, 0), "upstream ok"),
                        commands,
                    )
                    .chain(data.then(|| Reply::plain(354, vec!["go ahead".into()])));
                    let at = self.at + self.upstream_delay;
                    let relay = self.session.relay().expect("relay");
                    for default in defaults {
                        if let Some(left) = self.upstream_fails_after.as_mut() {
                            if *left == 0 {
                                relay.upstream_failed(Reply::new(
                                    451,
                                    EnhancedStatus::new(4, 4, 2),
                                    "upstream lost",
                                ));
                                break;
                            }
                            *left -= 1;
                        }
                        let reply = self.upstream.pop_front().unwrap_or(default);
                        relay.upstream_reply(reply, at);
                    }
                }
            }
        }
    }

    fn establish_tls(&mut self) {
        assert!(self.tls_requested);
        writeln!(self.transcript, "~ TLS established").unwrap();
        self.session
            .session()
            .expect("session")
            .tls_established(TlsActive::assumed(
                "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
            ));
        self.drain();
    }

    fn commit(&mut self, result: Result<Durable, CommitFailure>) {
        assert!(self.commit_pending);
        self.commit_pending = false;
        writeln!(
            self.transcript,
            "~ commit {:?}",
            result.as_ref().map(|_| "durable")
        )
        .unwrap();
        self.session
            .session()
            .expect("session")
            .commit_result(result);
        self.drain();
    }

    /// The server's reply lines so far, without the transcript's decorations.
    fn replies(&self) -> Vec<&str> {
        self.transcript
            .lines()
            .filter_map(|line| line.strip_prefix("S: "))
            .map(|line| line.trim_end_matches("\\r\\n"))
            .collect()
    }

    fn last_reply(&self) -> &str {
        self.replies().last().copied().unwrap_or_default()
    }
}

fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn ehlo(harness: &mut Harness) {
    harness.client(b"EHLO client.example\r\n");
}

fn rcpt(id: &str) -> String {
    format!("RCPT TO:<{id}@archive.example>\r\n")
}

// ----- snapshots -----

#[test]
fn ehlo_before_and_after_tls() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"STARTTLS\r\n");
    harness.establish_tls();
    ehlo(&mut harness);
    harness.client(b"STARTTLS\r\n");
    insta::assert_snapshot!(harness.transcript);
}

#[test]
fn helo_has_no_extensions() {
    let mut harness = Harness::new();
    harness.client(b"HELO client.example\r\n");
    insta::assert_snapshot!(harness.transcript);
}

#[test]
fn full_transaction_with_two_recipients() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<journal@tenant.example> SIZE=100 BODY=8BITMIME\r\n");
    harness.client(rcpt(ALICE).as_bytes());
    harness.client(rcpt(&BOB.to_ascii_uppercase()).as_bytes());
    harness.client(b"DATA\r\n");
    harness.client(b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n");
    harness.client(b"QUIT\r\n");
    insta::assert_snapshot!(harness.transcript);
    assert!(harness.closed);
}

#[test]
fn pipelined_transaction_in_one_write() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    let mut batch = b"MAIL FROM:<>\r\n".to_vec();
    batch.extend_from_slice(rcpt(ALICE).as_bytes());
    batch.extend_from_slice(rcpt(UNKNOWN).as_bytes());
    batch.extend_from_slice(rcpt(BOB).as_bytes());
    batch.extend_from_slice(b"DATA\r\n");
    harness.client(&batch);
    harness.client(b"x\r\n.\r\nMAIL FROM:<>\r\n");
    harness.client(b"RSET\r\nQUIT\r\n");
    insta::assert_snapshot!(harness.transcript);
}

#[test]
fn starttls_discards_pipelined_commands() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<evil@example>\r\n");
    // Plaintext bytes arriving before the handshake completes are not commands either.
    harness.client(b"NOOP\r\n");
    harness.establish_tls();
    harness.client(b"MAIL FROM:<>\r\n");
    insta::assert_snapshot!(harness.transcript);
    assert_eq!(
        harness
            .replies()
            .iter()
            .filter(|reply| reply.starts_with("250 2.0.0 Ok"))
            .count(),
        0
    );
}

#[test]
fn refused_recipients() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<a@b.example>\r\n");
    for line in [
        rcpt(UNKNOWN),
        rcpt(SUSPENDED),
        format!("RCPT TO:<{ALICE}@other.example>\r\n"),
        "RCPT TO:<someone@archive.example>\r\n".into(),
        "RCPT TO:<postmaster>\r\n".into(),
        format!("RCPT TO:<{ALICE}@[192.0.2.1]>\r\n"),
        format!("RCPT TO:<\" {ALICE}\"@archive.example>\r\n"),
        rcpt(ALICE),
        format!("RCPT TO:<\"{ALICE}\"@ARCHIVE.example>\r\n"),
        rcpt(BOB),
        format!("RCPT TO:<@relay.example:{BOB}@archive.example>\r\n"),
        "RCPT TO:<jøran@archive.example>\r\n".into(),
    ] {
        harness.client(line.as_bytes());
    }
    insta::assert_snapshot!(harness.transcript);
}

#[test]
fn rcpt_checks_the_email_domain_of_the_moment() {
    // The handle the service shares; `LiveSettings` changes it on `SetSettings`.
    let domain = crate::settings::EmailDomain::from("archive.example");
    let config = SessionConfig {
        email_domain: domain.clone(),
        ..config()
    };
    let mut harness = Harness::with(config, client());
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<journal@tenant.example>\r\n");
    harness.client(rcpt(ALICE).as_bytes());
    assert_eq!(harness.last_reply(), "250 2.1.5 recipient ok");
    // Changed in the middle of the session: the next RCPT sees the new domain.
    domain.set("new.example");
    harness.client(rcpt(BOB).as_bytes());
    assert!(
        harness.last_reply().starts_with("550 5.7.1"),
        "{}",
        harness.last_reply()
    );
    harness.client(format!("RCPT TO:<{BOB}@NEW.example>\r\n").as_bytes());
    assert_eq!(harness.last_reply(), "250 2.1.5 recipient ok");
    harness.client(b"DATA\r\n");
    harness.client(b"Subject: hi\r\n\r\nbody\r\n.\r\n");
    assert_eq!(harness.stored.len(), 1);
    let ids: Vec<_> = harness.stored[0]
        .envelope
        .rcpt
        .iter()
        .map(MailboxId::as_str)
        .collect();
    assert_eq!(ids, [ALICE, BOB]);
}

#[test]
fn too_many_recipients() {
    let mut config = config();
    config.max_recipients = 1;
    let mut harness = Harness::with(config, client());
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<>\r\n");
    harness.client(rcpt(ALICE).as_bytes());
    harness.client(rcpt(BOB).as_bytes());
    assert_eq!(harness.last_reply(), "452 4.5.3 too many recipients");
}

#[test]
fn size_exceeded() {
    let mut config = config();
    config.max_message_size = 20;
    let mut harness = Harness::with(config, client());
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<> SIZE=21\r\n");
    harness.client(b"MAIL FROM:<> SIZE=20\r\n");
    harness.client(rcpt(ALICE).as_bytes());
    harness.client(b"DATA\r\n");
    harness.client(b"0123456789\r\n0123456789\r\n");
    harness.client(b"more\r\n.\r\n");
    harness.client(b"NOOP\r\n");
    insta::assert_snapshot!(harness.transcript);
    assert!(harness.stored.is_empty());
}

#[test]
fn bdat_transaction_with_last() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    let mut batch = b"MAIL FROM:<j@t.example>\r\n".to_vec();
    batch.extend_from_slice(rcpt(ALICE).as_bytes());
    batch.extend_from_slice(b"BDAT 14\r\nSubject: x\r\n\r\n");
    harness.client(&batch);
    harness.client(b"BDAT 9 LAST\r\n.not\r\nend");
    harness.client(b"QUIT\r\n");
    insta::assert_snapshot!(harness.transcript);
    assert_eq!(harness.stored.len(), 1);
}

#[test]
fn rset_and_quit() {
    let mut harness = Harness::new();
    harness.client(b"RSET\r\n");
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<>\r\n");
    harness.client(rcpt(ALICE).as_bytes());
    harness.client(b"RSET\r\n");
    harness.client(b"DATA\r\n");
    harness.client(b"NOOP\r\nVRFY x\r\nEXPN x\r\nAUTH PLAIN\r\nHELP\r\nQUIT\r\nNOOP\r\n");
    insta::assert_snapshot!(harness.transcript);
    assert!(harness.closed);
}

#[test]
fn command_errors() {
    let mut harness = Harness::new();
    harness.client(b"MAIL FROM:<>\r\n");
    ehlo(&mut harness);
    harness.client(b"FOO\r\nNOOP\nNO\0OP\r\nNOOP \xff\r\n");
    harness.client(b"RCPT TO:<a@b>\r\nDATA\r\nMAIL FROM:<a b>\r\n");
    harness.client(b"MAIL FROM:<\xc3\xb8@x> \r\nMAIL FROM:<> RET=FULL\r\n");
    insta::assert_snapshot!(harness.transcript);
}

// ----- behaviour -----

#[test]
fn stored_body_is_received_header_plus_exactly_the_bytes_sent() {
    let mut client = client();
    client.tls = Some(TlsActive::assumed(
        "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256",
    ));
    let mut harness = Harness::with(config(), client);
    ehlo(&mut harness);
    let body = b"From: a@b\r\nSubject: s\r\n\r\n.\r\n..\r\nline . with dots\r\n\xc3\xb8 8bit\r\n";
    harness.client(b"MAIL FROM:<a@b.example>\r\n");
    harness.client(rcpt(ALICE).as_bytes());
    harness.client(b"DATA\r\n");
    harness.client(&data::dot_stuff(body));
    let stored = &harness.stored[0];
    let header = "Received: from client.example ([192.0.2.7])\r\n\
                  \t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n\
                  \tby mx.archive.example with ESMTPS id S1.1;\r\n\
                  \tMon, 6 May 2024 07:08:09 +0000\r\n";
    let mut expected = header.as_bytes().to_vec();
    expected.extend_from_slice(body);
    assert_eq!(stored.body, expected);
    assert_eq!(harness.last_reply(), "250 2.0.0 Ok: queued as S1.1");
}

#[test]
fn body_split_into_single_bytes_is_stored_the_same() {
    let body = b"Subject: s\r\n\r\n.a\r\nb\r\n";
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\n", rcpt(ALICE)).as_bytes());
    for byte in data::dot_stuff(body) {
        let now = harness.now();
        harness.session.handle_input(&[byte], now);
        harness.drain();
    }
    assert!(harness.stored[0].body.ends_with(body));
    assert_eq!(harness.last_reply(), "250 2.0.0 Ok: queued as S1.1");
}

/// Each smuggling variant with a complete second transaction behind it in one buffer:
/// at most one message, and the smuggled MAIL is never executed.
#[test]
fn smuggling_variants_yield_at_most_one_message() {
    for variant in SMUGGLING_VARIANTS {
        let mut harness = Harness::new();
        ehlo(&mut harness);
        let mut write = format!("MAIL FROM:<a@b.example>\r\n{}DATA\r\n", rcpt(ALICE)).into_bytes();
        write.extend_from_slice(b"Subject: real\r\n\r\nreal body");
        write.extend_from_slice(variant);
        write.extend_from_slice(
            format!("MAIL FROM:<evil@x.example>\r\n{}DATA\r\n", rcpt(BOB)).as_bytes(),
        );
        write.extend_from_slice(b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n");
        harness.client(&write);

        let variant_text = escape(variant);
        assert!(
            harness.stored.len() <= 1,
            "{variant_text}: {} messages",
            harness.stored.len()
        );
        for stored in &harness.stored {
            assert_eq!(
                stored.envelope.rcpt,
                vec![MailboxId::parse(ALICE).unwrap()],
                "{variant_text}"
            );
        }
        let replies = harness.replies();
        let senders_accepted = replies
            .iter()
            .filter(|reply| reply.starts_with("250 2.1.0"))
            .count();
        assert_eq!(
            senders_accepted, 1,
            "{variant_text}: smuggled MAIL executed: {replies:?}"
        );
        assert!(
            !harness.transcript.contains(&format!("lookup {BOB}")),
            "{variant_text}"
        );
        let stored_smuggled = harness
            .stored
            .iter()
            .any(|stored| stored.body.windows(8).any(|window| window == b"smuggled"));
        // Only the NUL variant is legitimate content; all others reject the message.
        if *variant == b"\r\n\x00.\r\n" {
            assert_eq!(harness.stored.len(), 1);
            assert!(
                stored_smuggled,
                "the NUL variant is content of the one message"
            );
        } else {
            assert!(
                harness.stored.is_empty(),
                "{variant_text}: message with bare CR/LF stored"
            );
            assert!(
                harness.last_reply().starts_with("554 5.6.0"),
                "{variant_text}: {replies:?}"
            );
        }
    }
}

#[test]
fn pipelined_commands_wait_for_the_commit() {
    let mut harness = Harness::new();
    harness.commit_with = None;
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\n", rcpt(ALICE)).as_bytes());
    harness.client(format!("x\r\n.\r\nMAIL FROM:<>\r\n{}DATA\r\n", rcpt(BOB)).as_bytes());
    assert!(harness.commit_pending);
    assert_eq!(harness.last_reply(), "354 end data with <CR><LF>.<CR><LF>");
    // Nothing after the end of data was processed yet.
    assert!(!harness.transcript.contains(&format!("lookup {BOB}")));

    harness.commit(Err(CommitFailure::Temporary));
    let replies = harness.replies();
    let tail: Vec<_> = replies.iter().rev().take(4).rev().copied().collect();
    assert_eq!(
        tail,
        [
            "451 4.3.0 temporary failure storing message, try again later",
            "250 2.1.0 sender ok",
            "250 2.1.5 recipient ok",
            "354 end data with <CR><LF>.<CR><LF>",
        ]
    );
    harness.client(b".\r\n");
    harness.commit(Ok(Durable::for_tests()));
    assert_eq!(harness.last_reply(), "250 2.0.0 Ok: queued as S1.2");
}

#[test]
fn commit_failures_map_to_replies() {
    for (failure, expected) in [
        (CommitFailure::Temporary, "451 4.3.0"),
        (CommitFailure::StorageFull, "452 4.3.1"),
        (CommitFailure::MailboxSuspended, "450 4.2.1"),
        (CommitFailure::Permanent, "554 5.3.0"),
    ] {
        let mut harness = Harness::new();
        harness.commit_with = None;
        ehlo(&mut harness);
        harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\nx\r\n.\r\n", rcpt(ALICE)).as_bytes());
        harness.commit(Err(failure));
        assert!(harness.last_reply().starts_with(expected), "{failure:?}");
    }
}

#[test]
fn bare_lf_rejects_the_message_after_the_real_end() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\n", rcpt(ALICE)).as_bytes());
    harness.client(b"a\nb\r\n");
    assert!(harness.transcript.contains("message abort Body(BareLf)"));
    harness.client(b".\r\nNOOP\r\n");
    let replies = harness.replies();
    assert_eq!(
        replies[replies.len() - 2..],
        [
            "554 5.6.0 bare LF not allowed, lines must end with CRLF",
            "250 2.0.0 Ok"
        ]
    );
}

#[test]
fn overlong_body_line_is_refused() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\n", rcpt(ALICE)).as_bytes());
    let mut body = vec![b'a'; 999];
    body.extend_from_slice(b"\r\n.\r\n");
    harness.client(&body);
    assert_eq!(
        harness.last_reply(),
        "500 5.6.0 line longer than 1000 octets in message"
    );
    assert!(harness.stored.is_empty());
}

#[test]
fn endless_command_line_is_refused_and_the_connection_closed() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    // A line just under the limit is fine.
    let mut line = b"NOOP ".to_vec();
    line.resize(session::MAX_COMMAND_LINE - 2, b'x');
    line.extend_from_slice(b"\r\n");
    harness.client(&line);
    assert_eq!(harness.last_reply(), "250 2.0.0 Ok");
    // Without a line end: refused as soon as the limit passes, then closed; what follows
    // is never read.
    for _ in 0..100 {
        harness.client(&[b'A'; 1000]);
    }
    harness.client(b"\r\nNOOP\r\n");
    let replies = harness.replies();
    assert_eq!(
        replies[replies.len() - 2..],
        [
            "500 5.5.2 line too long",
            "421 4.7.0 mx.archive.example input over the limit, closing connection"
        ]
    );
    assert!(harness.closed);
    // A complete line over the limit, in one piece, closes too.
    let mut harness = Harness::new();
    ehlo(&mut harness);
    let mut line = b"NOOP ".to_vec();
    line.resize(session::MAX_COMMAND_LINE + 10, b'x');
    line.extend_from_slice(b"\r\nNOOP\r\n");
    harness.client(&line);
    assert!(harness.closed);
    assert!(!harness.replies().contains(&"250 2.0.0 Ok"));
}

#[test]
fn too_many_errors_close_the_connection() {
    let mut harness = Harness::new();
    for _ in 0..10 {
        harness.client(b"BOGUS\r\n");
    }
    assert!(harness.closed);
    assert_eq!(
        harness.last_reply(),
        "421 4.7.0 mx.archive.example too many errors, closing connection"
    );
    harness.client(b"NOOP\r\n");
    assert_eq!(
        harness.last_reply(),
        "421 4.7.0 mx.archive.example too many errors, closing connection"
    );
}

#[test]
fn refused_client_gets_554_and_503_until_quit() {
    let mut client = client();
    client.allowed = false;
    let mut harness = Harness::with(config(), client);
    harness.client(b"EHLO x\r\nMAIL FROM:<>\r\nQUIT\r\n");
    insta::assert_snapshot!(harness.transcript);
}

#[test]
fn tls_required_before_mail() {
    let mut config = config();
    config.require_tls = true;
    let mut harness = Harness::with(config, client());
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<>\r\n");
    assert_eq!(
        harness.last_reply(),
        "530 5.7.0 must issue a STARTTLS command first"
    );
    harness.client(b"STARTTLS\r\n");
    harness.establish_tls();
    harness.client(b"MAIL FROM:<>\r\n");
    assert_eq!(harness.last_reply(), "503 5.5.1 send HELO/EHLO first");
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<>\r\n");
    assert_eq!(harness.last_reply(), "250 2.1.0 sender ok");
}

#[test]
fn implicit_tls_does_not_offer_starttls() {
    let mut client = client();
    client.tls = Some(TlsActive::assumed("TLSv1.3"));
    let mut harness = Harness::with(config(), client);
    ehlo(&mut harness);
    assert!(!harness.transcript.contains("STARTTLS"));
    harness.client(b"STARTTLS\r\n");
    assert_eq!(harness.last_reply(), "503 5.5.1 TLS already active");
}

#[test]
fn starttls_not_available() {
    let mut config = config();
    config.tls_available = false;
    let mut harness = Harness::with(config, client());
    ehlo(&mut harness);
    assert!(!harness.transcript.contains("STARTTLS"));
    harness.client(b"STARTTLS\r\n");
    assert_eq!(harness.last_reply(), "502 5.5.1 STARTTLS not available");
}

#[test]
fn duplicate_recipients_yield_one_copy() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<>\r\n");
    harness.client(rcpt(ALICE).as_bytes());
    harness.client(rcpt(&ALICE.to_ascii_uppercase()).as_bytes());
    assert_eq!(
        harness.last_reply(),
        "250 2.1.5 duplicate recipient, delivering once"
    );
    harness.client(b"DATA\r\nx\r\n.\r\n");
    assert_eq!(
        harness.stored[0].envelope.rcpt,
        vec![MailboxId::parse(ALICE).unwrap()]
    );
}

#[test]
fn bdat_errors_consume_the_chunk() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    // No transaction: the chunk "MAIL FROM:<>\r\n" must not run as a command.
    harness.client(b"BDAT 14\r\nMAIL FROM:<>\r\nNOOP\r\n");
    let replies = harness.replies();
    assert_eq!(
        replies[replies.len() - 2..],
        ["503 5.5.1 need MAIL command", "250 2.0.0 Ok"]
    );

    let mut config = config();
    config.max_message_size = 10;
    let mut harness = Harness::with(config, client());
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}", rcpt(ALICE)).as_bytes());
    harness.client(b"BDAT 6\r\n12345\n");
    harness.client(b"BDAT 6\r\nabcdef");
    harness.client(b"BDAT 3 LAST\r\nxyzNOOP\r\n");
    insta::assert_snapshot!(harness.transcript);
    assert!(harness.stored.is_empty());
}

#[test]
fn ehlo_resets_the_transaction() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}", rcpt(ALICE)).as_bytes());
    ehlo(&mut harness);
    harness.client(b"DATA\r\n");
    assert_eq!(harness.last_reply(), "503 5.5.1 need MAIL command");
    harness.client(
        format!(
            "MAIL FROM:<>\r\n{}BDAT 2\r\nabHELO c.example\r\n",
            rcpt(ALICE)
        )
        .as_bytes(),
    );
    assert!(harness.transcript.contains("message abort Reset"));
    assert_eq!(harness.last_reply(), "250 mx.archive.example");
}

#[test]
fn malformed_bdat_closes() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"BDAT many\r\nMAIL FROM:<>\r\n");
    assert!(harness.closed);
    assert_eq!(
        harness.last_reply(),
        "421 4.5.4 mx.archive.example malformed BDAT, closing connection"
    );
}

#[test]
fn rset_in_bdat_transfer_aborts_the_message() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}BDAT 3\r\nabcRSET\r\n", rcpt(ALICE)).as_bytes());
    assert!(harness.transcript.contains("message abort Reset"));
    assert!(harness.draft.is_none());
}

#[test]
fn timeouts_per_state() {
    let mut harness = Harness::new();
    harness.commit_with = None;
    let preauth = config().preauth_timeout;
    assert_eq!(harness.timeout(), preauth);
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\n", rcpt(ALICE)).as_bytes());
    assert_eq!(harness.timeout(), session::DATA_BLOCK_TIMEOUT);
    harness.client(b"x\r\n.\r\n");
    assert_eq!(harness.timeout(), session::DATA_TERMINATION_TIMEOUT);
    harness.commit(Ok(Durable::for_tests()));
    assert_eq!(harness.timeout(), session::COMMAND_TIMEOUT);
    harness.client(b"MAIL FROM:<>\r\nRCPT TO:<".as_slice());
    harness.client(format!("{ALICE}@archive.example>\r\nDATA\r\npartial").as_bytes());
    harness.fire_timer();
    assert!(harness.transcript.contains("message abort TimedOut"));
    assert_eq!(
        harness.last_reply(),
        "421 4.4.2 mx.archive.example timeout, closing connection"
    );
    assert!(harness.closed);
}

#[test]
fn connection_lost_aborts_the_message() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\npartial", rcpt(ALICE)).as_bytes());
    harness.session.handle_connection_lost();
    harness.drain();
    assert!(harness
        .transcript
        .ends_with("~ message abort Closed\n~ close\n"));
}

#[test]
fn shutdown_when_idle_closes_at_once() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.session.handle_shutdown();
    harness.drain();
    assert!(harness.closed);
    assert_eq!(
        harness.last_reply(),
        "421 4.3.2 mx.archive.example shutting down, closing connection"
    );
}

#[test]
fn shutdown_in_a_transaction_lets_it_finish() {
    let mut harness = Harness::new();
    harness.commit_with = None;
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\nx\r\n", rcpt(ALICE)).as_bytes());
    harness.session.handle_shutdown();
    harness.drain();
    assert!(!harness.closed);
    harness.client(b".\r\nMAIL FROM:<>\r\n");
    harness.commit(Ok(Durable::for_tests()));
    let replies = harness.replies();
    assert_eq!(
        replies[replies.len() - 2..],
        [
            "250 2.0.0 Ok: queued as S1.1",
            "421 4.3.2 mx.archive.example shutting down, closing connection"
        ]
    );
    assert!(harness.closed);
}

#[test]
fn smtputf8_transaction() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client("MAIL FROM:<jøran@blåbær.example> SMTPUTF8\r\n".as_bytes());
    assert_eq!(harness.last_reply(), "250 2.1.0 sender ok");
    harness.client("RCPT TO:<jøran@archive.example>\r\n".as_bytes());
    assert_eq!(harness.last_reply(), "550 5.1.1 no such mailbox here");
    harness.client(format!("{}DATA\r\nSubject: ø\r\n.\r\n", rcpt(ALICE)).as_bytes());
    let stored = &harness.stored[0];
    assert!(stored.envelope.smtputf8);
    assert_eq!(stored.envelope.mail_from, "jøran@blåbær.example");
    assert!(stored.body.windows(9).any(|window| window == b"UTF8SMTP "));
}

// ----- property (c) -----

fn session_input() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let token = prop_oneof![
        Just(b"EHLO c.example\r\n".to_vec()),
        Just(b"MAIL FROM:<>\r\n".to_vec()),
        Just(format!("RCPT TO:<{ALICE}@archive.example>\r\n").into_bytes()),
        Just(format!("RCPT TO:<{SUSPENDED}@archive.example>\r\n").into_bytes()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"BDAT 5\r\n".to_vec()),
        Just(b"BDAT 3 LAST\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b"STARTTLS\r\n".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"\n.\n".to_vec()),
        Just(b"\r".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..20),
    ];
    proptest::collection::vec(
        proptest::collection::vec(token, 0..6).prop_map(|parts| parts.concat()),
        0..10,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary writes never panic, and message outputs are always well nested.
    #[test]
    fn arbitrary_input_never_panics_and_messages_nest(writes in session_input(), tls_at in any::<u8>(), commit_ok in any::<bool>()) {
        let start = Instant::now();
        let now = Now { instant: start, utc: NOW };
        let mut session = Machine::Session(Session::new(Arc::new(config()), client(), start));
        let mut open = false;
        let mut index = 0u8;
        let mut greeting = Vec::new();
        session.poll_transmit(start, &mut greeting);
        prop_assert!(greeting.starts_with(b"220 "), "greeting first");
        for write in writes {
            session.handle_input(&write, now);
            index = index.wrapping_add(1);
            loop {
                let mut bytes = Vec::new();
                session.poll_transmit(start, &mut bytes);
                prop_assert!(bytes.is_empty() || bytes.ends_with(b"\r\n"));
                let Some(output) = session.poll_event() else { break };
                match output {
                    Event::MessageStart(_) => { prop_assert!(!open); open = true; }
                    Event::MessageData(_) => prop_assert!(open),
                    Event::MessageEnd => {
                        prop_assert!(open);
                        open = false;
                        session.session().expect("no proxy login here").commit_result(if commit_ok { Ok(Durable::for_tests()) } else { Err(CommitFailure::Temporary) });
                    }
                    Event::MessageAbort(_) => { prop_assert!(open); open = false; }
                    Event::LookupRecipient(_) => session.session().expect("no proxy login here").recipient_status(RecipientStatus::Active),
                    Event::StartTls => {
                        if index == tls_at { session.handle_connection_lost() } else { session.session().expect("no proxy login here").tls_established(TlsActive::assumed("TLS")) }
                    }
                    Event::Close => {}
                    Event::ProxyLogin(_) | Event::Upstream(_) => prop_assert!(false, "proxy output without proxy mode"),
                }
            }
        }
        session.handle_connection_lost();
        loop {
            session.poll_transmit(start, &mut Vec::new());
            let Some(output) = session.poll_event() else { break };
            match output {
                Event::MessageAbort(_) => { prop_assert!(open); open = false; }
                Event::Close => {}
                other => prop_assert!(false, "unexpected output after connection loss: {other:?}"),
            }
        }
        prop_assert!(!open);
    }
}

// ----- proxy mode (RFC 4954 AUTH, relaying to the upstream) -----

const PROXY_LOGIN: &str =
    "alice@provider.example%smtp.provider.example:2525%mbx-0000000000000000000000000000000a";

fn plain(user: &str, password: &str) -> String {
    data_encoding::BASE64.encode(format!("\0{user}\0{password}").as_bytes())
}

/// A proxy-enabled session, through STARTTLS and EHLO.
fn proxy_harness() -> Harness {
    let mut h = Harness::with(proxy_config(), client());
    h.client(b"EHLO client.example\r\n");
    assert!(!h.transcript.contains("AUTH"), "AUTH offered before TLS");
    h.client(b"AUTH PLAIN AGEAYg==\r\n");
    assert!(h.last_reply().starts_with("538 5.7.11"), "{}", h.transcript);
    h.client(b"STARTTLS\r\n");
    h.establish_tls();
    h.client(b"EHLO client.example\r\n");
    assert!(
        h.replies().contains(&"250-AUTH PLAIN LOGIN"),
        "{}",
        h.transcript
    );
    h
}

#[test]
fn proxy_transcript_auth_plain_then_relayed_transaction() {
    let mut h = proxy_harness();
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "s3cret")).as_bytes());
    assert!(h.last_reply().starts_with("235 2.7.0"), "{}", h.transcript);
    h.client(b"EHLO client.example\r\n");
    let after_auth = h.transcript.split("235 2.7.0").nth(1).unwrap();
    assert!(
        !after_auth.contains("AUTH"),
        "AUTH offered again after login"
    );
    one_of_two_recipients_refused(&mut h);
    insta::assert_snapshot!(h.transcript);
    assert!(h.stored[0].envelope.rcpt.is_empty());
    assert!(!h.transcript.contains("s3cret"));
}

/// MAIL, a recipient the upstream refuses and one it takes, DATA, a message and QUIT in one
/// write through a relay: one copy, for the recipient taken, with the body as the client
/// meant it (no Received header of ours, dots unstuffed).
fn one_of_two_recipients_refused(h: &mut Harness) {
    h.upstream = VecDeque::from([
        Reply::new(250, EnhancedStatus::new(2, 1, 0), "sender ok"),
        Reply::new(550, EnhancedStatus::new(5, 1, 1), "no such user here"),
        Reply::new(250, EnhancedStatus::new(2, 1, 5), "recipient ok"),
    ]);
    h.client(
        b"MAIL FROM:<alice@provider.example> SIZE=40\r\nRCPT TO:<nobody@example.org>\r\n\
RCPT TO:<bob@example.org>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(h.stored.len(), 1);
    assert_eq!(
        h.stored[0].envelope.forward_to,
        vec!["bob@example.org".to_owned()]
    );
    assert_eq!(h.stored[0].body, b"Subject: hi\r\n\r\n.dot\r\n");
}

/// A proxy session logged in to an upstream that offers PIPELINING.
fn pipelining_proxy() -> Harness {
    let mut h = proxy_harness();
    h.upstream_pipelining = true;
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "s3cret")).as_bytes());
    assert!(h.last_reply().starts_with("235 2.7.0"), "{}", h.transcript);
    h.client(b"EHLO client.example\r\n");
    h.transcript.clear();
    h
}

/// What the relay asked of the upstream, in order.
fn upstream_commands(h: &Harness) -> Vec<&str> {
    h.transcript
        .lines()
        .filter_map(|line| line.strip_prefix("~ upstream "))
        .collect()
}

#[test]
fn proxy_pipelined_envelope_goes_upstream_as_one_group() {
    let mut h = pipelining_proxy();
    one_of_two_recipients_refused(&mut h);
    insta::assert_snapshot!(h.transcript);
}

#[test]
fn proxy_group_ends_at_a_command_that_cannot_join_it() {
    let mut h = pipelining_proxy();
    // NOOP is answered here, so it cannot be sent ahead: MAIL goes alone, the rest in turn.
    h.client(b"MAIL FROM:<a@x.example>\r\nNOOP\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
    assert_eq!(
        upstream_commands(&h),
        [
            r#"Mail { from: "a@x.example", params: "" }"#,
            r#"Rcpt("b@y.example")"#,
            "Data"
        ]
    );
    assert_eq!(
        h.replies(),
        [
            "250 2.0.0 upstream ok",
            "250 2.0.0 Ok",
            "250 2.0.0 upstream ok",
            "354 end data with <CR><LF>.<CR><LF>"
        ]
    );
    h.client(b"body\r\n.\r\n");
    h.transcript.clear();

    // A RCPT not yet complete stays behind.
    h.client(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.exa");
    h.client(b"mple>\r\nDATA\r\nbody\r\n.\r\n");
    assert_eq!(
        upstream_commands(&h),
        [
            r#"Mail { from: "a@x.example", params: "" }"#,
            r#"Rcpt("b@y.example")"#,
            "Data"
        ],
        "{}",
        h.transcript
    );
    h.transcript.clear();

    // So do recipients past the limit (3 here), and the DATA after them.
    h.client(
        b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\n\
RCPT TO:<d@y.example>\r\nRCPT TO:<e@y.example>\r\nDATA\r\n",
    );
    assert_eq!(
        upstream_commands(&h),
        [
            r#"Group { from: "a@x.example", params: "", rcpt: ["b@y.example", "c@y.example", "d@y.example"], data: false }"#,
            "Data"
        ],
        "{}",
        h.transcript
    );
    assert_eq!(
        h.replies(),
        [
            "250 2.0.0 upstream ok",
            "250 2.0.0 upstream ok",
            "250 2.0.0 upstream ok",
            "250 2.0.0 upstream ok",
            "452 4.5.3 too many recipients",
            "354 end data with <CR><LF>.<CR><LF>"
        ]
    );
}

/// A group's replies can take as long as the upstream needs: the client's idle time counts
/// from the last reply, so the client still has its time to send the message.
#[test]
fn proxy_client_time_counts_from_the_upstreams_last_reply() {
    let mut h = pipelining_proxy();
    h.upstream_delay = Duration::from_secs(4 * 60);
    h.client(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
    assert_eq!(h.last_reply(), "354 end data with <CR><LF>.<CR><LF>");
    let answered = h.at + h.upstream_delay;
    assert_eq!(
        h.session.poll_timeout(),
        Some(answered + session::DATA_BLOCK_TIMEOUT)
    );
    h.client(b"body\r\n.\r\n");
    assert_eq!(h.last_reply(), "250 2.0.0 queued upstream");
    let answered = h.at + h.upstream_delay;
    assert_eq!(
        h.session.poll_timeout(),
        Some(answered + session::COMMAND_TIMEOUT)
    );
}

#[test]
fn proxy_upstream_lost_in_the_middle_of_a_group_ends_the_session() {
    let mut h = pipelining_proxy();
    h.upstream_fails_after = Some(2);
    h.client(
        b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\n\
DATA\r\nbody\r\n.\r\n",
    );
    assert_eq!(
        h.replies(),
        [
            "250 2.0.0 upstream ok",
            "250 2.0.0 upstream ok",
            "451 4.4.2 upstream lost",
            "421 4.4.2 mx.archive.example connection to the upstream server lost, closing connection"
        ],
        "{}",
        h.transcript
    );
    assert!(h.stored.is_empty());
    assert!(!h.transcript.contains("~ message start"));
    assert!(h.closed);
}

#[test]
fn proxy_group_behind_a_refused_mail_adds_no_recipient() {
    let mut h = pipelining_proxy();
    h.upstream = VecDeque::from([
        Reply::new(553, EnhancedStatus::new(5, 7, 1), "sender not owned"),
        Reply::new(250, EnhancedStatus::new(2, 1, 5), "recipient ok"),
        Reply::new(554, EnhancedStatus::new(5, 5, 1), "no valid recipients"),
    ]);
    h.client(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
    assert_eq!(
        h.replies(),
        [
            "553 5.7.1 sender not owned",
            "503 5.5.1 need MAIL command",
            "554 5.5.1 no valid recipients"
        ]
    );
}

#[test]
fn proxy_group_with_no_recipient_accepted_ends_at_the_upstreams_data_refusal() {
    let mut h = pipelining_proxy();
    h.upstream = VecDeque::from([
        Reply::new(250, EnhancedStatus::new(2, 1, 0), "sender ok"),
        Reply::new(550, EnhancedStatus::new(5, 1, 1), "no such user here"),
        Reply::new(554, EnhancedStatus::new(5, 5, 1), "no valid recipients"),
    ]);
    h.client(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<nobody@y.example>\r\nDATA\r\n");
    assert_eq!(upstream_commands(&h).len(), 1, "{}", h.transcript);
    assert_eq!(
        h.replies(),
        [
            "250 2.1.0 sender ok",
            "550 5.1.1 no such user here",
            "554 5.5.1 no valid recipients"
        ]
    );
    assert!(h.stored.is_empty());
    // The transaction is over: a new one may start.
    h.client(b"MAIL FROM:<a@x.example>\r\n");
    assert_eq!(h.last_reply(), "250 2.0.0 upstream ok");
}

/// A copy's recipients and body.
type StoredCopy = (Vec<String>, Vec<u8>);

/// Two pipelined transactions through a relay whose upstream offers PIPELINING, the client's
/// bytes cut into writes at `cuts`: the replies, and the copies.
fn pipelined_relay(cuts: &[usize]) -> (Vec<String>, Vec<StoredCopy>) {
    const INPUT: &[u8] = b"MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\n\
RCPT TO:<c@y.example>\r\nDATA\r\nSubject: s\r\n\r\n..body\r\n.\r\n\
MAIL FROM:<a@x.example>\r\nRCPT TO:<d@y.example>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let mut h = pipelining_proxy();
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % INPUT.len()).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for end in cuts.into_iter().chain([INPUT.len()]) {
        if end > start {
            h.client(&INPUT[start..end]);
            start = end;
        }
    }
    let replies = h.replies().into_iter().map(str::to_owned).collect();
    let copies = h
        .stored
        .iter()
        .map(|copy| (copy.envelope.forward_to.clone(), copy.body.clone()))
        .collect();
    (replies, copies)
}

proptest! {
    /// However a pipelining client's bytes are cut, the relay answers and copies the same,
    /// whether its commands went upstream in groups or one at a time.
    #[test]
    fn pipelined_relay_is_the_same_however_the_input_is_cut(
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let (replies, copies) = pipelined_relay(&cuts);
        let (want_replies, want_copies) = pipelined_relay(&[]);
        prop_assert_eq!(want_copies.len(), 2);
        prop_assert_eq!(want_replies.last().map(String::as_str), Some("221 2.0.0 mx.archive.example closing connection"));
        prop_assert_eq!(replies, want_replies);
        prop_assert_eq!(copies, want_copies);
    }
}

#[test]
fn proxy_auth_login_and_its_failures() {
    let mut h = proxy_harness();
    // LOGIN: username and password prompts.
    h.client(b"AUTH LOGIN\r\n");
    assert_eq!(h.last_reply(), "334 VXNlcm5hbWU6");
    h.client(
        format!(
            "{}\r\n",
            data_encoding::BASE64.encode(PROXY_LOGIN.as_bytes())
        )
        .as_bytes(),
    );
    assert_eq!(h.last_reply(), "334 UGFzc3dvcmQ6");
    h.auth_answer = Err(AuthFailure::UpstreamRejected(Reply::new(
        535,
        EnhancedStatus::new(5, 7, 8),
        "bad password",
    )));
    h.client(format!("{}\r\n", data_encoding::BASE64.encode(b"wrong")).as_bytes());
    assert!(
        h.last_reply()
            .starts_with("535 5.7.8 upstream server: bad password"),
        "{}",
        h.transcript
    );
    // Cancelled, malformed, unknown mechanism, a login that is not user%server%mailbox.
    h.client(b"AUTH PLAIN\r\n");
    assert_eq!(h.last_reply(), "334 ");
    h.client(b"*\r\n");
    assert!(h.last_reply().starts_with("501 5.0.0"));
    h.client(b"AUTH PLAIN !!!notbase64\r\n");
    assert!(h.last_reply().starts_with("501 5.5.2"));
    h.client(b"AUTH CRAM-MD5\r\n");
    assert!(h.last_reply().starts_with("504 5.5.4"));
    h.client(format!("AUTH PLAIN {}\r\n", plain("justauser", "pw")).as_bytes());
    assert!(h.last_reply().starts_with("535 5.7.8"), "{}", h.transcript);
    // RFC 4616's grammar, as POP3 reads it (one decoder): an empty password or a NUL
    // inside it is malformed, not a wrong login.
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "")).as_bytes());
    assert!(h.last_reply().starts_with("501 5.5.2"), "{}", h.transcript);
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "p\0w")).as_bytes());
    assert!(h.last_reply().starts_with("501 5.5.2"), "{}", h.transcript);
    // A differing authorization identity is refused too.
    let other = data_encoding::BASE64.encode(format!("admin\0{PROXY_LOGIN}\0pw").as_bytes());
    h.client(format!("AUTH PLAIN {other}\r\n").as_bytes());
    assert!(h.last_reply().starts_with("535 5.7.8"));
    // Suspended mailbox: temporary.
    h.auth_answer = Err(AuthFailure::MailboxSuspended);
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "pw")).as_bytes());
    assert!(h.last_reply().starts_with("454 4.7.0"));
    assert!(matches!(h.session, Machine::Session(_)));
    // Journal delivery still works on the same connection.
    h.client(
        format!("MAIL FROM:<j@tenant.example>\r\nRCPT TO:<{ALICE}@archive.example>\r\n").as_bytes(),
    );
    assert!(h.last_reply().starts_with("250 2.1.5"), "{}", h.transcript);
}

#[test]
fn auth_is_refused_when_proxy_mode_is_off() {
    let mut h = Harness::new();
    h.client(b"EHLO c\r\nSTARTTLS\r\n");
    h.establish_tls();
    h.client(b"EHLO c\r\n");
    assert!(!h.transcript.contains("AUTH PLAIN"));
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "pw")).as_bytes());
    assert!(h.last_reply().starts_with("502 5.5.1"), "{}", h.transcript);
}

#[test]
fn proxy_upstream_refusals_are_relayed_and_nothing_stored() {
    let mut h = proxy_harness();
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "pw")).as_bytes());
    h.upstream = VecDeque::from([
        Reply::new(250, EnhancedStatus::new(2, 1, 0), "ok"),
        Reply::new(550, EnhancedStatus::new(5, 1, 1), "unknown user"),
    ]);
    h.client(b"MAIL FROM:<a@provider.example>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n");
    let replies = h.replies();
    assert!(
        replies.contains(&"550 5.1.1 unknown user"),
        "{}",
        h.transcript
    );
    assert!(h.last_reply().starts_with("554 5.5.1"), "{}", h.transcript);
    // The upstream refuses the message after the final dot: relayed, 250 never said.
    h.upstream = VecDeque::from([
        Reply::new(250, EnhancedStatus::new(2, 1, 5), "ok"),
        Reply::plain(354, vec!["go".into()]),
        Reply::new(554, EnhancedStatus::new(5, 7, 1), "spam detected"),
    ]);
    h.client(b"RCPT TO:<y@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
    assert_eq!(h.last_reply(), "554 5.7.1 spam detected");
    assert!(!h.replies().iter().any(|r| r.starts_with("250 2.0.0")));
}

#[test]
fn proxy_upstream_lost_in_the_middle_of_data() {
    let mut h = proxy_harness();
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "pw")).as_bytes());
    h.client(b"MAIL FROM:<a@provider.example>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nSubject: x\r\n\r\nfirst part\r\n");
    assert!(h.draft.is_some());
    h.session
        .relay()
        .expect("relay")
        .upstream_failed(Reply::new(
            451,
            EnhancedStatus::new(4, 4, 2),
            "upstream server failed",
        ));
    h.drain();
    assert!(h.draft.is_none(), "the copy is aborted");
    assert!(
        !h.closed,
        "the client still gets its reply after the final dot"
    );
    h.client(b"rest\r\n.\r\n");
    let replies = h.replies();
    assert_eq!(
        replies[replies.len() - 2],
        "451 4.4.2 upstream server failed"
    );
    assert!(h.last_reply().starts_with("421 4.4.2"));
    assert!(h.closed);
    assert!(h.stored.is_empty());
}

#[test]
fn postmaster_goes_to_the_configured_mailbox() {
    let mut config = config();
    config.postmaster = Some(MailboxId::parse(BOB).unwrap());
    let mut harness = Harness::with(config, client());
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n");
    assert!(
        harness.last_reply().starts_with("250 2.1.5"),
        "{}",
        harness.transcript
    );
    harness.client(b"RCPT TO:<POSTMASTER@archive.example>\r\n");
    assert!(
        harness.last_reply().starts_with("250 2.1.5"),
        "{}",
        harness.transcript
    );
    harness.client(b"DATA\r\nSubject: bounce\r\n\r\nx\r\n.\r\n");
    assert_eq!(harness.stored.len(), 1);
    assert_eq!(
        harness.stored[0].envelope.rcpt,
        vec![MailboxId::parse(BOB).unwrap()],
        "both spellings are one mailbox, one copy"
    );
    // Without a configured mailbox, postmaster is refused (the existing snapshot shows it).
}

#[test]
fn proxy_bdat_opens_the_upstream_data_first_and_refusals_consume_the_chunk() {
    let mut h = proxy_harness();
    h.client(format!("AUTH PLAIN {}\r\n", plain(PROXY_LOGIN, "pw")).as_bytes());
    h.client(b"MAIL FROM:<a@provider.example>\r\nRCPT TO:<x@example.org>\r\nBDAT 5\r\nHello");
    assert!(h.transcript.contains("~ upstream Data"), "{}", h.transcript);
    h.client(b"BDAT 8 LAST\r\n world\r\n");
    assert_eq!(h.stored.len(), 1);
    assert_eq!(h.stored[0].body, b"Hello world\r\n");
    assert!(
        h.last_reply().starts_with("250 2.0.0 queued upstream"),
        "{}",
        h.transcript
    );
    // The upstream refuses DATA: the chunk is still consumed, the refusal relayed.
    h.upstream = VecDeque::from([
        Reply::new(250, EnhancedStatus::new(2, 1, 0), "ok"),
        Reply::new(250, EnhancedStatus::new(2, 1, 5), "ok"),
        Reply::new(452, EnhancedStatus::new(4, 3, 1), "upstream full"),
    ]);
    h.client(
        b"MAIL FROM:<a@provider.example>\r\nRCPT TO:<x@example.org>\r\nBDAT 3 LAST\r\nabcNOOP\r\n",
    );
    let replies = h.replies();
    assert_eq!(replies[replies.len() - 2], "452 4.3.1 upstream full");
    assert!(
        h.last_reply().starts_with("250 2.0.0 Ok"),
        "NOOP read as a command"
    );
    assert_eq!(h.stored.len(), 1);
}

#[test]
fn auth_lines_leave_no_credential_bytes_in_the_input_buffer() {
    use crate::crypto::test_contains;
    let mut h = proxy_harness();
    // PLAIN with an initial response, pipelined with a shorter command, so that shifting the
    // rest of the buffer forward would leave the tail of the AUTH line behind.
    let response = plain(PROXY_LOGIN, "plain-s3cret-value");
    h.client(format!("AUTH PLAIN {response}\r\nNOOP\r\n").as_bytes());
    assert!(h.transcript.contains("235 2.7.0"), "{}", h.transcript);
    let storage = h.session.input_storage();
    assert!(!test_contains(storage, response.as_bytes()));
    assert!(!test_contains(
        storage,
        &response.as_bytes()[response.len() - 12..]
    ));

    // LOGIN: the password arrives as a continuation line, split across two reads.
    let mut h = proxy_harness();
    h.auth_answer = Err(AuthFailure::UpstreamRejected(Reply::new(
        535,
        EnhancedStatus::new(5, 7, 8),
        "bad password",
    )));
    h.client(b"AUTH LOGIN\r\n");
    h.client(
        format!(
            "{}\r\n",
            data_encoding::BASE64.encode(PROXY_LOGIN.as_bytes())
        )
        .as_bytes(),
    );
    let password = data_encoding::BASE64.encode(b"login-s3cret-value");
    let (first, second) = password.split_at(7);
    h.client(first.as_bytes());
    h.client(format!("{second}\r\nNOOP\r\n").as_bytes());
    assert!(h.last_reply().starts_with("250"), "{}", h.transcript);
    let storage = h.session.input_storage();
    assert!(!test_contains(storage, first.as_bytes()));
    assert!(!test_contains(storage, second.as_bytes()));
}

#[test]
fn preauth_idle_client_is_dropped_early() {
    let mut harness = Harness::new();
    let preauth = config().preauth_timeout;
    assert!(preauth < session::COMMAND_TIMEOUT);
    // Greeting, EHLO, NOOPs, even a refused MAIL: the client has not engaged yet.
    assert_eq!(harness.timeout(), preauth);
    ehlo(&mut harness);
    harness.client(b"NOOP\r\nMAIL FROM:<bad\r\n");
    assert_eq!(harness.timeout(), preauth);
    harness.fire_timer();
    assert_eq!(
        harness.last_reply(),
        "421 4.4.2 mx.archive.example timeout, closing connection"
    );
    assert!(harness.closed);
    // A MAIL accepted: RFC 5321's command timeout from then on, after RSET too.
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<>\r\nRSET\r\n");
    assert_eq!(harness.timeout(), session::COMMAND_TIMEOUT);
}

#[test]
fn data_past_the_size_limit_is_refused_at_once_even_after_a_body_error() {
    let mut config = config();
    config.max_message_size = 100;
    let mut harness = Harness::with(config, client());
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\n", rcpt(ALICE)).as_bytes());
    // A bare LF fails the message first; the size still counts, so the rest cannot
    // stream forever.
    harness.client(b"bad\nline\r\n");
    assert!(!harness.closed);
    harness.client(&[b'x'; 200]);
    assert!(harness.closed);
    let replies = harness.replies();
    assert_eq!(
        replies[replies.len() - 2..],
        [
            "552 5.3.4 message size exceeds fixed limit",
            "421 4.7.0 mx.archive.example input over the limit, closing connection"
        ]
    );
    assert!(harness.stored.is_empty());
}

#[test]
fn bdat_far_over_the_limit_is_refused_without_reading_it() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}", rcpt(ALICE)).as_bytes());
    harness.client(b"BDAT 18446744073709551615 LAST\r\nxxxx");
    assert!(harness.closed);
    let replies = harness.replies();
    assert_eq!(
        replies[replies.len() - 2..],
        [
            "552 5.3.4 message size exceeds fixed limit",
            "421 4.7.0 mx.archive.example input over the limit, closing connection"
        ]
    );
    // A chunk refused for another reason is only skipped when it could be a message.
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"BDAT 5\r\nxxxxxNOOP\r\n");
    assert_eq!(
        harness.replies()[harness.replies().len() - 2..],
        ["503 5.5.1 need MAIL command", "250 2.0.0 Ok"]
    );
    harness.client(b"BDAT 10001\r\n");
    assert!(harness.closed);
    assert_eq!(
        harness.replies()[harness.replies().len() - 2],
        "503 5.5.1 need MAIL command"
    );
}

#[test]
fn transaction_past_its_deadline_is_closed() {
    let deadline = config().transaction_timeout;
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\n", rcpt(ALICE)).as_bytes());
    // Data keeps coming, a little at a time: the idle timeout never fires, the deadline
    // does.
    let half = time::Duration::seconds(deadline.as_secs() as i64 / 2);
    harness.client_at(b"Subject: slow\r\n", NOW + half);
    assert!(harness.timeout() <= deadline / 2);
    assert!(!harness.closed);
    harness.client_at(b"more\r\n", NOW + half + half);
    assert!(harness.closed);
    assert!(harness.transcript.contains("message abort TimedOut"));
    assert_eq!(
        harness.last_reply(),
        "421 4.4.2 mx.archive.example transaction took too long, closing connection"
    );
    assert!(harness.stored.is_empty());
    // The shell's timer at the deadline gets the same reply.
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(b"MAIL FROM:<>\r\n");
    harness.client_at(
        b"NOOP\r\n",
        NOW + time::Duration::seconds(deadline.as_secs() as i64 - 5),
    );
    assert_eq!(harness.timeout(), std::time::Duration::from_secs(5));
    harness.fire_timer();
    assert_eq!(
        harness.last_reply(),
        "421 4.4.2 mx.archive.example transaction took too long, closing connection"
    );
}

#[test]
fn draft_failure_ends_the_message_at_once() {
    let mut harness = Harness::new();
    ehlo(&mut harness);
    harness.client(format!("MAIL FROM:<>\r\n{}DATA\r\nSubject: x\r\n", rcpt(ALICE)).as_bytes());
    harness.session.message_failed(CommitFailure::StorageFull);
    harness.drain();
    assert!(harness.closed);
    assert!(harness.transcript.contains("message abort"));
    let replies = harness.replies();
    assert!(
        replies[replies.len() - 2].starts_with("452 4.3.1"),
        "{replies:?}"
    );
    assert!(harness.stored.is_empty());
}

#[test]
fn deadlines_move_with_input_and_a_stale_timer_does_nothing() {
    let mut harness = Harness::new();
    let preauth = config().preauth_timeout;
    assert_eq!(
        harness.session.poll_timeout(),
        Some(harness.start + preauth)
    );
    // Input ten seconds in moves the deadline.
    harness.client_at(b"NOOP\r\n", NOW + time::Duration::seconds(10));
    let deadline = harness.start + Duration::from_secs(10) + preauth;
    assert_eq!(harness.session.poll_timeout(), Some(deadline));
    // A timer set for the old deadline fires: too early for the new one, nothing happens.
    let stale = harness.now_at(NOW + time::Duration::try_from(preauth).unwrap());
    harness.session.handle_timeout(stale);
    harness.drain();
    assert!(!harness.closed);
    harness.fire_timer();
    assert!(harness.closed);
    assert_eq!(
        harness.last_reply(),
        "421 4.4.2 mx.archive.example timeout, closing connection"
    );
    assert_eq!(harness.session.poll_timeout(), None, "no timer once closed");
}

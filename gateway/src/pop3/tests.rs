//! Session tests: behaviour, properties, and snapshot transcripts.

use proptest::prelude::*;

use std::time::{Duration, Instant};

use super::*;
use crate::mailbox::MailboxId;
use crate::net::{Machine, TlsActive};
use crate::pop3::timer::testing::{at, run_out};
use crate::store::Durable;

const ID: &str = "mbx-0123456789abcdef0123456789abcdef";
const ADDRESS: &str = "MBX-0123456789ABCDEF0123456789ABCDEF@archive.example";

/// Drives a session and records a transcript: `C:` client lines, `S:` server lines,
/// `A:` actions, `E:` events the shell reports.
struct Harness {
    session: Session,
    transcript: String,
    server_bytes: Vec<u8>,
    actions: Vec<Action>,
}

/// The proof a finished handshake gives (no sockets here).
fn proof() -> TlsActive {
    TlsActive::assumed("TLSv1.3 cipher TLS13_AES_256_GCM_SHA384")
}

/// Whether the connection starts with TLS on (port 995).
fn tls(on: bool) -> Option<TlsActive> {
    on.then(proof)
}

impl Harness {
    fn new(tls_active: bool) -> Self {
        let config = SessionConfig::new("pop.example", tls(tls_active), true);
        let mut harness = Self {
            session: Session::new(config, Instant::now()),
            transcript: String::new(),
            server_bytes: Vec::new(),
            actions: Vec::new(),
        };
        harness.drain();
        harness
    }

    fn plain() -> Self {
        Self::new(false)
    }

    fn tls() -> Self {
        Self::new(true)
    }

    fn send(&mut self, line: &str) {
        self.transcript.push_str(&format!("C: {line}\n"));
        self.session
            .handle_input(format!("{line}\r\n").as_bytes(), now());
        self.drain();
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.transcript
            .push_str(&format!("C: {:?}\n", String::from_utf8_lossy(bytes)));
        self.session.handle_input(bytes, now());
        self.drain();
    }

    fn event(&mut self, name: &str, f: impl FnOnce(&mut Session)) {
        self.transcript.push_str(&format!("E: {name}\n"));
        f(&mut self.session);
        self.drain();
    }

    /// The bytes first, then the actions: the session writes nothing after an action
    /// until it is answered.
    fn drain(&mut self) {
        self.session
            .poll_transmit(std::time::Instant::now(), &mut self.server_bytes);
        self.render_lines();
        while let Some(action) = self.session.poll_event() {
            self.transcript.push_str(&format!("A: {action:?}\n"));
            self.actions.push(action);
        }
    }

    fn render_lines(&mut self) {
        while let Some(end) = self.server_bytes.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = self.server_bytes.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            assert!(!text.contains('\n'), "bare LF from the server: {text:?}");
            self.transcript.push_str(&format!("S: {text}\n"));
        }
    }

    /// Server output since the last call, as text.
    fn take_transcript(&mut self) -> String {
        std::mem::take(&mut self.transcript)
    }

    fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn login(&mut self, maildrop: Listing) {
        self.send(&format!("USER {ID}"));
        self.send("PASS abcd-efgh");
        assert!(matches!(
            self.take_actions().as_slice(),
            [Action::Authenticate { .. }]
        ));
        self.event("auth_result(Ok)", |s| s.auth_result(Ok(maildrop)));
    }

    fn commits(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Commit { .. }))
            .count()
    }

    fn closed(&self) -> bool {
        self.actions.iter().any(|a| matches!(a, Action::Close))
    }
}

/// A `Now` for input whose time does not matter.
fn now() -> crate::net::Now {
    at(Instant::now())
}

fn maildrop() -> Listing {
    Listing::for_tests(vec![
        MessageInfo {
            seq: 10,
            uid: "9f86d081884c7d65".into(),
            size: 120,
        },
        MessageInfo {
            seq: 11,
            uid: "60303ae22b998861".into(),
            size: 2048,
        },
        MessageInfo {
            seq: 15,
            uid: "fd61a03af4f77d87".into(),
            size: 77,
        },
    ])
}

const MESSAGE: &[u8] =
    b"From: a@example.org\r\nSubject: hi\r\n\r\nline one\r\n.dot line\r\nline three";

// ---- snapshots of canonical transcripts ----

#[test]
fn greeting_and_capa_before_and_after_tls() {
    let mut h = Harness::plain();
    h.send("CAPA");
    h.send("STLS");
    h.event("tls_established", |s| s.tls_established(proof()));
    h.send("CAPA");
    h.send("STLS");
    insta::assert_snapshot!(h.take_transcript());
}

#[test]
fn user_pass_login() {
    let mut h = Harness::tls();
    h.send(&format!("USER {ADDRESS}"));
    h.send("PASS abcd-efgh-ijkl");
    h.event("auth_result(Ok 3 messages)", |s| {
        s.auth_result(Ok(maildrop()))
    });
    h.send("QUIT");
    insta::assert_snapshot!(h.take_transcript());
}

#[test]
fn auth_plain_with_initial_response_and_continuation() {
    let plain = data_encoding::BASE64.encode(format!("\0{ID}\0secret").as_bytes());
    let mut h = Harness::tls();
    h.send(&format!("AUTH PLAIN {plain}"));
    h.event("auth_result(Err Locked)", |s| {
        s.auth_result(Err(AuthFailure::Locked))
    });
    h.send("AUTH PLAIN");
    h.send("*");
    h.send("AUTH plain");
    h.send(&plain);
    h.event("auth_result(Ok 0 messages)", |s| {
        s.auth_result(Ok(Listing::for_tests(Vec::new())))
    });
    h.send("STAT");
    insta::assert_snapshot!(h.take_transcript());
}

#[test]
fn failed_logins_look_alike_and_three_close() {
    let mut h = Harness::tls();
    h.send("USER not-a-mailbox");
    h.send("PASS whatever");
    h.event("auth_result(Err WrongCredentials)", |s| {
        s.auth_result(Err(AuthFailure::WrongCredentials))
    });
    h.send(&format!("USER {ID}"));
    h.send("PASS wrong");
    h.event("auth_result(Err MailboxNotFound)", |s| {
        s.auth_result(Err(AuthFailure::MailboxNotFound))
    });
    h.send("PASS again");
    h.send(&format!("USER {ID}"));
    h.send("PASS wrong");
    h.event("auth_result(Err WrongCredentials)", |s| {
        s.auth_result(Err(AuthFailure::WrongCredentials))
    });
    h.send("NOOP");
    insta::assert_snapshot!(h.take_transcript());
}

#[test]
fn in_use_and_rate_limited() {
    let mut h = Harness::tls();
    h.send(&format!("USER {ID}"));
    h.send("PASS right");
    h.event("auth_result(Err Locked)", |s| {
        s.auth_result(Err(AuthFailure::Locked))
    });
    h.send(&format!("USER {ID}"));
    h.send("PASS right");
    h.event("auth_result(Err Temporary)", |s| {
        s.auth_result(Err(AuthFailure::Temporary))
    });
    h.send(&format!("USER {ID}"));
    h.send("PASS right");
    h.event("auth_result(Err RateLimited)", |s| {
        s.auth_result(Err(AuthFailure::RateLimited))
    });
    insta::assert_snapshot!(h.take_transcript());
}

#[test]
fn full_transaction_session() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send("STAT");
    h.send("LIST");
    h.send("LIST 2");
    h.send("UIDL");
    h.send("UIDL 3");
    h.send("RETR 1");
    h.event("message_data x2, message_end(Ok)", |s| {
        assert_eq!(s.message_data(&MESSAGE[..30]), Feed::More);
        assert_eq!(s.message_data(&MESSAGE[30..]), Feed::More);
        s.message_end(Ok(()));
    });
    h.send("TOP 1 1");
    h.event("message_data(all) -> Enough, message_end(Ok)", |s| {
        assert_eq!(s.message_data(MESSAGE), Feed::Enough);
        s.message_end(Ok(()));
    });
    h.send("DELE 1");
    h.send("DELE 1");
    h.send("RETR 1");
    h.send("LIST 1");
    h.send("STAT");
    h.send("RSET");
    h.send("DELE 2");
    h.send("DELE 3");
    h.send("LIST 4");
    h.send("RETR 0");
    h.send("NOOP");
    h.send("QUIT");
    h.event("commit_result(Ok Durable)", |s| {
        s.commit_result(Ok(Durable::for_tests()))
    });
    insta::assert_snapshot!(h.take_transcript());
}

#[test]
fn errors_and_refusals() {
    let mut h = Harness::plain();
    h.send("USER x");
    h.send("PASS y");
    h.send("AUTH PLAIN AGEAYg==");
    h.send("STAT");
    h.send("XTND XLST");
    h.send("");
    h.send("LIST -1");
    h.send("RETR");
    h.send("QUIT now");
    h.send_raw(&[b'N'; 300]);
    h.send_raw(b"\r\n");
    h.send("QUIT");
    insta::assert_snapshot!(h.take_transcript());
}

// ---- behaviour ----

#[test]
fn stls_discards_pipelined_commands() {
    let mut h = Harness::plain();
    h.take_transcript();
    h.send_raw(b"STLS\r\nCAPA\r\nUSER evil\r\n");
    assert_eq!(
        h.take_transcript(),
        "C: \"STLS\\r\\nCAPA\\r\\nUSER evil\\r\\n\"\nS: +OK Begin TLS negotiation\nA: StartTls\n"
    );
    assert!(!h.session.wants_input());
    h.send_raw(b"NOOP\r\n");
    h.event("tls_established", |s| s.tls_established(proof()));
    assert_eq!(
        h.take_transcript(),
        "C: \"NOOP\\r\\n\"\nE: tls_established\n",
        "nothing pipelined before the handshake ran"
    );
    h.send("STLS");
    assert!(h.take_transcript().contains("-ERR TLS already active"));
}

#[test]
fn credentials_before_tls_are_refused_unprocessed() {
    let mut h = Harness::plain();
    let plain = data_encoding::BASE64.encode(format!("\0{ID}\0secret").as_bytes());
    h.send(&format!("USER {ID}"));
    h.send("PASS secret");
    h.send(&format!("AUTH PLAIN {plain}"));
    h.send("AUTH PLAIN");
    let transcript = h.take_transcript();
    assert_eq!(
        transcript
            .matches("-ERR [AUTH] TLS required: use STLS or port 995")
            .count(),
        4
    );
    assert!(!transcript.contains("+ "), "no SASL continuation");
    assert!(h.take_actions().is_empty(), "no Authenticate");
}

#[test]
fn stls_unavailable_without_certificate() {
    let mut session = Session::new(SessionConfig::new("h", None, false), Instant::now());
    session.handle_input(b"CAPA\r\nSTLS\r\n", now());
    let mut out = Vec::new();
    session.poll_transmit(std::time::Instant::now(), &mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("STLS\r\n"));
    assert!(out.ends_with("-ERR STLS not available\r\n"));
}

#[test]
fn pipelined_commands_wait_for_authentication() {
    let mut h = Harness::tls();
    h.take_transcript();
    h.send_raw(format!("USER {ID}\r\nPASS pw\r\nSTAT\r\nDELE 2\r\nQUIT\r\n").as_bytes());
    let t = h.take_transcript();
    assert!(t.ends_with("A: Authenticate { mailbox: MailboxId(mbx-0123456789abcdef0123456789abcdef), password: MailboxPassword(<redacted>) }\n"), "{t}");
    h.event("ok", |s| s.auth_result(Ok(maildrop())));
    let t = h.take_transcript();
    assert!(
        t.contains("S: +OK 3 2245\nS: +OK message 2 deleted\nA: Commit { delete: [11] }"),
        "{t}"
    );
}

#[test]
fn dele_then_connection_lost_never_commits() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send("DELE 1");
    h.event("connection_lost", |s| s.handle_connection_lost());
    assert_eq!(h.commits(), 0);
    assert!(h.closed());
}

#[test]
fn dele_rset_quit_does_not_commit() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send("DELE 1");
    h.send("DELE 3");
    h.send("RSET");
    h.send("QUIT");
    assert_eq!(h.commits(), 0);
    assert!(h.closed());
    assert!(h
        .take_transcript()
        .contains("S: +OK pop.example POP3 server signing off\n"));
}

#[test]
fn dele_quit_commits_exactly_the_marked_seqs() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send("DELE 3");
    h.send("DELE 1");
    h.send("QUIT");
    let actions = h.take_actions();
    assert!(
        matches!(actions.as_slice(), [Action::Commit { delete }] if delete == &[10, 15]),
        "{actions:?}"
    );
    h.event("commit", |s| s.commit_result(Ok(Durable::for_tests())));
    assert!(h
        .take_transcript()
        .ends_with("S: +OK pop.example POP3 server signing off, 2 messages deleted\nA: Close\n"));
}

#[test]
fn failed_commit_reports_sys_temp_and_closes() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send("DELE 2");
    h.send("QUIT");
    h.take_transcript();
    h.event("commit failed", |s| {
        s.commit_result(Err(CommitFailure::Temporary))
    });
    assert_eq!(
        h.take_transcript(),
        "E: commit failed\nS: -ERR [SYS/TEMP] some deleted messages not removed\nA: Close\n"
    );
}

#[test]
fn autologout_and_shutdown_never_update() {
    for end in [run_out as fn(&mut Session), Session::handle_shutdown] {
        let mut h = Harness::tls();
        h.login(maildrop());
        h.send("DELE 1");
        h.event("end", end);
        assert_eq!(h.commits(), 0);
        assert!(h.closed());
        let t = h.take_transcript();
        assert!(
            t.ends_with("S: -ERR autologout: idle too long\nA: Close\n")
                || t.ends_with("S: -ERR [SYS/TEMP] server shutting down\nA: Close\n"),
            "{t}"
        );
    }
}

#[test]
fn shutdown_finishes_the_message_being_streamed() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send_raw(b"RETR 1\r\nRETR 2\r\n");
    h.take_actions();
    h.session.handle_shutdown();
    h.session.message_data(b"body\r\n");
    h.session.message_end(Ok(()));
    h.drain();
    let t = h.take_transcript();
    assert!(
        t.ends_with(
            "S: +OK 120 octets\nS: body\nS: .\nS: -ERR [SYS/TEMP] server shutting down\nA: Close\n"
        ),
        "{t}"
    );
    assert_eq!(h.commits(), 0);
}

#[test]
fn shutdown_before_login() {
    let mut h = Harness::plain();
    h.take_transcript();
    h.event("shutdown", |s| s.handle_shutdown());
    assert_eq!(
        h.take_transcript(),
        "E: shutdown\nS: -ERR [SYS/TEMP] server shutting down\nA: Close\n"
    );
}

#[test]
fn stream_failure_before_data_is_an_err_reply_and_the_session_goes_on() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send("RETR 2");
    h.take_transcript();
    h.event("message_end(Err Damaged)", |s| {
        s.message_end(Err(StreamFailure::Damaged))
    });
    h.send("NOOP");
    assert_eq!(
        h.take_transcript(),
        "E: message_end(Err Damaged)\nS: -ERR [SYS/PERM] message is damaged and cannot be read\nC: NOOP\nS: +OK\n"
    );
}

#[test]
fn stream_failure_mid_message_closes_without_terminator() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send("DELE 1");
    h.send("RETR 2");
    h.take_transcript();
    h.session.message_data(b"partial line\r\nmore");
    h.session.message_end(Err(StreamFailure::Temporary));
    h.drain();
    assert_eq!(
        h.take_transcript(),
        "S: +OK 2048 octets\nS: partial line\nA: Close\n"
    );
    assert_eq!(h.server_bytes, b"more", "no CRLF, no terminator");
    assert_eq!(h.commits(), 0);
}

#[test]
fn top_lines_beyond_u32_are_all_lines() {
    let mut h = Harness::tls();
    h.login(maildrop());
    h.send("TOP 1 9999999999");
    assert!(matches!(
        h.take_actions().as_slice(),
        [Action::StreamMessage {
            seq: 10,
            top_lines: Some(u32::MAX)
        }]
    ));
}

#[test]
fn long_lines() {
    let mut h = Harness::tls();
    h.take_transcript();
    // 255 octets including CRLF is fine; 256 is not.
    h.send(&format!("USER {}", "a".repeat(255 - 2 - 5)));
    h.send(&format!("USER {}", "a".repeat(256 - 2 - 5)));
    // AUTH lines may be longer.
    let long = data_encoding::BASE64.encode(&vec![b'x'; 1000]);
    h.send(&format!("AUTH PLAIN {long}"));
    // Beyond MAX_AUTH_LINE even AUTH is refused, nothing of it is executed, and the
    // connection closes: an endless line must not hold it.
    h.send_raw(format!("AUTH PLAIN {}", "A".repeat(5000)).as_bytes());
    h.send_raw(b"\r\nNOOP\r\n");
    let t = h.take_transcript();
    let replies: Vec<&str> = t.lines().filter(|l| l.starts_with("S:")).collect();
    assert_eq!(
        replies,
        [
            "S: +OK send PASS",
            "S: -ERR line too long",
            "S: -ERR malformed SASL PLAIN response",
            "S: -ERR line too long",
        ]
    );
    assert!(h.closed());
}

/// Found by the `pop3_command` fuzz target: a line beyond MAX_AUTH_LINE whose LF came in
/// the same read was refused and the session went on, while the same bytes read in pieces
/// closed it (the buffer overflowed before the LF came). Both ways now end alike: refused,
/// nothing after it executed, closed.
#[test]
fn overlong_line_closes_however_it_is_read() {
    let input = format!("NOOP {}\r\nNOOP\r\n", "a".repeat(MAX_AUTH_LINE));
    let replies = |pieces: &[&[u8]]| {
        let mut h = Harness::plain();
        for piece in pieces {
            h.send_raw(piece);
        }
        assert!(h.closed());
        let t = h.take_transcript();
        t.lines()
            .filter(|l| !l.starts_with("C:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let whole = replies(&[input.as_bytes()]);
    let pieces: Vec<&[u8]> = input.as_bytes().chunks(100).collect();
    assert_eq!(whole, replies(&pieces));
    assert_eq!(whole[1..], ["S: -ERR line too long", "A: Close"]);
}

#[test]
fn too_many_errors_close() {
    let mut h = Harness::tls();
    for _ in 0..MAX_ERRORS - 1 {
        h.send("BOGUS");
    }
    assert!(!h.closed());
    h.send("BOGUS");
    assert!(h.closed());
    h.send("CAPA");
    assert!(h
        .take_transcript()
        .ends_with("S: -ERR unknown command\nA: Close\nC: CAPA\n"));
}

#[test]
fn backpressure_while_waiting() {
    let mut h = Harness::tls();
    h.send(&format!("USER {ID}"));
    h.send("PASS pw");
    assert!(h.session.wants_input());
    h.session
        .handle_input(&b"NOOP\r\n".repeat(PIPELINE_LIMIT / 6 + 1), now());
    assert!(!h.session.wants_input());
    h.session
        .handle_input(&vec![b'x'; PIPELINE_LIMIT + 10], now());
    h.drain();
    assert!(h.closed(), "a shell ignoring wants_input is cut off");
}

/// An answer from the shell restarted the timer when the reply was transmitted: between
/// `before` (taken before the answer) and now.
fn assert_restarted(session: &Session, before: Instant, timeout: Duration) {
    let deadline = session.poll_timeout().expect("a timer runs");
    assert!(
        deadline >= before + timeout && deadline <= Instant::now() + timeout,
        "{deadline:?} is not {timeout:?} after the answer"
    );
}

#[test]
fn timeout_is_at_least_ten_minutes() {
    let mut config = SessionConfig::new("h", tls(true), true);
    config.idle_timeout = Duration::from_secs(5);
    let mut h = Harness::tls();
    h.session = Session::new(config, Instant::now());
    h.drain();
    let before = Instant::now();
    h.login(maildrop());
    assert_restarted(&h.session, before, MIN_IDLE_TIMEOUT);
}

#[test]
fn preauth_idle_client_is_dropped_early() {
    let start = Instant::now();
    let session = Session::new(SessionConfig::new("h", tls(true), true), start);
    assert_eq!(
        session.poll_timeout(),
        Some(start + DEFAULT_PREAUTH_TIMEOUT)
    );
    assert!(DEFAULT_PREAUTH_TIMEOUT < MIN_IDLE_TIMEOUT);
    // Still before login after a failed attempt.
    let mut h = Harness::tls();
    h.send(&format!("USER {ID}"));
    h.send("PASS wrong");
    let before = Instant::now();
    h.event("auth_result", |s| {
        s.auth_result(Err(AuthFailure::WrongCredentials))
    });
    assert_restarted(&h.session, before, DEFAULT_PREAUTH_TIMEOUT);
    // Logged in: RFC 1939's autologout.
    let mut h = Harness::tls();
    let before = Instant::now();
    h.login(maildrop());
    assert_restarted(&h.session, before, MIN_IDLE_TIMEOUT);
}

#[test]
fn the_idle_timer_fires_at_exactly_its_deadline_and_input_moves_it() {
    let start = Instant::now();
    let mut h = Harness::tls();
    h.session = Session::new(SessionConfig::new("h", tls(true), true), start);
    h.drain();
    // Before login: input moves the pre-login deadline.
    let typed = start + Duration::from_secs(30);
    h.session.handle_input(b"CAPA\r\n", at(typed));
    assert_eq!(
        h.session.poll_timeout(),
        Some(typed + DEFAULT_PREAUTH_TIMEOUT)
    );
    h.session
        .handle_timeout(at(typed + DEFAULT_PREAUTH_TIMEOUT - Duration::from_nanos(1)));
    assert!(!h.session.is_closed(), "not yet");
    // Logged in, the shell answering at `answered`: the autologout runs from when the
    // reply is transmitted, and each command moves it.
    h.session
        .handle_input(format!("USER {ID}\r\nPASS pw\r\n").as_bytes(), at(typed));
    h.drain();
    h.session.auth_result(Ok(maildrop()));
    let answered = typed + Duration::from_secs(5);
    h.session.poll_transmit(answered, &mut Vec::new());
    assert_eq!(h.session.poll_timeout(), Some(answered + MIN_IDLE_TIMEOUT));
    let stat = answered + Duration::from_secs(400);
    h.session.handle_input(b"STAT\r\n", at(stat));
    let deadline = stat + MIN_IDLE_TIMEOUT;
    assert_eq!(h.session.poll_timeout(), Some(deadline));
    h.session
        .handle_timeout(at(deadline - Duration::from_nanos(1)));
    assert!(!h.session.is_closed());
    h.session.handle_timeout(at(deadline));
    assert!(h.session.is_closed());
    assert_eq!(h.session.poll_timeout(), None);
    h.drain();
    assert!(h
        .take_transcript()
        .ends_with("S: -ERR autologout: idle too long\nA: Close\n"));
}

#[test]
fn authzid_must_match() {
    let other = MailboxId::generate();
    let mut h = Harness::tls();
    let plain = data_encoding::BASE64.encode(format!("{other}\0{ID}\0pw").as_bytes());
    h.send(&format!("AUTH PLAIN {plain}"));
    assert!(matches!(h.take_actions().as_slice(), [Action::RejectLogin]));
    let plain = data_encoding::BASE64.encode(format!("{ADDRESS}\0{ID}\0pw").as_bytes());
    h.event("reject", |s| {
        s.auth_result(Err(AuthFailure::WrongCredentials))
    });
    h.send(&format!("AUTH PLAIN {plain}"));
    assert!(matches!(
        h.take_actions().as_slice(),
        [Action::Authenticate { mailbox, .. }] if mailbox.as_str() == ID
    ));
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Input(Vec<u8>),
    Lost,
    Timeout,
    Shutdown,
    TlsDone,
}

fn command_bytes() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(format!("USER {ID}")),
        Just("USER nobody".to_owned()),
        Just("PASS pw".to_owned()),
        Just("AUTH PLAIN".to_owned()),
        Just(format!(
            "AUTH PLAIN {}",
            data_encoding::BASE64.encode(format!("\0{ID}\0pw").as_bytes())
        )),
        Just("*".to_owned()),
        Just("STLS".to_owned()),
        Just("CAPA".to_owned()),
        Just("STAT".to_owned()),
        Just("LIST".to_owned()),
        Just("UIDL 2".to_owned()),
        Just("RETR 1".to_owned()),
        Just("TOP 2 0".to_owned()),
        (0u64..5).prop_map(|n| format!("DELE {n}")),
        Just("RSET".to_owned()),
        Just("NOOP".to_owned()),
        Just("QUIT".to_owned()),
        "[ -~]{0,20}",
    ];
    prop_oneof![
        proptest::collection::vec(line, 1..4).prop_map(|lines| {
            let mut bytes = lines.join("\r\n").into_bytes();
            bytes.extend_from_slice(b"\r\n");
            bytes
        }),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            20 => command_bytes().prop_map(Op::Input),
            1 => Just(Op::Lost),
            1 => Just(Op::Timeout),
            1 => Just(Op::Shutdown),
            2 => Just(Op::TlsDone),
        ],
        0..40,
    )
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics_and_commits_only_after_login_and_quit(
        tls in any::<bool>(),
        ops in ops(),
        answers in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let mut session = Session::new(SessionConfig::new("h", self::tls(tls), true), Instant::now());
        let mut logged_in = false;
        let mut quit_sent = false;
        let mut closed = false;
        let mut answer = answers.iter().cycle();
        for op in ops {
            match op {
                Op::Input(bytes) => {
                    // QUIT may be pipelined behind PASS, so any QUIT sent so far counts.
                    if String::from_utf8_lossy(&bytes).to_ascii_uppercase().contains("QUIT") {
                        quit_sent = true;
                    }
                    session.handle_input(&bytes, now());
                }
                Op::Lost => session.handle_connection_lost(),
                Op::Timeout => run_out(&mut session),
                Op::Shutdown => session.handle_shutdown(),
                Op::TlsDone => session.tls_established(proof()),
            }
            // What the last answer wrote goes out before the next action is taken.
            while let Some(action) = { session.poll_transmit(std::time::Instant::now(), &mut Vec::new()); session.poll_event() } {
                prop_assert!(!closed, "output after Close: {action:?}");
                // Nothing is written after an action before it is answered.
                let mut after = Vec::new();
                session.poll_transmit(std::time::Instant::now(), &mut after);
                prop_assert!(after.is_empty(), "{:?} after {action:?}", String::from_utf8_lossy(&after));
                let pick = *answer.next().unwrap();
                match action {
                    Action::StartTls => {
                        prop_assert!(!tls);
                        if pick % 2 == 0 { session.tls_established(proof()) }
                    }
                    Action::Authenticate { .. } | Action::RejectLogin => {
                        if matches!(action, Action::Authenticate { .. }) && pick % 3 == 0 {
                            logged_in = true;
                            session.auth_result(Ok(maildrop()));
                        } else {
                            session.auth_result(Err(AuthFailure::WrongCredentials));
                        }
                    }
                    Action::ProxyLogin { .. } => prop_assert!(false, "proxy login without proxy mode"),
                    Action::StreamMessage { .. } => {
                        session.message_data(MESSAGE);
                        session.message_end(if pick % 5 == 0 { Err(StreamFailure::Temporary) } else { Ok(()) });
                    }
                    Action::Commit { delete } => {
                        prop_assert!(logged_in && quit_sent, "Commit without login and QUIT");
                        prop_assert!(!delete.is_empty());
                        session.commit_result(Ok(Durable::for_tests()));
                    }
                    Action::Close => closed = true,
                }
            }
        }
        prop_assert_eq!(closed, session.is_closed());
    }

    #[test]
    fn split_points_do_not_change_the_conversation(
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let script = format!("CAPA\r\nUSER {ID}\r\nPASS pw\r\nLIST\r\nDELE 1\r\nQUIT\r\n");
        let run = |pieces: Vec<&[u8]>| {
            let mut session = Session::new(SessionConfig::new("h", tls(true), true), Instant::now());
            let mut log = Vec::new();
            for piece in pieces {
                session.handle_input(piece, now());
                loop {
                    session.poll_transmit(std::time::Instant::now(), &mut log);
                    match session.poll_event() {
                        None => break,
                        Some(Action::Authenticate { .. }) => session.auth_result(Ok(maildrop())),
                        Some(action) => log.extend(format!("{action:?}").into_bytes()),
                    }
                }
            }
            log
        };
        let bytes = script.as_bytes();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            pieces.push(&bytes[start..cut]);
            start = cut;
        }
        prop_assert_eq!(run(vec![bytes]), run(pieces));
    }
}

#[test]
fn pass_and_sasl_lines_leave_no_credential_bytes_in_the_input_buffer() {
    use crate::crypto::test_contains;
    // USER and PASS pipelined with a shorter command behind them.
    let mut h = Harness::tls();
    h.send_raw(format!("USER {ADDRESS}\r\nPASS abcd-efgh-ijkl-mnop\r\nSTAT\r\n").as_bytes());
    assert!(!test_contains(h.session.input_storage(), b"efgh-ijkl"));
    assert!(!test_contains(
        h.session.input_storage(),
        ADDRESS.as_bytes()
    ));

    // A SASL continuation line.
    let plain = data_encoding::BASE64.encode(format!("\0{ID}\0a-long-secret-value").as_bytes());
    let mut h = Harness::tls();
    h.send("AUTH PLAIN");
    h.send_raw(format!("{plain}\r\nSTAT\r\n").as_bytes());
    assert!(!test_contains(
        h.session.input_storage(),
        &plain.as_bytes()[plain.len() - 12..]
    ));
}

#[test]
fn takeover_only_of_a_session_waiting_for_a_command_and_never_updates() {
    let mut h = Harness::tls();
    assert!(!h.session.interruptible(), "not logged in");
    h.login(maildrop());
    h.send("DELE 1");
    assert!(h.session.interruptible());
    // Part of a command received: busy.
    h.send_raw(b"QU");
    assert!(!h.session.interruptible());
    h.event("taken over", Session::taken_over);
    assert_eq!(h.commits(), 0, "nothing marked is deleted");
    assert!(h.closed());
    let t = h.take_transcript();
    assert!(
        t.ends_with(
            "S: -ERR [IN-USE] session ended: a new login took the maildrop over\nA: Close\n"
        ),
        "{t}"
    );
}

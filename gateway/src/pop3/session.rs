//! The POP3 server session: a sans-IO state machine (RFC 1939, 2449, 2595, 5034, 3206).
//!
//! A [`Machine`]: it is fed client bytes and the results of the work it asks the shell to
//! do ([`Action`]s, its events), and hands back the bytes to send. It never touches a
//! socket, the store or a key, and knows the time only as the `Now` it is given; see the
//! module documentation of [`super`] for the loop a shell runs around it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::command::{self, Command};
use super::error_map::{AuthFailure, CommitFailure, Refusal, StreamFailure};
use super::line::{Frame, LineBuffer, MAX_COMMAND_LINE};
use super::response::{write_multiline, Reply};
use super::timer::Timer;
use crate::crypto::MailboxPassword;
use crate::mailbox::{parse_id_or_address, MailboxId};
use crate::net::{Machine, Now, TlsActive};
use crate::pop3::client::UpstreamPassword;
use crate::proxy::ProxyLogin;
use crate::service::{Maildrop, MessageSummary};
use crate::store::Durable;
use crate::wire::dot::Stuffer;
use crate::wire::sasl::{self, PlainCredentials, Response};

/// RFC 1939 §3: the autologout timer must be at least 10 minutes.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long a client may stay silent before it has logged in (see
/// [`SessionConfig::preauth_timeout`]).
pub const DEFAULT_PREAUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Failed logins after which the session closes.
pub const MAX_FAILED_LOGINS: u32 = 3;
/// Protocol errors after which the session closes.
pub const MAX_ERRORS: u32 = 20;
/// Unprocessed input the session holds before [`Machine::wants_input`] says stop reading.
pub const PIPELINE_LIMIT: usize = 64 * 1024;
/// Unprocessed input beyond which a shell that ignores [`Machine::wants_input`] is cut off.
const HARD_INPUT_LIMIT: usize = 2 * PIPELINE_LIMIT;

/// How a session starts.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Shown in the greeting and the sign-off.
    pub host_name: String,
    /// Set when the connection is already TLS (port 995).
    pub tls: Option<TlsActive>,
    /// STLS may be offered (a certificate is configured).
    pub tls_available: bool,
    /// Autologout timer; raised to [`MIN_IDLE_TIMEOUT`] if shorter.
    pub idle_timeout: Duration,
    /// The timer before login (AUTHORIZATION state). RFC 1939's 10-minute minimum is there
    /// so a logged-in user does not lose the session's state; before login there is none
    /// to lose, and a short timer keeps silent connections from holding slots. At most
    /// the autologout timer.
    pub preauth_timeout: Duration,
    /// Proxy logins (`remote_user%target_server%mailbox_id`) are offered.
    pub proxy: bool,
}

impl SessionConfig {
    pub fn new(host_name: impl Into<String>, tls: Option<TlsActive>, tls_available: bool) -> Self {
        Self {
            host_name: host_name.into(),
            tls,
            tls_available,
            idle_timeout: MIN_IDLE_TIMEOUT,
            preauth_timeout: DEFAULT_PREAUTH_TIMEOUT,
            proxy: false,
        }
    }
}

/// One message of the maildrop as the shell lists it at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The store's sequence number, which [`Action::StreamMessage`] and [`Action::Commit`]
    /// name. The POP3 message number is the 1-based position in the [`Listing`].
    pub seq: u64,
    /// The UIDL (RFC 1939 §7: 1 to 70 characters 0x21..=0x7E; the message id in hex).
    pub uid: String,
    /// The stored size, reported by STAT, LIST and RETR.
    pub size: u64,
}

impl From<&MessageSummary> for MessageInfo {
    fn from(summary: &MessageSummary) -> Self {
        Self {
            seq: summary.seq,
            uid: summary.id.clone(),
            size: summary.size,
        }
    }
}

/// What the shell hands over after a successful login: the listing of the maildrop it
/// opened (the shell keeps the [`Maildrop`] itself, with the key and the lock, and drops it
/// on [`Action::Close`]). Built only from an open maildrop, so no path reaches TRANSACTION
/// without the right password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    messages: Vec<MessageInfo>,
}

impl Listing {
    /// The messages of `maildrop` as listed at login.
    pub fn of(maildrop: &Maildrop) -> Self {
        Self {
            messages: maildrop.messages().iter().map(MessageInfo::from).collect(),
        }
    }

    /// A maildrop for the session's own tests, which have no store.
    #[cfg(test)]
    pub(crate) fn for_tests(messages: Vec<MessageInfo>) -> Self {
        Self { messages }
    }
}

/// Work the session asks of the shell. Each one that waits names the method that answers it.
#[derive(Debug)]
pub enum Action {
    /// A proxy login: check the mailbox, connect to the upstream over TLS and log in there
    /// with these credentials, then call [`Session::proxy_result`]. On success the shell
    /// hands the connection to the proxy (with [`Session::take_input`]).
    ProxyLogin {
        login: ProxyLogin,
        password: UpstreamPassword,
    },
    /// Run the TLS handshake on the connection, then call [`Session::tls_established`].
    /// Every plaintext byte read after the STLS line has already been discarded.
    StartTls,
    /// Unseal the mailbox with this password (Argon2id, expensive), take the maildrop lock,
    /// list the messages, and call [`Session::auth_result`]. Apply the brute-force policy
    /// (delays, rate limits) here.
    Authenticate {
        mailbox: MailboxId,
        password: MailboxPassword,
    },
    /// A login that cannot succeed (the name is not a mailbox id, or the SASL authorization
    /// identity differs). Apply the same failure delay and rate limiting as for a wrong
    /// password, then call `auth_result(Err(AuthFailure::WrongCredentials))`, so such a login
    /// looks exactly like a wrong password.
    RejectLogin,
    /// Open message `seq` and feed its plaintext with [`Session::message_data`] (taking
    /// [`Machine::poll_transmit`] after each piece; stop early when it returns [`Feed::Enough`]),
    /// then call [`Session::message_end`]. `top_lines` is informational: the session cuts
    /// TOP itself.
    StreamMessage { seq: u64, top_lines: Option<u32> },
    /// The UPDATE state: delete these messages (store sequence numbers) durably and call
    /// [`Session::commit_result`]. Only ever emitted after a successful login and a QUIT.
    Commit { delete: Vec<u64> },
    /// Close the connection once every byte before it is written, and release everything
    /// the session held: the maildrop lock and the unsealed key. Emitted exactly once, on
    /// every path (QUIT, errors, timeouts, shutdown, a lost connection); nothing follows it.
    Close,
}

/// Whether the session wants more of the message being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    More,
    /// TOP has all its lines (or nothing is being streamed): stop reading, call `message_end`.
    Enough,
}

#[derive(Debug)]
enum State {
    Authorization,
    /// AUTH PLAIN sent `+ `; the next line is the SASL response.
    AuthContinue,
    /// Waiting for [`Session::auth_result`].
    Authenticating,
    /// Waiting for [`Session::tls_established`].
    StartingTls,
    Transaction,
    /// Waiting for message data. `header` is the `+OK` line, sent with the first byte of the
    /// message so a failure to open it can still be answered with `-ERR`.
    Streaming {
        stuffer: Stuffer,
        header: Option<Reply>,
    },
    /// Waiting for [`Session::commit_result`].
    Committing {
        deleting: usize,
    },
    /// Logged in as a proxy client: the proxy has the connection now.
    Proxied,
    Closed,
}

/// The USER argument, kept until PASS.
#[derive(Debug)]
enum UserName {
    /// A mailbox id or address (`None`: not one, which fails after PASS like a wrong password).
    Mailbox(Option<MailboxId>),
    /// `remote_user%target_server%mailbox_id` (`None`: malformed).
    Proxy(Option<ProxyLogin>),
}

/// One POP3 server session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    /// Credentials are looked at only while this is set.
    tls: Option<TlsActive>,
    state: State,
    input: LineBuffer,
    /// Actions for the shell ([`Machine::poll_event`]). Nothing is written to `pending`
    /// after one that waits for an answer until it is answered: the session stops
    /// processing until then.
    events: VecDeque<Action>,
    /// Bytes for the client ([`Machine::poll_transmit`]); consecutive replies go out in one
    /// write.
    pending: Vec<u8>,
    /// Autologout, or the pre-login timer.
    timer: Timer,
    /// The USER argument, checked when PASS arrives (`None` inside: not a mailbox id).
    user: Option<UserName>,
    messages: Vec<MessageInfo>,
    deleted: Vec<bool>,
    failed_logins: u32,
    errors: u32,
    shutting_down: bool,
}

impl Session {
    /// A new session whose timer runs from `now`; the greeting is ready to transmit.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let mut session = Self {
            tls: config.tls.clone(),
            config,
            state: State::Authorization,
            input: LineBuffer::new(),
            events: VecDeque::new(),
            pending: Vec::new(),
            // Set below, once the state it depends on is there.
            timer: Timer::new(now, Duration::ZERO),
            user: None,
            messages: Vec::new(),
            deleted: Vec::new(),
            failed_logins: 0,
            errors: 0,
            shutting_down: false,
        };
        session.timer.start(now, session.timeout());
        let greeting = Reply::ok(format!("{} POP3 ready", session.config.host_name));
        session.reply(greeting);
        session
    }

    /// A new login with the mailbox's password took the maildrop over while this session
    /// waited for a command: `-ERR [IN-USE]` and close, without UPDATE (nothing marked is
    /// deleted), as after any session that never reached QUIT.
    pub fn taken_over(&mut self) {
        if !matches!(self.state, State::Transaction) {
            return self.close();
        }
        self.input.clear();
        self.reply(Refusal::TakenOver.reply());
        self.close();
    }

    /// How long the client may stay silent: the autologout timer once logged in,
    /// `preauth_timeout` before.
    fn timeout(&self) -> Duration {
        let autologout = self.config.idle_timeout.max(MIN_IDLE_TIMEOUT);
        match self.state {
            State::Authorization | State::AuthContinue => {
                self.config.preauth_timeout.min(autologout)
            }
            _ => autologout,
        }
    }

    /// Bytes from the client. Commands run as soon as the session is ready for them;
    /// the rest waits (pipelining, RFC 2449 §6.6).
    fn receive(&mut self, data: &[u8]) {
        for piece in data.chunks(PIPELINE_LIMIT) {
            // After STLS (or close) the rest of what was read is dropped, never executed.
            if matches!(self.state, State::Closed | State::StartingTls) {
                return;
            }
            if self.input.len() + piece.len() > HARD_INPUT_LIMIT {
                tracing::debug!("POP3 client sent too much pipelined input; closing");
                self.close();
                return;
            }
            self.input.push(piece);
            self.process();
        }
    }

    /// The TLS handshake after STLS succeeded: back to AUTHORIZATION, now with TLS.
    pub fn tls_established(&mut self, tls: TlsActive) {
        if matches!(self.state, State::StartingTls) {
            self.tls = Some(tls);
            self.input.clear();
            self.state = State::Authorization;
            self.timer.restart();
        }
    }

    /// The answer to [`Action::Authenticate`] or [`Action::RejectLogin`].
    pub fn auth_result(&mut self, result: Result<Listing, AuthFailure>) {
        if !matches!(self.state, State::Authenticating) {
            return;
        }
        match result {
            Ok(maildrop) => {
                self.deleted = vec![false; maildrop.messages.len()];
                self.messages = maildrop.messages;
                self.state = State::Transaction;
                let reply = self.maildrop_summary();
                self.reply(reply);
            }
            Err(failure) => {
                self.state = State::Authorization;
                self.reply(failure.reply());
                if failure.counts_as_failed_login() {
                    self.failed_logins += 1;
                }
                if failure.closes_session() || self.failed_logins >= MAX_FAILED_LOGINS {
                    self.close();
                }
            }
        }
        self.command_done();
    }

    /// The answer to [`Action::ProxyLogin`]: `Ok` with the line for the client (the
    /// session is then done and the proxy takes over), or the refusal.
    pub fn proxy_result(&mut self, result: Result<Reply, Reply>) {
        if !matches!(self.state, State::Authenticating) {
            return;
        }
        match result {
            Ok(reply) => {
                self.reply(reply);
                self.state = State::Proxied;
            }
            Err(reply) => {
                self.state = State::Authorization;
                self.reply(reply);
                self.failed_logins += 1;
                if self.failed_logins >= MAX_FAILED_LOGINS {
                    self.close();
                }
                self.command_done();
            }
        }
    }

    /// What the client pipelined behind its proxy login, for the proxy.
    pub fn take_input(&mut self) -> zeroize::Zeroizing<Vec<u8>> {
        self.input.take_all()
    }

    /// The input buffer's whole allocation, stale bytes included (tests look for secrets).
    #[cfg(test)]
    pub(crate) fn input_storage(&self) -> &[u8] {
        self.input.storage()
    }

    /// Logged in as a proxy client (after [`Session::proxy_result`]).
    pub fn is_proxied(&self) -> bool {
        matches!(self.state, State::Proxied)
    }

    /// A piece of the message [`Action::StreamMessage`] asked for.
    pub fn message_data(&mut self, data: &[u8]) -> Feed {
        let State::Streaming { stuffer, header } = &mut self.state else {
            return Feed::Enough;
        };
        if !data.is_empty() && !stuffer.is_done() {
            let out = &mut self.pending;
            if let Some(header) = header.take() {
                header.write_to(out);
            }
            stuffer.feed(data, out);
        }
        if stuffer.is_done() {
            Feed::Enough
        } else {
            Feed::More
        }
    }

    /// The end of the message being streamed.
    ///
    /// A failure before any of the message was sent is answered with `-ERR` and the session
    /// goes on (so one damaged message does not block the rest of the mailbox). A failure
    /// after the `+OK` and part of the message were sent cannot be reported inside a POP3
    /// multi-line response, and ending it with `.` would pass a truncated message off as
    /// complete; so the session logs it and closes the connection without the terminator.
    /// The client sees the response broken off and no deletions happen.
    pub fn message_end(&mut self, result: Result<(), StreamFailure>) {
        if !matches!(self.state, State::Streaming { .. }) {
            return;
        }
        let State::Streaming { stuffer, header } =
            std::mem::replace(&mut self.state, State::Transaction)
        else {
            return;
        };
        match result {
            Err(failure) if header.is_some() => self.reply(failure.reply()),
            Err(failure) if !stuffer.is_done() => {
                tracing::warn!(
                    ?failure,
                    "POP3: message stream failed after it began; closing the connection"
                );
                self.close();
                return;
            }
            _ => {
                let out = &mut self.pending;
                if let Some(header) = header {
                    header.write_to(out);
                }
                stuffer.finish(out);
            }
        }
        self.command_done();
    }

    /// The answer to [`Action::Commit`]. Only a [`Durable`] proof lets QUIT report success.
    pub fn commit_result(&mut self, result: Result<Durable, CommitFailure>) {
        let State::Committing { deleting } = self.state else {
            return;
        };
        match result {
            Ok(_durable) => {
                let reply = Reply::ok(format!(
                    "{} POP3 server signing off, {deleting} messages deleted",
                    self.config.host_name
                ));
                self.reply(reply);
            }
            Err(failure) => self.reply(failure.reply()),
        }
        self.close();
    }

    /// No client input for [`timeout`](Self::timeout): autologout, without UPDATE (RFC 1939
    /// §3: marked messages are not deleted). Meant for while the session waits for the
    /// client; if it runs out while an action is pending, the session just closes.
    fn autologout(&mut self) {
        match self.state {
            State::Closed => {}
            State::Authorization | State::AuthContinue | State::Transaction => {
                self.reply(Refusal::Autologout.reply());
                self.close();
            }
            _ => self.close(),
        }
    }

    /// Graceful shutdown (see [`Machine::handle_shutdown`]).
    fn shutdown(&mut self) {
        match self.state {
            State::Closed => {}
            State::StartingTls | State::Proxied => self.close(),
            State::Streaming { .. } | State::Committing { .. } => self.shutting_down = true,
            State::Authorization
            | State::AuthContinue
            | State::Authenticating
            | State::Transaction => {
                self.reply(Refusal::ShuttingDown.reply());
                self.close();
            }
        }
    }

    // ---- command processing ----

    fn process(&mut self) {
        while matches!(
            self.state,
            State::Authorization | State::AuthContinue | State::Transaction
        ) {
            match self.input.next_frame() {
                None if !self.input.overflowed() => return,
                // A line beyond MAX_AUTH_LINE closes the connection whether or not its LF
                // has come (an endless line would otherwise be read and dropped forever), so
                // the outcome does not depend on how the reads split it.
                None | Some(Frame::TooLong) => {
                    self.reply(Refusal::LineTooLong.reply());
                    return self.close();
                }
                Some(Frame::Line { text, wire_len }) => self.line(&text, wire_len),
            }
        }
    }

    fn line(&mut self, text: &[u8], wire_len: usize) {
        if matches!(self.state, State::AuthContinue) {
            self.state = State::Authorization;
            return match sasl::response(text) {
                Ok(Response::Cancel) => self.refuse(Refusal::AuthCancelled),
                Ok(Response::Data(message)) => self.sasl_plain(sasl::plain(&message)),
                Err(_) => self.refuse(Refusal::MalformedSaslResponse),
            };
        }
        if wire_len > MAX_COMMAND_LINE && !command::is_auth_line(text) {
            return self.refuse(Refusal::LineTooLong);
        }
        match command::parse(text) {
            Ok(Command::Capa) => self.capa(),
            Ok(command) if matches!(self.state, State::Transaction) => self.transaction(command),
            Ok(command) => self.authorization(command),
            Err(e) => self.refuse(Refusal::Parse(e)),
        }
    }

    fn authorization(&mut self, command: Command<'_>) {
        match command {
            Command::Stls => self.stls(),
            // Credentials never cross plaintext: not even the name is looked at.
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if self.tls.is_none() => {
                self.refuse(Refusal::TlsRequired)
            }
            Command::User(name) => {
                // Whether or not this is a mailbox id, the answer is the same; a bad name
                // fails only after PASS, exactly like a wrong password.
                self.user = Some(if self.config.proxy && ProxyLogin::is_proxy_login(name) {
                    UserName::Proxy(ProxyLogin::parse(name).ok())
                } else {
                    UserName::Mailbox(parse_id_or_address(name).ok())
                });
                self.reply(Reply::ok("send PASS"));
            }
            Command::Pass(password) => match self.user.take() {
                None => self.refuse(Refusal::PassWithoutUser),
                Some(UserName::Mailbox(mailbox)) => {
                    self.begin_login(mailbox, MailboxPassword::from_user_input(password))
                }
                Some(UserName::Proxy(login)) => self.begin_proxy_login(login, password),
            },
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                if !mechanism.eq_ignore_ascii_case("PLAIN") {
                    return self.refuse(Refusal::UnsupportedMechanism);
                }
                match initial_response {
                    Some(response) => self.sasl_plain(sasl::plain_response(response.as_bytes())),
                    None => {
                        self.pending.extend_from_slice(b"+ \r\n");
                        self.state = State::AuthContinue;
                    }
                }
            }
            Command::Quit => {
                let reply = Reply::ok(format!("{} POP3 server signing off", self.config.host_name));
                self.reply(reply);
                self.close();
            }
            Command::Capa => self.capa(),
            Command::Stat
            | Command::List(_)
            | Command::Uidl(_)
            | Command::Retr(_)
            | Command::Top { .. }
            | Command::Dele(_)
            | Command::Rset
            | Command::Noop => self.refuse(Refusal::NotLoggedIn),
        }
    }

    fn stls(&mut self) {
        if self.tls.is_some() {
            return self.refuse(Refusal::TlsAlreadyActive);
        }
        if !self.config.tls_available {
            return self.refuse(Refusal::TlsUnavailable);
        }
        self.reply(Reply::ok("Begin TLS negotiation"));
        // CVE-2011-0411: whatever the client pipelined behind STLS is thrown away.
        self.input.clear();
        self.user = None;
        self.state = State::StartingTls;
        self.action(Action::StartTls);
    }

    fn sasl_plain(&mut self, credentials: Result<PlainCredentials, sasl::Malformed>) {
        let Ok(credentials) = credentials else {
            return self.refuse(Refusal::MalformedSaslResponse);
        };
        if self.config.proxy && ProxyLogin::is_proxy_login(&credentials.authcid) {
            let login = ProxyLogin::parse(&credentials.authcid)
                .ok()
                .filter(|_| credentials.same_identity());
            return self.begin_proxy_login(login, credentials.password.expose());
        }
        let mailbox = parse_id_or_address(&credentials.authcid).ok();
        // A mailbox may also be named by id in one identity and by address in the other.
        let same_identity = credentials.same_identity()
            || (mailbox.is_some() && parse_id_or_address(&credentials.authzid).ok() == mailbox);
        let password = MailboxPassword::from_user_input(credentials.password.expose());
        self.begin_login(mailbox.filter(|_| same_identity), password);
    }

    fn begin_proxy_login(&mut self, login: Option<ProxyLogin>, password: &str) {
        self.user = None;
        self.state = State::Authenticating;
        match login {
            Some(login) if !password.is_empty() => self.action(Action::ProxyLogin {
                login,
                password: UpstreamPassword::new(password),
            }),
            _ => self.action(Action::RejectLogin),
        }
    }

    fn begin_login(&mut self, mailbox: Option<MailboxId>, password: MailboxPassword) {
        self.user = None;
        self.state = State::Authenticating;
        match mailbox {
            Some(mailbox) => self.action(Action::Authenticate { mailbox, password }),
            None => self.action(Action::RejectLogin),
        }
    }

    fn capa(&mut self) {
        let mut capabilities = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if self.tls.is_some() {
            capabilities.extend(["USER", "SASL PLAIN"]);
        } else if self.config.tls_available {
            capabilities.push("STLS");
        }
        capabilities.push("IMPLEMENTATION gateway");
        write_multiline(
            &mut self.pending,
            &Reply::ok("capability list follows"),
            capabilities,
        );
    }

    fn transaction(&mut self, command: Command<'_>) {
        match command {
            Command::Stat => {
                let (count, octets) = self.totals();
                self.reply(Reply::ok(format!("{count} {octets}")));
            }
            Command::List(None) => {
                let lines: Vec<String> = self
                    .visible()
                    .map(|(n, info)| format!("{n} {}", info.size))
                    .collect();
                let first = self.maildrop_summary();
                write_multiline(&mut self.pending, &first, lines);
            }
            Command::List(Some(n)) => match self.lookup(n) {
                Ok(i) => self.reply(Reply::ok(format!("{n} {}", self.messages[i].size))),
                Err(refusal) => self.refuse(refusal),
            },
            Command::Uidl(None) => {
                let lines: Vec<String> = self
                    .visible()
                    .map(|(n, info)| format!("{n} {}", info.uid))
                    .collect();
                write_multiline(
                    &mut self.pending,
                    &Reply::ok("unique-id listing follows"),
                    lines,
                );
            }
            Command::Uidl(Some(n)) => match self.lookup(n) {
                Ok(i) => self.reply(Reply::ok(format!("{n} {}", self.messages[i].uid))),
                Err(refusal) => self.refuse(refusal),
            },
            Command::Retr(n) => match self.lookup(n) {
                Ok(i) => self.start_stream(i, None),
                Err(refusal) => self.refuse(refusal),
            },
            Command::Top { message, lines } => match self.lookup(message) {
                Ok(i) => self.start_stream(i, Some(u32::try_from(lines).unwrap_or(u32::MAX))),
                Err(refusal) => self.refuse(refusal),
            },
            Command::Dele(n) => match self.lookup(n) {
                Ok(i) => {
                    self.deleted[i] = true;
                    self.reply(Reply::ok(format!("message {n} deleted")));
                }
                Err(refusal) => self.refuse(refusal),
            },
            Command::Rset => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                let reply = self.maildrop_summary();
                self.reply(reply);
            }
            Command::Noop => self.reply(Reply::ok("")),
            Command::Quit => self.update(),
            Command::Capa => self.capa(),
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::Stls => {
                self.refuse(Refusal::AlreadyLoggedIn)
            }
        }
    }

    fn start_stream(&mut self, index: usize, top_lines: Option<u32>) {
        let info = &self.messages[index];
        let seq = info.seq;
        let (stuffer, header) = match top_lines {
            None => (Stuffer::new(), Reply::ok(format!("{} octets", info.size))),
            Some(lines) => (Stuffer::top(lines), Reply::ok("top of message follows")),
        };
        self.state = State::Streaming {
            stuffer,
            header: Some(header),
        };
        self.action(Action::StreamMessage { seq, top_lines });
    }

    /// QUIT in TRANSACTION: the UPDATE state (RFC 1939 §6).
    fn update(&mut self) {
        let delete: Vec<u64> = self
            .messages
            .iter()
            .zip(&self.deleted)
            .filter(|(_, deleted)| **deleted)
            .map(|(info, _)| info.seq)
            .collect();
        if delete.is_empty() {
            let reply = Reply::ok(format!("{} POP3 server signing off", self.config.host_name));
            self.reply(reply);
            self.close();
        } else {
            self.state = State::Committing {
                deleting: delete.len(),
            };
            self.action(Action::Commit { delete });
        }
    }

    /// After an asynchronous step completes: honour a pending shutdown, else run what the
    /// client pipelined meanwhile.
    fn command_done(&mut self) {
        self.timer.restart();
        if self.shutting_down && !self.is_closed() {
            self.reply(Refusal::ShuttingDown.reply());
            self.close();
        } else {
            self.process();
        }
    }

    // ---- maildrop ----

    /// Message number (1-based) and info of every message not marked deleted.
    fn visible(&self) -> impl Iterator<Item = (usize, &MessageInfo)> {
        self.messages
            .iter()
            .zip(&self.deleted)
            .enumerate()
            .filter(|(_, (_, deleted))| !**deleted)
            .map(|(i, (info, _))| (i + 1, info))
    }

    fn totals(&self) -> (usize, u64) {
        self.visible().fold((0, 0), |(count, octets), (_, info)| {
            (count + 1, octets.saturating_add(info.size))
        })
    }

    fn maildrop_summary(&self) -> Reply {
        let (count, octets) = self.totals();
        Reply::ok(format!("maildrop has {count} messages ({octets} octets)"))
    }

    /// The index of message number `n`, if it exists and is not marked deleted.
    fn lookup(&self, n: u64) -> Result<usize, Refusal> {
        let index = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&i| i < self.messages.len())
            .ok_or(Refusal::NoSuchMessage)?;
        if self.deleted[index] {
            return Err(Refusal::MessageDeleted);
        }
        Ok(index)
    }

    // ---- output ----

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.pending);
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.reply(refusal.reply());
        if refusal.is_client_error() {
            self.errors += 1;
            if self.errors >= MAX_ERRORS {
                self.close();
            }
        }
    }

    fn action(&mut self, action: Action) {
        self.events.push_back(action);
    }

    fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closed;
        self.input.clear();
        self.user = None;
        self.messages.clear();
        self.deleted.clear();
        self.action(Action::Close);
    }
}

impl Machine for Session {
    type Event = Action;

    fn handle_input(&mut self, input: &[u8], now: Now) {
        self.receive(input);
        self.timer.start(now.instant, self.timeout());
    }

    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.timer.settle(now, self.timeout());
        if out.is_empty() {
            // Swapped, not copied: the caller's empty buffer becomes the session's.
            std::mem::swap(out, &mut self.pending);
        } else {
            out.append(&mut self.pending);
        }
    }

    fn poll_event(&mut self) -> Option<Action> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!matches!(self.state, State::Closed | State::Proxied)).then(|| self.timer.deadline())
    }

    fn handle_timeout(&mut self, now: Now) {
        if !self.is_closed() && self.timer.expired(now.instant, self.timeout()) {
            self.autologout();
        }
    }

    /// The connection is gone. Never leads to an UPDATE: marked messages stay.
    fn handle_connection_lost(&mut self) {
        self.close();
    }

    /// Graceful shutdown. Waiting for a command (AUTHORIZATION or TRANSACTION), or for a
    /// login result: `-ERR [SYS/TEMP] server shutting down` and close, without UPDATE (the
    /// client did not QUIT, so nothing marked is deleted). While a message streams, the
    /// message is finished first, then the same reply and close. An UPDATE already under way
    /// (QUIT was sent) completes normally. During a TLS handshake the session just closes.
    fn handle_shutdown(&mut self) {
        self.shutdown();
    }

    /// Whether the shell should read from the client now: not after close, not while TLS is
    /// being set up, and not while too much pipelined input waits behind a pending action.
    fn wants_input(&self) -> bool {
        !matches!(
            self.state,
            State::Closed | State::StartingTls | State::Proxied
        ) && self.input.len() < PIPELINE_LIMIT
    }

    fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether input may still carry credentials (USER, PASS, AUTH, a SASL response), so the
    /// shell wipes its read buffer after handing bytes over. After login it does not bother.
    fn may_receive_credentials(&self) -> bool {
        matches!(self.state, State::Authorization | State::AuthContinue)
    }

    /// Logged in and waiting for the client's next command, with nothing of it received:
    /// the only state in which the shell may let a new login take the maildrop over.
    fn interruptible(&self) -> bool {
        matches!(self.state, State::Transaction)
            && self.input.len() == 0
            && self.events.is_empty()
            && self.pending.is_empty()
    }
}

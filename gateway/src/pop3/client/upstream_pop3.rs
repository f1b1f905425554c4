//! The upstream POP3 client: a sans-IO state machine (RFC 1939, 2449, 2595, 5034).
//!
//! A [`Machine`]: it is fed the upstream's bytes and the shell's answers, takes typed
//! requests from the proxy, and hands back bytes to send and typed [`Output`]s (its
//! events). It touches no socket and knows the time only as the `Now` it is given; see the
//! module documentation of [`super`] for the loop a shell runs around it.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::response::{
    listing_line, parse_status, parse_uidl_entry, Capabilities, ListingLine, Response, StatusLine,
    MAX_RESPONSE_LINE, RESPONSE_LINES,
};
use crate::net::{Machine, Now};
use crate::pop3::command::Command;
use crate::pop3::timer::Timer;
use crate::pop3::MAX_COMMAND_LINE;
use crate::wire::undot::Unstuffer;

/// How long the proxy waits for the upstream's next response before giving up on it. RFC
/// 1939 sets no client timeout; this is the five minutes of an SMTP client's
/// (RFC 5321 §4.5.3.2).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// [`Output::MultiLineData`] pieces are at most this long.
pub const MAX_DATA_PIECE: usize = 16 * 1024;
/// [`Output::UidlListing`] batches hold at most this many entries.
pub const MAX_LISTING_BATCH: usize = 1024;
/// More CAPA lines than this is a protocol error.
pub const MAX_CAPABILITIES: usize = 128;
/// Requests [`UpstreamPop3::command`] queues behind the one in flight; more are refused.
pub const MAX_QUEUED_REQUESTS: usize = 16;

/// How the connection to the upstream is secured. There is no plaintext mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Port 995: the shell completes the TLS handshake, then creates the core.
    Implicit,
    /// Port 110: the core asks for STLS and emits [`Output::StartTls`]; it never sends
    /// credentials before [`UpstreamPop3::tls_established`].
    Stls,
}

/// The client's password for the upstream.
pub type UpstreamPassword = crate::crypto::Secret<String>;

/// What the core logs in with.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub tls: UpstreamTls,
    /// The `remote_user` part of the client's login.
    pub username: String,
    pub password: UpstreamPassword,
}

impl UpstreamConfig {
    pub fn new(tls: UpstreamTls, username: impl Into<String>, password: UpstreamPassword) -> Self {
        Self {
            tls,
            username: username.into(),
            password,
        }
    }
}

/// A client command the proxy relays. Message numbers are the upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    /// `TOP message lines`.
    Top(u32, u32),
    Dele(u32),
    Rset,
    Noop,
    Quit,
}

impl Request {
    fn line(self) -> Zeroizing<Vec<u8>> {
        command_line(match self {
            Request::Stat => Command::Stat,
            Request::List(n) => Command::List(n.map(u64::from)),
            Request::Uidl(n) => Command::Uidl(n.map(u64::from)),
            Request::Retr(n) => Command::Retr(n.into()),
            Request::Top(message, lines) => Command::Top {
                message: message.into(),
                lines: lines.into(),
            },
            Request::Dele(n) => Command::Dele(n.into()),
            Request::Rset => Command::Rset,
            Request::Noop => Command::Noop,
            Request::Quit => Command::Quit,
        })
    }
}

/// Why the connection to the upstream ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// STLS is not in the CAPA list (or CAPA failed), or STLS was answered `-ERR`. The core
    /// never continues in plaintext: no downgrade.
    #[error("the upstream does not offer STLS; refusing to continue without TLS")]
    NoTls,
    /// The upstream sent bytes after the `+OK` to STLS, before the TLS handshake
    /// (STARTTLS response injection); they are never interpreted.
    #[error("the upstream sent data after +OK to STLS, before the TLS handshake")]
    ResponseInjection,
    /// USER, PASS or AUTH was answered `-ERR` (the response carries any code, e.g.
    /// `AUTH`, `IN-USE`, `SYS/TEMP`, `LOGIN-DELAY`, for the proxy to relay).
    #[error("the upstream rejected the login: {}", .0.text())]
    AuthRejected(Response),
    /// The greeting was `-ERR`.
    #[error("the upstream refused the connection: {}", .0.text())]
    Unavailable(Response),
    /// The username or password contains CR, LF or NUL, which no POP3 login can carry
    /// (and which would otherwise inject commands). Nothing was sent.
    #[error("the credentials contain CR, LF or NUL")]
    UnsendableCredentials,
    /// Malformed or overlong lines, unsolicited data, unexpected replies.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// No answer for [`RESPONSE_TIMEOUT`].
    #[error("the upstream did not answer in time")]
    TimedOut,
    /// The connection was lost before the session ended.
    #[error("the upstream closed the connection")]
    Closed,
}

/// Why [`UpstreamPop3::command`] did not take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("not logged in to the upstream yet")]
    NotLoggedIn,
    /// QUIT was requested, or the session is over.
    #[error("the upstream session is closing")]
    Closing,
    #[error("too many requests queued for the upstream")]
    QueueFull,
}

/// What [`Machine::poll_event`] yields, in order (the bytes to send come from
/// [`Machine::poll_transmit`]).
///
/// Every request gets exactly one answer, in request order: a [`Response`](Output::Response)
/// (always for `-ERR`, and for `+OK` to STAT, LIST n, DELE, RSET, NOOP and QUIT), a
/// [`UniqueId`](Output::UniqueId) (`+OK` to UIDL n), or a multi-line answer
/// [`MultiLineStart`](Output::MultiLineStart) … [`MultiLineEnd`](Output::MultiLineEnd)
/// (`+OK` to LIST, UIDL, RETR and TOP), unless a [`Failed`](Output::Failed) cuts it short.
pub enum Output {
    /// Run the TLS client handshake on the connection (verifying the upstream's certificate
    /// for `target_server`), then call [`UpstreamPop3::tls_established`]. Do not read
    /// plaintext meanwhile.
    StartTls,
    /// Logged in; requests may now be sent. The capabilities are the ones the upstream
    /// listed over TLS (empty if it does not support CAPA).
    LoggedIn { capabilities: Capabilities },
    /// A single-line answer.
    Response(Response),
    /// The `+OK n uid` answer to `UIDL n`, parsed.
    UniqueId { message: u32, uid: String },
    /// The `+OK` line of a multi-line answer (LIST, UIDL, RETR, TOP).
    MultiLineStart(Response),
    /// Un-stuffed content of a LIST, RETR or TOP answer, each line with its line end, in
    /// pieces of at most [`MAX_DATA_PIECE`] bytes. The terminator is not included.
    MultiLineData(Vec<u8>),
    /// Entries `(message, uid)` of a UIDL listing, in batches of at most
    /// [`MAX_LISTING_BATCH`].
    UidlListing(Vec<(u32, String)>),
    /// The terminator of a multi-line answer: the content is complete.
    MultiLineEnd,
    /// The session failed; [`Output::Close`] follows.
    Failed(UpstreamError),
    /// Close the connection once every byte before it is written. Emitted exactly once,
    /// on every path (after QUIT's answer, or after `Failed`); nothing follows it.
    Close,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Message content does not end up in logs.
            Output::MultiLineData(bytes) => write!(f, "MultiLineData(<{} bytes>)", bytes.len()),
            Output::StartTls => f.write_str("StartTls"),
            Output::LoggedIn { capabilities } => f
                .debug_struct("LoggedIn")
                .field("capabilities", capabilities)
                .finish(),
            Output::Response(r) => f.debug_tuple("Response").field(r).finish(),
            Output::UniqueId { message, uid } => f
                .debug_struct("UniqueId")
                .field("message", message)
                .field("uid", uid)
                .finish(),
            Output::MultiLineStart(r) => f.debug_tuple("MultiLineStart").field(r).finish(),
            Output::UidlListing(entries) => f.debug_tuple("UidlListing").field(entries).finish(),
            Output::MultiLineEnd => f.write_str("MultiLineEnd"),
            Output::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            Output::Close => f.write_str("Close"),
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for the greeting.
    Greeting,
    /// CAPA sent. `tls`: over TLS (the list picks the login); otherwise the list must
    /// offer STLS.
    CapaStatus {
        tls: bool,
    },
    /// Reading the CAPA list.
    CapaList {
        tls: bool,
        capabilities: Capabilities,
    },
    /// STLS sent.
    Stls,
    /// `+OK` to STLS: waiting for [`UpstreamPop3::tls_established`].
    StartingTls,
    /// `AUTH PLAIN <initial response>` (or the response after `+ `) sent.
    AuthPlain,
    /// `AUTH PLAIN` without an initial response sent (RFC 5034 §4: the response would
    /// have made the line too long); waiting for `+ `.
    AuthPlainChallenge,
    /// USER sent.
    User,
    /// PASS sent.
    Pass,
    /// Logged in, no request in flight.
    Idle,
    /// A request sent, waiting for its status line.
    Awaiting(Request),
    /// Streaming the body of a LIST, RETR or TOP answer.
    Streaming(Unstuffer),
    /// Reading a UIDL listing; the batch not yet emitted.
    Listing(Vec<(u32, String)>),
    Closed,
}

/// The gateway's POP3 session toward the upstream server.
pub struct UpstreamPop3 {
    config: UpstreamConfig,
    state: State,
    tls_active: bool,
    input: Vec<u8>,
    /// Commands for the upstream ([`Machine::poll_transmit`]); wiped once handed over, as
    /// they may hold credentials.
    transmit: Zeroizing<Vec<u8>>,
    events: VecDeque<Output>,
    /// Runs while an answer is awaited.
    timer: Timer,
    /// Requests waiting for the one in flight; the core never pipelines.
    queue: VecDeque<Request>,
    /// QUIT was requested: no further requests.
    quitting: bool,
    /// Collected from CAPA over TLS until [`Output::LoggedIn`].
    capabilities: Capabilities,
}

impl fmt::Debug for UpstreamPop3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the input: it may hold message content.
        f.debug_struct("UpstreamPop3")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("tls_active", &self.tls_active)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl UpstreamPop3 {
    /// A new session on a fresh connection: TCP for [`UpstreamTls::Stls`], an established
    /// TLS stream for [`UpstreamTls::Implicit`]. It first waits for the greeting, from `now`.
    pub fn new(config: UpstreamConfig, now: Instant) -> Self {
        let tls_active = config.tls == UpstreamTls::Implicit;
        let mut core = Self {
            config,
            state: State::Greeting,
            tls_active,
            input: Vec::new(),
            transmit: Zeroizing::new(Vec::new()),
            events: VecDeque::new(),
            timer: Timer::new(now, RESPONSE_TIMEOUT),
            queue: VecDeque::new(),
            quitting: false,
            capabilities: Capabilities::default(),
        };
        let unsendable = |s: &str| s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        if unsendable(&core.config.username) || unsendable(core.config.password.expose()) {
            core.fail(UpstreamError::UnsendableCredentials);
        }
        core
    }

    /// Whether the core waits for the upstream to answer (its response timer runs only
    /// then; while [`is_idle`](Self::is_idle) the upstream is expected to be silent).
    pub fn awaiting_upstream(&self) -> bool {
        !matches!(self.state, State::Closed | State::StartingTls | State::Idle)
    }

    /// Logged in with no request in flight.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Bytes read from the upstream (decrypted, once TLS is on).
    fn receive(&mut self, data: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.input.extend_from_slice(data);
        self.process();
    }

    /// The TLS handshake after [`Output::StartTls`] succeeded. (If it fails, the shell just
    /// drops the connection.)
    pub fn tls_established(&mut self) {
        if matches!(self.state, State::StartingTls) {
            self.tls_active = true;
            // RFC 2595 §4: forget what was learnt before TLS and ask again.
            self.send_command(command_line(Command::Capa), State::CapaStatus { tls: true });
        }
    }

    /// Relays a client request. Requests are sent one at a time, in order: one made while
    /// another is in flight waits (up to [`MAX_QUEUED_REQUESTS`]).
    pub fn command(&mut self, request: Request) -> Result<(), RequestError> {
        match self.state {
            State::Closed => return Err(RequestError::Closing),
            _ if self.quitting => return Err(RequestError::Closing),
            State::Idle => self.send_command(request.line(), State::Awaiting(request)),
            State::Awaiting(_) | State::Streaming(_) | State::Listing(_) => {
                if self.queue.len() >= MAX_QUEUED_REQUESTS {
                    return Err(RequestError::QueueFull);
                }
                self.queue.push_back(request);
            }
            _ => return Err(RequestError::NotLoggedIn),
        }
        self.quitting = request == Request::Quit;
        Ok(())
    }

    // ---- input ----

    fn process(&mut self) {
        loop {
            match self.state {
                State::Closed => {
                    self.input.clear();
                    return;
                }
                State::StartingTls => {
                    // Checked when the +OK was read, and again for anything read later.
                    if !self.input.is_empty() {
                        self.fail(UpstreamError::ResponseInjection);
                    }
                    return;
                }
                State::Idle => {
                    if !self.input.is_empty() {
                        self.fail(protocol("the upstream sent data nobody asked for"));
                    }
                    return;
                }
                State::Streaming(_) => {
                    if !self.stream() {
                        return;
                    }
                }
                _ => match RESPONSE_LINES.next_line(&mut self.input) {
                    Ok(Some(line)) => self.line(&line),
                    Ok(None) => return,
                    Err(_) => {
                        self.fail(protocol(format!(
                            "the upstream sent a line longer than {MAX_RESPONSE_LINE} octets"
                        )));
                        return;
                    }
                },
            }
        }
    }

    /// Un-stuffs buffered input of a multi-line body. Returns whether the body ended.
    fn stream(&mut self) -> bool {
        let State::Streaming(unstuffer) = &mut self.state else {
            return false;
        };
        let mut consumed = 0;
        let mut done = false;
        while consumed < self.input.len() && !done {
            // The un-stuffer may add one held-back byte to what it is given.
            let end = self.input.len().min(consumed + MAX_DATA_PIECE - 1);
            let mut piece = Vec::with_capacity(end - consumed + 1);
            let decoded = unstuffer.feed(&self.input[consumed..end], &mut piece);
            consumed += decoded.consumed;
            done = decoded.end_of_data;
            if !piece.is_empty() {
                self.events.push_back(Output::MultiLineData(piece));
            }
        }
        self.input.drain(..consumed);
        if done {
            self.events.push_back(Output::MultiLineEnd);
            self.request_done();
        }
        done
    }

    fn line(&mut self, line: &[u8]) {
        match &mut self.state {
            State::CapaList { tls, capabilities } => {
                let tls = *tls;
                match listing_line(line) {
                    ListingLine::Content(capability) => {
                        if capabilities.len() >= MAX_CAPABILITIES {
                            return self.fail(protocol("the CAPA list is too long"));
                        }
                        capabilities.push_line(capability);
                    }
                    ListingLine::End => {
                        let capabilities = std::mem::take(capabilities);
                        self.capabilities_known(tls, capabilities);
                    }
                }
                return;
            }
            State::Listing(entries) => {
                match listing_line(line) {
                    ListingLine::Content(entry) => {
                        let Some(entry) = parse_uidl_entry(entry) else {
                            return self.fail(protocol("malformed UIDL listing line"));
                        };
                        entries.push(entry);
                        if entries.len() >= MAX_LISTING_BATCH {
                            let batch = std::mem::take(entries);
                            self.events.push_back(Output::UidlListing(batch));
                        }
                    }
                    ListingLine::End => {
                        let batch = std::mem::take(entries);
                        if !batch.is_empty() {
                            self.events.push_back(Output::UidlListing(batch));
                        }
                        self.events.push_back(Output::MultiLineEnd);
                        self.request_done();
                    }
                }
                return;
            }
            _ => {}
        }
        let status = match parse_status(line) {
            Ok(status) => status,
            Err(_) => return self.fail(protocol("malformed status line from the upstream")),
        };
        match (&self.state, status) {
            (State::AuthPlainChallenge, StatusLine::Continuation) => {
                let response = self.plain_response();
                let mut line = Zeroizing::new(Vec::with_capacity(response.len() + 2));
                line.extend_from_slice(response.as_bytes());
                line.extend_from_slice(b"\r\n");
                self.send_command(line, State::AuthPlain);
            }
            (State::AuthPlain, StatusLine::Continuation) => {
                // PLAIN has no server challenge: cancel (RFC 5034 §4) and give up.
                // Cancels the exchange (RFC 5034 §4); not a command.
                self.transmit.extend_from_slice(b"*\r\n");
                self.fail(protocol("unexpected SASL challenge to AUTH PLAIN"));
            }
            (_, StatusLine::Continuation) => self.fail(protocol("unexpected continuation line")),
            (_, StatusLine::Status(response)) => self.status(response),
        }
    }

    fn status(&mut self, response: Response) {
        let ok = response.is_ok();
        match self.state {
            State::Greeting if ok => self.send_command(
                command_line(Command::Capa),
                State::CapaStatus {
                    tls: self.tls_active,
                },
            ),
            State::Greeting => self.fail(UpstreamError::Unavailable(response)),
            State::CapaStatus { tls } if ok => {
                self.state = State::CapaList {
                    tls,
                    capabilities: Capabilities::default(),
                };
            }
            // No CAPA: without TLS nothing advertises STLS; over TLS, log in with USER/PASS.
            State::CapaStatus { tls } => self.capabilities_known(tls, Capabilities::default()),
            State::Stls if ok => {
                // Whatever came with the +OK was sent before the handshake: never read it.
                if !self.input.is_empty() {
                    return self.fail(UpstreamError::ResponseInjection);
                }
                self.state = State::StartingTls;
                self.events.push_back(Output::StartTls);
            }
            State::Stls => self.fail(UpstreamError::NoTls),
            State::User if ok => {
                let line = command_line(Command::Pass(self.config.password.expose()));
                self.send_command(line, State::Pass);
            }
            State::AuthPlain | State::Pass if ok => {
                self.state = State::Idle;
                let capabilities = std::mem::take(&mut self.capabilities);
                self.events.push_back(Output::LoggedIn { capabilities });
            }
            State::AuthPlainChallenge if ok => {
                self.fail(protocol("+OK to AUTH PLAIN before any credentials"))
            }
            State::User | State::Pass | State::AuthPlain | State::AuthPlainChallenge => {
                self.fail(UpstreamError::AuthRejected(response))
            }
            State::Awaiting(request) => self.answer(request, response),
            State::CapaList { .. }
            | State::Listing(_)
            | State::Streaming(_)
            | State::StartingTls
            | State::Idle
            | State::Closed => {}
        }
    }

    /// The status line answering a relayed request.
    fn answer(&mut self, request: Request, response: Response) {
        if !response.is_ok() {
            self.events.push_back(Output::Response(response));
            return self.request_done();
        }
        match request {
            Request::Quit => {
                self.events.push_back(Output::Response(response));
                self.close();
            }
            Request::Uidl(Some(n)) => match parse_uidl_entry(response.text().as_bytes()) {
                Some((message, uid)) if message == n => {
                    self.events.push_back(Output::UniqueId { message, uid });
                    self.request_done();
                }
                _ => self.fail(protocol("malformed answer to UIDL n")),
            },
            Request::Uidl(None) => {
                self.events.push_back(Output::MultiLineStart(response));
                self.state = State::Listing(Vec::new());
            }
            Request::List(None) | Request::Retr(_) | Request::Top(..) => {
                self.events.push_back(Output::MultiLineStart(response));
                self.state = State::Streaming(Unstuffer::new());
            }
            Request::Stat
            | Request::List(Some(_))
            | Request::Dele(_)
            | Request::Rset
            | Request::Noop => {
                self.events.push_back(Output::Response(response));
                self.request_done();
            }
        }
    }

    /// A CAPA list is complete (or CAPA is unsupported: an empty list).
    fn capabilities_known(&mut self, tls: bool, capabilities: Capabilities) {
        if !tls {
            if capabilities.has("STLS") {
                self.send_command(command_line(Command::Stls), State::Stls);
            } else {
                self.fail(UpstreamError::NoTls);
            }
            return;
        }
        self.login(capabilities);
    }

    /// Sends the credentials: SASL PLAIN if advertised, USER/PASS otherwise.
    fn login(&mut self, capabilities: Capabilities) {
        if !self.tls_active {
            // Unreachable by construction; the one guard that matters most is kept anyway.
            return self.fail(UpstreamError::NoTls);
        }
        let plain = capabilities.sasl_plain();
        self.capabilities = capabilities;
        if plain {
            let response = self.plain_response();
            let line = command_line(Command::Auth {
                mechanism: "PLAIN",
                initial_response: Some(&response),
            });
            if line.len() <= MAX_COMMAND_LINE {
                self.send_command(line, State::AuthPlain);
            } else {
                let line = command_line(Command::Auth {
                    mechanism: "PLAIN",
                    initial_response: None,
                });
                self.send_command(line, State::AuthPlainChallenge);
            }
        } else {
            let line = command_line(Command::User(&self.config.username));
            self.send_command(line, State::User);
        }
    }

    /// base64(`NUL username NUL password`), RFC 4616 with an empty authorization identity.
    fn plain_response(&self) -> Zeroizing<String> {
        crate::wire::sasl::encode_plain(&self.config.username, self.config.password.expose())
    }

    // ---- output ----

    /// Sends the next command. The core never pipelines, so anything still unread was sent
    /// by the upstream before it was asked: a protocol error.
    fn send_command(&mut self, line: Zeroizing<Vec<u8>>, next: State) {
        if !self.input.is_empty() {
            return self.fail(protocol("the upstream sent data before it was asked"));
        }
        self.transmit.extend_from_slice(&line);
        self.state = next;
        // The answer is awaited from the driver's next look (no `now` here).
        self.timer.restart();
    }

    /// The answer to a request is complete: send the next queued one, if any.
    fn request_done(&mut self) {
        self.state = State::Idle;
        if let Some(next) = self.queue.pop_front() {
            self.send_command(next.line(), State::Awaiting(next));
        }
    }

    fn fail(&mut self, error: UpstreamError) {
        if self.is_closed() {
            return;
        }
        tracing::debug!(%error, "upstream POP3 session failed");
        self.events.push_back(Output::Failed(error));
        self.close();
    }

    fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closed;
        self.input.clear();
        self.queue.clear();
        self.events.push_back(Output::Close);
    }
}

fn command_line(command: Command<'_>) -> Zeroizing<Vec<u8>> {
    // Wiped when dropped: USER, PASS and AUTH carry credentials.
    let mut line = Zeroizing::new(Vec::new());
    command.write(&mut line);
    line
}

fn protocol(message: impl Into<String>) -> UpstreamError {
    UpstreamError::Protocol(message.into())
}

impl Machine for UpstreamPop3 {
    type Event = Output;

    fn handle_input(&mut self, input: &[u8], now: Now) {
        self.receive(input);
        // Every read restarts the wait for the rest of the answer.
        self.timer.start(now.instant, RESPONSE_TIMEOUT);
    }

    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.timer.settle(now, RESPONSE_TIMEOUT);
        out.extend_from_slice(&self.transmit);
        zeroize::Zeroize::zeroize(&mut *self.transmit);
    }

    fn poll_event(&mut self) -> Option<Output> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.awaiting_upstream().then(|| self.timer.deadline())
    }

    /// The upstream did not answer in time.
    fn handle_timeout(&mut self, now: Now) {
        if self.awaiting_upstream() && self.timer.expired(now.instant, RESPONSE_TIMEOUT) {
            self.fail(UpstreamError::TimedOut);
        }
    }

    /// The connection is gone (EOF, read or write error, failed handshake).
    fn handle_connection_lost(&mut self) {
        self.fail(UpstreamError::Closed);
    }

    /// Whether the shell should read from the upstream: not during the TLS handshake and
    /// not after close.
    fn wants_input(&self) -> bool {
        !matches!(self.state, State::Closed | State::StartingTls)
    }

    fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
}

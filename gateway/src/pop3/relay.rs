//! The POP3 proxy session after login, sans-IO: client commands in, [`Request`]s to the
//! upstream core out; the upstream's answers in, client bytes and store actions out. A
//! [`Machine`] toward the client: its [`Action`]s are its events.
//!
//! One client command is in flight at a time, so answers stay in order and pipelined
//! commands simply wait in the input. No message leaves the upstream without a copy:
//!
//! - `RETR n` needs the message's UIDL for the one-copy rule: if no earlier `UIDL` told it,
//!   the proxy first asks `UIDL n` itself (that answer is not relayed). The terminating `.`
//!   reaches the client only with the proof that the copy is durable ([`Archived`], passed
//!   to [`Pop3Proxy::stored`]); if storing fails the connection is closed without it, so
//!   the client never takes the message as retrieved while the archive lacks it.
//! - `TOP n k` is asked upstream as `TOP n k+1`, and the client gets at most `k` body
//!   lines: if the upstream sent no more than `k`, the client has the whole message, which
//!   is then stored like a `RETR`'s (a partial one is dropped, never stored under the
//!   message's UIDL).
//! - `DELE n` of a message the archive lacks (by its UIDL, or not kept in this session) is
//!   preceded by a `RETR n` whose copy is stored, not relayed; the `DELE` goes upstream only
//!   once that copy is durable.
//!
//! What the proxy remembers of listings is capped ([`MAX_REMEMBERED`]): past it, a `RETR`
//! asks `UIDL n` again, so a hostile upstream cannot exhaust memory with a huge listing.
//! A client that retrieves a second message whose uid the proxy lacks (it never listed the
//! uids itself) gets the whole listing asked for it once, not `UIDL n` per message: against
//! a distant provider each of those is a round trip the client would not wait for direct.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use super::client::{Output as Upstream, Request, Response};
use super::timer::Timer;
use crate::net::{Machine, Now};
use crate::pop3::command::{self, Command};
use crate::pop3::line::{Frame, LineBuffer};
use crate::pop3::response::{write_multiline, Code, Reply, TERMINATOR};
use crate::pop3::{MIN_IDLE_TIMEOUT, PIPELINE_LIMIT};
use crate::store::Durable;
use crate::wire::dot::Stuffer;

/// Message numbers the proxy remembers (their UIDLs from listings, and the messages whose
/// copy it kept in this session). With UIDLs of at most 70 bytes this is well under a
/// megabyte per session; past it the proxy asks again instead of remembering.
pub const MAX_REMEMBERED: usize = 4096;

/// What the shell must do, in order (the client's bytes come from
/// [`Machine::poll_transmit`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// A request for the upstream core.
    Upstream(Request),
    /// A full message starts arriving: open a copy for it. `uid` is the upstream's UIDL
    /// (`None` if the upstream has none): with one, store it only if not stored before.
    StoreBegin { uid: Option<String> },
    /// The next bytes of the message (un-stuffed, CRLF lines).
    StoreData(Vec<u8>),
    /// The message is complete: commit the copy, then call [`Pop3Proxy::stored`].
    StoreEnd,
    /// The message turned out partial (a `TOP`): drop the copy, store nothing.
    StoreAbort,
    /// Whether the archive already holds the message with this UIDL: answer with
    /// [`Pop3Proxy::archived`].
    IsArchived { uid: String },
    /// Close the client connection (after every byte before it) and the upstream.
    Close,
}

/// How a message's copy is known to be safe, which releases what waited for it.
#[derive(Debug)]
pub enum Archived {
    /// Committed now: the store's proof.
    Now(Durable),
    /// The one-copy table, which only a durable commit fills, already holds its UIDL.
    Before,
}

/// Why a message is fetched from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `RETR`: relayed and stored.
    Retr,
    /// `TOP n lines`: relayed up to `lines` body lines, stored if that was all of it.
    Top { lines: u32 },
    /// Before a `DELE`: stored only, then the `DELE` is relayed.
    Dele,
}

/// What the proxy has asked the upstream for itself, to learn uids the client did not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UidsAsked {
    Nothing,
    /// One `UIDL n`: the next uid it lacks gets the whole listing asked.
    OneAlone,
    /// The listing, once; after it only `UIDL n` again.
    Listing,
}

/// What the proxy waits for.
#[derive(Debug)]
enum State {
    /// Ready for the next client command.
    Idle,
    /// A relayed single-line or listing command.
    Relaying,
    /// Our own `UIDL n` before the command that needs the uid.
    LookingUpUid {
        message: u32,
        purpose: Purpose,
    },
    /// Our own `UIDL` listing (not relayed), before the command that needs a uid.
    ListingUids {
        message: u32,
        purpose: Purpose,
    },
    /// [`Action::IsArchived`] asked before a `DELE n`.
    CheckingArchive {
        message: u32,
        uid: String,
    },
    /// `RETR n` or `TOP n` sent; `uid` as known.
    Retrieving {
        message: u32,
        uid: Option<String>,
        purpose: Purpose,
    },
    /// A multi-line body is passing through; `copy` when it is being stored.
    Streaming {
        stuffer: Stuffer,
        copy: Option<(u32, Purpose)>,
        /// For `TOP`: the body lines the upstream sent.
        body: BodyLines,
    },
    /// `StoreEnd` emitted; what follows waits for [`Pop3Proxy::stored`].
    Storing {
        message: u32,
        purpose: Purpose,
    },
    /// QUIT relayed.
    Quitting,
    Closed,
}

/// One proxied POP3 session in the TRANSACTION state.
#[derive(Debug)]
pub struct Pop3Proxy {
    state: State,
    input: LineBuffer,
    actions: VecDeque<Action>,
    /// Bytes for the client ([`Machine::poll_transmit`]); consecutive replies leave in one
    /// write. A stored message's terminator is written here only once its copy is safe.
    pending: Vec<u8>,
    /// RFC 1939 §3 autologout; runs while the proxy waits for the client's next command.
    timer: Timer,
    /// message number → UIDL, from listings and `UIDL n` seen (at most [`MAX_REMEMBERED`]).
    uids: HashMap<u32, String>,
    /// Messages whose copy is safe, from this session (at most [`MAX_REMEMBERED`]).
    kept: HashSet<u32>,
    /// What the proxy has asked the upstream for itself, to learn uids, in this session.
    uids_asked: UidsAsked,
    errors: u32,
    shutting_down: bool,
}

impl Pop3Proxy {
    /// Takes over after a successful upstream login; `input` is what the client pipelined
    /// behind its login, at `now`.
    pub fn new(input: &[u8], now: Instant) -> Self {
        let mut proxy = Self {
            state: State::Idle,
            input: LineBuffer::new(),
            actions: VecDeque::new(),
            pending: Vec::new(),
            timer: Timer::new(now, MIN_IDLE_TIMEOUT),
            uids: HashMap::new(),
            kept: HashSet::new(),
            uids_asked: UidsAsked::Nothing,
            errors: 0,
            shutting_down: false,
        };
        proxy.input.push(input);
        proxy.process();
        proxy
    }

    fn receive(&mut self, data: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.input.push(data);
        self.process();
    }

    fn shut(&mut self) {
        Reply::err_code(Code::SysTemp, "server shutting down, try again later")
            .write_to(&mut self.pending);
        self.close();
    }

    /// An output of the upstream core (everything but `StartTls` and `LoggedIn`, which the
    /// shell handles).
    pub fn upstream(&mut self, output: Upstream) {
        match output {
            Upstream::Response(response) => self.single_line(&response),
            Upstream::UniqueId { message, uid } => {
                self.remember(message, uid.clone());
                match std::mem::replace(&mut self.state, State::Idle) {
                    State::LookingUpUid { message, purpose } => {
                        self.uid_known(message, Some(uid), purpose)
                    }
                    _ => {
                        Reply::ok(format!("{message} {uid}")).write_to(&mut self.pending);
                        self.command_done();
                    }
                }
            }
            // Our own listing: nothing of it is for the client.
            Upstream::MultiLineStart(_) if matches!(self.state, State::ListingUids { .. }) => {}
            Upstream::MultiLineStart(response) => {
                let (copy, stuffer) = match std::mem::replace(&mut self.state, State::Idle) {
                    State::Retrieving {
                        message,
                        uid,
                        purpose,
                    } => {
                        self.actions.push_back(Action::StoreBegin { uid });
                        let stuffer = match purpose {
                            Purpose::Top { lines } => Stuffer::top(lines),
                            Purpose::Retr | Purpose::Dele => Stuffer::new(),
                        };
                        (Some((message, purpose)), stuffer)
                    }
                    _ => (None, Stuffer::new()),
                };
                // Before a DELE the client sees nothing of the message.
                if !matches!(copy, Some((_, Purpose::Dele))) {
                    response.write_to(&mut self.pending);
                }
                self.state = State::Streaming {
                    stuffer,
                    copy,
                    body: BodyLines::default(),
                };
            }
            Upstream::MultiLineData(data) => {
                if let State::Streaming {
                    stuffer,
                    copy,
                    body,
                } = &mut self.state
                {
                    match copy {
                        None => stuffer.feed(&data, &mut self.pending),
                        Some((_, purpose)) => {
                            if let Purpose::Top { .. } = purpose {
                                body.feed(&data);
                            }
                            if *purpose != Purpose::Dele {
                                stuffer.feed(&data, &mut self.pending);
                            }
                            self.actions.push_back(Action::StoreData(data));
                        }
                    }
                }
            }
            Upstream::UidlListing(entries) => {
                match &mut self.state {
                    State::Streaming { stuffer, .. } => {
                        for (message, uid) in &entries {
                            let line = format!("{message} {uid}\r\n");
                            stuffer.feed(line.as_bytes(), &mut self.pending);
                        }
                    }
                    // Our own listing: only remembered.
                    State::ListingUids { .. } => {}
                    _ => return,
                }
                for (message, uid) in entries {
                    self.remember(message, uid);
                }
            }
            Upstream::MultiLineEnd => self.multi_line_end(),
            Upstream::Failed(error) => {
                tracing::warn!(%error, "POP3 proxy: upstream failed");
                // In the middle of a body a `-ERR` would read as message content, and a
                // `.` would pass a truncated message off as whole: just close.
                if !self.client_mid_body() {
                    Reply::err_code(
                        Code::SysTemp,
                        format!("upstream server failed ({error}), try again later"),
                    )
                    .write_to(&mut self.pending);
                }
                self.close();
            }
            Upstream::Close => self.close(),
            Upstream::StartTls | Upstream::LoggedIn { .. } => {}
        }
    }

    fn multi_line_end(&mut self) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Streaming {
                stuffer,
                copy: Some((message, purpose)),
                body,
            } => {
                if let Purpose::Top { lines } = purpose {
                    if body.count() > u64::from(lines) {
                        // The client got part of the message: nothing to keep.
                        self.actions.push_back(Action::StoreAbort);
                        stuffer.finish(&mut self.pending);
                        return self.command_done();
                    }
                }
                if purpose != Purpose::Dele {
                    // The `.` waits for the copy; the stuffer's pending line end goes now.
                    let mut tail = Vec::new();
                    stuffer.finish(&mut tail);
                    let line_end = tail.len().saturating_sub(TERMINATOR.len());
                    self.pending.extend_from_slice(&tail[..line_end]);
                }
                self.actions.push_back(Action::StoreEnd);
                self.state = State::Storing { message, purpose };
            }
            State::Streaming { stuffer, .. } => {
                stuffer.finish(&mut self.pending);
                self.command_done();
            }
            State::ListingUids { message, purpose } => match self.uids.get(&message) {
                Some(uid) => self.uid_known(message, Some(uid.clone()), purpose),
                // Past what the proxy remembers, or not listed: ask for it alone.
                None => self.look_up_uid(message, purpose),
            },
            other => self.state = other,
        }
    }

    /// Whether the client is in the middle of a multi-line answer.
    fn client_mid_body(&self) -> bool {
        match &self.state {
            State::Streaming { copy, .. } => !matches!(copy, Some((_, Purpose::Dele))),
            State::Storing { purpose, .. } => *purpose != Purpose::Dele,
            _ => false,
        }
    }

    /// The copy after [`Action::StoreEnd`] is safe (`Some`, with the proof), or could not
    /// be stored (`None`).
    pub fn stored(&mut self, copy: Option<Archived>) {
        let State::Storing { message, purpose } = self.state else {
            return;
        };
        match (copy, purpose) {
            (Some(_proof), Purpose::Dele) => {
                self.keep(message);
                self.relay(Request::Dele(message));
            }
            (Some(_proof), _) => {
                self.keep(message);
                self.pending.extend_from_slice(TERMINATOR);
                self.command_done();
            }
            (None, Purpose::Dele) => {
                tracing::error!(
                    "POP3 proxy: no copy of a message could be kept; its DELE is refused"
                );
                Reply::err_code(
                    Code::SysTemp,
                    "no copy of this message could be archived; not deleted, try again later",
                )
                .write_to(&mut self.pending);
                self.command_done();
            }
            (None, _) => {
                tracing::error!("POP3 proxy: the copy of a retrieved message could not be stored; closing without completing the message");
                self.close();
            }
        }
    }

    /// The answer to [`Action::IsArchived`].
    pub fn archived(&mut self, archived: bool) {
        let State::CheckingArchive { message, .. } = &self.state else {
            return;
        };
        let message = *message;
        if archived {
            self.keep(message);
            self.relay(Request::Dele(message));
            return;
        }
        let State::CheckingArchive { uid, .. } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        self.fetch(message, Some(uid), Purpose::Dele);
    }

    fn single_line(&mut self, response: &Response) {
        match std::mem::replace(&mut self.state, State::Idle) {
            // `UIDL n` refused (no UIDL support, or no such message): go on without a uid;
            // a missing message gets RETR's (or TOP's) own -ERR.
            State::LookingUpUid { message, purpose } => self.uid_known(message, None, purpose),
            // The listing refused: ask for the uid alone.
            State::ListingUids { message, purpose } => self.look_up_uid(message, purpose),
            State::Quitting => {
                response.write_to(&mut self.pending);
                self.close();
            }
            _ => {
                response.write_to(&mut self.pending);
                self.command_done();
            }
        }
    }

    /// The next step of a command that needed message `message`'s uid.
    fn uid_known(&mut self, message: u32, uid: Option<String>, purpose: Purpose) {
        match (purpose, uid) {
            (Purpose::Dele, Some(uid)) => {
                self.actions
                    .push_back(Action::IsArchived { uid: uid.clone() });
                self.state = State::CheckingArchive { message, uid };
            }
            (purpose, uid) => self.fetch(message, uid, purpose),
        }
    }

    fn fetch(&mut self, message: u32, uid: Option<String>, purpose: Purpose) {
        let request = match purpose {
            // One line more than asked: if it does not come, the client has it all.
            Purpose::Top { lines } => Request::Top(message, lines.saturating_add(1)),
            Purpose::Retr | Purpose::Dele => Request::Retr(message),
        };
        self.state = State::Retrieving {
            message,
            uid,
            purpose,
        };
        self.actions.push_back(Action::Upstream(request));
    }

    fn remember(&mut self, message: u32, uid: String) {
        if self.uids.len() < MAX_REMEMBERED || self.uids.contains_key(&message) {
            self.uids.insert(message, uid);
        }
    }

    fn keep(&mut self, message: u32) {
        if self.kept.len() < MAX_REMEMBERED {
            self.kept.insert(message);
        }
    }

    fn process(&mut self) {
        while matches!(self.state, State::Idle) {
            match self.input.next_frame() {
                None if !self.input.overflowed() => return,
                // A line beyond MAX_AUTH_LINE closes the connection whether or not its LF
                // has come (an endless line would otherwise be read and dropped forever), so
                // the outcome does not depend on how the reads split it.
                None | Some(Frame::TooLong) => {
                    Reply::err("line too long").write_to(&mut self.pending);
                    return self.close();
                }
                Some(Frame::Line { text, .. }) => self.command(&text),
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        let request = match command::parse(line) {
            Ok(Command::Stat) => Request::Stat,
            Ok(Command::List(n)) => match number(n) {
                Ok(n) => Request::List(n),
                Err(()) => return self.refuse("no such message"),
            },
            Ok(Command::Uidl(n)) => match number(n) {
                Ok(n) => Request::Uidl(n),
                Err(()) => return self.refuse("no such message"),
            },
            Ok(Command::Retr(n)) => return self.needs_uid(n, Purpose::Retr),
            Ok(Command::Top { message, lines }) => {
                let lines = u32::try_from(lines).unwrap_or(u32::MAX);
                return self.needs_uid(message, Purpose::Top { lines });
            }
            Ok(Command::Dele(n)) => match u32::try_from(n) {
                Ok(n) if self.kept.contains(&n) => Request::Dele(n),
                Ok(_) => return self.needs_uid(n, Purpose::Dele),
                Err(_) => return self.refuse("no such message"),
            },
            Ok(Command::Rset) => Request::Rset,
            Ok(Command::Noop) => Request::Noop,
            Ok(Command::Quit) => {
                self.state = State::Quitting;
                self.actions.push_back(Action::Upstream(Request::Quit));
                return;
            }
            Ok(Command::Capa) => return self.capa(),
            Ok(Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::Stls) => {
                return self.refuse("already logged in")
            }
            Err(_) => return self.refuse("unknown command or bad arguments"),
        };
        self.relay(request);
    }

    fn relay(&mut self, request: Request) {
        self.state = State::Relaying;
        self.actions.push_back(Action::Upstream(request));
    }

    /// RETR, TOP and DELE of a message not known to be kept: its uid first.
    fn needs_uid(&mut self, n: u64, purpose: Purpose) {
        let Ok(message) = u32::try_from(n) else {
            return self.refuse("no such message");
        };
        match self.uids.get(&message) {
            Some(uid) => self.uid_known(message, Some(uid.clone()), purpose),
            None if self.uids_asked == UidsAsked::OneAlone => {
                self.uids_asked = UidsAsked::Listing;
                self.state = State::ListingUids { message, purpose };
                self.actions
                    .push_back(Action::Upstream(Request::Uidl(None)));
            }
            None => self.look_up_uid(message, purpose),
        }
    }

    /// `UIDL message` before the command that needs the uid.
    fn look_up_uid(&mut self, message: u32, purpose: Purpose) {
        if self.uids_asked == UidsAsked::Nothing {
            self.uids_asked = UidsAsked::OneAlone;
        }
        self.state = State::LookingUpUid { message, purpose };
        self.actions
            .push_back(Action::Upstream(Request::Uidl(Some(message))));
    }

    fn capa(&mut self) {
        write_multiline(
            &mut self.pending,
            &Reply::ok("capability list follows"),
            [
                "TOP",
                "UIDL",
                "RESP-CODES",
                "PIPELINING",
                "IMPLEMENTATION gateway proxy",
            ],
        );
    }

    fn refuse(&mut self, text: &'static str) {
        Reply::err(text).write_to(&mut self.pending);
        self.errors += 1;
        if self.errors >= crate::pop3::MAX_ERRORS {
            self.close();
        }
    }

    fn command_done(&mut self) {
        self.state = State::Idle;
        // The client's silence counts from the driver's next look.
        self.timer.restart();
        if self.shutting_down {
            return self.shut();
        }
        self.process();
    }

    fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closed;
        self.input.clear();
        self.actions.push_back(Action::Close);
    }
}

impl Machine for Pop3Proxy {
    type Event = Action;

    fn handle_input(&mut self, input: &[u8], now: Now) {
        self.receive(input);
        self.timer.start(now.instant, MIN_IDLE_TIMEOUT);
    }

    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.timer.settle(now, MIN_IDLE_TIMEOUT);
        out.append(&mut self.pending);
    }

    fn poll_event(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Only while the proxy waits for the client: otherwise the upstream (with its own
    /// timer) or the shell has the next word.
    fn poll_timeout(&self) -> Option<Instant> {
        matches!(self.state, State::Idle).then(|| self.timer.deadline())
    }

    /// The client stayed silent: close, without UPDATE upstream.
    fn handle_timeout(&mut self, now: Now) {
        if matches!(self.state, State::Idle) && self.timer.expired(now.instant, MIN_IDLE_TIMEOUT) {
            self.close();
        }
    }

    /// The client went away: no UPDATE upstream (the core just closes).
    fn handle_connection_lost(&mut self) {
        self.close();
    }

    /// Graceful shutdown: between commands, `-ERR [SYS/TEMP]` and close without UPDATE (the
    /// client did not QUIT, so nothing is deleted upstream); a command in flight (a message
    /// being retrieved and stored) finishes first. A QUIT in flight completes.
    fn handle_shutdown(&mut self) {
        self.shutting_down = true;
        if matches!(self.state, State::Idle) {
            self.shut();
        }
    }

    fn wants_input(&self) -> bool {
        !self.is_closed() && self.input.len() < PIPELINE_LIMIT
    }

    fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
}

/// Counts a message's body lines as it streams (those after the blank line that ends the
/// header), so a `TOP` knows whether the upstream sent all of them.
#[derive(Debug, Default)]
struct BodyLines {
    in_body: bool,
    /// In the header: the current line has had only a CR so far.
    header_line_content: bool,
    lines: u64,
    /// A body line has begun without its LF yet.
    open_line: bool,
}

impl BodyLines {
    fn feed(&mut self, data: &[u8]) {
        let mut rest = data;
        while !self.in_body {
            let Some((&byte, tail)) = rest.split_first() else {
                return;
            };
            rest = tail;
            match byte {
                b'\n' if !self.header_line_content => self.in_body = true,
                b'\n' => self.header_line_content = false,
                b'\r' => {}
                _ => self.header_line_content = true,
            }
        }
        if let Some(&last) = rest.last() {
            self.lines += memchr::memchr_iter(b'\n', rest).count() as u64;
            self.open_line = last != b'\n';
        }
    }

    fn count(&self) -> u64 {
        self.lines + u64::from(self.open_line)
    }
}

fn number(n: Option<u64>) -> Result<Option<u32>, ()> {
    n.map(u32::try_from).transpose().map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::timer::testing::at;
    use proptest::prelude::*;
    use std::time::Duration;

    /// The proxy's actions and the bytes it sent the client since the last look. Compared
    /// with a list of actions, it also says that nothing was sent.
    #[derive(Debug, Default)]
    struct Drained {
        actions: Vec<Action>,
        sent: Vec<u8>,
    }

    impl Drained {
        fn absorb(&mut self, more: Drained) {
            self.actions.extend(more.actions);
            self.sent.extend(more.sent);
        }
    }

    impl std::ops::Deref for Drained {
        type Target = [Action];

        fn deref(&self) -> &[Action] {
            &self.actions
        }
    }

    impl PartialEq<Vec<Action>> for Drained {
        fn eq(&self, actions: &Vec<Action>) -> bool {
            self.sent.is_empty() && self.actions == *actions
        }
    }

    fn drain(proxy: &mut Pop3Proxy) -> Drained {
        let mut drained = Drained::default();
        proxy.poll_transmit(std::time::Instant::now(), &mut drained.sent);
        drained.actions = std::iter::from_fn(|| proxy.poll_event()).collect();
        drained
    }

    /// The proxy's only action now: `request` to the upstream.
    fn assert_asks(proxy: &mut Pop3Proxy, request: Request) {
        assert_eq!(drain(proxy), vec![Action::Upstream(request)]);
    }

    fn sent(drained: &Drained) -> Vec<u8> {
        drained.sent.clone()
    }

    fn new_proxy(input: &[u8]) -> Pop3Proxy {
        Pop3Proxy::new(input, Instant::now())
    }

    fn receive(proxy: &mut Pop3Proxy, input: &[u8]) {
        proxy.handle_input(input, at(Instant::now()));
    }

    fn durable() -> Option<Archived> {
        Some(Archived::Now(Durable::for_tests()))
    }

    fn retr_body(proxy: &mut Pop3Proxy, body: &[u8]) {
        proxy.upstream(Upstream::MultiLineStart(Response::ok("100 octets")));
        proxy.upstream(Upstream::MultiLineData(body.to_vec()));
        proxy.upstream(Upstream::MultiLineEnd);
    }

    #[test]
    fn retr_asks_for_the_uid_first_and_ends_only_once_stored() {
        let mut proxy = new_proxy(b"RETR 2\r\nNOOP\r\n");
        assert_asks(&mut proxy, Request::Uidl(Some(2)));
        proxy.upstream(Upstream::UniqueId {
            message: 2,
            uid: "abc".into(),
        });
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(2))]);
        retr_body(&mut proxy, b"Subject: x\r\n\r\n.dot\r\n");
        let actions = drain(&mut proxy);
        assert!(actions.contains(&Action::StoreBegin {
            uid: Some("abc".into())
        }));
        assert!(actions.contains(&Action::StoreData(b"Subject: x\r\n\r\n.dot\r\n".to_vec())));
        assert_eq!(actions.last(), Some(&Action::StoreEnd));
        let client = sent(&actions);
        assert_eq!(client, b"+OK 100 octets\r\nSubject: x\r\n\r\n..dot\r\n");
        // The pipelined NOOP waits until the copy is stored; then "." and NOOP go out.
        proxy.stored(durable());
        let actions = drain(&mut proxy);
        assert_eq!(sent(&actions), b".\r\n");
        assert_eq!(actions.last(), Some(&Action::Upstream(Request::Noop)));
    }

    /// Retrieves message `n`, whose uid the proxy knows, and stores its copy.
    fn retrieve_known(proxy: &mut Pop3Proxy, n: u32, uid: &str) {
        receive(proxy, format!("RETR {n}\r\n").as_bytes());
        assert_eq!(drain(proxy), vec![Action::Upstream(Request::Retr(n))]);
        retr_body(proxy, b"body\r\n");
        let actions = drain(proxy);
        assert!(actions.contains(&Action::StoreBegin {
            uid: Some(uid.into())
        }));
        proxy.stored(durable());
        assert_eq!(sent(&drain(proxy)), b".\r\n");
    }

    /// A client retrieves message 1 without listing the uids (its uid is asked alone), then
    /// asks for message 2: the proxy asks the upstream for the listing, for itself.
    fn second_retr_without_a_listing() -> Pop3Proxy {
        let mut proxy = new_proxy(b"RETR 1\r\n");
        assert_asks(&mut proxy, Request::Uidl(Some(1)));
        proxy.upstream(Upstream::UniqueId {
            message: 1,
            uid: "u1".into(),
        });
        drain(&mut proxy);
        retr_body(&mut proxy, b"body\r\n");
        drain(&mut proxy);
        proxy.stored(durable());
        drain(&mut proxy);
        receive(&mut proxy, b"RETR 2\r\n");
        assert_asks(&mut proxy, Request::Uidl(None));
        proxy
    }

    /// A client that retrieves message after message without listing the uids itself: the
    /// first uid is asked alone, then the proxy asks the listing once, for itself.
    #[test]
    fn a_second_unknown_uid_gets_the_listing_asked_once() {
        let mut proxy = second_retr_without_a_listing();
        proxy.upstream(Upstream::MultiLineStart(Response::ok("")));
        proxy.upstream(Upstream::UidlListing(vec![
            (1, "u1".into()),
            (2, "u2".into()),
        ]));
        proxy.upstream(Upstream::UidlListing(vec![(3, "u3".into())]));
        proxy.upstream(Upstream::MultiLineEnd);
        // Nothing of the listing reaches the client; RETR 2 goes on with its uid.
        let actions = drain(&mut proxy);
        assert_eq!(actions, vec![Action::Upstream(Request::Retr(2))]);
        assert!(sent(&actions).is_empty());
        retr_body(&mut proxy, b"body\r\n");
        assert!(drain(&mut proxy).contains(&Action::StoreBegin {
            uid: Some("u2".into())
        }));
        proxy.stored(durable());
        assert_eq!(sent(&drain(&mut proxy)), b".\r\n");
        // The next one's uid is known already.
        retrieve_known(&mut proxy, 3, "u3");

        // A message the listing did not have is asked alone; the listing is not asked again.
        receive(&mut proxy, b"RETR 4\r\n");
        assert_asks(&mut proxy, Request::Uidl(Some(4)));
    }

    #[test]
    fn a_refused_listing_falls_back_to_the_uid_alone() {
        let mut proxy = second_retr_without_a_listing();
        proxy.upstream(Upstream::Response(Response::err("not now")));
        let actions = drain(&mut proxy);
        assert_eq!(actions, vec![Action::Upstream(Request::Uidl(Some(2)))]);
        assert!(sent(&actions).is_empty(), "the refusal was the proxy's own");
    }

    #[test]
    fn endless_command_line_is_refused_and_the_connection_closed() {
        let mut proxy = new_proxy(b"");
        let chunk = vec![b'x'; 1024];
        let mut actions = Drained::default();
        for _ in 0..64 {
            receive(&mut proxy, &chunk);
            actions.absorb(drain(&mut proxy));
            if proxy.is_closed() {
                break;
            }
        }
        assert!(proxy.is_closed(), "an endless line is not read forever");
        assert!(sent(&actions).starts_with(b"-ERR"));
        assert_eq!(actions.last(), Some(&Action::Close));
        assert!(!actions.iter().any(|a| matches!(a, Action::Upstream(_))));
    }

    /// Found by the `pop3_command` fuzz target in the server session, which frames lines the
    /// same way: a line beyond MAX_AUTH_LINE with its LF in the same read was refused and the
    /// session went on, while the same bytes in pieces closed it. Both now close.
    #[test]
    fn overlong_line_closes_however_it_is_read() {
        let input = format!(
            "NOOP {}\r\nNOOP\r\n",
            "a".repeat(crate::pop3::MAX_AUTH_LINE)
        );
        let run = |pieces: &[&[u8]]| {
            let mut proxy = new_proxy(b"");
            let mut actions = Drained::default();
            for piece in pieces {
                receive(&mut proxy, piece);
                actions.absorb(drain(&mut proxy));
            }
            assert!(proxy.is_closed());
            assert!(!actions.iter().any(|a| matches!(a, Action::Upstream(_))));
            sent(&actions)
        };
        let whole = run(&[input.as_bytes()]);
        let pieces: Vec<&[u8]> = input.as_bytes().chunks(100).collect();
        assert_eq!(whole, run(&pieces));
        assert_eq!(whole, b"-ERR line too long\r\n");
    }

    #[test]
    fn a_copy_that_cannot_be_stored_closes_without_the_terminator() {
        // A UIDL listing the client asked for teaches the proxy the uids.
        let mut proxy = new_proxy(b"UIDL\r\n");
        assert_asks(&mut proxy, Request::Uidl(None));
        proxy.upstream(Upstream::MultiLineStart(Response::ok("")));
        proxy.upstream(Upstream::UidlListing(vec![(1, "u1".into())]));
        proxy.upstream(Upstream::MultiLineEnd);
        assert_eq!(sent(&drain(&mut proxy)), b"+OK\r\n1 u1\r\n.\r\n");
        receive(&mut proxy, b"RETR 1\r\n");
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(1))]);
        retr_body(&mut proxy, b"body\r\n");
        drain(&mut proxy);
        proxy.stored(None);
        let actions = drain(&mut proxy);
        assert_eq!(actions, vec![Action::Close]);
    }

    #[test]
    fn upstream_failure_mid_body_closes_without_an_error_line() {
        let mut proxy = new_proxy(b"RETR 1\r\n");
        drain(&mut proxy);
        proxy.upstream(Upstream::Response(Response::err("no UIDL")));
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(1))]);
        proxy.upstream(Upstream::MultiLineStart(Response::ok("")));
        proxy.upstream(Upstream::MultiLineData(b"half a mess".to_vec()));
        drain(&mut proxy);
        proxy.upstream(Upstream::Failed(crate::pop3::client::UpstreamError::Closed));
        let actions = drain(&mut proxy);
        assert!(!sent(&actions).starts_with(b"-ERR"));
        assert_eq!(actions.last(), Some(&Action::Close));
    }

    #[test]
    fn partial_top_is_relayed_not_stored_and_login_commands_refused() {
        let mut proxy = new_proxy(b"TOP 1 0\r\n");
        assert_asks(&mut proxy, Request::Uidl(Some(1)));
        proxy.upstream(Upstream::UniqueId {
            message: 1,
            uid: "u1".into(),
        });
        // One line more than the client asked for, to learn whether it gets it all.
        assert_asks(&mut proxy, Request::Top(1, 1));
        retr_body(&mut proxy, b"Subject: x\r\n\r\nfirst line\r\n");
        let actions = drain(&mut proxy);
        assert_eq!(sent(&actions), b"+OK 100 octets\r\nSubject: x\r\n\r\n.\r\n");
        assert!(!actions.contains(&Action::StoreEnd));
        assert!(actions.contains(&Action::StoreAbort));
        receive(&mut proxy, b"USER x\r\nCAPA\r\n");
        let client = sent(&drain(&mut proxy));
        assert!(client.starts_with(b"-ERR"));
        assert!(String::from_utf8_lossy(&client).contains("UIDL"));
    }

    #[test]
    fn top_returning_the_whole_message_stores_it_first() {
        // The uid is known from a listing; TOP with a huge count gets the whole message.
        let mut proxy = new_proxy(b"");
        proxy.upstream(Upstream::UniqueId {
            message: 3,
            uid: "u3".into(),
        });
        drain(&mut proxy);
        receive(&mut proxy, b"TOP 3 4294967295\r\nNOOP\r\n");
        assert_asks(&mut proxy, Request::Top(3, u32::MAX));
        retr_body(&mut proxy, b"Subject: x\r\n\r\none\r\ntwo\r\n");
        let actions = drain(&mut proxy);
        assert!(actions.contains(&Action::StoreBegin {
            uid: Some("u3".into())
        }));
        assert_eq!(actions.last(), Some(&Action::StoreEnd));
        assert_eq!(
            sent(&actions),
            b"+OK 100 octets\r\nSubject: x\r\n\r\none\r\ntwo\r\n",
            "the terminator waits for the copy"
        );
        proxy.stored(durable());
        let actions = drain(&mut proxy);
        assert_eq!(sent(&actions), b".\r\n");
        assert_eq!(actions.last(), Some(&Action::Upstream(Request::Noop)));

        // Exactly as many body lines as asked: the upstream was asked for one more and
        // sent none, so this is the whole message too.
        proxy.upstream(Upstream::Response(Response::ok("")));
        drain(&mut proxy);
        receive(&mut proxy, b"TOP 3 2\r\n");
        assert_asks(&mut proxy, Request::Top(3, 3));
        retr_body(&mut proxy, b"Subject: x\r\n\r\none\r\ntwo");
        assert_eq!(drain(&mut proxy).last(), Some(&Action::StoreEnd));
        proxy.stored(None);
        assert_eq!(drain(&mut proxy), vec![Action::Close]);
    }

    #[test]
    fn top_counts_body_lines_across_chunks() {
        let mut body = BodyLines::default();
        for chunk in [
            &b"Subject: a\r"[..],
            b"\n\r",
            b"\nline",
            b" one\r\n",
            b"two",
        ] {
            body.feed(chunk);
        }
        assert_eq!(body.count(), 2);
        let mut headers_only = BodyLines::default();
        headers_only.feed(b"Subject: a\r\nX: b\r\n");
        assert_eq!(headers_only.count(), 0);
    }

    #[test]
    fn dele_of_a_message_the_archive_lacks_fetches_and_stores_it_first() {
        let mut proxy = new_proxy(b"DELE 2\r\n");
        assert_asks(&mut proxy, Request::Uidl(Some(2)));
        proxy.upstream(Upstream::UniqueId {
            message: 2,
            uid: "u2".into(),
        });
        assert_eq!(
            drain(&mut proxy),
            vec![Action::IsArchived { uid: "u2".into() }]
        );
        proxy.archived(false);
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(2))]);
        retr_body(&mut proxy, b"Subject: x\r\n\r\nbody\r\n");
        let actions = drain(&mut proxy);
        assert_eq!(
            actions,
            vec![
                Action::StoreBegin {
                    uid: Some("u2".into())
                },
                Action::StoreData(b"Subject: x\r\n\r\nbody\r\n".to_vec()),
                Action::StoreEnd
            ],
            "the client sees nothing of the message, the DELE waits for the copy"
        );
        proxy.stored(durable());
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Dele(2))]);
        proxy.upstream(Upstream::Response(Response::ok("deleted")));
        assert_eq!(sent(&drain(&mut proxy)), b"+OK deleted\r\n");

        // Kept in this session: a second DELE (after RSET) goes straight up.
        receive(&mut proxy, b"DELE 2\r\n");
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Dele(2))]);
    }

    #[test]
    fn dele_is_refused_when_no_copy_can_be_kept() {
        // No UIDL upstream: the message is fetched without one.
        let mut proxy = new_proxy(b"DELE 1\r\nNOOP\r\n");
        drain(&mut proxy);
        proxy.upstream(Upstream::Response(Response::err("no UIDL")));
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(1))]);
        retr_body(&mut proxy, b"x\r\n");
        assert_eq!(drain(&mut proxy)[0], Action::StoreBegin { uid: None });
        proxy.stored(None);
        let actions = drain(&mut proxy);
        assert!(sent(&actions).starts_with(b"-ERR [SYS/TEMP]"));
        assert!(!actions.contains(&Action::Upstream(Request::Dele(1))));
        assert_eq!(actions.last(), Some(&Action::Upstream(Request::Noop)));
    }

    #[test]
    fn dele_of_an_archived_or_retrieved_message_is_relayed() {
        let mut proxy = new_proxy(b"");
        proxy.upstream(Upstream::UniqueId {
            message: 1,
            uid: "u1".into(),
        });
        drain(&mut proxy);
        receive(&mut proxy, b"DELE 1\r\n");
        assert_eq!(
            drain(&mut proxy),
            vec![Action::IsArchived { uid: "u1".into() }]
        );
        proxy.archived(true);
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Dele(1))]);
        proxy.upstream(Upstream::Response(Response::ok("")));
        drain(&mut proxy);
        // Retrieved (and kept) in this session: no question asked.
        receive(&mut proxy, b"RETR 4\r\n");
        drain(&mut proxy);
        proxy.upstream(Upstream::Response(Response::err("no UIDL")));
        drain(&mut proxy);
        retr_body(&mut proxy, b"x\r\n");
        drain(&mut proxy);
        proxy.stored(Some(Archived::Before));
        assert_eq!(sent(&drain(&mut proxy)), b".\r\n");
        receive(&mut proxy, b"DELE 4\r\n");
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Dele(4))]);
    }

    #[test]
    fn a_huge_uidl_listing_is_relayed_but_not_remembered() {
        let mut proxy = new_proxy(b"UIDL\r\n");
        drain(&mut proxy);
        proxy.upstream(Upstream::MultiLineStart(Response::ok("")));
        let total = 200_000u32;
        let mut relayed = 0usize;
        for start in (1..=total).step_by(1000) {
            let batch = (start..start + 1000)
                .map(|n| (n, format!("{n:0>70}")))
                .collect();
            proxy.upstream(Upstream::UidlListing(batch));
            relayed += sent(&drain(&mut proxy)).len();
        }
        proxy.upstream(Upstream::MultiLineEnd);
        drain(&mut proxy);
        assert!(relayed > 200_000 * 70, "the listing is relayed in full");
        assert_eq!(proxy.uids.len(), MAX_REMEMBERED);
        // A message past the cap: its uid is asked for again.
        receive(&mut proxy, b"RETR 199999\r\n");
        assert_asks(&mut proxy, Request::Uidl(Some(199_999)));
    }

    #[test]
    fn shutdown_lets_a_retrieval_finish_then_closes_without_update() {
        let mut proxy = new_proxy(b"");
        proxy.upstream(Upstream::UniqueId {
            message: 1,
            uid: "u".into(),
        });
        drain(&mut proxy);
        receive(&mut proxy, b"UIDL 1\r\n");
        drain(&mut proxy);
        proxy.upstream(Upstream::UniqueId {
            message: 1,
            uid: "u".into(),
        });
        drain(&mut proxy);
        receive(&mut proxy, b"RETR 1\r\nDELE 1\r\nQUIT\r\n");
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(1))]);
        proxy.handle_shutdown();
        retr_body(&mut proxy, b"x\r\n");
        drain(&mut proxy);
        proxy.stored(durable());
        let actions = drain(&mut proxy);
        let client = sent(&actions);
        assert!(
            client.starts_with(b".\r\n-ERR [SYS/TEMP]"),
            "{}",
            String::from_utf8_lossy(&client)
        );
        assert_eq!(actions.last(), Some(&Action::Close));
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Upstream(_))),
            "no DELE, no QUIT"
        );
    }

    #[test]
    fn quit_is_relayed_then_closes() {
        let mut proxy = new_proxy(b"DELE 1\r\nQUIT\r\n");
        drain(&mut proxy);
        proxy.upstream(Upstream::UniqueId {
            message: 1,
            uid: "u1".into(),
        });
        drain(&mut proxy);
        proxy.archived(true);
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Dele(1))]);
        proxy.upstream(Upstream::Response(Response::ok("deleted")));
        let actions = drain(&mut proxy);
        assert_eq!(actions.sent, b"+OK deleted\r\n");
        assert_eq!(actions.actions, vec![Action::Upstream(Request::Quit)]);
        proxy.upstream(Upstream::Response(Response::ok("bye")));
        proxy.upstream(Upstream::Close);
        let actions = drain(&mut proxy);
        assert_eq!(actions.sent, b"+OK bye\r\n");
        assert_eq!(actions.actions, vec![Action::Close]);
        assert!(proxy.is_closed());
    }

    #[test]
    fn the_idle_timer_runs_only_while_the_client_owes_a_command() {
        let start = Instant::now();
        let mut proxy = Pop3Proxy::new(b"", start);
        assert_eq!(proxy.poll_timeout(), Some(start + MIN_IDLE_TIMEOUT));
        let noop = start + Duration::from_secs(60);
        proxy.handle_input(b"NOOP\r\n", at(noop));
        assert_eq!(proxy.poll_timeout(), None, "the upstream has the next word");
        proxy.upstream(Upstream::Response(Response::ok("")));
        // The answer came without a time: the timer restarts at the driver's next look.
        let look = noop + Duration::from_secs(2);
        proxy.handle_timeout(at(proxy.poll_timeout().unwrap().max(look)));
        assert!(!proxy.is_closed());
        let deadline = proxy.poll_timeout().unwrap();
        proxy.handle_timeout(at(deadline - Duration::from_nanos(1)));
        assert!(!proxy.is_closed());
        proxy.handle_timeout(at(deadline));
        assert!(proxy.is_closed());
        assert_eq!(drain(&mut proxy).actions.last(), Some(&Action::Close));
    }

    proptest! {
        /// Whatever the client sends and the upstream answers, the proxy never panics, at
        /// most one request is outstanding, and a stored message's terminator never
        /// precedes its `stored` answer.
        #[test]
        fn arbitrary_sessions(client in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
                              answers in proptest::collection::vec(0u8..6, 0..40)) {
            let mut proxy = new_proxy(b"");
            let mut answers = answers.into_iter();
            for write in client {
                receive(&mut proxy, &write);
                let mut steps = 0;
                proxy.poll_transmit(std::time::Instant::now(), &mut Vec::new());
                while let Some(action) = proxy.poll_event() {
                    steps += 1;
                    prop_assert!(steps < 1000);
                    match action {
                        Action::Upstream(_) => match answers.next().unwrap_or(0) {
                            0 => proxy.upstream(Upstream::Response(Response::ok("x"))),
                            1 => proxy.upstream(Upstream::Response(Response::err("x"))),
                            2 => proxy.upstream(Upstream::UniqueId { message: 1, uid: "u".into() }),
                            3 => { proxy.upstream(Upstream::MultiLineStart(Response::ok(""))); proxy.upstream(Upstream::MultiLineData(b"a\r\n".to_vec())); proxy.upstream(Upstream::MultiLineEnd); }
                            4 => proxy.upstream(Upstream::Failed(crate::pop3::client::UpstreamError::TimedOut)),
                            _ => proxy.upstream(Upstream::UidlListing(vec![(1, "u".into())])),
                        },
                        Action::StoreEnd => proxy.stored(
                            (answers.next().unwrap_or(0) % 2 == 0).then(|| Archived::Now(Durable::for_tests()))
                        ),
                        Action::IsArchived { .. } => proxy.archived(answers.next().unwrap_or(0) % 2 == 0),
                        Action::Close => prop_assert!(proxy.is_closed()),
                        _ => {}
                    }
                }
            }
        }
    }
}

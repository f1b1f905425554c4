//! The POP3 proxy session after login, sans-IO: client commands in, [`Request`]s to the
//! upstream core out; the upstream's answers in, client bytes and store actions out.
//!
//! One client command is in flight at a time, so answers stay in order and pipelined
//! commands simply wait in the input. `RETR` needs the message's UIDL for the one-copy
//! rule: if no earlier `UIDL` told it, the proxy first asks `UIDL n` itself (that answer is
//! not relayed). A retrieved message's terminating `.` reaches the client only after its
//! copy is durable ([`Pop3Proxy::stored`]); if storing fails the connection is closed
//! without it, so the client never takes the message as retrieved (and never deletes it
//! upstream) while the archive lacks it.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::pop3_client::{Output as Upstream, Request, Response};
use crate::pop3::command::{self, Command};
use crate::pop3::line::{Frame, LineBuffer};
use crate::pop3::response::{write_multiline, Code, Reply, TERMINATOR};
use crate::pop3::stuffing::Stuffer;
use crate::pop3::{MIN_IDLE_TIMEOUT, PIPELINE_LIMIT};

/// What the shell must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Bytes for the client.
    Send(Vec<u8>),
    /// A request for the upstream core.
    Upstream(Request),
    /// A full message starts arriving: open a copy for it. `uid` is the upstream's UIDL
    /// (`None` if the upstream has none): with one, store it only if not stored before.
    StoreBegin { uid: Option<String> },
    /// The next bytes of the message (un-stuffed, CRLF lines).
    StoreData(Vec<u8>),
    /// The message is complete: commit the copy, then call [`Pop3Proxy::stored`].
    StoreEnd,
    /// Close the client connection (after every `Send`) and the upstream.
    Close,
}

/// What the proxy waits for.
#[derive(Debug)]
enum State {
    /// Ready for the next client command.
    Idle,
    /// A relayed single-line or listing command.
    Relaying,
    /// Our own `UIDL n` before `RETR n`.
    LookingUpUid(u32),
    /// `RETR n` sent; `uid` as known.
    Retrieving {
        uid: Option<String>,
    },
    /// A multi-line body is passing through; `store` for RETR.
    Streaming {
        stuffer: Stuffer,
        store: bool,
    },
    /// `StoreEnd` emitted; the `.` waits for [`Pop3Proxy::stored`].
    Storing,
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
    /// Client bytes not yet in an action; consecutive replies leave in one write.
    pending: Vec<u8>,
    /// message number → UIDL, from every listing and `UIDL n` seen.
    uids: HashMap<u32, String>,
    errors: u32,
    shutting_down: bool,
}

impl Pop3Proxy {
    /// Takes over after a successful upstream login; `input` is what the client pipelined
    /// behind its login.
    pub fn new(input: &[u8]) -> Self {
        let mut proxy = Self {
            state: State::Idle,
            input: LineBuffer::new(),
            actions: VecDeque::new(),
            pending: Vec::new(),
            uids: HashMap::new(),
            errors: 0,
            shutting_down: false,
        };
        proxy.input.push(input);
        proxy.process();
        proxy
    }

    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front().or_else(|| {
            (!self.pending.is_empty()).then(|| Action::Send(std::mem::take(&mut self.pending)))
        })
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub fn wants_input(&self) -> bool {
        !self.is_closed() && self.input.len() < PIPELINE_LIMIT
    }

    /// RFC 1939 §3 autologout for an idle client.
    pub fn timeout(&self) -> Duration {
        MIN_IDLE_TIMEOUT
    }

    pub fn receive(&mut self, data: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.input.push(data);
        self.process();
    }

    /// Graceful shutdown: between commands, `-ERR [SYS/TEMP]` and close without UPDATE (the
    /// client did not QUIT, so nothing is deleted upstream); a command in flight (a message
    /// being retrieved and stored) finishes first. A QUIT in flight completes.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        if matches!(self.state, State::Idle) {
            self.shut();
        }
    }

    fn shut(&mut self) {
        Reply::err_code(Code::SysTemp, "server shutting down, try again later")
            .write_to(&mut self.pending);
        self.close();
    }

    /// The client went away or timed out: no UPDATE upstream (the core just closes).
    pub fn client_gone(&mut self) {
        self.close();
    }

    /// An output of the upstream core (everything but `Send`, `StartTls` and `LoggedIn`,
    /// which the shell handles).
    pub fn upstream(&mut self, output: Upstream) {
        match output {
            Upstream::Response(response) => self.single_line(&response),
            Upstream::UniqueId { message, uid } => {
                self.uids.insert(message, uid.clone());
                match std::mem::replace(&mut self.state, State::Idle) {
                    State::LookingUpUid(n) => {
                        self.state = State::Retrieving { uid: Some(uid) };
                        self.actions.push_back(Action::Upstream(Request::Retr(n)));
                    }
                    _ => {
                        Reply::ok(format!("{message} {uid}")).write_to(&mut self.pending);
                        self.command_done();
                    }
                }
            }
            Upstream::MultiLineStart(response) => {
                let store = match std::mem::replace(&mut self.state, State::Idle) {
                    State::Retrieving { uid } => {
                        self.flush();
                        self.actions.push_back(Action::StoreBegin { uid });
                        true
                    }
                    _ => false,
                };
                response.write_to(&mut self.pending);
                self.state = State::Streaming {
                    stuffer: Stuffer::new(),
                    store,
                };
            }
            Upstream::MultiLineData(data) => {
                if let State::Streaming { stuffer, store } = &mut self.state {
                    stuffer.feed(&data, &mut self.pending);
                    if *store {
                        let client = std::mem::take(&mut self.pending);
                        self.actions.push_back(Action::Send(client));
                        self.actions.push_back(Action::StoreData(data));
                    }
                }
            }
            Upstream::UidlListing(entries) => {
                if let State::Streaming { stuffer, .. } = &mut self.state {
                    for (message, uid) in entries {
                        stuffer.feed(format!("{message} {uid}\r\n").as_bytes(), &mut self.pending);
                        self.uids.insert(message, uid);
                    }
                }
            }
            Upstream::MultiLineEnd => match std::mem::replace(&mut self.state, State::Idle) {
                State::Streaming {
                    stuffer,
                    store: true,
                } => {
                    // The `.` waits for the copy; the stuffer's pending line end goes now.
                    let mut tail = Vec::new();
                    stuffer.finish(&mut tail);
                    let line_end = tail.len().saturating_sub(TERMINATOR.len());
                    self.pending.extend_from_slice(&tail[..line_end]);
                    self.flush();
                    self.actions.push_back(Action::StoreEnd);
                    self.state = State::Storing;
                }
                State::Streaming { stuffer, .. } => {
                    stuffer.finish(&mut self.pending);
                    self.command_done();
                }
                other => self.state = other,
            },
            Upstream::Failed(error) => {
                tracing::warn!(%error, "POP3 proxy: upstream failed");
                // In the middle of a body a `-ERR` would read as message content, and a
                // `.` would pass a truncated message off as whole: just close.
                if !matches!(self.state, State::Streaming { .. } | State::Storing) {
                    Reply::err_code(
                        Code::SysTemp,
                        format!("upstream server failed ({error}), try again later"),
                    )
                    .write_to(&mut self.pending);
                }
                self.close();
            }
            Upstream::Close => self.close(),
            Upstream::Send(_) | Upstream::StartTls | Upstream::LoggedIn { .. } => {}
        }
    }

    /// The copy after [`Action::StoreEnd`] is durable (`true`, or it was stored before), or
    /// could not be stored (`false`).
    pub fn stored(&mut self, ok: bool) {
        if !matches!(self.state, State::Storing) {
            return;
        }
        if ok {
            self.pending.extend_from_slice(b".\r\n");
            self.command_done();
        } else {
            tracing::error!("POP3 proxy: the copy of a retrieved message could not be stored; closing without completing the message");
            self.close();
        }
    }

    fn single_line(&mut self, response: &Response) {
        match std::mem::replace(&mut self.state, State::Idle) {
            // `UIDL n` refused (no UIDL support, or no such message): RETR without a uid
            // if it is an unsupported command; a missing message gets RETR's own -ERR.
            State::LookingUpUid(n) => {
                self.state = State::Retrieving { uid: None };
                self.actions.push_back(Action::Upstream(Request::Retr(n)));
            }
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

    fn process(&mut self) {
        while matches!(self.state, State::Idle) {
            let Some(frame) = self.input.next_frame() else {
                return;
            };
            match frame {
                Frame::TooLong => self.refuse("line too long"),
                Frame::Line { text, .. } => self.command(&text),
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
            Ok(Command::Retr(n)) => return self.retr(n),
            Ok(Command::Top { message, lines }) => match u32::try_from(message) {
                Ok(n) => Request::Top(n, u32::try_from(lines).unwrap_or(u32::MAX)),
                Err(_) => return self.refuse("no such message"),
            },
            Ok(Command::Dele(n)) => match u32::try_from(n) {
                Ok(n) => Request::Dele(n),
                Err(_) => return self.refuse("no such message"),
            },
            Ok(Command::Rset) => Request::Rset,
            Ok(Command::Noop) => Request::Noop,
            Ok(Command::Quit) => {
                self.state = State::Quitting;
                self.flush();
                self.actions.push_back(Action::Upstream(Request::Quit));
                return;
            }
            Ok(Command::Capa) => return self.capa(),
            Ok(Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::Stls) => {
                return self.refuse("already logged in")
            }
            Err(_) => return self.refuse("unknown command or bad arguments"),
        };
        self.state = State::Relaying;
        self.flush();
        self.actions.push_back(Action::Upstream(request));
    }

    fn retr(&mut self, n: u64) {
        let Ok(n) = u32::try_from(n) else {
            return self.refuse("no such message");
        };
        self.flush();
        match self.uids.get(&n) {
            Some(uid) => {
                self.state = State::Retrieving {
                    uid: Some(uid.clone()),
                };
                self.actions.push_back(Action::Upstream(Request::Retr(n)));
            }
            None => {
                self.state = State::LookingUpUid(n);
                self.actions
                    .push_back(Action::Upstream(Request::Uidl(Some(n))));
            }
        }
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
        if self.shutting_down {
            return self.shut();
        }
        self.process();
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.actions
                .push_back(Action::Send(std::mem::take(&mut self.pending)));
        }
    }

    fn close(&mut self) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closed;
        self.input.clear();
        self.flush();
        self.actions.push_back(Action::Close);
    }
}

fn number(n: Option<u64>) -> Result<Option<u32>, ()> {
    n.map(u32::try_from).transpose().map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(proxy: &mut Pop3Proxy) -> Vec<Action> {
        std::iter::from_fn(|| proxy.poll()).collect()
    }

    fn sent(actions: &[Action]) -> Vec<u8> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(bytes) => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn retr_body(proxy: &mut Pop3Proxy, body: &[u8]) {
        proxy.upstream(Upstream::MultiLineStart(Response::ok("100 octets")));
        proxy.upstream(Upstream::MultiLineData(body.to_vec()));
        proxy.upstream(Upstream::MultiLineEnd);
    }

    #[test]
    fn retr_asks_for_the_uid_first_and_ends_only_once_stored() {
        let mut proxy = Pop3Proxy::new(b"RETR 2\r\nNOOP\r\n");
        assert_eq!(
            drain(&mut proxy),
            vec![Action::Upstream(Request::Uidl(Some(2)))]
        );
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
        proxy.stored(true);
        let actions = drain(&mut proxy);
        assert_eq!(sent(&actions), b".\r\n");
        assert_eq!(actions.last(), Some(&Action::Upstream(Request::Noop)));
    }

    #[test]
    fn a_copy_that_cannot_be_stored_closes_without_the_terminator() {
        // A UIDL listing the client asked for teaches the proxy the uids.
        let mut proxy = Pop3Proxy::new(b"UIDL\r\n");
        assert_eq!(
            drain(&mut proxy),
            vec![Action::Upstream(Request::Uidl(None))]
        );
        proxy.upstream(Upstream::MultiLineStart(Response::ok("")));
        proxy.upstream(Upstream::UidlListing(vec![(1, "u1".into())]));
        proxy.upstream(Upstream::MultiLineEnd);
        assert_eq!(sent(&drain(&mut proxy)), b"+OK\r\n1 u1\r\n.\r\n");
        proxy.receive(b"RETR 1\r\n");
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(1))]);
        retr_body(&mut proxy, b"body\r\n");
        drain(&mut proxy);
        proxy.stored(false);
        let actions = drain(&mut proxy);
        assert_eq!(actions, vec![Action::Close]);
    }

    #[test]
    fn upstream_failure_mid_body_closes_without_an_error_line() {
        let mut proxy = Pop3Proxy::new(b"RETR 1\r\n");
        drain(&mut proxy);
        proxy.upstream(Upstream::Response(Response::err("no UIDL")));
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(1))]);
        proxy.upstream(Upstream::MultiLineStart(Response::ok("")));
        proxy.upstream(Upstream::MultiLineData(b"half a mess".to_vec()));
        drain(&mut proxy);
        proxy.upstream(Upstream::Failed(
            super::super::pop3_client::UpstreamError::Closed,
        ));
        let actions = drain(&mut proxy);
        assert!(!sent(&actions).starts_with(b"-ERR"));
        assert_eq!(actions.last(), Some(&Action::Close));
    }

    #[test]
    fn top_and_listings_are_relayed_not_stored_and_login_commands_refused() {
        let mut proxy = Pop3Proxy::new(b"TOP 1 0\r\n");
        assert_eq!(
            drain(&mut proxy),
            vec![Action::Upstream(Request::Top(1, 0))]
        );
        retr_body(&mut proxy, b"Subject: x\r\n\r\n");
        let actions = drain(&mut proxy);
        assert!(!actions
            .iter()
            .any(|a| matches!(a, Action::StoreBegin { .. })));
        assert!(sent(&actions).ends_with(b"\r\n.\r\n"));
        proxy.receive(b"USER x\r\nCAPA\r\n");
        let client = sent(&drain(&mut proxy));
        assert!(client.starts_with(b"-ERR"));
        assert!(String::from_utf8_lossy(&client).contains("UIDL"));
    }

    #[test]
    fn shutdown_lets_a_retrieval_finish_then_closes_without_update() {
        let mut proxy = Pop3Proxy::new(b"");
        proxy.upstream(Upstream::UniqueId {
            message: 1,
            uid: "u".into(),
        });
        drain(&mut proxy);
        proxy.receive(b"UIDL 1\r\n");
        drain(&mut proxy);
        proxy.upstream(Upstream::UniqueId {
            message: 1,
            uid: "u".into(),
        });
        drain(&mut proxy);
        proxy.receive(b"RETR 1\r\nDELE 1\r\nQUIT\r\n");
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Retr(1))]);
        proxy.shutdown();
        retr_body(&mut proxy, b"x\r\n");
        drain(&mut proxy);
        proxy.stored(true);
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
        let mut proxy = Pop3Proxy::new(b"DELE 1\r\nQUIT\r\n");
        assert_eq!(drain(&mut proxy), vec![Action::Upstream(Request::Dele(1))]);
        proxy.upstream(Upstream::Response(Response::ok("deleted")));
        assert_eq!(
            drain(&mut proxy),
            vec![
                Action::Send(b"+OK deleted\r\n".to_vec()),
                Action::Upstream(Request::Quit)
            ]
        );
        proxy.upstream(Upstream::Response(Response::ok("bye")));
        proxy.upstream(Upstream::Close);
        let actions = drain(&mut proxy);
        assert_eq!(
            actions,
            vec![Action::Send(b"+OK bye\r\n".to_vec()), Action::Close]
        );
        assert!(proxy.is_closed());
    }

    proptest! {
        /// Whatever the client sends and the upstream answers, the proxy never panics, at
        /// most one request is outstanding, and a stored message's terminator never
        /// precedes its `stored` answer.
        #[test]
        fn arbitrary_sessions(client in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
                              answers in proptest::collection::vec(0u8..6, 0..40)) {
            let mut proxy = Pop3Proxy::new(b"");
            let mut answers = answers.into_iter();
            for write in client {
                proxy.receive(&write);
                let mut steps = 0;
                while let Some(action) = proxy.poll() {
                    steps += 1;
                    prop_assert!(steps < 1000);
                    match action {
                        Action::Upstream(_) => match answers.next().unwrap_or(0) {
                            0 => proxy.upstream(Upstream::Response(Response::ok("x"))),
                            1 => proxy.upstream(Upstream::Response(Response::err("x"))),
                            2 => proxy.upstream(Upstream::UniqueId { message: 1, uid: "u".into() }),
                            3 => { proxy.upstream(Upstream::MultiLineStart(Response::ok(""))); proxy.upstream(Upstream::MultiLineData(b"a\r\n".to_vec())); proxy.upstream(Upstream::MultiLineEnd); }
                            4 => proxy.upstream(Upstream::Failed(super::super::pop3_client::UpstreamError::TimedOut)),
                            _ => proxy.upstream(Upstream::UidlListing(vec![(1, "u".into())])),
                        },
                        Action::StoreEnd => proxy.stored(answers.next().unwrap_or(0) % 2 == 0),
                        Action::Close => prop_assert!(proxy.is_closed()),
                        _ => {}
                    }
                }
            }
        }
    }
}

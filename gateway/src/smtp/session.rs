//! The SMTP server session: a state machine fed bytes and events, returning [`Output`]s.
//!
//! It never touches a socket, a clock or the store, so the tokio shell and the simulation
//! drive the same code. The shell contract:
//!
//! ```text
//! let mut session = Session::new(config, client);
//! loop {
//!     while let Some(output) = session.poll() {
//!         match output {
//!             Output::Send(bytes) => socket.write_all(&bytes).await?,
//!             Output::LookupRecipient(id) => session.recipient_status(service.status(&id)),
//!             Output::MessageStart(envelope) => draft = Some(service.draft(envelope)),
//!             Output::MessageData(bytes) => draft.write(&bytes)?,
//!             Output::MessageEnd => session.commit_result(service.commit(draft).await),
//!             Output::MessageAbort(_) => drop(draft.take()),
//!             Output::StartTls => { socket = tls.accept(socket).await?; session.tls_established(desc) }
//!             Output::Close => return,
//!         }
//!     }
//!     match timeout(session.timeout(), socket.read(&mut buf)).await {
//!         Ok(Ok(0)) | Ok(Err(_)) => session.connection_lost(),
//!         Ok(Ok(n)) => session.receive(&buf[..n], OffsetDateTime::now_utc()),
//!         Err(_) => session.timed_out(),
//!     }
//! }
//! ```
//!
//! A shell may buffer `Send`s and flush when `poll` returns `None` (replies to a pipelined
//! group then leave in one write, RFC 2920), but must flush before the TLS handshake.
//!
//! The shell answers each `LookupRecipient`, `MessageEnd` and `StartTls` before it reads
//! again; the session processes no input while one is outstanding, which is what keeps
//! pipelined commands (RFC 2920) in order behind a pending commit, and keeps memory
//! bounded by one read buffer plus one command line.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::address::{Domain, ForwardPath, ReversePath};
use super::command::{BodyType, Command, CommandError, MailParams};
use super::data::{BodyDecoder, Framing};
use super::error_map::Refusal;
use super::interface::{
    AbortReason, AuthFailure, ClientInfo, CommitFailure, Envelope, Output, ProxyCredentials,
    RecipientStatus, SessionConfig, UpstreamCommand,
};
use super::received::{received_header, Trace};
use super::reply::{EnhancedStatus, Reply};
use crate::mailbox::MailboxId;
use crate::net::TlsActive;
use crate::proxy::ProxyLogin;
use crate::store::Durable;
use zeroize::Zeroizing;

use crate::crypto::Secret;
use crate::crypto::WipingBuffer;
use crate::wire::sasl::{self, Response};

/// Longest accepted command line including CRLF. RFC 5321 §4.5.3.1.4 sets 512 and lets
/// extensions add to it (SIZE, BODY, SMTPUTF8 and a 256-octet path fit easily); 2048 is
/// generous for that and still a small, fixed buffer.
pub const MAX_COMMAND_LINE: usize = 2048;

/// RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.5: 3 minutes per data block.
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// RFC 5321 §4.5.3.2.6: the client waits 10 minutes for the reply to the end of data, so
/// the shell's commit must finish well within this.
pub const DATA_TERMINATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The client's HELO/EHLO.
struct Greeting {
    name: String,
    extended: bool,
}

/// A mail transaction: from MAIL until its final reply, RSET, HELO/EHLO or QUIT.
struct Transaction {
    /// When MAIL was accepted, for `transaction_timeout`.
    started: OffsetDateTime,
    mail_from: ReversePath,
    params: MailParams,
    recipients: Vec<MailboxId>,
    /// Proxy mode: the recipients the upstream accepted.
    forward_to: Vec<String>,
    /// Present once DATA or the first BDAT started the body.
    message: Option<Message>,
}

struct Message {
    id: String,
    decoder: BodyDecoder,
    /// Body octets received so far (unstuffed, without our Received header).
    size: u64,
    state: MessageState,
}

enum MessageState {
    /// Data is flowing to the shell.
    Streaming,
    /// `MessageAbort` was emitted; the rest is consumed and this refusal is the reply.
    Failed(Refusal),
    /// `MessageEnd` was emitted; waiting for the commit.
    Complete,
}

/// What the next input bytes are, or what the session waits for.
enum Mode {
    Commands,
    /// Inside DATA, until `CRLF.CRLF`.
    Data,
    /// Inside an accepted BDAT chunk.
    BdatChunk {
        remaining: u64,
        last: bool,
    },
    /// Inside a refused BDAT chunk: its octets are on the wire anyway (RFC 3030 §3), so
    /// they are consumed unread and then the refusal is sent. Only for chunks no larger
    /// than a message may be; a larger one is refused and the connection closed.
    BdatDiscard {
        remaining: u64,
        refusal: Refusal,
    },
    AwaitingRecipient(MailboxId),
    AwaitingCommit,
    AwaitingTls,
    /// After a `334`: the next line is the client's SASL response.
    AuthResponse(AuthStep),
    /// Waiting for [`Session::auth_result`].
    AwaitingAuth,
    /// Proxy mode: waiting for [`Session::upstream_reply`].
    AwaitingUpstream(Pending),
    Closed,
}

/// Where a SASL exchange is (RFC 4954, RFC 4616 PLAIN, the de-facto LOGIN).
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword { user: String },
}

/// The client command an upstream reply answers.
enum Pending {
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt(String),
    Data,
    /// The first BDAT of a message: its chunk waits in the input until the upstream is in
    /// DATA.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    /// HELO/EHLO in the middle of a proxied transaction, which the upstream must forget too.
    Hello {
        name: String,
        extended: bool,
    },
}

/// One SMTP server connection; see the module documentation.
pub struct Session {
    config: Arc<SessionConfig>,
    client: ClientInfo,
    /// TLS description once TLS is active.
    tls: Option<TlsActive>,
    greeting: Option<Greeting>,
    transaction: Option<Transaction>,
    mode: Mode,
    /// Received bytes not processed yet; AUTH lines are wiped from it once read.
    input: WipingBuffer,
    outputs: VecDeque<Output>,
    errors: u32,
    shutdown_requested: bool,
    messages_started: u64,
    /// The time given with the latest input, for the Received header.
    now: OffsetDateTime,
    /// Authenticated as a proxy client: transactions go to the upstream.
    proxy: bool,
    /// The upstream connection is gone; the session closes after its next reply.
    upstream_gone: bool,
    /// The client has had a MAIL accepted or logged in: from then on the RFC's command
    /// timeout applies instead of `preauth_timeout`.
    engaged: bool,
}

impl Session {
    /// A new session; its first output is the greeting.
    pub fn new(config: Arc<SessionConfig>, client: ClientInfo) -> Self {
        let mut session = Self {
            tls: client.tls.clone(),
            config,
            client,
            greeting: None,
            transaction: None,
            mode: Mode::Commands,
            input: WipingBuffer::new(),
            outputs: VecDeque::new(),
            errors: 0,
            shutdown_requested: false,
            messages_started: 0,
            now: OffsetDateTime::UNIX_EPOCH,
            proxy: false,
            upstream_gone: false,
            engaged: false,
        };
        let host = &session.config.host_name;
        // RFC 5321 §3.1: a refused client gets 554 and then 503 to everything but QUIT.
        let greeting = if session.client.allowed {
            Reply::plain(220, vec![format!("{host} ESMTP ready")])
        } else {
            Reply::plain(554, vec![format!("{host} access denied")])
        };
        session.send(&greeting);
        session
    }

    /// Whether input may still carry credentials (AUTH and its SASL responses: proxy mode,
    /// not logged in yet), so the shell wipes its read buffer after handing bytes over.
    pub fn may_receive_credentials(&self) -> bool {
        self.config.proxy && !self.proxy && !matches!(self.mode, Mode::Closed)
    }

    /// The input buffer's whole allocation, stale bytes included (tests look for secrets).
    #[cfg(test)]
    pub(crate) fn input_storage(&self) -> &[u8] {
        self.input.storage()
    }

    /// The next thing for the shell to do.
    pub fn poll(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Bytes from the client, with the current time (used for the Received header of a
    /// message that starts now).
    pub fn receive(&mut self, bytes: &[u8], now: OffsetDateTime) {
        self.now = now;
        // During the TLS handshake the shell owns the socket; and nothing is read after
        // close.
        if matches!(self.mode, Mode::AwaitingTls | Mode::Closed) {
            return;
        }
        if self
            .transaction_remaining()
            .is_some_and(|left| left.is_zero())
        {
            self.end_transaction(AbortReason::TimedOut);
            return self.close_with(Refusal::TransactionTimeout);
        }
        self.input.push(bytes);
        self.process();
    }

    /// The answer to [`Output::LookupRecipient`].
    pub fn recipient_status(&mut self, status: RecipientStatus) {
        let Mode::AwaitingRecipient(id) = std::mem::replace(&mut self.mode, Mode::Commands) else {
            return self.ignore_unexpected_event("recipient_status");
        };
        match (status, self.transaction.as_mut()) {
            (RecipientStatus::Active, Some(transaction)) => {
                transaction.recipients.push(id);
                self.send(&ok(2, 1, 5, "recipient ok"));
            }
            (RecipientStatus::Active, None) => {
                self.refuse(Refusal::BadSequence("need MAIL command"))
            }
            (RecipientStatus::Suspended, _) => self.refuse(Refusal::RecipientSuspended),
            (RecipientStatus::Unknown, _) => self.refuse(Refusal::UnknownRecipient),
            (RecipientStatus::Unavailable, _) => self.refuse(Refusal::RecipientLookupFailed),
            (RecipientStatus::StorageFull, _) => {
                self.refuse(Refusal::Commit(CommitFailure::StorageFull))
            }
        }
        self.process();
    }

    /// The answer to [`Output::MessageEnd`]. Only a [`Durable`] proof gets the `250`.
    pub fn commit_result(&mut self, result: Result<Durable, CommitFailure>) {
        if !matches!(self.mode, Mode::AwaitingCommit) {
            return self.ignore_unexpected_event("commit_result");
        }
        self.mode = Mode::Commands;
        let id = self
            .transaction
            .take()
            .and_then(|transaction| transaction.message)
            .map(|message| message.id)
            .unwrap_or_default();
        match result {
            Ok(_durable) => self.send(&ok(2, 0, 0, format!("Ok: queued as {id}"))),
            Err(failure) => self.refuse(Refusal::Commit(failure)),
        }
        self.process();
    }

    /// The answer to [`Output::ProxyLogin`]: on success the session is in proxy mode.
    pub fn auth_result(&mut self, result: Result<(), AuthFailure>) {
        if !matches!(self.mode, Mode::AwaitingAuth) {
            return self.ignore_unexpected_event("auth_result");
        }
        self.mode = Mode::Commands;
        match result {
            Ok(()) => {
                self.proxy = true;
                self.engaged = true;
                self.send(&Reply::new(
                    235,
                    EnhancedStatus::new(2, 7, 0),
                    "authentication successful, relaying to the upstream server",
                ));
            }
            Err(failure) => self.refuse(Refusal::Auth(failure)),
        }
        self.process();
    }

    /// The upstream's reply to [`Output::Upstream`] (proxy mode).
    pub fn upstream_reply(&mut self, reply: Reply) {
        let Mode::AwaitingUpstream(pending) = std::mem::replace(&mut self.mode, Mode::Commands)
        else {
            return self.ignore_unexpected_event("upstream_reply");
        };
        let positive = reply.code() / 100 == 2;
        match pending {
            Pending::Mail { from, params } => {
                if positive {
                    self.transaction = Some(Transaction {
                        started: self.now,
                        mail_from: from,
                        params,
                        recipients: Vec::new(),
                        forward_to: Vec::new(),
                        message: None,
                    });
                }
                self.send(&reply);
            }
            Pending::Rcpt(address) => {
                if let (true, Some(transaction)) = (positive, self.transaction.as_mut()) {
                    transaction.forward_to.push(address);
                }
                self.send(&reply);
            }
            Pending::Data if reply.code() == 354 => {
                self.send(&Reply::plain(
                    354,
                    vec!["end data with <CR><LF>.<CR><LF>".to_owned()],
                ));
                self.start_message(Framing::DotTerminated);
                self.mode = Mode::Data;
            }
            Pending::Data => {
                self.transaction = None;
                self.send(&reply);
            }
            Pending::Bdat { size, last } if reply.code() == 354 => {
                self.start_message(Framing::Chunked);
                self.mode = Mode::BdatChunk {
                    remaining: size,
                    last,
                };
            }
            Pending::Bdat { size, .. } => {
                self.transaction = None;
                self.mode = Mode::BdatDiscard {
                    remaining: size,
                    refusal: Refusal::Relayed(reply),
                };
            }
            Pending::Rset => self.send(&ok(2, 0, 0, "Ok")),
            Pending::Hello { name, extended } => self.hello_reply(name, extended),
        }
        self.process();
    }

    /// The end of a proxied message (the answer to [`Output::MessageEnd`] in proxy mode):
    /// the upstream's reply after the final dot. Its `250` reaches the client only with a
    /// [`Durable`] proof that the copy is stored; a refusal is passed on.
    pub fn message_relayed(&mut self, result: Result<(Durable, Reply), Reply>) {
        if !matches!(self.mode, Mode::AwaitingCommit) {
            return self.ignore_unexpected_event("message_relayed");
        }
        self.mode = Mode::Commands;
        self.transaction = None;
        match result {
            Ok((_durable, reply)) => self.send(&reply),
            Err(reply) => self.send(&reply),
        }
        self.after_upstream_loss();
        self.process();
    }

    /// The upstream connection failed (proxy mode). A command waiting for it gets `reply`;
    /// a message still arriving is refused with it at its end; then the session closes.
    pub fn upstream_failed(&mut self, reply: Reply) {
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        self.upstream_gone = true;
        match self.mode {
            Mode::AwaitingUpstream(_) | Mode::AwaitingCommit => {
                self.mode = Mode::Commands;
                self.end_transaction(AbortReason::Closed);
                self.send(&reply);
                self.close_with(Refusal::UpstreamLost);
            }
            Mode::Data | Mode::BdatChunk { .. } => {
                if let Some(message) = self.message_mut() {
                    if matches!(message.state, MessageState::Streaming) {
                        message.state = MessageState::Failed(Refusal::Relayed(reply));
                        self.outputs
                            .push_back(Output::MessageAbort(AbortReason::Closed));
                    }
                }
            }
            _ => self.after_upstream_loss(),
        }
    }

    /// The TLS handshake after [`Output::StartTls`] succeeded. RFC 3207 §4.2: everything
    /// learnt before is forgotten and the client must send EHLO again.
    pub fn tls_established(&mut self, tls: TlsActive) {
        if !matches!(self.mode, Mode::AwaitingTls) {
            return self.ignore_unexpected_event("tls_established");
        }
        self.tls = Some(tls);
        self.greeting = None;
        self.transaction = None;
        self.input.clear();
        self.mode = Mode::Commands;
        self.process();
    }

    /// The shell's timer for [`Session::timeout`] fired: `421 4.4.2` and close.
    pub fn timed_out(&mut self) {
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        // The timer was the transaction's deadline if that came before the idle timeout.
        let deadline = self
            .transaction_remaining()
            .is_some_and(|left| left <= self.idle_timeout());
        self.end_transaction(AbortReason::TimedOut);
        self.close_with(if deadline {
            Refusal::TransactionTimeout
        } else {
            Refusal::Timeout
        });
    }

    /// The message's draft failed in the shell (the spool is full, a write failed): it
    /// cannot be stored, so the refusal goes out now and the connection closes rather than
    /// reading the rest of a message that would be thrown away.
    pub fn message_failed(&mut self, failure: CommitFailure) {
        let streaming = matches!(self.mode, Mode::Data | Mode::BdatChunk { .. })
            && self
                .message_mut()
                .is_some_and(|message| matches!(message.state, MessageState::Streaming));
        if !streaming {
            return self.ignore_unexpected_event("message_failed");
        }
        self.refuse_and_close(Refusal::Commit(failure));
    }

    /// The client went away (EOF, reset, failed TLS handshake).
    pub fn connection_lost(&mut self) {
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        self.end_transaction(AbortReason::Closed);
        self.input.clear();
        self.mode = Mode::Closed;
        self.outputs.push_back(Output::Close);
    }

    /// Graceful shutdown: close with `421 4.3.2` now if no transaction is open, otherwise as
    /// soon as the current one has its final reply.
    pub fn shutdown(&mut self) {
        self.shutdown_requested = true;
        self.process();
    }

    /// How long the shell should wait for the client (or for its own commit) in the
    /// current state before calling [`Session::timed_out`]: the RFC 5321 timeout of the
    /// state, `preauth_timeout` before the client has engaged, and never past the end of
    /// the transaction's `transaction_timeout` (counted from the time given with the
    /// latest input).
    pub fn timeout(&self) -> Duration {
        let idle = self.idle_timeout();
        match self.transaction_remaining() {
            Some(left) if self.waits_for_client() => idle.min(left),
            _ => idle,
        }
    }

    fn idle_timeout(&self) -> Duration {
        match self.mode {
            Mode::Data | Mode::BdatChunk { .. } | Mode::BdatDiscard { .. } => DATA_BLOCK_TIMEOUT,
            Mode::AwaitingCommit | Mode::AwaitingUpstream(_) | Mode::AwaitingAuth => {
                DATA_TERMINATION_TIMEOUT
            }
            Mode::Commands | Mode::AuthResponse(_) if !self.engaged => {
                self.config.preauth_timeout.min(COMMAND_TIMEOUT)
            }
            Mode::Commands
            | Mode::AwaitingRecipient(_)
            | Mode::AwaitingTls
            | Mode::AuthResponse(_)
            | Mode::Closed => COMMAND_TIMEOUT,
        }
    }

    /// Time left for the open transaction; `None` without one. The shell's own work (a
    /// lookup, the commit, the upstream) is not held against the client.
    fn transaction_remaining(&self) -> Option<Duration> {
        let started = self.transaction.as_ref()?.started;
        let elapsed = self.now - started;
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
        Some(self.config.transaction_timeout.saturating_sub(elapsed))
    }

    fn waits_for_client(&self) -> bool {
        matches!(
            self.mode,
            Mode::Commands
                | Mode::Data
                | Mode::BdatChunk { .. }
                | Mode::BdatDiscard { .. }
                | Mode::AuthResponse(_)
        )
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    pub fn tls_active(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether the shell should read from the client now. While the session waits for the
    /// shell (a lookup, commit or the upstream) it processes nothing, so reading on would
    /// only pile up input.
    pub fn wants_input(&self) -> bool {
        matches!(
            self.mode,
            Mode::Commands
                | Mode::Data
                | Mode::BdatChunk { .. }
                | Mode::BdatDiscard { .. }
                | Mode::AuthResponse(_)
        )
    }

    /// Authenticated as a proxy client.
    pub fn is_proxy(&self) -> bool {
        self.proxy
    }

    // ----- processing -----

    /// Works through buffered input until it runs out or the session must wait.
    fn process(&mut self) {
        loop {
            if self.shutdown_requested && self.is_idle() {
                self.close_with(Refusal::ShuttingDown);
                return;
            }
            let progressed = match self.mode {
                Mode::Commands | Mode::AuthResponse(_) => self.next_command(),
                Mode::Data => self.data_content(),
                Mode::BdatChunk { .. } => self.bdat_content(),
                Mode::BdatDiscard { .. } => self.bdat_discard(),
                Mode::AwaitingRecipient(_)
                | Mode::AwaitingCommit
                | Mode::AwaitingTls
                | Mode::AwaitingAuth
                | Mode::AwaitingUpstream(_)
                | Mode::Closed => false,
            };
            if !progressed {
                return;
            }
        }
    }

    fn is_idle(&self) -> bool {
        matches!(self.mode, Mode::Commands) && self.transaction.is_none()
    }

    fn next_command(&mut self) -> bool {
        let Some(lf) = self.input.iter().position(|&byte| byte == b'\n') else {
            if self.input.len() >= MAX_COMMAND_LINE {
                // Reply now and close: skipping to the line's end would let an endless
                // line hold the connection forever.
                self.refuse_and_close(Refusal::CommandLineTooLong);
            }
            return false;
        };
        // An AUTH command or a SASL response carries a credential: nothing of it may stay
        // behind in the buffer.
        let line = if matches!(self.mode, Mode::AuthResponse(_)) || is_auth_command(&self.input) {
            self.input.take_front_wiping(lf + 1)
        } else {
            Zeroizing::new(self.input.take_front(lf + 1))
        };
        if let Mode::AuthResponse(step) = std::mem::replace(&mut self.mode, Mode::Commands) {
            let response = line.strip_suffix(b"\r\n").unwrap_or(&line);
            self.auth_response(step, response);
        } else if line.len() > MAX_COMMAND_LINE {
            self.refuse_and_close(Refusal::CommandLineTooLong);
        } else if let Some(command) = line.strip_suffix(b"\r\n") {
            self.execute(command);
        } else {
            self.refuse(Refusal::CommandBareLf);
        }
        true
    }

    fn execute(&mut self, line: &[u8]) {
        let smtputf8 = self
            .transaction
            .as_ref()
            .is_some_and(|transaction| transaction.params.smtputf8);
        let parsed = Command::parse(line, smtputf8);
        if !self.client.allowed {
            match parsed {
                Ok(Command::Quit) => self.quit(),
                _ => self.refuse(Refusal::AccessDenied),
            }
            return;
        }
        let command = match parsed {
            Ok(command) => command,
            Err(CommandError::MalformedBdat) => {
                // The chunk's end is unknown: its bytes would be read as commands.
                self.end_transaction(AbortReason::Closed);
                return self.close_with(Refusal::Command(CommandError::MalformedBdat));
            }
            Err(error) => return self.refuse(Refusal::Command(error)),
        };
        match command {
            Command::Helo { domain } => self.hello(domain, false),
            Command::Ehlo { domain } => self.hello(domain, true),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                let open = self.transaction.is_some();
                self.end_transaction(AbortReason::Reset);
                if self.proxy && open {
                    self.ask_upstream(UpstreamCommand::Rset, Pending::Rset);
                } else {
                    self.send(&ok(2, 0, 0, "Ok"));
                }
            }
            Command::Noop => self.send(&ok(2, 0, 0, "Ok")),
            Command::Quit => self.quit(),
            // RFC 5321 §3.5.3: 252 neither confirms nor denies; ids must not be probed.
            Command::Vrfy => self.send(&Reply::new(
                252,
                EnhancedStatus::new(2, 5, 0),
                "cannot verify, send the message to find out",
            )),
            Command::Expn => self.refuse(Refusal::NotImplemented("EXPN not available")),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(&mechanism, initial_response.map(Zeroizing::new)),
            Command::Help => self.send(&Reply::new(
                214,
                EnhancedStatus::new(2, 0, 0),
                "commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
            )),
            Command::StartTls => self.start_tls(),
        }
    }

    /// HELO/EHLO: also an implicit RSET (RFC 5321 §4.1.4).
    fn hello(&mut self, name: String, extended: bool) {
        let open = self.transaction.is_some();
        self.end_transaction(AbortReason::Reset);
        if self.proxy && open {
            return self.ask_upstream(UpstreamCommand::Rset, Pending::Hello { name, extended });
        }
        self.hello_reply(name, extended);
    }

    fn hello_reply(&mut self, name: String, extended: bool) {
        let host = self.config.host_name.clone();
        let reply = if extended {
            let mut lines = vec![
                host,
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.config.max_message_size),
                "8BITMIME".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "SMTPUTF8".to_owned(),
            ];
            if self.config.tls_available && self.tls.is_none() {
                lines.push("STARTTLS".to_owned());
            }
            // RFC 4954 §4 lets AUTH be offered before TLS; credentials never cross plaintext
            // here, so it is not.
            if self.config.proxy && self.tls.is_some() && !self.proxy {
                lines.push("AUTH PLAIN LOGIN".to_owned());
            }
            lines.push("CHUNKING".to_owned());
            Reply::plain(250, lines)
        } else {
            Reply::plain(250, vec![host])
        };
        self.greeting = Some(Greeting { name, extended });
        self.send(&reply);
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) {
        if self.greeting.is_none() {
            return self.refuse(Refusal::BadSequence("send HELO/EHLO first"));
        }
        if self.transaction.is_some() {
            return self.refuse(Refusal::BadSequence("nested MAIL command"));
        }
        if self.config.require_tls && self.tls.is_none() {
            return self.refuse(Refusal::TlsRequired);
        }
        if params
            .size
            .is_some_and(|size| size > self.config.max_message_size)
        {
            return self.refuse(Refusal::MessageTooBig);
        }
        if self.proxy {
            let command = UpstreamCommand::Mail {
                from: from.to_string(),
                params: params.to_string(),
            };
            return self.ask_upstream(command, Pending::Mail { from, params });
        }
        self.transaction = Some(Transaction {
            started: self.now,
            mail_from: from,
            params,
            recipients: Vec::new(),
            forward_to: Vec::new(),
            message: None,
        });
        self.engaged = true;
        self.send(&ok(2, 1, 0, "sender ok"));
    }

    fn rcpt(&mut self, to: ForwardPath) {
        let Some(transaction) = self.transaction.as_ref() else {
            return self.refuse(Refusal::BadSequence("need MAIL command"));
        };
        if transaction.message.is_some() {
            return self.refuse(Refusal::BadSequence("BDAT transfer in progress"));
        }
        if self.proxy {
            if transaction.forward_to.len() >= self.config.max_recipients {
                return self.refuse(Refusal::TooManyRecipients);
            }
            let address = match to {
                ForwardPath::Postmaster => "Postmaster".to_owned(),
                ForwardPath::Mailbox(mailbox) => mailbox.to_string(),
            };
            return self.ask_upstream(
                UpstreamCommand::Rcpt(address.clone()),
                Pending::Rcpt(address),
            );
        }
        let email_domain = self.config.email_domain.get();
        let email_domain = email_domain.trim_end_matches('.');
        let id = match to {
            // RFC 5321 §4.5.1: postmaster, with or without our domain, goes to the
            // configured mailbox.
            ForwardPath::Postmaster => self.config.postmaster.clone(),
            ForwardPath::Mailbox(mailbox) => {
                let ours = matches!(&mailbox.domain, Domain::Name(name) if name.eq_ignore_ascii_case(email_domain));
                if !ours {
                    return self.refuse(Refusal::RelayDenied);
                }
                if mailbox.local_part.eq_ignore_ascii_case("postmaster") {
                    self.config.postmaster.clone()
                } else {
                    let address = format!("{}@{}", mailbox.local_part, email_domain);
                    MailboxId::from_address(&address, email_domain)
                        // `MailboxId::parse` trims white space, which a quoted local part
                        // may carry.
                        .filter(|id| id.as_str().eq_ignore_ascii_case(&mailbox.local_part))
                }
            }
        };
        let Some(id) = id else {
            return self.refuse(Refusal::UnknownRecipient);
        };
        if transaction.recipients.contains(&id) {
            // One copy per mailbox; accepting keeps the sender from bouncing the duplicate.
            return self.send(&ok(2, 1, 5, "duplicate recipient, delivering once"));
        }
        if transaction.recipients.len() >= self.config.max_recipients {
            return self.refuse(Refusal::TooManyRecipients);
        }
        self.outputs.push_back(Output::LookupRecipient(id.clone()));
        self.mode = Mode::AwaitingRecipient(id);
    }

    fn data(&mut self) {
        let Some(transaction) = self.transaction.as_ref() else {
            return self.refuse(Refusal::BadSequence("need MAIL command"));
        };
        if transaction.message.is_some() {
            return self.refuse(Refusal::BadSequence("BDAT transfer in progress"));
        }
        if self.proxy {
            if transaction.forward_to.is_empty() {
                return self.refuse(Refusal::NoValidRecipients);
            }
            return self.ask_upstream(UpstreamCommand::Data, Pending::Data);
        }
        if transaction.recipients.is_empty() {
            return self.refuse(Refusal::NoValidRecipients);
        }
        self.send(&Reply::plain(
            354,
            vec!["end data with <CR><LF>.<CR><LF>".to_owned()],
        ));
        self.start_message(Framing::DotTerminated);
        self.mode = Mode::Data;
    }

    fn bdat(&mut self, size: u64, last: bool) {
        let proxy = self.proxy;
        let refusal = match self.transaction.as_ref() {
            None => Some(Refusal::BadSequence("need MAIL command")),
            Some(transaction) if proxy && transaction.forward_to.is_empty() => {
                Some(Refusal::NoValidRecipients)
            }
            Some(transaction) if !proxy && transaction.recipients.is_empty() => {
                Some(Refusal::NoValidRecipients)
            }
            Some(transaction) => {
                let so_far = transaction
                    .message
                    .as_ref()
                    .map_or(0, |message| message.size);
                (so_far.saturating_add(size) > self.config.max_message_size)
                    .then_some(Refusal::MessageTooBig)
            }
        };
        if let Some(refusal) = refusal {
            if refusal == Refusal::MessageTooBig || size > self.config.max_message_size {
                // Reading the chunk only to throw it away would let a declared size of
                // any length hold the connection: refuse it and close.
                self.end_transaction(AbortReason::TooBig);
                return self.refuse_and_close(refusal);
            }
            self.mode = Mode::BdatDiscard {
                remaining: size,
                refusal,
            };
            return;
        }
        if self
            .transaction
            .as_ref()
            .is_some_and(|transaction| transaction.message.is_none())
        {
            if self.proxy {
                return self.ask_upstream(UpstreamCommand::Data, Pending::Bdat { size, last });
            }
            self.start_message(Framing::Chunked);
        }
        self.mode = Mode::BdatChunk {
            remaining: size,
            last,
        };
    }

    fn start_tls(&mut self) {
        if !self.config.tls_available {
            return self.refuse(Refusal::NotImplemented("STARTTLS not available"));
        }
        if self.tls.is_some() {
            return self.refuse(Refusal::BadSequence("TLS already active"));
        }
        if self.greeting.is_none() {
            return self.refuse(Refusal::BadSequence("send EHLO first"));
        }
        if self.transaction.is_some() {
            return self.refuse(Refusal::BadSequence("mail transaction in progress"));
        }
        self.send(&Reply::new(
            220,
            EnhancedStatus::new(2, 0, 0),
            "ready to start TLS",
        ));
        // CVE-2011-0411: bytes pipelined behind STARTTLS arrived in plaintext and must
        // never be executed as if they came over TLS.
        self.input.clear();
        self.outputs.push_back(Output::StartTls);
        self.mode = Mode::AwaitingTls;
    }

    fn quit(&mut self) {
        self.end_transaction(AbortReason::Reset);
        let host = &self.config.host_name;
        let reply = Reply::new(
            221,
            EnhancedStatus::new(2, 0, 0),
            format!("{host} closing connection"),
        );
        self.send(&reply);
        self.close();
    }

    // ----- message body -----

    fn start_message(&mut self, framing: Framing) {
        self.messages_started += 1;
        let id = format!(
            "{}.{}",
            atom(&self.client.session_id),
            self.messages_started
        );
        let Some(transaction) = self.transaction.as_mut() else {
            return;
        };
        let envelope = Envelope {
            id: id.clone(),
            mail_from: transaction.mail_from.to_string(),
            rcpt: transaction.recipients.clone(),
            forward_to: transaction.forward_to.clone(),
            body_8bit: transaction.params.body == Some(BodyType::EightBitMime),
            smtputf8: transaction.params.smtputf8,
            declared_size: transaction.params.size,
        };
        let (helo, extended) = self
            .greeting
            .as_ref()
            .map_or(("unknown", false), |greeting| {
                (greeting.name.as_str(), greeting.extended)
            });
        let header = received_header(&Trace {
            helo,
            extended,
            peer: self.client.peer,
            host: &self.config.host_name,
            tls: self.tls.as_ref().map(TlsActive::description),
            smtputf8: transaction.params.smtputf8,
            id: &id,
            date: self.now,
        });
        transaction.message = Some(Message {
            id,
            decoder: BodyDecoder::new(framing),
            size: 0,
            state: MessageState::Streaming,
        });
        self.outputs.push_back(Output::MessageStart(envelope));
        // A proxy passes the message on as the client wrote it; the upstream adds its own
        // trace.
        if !self.proxy {
            self.outputs.push_back(Output::MessageData(header));
        }
    }

    fn message_mut(&mut self) -> Option<&mut Message> {
        self.transaction.as_mut()?.message.as_mut()
    }

    fn data_content(&mut self) -> bool {
        let mut body = Vec::with_capacity(self.input.len());
        let Some(message) = self
            .transaction
            .as_mut()
            .and_then(|transaction| transaction.message.as_mut())
        else {
            self.mode = Mode::Commands;
            return true;
        };
        let decoded = message.decoder.feed(&self.input, &mut body);
        self.input.consume(decoded.consumed);
        if !self.accept_body(body, decoded.consumed) {
            return false;
        }
        if decoded.end_of_data {
            self.finish_message();
        }
        decoded.end_of_data
    }

    fn bdat_content(&mut self) -> bool {
        let Mode::BdatChunk { remaining, last } = self.mode else {
            return false;
        };
        let take = usize::try_from(remaining).map_or(self.input.len(), |remaining| {
            remaining.min(self.input.len())
        });
        if take > 0 {
            let chunk = self.input.take_front(take);
            let mut body = Vec::with_capacity(chunk.len());
            if let Some(message) = self.message_mut() {
                message.decoder.feed(&chunk, &mut body);
            }
            if !self.accept_body(body, take) {
                return false;
            }
        }
        let remaining = remaining - take as u64;
        if remaining > 0 {
            self.mode = Mode::BdatChunk { remaining, last };
            return false;
        }
        let failed = self
            .message_mut()
            .is_some_and(|message| matches!(message.state, MessageState::Failed(_)));
        if last {
            let mut tail = Vec::new();
            if let Some(message) = self.message_mut() {
                message.decoder.finish_chunked(&mut tail);
            }
            if !self.accept_body(tail, 0) {
                return false;
            }
            self.finish_message();
        } else if failed {
            self.finish_message();
        } else {
            self.mode = Mode::Commands;
            self.send(&ok(2, 0, 0, "Ok: chunk received"));
        }
        true
    }

    fn bdat_discard(&mut self) -> bool {
        let Mode::BdatDiscard { remaining, .. } = &mut self.mode else {
            return false;
        };
        let take = usize::try_from(*remaining).map_or(self.input.len(), |remaining| {
            remaining.min(self.input.len())
        });
        self.input.consume(take);
        *remaining -= take as u64;
        if *remaining > 0 {
            return false;
        }
        if let Mode::BdatDiscard { refusal, .. } = std::mem::replace(&mut self.mode, Mode::Commands)
        {
            // Not counted: a pipeline of chunks behind one failure is not misbehaviour.
            self.send(&refusal.reply(&self.config.host_name));
        }
        true
    }

    /// Passes decoded body bytes on, or turns a broken rule into a `MessageAbort`. False
    /// when the message passed the size limit: the session has refused it and closed.
    /// `wire` is how much input the body came from.
    fn accept_body(&mut self, body: Vec<u8>, wire: usize) -> bool {
        let max_size = self.config.max_message_size;
        let Some(message) = self.message_mut() else {
            return true;
        };
        // A failed message decodes to nothing, so its input counts instead: it cannot
        // stream forever either.
        let counted = if message.decoder.violation().is_none() {
            body.len()
        } else {
            wire
        };
        message.size = message.size.saturating_add(counted as u64);
        if message.size > max_size {
            // 552 now, not after the rest: reading on would let the sender hold the
            // connection as long as it likes.
            self.refuse_and_close(Refusal::MessageTooBig);
            return false;
        }
        if !matches!(message.state, MessageState::Streaming) {
            return true;
        }
        match message.decoder.violation() {
            Some(violation) => {
                message.state = MessageState::Failed(Refusal::Body(violation));
                self.outputs
                    .push_back(Output::MessageAbort(AbortReason::Body(violation)));
            }
            None if body.is_empty() => {}
            None => self.push_data(body),
        }
        true
    }

    /// The end of the body: commit it, or send the refusal recorded when it failed.
    fn finish_message(&mut self) {
        let Some(message) = self.message_mut() else {
            self.mode = Mode::Commands;
            return;
        };
        match std::mem::replace(&mut message.state, MessageState::Complete) {
            MessageState::Streaming | MessageState::Complete => {
                self.outputs.push_back(Output::MessageEnd);
                self.mode = Mode::AwaitingCommit;
            }
            MessageState::Failed(refusal) => {
                self.transaction = None;
                self.mode = Mode::Commands;
                self.refuse(refusal);
                self.after_upstream_loss();
            }
        }
    }

    // ----- proxy -----

    fn ask_upstream(&mut self, command: UpstreamCommand, pending: Pending) {
        self.outputs.push_back(Output::Upstream(command));
        self.mode = Mode::AwaitingUpstream(pending);
    }

    /// Once the upstream is gone and the session is between commands: `421` and close.
    fn after_upstream_loss(&mut self) {
        if self.upstream_gone && matches!(self.mode, Mode::Commands) {
            self.close_with(Refusal::UpstreamLost);
        }
    }

    fn auth(&mut self, mechanism: &str, initial: Option<Zeroizing<String>>) {
        if !self.config.proxy {
            return self.refuse(Refusal::NotImplemented("authentication not available"));
        }
        if self.tls.is_none() {
            return self.refuse(Refusal::AuthNeedsTls);
        }
        if self.greeting.is_none() {
            return self.refuse(Refusal::BadSequence("send EHLO first"));
        }
        if self.proxy {
            return self.refuse(Refusal::BadSequence("already authenticated"));
        }
        if self.transaction.is_some() {
            return self.refuse(Refusal::BadSequence("mail transaction in progress"));
        }
        match (mechanism, initial) {
            ("PLAIN", Some(response)) => self.auth_response(AuthStep::Plain, response.as_bytes()),
            ("PLAIN", None) => self.challenge("", AuthStep::Plain),
            // The LOGIN prompts are base64 "Username:" and "Password:".
            ("LOGIN", Some(user)) => self.auth_response(AuthStep::LoginUser, user.as_bytes()),
            ("LOGIN", None) => self.challenge("VXNlcm5hbWU6", AuthStep::LoginUser),
            _ => self.refuse(Refusal::UnsupportedMechanism),
        }
    }

    fn challenge(&mut self, text: &str, step: AuthStep) {
        self.send(&Reply::plain(334, vec![text.to_owned()]));
        self.mode = Mode::AuthResponse(step);
    }

    /// One SASL response line (RFC 4954 §4: base64, `=` for empty, `*` cancels).
    fn auth_response(&mut self, step: AuthStep, line: &[u8]) {
        let decoded = match sasl::response(line) {
            Ok(Response::Data(decoded)) => decoded,
            Ok(Response::Cancel) => return self.refuse(Refusal::AuthCancelled),
            Err(sasl::Malformed) => return self.refuse(Refusal::AuthMalformed),
        };
        match step {
            AuthStep::Plain => {
                let Ok(credentials) = sasl::plain(&decoded) else {
                    return self.refuse(Refusal::AuthMalformed);
                };
                if !credentials.same_identity() {
                    return self.refuse(Refusal::Auth(AuthFailure::InvalidLogin));
                }
                self.login(&credentials.authcid, credentials.password.expose());
            }
            AuthStep::LoginUser => {
                let Ok(user) = std::str::from_utf8(&decoded) else {
                    return self.refuse(Refusal::AuthMalformed);
                };
                let user = user.to_owned();
                self.challenge("UGFzc3dvcmQ6", AuthStep::LoginPassword { user });
            }
            AuthStep::LoginPassword { user } => {
                let Ok(password) = std::str::from_utf8(&decoded) else {
                    return self.refuse(Refusal::AuthMalformed);
                };
                self.login(&user, password);
            }
        }
    }

    fn login(&mut self, user: &str, password: &str) {
        let login = match ProxyLogin::parse(user) {
            Ok(login) if !password.is_empty() && !password.contains('\0') => login,
            _ => return self.refuse(Refusal::Auth(AuthFailure::InvalidLogin)),
        };
        self.outputs.push_back(Output::ProxyLogin(ProxyCredentials {
            login,
            password: Secret::new(password),
        }));
        self.mode = Mode::AwaitingAuth;
    }

    // ----- helpers -----

    /// Drops the transaction; a message still streaming to the shell is aborted.
    fn end_transaction(&mut self, reason: AbortReason) {
        let streaming = self
            .transaction
            .take()
            .and_then(|transaction| transaction.message)
            .is_some_and(|message| matches!(message.state, MessageState::Streaming));
        if streaming {
            self.outputs.push_back(Output::MessageAbort(reason));
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.send(&refusal.reply(&self.config.host_name));
        if refusal.counts_as_error() {
            self.errors += 1;
            if self.errors >= self.config.max_errors {
                self.close_with(Refusal::TooManyErrors);
            }
        }
    }

    /// Refuses input past a limit and closes: the refusal, then `421`. The transaction
    /// ends (a message still streaming is aborted first).
    fn refuse_and_close(&mut self, refusal: Refusal) {
        let reason = if refusal == Refusal::MessageTooBig {
            AbortReason::TooBig
        } else {
            AbortReason::Closed
        };
        self.end_transaction(reason);
        self.send(&refusal.reply(&self.config.host_name));
        self.close_with(Refusal::InputLimit);
    }

    fn close_with(&mut self, refusal: Refusal) {
        self.end_transaction(AbortReason::Closed);
        self.send(&refusal.reply(&self.config.host_name));
        self.close();
    }

    fn close(&mut self) {
        self.input.clear();
        self.mode = Mode::Closed;
        self.outputs.push_back(Output::Close);
    }

    /// Queues a reply, joining it to a `Send` already at the back of the queue.
    fn send(&mut self, reply: &Reply) {
        if let Some(Output::Send(bytes)) = self.outputs.back_mut() {
            reply.write(bytes);
        } else {
            self.outputs.push_back(Output::Send(reply.to_bytes()));
        }
    }

    fn push_data(&mut self, body: Vec<u8>) {
        if let Some(Output::MessageData(bytes)) = self.outputs.back_mut() {
            bytes.extend_from_slice(&body);
        } else {
            self.outputs.push_back(Output::MessageData(body));
        }
    }

    /// An event that does not fit the state is a shell bug; the session keeps its state.
    fn ignore_unexpected_event(&self, event: &str) {
        tracing::warn!(event, "SMTP session got an event it was not waiting for");
    }
}

/// A `250` with the given enhanced status.
fn ok(class: u8, subject: u16, detail: u16, text: impl Into<String>) -> Reply {
    Reply::new(250, EnhancedStatus::new(class, subject, detail), text)
}

/// Keeps only atext characters, so the id is an RFC 5322 atom in the Received header.
fn atom(text: &str) -> String {
    let atom: String = text
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || *ch == '-' || *ch == '_')
        .collect();
    if atom.is_empty() {
        "session".to_owned()
    } else {
        atom
    }
}

/// Whether buffered input starts with an AUTH command (its initial response is a credential).
fn is_auth_command(input: &[u8]) -> bool {
    input
        .get(..5)
        .is_some_and(|verb| verb.eq_ignore_ascii_case(b"AUTH "))
}

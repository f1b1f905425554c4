//! What the two SMTP server machines share: reading command lines, receiving a message body
//! (DATA and BDAT, the size limit, the smuggling-proof end of data), queuing replies,
//! counting errors, timeouts and closing.
//!
//! [`Session`](super::Session) (the journal target, and the proxy login) and
//! [`Relay`](super::Relay) (a logged-in proxy client's transactions, forwarded upstream)
//! each own a [`Conversation`] and add the commands and events that differ; neither knows
//! the other. `R` is what a transaction's recipients are: mailbox ids for the journal,
//! the addresses the upstream accepted for the relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::address::ReversePath;
use super::command::{BodyType, Command, CommandError, MailParams};
use super::data::{BodyDecoder, Framing};
use super::error_map::Refusal;
use super::interface::{AbortReason, ClientInfo, Envelope, Event, SessionConfig};
use super::received::{received_header, Trace};
use super::reply::{EnhancedStatus, Reply};
use crate::crypto::WipingBuffer;
use crate::mailbox::MailboxId;
use crate::net::{Now, Outbox, TlsActive};
use crate::wire::line::{Ending, Frame, Framer};

/// Longest accepted command line including CRLF. RFC 5321 §4.5.3.1.4 sets 512 and lets
/// extensions add to it (SIZE, BODY, SMTPUTF8 and a 256-octet path fit easily); 2048 is
/// generous for that and still a small, fixed buffer.
pub const MAX_COMMAND_LINE: usize = 2048;
/// Command lines end only at CRLF; one framed at a bare LF is refused.
const COMMAND_LINES: Framer = Framer::new(MAX_COMMAND_LINE, Ending::Crlf);

/// RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.5: 3 minutes per data block.
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// RFC 5321 §4.5.3.2.6: the client waits 10 minutes for the reply to the end of data, so
/// the shell's commit must finish well within this.
pub const DATA_TERMINATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The client's HELO/EHLO.
pub(super) struct Greeting {
    pub name: String,
    pub extended: bool,
}

/// A mail transaction: from MAIL until its final reply, RSET, HELO/EHLO or QUIT.
pub(super) struct Transaction<R> {
    /// When MAIL was accepted (the time of the input that carried it), for
    /// `transaction_timeout`.
    pub started: Instant,
    pub mail_from: ReversePath,
    pub params: MailParams,
    pub recipients: Vec<R>,
    /// Present once DATA or the first BDAT started the body.
    pub message: Option<Message>,
}

pub(super) struct Message {
    pub id: String,
    decoder: BodyDecoder,
    /// Body octets received so far (unstuffed, without our Received header).
    pub size: u64,
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

/// What the next input bytes are, or what the conversation waits for.
pub(super) enum Mode {
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
    /// Waiting for the shell; no input is processed until it answers.
    Waiting(Wait),
    Closed,
}

/// What the shell was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    Recipient,
    Commit,
    Tls,
    Auth,
    Upstream,
}

/// One step through buffered input.
pub(super) enum Step {
    /// A complete line for the machine: a command (CRLF removed, length checked) or, when
    /// asked for, a SASL response. Wiped when dropped if it may hold a credential.
    Line(Zeroizing<Vec<u8>>),
    /// Input was consumed; step again.
    Progressed,
    /// Nothing more until new input or an event.
    Blocked,
}

/// How a machine's recipients go into the [`Envelope`] it hands the shell.
pub(super) trait Recipients: Sized {
    /// `(rcpt, forward_to)` of the envelope.
    fn envelope(recipients: &[Self]) -> (Vec<MailboxId>, Vec<String>);
}

impl Recipients for MailboxId {
    fn envelope(recipients: &[Self]) -> (Vec<MailboxId>, Vec<String>) {
        (recipients.to_vec(), Vec::new())
    }
}

impl Recipients for String {
    fn envelope(recipients: &[Self]) -> (Vec<MailboxId>, Vec<String>) {
        (Vec::new(), recipients.to_vec())
    }
}

/// The shared state of one SMTP server connection; see the module documentation.
pub(super) struct Conversation<R> {
    pub config: Arc<SessionConfig>,
    pub client: ClientInfo,
    /// TLS description once TLS is active.
    pub tls: Option<TlsActive>,
    pub greeting: Option<Greeting>,
    pub transaction: Option<Transaction<R>>,
    pub mode: Mode,
    /// Received bytes not processed yet; AUTH lines are wiped from it once read.
    pub input: WipingBuffer,
    outbox: Outbox<Event>,
    errors: u32,
    shutdown_requested: bool,
    messages_started: u64,
    /// The time given with the latest input, for the Received header.
    now: OffsetDateTime,
    /// When the latest input arrived (or the connection opened): idle timeouts count
    /// from here.
    activity: Instant,
    /// The client has had a MAIL accepted or logged in: from then on the RFC's command
    /// timeout applies instead of `preauth_timeout`.
    pub engaged: bool,
}

impl<R: Recipients + Clone> Conversation<R> {
    /// A conversation on a connection opened at `now`.
    pub fn new(config: Arc<SessionConfig>, client: ClientInfo, now: Instant) -> Self {
        Self {
            tls: client.tls.clone(),
            config,
            client,
            greeting: None,
            transaction: None,
            mode: Mode::Commands,
            input: WipingBuffer::new(),
            outbox: Outbox::default(),
            errors: 0,
            shutdown_requested: false,
            messages_started: 0,
            now: OffsetDateTime::UNIX_EPOCH,
            activity: now,
            engaged: false,
        }
    }

    /// The same connection for a machine with other recipients. Only between transactions
    /// (the open one, if any, is dropped without a reply).
    pub fn hand_over<S: Recipients + Clone>(mut self) -> Conversation<S> {
        self.end_transaction(AbortReason::Reset);
        Conversation {
            config: self.config,
            client: self.client,
            tls: self.tls,
            greeting: self.greeting,
            transaction: None,
            mode: self.mode,
            input: self.input,
            outbox: self.outbox,
            errors: self.errors,
            shutdown_requested: self.shutdown_requested,
            messages_started: self.messages_started,
            now: self.now,
            activity: self.activity,
            engaged: self.engaged,
        }
    }

    /// Appends the replies queued before the next event to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        self.outbox.poll_transmit(out);
    }

    /// The next event for the shell, once the replies before it were taken.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.outbox.poll_event()
    }

    /// Takes bytes from the client; false when they are not to be processed (TLS handshake,
    /// closed, or the transaction's time is up and the session closed).
    pub fn receive(&mut self, bytes: &[u8], now: Now) -> bool {
        self.now = now.utc;
        self.activity = now.instant;
        // During the TLS handshake the shell owns the socket; and nothing is read after
        // close.
        if matches!(self.mode, Mode::Waiting(Wait::Tls) | Mode::Closed) {
            return false;
        }
        if self
            .transaction_deadline()
            .is_some_and(|deadline| now.instant >= deadline)
        {
            self.end_transaction(AbortReason::TimedOut);
            self.close_with(Refusal::TransactionTimeout);
            return false;
        }
        self.input.push(bytes);
        true
    }

    /// Ends a wait for the shell; false (and a warning) when `wait` is not what the
    /// conversation waits for.
    pub fn answered(&mut self, wait: Wait, event: &str) -> bool {
        if !matches!(self.mode, Mode::Waiting(waiting) if waiting == wait) {
            ignore_unexpected_event(event);
            return false;
        }
        self.mode = Mode::Commands;
        true
    }

    pub fn wait_for(&mut self, wait: Wait, event: Event) {
        self.outbox.push_event(event);
        self.mode = Mode::Waiting(wait);
    }

    /// The upstream answered at `now`: the client's idle time counts from then, as from its
    /// own input, so a slow upstream never uses up the time the client has to go on.
    pub fn upstream_answered_at(&mut self, now: Instant) {
        self.activity = self.activity.max(now);
    }

    pub fn is_waiting_for(&self, wait: Wait) -> bool {
        matches!(self.mode, Mode::Waiting(waiting) if waiting == wait)
    }

    // ----- stepping through input -----

    /// Works on buffered input: a body goes to the shell here; a complete line is handed
    /// back. `sasl_response`: the next line answers a `334` and is not a command.
    pub fn step(&mut self, sasl_response: bool) -> Step {
        if self.shutdown_requested
            && matches!(self.mode, Mode::Commands)
            && self.transaction.is_none()
            && !sasl_response
        {
            self.close_with(Refusal::ShuttingDown);
            return Step::Blocked;
        }
        let progressed = match self.mode {
            Mode::Commands => return self.next_line(sasl_response),
            Mode::Data => self.data_content(),
            Mode::BdatChunk { .. } => self.bdat_content(),
            Mode::BdatDiscard { .. } => self.bdat_discard(),
            Mode::Waiting(_) | Mode::Closed => false,
        };
        if progressed {
            Step::Progressed
        } else {
            Step::Blocked
        }
    }

    fn next_line(&mut self, sasl_response: bool) -> Step {
        let (wire_len, too_long) = match COMMAND_LINES.frame(&self.input) {
            Frame::Line { wire_len } => (wire_len, false),
            Frame::TooLong {
                wire_len: Some(wire_len),
            } => (wire_len, true),
            Frame::Partial => return Step::Blocked,
            Frame::TooLong { wire_len: None } => {
                // Reply now and close: skipping to the line's end would let an endless
                // line hold the connection forever.
                self.refuse_and_close(Refusal::CommandLineTooLong);
                return Step::Blocked;
            }
        };
        // An AUTH command or a SASL response carries a credential: nothing of it may stay
        // behind in the buffer.
        let mut line = if sasl_response || is_auth_command(&self.input) {
            self.input.take_front_wiping(wire_len)
        } else {
            Zeroizing::new(self.input.take_front(wire_len))
        };
        let crlf = COMMAND_LINES.strip(&mut line);
        if sasl_response {
            return Step::Line(line);
        }
        if too_long {
            self.refuse_and_close(Refusal::CommandLineTooLong);
        } else if crlf {
            return Step::Line(line);
        } else {
            self.refuse(Refusal::CommandBareLf);
        }
        Step::Progressed
    }

    /// Takes the next buffered command line off the input when it is complete and `wanted`
    /// (given the line without its CRLF) says so: for a relay gathering a pipelined group.
    /// A line it does not want, a partial one, an overlong one or one ending in a bare LF
    /// stays for [`Conversation::step`].
    pub fn take_line_if(&mut self, wanted: impl FnOnce(&[u8]) -> bool) -> bool {
        let Frame::Line { wire_len } = COMMAND_LINES.frame(&self.input) else {
            return false;
        };
        let Some(line) = self.input[..wire_len].strip_suffix(b"\r\n") else {
            return false;
        };
        if !wanted(line) {
            return false;
        }
        drop(self.input.take_front(wire_len));
        true
    }

    /// Parses a command line and answers what both machines answer alike (refused
    /// clients, errors, NOOP, QUIT, VRFY, EXPN, HELP, STARTTLS); the rest is returned.
    pub fn command(&mut self, line: &[u8]) -> Option<Command> {
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
            return None;
        }
        let command = match parsed {
            Ok(command) => command,
            Err(CommandError::MalformedBdat) => {
                // The chunk's end is unknown: its bytes would be read as commands.
                self.end_transaction(AbortReason::Closed);
                self.close_with(Refusal::Command(CommandError::MalformedBdat));
                return None;
            }
            Err(error) => {
                self.refuse(Refusal::Command(error));
                return None;
            }
        };
        match command {
            Command::Noop => self.send(&ok(2, 0, 0, "Ok")),
            Command::Quit => self.quit(),
            // RFC 5321 §3.5.3: 252 neither confirms nor denies; ids must not be probed.
            Command::Vrfy => self.send(&Reply::new(
                252,
                EnhancedStatus::new(2, 5, 0),
                "cannot verify, send the message to find out",
            )),
            Command::Expn => self.refuse(Refusal::NotImplemented("EXPN not available")),
            Command::Help => self.send(&Reply::new(
                214,
                EnhancedStatus::new(2, 0, 0),
                "commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
            )),
            Command::StartTls => self.start_tls(),
            other => return Some(other),
        }
        None
    }

    /// The reply to HELO/EHLO, which starts over (the transaction has ended already).
    pub fn hello_reply(&mut self, name: String, extended: bool, offer_auth: bool) {
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
            if offer_auth {
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

    /// Why MAIL cannot start a transaction now, if it cannot.
    pub fn mail_refusal(&self, params: &MailParams) -> Option<Refusal> {
        if self.greeting.is_none() {
            return Some(Refusal::BadSequence("send HELO/EHLO first"));
        }
        if self.transaction.is_some() {
            return Some(Refusal::BadSequence("nested MAIL command"));
        }
        if self.config.require_tls && self.tls.is_none() {
            return Some(Refusal::TlsRequired);
        }
        params
            .size
            .is_some_and(|size| size > self.config.max_message_size)
            .then_some(Refusal::MessageTooBig)
    }

    pub fn open_transaction(&mut self, mail_from: ReversePath, params: MailParams) {
        self.transaction = Some(Transaction {
            started: self.activity,
            mail_from,
            params,
            recipients: Vec::new(),
            message: None,
        });
    }

    /// Why RCPT cannot add a recipient now, if it cannot.
    pub fn rcpt_refusal(&self) -> Option<Refusal> {
        match &self.transaction {
            None => Some(Refusal::BadSequence("need MAIL command")),
            Some(transaction) if transaction.message.is_some() => {
                Some(Refusal::BadSequence("BDAT transfer in progress"))
            }
            Some(_) => None,
        }
    }

    /// Why DATA cannot start the body now, if it cannot.
    pub fn data_refusal(&self) -> Option<Refusal> {
        self.rcpt_refusal().or_else(|| {
            self.transaction
                .as_ref()
                .is_some_and(|transaction| transaction.recipients.is_empty())
                .then_some(Refusal::NoValidRecipients)
        })
    }

    /// `354`, and the body follows.
    pub fn start_data(&mut self, trace: bool) {
        self.send(&Reply::plain(
            354,
            vec!["end data with <CR><LF>.<CR><LF>".to_owned()],
        ));
        self.start_message(Framing::DotTerminated, trace);
        self.mode = Mode::Data;
    }

    /// BDAT: refuses or discards the chunk, or reads it into the open message. True when
    /// this is the message's first chunk, which the machine must start itself.
    pub fn bdat(&mut self, size: u64, last: bool) -> bool {
        let max_size = self.config.max_message_size;
        let refusal = match self.transaction.as_ref() {
            None => Some(Refusal::BadSequence("need MAIL command")),
            Some(transaction) if transaction.recipients.is_empty() => {
                Some(Refusal::NoValidRecipients)
            }
            Some(transaction) => {
                let so_far = transaction
                    .message
                    .as_ref()
                    .map_or(0, |message| message.size);
                (so_far.saturating_add(size) > max_size).then_some(Refusal::MessageTooBig)
            }
        };
        if let Some(refusal) = refusal {
            if refusal == Refusal::MessageTooBig || size > max_size {
                // Reading the chunk only to throw it away would let a declared size of
                // any length hold the connection: refuse it and close.
                self.end_transaction(AbortReason::TooBig);
                self.refuse_and_close(refusal);
            } else {
                self.discard_chunk(size, refusal);
            }
            return false;
        }
        let first = self
            .transaction
            .as_ref()
            .is_some_and(|transaction| transaction.message.is_none());
        if !first {
            self.mode = Mode::BdatChunk {
                remaining: size,
                last,
            };
        }
        first
    }

    /// Starts a message sent with BDAT and reads its first chunk.
    pub fn start_chunked(&mut self, size: u64, last: bool, trace: bool) {
        self.start_message(Framing::Chunked, trace);
        self.mode = Mode::BdatChunk {
            remaining: size,
            last,
        };
    }

    /// Consumes a chunk unread, then sends `refusal`.
    pub fn discard_chunk(&mut self, size: u64, refusal: Refusal) {
        self.mode = Mode::BdatDiscard {
            remaining: size,
            refusal,
        };
    }

    pub fn start_tls(&mut self) {
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
        self.wait_for(Wait::Tls, Event::StartTls);
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded. RFC 3207 §4.2: everything
    /// learnt before is forgotten and the client must send EHLO again.
    pub fn tls_established(&mut self, tls: TlsActive) -> bool {
        if !self.answered(Wait::Tls, "tls_established") {
            return false;
        }
        self.tls = Some(tls);
        self.greeting = None;
        self.transaction = None;
        self.input.clear();
        true
    }

    pub fn quit(&mut self) {
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

    /// `MessageStart` with the envelope; with `trace`, our Received header is the body's
    /// first data (a relay passes the message on as the client wrote it; the upstream
    /// adds its own trace).
    fn start_message(&mut self, framing: Framing, trace: bool) {
        self.messages_started += 1;
        let id = format!(
            "{}.{}",
            atom(&self.client.session_id),
            self.messages_started
        );
        let Some(transaction) = self.transaction.as_mut() else {
            return;
        };
        let (rcpt, forward_to) = R::envelope(&transaction.recipients);
        let envelope = Envelope {
            id: id.clone(),
            mail_from: transaction.mail_from.to_string(),
            rcpt,
            forward_to,
            body_8bit: transaction.params.body == Some(BodyType::EightBitMime),
            smtputf8: transaction.params.smtputf8,
            declared_size: transaction.params.size,
        };
        let header = trace.then(|| {
            let (helo, extended) = self
                .greeting
                .as_ref()
                .map_or(("unknown", false), |greeting| {
                    (greeting.name.as_str(), greeting.extended)
                });
            received_header(&Trace {
                helo,
                extended,
                peer: self.client.peer,
                host: &self.config.host_name,
                tls: self.tls.as_ref().map(TlsActive::description),
                smtputf8: transaction.params.smtputf8,
                id: &id,
                date: self.now,
            })
        });
        transaction.message = Some(Message {
            id,
            decoder: BodyDecoder::new(framing),
            size: 0,
            state: MessageState::Streaming,
        });
        self.outbox.push_event(Event::MessageStart(envelope));
        if let Some(header) = header {
            self.outbox.push_event(Event::MessageData(header));
        }
    }

    fn message_mut(&mut self) -> Option<&mut Message> {
        self.transaction.as_mut()?.message.as_mut()
    }

    /// Whether a message is being received and still goes to the shell.
    pub fn is_streaming(&self) -> bool {
        matches!(self.mode, Mode::Data | Mode::BdatChunk { .. })
            && self
                .transaction
                .as_ref()
                .and_then(|transaction| transaction.message.as_ref())
                .is_some_and(|message| matches!(message.state, MessageState::Streaming))
    }

    /// The message being received will not be stored: `MessageAbort` now, and `refusal`
    /// is the reply once its end arrives.
    pub fn fail_message(&mut self, refusal: Refusal) {
        if !self.is_streaming() {
            return;
        }
        if let Some(message) = self.message_mut() {
            message.state = MessageState::Failed(refusal);
            self.outbox
                .push_event(Event::MessageAbort(AbortReason::Closed));
        }
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
                self.outbox
                    .push_event(Event::MessageAbort(AbortReason::Body(violation)));
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
                self.wait_for(Wait::Commit, Event::MessageEnd);
            }
            MessageState::Failed(refusal) => {
                self.transaction = None;
                self.mode = Mode::Commands;
                self.refuse(refusal);
            }
        }
    }

    /// The committed message's id, ending its transaction.
    pub fn take_message_id(&mut self) -> String {
        self.transaction
            .take()
            .and_then(|transaction| transaction.message)
            .map(|message| message.id)
            .unwrap_or_default()
    }

    // ----- time -----

    /// When the latest input arrived (or the connection opened).
    pub fn activity(&self) -> Instant {
        self.activity
    }

    /// When the shell should call [`Conversation::handle_timeout`]: the RFC 5321 timeout of
    /// the state (`preauth_timeout` before the client has engaged) after the latest input,
    /// and never past the end of the transaction's `transaction_timeout` while the client
    /// is the one to act. `None` once closed.
    pub fn deadline(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.activity + self.idle_timeout();
        match self.transaction_deadline() {
            Some(end) if self.wants_input() => Some(idle.min(end)),
            _ => Some(idle),
        }
    }

    fn idle_timeout(&self) -> Duration {
        match self.mode {
            Mode::Data | Mode::BdatChunk { .. } | Mode::BdatDiscard { .. } => DATA_BLOCK_TIMEOUT,
            Mode::Waiting(Wait::Commit | Wait::Upstream | Wait::Auth) => DATA_TERMINATION_TIMEOUT,
            Mode::Commands if !self.engaged => self.config.preauth_timeout.min(COMMAND_TIMEOUT),
            Mode::Commands | Mode::Waiting(Wait::Recipient | Wait::Tls) | Mode::Closed => {
                COMMAND_TIMEOUT
            }
        }
    }

    /// When the open transaction's time is up; `None` without one.
    fn transaction_deadline(&self) -> Option<Instant> {
        let started = self.transaction.as_ref()?.started;
        Some(started + self.config.transaction_timeout)
    }

    /// The timer of [`Conversation::deadline`] fired: `421 4.4.2` and close, if that
    /// deadline has really passed at `now` (a late timer for an old deadline does nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline() else {
            return;
        };
        if now < deadline {
            return;
        }
        // The transaction's end, if that came first.
        let transaction = self
            .transaction_deadline()
            .is_some_and(|end| end <= self.activity + self.idle_timeout());
        self.end_transaction(AbortReason::TimedOut);
        self.close_with(if transaction {
            Refusal::TransactionTimeout
        } else {
            Refusal::Timeout
        });
    }

    /// Whether the conversation reads from the client now. While it waits for the shell
    /// (a lookup, commit or the upstream) it processes nothing, so reading on would only
    /// pile up input.
    pub fn wants_input(&self) -> bool {
        matches!(
            self.mode,
            Mode::Commands | Mode::Data | Mode::BdatChunk { .. } | Mode::BdatDiscard { .. }
        )
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    // ----- shell events shared by both machines -----

    /// The message's draft failed in the shell (the spool is full, a write failed): it
    /// cannot be stored, so the refusal goes out now and the connection closes rather than
    /// reading the rest of a message that would be thrown away.
    pub fn message_failed(&mut self, failure: super::CommitFailure) {
        if !self.is_streaming() {
            return ignore_unexpected_event("message_failed");
        }
        self.refuse_and_close(Refusal::Commit(failure));
    }

    /// The client went away (EOF, reset, failed TLS handshake).
    pub fn connection_lost(&mut self) {
        if self.is_closed() {
            return;
        }
        self.end_transaction(AbortReason::Closed);
        self.input.clear();
        self.mode = Mode::Closed;
        self.outbox.push_event(Event::Close);
    }

    /// Graceful shutdown: `421 4.3.2` as soon as no transaction is open.
    pub fn request_shutdown(&mut self) {
        self.shutdown_requested = true;
    }

    // ----- replies -----

    /// Drops the transaction; a message still streaming to the shell is aborted.
    pub fn end_transaction(&mut self, reason: AbortReason) {
        let streaming = self
            .transaction
            .take()
            .and_then(|transaction| transaction.message)
            .is_some_and(|message| matches!(message.state, MessageState::Streaming));
        if streaming {
            self.outbox.push_event(Event::MessageAbort(reason));
        }
    }

    pub fn refuse(&mut self, refusal: Refusal) {
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
    pub fn refuse_and_close(&mut self, refusal: Refusal) {
        let reason = if refusal == Refusal::MessageTooBig {
            AbortReason::TooBig
        } else {
            AbortReason::Closed
        };
        self.end_transaction(reason);
        self.send(&refusal.reply(&self.config.host_name));
        self.close_with(Refusal::InputLimit);
    }

    pub fn close_with(&mut self, refusal: Refusal) {
        self.end_transaction(AbortReason::Closed);
        self.send(&refusal.reply(&self.config.host_name));
        self.close();
    }

    fn close(&mut self) {
        self.input.clear();
        self.mode = Mode::Closed;
        self.outbox.push_event(Event::Close);
    }

    /// Queues a reply; replies with no event between them leave in one write.
    pub fn send(&mut self, reply: &Reply) {
        reply.write(self.outbox.transmit());
    }

    fn push_data(&mut self, body: Vec<u8>) {
        if let Some(Event::MessageData(bytes)) = self.outbox.last_event_mut() {
            bytes.extend_from_slice(&body);
        } else {
            self.outbox.push_event(Event::MessageData(body));
        }
    }
}

/// An event that does not fit the state is a shell bug; the machine keeps its state.
pub(super) fn ignore_unexpected_event(event: &str) {
    tracing::warn!(event, "SMTP session got an event it was not waiting for");
}

/// A `250` with the given enhanced status.
pub(super) fn ok(class: u8, subject: u16, detail: u16, text: impl Into<String>) -> Reply {
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

//! The upstream SMTP client state machine; see the module documentation of [`super`].

use std::fmt;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::config::{AuthMechanism, ConfigError, UpstreamConfig, UpstreamTls};
use super::extensions::Extensions;
use super::reply_reader::ReplyReader;
use crate::net::{Machine, Now, Outbox};
use crate::smtp::command::Command;
use crate::smtp::data::BodyViolation;
use crate::smtp::{EnhancedStatus, Reply};
use crate::wire::dot::{Strict, Stuffer};

/// RFC 5321 §4.5.3.2.1, .2, .3, .4: the initial `220`, MAIL, RCPT and other commands.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.4: the `354` to DATA.
pub const DATA_INITIATION_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// RFC 5321 §4.5.3.2.5: each write of body data.
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// RFC 5321 §4.5.3.2.6: the reply after the final dot.
pub const DATA_TERMINATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest envelope path or parameter string we pass on (RFC 5321 §4.5.3.1.3 allows 256
/// for a path; UTF-8 addresses and parameters get some room).
pub const MAX_ENVELOPE_FIELD: usize = 512;

/// Why the upstream connection failed. Always followed by [`Event::Closed`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// STARTTLS was not advertised, or was refused. Nothing else is tried: there is no
    /// plaintext fallback, and the credentials were never sent.
    #[error("the upstream does not offer STARTTLS")]
    NoTls,
    /// The upstream sent bytes after its `220` to STARTTLS, before the handshake (or
    /// during it): a man in the middle may have injected them (CVE-2011-0411 style).
    #[error("plaintext bytes after the STARTTLS reply")]
    ResponseInjection,
    /// The upstream refused the client's credentials (or the AUTH exchange).
    #[error("authentication rejected: {0}")]
    AuthRejected(Reply),
    /// No mechanism of the configured preference is offered (after TLS).
    #[error("no usable AUTH mechanism offered")]
    AuthUnavailable,
    /// Malformed or overlong reply, a reply nobody asked for, or an unexpected code.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The upstream refused the connection (greeting not `220`), EHLO or RSET.
    #[error("refused by the upstream: {0}")]
    Rejected(Reply),
    /// The upstream said `421`: it is closing the connection.
    #[error("the upstream is closing: {0}")]
    ServiceClosing(Reply),
    /// The body handed to [`UpstreamSmtp::data_chunk`] broke a line rule; the final dot
    /// was never sent, so the upstream drops the partial message with the connection.
    #[error("message body: {0}")]
    Body(BodyViolation),
    #[error("connection to the upstream lost")]
    ConnectionLost,
    #[error("the upstream did not answer in time")]
    TimedOut,
}

/// What the core asks of its shell ([`crate::net::Machine::poll_event`]), in order with
/// the bytes it transmits.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// Run the TLS client handshake on the connection, then call
    /// [`UpstreamSmtp::tls_established`]. Everything transmitted before this must be
    /// written first, and the shell must not read (or keep buffered) any plaintext after it.
    StartTls,
    /// Authenticated and idle: [`UpstreamSmtp::send_envelope`] may be called. Emitted once.
    Ready { extensions: Extensions },
    /// MAIL was accepted in a stepwise transaction ([`UpstreamSmtp::mail`]): give
    /// recipients with [`UpstreamSmtp::rcpt`].
    MailAccepted(Reply),
    /// MAIL was refused; no transaction is open and the core is idle again.
    MailRejected(Reply),
    /// The upstream's reply to RCPT number `index` (into the list given to
    /// `send_envelope`). One per recipient, in order.
    RcptResult { index: usize, reply: Reply },
    /// Every recipient was refused; the transaction was reset and the core is idle.
    NoRecipientAccepted,
    /// The upstream said `354`: feed the body with [`UpstreamSmtp::data_chunk`], then
    /// [`UpstreamSmtp::data_end`].
    DataReady,
    /// The upstream took the message (its reply after the final dot). Idle again.
    DataAccepted(Reply),
    /// The upstream refused DATA itself or the message after the final dot. Idle again.
    DataRejected(Reply),
    /// The RSET asked for by [`UpstreamSmtp::reset`] is done. Idle again.
    ResetDone,
    /// The connection is unusable; [`Event::Closed`] follows.
    Failed(UpstreamError),
    /// Close the connection after writing every `Send` before this. Emitted exactly once,
    /// on every path; nothing follows it.
    Closed,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StartTls => f.write_str("StartTls"),
            Self::Ready { extensions } => f
                .debug_struct("Ready")
                .field("extensions", extensions)
                .finish(),
            Self::MailAccepted(reply) => f.debug_tuple("MailAccepted").field(reply).finish(),
            Self::MailRejected(reply) => f.debug_tuple("MailRejected").field(reply).finish(),
            Self::RcptResult { index, reply } => f
                .debug_struct("RcptResult")
                .field("index", index)
                .field("reply", reply)
                .finish(),
            Self::NoRecipientAccepted => f.write_str("NoRecipientAccepted"),
            Self::DataReady => f.write_str("DataReady"),
            Self::DataAccepted(reply) => f.debug_tuple("DataAccepted").field(reply).finish(),
            Self::DataRejected(reply) => f.debug_tuple("DataRejected").field(reply).finish(),
            Self::ResetDone => f.write_str("ResetDone"),
            Self::Failed(error) => f.debug_tuple("Failed").field(error).finish(),
            Self::Closed => f.write_str("Closed"),
        }
    }
}

/// A request the core cannot take now or at all. Nothing was sent; the state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// Not idle: before [`Event::Ready`], or a transaction or RSET is still running
    /// (wait for its last output), or no body is expected now.
    #[error("the upstream connection is busy or not ready")]
    NotReady,
    #[error("the upstream connection is closed")]
    Closed,
    /// A path or parameter holds a control character or is too long.
    #[error("invalid envelope field")]
    InvalidEnvelope,
    #[error("no recipients")]
    NoRecipients,
    /// The message needs an extension the upstream lacks (`SMTPUTF8`, `BINARYMIME`).
    #[error("the upstream does not support {0}")]
    Unsupported(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthStep {
    /// `AUTH PLAIN <initial response>` sent.
    Plain,
    /// `AUTH LOGIN` sent; the next `334` asks for the user name.
    LoginStart,
    /// User name sent; the next `334` asks for the password.
    LoginUser,
    /// Password sent.
    LoginPassword,
}

/// A pipelined group in flight ([`UpstreamSmtp::pipeline`]).
#[derive(Clone, Copy, Debug)]
struct Group {
    /// DATA was sent last.
    data: bool,
    /// MAIL was refused: the RCPT replies that follow count for nothing.
    mail_refused: bool,
}

/// Where the conversation is. Every state but `Ready`, `Body`, `AwaitingTls` and `Closed`
/// waits for exactly one reply to exactly one command, except that `Mail`, `Rcpt` and `Data`
/// may be steps through a pipelined group's replies ([`UpstreamSmtp::pipeline`]).
#[derive(Debug)]
enum State {
    /// Waiting for the `220` greeting.
    Greeting,
    /// EHLO sent (before TLS in StartTls mode, or after it).
    Ehlo,
    /// STARTTLS sent.
    StartTls,
    /// [`Event::StartTls`] emitted; waiting for [`UpstreamSmtp::tls_established`].
    AwaitingTls,
    Auth(AuthStep),
    /// Authenticated and idle.
    Ready,
    /// MAIL sent.
    Mail,
    /// RCPT for recipient `next` sent; `accepted` recipients so far.
    Rcpt {
        next: usize,
        accepted: usize,
    },
    /// A stepwise transaction between commands: MAIL was accepted, `accepted` of the
    /// recipients so far too.
    Envelope {
        accepted: usize,
    },
    /// DATA sent, with `accepted` recipients.
    Data {
        accepted: usize,
    },
    /// `354` received; the body is flowing.
    Body,
    /// The final dot sent.
    DataEnd,
    /// A pipelined DATA got `354` though no recipient was accepted: a lone dot was sent to
    /// end it (RFC 2920 §3.1), and the proxy hears [`Event::DataRejected`] after its reply.
    LoneDot,
    /// RSET sent; `then` is emitted when it succeeds.
    Rset {
        then: Event,
    },
    /// QUIT sent.
    Quit,
    Closed,
}

impl State {
    /// Waiting for the reply to a command we sent.
    fn awaits_reply(&self) -> bool {
        !matches!(
            self,
            Self::AwaitingTls | Self::Ready | Self::Envelope { .. } | Self::Body | Self::Closed
        )
    }
}

/// One connection to an upstream SMTP server, from the greeting to QUIT.
pub struct UpstreamSmtp {
    config: UpstreamConfig,
    state: State,
    tls_active: bool,
    reader: ReplyReader,
    /// Commands for the upstream (the AUTH exchange among them: never logged) and events.
    outbox: Outbox<Event>,
    /// When the reply the core waits for is overdue; set when a command leaves.
    deadline: Option<Instant>,
    /// From the latest EHLO reply; forgotten at STARTTLS (RFC 3207 §4.2).
    extensions: Option<Extensions>,
    /// The recipients of the running transaction.
    recipients: Vec<String>,
    /// The running transaction is driven command by command ([`UpstreamSmtp::mail`]).
    stepwise: bool,
    /// The pipelined group whose replies are still coming ([`UpstreamSmtp::pipeline`]).
    group: Option<Group>,
    /// Replies taken so far: a group's next reply is due counting from the last one.
    replies_taken: u64,
    body: Stuffer<Strict>,
    /// [`Event::Closed`] was emitted.
    finished: bool,
}

impl fmt::Debug for UpstreamSmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSmtp")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("tls_active", &self.tls_active)
            .finish_non_exhaustive()
    }
}

impl UpstreamSmtp {
    /// A core for a freshly opened connection, waiting for the greeting. With
    /// [`UpstreamTls::Implicit`] the shell has already completed the TLS handshake.
    /// `now` is when the connection opened: the greeting is due within the command timeout.
    pub fn new(config: UpstreamConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            tls_active: config.tls == UpstreamTls::Implicit,
            config,
            state: State::Greeting,
            reader: ReplyReader::new(),
            outbox: Outbox::default(),
            deadline: Some(now + COMMAND_TIMEOUT),
            extensions: None,
            recipients: Vec::new(),
            stepwise: false,
            group: None,
            replies_taken: 0,
            body: Stuffer::strict(),
            finished: false,
        })
    }

    /// Bytes read from the upstream.
    pub fn receive(&mut self, bytes: &[u8]) {
        match self.state {
            State::Closed => return,
            // Between the STARTTLS `220` and the handshake nothing may arrive in plaintext.
            State::AwaitingTls if !bytes.is_empty() => {
                return self.fail(UpstreamError::ResponseInjection)
            }
            _ => {}
        }
        self.reader.push(bytes);
        loop {
            let reply = match self.reader.next_reply() {
                Ok(Some(reply)) => reply,
                Ok(None) => return,
                Err(error) => return self.fail(UpstreamError::Protocol(error.to_string())),
            };
            self.on_reply(reply);
            if matches!(self.state, State::Closed) {
                return;
            }
            if self.reader.has_buffered() {
                if matches!(self.state, State::AwaitingTls) {
                    return self.fail(UpstreamError::ResponseInjection);
                }
                // One command at a time: bytes after a reply that asked for our next
                // command cannot be an answer to it; only a pipelined group's replies may
                // come together.
                if self.state.awaits_reply() && self.group.is_none() {
                    return self.fail(UpstreamError::Protocol(
                        "the upstream replied before our command".into(),
                    ));
                }
            }
        }
    }

    /// The TLS handshake asked for by [`Event::StartTls`] succeeded: EHLO again.
    pub fn tls_established(&mut self) {
        if !matches!(self.state, State::AwaitingTls) {
            tracing::warn!("upstream SMTP core got tls_established while not waiting for it");
            return;
        }
        self.tls_active = true;
        self.extensions = None;
        self.send_ehlo();
    }

    /// The upstream went away (EOF, reset, failed TLS handshake).
    pub fn connection_lost(&mut self) {
        match self.state {
            State::Closed => {}
            State::Quit => self.close(),
            _ => self.fail(UpstreamError::ConnectionLost),
        }
    }

    /// The reply waited for is overdue.
    fn timed_out(&mut self) {
        match self.state {
            State::Closed => {}
            State::Quit => self.close(),
            _ => self.fail(UpstreamError::TimedOut),
        }
    }

    /// How long to wait for the upstream in the current state (RFC 5321 §4.5.3.2),
    /// counted from the command that left last; `None` while idle or closed, where the
    /// proxy applies its own idle policy.
    fn timeout(&self) -> Option<Duration> {
        match self.state {
            State::Ready | State::Envelope { .. } | State::Closed => None,
            State::Data { .. } => Some(DATA_INITIATION_TIMEOUT),
            State::Body => Some(DATA_BLOCK_TIMEOUT),
            State::DataEnd | State::LoneDot => Some(DATA_TERMINATION_TIMEOUT),
            State::Greeting
            | State::Ehlo
            | State::StartTls
            | State::AwaitingTls
            | State::Auth(_)
            | State::Mail
            | State::Rcpt { .. }
            | State::Rset { .. }
            | State::Quit => Some(COMMAND_TIMEOUT),
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Idle and authenticated: a transaction may start.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// The extensions of the latest EHLO reply (after TLS once authenticated).
    pub fn extensions(&self) -> Option<&Extensions> {
        self.extensions.as_ref()
    }

    // ----- requests from the proxy -----

    /// Starts a transaction: `MAIL FROM:<mail_from> params`, then `RCPT TO:<r>` for each
    /// recipient in turn. Paths are given without angle brackets (`""` is the null
    /// sender). Of `params` (space-separated `KEY[=VALUE]`), `SIZE` is passed if the
    /// upstream advertised SIZE, `BODY` if it advertised 8BITMIME, `SMTPUTF8` if it
    /// advertised SMTPUTF8 (else the request fails); other parameters are dropped.
    /// `SMTPUTF8` is added when a path is not ASCII.
    pub fn send_envelope(
        &mut self,
        mail_from: &str,
        params: &str,
        rcpt: &[String],
    ) -> Result<(), UsageError> {
        self.check_ready()?;
        check_recipients(rcpt)?;
        let utf8 = rcpt.iter().any(|r| !r.is_ascii());
        let line = self.mail_line(mail_from, params, utf8)?;
        self.recipients = rcpt.to_vec();
        self.stepwise = false;
        self.group = None;
        self.send_line(&line);
        self.state = State::Mail;
        Ok(())
    }

    /// Starts a stepwise transaction, for a proxy that relays each of its client's
    /// commands and each reply: `MAIL FROM` now (answered by [`Event::MailAccepted`] or
    /// [`Event::MailRejected`]), then [`UpstreamSmtp::rcpt`] per recipient and
    /// [`UpstreamSmtp::data`]. Parameters as for [`UpstreamSmtp::send_envelope`].
    pub fn mail(&mut self, mail_from: &str, params: &str) -> Result<(), UsageError> {
        self.check_ready()?;
        let line = self.mail_line(mail_from, params, false)?;
        self.recipients.clear();
        self.stepwise = true;
        self.group = None;
        self.send_line(&line);
        self.state = State::Mail;
        Ok(())
    }

    /// A stepwise transaction's envelope in one write, for an upstream that offers
    /// PIPELINING (RFC 2920): MAIL, a RCPT per recipient and, with `data`, DATA. The replies
    /// are taken in order and said as the stepwise calls' are: [`Event::MailAccepted`] or
    /// [`Event::MailRejected`], an [`Event::RcptResult`] per recipient (after a refused
    /// MAIL none of them counts), then with `data` [`Event::DataReady`] or
    /// [`Event::DataRejected`]. An upstream that answers DATA with `354` though no recipient
    /// was accepted gets a lone dot, and the proxy hears `DataRejected` (`554 5.5.1`).
    /// Without `data`, the transaction goes on stepwise after the last `RcptResult` (or is
    /// over, after a refused MAIL). Parameters as for [`UpstreamSmtp::send_envelope`].
    pub fn pipeline(
        &mut self,
        mail_from: &str,
        params: &str,
        rcpt: &[String],
        data: bool,
    ) -> Result<(), UsageError> {
        self.check_ready()?;
        if !self.pipelining() {
            return Err(UsageError::Unsupported("PIPELINING"));
        }
        check_recipients(rcpt)?;
        let line = self.mail_line(mail_from, params, false)?;
        self.recipients = rcpt.to_vec();
        self.stepwise = true;
        self.group = Some(Group {
            data,
            mail_refused: false,
        });
        self.send_line(&line);
        for to in rcpt {
            self.send_line(&rcpt_line(to));
        }
        if data {
            self.send(&Command::Data);
        }
        self.state = State::Mail;
        Ok(())
    }

    /// The upstream offers PIPELINING (RFC 2920): [`UpstreamSmtp::pipeline`] may be used.
    pub fn pipelining(&self) -> bool {
        self.extensions
            .as_ref()
            .is_some_and(|extensions| extensions.has("PIPELINING"))
    }

    /// One recipient of a stepwise transaction, answered by [`Event::RcptResult`].
    pub fn rcpt(&mut self, to: &str) -> Result<(), UsageError> {
        let State::Envelope { accepted } = self.state else {
            return Err(self.not_ready());
        };
        if to.is_empty() || !valid_field(to) {
            return Err(UsageError::InvalidEnvelope);
        }
        self.recipients.push(to.to_owned());
        self.send_rcpt(self.recipients.len() - 1, accepted);
        Ok(())
    }

    /// DATA in a stepwise transaction with at least one accepted recipient: answered by
    /// [`Event::DataReady`] or [`Event::DataRejected`].
    pub fn data(&mut self) -> Result<(), UsageError> {
        match self.state {
            State::Envelope { accepted: 0 } => Err(UsageError::NoRecipients),
            State::Envelope { accepted } => {
                self.send(&Command::Data);
                self.state = State::Data { accepted };
                Ok(())
            }
            _ => Err(self.not_ready()),
        }
    }

    fn not_ready(&self) -> UsageError {
        match self.state {
            State::Closed => UsageError::Closed,
            _ => UsageError::NotReady,
        }
    }

    /// `MAIL FROM:<path> params` with the parameters the upstream can take.
    fn mail_line(&self, mail_from: &str, params: &str, utf8: bool) -> Result<String, UsageError> {
        if !valid_field(mail_from) {
            return Err(UsageError::InvalidEnvelope);
        }
        let extensions = self.extensions.clone().unwrap_or_default();
        let mut params = filter_params(params, &extensions)?;
        let utf8 = utf8 || !mail_from.is_ascii();
        if utf8 && !params.iter().any(|p| p == "SMTPUTF8") {
            if !extensions.has("SMTPUTF8") {
                return Err(UsageError::Unsupported("SMTPUTF8"));
            }
            params.push("SMTPUTF8".into());
        }
        let mut line = format!("MAIL FROM:<{mail_from}>");
        for param in &params {
            line.push(' ');
            line.push_str(param);
        }
        Ok(line)
    }

    /// The next piece of the body after [`Event::DataReady`]: unstuffed, CRLF lines, cut
    /// anywhere. It is re-stuffed here; a bare CR or LF, or an overlong line, fails the
    /// connection with [`UpstreamError::Body`] (nothing of the offending piece is sent).
    pub fn data_chunk(&mut self, bytes: &[u8]) -> Result<(), UsageError> {
        self.expect_body()?;
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 64 + 2);
        match self.body.feed(bytes, &mut out) {
            Ok(()) => self.outbox.transmit().append(&mut out),
            Err(violation) => self.fail(UpstreamError::Body(violation)),
        }
        Ok(())
    }

    /// The body is complete: send the end of data and wait for the upstream's verdict
    /// ([`Event::DataAccepted`] or [`Event::DataRejected`]).
    pub fn data_end(&mut self) -> Result<(), UsageError> {
        self.expect_body()?;
        let mut out = Vec::new();
        match self.body.finish(&mut out) {
            Ok(()) => {
                self.outbox.transmit().append(&mut out);
                self.state = State::DataEnd;
            }
            Err(violation) => self.fail(UpstreamError::Body(violation)),
        }
        Ok(())
    }

    /// RSET while idle (e.g. the client reset after a refused MAIL); answered by
    /// [`Event::ResetDone`].
    pub fn reset(&mut self) -> Result<(), UsageError> {
        match self.state {
            State::Ready | State::Envelope { .. } => {
                self.send(&Command::Rset);
                self.state = State::Rset {
                    then: Event::ResetDone,
                };
                Ok(())
            }
            State::Closed => Err(UsageError::Closed),
            _ => Err(UsageError::NotReady),
        }
    }

    /// Ends the connection: QUIT when idle (then [`Event::Closed`] after the reply),
    /// otherwise [`Event::Closed`] at once. In the middle of a body this is the only way
    /// to abandon the message: the final dot is never sent, so the upstream drops it.
    pub fn quit(&mut self) {
        match self.state {
            State::Closed | State::Quit => {}
            State::Ready | State::Envelope { .. } => {
                self.send(&Command::Quit);
                self.state = State::Quit;
            }
            _ => self.close(),
        }
    }

    // ----- replies -----

    fn on_reply(&mut self, reply: Reply) {
        self.replies_taken += 1;
        if reply.code() == 421 && !matches!(self.state, State::Quit) {
            return self.fail(UpstreamError::ServiceClosing(reply));
        }
        let class = reply.code() / 100;
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Greeting if reply.code() == 220 => self.send_ehlo(),
            State::Greeting => self.fail(UpstreamError::Rejected(reply)),
            State::Ehlo if reply.code() == 250 => self.after_ehlo(Extensions::from_ehlo(&reply)),
            State::Ehlo => self.fail(UpstreamError::Rejected(reply)),
            State::StartTls if reply.code() == 220 => {
                if self.reader.has_buffered() {
                    return self.fail(UpstreamError::ResponseInjection);
                }
                self.state = State::AwaitingTls;
                self.outbox.push_event(Event::StartTls);
            }
            State::StartTls => self.fail(UpstreamError::NoTls),
            State::Auth(step) => self.on_auth_reply(step, reply),
            State::Mail => match class {
                // A pipelined group's RCPT replies come next.
                2 if self.group.is_some() => {
                    self.state = State::Rcpt {
                        next: 0,
                        accepted: 0,
                    };
                    self.outbox.push_event(Event::MailAccepted(reply));
                }
                2 if self.stepwise => {
                    self.state = State::Envelope { accepted: 0 };
                    self.outbox.push_event(Event::MailAccepted(reply));
                }
                2 => self.send_rcpt(0, 0),
                4 | 5 => {
                    self.state = match &mut self.group {
                        // The group's RCPT (and DATA) replies are still to come.
                        Some(group) => {
                            group.mail_refused = true;
                            State::Rcpt {
                                next: 0,
                                accepted: 0,
                            }
                        }
                        None => State::Ready,
                    };
                    self.outbox.push_event(Event::MailRejected(reply));
                }
                _ => self.unexpected("MAIL", &reply),
            },
            State::Rcpt { next, accepted } => {
                if !matches!(class, 2 | 4 | 5) {
                    return self.unexpected("RCPT", &reply);
                }
                let mail_refused = self.group.is_some_and(|group| group.mail_refused);
                let accepted = accepted + usize::from(class == 2 && !mail_refused);
                self.outbox
                    .push_event(Event::RcptResult { index: next, reply });
                if let Some(group) = self.group {
                    self.state = if next + 1 < self.recipients.len() {
                        State::Rcpt {
                            next: next + 1,
                            accepted,
                        }
                    } else if group.data {
                        State::Data { accepted }
                    } else {
                        self.group = None;
                        if mail_refused {
                            State::Ready
                        } else {
                            State::Envelope { accepted }
                        }
                    };
                } else if self.stepwise {
                    self.state = State::Envelope { accepted };
                } else if next + 1 < self.recipients.len() {
                    self.send_rcpt(next + 1, accepted);
                } else if accepted > 0 {
                    self.send(&Command::Data);
                    self.state = State::Data { accepted };
                } else {
                    self.send_rset(Event::NoRecipientAccepted);
                }
            }
            State::Data { accepted } => {
                let pipelined = self.group.take().is_some();
                match reply.code() {
                    // RFC 2920 §3.1: DATA taken though no recipient was; a lone dot ends it.
                    354 if pipelined && accepted == 0 => {
                        self.send_line(".");
                        self.state = State::LoneDot;
                    }
                    354 => {
                        self.body = Stuffer::strict();
                        self.state = State::Body;
                        self.outbox.push_event(Event::DataReady);
                    }
                    // RFC 5321 does not say whether a refused DATA ends the transaction.
                    _ if matches!(class, 4 | 5) => self.send_rset(Event::DataRejected(reply)),
                    _ => self.unexpected("DATA", &reply),
                }
            }
            State::DataEnd => {
                self.recipients.clear();
                match class {
                    2 => {
                        self.state = State::Ready;
                        self.outbox.push_event(Event::DataAccepted(reply));
                    }
                    4 | 5 => {
                        self.state = State::Ready;
                        self.outbox.push_event(Event::DataRejected(reply));
                    }
                    _ => self.unexpected("end of data", &reply),
                }
            }
            State::LoneDot if matches!(class, 2 | 4 | 5) => {
                self.recipients.clear();
                self.state = State::Ready;
                self.outbox
                    .push_event(Event::DataRejected(no_valid_recipients()));
            }
            State::LoneDot => self.unexpected("a lone dot", &reply),
            State::Rset { then } if class == 2 => {
                self.recipients.clear();
                self.state = State::Ready;
                self.outbox.push_event(then);
            }
            State::Rset { .. } => self.fail(UpstreamError::Rejected(reply)),
            // Whatever QUIT gets, the connection is over.
            State::Quit => self.close(),
            State::AwaitingTls => self.fail(UpstreamError::ResponseInjection),
            State::Ready | State::Envelope { .. } | State::Body => self.fail(
                UpstreamError::Protocol(format!("unsolicited reply {}", reply.code())),
            ),
            State::Closed => {}
        }
    }

    fn after_ehlo(&mut self, extensions: Extensions) {
        if !self.tls_active {
            // StartTls mode before the handshake: STARTTLS or nothing. NO DOWNGRADE.
            if extensions.has("STARTTLS") {
                self.send(&Command::StartTls);
                self.state = State::StartTls;
            } else {
                self.fail(UpstreamError::NoTls);
            }
            return;
        }
        let mechanism = self
            .config
            .auth_preference
            .order()
            .iter()
            .copied()
            .find(|&mechanism| extensions.offers_auth(mechanism));
        self.extensions = Some(extensions);
        match mechanism {
            Some(mechanism) => self.start_auth(mechanism),
            None => self.fail(UpstreamError::AuthUnavailable),
        }
    }

    /// The only place credentials are written; reachable only from `after_ehlo` with TLS
    /// active and from `on_auth_reply`.
    fn start_auth(&mut self, mechanism: AuthMechanism) {
        debug_assert!(self.tls_active, "credentials are only ever sent over TLS");
        if !self.tls_active {
            return self.fail(UpstreamError::NoTls);
        }
        let credentials = &self.config.credentials;
        match mechanism {
            AuthMechanism::Plain => {
                let encoded = crate::wire::sasl::encode_plain(
                    &credentials.username,
                    credentials.password.expose(),
                );
                self.send_secret(&["AUTH PLAIN ", &encoded]);
                self.state = State::Auth(AuthStep::Plain);
            }
            AuthMechanism::Login => {
                self.send(&Command::Auth {
                    mechanism: "LOGIN".into(),
                    initial_response: None,
                });
                self.state = State::Auth(AuthStep::LoginStart);
            }
        }
    }

    fn on_auth_reply(&mut self, step: AuthStep, reply: Reply) {
        match (step, reply.code()) {
            (AuthStep::Plain | AuthStep::LoginPassword, 235) => {
                self.state = State::Ready;
                let extensions = self.extensions.clone().unwrap_or_default();
                self.outbox.push_event(Event::Ready { extensions });
            }
            (AuthStep::Plain, 334) => self.fail(UpstreamError::Protocol(
                "334 to AUTH PLAIN with an initial response".into(),
            )),
            (AuthStep::LoginStart, 334) => {
                let encoded = Zeroizing::new(
                    data_encoding::BASE64.encode(self.config.credentials.username.as_bytes()),
                );
                self.send_secret(&[&encoded]);
                self.state = State::Auth(AuthStep::LoginUser);
            }
            (AuthStep::LoginUser, 334) => {
                let encoded = Zeroizing::new(
                    data_encoding::BASE64
                        .encode(self.config.credentials.password.expose().as_bytes()),
                );
                self.send_secret(&[&encoded]);
                self.state = State::Auth(AuthStep::LoginPassword);
            }
            _ => self.fail(UpstreamError::AuthRejected(reply)),
        }
    }

    // ----- helpers -----

    fn send_ehlo(&mut self) {
        let ehlo = Command::Ehlo {
            domain: self.config.ehlo_name.clone(),
        };
        self.send(&ehlo);
        self.state = State::Ehlo;
    }

    fn send_rcpt(&mut self, index: usize, accepted: usize) {
        let line = rcpt_line(&self.recipients[index]);
        self.send_line(&line);
        self.state = State::Rcpt {
            next: index,
            accepted,
        };
    }

    /// A transaction may start: the conversation is idle.
    fn check_ready(&self) -> Result<(), UsageError> {
        match self.state {
            State::Ready => Ok(()),
            State::Closed => Err(UsageError::Closed),
            _ => Err(UsageError::NotReady),
        }
    }

    fn send_rset(&mut self, then: Event) {
        self.send(&Command::Rset);
        self.state = State::Rset { then };
    }

    /// A command the server side parses as the same [`Command`].
    fn send(&mut self, command: &Command) {
        command.write(self.outbox.transmit());
    }

    fn send_line(&mut self, line: &str) {
        let out = self.outbox.transmit();
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// A line holding credentials; transmitted, never logged.
    fn send_secret(&mut self, parts: &[&str]) {
        let out = self.outbox.transmit();
        for part in parts {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    fn expect_body(&self) -> Result<(), UsageError> {
        match self.state {
            State::Body => Ok(()),
            State::Closed => Err(UsageError::Closed),
            _ => Err(UsageError::NotReady),
        }
    }

    fn unexpected(&mut self, command: &str, reply: &Reply) {
        self.fail(UpstreamError::Protocol(format!(
            "unexpected reply {} to {command}",
            reply.code()
        )));
    }

    fn fail(&mut self, error: UpstreamError) {
        if self.finished {
            return;
        }
        self.outbox.push_event(Event::Failed(error));
        self.close();
    }

    fn close(&mut self) {
        self.state = State::Closed;
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.reader = ReplyReader::new();
        self.recipients.clear();
        self.outbox.push_event(Event::Closed);
    }
}

/// A transaction's recipients: one at least, each a path we may put on a RCPT line.
fn check_recipients(rcpt: &[String]) -> Result<(), UsageError> {
    if rcpt.is_empty() {
        return Err(UsageError::NoRecipients);
    }
    if !rcpt.iter().all(|r| !r.is_empty() && valid_field(r)) {
        return Err(UsageError::InvalidEnvelope);
    }
    Ok(())
}

fn rcpt_line(to: &str) -> String {
    format!("RCPT TO:<{to}>")
}

/// What the proxy hears when a pipelined DATA found no recipient accepted.
fn no_valid_recipients() -> Reply {
    Reply::new(554, EnhancedStatus::new(5, 5, 1), "no valid recipients")
}

/// A path or parameter we may put on a command line: no control character (CR, LF, NUL,
/// DEL, ...) and not too long. The server side parsed these already; this is the last
/// guard against command injection toward the upstream.
fn valid_field(field: &str) -> bool {
    field.len() <= MAX_ENVELOPE_FIELD && !field.chars().any(char::is_control)
}

/// The MAIL parameters the upstream gets; see [`UpstreamSmtp::send_envelope`].
fn filter_params(params: &str, extensions: &Extensions) -> Result<Vec<String>, UsageError> {
    if !valid_field(params) {
        return Err(UsageError::InvalidEnvelope);
    }
    let mut passed = Vec::new();
    for param in params.split_ascii_whitespace() {
        if !param.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UsageError::InvalidEnvelope);
        }
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = key.to_ascii_uppercase();
        let keep = match key.as_str() {
            "SIZE" => extensions.has("SIZE"),
            "BODY" if value.eq_ignore_ascii_case("BINARYMIME") => {
                return Err(UsageError::Unsupported("BINARYMIME"))
            }
            "BODY" => extensions.has("8BITMIME"),
            "SMTPUTF8" if extensions.has("SMTPUTF8") => true,
            "SMTPUTF8" => return Err(UsageError::Unsupported("SMTPUTF8")),
            _ => false,
        };
        if keep {
            passed.push(if value.is_empty() {
                key
            } else {
                format!("{key}={value}")
            });
        }
    }
    Ok(passed)
}

impl Machine for UpstreamSmtp {
    type Event = Event;

    /// Each reply of a pipelined group is due a timeout after the one before it, as if
    /// its command had left then: a slow upstream gets as long as for one command at a
    /// time.
    fn handle_input(&mut self, input: &[u8], now: Now) {
        let group_before = self.group.is_some().then_some(self.replies_taken);
        self.receive(input);
        if group_before.is_some_and(|taken| taken != self.replies_taken) {
            self.deadline = self.timeout().map(|timeout| now.instant + timeout);
        }
    }

    /// A command leaving starts the wait for its reply.
    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        let before = out.len();
        self.outbox.poll_transmit(out);
        if out.len() > before {
            self.deadline = self.timeout().map(|timeout| now + timeout);
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.outbox.poll_event()
    }

    /// `None` while idle (the proxy's own idle policy applies) or closed.
    fn poll_timeout(&self) -> Option<Instant> {
        self.timeout().and(self.deadline)
    }

    fn handle_timeout(&mut self, now: Now) {
        if self
            .poll_timeout()
            .is_some_and(|deadline| now.instant >= deadline)
        {
            self.timed_out();
        }
    }

    /// The upstream went away (EOF, reset, failed TLS handshake).
    fn handle_connection_lost(&mut self) {
        self.connection_lost();
    }

    fn wants_input(&self) -> bool {
        !self.is_closed()
    }

    fn is_closed(&self) -> bool {
        UpstreamSmtp::is_closed(self)
    }
}

//! The SMTP server session: a state machine fed bytes and events, returning [`Event`]s.
//! It is the journal target (mail for `<mailbox-id>@<email domain>`, stored by the shell)
//! and, on proxy listeners, takes the proxy login; once that succeeds it hands the
//! connection over to a [`Relay`] ([`Session::login_accepted`]).
//!
//! It never touches a socket, a clock or the store, so the tokio shell and the simulation
//! drive the same code. It is a [`crate::net::Machine`]: replies come from `poll_transmit`,
//! requests for the shell from `poll_event`, and its one timer is a deadline. The shell
//! contract, on [`crate::net::Driver`]:
//!
//! ```text
//! let mut machine = Machine::Session(Session::new(config, client, driver.now().instant));
//! loop {
//!     match driver.next_event(&mut machine).await {        // writes replies, reads, timers
//!         Next::Event(Event::LookupRecipient(id)) => session.recipient_status(service.status(&id)),
//!         Next::Event(Event::MessageStart(envelope)) => draft = Some(service.draft(envelope)),
//!         Next::Event(Event::MessageData(bytes)) => draft.write(&bytes)?,
//!         Next::Event(Event::MessageEnd) => session.commit_result(service.commit(draft).await),
//!         Next::Event(Event::MessageAbort(_)) => drop(draft.take()),
//!         Next::Event(Event::StartTls) => {
//!             driver.flush(&mut machine).await?;            // the 220 first
//!             driver.stream_mut().upgrade(tls).await?;
//!             session.tls_established(proof);
//!         }
//!         Next::Event(Event::ProxyLogin(credentials)) => match login(credentials).await {
//!             Ok(upstream) => machine.login_accepted(upstream.pipelining()), // the Relay serves
//!             Err(failure) => session.auth_failed(failure),
//!         },
//!         Next::Event(Event::Close) | Next::Closed => return,
//!         // A relay's events (Upstream, and MessageEnd answered with message_relayed):
//!         // see super::relay.
//!     }
//! }
//! ```
//!
//! Replies with no event between them leave in one write (RFC 2920), and a reply queued
//! after an event never goes out before the shell has seen that event.
//!
//! The shell answers each `LookupRecipient`, `MessageEnd`, `StartTls` and `ProxyLogin`
//! before it reads again; the session processes no input while one is outstanding, which
//! is what keeps pipelined commands (RFC 2920) in order behind a pending commit, and keeps
//! memory bounded by one read buffer plus one command line.

use std::sync::Arc;

use std::time::Instant;
use zeroize::Zeroizing;

use super::address::{Domain, ForwardPath, ReversePath};
use super::command::{Command, MailParams};
use super::conversation::{ok, Conversation, Mode, Step, Wait};
use super::error_map::Refusal;
use super::interface::{
    AbortReason, AuthFailure, ClientInfo, CommitFailure, Event, ProxyCredentials, RecipientStatus,
    SessionConfig,
};
use super::relay::Relay;
use super::reply::Reply;
use crate::crypto::Secret;
use crate::mailbox::MailboxId;
use crate::net::{Now, TlsActive};
use crate::proxy::ProxyLogin;
use crate::store::Durable;
use crate::wire::sasl::{self, Response};

pub use super::conversation::{
    COMMAND_TIMEOUT, DATA_BLOCK_TIMEOUT, DATA_TERMINATION_TIMEOUT, MAX_COMMAND_LINE,
};

/// Where a SASL exchange is (RFC 4954, RFC 4616 PLAIN, the de-facto LOGIN).
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword { user: String },
}

/// One SMTP server connection; see the module documentation.
pub struct Session {
    pub(super) conversation: Conversation<MailboxId>,
    /// After a `334`: the next line is the client's SASL response.
    auth: Option<AuthStep>,
    /// The recipient of the outstanding [`Event::LookupRecipient`].
    looking_up: Option<MailboxId>,
}

impl Session {
    /// A new session on a connection opened at `now`; it first transmits the greeting.
    pub fn new(config: Arc<SessionConfig>, client: ClientInfo, now: Instant) -> Self {
        let mut conversation = Conversation::new(config, client, now);
        let host = &conversation.config.host_name;
        // RFC 5321 §3.1: a refused client gets 554 and then 503 to everything but QUIT.
        let greeting = if conversation.client.allowed {
            Reply::plain(220, vec![format!("{host} ESMTP ready")])
        } else {
            Reply::plain(554, vec![format!("{host} access denied")])
        };
        conversation.send(&greeting);
        Self {
            conversation,
            auth: None,
            looking_up: None,
        }
    }

    /// Whether input may still carry credentials (AUTH and its SASL responses on a proxy
    /// listener), so the shell wipes its read buffer after handing bytes over.
    pub fn may_receive_credentials(&self) -> bool {
        self.conversation.config.proxy && !self.conversation.is_closed()
    }

    /// Bytes from the client, with the current time (used for the Received header of a
    /// message that starts now).
    pub fn receive(&mut self, bytes: &[u8], now: Now) {
        if self.conversation.receive(bytes, now) {
            self.process();
        }
    }

    /// The answer to [`Event::LookupRecipient`].
    pub fn recipient_status(&mut self, status: RecipientStatus) {
        if !self
            .conversation
            .answered(Wait::Recipient, "recipient_status")
        {
            return;
        }
        let id = self.looking_up.take();
        let conversation = &mut self.conversation;
        match (status, conversation.transaction.as_mut(), id) {
            (RecipientStatus::Active, Some(transaction), Some(id)) => {
                transaction.recipients.push(id);
                conversation.send(&ok(2, 1, 5, "recipient ok"));
            }
            (RecipientStatus::Active, _, _) => {
                conversation.refuse(Refusal::BadSequence("need MAIL command"))
            }
            (RecipientStatus::Suspended, _, _) => conversation.refuse(Refusal::RecipientSuspended),
            (RecipientStatus::Unknown, _, _) => conversation.refuse(Refusal::UnknownRecipient),
            (RecipientStatus::Unavailable, _, _) => {
                conversation.refuse(Refusal::RecipientLookupFailed)
            }
            (RecipientStatus::StorageFull, _, _) => {
                conversation.refuse(Refusal::Commit(CommitFailure::StorageFull))
            }
        }
        self.process();
    }

    /// The answer to [`Event::MessageEnd`]. Only a [`Durable`] proof gets the `250`.
    pub fn commit_result(&mut self, result: Result<Durable, CommitFailure>) {
        if !self.conversation.answered(Wait::Commit, "commit_result") {
            return;
        }
        let id = self.conversation.take_message_id();
        match result {
            Ok(_durable) => self
                .conversation
                .send(&ok(2, 0, 0, format!("Ok: queued as {id}"))),
            Err(failure) => self.conversation.refuse(Refusal::Commit(failure)),
        }
        self.process();
    }

    /// The proxy login after [`Event::ProxyLogin`] failed.
    pub fn auth_failed(&mut self, failure: AuthFailure) {
        if !self.conversation.answered(Wait::Auth, "auth_failed") {
            return;
        }
        self.conversation.refuse(Refusal::Auth(failure));
        self.process();
    }

    /// The proxy login after [`Event::ProxyLogin`] succeeded: from now on the returned
    /// [`Relay`] serves the connection and passes its transactions to the upstream; this
    /// session is left closed. `None` (the session unchanged) when no login was
    /// outstanding. `upstream_pipelining`: the upstream offers PIPELINING.
    pub fn login_accepted(&mut self, upstream_pipelining: bool) -> Option<Relay> {
        if !self.conversation.answered(Wait::Auth, "login_accepted") {
            return None;
        }
        let mut husk = Conversation::new(
            self.conversation.config.clone(),
            self.conversation.client.clone(),
            self.conversation.activity(),
        );
        husk.mode = Mode::Closed;
        let conversation = std::mem::replace(&mut self.conversation, husk);
        Some(Relay::logged_in(
            conversation.hand_over(),
            upstream_pipelining,
        ))
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded. RFC 3207 §4.2: everything
    /// learnt before is forgotten and the client must send EHLO again.
    pub fn tls_established(&mut self, tls: TlsActive) {
        if self.conversation.tls_established(tls) {
            self.process();
        }
    }

    /// Graceful shutdown: close with `421 4.3.2` now if no transaction is open, otherwise as
    /// soon as the current one has its final reply.
    pub fn shutdown(&mut self) {
        self.conversation.request_shutdown();
        self.process();
    }

    // ----- processing -----

    /// Works through buffered input until it runs out or the session must wait.
    fn process(&mut self) {
        loop {
            match self.conversation.step(self.auth.is_some()) {
                Step::Line(line) => match self.auth.take() {
                    Some(step) => self.auth_response(step, &line),
                    None => self.execute(&line),
                },
                Step::Progressed => {}
                Step::Blocked => return,
            }
        }
    }

    fn execute(&mut self, line: &[u8]) {
        let Some(command) = self.conversation.command(line) else {
            return;
        };
        match command {
            Command::Helo { domain } => self.hello(domain, false),
            Command::Ehlo { domain } => self.hello(domain, true),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => match self.conversation.data_refusal() {
                Some(refusal) => self.conversation.refuse(refusal),
                None => self.conversation.start_data(true),
            },
            Command::Bdat { size, last } => {
                if self.conversation.bdat(size, last) {
                    self.conversation.start_chunked(size, last, true);
                }
            }
            Command::Rset => {
                self.conversation.end_transaction(AbortReason::Reset);
                self.conversation.send(&ok(2, 0, 0, "Ok"));
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(&mechanism, initial_response.map(Zeroizing::new)),
            // Answered by the conversation.
            Command::Noop
            | Command::Quit
            | Command::Vrfy
            | Command::Expn
            | Command::Help
            | Command::StartTls => {}
        }
    }

    /// HELO/EHLO: also an implicit RSET (RFC 5321 §4.1.4).
    fn hello(&mut self, name: String, extended: bool) {
        self.conversation.end_transaction(AbortReason::Reset);
        // RFC 4954 §4 lets AUTH be offered before TLS; credentials never cross plaintext
        // here, so it is not.
        let offer_auth = self.conversation.config.proxy && self.conversation.tls.is_some();
        self.conversation.hello_reply(name, extended, offer_auth);
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) {
        if let Some(refusal) = self.conversation.mail_refusal(&params) {
            return self.conversation.refuse(refusal);
        }
        self.conversation.open_transaction(from, params);
        self.conversation.engaged = true;
        self.conversation.send(&ok(2, 1, 0, "sender ok"));
    }

    fn rcpt(&mut self, to: ForwardPath) {
        let conversation = &mut self.conversation;
        if let Some(refusal) = conversation.rcpt_refusal() {
            return conversation.refuse(refusal);
        }
        let config = conversation.config.clone();
        let email_domain = config.email_domain.get();
        let email_domain = email_domain.trim_end_matches('.');
        let id = match to {
            // RFC 5321 §4.5.1: postmaster, with or without our domain, goes to the
            // configured mailbox.
            ForwardPath::Postmaster => config.postmaster.clone(),
            ForwardPath::Mailbox(mailbox) => {
                let ours = matches!(&mailbox.domain, Domain::Name(name) if name.eq_ignore_ascii_case(email_domain));
                if !ours {
                    return conversation.refuse(Refusal::RelayDenied);
                }
                if mailbox.local_part.eq_ignore_ascii_case("postmaster") {
                    config.postmaster.clone()
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
            return conversation.refuse(Refusal::UnknownRecipient);
        };
        let recipients = conversation
            .transaction
            .as_ref()
            .map_or(&[][..], |transaction| &transaction.recipients);
        if recipients.contains(&id) {
            // One copy per mailbox; accepting keeps the sender from bouncing the duplicate.
            return conversation.send(&ok(2, 1, 5, "duplicate recipient, delivering once"));
        }
        if recipients.len() >= config.max_recipients {
            return conversation.refuse(Refusal::TooManyRecipients);
        }
        conversation.wait_for(Wait::Recipient, Event::LookupRecipient(id.clone()));
        self.looking_up = Some(id);
    }

    // ----- proxy login -----

    fn auth(&mut self, mechanism: &str, initial: Option<Zeroizing<String>>) {
        let conversation = &mut self.conversation;
        if !conversation.config.proxy {
            return conversation.refuse(Refusal::NotImplemented("authentication not available"));
        }
        if conversation.tls.is_none() {
            return conversation.refuse(Refusal::AuthNeedsTls);
        }
        if conversation.greeting.is_none() {
            return conversation.refuse(Refusal::BadSequence("send EHLO first"));
        }
        if conversation.transaction.is_some() {
            return conversation.refuse(Refusal::BadSequence("mail transaction in progress"));
        }
        match (mechanism, initial) {
            ("PLAIN", Some(response)) => self.auth_response(AuthStep::Plain, response.as_bytes()),
            ("PLAIN", None) => self.challenge("", AuthStep::Plain),
            // The LOGIN prompts are base64 "Username:" and "Password:".
            ("LOGIN", Some(user)) => self.auth_response(AuthStep::LoginUser, user.as_bytes()),
            ("LOGIN", None) => self.challenge("VXNlcm5hbWU6", AuthStep::LoginUser),
            _ => self.conversation.refuse(Refusal::UnsupportedMechanism),
        }
    }

    fn challenge(&mut self, text: &str, step: AuthStep) {
        self.conversation
            .send(&Reply::plain(334, vec![text.to_owned()]));
        self.auth = Some(step);
    }

    /// One SASL response line (RFC 4954 §4: base64, `=` for empty, `*` cancels).
    fn auth_response(&mut self, step: AuthStep, line: &[u8]) {
        let decoded = match sasl::response(line) {
            Ok(Response::Data(decoded)) => decoded,
            Ok(Response::Cancel) => return self.conversation.refuse(Refusal::AuthCancelled),
            Err(sasl::Malformed) => return self.conversation.refuse(Refusal::AuthMalformed),
        };
        match step {
            AuthStep::Plain => {
                let Ok(credentials) = sasl::plain(&decoded) else {
                    return self.conversation.refuse(Refusal::AuthMalformed);
                };
                if !credentials.same_identity() {
                    return self
                        .conversation
                        .refuse(Refusal::Auth(AuthFailure::InvalidLogin));
                }
                self.login(&credentials.authcid, credentials.password.expose());
            }
            AuthStep::LoginUser => {
                let Ok(user) = std::str::from_utf8(&decoded) else {
                    return self.conversation.refuse(Refusal::AuthMalformed);
                };
                let user = user.to_owned();
                self.challenge("UGFzc3dvcmQ6", AuthStep::LoginPassword { user });
            }
            AuthStep::LoginPassword { user } => {
                let Ok(password) = std::str::from_utf8(&decoded) else {
                    return self.conversation.refuse(Refusal::AuthMalformed);
                };
                self.login(&user, password);
            }
        }
    }

    fn login(&mut self, user: &str, password: &str) {
        let login = match ProxyLogin::parse(user) {
            Ok(login) if !password.is_empty() && !password.contains('\0') => login,
            _ => {
                return self
                    .conversation
                    .refuse(Refusal::Auth(AuthFailure::InvalidLogin))
            }
        };
        self.conversation.wait_for(
            Wait::Auth,
            Event::ProxyLogin(ProxyCredentials {
                login,
                password: Secret::new(password),
            }),
        );
    }
}

//! The SMTP relay: a logged-in proxy client's side of the connection, after
//! [`Session::login_accepted`](super::Session::login_accepted) handed it over.
//!
//! Each transaction command goes to the upstream ([`Event::Upstream`]) and the client gets
//! the upstream's reply ([`Relay::upstream_reply`]); the message is both relayed and copied
//! by the shell, and its `250` reaches the client only with a [`Durable`] proof that the
//! copy is stored ([`Relay::message_relayed`]). Like the session it is sans-IO; the shell
//! (`super::server`) drives it with the upstream leg (`super::upstream`).

use crate::net::Now;

use super::address::{ForwardPath, ReversePath};
use super::command::{Command, MailParams};
use super::conversation::{ok, Conversation, Mode, Step, Wait};
use super::error_map::Refusal;
use super::interface::{AbortReason, CommitFailure, Event, UpstreamCommand};
use super::reply::{EnhancedStatus, Reply};
use crate::store::Durable;

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
    /// HELO/EHLO in the middle of a transaction, which the upstream must forget too.
    Hello {
        name: String,
        extended: bool,
    },
}

/// A logged-in proxy client's connection; see the module documentation.
pub struct Relay {
    /// Recipients are the addresses the upstream accepted.
    pub(super) conversation: Conversation<String>,
    /// What the outstanding [`Event::Upstream`] was for.
    pending: Option<Pending>,
    /// The upstream connection is gone; the relay closes after its next reply.
    upstream_gone: bool,
}

impl Relay {
    /// Takes over a session whose proxy login succeeded, and says so to the client.
    pub(super) fn logged_in(mut conversation: Conversation<String>) -> Self {
        conversation.mode = Mode::Commands;
        conversation.engaged = true;
        conversation.send(&Reply::new(
            235,
            EnhancedStatus::new(2, 7, 0),
            "authentication successful, relaying to the upstream server",
        ));
        let mut relay = Self {
            conversation,
            pending: None,
            upstream_gone: false,
        };
        // Commands pipelined behind the AUTH are waiting in the input.
        relay.process();
        relay
    }

    /// Bytes from the client, with the current time.
    pub fn receive(&mut self, bytes: &[u8], now: Now) {
        if self.conversation.receive(bytes, now) {
            self.process();
        }
    }

    /// The upstream's reply to [`Event::Upstream`].
    pub fn upstream_reply(&mut self, reply: Reply) {
        if !self.conversation.answered(Wait::Upstream, "upstream_reply") {
            return;
        }
        let Some(pending) = self.pending.take() else {
            return;
        };
        let positive = reply.code() / 100 == 2;
        let conversation = &mut self.conversation;
        match pending {
            Pending::Mail { from, params } => {
                if positive {
                    conversation.open_transaction(from, params);
                }
                conversation.send(&reply);
            }
            Pending::Rcpt(address) => {
                if let (true, Some(transaction)) = (positive, conversation.transaction.as_mut()) {
                    transaction.recipients.push(address);
                }
                conversation.send(&reply);
            }
            Pending::Data if reply.code() == 354 => conversation.start_data(false),
            Pending::Data => {
                conversation.transaction = None;
                conversation.send(&reply);
            }
            Pending::Bdat { size, last } if reply.code() == 354 => {
                conversation.start_chunked(size, last, false)
            }
            Pending::Bdat { size, .. } => {
                conversation.transaction = None;
                conversation.discard_chunk(size, Refusal::Relayed(reply));
            }
            Pending::Rset => conversation.send(&ok(2, 0, 0, "Ok")),
            Pending::Hello { name, extended } => conversation.hello_reply(name, extended, false),
        }
        self.process();
    }

    /// The end of a relayed message (the answer to [`Event::MessageEnd`]): the upstream's
    /// reply after the final dot. Its `250` reaches the client only with a [`Durable`]
    /// proof that the copy is stored; a refusal is passed on.
    pub fn message_relayed(&mut self, result: Result<(Durable, Reply), Reply>) {
        if !self.conversation.answered(Wait::Commit, "message_relayed") {
            return;
        }
        self.conversation.transaction = None;
        match result {
            Ok((_durable, reply)) => self.conversation.send(&reply),
            Err(reply) => self.conversation.send(&reply),
        }
        self.process();
    }

    /// The copy could not be stored, so the message is not relayed either.
    pub fn copy_failed(&mut self, failure: CommitFailure) {
        if !self.conversation.answered(Wait::Commit, "copy_failed") {
            return;
        }
        self.conversation.transaction = None;
        self.conversation.refuse(Refusal::Commit(failure));
        self.process();
    }

    /// The upstream connection failed. A command waiting for it gets `reply`; a message
    /// still arriving is refused with it at its end; then the relay closes.
    pub fn upstream_failed(&mut self, reply: Reply) {
        if self.conversation.is_closed() {
            return;
        }
        self.upstream_gone = true;
        let conversation = &mut self.conversation;
        if conversation.is_waiting_for(Wait::Upstream) || conversation.is_waiting_for(Wait::Commit)
        {
            conversation.mode = Mode::Commands;
            self.pending = None;
            conversation.end_transaction(AbortReason::Closed);
            conversation.send(&reply);
            conversation.close_with(Refusal::UpstreamLost);
        } else if conversation.is_streaming() {
            conversation.fail_message(Refusal::Relayed(reply));
        } else {
            self.process();
        }
    }

    /// Graceful shutdown: `421 4.3.2` as soon as no transaction is open.
    pub fn shutdown(&mut self) {
        self.conversation.request_shutdown();
        self.process();
    }

    // ----- processing -----

    fn process(&mut self) {
        loop {
            // Once the upstream is gone and the client is between commands: `421`, close.
            if self.upstream_gone && matches!(self.conversation.mode, Mode::Commands) {
                return self.conversation.close_with(Refusal::UpstreamLost);
            }
            match self.conversation.step(false) {
                Step::Line(line) => self.execute(&line),
                Step::Progressed => {}
                Step::Blocked => return,
            }
        }
    }

    fn execute(&mut self, line: &[u8]) {
        let Some(command) = self.conversation.command(line) else {
            return;
        };
        let conversation = &mut self.conversation;
        match command {
            Command::Helo { domain } => self.hello(domain, false),
            Command::Ehlo { domain } => self.hello(domain, true),
            Command::Mail { from, params } => {
                if let Some(refusal) = conversation.mail_refusal(&params) {
                    return conversation.refuse(refusal);
                }
                let command = UpstreamCommand::Mail {
                    from: from.to_string(),
                    params: params.to_string(),
                };
                self.ask_upstream(command, Pending::Mail { from, params });
            }
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => match conversation.data_refusal() {
                Some(refusal) => conversation.refuse(refusal),
                None => self.ask_upstream(UpstreamCommand::Data, Pending::Data),
            },
            Command::Bdat { size, last } => {
                if conversation.bdat(size, last) {
                    self.ask_upstream(UpstreamCommand::Data, Pending::Bdat { size, last });
                }
            }
            Command::Rset => {
                let open = conversation.transaction.is_some();
                conversation.end_transaction(AbortReason::Reset);
                if open {
                    self.ask_upstream(UpstreamCommand::Rset, Pending::Rset);
                } else {
                    conversation.send(&ok(2, 0, 0, "Ok"));
                }
            }
            Command::Auth { .. } => {
                conversation.refuse(Refusal::BadSequence("already authenticated"))
            }
            // Answered by the conversation.
            Command::Noop
            | Command::Quit
            | Command::Vrfy
            | Command::Expn
            | Command::Help
            | Command::StartTls => {}
        }
    }

    /// HELO/EHLO: also an implicit RSET (RFC 5321 §4.1.4), which the upstream must get
    /// when a transaction was open.
    fn hello(&mut self, name: String, extended: bool) {
        let open = self.conversation.transaction.is_some();
        self.conversation.end_transaction(AbortReason::Reset);
        if open {
            return self.ask_upstream(UpstreamCommand::Rset, Pending::Hello { name, extended });
        }
        self.conversation.hello_reply(name, extended, false);
    }

    fn rcpt(&mut self, to: ForwardPath) {
        let conversation = &mut self.conversation;
        if let Some(refusal) = conversation.rcpt_refusal() {
            return conversation.refuse(refusal);
        }
        let accepted = conversation
            .transaction
            .as_ref()
            .map_or(0, |transaction| transaction.recipients.len());
        if accepted >= conversation.config.max_recipients {
            return conversation.refuse(Refusal::TooManyRecipients);
        }
        let address = to.to_string();
        self.ask_upstream(
            UpstreamCommand::Rcpt(address.clone()),
            Pending::Rcpt(address),
        );
    }

    fn ask_upstream(&mut self, command: UpstreamCommand, pending: Pending) {
        self.conversation
            .wait_for(Wait::Upstream, Event::Upstream(command));
        self.pending = Some(pending);
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("upstream_gone", &self.upstream_gone)
            .finish_non_exhaustive()
    }
}

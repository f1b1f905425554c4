//! The SMTP relay: a logged-in proxy client's side of the connection, after
//! [`Session::login_accepted`](super::Session::login_accepted) handed it over.
//!
//! Each transaction command goes to the upstream ([`Event::Upstream`]) and the client gets
//! the upstream's reply ([`Relay::upstream_reply`]). When the upstream offers PIPELINING,
//! a MAIL the client pipelined with its RCPTs (and DATA) goes up with them as one
//! [`UpstreamCommand::Group`], so a pipelining client waits for one round trip to the
//! upstream, as it would direct, not one per command. The message is both relayed and copied
//! by the shell, and its `250` reaches the client only with a [`Durable`] proof that the
//! copy is stored ([`Relay::message_relayed`]). Like the session it is sans-IO; the shell
//! (`super::server`) drives it with the upstream leg (`super::upstream`).

use std::collections::VecDeque;
use std::time::Instant;

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
    /// What the outstanding [`Event::Upstream`] was for: a command, or each of a group's,
    /// answered in this order.
    pending: VecDeque<Pending>,
    /// The upstream connection is gone; the relay closes after its next reply.
    upstream_gone: bool,
    /// The upstream offers PIPELINING: a client's pipelined envelope goes up as a group.
    upstream_pipelining: bool,
}

impl Relay {
    /// Takes over a session whose proxy login succeeded, and says so to the client.
    pub(super) fn logged_in(
        mut conversation: Conversation<String>,
        upstream_pipelining: bool,
    ) -> Self {
        conversation.mode = Mode::Commands;
        conversation.engaged = true;
        conversation.send(&Reply::new(
            235,
            EnhancedStatus::new(2, 7, 0),
            "authentication successful, relaying to the upstream server",
        ));
        let mut relay = Self {
            conversation,
            pending: VecDeque::new(),
            upstream_gone: false,
            upstream_pipelining,
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

    /// The upstream's reply to [`Event::Upstream`], which came at `now`.
    pub fn upstream_reply(&mut self, reply: Reply, now: Instant) {
        if !self.conversation.answered(Wait::Upstream, "upstream_reply") {
            return;
        }
        self.conversation.upstream_answered_at(now);
        let Some(pending) = self.pending.pop_front() else {
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
            Pending::Rcpt(address) => match conversation.transaction.as_mut() {
                Some(transaction) => {
                    if positive {
                        transaction.recipients.push(address);
                    }
                    conversation.send(&reply);
                }
                // A group's MAIL was refused: whatever the upstream says to its RCPTs, there
                // is no transaction to add them to.
                None if positive => conversation.refuse(Refusal::BadSequence("need MAIL command")),
                None => conversation.send(&reply),
            },
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
        if !self.pending.is_empty() && matches!(self.conversation.mode, Mode::Commands) {
            // The rest of the group's replies are still to come.
            self.conversation.mode = Mode::Waiting(Wait::Upstream);
            return;
        }
        self.process();
    }

    /// The end of a relayed message (the answer to [`Event::MessageEnd`]): the upstream's
    /// reply after the final dot, which came at `now`. Its `250` reaches the client only
    /// with a [`Durable`] proof that the copy is stored; a refusal is passed on.
    pub fn message_relayed(&mut self, result: Result<(Durable, Reply), Reply>, now: Instant) {
        if !self.conversation.answered(Wait::Commit, "message_relayed") {
            return;
        }
        self.conversation.upstream_answered_at(now);
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
            self.pending.clear();
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
                self.mail(from, params);
            }
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => match conversation.data_refusal() {
                Some(refusal) => conversation.refuse(refusal),
                None => self.ask_upstream(UpstreamCommand::Data, [Pending::Data]),
            },
            Command::Bdat { size, last } => {
                if conversation.bdat(size, last) {
                    self.ask_upstream(UpstreamCommand::Data, [Pending::Bdat { size, last }]);
                }
            }
            Command::Rset => {
                let open = conversation.transaction.is_some();
                conversation.end_transaction(AbortReason::Reset);
                if open {
                    self.ask_upstream(UpstreamCommand::Rset, [Pending::Rset]);
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
            return self.ask_upstream(UpstreamCommand::Rset, [Pending::Hello { name, extended }]);
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
            [Pending::Rcpt(address)],
        );
    }

    /// MAIL, with the RCPTs (and DATA) the client pipelined behind it when the upstream
    /// takes them in one write too.
    fn mail(&mut self, from: ReversePath, params: MailParams) {
        let (rcpt, data) = if self.upstream_pipelining {
            self.pipelined_after_mail(params.smtputf8)
        } else {
            (Vec::new(), false)
        };
        let (from_text, params_text) = (from.to_string(), params.to_string());
        let mail = Pending::Mail { from, params };
        if rcpt.is_empty() {
            let command = UpstreamCommand::Mail {
                from: from_text,
                params: params_text,
            };
            return self.ask_upstream(command, [mail]);
        }
        let pending: Vec<Pending> = std::iter::once(mail)
            .chain(rcpt.iter().cloned().map(Pending::Rcpt))
            .chain(data.then_some(Pending::Data))
            .collect();
        let command = UpstreamCommand::Group {
            from: from_text,
            params: params_text,
            rcpt,
            data,
        };
        self.ask_upstream(command, pending);
    }

    /// Takes the RCPT lines already buffered behind a MAIL (as many as a transaction may
    /// have), and a DATA right after them: RFC 2920 lets DATA end a group. Anything else
    /// stays to be read one command at a time once the group is answered.
    fn pipelined_after_mail(&mut self, smtputf8: bool) -> (Vec<String>, bool) {
        let max = self.conversation.config.max_recipients;
        let (mut rcpt, mut data) = (Vec::new(), false);
        while !data {
            let taken =
                self.conversation
                    .take_line_if(|line| match Command::parse(line, smtputf8) {
                        Ok(Command::Rcpt { to }) if rcpt.len() < max => {
                            rcpt.push(to.to_string());
                            true
                        }
                        Ok(Command::Data) if !rcpt.is_empty() => {
                            data = true;
                            true
                        }
                        _ => false,
                    });
            if !taken {
                break;
            }
        }
        (rcpt, data)
    }

    fn ask_upstream(
        &mut self,
        command: UpstreamCommand,
        pending: impl IntoIterator<Item = Pending>,
    ) {
        self.conversation
            .wait_for(Wait::Upstream, Event::Upstream(command));
        self.pending.extend(pending);
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("upstream_gone", &self.upstream_gone)
            .finish_non_exhaustive()
    }
}

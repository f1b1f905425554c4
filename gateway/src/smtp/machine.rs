//! The machine serving one SMTP connection: the [`Session`] until a proxy login succeeds,
//! then the [`Relay`] it hands over to. The shell and the session tests hold one of these
//! and give each machine the events only it takes.

use std::time::Duration;

use time::OffsetDateTime;

use super::interface::{CommitFailure, Output};
use super::relay::Relay;
use super::session::Session;

pub enum Machine {
    Session(Session),
    Relay(Relay),
}

impl Machine {
    /// The session after a successful proxy login: the relay takes over.
    pub fn login_accepted(&mut self) {
        if let Machine::Session(session) = self {
            if let Some(relay) = session.login_accepted() {
                *self = Machine::Relay(relay);
            }
        }
    }

    pub fn session(&mut self) -> Option<&mut Session> {
        match self {
            Machine::Session(session) => Some(session),
            Machine::Relay(_) => None,
        }
    }

    pub fn relay(&mut self) -> Option<&mut Relay> {
        match self {
            Machine::Relay(relay) => Some(relay),
            Machine::Session(_) => None,
        }
    }

    /// The input buffer's whole allocation, stale bytes included (tests look for secrets).
    #[cfg(test)]
    pub(crate) fn input_storage(&self) -> &[u8] {
        match self {
            Machine::Session(session) => session.conversation.input.storage(),
            Machine::Relay(relay) => relay.conversation.input.storage(),
        }
    }

    /// The next thing for the shell to do.
    pub fn poll(&mut self) -> Option<Output> {
        match self {
            Machine::Session(session) => session.conversation.poll(),
            Machine::Relay(relay) => relay.conversation.poll(),
        }
    }

    pub fn receive(&mut self, bytes: &[u8], now: OffsetDateTime) {
        match self {
            Machine::Session(session) => session.receive(bytes, now),
            Machine::Relay(relay) => relay.receive(bytes, now),
        }
    }

    /// Whether input may carry credentials (only before the login), so the shell wipes
    /// its read buffer after handing bytes over.
    pub fn may_receive_credentials(&self) -> bool {
        match self {
            Machine::Session(session) => session.may_receive_credentials(),
            Machine::Relay(_) => false,
        }
    }

    /// The message's draft failed in the shell (the spool is full, a write failed): it
    /// cannot be stored, so the refusal goes out now and the connection closes rather than
    /// reading the rest of a message that would be thrown away.
    pub fn message_failed(&mut self, failure: CommitFailure) {
        match self {
            Machine::Session(session) => session.conversation.message_failed(failure),
            Machine::Relay(relay) => relay.conversation.message_failed(failure),
        }
    }

    /// The shell's timer for [`Machine::timeout`] fired: `421 4.4.2` and close.
    pub fn timed_out(&mut self) {
        match self {
            Machine::Session(session) => session.conversation.timed_out(),
            Machine::Relay(relay) => relay.conversation.timed_out(),
        }
    }

    /// The client went away (EOF, reset, failed TLS handshake).
    pub fn connection_lost(&mut self) {
        match self {
            Machine::Session(session) => session.conversation.connection_lost(),
            Machine::Relay(relay) => relay.conversation.connection_lost(),
        }
    }

    /// Graceful shutdown: close with `421 4.3.2` now if no transaction is open, otherwise
    /// as soon as the current one has its final reply.
    pub fn shutdown(&mut self) {
        match self {
            Machine::Session(session) => session.shutdown(),
            Machine::Relay(relay) => relay.shutdown(),
        }
    }

    /// How long the shell should wait for the client (or for its own work) in the
    /// current state before calling [`Machine::timed_out`]: the RFC 5321 timeout of the
    /// state, `preauth_timeout` before the client has engaged, and never past the end of
    /// the transaction's `transaction_timeout` (counted from the time given with the
    /// latest input).
    pub fn timeout(&self) -> Duration {
        match self {
            Machine::Session(session) => session.conversation.timeout(),
            Machine::Relay(relay) => relay.conversation.timeout(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Machine::Session(session) => session.conversation.is_closed(),
            Machine::Relay(relay) => relay.conversation.is_closed(),
        }
    }

    /// Whether the shell should read from the client now. While the machine waits for the
    /// shell (a lookup, the commit, a login, the upstream) it processes nothing, so
    /// reading on would only pile up input.
    pub fn wants_input(&self) -> bool {
        match self {
            Machine::Session(session) => session.conversation.wants_input(),
            Machine::Relay(relay) => relay.conversation.wants_input(),
        }
    }
}

//! The machine serving one SMTP connection: the [`Session`] until a proxy login succeeds,
//! then the [`Relay`] it hands over to. The shell and the session tests hold one of these
//! and give each machine the events only it takes.

use std::time::Instant;

use super::interface::{CommitFailure, Event};
use super::relay::Relay;
use super::session::Session;
use crate::net::Now;

pub enum Machine {
    Session(Session),
    Relay(Relay),
}

impl Machine {
    /// The session after a successful proxy login: the relay takes over.
    /// `upstream_pipelining`: the upstream offers PIPELINING.
    pub fn login_accepted(&mut self, upstream_pipelining: bool) {
        if let Machine::Session(session) = self {
            if let Some(relay) = session.login_accepted(upstream_pipelining) {
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

    /// The message's draft failed in the shell (the spool is full, a write failed): it
    /// cannot be stored, so the refusal goes out now and the connection closes rather than
    /// reading the rest of a message that would be thrown away.
    pub fn message_failed(&mut self, failure: CommitFailure) {
        match self {
            Machine::Session(session) => session.conversation.message_failed(failure),
            Machine::Relay(relay) => relay.conversation.message_failed(failure),
        }
    }
}

/// Both machines share one conversation, so each call goes to whichever serves now.
macro_rules! either {
    ($machine:expr, $conversation:ident => $call:expr) => {
        match $machine {
            Machine::Session(session) => {
                let $conversation = &session.conversation;
                $call
            }
            Machine::Relay(relay) => {
                let $conversation = &relay.conversation;
                $call
            }
        }
    };
    (mut $machine:expr, $conversation:ident => $call:expr) => {
        match $machine {
            Machine::Session(session) => {
                let $conversation = &mut session.conversation;
                $call
            }
            Machine::Relay(relay) => {
                let $conversation = &mut relay.conversation;
                $call
            }
        }
    };
}

impl crate::net::Machine for Machine {
    type Event = Event;

    /// Bytes from the client, with the time (the Received header of a message that starts
    /// now uses it).
    fn handle_input(&mut self, input: &[u8], now: Now) {
        match self {
            Machine::Session(session) => session.receive(input, now),
            Machine::Relay(relay) => relay.receive(input, now),
        }
    }

    fn poll_transmit(&mut self, _now: Instant, out: &mut Vec<u8>) {
        either!(mut self, conversation => conversation.poll_transmit(out));
    }

    fn poll_event(&mut self) -> Option<Event> {
        either!(mut self, conversation => conversation.poll_event())
    }

    /// The RFC 5321 timeout of the state after the latest input (`preauth_timeout` before
    /// the client has engaged), never past the end of the transaction's
    /// `transaction_timeout`.
    fn poll_timeout(&self) -> Option<Instant> {
        either!(self, conversation => conversation.deadline())
    }

    /// `421 4.4.2` and close, once the deadline has passed.
    fn handle_timeout(&mut self, now: Now) {
        either!(mut self, conversation => conversation.handle_timeout(now.instant));
    }

    /// The client went away (EOF, reset, failed TLS handshake).
    fn handle_connection_lost(&mut self) {
        either!(mut self, conversation => conversation.connection_lost());
    }

    /// Graceful shutdown: close with `421 4.3.2` now if no transaction is open, otherwise
    /// as soon as the current one has its final reply.
    fn handle_shutdown(&mut self) {
        match self {
            Machine::Session(session) => session.shutdown(),
            Machine::Relay(relay) => relay.shutdown(),
        }
    }

    /// While the machine waits for the shell (a lookup, the commit, a login, the upstream)
    /// it processes nothing, so reading on would only pile up input.
    fn wants_input(&self) -> bool {
        either!(self, conversation => conversation.wants_input())
    }

    fn is_closed(&self) -> bool {
        either!(self, conversation => conversation.is_closed())
    }

    /// Only before the login: AUTH and its SASL responses.
    fn may_receive_credentials(&self) -> bool {
        match self {
            Machine::Session(session) => session.may_receive_credentials(),
            Machine::Relay(_) => false,
        }
    }
}

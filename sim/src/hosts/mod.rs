//! The simulated machines: the gateway, the journal senders (SMTP clients), the archiver
//! (POP3 client), in proxy mode the upstream provider and the proxy clients (SMTP and POP3),
//! and in the guessing scenario attackers guessing the archiver's password.

pub mod archiver;
pub mod attacker;
mod conn;
pub mod gateway;
pub mod pop3_client;
pub mod proxy_client;
pub mod sender;
pub mod upstream;
pub mod upstream_pop3;

use std::cell::RefCell;
use std::rc::Rc;

use crate::invariants::Ledger;
use crate::trace::Trace;

/// What the clients and the driver share within one run (one thread, hence `Rc`).
#[derive(Default)]
pub struct Shared {
    pub trace: RefCell<Trace>,
    pub ledger: RefCell<Ledger>,
    /// Senders still working; the archiver's final drain waits for none.
    pub senders_left: std::cell::Cell<usize>,
    /// Set by the driver once every fault is healed.
    pub faults_over: std::cell::Cell<bool>,
}

impl Shared {
    /// Logs an event at the current simulated time.
    pub fn log(&self, actor: &str, what: impl Into<String>) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        self.trace.borrow_mut().push(at, actor, what);
    }
}

pub type SharedRef = Rc<Shared>;

/// How a client misbehaves on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    None,
    /// Drop the connection after about half the data.
    MidData,
    /// Drop it right after the final dot, before the reply.
    AfterDot,
}

impl Cut {
    /// This attempt's misbehaviour: none once the faults are over, else with `rate`, half
    /// of them in the data and half right after the dot.
    pub(crate) fn draw(rng: &mut rand::rngs::SmallRng, faults_over: bool, rate: f64) -> Self {
        use rand::Rng;
        if faults_over || !rng.random_bool(rate) {
            Cut::None
        } else if rng.random_bool(0.5) {
            Cut::MidData
        } else {
            Cut::AfterDot
        }
    }

    /// How the attempt shows in the trace.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Cut::None => "",
            Cut::MidData => " cut-mid-data",
            Cut::AfterDot => " cut-after-dot",
        }
    }
}

/// The gateway host for one connection: the only one, or in a cluster one at random, as an
/// MTA picks among equal MX records. Draws from `rng` only when there is a choice, so the
/// single-node scenarios' runs stay as they were.
pub(crate) fn pick<'a>(gateways: &'a [String], rng: &mut rand::rngs::SmallRng) -> &'a str {
    use rand::Rng;
    match gateways {
        [] => gateway::NAME,
        [only] => only,
        _ => &gateways[rng.random_range(0..gateways.len())],
    }
}

/// Puts a client's messages in the ledger as not yet sent.
pub(crate) fn register(shared: &Shared, messages: &[crate::scenario::MessagePlan], proxy: bool) {
    for message in messages {
        shared.ledger.borrow_mut().sent.insert(
            message.label.clone(),
            crate::invariants::Sent {
                label: message.label.clone(),
                body: message.body.clone(),
                rcpts: message.rcpts.clone(),
                delivery: crate::invariants::Delivery::NotSent,
                proxy,
                copies_allowed: 0,
            },
        );
    }
}

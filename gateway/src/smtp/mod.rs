//! SMTP: the server for journaled mail and proxy clients, and the client toward a proxy's
//! upstream. The sans-IO protocol cores ([`Session`], [`client::UpstreamSmtp`]) are driven
//! with bytes and events by a tokio shell and by the simulation.
//!
//! - [`command`]: typed commands and their parser.
//! - [`address`]: envelope paths (RFC 5321 §4.1.2, RFC 6531).
//! - [`data`]: the DATA/BDAT body decoder (dot-unstuffing, smuggling-proof end of data).
//! - [`reply`]: replies with enhanced status codes.
//! - [`error_map`]: the one mapping from refusals to reply codes.
//! - [`received`]: our Received trace header.
//! - [`interface`]: configuration and the values exchanged with the shell.
//! - `conversation`: what both server machines share (command lines, message bodies,
//!   replies, errors, timeouts).
//! - [`session`]: the server machine: the journal target, and the proxy login.
//! - [`relay`]: the machine a logged-in proxy client is handed over to: transactions go
//!   upstream. [`machine`]: whichever of the two serves a connection now.
//! - [`server`]: the tokio shell and accept loop, generic over listener and stream.
//! - [`client`]: the sans-IO SMTP client core toward the upstream (greeting, EHLO,
//!   STARTTLS or implicit TLS, AUTH PLAIN/LOGIN, one transaction at a time).
//! - [`upstream`]: the shell that drives [`client`] for a proxy session.

pub mod address;
pub mod client;
pub mod command;
mod conversation;
pub mod data;
pub mod error_map;
pub mod interface;
pub mod machine;
pub mod received;
pub mod relay;
pub mod reply;
pub mod server;
pub mod session;
pub mod upstream;

#[cfg(test)]
mod session_tests;

pub use crate::net::TlsMode;
pub use interface::{
    AbortReason, ClientInfo, CommitFailure, Envelope, Event, RecipientStatus, SessionConfig,
};
pub use machine::Machine;
pub use relay::Relay;
pub use reply::{EnhancedStatus, Reply};
pub use server::SmtpServer;
pub use session::Session;

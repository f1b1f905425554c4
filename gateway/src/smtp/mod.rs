//! SMTP server for journaled mail: a sans-IO protocol core ([`Session`]) that a tokio shell
//! and the simulation drive with bytes and events.
//!
//! - [`command`]: typed commands and their parser.
//! - [`address`]: envelope paths (RFC 5321 §4.1.2, RFC 6531).
//! - [`data`]: the DATA/BDAT body decoder (dot-unstuffing, smuggling-proof end of data).
//! - [`reply`]: replies with enhanced status codes.
//! - [`error_map`]: the one mapping from refusals to reply codes.
//! - [`received`]: our Received trace header.
//! - [`interface`]: configuration and the values exchanged with the shell.
//! - [`session`]: the state machine.
//! - [`server`]: the tokio shell and accept loop, generic over listener and stream.

pub mod address;
pub mod command;
pub mod data;
pub mod error_map;
pub mod interface;
pub mod received;
pub mod reply;
pub mod server;
pub mod session;

#[cfg(test)]
mod session_tests;

pub use crate::net::TlsMode;
pub use interface::{
    AbortReason, ClientInfo, CommitFailure, Envelope, Output, RecipientStatus, SessionConfig,
};
pub use reply::{EnhancedStatus, Reply};
pub use server::SmtpServer;
pub use session::Session;

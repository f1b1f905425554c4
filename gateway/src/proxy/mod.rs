//! Proxy mode: a mail client logs into the gateway as `remote_user%target_server%mailbox_id`,
//! the gateway logs into the provider's server (the "upstream") with the client's
//! credentials, always over TLS, relays the session and keeps an encrypted copy of every
//! message in the mailbox.
//!
//! This folder holds what both protocols' proxies share; each protocol's folder holds its
//! own client core, relay and upstream shell, and imports from here (never the reverse):
//! - [`crate::smtp::client`]: the sans-IO SMTP client core toward the upstream (greeting,
//!   EHLO, STARTTLS or implicit TLS, AUTH PLAIN/LOGIN, one transaction at a time);
//!   [`crate::smtp::upstream`]: its shell, driven by the SMTP server session after AUTH.
//! - [`crate::pop3::client`]: the sans-IO POP3 client core toward the upstream (CAPA, STLS
//!   or implicit TLS, AUTH PLAIN or USER/PASS, relayed commands, streaming un-stuffing);
//!   [`crate::pop3::relay`]: the sans-IO POP3 proxy after login (client commands in,
//!   requests and store actions out); [`crate::pop3::upstream`]: its shell, with the copies
//!   and the one-copy rule.
//!
//! Shared here:
//! - [`login`]: parsing `remote_user%target_server%mailbox_id`.
//! - [`address`]: which upstream addresses may be connected to (globally reachable only,
//!   unless `[proxy] allow_private_networks`).
//! - [`connect`]: the [`Connector`] (tokio TCP, or turmoil in the simulation) and TLS with
//!   certificate verification toward the upstream.
//! - [`throttle`]: failed proxy logins delayed and limited per client and remote account.
//!
//! The client's `250` for a sent message comes only after the copy is durable and the
//! upstream accepted it; a retrieved message's terminating `.` only after its copy is durable.

pub mod address;
pub mod connect;
pub mod login;
pub mod throttle;

pub use connect::{ConnectError, Connector, TcpConnector, UpstreamStream, Upstreams};
pub use login::{LoginError, ProxyLogin};

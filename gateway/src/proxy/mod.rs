//! Proxy mode: a mail client logs into the gateway as `remote_user%target_server%mailbox_id`,
//! the gateway logs into the provider's server (the "upstream") with the client's
//! credentials, always over TLS, relays the session and keeps an encrypted copy of every
//! message in the mailbox.
//!
//! - [`smtp_client`]: the sans-IO SMTP client core toward the upstream (greeting, EHLO,
//!   STARTTLS or implicit TLS, AUTH PLAIN/LOGIN, one transaction at a time).
//! - [`pop3_client`]: the sans-IO POP3 client core toward the upstream (CAPA, STLS or
//!   implicit TLS, AUTH PLAIN or USER/PASS, relayed commands, streaming un-stuffing).
//!
//! - [`login`]: parsing `remote_user%target_server%mailbox_id`.
//! - [`address`]: which upstream addresses may be connected to (globally reachable only,
//!   unless `[proxy] allow_private_networks`).
//! - [`connect`]: the [`Connector`] (tokio TCP, or turmoil in the simulation) and TLS with
//!   certificate verification toward the upstream.
//! - [`smtp_leg`]: the shell that drives [`smtp_client`] for the SMTP server session, which
//!   itself handles AUTH and proxy mode ([`crate::smtp::Session`]).
//! - [`pop3_session`]: the sans-IO POP3 proxy after login (client commands in, requests and
//!   store actions out); [`pop3_leg`]: its shell, with the copies and the one-copy rule.
//! - [`throttle`]: failed proxy logins delayed and limited per client and remote account.
//!
//! The client's `250` for a sent message comes only after the copy is durable and the
//! upstream accepted it; a retrieved message's terminating `.` only after its copy is durable.

pub mod address;
pub mod connect;
pub mod login;
pub mod pop3_client;
pub mod pop3_leg;
pub mod pop3_session;
pub mod smtp_client;
pub mod smtp_leg;
pub mod throttle;

pub use connect::{ConnectError, Connector, TcpConnector, UpstreamStream, Upstreams};
pub use login::{LoginError, ProxyLogin};

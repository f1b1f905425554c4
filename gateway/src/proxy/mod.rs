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
//! The proxy sessions and their shells come with the proxy issue; these cores are the parts
//! that talk to the provider.

pub mod connect;
pub mod login;
pub mod pop3_client;
pub mod pop3_leg;
pub mod pop3_session;
pub mod smtp_client;
pub mod smtp_leg;
pub mod trace;

pub use connect::{ConnectError, Connector, TcpConnector, UpstreamStream, Upstreams};
pub use login::{LoginError, ProxyLogin};

//! The Management API over HTTP: its routes (`routes`), authentication ([`auth`]), bounded
//! bodies (`body`), the health probes ([`health`]), and answers as the API's JSON envelope
//! with the headers every response carries ([`response`]).
//!
//! The listener that serves them, with the web console beside them on one port, sits above
//! both: [`crate::console_listener`].

pub mod auth;
mod body;
pub mod health;
pub mod response;
mod routes;

use std::net::IpAddr;
use std::time::Duration;

pub use body::BODY_LIMIT;
pub(crate) use body::{params as read_params, DEFAULT_BODY_TIMEOUT};
pub use routes::{client, not_found, router};

/// The address a request came from, as the connection saw it (IPv4-mapped IPv6 addresses
/// as plain IPv4, so `::ffff:127.0.0.1` is loopback). Put into each request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// How long a request's body may take to arrive (the console listener's `body_timeout`); put
/// into each request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub Duration);

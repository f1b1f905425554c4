//! The SMTP client toward the upstream, sans-IO: [`UpstreamSmtp`] is a plain state machine
//! fed upstream bytes, shell events and the proxy's requests; as a [`crate::net::Machine`] it
//! hands back the bytes to send (`poll_transmit`) and typed results (`poll_event`), and its
//! timer is a deadline counted from the command that left last. It reads no socket and no
//! clock.
//!
//! ## The conversation
//!
//! ```text
//! greeting 220 ─ EHLO ─┬─ (StartTls) STARTTLS advertised? ── no ──> Failed(NoTls)
//!                      │   STARTTLS ─ 220 ─ nothing buffered? ─ no ─> Failed(ResponseInjection)
//!                      │   Event::StartTls … tls_established() ─ EHLO
//!                      └─ (TLS active) AUTH PLAIN <initial response>          ─ 235 ─ Ready
//!                                   or AUTH LOGIN ─ 334 ─ user ─ 334 ─ pass ─ 235 ─ Ready
//! Ready ─ MAIL ─ RCPT × n ─ DATA ─ 354 ─ body … "." ─ 250 ─ Ready ─ … ─ QUIT ─ Closed
//!       └ (PIPELINING offered) MAIL + RCPT × n [+ DATA] in one write ─ their replies in turn
//! ```
//!
//! One command is in flight at a time, except a pipelined group
//! ([`UpstreamSmtp::pipeline`], RFC 2920): its MAIL, RCPTs and DATA leave together and
//! their replies may come together. Any other byte the upstream sends before our next
//! command is a protocol error; after the `220` to STARTTLS it is
//! [`UpstreamError::ResponseInjection`].
//!
//! ## TLS, and why the credentials never travel in plaintext
//!
//! There is no plaintext mode. With [`UpstreamTls::Implicit`] (port 465) the shell runs the
//! TLS handshake first and only then creates the core. With [`UpstreamTls::StartTls`]
//! (587, 25) the core sends only EHLO and STARTTLS until [`UpstreamSmtp::tls_established`];
//! a missing or refused STARTTLS ends the connection with [`UpstreamError::NoTls`]. AUTH is
//! written in one place, reachable only once TLS is active. The password is never printed
//! by `Debug` ([`Credentials`]), and the AUTH exchange is only ever transmitted, never part
//! of an [`Event`].
//!
//! ## The shell loop
//!
//! ```text
//! let mut driver = Driver::new(connect(server).await?, READ_BUFFER, COMMAND_TIMEOUT);
//! let mut smtp = UpstreamSmtp::new(config, driver.now().instant)?;
//! loop {
//!     match driver.next_event(&mut smtp).await {            // writes, reads, the deadline
//!         Next::Event(Event::StartTls) => {
//!             driver.flush(&mut smtp).await?;                 // STARTTLS itself first
//!             tls_connect(driver.stream_mut(), server).await?; // verifies the certificate
//!             smtp.tls_established();
//!         }
//!         Next::Event(Event::Ready { extensions }) => proxy.upstream_ready(extensions),
//!         Next::Event(Event::DataReady) => for chunk in body {
//!             smtp.data_chunk(&chunk)?;
//!             driver.flush(&mut smtp).await?;
//!         },
//!         Next::Event(Event::DataAccepted(reply) | Event::DataRejected(reply)) => proxy.relay(reply),
//!         Next::Event(Event::Failed(error)) => proxy.upstream_failed(error),
//!         Next::Event(Event::Closed) | Next::Closed => return Ok(()),
//!         Next::Event(other) => proxy.handle(other),
//!     }
//! }
//! ```
//!
//! - [`config`]: [`UpstreamConfig`], [`UpstreamTls`], [`Credentials`], [`AuthPreference`].
//! - [`reply_reader`]: bounded reply framing into [`crate::smtp::Reply`] values, so the
//!   proxy can relay the upstream's code, enhanced status and text.
//! - [`extensions`]: the EHLO keywords.
//! - `upstream_smtp`: the state machine.

pub mod config;
pub mod extensions;
pub mod reply_reader;
mod upstream_smtp;

#[cfg(test)]
mod tests;

pub use config::{
    AuthMechanism, AuthPreference, ConfigError, Credentials, UpstreamConfig, UpstreamTls,
};
pub use extensions::{Extension, Extensions};
pub use reply_reader::{ReplyError, ReplyReader, MAX_REPLY_LINE, MAX_REPLY_LINES};
pub use upstream_smtp::{
    Event, UpstreamError, UpstreamSmtp, UsageError, COMMAND_TIMEOUT, DATA_BLOCK_TIMEOUT,
    DATA_INITIATION_TIMEOUT, DATA_TERMINATION_TIMEOUT, MAX_ENVELOPE_FIELD,
};

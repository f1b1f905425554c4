//! The SMTP client toward the upstream, sans-IO: [`UpstreamSmtp`] is a plain state machine
//! fed upstream bytes, shell events and the proxy's requests; it hands back bytes to send
//! and typed results through [`UpstreamSmtp::poll`]. It reads no socket and no clock.
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
//! ```
//!
//! One command is in flight at a time (no PIPELINING toward the upstream), so any byte the
//! upstream sends before our next command is a protocol error; after the `220` to STARTTLS
//! it is [`UpstreamError::ResponseInjection`].
//!
//! ## TLS, and why the credentials never travel in plaintext
//!
//! There is no plaintext mode. With [`UpstreamTls::Implicit`] (port 465) the shell runs the
//! TLS handshake first and only then creates the core. With [`UpstreamTls::StartTls`]
//! (587, 25) the core sends only EHLO and STARTTLS until [`UpstreamSmtp::tls_established`];
//! a missing or refused STARTTLS ends the connection with [`UpstreamError::NoTls`]. AUTH is
//! written in one place, reachable only once TLS is active. The password is never printed
//! by `Debug` ([`Credentials`], and [`Event::Send`] shows only its length).
//!
//! ## The shell loop
//!
//! ```text
//! let mut conn = connect(server).await?;
//! if tls == UpstreamTls::Implicit { conn = tls_connect(conn, server).await? }
//! let mut smtp = UpstreamSmtp::new(config)?;
//! loop {
//!     while let Some(output) = smtp.poll() {
//!         match output {
//!             Event::Send(bytes) => conn.write_all(&bytes).await?,
//!             Event::StartTls => {
//!                 // No plaintext read may be buffered across this point.
//!                 match tls_connect(conn, server).await {       // verifies the certificate
//!                     Ok(tls) => { conn = tls; smtp.tls_established() }
//!                     Err(_) => smtp.connection_lost(),
//!                 }
//!             }
//!             Event::Ready { extensions } => proxy.upstream_ready(extensions),
//!             Event::RcptResult { index, reply } => proxy.rcpt(index, reply),
//!             Event::DataReady => for chunk in body { smtp.data_chunk(&chunk)?; /* drain poll */ }
//!                                  smtp.data_end()?,
//!             Event::DataAccepted(reply) | Event::DataRejected(reply) => proxy.relay(reply),
//!             Event::MailRejected(reply) => proxy.relay(reply),
//!             Event::NoRecipientAccepted | Event::ResetDone => proxy.idle(),
//!             Event::Failed(error) => proxy.upstream_failed(error),
//!             Event::Closed => return Ok(()),
//!         }
//!     }
//!     let wait = smtp.timeout().unwrap_or(PROXY_IDLE_TIMEOUT);
//!     tokio::select! {
//!         read = conn.read(&mut buf) => match read {
//!             Ok(0) | Err(_) => smtp.connection_lost(),
//!             Ok(n) => smtp.receive(&buf[..n]),
//!         },
//!         _ = sleep(wait) => smtp.timed_out(),
//!         request = proxy.next_request() => { /* send_envelope, reset, quit */ }
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

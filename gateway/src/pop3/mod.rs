//! The POP3 server protocol core, sans-IO: how an archiver picks up mail over POP3S.
//!
//! An archiver logs into a gateway mailbox with the mailbox password, downloads every
//! message, deletes it and quits (RFC 1939, with RFC 2449 CAPA and response codes, RFC 2595
//! STLS, RFC 5034 SASL PLAIN, RFC 3206 `SYS/*` and `AUTH` codes). [`Session`] is a plain
//! state machine fed bytes and events; it returns bytes and [`Action`]s. It reads no socket,
//! no clock and no store, and never holds a mailbox key, so a tokio shell and a simulation
//! drive the same code.
//!
//! - [`command`]: the typed command parser.
//! - [`response`]: `+OK` / `-ERR [CODE]` lines and multi-line responses.
//! - [`error_map`]: every failure and refusal mapped to its reply, in one place.
//! - `line`, `session`: bounded line framing, the state machine (SASL PLAIN is
//!   [`crate::wire::sasl`]).
//! - [`server`]: the tokio shell. Logins, the maildrop lock and message access are the
//!   service's ([`crate::service::Pickup`]).
//!
//! ## The shell loop
//!
//! The session is a [`crate::net::Machine`]; a [`crate::net::Driver`] owns the socket and
//! its buffers, writes the replies and runs the timer, and hands the shell each [`Action`]:
//!
//! ```text
//! let mut driver = Driver::new(stream, READ_BUFFER, stall).with_shutdown(shutdown)
//!     .with_observer(|replies| metrics.count_pop3_replies(replies));
//! let mut session = Session::new(SessionConfig::new(host, tls, tls_available), driver.now().instant);
//! let mut maildrop = None; // the unsealed key and the lock live here, never in the session
//! loop {
//!     // The takeover: a new login may end the wait while the session waits for a command.
//!     match driver.next_event_or(&mut session, &mut takeover(&maildrop)).await {
//!         Next::Event(Action::StartTls) => {
//!             driver.flush(&mut session).await?;             // the +OK, in plaintext
//!             driver.stream_mut().upgrade(acceptor).await?;  // on failure: drop the connection
//!             session.tls_established(driver.stream().tls_active()?);
//!         }
//!         Next::Event(Action::Authenticate { mailbox, password }) => {
//!             // throttle, delay, unseal, lock, list: all in the service
//!             let result = pickup.open_maildrop(peer, mailbox, password).await.map(|m| {
//!                 let listing = Listing::of(&m);
//!                 maildrop = Some(m);
//!                 listing
//!             });
//!             session.auth_result(result.map_err(AuthFailure::from));
//!         }
//!         Next::Event(Action::RejectLogin) => {
//!             let refused = pickup.refuse(peer).await; // same policy as a wrong password
//!             session.auth_result(Err(AuthFailure::from(refused)));
//!         }
//!         Next::Event(Action::StreamMessage { seq, .. }) => {
//!             match pickup.open_message(&maildrop, seq).await {
//!                 Err(e) => session.message_end(Err(StreamFailure::from_service_error(&e))),
//!                 Ok(mut reader) => {
//!                     let mut end = Ok(());
//!                     while let Some(chunk) = reader.next_chunk() {
//!                         let chunk = match chunk { Ok(c) => c, Err(e) => {
//!                             end = Err(StreamFailure::from_service_error(&e)); break } };
//!                         let feed = session.message_data(&chunk);
//!                         driver.collect_unobserved(&mut session); // message lines: not replies
//!                         if driver.queued() >= FLUSH_THRESHOLD { driver.flush(&mut session).await? }
//!                         if feed == Feed::Enough { break }
//!                     }
//!                     session.message_end(end);
//!                 }
//!             }
//!         }
//!         Next::Event(Action::Commit { delete }) => {
//!             let result = gateway.delete_messages(&maildrop, &delete).await;
//!             session.commit_result(result.map_err(|e| CommitFailure::from_service_error(&e)));
//!         }
//!         Next::Event(Action::ProxyLogin { .. }) => { /* see `server`: the relay takes over */ }
//!         Next::Event(Action::Close) => {
//!             driver.flush(&mut session).await;
//!             return Ok(()); // drops key and lock
//!         }
//!         Next::Interrupted => session.taken_over(),
//!         Next::Closed => return Ok(()),
//!     }
//! }
//! ```
//!
//! The session writes nothing after an action that waits for its answer until it has it,
//! and a message's `+OK` goes out with its first bytes, so the one byte buffer keeps every
//! reply in order. `Action::Close` is emitted exactly once on every path and means "release
//! everything": there is no separate release action.

pub mod client;
pub mod command;
pub mod error_map;
pub(crate) mod line;
pub mod relay;
pub mod response;
pub mod server;
mod session;
mod timer;
pub mod upstream;

#[cfg(test)]
mod tests;

pub use error_map::{AuthFailure, CommitFailure, StreamFailure};
pub use line::{MAX_AUTH_LINE, MAX_COMMAND_LINE};
pub use server::{Pop3Server, Pop3Settings};
pub use session::{
    Action, Feed, Listing, MessageInfo, Session, SessionConfig, DEFAULT_PREAUTH_TIMEOUT,
    MAX_ERRORS, MAX_FAILED_LOGINS, MIN_IDLE_TIMEOUT, PIPELINE_LIMIT,
};

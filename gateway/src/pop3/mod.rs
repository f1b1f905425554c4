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
//! ```text
//! let mut session = Session::new(SessionConfig::new(host, stream.tls_active(), tls_available));
//! let mut maildrop = None; // the unsealed key and the lock live here, never in the session
//! loop {
//!     while let Some(output) = session.poll() {
//!         match output {
//!             Output::Send(bytes) => conn.write_all(&bytes).await?,
//!             Output::Action(Action::StartTls) => {
//!                 conn = tls_accept(conn).await?;       // on failure: just drop the connection
//!                 session.tls_established(conn.tls_active()?);
//!             }
//!             Output::Action(Action::Authenticate { mailbox, password }) => {
//!                 // throttle, delay, unseal, lock, list: all in the service
//!                 let result = pickup.open_maildrop(peer, mailbox, password).await.map(|m| {
//!                     let listing = Listing::of(&m);
//!                     maildrop = Some(m);
//!                     listing
//!                 });
//!                 session.auth_result(result.map_err(AuthFailure::from));
//!             }
//!             Output::Action(Action::RejectLogin) => {
//!                 let refused = pickup.refuse(peer).await; // same policy as a wrong password
//!                 session.auth_result(Err(AuthFailure::from(refused)));
//!             }
//!             Output::Action(Action::StreamMessage { seq, .. }) => {
//!                 match pickup.open_message(&mut maildrop, seq).await {
//!                     Err(e) => session.message_end(Err(StreamFailure::from_service_error(&e))),
//!                     Ok(mut reader) => {
//!                         let mut end = Ok(());
//!                         while let Some(chunk) = reader.next_chunk() {
//!                             let chunk = match chunk { Ok(c) => c, Err(e) => {
//!                                 end = Err(StreamFailure::from_service_error(&e)); break } };
//!                             let feed = session.message_data(&chunk);
//!                             while let Some(Output::Send(b)) = session.poll() { conn.write_all(&b).await? }
//!                             if feed == Feed::Enough { break }
//!                         }
//!                         session.message_end(end);
//!                     }
//!                 }
//!             }
//!             Output::Action(Action::Commit { delete }) => {
//!                 let result = gateway.delete_messages(&maildrop, &delete).await;
//!                 session.commit_result(result.map_err(|e| CommitFailure::from_service_error(&e)));
//!             }
//!             Output::Action(Action::Close) => return Ok(()), // drops key and lock
//!         }
//!     }
//!     tokio::select! {
//!         read = conn.read(&mut buf), if session.wants_input() => match read {
//!             Ok(0) | Err(_) => session.connection_lost(),
//!             Ok(n) => session.receive(&buf[..n]),
//!         },
//!         _ = sleep(session.timeout()) => session.timed_out(),
//!         _ = shutdown.changed() => session.shutdown(),
//!     }
//! }
//! ```
//!
//! While streaming, `poll` yields only `Send`s, so draining it between chunks keeps memory at
//! about one chunk. `Action::Close` is emitted exactly once on every path and means "release
//! everything": there is no separate release action.

pub mod client;
pub mod command;
pub mod error_map;
pub(crate) mod line;
pub mod relay;
pub mod response;
pub mod server;
mod session;
pub mod upstream;

#[cfg(test)]
mod tests;

pub use error_map::{AuthFailure, CommitFailure, StreamFailure};
pub use line::{MAX_AUTH_LINE, MAX_COMMAND_LINE};
pub use server::{Pop3Server, Pop3Settings};
pub use session::{
    Action, Feed, Listing, MessageInfo, Output, Session, SessionConfig, DEFAULT_PREAUTH_TIMEOUT,
    MAX_ERRORS, MAX_FAILED_LOGINS, MIN_IDLE_TIMEOUT, PIPELINE_LIMIT,
};

//! The upstream POP3 client core, sans-IO: the gateway's side toward the provider in proxy
//! mode.
//!
//! A mail client logs into the gateway as `remote_user%target_server%mailbox_id`; the proxy
//! connects to `target_server` and drives an [`UpstreamPop3`] with the client's credentials.
//! The core always secures the connection (implicit TLS on 995, or STLS on 110; it never
//! sends credentials in plaintext and never falls back to plaintext), logs in with SASL
//! PLAIN when advertised (RFC 5034, with an initial response) or USER/PASS, then relays typed
//! [`Request`]s one at a time and hands back typed answers. Multi-line bodies arrive
//! un-stuffed in bounded pieces, so a RETR of any size passes through in bounded memory.
//! Like [`crate::pop3::Session`], it reads no socket and no clock.
//!
//! - [`response`]: the upstream's status lines, CAPA lists and UIDL entries, typed, and
//!   their line limit (framed by [`crate::wire::line`]; bodies are un-stuffed by
//!   [`crate::wire::undot`]).
//! - `upstream_pop3`: the state machine.
//!
//! ## The shell loop
//!
//! The core is a [`crate::net::Machine`]: a [`crate::net::Driver`] writes its commands,
//! reads the upstream and runs the response timer ([`RESPONSE_TIMEOUT`] while an answer is
//! awaited), and hands the shell each [`Output`]:
//!
//! ```text
//! // Implicit: connect to 995 and finish the TLS handshake first; Stls: plain TCP to 110.
//! let mut upstream = Driver::new(stream, READ_BUFFER, RESPONSE_TIMEOUT);
//! let mut core = UpstreamPop3::new(UpstreamConfig::new(tls, user, pw), upstream.now().instant);
//! loop {
//!     match upstream.next_event(&mut core).await {
//!         Next::Event(Output::StartTls) => {
//!             upstream.flush(&mut core).await;
//!             tls_connect(upstream.stream_mut(), target_server).await?; // verify the certificate
//!             core.tls_established();
//!         }
//!         Next::Event(Output::LoggedIn { capabilities }) => { /* answer the client's PASS/AUTH */ }
//!         Next::Event(Output::Response(r)) => { /* relay r to the client (r.write_to) */ }
//!         Next::Event(Output::UniqueId { message, uid }) => { /* dedup key; relay "+OK n uid" */ }
//!         Next::Event(Output::MultiLineStart(r)) => { /* relay r; RETR: open a MessageDraft */ }
//!         Next::Event(Output::MultiLineData(d)) => { /* re-stuff to the client; RETR: draft.write(d) */ }
//!         Next::Event(Output::UidlListing(entries)) => { /* relay and remember the uids */ }
//!         Next::Event(Output::MultiLineEnd) => { /* relay "."; RETR: commit the draft, now complete */ }
//!         Next::Event(Output::Failed(e)) => { /* tell the client -ERR [SYS/TEMP] (or relay AuthRejected) */ }
//!         Next::Event(Output::Close) | Next::Closed | Next::Interrupted => return Ok(()),
//!     }
//!     // A client request, whenever one comes (the relay selects over both drivers):
//!     core.command(request)?;
//! }
//! ```
//!
//! ## Dedup by UIDL
//!
//! The gateway stores one encrypted copy of every message the client RETRieves, keyed by the
//! upstream's UIDL. Message numbers are stable for the whole session (DELE only marks), so
//! the proxy remembers `message → uid` from the [`Output::UidlListing`]s and
//! [`Output::UniqueId`]s it sees (up to a cap, so a huge listing cannot exhaust memory).
//! Before relaying `RETR n` (or `TOP n`, or `DELE n` of a message it has not kept) for which
//! it knows no uid, it first issues [`Request::Uidl`]`(Some(n))` itself (the answer is not
//! relayed), then `Retr(n)`.
//! If the uid is already stored it still relays the message but does not store it again. A
//! message counts as complete only at [`Output::MultiLineEnd`]: a [`Output::Failed`] in the
//! middle of a RETR means the draft is discarded.

pub mod response;
mod upstream_pop3;

#[cfg(test)]
mod tests;

pub use response::{Capabilities, Response, MAX_RESPONSE_LINE, MAX_UID_LEN};
pub use upstream_pop3::{
    Output, Request, RequestError, UpstreamConfig, UpstreamError, UpstreamPassword, UpstreamPop3,
    UpstreamTls, MAX_CAPABILITIES, MAX_DATA_PIECE, MAX_LISTING_BATCH, MAX_QUEUED_REQUESTS,
    RESPONSE_TIMEOUT,
};

//! What every accepted connection is known by in the logs: its id and its `session` span.

use std::net::SocketAddr;

/// A fresh session id: 16 random hex digits, on every log line of the connection (and in
/// SMTP's message ids).
pub fn session_id() -> String {
    let mut bytes = [0u8; 8];
    crate::random::fill_random_id(&mut bytes);
    data_encoding::HEXUPPER.encode(&bytes)
}

/// The span a connection runs in, so its id, listener and client are on all its lines; the
/// shell records `tls` after the handshake and `mailbox` after RCPT or login.
pub fn session_span(id: &str, listener: &str, peer: SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "session",
        id = %id,
        listener,
        client = %peer,
        tls = tracing::field::Empty,
        mailbox = tracing::field::Empty,
    )
}

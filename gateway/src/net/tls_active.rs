//! [`TlsActive`]: the proof a session needs before it accepts credentials. Here, beside
//! [`super::MaybeTls`], because the stream that ran the handshake is what makes one.

use tokio_rustls::rustls::{ProtocolVersion, ServerConnection};

/// Proof that this connection's TLS handshake completed, with what it negotiated. The SMTP
/// and POP3 sessions take AUTH, USER/PASS and proxy logins only while they hold one, and
/// only the shell that finished a handshake can make one ([`TlsActive::of`]), so
/// credentials cannot be accepted over plaintext by a flag set in the wrong place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsActive {
    description: String,
}

impl TlsActive {
    /// The proof for `conn`; `None` while its handshake is still running.
    pub fn of(conn: &ServerConnection) -> Option<Self> {
        if conn.is_handshaking() {
            return None;
        }
        describe_connection(conn).map(|description| Self { description })
    }

    /// Protocol and cipher, e.g. `TLSv1.3 cipher TLS13_AES_256_GCM_SHA384`, for the
    /// `Received:` header and the logs.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// For the sessions' own tests, which run without sockets.
    #[cfg(test)]
    pub(crate) fn assumed(description: &str) -> Self {
        Self {
            description: description.to_owned(),
        }
    }
}

/// Protocol and cipher of an established connection for the SMTP `Received:` header and
/// logs, e.g. `TLSv1.3 cipher TLS13_AES_256_GCM_SHA384`. `None` before the handshake is done.
pub fn describe_connection(conn: &ServerConnection) -> Option<String> {
    let version = match conn.protocol_version()? {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    };
    let suite = conn.negotiated_cipher_suite()?.suite();
    let suite = suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_owned);
    Some(format!("{version} cipher {suite}"))
}

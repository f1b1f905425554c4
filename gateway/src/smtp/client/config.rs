//! How an upstream connection is set up: our EHLO name, the TLS mode, the client's
//! credentials and which SASL mechanisms to try.

use crate::crypto::Secret;

/// How TLS reaches the upstream. There is no plaintext mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Implicit TLS (port 465, RFC 8314): the shell completes the TLS handshake BEFORE it
    /// creates the core, so the very first byte the core sees is already inside TLS.
    Implicit,
    /// STARTTLS (RFC 3207, ports 587 and 25): the core requires STARTTLS in the first EHLO
    /// reply, asks the shell for the handshake with [`Event::StartTls`], and sends nothing
    /// but EHLO and STARTTLS before [`UpstreamSmtp::tls_established`].
    ///
    /// [`Event::StartTls`]: super::Event::StartTls
    /// [`UpstreamSmtp::tls_established`]: super::UpstreamSmtp::tls_established
    StartTls,
}

/// A SASL mechanism the core can use toward the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMechanism {
    /// RFC 4616, sent with an initial response (RFC 4954 §4).
    Plain,
    /// The de-facto `LOGIN` mechanism: two `334` prompts, user then password.
    Login,
}

impl AuthMechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Login => "LOGIN",
        }
    }
}

/// Which mechanisms to try, in order; the first one the upstream advertises is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthPreference {
    /// PLAIN (one round trip) if offered, else LOGIN.
    #[default]
    PlainThenLogin,
    /// LOGIN if offered, else PLAIN (for servers whose PLAIN is broken).
    LoginThenPlain,
    PlainOnly,
    LoginOnly,
}

impl AuthPreference {
    pub fn order(self) -> &'static [AuthMechanism] {
        match self {
            Self::PlainThenLogin => &[AuthMechanism::Plain, AuthMechanism::Login],
            Self::LoginThenPlain => &[AuthMechanism::Login, AuthMechanism::Plain],
            Self::PlainOnly => &[AuthMechanism::Plain],
            Self::LoginOnly => &[AuthMechanism::Login],
        }
    }
}

/// The mail client's login at its provider.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret<String>,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: Secret::new(password),
        }
    }
}

/// Everything one upstream connection needs.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// The name we give in EHLO (our host name).
    pub ehlo_name: String,
    pub tls: UpstreamTls,
    pub credentials: Credentials,
    pub auth_preference: AuthPreference,
}

/// Why [`UpstreamSmtp::new`](super::UpstreamSmtp::new) refused a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the EHLO name must be non-empty printable ASCII without spaces")]
    EhloName,
    #[error("the user name must be non-empty and contain no NUL, CR or LF")]
    Username,
    #[error("the password must be non-empty and contain no NUL")]
    Password,
}

impl UpstreamConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let ehlo = &self.ehlo_name;
        if ehlo.is_empty() || ehlo.len() > 255 || !ehlo.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::EhloName);
        }
        let user = &self.credentials.username;
        // SASL PLAIN separates its fields with NUL; LOGIN sends each field on its own
        // (base64) line. Base64 keeps CR and LF off the wire, but a user name with them
        // is certainly not a real login.
        if user.is_empty() || user.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err(ConfigError::Username);
        }
        let password = self.credentials.password.expose();
        if password.is_empty() || password.bytes().any(|b| b == 0) {
            return Err(ConfigError::Password);
        }
        Ok(())
    }
}

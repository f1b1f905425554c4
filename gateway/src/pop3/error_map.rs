//! The one place that turns failures into POP3 replies.
//!
//! The shell reports what went wrong outside the protocol core with the small enums here
//! ([`AuthFailure`] from the service's `LoginRefused`; [`StreamFailure`] and
//! [`CommitFailure`] with a `from_service_error` each), and the session reports protocol refusals with [`Refusal`]. Every
//! `-ERR` text and response code the POP3 server can send is written below.

use super::command::ParseError;
use super::response::{Code, Reply};
use crate::service::{LoginRefused, ServiceError};

/// Why a login attempt failed, as the shell reports it to [`super::Session::auth_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Wrong password (or a login name that cannot be a mailbox).
    WrongCredentials,
    /// No such mailbox. Answered exactly like a wrong password.
    MailboxNotFound,
    /// Another session holds the maildrop lock.
    Locked,
    /// The shell's brute-force defence refuses further attempts for now. Ends the session.
    RateLimited,
    /// The store or key derivation failed; a later attempt may succeed.
    Temporary,
}

impl From<LoginRefused> for AuthFailure {
    fn from(refused: LoginRefused) -> Self {
        match refused {
            LoginRefused::WrongPassword => AuthFailure::WrongCredentials,
            LoginRefused::UnknownMailbox => AuthFailure::MailboxNotFound,
            LoginRefused::Locked => AuthFailure::Locked,
            LoginRefused::Throttled => AuthFailure::RateLimited,
            LoginRefused::Unavailable => AuthFailure::Temporary,
        }
    }
}

impl AuthFailure {
    /// Whether this counts towards the session's limit of failed logins.
    pub fn counts_as_failed_login(self) -> bool {
        matches!(
            self,
            AuthFailure::WrongCredentials | AuthFailure::MailboxNotFound
        )
    }

    /// Whether the session closes right after replying.
    pub fn closes_session(self) -> bool {
        self == AuthFailure::RateLimited
    }

    pub fn reply(self) -> Reply {
        match self {
            // One text for both, so a client cannot tell which mailboxes exist.
            AuthFailure::WrongCredentials | AuthFailure::MailboxNotFound => {
                Reply::err_code(Code::Auth, "invalid mailbox or password")
            }
            AuthFailure::Locked => {
                Reply::err_code(Code::InUse, "mailbox is in use by another session")
            }
            AuthFailure::RateLimited => {
                Reply::err_code(Code::SysTemp, "too many failed logins, try later")
            }
            AuthFailure::Temporary => {
                Reply::err_code(Code::SysTemp, "temporary failure, try later")
            }
        }
    }
}

/// Why a message could not be streamed, reported to [`super::Session::message_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFailure {
    /// The message is no longer in the store.
    Missing,
    /// The message cannot be decrypted or is corrupt; retrying will not help.
    Damaged,
    /// Reading failed for a reason that may pass.
    Temporary,
}

impl StreamFailure {
    /// Classifies an error from `Gateway::open_message` or `MessageReader::next_chunk`.
    pub fn from_service_error(error: &ServiceError) -> Self {
        match error {
            ServiceError::MessageNotFound(..) => StreamFailure::Missing,
            // A broken record or a missing chunk is as permanent as a failed decryption:
            // answered as temporary, the archiver would retry the message forever.
            e if e.is_damaged_message() => StreamFailure::Damaged,
            ServiceError::Crypto(_) => StreamFailure::Damaged,
            _ => StreamFailure::Temporary,
        }
    }

    /// The reply when the failure comes before the first byte of the message was sent.
    /// (Once a multi-line response has begun it cannot carry an error; the session closes.)
    pub fn reply(self) -> Reply {
        match self {
            StreamFailure::Missing => Reply::err_code(Code::SysPerm, "message no longer exists"),
            StreamFailure::Damaged => {
                Reply::err_code(Code::SysPerm, "message is damaged and cannot be read")
            }
            StreamFailure::Temporary => {
                Reply::err_code(Code::SysTemp, "message temporarily unavailable, try later")
            }
        }
    }
}

/// Why the UPDATE-state deletion did not become durable, reported to
/// [`super::Session::commit_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFailure {
    Temporary,
    Permanent,
}

impl CommitFailure {
    /// Classifies an error from `Gateway::delete_messages`.
    pub fn from_service_error(error: &ServiceError) -> Self {
        if error.is_temporary() {
            CommitFailure::Temporary
        } else {
            CommitFailure::Permanent
        }
    }

    /// RFC 1939 §6: QUIT answers `-ERR` when some deleted messages were not removed.
    pub fn reply(self) -> Reply {
        let code = match self {
            CommitFailure::Temporary => Code::SysTemp,
            CommitFailure::Permanent => Code::SysPerm,
        };
        Reply::err_code(code, "some deleted messages not removed")
    }
}

/// Protocol-level refusals the session itself decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Parse(ParseError),
    /// A new login took the maildrop over from this idle session.
    TakenOver,
    LineTooLong,
    /// USER, PASS or AUTH before TLS (RFC 2595 §4 lets a server require it).
    TlsRequired,
    TlsAlreadyActive,
    TlsUnavailable,
    PassWithoutUser,
    UnsupportedMechanism,
    MalformedSaslResponse,
    AuthCancelled,
    NotLoggedIn,
    AlreadyLoggedIn,
    NoSuchMessage,
    MessageDeleted,
    ShuttingDown,
    Autologout,
}

impl Refusal {
    /// Whether this counts towards the session's limit of protocol errors.
    pub fn is_client_error(self) -> bool {
        !matches!(
            self,
            Refusal::AuthCancelled
                | Refusal::NoSuchMessage
                | Refusal::MessageDeleted
                | Refusal::ShuttingDown
                | Refusal::Autologout
                | Refusal::TakenOver
        )
    }

    pub fn reply(self) -> Reply {
        match self {
            Refusal::Parse(e) => Reply::err(match e {
                ParseError::Empty => "empty command",
                ParseError::InvalidCharacters => "invalid characters in command",
                ParseError::UnknownCommand => "unknown command",
                ParseError::MissingArgument => "missing argument",
                ParseError::TooManyArguments => "too many arguments",
                ParseError::InvalidNumber => "invalid number",
                ParseError::InvalidMechanism => "invalid SASL mechanism name",
            }),
            Refusal::LineTooLong => Reply::err("line too long"),
            Refusal::TakenOver => Reply::err_code(
                Code::InUse,
                "session ended: a new login took the maildrop over",
            ),
            Refusal::TlsRequired => {
                Reply::err_code(Code::Auth, "TLS required: use STLS or port 995")
            }
            Refusal::TlsAlreadyActive => Reply::err("TLS already active"),
            Refusal::TlsUnavailable => Reply::err("STLS not available"),
            Refusal::PassWithoutUser => Reply::err("USER first"),
            Refusal::UnsupportedMechanism => Reply::err("unsupported SASL mechanism, use PLAIN"),
            Refusal::MalformedSaslResponse => Reply::err("malformed SASL PLAIN response"),
            Refusal::AuthCancelled => Reply::err("authentication cancelled"),
            Refusal::NotLoggedIn => Reply::err("command only valid after login"),
            Refusal::AlreadyLoggedIn => Reply::err("already logged in"),
            Refusal::NoSuchMessage => Reply::err("no such message"),
            Refusal::MessageDeleted => Reply::err("message already deleted"),
            Refusal::ShuttingDown => Reply::err_code(Code::SysTemp, "server shutting down"),
            Refusal::Autologout => Reply::err("autologout: idle too long"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailboxId;
    use crate::store::StoreError;

    fn line(reply: Reply) -> String {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn wrong_password_and_unknown_mailbox_look_the_same() {
        assert_eq!(
            AuthFailure::WrongCredentials.reply(),
            AuthFailure::MailboxNotFound.reply()
        );
        assert_eq!(
            line(AuthFailure::WrongCredentials.reply()),
            "-ERR [AUTH] invalid mailbox or password\r\n"
        );
    }

    #[test]
    fn codes() {
        assert_eq!(
            line(AuthFailure::Locked.reply()),
            "-ERR [IN-USE] mailbox is in use by another session\r\n"
        );
        assert_eq!(
            line(AuthFailure::RateLimited.reply()),
            "-ERR [SYS/TEMP] too many failed logins, try later\r\n"
        );
        assert_eq!(
            line(CommitFailure::Temporary.reply()),
            "-ERR [SYS/TEMP] some deleted messages not removed\r\n"
        );
        assert_eq!(
            line(Refusal::TlsRequired.reply()),
            "-ERR [AUTH] TLS required: use STLS or port 995\r\n"
        );
    }

    #[test]
    fn service_errors_are_classified() {
        let id = MailboxId::generate();
        for (refused, failure) in [
            (LoginRefused::WrongPassword, AuthFailure::WrongCredentials),
            (LoginRefused::UnknownMailbox, AuthFailure::MailboxNotFound),
            (LoginRefused::Locked, AuthFailure::Locked),
            (LoginRefused::Throttled, AuthFailure::RateLimited),
            (LoginRefused::Unavailable, AuthFailure::Temporary),
        ] {
            assert_eq!(AuthFailure::from(refused), failure);
        }
        let io = ServiceError::Store(StoreError::Io("disk".into()));
        assert_eq!(
            StreamFailure::from_service_error(&ServiceError::MessageNotFound(id, 3)),
            StreamFailure::Missing
        );
        assert_eq!(
            StreamFailure::from_service_error(&io),
            StreamFailure::Temporary
        );
        let corrupt = ServiceError::Store(StoreError::Corrupt("message 1 lacks chunk 0".into()));
        assert_eq!(
            StreamFailure::from_service_error(&corrupt),
            StreamFailure::Damaged
        );
        assert_eq!(
            line(StreamFailure::from_service_error(&corrupt).reply()),
            "-ERR [SYS/PERM] message is damaged and cannot be read\r\n"
        );
        assert_eq!(
            CommitFailure::from_service_error(&io),
            CommitFailure::Temporary
        );
        assert_eq!(
            CommitFailure::from_service_error(&ServiceError::InvalidInput {
                field: "seq",
                problem: "x".into()
            }),
            CommitFailure::Permanent
        );
    }
}

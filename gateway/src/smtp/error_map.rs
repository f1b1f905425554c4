//! The one place where refusals become replies: every negative code the session sends is
//! chosen here (RFC 5321 §4.2.2/§4.2.3 reply codes, RFC 3463 enhanced status codes).

use super::command::CommandError;
use super::data::BodyViolation;
use super::interface::{AuthFailure, CommitFailure};
use super::reply::{EnhancedStatus, Reply};
use crate::smtp::address::AddressError;

/// Every reason the session says no.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The command line did not parse.
    Command(CommandError),
    /// A command line longer than the session's limit.
    CommandLineTooLong,
    /// A command line ended by LF without CR.
    CommandBareLf,
    /// Command out of sequence; the text says what is missing.
    BadSequence(&'static str),
    /// A known command this gateway does not offer (AUTH, EXPN, STARTTLS without TLS).
    NotImplemented(&'static str),
    /// The client is not on the shell's access list (after the 554 greeting).
    AccessDenied,
    /// MAIL before STARTTLS while TLS is required.
    TlsRequired,
    /// Declared or actual size over the limit.
    MessageTooBig,
    /// DATA/BDAT with MAIL but no accepted recipient (RFC 5321 §3.3 allows 554 here).
    NoValidRecipients,
    /// RCPT for our domain that is no mailbox here (including `<Postmaster>`).
    UnknownRecipient,
    /// RCPT for a suspended mailbox: temporary, so the journal is retried.
    RecipientSuspended,
    /// The mailbox could not be looked up (storage error): temporary.
    RecipientLookupFailed,
    /// RCPT for another domain or an address literal.
    RelayDenied,
    /// More recipients than allowed in one transaction.
    TooManyRecipients,
    /// The body broke a rule.
    Body(BodyViolation),
    /// The shell could not commit the message.
    Commit(CommitFailure),
    /// Too many protocol errors; closes the connection.
    TooManyErrors,
    /// The shell reported a timeout; closes the connection.
    Timeout,
    /// A transaction outlived `transaction_timeout`; closes the connection.
    TransactionTimeout,
    /// Follows the refusal of input past a limit (a command line, a message) that the
    /// session will not read on to its end; closes the connection.
    InputLimit,
    /// Graceful shutdown; closes the connection.
    ShuttingDown,
    /// AUTH before TLS (RFC 4954 §4: 538).
    AuthNeedsTls,
    /// AUTH with a mechanism other than PLAIN and LOGIN.
    UnsupportedMechanism,
    /// The client answered a `334` with `*`.
    AuthCancelled,
    /// The client's SASL response is not base64 or not a PLAIN message.
    AuthMalformed,
    /// A proxy login failed.
    Auth(AuthFailure),
    /// The upstream's own reply, passed on unchanged (proxy mode).
    Relayed(Reply),
    /// The upstream connection is gone (proxy mode); closes the connection.
    UpstreamLost,
}

const fn status(class: u8, subject: u16, detail: u16) -> EnhancedStatus {
    EnhancedStatus::new(class, subject, detail)
}

impl From<&crate::service::ServiceError> for CommitFailure {
    /// How a failed commit reads to an SMTP client: the one mapping from service errors.
    fn from(e: &crate::service::ServiceError) -> Self {
        use crate::service::ServiceError;
        if e.is_storage_full() {
            return CommitFailure::StorageFull;
        }
        match e {
            ServiceError::MailboxSuspended(_) => CommitFailure::MailboxSuspended,
            e if e.is_temporary() => CommitFailure::Temporary,
            _ => CommitFailure::Permanent,
        }
    }
}

impl Refusal {
    /// The reply for this refusal. `host` is our host name, which RFC 5321 §4.2 puts first
    /// in `421` replies.
    pub fn reply(&self, host: &str) -> Reply {
        match self {
            Refusal::Command(error) => command_reply(error, host),
            // RFC 5321 §4.5.3.1.10 suggests "500 Line too long".
            Refusal::CommandLineTooLong => Reply::new(500, status(5, 5, 2), "line too long"),
            Refusal::CommandBareLf => {
                Reply::new(500, status(5, 5, 2), "command lines must end with CRLF")
            }
            Refusal::BadSequence(what) => Reply::new(503, status(5, 5, 1), *what),
            Refusal::NotImplemented(what) => Reply::new(502, status(5, 5, 1), *what),
            Refusal::AccessDenied => Reply::new(503, status(5, 7, 1), "access denied, send QUIT"),
            // RFC 3207 §4.
            Refusal::TlsRequired => {
                Reply::new(530, status(5, 7, 0), "must issue a STARTTLS command first")
            }
            // RFC 1870 §6.1 and RFC 3463 X.3.4.
            Refusal::MessageTooBig => {
                Reply::new(552, status(5, 3, 4), "message size exceeds fixed limit")
            }
            Refusal::NoValidRecipients => Reply::new(554, status(5, 5, 1), "no valid recipients"),
            Refusal::UnknownRecipient => Reply::new(550, status(5, 1, 1), "no such mailbox here"),
            // 450 so the sender keeps the journal and retries once the mailbox is resumed.
            Refusal::RecipientSuspended => {
                Reply::new(450, status(4, 2, 1), "mailbox suspended, try again later")
            }
            Refusal::RecipientLookupFailed => Reply::new(
                451,
                status(4, 3, 0),
                "temporary failure looking up the mailbox, try again later",
            ),
            Refusal::RelayDenied => Reply::new(550, status(5, 7, 1), "relay access denied"),
            // RFC 5321 §4.5.3.1.10 and RFC 3463 X.5.3.
            Refusal::TooManyRecipients => Reply::new(452, status(4, 5, 3), "too many recipients"),
            // 554 "transaction failed" with X.6.0 (media error): the content, not the
            // command, is wrong. Strict like Postfix's smtpd_forbid_bare_newline, whose
            // message this mirrors.
            Refusal::Body(BodyViolation::BareLf) => Reply::new(
                554,
                status(5, 6, 0),
                "bare LF not allowed, lines must end with CRLF",
            ),
            Refusal::Body(BodyViolation::BareCr) => Reply::new(
                554,
                status(5, 6, 0),
                "bare CR not allowed, lines must end with CRLF",
            ),
            // RFC 5321 §4.5.3.1.10 names 500 for too-long text lines; X.6.0 marks content.
            Refusal::Body(BodyViolation::LineTooLong) => Reply::new(
                500,
                status(5, 6, 0),
                "line longer than 1000 octets in message",
            ),
            Refusal::Commit(CommitFailure::Temporary) => Reply::new(
                451,
                status(4, 3, 0),
                "temporary failure storing message, try again later",
            ),
            // RFC 5321 452 "insufficient system storage" and RFC 3463 X.3.1 "mail system full".
            Refusal::Commit(CommitFailure::StorageFull) => {
                Reply::new(452, status(4, 3, 1), "insufficient system storage")
            }
            Refusal::Commit(CommitFailure::MailboxSuspended) => {
                Reply::new(450, status(4, 2, 1), "mailbox suspended, try again later")
            }
            Refusal::Commit(CommitFailure::Permanent) => {
                Reply::new(554, status(5, 3, 0), "message could not be stored")
            }
            Refusal::TooManyErrors => Reply::new(
                421,
                status(4, 7, 0),
                format!("{host} too many errors, closing connection"),
            ),
            // RFC 3463 X.4.2 "bad connection".
            Refusal::Timeout => Reply::new(
                421,
                status(4, 4, 2),
                format!("{host} timeout, closing connection"),
            ),
            // RFC 3463 X.3.2 "system not accepting network messages".
            Refusal::TransactionTimeout => Reply::new(
                421,
                status(4, 4, 2),
                format!("{host} transaction took too long, closing connection"),
            ),
            Refusal::InputLimit => Reply::new(
                421,
                status(4, 7, 0),
                format!("{host} input over the limit, closing connection"),
            ),
            Refusal::ShuttingDown => Reply::new(
                421,
                status(4, 3, 2),
                format!("{host} shutting down, closing connection"),
            ),
            // RFC 4954 §6 and RFC 5248 for the codes of this block.
            Refusal::AuthNeedsTls => Reply::new(
                538,
                status(5, 7, 11),
                "encryption required: use STARTTLS (or port 465) before AUTH",
            ),
            Refusal::UnsupportedMechanism => Reply::new(
                504,
                status(5, 5, 4),
                "unrecognized authentication mechanism, use PLAIN or LOGIN",
            ),
            Refusal::AuthCancelled => Reply::new(501, status(5, 0, 0), "authentication cancelled"),
            Refusal::AuthMalformed => Reply::new(
                501,
                status(5, 5, 2),
                "cannot decode the authentication response",
            ),
            Refusal::Auth(failure) => auth_reply(failure),
            Refusal::Relayed(reply) => reply.clone(),
            Refusal::UpstreamLost => Reply::new(
                421,
                status(4, 4, 2),
                format!("{host} connection to the upstream server lost, closing connection"),
            ),
        }
    }

    /// Whether this refusal counts towards `max_errors`: protocol errors and refused
    /// recipients do (they are what probing and broken clients produce); temporary
    /// conditions and content rejections do not.
    pub fn counts_as_error(&self) -> bool {
        matches!(
            self,
            Refusal::Command(_)
                | Refusal::CommandLineTooLong
                | Refusal::CommandBareLf
                | Refusal::BadSequence(_)
                | Refusal::AccessDenied
                | Refusal::UnknownRecipient
                | Refusal::RelayDenied
                | Refusal::AuthMalformed
                | Refusal::Auth(
                    AuthFailure::InvalidLogin
                        | AuthFailure::UnknownMailbox
                        | AuthFailure::UpstreamRejected(_)
                        | AuthFailure::Throttled
                )
        )
    }
}

fn auth_reply(failure: &AuthFailure) -> Reply {
    match failure {
        AuthFailure::InvalidLogin => Reply::new(
            535,
            status(5, 7, 8),
            "authentication failed: log in as remote_user%target_server%mailbox_id",
        ),
        AuthFailure::UnknownMailbox => Reply::new(
            535,
            status(5, 7, 8),
            "authentication failed: no such mailbox on this gateway",
        ),
        // Temporary, so the client keeps the message and tries again later.
        AuthFailure::MailboxSuspended => {
            Reply::new(454, status(4, 7, 0), "mailbox suspended, try again later")
        }
        AuthFailure::Temporary => Reply::new(
            454,
            status(4, 7, 0),
            "temporary authentication failure, try again later",
        ),
        // The provider's words, under our code: its 4xx stays temporary, anything else is
        // "credentials invalid".
        AuthFailure::UpstreamRejected(reply) => {
            let text = format!("upstream server: {}", reply.lines().join(" "));
            if reply.code() / 100 == 4 {
                Reply::new(454, status(4, 7, 0), text)
            } else {
                Reply::new(535, status(5, 7, 8), text)
            }
        }
        AuthFailure::UpstreamUnavailable(why) => Reply::new(454, status(4, 7, 0), why.clone()),
        AuthFailure::Throttled => Reply::new(
            454,
            status(4, 7, 0),
            "too many failed logins, try again later",
        ),
    }
}

fn command_reply(error: &CommandError, host: &str) -> Reply {
    match error {
        CommandError::Unrecognized => Reply::new(500, status(5, 5, 2), "command not recognized"),
        CommandError::ControlCharacter => {
            Reply::new(500, status(5, 5, 2), "NUL or bare CR in command")
        }
        CommandError::InvalidUtf8 => Reply::new(501, status(5, 5, 2), "command is not valid UTF-8"),
        CommandError::Syntax(usage) => Reply::new(501, status(5, 5, 2), format!("syntax: {usage}")),
        CommandError::InvalidArgument(why) => Reply::new(501, status(5, 5, 4), *why),
        // RFC 6531 §3.7.4.1: non-ASCII address without SMTPUTF8.
        CommandError::BadSender(AddressError::Utf8NotPermitted)
        | CommandError::BadRecipient(AddressError::Utf8NotPermitted) => {
            Reply::new(553, status(5, 6, 7), "non-ASCII address requires SMTPUTF8")
        }
        // RFC 5321 §4.5.3.1.10 "501 Path too long"; X.1.7 sender, X.1.3 recipient syntax.
        CommandError::BadSender(AddressError::TooLong) => {
            Reply::new(501, status(5, 1, 7), "path too long")
        }
        CommandError::BadSender(AddressError::Syntax) => {
            Reply::new(501, status(5, 1, 7), "bad sender address syntax")
        }
        CommandError::BadRecipient(AddressError::TooLong) => {
            Reply::new(501, status(5, 1, 3), "path too long")
        }
        CommandError::BadRecipient(AddressError::Syntax) => {
            Reply::new(501, status(5, 1, 3), "bad recipient address syntax")
        }
        // RFC 5321 §4.2.2 / RFC 1869: 555 for unrecognized MAIL/RCPT parameters.
        CommandError::UnsupportedParameter(param) => Reply::new(
            555,
            status(5, 5, 4),
            format!("unsupported parameter {param}"),
        ),
        // The end of the chunk is unknown, so the session must close (RFC 5321 §3.8: only
        // after 421).
        CommandError::MalformedBdat => Reply::new(
            421,
            status(4, 5, 4),
            format!("{host} malformed BDAT, closing connection"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_class_matches_reply_class() {
        let refusals = [
            Refusal::Command(CommandError::Unrecognized),
            Refusal::CommandLineTooLong,
            Refusal::BadSequence("x"),
            Refusal::NotImplemented("x"),
            Refusal::AccessDenied,
            Refusal::TlsRequired,
            Refusal::MessageTooBig,
            Refusal::NoValidRecipients,
            Refusal::UnknownRecipient,
            Refusal::RecipientSuspended,
            Refusal::RecipientLookupFailed,
            Refusal::RelayDenied,
            Refusal::TooManyRecipients,
            Refusal::Body(BodyViolation::BareLf),
            Refusal::Body(BodyViolation::LineTooLong),
            Refusal::Commit(CommitFailure::Temporary),
            Refusal::Commit(CommitFailure::StorageFull),
            Refusal::Commit(CommitFailure::MailboxSuspended),
            Refusal::Commit(CommitFailure::Permanent),
            Refusal::TooManyErrors,
            Refusal::Timeout,
            Refusal::TransactionTimeout,
            Refusal::InputLimit,
            Refusal::ShuttingDown,
        ];
        for refusal in refusals {
            let reply = refusal.reply("mx.example");
            assert!(reply.code() >= 400, "{refusal:?}");
            let status = reply.status().expect("every refusal has an enhanced code");
            assert_eq!(u16::from(status.class), reply.code() / 100, "{refusal:?}");
        }
    }
}

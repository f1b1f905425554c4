//! The service layer's typed errors. Protocols map these to replies in one place each.

use crate::crypto::CryptoError;
use crate::mailbox::MailboxId;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("no mailbox {0}")]
    MailboxNotFound(MailboxId),
    #[error("mailbox {0} is suspended and accepts no new messages; try again later")]
    MailboxSuspended(MailboxId),
    #[error("mailbox {0} must be suspended first")]
    MailboxNotSuspended(MailboxId),
    #[error("mailbox {0} still holds {1} message(s); they must be retrieved first")]
    MailboxNotEmpty(MailboxId, u64),
    /// The mailbox's key changed while a message for it was being received (a password reset);
    /// the sender should try again so the message is sealed to the new key.
    #[error("mailbox {0} changed while the message was received; try again")]
    MailboxChanged(MailboxId),
    #[error("wrong password for mailbox {0}")]
    WrongPassword(MailboxId),
    #[error("message {1} not found in mailbox {0}")]
    MessageNotFound(MailboxId, u64),
    #[error("{field}: {problem}")]
    InvalidInput {
        field: &'static str,
        problem: String,
    },
    #[error("message exceeds the size limit of {0} bytes")]
    MessageTooLarge(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configured store cannot be opened as set up (a password file that cannot be
    /// read, a CA file that is not one).
    #[error("the store's settings: {0}")]
    StoreSettings(String),
    #[error("message {0} is damaged: {1}")]
    Damaged(String, CryptoError),
    #[error("cryptographic failure: {0}")]
    Crypto(CryptoError),
    #[error("spool I/O error: {0}")]
    Spool(String),
    /// Capacity is exhausted for the moment (e.g. every password check slot is busy).
    #[error("temporarily unavailable: {0}")]
    Unavailable(&'static str),
    /// Wrong administrator password, or a user name other than `admin` (the same answer,
    /// so it tells nothing about which was wrong).
    #[error("wrong user name or password")]
    WrongAdminPassword,
    /// The administrator still has the initial password, which is good only to set a new one.
    #[error("the initial administrator password must be replaced first: log in as admin with it from the gateway host and reset it (or run `gateway admin reset-password` there)")]
    InitialAdminPassword,
    /// A presented API key is malformed, unknown or revoked (one answer for all three).
    #[error("invalid or revoked API key")]
    InvalidApiKey,
    /// No API key has this id (to revoke).
    #[error("no API key {0}")]
    ApiKeyNotFound(String),
    /// Too many failed logins from this client; nothing was checked.
    #[error("too many failed logins; try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: std::time::Duration },
}

impl ServiceError {
    /// Whether trying the same thing later may succeed (SMTP 4xx rather than 5xx).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            ServiceError::MailboxSuspended(_)
                | ServiceError::MailboxChanged(_)
                | ServiceError::Store(_)
                | ServiceError::Spool(_)
                | ServiceError::Unavailable(_)
                | ServiceError::Throttled { .. }
        )
    }

    /// Whether one message's stored data is damaged: retrying cannot help, other messages
    /// may be fine.
    pub fn is_damaged_message(&self) -> bool {
        matches!(
            self,
            ServiceError::Damaged(..) | ServiceError::Store(StoreError::Corrupt(_))
        )
    }

    /// Whether the failure is a full disk (SMTP 452 4.3.1 rather than 451 4.3.0).
    pub fn is_storage_full(&self) -> bool {
        match self {
            ServiceError::Store(StoreError::Full(_)) => true,
            ServiceError::Spool(text) => text.contains("No space left"),
            _ => false,
        }
    }
}

impl From<std::io::Error> for ServiceError {
    fn from(e: std::io::Error) -> Self {
        match StoreError::from(e) {
            full @ StoreError::Full(_) => ServiceError::Store(full),
            other => ServiceError::Spool(other.to_string()),
        }
    }
}

//! The answer every API function gives, and the one place where errors become answers.
//!
//! Whatever goes wrong, a caller gets the same JSON envelope (as the archiving server's
//! Administration API does) plus an HTTP status a script can test with `curl --fail`:
//!
//! ```json
//! {"error": null, "statusCode": "succeeded", "token": null, "percentProgress": null,
//!  "statusText": null, "result": {...}}
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::mailbox::InvalidMailboxId;
use crate::service::ServiceError;
use crate::store::StoreError;

/// Where a function stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusCode {
    Succeeded,
    Failed,
    Running,
}

/// Why a function failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvelopeError {
    /// What went wrong and, where the caller can fix it, what to do.
    pub message: String,
    /// More detail (for example the parser's complaint about a parameter), or null.
    pub details: Option<String>,
    /// A stable word for scripts; it does not change between releases (see [`KINDS`]).
    pub kind: String,
}

/// The JSON object every function answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub error: Option<EnvelopeError>,
    pub status_code: StatusCode,
    /// For a long-running function: the token to poll with `/api/get-status`.
    pub token: Option<String>,
    /// Bumped by every change of a long-running function's status (`get-status` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_version: Option<u64>,
    pub percent_progress: Option<u8>,
    pub status_text: Option<String>,
    /// The function's result (an object or a list); null when it failed.
    #[schema(value_type = Value)]
    pub result: serde_json::Value,
}

impl Envelope {
    pub fn succeeded(result: serde_json::Value) -> Self {
        Self {
            error: None,
            status_code: StatusCode::Succeeded,
            token: None,
            status_version: None,
            percent_progress: None,
            status_text: None,
            result,
        }
    }
}

/// What a transport sends back: the envelope and the HTTP status that goes with it (the
/// control socket carries the status too, so the CLI can tell kinds of failure apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub http_status: u16,
    /// Seconds a throttled caller should wait (HTTP `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    pub envelope: Envelope,
}

impl Answer {
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            http_status: 200,
            retry_after: None,
            envelope: Envelope::succeeded(result),
        }
    }

    /// Whether the function succeeded (or is running).
    pub fn is_success(&self) -> bool {
        self.envelope.status_code != StatusCode::Failed
    }
}

/// The stable kinds of failure, for scripts (the CLI's `--json` errors use the same words).
pub const KINDS: &[&str] = &[
    "config",
    "invalid_input",
    "not_found",
    "conflict",
    "wrong_password",
    "unauthorized",
    "forbidden",
    "throttled",
    "unknown_function",
    "store_in_use",
    "disk_full",
    "storage",
    "acme",
    "error",
];

/// A failed function, ready to become an [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub http_status: u16,
    pub kind: &'static str,
    pub message: String,
    pub details: Option<String>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(http_status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            http_status,
            kind,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn invalid_parameters(details: impl Into<String>) -> Self {
        Self::new(
            400,
            "invalid_input",
            "missing or malformed parameters; POST /api/get-metadata lists each function's parameters",
        )
        .with_details(details)
    }

    pub fn unknown_function(name: &str) -> Self {
        // The name is the caller's own input: echoed in a JSON string, never in a log line.
        Self::new(
            404,
            "unknown_function",
            format!("there is no function `{name}`; POST /api/get-metadata lists them"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    pub fn into_answer(self) -> Answer {
        Answer {
            http_status: self.http_status,
            retry_after: self.retry_after.map(|d| d.as_secs().max(1)),
            envelope: Envelope {
                error: Some(EnvelopeError {
                    message: self.message,
                    details: self.details,
                    kind: self.kind.to_owned(),
                }),
                status_code: StatusCode::Failed,
                token: None,
                status_version: None,
                percent_progress: None,
                status_text: None,
                result: serde_json::Value::Null,
            },
        }
    }
}

impl From<InvalidMailboxId> for ApiError {
    fn from(e: InvalidMailboxId) -> Self {
        Self::new(400, "invalid_input", format!("id: {e}, or its address"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let kind = store_kind(&e);
        let message = match &e {
            StoreError::Full(_) => {
                format!("{e}; free disk space in the data directory and try again")
            }
            _ => e.to_string(),
        };
        Self::new(503, kind, message)
    }
}

impl From<crate::backup::BackupError> for ApiError {
    fn from(e: crate::backup::BackupError) -> Self {
        use crate::backup::BackupError;
        let kind = backup_kind(&e);
        match e {
            BackupError::Store(store) => store.into(),
            _ => {
                let status = match kind {
                    "conflict" => 409,
                    "invalid_input" => 400,
                    "disk_full" => 503,
                    _ => 500,
                };
                Self::new(status, kind, e.to_string())
            }
        }
    }
}

/// The stable kind of a backup or restore failure.
pub fn backup_kind(e: &crate::backup::BackupError) -> &'static str {
    use crate::backup::BackupError;
    match e {
        BackupError::Store(store) => store_kind(store),
        BackupError::NotEmpty { .. } | BackupError::GatewayRunning(_) => "conflict",
        BackupError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            "disk_full"
        }
        BackupError::Io { .. } => "storage",
        _ => "invalid_input",
    }
}

/// The one mapping from the service's errors to answers (the CLI reuses its kinds).
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let kind = service_kind(&e);
        match e {
            ServiceError::Store(store) => store.into(),
            ServiceError::MailboxNotFound(_) | ServiceError::MessageNotFound(..) => {
                Self::new(404, kind, e.to_string())
            }
            ServiceError::MailboxNotSuspended(ref id) => Self::new(
                409,
                kind,
                format!(
                    "mailbox {id} must be suspended first: set its status to suspended, \
                     let the archiver pick up what it holds, then try again"
                ),
            ),
            ServiceError::MailboxNotEmpty(ref id, count) => Self::new(
                409,
                kind,
                format!(
                    "mailbox {id} still holds {count} message(s): suspend the mailbox and let \
                     the archiver empty it first"
                ),
            ),
            ServiceError::MailboxSuspended(_) | ServiceError::MailboxChanged(_) => {
                Self::new(409, kind, e.to_string())
            }
            ServiceError::WrongPassword(_)
            | ServiceError::WrongAdminPassword
            | ServiceError::InvalidApiKey => Self::new(401, kind, e.to_string()),
            ServiceError::InitialAdminPassword => Self::new(403, kind, e.to_string()),
            ServiceError::ApiKeyNotFound(_) => Self::new(404, kind, e.to_string()),
            ServiceError::Throttled { retry_after } => Self {
                retry_after: Some(retry_after),
                ..Self::new(429, kind, e.to_string())
            },
            ServiceError::InvalidInput { .. } | ServiceError::MessageTooLarge(_) => {
                Self::new(400, kind, e.to_string())
            }
            ServiceError::Damaged(..)
            | ServiceError::Crypto(_)
            | ServiceError::Spool(_)
            | ServiceError::StoreSettings(_)
            | ServiceError::Unavailable(_) => Self::new(503, kind, e.to_string()),
        }
    }
}

/// The stable kind of a service error.
pub fn service_kind(error: &ServiceError) -> &'static str {
    match error {
        ServiceError::MailboxNotFound(_)
        | ServiceError::MessageNotFound(..)
        | ServiceError::ApiKeyNotFound(_) => "not_found",
        ServiceError::MailboxSuspended(_)
        | ServiceError::MailboxNotSuspended(_)
        | ServiceError::MailboxNotEmpty(..)
        | ServiceError::MailboxChanged(_) => "conflict",
        ServiceError::WrongPassword(_) | ServiceError::WrongAdminPassword => "wrong_password",
        ServiceError::InvalidApiKey => "unauthorized",
        ServiceError::InitialAdminPassword => "forbidden",
        ServiceError::Throttled { .. } => "throttled",
        ServiceError::InvalidInput { .. } | ServiceError::MessageTooLarge(_) => "invalid_input",
        ServiceError::Store(e) => store_kind(e),
        ServiceError::Spool(_) if error.is_storage_full() => "disk_full",
        ServiceError::StoreSettings(_) => "storage",
        ServiceError::Damaged(..)
        | ServiceError::Crypto(_)
        | ServiceError::Spool(_)
        | ServiceError::Unavailable(_) => "error",
    }
}

/// The stable kind of a store error.
pub fn store_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Locked => "store_in_use",
        StoreError::Full(_) => "disk_full",
        _ => "storage",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailboxId;

    fn id() -> MailboxId {
        MailboxId::parse("mbx-0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn a_broken_rule_says_what_to_do_and_is_never_a_server_error() {
        let answer = ApiError::from(ServiceError::MailboxNotEmpty(id(), 3)).into_answer();
        assert_eq!(answer.http_status, 409);
        let error = answer.envelope.error.unwrap();
        assert_eq!(error.kind, "conflict");
        assert!(error
            .message
            .contains("suspend the mailbox and let the archiver empty it first"));
        assert_eq!(answer.envelope.status_code, StatusCode::Failed);
        assert_eq!(answer.envelope.result, serde_json::Value::Null);
    }

    #[test]
    fn every_kind_is_a_stable_one() {
        let errors = [
            ServiceError::MailboxNotFound(id()),
            ServiceError::MailboxNotSuspended(id()),
            ServiceError::WrongPassword(id()),
            ServiceError::InvalidInput {
                field: "name",
                problem: "empty".into(),
            },
            ServiceError::Store(StoreError::Locked),
            ServiceError::Store(StoreError::Full("disk".into())),
            ServiceError::Unavailable("busy"),
        ];
        for e in errors {
            let api = ApiError::from(e);
            assert!(KINDS.contains(&api.kind), "{}", api.kind);
            assert!(api.http_status < 500 || api.http_status == 503);
        }
    }

    #[test]
    fn the_envelope_has_the_documented_shape() {
        let json = serde_json::to_value(Envelope::succeeded(serde_json::json!({"a": 1}))).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        for key in [
            "error",
            "statusCode",
            "token",
            "percentProgress",
            "statusText",
            "result",
        ] {
            assert!(keys.contains(&key), "{key} missing from {json}");
        }
        assert_eq!(json["statusCode"], "succeeded");
    }
}

//! A failed answer as an error, for callers that want a `Result`: the CLI's commands and
//! `gateway check`'s questions to the running gateway.

use super::envelope::KINDS;
use super::{Answer, EnvelopeError};

/// A function that answered `failed`: the envelope's message, and its stable kind for
/// `--json` errors (see `cli::error_output`).
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", .details.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct FunctionFailed {
    pub kind: &'static str,
    pub message: String,
    pub details: Option<String>,
    pub http_status: u16,
}

/// The result of a succeeded answer; a failed one becomes a [`FunctionFailed`] error.
pub fn into_result(function: &str, answer: Answer) -> anyhow::Result<serde_json::Value> {
    if answer.is_success() {
        return Ok(answer.envelope.result);
    }
    let error = answer.envelope.error.unwrap_or_else(|| EnvelopeError {
        message: format!("{function} failed"),
        details: None,
        kind: "error".to_owned(),
    });
    let kind = KINDS
        .iter()
        .copied()
        .find(|k| *k == error.kind)
        .unwrap_or("error");
    let message = if kind == "unknown_function" {
        // Only a gateway older than this command lacks one of the command's functions.
        format!(
            "the gateway does not provide {function}: restart it with the version of this command"
        )
    } else {
        error.message
    };
    Err(FunctionFailed {
        kind,
        message,
        details: error.details,
        http_status: answer.http_status,
    }
    .into())
}

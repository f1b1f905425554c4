//! The local control channel: the CLI's way to a running gateway.
//!
//! `gateway serve` listens on a Unix socket in the data directory ([`SOCKET_FILE`], mode
//! 0600). The operating system is the authentication: only the gateway's user (and root) can
//! open it, so every request runs as [`crate::api::Caller::Host`]. The protocol is one JSON
//! line per request and one per answer, several requests per connection:
//!
//! ```text
//! → {"function": "GetMailbox", "params": {"id": "mbx-..."}}
//! ← {"httpStatus": 200, "envelope": {"error": null, "statusCode": "succeeded", ...}}
//! ```
//!
//! A long-running function answers `running` with a token; the CLI polls it with the
//! pseudo-function [`GET_STATUS`] (parameters as `POST /api/get-status`).
//!
//! The answer is the API's [`crate::api::Answer`], so the CLI prints the same thing whether
//! it reached a running gateway here or called [`crate::api::Api::invoke`] on a stopped
//! gateway's store itself.

mod client;
mod framing;
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::ControlClient;
pub use server::ControlServer;

use super::{Answer, Api, Caller, Params};

/// The request `function` that polls a long-running function's run by its token (its
/// `params` are `get-status`'s), as `POST /api/get-status` does over HTTPS.
pub const GET_STATUS: &str = "get-status";

/// Answers one request as the host: a function, or [`GET_STATUS`] polling a run, as
/// `POST /api/get-status` does. The control socket answers with it, and so does the CLI
/// on a stopped gateway's store.
pub async fn answer_as_host(api: &Api, function: &str, params: Params) -> Answer {
    if function == GET_STATUS {
        api.status(&Caller::Host, params).await
    } else {
        api.invoke(&Caller::Host, function, params).await
    }
}

/// The socket's file name inside the data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// The largest request line accepted; parameters are short strings, so 1 MiB is generous.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The largest answer line the client reads: a list of many mailboxes is long, but bounded.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// How long the server waits for the next request on an open connection.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the client waits for an answer: long enough for key derivations on a busy
/// machine, short enough that a hung gateway does not hang a script forever.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the control socket of the gateway using `data_dir` lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub function: String,
    #[serde(default)]
    pub params: Params,
}

/// Why the control channel failed (not why a function failed: that is an answer).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot open the control socket {}: {source}{hint}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{} exists and is not a socket; move it away so the gateway can create its control socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot reach the running gateway through {}: {source}{hint}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("the control connection to the gateway failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the gateway closed the control connection without answering")]
    Closed,
    #[error("the gateway did not answer within {} seconds", .0.as_secs())]
    Timeout(Duration),
    #[error("the gateway's answer is not valid: {0}")]
    BadAnswer(serde_json::Error),
    #[error("the gateway's answer is larger than {MAX_ANSWER_BYTES} bytes")]
    AnswerTooLarge,
}

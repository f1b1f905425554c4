//! Long-running functions: started with a token, polled with `POST /api/get-status`.
//!
//! As in the archiving server's API, a function that takes long answers at once with
//! `statusCode: "running"` and a `token`; the caller polls `get-status` with the token, the
//! `statusVersion` it last saw and how long it is willing to wait, and gets an answer as soon
//! as something changed (or the wait ran out). Finished runs are kept for a while so the
//! last poll finds the result, then forgotten; the table is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use utoipa::ToSchema;

use super::envelope::{Answer, ApiError, Envelope, StatusCode};

/// Runs kept at most; the oldest finished ones go first.
const MAX_JOBS: usize = 256;
/// How long a finished run's result stays available.
const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// The longest a poll may wait for a change.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Where a run stands; every change bumps `version`.
#[derive(Debug, Clone)]
struct Snapshot {
    version: u64,
    envelope: Envelope,
    http_status: u16,
    finished_at: Option<Instant>,
}

/// Handed to a running function to report progress.
pub struct Progress {
    sender: Arc<watch::Sender<Snapshot>>,
}

impl Progress {
    pub fn update(&self, percent: Option<u8>, text: impl Into<String>) {
        let text = text.into();
        self.sender.send_modify(|s| {
            s.version += 1;
            s.envelope.percent_progress = percent.map(|p| p.min(100));
            s.envelope.status_text = Some(text);
        });
    }
}

/// The runs of long-running functions.
#[derive(Clone, Default)]
pub struct Jobs {
    runs: Arc<Mutex<HashMap<String, Arc<watch::Sender<Snapshot>>>>>,
}

/// `get-status` parameters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusParams {
    /// The token the function answered with.
    pub token: String,
    /// The `statusVersion` of the last answer; the poll waits until the status differs.
    #[schema(nullable = false, pattern = r"^\s*[0-9]{1,18}\s*$")]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub last_known_status_version: Option<String>,
    /// How long to wait for a change, in milliseconds (at most 60000).
    #[schema(nullable = false, pattern = r"^\s*[0-9]{1,18}\s*$")]
    #[serde(default, deserialize_with = "crate::api::functions::present")]
    pub milliseconds_timeout: Option<String>,
}

impl Jobs {
    /// Starts `work` in the background and answers `running` with its token.
    pub fn start<F>(&self, work: impl FnOnce(Progress) -> F) -> Answer
    where
        F: Future<Output = Result<serde_json::Value, ApiError>> + Send + 'static,
    {
        let token = new_token();
        let mut envelope = Envelope::succeeded(serde_json::Value::Null);
        envelope.status_code = StatusCode::Running;
        envelope.token = Some(token.clone());
        envelope.status_version = Some(1);
        let (sender, _) = watch::channel(Snapshot {
            version: 1,
            envelope: envelope.clone(),
            http_status: 200,
            finished_at: None,
        });
        let sender = Arc::new(sender);
        {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            prune(&mut runs);
            runs.insert(token.clone(), sender.clone());
        }
        let future = work(Progress {
            sender: sender.clone(),
        });
        tokio::spawn(async move {
            let outcome = future.await;
            sender.send_modify(|s| {
                s.version += 1;
                s.finished_at = Some(Instant::now());
                let (status, mut finished) = match outcome {
                    Ok(result) => (200, Envelope::succeeded(result)),
                    Err(e) => {
                        let answer = e.into_answer();
                        (answer.http_status, answer.envelope)
                    }
                };
                finished.token = s.envelope.token.take();
                finished.percent_progress = Some(100);
                finished.status_text = s.envelope.status_text.take();
                s.envelope = finished;
                s.http_status = status;
            });
        });
        Answer {
            http_status: 200,
            retry_after: None,
            envelope,
        }
    }

    /// Answers a poll: at once when the status differs from `last_known_status_version`,
    /// else when it changes or the wait runs out.
    pub async fn status(&self, params: StatusParams) -> Answer {
        let parse = |field: &str, value: &Option<String>| -> Result<Option<u64>, ApiError> {
            value
                .as_deref()
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        ApiError::invalid_parameters(format!("{field}: not a whole number"))
                    })
                })
                .transpose()
        };
        let (last_known, timeout) = match (
            parse("lastKnownStatusVersion", &params.last_known_status_version),
            parse("millisecondsTimeout", &params.milliseconds_timeout),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return e.into_answer(),
        };
        let sender = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(params.token.trim())
            .cloned();
        let Some(sender) = sender else {
            return ApiError::new(
                404,
                "not_found",
                "no such token: the run finished more than an hour ago, or the gateway restarted",
            )
            .into_answer();
        };
        let mut receiver = sender.subscribe();
        if let Some(last_known) = last_known {
            let wait = Duration::from_millis(timeout.unwrap_or(0)).min(MAX_WAIT);
            let changed = receiver.wait_for(|s| s.version != last_known);
            // A run that does not change within the wait is answered as it stands.
            let _ = tokio::time::timeout(wait, changed).await;
        }
        let snapshot = receiver.borrow().clone();
        let mut envelope = snapshot.envelope;
        envelope.status_version = Some(snapshot.version);
        Answer {
            http_status: snapshot.http_status,
            retry_after: None,
            envelope,
        }
    }
}

/// Drops finished runs past their keeping time, then the oldest finished ones while full.
fn prune(runs: &mut HashMap<String, Arc<watch::Sender<Snapshot>>>) {
    let now = Instant::now();
    runs.retain(|_, s| {
        s.borrow()
            .finished_at
            .is_none_or(|at| now.duration_since(at) < KEEP_FINISHED)
    });
    while runs.len() >= MAX_JOBS {
        let oldest = runs
            .iter()
            .filter_map(|(token, s)| s.borrow().finished_at.map(|at| (at, token.clone())))
            .min();
        match oldest {
            Some((_, token)) => {
                runs.remove(&token);
            }
            // Every run is still going: the newest start waits for room no longer than this.
            None => break,
        }
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    crate::random::fill_random_id(&mut bytes);
    data_encoding::HEXLOWER.encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(token: &str, last: Option<u64>, wait_ms: u64) -> StatusParams {
        StatusParams {
            token: token.to_owned(),
            last_known_status_version: last.map(|v| v.to_string()),
            milliseconds_timeout: Some(wait_ms.to_string()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_waits_for_progress_and_ends_with_the_result() {
        let jobs = Jobs::default();
        let (go_on, wait) = tokio::sync::oneshot::channel::<()>();
        let started = jobs.start(|progress| async move {
            progress.update(Some(50), "half way");
            let _ = wait.await;
            Ok(serde_json::json!({"done": true}))
        });
        assert_eq!(started.envelope.status_code, StatusCode::Running);
        let token = started.envelope.token.clone().unwrap();

        // The start answer was version 1; the poll waits for the progress report.
        let first = jobs.status(params(&token, Some(1), 60_000)).await;
        let seen = first.envelope.status_version.unwrap();
        assert_eq!(seen, 2);
        assert_eq!(first.envelope.status_code, StatusCode::Running);
        assert_eq!(first.envelope.percent_progress, Some(50));
        assert_eq!(first.envelope.status_text.as_deref(), Some("half way"));

        // Nothing changes: the poll gives up after its wait and repeats the status.
        let same = jobs.status(params(&token, Some(seen), 1_000)).await;
        assert_eq!(same.envelope.status_version, Some(seen));

        go_on.send(()).unwrap();
        let done = jobs.status(params(&token, Some(seen), 60_000)).await;
        assert_eq!(done.envelope.status_code, StatusCode::Succeeded);
        assert_eq!(done.envelope.result["done"], true);
        assert_eq!(done.envelope.token.as_deref(), Some(token.as_str()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_run_reports_its_error_and_unknown_tokens_are_404() {
        let jobs = Jobs::default();
        let started =
            jobs.start(|_| async { Err(ApiError::new(503, "disk_full", "no space left")) });
        let token = started.envelope.token.unwrap();
        let done = jobs.status(params(&token, Some(1), 60_000)).await;
        assert_eq!(done.envelope.status_code, StatusCode::Failed);
        assert_eq!(done.http_status, 503);
        assert_eq!(done.envelope.error.unwrap().kind, "disk_full");

        let unknown = jobs.status(params("0000", None, 0)).await;
        assert_eq!(unknown.http_status, 404);
        let malformed = jobs.status(StatusParams {
            token,
            last_known_status_version: Some("x".into()),
            milliseconds_timeout: None,
        });
        assert_eq!(malformed.await.http_status, 400);
    }
}

//! The control socket's client side, used by the CLI.

use std::path::{Path, PathBuf};

use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::framing::{read_line, write_json_line, Line};
use super::{socket_path, ControlError, Request, ANSWER_TIMEOUT, MAX_ANSWER_BYTES};
use crate::api::{Answer, Params};

/// A connection to a running gateway's control socket.
pub struct ControlClient {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl ControlClient {
    /// Connects to the gateway using `data_dir`. `Ok(None)` when no gateway listens there:
    /// no socket (never started, or stopped cleanly) or nobody behind it (killed).
    pub async fn connect(data_dir: &Path) -> Result<Option<Self>, ControlError> {
        Self::connect_to(&socket_path(data_dir)).await
    }

    /// Connects to the socket at `path`; see [`ControlClient::connect`].
    pub async fn connect_to(path: &Path) -> Result<Option<Self>, ControlError> {
        match UnixStream::connect(path).await {
            Ok(stream) => {
                let (reader, writer) = stream.into_split();
                Ok(Some(Self {
                    path: path.to_owned(),
                    reader: BufReader::new(reader),
                    writer,
                }))
            }
            Err(e) if is_nobody_there(&e) => Ok(None),
            Err(source) => {
                let hint = match source.kind() {
                    std::io::ErrorKind::PermissionDenied => {
                        " (only the gateway's user and root may manage it: run the command as that user)"
                    }
                    _ => "",
                };
                Err(ControlError::Connect {
                    path: path.to_owned(),
                    source,
                    hint,
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `function` on the running gateway and returns its answer, failed or not.
    pub async fn invoke(&mut self, function: &str, params: Params) -> Result<Answer, ControlError> {
        let request = Request {
            function: function.to_owned(),
            params,
        };
        // The whole exchange: a gateway too busy to read the request counts as well.
        tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(&request))
            .await
            .map_err(|_| ControlError::Timeout(ANSWER_TIMEOUT))?
    }

    async fn exchange(&mut self, request: &Request) -> Result<Answer, ControlError> {
        write_json_line(&mut self.writer, request).await?;
        let mut line = Vec::new();
        match read_line(&mut self.reader, MAX_ANSWER_BYTES, &mut line).await? {
            Line::Complete => serde_json::from_slice(&line).map_err(ControlError::BadAnswer),
            Line::Closed => Err(ControlError::Closed),
            Line::TooLong => Err(ControlError::AnswerTooLarge),
        }
    }
}

/// No socket file, or a socket file nobody listens on (its gateway was killed), or a path
/// too long to be a socket's (no gateway can listen there: `serve` refuses to start).
fn is_nobody_there(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::InvalidInput
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_data_directory_too_long_for_a_socket_has_no_gateway_listening() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("d".repeat(120));
        assert!(ControlClient::connect(&data).await.unwrap().is_none());
    }
}

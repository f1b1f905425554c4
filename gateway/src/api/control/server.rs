//! The control socket's server side, run by `gateway serve`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::framing::{read_line, write_json_line, Line};
use super::{answer_as_host, socket_path, ControlError, Request, MAX_REQUEST_BYTES, READ_TIMEOUT};
use crate::api::{Answer, Api, ApiError};
use crate::net::{Shutdown, ShutdownSignal};

/// Connections served at once; more wait in the socket's backlog. Only the gateway's user
/// can connect, so this guards against a runaway script, not an attacker.
const MAX_CONNECTIONS: usize = 16;

/// How long an answer may take to write before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`ControlServer::stop`] lets requests in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The running control socket. [`ControlServer::stop`] closes it and removes its file.
pub struct ControlServer {
    path: PathBuf,
    /// Device and inode of the socket file, so only our own is ever removed.
    identity: Option<(u64, u64)>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    /// Creates `<data_dir>/control.sock` (replacing a stale one from a gateway that did not
    /// stop cleanly; the store's lock, already held, guarantees no other gateway uses it)
    /// and serves `api` on it. Must be called inside a tokio runtime.
    pub fn start(api: Api, data_dir: &Path) -> Result<Self, ControlError> {
        let path = socket_path(data_dir);
        let listener = bind_private(data_dir, &path)?;
        let identity = file_identity(&path);
        let shutdown = Shutdown::with_grace(STOP_GRACE);
        let task = tokio::spawn(accept_loop(listener, api, shutdown.signal()));
        tracing::info!(path = %path.display(), "control socket ready");
        Ok(Self {
            path,
            identity,
            shutdown,
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets requests in flight finish (up to a grace period) and removes
    /// the socket file, unless something else replaced it meanwhile.
    pub async fn stop(self) {
        self.shutdown.trigger();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the control socket's task ended abnormally");
        }
        if self.identity.is_some() && file_identity(&self.path) == self.identity {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the control socket");
            }
        }
    }
}

/// Binds the socket so that it is 0600 before anyone can reach it: it is created in a fresh
/// 0700 directory, restricted, then renamed into place. Changing the umask instead would
/// affect every thread of the process.
fn bind_private(data_dir: &Path, path: &Path) -> Result<UnixListener, ControlError> {
    let bind_error = |source: std::io::Error| {
        let hint = match source.kind() {
            std::io::ErrorKind::InvalidInput => {
                " (a Unix socket path must be shorter than 108 bytes: choose a shorter data directory)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (run the gateway as the user that owns the data directory)"
            }
            _ => "",
        };
        ControlError::Bind {
            path: path.to_owned(),
            source,
            hint,
        }
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if is_socket(&meta) => {
            tracing::info!(path = %path.display(), "replacing the control socket of a gateway that did not stop cleanly");
        }
        Ok(_) => return Err(ControlError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(e)),
    }
    let staging_dir = tempfile::Builder::new()
        .prefix(".c")
        .tempdir_in(data_dir)
        .map_err(bind_error)?;
    restrict(staging_dir.path(), 0o700).map_err(bind_error)?;
    // A short name, so the staging path is no longer than the final one.
    let staging = staging_dir.path().join("s");
    let listener = UnixListener::bind(&staging).map_err(bind_error)?;
    restrict(&staging, 0o600).map_err(bind_error)?;
    // Atomic: the socket appears with its final mode, replacing a stale one.
    std::fs::rename(&staging, path).map_err(bind_error)?;
    Ok(listener)
}

fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn is_socket(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_socket()
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

async fn accept_loop(listener: UnixListener, api: Api, mut shutdown: ShutdownSignal) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        // Finished connections are reaped as we go, so the set stays small.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = shutdown.triggered() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.triggered() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let api = api.clone();
                let signal = shutdown.clone();
                connections.spawn(async move {
                    serve_connection(&api, stream, signal).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // E.g. out of file descriptors: wait a little instead of spinning.
                tracing::warn!(error = %e, "control socket: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    // Requests in flight finish; idle connections end at once (they watch the signal).
    let drained = tokio::time::timeout(shutdown.grace(), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

/// Serves one connection: request lines until the client closes, goes idle, or sends a
/// line too long to be a request.
async fn serve_connection(api: &Api, stream: UnixStream, mut shutdown: ShutdownSignal) {
    if let Some(refusal) = refuse_peer(&stream) {
        let (_, mut writer) = stream.into_split();
        let _ = tokio::time::timeout(WRITE_TIMEOUT, write_json_line(&mut writer, &refusal)).await;
        return;
    }
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        let read = tokio::select! {
            _ = shutdown.triggered() => return,
            read = tokio::time::timeout(READ_TIMEOUT, read_line(&mut reader, MAX_REQUEST_BYTES, &mut line)) => read,
        };
        let answer = match read {
            // Idle too long, broken, or closed by the client.
            Err(_) | Ok(Err(_)) | Ok(Ok(Line::Closed)) => return,
            Ok(Ok(Line::TooLong)) => too_long(),
            Ok(Ok(Line::Complete)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Ok(Line::Complete)) => answer(api, &line).await,
        };
        let last = answer.http_status == 413;
        let written =
            tokio::time::timeout(WRITE_TIMEOUT, write_json_line(&mut writer, &answer)).await;
        // After an oversized line the stream is somewhere inside it: no way to go on.
        if last || !matches!(written, Ok(Ok(()))) {
            return;
        }
    }
}

/// Runs one request line.
async fn answer(api: &Api, line: &[u8]) -> Answer {
    let request: Request =
        match serde_json::from_slice(line) {
            Ok(request) => request,
            Err(e) => return ApiError::new(
                400,
                "invalid_input",
                r#"a request is one JSON object per line: {"function": "...", "params": {...}}"#,
            )
            .with_details(e.to_string())
            .into_answer(),
        };
    let answer = answer_as_host(api, &request.function, request.params).await;
    // The function name only (escaped by `?`): parameters may hold what must not be logged.
    tracing::info!(function = ?request.function, status = answer.http_status, "control request");
    answer
}

fn too_long() -> Answer {
    ApiError::new(
        413,
        "invalid_input",
        format!("a request line may hold at most {MAX_REQUEST_BYTES} bytes"),
    )
    .into_answer()
}

/// The socket's mode already keeps other users out; checking the peer's user as well keeps
/// them out even if someone loosens the mode or the directory by hand.
fn refuse_peer(stream: &UnixStream) -> Option<Answer> {
    let own = rustix::process::getuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own || cred.uid() == 0 => None,
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid(),
                "control socket: refused a connection from another user"
            );
            Some(
                ApiError::forbidden("only the gateway's user and root may use the control socket")
                    .into_answer(),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "control socket: cannot tell who connected; refused");
            Some(ApiError::forbidden("cannot tell who connected").into_answer())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::control::ControlClient;
    use crate::api::{ServerContext, StatusCode};
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fixture {
        _store: tempfile::TempDir,
        data: tempfile::TempDir,
        server: ControlServer,
    }

    /// An API over a test gateway whose settings file is in its directory.
    fn test_api() -> (tempfile::TempDir, Api) {
        let (store, gateway) = crate::service::test_support::gateway();
        let settings = crate::settings::LiveSettings::new(
            &crate::config::Config::default(),
            gateway.email_domain_handle().clone(),
            None,
            crate::settings::SettingsFile {
                path: store.path().join("gateway.toml"),
                create_if_missing: true,
            },
        );
        let server = ServerContext::new("mx.test".into(), None, "self-signed");
        (store, Api::new(gateway, settings, server))
    }

    fn start() -> Fixture {
        let (store, api) = test_api();
        let data = tempfile::tempdir().unwrap();
        let server = ControlServer::start(api, data.path()).unwrap();
        Fixture {
            _store: store,
            data,
            server,
        }
    }

    async fn raw(fixture: &Fixture) -> UnixStream {
        UnixStream::connect(fixture.server.path()).await.unwrap()
    }

    async fn answer_line(stream: &mut UnixStream) -> Answer {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, usize::MAX, &mut line).await.unwrap(),
            Line::Complete
        );
        serde_json::from_slice(&line).unwrap()
    }

    #[tokio::test]
    async fn the_socket_is_for_the_owner_only_and_nothing_else_is_left_behind() {
        let fixture = start();
        let path = fixture.data.path().join("control.sock");
        assert_eq!(fixture.server.path(), path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(fixture.data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["control.sock"], "the staging directory is gone");
        fixture.server.stop().await;
        assert!(!path.exists(), "removed on stop");
    }

    #[tokio::test]
    async fn an_oversized_request_line_is_refused_and_the_connection_closed() {
        let fixture = start();
        let mut stream = raw(&fixture).await;
        // No newline anywhere: the server must not wait for one past the limit.
        let big = vec![b'x'; MAX_REQUEST_BYTES + 1];
        let (mut read, mut write) = stream.split();
        let (written, answer) = tokio::join!(write.write_all(&big), async {
            let mut reader = BufReader::new(&mut read);
            let mut line = Vec::new();
            read_line(&mut reader, usize::MAX, &mut line).await.unwrap();
            let answer: Answer = serde_json::from_slice(&line).unwrap();
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).await.unwrap();
            (answer, rest)
        });
        // The server may close before it read everything; either way it answered first.
        let _ = written;
        let (answer, rest) = answer;
        assert_eq!(answer.http_status, 413);
        assert_eq!(answer.envelope.status_code, StatusCode::Failed);
        assert!(rest.is_empty(), "closed after the refusal");
    }

    #[tokio::test]
    async fn malformed_json_gets_a_400_envelope_and_the_connection_goes_on() {
        let fixture = start();
        let mut stream = raw(&fixture).await;
        for bad in [
            &b"not json\n"[..],
            b"{\"function\": 3}\n",
            b"{\"function\": \"GetMailboxes\", \"extra\": 1}\n",
        ] {
            stream.write_all(bad).await.unwrap();
            let answer = answer_line(&mut stream).await;
            assert_eq!(answer.http_status, 400, "{bad:?}");
            let error = answer.envelope.error.unwrap();
            assert_eq!(error.kind, "invalid_input");
            assert!(error.details.is_some());
        }
        stream
            .write_all(b"\n{\"function\": \"GetMailboxes\"}\n")
            .await
            .unwrap();
        let answer = answer_line(&mut stream).await;
        assert_eq!(answer.http_status, 200);
        assert_eq!(answer.envelope.result, serde_json::json!([]));
    }

    #[tokio::test]
    async fn several_requests_share_one_connection_and_run_as_the_host() {
        let fixture = start();
        let mut client = ControlClient::connect(fixture.data.path())
            .await
            .unwrap()
            .expect("a gateway listens");
        let mut params = crate::api::Params::new();
        params.insert("name".into(), "Sales".into());
        let created = client.invoke("CreateMailbox", params).await.unwrap();
        assert_eq!(created.http_status, 200, "{created:?}");
        let id = created.envelope.result["id"].as_str().unwrap().to_owned();
        let mut params = crate::api::Params::new();
        params.insert("id".into(), id.clone().into());
        let shown = client.invoke("GetMailbox", params).await.unwrap();
        assert_eq!(shown.envelope.result["name"], "Sales");
        let unknown = client
            .invoke("NoSuchFunction", crate::api::Params::new())
            .await
            .unwrap();
        assert_eq!(unknown.http_status, 404);
        assert_eq!(unknown.envelope.error.unwrap().kind, "unknown_function");
    }

    #[tokio::test]
    async fn get_status_polls_long_running_functions_over_the_socket() {
        let fixture = start();
        let mut client = ControlClient::connect(fixture.data.path())
            .await
            .unwrap()
            .expect("a gateway listens");
        let mut params = crate::api::Params::new();
        params.insert("token".into(), "0000".into());
        let status = client
            .invoke(super::super::GET_STATUS, params)
            .await
            .unwrap();
        // get-status itself answered (no such run), not "no such function".
        assert_eq!(status.http_status, 404);
        assert_eq!(status.envelope.error.unwrap().kind, "not_found");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_after_the_read_timeout() {
        let fixture = start();
        let mut stream = raw(&fixture).await;
        let opened = tokio::time::Instant::now();
        let mut rest = Vec::new();
        // Paused time jumps ahead while everyone waits: the server's timer fires.
        tokio::time::timeout(READ_TIMEOUT * 2, stream.read_to_end(&mut rest))
            .await
            .expect("closed by the server")
            .unwrap();
        assert!(rest.is_empty());
        assert!(opened.elapsed() >= READ_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_closes_idle_connections_at_once_and_removes_the_socket() {
        let fixture = start();
        let path = fixture.server.path().to_owned();
        let mut idle = raw(&fixture).await;
        // The connection is being served before the stop begins.
        idle.write_all(b"{\"function\": \"GetMailboxes\"}\n")
            .await
            .unwrap();
        assert_eq!(answer_line(&mut idle).await.http_status, 200);
        let stopping = tokio::time::Instant::now();
        fixture.server.stop().await;
        let mut rest = Vec::new();
        idle.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert!(
            stopping.elapsed() < READ_TIMEOUT.min(STOP_GRACE),
            "closed by the stop, not by a timeout"
        );
        assert!(!path.exists());
        assert!(ControlClient::connect_to(&path).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_data_directory_too_long_for_a_socket_is_refused_saying_what_to_do() {
        let (_store, api) = test_api();
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("d".repeat(120));
        std::fs::create_dir(&data).unwrap();
        let Err(error) = ControlServer::start(api, &data) else {
            panic!("a socket path over the limit was bound");
        };
        let text = error.to_string();
        assert!(text.contains("choose a shorter data directory"), "{text}");
        let left: Vec<_> = std::fs::read_dir(&data).unwrap().collect();
        assert!(left.is_empty(), "nothing left behind");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_no_listener_means_no_gateway() {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().join("control.sock");
        assert!(ControlClient::connect(data.path()).await.unwrap().is_none());
        // What a killed gateway leaves: a socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(
            ControlClient::connect(data.path()).await.unwrap().is_none(),
            "connection refused means no gateway"
        );

        let (_store, api) = test_api();
        let server = ControlServer::start(api.clone(), data.path()).unwrap();
        let mut client = ControlClient::connect(data.path()).await.unwrap().unwrap();
        let answer = client
            .invoke("GetMailboxes", crate::api::Params::new())
            .await
            .unwrap();
        assert_eq!(answer.http_status, 200);
        drop(client);
        server.stop().await;
        assert!(!path.exists());

        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            ControlServer::start(api, data.path()),
            Err(ControlError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket", "left alone");
    }
}

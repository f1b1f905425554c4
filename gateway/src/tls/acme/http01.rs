//! HTTP-01 (RFC 8555 §8.3): the CA fetches
//! `http://<name>/.well-known/acme-challenge/<token>` and expects the key authorization.
//!
//! [`Http01Responses`] is the table an order publishes its tokens in; [`ChallengeListener`]
//! answers from it on `[listen.acme_http]` (port 80). The listener faces the internet and
//! serves nothing else, so it is small and strict: GET/HEAD only, one path shape, 404 for
//! everything else, bounded headers, a deadline per connection and its own connection cap.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::net::Listener;
use crate::tls::{CertificateShare, TlsError};

/// The path prefix the CA asks for.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";
/// Connections served at once; more are closed at accept (the CA opens a handful).
const MAX_CONNECTIONS: usize = 64;
/// Time to send the request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay open at all.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Request head size limit (hyper's read buffer); a CA's request is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Tokens are base64url; real ones are 43 characters.
const MAX_TOKEN: usize = 128;
/// Lookups of unknown tokens in the shared store at once; more are answered 404 at once.
const MAX_SHARED_LOOKUPS: usize = 4;

/// Token → key authorization, shared by the orders that publish and the listener that
/// answers. On a shared store the tokens go to the database too, since the CA may ask any
/// node behind the name, and a token this node does not know is looked up there. Cheap to
/// clone.
#[derive(Clone)]
pub struct Http01Responses {
    tokens: Arc<Mutex<HashMap<String, String>>>,
    share: Option<Arc<dyn CertificateShare>>,
    /// Bounds the database lookups a flood of made-up tokens can cause.
    lookups: Arc<Semaphore>,
}

impl std::fmt::Debug for Http01Responses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http01Responses")
            .field("shared", &self.share.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Http01Responses {
    fn default() -> Self {
        Self {
            tokens: Arc::default(),
            share: None,
            lookups: Arc::new(Semaphore::new(MAX_SHARED_LOOKUPS)),
        }
    }
}

/// Keeps a token published; dropping it withdraws the token (the order ended either way).
#[must_use]
pub struct Published {
    responses: Http01Responses,
    token: String,
}

impl Drop for Published {
    fn drop(&mut self) {
        self.responses.lock().remove(&self.token);
        if let Some(share) = &self.responses.share {
            // A token left behind answers nothing useful (the order is over); only noise.
            if let Err(e) = share.withdraw_challenge(&self.token) {
                tracing::warn!(error = %e, "ACME: cannot withdraw a challenge answer from the shared store");
            }
        }
    }
}

impl Http01Responses {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers for every node of a shared store: published tokens go to `share` too, and
    /// unknown ones are looked up there.
    pub fn shared(share: Arc<dyn CertificateShare>) -> Self {
        Self {
            share: Some(share),
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // Only whole inserts and removes happen under the lock.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers `token` with `key_authorization` until the returned guard is dropped. On a
    /// shared store, a token the other nodes cannot answer fails the order (the CA may ask
    /// any of them).
    pub fn publish(&self, token: &str, key_authorization: &str) -> Result<Published, TlsError> {
        self.lock()
            .insert(token.to_owned(), key_authorization.to_owned());
        let published = Published {
            responses: self.clone(),
            token: token.to_owned(),
        };
        if let Some(share) = &self.share {
            // One short statement, during an order only.
            share.publish_challenge(token, key_authorization)?;
        }
        Ok(published)
    }

    /// The key authorization for `token`, while an order (of any node) waits for it.
    pub async fn get(&self, token: &str) -> Option<String> {
        if let Some(answer) = self.lock().get(token).cloned() {
            return Some(answer);
        }
        let share = self.share.clone()?;
        let _slot = self.lookups.clone().try_acquire_owned().ok()?;
        let token = token.to_owned();
        let found = tokio::task::spawn_blocking(move || share.challenge(&token)).await;
        match found {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ACME: cannot look up a challenge answer in the shared store");
                None
            }
            Err(_) => None,
        }
    }

    /// The answer for a request line: (status, body).
    async fn answer(&self, method: &Method, path: &str) -> (StatusCode, String) {
        if method != Method::GET && method != Method::HEAD {
            return (StatusCode::METHOD_NOT_ALLOWED, String::new());
        }
        let token = match path.strip_prefix(CHALLENGE_PATH) {
            Some(token) if is_token(token) => token,
            _ => return (StatusCode::NOT_FOUND, String::new()),
        };
        match self.get(token).await {
            Some(key_authorization) => (StatusCode::OK, key_authorization),
            None => (StatusCode::NOT_FOUND, String::new()),
        }
    }
}

fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The challenge listener while it runs; [`ChallengeListener::stop`] (or dropping it) closes
/// the port.
pub struct ChallengeListener {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ChallengeListener {
    /// Serves `responses` on an already bound listener (so the caller reports bind errors
    /// with its own words).
    pub fn start<L: Listener>(listener: L, responses: Http01Responses) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, responses, stopped));
        tracing::info!(addr = %local_addr, "ACME challenge listener open");
        Ok(Self {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes the port; connections in flight end with their deadline at the latest.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
        tracing::info!(addr = %self.local_addr, "ACME challenge listener closed");
    }
}

impl Drop for ChallengeListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<L: Listener>(
    mut listener: L,
    responses: Http01Responses,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "ACME challenge listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "ACME challenge listener full; connection closed");
            continue;
        };
        let responses = responses.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let responses = responses.clone();
                async move {
                    let (status, body) = responses
                        .answer(request.method(), request.uri().path())
                        .await;
                    tracing::debug!(%peer, path = request.uri().path(), status = status.as_u16(), "ACME challenge request");
                    let body = if request.method() == Method::HEAD {
                        Bytes::new()
                    } else {
                        Bytes::from(body)
                    };
                    let response = Response::builder()
                        .status(status)
                        .header(hyper::header::CONTENT_TYPE, "text/plain")
                        .body(Full::new(body));
                    Ok::<_, Infallible>(response.unwrap_or_else(|_| {
                        let mut fallback = Response::new(Full::new(Bytes::new()));
                        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        fallback
                    }))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: SocketAddr, raw: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer).await;
        answer
    }

    #[tokio::test]
    async fn answers_published_tokens_only_and_withdraws_them() {
        let responses = Http01Responses::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ChallengeListener::start(listener, responses.clone()).unwrap();
        let addr = server.local_addr();
        let published = responses.publish("tok_EN-1", "tok_EN-1.thumb").unwrap();

        let ok = request(
            addr,
            "GET /.well-known/acme-challenge/tok_EN-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("tok_EN-1.thumb"), "{ok}");

        for path in [
            "/.well-known/acme-challenge/other",
            "/.well-known/acme-challenge/../../etc/passwd",
            "/",
            "/.well-known/acme-challenge/",
        ] {
            let answer = request(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        }
        let post = request(
            addr,
            "POST /.well-known/acme-challenge/tok_EN-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        drop(published);
        let gone = request(
            addr,
            "GET /.well-known/acme-challenge/tok_EN-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(gone.starts_with("HTTP/1.1 404"), "{gone}");

        server.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn an_oversized_request_head_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ChallengeListener::start(listener, Http01Responses::new()).unwrap();
        let huge = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let mut conn = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        // The server may close while we still write: either way no 200/404 comes back.
        let _ = conn.write_all(huge.as_bytes()).await;
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
    }
}

#[cfg(test)]
mod shared_tests {
    use std::sync::Arc;

    use super::*;
    use crate::tls::shared::memory::MemoryShare;

    #[tokio::test]
    async fn a_node_answers_the_token_another_node_published_until_it_is_withdrawn() {
        let database = Arc::new(MemoryShare::default());
        let ordering = Http01Responses::shared(database.node("a"));
        let other = Http01Responses::shared(database.node("b"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ChallengeListener::start(listener, other).unwrap();
        let ask = |addr: SocketAddr| async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            conn.write_all(
                b"GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            let mut answer = String::new();
            let _ = conn.read_to_string(&mut answer).await;
            answer
        };
        assert!(ask(server.local_addr()).await.starts_with("HTTP/1.1 404"));
        let published = ordering.publish("tok-1", "tok-1.thumb").unwrap();
        let answer = ask(server.local_addr()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("tok-1.thumb"), "{answer}");
        drop(published);
        assert!(database.db().challenges.is_empty());
        assert!(ask(server.local_addr()).await.starts_with("HTTP/1.1 404"));
        // A database out of reach fails the publication (the order would fail at the CA
        // anyway) and answers 404 for unknown tokens.
        database
            .down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(ordering.publish("tok-2", "x").is_err());
        assert!(ask(server.local_addr()).await.starts_with("HTTP/1.1 404"));
        server.stop().await;
    }
}

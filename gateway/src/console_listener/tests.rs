//! The console listener's connection handling: admission, timeouts, shutdown, certificate
//! swaps. Requests and answers are covered over HTTPS in `tests/api.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;
use crate::api::http::{auth, response};
use crate::api::ServerContext;
use crate::net::{ConnectionLimits, Shutdown};
use crate::tls::{load_or_create_self_signed, CertResolver, CertifiedMaterial};

/// Long enough that a test fails rather than hangs when the server never closes.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Console {
    addr: SocketAddr,
    resolver: Arc<CertResolver>,
    material: CertifiedMaterial,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn console(limits: ConnectionLimits, options: ConsoleOptions) -> Console {
    let (store_dir, gateway, settings) = crate::api::test_support::gateway_and_settings();
    let tls_dir = tempfile::tempdir().unwrap();
    let material = load_or_create_self_signed(tls_dir.path(), "localhost").unwrap();
    let resolver = Arc::new(CertResolver::new(material.clone()));
    let api = Api::new(
        gateway,
        settings,
        ServerContext::new("localhost".into(), Some(resolver.clone()), "self-signed"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A long grace: a test that relies on it instead of graceful shutdown times out.
    let shutdown = Shutdown::with_grace(Duration::from_secs(3600));
    let server = ConsoleServer::new(api, resolver.clone(), limits, options);
    let task = tokio::spawn(server.serve(listener, shutdown.signal()));
    Console {
        addr,
        resolver,
        material,
        shutdown,
        task,
        _dirs: (store_dir, tls_dir),
    }
}

fn connector(trusted: &[&CertifiedMaterial]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for m in trusted {
        roots.add(m.chain()[0].clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn handshake(
    addr: SocketAddr,
    trusted: &[&CertifiedMaterial],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector(trusted)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the server closes; what it sent meanwhile.
async fn until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(TEST_TIMEOUT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    received
}

fn leaf(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn short(options: impl FnOnce(&mut ConsoleOptions)) -> ConsoleOptions {
    let mut o = ConsoleOptions::default();
    options(&mut o);
    o
}

#[tokio::test]
async fn a_client_that_never_starts_the_handshake_is_closed() {
    let console = console(
        ConnectionLimits::new(10, 10),
        short(|o| o.handshake_timeout = Duration::from_millis(200)),
    )
    .await;
    let mut tcp = TcpStream::connect(console.addr).await.unwrap();
    assert!(until_closed(&mut tcp).await.is_empty());
}

#[tokio::test]
async fn a_client_that_never_sends_its_headers_is_closed() {
    let console = console(
        ConnectionLimits::new(10, 10),
        short(|o| o.header_read_timeout = Duration::from_millis(200)),
    )
    .await;
    let mut tls = handshake(console.addr, &[&console.material]).await;
    tls.write_all(b"POST /api/get-metadata HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let received = until_closed(&mut tls).await;
    // hyper may say 408 before closing; it must not have served the request.
    assert!(
        !String::from_utf8_lossy(&received).contains("200 OK"),
        "{received:?}"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_without_a_handshake() {
    let console = console(ConnectionLimits::new(10, 1), ConsoleOptions::default()).await;
    let _held = handshake(console.addr, &[&console.material]).await;
    let mut second = TcpStream::connect(console.addr).await.unwrap();
    assert!(until_closed(&mut second).await.is_empty());
}

#[tokio::test]
async fn a_certificate_swap_reaches_new_console_connections() {
    let console = console(ConnectionLimits::new(10, 10), ConsoleOptions::default()).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = load_or_create_self_signed(other_dir.path(), "localhost").unwrap();
    let trusted = [&console.material, &other];
    let before = handshake(console.addr, &trusted).await;
    assert_eq!(leaf(&before), console.material.chain()[0]);
    console.resolver.swap(other.clone());
    let after = handshake(console.addr, &trusted).await;
    assert_eq!(leaf(&after), other.chain()[0]);
    assert_eq!(after.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let console = console(ConnectionLimits::new(10, 10), ConsoleOptions::default()).await;
    let mut tls = handshake(console.addr, &[&console.material]).await;
    // One request, then the connection stays open (keep-alive) and idle.
    tls.write_all(b"GET /api/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    console.shutdown.trigger();
    // The grace period is an hour: only a graceful close of the idle connection ends the
    // listener in time.
    tokio::time::timeout(TEST_TIMEOUT, console.task)
        .await
        .expect("the listener stopped")
        .unwrap();
    until_closed(&mut tls).await;
}

fn basic(user_password: &str) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    let value = format!(
        "Basic {}",
        data_encoding::BASE64.encode(user_password.as_bytes())
    );
    headers.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
    headers
}

fn test_api() -> (tempfile::TempDir, Api) {
    crate::api::test_support::api("localhost")
}

/// A client elsewhere guessing passwords is told to wait: 429 with `Retry-After`, and the
/// administrator on the host still gets in at once.
#[tokio::test(start_paused = true)]
async fn a_remote_client_guessing_passwords_gets_429_with_retry_after() {
    let (_dir, api) = test_api();
    let password = api
        .gateway()
        .reset_admin_password(Some("admin"))
        .await
        .unwrap();
    let remote: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let mut throttled = None;
    for _ in 0..20 {
        let e = auth::authenticate(&api, &basic("admin:guess"), remote)
            .await
            .unwrap_err();
        if e.http_status == 429 {
            throttled = Some(e);
            break;
        }
        assert_eq!(e.http_status, 401, "{e:?}");
    }
    let throttled = throttled.expect("guessing is throttled");
    assert_eq!(throttled.kind, "throttled");
    let response = response::error(throttled);
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    let admin = auth::authenticate(&api, &basic(&format!("admin:{}", password.reveal())), local)
        .await
        .unwrap();
    assert_eq!(admin, crate::api::Caller::Admin { client: local });
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_401_the_challenge() {
    use tower::ServiceExt as _;
    let (_dir, api) = test_api();
    let request = axum::http::Request::post("/api/invoke/GetMailboxes")
        .extension(ClientAddr(std::net::IpAddr::from([127, 0, 0, 1])))
        .body(axum::body::Body::empty())
        .unwrap();
    let answer = router(api).oneshot(request).await.unwrap();
    assert_eq!(answer.status(), 401);
    let headers = answer.headers();
    assert_eq!(
        headers["www-authenticate"],
        response::WWW_AUTHENTICATE_VALUE
    );
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("content-security-policy", "frame-ancestors 'none'"),
        ("referrer-policy", "no-referrer"),
        ("content-type", "application/json"),
    ] {
        assert_eq!(headers[name], value, "{name}");
    }
    assert!(headers.contains_key("strict-transport-security"));
}

/// A `tracing` writer into a shared buffer, to read what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything this test process logs. Global rather than a scoped subscriber: tests on
/// other threads hitting the same log lines first could otherwise leave them disabled.
fn captured_logs() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the library's tests");
        captured
    })
}

#[tokio::test]
async fn calls_are_logged_without_credentials_or_parameters() {
    use tower::ServiceExt as _;
    let captured = captured_logs();
    let (_dir, api) = test_api();
    let password = api
        .gateway()
        .reset_admin_password(Some("admin"))
        .await
        .unwrap();
    let local = ClientAddr(std::net::IpAddr::from([127, 0, 0, 1]));
    let router = router(api);
    let call = |credentials: String, body: &'static str| {
        let mut request = axum::http::Request::post("/api/invoke/CreateMailbox")
            .header("content-type", "application/x-www-form-urlencoded")
            .extension(local)
            .body(axum::body::Body::from(body))
            .unwrap();
        request
            .headers_mut()
            .extend(basic(&format!("admin:{credentials}")));
        router.clone().oneshot(request)
    };
    let refused = call("WrongGuess-1234".into(), "name=SecretCorp")
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let created = call(
        password.reveal().to_owned(),
        "name=SecretCorp&description=Hidden+Text",
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 200);
    let body = axum::body::to_bytes(created.into_body(), BODY_LIMIT)
        .await
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mailbox_password = created["result"]["password"].as_str().unwrap().to_owned();

    let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("API call"), "{logged}");
    assert!(logged.contains("CreateMailbox"), "{logged}");
    assert!(logged.contains("API login refused"), "{logged}");
    for secret in [
        "WrongGuess-1234",
        password.reveal(),
        "SecretCorp",
        "Hidden",
        &mailbox_password,
    ] {
        assert!(!logged.contains(secret), "{secret} was logged:\n{logged}");
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408_and_frees_the_connection() {
    let console = console(
        ConnectionLimits::new(10, 10),
        short(|o| o.body_timeout = Duration::from_millis(200)),
    )
    .await;
    let mut tls = handshake(console.addr, &[&console.material]).await;
    // Credentials are checked before the body is read: a first-login one will do.
    let credentials = data_encoding::BASE64.encode(b"admin:admin");
    tls.write_all(
        format!(
            "POST /api/invoke/ResetOwnPassword HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Basic {credentials}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncurrent"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let received = until_closed(&mut tls).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive"), "{text}");
}

#[tokio::test]
async fn a_malformed_function_name_and_an_unknown_method_get_envelopes() {
    use tower::ServiceExt as _;
    let (_dir, api) = test_api();
    let router = router(api);
    for (method, path, status) in [
        ("POST", "/api/invoke/%FF", 400),
        ("DELETE", "/api/get-metadata", 405),
        ("GET", "/nowhere", 404),
    ] {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .extension(ClientAddr(std::net::IpAddr::from([127, 0, 0, 1])))
            .body(axum::body::Body::empty())
            .unwrap();
        let answer = router.clone().oneshot(request).await.unwrap();
        assert_eq!(answer.status(), status, "{method} {path}");
        assert_eq!(answer.headers()["cache-control"], "no-store");
        let body = axum::body::to_bytes(answer.into_body(), BODY_LIMIT)
            .await
            .unwrap();
        let envelope: crate::api::Envelope = serde_json::from_slice(&body).unwrap();
        assert_eq!(envelope.status_code, crate::api::StatusCode::Failed);
        assert!(envelope.error.is_some());
    }
}

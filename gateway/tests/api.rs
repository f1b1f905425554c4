//! The Management API over HTTPS with a real HTTP client (reqwest over rustls, trusting
//! only the gateway's self-signed certificate).

mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;
use support::{TestGateway, HOST_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// An HTTPS client for one test gateway.
struct ApiClient {
    http: reqwest::Client,
    base: String,
}

/// One answer: status, headers and the JSON body.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

#[allow(dead_code)] // Until the login tests use them.
impl Reply {
    fn kind(&self) -> &str {
        self.body["error"]["kind"].as_str().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    fn expect_failed(&self, status: u16, kind: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{self:#?}");
        assert_eq!(self.body["statusCode"], "failed", "{self:#?}");
        assert_eq!(self.kind(), kind, "{self:#?}");
        assert_eq!(self.body["result"], Value::Null, "{self:#?}");
        self
    }

    fn expect_succeeded(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{self:#?}");
        assert_eq!(self.body["statusCode"], "succeeded", "{self:#?}");
        assert_eq!(self.body["error"], Value::Null, "{self:#?}");
        &self.body["result"]
    }
}

fn rustls_config(ca_file: &std::path::Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let pem = std::fs::read(ca_file).expect("read CA file");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("PEM certificate")).expect("add root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

impl ApiClient {
    fn new(gateway: &TestGateway) -> Self {
        Self::with_alpn(gateway, &[b"h2", b"http/1.1"])
    }

    fn with_alpn(gateway: &TestGateway, alpn: &[&[u8]]) -> Self {
        let addr = gateway.console_addr();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(rustls_config(&gateway.ca_file(), alpn))
            .resolve(HOST_NAME, addr)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        Self {
            http,
            base: format!("https://{HOST_NAME}:{}", addr.port()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("HTTPS request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("response body");
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: the body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Reply {
            status,
            headers,
            body,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path))
    }
}

fn assert_security_headers(reply: &Reply) {
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{name} missing: {reply:#?}"))
            .to_owned()
    };
    assert_eq!(header("cache-control"), "no-store");
    assert!(header("strict-transport-security").starts_with("max-age="));
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("content-security-policy"), "frame-ancestors 'none'");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert!(header("content-type").starts_with("application/json"));
}

#[tokio::test]
async fn the_openapi_document_needs_no_login_and_lists_every_function() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let client = ApiClient::new(&gateway);
    let reply = client
        .send(client.http.get(client.url("/api/openapi.json")))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_security_headers(&reply);
    assert_eq!(reply.body["openapi"], "3.1.0");
    for function in ["GetMailboxes", "CreateMailbox", "GetServerInfo"] {
        let path = format!("/api/invoke/{function}");
        assert!(reply.body["paths"][&path]["post"].is_object(), "{path}");
    }
}

#[tokio::test]
async fn without_credentials_every_function_is_401_with_a_basic_challenge() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let client = ApiClient::new(&gateway);
    for path in [
        "/api/invoke/GetMailboxes",
        "/api/get-metadata",
        "/api/get-status",
    ] {
        let reply = client.send(client.post(path)).await;
        reply.expect_failed(401, "unauthorized");
        assert_security_headers(&reply);
        assert_eq!(
            reply.headers["www-authenticate"],
            "Basic realm=\"gateway\", charset=\"UTF-8\""
        );
    }
    // Malformed credentials are no better.
    let reply = client
        .send(
            client
                .post("/api/invoke/GetMailboxes")
                .header("authorization", "Basic !!!"),
        )
        .await;
    reply.expect_failed(401, "unauthorized");
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_with_the_envelope() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let client = ApiClient::new(&gateway);
    let reply = client.send(client.http.get(client.url("/"))).await;
    reply.expect_failed(404, "not_found");
    assert_security_headers(&reply);
    let reply = client.send(client.post("/api/invoke")).await;
    reply.expect_failed(404, "not_found");
    let reply = client
        .send(client.http.get(client.url("/api/invoke/GetMailboxes")))
        .await;
    reply.expect_failed(405, "invalid_input");
    assert_security_headers(&reply);
    let reply = client.send(client.post("/api/openapi.json")).await;
    reply.expect_failed(405, "invalid_input");
}

#[tokio::test]
async fn a_body_declared_over_64_kib_is_refused_before_login() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let client = ApiClient::new(&gateway);
    let reply = client
        .send(
            client
                .post("/api/invoke/CreateMailbox")
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!("name={}", "a".repeat(70 * 1024))),
        )
        .await;
    reply.expect_failed(413, "invalid_input");
    assert_security_headers(&reply);
}

#[tokio::test]
async fn http1_and_http2_both_work() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    for (alpn, version) in [
        (&b"h2"[..], reqwest::Version::HTTP_2),
        (&b"http/1.1"[..], reqwest::Version::HTTP_11),
    ] {
        let client = ApiClient::with_alpn(&gateway, &[alpn]);
        let response = client
            .http
            .get(client.url("/api/openapi.json"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn plaintext_http_on_the_console_port_gets_no_http_answer() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.console_addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /api/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
        .await
        .expect("the gateway closes the connection");
    // The connection ends (cleanly or reset) after at most a TLS alert.
    let _ = read;
    assert!(
        !String::from_utf8_lossy(&received).contains("HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(received.len() < 16, "{received:?}");
}

#[tokio::test]
async fn the_console_listener_is_reported_by_get_server_info_as_listening() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let api = gateway.api();
    let answer = api
        .invoke(
            &gateway::api::Caller::Host,
            "GetServerInfo",
            Default::default(),
        )
        .await;
    assert!(answer.is_success(), "{answer:?}");
    let listeners = &answer.envelope.result["listeners"];
    let console = listeners
        .as_array()
        .expect("listeners")
        .iter()
        .find(|l| l["name"] == "console")
        .expect("console listed");
    assert_eq!(console["state"], "listening");
    assert_eq!(
        console["port"].as_u64(),
        Some(u64::from(gateway.console_addr().port()))
    );
}

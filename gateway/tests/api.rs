//! The Management API over HTTPS with a real HTTP client (reqwest over rustls, trusting
//! only the gateway's self-signed certificate).

mod support;

use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{TestGateway, HOST_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

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
    let mut config = support::client_config(ca_file);
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

    /// `function` with form parameters, as `admin` with `password`.
    async fn basic(&self, password: &str, function: &str, params: &[(&str, &str)]) -> Reply {
        self.send(
            self.post(&format!("/api/invoke/{function}"))
                .basic_auth(ADMIN, Some(password))
                .form(params),
        )
        .await
    }

    /// `function` with a JSON object of parameters, with an API key.
    async fn bearer(&self, key: &str, function: &str, params: Value) -> Reply {
        self.send(
            self.post(&format!("/api/invoke/{function}"))
                .bearer_auth(key)
                .json(&params),
        )
        .await
    }

    /// The first login: `admin`/`admin` replaces the initial password; returns the new one.
    async fn first_login(&self) -> String {
        let reply = self
            .basic(ADMIN, "ResetOwnPassword", &[("currentPassword", ADMIN)])
            .await;
        let result = reply.expect_succeeded();
        result["password"]
            .as_str()
            .unwrap_or_else(|| panic!("no password in {result}"))
            .to_owned()
    }

    /// A new API key: its id and the key.
    async fn create_key(&self, password: &str, name: &str) -> (String, String) {
        let reply = self
            .basic(password, "CreateApiKey", &[("name", name)])
            .await;
        let result = reply.expect_succeeded();
        let id = result["id"].as_str().expect("key id").to_owned();
        let key = result["key"].as_str().expect("key").to_owned();
        (id, key)
    }
}

const ADMIN: &str = "admin";

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
    // (`/` itself leads to the web console.)
    let reply = client
        .send(client.http.get(client.url("/no-such-path")))
        .await;
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

/// A gateway with the console, the first login done and an API key.
async fn logged_in() -> (TestGateway, ApiClient, String, String) {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let client = ApiClient::new(&gateway);
    let password = client.first_login().await;
    let (_, key) = client.create_key(&password, "tests").await;
    (gateway, client, password, key)
}

#[tokio::test]
async fn every_mailbox_function_succeeds_with_a_key_and_with_the_password() {
    let (gateway, client, password, key) = logged_in().await;
    // Form parameters with the password.
    let created = client
        .basic(
            &password,
            "CreateMailbox",
            &[("name", "Acme"), ("description", "journal of Acme")],
        )
        .await;
    let created = created.expect_succeeded().clone();
    let id = created["id"].as_str().expect("id").to_owned();
    let address = created["address"].as_str().expect("address").to_owned();
    assert!(created["password"].as_str().is_some_and(|p| p.len() >= 16));
    assert_eq!(created["status"], "active");

    // JSON parameters with the key; the mailbox by its id and by its address.
    let list = client.bearer(&key, "GetMailboxes", json!({})).await;
    let list = list.expect_succeeded().as_array().expect("a list").clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    for name in [&id, &address] {
        let one = client.bearer(&key, "GetMailbox", json!({"id": name})).await;
        let one = one.expect_succeeded();
        assert_eq!(one["id"], id.as_str());
        assert_eq!(one["messageCount"], 0);
        assert!(one.get("password").is_none(), "{one}");
    }
    let edited = client
        .bearer(
            &key,
            "SetMailboxProperties",
            json!({"id": id, "name": "Acme Corp", "status": "suspended"}),
        )
        .await;
    let edited = edited.expect_succeeded();
    assert_eq!(edited["name"], "Acme Corp");
    assert_eq!(edited["status"], "suspended");
    let reset = client
        .bearer(&key, "ResetMailboxPassword", json!({"id": address}))
        .await;
    let new_password = reset.expect_succeeded()["password"].clone();
    assert!(new_password
        .as_str()
        .is_some_and(|p| p != created["password"]));
    let deleted = client
        .bearer(&key, "DeleteMailbox", json!({"id": id}))
        .await;
    assert_eq!(deleted.expect_succeeded()["deleted"], true);
    let gone = client.bearer(&key, "GetMailbox", json!({"id": id})).await;
    gone.expect_failed(404, "not_found");
    assert!(gateway.gateway().list_mailboxes().unwrap().is_empty());
}

#[tokio::test]
async fn server_functions_and_metadata_succeed() {
    let (gateway, client, _password, key) = logged_in().await;
    let info = client.bearer(&key, "GetServerInfo", json!({})).await;
    let info = info.expect_succeeded();
    assert_eq!(info["hostName"], HOST_NAME);
    assert_eq!(info["emailDomain"], support::EMAIL_DOMAIN);
    let console = info["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .find(|l| l["name"] == "console")
        .expect("console listed")
        .clone();
    assert_eq!(console["state"], "listening");
    assert_eq!(
        console["port"].as_u64(),
        Some(u64::from(gateway.console_addr().port()))
    );
    let certificate = client.bearer(&key, "GetCertificateInfo", json!({})).await;
    let certificate = certificate.expect_succeeded();
    assert_eq!(certificate["source"], "self-signed");
    assert!(certificate["daysLeft"].as_i64().is_some_and(|d| d > 0));
    let metadata = client
        .send(client.post("/api/get-metadata").bearer_auth(&key))
        .await;
    let metadata = metadata.expect_succeeded();
    let names: Vec<&str> = metadata
        .as_array()
        .expect("functions")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(names.contains(&"CreateMailbox"), "{names:?}");
    assert!(!names.contains(&"ResetAdminPassword"), "{names:?}");
}

#[tokio::test]
async fn api_keys_are_listed_and_a_revoked_key_is_refused() {
    let (_gateway, client, password, key) = logged_in().await;
    let (id, second) = client.create_key(&password, "backup script").await;
    let keys = client.bearer(&key, "GetApiKeys", json!({})).await;
    let keys = keys.expect_succeeded().as_array().expect("list").clone();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.get("key").is_none()), "{keys:?}");
    assert!(keys.iter().any(|k| k["name"] == "backup script"));
    client
        .bearer(&second, "GetMailboxes", json!({}))
        .await
        .expect_succeeded();
    client
        .bearer(&key, "RevokeApiKey", json!({"id": id}))
        .await
        .expect_succeeded();
    let refused = client.bearer(&second, "GetMailboxes", json!({})).await;
    refused.expect_failed(401, "unauthorized");
    assert!(refused.headers.contains_key("www-authenticate"));
    // A made-up key is no better.
    client
        .bearer("gwk_nothing_here", "GetMailboxes", json!({}))
        .await
        .expect_failed(401, "unauthorized");
}

#[tokio::test]
async fn the_initial_password_only_replaces_itself_once() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let client = ApiClient::new(&gateway);
    // Before the first login: admin/admin may do nothing else.
    let refused = client.basic(ADMIN, "GetMailboxes", &[]).await;
    refused.expect_failed(403, "forbidden");
    assert!(
        refused.message().contains("ResetOwnPassword"),
        "{refused:#?}"
    );
    let password = client.first_login().await;
    assert_ne!(password, ADMIN);
    assert!(password.len() >= 16, "{password}");
    // From now on admin/admin is refused, the new password works.
    client
        .basic(ADMIN, "GetMailboxes", &[])
        .await
        .expect_failed(401, "wrong_password");
    client
        .basic(ADMIN, "ResetOwnPassword", &[("currentPassword", ADMIN)])
        .await
        .expect_failed(401, "wrong_password");
    client
        .basic(&password, "GetMailboxes", &[])
        .await
        .expect_succeeded();
    // Resetting one's own password needs the current one and answers a new one.
    let reset = client
        .basic(
            &password,
            "ResetOwnPassword",
            &[("currentPassword", &password)],
        )
        .await;
    let newer = reset.expect_succeeded()["password"]
        .as_str()
        .expect("new password")
        .to_owned();
    assert_ne!(newer, password);
    client
        .basic(&password, "GetMailboxes", &[])
        .await
        .expect_failed(401, "wrong_password");
    client
        .basic(&newer, "GetMailboxes", &[])
        .await
        .expect_succeeded();
}

#[tokio::test]
async fn wrong_passwords_and_other_users_are_refused() {
    let (_gateway, client, password, _key) = logged_in().await;
    let wrong = client.basic("not-the-password", "GetMailboxes", &[]).await;
    wrong.expect_failed(401, "wrong_password");
    assert!(wrong.headers.contains_key("www-authenticate"));
    assert!(!wrong.body.to_string().contains("not-the-password"));
    let other_user = client
        .send(
            client
                .post("/api/invoke/GetMailboxes")
                .basic_auth("root", Some(&password)),
        )
        .await;
    other_user.expect_failed(401, "wrong_password");
    // The real password still works after failures from this (loopback) client.
    client
        .basic(&password, "GetMailboxes", &[])
        .await
        .expect_succeeded();
}

#[tokio::test]
async fn clients_not_on_loopback_are_refused_before_the_first_login() {
    use gateway::api::http::auth::authenticate;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let api = gateway.api();
    let remote: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let basic = |user_password: &str| {
        let mut headers = axum_headers();
        let encoded = base64(user_password);
        headers.insert("authorization", format!("Basic {encoded}").parse().unwrap());
        headers
    };
    // Even with the initial password, and without any password check (no throttling).
    let refused = authenticate(&api, &basic("admin:admin"), remote)
        .await
        .unwrap_err();
    assert_eq!(refused.http_status, 403, "{refused:?}");
    let refused = authenticate(&api, &axum_headers(), remote)
        .await
        .unwrap_err();
    assert_eq!(refused.http_status, 403, "{refused:?}");
    // Loopback may log in with it, as the first-login caller.
    let local = authenticate(&api, &basic("admin:admin"), "::1".parse().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        local,
        gateway::api::Caller::AdminFirstLogin { .. }
    ));
    // After the first login, the same remote client is let in with the real password.
    let client = ApiClient::new(&gateway);
    let password = client.first_login().await;
    let admin = authenticate(&api, &basic(&format!("admin:{password}")), remote)
        .await
        .unwrap();
    assert_eq!(admin, gateway::api::Caller::Admin { client: remote });
}

fn axum_headers() -> axum::http::HeaderMap {
    axum::http::HeaderMap::new()
}

fn base64(text: &str) -> String {
    data_encoding::BASE64.encode(text.as_bytes())
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let (_gateway, client, _password, key) = logged_in().await;
    client
        .bearer(&key, "NoSuchFunction", json!({}))
        .await
        .expect_failed(404, "unknown_function");
    // Missing, malformed and unknown parameters.
    for params in [
        json!({}),
        json!({"id": 42}),
        json!({"id": "mbx-0123456789abcdef0123456789abcdef", "colour": "red"}),
        json!({"id": "not a mailbox"}),
    ] {
        let reply = client.bearer(&key, "GetMailbox", params.clone()).await;
        reply.expect_failed(400, "invalid_input");
        assert!(!reply.message().is_empty(), "{params}");
    }
    let unknown = client
        .bearer(&key, "GetMailboxes", json!({"colour": "red"}))
        .await;
    unknown.expect_failed(400, "invalid_input");
    assert!(
        unknown.body["error"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("colour")),
        "{unknown:#?}"
    );
    // Malformed bodies, repeated form fields, unsupported types.
    let send = |body: &'static str, content_type: &'static str| {
        client
            .post("/api/invoke/CreateMailbox")
            .bearer_auth(&key)
            .header(CONTENT_TYPE, content_type)
            .body(body)
    };
    client
        .send(send("{\"name\":", "application/json"))
        .await
        .expect_failed(400, "invalid_input");
    client
        .send(send("[\"name\"]", "application/json"))
        .await
        .expect_failed(400, "invalid_input");
    client
        .send(send("name=a&name=b", "application/x-www-form-urlencoded"))
        .await
        .expect_failed(400, "invalid_input");
    client
        .send(send("name=a", "text/plain"))
        .await
        .expect_failed(415, "invalid_input");
    client
        .send(send("<name>a</name>", "application/xml"))
        .await
        .expect_failed(415, "invalid_input");
    // Oversized, with a declared length and with a chunked body.
    let big = format!("name={}", "a".repeat(64 * 1024));
    client
        .send(
            client
                .post("/api/invoke/CreateMailbox")
                .bearer_auth(&key)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(big),
        )
        .await
        .expect_failed(413, "invalid_input");
    // get-status with a token no run has.
    client
        .send(
            client
                .post("/api/get-status")
                .bearer_auth(&key)
                .form(&[("token", "abc")]),
        )
        .await
        .expect_failed(404, "not_found");
    assert!(gateway_has_no_mailboxes(&_gateway));
}

fn gateway_has_no_mailboxes(gateway: &TestGateway) -> bool {
    gateway.gateway().list_mailboxes().unwrap().is_empty()
}

#[tokio::test]
async fn mailbox_rules_are_409_with_what_to_do() {
    let (gateway, client, _password, key) = logged_in().await;
    let created = client
        .bearer(&key, "CreateMailbox", json!({"name": "Acme"}))
        .await;
    let created = created.expect_succeeded().clone();
    let id = created["id"].as_str().unwrap().to_owned();
    let address = created["address"].as_str().unwrap().to_owned();

    // Active: neither deleted nor given a new password.
    let delete = client
        .bearer(&key, "DeleteMailbox", json!({"id": id}))
        .await;
    delete.expect_failed(409, "conflict");
    assert!(delete.message().contains("suspended first"), "{delete:#?}");
    let reset = client
        .bearer(&key, "ResetMailboxPassword", json!({"id": id}))
        .await;
    reset.expect_failed(409, "conflict");

    // Suspended but holding mail: not deleted.
    gateway
        .deliver(&address, b"Subject: kept\r\n\r\nbody\r\n")
        .await;
    client
        .bearer(
            &key,
            "SetMailboxProperties",
            json!({"id": id, "status": "suspended"}),
        )
        .await
        .expect_succeeded();
    let delete = client
        .bearer(&key, "DeleteMailbox", json!({"id": id}))
        .await;
    delete.expect_failed(409, "conflict");
    assert!(
        delete
            .message()
            .contains("suspend the mailbox and let the archiver empty it first"),
        "{delete:#?}"
    );
    let info = client.bearer(&key, "GetMailbox", json!({"id": id})).await;
    let info = info.expect_succeeded();
    assert_eq!(info["messageCount"], 1);
}

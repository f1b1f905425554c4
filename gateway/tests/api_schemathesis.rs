//! schemathesis fuzzes the Management API against its own OpenAPI document: no answer may
//! be a server error, and every answer must match the schema it documents.
//!
//! schemathesis is a required test tool (`cargo xtask ci` installs it); this test fails,
//! rather than skips, when it is missing. `GATEWAY_SCHEMATHESIS` names its `st` command
//! when that is not on `PATH`.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{TestGateway, HOST_NAME};

/// What CI installs (xtask's deps step pins the same release).
const INSTALL: &str = "pip install schemathesis==4.32.5";

fn http_client(gateway: &TestGateway) -> reqwest::Client {
    let config = support::client_config(&gateway.ca_file());
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .resolve(HOST_NAME, gateway.console_addr())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// Invokes `function` with form `params` as `user:password`; returns the result.
async fn invoke_basic(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
    function: &str,
    params: &[(&str, &str)],
) -> Value {
    let response = http
        .post(format!("{base}/api/invoke/{function}"))
        .basic_auth(user, Some(password))
        .form(params)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON body");
    assert!(status.is_success(), "{function}: {status} {body}");
    body["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    // schemathesis opens new connections for some cases and leaves the idle ones to
    // Python's garbage collector; at the default per-client limit (20) a slow run had a
    // handshake refused ("EOF occurred in violation of protocol"), and at 2 every run
    // does. The console's limit itself is tested in api/http/tests.rs.
    let gateway = TestGateway::start_with_console(|c| c.limits.max_connections_per_ip = 500).await;
    let http = http_client(&gateway);
    let port = gateway.console_addr().port();
    let base = format!("https://{HOST_NAME}:{port}");

    // The first login replaces the initial password; an API key for the fuzzer.
    let first = invoke_basic(
        &http,
        &base,
        "admin",
        "admin",
        "ResetOwnPassword",
        &[("currentPassword", "admin")],
    )
    .await;
    let password = first["password"]
        .as_str()
        .expect("the first login answers with the new password")
        .to_owned();
    let created = invoke_basic(
        &http,
        &base,
        "admin",
        &password,
        "CreateApiKey",
        &[("name", "schemathesis")],
    )
    .await;
    let key = created["key"].as_str().expect("the new key").to_owned();

    let st = std::env::var_os("GATEWAY_SCHEMATHESIS").unwrap_or_else(|| "st".into());
    let reports = gateway.scratch().join("schemathesis");
    // The certificate names 127.0.0.1, so schemathesis verifies it against our CA.
    let url = format!("https://127.0.0.1:{port}/api/openapi.json");
    let mut command = tokio::process::Command::new(&st);
    command
        .arg("run")
        .arg(&url)
        .arg("--header")
        .arg(format!("Authorization: Bearer {key}"))
        .arg("--tls-verify")
        .arg(gateway.ca_file())
        .args([
            "--checks",
            "all",
            // Wrong current passwords are slowed down more and more by the login throttle,
            // as they must be; tests/api.rs covers ResetOwnPassword.
            "--exclude-operation-id",
            "ResetOwnPassword",
            // It would learn the fuzzer's own key id from GetApiKeys and revoke it, leaving
            // every later request a 401; tests/api.rs covers it.
            "--exclude-operation-id",
            "RevokeApiKey",
            // Its parameters come in two alternative pairs (PEM chain and key, or PKCS#12 and
            // password), which the schema does not express, and random bytes are never a
            // certificate; the import tests in api::tests, tls and cli_live cover it.
            "--exclude-operation-id",
            "ImportCertificate",
            // Both order certificates from an ACME CA: the network beyond loopback (Let's
            // Encrypt by default) and minutes per run; tests/acme.rs and acme_live.rs cover
            // them against Pebble.
            "--exclude-operation-id",
            "RequestAcmeCertificate",
            "--exclude-operation-id",
            "RenewCertificate",
            "--seed",
            "20261204",
            "--max-examples",
            "30",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            "--output-truncate",
            "false",
            "--request-timeout",
            "30",
        ])
        // The key must not end up in a report on disk.
        .arg("--report-dir")
        .arg(&reports)
        // Its cache (`.schemathesis/`) goes to the scratch directory, not the source tree.
        .current_dir(gateway.scratch())
        .kill_on_drop(true)
        .stdin(Stdio::null());
    let output = match command.output().await {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "schemathesis is not installed (no `{}`): install it with `{INSTALL}` \
             (`cargo xtask ci` does), or set GATEWAY_SCHEMATHESIS to its `st` command",
            st.to_string_lossy()
        ),
        Err(e) => panic!("cannot run {}: {e}", st.to_string_lossy()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown with --nocapture, or in the failure below.
    println!("{stdout}");
    // A warning that authentication failed means the run tested little beyond 401s.
    assert!(
        !stdout.contains("Authentication failed"),
        "schemathesis could not authenticate:\n{stdout}"
    );
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

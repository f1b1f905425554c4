//! The README's curl examples, run with curl itself against a running gateway: the first
//! login, an API key, a mailbox's life and the certificate's expiry, with form and JSON
//! bodies as the README writes them.

mod support;

use std::path::Path;

use serde_json::Value;
use support::TestGateway;

/// Runs curl with `args` after the README's common options; returns its exit code and the
/// JSON it printed (Null when it printed none).
async fn curl(ca_file: &Path, args: &[&str]) -> (i32, Value) {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert"])
        .arg(ca_file)
        .args(args)
        .output()
        .await
        .expect("curl runs (cargo xtask ci installs it)");
    let body = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), body)
}

async fn succeeded(ca_file: &Path, args: &[&str]) -> Value {
    let (code, body) = curl(ca_file, args).await;
    assert_eq!(code, 0, "curl {args:?}: {body}");
    assert_eq!(body["statusCode"], "succeeded", "curl {args:?}: {body}");
    body["result"].clone()
}

#[tokio::test]
async fn the_readme_curl_examples_work_with_curl() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let ca = gateway.ca_file();
    let base = format!("https://127.0.0.1:{}", gateway.console_addr().port());
    let url = |function: &str| format!("{base}/api/invoke/{function}");

    // First login on the gateway's machine: the initial password buys a new one, once.
    let first = succeeded(
        &ca,
        &[
            "-u",
            "admin:admin",
            &url("ResetOwnPassword"),
            "-d",
            "currentPassword=admin",
        ],
    )
    .await;
    let password = first["password"].as_str().expect("password").to_owned();
    let basic = format!("admin:{password}");

    let key = succeeded(
        &ca,
        &[
            "-u",
            &basic,
            &url("CreateApiKey"),
            "-d",
            "name=provisioning",
        ],
    )
    .await;
    let bearer = format!(
        "Authorization: Bearer {}",
        key["key"].as_str().expect("key")
    );

    let created = succeeded(
        &ca,
        &[
            "-H",
            &bearer,
            &url("CreateMailbox"),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"name": "Sales journal"}"#,
        ],
    )
    .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(!created["password"].as_str().expect("password").is_empty());

    let listed = succeeded(&ca, &["-H", &bearer, "-X", "POST", &url("GetMailboxes")]).await;
    assert_eq!(listed[0]["id"], id.as_str());
    let shown = succeeded(
        &ca,
        &["-H", &bearer, &url("GetMailbox"), "-d", &format!("id={id}")],
    )
    .await;
    assert_eq!(shown["name"], "Sales journal");
    assert_eq!(shown["messageCount"], 0);

    // Deleting an active mailbox is refused with what to do; --fail turns it into curl's 22.
    let (code, refused) = curl(
        &ca,
        &[
            "--fail-with-body",
            "-H",
            &bearer,
            &url("DeleteMailbox"),
            "-d",
            &format!("id={id}"),
        ],
    )
    .await;
    assert_eq!(code, 22, "{refused}");
    assert_eq!(refused["error"]["kind"], "conflict");

    let suspended = succeeded(
        &ca,
        &[
            "-H",
            &bearer,
            &url("SetMailboxProperties"),
            "-d",
            &format!("id={id}"),
            "-d",
            "status=suspended",
        ],
    )
    .await;
    assert_eq!(suspended["status"], "suspended");
    let deleted = succeeded(
        &ca,
        &[
            "-H",
            &bearer,
            &url("DeleteMailbox"),
            "-d",
            &format!("id={id}"),
        ],
    )
    .await;
    assert_eq!(deleted["deleted"], true);

    let certificate = succeeded(
        &ca,
        &["-H", &bearer, "-X", "POST", &url("GetCertificateInfo")],
    )
    .await;
    assert!(certificate["daysLeft"].as_i64().expect("daysLeft") > 0);
    assert_eq!(certificate["source"], "self-signed");

    // The initial password is refused from now on.
    let (_, again) = curl(
        &ca,
        &[
            "-u",
            "admin:admin",
            &url("ResetOwnPassword"),
            "-d",
            "currentPassword=admin",
        ],
    )
    .await;
    assert_eq!(again["error"]["kind"], "wrong_password");
}

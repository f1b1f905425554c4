//! The `gateway` command line, run as a real process.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn gateway(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .current_dir(dir)
        .env("GATEWAY_DATA_DIR", dir.join("data"))
        .env_remove("GATEWAY_CONFIG")
        .output()
        .unwrap()
}

fn ok_json(dir: &Path, args: &[&str]) -> Value {
    let out = gateway(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails_with(dir: &Path, args: &[&str], needle: &str) {
    let out = gateway(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

#[test]
fn mailbox_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = ok_json(
        d,
        &[
            "mailbox",
            "create",
            "--name",
            "Sales",
            "--description",
            "journal",
            "--json",
        ],
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("mbx-") && id.len() == 36);
    assert_eq!(created["address"], format!("{id}@localhost"));
    assert_eq!(created["status"], "active");
    let password = created["password"].as_str().unwrap();
    assert_eq!(password.replace('-', "").len(), 32);

    // The password appears in no later output and in no file.
    let list = ok_json(d, &["mailbox", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("password").is_none());
    let store = std::fs::read(d.join("data/gateway.redb")).unwrap();
    assert!(!store
        .windows(password.len())
        .any(|w| w == password.as_bytes()));

    // Ids and addresses are accepted in any case.
    let shown = ok_json(d, &["mailbox", "show", &id.to_uppercase(), "--json"]);
    assert_eq!(shown["name"], "Sales");
    let by_address = ok_json(
        d,
        &[
            "mailbox",
            "show",
            &format!("{}@LOCALHOST", id.to_uppercase()),
            "--json",
        ],
    );
    assert_eq!(by_address["id"], id.as_str());

    let edited = ok_json(d, &["mailbox", "edit", &id, "--name", "Sales EU", "--json"]);
    assert_eq!(
        (edited["name"].as_str(), edited["description"].as_str()),
        (Some("Sales EU"), Some("journal"))
    );

    fails_with(d, &["mailbox", "delete", &id], "must be suspended first");
    fails_with(
        d,
        &["mailbox", "reset-password", &id],
        "must be suspended first",
    );
    assert_eq!(
        ok_json(d, &["mailbox", "suspend", &id, "--json"])["status"],
        "suspended"
    );
    let reset = ok_json(d, &["mailbox", "reset-password", &id, "--json"]);
    assert_ne!(reset["password"], created["password"]);
    assert_eq!(
        ok_json(d, &["mailbox", "activate", &id, "--json"])["status"],
        "active"
    );
    ok_json(d, &["mailbox", "suspend", &id, "--json"]);
    assert_eq!(
        ok_json(d, &["mailbox", "delete", &id, "--json"])["deleted"],
        true
    );
    fails_with(d, &["mailbox", "show", &id], "no mailbox");
    fails_with(d, &["mailbox", "show", "mbx-123"], "not a mailbox id");
}

#[test]
fn human_output_shows_the_password_once_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway(dir.path(), &["mailbox", "create", "--name", "HR"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Password:") && text.contains("shown only this once"),
        "{text}"
    );
    let list = gateway(dir.path(), &["mailbox", "list"]);
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(text.contains("HR") && !text.contains("Password"), "{text}");
}

#[test]
fn config_init_writes_a_file_that_checks_and_bad_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = gateway(d, &["config", "init"]);
    assert!(out.status.success());
    assert!(gateway(d, &["config", "check"]).status.success());
    fails_with(d, &["config", "init"], "already exists");

    let text = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    let broken = text.replacen("max_recipients", "max_recipientz", 1);
    std::fs::write(d.join("gateway.toml"), broken).unwrap();
    fails_with(d, &["config", "check"], "max_recipientz");
    // Commands that need the configuration refuse it too, with the same message.
    fails_with(d, &["mailbox", "list"], "max_recipientz");
    fails_with(
        d,
        &["--config", "missing.toml", "mailbox", "list"],
        "missing.toml",
    );
}

#[test]
fn a_second_process_is_told_the_store_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = gateway::config::Config {
        gateway: gateway::config::GatewaySection {
            data_dir: dir.path().join("data"),
            ..Default::default()
        },
        ..Default::default()
    };
    let _held = gateway::service::Gateway::open(&config).unwrap();
    fails_with(
        dir.path(),
        &["mailbox", "list"],
        "in use by a running gateway",
    );
}

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

/// A configuration with only SMTP, on 127.0.0.1 at `port`.
fn smtp_only_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    let mut text = String::from(
        "[gateway]\nemail_domain = \"archive.test\"\nhost_name = \"mx.archive.test\"\n",
    );
    text.push_str(&format!(
        "[listen.smtp]\naddress = \"127.0.0.1\"\nport = {port}\n"
    ));
    for off in [
        "smtps",
        "submission",
        "pop3",
        "pop3s",
        "console",
        "acme_http",
    ] {
        text.push_str(&format!("[listen.{off}]\nenabled = false\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bind_failure_names_its_cause_once_and_never_says_ready() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = smtp_only_config(dir.path(), port);
    let out = gateway(dir.path(), &["--config", config.to_str().unwrap(), "serve"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (smtp)")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "the cause once: {stderr}"
    );
    assert!(!stderr.contains("gateway ready"), "{stderr}");
}

#[test]
fn ready_is_logged_after_the_ports_are_bound() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let config = smtp_only_config(dir.path(), port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .current_dir(dir.path())
        .env("GATEWAY_DATA_DIR", dir.path().join("data"))
        .env_remove("GATEWAY_CONFIG")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("gateway ready") => break true,
            Some(Ok(line)) => seen.push(line),
            _ => break false,
        }
    };
    // Once "ready" is out, the port answers at the first attempt.
    let answered = ready
        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut stream| {
            let mut greeting = [0u8; 3];
            stream.read_exact(&mut greeting).is_ok() && &greeting == b"220"
        });
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "no ready line: {seen:?}");
    assert!(
        seen.iter().any(|line| line.contains("listening")),
        "ready before the listeners: {seen:?}"
    );
    assert!(answered, "ready, but the port did not answer");
}

//! The `gateway` command line, run as a real process.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod served;

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
    assert!(
        shown["oldestMessageAt"].is_null(),
        "an empty mailbox has no oldest message: {shown}"
    );
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
    // GATEWAY_DATA_DIR (or --data-dir) is written into the file, as packages need.
    let written = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    let expected = format!("data_dir = \"{}\"", d.join("data").display());
    assert!(written.contains(&expected), "{written}");
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
    // Held, yet no control socket answers: the command says so instead of waiting.
    fails_with(
        dir.path(),
        &["mailbox", "list"],
        "in use by a running gateway, but it does not answer on its control socket",
    );
}

#[test]
fn json_command_errors_are_one_json_object_and_keep_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, kind) in [
        (
            &[
                "mailbox",
                "show",
                "mbx-0123456789abcdef0123456789abcdef",
                "--json",
            ][..],
            "not_found",
        ),
        (
            &["mailbox", "show", "not-an-id", "--json"][..],
            "invalid_input",
        ),
    ] {
        let out = gateway(d, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let value: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(value["error"]["kind"], kind, "{value}");
        assert!(value["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Without --json the error stays text on stderr.
    let out = gateway(d, &["mailbox", "show", "not-an-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}

#[test]
fn config_check_prints_the_data_directory_serve_will_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `config init` writes the data directory it is given into the file.
    let in_file = d.join("from-file");
    assert!(gateway(
        d,
        &["config", "init", "--data-dir", in_file.to_str().unwrap()]
    )
    .status
    .success());
    // `gateway()` sets GATEWAY_DATA_DIR to <dir>/data, which overrides the file's.
    let out = gateway(d, &["config", "check"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.contains("data dir:")).unwrap();
    assert!(
        line.contains(&d.join("data").display().to_string()),
        "{text}"
    );
    assert!(line.contains("GATEWAY_DATA_DIR"), "{text}");
    assert!(
        line.contains(&format!("the file says {}", in_file.display())),
        "{text}"
    );
    // --data-dir wins over the environment.
    let other = d.join("elsewhere");
    let out = gateway(
        d,
        &["config", "check", "--data-dir", other.to_str().unwrap()],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&other.display().to_string()), "{text}");
}

/// Under `cargo test --workspace` this binary has the `test-support` feature (sim enables it and
/// cargo unifies features), under `cargo test -p gateway` it does not: either way `serve` must
/// refuse exactly when the feature is in. The missing configuration file makes a production
/// binary fail right after the check, so nothing starts listening.
#[test]
fn serve_refuses_a_test_support_build_unless_the_test_override_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = |override_value: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
        cmd.args(["--config", "missing.toml", "serve"])
            .current_dir(d)
            .env_remove(gateway::cli::build_check::OVERRIDE_VAR);
        if let Some(value) = override_value {
            cmd.env(gateway::cli::build_check::OVERRIDE_VAR, value);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let refused = |stderr: &str| stderr.contains("built with the `test-support` feature");
    let plain = serve(None);
    assert_eq!(refused(&plain), cfg!(feature = "test-support"), "{plain}");
    assert_eq!(refused(&serve(Some("1"))), cfg!(feature = "test-support"));
    let allowed = serve(Some(gateway::cli::build_check::OVERRIDE_VALUE));
    assert!(
        !refused(&allowed) && allowed.contains("missing.toml"),
        "{allowed}"
    );
}

/// The binary's allocator gives freed memory back within five seconds, as compiled in from
/// `.cargo/config.toml` (`gateway/src/allocator.rs` says why), with its background threads on:
/// jemalloc prints the options it runs with at exit when asked to.
#[test]
fn the_binary_allocator_returns_freed_memory_within_five_seconds() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stats = String::from_utf8_lossy(&out.stderr);
    for option in ["opt.dirty_decay_ms: 5000", "opt.background_thread: true"] {
        assert!(stats.contains(option), "{option} not in: {stats}");
    }
}

/// The running service can be neither dumped nor read by a debugger: its memory holds unsealed
/// keys and passwords during pick-up.
#[test]
fn serve_runs_without_core_dumps_or_debugger_access() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No listener: the process starts fully without binding anything.
    let mut config = String::from("[gateway]\nlog_level = \"info\"\n");
    for name in served::LISTENERS {
        config.push_str(&format!("[listen.{name}]\nenabled = false\n"));
    }
    std::fs::write(d.join("gateway.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("serve")
        .current_dir(d)
        .env("GATEWAY_DATA_DIR", d.join("data"))
        .env_remove("GATEWAY_CONFIG")
        .env_remove("RUST_LOG")
        .env(
            gateway::cli::build_check::OVERRIDE_VAR,
            gateway::cli::build_check::OVERRIDE_VALUE,
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("gateway ready") {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains("gateway ready"), "{log}");
    assert!(
        log.contains("core dumps and debugger attachment disabled"),
        "{log}"
    );
    let limits = limits.unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
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
    // Every listener but SMTP (the first) off.
    for off in &served::LISTENERS[1..] {
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
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .current_dir(dir.path())
        .env("GATEWAY_DATA_DIR", dir.path().join("data"))
        .env(
            gateway::cli::build_check::OVERRIDE_VAR,
            gateway::cli::build_check::OVERRIDE_VALUE,
        )
        .env_remove("GATEWAY_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (smtp)")),
        "{stderr}"
    );
    // The fix, on the same line.
    assert!(
        stderr.contains("stop it, or change the port in [listen.smtp]"),
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
        .env(
            gateway::cli::build_check::OVERRIDE_VAR,
            gateway::cli::build_check::OVERRIDE_VALUE,
        )
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

/// SIGHUP re-reads the configuration file and applies its log level, saying what changed and
/// which other changed settings it leaves alone.
#[test]
fn sighup_reloads_the_log_level_from_the_file() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut config =
        String::from("# kept\n[gateway]\nemail_domain = \"archive.test\"\nlog_level = \"info\"\n");
    for name in served::LISTENERS {
        config.push_str(&format!("[listen.{name}]\nenabled = false\n"));
    }
    let path = d.join("gateway.toml");
    std::fs::write(&path, &config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", path.to_str().unwrap(), "serve"])
        .current_dir(d)
        .env("GATEWAY_DATA_DIR", d.join("data"))
        .env_remove("GATEWAY_CONFIG")
        .env_remove("RUST_LOG")
        .env(
            gateway::cli::build_check::OVERRIDE_VAR,
            gateway::cli::build_check::OVERRIDE_VALUE,
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let mut read_until = |needle: &str| {
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.push_str(&line);
            log.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    };
    let ready = read_until("gateway ready");
    let edited = config
        .replace("log_level = \"info\"", "log_level = \"debug\"")
        .replace("archive.test", "edited.test");
    std::fs::write(&path, edited).unwrap();
    let signalled = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    let reloaded = signalled && read_until("SIGHUP: log level reloaded");
    let warned = reloaded && read_until("SIGHUP reloads the log level only");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready && reloaded && warned, "{log}");
    assert!(log.contains("info -> debug"), "{log}");
    assert!(log.contains("edited.test"), "{log}");
}

#[test]
fn a_pkcs12_import_without_a_password_source_asks_for_one_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("server.p12"), b"not read before the password").unwrap();
    // No terminal (stdin is not one under `output()`), no file, no environment variable.
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["cert", "import", "server.p12"])
        .current_dir(d)
        .env("GATEWAY_DATA_DIR", d.join("data"))
        .env_remove("GATEWAY_CONFIG")
        .env_remove("GATEWAY_CERT_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--password-file") && stderr.contains("GATEWAY_CERT_PASSWORD"),
        "{stderr}"
    );
    assert!(!d.join("data/tls/imported.crt.pem").exists());
}

#[test]
fn cert_commands_work_on_a_stopped_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = ok_json(
        d,
        &["cert", "self-signed", "--name", "mx2.example", "--json"],
    );
    assert_eq!(created["certificate"]["source"], "self-signed");
    let shown = ok_json(d, &["cert", "show", "--json"]);
    assert_eq!(
        shown["sha256Fingerprint"],
        created["certificate"]["sha256Fingerprint"]
    );
    assert!(shown["dnsNames"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("mx2.example")));
}

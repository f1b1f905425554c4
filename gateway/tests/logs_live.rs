//! `gateway serve` with `[logging] file = true`, `format = "json"` and the plain metrics
//! listener, as a real process: JSON lines on stderr and in `<data_dir>/logs`, a SIGHUP
//! level change reaching the file, and `/metrics` on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use test_support::wire::{self, Conn, Options};

mod served;
use served::{hold_free_ports, listen_sections, LISTENERS};

/// Every listener and the metrics listener on 127.0.0.1 and a free port (the configuration
/// refuses port 0); returns the SMTP and metrics ports.
fn write_config(dir: &Path, log_level: &str) -> (u16, u16) {
    let (_held, ports) = hold_free_ports(LISTENERS.len() + 1);
    let mut text = format!(
        "[gateway]\nemail_domain = \"archive.test\"\nhost_name = \"mx.archive.test\"\nlog_level = \"{log_level}\"\n"
    );
    text.push_str(&listen_sections(&LISTENERS, &ports[..7]));
    text.push_str(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{}\"\n[logging]\nfile = true\nformat = \"json\"\nretention_days = 7\n",
        ports[7]
    ));
    std::fs::write(dir.join("gateway.toml"), text).unwrap();
    (ports[0], ports[7])
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

/// Reads stderr lines until one's message is `message`; returns every line read.
fn read_until(lines: &mut impl Iterator<Item = String>, message: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for line in lines {
        let value = json(&line);
        let done = value["message"] == message;
        seen.push(value);
        if done {
            return seen;
        }
    }
    panic!("the gateway ended before logging `{message}`: {seen:#?}");
}

#[test]
fn serve_writes_json_lines_to_daily_files_and_sighup_changes_their_level() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, metrics) = write_config(dir.path(), "info");
    // An old log file from long ago, past the retention.
    let logs = dir.path().join("data").join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("gateway.log.2001-02-03"), b"{}\n").unwrap();

    let config = dir.path().join("gateway.toml");
    // `config check` names the plain listener and where the files go.
    let check = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().unwrap(), "config", "check"])
        .env("GATEWAY_DATA_DIR", dir.path().join("data"))
        .env_remove("GATEWAY_CONFIG")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "metrics       127.0.0.1:{metrics} (plain HTTP, no login"
        )),
        "{out}"
    );
    assert!(
        out.contains("log files:") && out.contains("(daily, kept 7 days)"),
        "{out}"
    );
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
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let started = read_until(&mut lines, "gateway ready");
    assert!(
        started
            .iter()
            .any(|l| l["message"] == "logging to daily files" && l["removed"] == 1),
        "{started:#?}"
    );
    assert!(!logs.join("gateway.log.2001-02-03").exists());

    // The plain metrics listener answers on loopback without a login.
    let mut scrape = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    scrape
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    scrape.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("gateway_build_info{version="), "{answer}");

    // SIGHUP with debug in the file: the next connection's debug line reaches the file.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("log_level = \"info\"", "log_level = \"debug\""),
    )
    .unwrap();
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    read_until(&mut lines, "SIGHUP: log level reloaded");
    wire::block_on(async {
        let options = Options::default().timeout(Duration::from_secs(30));
        let mut client = Conn::connect(([127, 0, 0, 1], smtp).into(), options)
            .await
            .unwrap();
        let greeting = client.reply().await.unwrap();
        assert_eq!(greeting.code, 220, "{greeting}");
        let bye = client.command("QUIT").await.unwrap();
        assert_eq!(bye.code, 221, "{bye}");
    });

    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let rest: Vec<Value> = lines.map(|l| json(&l)).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.iter().any(|l| l["message"] == "stopped"), "{rest:#?}");

    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("gateway.log.20"), "{name}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let written: Vec<Value> = text.lines().map(json).collect();
    assert!(written.iter().any(|l| l["message"] == "gateway ready"));
    let connection = written
        .iter()
        .find(|l| l["message"] == "SMTP connection")
        .unwrap_or_else(|| panic!("no debug line of the SMTP session in the file:\n{text}"));
    assert_eq!(connection["level"], "DEBUG");
    assert_eq!(connection["span"]["listener"], "smtp");
    assert_eq!(connection["span"]["id"].as_str().map(str::len), Some(16));
    assert!(written.iter().any(|l| l["message"] == "stopped"));
}

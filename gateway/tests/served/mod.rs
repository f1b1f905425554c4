//! The real `gateway` binary for tests that drive it as an administrator would: `gateway
//! serve` as a child process whose log lines (no colours) arrive on a channel, the
//! listeners it announced, one-shot CLI commands, and a plain SMTP delivery.
#![allow(dead_code)] // Not every test binary uses every helper.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use test_support::process::LoggedChild;
use test_support::wire::{self, Conn, Options};

/// How long a wait for a log line may take on a loaded machine; it ends as soon as the line
/// comes.
pub const LOG_WAIT: Duration = Duration::from_secs(120);

/// A running `gateway --config <dir>/gateway.toml serve` with `<dir>/data`; killed on drop.
pub struct Served {
    child: LoggedChild,
}

impl Served {
    /// Starts the gateway and waits until it says it is ready.
    pub fn start(dir: &Path) -> Self {
        let mut served = Self::spawn(dir);
        served.wait_for(&["gateway ready"]);
        served
    }

    /// Starts the gateway without waiting for anything.
    pub fn spawn(dir: &Path) -> Self {
        let child = LoggedChild::spawn(
            command(dir)
                .arg("serve")
                .env(
                    gateway::cli::build_check::OVERRIDE_VAR,
                    gateway::cli::build_check::OVERRIDE_VALUE,
                )
                .env("NO_COLOR", "1")
                .env_remove("RUST_LOG")
                .stdout(Stdio::null()),
        )
        .expect("start gateway serve");
        Self { child }
    }

    /// Waits for a log line containing every one of `parts`; panics with the log so far.
    pub fn wait_for(&mut self, parts: &[&str]) -> String {
        match self
            .child
            .wait_for(LOG_WAIT, |line| parts.iter().all(|p| line.contains(p)))
        {
            Some(line) => line,
            None => panic!("no log line with {parts:?}; the log:\n{}", self.child.log()),
        }
    }

    /// Where `service` (`smtp`, `pop3s`, `console`, ...) listens, as its start-up line said
    /// (among the lines read so far).
    pub fn addr(&self, service: &str) -> SocketAddr {
        let log = self.child.seen();
        log.lines()
            .rev()
            .filter(|line| line.contains("listening") && field(line, "service") == Some(service))
            .find_map(|line| field(line, "addr")?.parse().ok())
            .unwrap_or_else(|| panic!("no {service} listener logged:\n{log}"))
    }

    /// The log so far.
    pub fn log(&mut self) -> &str {
        self.child.log()
    }

    /// SIGTERM, as a service manager stops it; waits for a clean exit and returns the log.
    pub fn stop(mut self) -> String {
        self.signal(rustix::process::Signal::TERM);
        let status = self.child.child_mut().wait().expect("wait");
        let log = self.child.rest_of_log(LOG_WAIT);
        assert!(status.success(), "{status:?}\n{log}");
        log
    }

    /// SIGHUP, as `systemctl reload` sends it.
    pub fn hangup(&self) {
        self.signal(rustix::process::Signal::HUP);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(self.child.child());
        rustix::process::kill_process(pid, signal).expect("signal the gateway");
    }

    /// SIGKILL: no cleanup at all. Returns the log.
    pub fn kill(mut self) -> String {
        self.child.child_mut().kill().expect("SIGKILL");
        self.child.child_mut().wait().expect("wait");
        self.child.rest_of_log(LOG_WAIT)
    }
}

/// Free loopback ports, one per name, all held at once so they are distinct; drop the
/// listeners just before the gateway binds the ports (the configuration refuses port 0).
pub fn hold_free_ports(count: usize) -> (Vec<std::net::TcpListener>, Vec<u16>) {
    test_support::process::hold_free_ports(std::net::Ipv4Addr::LOCALHOST, count).expect("bind")
}

/// Every listener of the gateway's configuration (`[listen.<name>]`).
pub const LISTENERS: [&str; 7] = gateway::config::ListenSection::NAMES;

/// `[listen.<name>]` sections putting each listener on 127.0.0.1 and its port.
pub fn listen_sections(names: &[&str], ports: &[u16]) -> String {
    names
        .iter()
        .zip(ports)
        .map(|(name, port)| {
            format!("[listen.{name}]\naddress = \"127.0.0.1\"\nport = {port}\nenabled = true\n")
        })
        .collect()
}

/// The value of `name=value` (quotes removed) in a log line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"'))
}

/// `gateway --config <dir>/gateway.toml` with `<dir>/data`, as every test here runs it.
fn command(dir: &Path) -> Command {
    let config = dir.join("gateway.toml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .args(["--config", config.to_str().expect("UTF-8 path")])
        .current_dir(dir)
        .env("GATEWAY_DATA_DIR", dir.join("data"))
        .env_remove("GATEWAY_CONFIG");
    command
}

/// One CLI command, run to its end.
pub fn gateway(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().expect("run gateway")
}

/// One CLI command that must succeed, its `--json` output parsed.
pub fn ok_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = gateway(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// One SMTP transaction over plain TCP, like a journaling mail server; every reply must
/// be the expected one.
pub fn deliver(smtp: SocketAddr, to: &str, message: &str) {
    wire::block_on(async {
        let options = Options::default().timeout(Duration::from_secs(60));
        let mut c = Conn::connect(smtp, options).await.expect("connect");
        let greeting = c.reply().await.expect("greeting");
        assert_eq!(greeting.code, 220, "expected 220: {greeting}");
        for (command, expect) in [
            ("EHLO journal.example.org".to_owned(), 250),
            ("MAIL FROM:<journal@example.org>".to_owned(), 250),
            (format!("RCPT TO:<{to}>"), 250),
            ("DATA".to_owned(), 354),
            (format!("{message}\r\n."), 250),
            ("QUIT".to_owned(), 221),
        ] {
            let reply = c.command(&command).await.expect("reply");
            assert_eq!(reply.code, expect, "expected {expect}: {reply}");
        }
        // Until the server closes, so the session has ended when this returns.
        let _ = c.until_closed().await;
    });
}

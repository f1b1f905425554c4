//! The real `gateway` binary for tests that drive it as an administrator would: `gateway
//! serve` as a child process whose log lines (no colours) arrive on a channel, the
//! listeners it announced, one-shot CLI commands, and a plain SMTP delivery.
#![allow(dead_code)] // Not every test binary uses every helper.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a wait for a log line may take on a loaded machine; it ends as soon as the line
/// comes.
pub const LOG_WAIT: Duration = Duration::from_secs(120);

/// A running `gateway --config <dir>/gateway.toml serve` with `<dir>/data`.
pub struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: String,
    listeners: HashMap<String, SocketAddr>,
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
        let mut child = command(dir)
            .arg("serve")
            .env(
                gateway::cli::build_check::OVERRIDE_VAR,
                gateway::cli::build_check::OVERRIDE_VALUE,
            )
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gateway serve");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = mpsc::channel();
        // Reads on, so the gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: String::new(),
            listeners: HashMap::new(),
        }
    }

    /// Waits for a log line containing every one of `parts`; panics with the log so far.
    pub fn wait_for(&mut self, parts: &[&str]) -> String {
        loop {
            match self.lines.recv_timeout(LOG_WAIT) {
                Ok(line) => {
                    self.record(&line);
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {parts:?}; the log:\n{}", self.seen),
            }
        }
    }

    /// Where `service` (`smtp`, `pop3s`, `console`, ...) listens, as its start-up line said.
    pub fn addr(&self, service: &str) -> SocketAddr {
        *self
            .listeners
            .get(service)
            .unwrap_or_else(|| panic!("no {service} listener logged:\n{}", self.seen))
    }

    /// The log so far.
    pub fn log(&mut self) -> &str {
        while let Ok(line) = self.lines.try_recv() {
            self.record(&line);
        }
        &self.seen
    }

    /// SIGTERM, as a service manager stops it; waits for a clean exit and returns the log.
    pub fn stop(mut self) -> String {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{status:?}\n{}", self.rest_of_log());
        self.rest_of_log()
    }

    /// SIGHUP, as `systemctl reload` sends it.
    pub fn hangup(&self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    }

    /// SIGKILL: no cleanup at all. Returns the log.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
        self.rest_of_log()
    }

    /// Everything until the reader sees the pipe close (the process has exited).
    fn rest_of_log(&mut self) -> String {
        while let Ok(line) = self.lines.recv_timeout(LOG_WAIT) {
            self.record(&line);
        }
        self.seen.clone()
    }

    fn record(&mut self, line: &str) {
        let line = &strip_ansi(line);
        self.seen.push_str(line);
        self.seen.push('\n');
        if line.contains("listening") {
            if let (Some(service), Some(addr)) = (field(line, "service"), field(line, "addr")) {
                if let Ok(addr) = addr.parse() {
                    self.listeners.insert(service.to_owned(), addr);
                }
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The line without terminal colour sequences, should the logger emit any.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Free loopback ports, one per name, all held at once so they are distinct; drop the
/// listeners just before the gateway binds the ports (the configuration refuses port 0).
pub fn hold_free_ports(count: usize) -> (Vec<std::net::TcpListener>, Vec<u16>) {
    let held: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports = held
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    (held, ports)
}

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

/// One SMTP transaction over plain TCP, like a journaling mail server; every reply must
/// be the expected one.
pub fn deliver(smtp: SocketAddr, to: &str, message: &str) {
    let stream = TcpStream::connect(smtp).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut reply = |expect: &str| {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        assert!(text.starts_with(expect), "expected {expect}: {text}");
    };
    reply("220");
    for (command, expect) in [
        ("EHLO journal.example.org".to_owned(), "250"),
        ("MAIL FROM:<journal@example.org>".to_owned(), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_owned(), "354"),
        (format!("{message}\r\n."), "250"),
        ("QUIT".to_owned(), "221"),
    ] {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("write");
        reply(expect);
    }
    // Until the server closes, so the session has ended when this returns.
    let mut rest = Vec::new();
    let _ = writer.read_to_end(&mut rest);
}

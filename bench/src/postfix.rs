//! A throwaway Postfix, the baseline ([`test_support::postfix`] with the benchmark's relay
//! rules): its own configuration, queue and Maildir in a temporary directory, listening on 127.0.0.1 at a free port, delivering every message for
//! `bench@maildir.bench.test` to one Maildir through the `virtual` delivery agent.
//!
//! Postfix writes and fsyncs the queue file before it answers 250 (like the gateway's
//! commit), then delivers to the Maildir asynchronously; the runner reports both.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use test_support::postfix::Spec;
pub use test_support::postfix::{ensure_installed, SMTP_SOURCE};
use test_support::process;

pub const RECIPIENT: &str = "bench@maildir.bench.test";

/// A running Postfix; stops on drop.
pub struct Postfix {
    instance: test_support::postfix::Postfix,
    pub addr: SocketAddr,
}

impl Postfix {
    /// Writes `main.cf`/`master.cf` into `dir` and starts Postfix on them, on a port picked
    /// free (again on another when it was taken before Postfix bound it).
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        process::start_on_free_ports(Ipv4Addr::LOCALHOST, 1, |ports| {
            Self::start_on(dir, ports[0])
        })
    }

    fn start_on(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let spec = Spec {
            host_name: "postfix.bench.test".to_owned(),
            domain: "bench.test".to_owned(),
            settings: "mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
default_process_limit = 200
virtual_mailbox_domains = maildir.bench.test
"
            .to_owned(),
            listeners: vec![(port, String::new())],
        };
        let instance = test_support::postfix::Postfix::start(dir, &spec)?;
        Ok(Self {
            addr: instance.addrs[0],
            instance,
        })
    }

    /// Messages delivered to the Maildir so far.
    pub fn delivered(&self) -> u64 {
        self.instance.delivered()
    }

    /// Empties the Maildir between cells.
    pub fn clear_maildir(&self) -> anyhow::Result<()> {
        if let Ok(entries) = std::fs::read_dir(self.instance.maildir.join("new")) {
            for entry in entries {
                std::fs::remove_file(entry?.path())?;
            }
        }
        Ok(())
    }

    /// Waits until `count` messages sit in the Maildir, at most `timeout`; returns when the
    /// last one arrived (approximately: polled every 5 ms), or None on timeout.
    pub fn wait_delivered(&self, count: u64, timeout: Duration) -> Option<Instant> {
        self.instance.wait_delivered(count, timeout)
    }

    pub fn log_path(&self) -> PathBuf {
        self.instance.log_path()
    }

    pub fn stop(self) -> anyhow::Result<()> {
        self.instance.stop();
        Ok(())
    }
}

/// What one smtp-source run achieved.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub messages: u64,
    pub elapsed: Duration,
    pub start: Instant,
}

/// Runs `smtp-source -d -s SESSIONS -m MESSAGES -l SIZE -f FROM -t TO ADDR` (one connection
/// per session, several messages per connection). smtp-source exits with an error on any
/// refused message, so success means every message was answered 250.
pub fn smtp_source(
    addr: SocketAddr,
    sessions: usize,
    messages: u64,
    size: usize,
    from: &str,
    to: &str,
    timeout: Duration,
) -> anyhow::Result<SourceReport> {
    let start = Instant::now();
    let mut child = Command::new(SMTP_SOURCE)
        .args([
            "-d",
            "-s",
            &sessions.to_string(),
            "-m",
            &messages.to_string(),
        ])
        .args(["-l", &size.to_string(), "-f", from, "-t", to])
        .args(["-M", "loadgen.bench.test"])
        .arg(addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run smtp-source")?;
    let deadline = start + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("smtp-source did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = start.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    if !status.success() || !stderr.trim().is_empty() {
        bail!("smtp-source: {status}: {}", stderr.trim());
    }
    Ok(SourceReport {
        messages,
        elapsed,
        start,
    })
}

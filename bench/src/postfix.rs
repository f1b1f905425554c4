//! A throwaway Postfix, the baseline: its own configuration, queue and Maildir in a temporary
//! directory, listening on 127.0.0.1 at a free port, delivering every message for
//! `bench@maildir.bench.test` to one Maildir through the `virtual` delivery agent.
//!
//! Postfix writes and fsyncs the queue file before it answers 250 (like the gateway's
//! commit), then delivers to the Maildir asynchronously; the runner reports both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use crate::util::free_port;
use crate::util::{apt_install, chown, id, is_root, run};

pub const RECIPIENT: &str = "bench@maildir.bench.test";
const POSTFIX: &str = "/usr/sbin/postfix";
pub const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

/// Whether Postfix and smtp-source are installed.
pub fn installed() -> bool {
    Path::new(POSTFIX).exists() && Path::new(SMTP_SOURCE).exists()
}

/// Installs the Debian package when missing, if we are root (as the real xtask will).
pub fn ensure_installed() -> anyhow::Result<()> {
    if installed() {
        return Ok(());
    }
    if !is_root() {
        bail!("Postfix is not installed and we are not root: run `apt-get install postfix` (no configuration) first");
    }
    eprintln!("Postfix (with smtp-source) is missing: installing the Debian package `postfix` with no configuration...");
    let preseed = "postfix postfix/main_mailer_type select No configuration\n";
    let mut debconf = Command::new("debconf-set-selections")
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(debconf.stdin.as_mut().expect("piped"), preseed.as_bytes())?;
    drop(debconf.stdin.take());
    debconf.wait()?;
    apt_install(&["postfix"])?;
    if !installed() {
        bail!("installing postfix did not install {POSTFIX} and {SMTP_SOURCE}");
    }
    Ok(())
}

pub struct Postfix {
    dir: PathBuf,
    pub addr: SocketAddr,
    maildir: PathBuf,
    running: bool,
}

impl Postfix {
    /// Writes `main.cf`/`master.cf` into `dir` and starts Postfix on them.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let dir = std::path::absolute(dir)?;
        let mail = dir.join("mail");
        let maildir = mail.join("bench").join("Maildir");
        std::fs::create_dir_all(&mail)?;
        let uid = id("-u", "postfix")?;
        let gid = id("-g", "postfix")?;
        chown(&mail, uid, gid)?;
        std::fs::create_dir_all(dir.join("queue"))?;
        std::fs::create_dir_all(dir.join("data"))?;
        chown(&dir.join("data"), uid, gid)?;
        let port = free_port()?;
        let d = dir.display();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_peername_lookup = no
message_size_limit = 104857600
default_process_limit = 200
virtual_mailbox_domains = maildir.bench.test
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:bench/Maildir/
virtual_mailbox_limit = 0
virtual_minimum_uid = 1
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
",
            mail = mail.display()
        );
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"
        );
        std::fs::write(dir.join("main.cf"), main_cf)?;
        std::fs::write(dir.join("master.cf"), master_cf)?;
        run(Command::new(POSTFIX).arg("-c").arg(&dir).arg("check"))?;
        run(Command::new(POSTFIX).arg("-c").arg(&dir).arg("start"))?;
        let postfix = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            maildir,
            running: true,
            dir,
        };
        // Wait for smtpd to answer.
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(postfix.addr).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "Postfix did not listen on {}; see {}/maillog",
                    postfix.addr,
                    postfix.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(postfix)
    }

    /// Messages delivered to the Maildir so far.
    pub fn delivered(&self) -> u64 {
        std::fs::read_dir(self.maildir.join("new"))
            .map(|entries| entries.count() as u64)
            .unwrap_or(0)
    }

    /// Empties the Maildir between cells.
    pub fn clear_maildir(&self) -> anyhow::Result<()> {
        if let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) {
            for entry in entries {
                std::fs::remove_file(entry?.path())?;
            }
        }
        Ok(())
    }

    /// Waits until `count` messages sit in the Maildir, at most `timeout`; returns when the
    /// last one arrived (approximately: polled every 5 ms), or None on timeout.
    pub fn wait_delivered(&self, count: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.delivered() >= count {
                return Some(Instant::now());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("maillog")
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        self.running = false;
        run(Command::new(POSTFIX).arg("-c").arg(&self.dir).arg("stop"))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(POSTFIX)
                .arg("-c")
                .arg(&self.dir)
                .arg("stop")
                .status();
        }
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

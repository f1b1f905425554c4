//! A throwaway Dovecot pop3d, the POP3 baseline: its own configuration, runtime and state
//! directories and one Maildir per user in a temporary directory, POP3 and POP3S (implicit
//! TLS, a self-signed certificate) on 127.0.0.1 at free ports. Users and plain passwords
//! come from a `passwd-file`; mail belongs to the system user `mail` (Dovecot refuses root).
//!
//! Messages are written straight into each `Maildir/new/` (with `S=` and `W=` sizes in the
//! file names, CRLF line ends so that both are the file size), then indexed by `doveadm`
//! before the timed drain: the steady state of a Dovecot fed by its own delivery agent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::load::TlsTarget;
use crate::pop3_load::Account;
use crate::util::{apt_install, chown, free_ports, id, run};

const DOVECOT: &str = "/usr/sbin/dovecot";
const DOVEADM: &str = "/usr/bin/doveadm";
const POP3D: &str = "/usr/lib/dovecot/pop3";
/// Name on Dovecot's certificate.
pub const HOST_NAME: &str = "dovecot.bench.test";
/// System user owning the Maildirs.
const MAIL_USER: &str = "mail";

/// Whether Dovecot with its POP3 server is installed.
pub fn installed() -> bool {
    [DOVECOT, DOVEADM, POP3D]
        .iter()
        .all(|p| Path::new(p).exists())
}

/// Installs `dovecot-core` and `dovecot-pop3d` when missing, if we are root. The packages'
/// own service is not needed (and a container's policy usually keeps it from starting).
pub fn ensure_installed() -> anyhow::Result<()> {
    if installed() {
        return Ok(());
    }
    eprintln!("Dovecot is missing: installing the Debian packages dovecot-core dovecot-pop3d...");
    apt_install(&["dovecot-core", "dovecot-pop3d"])?;
    if !installed() {
        bail!("installing Dovecot did not install {DOVECOT}, {DOVEADM} and {POP3D}");
    }
    Ok(())
}

/// `dovecot --version`, e.g. "2.3.19.1 (9b53102964)".
pub fn version() -> Option<String> {
    let out = Command::new(DOVECOT).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub struct Dovecot {
    dir: PathBuf,
    config: PathBuf,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    /// Dovecot's certificate, to trust in TLS clients (name [`HOST_NAME`]).
    pub ca_file: PathBuf,
    accounts: Vec<Account>,
    uid: u32,
    gid: u32,
    /// Unique part of the Maildir file names.
    next_file: u64,
    running: bool,
}

impl Dovecot {
    /// Writes the configuration into `dir` (made absolute) for `users` users and starts
    /// Dovecot on it.
    pub fn start(dir: &Path, users: usize) -> anyhow::Result<Self> {
        let dir = std::path::absolute(dir)?;
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // The certificate, made as the gateway makes its own (`<dir>/tls/self-signed.*`).
        gateway::tls::load_or_create_self_signed(&dir, HOST_NAME)
            .context("cannot create Dovecot's certificate")?;
        let tls_dir = dir.join(gateway::tls::TLS_DIR);
        let ca_file = tls_dir.join(gateway::tls::SELF_SIGNED_CERT_FILE);
        let key_file = tls_dir.join(gateway::tls::SELF_SIGNED_KEY_FILE);

        let uid = id("-u", MAIL_USER)?;
        let gid = id("-g", MAIL_USER)?;
        let accounts: Vec<Account> = (0..users)
            .map(|i| Account {
                user: format!("bench{i:03}"),
                password: format!("bench-password-{i}"),
                expect: Default::default(),
            })
            .collect();
        let passwd: String = accounts
            .iter()
            .map(|a| format!("{}:{{PLAIN}}{}::::::\n", a.user, a.password))
            .collect();
        std::fs::write(dir.join("passwd"), passwd)?;
        let home = dir.join("home");
        chown(&home, uid, gid)?;
        for account in &accounts {
            let maildir = home.join(&account.user).join("Maildir");
            for sub in ["new", "cur", "tmp"] {
                std::fs::create_dir_all(maildir.join(sub))?;
            }
            chown_tree(&home.join(&account.user), uid, gid)?;
        }

        let ports = free_ports(2)?;
        let d = dir.display();
        // A unique instance name keeps doveadm and the process titles apart from any other
        // Dovecot on the machine.
        let instance = format!("bench-{}", std::process::id());
        let conf = format!(
            "# Throwaway Dovecot for the POP3 benchmark.
protocols = pop3
listen = 127.0.0.1
instance_name = {instance}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
pop3_uidl_format = %08Xu%08Xv
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
",
            cert = ca_file.display(),
            key = key_file.display(),
            pop3 = ports[0],
            pop3s = ports[1],
        );
        let config = dir.join("dovecot.conf");
        std::fs::write(&config, conf)?;
        // Not `output()`: the daemonised master keeps the inherited pipes open.
        let status = Command::new(DOVECOT)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run dovecot")?;
        if !status.success() {
            bail!(
                "dovecot -c {} failed ({status}); see {}/dovecot.log",
                config.display(),
                dir.display()
            );
        }
        let dovecot = Self {
            pop3: SocketAddr::from(([127, 0, 0, 1], ports[0])),
            pop3s: SocketAddr::from(([127, 0, 0, 1], ports[1])),
            ca_file,
            accounts,
            uid,
            gid,
            next_file: 0,
            running: true,
            config,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(dovecot.pop3).is_err()
            || std::net::TcpStream::connect(dovecot.pop3s).is_err()
        {
            if Instant::now() > deadline {
                bail!(
                    "Dovecot did not listen on {} and {}; see {}",
                    dovecot.pop3,
                    dovecot.pop3s,
                    dovecot.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(dovecot)
    }

    /// The users' logins, one per Maildir.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// How to reach POP3S.
    pub fn tls_target(&self) -> TlsTarget {
        TlsTarget {
            ca_file: self.ca_file.clone(),
            server_name: HOST_NAME.to_owned(),
        }
    }

    fn maildir(&self, user: usize) -> PathBuf {
        self.dir
            .join("home")
            .join(&self.accounts[user].user)
            .join("Maildir")
    }

    /// Puts `count` copies of `message` (CRLF line ends, as served) into a user's Maildir
    /// and has Dovecot index them.
    pub fn fill(&mut self, user: usize, message: &[u8], count: u64) -> anyhow::Result<()> {
        let new = self.maildir(user).join("new");
        let len = message.len();
        let pid = std::process::id();
        for _ in 0..count {
            self.next_file += 1;
            let path = new.join(format!(
                "1700000000.M{}P{pid}.bench,S={len},W={len}",
                self.next_file
            ));
            std::fs::write(&path, message)?;
            chown(&path, self.uid, self.gid)?;
        }
        self.index(user)
    }

    /// Brings the user's index up to date (moves new/ to cur/, caches sizes), untimed.
    pub fn index(&self, user: usize) -> anyhow::Result<()> {
        run(Command::new(DOVEADM)
            .arg("-c")
            .arg(&self.config)
            .args(["mailbox", "status", "-u", &self.accounts[user].user])
            .args(["messages vsize", "INBOX"]))
    }

    /// Messages in a user's Maildir (files in new/ and cur/).
    pub fn stored(&self, user: usize) -> u64 {
        ["new", "cur"]
            .iter()
            .map(|sub| {
                std::fs::read_dir(self.maildir(user).join(sub))
                    .map(|entries| entries.count() as u64)
                    .unwrap_or(0)
            })
            .sum()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dovecot.log")
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        self.running = false;
        run(Command::new(DOVEADM)
            .arg("-c")
            .arg(&self.config)
            .arg("stop"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(DOVEADM)
                .arg("-c")
                .arg(&self.config)
                .arg("stop")
                .status();
        }
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    chown(path, uid, gid)?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

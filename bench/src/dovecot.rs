//! A throwaway Dovecot pop3d, the POP3 baseline: its own configuration, runtime and state
//! directories and one Maildir per user in a temporary directory, POP3 and POP3S (implicit
//! TLS, a self-signed certificate) on 127.0.0.1 at free ports. Users and plain passwords
//! come from a `passwd-file`; mail belongs to the system user `mail` (Dovecot refuses root).
//!
//! Messages are written straight into each `Maildir/new/` (with `S=` and `W=` sizes in the
//! file names, CRLF line ends so that both are the file size), then indexed by `doveadm`
//! before the timed drain: the steady state of a Dovecot fed by its own delivery agent.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use test_support::dovecot::{Spec, Tls};
use test_support::pki::Leaf;
use test_support::process;

pub use test_support::dovecot::{ensure_installed, version};

use crate::load::TlsTarget;
use crate::pop3_load::Account;

/// Name on Dovecot's certificate.
pub const HOST_NAME: &str = "dovecot.bench.test";

/// A running Dovecot; stops on drop.
pub struct Dovecot {
    instance: test_support::dovecot::Dovecot,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
    /// Dovecot's certificate, to trust in TLS clients (name [`HOST_NAME`]).
    pub ca_file: PathBuf,
    accounts: Vec<Account>,
    /// Unique part of the Maildir file names.
    next_file: u64,
}

impl Dovecot {
    /// Writes the configuration into `dir` (made absolute, emptied first) for `users` users
    /// and starts Dovecot on it.
    pub fn start(dir: &Path, users: usize) -> anyhow::Result<Self> {
        let dir = std::path::absolute(dir)?;
        let _ = std::fs::remove_dir_all(&dir);
        // A self-signed certificate for the host name, as the gateway's own is.
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir)?;
        let (ca_file, key_file) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
        Leaf::names(&[HOST_NAME])
            .self_signed()?
            .write(&ca_file, &key_file)?;
        let accounts: Vec<Account> = (0..users)
            .map(|i| Account {
                user: format!("bench{i:03}"),
                password: format!("bench-password-{i}"),
                expect: Default::default(),
            })
            .collect();
        let spec = Spec {
            // A unique instance name keeps doveadm and the process titles apart from any
            // other Dovecot on the machine.
            instance: format!("bench-{}", std::process::id()),
            listen: Ipv4Addr::LOCALHOST,
            users: accounts
                .iter()
                .map(|a| (a.user.clone(), a.password.clone()))
                .collect(),
            tls: Some(Tls {
                cert: ca_file.clone(),
                key: key_file,
                required: false,
            }),
            auth_mechanisms: "plain".to_owned(),
            settings: String::new(),
        };
        let instance = test_support::dovecot::Dovecot::start(&dir, &spec)?;
        Ok(Self {
            pop3: instance.pop3,
            pop3s: instance.pop3s,
            ca_file,
            accounts,
            next_file: 0,
            instance,
        })
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

    /// Puts `count` copies of `message` (CRLF line ends, as served) into a user's Maildir
    /// and has Dovecot index them.
    pub fn fill(&mut self, user: usize, message: &[u8], count: u64) -> anyhow::Result<()> {
        let new = self.instance.maildir(&self.accounts[user].user).join("new");
        let len = message.len();
        let pid = std::process::id();
        for _ in 0..count {
            self.next_file += 1;
            let path = new.join(format!(
                "1700000000.M{}P{pid}.bench,S={len},W={len}",
                self.next_file
            ));
            std::fs::write(&path, message)?;
            process::chown(&path, self.instance.mail_ids)?;
        }
        self.index(user)
    }

    /// Brings the user's index up to date (moves new/ to cur/, caches sizes), untimed.
    pub fn index(&self, user: usize) -> anyhow::Result<()> {
        process::run(
            Command::new(test_support::dovecot::DOVEADM)
                .arg("-c")
                .arg(self.instance.config())
                .args(["mailbox", "status", "-u", &self.accounts[user].user])
                .args(["messages vsize", "INBOX"]),
        )?;
        Ok(())
    }

    /// Messages in a user's Maildir (files in new/ and cur/).
    pub fn stored(&self, user: usize) -> u64 {
        self.instance.stored(&self.accounts[user].user)
    }

    pub fn log_path(&self) -> PathBuf {
        self.instance.log_path()
    }

    pub fn stop(self) -> anyhow::Result<()> {
        self.instance.stop();
        Ok(())
    }
}

//! Backups without stopping: a backup taken while SMTP mail keeps arriving restores into a
//! fresh data directory with every message acknowledged before it started, decryptable over
//! POP3S; a plain file copy of a data directory taken under load holds a consistent
//! snapshot; restore refuses what it must.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use gateway::api::{Caller, Params, StatusCode};
use gateway::backup::{self, BackupError, Manifest, MANIFEST_FILE, STORE_FILE};
use support::{Client, Pop3Client, TestGateway};
use tokio::sync::watch;

/// Sends messages `Subject: load-<n>` one after the other until told to stop; the numbers
/// of those that got 250 are in `acked`, whose count `progress` follows.
struct Load {
    acked: Arc<Mutex<Vec<u64>>>,
    progress: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(smtp: std::net::SocketAddr, to: String) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (count, progress) = watch::channel(0);
        let (stop, stopped) = watch::channel(false);
        let list = acked.clone();
        let task = tokio::spawn(async move {
            let (mut client, greeting) = Client::connect(smtp).await;
            assert_eq!(greeting.code, 220);
            client.ehlo().await.expect(250, "");
            for n in 0u64.. {
                if *stopped.borrow() {
                    break;
                }
                let message = format!("Subject: load-{n}\r\n\r\nbody of message {n}\r\n");
                client
                    .send_message("journal@example.org", &[&to], message.as_bytes())
                    .await
                    .expect(250, "2.0.0");
                let len = {
                    let mut list = list.lock().unwrap();
                    list.push(n);
                    list.len()
                };
                count.send_replace(len);
            }
            client.command("QUIT").await.expect(221, "2.0.0");
        });
        Self {
            acked,
            progress,
            stop,
            task,
        }
    }

    async fn wait_for(&mut self, count: usize) {
        self.progress.wait_for(|n| *n >= count).await.unwrap();
    }

    fn acked(&self) -> Vec<u64> {
        self.acked.lock().unwrap().clone()
    }

    async fn finish(self) -> Vec<u64> {
        self.stop.send_replace(true);
        self.task.await.unwrap();
        self.acked.lock().unwrap().clone()
    }
}

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect()
}

/// Runs CreateBackup as the host and polls get-status until it finishes.
async fn create_backup(api: &gateway::api::Api, directory: &Path) -> serde_json::Value {
    let started = api
        .invoke(
            &Caller::Host,
            "CreateBackup",
            params(&[("directory", directory.to_str().unwrap())]),
        )
        .await;
    assert_eq!(
        started.envelope.status_code,
        StatusCode::Running,
        "{started:?}"
    );
    let token = started.envelope.token.clone().unwrap();
    let mut version = started.envelope.status_version.unwrap();
    loop {
        let status = api
            .status(
                &Caller::Host,
                params(&[
                    ("token", &token),
                    ("lastKnownStatusVersion", &version.to_string()),
                    ("millisecondsTimeout", "60000"),
                ]),
            )
            .await;
        match status.envelope.status_code {
            StatusCode::Running => version = status.envelope.status_version.unwrap(),
            StatusCode::Succeeded => return status.envelope.result,
            StatusCode::Failed => panic!("backup failed: {status:?}"),
        }
    }
}

/// The subjects' numbers of every message in a mailbox, picked up over POP3S.
async fn pick_up(gw: &TestGateway, id: &str, password: &str) -> Vec<u64> {
    let (mut client, greeting) =
        Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    let reply = client.login(id, password).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    let stat = client.ok("STAT").await;
    let count: usize = stat.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut numbers = Vec::new();
    for n in 1..=count {
        let text = String::from_utf8(client.retr(n).await).unwrap();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: load-"))
            .unwrap_or_else(|| panic!("message {n} lacks its subject: {text}"));
        numbers.push(subject.trim().parse().unwrap());
    }
    client.ok("QUIT").await;
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_acknowledged_before_a_backup_under_load_is_restored_and_readable() {
    let mut gw = TestGateway::start().await;
    let (id, address, password) = gw.create_mailbox("Journal").await;
    let mut load = Load::start(gw.smtp_addr(), address);
    load.wait_for(20).await;
    // Every 250 that came before the backup was asked for.
    let before = load.acked();
    let directory = gw.scratch().join("backups/first");
    let result = create_backup(&gw.api(), &directory).await;
    // Mail kept flowing while the backup ran (the load never paused for it).
    let during = load.acked().len();
    load.wait_for(during + 5).await;
    load.finish().await;
    gw.stop().await;

    let manifest: Manifest = serde_json::from_value(result["manifest"].clone()).unwrap();
    assert!(manifest.messages >= before.len() as u64, "{manifest:?}");
    assert_eq!(manifest.mailboxes, 1);
    manifest.verify(&directory).unwrap();
    // What travels in the backup is sealed: no message text in clear.
    let store = std::fs::read(directory.join(STORE_FILE)).unwrap();
    assert!(!store.windows(15).any(|w| w == b"body of message"));

    let restored = gw.scratch().join("restored");
    backup::restore(&directory, &restored, None).unwrap();
    let mut again =
        TestGateway::start_with(|config| config.gateway.data_dir = restored.clone()).await;
    let found = pick_up(&again, id.as_str(), &password.reveal_for_display()).await;
    for n in &before {
        assert!(
            found.contains(n),
            "message {n} was acknowledged before the backup: {found:?}"
        );
    }
    assert_eq!(
        found.len() as u64,
        manifest.messages,
        "the backup is one consistent moment"
    );
    again.stop().await;
}

/// Copies a directory tree file by file as a backup tool does, while it changes; files
/// that vanish before they are read are skipped, as such tools skip them.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let target = to.join(entry.file_name());
        match entry.file_type() {
            Ok(t) if t.is_dir() => copy_tree(&entry.path(), &target),
            Ok(t) if t.is_file() => {
                let _ = std::fs::copy(entry.path(), &target);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_copy_of_the_data_directory_under_load_holds_a_consistent_snapshot() {
    let mut gw = TestGateway::start_with(|config| {
        config.backup.snapshot_interval = "1s".to_owned();
    })
    .await;
    let (id, address, password) = gw.create_mailbox("Journal").await;
    let mut load = Load::start(gw.smtp_addr(), address);
    let mut taken = gw.snapshots().expect("snapshots are on").taken();
    load.wait_for(5).await;
    taken.wait_for(|n| *n >= 1).await.unwrap();
    // Copied while mail arrives and the next snapshots are written.
    let copy = gw.scratch().join("copy");
    let data_dir = gw.config.gateway.data_dir.clone();
    let copying = {
        let copy = copy.clone();
        tokio::task::spawn_blocking(move || copy_tree(&data_dir, &copy))
    };
    copying.await.unwrap();
    load.wait_for(load.acked().len() + 3).await;
    load.finish().await;
    gw.stop().await;

    // The live store file in the copy may be torn; the snapshot in it never is.
    let used = backup::locate(&copy).unwrap();
    assert!(
        used.starts_with(copy.join(backup::SNAPSHOTS_DIR)),
        "{}",
        used.display()
    );
    let restored = gw.scratch().join("restored");
    let (_, manifest) = backup::restore(&copy, &restored, None).unwrap();
    let mut config = gw.config.clone();
    config.gateway.data_dir = restored;
    let service = gateway::service::Gateway::open(&config).unwrap();
    let listed = service.list_messages(&id).unwrap();
    assert_eq!(listed.len() as u64, manifest.messages);
    let info = service.mailbox(&id).unwrap();
    assert_eq!(
        info.message_count, manifest.messages,
        "counts match the rows"
    );
    let key = service.unseal(&id, &password).unwrap();
    for summary in &listed {
        let (_, text) = service.read_message(&key, summary.seq).unwrap();
        assert!(
            String::from_utf8_lossy(&text).contains("body of message"),
            "every message whole"
        );
    }
}

fn gateway_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env_remove("GATEWAY_CONFIG")
        .env_remove("GATEWAY_DATA_DIR")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

fn refused(args: &[&str], says: &str) {
    let out = gateway_cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.contains(says),
        "{args:?} should say `{says}`: {stderr}"
    );
}

/// A stopped gateway's data directory with one mailbox and a message, backed up by the CLI.
async fn cli_backup(root: &Path) -> PathBuf {
    let mut gw =
        TestGateway::start_with(|config| config.gateway.data_dir = root.join("data")).await;
    let (_, address, _) = gw.create_mailbox("Journal").await;
    gw.deliver(&address, b"Subject: one\r\n\r\nbody\r\n").await;
    gw.stop().await;
    drop(gw);
    let backup = root.join("backup");
    let data = root.join("data");
    let out = gateway_cli(&[
        "--data-dir",
        data.to_str().unwrap(),
        "backup",
        "--to",
        backup.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["manifest"]["messages"], 1, "{result}");
    backup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_used_directory_a_running_gateway_a_tampered_or_newer_backup() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let backup = cli_backup(r).await;
    let from = backup.to_str().unwrap();

    // A second backup into the same directory is refused: nothing is overwritten.
    refused(
        &[
            "--data-dir",
            r.join("data").to_str().unwrap(),
            "backup",
            "--to",
            from,
        ],
        "is not empty",
    );
    // Into a data directory in use.
    refused(
        &[
            "--data-dir",
            r.join("data").to_str().unwrap(),
            "restore",
            "--from",
            from,
        ],
        "is not empty",
    );
    // Onto a running gateway (its control socket answers).
    let gw = TestGateway::start_with(|config| config.gateway.data_dir = r.join("running")).await;
    let control =
        gateway::api::control::ControlServer::start(gw.api(), &r.join("running")).unwrap();
    refused(
        &[
            "--data-dir",
            r.join("running").to_str().unwrap(),
            "restore",
            "--from",
            from,
        ],
        "a gateway is running",
    );
    // The running gateway writes a backup itself when the CLI asks through its socket.
    let running_backup = r.join("running-backup");
    let out = tokio::task::spawn_blocking({
        let (data, to) = (r.join("running"), running_backup.clone());
        move || {
            gateway_cli(&[
                "--data-dir",
                data.to_str().unwrap(),
                "backup",
                "--to",
                to.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Backup written to") && text.contains("gateway.redb"),
        "{text}"
    );
    Manifest::read(&running_backup)
        .unwrap()
        .verify(&running_backup)
        .unwrap();
    control.stop().await;

    // A newer format.
    let manifest_path = backup.join(MANIFEST_FILE);
    let original = std::fs::read(&manifest_path).unwrap();
    let mut newer: serde_json::Value = serde_json::from_slice(&original).unwrap();
    newer["formatVersion"] = (backup::FORMAT_VERSION + 1).into();
    std::fs::write(&manifest_path, newer.to_string()).unwrap();
    let fresh = r.join("fresh");
    refused(
        &[
            "--data-dir",
            fresh.to_str().unwrap(),
            "restore",
            "--from",
            from,
        ],
        "format version",
    );
    std::fs::write(&manifest_path, &original).unwrap();

    // One flipped byte in the store.
    let store = backup.join(STORE_FILE);
    let clean = std::fs::read(&store).unwrap();
    let mut tampered = clean.clone();
    tampered[clean.len() / 2] ^= 0x01;
    std::fs::write(&store, &tampered).unwrap();
    refused(
        &[
            "--data-dir",
            fresh.to_str().unwrap(),
            "restore",
            "--from",
            from,
        ],
        "does not match the backup's manifest",
    );
    assert!(!fresh.exists(), "nothing was written");
    assert!(matches!(
        backup::restore(&backup, &fresh, None),
        Err(BackupError::Mismatch { .. })
    ));
    std::fs::write(&store, &clean).unwrap();

    // Intact, into a new directory: restored, and a gateway opens it.
    let out = gateway_cli(&[
        "--data-dir",
        fresh.to_str().unwrap(),
        "restore",
        "--from",
        from,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut config = gateway::config::Config::default();
    config.gateway.data_dir = fresh.clone();
    let service = gateway::service::Gateway::open(&config).unwrap();
    let mailboxes = service.list_mailboxes().unwrap();
    assert_eq!(mailboxes.len(), 1);
    assert_eq!(mailboxes[0].message_count, 1);
    drop(gw);
}

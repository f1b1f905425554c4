//! A full disk must not jam pick-up: on a small tmpfs filled by deliveries (and then to the
//! last byte by something else), deliveries get `452 4.3.1`, the archiver's DELE and QUIT
//! still succeed and give the space back, the gateway starts after a crash on a full disk,
//! and delivery resumes by itself once space returns.
//!
//! These tests mount a tmpfs of their own, which needs root (CI runs as root). Elsewhere they
//! say so and pass without running.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gateway::config::Config;
use gateway::crypto::{Envelope, MailboxPassword};
use gateway::mailbox::MailboxId;
use gateway::service::Gateway;
use support::{large_message, Client, Pop3Client, TestGateway};

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    _parent: tempfile::TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib`, or explains why not (and the test passes unrun).
    fn mount(size_mib: u64, test: &str) -> Option<Self> {
        let parent = tempfile::tempdir().expect("temp dir");
        let mount = parent.path().join("fs");
        std::fs::create_dir(&mount).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount)
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => Some(Self {
                _parent: parent,
                mount,
            }),
            _ => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs here (needs root and mount permission)"
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.mount
    }

    fn available(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.mount).expect("statvfs");
        stat.f_bavail * stat.f_frsize
    }

    /// Fills the file system to the last byte with a file that is not the gateway's, as a
    /// runaway log would.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        for piece in [MIB as usize, 4096, 1] {
            let block = vec![0u8; piece];
            while file.write_all(&block).is_ok() {}
        }
        let _ = file.flush();
        assert_eq!(self.available(), 0, "the file system is full");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the gateway's files may still be open when a failing test unwinds.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// The gateway on the tmpfs, with limits that fit a 64 MiB disk.
async fn gateway_on(fs: &Tmpfs) -> TestGateway {
    let data = fs.path().join("data");
    TestGateway::start_with(move |config| {
        config.gateway.data_dir = data;
        config.limits.min_free_disk_mib = 8;
        config.limits.disk_reserve_mib = 4;
    })
    .await
}

/// One delivery over SMTP: the code of the first refusal, or of the reply after the data.
async fn try_deliver(gateway: &TestGateway, to: &str, message: &[u8]) -> (u16, String) {
    let (mut client, _greeting) = Client::connect(gateway.smtp_addr()).await;
    client.ehlo().await.expect(250, "");
    client
        .command("MAIL FROM:<j@tenant.example>")
        .await
        .expect(250, "");
    let rcpt = client.command(&format!("RCPT TO:<{to}>")).await;
    if rcpt.code != 250 {
        return (rcpt.code, rcpt.text());
    }
    client.command("DATA").await.expect(354, "");
    client.send(support::dot_stuff(message)).await;
    let reply = client.reply().await;
    client.command("QUIT").await;
    (reply.code, reply.text())
}

/// Delivers 1 MiB messages until the gateway refuses; returns how many it accepted.
async fn deliver_until_refused(gateway: &TestGateway, to: &str) -> usize {
    for n in 0..200 {
        let (code, text) =
            try_deliver(gateway, to, &large_message(&format!("m{n}"), MIB as usize)).await;
        if code != 250 {
            assert_eq!(code, 452, "a full disk is a 452: {text}");
            assert!(text.contains("4.3.1"), "{text}");
            return n;
        }
    }
    panic!("200 MiB fitted on a 64 MiB disk");
}

/// The archiver: logs in over TLS, retrieves and deletes every message, QUIT; returns the
/// QUIT reply and how many messages it took.
async fn pick_up(
    gateway: &TestGateway,
    id: &MailboxId,
    password: &MailboxPassword,
) -> (String, usize) {
    let (mut pop, greeting) =
        Pop3Client::connect_tls(gateway.pop3s_addr(), &gateway.tls_connector()).await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    pop.ok(&format!("USER {id}")).await;
    pop.ok(&format!("PASS {}", password.reveal_for_display().as_str()))
        .await;
    let stat = pop.ok("STAT").await;
    let count: usize = stat
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("STAT count");
    for n in 1..=count {
        let _ = pop.retr(n).await;
        pop.ok(&format!("DELE {n}")).await;
    }
    (pop.command("QUIT").await, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickup_frees_space_on_a_full_disk() {
    let Some(fs) = Tmpfs::mount(64, "pickup_frees_space_on_a_full_disk") else {
        return;
    };
    let gateway = gateway_on(&fs).await;
    let (id, address, password) = gateway.create_mailbox("journal").await;

    let accepted = deliver_until_refused(&gateway, &address).await;
    assert!(
        accepted >= 20,
        "only {accepted} MiB fitted before the minimum"
    );
    // The minimum held: the disk is not full, the reserve is in place.
    assert!(fs.available() >= 4 * MIB, "{} bytes left", fs.available());

    // Something else takes the rest, to the last byte.
    let filler = fs.fill();
    // Reads still work: the recipient is known, the refusal is for space (not 451).
    let (code, text) = try_deliver(&gateway, &address, b"Subject: small\r\n\r\nx\r\n").await;
    assert_eq!(code, 452, "{text}");

    // The archiver picks up everything, and its deletions commit.
    let (quit, taken) = pick_up(&gateway, &id, &password).await;
    assert!(
        quit.starts_with("+OK"),
        "QUIT after DELE on a full disk: {quit}"
    );
    assert_eq!(taken, accepted);
    assert_eq!(gateway.message_count(&id), 0);

    // The space went back to the file system (the filler is still there), and a message
    // larger than the spool's memory part is accepted again without a restart.
    assert!(
        fs.available() > 20 * MIB,
        "only {} bytes free after pick-up",
        fs.available()
    );
    let big = large_message("after pick-up", 2 * MIB as usize);
    let (code, text) = try_deliver(&gateway, &address, &big).await;
    assert_eq!(code, 250, "{text}");
    let stored = gateway.messages(&id, &password);
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].ends_with(&big),
        "the new message reads back whole"
    );
    drop(filler);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_when_space_returns() {
    let Some(fs) = Tmpfs::mount(64, "delivery_resumes_when_space_returns") else {
        return;
    };
    let gateway = gateway_on(&fs).await;
    let (_id, address, _password) = gateway.create_mailbox("journal").await;
    let message = large_message("resume", 100_000);
    let (code, text) = try_deliver(&gateway, &address, &message).await;
    assert_eq!(code, 250, "{text}");

    let filler = fs.fill();
    let (code, text) = try_deliver(&gateway, &address, &message).await;
    assert_eq!(code, 452, "{text}");

    // Space comes back: the next delivery is accepted, and the reserve is in place again.
    std::fs::remove_file(&filler).unwrap();
    let (code, text) = try_deliver(&gateway, &address, &message).await;
    assert_eq!(code, 250, "{text}");
    let reserve = std::fs::metadata(fs.path().join("data").join("disk-reserve")).unwrap();
    assert_eq!(reserve.len(), 4 * MIB);
}

fn child_config(data: &Path) -> Config {
    let mut config = Config::default();
    config.gateway.data_dir = data.to_owned();
    config.gateway.email_domain = support::EMAIL_DOMAIN.to_owned();
    config.limits.min_free_disk_mib = 8;
    config.limits.disk_reserve_mib = 4;
    config
}

/// The child of `gateway_starts_on_a_full_disk`: stores messages, says so, and waits to be
/// killed, so its store is left needing recovery.
#[test]
fn child_stores_and_waits_to_be_killed() {
    let Ok(data) = std::env::var("DISK_CHILD_DATA") else {
        return; // Only meaningful as the child of the full-disk start test.
    };
    let mailbox = MailboxId::parse(&std::env::var("DISK_CHILD_MAILBOX").unwrap()).unwrap();
    let gateway = Gateway::open(&child_config(Path::new(&data))).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move {
        for n in 0..5 {
            let mut draft = gateway
                .begin_message(std::slice::from_ref(&mailbox), &Envelope::default())
                .unwrap();
            draft
                .write(&large_message(&format!("c{n}"), 300_000))
                .unwrap();
            let _ = gateway.commit(draft).await.unwrap();
        }
        println!("stored");
        std::thread::park();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_starts_on_a_full_disk() {
    let Some(fs) = Tmpfs::mount(64, "gateway_starts_on_a_full_disk") else {
        return;
    };
    let data = fs.path().join("data");
    let (id, password) = {
        let gateway = Gateway::open(&child_config(&data)).unwrap();
        let created = gateway.create_mailbox("journal", "").await.unwrap();
        let shown = created.password.reveal_for_display().to_string();
        (created.info.id, MailboxPassword::from_user_input(&shown))
    };
    // The certificate exists from the gateway's first start, as in production.
    gateway::tls::prepare(
        &gateway::tls::CertificateSourceSpec::SelfSigned,
        &data,
        support::HOST_NAME,
    )
    .expect("TLS material");
    let mut child = support::child_test("child_stores_and_waits_to_be_killed")
        .env("DISK_CHILD_DATA", &data)
        .env("DISK_CHILD_MAILBOX", id.as_str())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the child stored its messages")
            .unwrap();
        // The test harness may print its own words before ours on the same line.
        if line.ends_with("stored") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: the store is left open, its recovery must write.
    child.wait().unwrap();
    let _filler = fs.fill();

    // It starts (the reserve makes room for the recovery) and the archiver picks up.
    let gateway = TestGateway::start_with({
        let data = data.clone();
        move |config| {
            config.gateway.data_dir = data;
            config.limits.min_free_disk_mib = 8;
            config.limits.disk_reserve_mib = 4;
        }
    })
    .await;
    assert_eq!(gateway.message_count(&id), 5);
    let (quit, taken) = pick_up(&gateway, &id, &password).await;
    assert!(quit.starts_with("+OK"), "{quit}");
    assert_eq!(taken, 5);
}

//! A gateway process killed with SIGKILL in the middle of storing messages leaves a store that
//! opens and holds every message whose commit had returned, byte for byte, and nothing
//! half-written.
//!
//! The test binary re-executes itself as the child: `child_stores_until_killed` does the work
//! only when the parent sets `CRASH_CHILD_DIR`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use gateway::config::Config;
use gateway::crypto::{Envelope, MailboxPassword};
use gateway::mailbox::MailboxId;
use gateway::service::Gateway;

/// Deterministic body for message `n`: sizes vary from a few bytes to several chunks.
fn body(n: u64) -> Vec<u8> {
    let len = match n % 4 {
        0 => 40,
        1 => 10_000,
        2 => 200_000,
        _ => 70_000,
    };
    let mut out = format!("Subject: message {n}\r\n\r\n").into_bytes();
    out.extend((0..len).map(|i| b'a' + ((i as u64 * 7 + n) % 26) as u8));
    out
}

fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.gateway.data_dir = dir.to_owned();
    config
}

#[test]
fn child_stores_until_killed() {
    let Ok(dir) = std::env::var("CRASH_CHILD_DIR") else {
        return; // Only meaningful as the child of the crash test.
    };
    let mailbox = MailboxId::parse(&std::env::var("CRASH_CHILD_MAILBOX").unwrap()).unwrap();
    let gateway = Gateway::open(&config(Path::new(&dir))).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // Four concurrent writers, so commits are shared between them.
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let gateway = gateway.clone();
            let mailbox = mailbox.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0.. {
                    let n = round * 4 + worker;
                    let mut draft = gateway
                        .begin_message(std::slice::from_ref(&mailbox), &Envelope::default())
                        .unwrap();
                    for piece in body(n).chunks(16 * 1024) {
                        draft.write(piece).unwrap();
                    }
                    let (_stored, _durable) = gateway.commit(draft).await.unwrap();
                    // Only now is the message acknowledged, as a 250 would be.
                    println!("stored {n}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn sigkill_during_storage_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mailbox, password) = {
        let gateway = Gateway::open(&config(dir.path())).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let created = runtime
            .block_on(gateway.create_mailbox("crash", ""))
            .unwrap();
        let shown = created.password.reveal_for_display().to_string();
        (created.info.id, MailboxPassword::from_user_input(&shown))
    };

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_stores_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CRASH_CHILD_DIR", dir.path())
        .env("CRASH_CHILD_MAILBOX", mailbox.as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acknowledged.len() < 60 {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = line.strip_prefix("stored ") {
            acknowledged.push(n.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no clean close.
    child.wait().unwrap();
    // Lines the child printed before it died are acknowledgements too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("stored ") {
            acknowledged.push(n.parse::<u64>().unwrap());
        }
    }

    let gateway = Gateway::open(&config(dir.path())).expect("store opens after SIGKILL");
    let key = gateway.unseal(&mailbox, &password).unwrap();
    let mut found = std::collections::BTreeSet::new();
    for message in gateway.list_messages(&mailbox).unwrap() {
        let (_, bytes) = gateway
            .read_message(&key, message.seq)
            .expect("every stored message decrypts completely");
        let subject = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).to_string();
        let n: u64 = subject
            .strip_prefix("Subject: message ")
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("a message the child wrote");
        assert_eq!(bytes, body(n), "message {n} is byte-identical");
        assert!(found.insert(n), "message {n} stored once");
    }
    for n in &acknowledged {
        assert!(found.contains(n), "acknowledged message {n} was lost");
    }
    let info = gateway.mailbox(&mailbox).unwrap();
    assert_eq!(
        info.message_count as usize,
        found.len(),
        "counters match the messages"
    );
}

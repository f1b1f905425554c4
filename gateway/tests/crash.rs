//! A gateway process killed with SIGKILL in the middle of storing messages leaves a store that
//! opens and holds every message whose commit had returned, byte for byte, and nothing
//! half-written.
//!
//! The test binary re-executes itself as the child: `child_stores_until_killed` does the work
//! only when the parent sets `CRASH_CHILD_DIR`.

use std::io::{BufRead, BufReader};
use std::path::Path;

mod support;

use gateway::config::Config;
use gateway::crypto::MailboxPassword;
use gateway::mailbox::MailboxId;
use gateway::service::Gateway;
use support::storing::{assert_all_there, store_until_killed, Outcomes};

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
    store_until_killed(gateway, mailbox);
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

    let mut child = support::child_test("child_stores_until_killed")
        .env("CRASH_CHILD_DIR", dir.path())
        .env("CRASH_CHILD_MAILBOX", mailbox.as_str())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut outcomes = Outcomes::default();
    outcomes.until(&mut lines, |o| o.stored.len() >= 60);
    child.kill().unwrap(); // SIGKILL: no destructors, no clean close.
    child.wait().unwrap();
    outcomes.drain(lines);
    assert_eq!(outcomes.refused, 0, "a healthy disk refuses nothing");

    let gateway = Gateway::open(&config(dir.path())).expect("store opens after SIGKILL");
    assert_all_there(&gateway, &mailbox, &password, &outcomes.stored);
}

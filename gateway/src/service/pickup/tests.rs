//! Pick-up logins on paused time: the brute-force defence, the lock, and what a maildrop
//! lets a caller do.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::service::test_support;

const WRONG: &str = "AAAA-BBBB-CCCC-DDDD";

struct Fixture {
    _dir: tempfile::TempDir,
    pickup: Arc<Pickup>,
    mailbox: MailboxId,
    password: String,
}

/// One mailbox and its pick-up, with blocking work as tasks of the test's runtime (a thread
/// would let paused time run on while it works); time is paused once the mailbox exists.
async fn fixture(trusted: &[&str]) -> Fixture {
    let (dir, gateway) = test_support::gateway_on_runtime_tasks();
    let created = gateway.create_mailbox("archive", "").await.unwrap();
    let pickup = gateway.pickup(PickupPolicy {
        max_concurrent_unseals: 2,
        failed_login_delay: Duration::from_secs(2),
        trusted_networks: trusted.iter().map(|n| n.parse().unwrap()).collect(),
        lock_takeover: None,
    });
    tokio::time::pause();
    Fixture {
        _dir: dir,
        pickup: Arc::new(pickup),
        mailbox: created.info.id,
        password: created.password.reveal_for_display().to_string(),
    }
}

impl Fixture {
    async fn open(&self, from: &str, password: &str) -> Result<Maildrop, LoginRefused> {
        let password = MailboxPassword::from_user_input(password);
        self.pickup
            .open_maildrop(from.parse().unwrap(), self.mailbox.clone(), password)
            .await
    }

    async fn login(&self, from: &str, password: &str) -> Result<(), LoginRefused> {
        self.open(from, password).await.map(drop)
    }

    async fn deliver(&self, body: &str) {
        let gateway = &self.pickup.gateway;
        let mut draft = gateway
            .begin_journal(
                std::slice::from_ref(&self.mailbox),
                "sender@example.com",
                "192.0.2.1".parse().unwrap(),
                "test",
            )
            .unwrap();
        draft.write(body.as_bytes()).unwrap();
        let _stored = gateway.commit(draft).await.unwrap();
    }
}

#[tokio::test]
async fn correct_password_is_never_refused_after_others_failed() {
    let f = fixture(&[]).await;
    // Many clients, each well within its own allowance, fail against the mailbox
    // (before the fix, 30 such failures walled the mailbox off for everyone).
    for n in 0..200u32 {
        let from = format!("203.0.{}.{}", n / 100, n % 100 + 1);
        for _ in 0..3 {
            let result = f.login(&from, WRONG).await;
            assert_eq!(result, Err(LoginRefused::WrongPassword));
        }
    }
    // The archiver, from its own address, gets in at once.
    let started = Instant::now();
    assert_eq!(f.login("192.0.2.10", &f.password).await, Ok(()));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn failures_against_a_mailbox_delay_failed_answers_within_a_bound() {
    let f = fixture(&[]).await;
    let mut longest = Duration::ZERO;
    for n in 0..100u32 {
        let started = Instant::now();
        let result = f.login(&format!("203.0.113.{}", n + 1), WRONG).await;
        assert_eq!(result, Err(LoginRefused::WrongPassword));
        longest = longest.max(started.elapsed());
    }
    // The failure delay plus the mailbox's cap (timers round up to a millisecond).
    let bound = Duration::from_secs(2) + MAX_MAILBOX_DELAY;
    assert!(
        longest >= bound && longest < bound + Duration::from_secs(1),
        "{longest:?}"
    );
}

#[tokio::test]
async fn a_client_is_throttled_by_its_own_failures_per_64() {
    let f = fixture(&[]).await;
    let mut refused = false;
    for n in 0..30u32 {
        // Every address of one /64.
        match f.login(&format!("2001:db8:5:5::{:x}", n + 1), WRONG).await {
            Err(LoginRefused::WrongPassword) => {}
            Err(LoginRefused::Throttled) => refused = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused);
    // Even the right password waits its turn from there...
    assert_eq!(
        f.login("2001:db8:5:5::99", &f.password).await,
        Err(LoginRefused::Throttled)
    );
    // ...but not from another /64.
    assert_eq!(f.login("2001:db8:5:6::1", &f.password).await, Ok(()));
}

#[tokio::test]
async fn parallel_guesses_are_counted_when_they_start() {
    let f = fixture(&[]).await;
    let mut guesses = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (pickup, mailbox) = (f.pickup.clone(), f.mailbox.clone());
        guesses.spawn(async move {
            let password = MailboxPassword::from_user_input(WRONG);
            let from = "198.51.100.7".parse().unwrap();
            pickup
                .open_maildrop(from, mailbox, password)
                .await
                .map(drop)
        });
    }
    let results = guesses.join_all().await;
    let checked = results
        .iter()
        .filter(|r| **r == Err(LoginRefused::WrongPassword))
        .count();
    let refused = results
        .iter()
        .filter(|r| **r == Err(LoginRefused::Throttled))
        .count();
    assert_eq!(checked + refused, 40);
    // Before the fix all 40 were checked: none had failed yet when each began.
    assert!(checked <= 10, "{checked} parallel guesses were checked");
}

#[tokio::test]
async fn trusted_networks_are_exempt_from_throttling() {
    let f = fixture(&["192.0.2.0/28"]).await;
    for _ in 0..50 {
        assert_eq!(
            f.login("192.0.2.3", WRONG).await,
            Err(LoginRefused::WrongPassword)
        );
    }
    let started = Instant::now();
    assert_eq!(f.login("192.0.2.3", &f.password).await, Ok(()));
    assert_eq!(started.elapsed(), Duration::ZERO);
    // An untrusted neighbour doing the same is refused.
    for _ in 0..50 {
        let _ = f.login("192.0.2.99", WRONG).await;
    }
    assert_eq!(
        f.login("192.0.2.99", &f.password).await,
        Err(LoginRefused::Throttled)
    );
}

#[tokio::test]
async fn a_maildrop_is_exclusive_until_dropped() {
    let f = fixture(&[]).await;
    let first = f.open("192.0.2.10", &f.password).await.unwrap();
    assert_eq!(
        f.login("192.0.2.10", &f.password).await,
        Err(LoginRefused::Locked)
    );
    drop(first);
    assert_eq!(f.login("192.0.2.10", &f.password).await, Ok(()));
}

#[tokio::test]
async fn an_idle_holder_is_taken_over_by_the_right_password_only() {
    let (dir, gateway) = test_support::gateway_on_runtime_tasks();
    let created = gateway.create_mailbox("archive", "").await.unwrap();
    let pickup = Arc::new(gateway.pickup(PickupPolicy {
        max_concurrent_unseals: 2,
        failed_login_delay: Duration::ZERO,
        trusted_networks: Vec::new(),
        lock_takeover: Some(Duration::from_secs(60)),
    }));
    tokio::time::pause();
    let f = Fixture {
        _dir: dir,
        pickup: pickup.clone(),
        mailbox: created.info.id,
        password: created.password.reveal_for_display().to_string(),
    };
    let held = f.open("192.0.2.10", &f.password).await.unwrap();
    held.holder().mark_idle();
    // Not idle long enough: the lock stays.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        f.login("192.0.2.11", &f.password).await,
        Err(LoginRefused::Locked)
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(
        f.login("192.0.2.11", WRONG).await,
        Err(LoginRefused::WrongPassword)
    );
    // The holding session hears of the revocation and ends, dropping its maildrop.
    let holder = held.holder().clone();
    let session = tokio::spawn(async move {
        holder.revoked().await;
        assert!(!holder.mark_busy(), "input after a takeover does not run");
        drop(held);
    });
    let taken = f.open("192.0.2.11", &f.password).await;
    assert!(taken.is_ok(), "{taken:?}");
    session.await.unwrap();
}

#[tokio::test]
async fn messages_open_in_any_order_the_first_of_an_epoch_off_the_task() {
    let f = fixture(&[]).await;
    for n in 0..3 {
        f.deliver(&format!("Subject: {n}\r\n\r\nbody {n}\r\n"))
            .await;
    }
    let maildrop = f.open("192.0.2.10", &f.password).await.unwrap();
    let seqs: Vec<u64> = maildrop.messages().iter().map(|m| m.seq).collect();
    assert_eq!(seqs.len(), 3);
    let gateway = &f.pickup.gateway;
    let needs_key_agreement = |seq| {
        !gateway
            .stored_message(&maildrop.key, seq)
            .unwrap()
            .opens_without_key_agreement(&maildrop.key)
    };
    assert!(seqs.iter().all(|seq| needs_key_agreement(*seq)));
    // The first one opened needs a key agreement (run as a blocking job), the others are of
    // its epoch (opened on the task); then that first one again, out of order.
    for (n, seq) in [(2, seqs[2]), (0, seqs[0]), (1, seqs[1]), (2, seqs[2])] {
        let mut reader = f.pickup.open_message(&maildrop, seq).await.unwrap();
        let mut text = Vec::new();
        while let Some(chunk) = reader.next_chunk() {
            text.extend_from_slice(&chunk.unwrap());
        }
        let text = String::from_utf8(text).unwrap();
        assert!(text.ends_with(&format!("body {n}\r\n")), "{text}");
        assert!(!needs_key_agreement(seq));
    }
    assert!(
        seqs.iter().all(|seq| !needs_key_agreement(*seq)),
        "one epoch"
    );
}

#[tokio::test]
async fn only_listed_messages_of_an_open_maildrop_are_deleted() {
    let f = fixture(&[]).await;
    f.deliver("Subject: a\r\n\r\na\r\n").await;
    let maildrop = f.open("192.0.2.10", &f.password).await.unwrap();
    // Mail that arrived after login is not in the listing and cannot be deleted through it.
    f.deliver("Subject: b\r\n\r\nb\r\n").await;
    let later = f.pickup.gateway.list_messages(&f.mailbox).unwrap()[1].seq;
    let gateway = &f.pickup.gateway;
    assert!(matches!(
        gateway.delete_messages(&maildrop, &[later]).await,
        Err(ServiceError::MessageNotFound(..))
    ));
    assert_eq!(gateway.list_messages(&f.mailbox).unwrap().len(), 2);
    let listed = maildrop.messages()[0].seq;
    let _durable = gateway.delete_messages(&maildrop, &[listed]).await.unwrap();
    assert_eq!(gateway.list_messages(&f.mailbox).unwrap().len(), 1);
}

use std::time::Duration;

use super::{gauges, scrape};
use crate::mailbox::MailboxId;
use crate::metrics::test_support::{samples, value};
use crate::service::MailboxInfo;
use crate::store::MailboxStatus;

fn mailbox(count: u64, bytes: u64, oldest_at: Option<u64>, status: MailboxStatus) -> MailboxInfo {
    let id = MailboxId::generate();
    MailboxInfo {
        address: id.address("archive.example"),
        id,
        name: "m".into(),
        description: String::new(),
        status,
        created_at: 0,
        message_count: count,
        message_bytes: bytes,
        oldest_message_at: oldest_at,
    }
}

#[test]
fn per_mailbox_series_stop_above_the_limit_and_totals_stay() {
    let now = 1_000_000_000;
    let mailboxes = [
        mailbox(3, 300, Some(now - 90_000), MailboxStatus::Active),
        mailbox(0, 0, None, MailboxStatus::Active),
        mailbox(2, 50, Some(now - 30_000), MailboxStatus::Suspended),
    ];
    let within = gauges::mailbox_text(&mailboxes, now, 3);
    let first = mailboxes[0].id.to_string();
    assert_eq!(
        value(
            &within,
            &format!("gateway_mailbox_messages_waiting{{mailbox=\"{first}\"}}")
        ),
        Some(3.0),
        "{within}"
    );
    assert_eq!(
        value(
            &within,
            &format!("gateway_mailbox_oldest_message_age_seconds{{mailbox=\"{first}\"}}")
        ),
        Some(90.0),
        "{within}"
    );
    let per_mailbox = |text: &str| {
        samples(text)
            .into_iter()
            .filter(|l| l.contains("mailbox=\""))
            .count()
    };
    assert_eq!(per_mailbox(&within), 6, "{within}");

    // One mailbox more than the limit: no per-mailbox series at all, whatever the count.
    let above = gauges::mailbox_text(&mailboxes, now, 2);
    assert_eq!(per_mailbox(&above), 0, "{above}");
    for text in [&within, &above] {
        assert_eq!(value(text, "gateway_messages_waiting"), Some(5.0), "{text}");
        assert_eq!(value(text, "gateway_messages_waiting_bytes"), Some(350.0));
        assert_eq!(
            value(text, "gateway_oldest_message_age_seconds"),
            Some(90.0)
        );
        assert_eq!(
            value(text, "gateway_mailboxes{status=\"active\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(text, "gateway_mailboxes{status=\"suspended\"}"),
            Some(1.0)
        );
    }
    // A limit of 0 turns per-mailbox series off.
    assert_eq!(per_mailbox(&gauges::mailbox_text(&mailboxes, now, 0)), 0);
}

#[test]
fn without_mailboxes_nothing_waits() {
    let text = gauges::mailbox_text(&[], 5, 50);
    assert_eq!(value(&text, "gateway_messages_waiting"), Some(0.0));
    assert_eq!(
        value(&text, "gateway_oldest_message_age_seconds"),
        Some(0.0)
    );
}

#[tokio::test]
async fn store_commits_are_observed_with_their_batch_size() {
    let (_dir, gateway) = crate::service::test_support::gateway();
    gateway.create_mailbox("m", "").await.unwrap();
    gateway
        .metrics()
        .store_committed(3, Duration::from_millis(2));
    let text = scrape(&gateway, None);
    // The mailbox's creation (one write) and the three above.
    assert_eq!(
        value(&text, "gateway_store_commit_batch_size_count"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "gateway_store_commit_batch_size_sum"),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "gateway_store_commit_seconds_count"),
        Some(2.0)
    );
    // A gauge read from the store at scrape time, beside the counters.
    assert_eq!(
        value(&text, "gateway_mailboxes{status=\"active\"}"),
        Some(1.0)
    );
    assert!(text.contains(&format!(
        "gateway_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
}

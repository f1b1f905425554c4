use std::time::Duration;

use super::*;
use crate::mailbox::MailboxId;
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

/// The sample lines (not comments) of `text`, as `name{labels} value`.
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).into_iter().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[test]
fn per_mailbox_series_stop_above_the_limit_and_totals_stay() {
    let now = 1_000_000_000;
    let mailboxes = [
        mailbox(3, 300, Some(now - 90_000), MailboxStatus::Active),
        mailbox(0, 0, None, MailboxStatus::Active),
        mailbox(2, 50, Some(now - 30_000), MailboxStatus::Suspended),
    ];
    let within = scrape::mailbox_text(&mailboxes, now, 3);
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
    let above = scrape::mailbox_text(&mailboxes, now, 2);
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
    assert_eq!(per_mailbox(&scrape::mailbox_text(&mailboxes, now, 0)), 0);
}

#[test]
fn without_mailboxes_nothing_waits() {
    let text = scrape::mailbox_text(&[], 5, 50);
    assert_eq!(value(&text, "gateway_messages_waiting"), Some(0.0));
    assert_eq!(
        value(&text, "gateway_oldest_message_age_seconds"),
        Some(0.0)
    );
}

#[test]
fn error_replies_are_counted_by_class_and_only_once_per_reply() {
    let metrics = Metrics::new();
    let smtp = metrics.listener("smtp");
    smtp.count_smtp_replies(
        b"250-mx\r\n250 OK\r\n550-5.1.1 no\r\n550 5.1.1 such mailbox\r\n452 4.3.1 full\r\n",
    );
    smtp.count_smtp_replies(b"421 4.7.0 bye\r\n354 go on\r\n");
    let pop3 = metrics.listener("pop3s");
    pop3.count_pop3_replies(b"+OK\r\n-ERR [IN-USE] locked\r\n-ERR no such message\r\n");
    pop3.count_pop3_replies(b"-ERR [SYS/TEMP] busy\r\n-ERR\r\n");
    let (_dir, gateway) = crate::service::test_support::gateway();
    let text = metrics.scrape(&gateway, None);
    let series = |protocol: &str, class: &str| {
        value(
            &text,
            &format!("gateway_refusals_total{{protocol=\"{protocol}\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(series("smtp", "4xx"), Some(2.0), "{text}");
    assert_eq!(series("smtp", "5xx"), Some(1.0), "{text}");
    assert_eq!(series("pop3", "4xx"), Some(2.0), "{text}");
    assert_eq!(series("pop3", "5xx"), Some(2.0), "{text}");
}

#[test]
fn sessions_open_go_down_when_their_guard_drops() {
    let (_dir, gateway) = crate::service::test_support::gateway();
    let metrics = gateway.metrics();
    let smtp = metrics.listener("submission");
    let a = smtp.session_opened();
    let b = smtp.session_opened();
    drop(a);
    let text = metrics.scrape(&gateway, None);
    assert_eq!(
        value(&text, "gateway_sessions_open{listener=\"submission\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "gateway_sessions_total{listener=\"submission\"}"),
        Some(2.0)
    );
    drop(b);
    let text = metrics.scrape(&gateway, None);
    assert_eq!(
        value(&text, "gateway_sessions_open{listener=\"submission\"}"),
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
    let text = gateway.metrics().scrape(&gateway, None);
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
    assert!(text.contains(&format!(
        "gateway_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn series_a_listener_can_move_are_there_from_the_start_at_zero() {
    let (_dir, gateway) = crate::service::test_support::gateway();
    gateway.metrics().listener("smtps");
    gateway.metrics().listener("pop3");
    let text = gateway.metrics().scrape(&gateway, None);
    for series in [
        "gateway_messages_received_total{listener=\"smtps\",mode=\"journal\"}",
        "gateway_message_bytes_received_total{listener=\"smtps\",mode=\"proxy_sent\"}",
        "gateway_messages_received_total{listener=\"pop3\",mode=\"proxy_received\"}",
        "gateway_messages_picked_up_total{listener=\"pop3\"}",
        "gateway_sessions_open{listener=\"pop3\"}",
        "gateway_tls_handshake_failures_total{listener=\"smtps\"}",
        "gateway_refusals_total{protocol=\"pop3\",class=\"4xx\"}",
        "gateway_login_failures_total{login=\"smtp_proxy\"}",
        "gateway_logins_throttled_total{login=\"api\"}",
    ] {
        assert_eq!(value(&text, series), Some(0.0), "{series} in\n{text}");
    }
    // Nothing that cannot happen: no pick-ups on SMTP, no journal on POP3.
    assert!(!text.contains("gateway_messages_picked_up_total{listener=\"smtps\"}"));
    assert!(!text.contains("listener=\"pop3\",mode=\"journal\""));
}

use super::test_support::value;
use super::*;

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
    let text = metrics.render(&Registry::default());
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
    let text = metrics.render(&Registry::default());
    assert_eq!(
        value(&text, "gateway_sessions_open{listener=\"submission\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "gateway_sessions_total{listener=\"submission\"}"),
        Some(2.0)
    );
    drop(b);
    let text = metrics.render(&Registry::default());
    assert_eq!(
        value(&text, "gateway_sessions_open{listener=\"submission\"}"),
        Some(0.0)
    );
}

#[test]
fn series_a_listener_can_move_are_there_from_the_start_at_zero() {
    let (_dir, gateway) = crate::service::test_support::gateway();
    gateway.metrics().listener("smtps");
    gateway.metrics().listener("pop3");
    let text = gateway.metrics().render(&Registry::default());
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

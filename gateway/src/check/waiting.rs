//! Mail waiting for pick-up, asked of the running gateway through its control socket
//! (`GetMailboxes`, which reports each mailbox's oldest message). The socket is the
//! gateway's own machine's way in, open to its user: the check must run there, as that
//! user (or root). Never the store itself: a monitor must not lock the gateway out.

use std::time::{Duration, SystemTime};

use super::status::{Finding, Perf, State};
use super::{human, CheckOptions};
use crate::config::Config;
use crate::service::MailboxInfo;

/// The finding and performance data of the waiting-mail part.
pub(super) async fn check(
    config: &Config,
    options: &CheckOptions,
    now: SystemTime,
) -> (Finding, Vec<Perf>) {
    let mailboxes = match tokio::time::timeout(options.timeout, mailboxes(config)).await {
        Ok(Ok(mailboxes)) => mailboxes,
        Ok(Err(reason)) => {
            return (
                Finding::new(State::Unknown, format!("waiting mail unknown: {reason}")),
                Vec::new(),
            )
        }
        Err(_) => {
            return (
                Finding::new(
                    State::Unknown,
                    format!(
                        "waiting mail unknown: the gateway did not answer within {}s",
                        options.timeout.as_secs_f64()
                    ),
                ),
                Vec::new(),
            )
        }
    };
    assess(&mailboxes, options, now)
}

async fn mailboxes(config: &Config) -> Result<Vec<MailboxInfo>, String> {
    let result = super::control::invoke(config, "GetMailboxes", "waiting-mail").await?;
    serde_json::from_value(result).map_err(|e| format!("GetMailboxes answered unreadably: {e}"))
}

/// Judges the oldest waiting message against the thresholds (at least as old: so `0s`
/// means any waiting mail).
fn assess(
    mailboxes: &[MailboxInfo],
    options: &CheckOptions,
    now: SystemTime,
) -> (Finding, Vec<Perf>) {
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let waiting: u64 = mailboxes.iter().map(|m| m.message_count).sum();
    let oldest = mailboxes
        .iter()
        .filter_map(|m| m.oldest_message_at.map(|at| (at, m)))
        .min_by_key(|(at, _)| *at);
    let age = oldest.map_or(Duration::ZERO, |(at, _)| {
        Duration::from_millis(now_ms.saturating_sub(at))
    });
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs().to_string()).unwrap_or_default();
    let perf = vec![
        Perf::new("oldest_waiting", format!("{}s", age.as_secs()))
            .thresholds(secs(options.warn_waiting), secs(options.crit_waiting))
            .min("0"),
        Perf::new("messages_waiting", waiting.to_string()).min("0"),
    ];
    let Some((_, mailbox)) = oldest else {
        return (Finding::new(State::Ok, "no mail waiting"), perf);
    };
    let reached = |limit: Option<Duration>| limit.is_some_and(|limit| age >= limit);
    let state = if reached(options.crit_waiting) {
        State::Critical
    } else if reached(options.warn_waiting) {
        State::Warning
    } else {
        State::Ok
    };
    let text = if state == State::Ok {
        format!("oldest waiting mail {} old", human(age))
    } else {
        format!(
            "mail waiting for {} in mailbox {} ({}): is the archiver picking up?",
            human(age),
            mailbox.name,
            mailbox.id
        )
    };
    (Finding::new(state, text), perf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MailboxStatus;

    fn mailbox(name: &str, count: u64, oldest: Option<u64>) -> MailboxInfo {
        MailboxInfo {
            id: crate::mailbox::MailboxId::generate(),
            address: String::new(),
            name: name.into(),
            description: String::new(),
            status: MailboxStatus::Active,
            created_at: 0,
            message_count: count,
            message_bytes: 0,
            oldest_message_at: oldest,
        }
    }

    fn options(warn: u64, crit: u64) -> CheckOptions {
        CheckOptions {
            warn_waiting: Some(Duration::from_secs(warn)),
            crit_waiting: Some(Duration::from_secs(crit)),
            ..CheckOptions::default()
        }
    }

    #[test]
    fn the_oldest_message_of_all_mailboxes_decides() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        let boxes = [
            mailbox("Fresh", 2, Some(99_000_000)),
            mailbox("Stale", 1, Some(10_000_000)),
            mailbox("Empty", 0, None),
        ];
        let (finding, perf) = assess(&boxes, &options(3600, 100_000), now);
        assert_eq!(finding.state, State::Warning);
        assert!(
            finding.text.contains("1d 1h in mailbox Stale"),
            "{}",
            finding.text
        );
        assert_eq!(perf[0].to_string(), "'oldest_waiting'=90000s;3600;100000;0");
        assert_eq!(perf[1].to_string(), "'messages_waiting'=3;;;0");
        let (finding, _) = assess(&boxes, &options(60, 3600), now);
        assert_eq!(finding.state, State::Critical);
        let (finding, _) = assess(&boxes, &options(100_000, 200_000), now);
        assert_eq!(finding.state, State::Ok);
        assert_eq!(finding.text, "oldest waiting mail 1d 1h old");
    }

    #[test]
    fn zero_means_any_waiting_mail_and_none_waiting_is_ok() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        // Arrived this very millisecond: still waiting, so 0s warns.
        let boxes = [mailbox("Just now", 1, Some(100_000))];
        let zero = CheckOptions {
            warn_waiting: Some(Duration::ZERO),
            ..CheckOptions::default()
        };
        assert_eq!(assess(&boxes, &zero, now).0.state, State::Warning);
        let (finding, _) = assess(&[mailbox("Empty", 0, None)], &zero, now);
        assert_eq!(finding, Finding::new(State::Ok, "no mail waiting"));
    }
}

//! The status page: listeners, the certificate with its days left, version, uptime, store
//! size, and the mailboxes an archiver seems to have stopped emptying.

use axum::response::Response;
use minijinja::context;
use minijinja::value::Value;

use super::format;
use crate::api::{ListenerInfo, ListenerState, Params};
use crate::console::session::SignedIn;
use crate::service::MailboxInfo;

/// A mailbox whose oldest message waits longer than this is listed as stale.
const STALE_AFTER_MS: u64 = 24 * 60 * 60 * 1000;

/// How urgent the certificate's renewal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Ok,
    /// 30 days or fewer left.
    Warning,
    /// 7 days or fewer left, or expired.
    Critical,
}

impl Urgency {
    pub fn of_days_left(days: i64) -> Self {
        if days <= 7 {
            Urgency::Critical
        } else if days <= 30 {
            Urgency::Warning
        } else {
            Urgency::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Ok => "ok",
            Urgency::Warning => "warning",
            Urgency::Critical => "critical",
        }
    }
}

/// Mailboxes whose oldest message arrived more than a day before `now_ms`, oldest first.
pub fn stale(mut mailboxes: Vec<MailboxInfo>, now_ms: u64) -> Vec<MailboxInfo> {
    mailboxes.retain(|m| {
        m.oldest_message_at
            .is_some_and(|at| now_ms.saturating_sub(at) > STALE_AFTER_MS)
    });
    mailboxes.sort_by_key(|m| m.oldest_message_at);
    mailboxes
}

fn listener_row(listener: &ListenerInfo) -> Value {
    let state = match listener.state {
        ListenerState::Listening => "listening",
        ListenerState::Disabled => "disabled",
        ListenerState::Stopped => "stopped",
    };
    context! {
        name => &listener.name,
        address => &listener.address,
        port => listener.port,
        state => state,
    }
}

/// The ACME renewal's plan and record, when `GetCertificateInfo` has one.
fn renewal_of(renewal: &serde_json::Value) -> Option<Value> {
    renewal.is_object().then(|| {
        let text = |key: &str| renewal[key].as_str().map(str::to_owned);
        context! {
            next_attempt => text("nextAttempt"),
            last_success => text("lastSuccess"),
            failures => renewal["consecutiveFailures"].as_u64().unwrap_or(0),
            last_error => text("lastError"),
            scheduled => renewal["scheduled"].as_bool().unwrap_or(false),
        }
    })
}

/// `GET /console/status`. Each part is asked for on its own, so one failing part (say, the
/// certificate) still leaves the rest of the page readable, with that part's error.
pub async fn status_page(admin: SignedIn) -> Response {
    let lang = admin.lang();
    let server = admin.invoke("GetServerInfo", Params::new()).await;
    let certificate = admin.invoke("GetCertificateInfo", Params::new()).await;
    let mailboxes = admin.invoke("GetMailboxes", Params::new()).await;

    let server = match server {
        Ok(info) => {
            let listeners: Vec<ListenerInfo> =
                serde_json::from_value(info["listeners"].clone()).unwrap_or_default();
            Ok(context! {
                version => info["version"].as_str().unwrap_or_default(),
                host_name => info["hostName"].as_str().unwrap_or_default(),
                uptime => format::duration(info["uptimeSeconds"].as_u64().unwrap_or(0)),
                started => format::timestamp(info["startedAt"].as_u64().unwrap_or(0)),
                store_size => info["storeBytes"].as_u64().map(|b| format::size(b, lang)),
                listeners => listeners.iter().map(listener_row).collect::<Vec<_>>(),
            })
        }
        Err(failure) => Err(failure.message),
    };
    let certificate = match certificate {
        Ok(cert) => {
            let days = cert["daysLeft"].as_i64().unwrap_or(0);
            let names: Vec<String> = ["dnsNames", "ipAddresses"]
                .iter()
                .flat_map(|key| cert[*key].as_array().cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            Ok(context! {
                subject => cert["subject"].as_str().unwrap_or_default(),
                issuer => cert["issuer"].as_str().unwrap_or_default(),
                names => names,
                not_after => cert["notAfter"].as_str().unwrap_or_default(),
                days_left => days,
                urgency => Urgency::of_days_left(days).as_str(),
                source => cert["source"].as_str().unwrap_or_default(),
                key_type => cert["keyType"].as_str().unwrap_or_default(),
                fingerprint => cert["sha256Fingerprint"].as_str().unwrap_or_default(),
                renewal => renewal_of(&cert["renewal"]),
            })
        }
        Err(failure) => Err(failure.message),
    };
    let now_ms = u64::try_from(admin.api().gateway().now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(0);
    let stale = match mailboxes
        .map(|value| serde_json::from_value::<Vec<MailboxInfo>>(value).unwrap_or_default())
    {
        Ok(list) => Ok(stale(list, now_ms)
            .iter()
            .map(|m| {
                context! {
                    id => m.id.as_str(),
                    address => &m.address,
                    name => &m.name,
                    message_count => m.message_count,
                    oldest => m.oldest_message_at.map(format::timestamp),
                }
            })
            .collect::<Vec<_>>()),
        Err(failure) => Err(failure.message),
    };
    let (server, server_error) = split(server);
    let (certificate, certificate_error) = split(certificate);
    let (stale, stale_error) = split(stale);
    admin.page(
        "status.html",
        context! {
            server => server,
            server_error => server_error,
            certificate => certificate,
            certificate_error => certificate_error,
            stale => stale,
            stale_error => stale_error,
        },
    )
}

/// A part of the page, or its error, as two template values (one of them none).
fn split<T: Into<Value>>(part: Result<T, String>) -> (Option<Value>, Option<String>) {
    match part {
        Ok(value) => (Some(value.into()), None),
        Err(message) => (None, Some(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailboxId;
    use crate::store::MailboxStatus;

    #[test]
    fn the_certificate_warns_at_thirty_days_and_alarms_at_seven() {
        assert_eq!(Urgency::of_days_left(31), Urgency::Ok);
        assert_eq!(Urgency::of_days_left(30), Urgency::Warning);
        assert_eq!(Urgency::of_days_left(8), Urgency::Warning);
        assert_eq!(Urgency::of_days_left(7), Urgency::Critical);
        assert_eq!(Urgency::of_days_left(-3), Urgency::Critical);
    }

    /// The page as a browser gets it for a certificate with `days` left.
    fn page_with_days_left(days: i64) -> String {
        let viewer = crate::console::render::Viewer {
            lang: crate::config::Language::En,
            csrf: Some("token".into()),
        };
        let certificate = context! {
            subject => "CN=mx.example", issuer => "CN=mx.example", names => vec!["mx.example"],
            not_after => "2027-01-01T00:00:00Z", days_left => days,
            urgency => Urgency::of_days_left(days).as_str(), source => "files",
            key_type => "ECDSA", fingerprint => "00", renewal => None::<Value>,
        };
        crate::console::render::html(
            &viewer,
            "status.html",
            context! {
                server => None::<Value>, server_error => "down",
                certificate => certificate, certificate_error => None::<String>,
                stale => Vec::<Value>::new(), stale_error => None::<String>,
            },
        )
        .unwrap()
    }

    #[test]
    fn the_page_colours_the_days_left_by_urgency() {
        let soon = page_with_days_left(5);
        assert!(soon.contains("urgency-critical"), "{soon}");
        assert!(soon.contains("Renew the certificate now"));
        let later = page_with_days_left(20);
        assert!(later.contains("urgency-warning"));
        assert!(later.contains("Renew the certificate soon"));
        let fine = page_with_days_left(200);
        assert!(fine.contains("urgency-ok"));
        assert!(!fine.contains("Renew the certificate"));
        // A part that failed shows its error, the rest of the page stays.
        assert!(fine.contains(">down<"), "{fine}");
    }

    #[test]
    fn the_acme_renewal_state_is_shown_in_english_and_german() {
        let renewal = renewal_of(&serde_json::json!({
            "nextAttempt": "2026-12-05T10:00:00Z", "lastSuccess": null,
            "consecutiveFailures": 3, "lastError": "cannot reach the ACME server (refused)",
            "scheduled": true,
        }));
        let certificate = context! {
            subject => "CN=mx.example", issuer => "CN=R3", names => vec!["mx.example"],
            not_after => "2027-01-01T00:00:00Z", days_left => 60, urgency => "ok",
            source => "acme", key_type => "ECDSA", fingerprint => "00", renewal => renewal,
        };
        for (lang, expected) in [
            (
                crate::config::Language::En,
                ["Next renewal attempt", "Failed attempts in a row"],
            ),
            (
                crate::config::Language::De,
                [
                    "Nächster Erneuerungsversuch",
                    "Fehlgeschlagene Versuche in Folge",
                ],
            ),
        ] {
            let viewer = crate::console::render::Viewer {
                lang,
                csrf: Some("token".into()),
            };
            let page = crate::console::render::html(
                &viewer,
                "status.html",
                context! {
                    server => None::<Value>, server_error => "down",
                    certificate => certificate.clone(), certificate_error => None::<String>,
                    stale => Vec::<Value>::new(), stale_error => None::<String>,
                },
            )
            .unwrap();
            for text in expected {
                assert!(page.contains(text), "{lang:?} {text}: {page}");
            }
            assert!(page.contains("2026-12-05T10:00:00Z"), "{page}");
            assert!(page.contains(">3<"), "{page}");
            assert!(
                page.contains("cannot reach the ACME server (refused)"),
                "{page}"
            );
        }
        // Not ACME: no renewal rows.
        assert!(!page_with_days_left(200).contains("cert-renewal-next"));
    }

    #[test]
    fn a_mailbox_is_stale_once_its_oldest_message_waits_over_a_day() {
        let mailbox = |oldest: Option<u64>| MailboxInfo {
            id: MailboxId::generate(),
            address: String::new(),
            name: String::new(),
            description: String::new(),
            status: MailboxStatus::Active,
            created_at: 0,
            message_count: u64::from(oldest.is_some()),
            message_bytes: 0,
            oldest_message_at: oldest,
        };
        let now = 10 * STALE_AFTER_MS;
        let list = vec![
            mailbox(None),
            mailbox(Some(now - STALE_AFTER_MS)),
            mailbox(Some(now - STALE_AFTER_MS - 1)),
            mailbox(Some(now - 3 * STALE_AFTER_MS)),
        ];
        let found = stale(list, now);
        let ages: Vec<Option<u64>> = found.iter().map(|m| m.oldest_message_at).collect();
        assert_eq!(
            ages,
            [
                Some(now - 3 * STALE_AFTER_MS),
                Some(now - STALE_AFTER_MS - 1)
            ]
        );
    }
}

//! The status page: listeners, the certificate with its days left, version, uptime, store
//! size, free disk space (highlighted below the warning threshold), and the mailboxes an archiver seems to have stopped emptying.

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

/// `off`, `none` (on, none taken yet) or `taken`, from `GetServerInfo`.
fn snapshots_state(info: &serde_json::Value) -> &'static str {
    match (
        info["snapshotIntervalSeconds"].as_u64(),
        info["lastSnapshotAt"].as_str(),
    ) {
        (None, _) => "off",
        (Some(_), None) => "none",
        (Some(_), Some(_)) => "taken",
    }
}

fn rfc3339_millis(text: &str) -> Option<u64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
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
                disk_free => info["freeDiskBytes"].as_u64().map(|b| format::size(b, lang)),
                disk_total => info["totalDiskBytes"].as_u64().map(|b| format::size(b, lang)),
                disk_level => info["diskLevel"].as_str().unwrap_or("unknown"),
                disk_warn => format::size(info["warnFreeDiskBytes"].as_u64().unwrap_or(0), lang),
                disk_min => format::size(info["minFreeDiskBytes"].as_u64().unwrap_or(0), lang),
                snapshots => snapshots_state(&info),
                snapshot_every => info["snapshotIntervalSeconds"].as_u64().map(format::duration),
                last_snapshot => info["lastSnapshotAt"].as_str().and_then(rfc3339_millis).map(format::timestamp),
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

    /// The page as a browser gets it with `free` MiB free of 10 GiB and the disk at `level`.
    fn page_with_free_disk(free: u64, level: &str, lang: crate::config::Language) -> String {
        let viewer = crate::console::render::Viewer {
            lang,
            csrf: Some("token".into()),
        };
        let size = |mib: u64| format::size(mib * 1024 * 1024, lang);
        let server = context! {
            version => "1", host_name => "mx.example", uptime => "1m", started => "then",
            store_size => size(3), disk_free => size(free), disk_total => size(10 * 1024),
            disk_level => level, disk_warn => size(1024), disk_min => size(256),
            listeners => Vec::<Value>::new(), snapshots => "off",
        };
        crate::console::render::html(
            &viewer,
            "status.html",
            context! {
                server => server, server_error => None::<String>,
                certificate => None::<Value>, certificate_error => "none",
                stale => Vec::<Value>::new(), stale_error => None::<String>,
            },
        )
        .unwrap()
    }

    #[test]
    fn free_disk_space_is_shown_and_highlighted_below_the_thresholds() {
        use crate::config::Language::{De, En};
        let fine = page_with_free_disk(5000, "ok", En);
        assert!(fine.contains(r#"data-level="ok""#), "{fine}");
        assert!(fine.contains("4.9 GiB"), "{fine}");
        assert!(fine.contains("10 GiB"), "{fine}");
        assert!(!fine.contains("urgency-warning") && !fine.contains("urgency-critical"));
        assert!(!fine.contains("free: "), "{fine}");

        let low = page_with_free_disk(500, "warning", En);
        assert!(low.contains("urgency-warning"), "{low}");
        assert!(low.contains("make room before mail is refused"), "{low}");
        assert!(low.contains("1.0 GiB"), "{low}");

        let full = page_with_free_disk(100, "critical", En);
        assert!(full.contains("urgency-critical"), "{full}");
        assert!(full.contains("new mail is refused until space is freed"));

        let voll = page_with_free_disk(100, "critical", De);
        assert!(voll.contains("Freier Speicherplatz"), "{voll}");
        assert!(voll.contains("neue Mails werden abgewiesen"), "{voll}");
        assert!(voll.contains("100 MiB"), "{voll}");
    }

    #[test]
    fn the_snapshot_state_is_off_none_yet_or_the_last_ones_time() {
        let info = |interval: Option<u64>, last: Option<&str>| serde_json::json!({ "snapshotIntervalSeconds": interval, "lastSnapshotAt": last });
        assert_eq!(snapshots_state(&info(None, None)), "off");
        assert_eq!(snapshots_state(&info(Some(900), None)), "none");
        assert_eq!(
            snapshots_state(&info(Some(900), Some("2026-12-04T17:51:00Z"))),
            "taken"
        );
        assert_eq!(
            rfc3339_millis("2026-12-04T17:51:42.5Z"),
            Some(1_796_406_702_500)
        );
        assert_eq!(rfc3339_millis("yesterday"), None);
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

//! `/metrics`: scraped on the console port with an API key and on the loopback listener,
//! the counters move by exactly what deliveries and a pick-up did, and nobody without a
//! login gets anything.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use support::{Pop3Client, TestGateway, HOST_NAME};
use tokio_rustls::rustls;

fn https_client(gw: &TestGateway) -> reqwest::Client {
    let config = support::client_config(&gw.ca_file());
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .resolve(HOST_NAME, gw.console_addr())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// A client for plain HTTP (reqwest still wants a TLS configuration, never used here).
fn http_client() -> reqwest::Client {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

fn console_url(gw: &TestGateway) -> String {
    format!("https://{HOST_NAME}:{}/metrics", gw.console_addr().port())
}

async fn get(
    request: reqwest::RequestBuilder,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
    let response = request.send().await.expect("HTTP request");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

/// Checks the Prometheus text exposition format line by line: `# HELP` and `# TYPE` lines,
/// one `# TYPE` per family before its samples, samples as `name{label="value",...} number`
/// with valid names and escaped label values. Returns the samples by series.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    fn is_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_name(name), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "a second TYPE for {name}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                Some(labels.strip_suffix('}').expect("labels end with }")),
            ),
            None => (series, None),
        };
        assert!(is_name(name), "{line}");
        if let Some(mut labels) = labels {
            while !labels.is_empty() {
                let (key, rest) = labels.split_once("=\"").expect("label=\"value\"");
                assert!(is_name(key), "{line}");
                // The value runs to the first quote not escaped by a backslash.
                let mut end = None;
                let mut escaped = false;
                for (i, c) in rest.char_indices() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => {
                            end = Some(i);
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                let end = end.expect("label value closed");
                labels = rest[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&rest[end + 1..]);
            }
        }
        let family = ["_total", "_bucket", "_sum", "_count", "_info"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.contains_key(*base))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family) || typed.contains_key(name),
            "sample before its TYPE: {line}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "the series {series} appears twice"
        );
    }
    samples
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn scraped_counters_move_by_exactly_the_deliveries_and_the_pick_up() {
    let gw = TestGateway::start_with_console(|config| {
        config.metrics.listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let key = gw
        .gateway()
        .create_api_key("scraper")
        .await
        .expect("API key")
        .key
        .reveal()
        .to_owned();
    let http = https_client(&gw);
    let scrape = || async {
        let (status, headers, text) = get(http.get(console_url(&gw)).bearer_auth(&key)).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            headers[reqwest::header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        parse_exposition(&text)
    };
    let (id, address, password) = gw.create_mailbox("archive").await;
    let before = scrape().await;

    gw.deliver(&address, b"Subject: one\r\n\r\nfirst\r\n").await;
    gw.deliver(&address, b"Subject: two\r\n\r\nthe second one\r\n")
        .await;
    let sizes: u64 = gw
        .gateway()
        .list_messages(&id)
        .expect("messages")
        .iter()
        .map(|m| m.size)
        .sum();
    let delivered = scrape().await;
    let mailbox = format!("{{mailbox=\"{id}\"}}");
    assert_eq!(value(&delivered, "gateway_messages_waiting"), 2.0);
    assert_eq!(
        value(
            &delivered,
            &format!("gateway_mailbox_messages_waiting{mailbox}")
        ),
        2.0
    );

    // A wrong password first, then the archiver picks both up.
    let (mut wrong, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    let refused = wrong.login(&id.to_string(), "AAAA-BBBB-CCCC-DDDD").await;
    assert!(refused.starts_with("-ERR"), "{refused}");
    drop(wrong);
    let (mut pop3, _) = Pop3Client::connect_tls(gw.pop3s_addr(), &gw.tls_connector()).await;
    let reply = pop3
        .login(&id.to_string(), &password.reveal_for_display())
        .await;
    assert!(reply.starts_with("+OK"), "{reply}");
    pop3.retr(1).await;
    pop3.retr(2).await;
    pop3.ok("DELE 1").await;
    pop3.ok("DELE 2").await;
    pop3.ok("QUIT").await;
    assert_eq!(gw.message_count(&id), 0);
    // Plaintext on the implicit-TLS port: a failed handshake, and the server hangs up.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut plain = tokio::net::TcpStream::connect(gw.smtps_addr())
            .await
            .expect("connect");
        plain.write_all(b"EHLO not-tls\r\n").await.expect("write");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), plain.read_to_end(&mut rest)).await;
    }

    let after = scrape().await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    let journal = "{listener=\"smtp\",mode=\"journal\"}";
    assert_eq!(
        delta(&format!("gateway_messages_received_total{journal}")),
        2.0
    );
    assert_eq!(
        delta(&format!("gateway_message_bytes_received_total{journal}")),
        sizes as f64
    );
    let pop3s = "{listener=\"pop3s\"}";
    assert_eq!(
        delta(&format!("gateway_messages_picked_up_total{pop3s}")),
        2.0
    );
    assert_eq!(
        delta(&format!("gateway_message_bytes_picked_up_total{pop3s}")),
        sizes as f64
    );
    assert_eq!(delta("gateway_sessions_total{listener=\"smtp\"}"), 2.0);
    assert_eq!(delta(&format!("gateway_sessions_total{pop3s}")), 2.0);
    assert_eq!(delta(&format!("gateway_tls_handshakes_total{pop3s}")), 2.0);
    assert_eq!(
        delta(&format!("gateway_tls_handshake_failures_total{pop3s}")),
        0.0
    );
    assert_eq!(
        delta("gateway_tls_handshake_failures_total{listener=\"smtps\"}"),
        1.0
    );
    assert_eq!(delta("gateway_sessions_total{listener=\"smtps\"}"), 0.0);
    assert_eq!(delta("gateway_login_failures_total{login=\"pop3\"}"), 1.0);
    assert_eq!(
        delta("gateway_refusals_total{protocol=\"pop3\",class=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        delta("gateway_refusals_total{protocol=\"smtp\",class=\"5xx\"}"),
        0.0
    );
    // Each delivery and the UPDATE were durable commits.
    assert!(delta("gateway_store_commit_batch_size_count") >= 3.0);
    assert!(delta("gateway_store_commit_seconds_count") >= 3.0);
    assert_eq!(value(&after, "gateway_messages_waiting"), 0.0);
    assert_eq!(value(&after, "gateway_oldest_message_age_seconds"), 0.0);
    assert_eq!(value(&after, "gateway_mailboxes{status=\"active\"}"), 1.0);
    assert!(value(&after, "gateway_certificate_expiry_seconds") > 86_400.0);
    assert!(value(&after, "gateway_store_size_bytes") > 0.0);
    assert!(after.contains_key(&format!(
        "gateway_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    )));

    // The loopback listener serves the same text, without a login.
    let plain = gw.running_address("metrics");
    assert!(plain.ip().is_loopback());
    let (status, headers, text) = get(http_client().get(format!("http://{plain}/metrics"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers[reqwest::header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let loopback = parse_exposition(&text);
    let names = |samples: &HashMap<String, f64>| -> HashSet<String> {
        samples
            .keys()
            .filter(|s| !s.contains("listener=\"console\""))
            .cloned()
            .collect()
    };
    assert_eq!(names(&loopback), names(&after));
    for series in [
        format!("gateway_messages_received_total{journal}"),
        format!("gateway_messages_picked_up_total{pop3s}"),
        "gateway_login_failures_total{login=\"pop3\"}".to_owned(),
    ] {
        assert_eq!(loopback.get(&series), after.get(&series), "{series}");
    }
    // Only /metrics there.
    let (status, _, _) = get(http_client().get(format!("http://{plain}/api/openapi.json"))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn metrics_on_the_console_port_refuse_requests_without_a_login() {
    let gw = TestGateway::start_with_console(|_| {}).await;
    let http = https_client(&gw);
    let url = console_url(&gw);

    let (status, headers, body) = get(http.get(&url)).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key(reqwest::header::WWW_AUTHENTICATE));
    assert!(!body.contains("gateway_"), "{body}");
    let (status, _, body) = get(http.get(&url).bearer_auth("gwk_not_a_key")).await;
    assert_eq!(status, 401);
    assert!(!body.contains("gateway_"), "{body}");
    // The initial administrator password is good only for replacing itself.
    let (status, _, body) = get(http.get(&url).basic_auth("admin", Some("admin"))).await;
    assert_eq!(status, 403);
    assert!(!body.contains("gateway_"), "{body}");
    // A cookie that is no session.
    let (status, _, _) = get(http.get(&url).header("Cookie", "__Host-gw_session=forged")).await;
    assert_eq!(status, 401);

    // A signed-in console session may read them.
    let (token, _) = gw.gateway().sessions().create(None, false).await.unwrap();
    let cookie = format!("__Host-gw_session={}", token.reveal());
    let (status, _, body) = get(http.get(&url).header("Cookie", cookie)).await;
    assert_eq!(status, 200);
    parse_exposition(&body);
    // The unknown key above was counted as a failed API login.
    let key = gw.gateway().create_api_key("scraper").await.expect("key");
    let (status, _, body) = get(http.get(&url).bearer_auth(key.key.reveal())).await;
    assert_eq!(status, 200);
    let samples = parse_exposition(&body);
    assert_eq!(
        value(&samples, "gateway_login_failures_total{login=\"api\"}"),
        1.0
    );
}

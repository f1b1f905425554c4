//! `gateway check` as a monitoring system runs it: the real binary against a real `gateway
//! serve`, judged by its exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), its status line
//! and its performance data.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

mod served;
use served::{deliver, gateway, hold_free_ports, listen_sections, Served};
use test_support::pki::Leaf;

const EMAIL_DOMAIN: &str = "archive.test";
const HOST_NAME: &str = "mx.archive.test";
const SERVICES: [&str; 6] = ["smtp", "smtps", "submission", "pop3", "pop3s", "console"];

/// Every listener on 127.0.0.1 with a free port (the configuration refuses port 0).
fn write_config(dir: &Path) {
    let mut text = format!(
        "[gateway]\nemail_domain = \"{EMAIL_DOMAIN}\"\nhost_name = \"{HOST_NAME}\"\nlog_level = \"info\"\n"
    );
    let (_held, ports) = hold_free_ports(SERVICES.len());
    text.push_str(&listen_sections(&SERVICES, &ports));
    std::fs::write(dir.join("gateway.toml"), text).unwrap();
}

/// `gateway check ARGS`: the exit code and stdout.
fn check(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = gateway(dir, &[&["check"], args].concat());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let code = out.status.code().expect("exited, not killed");
    (code, stdout)
}

fn status_line(output: &str) -> &str {
    output.lines().next().unwrap_or_default()
}

/// `GET path` over HTTPS/1.1 without a login: the status code, content type and body.
fn https_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(HOST_NAME).unwrap();
        let mut tls = gateway::check::net::any_certificate(&[b"http/1.1"])
            .connect(name, tcp)
            .await
            .unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {HOST_NAME}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        String::from_utf8(response).unwrap()
    });
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

#[test]
fn healthz_and_readyz_answer_on_the_console_port_without_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let served = Served::start(d);
    let text = "text/plain; charset=utf-8".to_owned();
    assert_eq!(
        https_get(served.addr("console"), "/healthz"),
        (200, text.clone(), "ok\n".into())
    );
    assert_eq!(
        https_get(served.addr("console"), "/readyz"),
        (200, text, "ready\n".into())
    );
}

/// A port on loopback where nothing listens (bound, then closed).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn check_is_ok_against_a_running_gateway_and_critical_with_a_listener_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let _served = Served::start(d);

    let (code, out) = check(d, &[]);
    assert_eq!(code, 0, "{out}");
    let line = status_line(&out);
    assert!(
        line.starts_with("GATEWAY OK - 6 listeners answer, certificate valid "),
        "{out}"
    );
    // Performance data: a time for every listener, days left for every TLS one.
    let perf = line.split_once(" | ").expect("performance data").1;
    for service in SERVICES {
        assert!(perf.contains(&format!("'{service}_time'=")), "{perf}");
        assert!(
            perf.contains(&format!("'{service}_cert_days'=")) && perf.contains(";30:;7:"),
            "{perf}"
        );
    }
    // Then one line per listener, saying how TLS was reached.
    for (service, how) in [
        ("smtp", "STARTTLS"),
        ("submission", "STARTTLS"),
        ("smtps", "TLS"),
        ("pop3", "STLS"),
        ("pop3s", "TLS"),
        ("console", "TLS"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("[OK] {service} 127.0.0.1:"))
                    && l.contains(&format!(": {how} TLSv1."))
                    && l.contains("certificate valid")),
            "{service}: {out}"
        );
    }

    // One listener down: CRITICAL, and it is named; the others still answer.
    let dead = dead_port();
    let (code, out) = check(d, &["--port", &format!("pop3s={dead}")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        status_line(&out).starts_with(&format!(
            "GATEWAY CRITICAL - pop3s 127.0.0.1:{dead}: cannot connect: connection refused |"
        )),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("[OK] ")).count(),
        5,
        "{out}"
    );

    // Only the listeners asked for.
    let (code, out) = check(d, &["--listener", "smtp", "--listener", "console"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        status_line(&out).starts_with("GATEWAY OK - 2 listeners answer"),
        "{out}"
    );
}

#[test]
fn check_warns_on_mail_waiting_past_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let served = Served::start(d);

    // 0s: any waiting mail warns; none is waiting yet.
    let (code, out) = check(d, &["--warn-waiting", "0s", "--listener", "smtp"]);
    assert_eq!(code, 0, "{out}");
    assert!(status_line(&out).contains(", no mail waiting |"), "{out}");
    assert!(
        status_line(&out).contains("'oldest_waiting'=0s;0;;0 'messages_waiting'=0;;;0"),
        "{out}"
    );

    let created = gateway(d, &["mailbox", "create", "--name", "Sales", "--json"]);
    assert!(created.status.success());
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = created["id"].as_str().unwrap();
    deliver(
        served.addr("smtp"),
        &format!("{id}@{EMAIL_DOMAIN}"),
        "Subject: waiting\r\n\r\nfor the archiver",
    );

    let (code, out) = check(d, &["--warn-waiting", "0s", "--listener", "smtp"]);
    assert_eq!(code, 1, "{out}");
    let line = status_line(&out);
    assert!(
        line.starts_with("GATEWAY WARNING - mail waiting for ")
            && line.contains(&format!(
                "in mailbox Sales ({id}): is the archiver picking up?"
            )),
        "{out}"
    );
    assert!(line.contains("'messages_waiting'=1;;;0"), "{out}");
    // Past the critical threshold too: CRITICAL wins.
    let (code, out) = check(
        d,
        &[
            "--warn-waiting",
            "0s",
            "--crit-waiting",
            "0s",
            "--listener",
            "smtp",
        ],
    );
    assert_eq!(code, 2, "{out}");
    // A day is far off: OK, with the age shown.
    let (code, out) = check(d, &["--warn-waiting", "24h", "--listener", "smtp"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        status_line(&out).contains(", oldest waiting mail "),
        "{out}"
    );

    // No gateway behind the control socket of this data directory: that part is UNKNOWN,
    // and says why, while the listeners are still checked.
    let elsewhere = d.join("elsewhere");
    let (code, out) = check(
        d,
        &[
            "--data-dir",
            elsewhere.to_str().unwrap(),
            "--warn-waiting",
            "0s",
            "--listener",
            "smtp",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        status_line(&out).starts_with(
            "GATEWAY UNKNOWN - waiting mail unknown: no gateway answers on the control socket"
        ),
        "{out}"
    );
    assert!(out.contains("[OK] smtp 127.0.0.1:"), "{out}");
}

#[test]
fn check_warns_when_free_disk_space_is_below_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let _served = Served::start(d);
    // No disk is this large (a thousand PiB): WARNING, without filling a disk.
    let huge = (1u64 << 40).to_string();

    // The gateway's own thresholds (the defaults here), whatever this machine has free.
    let (code, out) = check(d, &["--disk", "--listener", "smtp"]);
    assert!((0..=2).contains(&code), "{out}");
    let line = status_line(&out);
    assert!(line.contains(" disk free"), "{out}");
    assert!(
        line.contains(&format!(";{}:;{}:;0", 1024u64 << 20, 256u64 << 20)),
        "the configured thresholds are the defaults: {out}"
    );

    let (code, out) = check(d, &["--warn-disk-mib", &huge, "--listener", "smtp"]);
    assert_eq!(code, 1, "{out}");
    let line = status_line(&out);
    assert!(line.starts_with("GATEWAY WARNING - "), "{out}");
    assert!(line.contains("below the warning threshold of "), "{out}");
    assert!(line.contains("'free_disk'="), "{out}");
    assert!(
        line.contains(&format!("B;{}:;", (1u64 << 40) << 20)),
        "{out}"
    );
    assert!(out.contains("[OK] smtp 127.0.0.1:"), "{out}");

    // Below the critical threshold too: CRITICAL wins.
    let (code, out) = check(
        d,
        &[
            "--warn-disk-mib",
            &huge,
            "--crit-disk-mib",
            &huge,
            "--listener",
            "smtp",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        status_line(&out).contains("below the critical threshold of "),
        "{out}"
    );

    // Thresholds that contradict each other: bad usage, UNKNOWN.
    let (code, out) = check(
        d,
        &[
            "--warn-disk-mib",
            "10",
            "--crit-disk-mib",
            "20",
            "--listener",
            "smtp",
        ],
    );
    assert_eq!(code, 3, "{out}");

    // No gateway behind the control socket: UNKNOWN, saying why.
    let elsewhere = d.join("elsewhere");
    let (code, out) = check(
        d,
        &[
            "--data-dir",
            elsewhere.to_str().unwrap(),
            "--disk",
            "--listener",
            "smtp",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        status_line(&out).starts_with(
            "GATEWAY UNKNOWN - free disk space unknown: no gateway answers on the control socket"
        ),
        "{out}"
    );
}

#[test]
fn the_configured_disk_warning_threshold_reaches_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    // A warning threshold no disk is above (1 EiB).
    let mut text = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    text.push_str(&format!("[limits]\nwarn_free_disk_mib = {}\n", 1u64 << 40));
    std::fs::write(d.join("gateway.toml"), text).unwrap();
    let _served = Served::start(d);

    let (code, out) = check(d, &["--disk", "--listener", "smtp"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        status_line(&out).contains(&format!(";{}:;{}:;0", 1u64 << 60, 256u64 << 20)),
        "{out}"
    );
}

/// A PEM bundle (certificate and key) for the gateway's host name, valid for `days` more.
fn expiring_bundle(dir: &Path, days: u64) -> std::path::PathBuf {
    let cert = Leaf::names(&[HOST_NAME])
        .days_left(days)
        .self_signed()
        .unwrap();
    let path = dir.join(format!("expiring-{days}.pem"));
    std::fs::write(&path, cert.bundle_pem()).unwrap();
    path
}

#[test]
fn check_warns_and_then_goes_critical_as_the_certificate_nears_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let _served = Served::start(d);

    let import = |days: u64| {
        let bundle = expiring_bundle(d, days);
        let out = gateway(d, &["cert", "import", bundle.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // 10 days: between --crit-days 7 and --warn-days 30.
    import(10);
    let (code, out) = check(d, &["--listener", "smtps", "--listener", "pop3"]);
    assert_eq!(code, 1, "{out}");
    let line = status_line(&out);
    assert!(
        line.starts_with("GATEWAY WARNING - smtps 127.0.0.1:")
            && line.contains(": TLS TLSv1.")
            && line.contains(", certificate expires in "),
        "{out}"
    );
    assert!(
        line.contains("pop3 127.0.0.1:"),
        "STLS reaches the same certificate: {out}"
    );
    // The days left are 9 or 10, depending on the seconds since it was made.
    let days: i64 = line
        .split("'smtps_cert_days'=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|days| days.parse().ok())
        .unwrap_or_else(|| panic!("no days in {line}"));
    assert!((9..=10).contains(&days), "{line}");

    // 3 days: below --crit-days.
    import(3);
    let (code, out) = check(d, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        status_line(&out).starts_with("GATEWAY CRITICAL - smtp 127.0.0.1:"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("[CRITICAL] ")).count(),
        6,
        "{out}"
    );
    // Thresholds are the caller's: with --crit-days 2 it is only a warning.
    let (code, out) = check(d, &["--crit-days", "2"]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn bad_usage_is_unknown_never_critical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    for (args, says) in [
        (&["--warn-days", "many"][..], "bad usage: "),
        (&["--bogus"][..], "bad usage: "),
        (&["--warn-waiting", "1 week"][..], "bad usage: "),
        (
            &["--crit-days", "40"][..],
            "--crit-days (40) must not be more than --warn-days (30)",
        ),
        (&["--port", "imap=143"][..], "no listener is named \"imap\""),
        (&["--timeout", "0s"][..], "--timeout must be more than 0"),
    ] {
        let (code, out) = check(d, args);
        assert_eq!(code, 3, "{args:?}: {out}");
        assert!(
            out.starts_with("GATEWAY UNKNOWN - ") && out.contains(says) && out.lines().count() == 1,
            "{args:?}: {out}"
        );
    }
    // A configuration that cannot be read.
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "--config",
            d.join("missing.toml").to_str().unwrap(),
            "check",
        ])
        .env_remove("GATEWAY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("GATEWAY UNKNOWN - cannot read the configuration: "),
        "{stdout}"
    );
    // Help is no check: it exits 0 as for every command.
    assert_eq!(gateway(d, &["check", "--help"]).status.code(), Some(0));
}

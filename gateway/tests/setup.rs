//! `gateway setup` as an administrator runs it: flags for scripts, answers on stdin, checks
//! that only ever reach loopback (an injected DNS server, ports on 127.0.0.1).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn setup(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--config")
        .arg(dir.join("gateway.toml"))
        .arg("setup")
        .args(args)
        .current_dir(dir)
        .env("GATEWAY_DATA_DIR", dir.join("data"))
        .env_remove("GATEWAY_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["config", "check"])
        .arg(dir.join("gateway.toml"))
        .env_remove("GATEWAY_DATA_DIR")
        .env_remove("GATEWAY_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[test]
fn flags_write_a_commented_configuration_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = setup(
        d,
        &[
            "--non-interactive",
            "--skip-checks",
            "--email-domain",
            "Archive.Test",
            "--host-name",
            "gw.archive.test",
            "--certificate",
            "self-signed",
            "--log-level",
            "warn",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    // The commented template, with the answers in it.
    assert!(
        written.contains("email_domain = \"archive.test\""),
        "{written}"
    );
    assert!(written.contains("log_level = \"warn\""), "{written}");
    assert!(
        written.contains(&format!("data_dir = \"{}\"", d.join("data").display())),
        "{written}"
    );
    assert!(written.lines().filter(|l| l.starts_with('#')).count() > 20);
    let checked = check(d);
    assert!(
        checked.contains("email domain: archive.test") && checked.contains("gw.archive.test"),
        "{checked}"
    );
    assert!(
        text(&out).contains("MX 10 gw.archive.test."),
        "{}",
        text(&out)
    );
}

#[test]
fn questions_are_answered_on_stdin_and_a_second_run_keeps_what_it_is_not_told() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = setup(
        d,
        &["--skip-checks"],
        "archive.test\ngw.archive.test\nacme\nops@archive.test\nyes\ndebug\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    assert!(written.contains("source = \"acme\""), "{written}");
    assert!(
        written.contains("acme_contact_email = \"ops@archive.test\""),
        "{written}"
    );
    check(d);

    // Empty answers keep the current values; the file's own comments survive.
    let mut edited = written.replace("[smtp]", "# kept by hand\n[smtp]");
    edited.push('\n');
    std::fs::write(d.join("gateway.toml"), &edited).unwrap();
    let out = setup(d, &["--skip-checks", "--log-level", "info"], "\n\nkeep\n");
    assert!(out.status.success(), "{}", text(&out));
    let again = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    assert!(again.contains("email_domain = \"archive.test\""), "{again}");
    assert!(again.contains("source = \"acme\""), "{again}");
    assert!(again.contains("log_level = \"info\""), "{again}");
    assert!(again.contains("# kept by hand"), "{again}");
}

#[test]
fn acme_without_agreeing_to_the_terms_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = setup(
        d,
        &[
            "--non-interactive",
            "--skip-checks",
            "--email-domain",
            "archive.test",
            "--certificate",
            "acme",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("terms of service"), "{}", text(&out));
    assert!(!d.join("gateway.toml").exists());
}

/// The checks name a port another program holds, and say when DNS does not answer
/// (a loopback "DNS server" that never replies stands in for a broken resolver).
#[test]
fn checks_name_a_taken_port_and_an_unanswered_dns_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = free.local_addr().unwrap().port();
    drop(free);
    let mut config = format!(
        "[gateway]\nemail_domain = \"archive.test\"\nhost_name = \"gw.archive.test\"\n\
         [listen.smtp]\naddress = \"127.0.0.1\"\nport = {taken_port}\n\
         [listen.pop3]\naddress = \"127.0.0.1\"\nport = {free_port}\n"
    );
    for name in ["smtps", "submission", "pop3s", "console"] {
        config.push_str(&format!("[listen.{name}]\nenabled = false\n"));
    }
    std::fs::write(d.join("gateway.toml"), config).unwrap();
    let silent_dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = silent_dns.local_addr().unwrap().to_string();

    let out = setup(d, &["--non-interactive", "--dns-server", &dns], "");
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("smtp: port {taken_port} is in use")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("pop3 can listen on 127.0.0.1:{free_port}")),
        "{shown}"
    );
    assert!(
        shown.contains("could not look up the MX record of archive.test"),
        "{shown}"
    );
    assert!(
        shown.contains("could not look up gw.archive.test"),
        "{shown}"
    );
    drop(taken);
}

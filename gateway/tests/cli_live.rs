//! The CLI on a running gateway: `gateway serve` runs as a real process and `gateway mailbox
//! ...` reaches it through the control socket, while it keeps accepting mail. Without the
//! socket these commands would stop with "the store is in use by a running gateway".

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

mod served;
use served::{deliver, gateway, hold_free_ports, listen_sections, ok_json, Served, LISTENERS};
use test_support::pki::Leaf;

use serde_json::Value;

const EMAIL_DOMAIN: &str = "archive.test";

/// A configuration with every listener on 127.0.0.1 and a free port (the configuration
/// refuses port 0, as the other tests that run `gateway serve` know).
fn write_config(dir: &Path) {
    let mut text = format!(
        "[gateway]\nemail_domain = \"{EMAIL_DOMAIN}\"\nhost_name = \"mx.archive.test\"\nlog_level = \"info\"\n"
    );
    let (_held, ports) = hold_free_ports(LISTENERS.len());
    text.push_str(&listen_sections(&LISTENERS, &ports));
    std::fs::write(dir.join("gateway.toml"), text).unwrap();
}

/// A failed `--json` command: exit code 1 and one JSON error object.
fn failed_json(dir: &Path, args: &[&str]) -> Value {
    let out = gateway(dir, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    value["error"].clone()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn the_cli_manages_a_running_gateway_that_keeps_accepting_mail() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let served = Served::start(d);
    let socket = d.join("data/control.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "only the gateway's user may connect");

    let created = ok_json(d, &["mailbox", "create", "--name", "Sales", "--json"]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["address"], format!("{id}@{EMAIL_DOMAIN}"));
    assert!(created["password"].as_str().is_some_and(|p| !p.is_empty()));

    let list = ok_json(d, &["mailbox", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());

    // New mail reaches the new mailbox at once: no restart.
    deliver(
        served.addr("smtp"),
        &format!("{id}@{EMAIL_DOMAIN}"),
        "Subject: journal\r\n\r\nhello",
    );
    let shown = ok_json(d, &["mailbox", "show", &id, "--json"]);
    assert_eq!(shown["messageCount"], 1, "{shown}");
    assert_eq!(shown["name"], "Sales");

    let suspended = ok_json(d, &["mailbox", "suspend", &id, "--json"]);
    assert_eq!(suspended["status"], "suspended");
    // A broken rule is a failed answer with its stable kind and what to do.
    let refused = failed_json(d, &["mailbox", "delete", &id, "--json"]);
    assert_eq!(refused["kind"], "conflict", "{refused}");
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("let the archiver empty it first"));
    let missing = failed_json(
        d,
        &[
            "mailbox",
            "show",
            "mbx-0123456789abcdef0123456789abcdef",
            "--json",
        ],
    );
    assert_eq!(missing["kind"], "not_found");

    // An empty mailbox goes all the way: create, suspend, delete.
    let empty = ok_json(d, &["mailbox", "create", "--name", "Temp", "--json"]);
    let empty_id = empty["id"].as_str().unwrap();
    ok_json(d, &["mailbox", "suspend", empty_id, "--json"]);
    let deleted = ok_json(d, &["mailbox", "delete", empty_id, "--json"]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["id"], empty_id);

    // People get the same text as on a stopped gateway.
    let out = gateway(d, &["mailbox", "show", &id]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Status:      suspended"), "{text}");
    assert!(text.contains("Messages:    1 ("), "{text}");

    let log = served.stop();
    // Every command went through the running gateway.
    assert!(
        log.contains("function=\"CreateMailbox\"") && log.contains("function=\"DeleteMailbox\""),
        "{log}"
    );
    assert!(!socket.exists(), "removed at shutdown");

    // Stopped: the same commands answer from the store, in the same shape.
    let stopped = ok_json(d, &["mailbox", "show", &id, "--json"]);
    assert_eq!(keys(&stopped), keys(&shown));
    assert_eq!(stopped["messageCount"], 1);
    assert_eq!(stopped["status"], "suspended");
    let stopped_list = ok_json(d, &["mailbox", "list", "--json"]);
    assert_eq!(keys(&stopped_list[0]), keys(&list[0]));
}

#[test]
fn a_killed_gateway_leaves_no_obstacle_for_the_cli_or_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let served = Served::start(d);
    let created = ok_json(d, &["mailbox", "create", "--name", "Sales", "--json"]);
    served.kill();
    let socket = d.join("data/control.sock");
    assert!(socket.exists(), "SIGKILL leaves the socket file behind");

    // Nobody listens: the CLI opens the store itself.
    let list = ok_json(d, &["mailbox", "list", "--json"]);
    assert_eq!(list[0]["id"], created["id"]);

    // The next start replaces the stale socket and the CLI reaches it again.
    let served = Served::start(d);
    let shown = ok_json(
        d,
        &["mailbox", "show", created["id"].as_str().unwrap(), "--json"],
    );
    assert_eq!(shown["name"], "Sales");
    let log = served.stop();
    assert!(
        log.contains("replacing the control socket") && log.contains("function=\"GetMailbox\""),
        "{log}"
    );
}

#[test]
fn serve_warns_while_the_email_domain_is_the_default_and_not_once_it_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let warning = "the email domain is still the default";
    let set = Served::start(d).stop();
    assert!(!set.contains(warning), "{set}");

    let config = d.join("gateway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&format!("\"{EMAIL_DOMAIN}\""), "\"localhost\""),
    )
    .unwrap();
    let default = Served::start(d).stop();
    assert!(
        default.contains(warning) && default.contains("WARN"),
        "{default}"
    );
}

#[test]
fn admin_reset_password_prints_a_new_password_once_running_or_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let served = Served::start(d);
    let first = ok_json(d, &["admin", "reset-password", "--json"]);
    let password = first["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 16, "{first}");

    let out = gateway(d, &["admin", "reset-password"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("shown only this once") && !text.contains(&password),
        "a new one each time: {text}"
    );
    let log = served.stop();
    assert!(log.contains("function=\"ResetAdminPassword\""), "{log}");
    assert!(
        !log.contains(&password),
        "the password is in no log line: {log}"
    );

    let stopped = ok_json(d, &["admin", "reset-password", "--json"]);
    assert_eq!(keys(&stopped), keys(&first));
    assert_ne!(stopped["password"], first["password"]);
}

#[test]
fn settings_are_shown_and_set_on_a_running_gateway_and_kept_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let served = Served::start(d);
    let shown = ok_json(d, &["settings", "show", "--json"]);
    assert_eq!(shown["emailDomain"], EMAIL_DOMAIN);
    let set = ok_json(
        d,
        &[
            "settings",
            "set",
            "--email-domain",
            "journal.test",
            "--language",
            "de",
            "--json",
        ],
    );
    assert_eq!(set["emailDomain"], "journal.test");
    assert_eq!(set["consoleLanguage"], "de");
    // New mailboxes get the new domain at once.
    let created = ok_json(d, &["mailbox", "create", "--name", "New", "--json"]);
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["address"], format!("{id}@journal.test"));
    deliver(
        served.addr("smtp"),
        &format!("{id}@journal.test"),
        "Subject: x\r\n\r\ny",
    );
    served.stop();

    let file = std::fs::read_to_string(d.join("gateway.toml")).unwrap();
    assert!(file.contains("journal.test"), "{file}");
    let stopped = ok_json(d, &["settings", "show", "--json"]);
    assert_eq!(keys(&stopped), keys(&shown));
    assert_eq!(stopped["emailDomain"], "journal.test");
    assert_eq!(stopped["consoleLanguage"], "de");
}

/// The SHA-256 fingerprint (lowercase hex) of the certificate `openssl s_client` is shown on
/// an implicit-TLS listener.
fn presented_fingerprint(addr: &str) -> String {
    let client = Command::new("openssl")
        .args(["s_client", "-connect", addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(&client.stdout)
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().rsplit('=').next().unwrap_or_default();
    hex.replace(':', "").to_ascii_lowercase()
}

#[test]
fn an_imported_certificate_is_presented_at_once_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let served = Served::start(d);
    let smtps = served.addr("smtps").to_string();
    let pop3s = served.addr("pop3s").to_string();
    let before = ok_json(d, &["cert", "show", "--json"]);
    assert_eq!(before["source"], "self-signed");
    assert_eq!(presented_fingerprint(&smtps), before["sha256Fingerprint"]);

    let cert = Leaf::names(&["mx.archive.test"]).self_signed().unwrap();
    let bundle = d.join("bundle.pem");
    std::fs::write(&bundle, cert.bundle_pem()).unwrap();
    let imported = ok_json(d, &["cert", "import", bundle.to_str().unwrap(), "--json"]);
    let fingerprint = imported["certificate"]["sha256Fingerprint"].clone();
    assert_eq!(imported["certificate"]["source"], "imported");
    assert_ne!(fingerprint, before["sha256Fingerprint"]);
    // No restart: the next handshake already gets the new certificate.
    assert_eq!(presented_fingerprint(&smtps), fingerprint);
    assert_eq!(
        ok_json(d, &["cert", "show", "--json"])["sha256Fingerprint"],
        fingerprint
    );

    // A PKCS#12 file as Windows exports it (legacy 3DES/RC2), password from a file.
    let cert = Leaf::names(&["mx.archive.test"]).self_signed().unwrap();
    std::fs::write(d.join("p12.pem"), cert.bundle_pem()).unwrap();
    let p12 = d.join("server.pfx");
    let made = Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-legacy",
            "-passout",
            "pass:s3cret",
            "-in",
        ])
        .arg(d.join("p12.pem"))
        .arg("-out")
        .arg(&p12)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(d.join("password"), "s3cret\n").unwrap();
    let imported = ok_json(
        d,
        &[
            "cert",
            "import",
            p12.to_str().unwrap(),
            "--password-file",
            d.join("password").to_str().unwrap(),
            "--json",
        ],
    );
    let fingerprint = imported["certificate"]["sha256Fingerprint"].clone();
    assert_eq!(presented_fingerprint(&smtps), fingerprint);
    assert_eq!(presented_fingerprint(&pop3s), fingerprint);
    served.stop();

    let served = Served::start(d);
    let shown = ok_json(d, &["cert", "show", "--json"]);
    assert_eq!(shown["sha256Fingerprint"], fingerprint);
    assert_eq!(shown["source"], "imported");
    served.stop();
}

/// A certificate for the host name, written as PEM chain and key files; its SHA-256.
fn write_certificate_files(chain: &Path, key_file: &Path) -> String {
    let cert = Leaf::names(&["mx.archive.test"]).self_signed().unwrap();
    std::fs::write(chain, cert.cert_pem()).unwrap();
    std::fs::write(key_file, cert.key_pem()).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `systemctl reload`: certificate files renewed by another tool are presented without a
/// restart, and a change only a restart applies is named in the log.
#[test]
fn sighup_presents_renewed_certificate_files_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d);
    let (chain, key) = (d.join("fullchain.pem"), d.join("privkey.pem"));
    let first = write_certificate_files(&chain, &key);
    let config = d.join("gateway.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[tls]\nsource = \"files\"\ncertificate_chain = \"{}\"\nprivate_key = \"{}\"\n",
        chain.display(),
        key.display()
    ));
    std::fs::write(&config, &text).unwrap();
    let mut served = Served::start(d);
    let smtps = served.addr("smtps").to_string();
    assert_eq!(presented_fingerprint(&smtps), first);

    // Renewed files, and a limit changed in the file.
    let second = write_certificate_files(&chain, &key);
    assert_ne!(second, first);
    text.push_str("[limits]\nmax_recipients = 7\n");
    std::fs::write(&config, &text).unwrap();
    served.hangup();
    served.wait_for(&["SIGHUP: certificate reloaded from its files"]);
    served.wait_for(&["takes effect after a restart", "limits.max_recipients"]);
    assert_eq!(presented_fingerprint(&smtps), second);

    // Nothing new: said so, nothing swapped.
    served.hangup();
    served.wait_for(&["SIGHUP: certificate files unchanged"]);
    assert_eq!(presented_fingerprint(&smtps), second);
    let log = served.stop();
    assert!(!log.contains("listen.smtps"), "{log}");
}

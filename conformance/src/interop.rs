//! Interoperability with real clients: swaks, Python's smtplib and poplib, curl (SMTP and
//! POP3 with `--ssl-reqd`), `openssl s_client -starttls`, and fetchmail. Every client
//! verifies the gateway's certificate against the test root and the host name `localhost`.
//! A missing tool is a skip (the run fails on skips unless `--allow-skips`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::matrix::{Level, Suite};
use crate::pop3::{filled, three};
use crate::target::{Service, Target};
use crate::{skip, Check};

crate::requirement_fn!(Suite::Interop);

pub fn checks() -> Vec<Check> {
    use Level::*;
    crate::checks![
        r("interop.swaks-starttls", "3207", "4", Must, "swaks delivers over STARTTLS on 25 and 587 with certificate verification") => swaks_starttls,
        r("interop.swaks-smtps", "8314", "3.3", Must, "swaks delivers over implicit TLS on 465") => swaks_smtps,
        r("interop.smtplib", "5321", "3, 3207 4, 8314 3.3", Must, "Python smtplib delivers in clear, with STARTTLS and over SMTP_SSL") => smtplib,
        r("interop.poplib", "1939", "5, 2595 4, 8314 3.2", Must, "Python poplib retrieves and deletes over STLS and POP3_SSL") => poplib,
        r("interop.curl-smtp", "3207", "4, 8314 3.3", Must, "curl smtp:// --ssl-reqd (STARTTLS) and smtps:// deliver") => curl_smtp,
        r("interop.curl-pop3", "2595", "4, 8314 3.2", Must, "curl pop3:// --ssl-reqd (STLS) and pop3s:// list and retrieve") => curl_pop3,
        r("interop.openssl-smtp", "3207", "4", Must, "openssl s_client -starttls smtp verifies the chain and runs a session") => openssl_smtp,
        r("interop.openssl-pop3", "2595", "4", Must, "openssl s_client -starttls pop3 verifies the chain and runs a session") => openssl_pop3,
        r("interop.fetchmail", "1939", "5, 2595 4, 8314 3.2", Must, "fetchmail retrieves over POP3S (deleting) and over STLS (keeping)") => fetchmail,
    ]
}

const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `tool` runs at all (`--version` or similar succeeds).
fn available(tool: &str, version_arg: &str) -> bool {
    std::process::Command::new(tool)
        .arg(version_arg)
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

fn need(tool: &str, version_arg: &str, package: &str) -> Result<()> {
    if available(tool, version_arg) {
        Ok(())
    } else {
        Err(skip(format!(
            "{tool} is not installed (apt-get install {package})"
        )))
    }
}

async fn run(mut cmd: tokio::process::Command, stdin: Option<&[u8]>) -> Result<Output> {
    use tokio::io::AsyncWriteExt;
    cmd.kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
    let shown = format!("{:?}", cmd.as_std().get_program());
    let mut child = cmd.spawn().with_context(|| format!("start {shown}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).await?;
    }
    let out = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{shown} took over {TOOL_TIMEOUT:?}"))??;
    Ok(out)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" / ")
}

fn ensure_success(what: &str, out: &Output) -> Result<()> {
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        tail(&text(out))
    );
    Ok(())
}

fn unique(t: &Target, stem: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    t.scratch()
        .join(format!("{stem}-{}", N.fetch_add(1, Ordering::Relaxed)))
}

/// Checks that the last stored message contains `needle`.
fn stored_contains(
    t: &Target,
    mb: &crate::target::Mailbox,
    count: usize,
    needle: &str,
) -> Result<()> {
    let stored = t.messages(mb)?;
    ensure!(
        stored.len() == count,
        "{} messages stored, expected {count}",
        stored.len()
    );
    let last = String::from_utf8_lossy(stored.last().map_or(&[][..], |m| &m[..])).into_owned();
    ensure!(last.contains(needle), "stored message lacks {needle:?}");
    Ok(())
}

async fn swaks(t: &Target, service: Service, flag: &str, to: &str, subject: &str) -> Result<()> {
    let mut cmd = tokio::process::Command::new("swaks");
    cmd.args([
        "--server",
        "127.0.0.1",
        "--port",
        &t.addr(service).port().to_string(),
    ])
    .args([
        "--to",
        to,
        "--from",
        "swaks@example.org",
        flag,
        "--tls-verify",
        "--tls-ca-path",
    ])
    .arg(&t.pki.root)
    .args([
        "--header",
        &format!("Subject: {subject}"),
        "--body",
        "Body from swaks.\n.leading dot\n",
    ]);
    let out = run(cmd, None).await?;
    ensure_success(&format!("swaks {flag} on {}", service.name()), &out)
}

async fn swaks_starttls(t: &Target) -> Result<()> {
    need("swaks", "--version", "swaks")?;
    let mb = t.mailbox("swaks").await?;
    swaks(t, Service::Smtp, "--tls", &mb.address, "swaks on 25").await?;
    stored_contains(t, &mb, 1, "Subject: swaks on 25")?;
    swaks(t, Service::Submission, "--tls", &mb.address, "swaks on 587").await?;
    stored_contains(t, &mb, 2, "Subject: swaks on 587")
}

async fn swaks_smtps(t: &Target) -> Result<()> {
    need("swaks", "--version", "swaks")?;
    let mb = t.mailbox("swaks-tlsc").await?;
    swaks(t, Service::Smtps, "--tlsc", &mb.address, "swaks on 465").await?;
    stored_contains(t, &mb, 1, "Subject: swaks on 465")
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
port, mode, ca, rcpt = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if mode == "ssl":
    c = smtplib.SMTP_SSL("localhost", port, context=ctx, timeout=30)
else:
    c = smtplib.SMTP("localhost", port, timeout=30)
c.ehlo("python.example.org")
if mode == "starttls":
    c.starttls(context=ctx)
    c.ehlo("python.example.org")
    assert not c.has_extn("starttls"), "STARTTLS offered inside TLS"
msg = ("From: py@example.org\r\nSubject: smtplib %s\r\n\r\n.dot line\r\nbody\r\n" % mode).encode()
refused = c.sendmail("py@example.org", [rcpt], msg)
assert not refused, refused
c.quit()
"#;

async fn smtplib(t: &Target) -> Result<()> {
    need("python3", "--version", "python3")?;
    let mb = t.mailbox("smtplib").await?;
    for (n, (service, mode)) in [
        (Service::Smtp, "plain"),
        (Service::Submission, "starttls"),
        (Service::Smtps, "ssl"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.args(["-c", SMTPLIB, &t.addr(service).port().to_string(), mode])
            .arg(&t.pki.root)
            .arg(&mb.address);
        let out = run(cmd, None).await?;
        ensure_success(&format!("smtplib {mode}"), &out)?;
        stored_contains(t, &mb, n + 1, &format!("Subject: smtplib {mode}"))?;
    }
    Ok(())
}

const POPLIB: &str = r#"
import poplib, ssl, sys
port, mode, ca, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
if mode == "ssl":
    c = poplib.POP3_SSL("localhost", port, context=ctx, timeout=30)
else:
    c = poplib.POP3("localhost", port, timeout=30)
    c.stls(context=ctx)
c.user(user)
c.pass_(pw)
count, _ = c.stat()
for i in range(1, count + 1):
    _, lines, _ = c.retr(i)
    sys.stdout.write(b"\n".join(lines).decode("utf-8", "replace") + "\n=====\n")
    c.dele(i)
c.quit()
"#;

async fn poplib(t: &Target) -> Result<()> {
    need("python3", "--version", "python3")?;
    for (service, mode) in [(Service::Pop3, "stls"), (Service::Pop3s, "ssl")] {
        let mb = filled(
            t,
            &format!("poplib-{mode}"),
            &three(&format!("poplib {mode}")),
        )
        .await?;
        let mut cmd = tokio::process::Command::new("python3");
        cmd.args(["-c", POPLIB, &t.addr(service).port().to_string(), mode])
            .arg(&t.pki.root)
            .args([mb.user(), mb.pass()]);
        let out = run(cmd, None).await?;
        ensure_success(&format!("poplib {mode}"), &out)?;
        let got = String::from_utf8_lossy(&out.stdout);
        for i in 1..=3 {
            ensure!(
                got.contains(&format!("Subject: poplib {mode} {i}")),
                "poplib {mode}: message {i} missing"
            );
        }
        ensure!(
            got.contains("\n.leading dot\n..two\n.\n"),
            "poplib {mode}: dot lines altered"
        );
        ensure!(
            t.message_count(&mb)? == 0,
            "poplib {mode}: not deleted at QUIT"
        );
    }
    Ok(())
}

fn curl(t: &Target, service: Service) -> tokio::process::Command {
    let port = t.addr(service).port();
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--ssl-reqd", "--max-time", "30", "--cacert"])
        .arg(&t.pki.root)
        // "localhost" for certificate verification, but only the IPv4 loopback we listen on.
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
    cmd
}

async fn curl_smtp(t: &Target) -> Result<()> {
    need("curl", "--version", "curl")?;
    let mb = t.mailbox("curl").await?;
    for (n, (service, scheme)) in [(Service::Submission, "smtp"), (Service::Smtps, "smtps")]
        .into_iter()
        .enumerate()
    {
        let file = unique(t, "curl-mail");
        std::fs::write(
            &file,
            format!("From: curl@example.org\r\nSubject: curl {scheme}\r\n\r\n.dot\r\nbody\r\n"),
        )?;
        let mut cmd = curl(t, service);
        cmd.arg(format!("{scheme}://localhost:{}", t.addr(service).port()))
            .args([
                "--mail-from",
                "curl@example.org",
                "--mail-rcpt",
                &mb.address,
                "-T",
            ])
            .arg(&file);
        let out = run(cmd, None).await?;
        ensure_success(&format!("curl {scheme}"), &out)?;
        stored_contains(t, &mb, n + 1, &format!("Subject: curl {scheme}"))?;
    }
    Ok(())
}

async fn curl_pop3(t: &Target) -> Result<()> {
    need("curl", "--version", "curl")?;
    let mb = filled(t, "curl-pop3", &three("curl pop3")).await?;
    for (service, scheme) in [(Service::Pop3, "pop3"), (Service::Pop3s, "pop3s")] {
        let base = format!("{scheme}://localhost:{}", t.addr(service).port());
        let mut list = curl(t, service);
        list.args(["-u", &format!("{}:{}", mb.user(), mb.pass())])
            .arg(format!("{base}/"));
        let out = run(list, None).await?;
        ensure_success(&format!("curl {scheme} LIST"), &out)?;
        ensure!(
            String::from_utf8_lossy(&out.stdout).lines().count() == 3,
            "curl {scheme} LIST: {}",
            tail(&text(&out))
        );
        let mut retr = curl(t, service);
        retr.args(["-u", &format!("{}:{}", mb.user(), mb.pass())])
            .arg(format!("{base}/2"));
        let out = run(retr, None).await?;
        ensure_success(&format!("curl {scheme} RETR"), &out)?;
        let stored = t.messages(&mb)?;
        ensure!(
            stored.get(1).is_some_and(|m| *m == out.stdout),
            "curl {scheme}: message 2 differs from the stored one"
        );
    }
    Ok(())
}

async fn s_client(t: &Target, service: Service, proto: &str, input: &str) -> Result<String> {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &t.addr(service).to_string(),
        "-starttls",
        proto,
    ])
    .args([
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
    ])
    .args(["-CAfile"])
    .arg(&t.pki.root)
    .args(["-crlf", "-ign_eof"]);
    let out = run(cmd, Some(input.as_bytes())).await?;
    let all = text(&out);
    ensure!(
        out.status.success(),
        "openssl s_client -starttls {proto} failed: {}",
        tail(&all)
    );
    ensure!(
        all.contains("Verify return code: 0 (ok)"),
        "chain not verified: {}",
        tail(&all)
    );
    Ok(all)
}

async fn openssl_smtp(t: &Target) -> Result<()> {
    need("openssl", "version", "openssl")?;
    // s_client sent its own EHLO and STARTTLS; this is the session inside TLS.
    let out = s_client(
        t,
        Service::Smtp,
        "smtp",
        "EHLO openssl.example.org\nNOOP\nQUIT\n",
    )
    .await?;
    ensure!(
        out.contains("250 2.0.0"),
        "no NOOP reply inside TLS: {}",
        tail(&out)
    );
    ensure!(out.contains("221 "), "no QUIT reply: {}", tail(&out));
    ensure!(
        out.contains("TLSv1.3") || out.contains("TLSv1.2"),
        "protocol not shown"
    );
    Ok(())
}

async fn openssl_pop3(t: &Target) -> Result<()> {
    need("openssl", "version", "openssl")?;
    let out = s_client(t, Service::Pop3, "pop3", "CAPA\nQUIT\n").await?;
    ensure!(
        out.contains("\nUSER"),
        "CAPA inside TLS lacks USER: {}",
        tail(&out)
    );
    ensure!(out.contains("+OK"), "no +OK: {}", tail(&out));
    Ok(())
}

struct Fetchmail {
    home: PathBuf,
    out_dir: PathBuf,
    mda: PathBuf,
}

impl Fetchmail {
    fn new(t: &Target, mb: &crate::target::Mailbox) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let home = unique(t, "fetchmail-home");
        let out_dir = home.join("delivered");
        std::fs::create_dir_all(&out_dir)?;
        let rc = home.join(".fetchmailrc");
        std::fs::write(
            &rc,
            format!(
                "poll localhost user \"{}\" password \"{}\"\n",
                mb.user(),
                mb.pass()
            ),
        )?;
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600))?;
        let mda = home.join("mda.sh");
        std::fs::write(
            &mda,
            "#!/bin/sh\nn=$(ls \"$1\" | wc -l)\nexec cat > \"$1/$n.eml\"\n",
        )?;
        std::fs::set_permissions(&mda, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { home, out_dir, mda })
    }

    async fn run(&self, user: &str, root: &Path, options: &[&str]) -> Result<String> {
        let mut cmd = tokio::process::Command::new("fetchmail");
        cmd.env("HOME", &self.home)
            .env_remove("FETCHMAILHOME")
            .env_remove("FETCHMAILUSER")
            .arg("-f")
            .arg(self.home.join(".fetchmailrc"))
            .arg("--pidfile")
            .arg(self.home.join("fetchmail.pid"))
            .args([
                "-v",
                "--nosyslog",
                "--all",
                "-p",
                "POP3",
                "-u",
                user,
                "--sslcertck",
                "--sslcertfile",
            ])
            .arg(root)
            .args(["--sslproto", "TLS1.2+", "--mda"])
            .arg(format!("{} {}", self.mda.display(), self.out_dir.display()))
            .args(options)
            .arg("localhost");
        let out = run(cmd, None).await?;
        ensure_success("fetchmail", &out)?;
        Ok(text(&out))
    }

    fn delivered(&self) -> Result<usize> {
        Ok(std::fs::read_dir(&self.out_dir)?.count())
    }
}

async fn fetchmail(t: &Target) -> Result<()> {
    need("fetchmail", "--version", "fetchmail")?;
    let mb = filled(t, "fetchmail-stls", &three("fetchmail stls")).await?;
    let f = Fetchmail::new(t, &mb)?;
    let port = t.addr(Service::Pop3).port().to_string();
    // No --ssl on the plain port: --sslproto makes fetchmail insist on STLS.
    let log = f
        .run(&mb.user(), &t.pki.root, &["-P", &port, "--keep", "--uidl"])
        .await?;
    let upgraded = log.find("upgrade to TLS succeeded");
    let user_sent = log.find("POP3> USER").or_else(|| log.find("POP3> AUTH"));
    ensure!(
        upgraded.is_some() && upgraded < user_sent,
        "fetchmail logged in before STLS: {}",
        tail(&log)
    );
    ensure!(
        f.delivered()? == 3,
        "fetchmail over STLS delivered {} messages",
        f.delivered()?
    );
    ensure!(t.message_count(&mb)? == 3, "--keep deleted messages");

    let mb = filled(t, "fetchmail-pop3s", &three("fetchmail pop3s")).await?;
    let f = Fetchmail::new(t, &mb)?;
    let port = t.addr(Service::Pop3s).port().to_string();
    f.run(&mb.user(), &t.pki.root, &["--ssl", "-P", &port, "--nokeep"])
        .await?;
    ensure!(
        f.delivered()? == 3,
        "fetchmail over POP3S delivered {} messages",
        f.delivered()?
    );
    ensure!(t.message_count(&mb)? == 0, "--nokeep left messages");
    Ok(())
}

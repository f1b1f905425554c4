//! TLS on every listener: implicit TLS on 465 and 995 (RFC 8314), the chain a client needs
//! served whole, and `testssl.sh` scans for protocol versions, cipher categories and the
//! chain of trust.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::client::Client;
use crate::matrix::{Level, Outcome, Requirement, Suite, Verdict};
use crate::target::{Service, Target};
use crate::Check;

crate::requirement_fn!(Suite::Tls);

pub fn checks() -> Vec<Check> {
    use Level::*;
    crate::checks![
        r("tls.implicit-465", "8314", "3.3", Must, "465 starts TLS on connect; the SMTP greeting comes inside TLS") => implicit_465,
        r("tls.implicit-995", "8314", "3.2", Must, "995 starts TLS on connect; the POP3 greeting comes inside TLS") => implicit_995,
        r("tls.version", "8996", "4, 5", Must, "every listener negotiates TLS 1.2 or later with a current client (RFC 8314 4.1 as updated by RFC 8996)") => version,
        r("tls.chain", "8446/5246", "4.4.2/7.4.2", Must, "every listener serves leaf and intermediate: a client trusting only the root verifies it") => chain,
    ]
}

async fn implicit(t: &Target, service: Service, smtp: bool) -> Result<()> {
    let mut c = Client::connect_tls(t.addr(service), t.connector()).await?;
    let first = c.line().await?;
    let ok = if smtp {
        first.starts_with("220 ")
    } else {
        first.starts_with("+OK")
    };
    ensure!(ok, "greeting inside TLS: {first:?}");
    // A plaintext client gets no greeting: the server waits for a ClientHello.
    let mut plain = Client::connect(t.addr(service)).await?;
    ensure!(
        !plain.anything_within(Duration::from_millis(500)).await?,
        "plaintext bytes before TLS on {}",
        service.name()
    );
    Ok(())
}

async fn implicit_465(t: &Target) -> Result<()> {
    implicit(t, Service::Smtps, true).await
}

async fn implicit_995(t: &Target) -> Result<()> {
    implicit(t, Service::Pop3s, false).await
}

/// A client on `service` with TLS on (STARTTLS or STLS first where needed).
async fn tls_client(t: &Target, service: Service) -> Result<Client> {
    if service.implicit_tls() {
        return Client::connect_tls(t.addr(service), t.connector()).await;
    }
    let mut c = Client::connect(t.addr(service)).await?;
    if service.is_smtp() {
        c.reply().await?.expect(220)?;
        c.command("EHLO client.example.org").await?.expect(250)?;
        c.command("STARTTLS").await?.expect(220)?;
    } else {
        c.line().await?;
        c.pop_ok("STLS").await?;
    }
    c.upgrade(t.connector()).await?;
    Ok(c)
}

async fn version(t: &Target) -> Result<()> {
    for service in Service::ALL {
        let c = tls_client(t, service).await?;
        let v = c.tls_version().context("no TLS version")?;
        ensure!(
            v == "TLSv1_3" || v == "TLSv1_2",
            "{}: negotiated {v}",
            service.name()
        );
    }
    Ok(())
}

async fn chain(t: &Target) -> Result<()> {
    // The connector trusts only the root, so every handshake below verifies leaf →
    // intermediate → root, which needs the intermediate from the server.
    for service in Service::ALL {
        tls_client(t, service)
            .await
            .with_context(|| service.name())?;
    }
    Ok(())
}

/// What one `testssl.sh` row looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Protocols,
    Ciphers,
    Chain,
}

/// The testssl rows: three per listener.
const TESTSSL: [(Requirement, Service, Scan); 15] = {
    use Level::Must;
    use Scan::*;
    use Service::*;
    const P: &str = "no SSL 2/3, TLS 1.0 or 1.1 offered; TLS 1.2 or 1.3 offered (testssl.sh; RFC 8314 4.1 as updated by RFC 8996)";
    const C: &str =
        "no NULL, anonymous, export or LOW cipher (MUST NOT), nor RC4, 3DES or CBC suites (SHOULD NOT) offered (testssl.sh; BCP 195 as RFC 8314 4.1 asks)";
    const H: &str = "chain of trust verifies against the root with the chain served (testssl.sh)";
    [
        (
            r("tls.testssl.protocols.smtp", "8996", "4, 5", Must, P),
            Smtp,
            Protocols,
        ),
        (
            r("tls.testssl.protocols.submission", "8996", "4, 5", Must, P),
            Submission,
            Protocols,
        ),
        (
            r("tls.testssl.protocols.smtps", "8996", "4, 5", Must, P),
            Smtps,
            Protocols,
        ),
        (
            r("tls.testssl.protocols.pop3", "8996", "4, 5", Must, P),
            Pop3,
            Protocols,
        ),
        (
            r("tls.testssl.protocols.pop3s", "8996", "4, 5", Must, P),
            Pop3s,
            Protocols,
        ),
        (
            r("tls.testssl.ciphers.smtp", "7525", "4.1", Must, C),
            Smtp,
            Ciphers,
        ),
        (
            r("tls.testssl.ciphers.submission", "7525", "4.1", Must, C),
            Submission,
            Ciphers,
        ),
        (
            r("tls.testssl.ciphers.smtps", "7525", "4.1", Must, C),
            Smtps,
            Ciphers,
        ),
        (
            r("tls.testssl.ciphers.pop3", "7525", "4.1", Must, C),
            Pop3,
            Ciphers,
        ),
        (
            r("tls.testssl.ciphers.pop3s", "7525", "4.1", Must, C),
            Pop3s,
            Ciphers,
        ),
        (
            r(
                "tls.testssl.chain.smtp",
                "8446/5246",
                "4.4.2/7.4.2",
                Must,
                H,
            ),
            Smtp,
            Chain,
        ),
        (
            r(
                "tls.testssl.chain.submission",
                "8446/5246",
                "4.4.2/7.4.2",
                Must,
                H,
            ),
            Submission,
            Chain,
        ),
        (
            r(
                "tls.testssl.chain.smtps",
                "8446/5246",
                "4.4.2/7.4.2",
                Must,
                H,
            ),
            Smtps,
            Chain,
        ),
        (
            r(
                "tls.testssl.chain.pop3",
                "8446/5246",
                "4.4.2/7.4.2",
                Must,
                H,
            ),
            Pop3,
            Chain,
        ),
        (
            r(
                "tls.testssl.chain.pop3s",
                "8446/5246",
                "4.4.2/7.4.2",
                Must,
                H,
            ),
            Pop3s,
            Chain,
        ),
    ]
};

/// The requirements the testssl scans decide.
pub fn testssl_requirements() -> Vec<Requirement> {
    TESTSSL.iter().map(|(r, _, _)| *r).collect()
}

/// How long one testssl scan may take before it counts as failed.
const TESTSSL_TIMEOUT: Duration = Duration::from_secs(240);

/// The testssl program: Debian installs it as `testssl`; upstream calls it `testssl.sh`.
fn testssl_program() -> Option<&'static str> {
    ["testssl", "testssl.sh"].into_iter().find(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Scans every listener of a gateway of its own, all five at once, and turns the findings
/// into the testssl rows.
pub async fn testssl_outcomes() -> Result<Vec<Outcome>> {
    let Some(program) = testssl_program() else {
        return Ok(TESTSSL
            .iter()
            .map(|(r, _, _)| Outcome {
                requirement: *r,
                verdict: Verdict::Skip(
                    "testssl.sh is not installed (apt-get install testssl.sh)".into(),
                ),
            })
            .collect());
    };
    let mut target = Target::start().await?;
    let scans = Service::ALL.map(|service| scan(program, &target, service));
    let results = futures_join_all(scans).await;
    target.stop().await;
    let mut outcomes = Vec::new();
    for (requirement, service, kind) in TESTSSL {
        let index = Service::ALL.iter().position(|s| *s == service).unwrap_or(0);
        let verdict = match &results[index] {
            Err(err) => Verdict::Fail(format!("testssl.sh: {err:#}")),
            Ok(findings) => match judge(findings, kind) {
                Ok(()) => Verdict::Pass,
                Err(err) => Verdict::Fail(format!("{err:#}")),
            },
        };
        outcomes.push(Outcome {
            requirement,
            verdict,
        });
    }
    Ok(outcomes)
}

/// Awaits every future concurrently, keeping their order (tokio has no join_all of its own).
async fn futures_join_all<F: std::future::Future>(futures: [F; 5]) -> [F::Output; 5] {
    let [a, b, c, d, e] = futures;
    let (a, b, c, d, e) = tokio::join!(a, b, c, d, e);
    [a, b, c, d, e]
}

/// One finding of testssl's flat JSON output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub id: String,
    pub severity: String,
    pub finding: String,
}

async fn scan(program: &str, t: &Target, service: Service) -> Result<Vec<Finding>> {
    let json = t.scratch().join(format!("testssl-{}.json", service.name()));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args([
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        "--nodns",
        "min",
    ])
    .args(["--connect-timeout", "10", "--openssl-timeout", "10"])
    // --server-preference: whether the server keeps its own cipher order (it must).
    .args([
        "--protocols",
        "--std",
        "--server-defaults",
        "--server-preference",
    ])
    .arg("--add-ca")
    .arg(&t.pki.root)
    .arg("--jsonfile")
    .arg(&json);
    match service {
        Service::Smtp | Service::Submission => {
            cmd.args(["--starttls", "smtp"]);
        }
        Service::Pop3 => {
            cmd.args(["--starttls", "pop3"]);
        }
        Service::Smtps | Service::Pop3s => {}
    }
    cmd.arg(t.addr(service).to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TESTSSL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("scan of {} took over {TESTSSL_TIMEOUT:?}", service.name()))?
        .context("run testssl")?;
    if !json.exists() {
        bail!(
            "no JSON output (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    parse_findings(&std::fs::read_to_string(&json)?)
}

/// Parses testssl's flat JSON (`--jsonfile`): an array of objects with `id`, `severity` and
/// `finding` among other fields.
pub fn parse_findings(json: &str) -> Result<Vec<Finding>> {
    let value: serde_json::Value = serde_json::from_str(json).context("testssl JSON")?;
    let items = value.as_array().context("testssl JSON is not an array")?;
    Ok(items
        .iter()
        .map(|item| {
            let field = |k: &str| {
                item.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            Finding {
                id: field("id"),
                severity: field("severity"),
                finding: field("finding"),
            }
        })
        .collect())
}

/// testssl's severities above LOW: any of them fails the row the finding belongs to.
const ABOVE_LOW: [&str; 3] = ["MEDIUM", "HIGH", "CRITICAL"];

/// Which of a listener's three rows a finding belongs to, so that one finding fails one row:
/// certificate and chain findings go to the chain row, cipher findings to the cipher row, and
/// everything else (protocols, server defaults, session handling) to the protocol row.
fn row_of(id: &str) -> Scan {
    const CHAIN: [&str; 5] = ["cert", "chain", "intermediate", "OCSP", "DNS_CAA"];
    const CIPHERS: [&str; 4] = ["cipher", "FS", "DH_", "PFS"];
    if CHAIN.iter().any(|p| id.starts_with(p)) {
        Scan::Chain
    } else if CIPHERS.iter().any(|p| id.starts_with(p)) {
        Scan::Ciphers
    } else {
        Scan::Protocols
    }
}

/// Findings that come from the suite's own PKI rather than the gateway: its root is made for
/// the run, is in no trust store (testssl trusts it through `--add-ca` for the chain check
/// only), and so the certificate cannot meet what a public CA's would.
/// The chain of trust has its own check in the chain row; a private CA has no CRL or OCSP
/// responder to name.
fn from_test_pki(finding: &Finding) -> bool {
    matches!(
        finding.id.as_str(),
        "cert_trust" | "cert_chain_of_trust" | "cert_revocation"
    )
}

fn judge(findings: &[Finding], scan: Scan) -> Result<()> {
    let get = |id: &str| findings.iter().find(|f| f.id == id);
    let offered = |id: &str| get(id).is_some_and(|f| f.finding.starts_with("offered"));
    let not_offered = |id: &str| get(id).is_some_and(|f| f.finding.starts_with("not offered"));
    if let Some(fatal) = findings.iter().find(|f| f.severity == "FATAL") {
        bail!("{}: {}", fatal.id, fatal.finding);
    }
    let serious: Vec<String> = findings
        .iter()
        .filter(|f| ABOVE_LOW.contains(&f.severity.as_str()))
        .filter(|f| row_of(&f.id) == scan && !from_test_pki(f))
        .map(|f| format!("{} ({}): {}", f.id, f.severity, f.finding))
        .collect();
    ensure!(
        serious.is_empty(),
        "findings above LOW: {}",
        serious.join("; ")
    );
    match scan {
        Scan::Protocols => {
            for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
                ensure!(
                    not_offered(old),
                    "{old}: {:?}",
                    get(old).map(|f| &f.finding)
                );
            }
            ensure!(
                offered("TLS1_2") || offered("TLS1_3"),
                "neither TLS 1.2 nor 1.3 offered"
            );
        }
        Scan::Ciphers => {
            for weak in [
                "cipherlist_NULL",
                "cipherlist_aNULL",
                "cipherlist_EXPORT",
                "cipherlist_LOW",
                "cipherlist_3DES_IDEA",
                "cipherlist_AVERAGE",
            ] {
                ensure!(
                    not_offered(weak),
                    "{weak}: {:?}",
                    get(weak).map(|f| &f.finding)
                );
            }
            ensure!(offered("cipherlist_STRONG"), "no strong cipher offered");
        }
        Scan::Chain => {
            let trust = get("cert_chain_of_trust").context("no chain-of-trust finding")?;
            ensure!(
                trust.severity == "OK" && trust.finding.starts_with("passed"),
                "chain of trust: {} ({})",
                trust.finding,
                trust.severity
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: &str, severity: &str, finding: &str) -> Finding {
        Finding {
            id: id.into(),
            severity: severity.into(),
            finding: finding.into(),
        }
    }

    #[test]
    fn judges_protocols() {
        let mut good = vec![
            f("SSLv2", "OK", "not offered"),
            f("SSLv3", "OK", "not offered"),
            f("TLS1", "INFO", "not offered"),
            f("TLS1_1", "INFO", "not offered"),
            f("TLS1_2", "OK", "offered"),
            f("TLS1_3", "OK", "offered with final"),
        ];
        assert!(judge(&good, Scan::Protocols).is_ok());
        good[2] = f("TLS1", "LOW", "offered (deprecated)");
        assert!(judge(&good, Scan::Protocols).is_err());
        assert!(judge(&[], Scan::Protocols).is_err());
    }

    #[test]
    fn judges_ciphers_and_chain() {
        let mut c: Vec<Finding> = [
            "cipherlist_NULL",
            "cipherlist_aNULL",
            "cipherlist_EXPORT",
            "cipherlist_LOW",
            "cipherlist_3DES_IDEA",
            "cipherlist_AVERAGE",
        ]
        .iter()
        .map(|id| f(id, "OK", "not offered"))
        .collect();
        c.push(f("cipherlist_STRONG", "OK", "offered"));
        assert!(judge(&c, Scan::Ciphers).is_ok());
        c[4] = f("cipherlist_3DES_IDEA", "MEDIUM", "offered");
        assert!(judge(&c, Scan::Ciphers).is_err());
        assert!(judge(&[f("cert_chain_of_trust", "OK", "passed.")], Scan::Chain).is_ok());
        assert!(judge(
            &[f(
                "cert_chain_of_trust",
                "CRITICAL",
                "failed (chain incomplete)."
            )],
            Scan::Chain
        )
        .is_err());
    }

    #[test]
    fn findings_above_low_fail_their_own_row_except_the_test_pki() {
        let mut findings = vec![
            f("SSLv2", "OK", "not offered"),
            f("SSLv3", "OK", "not offered"),
            f("TLS1", "INFO", "not offered"),
            f("TLS1_1", "INFO", "not offered"),
            f("TLS1_2", "OK", "offered"),
            f("cipherlist_STRONG", "OK", "offered"),
            f("cert_chain_of_trust", "OK", "passed."),
            f("OCSP_stapling", "LOW", "not offered"),
            f(
                "cert_trust",
                "MEDIUM",
                "certificate does not match any public trust anchor",
            ),
        ];
        for weak in [
            "cipherlist_NULL",
            "cipherlist_aNULL",
            "cipherlist_EXPORT",
            "cipherlist_LOW",
            "cipherlist_3DES_IDEA",
            "cipherlist_AVERAGE",
        ] {
            findings.push(f(weak, "OK", "not offered"));
        }
        for scan in [Scan::Protocols, Scan::Ciphers, Scan::Chain] {
            assert!(judge(&findings, scan).is_ok(), "{scan:?}");
        }
        // What testssl reported before the server's cipher order was set.
        findings.push(f("cipher_order", "MEDIUM", "not a cipher order configured"));
        assert!(judge(&findings, Scan::Ciphers).is_err());
        assert!(judge(&findings, Scan::Protocols).is_ok());
        findings.pop();
        findings.push(f("session_ticket", "HIGH", "reused"));
        assert!(judge(&findings, Scan::Protocols).is_err());
        assert!(judge(&findings, Scan::Chain).is_ok());
    }

    #[test]
    fn parses_flat_json() {
        let json = r#"[{"id":"TLS1_2","ip":"127.0.0.1/127.0.0.1","port":"25","severity":"OK","finding":"offered"}]"#;
        assert_eq!(
            parse_findings(json).unwrap(),
            vec![f("TLS1_2", "OK", "offered")]
        );
        assert!(parse_findings("{}").is_err());
    }
}

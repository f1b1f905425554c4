//! A real browser for the console's end-to-end tests: Debian's chromium, headless, driven over
//! WebDriver (chromedriver on a free loopback port, fantoccini as the client).
//!
//! Every page a test looks at goes through [`Browser::check_page`]: a screenshot under
//! `target/console-screenshots/<test>/<step>.png`, axe-core run inside the page (no serious
//! or critical violation allowed) and a keyboard walk (every visible control reachable with
//! Tab). The tools are found through `GATEWAY_CHROMEDRIVER`, `GATEWAY_CHROMIUM` and
//! `GATEWAY_AXE_JS` (set by `cargo xtask ci`), else in their usual places; a missing one
//! fails the test with the command that installs it, never skips it.
#![allow(dead_code)] // Not every test uses every helper.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::support::{TestGateway, HOST_NAME};

/// The axe-core release `cargo xtask ci` installs (xtask/src/deps.rs, `AXE_CORE_VERSION`).
const AXE_CORE_VERSION: &str = "4.10.3";

/// How long the browser may take for one page or one WebDriver command before the test fails.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the tools live: from the environment (`cargo xtask ci` sets it) or the usual places.
pub struct Tools {
    chromedriver: PathBuf,
    chromium: Option<PathBuf>,
    axe_js: PathBuf,
}

impl Tools {
    /// Finds chromedriver, chromium and axe-core, or panics naming the install command.
    pub fn find() -> Self {
        let chromedriver = from_env_or("GATEWAY_CHROMEDRIVER", &["/usr/bin/chromedriver"])
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver not found: the console's browser tests need Debian's chromium \
                     and chromium-driver. Install them with `apt-get install chromium \
                     chromium-driver` (or run `cargo xtask ci`, which installs them), or set \
                     GATEWAY_CHROMEDRIVER to chromedriver's path"
                )
            });
        let chromium = from_env_or("GATEWAY_CHROMIUM", &["/usr/bin/chromium"]);
        if chromium.is_none() {
            panic!(
                "chromium not found: install it with `apt-get install chromium chromium-driver` \
                 (or run `cargo xtask ci`), or set GATEWAY_CHROMIUM to its path"
            );
        }
        let default_axe = axe_default_dir().map(|dir| {
            dir.join("node_modules")
                .join("axe-core")
                .join("axe.min.js")
                .display()
                .to_string()
        });
        let axe_js = from_env_or("GATEWAY_AXE_JS", default_axe.as_slice()).unwrap_or_else(|| {
            panic!(
                "axe-core not found: the console's browser tests run it on every page. Install \
                 it with `npm install --prefix ~/.cache/gateway-test-tools/axe-core-{v} \
                 axe-core@{v}` (or run `cargo xtask ci`), or set GATEWAY_AXE_JS to axe.min.js",
                v = AXE_CORE_VERSION
            )
        });
        Self {
            chromedriver,
            chromium,
            axe_js,
        }
    }
}

/// The path in `var` if set (it must exist), else the first of `defaults` that exists.
fn from_env_or(var: &str, defaults: &[impl AsRef<str>]) -> Option<PathBuf> {
    if let Some(set) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(set);
        assert!(
            path.is_file(),
            "{var}={} does not exist (`cargo xtask ci` installs the browser tests' tools: \
             `apt-get install chromium chromium-driver` and `npm install --prefix \
             ~/.cache/gateway-test-tools/axe-core-{AXE_CORE_VERSION} axe-core@{AXE_CORE_VERSION}`)",
            path.display()
        );
        return Some(path);
    }
    defaults
        .iter()
        .map(|d| PathBuf::from(d.as_ref()))
        .find(|p| p.is_file())
}

/// `~/.cache/gateway-test-tools/axe-core-<version>`, as xtask installs it.
fn axe_default_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(
        cache
            .join("gateway-test-tools")
            .join(format!("axe-core-{AXE_CORE_VERSION}")),
    )
}

/// A running chromedriver in its own process group; dropping it kills the group, so neither
/// chromedriver nor the chromium it started outlives a failing test.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start(path: &Path, log: &Path) -> Self {
        // A free port: bind port 0, read it, release it for chromedriver (it has no way to
        // report a port it picked itself).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = Command::new(path);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let driver = Self { child, port };
        // Ready when it says so on stdout (no polling); keep draining it afterwards so that
        // chromedriver never blocks on a full pipe.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("started successfully") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(PAGE_TIMEOUT)
            .unwrap_or_else(|_| panic!("chromedriver did not start; see {}", log.display()));
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every chromium process it started.
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless chromium session against one test gateway's console.
pub struct Browser {
    client: Option<Client>,
    // Declared after the client: the session is closed before chromedriver is killed.
    _driver: Chromedriver,
    base: String,
    shots: PathBuf,
    axe_js: String,
    step: usize,
}

impl Browser {
    /// Starts chromium for `gateway`'s console; `test` names the screenshot directory.
    /// The browser trusts exactly the gateway's self-signed key (chromium's SPKI allow-list,
    /// not `acceptInsecureCerts`) and resolves the certificate's host name to 127.0.0.1, so
    /// the console is reached as `https://mx.archive.test:<port>` with a valid name.
    pub async fn start(gateway: &TestGateway, test: &str) -> Self {
        Self::start_with_languages(gateway, test, "en-US,en").await
    }

    /// As [`Self::start`], with the browser's `Accept-Language` set to `languages`.
    pub async fn start_with_languages(gateway: &TestGateway, test: &str, languages: &str) -> Self {
        let tools = Tools::find();
        let shots = screenshot_root().join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        let axe_js = std::fs::read_to_string(&tools.axe_js).expect("read axe.min.js");
        let driver = Chromedriver::start(&tools.chromedriver, &shots.join("chromedriver.log"));

        let spki = spki_sha256_base64(&gateway.ca_file());
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // No crash reporter processes outside the session's own directory.
            "--disable-crash-reporter".to_owned(),
            "--disable-breakpad".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--ignore-certificate-errors-spki-list={spki}"),
            format!("--host-resolver-rules=MAP {HOST_NAME} 127.0.0.1"),
        ];
        if is_root() {
            // Chromium's sandbox refuses to run as root (CI runs as root).
            args.push("--no-sandbox".to_owned());
        }
        let mut options = json!({
            "args": args,
            // Before login the console follows Accept-Language.
            "prefs": { "intl.accept_languages": languages },
        });
        if let Some(chromium) = &tools.chromium {
            options["binary"] = json!(chromium.display().to_string());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| panic!("could not start a chromium session: {e}"));
        let timeouts = fantoccini::wd::TimeoutConfiguration::new(
            Some(PAGE_TIMEOUT),
            Some(PAGE_TIMEOUT),
            Some(Duration::ZERO),
        );
        client.update_timeouts(timeouts).await.expect("timeouts");
        Self {
            client: Some(client),
            _driver: driver,
            base: format!("https://{HOST_NAME}:{}", gateway.console_addr().port()),
            shots,
            axe_js,
            step: 0,
        }
    }

    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// `https://mx.archive.test:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn goto(&self, path: &str) {
        let url = self.url(path);
        self.client()
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    }

    /// The current path (and query), without scheme and host.
    pub async fn path(&self) -> String {
        let url = self.client().current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    pub async fn find(&self, css: &str) -> Element {
        match self.client().find(Locator::Css(css)).await {
            Ok(found) => found,
            Err(e) => {
                // The page's text says why (an error page, another language) more than the id.
                let text = match self.client().find(Locator::Css("body")).await {
                    Ok(body) => body.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!(
                    "no element `{css}` on {}: {e}\npage text:\n{text}",
                    self.path().await
                )
            }
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client()
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find `{css}`: {e}"))
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Types `value` into the field matching `css` (cleared first).
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear field");
        field.send_keys(value).await.expect("type into field");
    }

    /// Clicks the element matching `css` (a link or a submit button) and waits until the
    /// page it leads to has replaced this one: chromedriver does not always wait for a
    /// navigation a click starts, and reading the old page would race.
    pub async fn click(&self, css: &str) {
        self.js("document.documentElement.setAttribute('data-gw-old', ''); return true;")
            .await;
        self.toggle(css).await;
        self.client()
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css("html:not([data-gw-old])"))
            .await
            .unwrap_or_else(|e| panic!("clicking `{css}` led to no new page: {e}"));
    }

    /// Clicks the element matching `css` that stays on the page (a checkbox, a menu).
    pub async fn toggle(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    /// Waits until an element matching `css` is there (after a navigation the page starts
    /// itself, e.g. a select that submits its form on change).
    pub async fn wait_for(&self, css: &str) -> Element {
        self.client()
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("`{css}` did not appear: {e}"))
    }

    /// The page's language (`<html lang>`).
    pub async fn lang(&self) -> String {
        self.find("html")
            .await
            .attr("lang")
            .await
            .expect("lang attribute")
            .unwrap_or_default()
    }

    /// Runs `script` in the page and returns its result.
    pub async fn js(&self, script: &str) -> Value {
        self.client()
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Everything a test checks on each page and dialog: a screenshot named `step`, axe-core
    /// and the keyboard walk.
    pub async fn check_page(&mut self, step: &str) {
        self.screenshot(step).await;
        self.axe(step).await;
        self.keyboard_reaches_every_control(step).await;
    }

    /// Saves the viewport as `target/console-screenshots/<test>/<NN>-<step>.png` (numbered in
    /// the order taken, so the directory reads as the flow).
    pub async fn screenshot(&mut self, step: &str) -> PathBuf {
        self.step += 1;
        let png = self.client().screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{:02}-{step}.png", self.step));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Runs axe-core in the page; fails on any serious or critical violation.
    pub async fn axe(&self, step: &str) {
        let bad = self.axe_violations(step).await;
        assert!(
            bad.is_empty(),
            "axe-core found serious or critical violations on {step} ({}):\n{}",
            self.path().await,
            bad.join("\n")
        );
    }

    /// The serious and critical violations axe-core finds in the page, one text each.
    pub async fn axe_violations(&self, step: &str) -> Vec<String> {
        // Injected on every page (a new document forgets it); the console's CSP does not
        // apply to WebDriver's script execution.
        let already = self.js("return typeof window.axe !== 'undefined';").await;
        if already != Value::Bool(true) {
            self.js(&format!("{}\n;return true;", self.axe_js)).await;
        }
        let script = "const done = arguments[arguments.length - 1];\
             axe.run(document, { resultTypes: ['violations'] })\
               .then(r => done(JSON.stringify(r.violations)))\
               .catch(e => done(JSON.stringify({ error: String(e) })));";
        let result = self
            .client()
            .execute_async(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("axe-core did not run on {step}: {e}"));
        let text = result.as_str().expect("axe returns JSON text");
        let violations: Value = serde_json::from_str(text).expect("axe JSON");
        if let Some(error) = violations.get("error") {
            panic!("axe-core failed on {step}: {error}");
        }
        let bad: Vec<String> = violations
            .as_array()
            .expect("violations array")
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| {
                let nodes: Vec<String> = v["nodes"]
                    .as_array()
                    .map(|nodes| {
                        nodes
                            .iter()
                            .map(|n| format!("    {} ({})", n["target"], n["failureSummary"]))
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "  {} [{}]: {}\n{}",
                    v["id"].as_str().unwrap_or("?"),
                    v["impact"].as_str().unwrap_or("?"),
                    v["help"].as_str().unwrap_or("?"),
                    nodes.join("\n")
                )
            })
            .collect();
        bad
    }

    /// Presses Tab through the page from the top and fails when a visible, enabled control
    /// never received the focus. Controls inside a closed `<details>` (the user menu) are not
    /// visible and so not expected; a test opens the menu and walks it as its own step.
    pub async fn keyboard_reaches_every_control(&self, step: &str) {
        let missed = self.unreachable_controls().await;
        assert!(
            missed.is_empty(),
            "on {step} ({}), these controls are not reachable with Tab:\n{}",
            self.path().await,
            missed
                .iter()
                .map(|m| format!("  {m}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// The visible, enabled controls (their HTML, shortened) that pressing Tab from the top
    /// of the page never focuses.
    pub async fn unreachable_controls(&self) -> Vec<String> {
        const CONTROLS: &str = "a[href], button, input:not([type=hidden]), select, textarea, \
                                summary, [tabindex]:not([tabindex='-1'])";
        let count = self
            .js(&format!(
                "const controls = [...document.querySelectorAll(\"{CONTROLS}\")]\
                   .filter(e => !e.disabled && e.checkVisibility({{ visibilityProperty: true }}));\
                 controls.forEach(e => e.setAttribute('data-kb-control', ''));\
                 if (document.activeElement) document.activeElement.blur();\
                 window.__kbSeen = new Set();\
                 document.addEventListener('focusin', ev => window.__kbSeen.add(ev.target), true);\
                 return controls.length;"
            ))
            .await
            .as_u64()
            .expect("control count");
        // A few extra presses: the walk may start on the document before the first control.
        let presses = count + 3;
        let mut keys = KeyActions::new("keyboard".to_owned());
        for _ in 0..presses {
            keys = keys
                .then(KeyAction::Down {
                    value: Key::Tab.into(),
                })
                .then(KeyAction::Up {
                    value: Key::Tab.into(),
                });
        }
        self.client()
            .perform_actions(keys)
            .await
            .expect("press Tab");
        self.client().release_actions().await.expect("release keys");
        let missed = self
            .js(
                "const missed = [...document.querySelectorAll('[data-kb-control]')]\
                   .filter(e => !window.__kbSeen.has(e))\
                   .map(e => e.outerHTML.slice(0, 160));\
                 document.querySelectorAll('[data-kb-control]')\
                   .forEach(e => e.removeAttribute('data-kb-control'));\
                 return missed;",
            )
            .await;
        missed
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|m| m.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the WebDriver session (chromium exits); chromedriver is killed on drop.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

/// `target/console-screenshots` (the build's target directory, also under CARGO_TARGET_DIR).
pub fn screenshot_root() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("console-screenshots")
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of the certificate in `pem_file`: the form
/// chromium's `--ignore-certificate-errors-spki-list` takes, which trusts only that key.
fn spki_sha256_base64(pem_file: &Path) -> String {
    let pem = std::fs::read(pem_file).expect("read certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("certificate PEM");
    let cert = pem.parse_x509().expect("certificate DER");
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    data_encoding::BASE64.encode(digest.as_ref())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

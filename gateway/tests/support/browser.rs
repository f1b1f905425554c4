//! A browser on the web console over HTTPS (a real HTTP client holding the session cookie),
//! for the console's tests and the cluster's.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT_LANGUAGE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use tokio_rustls::rustls;

use super::{TestGateway, HOST_NAME};

/// The console's Content-Security-Policy, as the design fixes it.
pub const CSP: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn rustls_config(ca_file: &std::path::Path) -> rustls::ClientConfig {
    super::client_config(ca_file)
}

/// An HTTPS client for the console listening on `addr` as a browser trusting only
/// `ca_file` reaches it (by the host name, redirects not followed), and the base URL.
pub fn console_client(
    addr: std::net::SocketAddr,
    ca_file: &std::path::Path,
) -> (reqwest::Client, String) {
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(rustls_config(ca_file))
        .resolve(HOST_NAME, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    (http, format!("https://{HOST_NAME}:{}", addr.port()))
}

/// One answer.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name}: {self:#?}"))
    }

    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn expect_redirect(&self, to: &str) -> &Self {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{self:#?}");
        assert_eq!(self.location(), to, "{self:#?}");
        self
    }

    pub fn expect_ok(&self) -> &Self {
        assert_eq!(self.status, StatusCode::OK, "{self:#?}");
        self
    }

    /// The hidden `csrf` field's value.
    pub fn csrf(&self) -> String {
        field_value(&self.body, "csrf").unwrap_or_else(|| panic!("no CSRF field: {self:#?}"))
    }

    /// The password a password-once page shows.
    pub fn shown_password(&self) -> String {
        let marker = "<code id=\"new-password\">";
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no password shown: {self:#?}"))
            + marker.len();
        let end = self.body[start..].find('<').expect("end of code") + start;
        self.body[start..end].to_owned()
    }

    pub fn assert_console_headers(&self) {
        assert_eq!(self.header("content-security-policy"), CSP, "{self:#?}");
        assert!(!self.header("content-security-policy").contains("unsafe"));
        assert_eq!(self.header("x-frame-options"), "DENY");
        assert_eq!(self.header("x-content-type-options"), "nosniff");
        assert_eq!(self.header("referrer-policy"), "same-origin");
        assert!(self
            .header("strict-transport-security")
            .starts_with("max-age="));
    }
}

pub fn field_value(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

/// A browser: its own HTTPS client (redirects not followed, so they can be checked), the
/// session cookie it holds and the language it asks for.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
    pub accept_language: &'static str,
}

impl Browser {
    pub fn new(gateway: &TestGateway) -> Self {
        let (http, base) = console_client(gateway.console_addr(), &gateway.ca_file());
        Self {
            http,
            base,
            token: None,
            accept_language: "en-US,en;q=0.9",
        }
    }

    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request.header(ACCEPT_LANGUAGE, self.accept_language);
        if let Some(token) = &self.token {
            request = request.header(COOKIE, format!("__Host-gw_session={token}"));
        }
        let response = request.send().await.expect("HTTPS request");
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        };
        if let Some(cookie) = page.headers.get(SET_COOKIE) {
            let cookie = cookie.to_str().expect("cookie");
            let (pair, _) = cookie.split_once(';').expect("attributes");
            let (_, token) = pair.split_once('=').expect("name=value");
            self.token = (!token.is_empty()).then(|| token.to_owned());
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(url)).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let url = format!("{}{path}", self.base);
        self.send(self.http.post(url).form(fields)).await
    }

    pub async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        self.post("/console/login", &[("user", user), ("password", password)])
            .await
    }
}

/// The first login on a new gateway: the new password, acknowledged. Returns it.
pub async fn first_login(browser: &mut Browser) -> String {
    let page = browser.sign_in("admin", "admin").await;
    page.expect_ok();
    let password = page.shown_password();
    browser
        .post(
            "/console/new-password",
            &[("csrf", &page.csrf()), ("stored", "yes")],
        )
        .await
        .expect_redirect("/console/");
    password
}

//! Console pages driven through the router (no network): sessions, CSRF, expiry,
//! throttling from a client elsewhere. Over HTTPS with a real client: `tests/console.rs`.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::api::http::ClientAddr;
use crate::api::Api;

fn test_api() -> (tempfile::TempDir, Api) {
    crate::api::test_support::api("localhost")
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// An answer: status, headers, body text.
struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The session token this answer sets, if any.
    fn cookie(&self) -> Option<String> {
        let value = self.headers.get(SET_COOKIE)?.to_str().ok()?;
        let (pair, _) = value.split_once(';')?;
        let (_, token) = pair.split_once('=')?;
        (!token.is_empty()).then(|| token.to_owned())
    }

    /// The value of the hidden `csrf` field.
    fn csrf(&self) -> String {
        let start = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body))
            + "name=\"csrf\" value=\"".len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }
}

/// A browser: a client address and the session cookie it holds.
struct Browser {
    api: Api,
    client: IpAddr,
    token: Option<String>,
}

impl Browser {
    fn new(api: &Api, client: IpAddr) -> Self {
        Self {
            api: api.clone(),
            client,
            token: None,
        }
    }

    async fn send(&mut self, request: axum::http::request::Builder, body: Body) -> Page {
        let mut request = request;
        if let Some(token) = &self.token {
            request = request.header(COOKIE, format!("__Host-gw_session={token}"));
        }
        let mut request = request.body(body).unwrap();
        request.extensions_mut().insert(ClientAddr(self.client));
        let response = crate::console_listener::router(self.api.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let page = Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        };
        if let Some(token) = page.cookie() {
            self.token = Some(token);
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            Request::post(path).header(CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from(body),
        )
        .await
    }

    /// Signs in with `password`, which must be right.
    async fn sign_in(&mut self, password: &str) -> Page {
        let page = self
            .post(
                "/console/login",
                &[("user", "admin"), ("password", password)],
            )
            .await;
        assert!(page.cookie().is_some(), "{}: {}", page.status, page.body);
        page
    }
}

/// An administrator whose initial password is replaced; and the password.
async fn set_up() -> (tempfile::TempDir, Api, String) {
    let (dir, api) = test_api();
    let password = api
        .gateway()
        .reset_admin_password(None)
        .await
        .unwrap()
        .reveal()
        .to_owned();
    (dir, api, password)
}

#[tokio::test]
async fn the_login_page_is_html_with_the_console_headers() {
    let (_dir, api) = test_api();
    let page = Browser::new(&api, loopback()).get("/console/login").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(page.headers["content-security-policy"], super::CSP);
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(page.body.contains("name=\"password\""), "{}", page.body);
}

#[tokio::test]
async fn pages_without_a_session_redirect_to_the_login_page() {
    let (_dir, api) = test_api();
    let mut browser = Browser::new(&api, loopback());
    for path in ["/console/", "/console/settings", "/console/status"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location(), "/console/login", "{path}");
    }
    browser.token = Some("made-up".into());
    let page = browser.get("/console/").await;
    assert_eq!(page.location(), "/console/login");
    assert!(page.headers[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

#[tokio::test]
async fn the_root_and_unknown_console_paths() {
    let (_dir, api) = test_api();
    let mut browser = Browser::new(&api, loopback());
    let page = browser.get("/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/console/");
    let page = browser.get("/console/no-such-page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("There is no such page"), "{}", page.body);
    assert_eq!(page.headers["content-security-policy"], super::CSP);
    // The API keeps its JSON answers.
    let page = browser.get("/api/nothing").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.headers[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test(start_paused = true)]
async fn an_idle_session_goes_back_to_the_login_page() {
    let (dir, api, password) = set_up().await;
    // Time passes for sessions in memory and in a shared database alike.
    let pass = |by: Duration| {
        crate::service::test_support::age_shared_sessions(dir.path(), by);
        tokio::time::advance(by)
    };
    let mut browser = Browser::new(&api, loopback());
    browser.sign_in(&password).await;
    assert_eq!(browser.get("/console/").await.status, StatusCode::OK);
    pass(Duration::from_secs(29 * 60)).await;
    assert_eq!(browser.get("/console/").await.status, StatusCode::OK);
    pass(Duration::from_secs(30 * 60)).await;
    let page = browser.get("/console/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/console/login");
}

#[tokio::test(start_paused = true)]
async fn a_client_elsewhere_guessing_is_told_how_long_to_wait() {
    let (_dir, api, password) = set_up().await;
    let mut guesser = Browser::new(&api, "192.0.2.1".parse().unwrap());
    let mut throttled = None;
    for _ in 0..20 {
        let page = guesser
            .post(
                "/console/login",
                &[("user", "admin"), ("password", "guess")],
            )
            .await;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(page);
            break;
        }
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
        assert!(page.body.contains("Wrong user name or password."));
        assert!(page.cookie().is_none());
    }
    let page = throttled.expect("guessing is throttled");
    let seconds: u64 = page.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds >= 1);
    assert!(
        page.body
            .contains(&format!("Too many failed attempts. Wait {seconds} s")),
        "{}",
        page.body
    );
    // The administrator on the host is not locked out.
    let mut admin = Browser::new(&api, loopback());
    let page = admin.sign_in(&password).await;
    assert_eq!(page.location(), "/console/");
}

#[tokio::test]
async fn the_first_login_shows_a_new_password_that_must_be_acknowledged() {
    let (_dir, api) = test_api();
    let mut browser = Browser::new(&api, loopback());
    let page = browser
        .post(
            "/console/login",
            &[("user", "admin"), ("password", "admin")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.cookie().is_some());
    let start = page
        .body
        .find("<code id=\"new-password\">")
        .expect("password shown")
        + "<code id=\"new-password\">".len();
    let end = page.body[start..].find('<').unwrap() + start;
    let password = page.body[start..end].to_owned();
    assert!(password.len() >= 16, "{password}");
    assert!(page.body.contains("I have stored this password"));
    let csrf = page.csrf();
    // Nothing else until it is acknowledged.
    for path in ["/console/", "/console/settings", "/console/status"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location(), "/console/new-password", "{path}");
    }
    // Without the box ticked the page comes back, without the password.
    let page = browser
        .post("/console/new-password", &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(!page.body.contains(&password));
    assert!(page.body.contains("Tick"), "{}", page.body);
    let page = browser.get("/console/new-password").await;
    assert!(!page.body.contains(&password));
    let page = browser
        .post(
            "/console/new-password",
            &[("csrf", &csrf), ("stored", "yes")],
        )
        .await;
    assert_eq!(page.location(), "/console/");
    assert_eq!(browser.get("/console/").await.status, StatusCode::OK);
    // The initial password is gone; the new one signs in.
    let mut other = Browser::new(&api, loopback());
    let page = other
        .post(
            "/console/login",
            &[("user", "admin"), ("password", "admin")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    other.sign_in(&password).await;
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_is_refused() {
    let (_dir, api, password) = set_up().await;
    let mut browser = Browser::new(&api, loopback());
    browser.sign_in(&password).await;
    let csrf = browser.get("/console/settings").await.csrf();
    let mut other = Browser::new(&api, loopback());
    other.sign_in(&password).await;
    let others_csrf = other.get("/console/settings").await.csrf();
    for fields in [
        vec![("language", "de")],
        vec![("language", "de"), ("csrf", "")],
        vec![("language", "de"), ("csrf", others_csrf.as_str())],
    ] {
        let page = browser.post("/console/settings/language", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{fields:?}");
        assert!(page.body.contains("This form has expired"), "{}", page.body);
    }
    assert_eq!(api.gateway().admin_language().unwrap(), None);
    let page = browser
        .post(
            "/console/settings/language",
            &[("language", "de"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        api.gateway().admin_language().unwrap(),
        Some(crate::config::Language::De)
    );
}

#[tokio::test]
async fn before_the_first_login_a_client_elsewhere_is_told_to_sign_in_on_the_host() {
    let (_dir, api) = test_api();
    let mut remote = Browser::new(&api, "192.0.2.1".parse().unwrap());
    let page = remote
        .post(
            "/console/login",
            &[("user", "admin"), ("password", "admin")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains("gateway admin reset-password"),
        "{}",
        page.body
    );
    assert!(page.cookie().is_none());
    assert!(
        !api.gateway().admin_first_login_done().unwrap(),
        "nothing replaced"
    );
}

#[tokio::test]
async fn an_unreadable_form_gets_the_error_page() {
    let (_dir, api, password) = set_up().await;
    let mut browser = Browser::new(&api, loopback());
    browser.sign_in(&password).await;
    let page = browser
        .send(
            Request::post("/console/settings/language").header(CONTENT_TYPE, "text/plain"),
            Body::from("language=de"),
        )
        .await;
    assert_eq!(page.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(page.headers[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(page.headers["content-security-policy"], super::CSP);
}

#[test]
fn form_fields_never_print_their_values() {
    let mut params = crate::api::Params::new();
    params.insert("password".into(), "s3cret".into());
    let fields = super::session::Fields::from_params(params);
    assert!(!format!("{fields:?}").contains("s3cret"));
    assert_eq!(fields.get("password"), "s3cret");
    assert_eq!(fields.get("missing"), "");
}

#[tokio::test]
async fn a_form_posted_from_another_site_is_refused() {
    let (_dir, api, password) = set_up().await;
    let mut browser = Browser::new(&api, loopback());
    let login = |origin: &'static str| {
        Request::post("/console/login")
            .header("host", "gateway.example:8450")
            .header("origin", origin)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
    };
    let body = || Body::from(format!("user=admin&password={password}"));
    for origin in [
        "https://evil.example",
        "null",
        "http://gateway.example:8450",
        "https://gateway.example:8451",
    ] {
        let page = browser.send(login(origin), body()).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{origin}");
        assert!(page.cookie().is_none(), "{origin}");
    }
    let page = browser
        .send(login("https://Gateway.example:8450"), body())
        .await;
    assert_eq!(page.location(), "/console/", "{}", page.body);
    assert!(page.cookie().is_some());
}

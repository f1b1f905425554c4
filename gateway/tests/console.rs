//! The web console over HTTPS with a real HTTP client: sign-in, the first login's forced
//! password, sessions and their cookie, CSRF, headers, languages, settings.
//!
//! Throttling needs a client not on loopback and idle expiry needs time to pass: both are
//! driven through the router in `src/console/tests.rs` (an address in the request,
//! tokio's paused clock), since tests only ever talk to loopback and never sleep.

mod support;

use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;
use support::browser::{first_login, Browser};
use support::TestGateway;

#[tokio::test]
async fn the_first_login_forces_a_new_password_shown_once_and_acknowledged() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::new(&gateway);
    // `/` leads to the console, which leads to the login page.
    browser.get("/").await.expect_redirect("/console/");
    browser
        .get("/console/")
        .await
        .expect_redirect("/console/login");
    let login = browser.get("/console/login").await;
    login.expect_ok();
    assert!(login.body.contains("type=\"password\""));

    let page = browser.sign_in("admin", "admin").await;
    page.expect_ok();
    let password = page.shown_password();
    assert!(page.body.contains("I have stored this password"));
    assert!(
        page.body.contains("data-copy=\"new-password\""),
        "copy button"
    );
    // The password is in the body only: no header, no URL.
    assert!(!format!("{:?}", page.headers).contains(&password));
    let csrf = page.csrf();

    // Every page leads back to the acknowledgement until the box is ticked.
    for path in ["/console/", "/console/settings", "/console/status"] {
        browser
            .get(path)
            .await
            .expect_redirect("/console/new-password");
    }
    let again = browser
        .post("/console/new-password", &[("csrf", &csrf)])
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(!again.body.contains(&password), "never shown twice");
    browser
        .post(
            "/console/new-password",
            &[("csrf", &csrf), ("stored", "yes")],
        )
        .await
        .expect_redirect("/console/");
    browser.get("/console/").await.expect_ok();

    // admin/admin is refused from now on; the new password signs in.
    let mut other = Browser::new(&gateway);
    let refused = other.sign_in("admin", "admin").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.body.contains("Wrong user name or password."));
    other
        .sign_in("admin", &password)
        .await
        .expect_redirect("/console/");
}

#[tokio::test]
async fn wrong_passwords_and_other_users_are_refused_in_words() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::new(&gateway);
    let password = first_login(&mut browser).await;
    let mut other = Browser::new(&gateway);
    for (user, password) in [("admin", "wrong"), ("root", password.as_str()), ("", "")] {
        let page = other.sign_in(user, password).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{user}");
        assert!(
            page.body.contains("Wrong user name or password."),
            "{page:#?}"
        );
        assert!(!page.headers.contains_key(SET_COOKIE), "no session");
        assert!(
            !page.body.contains("value=\"wrong\""),
            "the password is not echoed"
        );
    }
    assert!(other.token.is_none());
}

#[tokio::test]
async fn the_session_cookie_is_host_only_secure_http_only_strict_and_fresh_at_every_login() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::new(&gateway);
    let password = first_login(&mut browser).await;
    let first = browser.token.clone().expect("session");

    let page = browser.sign_in("admin", &password).await;
    page.expect_redirect("/console/");
    let cookie = page.header("set-cookie").to_owned();
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert!(attributes[0].starts_with("__Host-gw_session="), "{cookie}");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(
            attributes.contains(&attribute),
            "{attribute} missing: {cookie}"
        );
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    let second = browser.token.clone().expect("session");
    assert_ne!(first, second, "a fresh session id at login");
    assert!(second.len() >= 43, "256 bits");
    browser.get("/console/").await.expect_ok();
    // Signed in, the login page leads to the main page.
    browser
        .get("/console/login")
        .await
        .expect_redirect("/console/");
    // The session the browser had before signing in again has ended.
    browser.token = Some(first);
    browser
        .get("/console/")
        .await
        .expect_redirect("/console/login");
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::new(&gateway);
    first_login(&mut browser).await;
    let main = browser.get("/console/").await;
    main.expect_ok();
    assert!(
        main.body.contains("action=\"/console/logout\""),
        "user menu"
    );
    let token = browser.token.clone().expect("session");
    let csrf = main.csrf();
    let page = browser.post("/console/logout", &[("csrf", &csrf)]).await;
    page.expect_redirect("/console/login");
    assert!(page.header("set-cookie").contains("Max-Age=0"));
    // A copy of the cookie is worth nothing now.
    browser.token = Some(token);
    browser
        .get("/console/")
        .await
        .expect_redirect("/console/login");
    browser
        .get("/console/settings")
        .await
        .expect_redirect("/console/login");
}

#[tokio::test]
async fn a_change_without_the_csrf_token_is_refused() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::new(&gateway);
    first_login(&mut browser).await;
    for fields in [
        vec![("language", "de")],
        vec![("language", "de"), ("csrf", "forged")],
    ] {
        let page = browser.post("/console/settings/language", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{fields:?}");
        page.assert_console_headers();
        assert!(page.body.contains("This form has expired"));
    }
    let page = browser
        .post("/console/settings/password", &[("current_password", "x")])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Sign-out needs the token too: a page elsewhere cannot sign the administrator out.
    let page = browser.post("/console/logout", &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    browser.get("/console/settings").await.expect_ok();
    // Still English: nothing changed.
    assert!(browser
        .get("/console/settings")
        .await
        .body
        .contains("lang=\"en\""));
}

#[tokio::test]
async fn every_console_page_has_the_csp_and_is_never_cached() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::new(&gateway);
    let login = browser.get("/console/login").await;
    login.assert_console_headers();
    assert_eq!(login.header("cache-control"), "no-store");
    let first = browser.sign_in("admin", "admin").await;
    first.assert_console_headers();
    assert_eq!(first.header("cache-control"), "no-store");
    let csrf = first.csrf();
    browser
        .get("/console/new-password")
        .await
        .assert_console_headers();
    browser
        .post(
            "/console/new-password",
            &[("csrf", &csrf), ("stored", "yes")],
        )
        .await
        .assert_console_headers();
    for path in [
        "/",
        "/console/",
        "/console/settings",
        "/console/status",
        "/console/no-such-page",
    ] {
        let page = browser.get(path).await;
        page.assert_console_headers();
        assert_eq!(page.header("cache-control"), "no-store", "{path}");
    }
    // Assets are the console's own, cached for long under their versioned URL.
    let main = browser.get("/console/").await;
    let href = main
        .body
        .split("href=\"")
        .find_map(|rest| {
            rest.starts_with("/console/assets/console.css")
                .then(|| rest[..rest.find('"').unwrap()].to_owned())
        })
        .expect("stylesheet link");
    let css = browser.get(&href).await;
    css.expect_ok();
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.header("cache-control").contains("max-age=31536000"));
    css.assert_console_headers();
    assert!(!main.body.contains("<script>"), "no inline script");
    assert!(!main.body.contains("style=\""), "no inline style");
    assert!(
        !main.body.contains("http://") && !main.body.contains("https://"),
        "no CDN"
    );
}

#[tokio::test]
async fn the_language_follows_the_browser_before_login_and_the_administrators_choice_after() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut german_browser = Browser::new(&gateway);
    german_browser.accept_language = "de-DE,de;q=0.9,en;q=0.5";
    let login = german_browser.get("/console/login").await;
    assert!(login.body.contains("lang=\"de\""));
    assert!(login.body.contains("Anmelden"), "{login:#?}");

    let mut browser = Browser::new(&gateway);
    let password = first_login(&mut browser).await;
    let settings = browser.get("/console/settings").await;
    assert!(settings.body.contains("lang=\"en\""));
    assert!(settings
        .body
        .contains("<option value=\"de\" lang=\"de\">Deutsch</option>"));
    browser
        .post(
            "/console/settings/language",
            &[("csrf", &settings.csrf()), ("language", "de")],
        )
        .await
        .expect_redirect("/console/settings");
    // The page changes at once...
    let settings = browser.get("/console/settings").await;
    assert!(settings.body.contains("lang=\"de\""), "{settings:#?}");
    assert!(settings.body.contains("Einstellungen"));
    assert!(settings.body.contains("Passwort zurücksetzen"), "umlauts");
    assert!(settings
        .body
        .contains("<option value=\"de\" lang=\"de\" selected>"));
    // ...and is remembered for the administrator, whatever the browser asks for.
    let mut elsewhere = Browser::new(&gateway);
    elsewhere
        .sign_in("admin", &password)
        .await
        .expect_redirect("/console/");
    let main = elsewhere.get("/console/").await;
    assert!(main.body.contains("lang=\"de\""), "{main:#?}");
    assert!(main.body.contains("Abmelden"));
    // And back.
    let settings = elsewhere.get("/console/settings").await;
    elsewhere
        .post(
            "/console/settings/language",
            &[("csrf", &settings.csrf()), ("language", "en")],
        )
        .await
        .expect_redirect("/console/settings");
    assert!(elsewhere
        .get("/console/settings")
        .await
        .body
        .contains("Reset your password"));
}

#[tokio::test]
async fn reset_own_password_confirms_the_current_one_and_shows_the_new_one_once() {
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::new(&gateway);
    let old = first_login(&mut browser).await;
    let mut other = Browser::new(&gateway);
    other
        .sign_in("admin", &old)
        .await
        .expect_redirect("/console/");

    let settings = browser.get("/console/settings").await;
    let csrf = settings.csrf();
    let wrong = browser
        .post(
            "/console/settings/password",
            &[("csrf", &csrf), ("current_password", "not-it")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("The current password is wrong."),
        "{wrong:#?}"
    );

    let page = browser
        .post(
            "/console/settings/password",
            &[("csrf", &csrf), ("current_password", &old)],
        )
        .await;
    page.expect_ok();
    let new = page.shown_password();
    assert_ne!(new, old);
    browser
        .get("/console/")
        .await
        .expect_redirect("/console/new-password");
    browser
        .post(
            "/console/new-password",
            &[("csrf", &csrf), ("stored", "yes")],
        )
        .await
        .expect_redirect("/console/");
    browser.get("/console/").await.expect_ok();
    // The session signed in with the old password has ended; the old password is refused.
    other
        .get("/console/")
        .await
        .expect_redirect("/console/login");
    assert_eq!(
        other.sign_in("admin", &old).await.status,
        StatusCode::UNAUTHORIZED
    );
    other
        .sign_in("admin", &new)
        .await
        .expect_redirect("/console/");
}

//! The Management Console end to end in a real browser (headless chromium over WebDriver):
//! every flow an administrator goes through, with a screenshot, axe-core and a keyboard walk
//! on every page and dialog. See `browser/mod.rs` for the harness and the tools it needs.
//! Screenshots land in `target/console-screenshots/<test>/`.

mod browser;
mod support;

use browser::Browser;
use support::TestGateway;

/// One chromium at a time: the machine has few cores, and parallel browsers only make every
/// page slower (each test still has its own gateway and browser).
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The factory password every new gateway starts with.
const FACTORY_USER: &str = "admin";
const FACTORY_PASSWORD: &str = "admin";

/// Fills the login form and submits it.
async fn log_in(browser: &Browser, user: &str, password: &str) {
    browser.goto("/console/login").await;
    browser.fill("#user", user).await;
    browser.fill("#password", password).await;
    browser.click("main form button[type=submit]").await;
}

/// Ticks the acknowledgement box of a page that shows a new password and continues.
async fn acknowledge(browser: &Browser) {
    browser.click("input[name=stored]").await;
    browser.click("#continue").await;
}

/// The first login (admin/admin) through the forced new-password page; returns the new
/// password, which the console showed once.
async fn first_login(browser: &mut Browser) -> String {
    log_in(browser, FACTORY_USER, FACTORY_PASSWORD).await;
    let password = browser.text("#new-password").await;
    assert!(password.len() >= 12, "a real password: {password:?}");
    acknowledge(browser).await;
    assert_eq!(browser.path().await, "/console/");
    password
}

/// Signs out through the user menu.
async fn sign_out(browser: &Browser) {
    browser.click(".user-menu summary").await;
    browser
        .click(".user-menu form[action='/console/logout'] button")
        .await;
    assert_eq!(browser.path().await, "/console/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_login_shows_the_new_password_once_and_cannot_continue_without_ticking() {
    let _one = ONE_BROWSER.lock().await;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::start(&gateway, "first_login").await;

    // Anything before login goes to the login page.
    browser.goto("/").await;
    assert_eq!(browser.path().await, "/console/login");
    browser.check_page("login").await;

    log_in(&browser, FACTORY_USER, "wrong").await;
    assert_eq!(browser.path().await, "/console/login");
    assert!(
        browser.exists(".error[role=alert]").await,
        "a wrong password says so"
    );
    browser.check_page("login-wrong-password").await;

    log_in(&browser, FACTORY_USER, FACTORY_PASSWORD).await;
    let password = browser.text("#new-password").await;
    assert!(password.len() >= 12, "a real password: {password:?}");
    assert!(
        !browser.url(&browser.path().await).contains(&password),
        "the password is never in a URL"
    );
    // Continue stays disabled until the box is ticked.
    assert!(!browser
        .find("#continue")
        .await
        .is_enabled()
        .await
        .expect("enabled"));
    browser.check_page("first-password").await;

    // The rest of the console waits for the acknowledgement, and the password is not shown again.
    browser.goto("/console/settings").await;
    assert_eq!(browser.path().await, "/console/new-password");
    assert!(!browser.exists("#new-password").await, "shown once only");
    browser.check_page("first-password-pending").await;

    // Bypassing the disabled button and the required box: the server refuses all the same.
    browser
        .js("const f = document.querySelector('main form');\
             f.querySelector('input[name=stored]').required = false;\
             document.getElementById('continue').disabled = false; return true;")
        .await;
    browser.click("#continue").await;
    assert_eq!(browser.path().await, "/console/new-password");
    browser.goto("/console/").await;
    assert_eq!(browser.path().await, "/console/new-password");

    acknowledge(&browser).await;
    assert_eq!(browser.path().await, "/console/");
    browser.check_page("main-empty").await;

    // The factory password is gone; the shown one works.
    sign_out(&browser).await;
    browser.check_page("signed-out").await;
    log_in(&browser, FACTORY_USER, FACTORY_PASSWORD).await;
    assert_eq!(browser.path().await, "/console/login");
    log_in(&browser, FACTORY_USER, &password).await;
    assert_eq!(browser.path().await, "/console/");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_switch_to_german_and_back_and_reset_own_password() {
    let _one = ONE_BROWSER.lock().await;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::start(&gateway, "settings").await;
    let password = first_login(&mut browser).await;

    // The user menu, opened.
    browser.click(".user-menu summary").await;
    browser.check_page("user-menu").await;
    browser
        .click(".user-menu a[href='/console/settings']")
        .await;
    assert_eq!(browser.path().await, "/console/settings");
    browser.check_page("settings").await;

    // German at once (the select submits itself), and remembered for this administrator.
    browser
        .find("#language")
        .await
        .select_by_value("de")
        .await
        .expect("choose German");
    browser.wait_for("html[lang=de]").await;
    assert!(browser.page_text().await.contains("Einstellungen"));
    browser.check_page("settings-de").await;
    browser.goto("/console/").await;
    assert_eq!(browser.lang().await, "de");
    browser.check_page("main-de").await;
    sign_out(&browser).await;
    log_in(&browser, FACTORY_USER, &password).await;
    assert_eq!(
        browser.lang().await,
        "de",
        "the choice is remembered per administrator"
    );

    // And back to English.
    browser.goto("/console/settings").await;
    browser
        .find("#language")
        .await
        .select_by_value("en")
        .await
        .expect("choose English");
    browser.wait_for("html[lang=en]").await;
    assert!(browser.page_text().await.contains("Settings"));

    // Reset own password: a wrong current password is refused, the right one shows a new one once.
    browser.fill("#current_password", "not-the-password").await;
    browser
        .click("form[action='/console/settings/password'] button[type=submit]")
        .await;
    assert!(browser.exists(".error[role=alert]").await);
    browser.check_page("settings-wrong-password").await;
    browser.fill("#current_password", &password).await;
    browser
        .click("form[action='/console/settings/password'] button[type=submit]")
        .await;
    let new_password = browser.text("#new-password").await;
    assert_ne!(new_password, password);
    browser.check_page("own-new-password").await;
    acknowledge(&browser).await;

    // Sign out ends the session: the console is behind the login again, the old password is dead.
    sign_out(&browser).await;
    browser.goto("/console/").await;
    assert_eq!(browser.path().await, "/console/login");
    log_in(&browser, FACTORY_USER, &password).await;
    assert_eq!(browser.path().await, "/console/login");
    log_in(&browser, FACTORY_USER, &new_password).await;
    assert_eq!(browser.path().await, "/console/");
    browser.close().await;
}

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
    browser.toggle("input[name=stored]").await;
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
    browser.toggle(".user-menu summary").await;
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
    browser.toggle(".user-menu summary").await;
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

/// The mailbox with this id, as the service sees it.
fn mailbox(gateway: &TestGateway, id: &str) -> Option<gateway::service::MailboxInfo> {
    gateway
        .gateway()
        .list_mailboxes()
        .expect("list mailboxes")
        .into_iter()
        .find(|m| m.id.to_string() == id)
}

/// True if `password` opens the mailbox's key: the page showed the real one.
fn password_opens(gateway: &TestGateway, id: &str, password: &str) -> bool {
    let info = mailbox(gateway, id).expect("mailbox exists");
    let password = gateway::crypto::MailboxPassword::from_user_input(password);
    gateway.gateway().unseal(&info.id, &password).is_ok()
}

/// The text of one cell (`data-testid`) in the mailbox's table row.
async fn cell(browser: &Browser, id: &str, testid: &str) -> String {
    browser
        .text(&format!(
            "tr[data-mailbox-id='{id}'] [data-testid='{testid}']"
        ))
        .await
}

/// True if the row's delete and reset buttons are disabled with the reason shown.
async fn actions_blocked(browser: &Browser, id: &str) -> bool {
    let delete = browser.find(&format!("#delete-{id}")).await;
    let reset = browser.find(&format!("#reset-{id}")).await;
    let disabled = |e: fantoccini::elements::Element| async move {
        e.tag_name().await.expect("tag") == "button" && !e.is_enabled().await.expect("enabled")
    };
    let blocked = disabled(delete).await && disabled(reset).await;
    if blocked {
        let reason = browser.text(&format!("#blocked-{id}")).await;
        assert!(
            !reason.trim().is_empty(),
            "a disabled action shows its reason"
        );
    }
    blocked
}

/// The mailbox id a password page is about (its acknowledgement form names it).
async fn password_page_mailbox(browser: &Browser) -> String {
    let action = browser
        .find("#acknowledge-form")
        .await
        .attr("action")
        .await
        .expect("form action")
        .expect("action set");
    action
        .trim_start_matches("/console/mailboxes/")
        .trim_end_matches("/acknowledge")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_create_edit_suspend_reset_and_delete_in_the_browser() {
    let _one = ONE_BROWSER.lock().await;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::start(&gateway, "mailbox_lifecycle").await;
    first_login(&mut browser).await;
    assert!(browser.exists("#no-mailboxes").await);

    // Create: a form, then the password once with the warning.
    browser.click("#create-mailbox").await;
    assert_eq!(browser.path().await, "/console/mailboxes/new");
    browser.check_page("create").await;

    // Without its CSRF token the form is refused, and nothing is created.
    browser.fill("#name", "Forged").await;
    browser
        .js("document.querySelector('#create-form input[name=csrf]').remove(); return true;")
        .await;
    browser.click("#create-submit").await;
    assert!(!browser.exists("#new-password").await);
    assert!(
        gateway.gateway().list_mailboxes().expect("list").is_empty(),
        "a form without its token changes nothing"
    );
    browser.check_page("create-without-csrf").await;
    browser.goto("/console/mailboxes/new").await;

    browser.fill("#name", "Accounting").await;
    browser
        .fill("#description", "Journal of the accounting team")
        .await;
    browser.click("#create-submit").await;
    let password = browser.text("#new-password").await;
    let id = password_page_mailbox(&browser).await;
    assert!(
        password_opens(&gateway, &id, &password),
        "the real password is shown"
    );
    assert!(!browser.text("#password-warning").await.trim().is_empty());
    assert!(
        !browser
            .find("#acknowledge-continue")
            .await
            .is_enabled()
            .await
            .expect("enabled"),
        "OK only after ticking the warning"
    );
    assert!(!browser.path().await.contains(&password), "never in a URL");
    browser.check_page("create-password").await;

    // Without the tick the server keeps the dialog open, and the password is gone for good.
    browser
        .js("document.getElementById('acknowledge').required = false;\
             document.getElementById('acknowledge-continue').disabled = false; return true;")
        .await;
    browser.click("#acknowledge-continue").await;
    assert!(
        browser.exists("#password-gone").await,
        "the dialog stays, without the password"
    );
    assert!(!browser.page_text().await.contains(&password));
    browser.check_page("create-password-not-acknowledged").await;
    browser.toggle("#acknowledge").await;
    browser.click("#acknowledge-continue").await;
    assert!(browser.path().await.starts_with("/console/"));

    // The table: the new, active mailbox; delete and reset are disabled with the reason.
    browser.goto("/console/").await;
    assert_eq!(cell(&browser, &id, "name").await, "Accounting");
    assert_eq!(
        cell(&browser, &id, "description").await,
        "Journal of the accounting team"
    );
    assert_eq!(cell(&browser, &id, "messages").await.trim(), "0");
    assert!(
        actions_blocked(&browser, &id).await,
        "active: delete and reset disabled"
    );
    browser.check_page("main-one-mailbox").await;

    // The setup hints.
    browser.click(&format!("#setup-{id}")).await;
    let info = mailbox(&gateway, &id).expect("mailbox");
    assert_eq!(browser.text("#setup-journal-address").await, info.address);
    assert!(browser
        .text("#setup-proxy-login")
        .await
        .ends_with(&format!("%{id}")));
    assert_eq!(browser.text("#setup-pop3-user").await, id);
    browser.check_page("setup").await;

    // Edit: new name and description, then suspend.
    browser.goto("/console/").await;
    browser.click(&format!("#edit-{id}")).await;
    browser.check_page("edit").await;
    browser.fill("#name", "Accounting team").await;
    browser
        .fill("#description", "Suspended while the archiver moves")
        .await;
    browser
        .find("#status")
        .await
        .select_by_value("suspended")
        .await
        .expect("choose suspended");
    browser.click("#edit-submit").await;
    browser.goto("/console/").await;
    assert_eq!(cell(&browser, &id, "name").await, "Accounting team");
    let info = mailbox(&gateway, &id).expect("mailbox");
    assert_eq!(info.name, "Accounting team");
    assert_eq!(info.description, "Suspended while the archiver moves");
    assert_eq!(
        format!("{:?}", info.status).to_lowercase(),
        "suspended",
        "the service has it suspended"
    );
    assert!(
        !actions_blocked(&browser, &id).await,
        "suspended and empty: allowed"
    );
    browser.check_page("main-suspended").await;

    // Reset: No changes nothing; Yes shows a new password once.
    browser.click(&format!("#reset-{id}")).await;
    browser.check_page("reset-confirm").await;
    browser.click("#confirm-no").await;
    assert!(
        password_opens(&gateway, &id, &password),
        "No kept the password"
    );
    browser.click(&format!("#reset-{id}")).await;
    browser.click("#confirm-yes").await;
    let new_password = browser.text("#new-password").await;
    assert_ne!(new_password, password);
    assert!(password_opens(&gateway, &id, &new_password));
    assert!(!password_opens(&gateway, &id, &password));
    browser.check_page("reset-password").await;
    browser.toggle("#acknowledge").await;
    browser.click("#acknowledge-continue").await;

    // Delete: No keeps it; Yes removes it.
    browser.goto("/console/").await;
    browser.click(&format!("#delete-{id}")).await;
    browser.check_page("delete-confirm").await;
    browser.click("#confirm-no").await;
    assert!(mailbox(&gateway, &id).is_some());
    browser.click(&format!("#delete-{id}")).await;
    browser.click("#confirm-yes").await;
    assert!(mailbox(&gateway, &id).is_none(), "deleted");
    browser.goto("/console/").await;
    assert!(browser.exists("#no-mailboxes").await);
    browser.check_page("main-after-delete").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_message_shows_in_the_counts_and_keeps_delete_and_reset_disabled() {
    let _one = ONE_BROWSER.lock().await;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let (mailbox_id, address, _password) = gateway.create_mailbox("Sales").await;
    let id = mailbox_id.to_string();
    let mut browser = Browser::start(&gateway, "delivered_message").await;
    first_login(&mut browser).await;
    assert_eq!(cell(&browser, &id, "messages").await.trim(), "0");

    // A message over SMTP; after a reload the table counts it.
    gateway
        .deliver(&address, &support::tricky_message("counted in the console"))
        .await;
    browser.client().refresh().await.expect("reload");
    let count = browser
        .find(&format!(
            "tr[data-mailbox-id='{id}'] [data-testid='messages']"
        ))
        .await
        .attr("data-count")
        .await
        .expect("data-count")
        .expect("data-count set");
    assert_eq!(count, "1");
    assert_ne!(cell(&browser, &id, "size").await.trim(), "");
    assert!(
        browser
            .exists(&format!(
                "tr[data-mailbox-id='{id}'] [data-testid='oldest']"
            ))
            .await
    );
    browser.check_page("main-with-message").await;

    // Suspended but not empty: still disabled, with the reason.
    browser.click(&format!("#edit-{id}")).await;
    browser
        .find("#status")
        .await
        .select_by_value("suspended")
        .await
        .expect("choose suspended");
    browser.click("#edit-submit").await;
    browser.goto("/console/").await;
    assert!(
        actions_blocked(&browser, &id).await,
        "not empty: delete and reset disabled"
    );
    browser.check_page("main-suspended-not-empty").await;

    // The confirmation page, reached directly, refuses too (even with its button forced on).
    browser
        .goto(&format!("/console/mailboxes/{id}/delete"))
        .await;
    assert!(!browser
        .find("#confirm-yes")
        .await
        .is_enabled()
        .await
        .expect("enabled"));
    assert!(!browser.text("#blocked-reason").await.trim().is_empty());
    browser.check_page("delete-confirm-blocked").await;
    browser
        .js("document.getElementById('confirm-yes').disabled = false; return true;")
        .await;
    browser.click("#confirm-yes").await;
    assert!(
        mailbox(&gateway, &id).is_some(),
        "a mailbox with mail is never deleted"
    );
    assert_eq!(gateway.message_count(&mailbox_id), 1);

    // At phone width the table still works (axe and keyboard included).
    browser
        .client()
        .set_window_size(390, 844)
        .await
        .expect("phone width");
    browser.goto("/console/").await;
    browser.check_page("main-phone").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_the_browser() {
    let _one = ONE_BROWSER.lock().await;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::start(&gateway, "status").await;
    first_login(&mut browser).await;
    browser.toggle(".user-menu summary").await;
    browser.click(".user-menu a[href='/console/status']").await;
    assert_eq!(browser.path().await, "/console/status");
    let text = browser.page_text().await;
    assert!(
        text.contains(&gateway.console_addr().port().to_string()),
        "{text}"
    );
    browser.check_page("status").await;
    // The certificate forms, each through axe and the keyboard walk too.
    for (link, step) in [
        (
            "/console/certificate/self-signed",
            "certificate-self-signed",
        ),
        ("/console/certificate/import", "certificate-import"),
        ("/console/certificate/acme", "certificate-acme"),
    ] {
        browser.goto("/console/status").await;
        browser
            .click(&format!("#certificate-actions a[href='{link}']"))
            .await;
        assert_eq!(browser.path().await, link);
        browser.check_page(step).await;
    }
    // With script, the PKCS#12 form offers a file picker.
    browser.goto("/console/certificate/import").await;
    assert!(browser.exists("#pkcs12-file-row:not([hidden])").await);
    browser.close().await;
}

/// The checks every page goes through can fail: a page with an image without text, no
/// language and a link taken out of the tab order is caught by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_checks_catch_missing_alt_text_and_unreachable_controls() {
    let _one = ONE_BROWSER.lock().await;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let browser = Browser::start(&gateway, "page_checks").await;
    // A data: URL: nothing leaves the machine, and the console's own pages stay untouched.
    browser
        .client()
        .goto(
            "data:text/html,<!doctype html><title>bad</title>\
             <img src='data:,'><a href='/x' tabindex='-1'>hidden from Tab</a>\
             <a href='/y'>reachable</a>",
        )
        .await
        .expect("load the bad page");
    let violations = browser.axe_violations("bad page").await;
    assert!(
        violations.iter().any(|v| v.contains("image-alt")),
        "{violations:?}"
    );
    assert!(
        violations.iter().any(|v| v.contains("html-has-lang")),
        "{violations:?}"
    );
    let missed = browser.unreachable_controls().await;
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert!(missed[0].contains("hidden from Tab"), "{missed:?}");
    browser.close().await;
}

/// Before login the console speaks the browser's language.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_page_follows_a_german_browser() {
    let _one = ONE_BROWSER.lock().await;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    let mut browser = Browser::start_with_languages(&gateway, "login_de", "de-DE,de").await;
    browser.goto("/console/login").await;
    assert_eq!(browser.lang().await, "de");
    assert!(
        browser.page_text().await.contains("Anmelden"),
        "{}",
        browser.page_text().await
    );
    browser.check_page("login-de").await;
    // The forced new password, in German too.
    log_in(&browser, FACTORY_USER, FACTORY_PASSWORD).await;
    assert_eq!(browser.lang().await, "de");
    assert!(browser.exists("#new-password").await);
    browser.check_page("first-password-de").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_table_sorts_and_filters_in_the_browser() {
    let _one = ONE_BROWSER.lock().await;
    let gateway = TestGateway::start_with_console(|_| {}).await;
    for name in ["Berta", "Anton", "Caesar"] {
        gateway.create_mailbox(name).await;
    }
    let mut browser = Browser::start(&gateway, "sort_filter").await;
    first_login(&mut browser).await;
    assert_eq!(
        names(&browser).await,
        ["Anton", "Berta", "Caesar"],
        "by name by default"
    );
    browser.click("#sort-name").await;
    assert_eq!(
        names(&browser).await,
        ["Caesar", "Berta", "Anton"],
        "a second click reverses"
    );
    browser.check_page("sorted-desc").await;
    browser.fill("#filter-q", "ert").await;
    browser.click("#filter-submit").await;
    assert_eq!(names(&browser).await, ["Berta"]);
    browser.check_page("filtered").await;
    browser.fill("#filter-q", "nobody").await;
    browser.click("#filter-submit").await;
    assert!(browser.exists("#no-matches").await);
    browser.check_page("filtered-none").await;
    browser.close().await;
}

/// The names in the mailbox table, top to bottom.
async fn names(browser: &Browser) -> Vec<String> {
    let mut names = Vec::new();
    for cell in browser
        .find_all("tr[data-mailbox-id] [data-testid='name']")
        .await
    {
        names.push(cell.text().await.expect("name"));
    }
    names
}

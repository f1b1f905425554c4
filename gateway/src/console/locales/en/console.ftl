# The web console's texts in English. Every key here must be in de/console.ftl too (a unit
# test checks); templates use them as t("key").

product-name = gateway
product-console = Management Console
skip-to-content = Skip to content
menu-user = User menu
menu-admin = admin
menu-settings = Settings
menu-status = Status
sign-out = Sign out
copy = Copy
copied = Copied
continue = Continue
save = Save
back-to-main = Back to the main page

login-title = Sign in
login-user = User name
login-password = Password
login-submit = Sign in
login-wrong = Wrong user name or password.
login-throttled = Too many failed attempts. Wait { $seconds } s, then try again.
login-first-on-host = The initial password has not been changed yet. Sign in for the first time on the gateway's own machine (for example at https://localhost:8450), or run `gateway admin reset-password` there.
login-unavailable = The sign-in cannot be checked right now. Try again in a moment.

new-password-title = Your new password
new-password-intro-first = The initial password has been replaced. This is your new administrator password:
new-password-intro = This is your new administrator password:
new-password-warning = Store it now, for example in a password manager. It is shown only this once and cannot be recovered. If it is lost, it can be reset only on the gateway's own machine with `gateway admin reset-password`.
new-password-not-shown-again = The new password was shown once and is not shown again. If you did not store it, reset it on the gateway's own machine with `gateway admin reset-password`.
new-password-stored = I have stored this password
new-password-tick-the-box = Tick “I have stored this password” to continue.

settings-title = Settings
settings-language = Language
settings-language-label = Language of the console
settings-language-unknown = Unknown language.
settings-password = Reset your password
settings-password-intro = Confirm your current password; a new random password is then shown once. Other sign-ins end.
settings-current-password = Current password
settings-password-submit = Reset password
settings-password-wrong = The current password is wrong.

language-en = English
language-de = Deutsch

mailboxes-title = Mailboxes
status-title = Status

error-title = Something went wrong
error-not-found = There is no such page.
error-csrf = This form has expired or did not come from this console. Reload the page and try again.
error-internal = The page could not be shown. Details are in the gateway's log.
error-session-unavailable = Your session cannot be checked right now. Try again in a moment.

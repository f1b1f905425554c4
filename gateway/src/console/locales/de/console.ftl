# Die Texte der Weboberfläche auf Deutsch. Jeder Schlüssel muss auch in en/console.ftl
# stehen (ein Unit-Test prüft das).

product-name = gateway
product-console = Management Console
skip-to-content = Zum Inhalt springen
menu-user = Benutzermenü
menu-admin = admin
menu-settings = Einstellungen
menu-status = Status
sign-out = Abmelden
copy = Kopieren
copied = Kopiert
continue = Weiter
save = Speichern
back-to-main = Zurück zur Hauptseite

login-title = Anmelden
login-user = Benutzername
login-password = Passwort
login-submit = Anmelden
login-wrong = Benutzername oder Passwort ist falsch.
login-throttled = Zu viele fehlgeschlagene Versuche. Warten Sie { $seconds } s und versuchen Sie es dann erneut.
login-first-on-host = Das anfängliche Passwort wurde noch nicht geändert. Melden Sie sich das erste Mal auf dem Rechner des Gateways selbst an (zum Beispiel unter https://localhost:8450) oder führen Sie dort `gateway admin reset-password` aus.
login-unavailable = Die Anmeldung kann gerade nicht geprüft werden. Versuchen Sie es gleich noch einmal.

new-password-title = Ihr neues Passwort
new-password-intro-first = Das anfängliche Passwort wurde ersetzt. Dies ist Ihr neues Administratorpasswort:
new-password-intro = Dies ist Ihr neues Administratorpasswort:
new-password-warning = Speichern Sie es jetzt, zum Beispiel in einem Passwortmanager. Es wird nur dieses eine Mal angezeigt und kann nicht wiederhergestellt werden. Geht es verloren, lässt es sich nur auf dem Rechner des Gateways mit `gateway admin reset-password` zurücksetzen.
new-password-not-shown-again = Das neue Passwort wurde einmal angezeigt und wird nicht erneut angezeigt. Falls Sie es nicht gespeichert haben, setzen Sie es auf dem Rechner des Gateways mit `gateway admin reset-password` zurück.
new-password-stored = Ich habe dieses Passwort gespeichert
new-password-tick-the-box = Setzen Sie das Häkchen bei „Ich habe dieses Passwort gespeichert“, um fortzufahren.

settings-title = Einstellungen
settings-language = Sprache
settings-language-label = Sprache der Oberfläche
settings-language-unknown = Unbekannte Sprache.
settings-password = Eigenes Passwort zurücksetzen
settings-password-intro = Bestätigen Sie Ihr aktuelles Passwort; danach wird einmalig ein neues zufälliges Passwort angezeigt. Andere Anmeldungen werden beendet.
settings-current-password = Aktuelles Passwort
settings-password-submit = Passwort zurücksetzen
settings-password-wrong = Das aktuelle Passwort ist falsch.

language-en = English
language-de = Deutsch

mailboxes-title = Postfächer
status-title = Status

error-title = Etwas ist schiefgegangen
error-not-found = Diese Seite gibt es nicht.
error-csrf = Dieses Formular ist abgelaufen oder stammt nicht von dieser Oberfläche. Laden Sie die Seite neu und versuchen Sie es noch einmal.
error-internal = Die Seite konnte nicht angezeigt werden. Einzelheiten stehen im Protokoll des Gateways.
error-session-unavailable = Ihre Sitzung kann gerade nicht geprüft werden. Versuchen Sie es gleich noch einmal.

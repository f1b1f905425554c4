# Die Texte der Postfach- und Statusseiten auf Deutsch. Jeder Schlüssel muss auch in
# en/pages.ftl stehen (ein Unit-Test prüft das).

ok = OK
cancel = Abbrechen
yes = Ja
no = Nein
optional = (optional)

mailbox-create = Postfach anlegen
mailboxes-filter = Filter
mailboxes-filter-submit = Filtern
mailboxes-filter-clear = Alle anzeigen
mailboxes-caption = { $total ->
    [one] { $shown } von 1 Postfach
   *[other] { $shown } von { $total } Postfächern
}
mailboxes-none = Es gibt noch keine Postfächer. Legen Sie eines an, um Journal-E-Mails zu empfangen oder über den Proxy zu archivieren.
mailboxes-no-matches = Kein Postfach passt zum Filter.
column-address = Adresse
column-name = Name
column-description = Beschreibung
column-status = Status
column-messages = Nachrichten
column-size = Größe
column-oldest = Älteste Nachricht
column-actions = Aktionen
status-active = Aktiv
status-suspended = Angehalten
mailbox-copy-address = Adresse von { $name } kopieren
mailbox-no-messages = leer
mailbox-edit = Bearbeiten
mailbox-delete = Löschen
mailbox-reset-password = Passwort zurücksetzen
mailbox-setup = Einrichtungshinweise
mailbox-blocked-not-suspended = Halten Sie das Postfach zuerst an.
mailbox-blocked-not-empty = Das Postfach enthält noch Nachrichten; lassen Sie sie zuerst vom Archivierer abholen.

notice-mailbox-created = Das Postfach wurde angelegt.
notice-mailbox-saved = Die Änderungen wurden gespeichert.
notice-mailbox-deleted = Das Postfach wurde gelöscht.
notice-mailbox-password-reset = Das Postfach hat ein neues Passwort.

mailbox-create-title = Postfach anlegen
mailbox-name = Name
mailbox-description = Beschreibung
mailbox-create-hint = Name und Beschreibung sind für Sie, etwa welches Journal oder welche Benutzer das Postfach bedient. Das Postfach erhält eine eigene Adresse und ein zufälliges Passwort, das auf der nächsten Seite angezeigt wird.

mailbox-password-title = Das Passwort des Postfachs
mailbox-password-title-reset = Das neue Passwort des Postfachs
mailbox-password-intro = Der Archivierer braucht dieses Passwort, um die E-Mails des Postfachs abzuholen:
mailbox-password-not-shown-again = Das Passwort wurde einmal angezeigt und wird nicht erneut angezeigt. Falls Sie es nicht aufbewahrt haben, halten Sie das Postfach an, solange es leer ist, und setzen Sie sein Passwort zurück.
mailbox-password-warning-title = Bewahren Sie dieses Passwort jetzt sicher auf.
mailbox-password-warning = Das Gateway speichert es nicht: Es entsperrt nur den Schlüssel, mit dem die E-Mails dieses Postfachs verschlüsselt werden. Ein verlorenes Passwort lässt sich nicht wiederherstellen, und E-Mails, die dann noch im Postfach liegen, können nie wieder gelesen werden.
mailbox-password-understood = Ich habe die obige Warnung gelesen und verstanden
password-acknowledge-required = Setzen Sie das Häkchen bei „Ich habe die obige Warnung gelesen und verstanden“, um fortzufahren.

mailbox-edit-title = Postfach bearbeiten
mailbox-status-hint = Ein aktives Postfach nimmt neue E-Mails an. Ein angehaltenes weist neue E-Mails mit einem vorübergehenden Fehler ab, der Archivierer kann aber weiter abholen, was darin liegt; halten Sie ein Postfach an, bevor Sie es löschen.

mailbox-delete-title = Postfach löschen
mailbox-delete-question = Das Postfach „{ $name }“ endgültig löschen?
mailbox-reset-title = Postfach-Passwort zurücksetzen
mailbox-reset-question = Dem Postfach „{ $name }“ einen neuen Schlüssel und ein neues Passwort geben?
mailbox-reset-warning = Das alte Passwort gilt sofort nicht mehr: Ändern Sie es danach in den Einstellungen des Archivierers.

setup-title = Einrichtungshinweise
setup-intro = Was wo einzutragen ist, damit E-Mails das Postfach „{ $name }“ erreichen und der Archivierer sie abholt.
setup-journal-title = Als Journal-Ziel
setup-journal-intro = Tragen Sie diese Adresse beim E-Mail-Dienst als Empfänger des Journals (oder der Archivierung) ein:
setup-journal-m365 = Microsoft 365: Purview-Complianceportal, Datenlebenszyklusverwaltung, Journalregeln: Journalberichte an diese Adresse senden.
setup-journal-google = Google Workspace: Admin-Konsole, Gmail, Compliance, Routing (oder Inhaltscompliance): diese Adresse als zusätzlichen Empfänger hinzufügen.
setup-journal-port = Der E-Mail-Dienst stellt per SMTP an dieses Gateway zu, Port { $port }.
setup-suspended = Das Postfach ist angehalten: E-Mails dafür werden abgewiesen, bis es wieder aktiv ist.
setup-proxy-title = Als SMTP- und POP3-Proxy
setup-proxy-intro = Tragen Sie in jedem E-Mail-Programm das Gateway als Posteingangs- und Postausgangsserver ein und verwenden Sie dieses Muster als Benutzernamen:
setup-proxy-explained = Ersetzen Sie remote_user durch den Benutzernamen beim E-Mail-Anbieter und target_server durch den Servernamen des Anbieters; das Passwort bleibt das des Anbieters.
setup-proxy-incoming = Posteingangsserver
setup-proxy-outgoing = Postausgangsserver
setup-archiver-title = Im Archivierer
setup-archiver-intro = Legen Sie ein POP3-Archivierungsprofil mit diesen Einstellungen an:
setup-archiver-protocol = Protokoll
setup-archiver-host = Server
setup-archiver-port = Port
setup-archiver-pop3s-off = Der POP3S-Listener ist auf diesem Gateway nicht eingeschaltet.
setup-archiver-user = Benutzername
setup-archiver-password = Passwort
setup-archiver-password-value = das Passwort, wie es beim Anlegen des Postfachs angezeigt wurde
setup-archiver-user-hint = Auch die vollständige Adresse des Postfachs funktioniert als Benutzername.

status-server = Server
status-version = Version
status-host-name = Hostname
status-uptime = Laufzeit
status-started = gestartet { $at }
status-store-size = Größe des Speichers
status-unknown = unbekannt
status-disk-free = Freier Speicherplatz
status-snapshots = Schnappschüsse
status-snapshots-off = ausgeschaltet ([backup] snapshot_interval)
status-snapshots-none = alle { $every }, noch keiner erstellt
status-snapshots-last = alle { $every }, zuletzt { $at }
status-disk-free-of = { $free } von { $total }
status-disk-warning = Weniger als { $warn } frei: Platz schaffen, bevor neue Mails abgewiesen werden.
status-disk-critical = Weniger als { $min } frei: neue Mails werden abgewiesen, bis Platz frei wird.
status-listeners = Listener
status-listener-name = Dienst
status-listener-address = Adresse
status-listener-port = Port
status-listener-state = Zustand
listener-listening = empfangsbereit
listener-disabled = ausgeschaltet
listener-stopped = gestoppt
status-certificate = Zertifikat
status-cert-subject = Inhaber
status-cert-names = Namen
status-cert-issuer = Aussteller
status-cert-not-after = Gültig bis
status-cert-days-left = Verbleibende Tage
status-cert-days = { $days ->
    [one] 1 Tag
   *[other] { $days } Tage
}
status-cert-warning = Erneuern Sie das Zertifikat bald.
status-cert-critical = Erneuern Sie das Zertifikat jetzt: Clients lehnen es ab, sobald es abgelaufen ist.
status-cert-source = Herkunft
status-cert-self-signed = vom Gateway selbst signiert
status-cert-files = Zertifikatsdateien
status-cert-imported = importiertes Zertifikat
status-cert-fingerprint = SHA-256-Fingerabdruck
status-cert-renewal-next = Nächster Erneuerungsversuch
status-cert-renewal-stopped = sobald das Gateway läuft
status-cert-renewal-last = Zuletzt erneuert
status-cert-renewal-failures = Fehlgeschlagene Versuche in Folge
status-cert-renewal-error = Letzter Fehler bei der Erneuerung
status-stale = Nicht abgeholte Postfächer
status-stale-intro = Postfächer, deren älteste Nachricht seit mehr als einem Tag wartet: Ihr Archivierer holt womöglich nicht mehr ab.
status-stale-since = älteste Nachricht vom { $at }, { $count ->
    [one] 1 Nachricht wartet
   *[other] { $count } Nachrichten warten
}
status-stale-none = Jedes Postfach wurde innerhalb des letzten Tages abgeholt.
status-cert-key-type = Schlüsseltyp
status-cert-acme = Let's Encrypt (ACME), automatisch erneuert
cert-actions = Zertifikat ändern
cert-self-signed-title = Neues selbstsigniertes Zertifikat
cert-self-signed-intro = Das Gateway erstellt ein neues Zertifikat für seinen Hostnamen und verwendet es sofort für alle Dienste. Clients müssen ihm ausdrücklich vertrauen.
cert-self-signed-names = Weitere Namen
cert-self-signed-names-hint = DNS-Namen oder IP-Adressen zusätzlich zum Hostnamen, durch Kommas getrennt.
cert-self-signed-submit = Erstellen und verwenden
cert-import-title = Zertifikat importieren
cert-import-intro = Das Zertifikat wird geprüft (der Schlüssel muss passen; ein abgelaufenes oder bald ablaufendes wird mit einer Warnung angenommen) und sofort für alle Dienste verwendet.
cert-import-pem = PEM-Zertifikatskette und privater Schlüssel
cert-import-chain = Zertifikatskette (PEM)
cert-import-chain-hint = Zuerst das Zertifikat des Servers, dann die Zwischenzertifikate.
cert-import-key = Privater Schlüssel (PEM, unverschlüsselt)
cert-import-key-hint = Er wird im Datenverzeichnis des Gateways gespeichert, nur für das Gateway lesbar.
cert-import-submit = Importieren und verwenden
cert-import-pkcs12 = PKCS#12-Datei (.p12, .pfx)
cert-import-pkcs12-file = Datei
cert-import-pkcs12-base64 = Dateiinhalt, Base64
cert-import-pkcs12-hint = Wählen Sie oben die Datei, oder fügen Sie die Ausgabe von `base64 zertifikat.p12` ein.
cert-import-password = Passwort der Datei
cert-acme-title = Let's-Encrypt-Zertifikat
cert-acme-intro = Das Gateway bezieht ein Zertifikat über ACME und erneuert es selbständig. Die Zertifizierungsstelle prüft jeden Namen über HTTP auf Port 80: Dort muss sie dieses Gateway erreichen.
cert-acme-domains = Namen
cert-acme-domains-hint = DNS-Namen, durch Kommas getrennt; der erste ist der Hauptname des Zertifikats.
cert-acme-email = Kontakt-E-Mail-Adresse
cert-acme-email-hint = Hierhin schreibt die Zertifizierungsstelle bei Problemen mit dem Zertifikat.
cert-acme-directory = URL des ACME-Verzeichnisses
cert-acme-directory-hint = Leer lassen für Let's Encrypt.
cert-acme-accept-terms = Ich akzeptiere die Nutzungsbedingungen der Zertifizierungsstelle.
cert-acme-submit = Zertifikat anfordern
acme-terms-required = Akzeptieren Sie die Nutzungsbedingungen der Zertifizierungsstelle, um ein Zertifikat anzufordern.
cert-renew = Jetzt erneuern
cert-progress-title = Zertifikat wird bearbeitet
cert-progress-running = In Arbeit …
cert-progress-hint = Diese Seite lädt sich neu, bis die Arbeit erledigt ist. Bis dahin bleibt das bisherige Zertifikat in Gebrauch.
cert-progress-reload = Neu laden
cert-result-old-kept = Das verwendete Zertifikat ist unverändert.
cert-result-done = Das neue Zertifikat wird jetzt von allen Diensten verwendet.
cert-result-warnings = Clients lehnen dieses Zertifikat möglicherweise ab:
cert-back-to-status = Zurück zur Statusseite

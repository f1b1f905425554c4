# The texts of the mailbox and status pages in English. Every key here must be in
# de/pages.ftl too (a unit test checks).

ok = OK
cancel = Cancel
yes = Yes
no = No
optional = (optional)

mailbox-create = Create mailbox
mailboxes-filter = Filter
mailboxes-filter-submit = Apply filter
mailboxes-filter-clear = Show all
mailboxes-caption = { $total ->
    [one] { $shown } of 1 mailbox
   *[other] { $shown } of { $total } mailboxes
}
mailboxes-none = There are no mailboxes yet. Create one to receive journal mail or to archive through the proxy.
mailboxes-no-matches = No mailbox matches the filter.
column-address = Address
column-name = Name
column-description = Description
column-status = Status
column-messages = Messages
column-size = Size
column-oldest = Oldest message
column-actions = Actions
status-active = Active
status-suspended = Suspended
mailbox-copy-address = Copy the address of { $name }
mailbox-no-messages = empty
mailbox-edit = Edit
mailbox-delete = Delete
mailbox-reset-password = Reset password
mailbox-setup = Setup hints
mailbox-blocked-not-suspended = Suspend the mailbox first.
mailbox-blocked-not-empty = The mailbox still holds messages; let the archiver pick them up first.

notice-mailbox-created = The mailbox has been created.
notice-mailbox-saved = The changes have been saved.
notice-mailbox-deleted = The mailbox has been deleted.
notice-mailbox-password-reset = The mailbox has a new password.

mailbox-create-title = Create mailbox
mailbox-name = Name
mailbox-description = Description
mailbox-create-hint = The name and description are for you, for example which journal or which users the mailbox serves. The mailbox gets its own address and a random password, shown on the next page.

mailbox-password-title = The mailbox's password
mailbox-password-title-reset = The mailbox's new password
mailbox-password-intro = The archiver needs this password to pick up the mailbox's mail:
mailbox-password-not-shown-again = The password was shown once and is not shown again. If you did not keep it, suspend the mailbox while it is still empty and reset its password.
mailbox-password-warning-title = Keep this password safe now.
mailbox-password-warning = The gateway does not store it: it only unlocks the key that encrypts this mailbox's mail. A lost password cannot be recovered, and mail still in the mailbox can then never be read again.
mailbox-password-understood = I've read and understood the above warning
password-acknowledge-required = Tick “I've read and understood the above warning” to continue.

mailbox-edit-title = Edit mailbox
mailbox-status-hint = An active mailbox accepts new mail. A suspended one refuses new mail with a temporary error, while the archiver can still pick up what it holds; suspend a mailbox before deleting it.

mailbox-delete-title = Delete mailbox
mailbox-delete-question = Delete the mailbox “{ $name }” for good?
mailbox-reset-title = Reset mailbox password
mailbox-reset-question = Give the mailbox “{ $name }” a new key and a new password?
mailbox-reset-warning = The old password stops working at once: change it in the archiver's settings afterwards.

setup-title = Setup hints
setup-intro = What to enter where, so that mail reaches the mailbox “{ $name }” and the archiver picks it up.
setup-journal-title = As a journal target
setup-journal-intro = Enter this address as the journal (or archive) recipient on the mail service:
setup-journal-m365 = Microsoft 365: Purview compliance portal, Data lifecycle management, Journal rules: send journal reports to this address.
setup-journal-google = Google Workspace: Admin console, Gmail, Compliance, Routing (or Content compliance): add this address as an additional recipient.
setup-journal-port = The mail service delivers over SMTP to this gateway, port { $port }.
setup-suspended = The mailbox is suspended: mail for it is refused until it is active again.
setup-proxy-title = As an SMTP and POP3 proxy
setup-proxy-intro = In each mail client, use the gateway as incoming and outgoing server and this user name pattern:
setup-proxy-explained = Replace remote_user with the user name at the mail provider and target_server with the provider's server name; the password stays the provider's.
setup-proxy-incoming = Incoming server
setup-proxy-outgoing = Outgoing server
setup-archiver-title = In the archiver
setup-archiver-intro = Create a POP3 archiving profile with these settings:
setup-archiver-protocol = Protocol
setup-archiver-host = Server
setup-archiver-port = Port
setup-archiver-pop3s-off = The POP3S listener is not enabled on this gateway.
setup-archiver-user = User name
setup-archiver-password = Password
setup-archiver-password-value = the password as shown at the mailbox's creation
setup-archiver-user-hint = The mailbox's full address works as the user name too.

status-server = Server
status-version = Version
status-host-name = Host name
status-uptime = Uptime
status-started = started { $at }
status-store-size = Store size
status-unknown = unknown
status-disk-free = Free disk space
status-snapshots = Snapshots
status-snapshots-off = off ([backup] snapshot_interval)
status-snapshots-none = every { $every }, none taken yet
status-snapshots-last = every { $every }, last { $at }
status-disk-free-of = { $free } of { $total }
status-disk-warning = Less than { $warn } free: make room before mail is refused.
status-disk-critical = Less than { $min } free: new mail is refused until space is freed.
status-listeners = Listeners
status-listener-name = Service
status-listener-address = Address
status-listener-port = Port
status-listener-state = State
listener-listening = listening
listener-disabled = disabled
listener-stopped = stopped
status-certificate = Certificate
status-cert-subject = Subject
status-cert-names = Names
status-cert-issuer = Issuer
status-cert-not-after = Valid until
status-cert-days-left = Days left
status-cert-days = { $days ->
    [one] 1 day
   *[other] { $days } days
}
status-cert-warning = Renew the certificate soon.
status-cert-critical = Renew the certificate now: clients will refuse it once it expires.
status-cert-source = Source
status-cert-self-signed = self-signed by the gateway
status-cert-files = certificate files
status-cert-imported = imported certificate
status-cert-fingerprint = SHA-256 fingerprint
status-cert-renewal-next = Next renewal attempt
status-cert-renewal-stopped = when the gateway runs
status-cert-renewal-last = Last renewed
status-cert-renewal-failures = Failed attempts in a row
status-cert-renewal-error = Last renewal error
status-stale = Mailboxes not picked up
status-stale-intro = Mailboxes whose oldest message has waited for more than a day: their archiver may have stopped picking up.
status-stale-since = oldest message from { $at }, { $count ->
    [one] 1 message
   *[other] { $count } messages
} waiting
status-stale-none = Every mailbox was picked up within the last day.
status-cert-key-type = Key type
status-cert-acme = Let's Encrypt (ACME), renewed automatically
cert-actions = Change the certificate
cert-self-signed-title = New self-signed certificate
cert-self-signed-intro = The gateway creates a new certificate for its host name and presents it on every listener at once. Clients must be told to trust it.
cert-self-signed-names = Further names
cert-self-signed-names-hint = DNS names or IP addresses besides the host name, separated by commas.
cert-self-signed-submit = Create and use
cert-import-title = Import a certificate
cert-import-intro = The certificate is checked (the key must match; an expired or soon expiring one is accepted with a warning) and presented on every listener at once.
cert-import-pem = PEM certificate chain and private key
cert-import-chain = Certificate chain (PEM)
cert-import-chain-hint = The server's certificate first, then the intermediate certificates.
cert-import-key = Private key (PEM, unencrypted)
cert-import-key-hint = It is stored in the gateway's data directory, readable only by the gateway.
cert-import-submit = Import and use
cert-import-pkcs12 = PKCS#12 file (.p12, .pfx)
cert-import-pkcs12-file = File
cert-import-pkcs12-base64 = File content, base64
cert-import-pkcs12-hint = Choose the file above, or paste the output of `base64 certificate.p12`.
cert-import-password = Password of the file
cert-acme-title = Let's Encrypt certificate
cert-acme-intro = The gateway obtains a certificate over ACME and renews it on its own. The certificate authority checks each name over HTTP on port 80: it must reach this gateway there.
cert-acme-domains = Names
cert-acme-domains-hint = DNS names, separated by commas; the first is the certificate's main name.
cert-acme-email = Contact e-mail address
cert-acme-email-hint = The certificate authority writes here about problems with the certificate.
cert-acme-directory = ACME directory URL
cert-acme-directory-hint = Leave empty for Let's Encrypt.
cert-acme-accept-terms = I accept the terms of service of the certificate authority.
cert-acme-submit = Request certificate
acme-terms-required = Accept the certificate authority's terms of service to request a certificate.
cert-renew = Renew now
cert-progress-title = Working on the certificate
cert-progress-running = In progress…
cert-progress-hint = This page reloads itself until the work is done. The current certificate stays in use meanwhile.
cert-progress-reload = Reload
cert-result-old-kept = The certificate in use has not changed.
cert-result-done = The new certificate is in use on every listener.
cert-result-warnings = Clients may refuse this certificate:
cert-back-to-status = Back to the status page

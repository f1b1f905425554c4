//! The commented default configuration file (`gateway config init` writes it).

/// A complete configuration file with every key at its default value.
///
/// The one exception is `gateway.host_name`: its default is the machine's host name,
/// detected at start-up, so the template leaves it commented out (meaning "detect").
/// Parsing this text therefore yields exactly `Config::default()` on any machine.
pub const DEFAULT_TEMPLATE: &str = r#"# gateway configuration.
#
# Every key is optional: a missing key keeps the default shown here, and the gateway
# runs with no file at all. Misspelt keys are rejected, so a typo never goes unnoticed.

[gateway]
# Domain of the mailbox addresses this gateway hands out (mailbox@email_domain).
email_domain = "localhost"
# Name the gateway announces in SMTP and POP3 greetings and puts in its self-signed
# certificate. Leave commented out to use this machine's host name.
# host_name = "mail.example.com"
# Where the message store, spool files and keys live. Relative paths are relative to
# the working directory; --data-dir or GATEWAY_DATA_DIR override it.
data_dir = "./gateway-data"
# How much to log: "error", "warn", "info", "debug" or "trace".
log_level = "info"

# One table per service. Each has an address ("::" = all interfaces, IPv6 and IPv4, or
# IPv4 alone where the system has no IPv6; "0.0.0.0" = all IPv4 interfaces), a port, and
# enabled = true/false.

[listen.smtp]
# Plain SMTP with STARTTLS: journal target and proxy entry point.
address = "::"
port = 25
enabled = true

[listen.smtps]
# SMTP over implicit TLS.
address = "::"
port = 465
enabled = true

[listen.submission]
# Message submission with STARTTLS.
address = "::"
port = 587
enabled = true

[listen.pop3]
# Plain POP3 with STLS, for archivers picking up mail.
address = "::"
port = 110
enabled = true

[listen.pop3s]
# POP3 over implicit TLS.
address = "::"
port = 995
enabled = true

[listen.console]
# The web console.
address = "::"
port = 8450
enabled = true

[listen.acme_http]
# Answers ACME HTTP-01 challenges. Only opened when tls.source = "acme".
address = "::"
port = 80
enabled = true

[tls]
# Where the server certificate comes from:
#   "self-signed"  generate one for host_name on first start and keep it in data_dir.
#   "files"        use PEM files you maintain; requires certificate_chain and private_key:
#                    certificate_chain = "/etc/gateway/fullchain.pem"
#                    private_key = "/etc/gateway/privkey.pem"
#   "acme"         obtain and renew one automatically (needs listen.acme_http reachable
#                  on port 80 from the internet). Choosing it means you agree to the
#                  CA's terms of service (Let's Encrypt: https://letsencrypt.org/repository/).
#                  Optional keys:
#                    acme_directory_url = "https://acme-v02.api.letsencrypt.org/directory"
#                    acme_contact_email = "postmaster@example.com"
#                    acme_ca_file = "/path/to/test-ca.pem"   # trust a test ACME server
#                    # Renew when the certificate is this many days old or has this many
#                    # days or fewer left, whichever comes first (1 to 365). Keep
#                    # acme_renew_before_days below the certificate's lifetime (90 days
#                    # at Let's Encrypt); otherwise it renews at two thirds of the lifetime.
#                    acme_renew_after_days = 60
#                    acme_renew_before_days = 30
#                    acme_domains = ["mail.example.com"]     # default: [host_name]
#                    # A new setup is first tried here (certificate discarded); default:
#                    # Let's Encrypt's staging directory when ordering from Let's Encrypt.
#                    acme_staging_directory_url = "https://acme-staging-v02.api.letsencrypt.org/directory"
# Keys that do not belong to the chosen source are rejected.
source = "self-signed"

[limits]
# Largest message accepted, in bytes (1024 to 2147483648). 104857600 = 100 MiB.
max_message_size = 104857600
# Most recipients in one SMTP transaction.
max_recipients = 100
# Most client connections at once, for each of SMTP, POP3 and the console (each has its
# own budget, so a flood on one cannot lock the others out).
max_connections = 500
# Most connections at once from a single IP address, for each of them.
max_connections_per_ip = 20
# Memory for the message store's page cache, in MiB. Pages written by recent mail stay
# in it, so after a busy spell the gateway's memory stays this much above idle; a
# smaller cache saves memory at some cost in throughput at full load. When not set: a
# sixteenth of the memory the gateway may use (its control group's limit, else the
# machine's RAM), between 16 and 64 MiB; the log says what it chose at start.
# store_cache_mib = 64
# Encrypted bytes of a message kept in memory while it arrives, in KiB; beyond this
# it is written to a temporary spool file (which the store then reads back).
spool_memory_kib = 2048
# Encrypted bytes all messages still arriving keep in memory together, in MiB; beyond
# this their chunks go to spool files too.
spool_memory_total_mib = 64
# Most disk space all messages still arriving may use in spool files together, in MiB.
# When it is reached, new mail gets "452 4.3.1" (try again later).
spool_max_mib = 2048
# Seconds a write to a client may make no progress (a client that stops reading) before
# the connection is dropped.
write_timeout_secs = 60
# Seconds a client may stay silent before it has proved itself: SMTP until its first MAIL
# or AUTH, POP3 until login. Later the protocols' idle timeouts apply (SMTP 5 minutes,
# POP3 10 minutes).
preauth_timeout_secs = 60
# Seconds one SMTP transaction (MAIL FROM to the end of its data) may take in all.
transaction_timeout_secs = 1800
# POP3 connection slots (of max_connections) kept for pick-up: only [pop3] trusted_networks
# and addresses that logged in to a mailbox since start may take them, never strangers or
# proxy clients, so the archiver gets in during a flood of connections. At most half of
# max_connections is reserved.
reserved_pickup_slots = 10
# Seconds of silence after which TCP keepalive checks that a client is still there
# (0 = off). A client that vanished then releases its slot and mailbox within minutes.
tcp_keepalive_secs = 60
# Connections the system queues per listener before the gateway accepts them.
listen_backlog = 128
# Seconds "gateway serve" lets open connections finish after a stop signal.
shutdown_grace_secs = 30
# New mail is refused (452 4.3.1, try again later) while less than this many MiB are
# free on the data directory's file system; pick-up and reading keep working.
min_free_disk_mib = 256
# Below this many MiB free the log warns (once, and again when space returns), "gateway
# check" reports WARNING and the console's status page highlights the free space. At
# least min_free_disk_mib; unset, 1024 or min_free_disk_mib if that is higher.
# warn_free_disk_mib = 1024
# MiB kept in a preallocated file in the data directory (disk-reserve) and given back
# when the disk is full, so that pick-up can still delete and the store can recover
# after a crash. 0 keeps no reserve.
disk_reserve_mib = 32

[smtp]
# When true, clients must STARTTLS before MAIL FROM (otherwise they get 530).
require_tls = false
# Which clients may connect, as addresses or CIDR networks,
# e.g. ["192.0.2.0/24", "2001:db8::/32"]. Empty means everyone.
allowed_networks = []
# The mailbox (its id) that receives mail for <postmaster> and postmaster@email_domain,
# as RFC 5321 asks of every SMTP server. Unset, such mail is refused with 550.
# postmaster_mailbox = "mbx-0123456789abcdef0123456789abcdef"

[pop3]
# How many mailbox keys may be unlocked at once. Each unlock deliberately costs
# memory and CPU (Argon2id), so this bounds the load of many logins.
max_concurrent_unseals = 4
# Pause before answering a failed login, in milliseconds, to slow password guessing.
failed_login_delay_ms = 2000
# One session per mailbox at a time. When a session has waited this many seconds for a
# command (say its client vanished in a network outage), a new login with the mailbox
# password takes over: the old session ends without deleting anything. 0 = never; the
# old session then holds the mailbox until it times out (10 minutes).
lock_takeover_secs = 60
# The archiver's addresses, as addresses or CIDR networks, e.g. ["192.0.2.10"].
# Failed logins are throttled per client (IPv6 per /64) and delayed per mailbox;
# clients in these networks are exempt, so others' failures can never slow them.
trusted_networks = []

[proxy]
# Proxy mode: mail clients log in as "remote_user%target_server%mailbox_id" (SMTP AUTH
# after STARTTLS or on port 465; POP3 USER/PASS or AUTH PLAIN after STLS or on port 995).
# The gateway logs into target_server over TLS with the client's credentials, relays
# the session and stores an encrypted copy of every message sent or retrieved.
enabled = true
# Extra CA certificates (PEM files) to trust for upstream servers, e.g. a company CA.
ca_files = []
# Also trust the operating system's root certificates (/etc/ssl/certs).
system_roots = true
# Upstream servers clients may name, e.g. ["mail.example.com"]. Empty means any.
allowed_servers = []
# Seconds to wait for an upstream server's connection and TLS handshake.
connect_timeout_secs = 30
# Let clients name servers on loopback, private (RFC 1918, CGNAT, ULA), link-local and
# other non-global addresses. Off, the gateway resolves the name itself and refuses such
# addresses, so the proxy cannot reach the gateway's own network; turn it on only for a
# provider inside that network (and then list it in allowed_servers).
allow_private_networks = false
# Upstream ports clients may name. Empty means any.
allowed_ports = [25, 465, 587, 110, 995]
# Pause before answering a proxy login the provider refused, in milliseconds. Failed
# proxy logins are also throttled per client and per remote account, so the gateway
# cannot be used to guess passwords at the provider.
failed_login_delay_ms = 2000

[console]
# Language of the web console for users who have not chosen one: "en" or "de".
language = "en"

[metrics]
# Prometheus metrics are served at https://<host>:<console port>/metrics to the
# administrator and API keys. Set listen to also serve them over plain HTTP without a
# login, for a scraper on this machine, e.g. "127.0.0.1:9450" (unset: no such listener).
# listen = "127.0.0.1:9450"
# The plain listener must be on loopback unless this is true (it has no login and no TLS).
allow_remote = false
# Per-mailbox series (messages waiting, age of the oldest message) only while there are
# at most this many mailboxes; the totals are always there.
per_mailbox_limit = 50

[logging]
# Besides stderr, write log files to <data_dir>/logs, a new file every day
# (gateway.log.YYYY-MM-DD).
file = false
# Log files older than this many days are deleted.
retention_days = 14
# "text" (readable lines) or "json" (one JSON object per line), on stderr and in files.
format = "text"
[backup]
# How often the running gateway writes a consistent snapshot of the store (with the
# proxy's retrieval key, the certificates and this file) to data_dir/snapshots/, e.g.
# "15m", "1h" or "1d"; "off" writes none. Turn it on when you back up the data directory
# with your own tools: copying a store file while mail arrives may catch it half-written,
# a snapshot never is (restore one with `gateway restore --from .../snapshots`). Each
# snapshot is a full copy of the store and the previous one is kept, so the store's
# disk space triples. `gateway backup --to DIR` works with or without this.
snapshot_interval = "off"

[store]
# Where mail, mailboxes and accounts are kept: "redb", one file in data_dir (the default,
# and the fastest on one machine), or "postgres", a PostgreSQL database that several
# gateways share (see the README's deployment section). The keys below are for postgres.
backend = "redb"
# The database: "postgres://gateway@db.example.com:5432/gateway". No password here; put
# it in password_file (this file goes into backups and is shown by `gateway config`).
url = ""
# A file whose first line is the database password.
# password_file = "/etc/gateway/db-password"
# Connections this gateway opens for reads; writes share one more.
pool_size = 8
# "verify": TLS, with the server's certificate checked against the system's roots and
# ca_file. "off" is accepted only for a database on this machine (loopback or a socket).
tls = "verify"
# A PEM file with the CA that signed the database's certificate.
# ca_file = "/etc/gateway/db-ca.pem"
# Create or upgrade the database schema at start; with false, run
# `gateway store migrate` after each upgrade yourself.
migrate = true
"#;

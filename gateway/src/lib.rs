//! # gateway
//!
//! An email-archiving gateway: it accepts journaled mail over SMTP, proxies SMTP and POP3
//! between mail clients and their provider, and keeps every message encrypted per mailbox
//! until an archiver picks it up over POP3S.
//!
//! ## Module map
//!
//! - [`config`]: the one TOML configuration file, its defaults and validation.
//! - [`mailbox`]: mailbox identifiers and addresses (the value types every layer shares).
//! - [`random`]: the OS CSPRNG, and identifiers a simulation can seed.
//! - [`crypto`]: mailbox passwords, per-mailbox HPKE key pairs sealed under Argon2id, and the
//!   chunked streaming encryption of messages.
//! - [`exec`]: where blocking work and the store's writer run: production's threads, or tasks
//!   of the simulated runtime, injected so the simulation runs the production paths.
//! - [`store`]: the redb store: schema, records, and the group-commit writer that makes
//!   many messages durable in one fsync.
//! - [`service`]: the one service layer. Every rule about mailboxes and messages lives here;
//!   CLI, console, API and protocols call it and never re-implement a rule.
//! - [`tls`]: certificate material (self-signed, PEM files) behind a resolver that can be
//!   swapped at run time.
//! - [`wire`]: what SMTP and POP3 share on the wire (SASL), for servers and clients.
//! - [`smtp`]: per protocol folder, the sans-IO machines and their tokio shells: the SMTP
//!   server session (journal target, proxy login), the relay a logged-in proxy client is
//!   handed over to, and the client core toward the provider.
//! - [`pop3`]: the same for POP3: the server session through which archivers pick up mail,
//!   the proxy's relay after login, and the client core toward the provider.
//! - [`proxy`]: what the two proxies share: clients log in as
//!   `remote_user%target_server%mailbox_id`; which upstreams may be reached; connecting to
//!   them over verified TLS; the proxy login throttle. It imports neither protocol folder.
//! - [`server`]: binds the configured listeners and runs them until graceful shutdown.
//! - [`throttle`]: the one login throttle (per client with backoff, per mailbox or remote
//!   account as a delay), shared by POP3 pick-up and the proxies.
//! - [`net`]: the one module that touches sockets: listeners, plain-or-TLS streams,
//!   connection limits, the graceful-shutdown latch, and [`net::Driver`], the one tokio
//!   driver every sans-IO protocol machine ([`net::Machine`]) runs under.
//! - [`api`]: the Management API: one dispatcher for every administrative function, called
//!   by the HTTPS listener, the local control socket and the CLI alike.
//! - [`console`]: the Management Console, the administrator's web UI on the API's HTTPS
//!   listener (server-rendered pages in English and German, sessions, CSRF).
//! - [`console_listener`]: the HTTPS listener that serves the API, the console, the health
//!   probes and `/metrics` on one port.
//! - [`settings`]: the settings an administrator changes while the gateway runs (email
//!   domain, log level, console language), applied at once and written back to the
//!   configuration file with its comments kept.
//! - [`backup`]: consistent backups of a running gateway (store, retrieval key, certificates,
//!   configuration, with a checksummed manifest), their restore, and the rolling snapshot.
//! - [`cli`]: the `gateway` command line (the binary is a thin wrapper around it).
//! - [`check`]: `gateway check`, the monitoring probe (Nagios/Icinga plugin convention)
//!   that speaks to every listener as a client would.
//! - [`metrics`]: the Prometheus registry and the typed handles the shells and the store
//!   count into.
//! - [`metrics_endpoint`]: the gauges a scrape reads from the service and the certificate,
//!   and `/metrics` on the console listener and an optional loopback listener.
//! - [`logging`]: `tracing` set-up: stderr, optional daily log files, text or JSON lines.
//! - [`fs`]: private directories and files written atomically (TLS material, backups, logs).
//! - [`hardening`]: no core dumps, no debugger attachment for the running service.
//!
//! ## How a message flows
//!
//! A protocol session (SMTP DATA, a proxied RETR) feeds bytes into a
//! [`service::MessageDraft`], which encrypts them chunk by chunk as they arrive (so memory
//! stays bounded whatever the message size) and spills sealed chunks to an unlinked spool
//! file beyond a small threshold. The session then hands its drafts to
//! [`service::Gateway::commit`]; the store's writer thread batches every commit waiting at
//! that moment into one redb write transaction and one durable fsync, and only then returns
//! the [`store::Durable`] proof the session needs before it may acknowledge the message.
#![forbid(unsafe_code)]

mod allocator;
pub mod api;
pub mod backup;
pub mod check;
pub mod cli;
pub mod config;
pub mod console;
pub mod console_listener;
pub mod crypto;
pub mod exec;
pub mod fs;
pub mod hardening;
pub mod host_memory;
pub mod logging;
pub mod mailbox;
pub mod metrics;
pub mod metrics_endpoint;
pub mod net;
pub mod pop3;
pub mod proxy;
pub mod random;
pub mod server;
pub mod service;
pub mod settings;
pub mod smtp;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod wire;

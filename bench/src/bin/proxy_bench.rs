//! SMTP proxy throughput: 1 MiB messages sent over SMTPS with AUTH PLAIN, either straight
//! to a real upstream (Debian's Postfix from `upstream-test-util`, implicit TLS, SASL via
//! Dovecot) or through the gateway's proxy (the client logs in as
//! `user%upstream%mailbox`; the gateway relays to the same Postfix over implicit TLS and
//! stores an encrypted, fsynced copy of every message). Same client, same upstream, runs
//! interleaved; the median of the runs per cell, and the ratio proxy/direct. The gateway
//! runs as a child process, as in the other runners, so it does not share the load
//! generator's runtime. Beside the rates, where a message's time goes on each side: the
//! envelope (MAIL to the `354`) and the end of data (the message written to its `250`).
//! A third side, run in turn with those two, goes through a bare TLS relay
//! ([`bench::tls_relay`]): the least any proxy that keeps both legs encrypted costs here, so
//! the report can say how much of the proxy's loss is the gateway's own work.
//! Then the same at one session with the provider a round trip away
//! ([`bench::delay::DelayLink`] in front of Postfix for both sides), with a client that sends
//! one command at a time and one that pipelines. Last the POP3 proxy: one client retrieving
//! and deleting each message from Dovecot, direct or through the gateway, on loopback and
//! with the provider away.
//!
//! `cargo run --release -p bench --bin proxy_bench [-- --runs 3 --messages 200]`
//!
//! `--quick`: a smoke run (64 KiB, 4 messages, 1 and 2 sessions, one run) that fails if a
//! proxied message has no stored copy. The figures also go to `proxy.json` beside the
//! report ([`bench::results`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bench::delay::DelayLink;
use bench::gateway_proc::{bench_config, GatewayProcess};
use bench::load::{self, LoadConfig, LoadReport, TlsTarget};
use bench::pop3_load::{self, Account, DrainConfig, Verify};
use bench::results::{Better, Results};
use bench::tls_relay::{Target, TlsRelay};
use bench::util::{
    cpu_seconds, filesystem_of, human, machine_busy_seconds, prepare_run, write_report, KIB, MIB,
};
use clap::Parser;
use upstream_test_util::Provider;

#[derive(Debug, Parser)]
#[command(about = "SMTP proxy throughput against a direct connection to the same upstream")]
struct Args {
    /// Messages per run and session count.
    #[arg(long, default_value_t = 200)]
    messages: u64,
    /// Runs per cell (interleaved direct/proxy); the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Concurrent session counts.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    sessions: Vec<usize>,
    /// Message size in bytes.
    #[arg(long, default_value_t = MIB)]
    size: usize,
    /// Report file (default: `<target dir>/bench-reports/proxy.md`); the JSON results go
    /// beside it (`.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also runs one session with the provider this many milliseconds away (round trip),
    /// with each kind of client; 0 leaves that out.
    #[arg(long, default_value_t = 20)]
    upstream_rtt_ms: u64,
    /// Messages per run with the provider away.
    #[arg(long, default_value_t = 50)]
    far_messages: u64,
    /// Messages a POP3 client retrieves per run, direct from Dovecot and through the
    /// gateway's POP3 proxy (on loopback, and with the provider away); 0 leaves that out.
    #[arg(long, default_value_t = 50)]
    pop3_messages: u64,
    /// Smoke run: small size and counts (overrides the options above), strict checks.
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    if let Some(child) = bench::gateway_proc::child_if_asked() {
        return child;
    }
    if let Some(child) = bench::tls_relay::child_if_asked() {
        return child;
    }
    let mut args = Args::parse();
    if args.quick {
        args.messages = 4;
        args.runs = 1;
        args.sessions = vec![1, 2];
        args.size = 64 * KIB;
        args.far_messages = 4;
        args.pop3_messages = 4;
    }
    let mut results = Results::new("proxy", args.quick);
    let (scratch, out) = prepare_run("proxy", args.out.clone())?;
    let provider = Provider::start().context("start Postfix and Dovecot")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let data_dir = scratch.join("gateway-data");
    let mut config = bench_config(&data_dir);
    config.proxy.ca_files = vec![provider.ca_file().to_owned()];
    config.proxy.system_roots = false;
    // The provider runs on loopback, on ports of its own.
    config.proxy.allow_private_networks = true;
    config.proxy.allowed_ports.clear();
    // The POP3 proxy's clients come in on 995.
    config.listen.pop3s.enabled = args.pop3_messages > 0;
    let gateway = GatewayProcess::start_with(&config)?;
    // The mailbox's address is `<mailbox id>@<email domain>`.
    let mailbox = gateway
        .mailbox
        .split_once('@')
        .map(|(id, _)| id.to_owned())
        .ok_or_else(|| anyhow!("odd mailbox address {:?}", gateway.mailbox))?;

    let (user, password) = provider.user(0);
    let direct = |sessions| LoadConfig {
        addr: provider.smtps_addr(),
        tls: Some(TlsTarget {
            ca_file: provider.ca_file().to_owned(),
            server_name: "localhost".into(),
        }),
        sessions,
        messages: Some(args.messages),
        duration: None,
        size: args.size,
        from: user.to_owned(),
        to: "sink@example.org".into(),
        pipelining: false,
        auth: Some((user.to_owned(), password.to_owned())),
        rate_bps: None,
    };
    // The same load through the gateway, which relays to `upstream`.
    let proxied = |direct: LoadConfig, upstream: SocketAddr| LoadConfig {
        addr: gateway.smtps,
        tls: Some(TlsTarget {
            ca_file: gateway.ca_file.clone(),
            server_name: config.gateway.host_name.clone(),
        }),
        auth: Some((format!("{user}%{upstream}%{mailbox}"), password.to_owned())),
        ..direct
    };

    let mut report = String::new();
    writeln!(
        report,
        "# SMTP proxy vs direct to the same upstream\n\n\
         Upstream: Postfix (SMTPS, SASL via Dovecot) from upstream-test-util on 127.0.0.1.\n\
         Client: bench's load generator, SMTPS + AUTH PLAIN, {} byte messages, {} per run, \
         median of {} interleaved runs. Gateway data on {}. The gateway runs as a child \
         process. Envelope: MAIL FROM sent to the 354 for DATA; end of data: the message \
         written to its 250 (a proxied message's copy is durable before its final dot goes \
         upstream); medians of the runs' medians. Machine CPU: the busy time of every process \
         and the kernel during a run, per message (client, Postfix, Dovecot and, proxied, the \
         gateway); where the machine is saturated, proxy/direct follows its inverse ratio. \
         Of it, the gateway process's own CPU per proxied message.\n",
        args.size,
        args.messages,
        args.runs,
        filesystem_of(&data_dir)
    )?;
    writeln!(
        report,
        "| sessions | direct msg/s (MB/s) | proxy msg/s (MB/s) | proxy/direct | \
         envelope ms, direct / proxy | end of data ms, direct / proxy | \
         machine CPU ms/msg, direct / proxy | gateway CPU ms/msg |"
    )?;
    writeln!(report, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    // Before any run, with the disk's queue drained: the least such a write costs here.
    let durable_write = args
        .sessions
        .contains(&1)
        .then(|| bench::disk::durable_write_median(&data_dir, args.size, FLOOR_WRITES))
        .transpose()
        .context("time a durable write in the gateway's data directory")?;
    let mut proxied_messages = 0u64;
    let mut one_session_rates = None;
    let bench = Interleaved {
        runtime: &runtime,
        gateway_pid: gateway.pid(),
        runs: args.runs,
    };
    let relay = TlsRelay::start(
        &scratch.join("tls-relay"),
        &Target {
            addr: provider.smtps_addr(),
            ca_file: provider.ca_file(),
            server_name: "localhost",
        },
    )?;
    let relayed = |direct: LoadConfig| LoadConfig {
        addr: relay.addr(),
        tls: Some(relay.tls_target()),
        ..direct
    };
    let mut relay_rows = Vec::new();
    for &sessions in &args.sessions {
        let [d, r, p] = bench.sides(
            &format!("sessions {sessions}"),
            &[
                ("direct", &direct(sessions), None),
                ("relay", &relayed(direct(sessions)), Some(relay.pid())),
                (
                    "proxy",
                    &proxied(direct(sessions), provider.smtps_addr()),
                    Some(gateway.pid()),
                ),
            ],
        )?;
        proxied_messages += args.messages * args.runs as u64;
        if sessions == 1 {
            one_session_rates = Some((d.rate, r.rate));
        }
        let mb = |rate: f64| rate * args.size as f64 / 1e6;
        writeln!(
            report,
            "| {sessions} | {:.1} ({:.0}) | {:.1} ({:.0}) | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} \
             | {:.2} / {:.2} | {:.2} |",
            d.rate,
            mb(d.rate),
            p.rate,
            mb(p.rate),
            p.rate / d.rate,
            d.envelope,
            p.envelope,
            d.end_of_data,
            p.end_of_data,
            d.cpu,
            p.cpu,
            p.middle_cpu,
        )?;
        let (size, count) = (human(args.size), format!("{sessions} sessions"));
        add_timing_cells(&mut results, &[&size, &count], &d, &p);
        results.add(
            &[&size, &count],
            "machine CPU ms/msg",
            Better::Lower,
            p.cpu,
            Some(("direct", d.cpu)),
        );
        results.add(
            &[&size, &count],
            "gateway CPU ms/msg",
            Better::Lower,
            p.middle_cpu,
            None,
        );
        relay_rows.push((sessions, d, r, p));
    }
    relay_table(&mut report, &mut results, args.size, &relay_rows)?;
    drop(relay);
    if let (Some((direct, relay)), Some(write)) = (one_session_rates, durable_write) {
        floor(&mut report, &mut results, write, args.size, direct, relay)?;
    }
    if let Some(link) = delay_link(&runtime, provider.smtps_addr(), args.upstream_rtt_ms)? {
        let rtt = link.rtt();
        let far = Far {
            link: &link,
            size: args.size,
            messages: args.far_messages,
        };
        for (client, pipelining) in FAR_CLIENTS {
            let direct = LoadConfig {
                addr: link.addr(),
                messages: Some(far.messages),
                pipelining,
                ..direct(1)
            };
            let proxied = proxied(direct.clone(), link.addr());
            let cell = bench.cell(&format!("{rtt:?} away, {client}"), &direct, &proxied)?;
            far.row(&mut report, &mut results, client, cell)?;
            proxied_messages += far.messages * args.runs as u64;
        }
    }
    if args.pop3_messages > 0 {
        let pop3 = Pop3 {
            runtime: &runtime,
            provider: &provider,
            proxy: gateway
                .service("pop3s")
                .context("the gateway has no POP3S listener")?,
            gateway_tls: TlsTarget {
                ca_file: gateway.ca_file.clone(),
                server_name: config.gateway.host_name.clone(),
            },
            mailbox: &mailbox,
            message: load::build_message(args.size, user, "bob@example.org"),
            messages: args.pop3_messages,
            runs: args.runs,
        };
        let link = delay_link(&runtime, provider.pop3s_addr(), args.upstream_rtt_ms)?;
        proxied_messages += pop3.section(&mut report, &mut results, link.as_ref())?;
    }
    let copies = gateway.stop()?;
    writeln!(
        report,
        "\n{copies} encrypted copies stored for {proxied_messages} proxied messages."
    )?;
    drop(provider);
    print!("{report}");
    write_report(&out, &report)?;
    let json = results.write_beside(&out)?;
    eprintln!("report written to {} and {}", out.display(), json.display());
    if args.quick && copies != proxied_messages {
        anyhow::bail!("{copies} copies stored for {proxied_messages} proxied messages");
    }
    Ok(())
}

/// The proxy/direct ratio the issue asks for.
const TARGET: f64 = 0.9;

/// The table of the bare TLS relay ([`TlsRelay`]) beside direct and the gateway's proxy:
/// one row per session count, `(sessions, direct, relay, proxy)`.
fn relay_table(
    report: &mut String,
    results: &mut Results,
    size: usize,
    rows: &[(usize, Figures, Figures, Figures)],
) -> anyhow::Result<()> {
    writeln!(
        report,
        "\n## The least a TLS proxy costs here\n\n\
         A bare relay (`bench::tls_relay`, its own process) ends the client's TLS, opens its \
         own to the same Postfix and passes the bytes both ways (64 KiB buffers): the \
         gateway's TLS server configuration, and nothing else (no SMTP, no archived copy, no \
         store). The same client and messages, run in turn with the two sides of the table \
         above. What it loses against direct, any proxy that keeps both legs encrypted loses \
         on this machine; the rest of the gateway's loss is its own work.\n\n\
         | sessions | direct msg/s | relay msg/s | relay/direct | gateway proxy/direct | \
         envelope ms, direct / relay / proxy | end of data ms, direct / relay / proxy | \
         machine CPU ms/msg, direct / relay / proxy | relay CPU ms/msg | gateway CPU ms/msg | \
         room for {TARGET}, ms/msg | the proxy beyond the relay, ms/msg |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for (sessions, d, r, p) in rows {
        let room = time_room_ms(d.rate, r.rate);
        writeln!(
            report,
            "| {sessions} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} / {:.2} / {:.2} \
             | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.2} | {:.2} | {room:.2} | {:.2} |",
            d.rate,
            r.rate,
            r.rate / d.rate,
            p.rate / d.rate,
            d.envelope,
            r.envelope,
            p.envelope,
            d.end_of_data,
            r.end_of_data,
            p.end_of_data,
            d.cpu,
            r.cpu,
            p.cpu,
            r.middle_cpu,
            p.middle_cpu,
            time_beyond_ms(p.rate, r.rate),
        )?;
        let (size, count) = (human(size), format!("{sessions} sessions"));
        let ids = [size.as_str(), count.as_str(), "bare TLS relay"];
        results.add(
            &ids,
            "relay msg/s",
            Better::Higher,
            r.rate,
            Some(("direct", d.rate)),
        );
        results.add(&ids, "relay CPU ms/msg", Better::Lower, r.middle_cpu, None);
        results.add(
            &ids,
            "envelope ms",
            Better::Lower,
            r.envelope,
            Some(("direct", d.envelope)),
        );
        results.add(
            &ids,
            "end of data ms",
            Better::Lower,
            r.end_of_data,
            Some(("direct", d.end_of_data)),
        );
    }
    writeln!(
        report,
        "\nRoom: per message, the time a proxy may take beyond the bare relay's and still \
         reach {TARGET} of direct (1 / ({TARGET} × direct's rate) − 1 / the relay's rate; \
         negative: none). Beside it, the time the gateway's proxy takes beyond the relay's: \
         its copy stored durably before the final dot goes upstream, sealed, and the SMTP \
         relayed command by command."
    )?;
    Ok(())
}

/// Per message, the milliseconds a proxy may take beyond a side at `base_rate` (messages a
/// second) and still reach [`TARGET`] of `direct_rate`; negative when there are none.
fn time_room_ms(direct_rate: f64, base_rate: f64) -> f64 {
    1e3 / (TARGET * direct_rate) - 1e3 / base_rate
}

/// Per message, the milliseconds a side at `rate` takes beyond one at `base_rate`.
fn time_beyond_ms(rate: f64, base_rate: f64) -> f64 {
    1e3 / rate - 1e3 / base_rate
}

/// How many durable writes the floor times (50 MiB at 1 MiB: a fraction of a second).
const FLOOR_WRITES: usize = 50;

/// The least the proxy adds at one session, in series: its copy's durable write (`write`,
/// measured on its own in the gateway's data directory); and the ceilings that puts on
/// proxy/direct, over a direct message (`direct_rate`) and over the bare relay's
/// (`relay_rate`, the least any proxy encrypting both legs takes).
fn floor(
    report: &mut String,
    results: &mut Results,
    write: Duration,
    size: usize,
    direct_rate: f64,
    relay_rate: f64,
) -> anyhow::Result<()> {
    let direct = Duration::from_secs_f64(1.0 / direct_rate);
    let relayed = Duration::from_secs_f64(1.0 / relay_rate);
    let ceiling = bench::disk::serial_ceiling(direct, write);
    let any_proxy = bench::disk::ceiling_over(direct, relayed, write);
    writeln!(
        report,
        "\nAt one session the proxy has a ceiling below 1: a proxied message's copy is durable \
         before its final dot goes upstream (so a copy that fails never lets the provider \
         deliver), so the message takes at least a direct one ({:.2} ms here) plus one durable \
         write of its size into new space ({:.2} ms on this disk, median of {FLOOR_WRITES} \
         before the runs, after a sync, with nothing else running). That leaves the proxy at \
         most {ceiling:.2} of direct at one session, before any of its other work (relaying \
         each command, sealing, the store's own work in the commit). Over the bare relay's \
         message ({:.2} ms) instead, the least any proxy that encrypts both legs takes here, \
         the same write leaves at most {any_proxy:.2} of direct.",
        direct.as_secs_f64() * 1e3,
        write.as_secs_f64() * 1e3,
        relayed.as_secs_f64() * 1e3,
    )?;
    let (size, count) = (human(size), "1 sessions".to_owned());
    let write_ms = write.as_secs_f64() * 1e3;
    for (metric, value, better) in [
        ("durable write ms", write_ms, Better::Lower),
        ("ceiling proxy/direct", ceiling, Better::Higher),
        ("ceiling over the bare relay", any_proxy, Better::Higher),
    ] {
        results.add(&[&size, &count], metric, better, value, None);
    }
    Ok(())
}

/// A [`DelayLink`] to `target` with a round trip of `rtt_ms`; none for 0.
fn delay_link(
    runtime: &tokio::runtime::Runtime,
    target: SocketAddr,
    rtt_ms: u64,
) -> anyhow::Result<Option<DelayLink>> {
    if rtt_ms == 0 {
        return Ok(None);
    }
    let rtt = Duration::from_millis(rtt_ms);
    let link = runtime.block_on(DelayLink::start(target, rtt));
    Ok(Some(link.context("start the delay link")?))
}

/// The clients run with the provider away: one that sends one command at a time, and one
/// that sends MAIL, RCPT and DATA together (when PIPELINING is advertised).
const FAR_CLIENTS: [(&str, bool); 2] = [("one command at a time", false), ("pipelining", true)];

/// The section with the provider behind a [`DelayLink`], for both sides; the gateway stays
/// next to the client, as in an office.
struct Far<'a> {
    link: &'a DelayLink,
    size: usize,
    messages: u64,
}

impl Far<'_> {
    fn row(
        &self,
        report: &mut String,
        results: &mut Results,
        client: &str,
        (d, p): (Figures, Figures),
    ) -> anyhow::Result<()> {
        let rtt_ms = self.link.rtt().as_millis();
        if client == FAR_CLIENTS[0].0 {
            writeln!(
                report,
                "\n## The provider {rtt_ms} ms away\n\n\
                 A relay in front of Postfix holds every byte {} ms in each direction \
                 (`bench::delay`), for both sides; the gateway stays next to the client, as in \
                 an office. One session, {} messages a run, the same message size and runs as \
                 above.\n\n\
                 | client | direct msg/s | proxy msg/s | proxy/direct | \
                 envelope ms, direct / proxy | end of data ms, direct / proxy |\n\
                 |---|---:|---:|---:|---:|---:|",
                rtt_ms as f64 / 2.0,
                self.messages,
            )?;
        }
        writeln!(
            report,
            "| {client} | {:.1} | {:.1} | {:.2} | {:.1} / {:.1} | {:.1} / {:.1} |",
            d.rate,
            p.rate,
            p.rate / d.rate,
            d.envelope,
            p.envelope,
            d.end_of_data,
            p.end_of_data,
        )?;
        let (size, away) = (human(self.size), format!("provider {rtt_ms} ms away"));
        add_timing_cells(results, &[&size, "1 sessions", &away, client], &d, &p);
        Ok(())
    }
}

/// The POP3 side: one client retrieving each message (RETR, then DELE) from Dovecot over
/// POP3S, direct or through the gateway's POP3 proxy, which stores a copy of each before the
/// client gets the message's end.
struct Pop3<'a> {
    runtime: &'a tokio::runtime::Runtime,
    provider: &'a Provider,
    /// The gateway's POP3S listener.
    proxy: SocketAddr,
    gateway_tls: TlsTarget,
    mailbox: &'a str,
    message: Vec<u8>,
    messages: u64,
    runs: usize,
}

impl Pop3<'_> {
    /// The table: on loopback, and through `link` when given. Returns how many messages went
    /// through the proxy.
    fn section(
        &self,
        report: &mut String,
        results: &mut Results,
        link: Option<&DelayLink>,
    ) -> anyhow::Result<u64> {
        writeln!(
            report,
            "\n## POP3: retrieving through the proxy\n\n\
             Dovecot (POP3S, from upstream-test-util) as the provider; one client logs in with \
             USER/PASS and retrieves {} messages of {} bytes a run (RETR, then DELE), direct or \
             through the gateway's POP3 proxy on 995, which stores each message's copy durably \
             before the client gets its end. The same runs as above, interleaved; medians.\n\n\
             | provider | direct msg/s | proxy msg/s | proxy/direct |\n|---|---:|---:|---:|",
            self.messages,
            self.message.len(),
        )?;
        let upstreams = std::iter::once(("on loopback".to_owned(), self.provider.pop3s_addr()))
            .chain(link.map(|link| {
                let away = format!("{} ms away", link.rtt().as_millis());
                (away, link.addr())
            }));
        let mut proxied = 0;
        for (where_, upstream) in upstreams {
            let (mut direct, mut proxy) = (Vec::new(), Vec::new());
            for _ in 0..self.runs {
                direct.push(self.drain(upstream, false)?);
                proxy.push(self.drain(upstream, true)?);
                proxied += self.messages;
            }
            let (d, p) = (median(&mut direct), median(&mut proxy));
            writeln!(report, "| {where_} | {d:.1} | {p:.1} | {:.2} |", p / d)?;
            results.add(
                &[&human(self.message.len()), "1 sessions", "pop3", &where_],
                "proxy msg/s",
                Better::Higher,
                p,
                Some(("direct", d)),
            );
        }
        Ok(proxied)
    }

    /// Fills the maildrop, then drains it with one client: direct from `upstream`, or through
    /// the proxy to it. The rate in messages per second.
    fn drain(&self, upstream: SocketAddr, proxied: bool) -> anyhow::Result<f64> {
        for _ in 0..self.messages {
            self.provider.put_message(0, &self.message)?;
        }
        let (user, password) = self.provider.user(0);
        let (addr, tls, user) = if proxied {
            let login = format!("{user}%{upstream}%{}", self.mailbox);
            (self.proxy, self.gateway_tls.clone(), login)
        } else {
            let tls = TlsTarget {
                ca_file: self.provider.ca_file().to_owned(),
                server_name: "localhost".into(),
            };
            (upstream, tls, user.to_owned())
        };
        let report = self.runtime.block_on(pop3_load::drain(DrainConfig {
            addr,
            tls: Some(tls),
            accounts: vec![Account {
                user,
                password: password.to_owned(),
                expect: Verify::Length(self.message.len() as u64),
            }],
            delete: true,
            timeout: Duration::from_secs(600),
        }))?;
        if !report.is_complete() || report.messages != self.messages {
            let side = if proxied { "proxy" } else { "direct" };
            anyhow::bail!("POP3 {side}: {}", report.summary());
        }
        Ok(report.messages_per_sec())
    }
}

/// The cells every table has: the rate, envelope and end of data, proxy against direct.
fn add_timing_cells(results: &mut Results, ids: &[&str], d: &Figures, p: &Figures) {
    for (metric, better, proxy, direct) in [
        ("proxy msg/s", Better::Higher, p.rate, d.rate),
        ("envelope ms", Better::Lower, p.envelope, d.envelope),
        (
            "end of data ms",
            Better::Lower,
            p.end_of_data,
            d.end_of_data,
        ),
    ] {
        results.add(ids, metric, better, proxy, Some(("direct", direct)));
    }
}

/// Runs a cell's sides in turn, `runs` times each.
struct Interleaved<'a> {
    runtime: &'a tokio::runtime::Runtime,
    gateway_pid: u32,
    runs: usize,
}

/// One side of a cell: its name, its load, and the process in the middle whose CPU it
/// reports (none for direct).
type Side<'a> = (&'a str, &'a LoadConfig, Option<u32>);

impl Interleaved<'_> {
    /// The medians of each side's runs (direct, then proxied); fails when a run loses a
    /// message.
    fn cell(
        &self,
        name: &str,
        direct: &LoadConfig,
        proxied: &LoadConfig,
    ) -> anyhow::Result<(Figures, Figures)> {
        let sides = [
            ("direct", direct, None),
            ("proxy", proxied, Some(self.gateway_pid)),
        ];
        let [d, p] = self.sides(name, &sides)?;
        Ok((d, p))
    }

    /// The medians of each side's runs, in the order given; the sides take turns within
    /// each run, a different one first each run.
    fn sides<const N: usize>(
        &self,
        name: &str,
        sides: &[Side<'_>; N],
    ) -> anyhow::Result<[Figures; N]> {
        let mut runs: [Runs; N] = std::array::from_fn(|_| Runs::default());
        for run in 0..self.runs {
            // Each run starts with the next side: what one side leaves the provider to do
            // (its deliveries) falls on each of the others in turn.
            let mut rates = [0.0; N];
            for i in (0..N).map(|i| (i + run) % N) {
                let (side, config, middle) = sides[i];
                let (report, busy) = self.run(config, side, middle)?;
                rates[i] = report.messages_per_sec();
                runs[i].add(&report, busy);
            }
            let mut line = format!("{name} run {run}:");
            for ((side, _, _), rate) in sides.iter().zip(rates) {
                write!(line, " {side} {rate:.1} msg/s")?;
            }
            eprintln!("{line}");
        }
        Ok(runs.map(Runs::medians))
    }

    fn run(
        &self,
        config: &LoadConfig,
        side: &str,
        middle: Option<u32>,
    ) -> anyhow::Result<(LoadReport, Busy)> {
        let (report, busy) = timed(middle, || self.runtime.block_on(load::run(config.clone())))?;
        check(&report, config.messages.unwrap_or_default(), side)?;
        Ok((report, busy))
    }
}

/// CPU seconds a run took.
struct Busy {
    /// The whole machine's.
    machine: f64,
    /// The process's in the middle (the gateway or the relay), if any.
    middle: f64,
}

/// A run, and the CPU it took: the machine's and that of the process `middle`.
fn timed(
    middle: Option<u32>,
    run: impl FnOnce() -> anyhow::Result<LoadReport>,
) -> anyhow::Result<(LoadReport, Busy)> {
    let cpu = || middle.map_or(0.0, cpu_seconds);
    let (machine, before) = (machine_busy_seconds(), cpu());
    let report = run()?;
    let busy = Busy {
        machine: machine_busy_seconds() - machine,
        middle: cpu() - before,
    };
    Ok((report, busy))
}

/// One side's runs of a cell: each run's rate, its median envelope and end of data in
/// milliseconds ([`LoadReport::envelope_median`]), and the machine's CPU per message.
#[derive(Default)]
struct Runs {
    rates: Vec<f64>,
    envelopes: Vec<f64>,
    ends_of_data: Vec<f64>,
    cpu_per_message: Vec<f64>,
    middle_cpu_per_message: Vec<f64>,
}

/// The median of each of a side's figures over its runs.
struct Figures {
    rate: f64,
    envelope: f64,
    end_of_data: f64,
    /// Milliseconds of the whole machine's busy CPU per message.
    cpu: f64,
    /// Milliseconds of the middle process's CPU per message (the gateway's or the relay's).
    middle_cpu: f64,
}

impl Runs {
    fn add(&mut self, run: &LoadReport, busy: Busy) {
        let messages = run.accepted.max(1) as f64;
        self.cpu_per_message.push(busy.machine * 1e3 / messages);
        self.middle_cpu_per_message
            .push(busy.middle * 1e3 / messages);
        self.rates.push(run.messages_per_sec());
        self.envelopes
            .push(run.envelope_median().as_secs_f64() * 1e3);
        self.ends_of_data
            .push(run.end_of_data_median().as_secs_f64() * 1e3);
    }

    fn medians(mut self) -> Figures {
        Figures {
            rate: median(&mut self.rates),
            envelope: median(&mut self.envelopes),
            end_of_data: median(&mut self.ends_of_data),
            cpu: median(&mut self.cpu_per_message),
            middle_cpu: median(&mut self.middle_cpu_per_message),
        }
    }
}

fn check(report: &LoadReport, want: u64, what: &str) -> anyhow::Result<()> {
    if report.accepted != want {
        anyhow::bail!("{what}: {}", report.summary());
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_what_target_of_direct_leaves_past_the_base() {
        // Direct 9 ms a message: 0.9 of it is 10 ms a message; a relay takes 8.
        let (direct, relay) = (1e3 / 9.0, 1e3 / 8.0);
        assert!((time_room_ms(direct, relay) - 2.0).abs() < 1e-9);
        // A relay already past 10 ms leaves none.
        assert!(time_room_ms(direct, 1e3 / 11.0) < 0.0);
        assert!((time_beyond_ms(1e3 / 12.0, relay) - 4.0).abs() < 1e-9);
    }
}

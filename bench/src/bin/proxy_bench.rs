//! SMTP proxy throughput: 1 MiB messages sent over SMTPS with AUTH PLAIN, either straight
//! to a real upstream (Debian's Postfix from `upstream-test-util`, implicit TLS, SASL via
//! Dovecot) or through the gateway's proxy (the client logs in as
//! `user%upstream%mailbox`; the gateway relays to the same Postfix over implicit TLS and
//! stores an encrypted, fsynced copy of every message). Same client, same upstream, runs
//! interleaved; the median of the runs per cell, and the ratio proxy/direct.
//!
//! `cargo run --release -p bench --bin proxy_bench [-- --runs 3 --messages 40]`
//!
//! `--quick`: a smoke run (64 KiB, 4 messages, 1 and 2 sessions, one run) that fails if a
//! proxied message has no stored copy. The figures also go to `proxy.json` beside the
//! report ([`bench::results`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use bench::gateway_proc::bench_config;
use bench::load::{self, LoadConfig, LoadReport, TlsTarget};
use bench::results::{Better, Results};
use bench::util::{filesystem_of, human, prepare_run, write_report, KIB, MIB};
use clap::Parser;
use upstream_test_util::Provider;

#[derive(Debug, Parser)]
#[command(about = "SMTP proxy throughput against a direct connection to the same upstream")]
struct Args {
    /// Messages per run and session count.
    #[arg(long, default_value_t = 40)]
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
    /// Smoke run: small size and counts (overrides the options above), strict checks.
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.messages = 4;
        args.runs = 1;
        args.sessions = vec![1, 2];
        args.size = 64 * KIB;
    }
    let mut results = Results::new("proxy", args.quick);
    let (scratch, out) = prepare_run("proxy", args.out.clone())?;
    let provider = Provider::start().context("start Postfix and Dovecot")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let data_dir = scratch.join("gateway-data");
    std::fs::create_dir_all(&data_dir)?;
    let mut config = bench_config(&data_dir);
    config.proxy.ca_files = vec![provider.ca_file().to_owned()];
    config.proxy.system_roots = false;
    // The provider runs on loopback, on ports of its own.
    config.proxy.allow_private_networks = true;
    config.proxy.allowed_ports.clear();
    let service = gateway::service::Gateway::open(&config).map_err(|e| anyhow!("{e}"))?;
    let (resolver, material) = gateway::tls::prepare(
        &gateway::tls::CertificateSourceSpec::SelfSigned,
        &data_dir,
        &config.gateway.host_name,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let gateway_ca = scratch.join("gateway-ca.pem");
    let mut pem = String::new();
    for cert in material.chain() {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let body = data_encoding::BASE64.encode(cert.as_ref());
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line)?);
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    std::fs::write(&gateway_ca, pem)?;
    let running = runtime
        .block_on(gateway::server::start(&config, service.clone(), resolver))
        .map_err(|e| anyhow!("{e}"))?;
    let gateway_smtps = running
        .address("smtps")
        .ok_or_else(|| anyhow!("no smtps listener"))?;
    let mailbox = runtime
        .block_on(service.create_mailbox("proxy-bench", ""))
        .map_err(|e| anyhow!("{e}"))?
        .info
        .id;

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
    let proxied = |sessions| LoadConfig {
        addr: gateway_smtps,
        tls: Some(TlsTarget {
            ca_file: gateway_ca.clone(),
            server_name: config.gateway.host_name.clone(),
        }),
        auth: Some((
            format!("{user}%{}%{mailbox}", provider.smtps_addr()),
            password.to_owned(),
        )),
        ..direct(sessions)
    };

    let mut report = String::new();
    writeln!(
        report,
        "# SMTP proxy vs direct to the same upstream\n\n\
         Upstream: Postfix (SMTPS, SASL via Dovecot) from upstream-test-util on 127.0.0.1.\n\
         Client: bench's load generator, SMTPS + AUTH PLAIN, {} byte messages, {} per run, \
         median of {} interleaved runs. Gateway data on {}.\n",
        args.size,
        args.messages,
        args.runs,
        filesystem_of(&data_dir)
    )?;
    writeln!(
        report,
        "| sessions | direct msg/s (MB/s) | proxy msg/s (MB/s) | proxy/direct |"
    )?;
    writeln!(report, "|---:|---:|---:|---:|")?;
    let mut sent = 0u64;
    for &sessions in &args.sessions {
        let mut direct_rates = Vec::new();
        let mut proxy_rates = Vec::new();
        for run in 0..args.runs {
            let d = runtime.block_on(load::run(direct(sessions)))?;
            check(&d, args.messages, "direct")?;
            let p = runtime.block_on(load::run(proxied(sessions)))?;
            check(&p, args.messages, "proxy")?;
            sent += 2 * args.messages;
            eprintln!(
                "sessions {sessions} run {run}: direct {:.1} msg/s, proxy {:.1} msg/s",
                d.messages_per_sec(),
                p.messages_per_sec()
            );
            direct_rates.push(d.messages_per_sec());
            proxy_rates.push(p.messages_per_sec());
        }
        let (d, p) = (median(&mut direct_rates), median(&mut proxy_rates));
        let mb = |rate: f64| rate * args.size as f64 / 1e6;
        writeln!(
            report,
            "| {sessions} | {d:.1} ({:.0}) | {p:.1} ({:.0}) | {:.2} |",
            mb(d),
            mb(p),
            p / d
        )?;
        results.add(
            &[&human(args.size), &format!("{sessions} sessions")],
            "proxy msg/s",
            Better::Higher,
            p,
            Some(("direct", d)),
        );
    }
    let copies = service
        .mailbox(&mailbox)
        .map_err(|e| anyhow!("{e}"))?
        .message_count;
    writeln!(
        report,
        "\n{copies} encrypted copies stored for {} proxied messages.",
        sent / 2
    )?;
    runtime.block_on(running.stop());
    drop(provider);
    print!("{report}");
    write_report(&out, &report)?;
    let json = results.write_beside(&out)?;
    eprintln!("report written to {} and {}", out.display(), json.display());
    if args.quick && copies != sent / 2 {
        anyhow::bail!("{copies} copies stored for {} proxied messages", sent / 2);
    }
    Ok(())
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

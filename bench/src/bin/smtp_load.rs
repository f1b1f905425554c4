//! SMTP load generator.
//!
//! ```text
//! smtp_load --addr 127.0.0.1:2525 --sessions 20 --messages 2000 --size 10240 \
//!     --from a@example.test --to archive@gateway.test [--tls-ca cert.pem --tls-name host]
//! ```
//!
//! Prints messages/s, Mbit/s and latency percentiles of the messages answered 250.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bench::load::{self, LoadConfig, TlsTarget};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "SMTP load generator: concurrent sessions, many messages per connection")]
struct Args {
    /// Server address (host:port).
    #[arg(long)]
    addr: SocketAddr,
    /// Concurrent sessions (one connection each).
    #[arg(long, short = 's', default_value_t = 1)]
    sessions: usize,
    /// Total messages, all sessions together.
    #[arg(long, short = 'm')]
    messages: Option<u64>,
    /// Stop starting messages after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Message size in bytes.
    #[arg(long, short = 'l', default_value_t = 10 * 1024)]
    size: usize,
    #[arg(long, short = 'f', default_value = "loadgen@client.bench.test")]
    from: String,
    #[arg(long, short = 't')]
    to: String,
    /// Implicit TLS, trusting the certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Name to verify in the server certificate.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Send MAIL, RCPT and DATA one at a time even if the server offers PIPELINING.
    #[arg(long)]
    no_pipelining: bool,
    /// Offer this many megabits of message per second (open loop: latency counts from each
    /// message's scheduled time) instead of sending as fast as the sessions can.
    #[arg(long)]
    rate_mbit: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = LoadConfig {
        addr: args.addr,
        tls: args.tls_ca.map(|ca_file| TlsTarget {
            ca_file,
            server_name: args.tls_name,
        }),
        sessions: args.sessions,
        messages: args.messages,
        duration: args.seconds.map(Duration::from_secs_f64),
        size: args.size,
        from: args.from,
        to: args.to,
        pipelining: !args.no_pipelining,
        auth: None,
        rate_bps: args.rate_mbit.map(|m| m * 1e6),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(load::run(config))?;
    println!("{}", report.summary());
    if report.accepted == 0 {
        anyhow::bail!("no message was accepted");
    }
    Ok(())
}

//! SMTP intake on each store backend, side by side in one run (`smtp_bench --store
//! postgres`): the embedded redb file, one gateway node on PostgreSQL, and two nodes sharing
//! that database with the sessions split between them.
//!
//! The database is a throwaway cluster from Debian's `postgresql` (postgres-test-util) with
//! `fsync` and `synchronous_commit` on, on the same disk and cores as everything else, so a
//! 250 costs what it costs: the commit's WAL flushed. Each cell gets a database of its own.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use gateway::config::{Config, DatabaseTls, StoreBackend};
use postgres_test_util::{Postgres, PostgresOptions};

use crate::gateway_proc::{bench_config, GatewayProcess};
use crate::load::{self, LoadConfig, LoadReport};
use crate::util::cpu_seconds;

/// Which store a cell ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Redb,
    PostgresOneNode,
    PostgresTwoNodes,
}

impl Setup {
    pub const ALL: [Setup; 3] = [Setup::Redb, Setup::PostgresOneNode, Setup::PostgresTwoNodes];

    pub fn label(self) -> &'static str {
        match self {
            Setup::Redb => "redb (embedded)",
            Setup::PostgresOneNode => "PostgreSQL, 1 node",
            Setup::PostgresTwoNodes => "PostgreSQL, 2 nodes",
        }
    }

    fn nodes(self) -> usize {
        match self {
            Setup::PostgresTwoNodes => 2,
            _ => 1,
        }
    }
}

/// One cell's figures.
#[derive(Debug, Clone)]
pub struct Cell {
    pub setup: Setup,
    /// The sessions the cell asked for (with two nodes each takes at least one).
    pub sessions: usize,
    /// Every node's load as one.
    pub load: LoadReport,
    /// CPU seconds of the gateway node(s).
    pub gateway_cpu: f64,
    /// CPU seconds of the database server's processes (PostgreSQL only).
    pub database_cpu: Option<f64>,
}

impl Cell {
    pub fn rate(&self) -> f64 {
        self.load.messages_per_sec()
    }

    /// A latency percentile, milliseconds.
    pub fn latency_ms(&self, percentile: f64) -> f64 {
        self.load.latency(percentile).as_secs_f64() * 1e3
    }

    /// CPU seconds per 1,000 accepted messages.
    pub fn per_1000(&self, cpu: f64) -> f64 {
        cpu / self.load.accepted.max(1) as f64 * 1000.0
    }
}

/// The shared database for the PostgreSQL cells.
pub struct Database {
    pg: Postgres,
    cells: u32,
}

impl Database {
    pub fn start() -> anyhow::Result<Self> {
        let pg = Postgres::create(PostgresOptions {
            max_connections: 100,
            ..PostgresOptions::default()
        })?;
        Ok(Self { pg, cells: 0 })
    }

    /// A fresh database for the next cell: the gateway config pointing at it (password in a
    /// file under `scratch`).
    fn next(&mut self, config: &mut Config, scratch: &Path) -> anyhow::Result<()> {
        self.cells += 1;
        let name = format!("cell{}", self.cells);
        self.pg.create_database(&name)?;
        let password_file = scratch.join("db-password");
        std::fs::write(&password_file, self.pg.password())?;
        config.store.backend = StoreBackend::Postgres;
        config.store.url = format!("postgres://postgres@127.0.0.1:{}/{name}", self.pg.port());
        config.store.password_file = Some(password_file);
        config.store.tls = DatabaseTls::Off;
        Ok(())
    }

    /// CPU seconds of the server and every process it started (backends, WAL writer,
    /// checkpointer) until now.
    fn cpu_seconds(&self) -> f64 {
        let Some(postmaster) = self.postmaster() else {
            return 0.0;
        };
        test_support::process::children(postmaster)
            .into_iter()
            .chain([postmaster])
            .map(cpu_seconds)
            .sum()
    }

    fn postmaster(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.pg.data_dir().join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }
}

/// What one cell sends: `messages` of `size` bytes over `sessions` pipelined plain-SMTP
/// sessions, for at most `max_run`.
#[derive(Debug, Clone, Copy)]
pub struct Work {
    pub size: usize,
    pub sessions: usize,
    pub messages: u64,
    pub max_run: Duration,
}

/// Runs one cell (the sessions split evenly between the nodes), checking that every
/// accepted message was stored.
pub fn cell(
    runtime: &tokio::runtime::Runtime,
    database: Option<&mut Database>,
    setup: Setup,
    scratch: &Path,
    work: Work,
) -> anyhow::Result<Cell> {
    let Work {
        size,
        sessions,
        messages,
        max_run,
    } = work;
    let data_dir = |node: usize| scratch.join(format!("store-{size}-{sessions}-{node}"));
    let mut configs: Vec<Config> = (0..setup.nodes())
        .map(|n| bench_config(&data_dir(n)))
        .collect();
    let database = match (setup, database) {
        (Setup::Redb, _) => None,
        (_, Some(database)) => {
            std::fs::create_dir_all(scratch)?;
            let mut first = configs[0].clone();
            database.next(&mut first, scratch)?;
            for config in &mut configs {
                config.store = first.store.clone();
            }
            Some(&*database)
        }
        (_, None) => bail!("{} needs the database", setup.label()),
    };
    // One after the other: the first creates the mailbox, the second serves the same one,
    // with the first's retrieval key (as an administrator copies it; a node with another
    // refuses to join).
    let mut nodes = Vec::new();
    for config in &configs {
        if let Some(first) = configs.first().filter(|first| *first != config) {
            let key = gateway::service::RETRIEVAL_KEY_FILE;
            std::fs::create_dir_all(&config.gateway.data_dir)?;
            std::fs::copy(
                first.gateway.data_dir.join(key),
                config.gateway.data_dir.join(key),
            )?;
        }
        nodes.push(GatewayProcess::start_with(config)?);
    }
    let mailbox = nodes[0].mailbox.clone();
    let gateway_cpu0: f64 = nodes.iter().map(|n| cpu_seconds(n.pid())).sum();
    let database_cpu0 = database.map(Database::cpu_seconds);
    let count = nodes.len();
    let loads = nodes.iter().enumerate().map(|(i, node)| {
        // The first node takes the remainders.
        let share = |total: u64| total / count as u64 + u64::from(i == 0) * (total % count as u64);
        load::run(LoadConfig {
            addr: node.smtp,
            tls: None,
            sessions: share(sessions as u64).max(1) as usize,
            messages: Some(share(messages)),
            duration: Some(max_run),
            size,
            from: "loadgen@client.bench.test".to_owned(),
            to: mailbox.clone(),
            pipelining: true,
            auth: None,
            rate_bps: None,
        })
    });
    let load = LoadReport::combine(
        runtime
            .block_on(run_together(loads.collect()))
            .into_iter()
            .collect::<anyhow::Result<_>>()?,
    );
    let gateway_cpu = nodes.iter().map(|n| cpu_seconds(n.pid())).sum::<f64>() - gateway_cpu0;
    let database_cpu = database
        .zip(database_cpu0)
        .map(|(db, before)| db.cpu_seconds() - before);
    let accepted = load.accepted;
    let mut stored = 0;
    for node in nodes {
        // Every node reports the shared mailbox's count: the last one is the total.
        stored = node.stop()?;
    }
    if stored != accepted {
        bail!(
            "{}: {accepted} messages accepted but {stored} stored",
            setup.label()
        );
    }
    for n in 0..count {
        let _ = std::fs::remove_dir_all(data_dir(n));
    }
    let cell = Cell {
        setup,
        sessions,
        load,
        gateway_cpu,
        database_cpu,
    };
    eprintln!(
        "    {}: {accepted} messages, {:.0} msg/s",
        setup.label(),
        cell.rate()
    );
    Ok(cell)
}

/// Runs the loads together and returns their reports in order.
async fn run_together<F>(loads: Vec<F>) -> Vec<anyhow::Result<LoadReport>>
where
    F: std::future::Future<Output = anyhow::Result<LoadReport>> + Send + 'static,
{
    let handles: Vec<_> = loads.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.map_err(anyhow::Error::from).and_then(|r| r));
    }
    out
}

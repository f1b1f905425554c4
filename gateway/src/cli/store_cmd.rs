//! `gateway store copy` (every row from one store into a new one, redb or PostgreSQL, then
//! checked) and `gateway store migrate` (the configured store's tables created or
//! upgraded).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use crate::config::{Config, DatabaseTls, StoreBackend, StoreSection};
use crate::service::{postgres_target, store_path};
use crate::store::postgres::{self, Connector};
use crate::store::transfer::{self, RedbSink, RedbSource, Sink, Source, Summary};
use crate::store::{PostgresTarget, Store, StoreError, StoreOptions};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every row of a store into a new one (redb file or PostgreSQL database, either
    /// way), then check the copy row for row. Messages stay sealed.
    Copy(CopyArgs),
    /// Create or upgrade the configured store's tables (PostgreSQL: the schema; redb: the
    /// file, which every open upgrades).
    Migrate,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The store to copy: a redb file (not in use by a running gateway) or a PostgreSQL URL
    /// (`postgres://user@host:port/database`, without a password).
    #[arg(long, value_name = "FILE|URL")]
    pub from: String,
    /// Where to copy it: a new redb file, or a PostgreSQL database whose gateway tables are
    /// empty or missing (they are created).
    #[arg(long, value_name = "FILE|URL")]
    pub to: String,
    /// A file holding the PostgreSQL password (first line), for both sides unless
    /// --from-password-file or --to-password-file gives a side its own; else `PGPASSWORD`.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// The password file of the --from database alone (two servers, two passwords).
    #[arg(long, value_name = "PATH")]
    pub from_password_file: Option<PathBuf>,
    /// The password file of the --to database alone.
    #[arg(long, value_name = "PATH")]
    pub to_password_file: Option<PathBuf>,
    /// TLS to PostgreSQL: `verify` (the server's certificate checked against the system's
    /// roots and --ca-file) or `off` (a database on this machine only).
    #[arg(long, value_enum, default_value_t = TlsArg::Verify)]
    pub tls: TlsArg,
    /// A PEM file with the CA that signed the database's certificate.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    Verify,
    Off,
}

pub fn run(command: StoreCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy(args) => copy(&args),
        StoreCommand::Migrate => migrate(config),
    }
}

/// A store named on the command line.
enum Endpoint {
    Redb(PathBuf),
    Postgres(Box<PostgresTarget>),
}

impl Endpoint {
    /// The store `--from` names.
    fn from(args: &CopyArgs) -> anyhow::Result<Self> {
        Self::parse(&args.from, args, "--from", args.from_password_file.as_ref())
    }

    /// The store `--to` names.
    fn to(args: &CopyArgs) -> anyhow::Result<Self> {
        Self::parse(&args.to, args, "--to", args.to_password_file.as_ref())
    }

    /// `own_password_file`: the side's own (`--from-password-file`...), which wins over
    /// `--password-file`.
    fn parse(
        text: &str,
        args: &CopyArgs,
        flag: &str,
        own_password_file: Option<&PathBuf>,
    ) -> anyhow::Result<Self> {
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            // A key=value connection string would otherwise become a file of that name.
            if text.contains("dbname=") || text.contains("host=") {
                bail!("{flag}: name a database as a postgres:// URL");
            }
            if own_password_file.is_some() {
                bail!(
                    "{flag}-password-file is given, but {flag} names a redb file, not a database"
                );
            }
            return Ok(Endpoint::Redb(PathBuf::from(text)));
        }
        let password_file = own_password_file.or(args.password_file.as_ref());
        // The parser's message never repeats the text (it may hold a password).
        let parsed: tokio_postgres::Config = text
            .parse()
            .map_err(|e| anyhow::anyhow!("{flag} is not a PostgreSQL URL: {e}"))?;
        if parsed.get_password().is_some() {
            bail!(
                "{flag} holds a password; command lines are visible to every user of the \
                 machine: give it with --password-file or PGPASSWORD instead"
            );
        }
        let section = StoreSection {
            backend: StoreBackend::Postgres,
            url: text.to_owned(),
            password_file: password_file.cloned(),
            pool_size: 1,
            tls: match args.tls {
                TlsArg::Verify => DatabaseTls::Verify,
                TlsArg::Off => DatabaseTls::Off,
            },
            ca_file: args.ca_file.clone(),
            migrate: true,
        };
        crate::config::validate_store(&section).with_context(|| flag.to_string())?;
        let mut target = postgres_target(&section)?;
        if password_file.is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                target.config.password(password);
            }
        }
        Ok(Endpoint::Postgres(Box::new(target)))
    }

    fn describe(&self) -> String {
        match self {
            Endpoint::Redb(path) => path.display().to_string(),
            Endpoint::Postgres(target) => target.label.clone(),
        }
    }
}

/// The connections to a database (the runtime thread that drives them goes with the last
/// reference).
fn connector(target: &PostgresTarget) -> anyhow::Result<Arc<Connector>> {
    Ok(Arc::new(Connector::new(
        target.config.clone(),
        target.options.clone(),
    )?))
}

/// Opens a store to read, without writing to it.
fn open_source(endpoint: &Endpoint) -> anyhow::Result<Box<dyn Source>> {
    match endpoint {
        Endpoint::Redb(path) => {
            let source = RedbSource::open_file(path).map_err(|e| match e {
                StoreError::Locked => anyhow::Error::new(e).context(format!(
                    "{} is in use by a running gateway: stop it first (or copy a backup of it, \
                     `gateway backup`, which a running gateway writes)",
                    path.display()
                )),
                other => {
                    anyhow::Error::new(other).context(format!("cannot read {}", path.display()))
                }
            })?;
            Ok(Box::new(source))
        }
        Endpoint::Postgres(target) => {
            let source = connector(target)?
                .source()
                .with_context(|| format!("cannot read {}", target.label))?;
            Ok(Box::new(source))
        }
    }
}

fn copy(args: &CopyArgs) -> anyhow::Result<()> {
    let from = Endpoint::from(args)?;
    let to = Endpoint::to(args)?;
    if from.describe() == to.describe() {
        bail!("--from and --to name the same store");
    }
    let mut source = open_source(&from)?;
    let summary = match &to {
        Endpoint::Redb(path) => {
            if path.exists() {
                bail!(
                    "{} exists; a copy goes to a new file: remove or rename the old one",
                    path.display()
                );
            }
            let mut sink = RedbSink::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let copied = copy_rows(&mut *source, &mut sink);
            drop(sink);
            if copied.is_err() {
                let _ = std::fs::remove_file(path);
            }
            copied?
        }
        Endpoint::Postgres(target) => {
            let mut sink = connector(target)?
                .sink()
                .with_context(|| format!("cannot copy into {}", target.label))?;
            copy_rows(&mut *source, &mut sink)?
        }
    };
    drop(source);
    eprintln!("checking the copy");
    let mut copy = open_source(&to)?;
    if let Err(mismatch) = transfer::verify(&summary, &mut *copy)? {
        bail!(
            "{mismatch}: the copy in {} is not good; clear it before trying again",
            to.describe()
        );
    }
    println!("Copied {} to {}", from.describe(), to.describe());
    print_summary(&summary);
    println!("The copy holds the same rows (counts and SHA-256 checked).");
    Ok(())
}

fn copy_rows(source: &mut dyn Source, sink: &mut dyn Sink) -> anyhow::Result<Summary> {
    let mut last = None;
    let summary = transfer::copy(source, sink, &mut |done, total| {
        let percent = done.saturating_mul(100) / total.max(1);
        if last != Some(percent) {
            last = Some(percent);
            let _ = writeln!(
                std::io::stderr(),
                "{percent}% copying rows ({done} of {total})"
            );
        }
    })?;
    Ok(summary)
}

fn print_summary(summary: &Summary) {
    for table in &summary.tables {
        println!(
            "  {:<10} {:>10} rows  sha256 {}",
            table.table.name(),
            table.rows,
            data_encoding::HEXLOWER.encode(&table.sha256)
        );
    }
    println!("  next message sequence number: {}", summary.next_seq);
}

fn migrate(config: &Config) -> anyhow::Result<()> {
    match config.store.backend {
        StoreBackend::Postgres => {
            let target = postgres_target(&config.store)?;
            // Bound: the connection lives as long as its connector.
            let connections = connector(&target)?;
            let mut client = connections
                .connect()
                .with_context(|| format!("cannot connect to {}", target.label))?;
            let before = postgres::version(&client)?;
            let after = postgres::migrate(&mut client)
                .with_context(|| format!("cannot migrate {}", target.label))?;
            let before = before.map_or("none (new database)".to_owned(), |v| v.to_string());
            println!(
                "PostgreSQL store {}: schema version {before} -> {after}",
                target.label
            );
        }
        StoreBackend::Redb => {
            let path = store_path(&config.gateway.data_dir);
            migrate_redb(&path)?;
        }
    }
    Ok(())
}

/// A redb store upgrades itself whenever it is opened.
fn migrate_redb(path: &Path) -> anyhow::Result<()> {
    match Store::open(path, &StoreOptions::default()) {
        Ok(store) => {
            drop(store);
            println!(
                "redb store {}: at schema version {} (opening it creates or upgrades it)",
                path.display(),
                crate::store::schema::SCHEMA_VERSION
            );
            Ok(())
        }
        Err(StoreError::Locked) => {
            println!(
                "redb store {}: in use by a running gateway, which upgraded it when it started",
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot open {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(from: &str, to: &str, extra: &[&str]) -> CopyArgs {
        let mut line = vec!["gateway", "store", "copy", "--from", from, "--to", to];
        line.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(line)
            .expect("parses")
            .command
        {
            crate::cli::Command::Store(StoreCommand::Copy(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    fn refused(from: &str, to: &str, extra: &[&str]) -> String {
        let args = args(from, to, extra);
        let error = Endpoint::from(&args)
            .and_then(|_| Endpoint::to(&args))
            .err()
            .expect("refused");
        format!("{error:#}")
    }

    #[test]
    fn databases_are_urls_without_passwords_and_plain_only_on_this_machine() {
        let secret = "s3cret-on-the-command-line";
        let said = refused(
            "old.redb",
            &format!("postgres://gateway:{secret}@db.example.org/gateway"),
            &[],
        );
        assert!(said.contains("--to holds a password"), "{said}");
        assert!(!said.contains(secret), "{said}");
        let said = refused("host=db.example.org dbname=gateway", "new.redb", &[]);
        assert!(said.contains("postgres:// URL"), "{said}");
        let said = refused(
            "old.redb",
            "postgres://gateway@db.example.org/gateway",
            &["--tls", "off"],
        );
        assert!(said.contains("store.tls"), "{said}");

        let args = args(
            "postgres://gateway@127.0.0.1:5433/gateway",
            "new.redb",
            &["--tls", "off"],
        );
        let from = Endpoint::from(&args).expect("loopback, plain");
        assert_eq!(from.describe(), "postgres://127.0.0.1:5433/gateway");
        assert!(matches!(
            Endpoint::to(&args),
            Ok(Endpoint::Redb(path)) if path == Path::new("new.redb")
        ));
        // A side's own password file is for a database only.
        let said = refused("old.redb", "new.redb", &["--from-password-file", "pw"]);
        assert!(said.contains("--from names a redb file"), "{said}");
    }
}

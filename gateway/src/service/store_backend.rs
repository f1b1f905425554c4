//! Opens the store the configuration names: the embedded redb file, or a PostgreSQL
//! database shared with other gateway nodes.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, DatabaseTls, StoreBackend, StoreSection};
use crate::store::postgres::PgOptions;
use crate::store::{DataDirVolume, PostgresTarget, Space, Store, StoreOptions};
use crate::tls::{client_config, UpstreamTrust};

use super::{store_path, ServiceError};

/// Opens the configured store; `data_dir` holds the redb file and the spool either way.
pub(super) fn open_store(config: &Config, data_dir: &Path) -> Result<Store, ServiceError> {
    // The reserve guards the data directory's disk: redb's file, and with any backend the
    // spool and the intake check.
    let space = Space::new(
        Arc::new(DataDirVolume::new(data_dir)),
        config.limits.disk_reserve_bytes(),
    );
    let cache_bytes = config.limits.store_cache_bytes();
    match (config.limits.store_cache_mib, crate::host_memory::current()) {
        (None, Some(limit)) => {
            tracing::info!(mib = cache_bytes >> 20, memory = %limit, "store cache from the memory the gateway may use ([limits] store_cache_mib sets it)")
        }
        _ => tracing::info!(
            mib = cache_bytes >> 20,
            "store cache ([limits] store_cache_mib)"
        ),
    }
    let options = StoreOptions {
        cache_bytes: cache_bytes as usize,
        executor: crate::exec::Executor::threads(),
        space: Some(Arc::new(space)),
    };
    match config.store.backend {
        StoreBackend::Redb => Ok(Store::open(&store_path(data_dir), &options)?),
        StoreBackend::Postgres => {
            let target = postgres_target(&config.store)?;
            tracing::info!(database = %target.label, "opening the PostgreSQL store");
            Ok(Store::open_postgres(&target, &options)?)
        }
    }
}

/// The database `[store]` names, with the password from `password_file` and TLS as asked.
pub fn postgres_target(section: &StoreSection) -> Result<PostgresTarget, ServiceError> {
    let settings = |problem: String| ServiceError::StoreSettings(problem);
    // Validation has parsed it already; its errors never repeat the text.
    let mut config: tokio_postgres::Config = section
        .url
        .parse()
        .map_err(|e| settings(format!("store.url is not a PostgreSQL URL: {e}")))?;
    if let Some(path) = &section.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            settings(format!(
                "cannot read store.password_file {}: {e}",
                path.display()
            ))
        })?;
        let password = text.lines().next().unwrap_or_default();
        if password.is_empty() {
            return Err(settings(format!(
                "store.password_file {} is empty",
                path.display()
            )));
        }
        config.password(password);
    }
    let tls = match section.tls {
        DatabaseTls::Off => None,
        DatabaseTls::Verify => Some(
            client_config(&UpstreamTrust {
                system_roots: true,
                ca_files: section.ca_file.iter().cloned().collect(),
            })
            .map_err(|e| settings(format!("TLS to the database: {e}")))?,
        ),
    };
    Ok(PostgresTarget {
        label: label(&config),
        config,
        options: PgOptions {
            tls,
            ..PgOptions::default()
        },
        read_connections: section.pool_size as usize,
        migrate: section.migrate,
    })
}

/// `postgres://host:port/database` for messages: never the user's password.
fn label(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or_default();
    format!("postgres://{host}:{port}/{database}")
}

//! PostgreSQL errors as [`StoreError`]s, by what a protocol should tell its client.

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// The server's message and SQLSTATE only: never the detail (it can quote a row's values),
/// never the connection's settings (a URL can hold a password).
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            // Closed connection, socket error, timeout, protocol error: the database is out of
            // reach for now. tokio-postgres's messages, and their causes (I/O, TLS), name the
            // failure, not the settings.
            let mut what = format!("PostgreSQL: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(inner) = cause {
                what.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            return StoreError::Io(what);
        };
        let what = format!("PostgreSQL {}: {}", db.code().code(), db.message());
        let code = db.code();
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            StoreError::Conflict(what)
        } else if *code == SqlState::DISK_FULL {
            StoreError::Full(what)
        } else {
            // Shutdown, statement timeout, too many connections, and anything unexpected:
            // the transaction is lost, the request may be retried later; never a success.
            StoreError::Io(what)
        }
    }
}

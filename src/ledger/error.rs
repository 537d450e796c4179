//! Why a ledger store (the writer, the readers, the key store that shares its
//! database) failed. The variants keep the engine's own error as their source; callers
//! turn one into text only at the edge (a log line, an API error, a CLI message).

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    /// A file of the ledger (its database, directory or spill file) could not be used.
    #[error("ledger {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    #[error("ledger file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger spill file {} line {line}: {source}", path.display())]
    Spill {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// Spilled records could not be written back into the store.
    #[error("replaying the ledger spill file: {0}")]
    Replay(#[source] Box<StoreError>),
    #[error("ledger PostgreSQL URL: {0}")]
    Url(#[source] postgres::Error),
    #[error("ledger PostgreSQL: cannot connect: {0}")]
    Connect(#[source] postgres::Error),
    /// A schema migration failed; `detail` is the server's message, when it sent one.
    #[error("ledger PostgreSQL migration {version}: {source}{detail}")]
    Migration {
        version: usize,
        detail: String,
        #[source]
        source: postgres::Error,
    },
    /// A failed connect, shared by the jobs it fails: a PostgreSQL reader reports it
    /// to every job for a moment before it tries again.
    #[error(transparent)]
    Again(Arc<StoreError>),
    /// A connection's lock was poisoned, or its thread stopped.
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// The writer's thread could not start.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Feedback kept colliding with earlier feedback on the same request.
    #[error("too much feedback on request `{request_id}` within {retries} ms")]
    FeedbackBusy { request_id: String, retries: u8 },
}

impl StoreError {
    /// Tags a failure with the file it happened on.
    pub fn in_file(self, path: impl Into<PathBuf>) -> StoreError {
        StoreError::File {
            path: path.into(),
            source: Box::new(self),
        }
    }

    /// Whether a unique constraint refused the row.
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
            }
            StoreError::Postgres(e) => {
                e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

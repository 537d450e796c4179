//! The readers' connection to the ledger's database: spend queries ([`super::query`]),
//! feedback ([`super::feedback`]) and the key store ([`crate::auth::store`]) run their
//! SQL through [`Database`], which each backend implements in its own file
//! ([`super::sqlite`], [`super::postgres`]). Statements use `$1, $2, ...` placeholders,
//! which both engines read (SQLite numbers `$N` parameters in order of first
//! appearance, so each statement names them in ascending order). Every call blocks:
//! callers run it on a blocking thread, or accept one round trip where they cannot.

use super::error::StoreResult;
use crate::config::LedgerBackend;

/// A statement parameter. Integers are 64-bit: every integer column the readers filter
/// or write is `BIGINT` in PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(Option<i64>),
    /// `DOUBLE PRECISION` in PostgreSQL.
    Real(Option<f64>),
    Text(Option<String>),
}

/// How to read a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `BIGINT` in PostgreSQL (and any SQL expression cast to it).
    Int,
    /// `INTEGER` in PostgreSQL.
    Int4,
    Real,
    /// `DOUBLE PRECISION` in PostgreSQL (SQLite's `REAL` always is).
    Double,
    /// `BOOLEAN` in PostgreSQL, 0/1 in SQLite.
    Bool,
}

/// A result value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

impl Cell {
    pub fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn real(&self) -> Option<f64> {
        match self {
            Cell::Real(f) => Some(*f),
            _ => None,
        }
    }

    pub fn boolean(&self) -> Option<bool> {
        match self {
            Cell::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<String> {
        match self {
            Cell::Text(t) => Some(t.clone()),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Cell::Null => serde_json::Value::Null,
            Cell::Int(n) => (*n).into(),
            Cell::Real(f) => (*f).into(),
            Cell::Text(t) => t.as_str().into(),
            Cell::Bool(b) => (*b).into(),
        }
    }
}

/// A connection to the ledger's database, as the readers use it. Opening one brings
/// the schema up to date, as the ledger writer does.
pub trait Database: Send + Sync {
    /// Runs statements without parameters or results.
    fn batch(&self, sql: &str) -> StoreResult<()>;

    /// Runs a statement; returns the rows it changed. A row a unique constraint
    /// refuses fails with an error whose [`super::StoreError::is_conflict`] is true.
    fn execute(&self, sql: &str, params: Vec<Param>) -> StoreResult<u64>;

    /// Runs a query and reads each row's columns as `kinds` says.
    fn query(&self, sql: &str, params: Vec<Param>, kinds: &[Kind]) -> StoreResult<Vec<Vec<Cell>>>;

    /// The records the rollups do not hold yet, as a table and a condition; `None`
    /// when the rollups commit with the records.
    fn not_rolled_up(&self) -> Option<(&'static str, &'static str)>;

    /// Tells every connection listening on `topic` (other replicas) that something
    /// changed. A backend without such a signal does nothing: its readers poll.
    fn notify(&self, _topic: &str) -> StoreResult<()> {
        Ok(())
    }

    /// Runs `tick(true)` whenever a connection notifies `topic` (and once listening
    /// holds, since a change made while connecting sent no signal), and `tick(false)`
    /// about once a second, until `tick` returns false, on a thread of its own. A
    /// backend without such a signal runs nothing.
    fn listen(&self, _topic: &str, _tick: Box<dyn FnMut(bool) -> bool + Send>) -> StoreResult<()> {
        Ok(())
    }
}

/// An open connection of any backend.
pub type Db = Box<dyn Database>;

/// Opens the configured ledger's database for reading, or `None` for an in-memory
/// ledger, which no other connection can see.
pub fn open(backend: &LedgerBackend) -> StoreResult<Option<Db>> {
    Ok(match backend {
        LedgerBackend::Sqlite(path) => Some(Box::new(super::sqlite::SqliteDb::open(path)?)),
        LedgerBackend::SqliteMemory => None,
        LedgerBackend::Postgres { url, schema } => Some(Box::new(
            super::postgres::PgWorker::start(url.expose().to_owned(), schema.clone())?,
        )),
    })
}

//! One connection to the ledger's database, SQLite or PostgreSQL, for the readers that
//! share its SQL: spend queries ([`super::query`]) and the key store
//! ([`crate::auth::store`]). Statements use `$1, $2, ...` placeholders, which both
//! engines read (SQLite numbers `$N` parameters in order of first appearance, so each
//! statement names them in ascending order); only what differs (a date expression) is
//! asked of [`Dialect`]. Every call blocks: callers run it on a blocking thread, or
//! accept one round trip where they cannot (see [`Db::query`]).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use super::error::{StoreError, StoreResult};
use crate::config::LedgerBackend;

/// The SQL spoken by the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

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

/// A connection to the ledger database.
pub enum Db {
    Sqlite(Mutex<Connection>),
    Postgres(super::postgres::PgWorker),
}

impl Db {
    /// Opens the ledger's database, or `None` for an in-memory ledger, which no other
    /// connection can see.
    pub fn open(backend: &LedgerBackend) -> StoreResult<Option<Db>> {
        match backend {
            LedgerBackend::Sqlite(path) => Db::sqlite(path).map(Some),
            LedgerBackend::SqliteMemory => Ok(None),
            LedgerBackend::Postgres { url, schema } => Ok(Some(Db::Postgres(
                super::postgres::PgWorker::start(url.expose().to_owned(), schema.clone())?,
            ))),
        }
    }

    /// Opens a SQLite ledger file.
    pub fn sqlite(path: &Path) -> StoreResult<Db> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            Ok(conn)
        };
        let conn = open().map_err(|e| StoreError::from(e).in_file(path))?;
        Ok(Db::Sqlite(Mutex::new(conn)))
    }

    /// A private in-memory SQLite database (tests).
    pub fn sqlite_in_memory() -> StoreResult<Db> {
        Ok(Db::Sqlite(Mutex::new(Connection::open_in_memory()?)))
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs statements without parameters or results (schema setup).
    pub fn batch(&self, sql: &str) -> StoreResult<()> {
        match self {
            Db::Sqlite(conn) => Ok(lock(conn)?.execute_batch(sql)?),
            Db::Postgres(pg) => {
                let sql = sql.to_owned();
                pg.run(move |c| c.batch_execute(&sql))
            }
        }
    }

    /// Runs a statement; returns the rows it changed. A row a unique constraint
    /// refuses fails with an error whose [`StoreError::is_conflict`] is true.
    pub fn execute(&self, sql: &str, params: Vec<Param>) -> StoreResult<u64> {
        match self {
            Db::Sqlite(conn) => {
                let n = lock(conn)?.execute(
                    sql,
                    rusqlite::params_from_iter(params.iter().map(sqlite_param)),
                )?;
                Ok(n as u64)
            }
            Db::Postgres(pg) => {
                let sql = sql.to_owned();
                pg.run(move |c| c.execute(&sql, &pg_params(&params)))
            }
        }
    }

    /// Runs a query and reads each row's columns as `kinds` says. From inside the async
    /// runtime this blocks the calling thread for one round trip (PostgreSQL queries run
    /// on the connection's own thread, never on the runtime's).
    pub fn query(
        &self,
        sql: &str,
        params: Vec<Param>,
        kinds: &[Kind],
    ) -> StoreResult<Vec<Vec<Cell>>> {
        match self {
            Db::Sqlite(conn) => {
                let conn = lock(conn)?;
                let mut stmt = conn.prepare(sql)?;
                let rows = stmt.query_map(
                    rusqlite::params_from_iter(params.iter().map(sqlite_param)),
                    |row| {
                        kinds
                            .iter()
                            .enumerate()
                            .map(|(i, kind)| sqlite_cell(row.get_ref(i)?, *kind))
                            .collect::<rusqlite::Result<Vec<_>>>()
                    },
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
            Db::Postgres(pg) => {
                let sql = sql.to_owned();
                let kinds = kinds.to_vec();
                pg.run(move |c| {
                    c.query(&sql, &pg_params(&params))?
                        .iter()
                        .map(|row| {
                            kinds
                                .iter()
                                .enumerate()
                                .map(|(i, kind)| pg_cell(row, i, *kind))
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .collect()
                })
            }
        }
    }
}

/// Runs `tick(true)` whenever a connection to the same PostgreSQL database sends
/// `NOTIFY channel`, and `tick(false)` about once a second, until `tick` returns false
/// on a thread of its own. Other backends have no such signal: nothing runs.
pub fn listen(
    backend: &LedgerBackend,
    channel: String,
    tick: impl FnMut(bool) -> bool + Send + 'static,
) -> StoreResult<()> {
    match backend {
        LedgerBackend::Postgres { url, schema } => {
            super::postgres::listen(url.expose().to_owned(), schema.clone(), channel, tick)
        }
        LedgerBackend::Sqlite(_) | LedgerBackend::SqliteMemory => Ok(()),
    }
}

fn lock(conn: &Mutex<Connection>) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
    conn.lock()
        .map_err(|_| StoreError::Unavailable("the ledger connection"))
}

fn sqlite_param(p: &Param) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match p {
        Param::Int(Some(n)) => Value::Integer(*n),
        Param::Real(Some(f)) => Value::Real(*f),
        Param::Text(Some(t)) => Value::Text(t.clone()),
        Param::Int(None) | Param::Real(None) | Param::Text(None) => Value::Null,
    }
}

fn pg_params(params: &[Param]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(n) => n as &(dyn postgres::types::ToSql + Sync),
            Param::Real(f) => f as &(dyn postgres::types::ToSql + Sync),
            Param::Text(t) => t as &(dyn postgres::types::ToSql + Sync),
        })
        .collect()
}

fn sqlite_cell(value: rusqlite::types::ValueRef<'_>, kind: Kind) -> rusqlite::Result<Cell> {
    use rusqlite::types::ValueRef;
    Ok(match (value, kind) {
        (ValueRef::Null, _) => Cell::Null,
        (ValueRef::Integer(n), Kind::Bool) => Cell::Bool(n != 0),
        (ValueRef::Integer(n), Kind::Real | Kind::Double) => Cell::Real(n as f64),
        (ValueRef::Integer(n), _) => Cell::Int(n),
        (ValueRef::Real(f), _) => Cell::Real(f),
        (ValueRef::Text(t), _) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        (ValueRef::Blob(_), _) => Cell::Null,
    })
}

fn pg_cell(row: &postgres::Row, i: usize, kind: Kind) -> Result<Cell, postgres::Error> {
    Ok(match kind {
        Kind::Text => row.try_get::<_, Option<String>>(i)?.map(Cell::Text),
        Kind::Int => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
        Kind::Int4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|n| Cell::Int(i64::from(n))),
        Kind::Real => row
            .try_get::<_, Option<f32>>(i)?
            .map(|f| Cell::Real(f64::from(f))),
        Kind::Double => row.try_get::<_, Option<f64>>(i)?.map(Cell::Real),
        Kind::Bool => row.try_get::<_, Option<bool>>(i)?.map(Cell::Bool),
    }
    .unwrap_or(Cell::Null))
}

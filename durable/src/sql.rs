//! The one storage interface the store logic is written against.
//!
//! A Durable Object's SQLite (`ctx.storage.sql`) is synchronous, so this trait is too. The
//! Durable Object adapter lives in [`crate::objects`]; a rusqlite adapter (feature
//! `native-sqlite`) runs the very same SQL in native unit tests.

use serde::de::DeserializeOwned;

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        Self::Integer(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&String> for SqlValue {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl From<Vec<u8>> for SqlValue {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(v)
    }
}

impl SqlValue {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Self::Blob(b) => Some(b),
            Self::Text(s) => Some(s.into_bytes()),
            _ => None,
        }
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// A failure of the underlying database. Carries the engine's message; the engine's own error
/// type does not cross the Wasm boundary, so the message is all there is.
#[derive(Debug, thiserror::Error)]
#[error("sql: {message}")]
pub struct SqlError {
    pub message: String,
    /// True when SQLite reported a UNIQUE/PRIMARY KEY constraint violation.
    pub unique_violation: bool,
}

impl SqlError {
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        let unique_violation = message.contains("UNIQUE constraint failed");
        Self {
            message,
            unique_violation,
        }
    }
}

/// Synchronous SQL access with rows decoded through serde (column name -> field).
pub trait Sql {
    fn query<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, SqlError>;

    /// Runs a query and hands each row's values (in column order) to `f` as they are read,
    /// stopping early when `f` answers false: large results (blobs) are never all in memory.
    fn for_each_row(
        &self,
        sql: &str,
        params: &[SqlValue],
        f: &mut dyn FnMut(Vec<SqlValue>) -> bool,
    ) -> Result<(), SqlError>;

    /// Runs a statement that returns no rows; answers how many rows it changed.
    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError>;

    /// Runs several `;`-separated statements without parameters (schema changes).
    fn execute_script(&self, sql: &str) -> Result<(), SqlError>;

    /// Runs `f` atomically: every write it made is rolled back when it returns `Err`.
    fn transaction<R, E: From<SqlError>>(&self, f: impl FnOnce() -> Result<R, E>) -> Result<R, E>;

    fn query_one<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Option<T>, SqlError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

#[cfg(any(test, feature = "native-sqlite"))]
pub use native::NativeSql;

#[cfg(any(test, feature = "native-sqlite"))]
mod native {
    use super::{Sql, SqlError, SqlValue};
    use libsql_sys::rusqlite;
    use rusqlite::types::{ToSqlOutput, ValueRef};
    use serde::de::DeserializeOwned;
    use std::cell::RefCell;

    /// An in-memory (or file) SQLite database through rusqlite (libsql's fork), for native tests.
    pub struct NativeSql {
        conn: RefCell<rusqlite::Connection>,
    }

    impl std::fmt::Debug for NativeSql {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("NativeSql")
        }
    }

    impl NativeSql {
        pub fn open_in_memory() -> Result<Self, SqlError> {
            let conn = rusqlite::Connection::open_in_memory().map_err(err)?;
            // D1 and Durable Object SQLite both enforce foreign keys.
            conn.execute_batch("PRAGMA foreign_keys = ON;")
                .map_err(err)?;
            Ok(Self {
                conn: RefCell::new(conn),
            })
        }
    }

    fn err(e: rusqlite::Error) -> SqlError {
        SqlError::new(e.to_string())
    }

    impl rusqlite::ToSql for SqlValue {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(match self {
                SqlValue::Null => ToSqlOutput::Borrowed(ValueRef::Null),
                SqlValue::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
                SqlValue::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
                SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
                SqlValue::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            })
        }
    }

    fn to_json(v: ValueRef<'_>) -> serde_json::Value {
        match v {
            ValueRef::Null => serde_json::Value::Null,
            ValueRef::Integer(i) => i.into(),
            ValueRef::Real(f) => f.into(),
            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
            ValueRef::Blob(b) => b.to_vec().into(),
        }
    }

    impl Sql for NativeSql {
        fn query<T: DeserializeOwned>(
            &self,
            sql: &str,
            params: &[SqlValue],
        ) -> Result<Vec<T>, SqlError> {
            let conn = self.conn.borrow();
            let mut stmt = conn.prepare(sql).map_err(err)?;
            let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params))
                .map_err(err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(err)? {
                let mut obj = serde_json::Map::new();
                for (i, name) in names.iter().enumerate() {
                    obj.insert(name.clone(), to_json(row.get_ref(i).map_err(err)?));
                }
                out.push(
                    serde_json::from_value(obj.into())
                        .map_err(|e| SqlError::new(format!("decoding row: {e}")))?,
                );
            }
            Ok(out)
        }

        fn for_each_row(
            &self,
            sql: &str,
            params: &[SqlValue],
            f: &mut dyn FnMut(Vec<SqlValue>) -> bool,
        ) -> Result<(), SqlError> {
            let conn = self.conn.borrow();
            let mut stmt = conn.prepare(sql).map_err(err)?;
            let columns = stmt.column_count();
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params))
                .map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                let mut values = Vec::with_capacity(columns);
                for i in 0..columns {
                    values.push(match row.get_ref(i).map_err(err)? {
                        ValueRef::Null => SqlValue::Null,
                        ValueRef::Integer(i) => SqlValue::Integer(i),
                        ValueRef::Real(f) => SqlValue::Real(f),
                        ValueRef::Text(t) => {
                            SqlValue::Text(String::from_utf8_lossy(t).into_owned())
                        }
                        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
                    });
                }
                if !f(values) {
                    break;
                }
            }
            Ok(())
        }

        fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
            let n = self
                .conn
                .borrow()
                .execute(sql, rusqlite::params_from_iter(params))
                .map_err(err)?;
            Ok(n as u64)
        }

        fn execute_script(&self, sql: &str) -> Result<(), SqlError> {
            self.conn.borrow().execute_batch(sql).map_err(err)
        }

        fn transaction<R, E: From<SqlError>>(
            &self,
            f: impl FnOnce() -> Result<R, E>,
        ) -> Result<R, E> {
            self.conn
                .borrow()
                .execute_batch("SAVEPOINT tx")
                .map_err(err)?;
            match f() {
                Ok(r) => {
                    self.conn
                        .borrow()
                        .execute_batch("RELEASE tx")
                        .map_err(err)?;
                    Ok(r)
                }
                Err(e) => {
                    self.conn
                        .borrow()
                        .execute_batch("ROLLBACK TO tx; RELEASE tx")
                        .map_err(err)?;
                    Err(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct N {
        n: i64,
    }

    #[test]
    fn a_failed_transaction_leaves_nothing_behind() {
        let sql = NativeSql::open_in_memory().unwrap();
        sql.execute_script("CREATE TABLE t (v INTEGER UNIQUE)")
            .unwrap();
        let r: Result<(), SqlError> = sql.transaction(|| {
            sql.execute("INSERT INTO t (v) VALUES (1)", &[])?;
            sql.execute("INSERT INTO t (v) VALUES (1)", &[]).map(drop)
        });
        let e = r.unwrap_err();
        assert!(e.unique_violation, "{e}");
        let count = sql
            .query_one::<N>("SELECT count(*) AS n FROM t", &[])
            .unwrap()
            .unwrap();
        assert_eq!(count.n, 0, "the first insert was rolled back");
        sql.transaction(|| sql.execute("INSERT INTO t (v) VALUES (2)", &[]))
            .unwrap();
        assert_eq!(
            sql.query_one::<N>("SELECT count(*) AS n FROM t", &[])
                .unwrap()
                .unwrap()
                .n,
            1
        );
    }
}

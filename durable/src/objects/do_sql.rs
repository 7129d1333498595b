//! [`Sql`] over a Durable Object's SQLite storage (`ctx.storage.sql`).

use crate::sql::{Sql, SqlError, SqlValue};
use serde::de::DeserializeOwned;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::ScopedClosure;
use wasm_bindgen::prelude::*;
use worker::{SqlStorage, SqlStorageValue, State};

#[wasm_bindgen]
extern "C" {
    /// The JavaScript `DurableObjectStorage`, for `transactionSync`, which workers-rs does not wrap.
    #[wasm_bindgen(extends = js_sys::Object)]
    type StorageJs;

    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(
        this: &StorageJs,
        body: &ScopedClosure<'_, dyn FnMut() -> Result<JsValue, JsValue>>,
    ) -> Result<JsValue, JsValue>;
}

pub struct DoSql {
    sql: SqlStorage,
    storage: StorageJs,
}

impl DoSql {
    pub fn new(state: &State) -> Result<Self, SqlError> {
        let storage = js_sys::Reflect::get(state.as_raw(), &JsValue::from_str("storage"))
            .map_err(|_| SqlError::new("the object state has no storage"))?
            .unchecked_into::<StorageJs>();
        Ok(Self {
            sql: state.storage().sql(),
            storage,
        })
    }
}

fn bind(params: &[SqlValue]) -> Vec<SqlStorageValue> {
    params
        .iter()
        .map(|p| match p {
            SqlValue::Null => SqlStorageValue::Null,
            SqlValue::Integer(i) => SqlStorageValue::Integer(*i),
            SqlValue::Real(f) => SqlStorageValue::Float(*f),
            SqlValue::Text(s) => SqlStorageValue::String(s.clone()),
            SqlValue::Blob(b) => SqlStorageValue::Blob(b.clone()),
        })
        .collect()
}

fn err(e: impl std::fmt::Display) -> SqlError {
    SqlError::new(e.to_string())
}

impl Sql for DoSql {
    fn query<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, SqlError> {
        self.sql
            .exec(sql, bind(params))
            .map_err(err)?
            .to_array()
            .map_err(err)
    }

    fn for_each_row(
        &self,
        sql: &str,
        params: &[SqlValue],
        f: &mut dyn FnMut(Vec<SqlValue>) -> bool,
    ) -> Result<(), SqlError> {
        let cursor = self.sql.exec(sql, bind(params)).map_err(err)?;
        for row in cursor.raw() {
            let values = row
                .map_err(err)?
                .into_iter()
                .map(|v| match v {
                    SqlStorageValue::Null => SqlValue::Null,
                    SqlStorageValue::Boolean(b) => SqlValue::Integer(i64::from(b)),
                    SqlStorageValue::Integer(i) => SqlValue::Integer(i),
                    SqlStorageValue::Float(f) => SqlValue::Real(f),
                    SqlStorageValue::String(s) => SqlValue::Text(s),
                    SqlStorageValue::Blob(b) => SqlValue::Blob(b),
                })
                .collect();
            if !f(values) {
                break;
            }
        }
        Ok(())
    }

    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
        let cursor = self.sql.exec(sql, bind(params)).map_err(err)?;
        // Drain the cursor so the statement has run to completion before counting.
        for row in cursor.raw() {
            row.map_err(err)?;
        }
        Ok(cursor.rows_written() as u64)
    }

    fn execute_script(&self, sql: &str) -> Result<(), SqlError> {
        let cursor = self.sql.exec(sql, None).map_err(err)?;
        for row in cursor.raw() {
            row.map_err(err)?;
        }
        Ok(())
    }

    fn transaction<R, E: From<SqlError>>(&self, f: impl FnOnce() -> Result<R, E>) -> Result<R, E> {
        let mut f = Some(f);
        let mut out: Option<Result<R, E>> = None;
        let outcome = {
            let mut body = || -> Result<JsValue, JsValue> {
                let r = f.take().map(|f| f());
                let failed = matches!(r, Some(Err(_)));
                out = r;
                // Throwing makes the runtime roll the transaction back.
                if failed {
                    Err(JsValue::from_str("rolled back"))
                } else {
                    Ok(JsValue::UNDEFINED)
                }
            };
            let closure = ScopedClosure::borrow_mut(&mut body);
            self.storage.transaction_sync(&closure)
        };
        match (outcome, out) {
            (Ok(_), Some(r)) | (Err(_), Some(r @ Err(_))) => r,
            (Err(e), _) => Err(SqlError::new(format!("transaction failed: {e:?}")).into()),
            (Ok(_), None) => Err(SqlError::new("transaction body did not run").into()),
        }
    }
}

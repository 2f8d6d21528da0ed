//! One connection to the state db, SQLite or PostgreSQL, behind the few calls the state db
//! makes: a statement with parameters, a query returning rows of integers and text, a
//! transaction. The SQL is written once, in SQLite's spelling with numbered parameters
//! (`?1`); for PostgreSQL the parameters become `$1` ([`dollar_params`]), nothing else.
//! Both understand the rest as it is written (`ON CONFLICT`, `RETURNING`, `IS NULL`,
//! boolean expressions in `ORDER BY`); what they do not share (the schema's column types,
//! `FOR UPDATE SKIP LOCKED`) is spelled per backend where it is used.

use std::cell::RefCell;
use std::collections::HashMap;

/// A parameter or a column value: the state db holds only integers and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (BIGINT on PostgreSQL).
    Int(i64),
    /// Text.
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// Parameters for [`Conn::execute`] and [`Conn::query`]: `vals![a, b]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$($crate::state::backend::Value::from($v)),*][..] };
}
pub(crate) use vals;

/// A result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

/// A column that is not what the code reads it as (a schema the program does not know).
#[derive(Debug, thiserror::Error)]
#[error("column {index}: expected {expected}, found {found:?}")]
pub struct ColumnError {
    index: usize,
    expected: &'static str,
    found: Value,
}

impl Row {
    fn at(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }

    /// An integer that may be NULL.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, ColumnError> {
        match self.at(i) {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            v => Err(self.wrong(i, "an integer", v)),
        }
    }

    /// An integer.
    pub fn int(&self, i: usize) -> Result<i64, ColumnError> {
        match self.at(i) {
            Value::Int(v) => Ok(*v),
            v => Err(self.wrong(i, "an integer", v)),
        }
    }

    /// Text that may be NULL.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, ColumnError> {
        match self.at(i) {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            v => Err(self.wrong(i, "text", v)),
        }
    }

    /// Text.
    pub fn text(&self, i: usize) -> Result<String, ColumnError> {
        match self.at(i) {
            Value::Text(v) => Ok(v.clone()),
            v => Err(self.wrong(i, "text", v)),
        }
    }

    fn wrong(&self, index: usize, expected: &'static str, found: &Value) -> ColumnError {
        ColumnError {
            index,
            expected,
            found: found.clone(),
        }
    }
}

/// What the database said.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL.
    #[error("{}", pg_text(.0))]
    Postgres(#[from] postgres::Error),
    /// A column of an unexpected type.
    #[error(transparent)]
    Column(#[from] ColumnError),
}

/// PostgreSQL's own message with its detail and hint (the crate's Display says only
/// "db error").
fn pg_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        }
    }
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (the embedded default).
    Sqlite,
    /// PostgreSQL (a fleet).
    Postgres,
}

/// An open connection.
pub enum Conn {
    /// SQLite: statements go through its statement cache.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL: statements prepared once per connection, kept by their text.
    Postgres(Box<RefCell<PgConn>>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Sqlite(_) => "Conn::Sqlite",
            Conn::Postgres(_) => "Conn::Postgres",
        })
    }
}

/// A PostgreSQL client, its prepared statements and whether a transaction is open.
pub struct PgConn {
    client: postgres::Client,
    prepared: HashMap<String, postgres::Statement>,
    in_transaction: bool,
}

impl PgConn {
    /// Wraps a connected client.
    pub fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client,
            prepared: HashMap::new(),
            in_transaction: false,
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(&dollar_params(sql))?;
        self.prepared.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

/// `?1` to `$1`: SQLite's numbered parameters in PostgreSQL's spelling. The state db's SQL
/// has no `?` elsewhere (no string literal holds one).
pub fn dollar_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match self {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            // A parameter compared with an INT4 expression (a literal, count(*)'s
            // neighbours) is typed INT4 by the server: narrow, refusing what does not fit.
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Text(v) => v.as_str().to_sql(ty, out),
        }
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::Type;
        [
            Type::INT8,
            Type::INT4,
            Type::TEXT,
            Type::VARCHAR,
            Type::NAME,
        ]
        .contains(ty)
    }

    postgres::types::to_sql_checked!();
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(String::from_utf8_lossy(t).into()),
    }
}

fn pg_value(row: &postgres::Row, i: usize) -> Result<Value, postgres::Error> {
    use postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    Ok(if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?.into()
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?.map(i64::from).into()
    } else if ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)?.map(i64::from).into()
    } else if ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)?.map(i64::from).into()
    } else {
        row.try_get::<_, Option<String>>(i)?.into()
    })
}

impl Conn {
    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c.prepare_cached(sql)?.execute(params_from(params))? as u64),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let st = pg.statement(sql)?;
                Ok(pg.client.execute(&st, &pg_params(params))?)
            }
        }
    }

    /// Runs a query; returns its rows.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        match self {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let mut rows = st.query(params_from(params))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut row = Vec::with_capacity(n);
                    for i in 0..n {
                        row.push(sqlite_value(r.get_ref(i)?));
                    }
                    out.push(Row(row));
                }
                Ok(out)
            }
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let st = pg.statement(sql)?;
                let rows = pg.client.query(&st, &pg_params(params))?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let row = (0..r.len())
                        .map(|i| pg_value(r, i))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push(Row(row));
                }
                Ok(out)
            }
        }
    }

    /// The first row of a query, if any.
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs several statements without parameters (the schema).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(pg) => Ok(pg.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        match self {
            Conn::Sqlite(c) => !c.is_autocommit(),
            Conn::Postgres(pg) => pg.borrow().in_transaction,
        }
    }

    /// Opens a transaction that takes the write lock at once (SQLite: `BEGIN IMMEDIATE`,
    /// so that two writers wait instead of failing on upgrade).
    pub fn begin(&self) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch("BEGIN IMMEDIATE")?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.client.batch_execute("BEGIN")?;
                pg.in_transaction = true;
                Ok(())
            }
        }
    }

    /// Commits the open transaction.
    pub fn commit(&self) -> Result<(), DbError> {
        self.end("COMMIT")
    }

    /// Rolls the open transaction back.
    pub fn rollback(&self) -> Result<(), DbError> {
        self.end("ROLLBACK")
    }

    fn end(&self, word: &str) -> Result<(), DbError> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(word)?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.in_transaction = false;
                Ok(pg.client.batch_execute(word)?)
            }
        }
    }

    /// Runs `f` in a transaction of its own, committed when `f` succeeds and rolled back
    /// when it fails; inside a transaction already open, `f` joins it. `err` makes the
    /// caller's error of a failed BEGIN or COMMIT.
    pub fn transaction<T, E>(
        &self,
        err: impl Fn(DbError) -> E,
        f: impl FnOnce(&Conn) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.in_transaction() {
            return f(self);
        }
        self.begin().map_err(&err)?;
        match f(self) {
            Ok(v) => {
                self.commit().map_err(&err)?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.rollback();
                Err(e)
            }
        }
    }
}

fn params_from(params: &[Value]) -> rusqlite::ParamsFromIter<std::slice::Iter<'_, Value>> {
    rusqlite::params_from_iter(params.iter())
}

fn pg_params(params: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_take_postgres_spelling_and_nothing_else_changes() {
        assert_eq!(
            dollar_params("UPDATE users SET a = ?2, b = ?10 WHERE name = ?1 AND c IS NULL"),
            "UPDATE users SET a = $2, b = $10 WHERE name = $1 AND c IS NULL"
        );
        assert_eq!(dollar_params("SELECT '?' , ?x"), "SELECT '?' , ?x");
    }

    #[test]
    fn rows_read_back_as_the_types_asked_for() {
        let c = Conn::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        let r = c
            .query_opt("SELECT ?1, ?2, ?3", vals![7i64, "x", None::<i64>])
            .unwrap()
            .unwrap();
        assert_eq!(r.int(0).unwrap(), 7);
        assert_eq!(r.text(1).unwrap(), "x");
        assert_eq!(r.opt_int(2).unwrap(), None);
        assert!(r.int(1).is_err(), "text is no integer");
        assert!(r.text(2).is_err(), "NULL is no text");
    }
}

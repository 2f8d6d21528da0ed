//! Comparing an index with the index its data file implies, row by row.
//!
//! The index is derived data (invariant 3): every table but the ones that record judgements
//! about the data (`damaged`) is what ingesting the data file's entries in order produces,
//! ids included. Verify rebuilds that index in memory from the committed part of the data
//! file and compares each derived table with the index on disk, on its primary key, both
//! ways: a row the data file implies and the index lacks (a deleted `records` row: a message
//! silently gone from `ls` and restore), a row the index has and the data file does not
//! imply, and a row whose columns differ (flags, size, internal date, GUID, expunged,
//! validity times, offsets...).
//!
//! Both sides are streamed in key order and merged, so memory stays bounded by a row.

use std::cmp::Ordering;
use std::fmt;

use rusqlite::types::ValueRef;

/// A column's value as stored. Text is kept as bytes: a damaged index can hold text that
/// is not UTF-8, which rusqlite's own `Value` refuses by panicking.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for Value {
    fn from(v: ValueRef<'_>) -> Value {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(t.to_vec()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }
}

use super::error::{Result, SqlContext};
use super::index::IndexDb;

/// The derived tables and their primary keys, in the order verify compares them. Every
/// table of [`TABLES`](super::TABLES) is here except those not derived from the data
/// file's structure (see [`NOT_DERIVED`]).
pub const DERIVED_TABLES: &[(&str, &[&str])] = &[
    ("store", &["id"]),
    ("chunks", &["offset"]),
    ("entries", &["id"]),
    ("runs", &["run"]),
    ("folders", &["id"]),
    ("messages", &["guid"]),
    ("names", &["entry"]),
    ("meta_files", &["entry"]),
    ("snapshots", &["folder_key", "run"]),
    ("records", &["folder_key", "uid", "from_run"]),
    ("user_files", &["entry"]),
    // Only from the index's `headers_start` on: the rows of messages stored before the
    // store had the table are nothing the index lacks (see `compare_indexes`).
    ("headers", &["entry"]),
];

/// Tables of the index that hold findings about the data rather than its structure, so a
/// rebuild cannot imply them and verify does not compare them. `headers_start` says from
/// which entry the header index covers the data file: when the store got the table, not
/// what the data file holds.
pub const NOT_DERIVED: &[&str] = &["damaged", "headers_start"];

/// Tables added by a schema step after the first, with the version that added them: an
/// index of an older version lacks their declarations (a reader holds them as temporary
/// tables), which the schema comparison then leaves out.
const ADDED: &[(i64, &str)] = &[(2, "damaged"), (4, "headers"), (4, "headers_start")];

/// The folder a row is about, as far as the row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFolder {
    /// The folder's unique id.
    pub uniqueid: String,
    /// Its name (from the row, else the newest name the data file gives it).
    pub name: Option<String>,
}

/// How a row of the index differs from what the data file implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowDiff {
    /// The data file implies the row; the index lacks it.
    Missing {
        /// The row the data file implies, `column=value` each.
        expected: String,
    },
    /// The index has the row; the data file does not imply it.
    Extra {
        /// The row the index has.
        found: String,
    },
    /// Both have the row; these columns differ: (column, implied, found).
    Differs {
        /// Each differing column with the value the data file implies and the index's.
        columns: Vec<(String, String, String)>,
    },
}

/// One row of the index that is not what its data file implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFault {
    /// The table.
    pub table: &'static str,
    /// The row's primary key, `column=value` each.
    pub key: String,
    /// The folder the row is about, when it is about one.
    pub folder: Option<RowFolder>,
    /// The message UID the row is about, when it is about one.
    pub uid: Option<u32>,
    /// What differs.
    pub diff: RowDiff,
}

impl fmt::Display for RowFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(folder) = &self.folder {
            match &folder.name {
                Some(n) => write!(f, "folder {n:?} ({}) ", folder.uniqueid)?,
                None => write!(f, "folder {} ", folder.uniqueid)?,
            }
            if let Some(uid) = self.uid {
                write!(f, "UID {uid} ")?;
            }
            f.write_str("- ")?;
        }
        write!(f, "{} row {}: ", self.table, self.key)?;
        match &self.diff {
            RowDiff::Missing { expected } => write!(
                f,
                "missing from the index; the data file implies ({expected})"
            ),
            RowDiff::Extra { found } => write!(
                f,
                "in the index, but the data file implies no such row ({found})"
            ),
            RowDiff::Differs { columns } => {
                for (i, (c, want, got)) in columns.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c} is {got}, the data file implies {want}")?;
                }
                Ok(())
            }
        }
    }
}

/// Rows compared, both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompareCounts {
    /// Rows the data file implies (the rebuilt index's).
    pub implied: u64,
    /// Rows the index holds.
    pub found: u64,
    /// Implied rows the index lacks.
    pub missing: u64,
    /// Index rows nothing implies.
    pub extra: u64,
    /// Rows in both that differ.
    pub differing: u64,
}

/// Compares every derived table of `found` (the index on disk) with `implied` (rebuilt
/// from the data file); gives each differing row to `fault`. Errors are SQLite failing to
/// read either side (a damaged index can fail here; the caller reports it).
pub(crate) fn compare_indexes(
    implied: &IndexDb,
    found: &IndexDb,
    mut fault: impl FnMut(RowFault),
) -> Result<CompareCounts> {
    let mut counts = CompareCounts::default();
    // The schema first: a damaged declaration (a column's type, a constraint) reads the
    // same rows today but changes what later writes store. The in-memory index has the
    // schema the migrations make, which an index on disk at the same version must equal
    // word for word (SQLite keeps each CREATE statement's text).
    // Tables not derived from the data (and their indexes) are left out only for an index
    // of an older version, which lacks them (a reader holds them as temporary tables): at
    // the current version their declarations must be intact too.
    let version = |db: &IndexDb| -> Result<i64> {
        db.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .sql(&db.path)
    };
    let found_version = version(found)?;
    let not_derived = ADDED
        .iter()
        .filter(|(v, _)| *v > found_version)
        .map(|(_, t)| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // The first entry the index's header index covers (an index upgraded to it keeps no
    // rows for the messages it held before).
    let headers_start: i64 = found
        .conn
        .query_row("SELECT entry FROM headers_start WHERE id = 1", [], |r| {
            r.get(0)
        })
        .sql(&found.path)?;
    compare_table(
        implied,
        found,
        "sqlite_master",
        &format!(
            "SELECT type, name, tbl_name, sql FROM sqlite_master
             WHERE tbl_name NOT IN ({not_derived}) ORDER BY name"
        ),
        &["name"],
        &mut counts,
        &mut fault,
    )?;
    for (table, key) in DERIVED_TABLES {
        // The columns are named as the rebuilt side has them: a damaged schema on disk
        // then fails to prepare (a fault), rather than handing back a column name that is
        // not UTF-8 (which rusqlite panics on).
        let cols: Vec<String> = implied
            .conn
            .prepare(&format!("SELECT * FROM {table} LIMIT 0"))
            .sql(&implied.path)?
            .column_names()
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect();
        let filter = if *table == "headers" {
            format!("WHERE entry >= {headers_start}")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {} FROM {table} {filter} ORDER BY {}",
            cols.join(", "),
            key.join(", ")
        );
        compare_table(implied, found, table, &sql, key, &mut counts, &mut fault)?;
    }
    Ok(counts)
}

/// Compares the rows `sql` selects (ordered by `key`) from both sides.
fn compare_table(
    implied: &IndexDb,
    found: &IndexDb,
    table: &'static str,
    sql: &str,
    key: &[&str],
    counts: &mut CompareCounts,
    fault: &mut impl FnMut(RowFault),
) -> Result<()> {
    let mut sa = implied.conn.prepare(sql).sql(&implied.path)?;
    let mut sb = found.conn.prepare(sql).sql(&found.path)?;
    // Both select the same named columns, so their names are the rebuilt side's.
    let cols: Vec<String> = sa
        .column_names()
        .iter()
        .map(|c| c.trim_matches('"').to_string())
        .collect();
    let key_at: Vec<usize> = key
        .iter()
        .map(|k| cols.iter().position(|c| c == k).expect("key is a column"))
        .collect();
    let mut ra = sa.query([]).sql(&implied.path)?;
    let mut rb = sb.query([]).sql(&found.path)?;
    let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Vec<Value>> {
        (0..cols.len())
            .map(|i| r.get_ref(i).map(Value::from))
            .collect()
    };
    let mut a = match ra.next().sql(&implied.path)? {
        Some(r) => Some(read(r).sql(&implied.path)?),
        None => None,
    };
    let mut b = match rb.next().sql(&found.path)? {
        Some(r) => Some(read(r).sql(&found.path)?),
        None => None,
    };
    let ctx = Context {
        implied,
        table,
        cols: &cols,
        key_at: &key_at,
    };
    loop {
        let order = match (&a, &b) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => cmp_keys(x, y, &key_at),
        };
        match order {
            Ordering::Less => {
                let x = a.take().expect("present");
                counts.implied += 1;
                counts.missing += 1;
                fault(ctx.fault(
                    &x,
                    RowDiff::Missing {
                        expected: show_row(&cols, &x),
                    },
                ));
            }
            Ordering::Greater => {
                let y = b.take().expect("present");
                counts.found += 1;
                counts.extra += 1;
                fault(ctx.fault(
                    &y,
                    RowDiff::Extra {
                        found: show_row(&cols, &y),
                    },
                ));
            }
            Ordering::Equal => {
                let x = a.take().expect("present");
                let y = b.take().expect("present");
                counts.implied += 1;
                counts.found += 1;
                let columns: Vec<(String, String, String)> = cols
                    .iter()
                    .zip(x.iter().zip(&y))
                    .filter(|(_, (p, q))| p != q)
                    .map(|(c, (p, q))| (c.clone(), show(p), show(q)))
                    .collect();
                if !columns.is_empty() {
                    counts.differing += 1;
                    fault(ctx.fault(&x, RowDiff::Differs { columns }));
                }
            }
        }
        if a.is_none() {
            if let Some(r) = ra.next().sql(&implied.path)? {
                a = Some(read(r).sql(&implied.path)?);
            }
        }
        if b.is_none() {
            if let Some(r) = rb.next().sql(&found.path)? {
                b = Some(read(r).sql(&found.path)?);
            }
        }
    }
    Ok(())
}

/// What a fault about one row needs to name the row.
struct Context<'a> {
    implied: &'a IndexDb,
    table: &'static str,
    cols: &'a [String],
    key_at: &'a [usize],
}

impl Context<'_> {
    fn fault(&self, row: &[Value], diff: RowDiff) -> RowFault {
        let col = |name: &str| self.cols.iter().position(|c| c == name).map(|i| &row[i]);
        let text = |v: Option<&Value>| match v {
            Some(Value::Text(t)) => Some(String::from_utf8_lossy(t).into_owned()),
            _ => None,
        };
        let int = |v: Option<&Value>| match v {
            Some(Value::Integer(i)) => u32::try_from(*i).ok(),
            _ => None,
        };
        let key = |v: Option<&Value>| match v {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        };
        let (uniqueid, uid) = match self.table {
            "messages" | "sqlite_master" => (None, None),
            _ => (
                text(col("uniqueid"))
                    .or_else(|| key(col("folder_key")).and_then(|k| self.folder_uniqueid(k))),
                int(col("uid")),
            ),
        };
        let folder = uniqueid.map(|u| {
            let name = text(col("folder")).or_else(|| self.folder_name(&u));
            RowFolder { uniqueid: u, name }
        });
        RowFault {
            table: self.table,
            key: self
                .key_at
                .iter()
                .map(|&i| format!("{}={}", self.cols[i], show(&row[i])))
                .collect::<Vec<_>>()
                .join(" "),
            folder,
            uid,
            diff,
        }
    }

    /// The newest name the data file gives the folder `uniqueid`, if any.
    fn folder_name(&self, uniqueid: &str) -> Option<String> {
        self.implied
            .conn
            .query_row(
                "SELECT n.folder FROM names n JOIN folders k ON k.id = n.folder_key
                 WHERE k.uniqueid = ?1 ORDER BY n.time DESC LIMIT 1",
                [uniqueid],
                |r| r.get(0),
            )
            .ok()
    }

    /// The unique id the data file gives folder key `key`, if any.
    fn folder_uniqueid(&self, key: i64) -> Option<String> {
        self.implied
            .conn
            .query_row("SELECT uniqueid FROM folders WHERE id = ?1", [key], |r| {
                r.get(0)
            })
            .ok()
    }
}

/// Orders two rows by their key columns as SQLite's `ORDER BY` does.
fn cmp_keys(a: &[Value], b: &[Value], key_at: &[usize]) -> Ordering {
    key_at
        .iter()
        .map(|&i| cmp_value(&a[i], &b[i]))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// SQLite's order of values (binary collation): NULL, then numbers, then text, then
/// blobs; text and blobs by their bytes.
fn cmp_value(a: &Value, b: &Value) -> Ordering {
    fn class(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 1,
            Value::Text(_) => 2,
            Value::Blob(_) => 3,
        }
    }
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Integer(x), Value::Real(y)) => (*x as f64).total_cmp(y),
        (Value::Real(x), Value::Integer(y)) => x.total_cmp(&(*y as f64)),
        (Value::Real(x), Value::Real(y)) => x.total_cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        _ => class(a).cmp(&class(b)),
    }
}

/// A value as the fault shows it: numbers as they are, text quoted, blobs in hex (GUIDs).
fn show(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => r.to_string(),
        Value::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
        Value::Blob(b) => format!("x'{}'", hex::encode(b)),
    }
}

fn show_row(cols: &[String], row: &[Value]) -> String {
    cols.iter()
        .zip(row)
        .map(|(c, v)| format!("{c}={}", show(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TABLES;

    #[test]
    fn every_table_is_compared_or_named_as_not_derived() {
        for t in TABLES {
            assert!(
                DERIVED_TABLES.iter().any(|(d, _)| d == t) || NOT_DERIVED.contains(t),
                "table {t} is neither compared nor listed as not derived"
            );
        }
    }

    #[test]
    fn rows_missing_extra_and_differing_are_each_named() {
        let dir = std::path::Path::new("mem");
        let a = IndexDb::in_memory(dir).unwrap();
        let b = IndexDb::in_memory(dir).unwrap();
        for db in [&a, &b] {
            db.conn
                .execute_batch(
                    "PRAGMA foreign_keys=OFF;
                     INSERT INTO folders VALUES (1, 'u-1'), (2, 'u-2');
                     INSERT INTO names VALUES (1, 1, 'INBOX', 0, 1, 5);
                     INSERT INTO records VALUES (1, 7, 1, x'01', 10, '1', '', 0, 5, NULL, NULL);
                     INSERT INTO records VALUES (1, 8, 1, x'02', 10, '1', '', 0, 5, NULL, NULL);",
                )
                .unwrap();
        }
        a.conn
            .execute_batch(
                "INSERT INTO records VALUES (1, 9, 1, x'03', 10, '1', '', 0, 5, NULL, NULL);",
            )
            .unwrap();
        b.conn
            .execute_batch(
                "UPDATE records SET flags = '\\Seen' WHERE uid = 8;
                 INSERT INTO records VALUES (2, 1, 1, x'04', 10, '1', '', 0, 5, NULL, NULL);",
            )
            .unwrap();
        let mut faults = Vec::new();
        let c = compare_indexes(&a, &b, |f| faults.push(f)).unwrap();
        assert_eq!((c.missing, c.extra, c.differing), (1, 1, 1));
        assert_eq!(c.implied, c.found);
        let text: Vec<String> = faults.iter().map(|f| f.to_string()).collect();
        assert_eq!(faults.len(), 3, "{text:#?}");
        assert!(
            text[0].starts_with("folder \"INBOX\" (u-1) UID 8 - records row folder_key=1 uid=8 from_run=1: flags is \"\\\\Seen\", the data file implies \"\""),
            "{}",
            text[0]
        );
        assert!(
            text[1].starts_with(
                "folder \"INBOX\" (u-1) UID 9 - records row folder_key=1 uid=9 from_run=1: missing from the index"
            ),
            "{}",
            text[1]
        );
        assert!(
            text[2].starts_with(
                "folder u-2 UID 1 - records row folder_key=2 uid=1 from_run=1: in the index, but"
            ),
            "{}",
            text[2]
        );
    }

    #[test]
    fn values_order_as_sqlite_orders_them() {
        let v = [
            Value::Null,
            Value::Integer(-3),
            Value::Real(2.5),
            Value::Integer(3),
            Value::Text(b"A".to_vec()),
            Value::Text(b"a".to_vec()),
            Value::Blob(vec![0]),
        ];
        for w in v.windows(2) {
            assert_eq!(cmp_value(&w[0], &w[1]), Ordering::Less, "{w:?}");
        }
    }
}

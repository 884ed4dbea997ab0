//! The SQLite FTS5 baseline (rusqlite, bundled): a content table with the
//! filter columns and an FTS5 table over names, numbers and text (porter
//! stemming, accents folded, prefix indexes of 2 and 3 characters), ranked
//! by `bm25` with column weights 10, 4, 1 (PostgreSQL's A, B, D); read by one read-only connection
//! per client on the blocking pool.
use crate::firm::doc_batches;
use crate::measure::{Answer, Client, SearchClient};
use crate::mix::{FACETS, Filters, LIMIT, Op, Query, SUGGEST_LIMIT, Suggest};
use anyhow::Context;
use docket::clio::generator::Firm;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params_from_iter};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOAD_BATCH: usize = 10_000;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE docs (
    rowid INTEGER PRIMARY KEY, kind TEXT NOT NULL, id INTEGER NOT NULL, title TEXT NOT NULL,
    status TEXT, practice_area TEXT, responsible_attorney_id INTEGER, client_id INTEGER,
    matter_id INTEGER, day TEXT, billed INTEGER);
CREATE VIRTUAL TABLE fts USING fts5(names, numbers, body,
    tokenize = 'porter unicode61 remove_diacritics 2', prefix = '2 3');";

/// Creates the database at `path` and loads the firm. Returns the time spent
/// in SQLite (generating records not counted) and the file's size.
pub fn load(path: &Path, firm: &Firm) -> anyhow::Result<(Duration, u64)> {
    let mut db = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    db.execute_batch(SCHEMA).context("creating the SQLite schema")?;
    let mut spent = Duration::ZERO;
    let mut rowid = 0i64;
    for batch in doc_batches(firm, LOAD_BATCH) {
        let batch = batch?;
        let t = Instant::now();
        let tx = db.transaction()?;
        {
            let mut doc = tx.prepare_cached(
                "INSERT INTO docs (rowid, kind, id, title, status, practice_area, responsible_attorney_id,
                    client_id, matter_id, day, billed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut text =
                tx.prepare_cached("INSERT INTO fts (rowid, names, numbers, body) VALUES (?1, ?2, ?3, ?4)")?;
            for d in &batch {
                rowid += 1;
                doc.execute(rusqlite::params![
                    rowid,
                    d.kind,
                    d.id,
                    d.title,
                    d.status,
                    d.practice_area,
                    d.responsible_attorney_id,
                    d.client_id,
                    d.matter_id,
                    d.date,
                    d.billed
                ])?;
                text.execute(rusqlite::params![rowid, d.names, d.numbers, d.text])?;
            }
        }
        tx.commit()?;
        spent += t.elapsed();
    }
    let t = Instant::now();
    db.execute_batch("INSERT INTO fts (fts) VALUES ('optimize'); PRAGMA wal_checkpoint(TRUNCATE);")
        .context("optimising the FTS5 index")?;
    spent += t.elapsed();
    drop(db);
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok((spent, bytes))
}

fn filters(f: &Filters, params: &mut Vec<Value>) -> String {
    let mut sql = String::new();
    let param = |v: Value, params: &mut Vec<Value>| {
        params.push(v);
        format!("?{}", params.len())
    };
    if !f.kinds.is_empty() {
        let marks: Vec<String> = f.kinds.iter().map(|k| param(Value::Text(k.to_string()), params)).collect();
        sql += &format!(" AND d.kind IN ({})", marks.join(", "));
    }
    if let Some(s) = f.status {
        sql += &format!(" AND d.status = {}", param(Value::Text(s.into()), params));
    }
    if let Some(a) = &f.practice_area {
        sql += &format!(" AND d.practice_area = {}", param(Value::Text(a.clone()), params));
    }
    if let Some(c) = f.client_id {
        sql += &format!(" AND d.client_id = {}", param(Value::Integer(c), params));
    }
    if let Some(d) = &f.from {
        sql += &format!(" AND d.day >= {}", param(Value::Text(d.clone()), params));
    }
    if let Some(d) = &f.to {
        sql += &format!(" AND d.day <= {}", param(Value::Text(d.clone()), params));
    }
    if let Some(b) = f.billed {
        sql += &format!(" AND d.billed = {}", param(Value::Integer(i64::from(b)), params));
    }
    sql
}

/// The matches with their rank, joined to the filter columns. FTS5's `bm25`
/// may not share a query level with a window function, hence the inner query.
const FROM: &str = "FROM (SELECT rowid, bm25(fts, 10.0, 4.0, 1.0) AS r FROM fts WHERE fts MATCH ?1) m \
    JOIN docs d ON d.rowid = m.rowid WHERE true";

/// Top 20 with the total, then the facet counts (one connection runs them in turn).
fn search(db: &Connection, query: &Query) -> anyhow::Result<u64> {
    let mut params = vec![Value::Text(query.fts.clone())];
    let filters = filters(&query.filters, &mut params);
    let order = if query.date_desc { "d.day DESC, d.id DESC" } else { "m.r" };
    let sql = format!(
        "SELECT d.kind, d.id, d.title, m.r, count(*) OVER () AS total {FROM}{filters} ORDER BY {order} LIMIT {LIMIT}"
    );
    let mut total = 0u64;
    let mut statement = db.prepare_cached(&sql).with_context(|| format!("preparing {sql}"))?;
    let mut rows = statement.query(params_from_iter(params.iter()))?;
    if let Some(row) = rows.next()? {
        total = u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0);
    }
    while rows.next()?.is_some() {}
    if query.facets {
        for facet in FACETS {
            let sql = format!("SELECT d.{facet}, count(*) {FROM}{filters} GROUP BY d.{facet}");
            let mut statement = db.prepare_cached(&sql)?;
            let mut rows = statement.query(params_from_iter(params.iter()))?;
            while rows.next()?.is_some() {}
        }
    }
    Ok(total)
}

fn suggest(db: &Connection, s: &Suggest) -> anyhow::Result<u64> {
    let sql = format!(
        "SELECT d.kind, d.id, d.title, m.r {FROM} AND d.kind IN ('matter', 'contact', 'user') \
         ORDER BY m.r LIMIT {SUGGEST_LIMIT}"
    );
    let mut statement = db.prepare_cached(&sql)?;
    let mut rows = statement.query([&s.fts])?;
    let mut n = 0;
    while rows.next()?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// One read-only connection; moved onto the blocking pool for each query.
pub struct SqliteClient {
    db: Option<Connection>,
}

impl SqliteClient {
    pub fn connect(path: &PathBuf) -> anyhow::Result<Client> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let db = Connection::open_with_flags(path, flags).with_context(|| format!("opening {}", path.display()))?;
        db.set_prepared_statement_cache_capacity(256);
        Ok(Box::new(SqliteClient { db: Some(db) }))
    }
}

impl SearchClient for SqliteClient {
    fn run<'a>(&'a mut self, op: &'a Op) -> Answer<'a> {
        Box::pin(async move {
            let db = self.db.take().context("this SQLite client lost its connection to an earlier failure")?;
            let op = op.clone();
            let (db, answer) = tokio::task::spawn_blocking(move || {
                let answer = match &op {
                    Op::Search(q) => search(&db, q),
                    Op::Suggest(s) => suggest(&db, s),
                };
                (db, answer)
            })
            .await?;
            self.db = Some(db);
            answer
        })
    }
}

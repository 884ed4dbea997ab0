//! The PostgreSQL baseline: a throwaway cluster on loopback (Debian's
//! PostgreSQL, started and stopped by the benchmark), one table with the filter
//! columns and a weighted `tsvector` (names A, numbers/emails/phones B, text D)
//! under GIN, plus a pg_trgm GIN index on the names for misspelt names.
use crate::firm::{Doc, doc_batches};
use crate::measure::{Answer, Client, SearchClient};
use crate::mix::{FACETS, Filters, LIMIT, Op, PgText, Query, SUGGEST_LIMIT, Suggest};
use anyhow::Context;
use docket::clio::generator::Firm;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Statement};

/// Server settings, printed with the figures: a tuned baseline, not a default one.
pub const SETTINGS: &[(&str, &str)] =
    &[("shared_buffers", "1GB"), ("maintenance_work_mem", "1GB"), ("work_mem", "64MB"), ("max_connections", "100")];

const LOAD_BATCH: usize = 5_000;

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`, if any.
pub fn find_bin() -> Option<PathBuf> {
    let mut bins: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    bins.sort();
    bins.pop().map(|(_, bin)| bin)
}

/// A running throwaway cluster; stopped (and its directory removed) on drop,
/// on every path out of the benchmark, errors included.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn check(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("could not run {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `tool` from the PostgreSQL bin dir, as the `postgres` user when we are root
    /// (initdb refuses to run as root).
    fn tool(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    pub fn start(bin: &Path) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("docket-bench-pg").tempdir()?;
        let as_postgres = is_root();
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.args(["postgres:"]).arg(dir.path());
            check(chown, "chown postgres: (the cluster directory)")?;
        }
        let cluster = Cluster { dir, bin: bin.to_path_buf(), port: free_port()?, as_postgres };
        let mut initdb = cluster.tool("initdb");
        initdb.arg("-D").arg(cluster.data()).args(["-A", "trust", "-U", "bench", "-E", "UTF8", "--no-sync"]);
        check(initdb, "initdb")?;
        let mut options =
            format!("-k {} -c listen_addresses=127.0.0.1 -p {}", cluster.dir.path().display(), cluster.port);
        for (key, value) in SETTINGS {
            options.push_str(&format!(" -c {key}={value}"));
        }
        let mut start = cluster.tool("pg_ctl");
        start.arg("-D").arg(cluster.data()).args(["-w", "-o", &options, "-l"]);
        start.arg(cluster.dir.path().join("log")).arg("start");
        check(start, "pg_ctl start")?;
        Ok(cluster)
    }

    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let config = format!("host=127.0.0.1 port={} user=bench dbname=postgres", self.port);
        let (client, connection) =
            tokio_postgres::connect(&config, NoTls).await.context("could not connect to the bench's PostgreSQL")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection ended: {e}");
            }
        });
        Ok(client)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = self.tool("pg_ctl");
        stop.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]);
        if let Err(e) = check(stop, "pg_ctl stop") {
            eprintln!("could not stop the bench's PostgreSQL: {e:#}");
        }
    }
}

const SCHEMA: &str = "
CREATE EXTENSION pg_trgm;
CREATE TABLE docs (
    kind text NOT NULL, id bigint NOT NULL, title text NOT NULL,
    names text NOT NULL, numbers text NOT NULL, body text NOT NULL,
    status text, practice_area text, responsible_attorney_id bigint, client_id bigint, matter_id bigint,
    day date, billed boolean,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', names), 'A') ||
        setweight(to_tsvector('english', numbers), 'B') ||
        setweight(to_tsvector('english', body), 'D')) STORED,
    PRIMARY KEY (kind, id)
)";

const INSERT: &str = "INSERT INTO docs (kind, id, title, names, numbers, body, status, practice_area,
        responsible_attorney_id, client_id, matter_id, day, billed)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[]::date[], $13::bool[])";

const INDEXES: &str = "
CREATE INDEX docs_tsv ON docs USING gin (tsv);
CREATE INDEX docs_names_trgm ON docs USING gin (names gin_trgm_ops);
ANALYZE docs";

async fn insert(client: &tokio_postgres::Client, insert: &Statement, docs: &[Doc]) -> anyhow::Result<()> {
    let col = |f: &dyn Fn(&Doc) -> String| docs.iter().map(f).collect::<Vec<String>>();
    let opt = |f: &dyn Fn(&Doc) -> Option<String>| docs.iter().map(f).collect::<Vec<Option<String>>>();
    let int = |f: &dyn Fn(&Doc) -> Option<i64>| docs.iter().map(f).collect::<Vec<Option<i64>>>();
    let kinds = col(&|d| d.kind.to_string());
    let ids: Vec<i64> = docs.iter().map(|d| d.id).collect();
    let (titles, names, numbers, bodies) =
        (col(&|d| d.title.clone()), col(&|d| d.names.clone()), col(&|d| d.numbers.clone()), col(&|d| d.text.clone()));
    let (status, area, days) =
        (opt(&|d| d.status.clone()), opt(&|d| d.practice_area.clone()), opt(&|d| d.date.clone()));
    let (attorney, clients, matters) =
        (int(&|d| d.responsible_attorney_id), int(&|d| d.client_id), int(&|d| d.matter_id));
    let billed: Vec<Option<bool>> = docs.iter().map(|d| d.billed).collect();
    client
        .execute(
            insert,
            &[
                &kinds, &ids, &titles, &names, &numbers, &bodies, &status, &area, &attorney, &clients, &matters, &days,
                &billed,
            ],
        )
        .await
        .context("inserting a batch into PostgreSQL")?;
    Ok(())
}

/// Creates the table, loads the firm and builds the indexes. Returns the time
/// spent in PostgreSQL (generating the records is not counted) and the bytes
/// of table, TOAST and indexes.
pub async fn load(cluster: &Cluster, firm: &Firm) -> anyhow::Result<(Duration, u64)> {
    let client = cluster.connect().await?;
    client.batch_execute(SCHEMA).await.context("creating the PostgreSQL schema")?;
    let statement = client.prepare(INSERT).await.context("preparing the PostgreSQL insert")?;
    let mut spent = Duration::ZERO;
    for batch in doc_batches(firm, LOAD_BATCH) {
        let batch = batch?;
        let t = Instant::now();
        insert(&client, &statement, &batch).await?;
        spent += t.elapsed();
    }
    let t = Instant::now();
    client.batch_execute(INDEXES).await.context("building the PostgreSQL indexes")?;
    spent += t.elapsed();
    let row = client.query_one("SELECT pg_total_relation_size('docs')", &[]).await?;
    let bytes: i64 = row.get(0);
    Ok((spent, u64::try_from(bytes).unwrap_or(0)))
}

/// A prefix query against the English-stemmed lexemes: stemmed (`mary:*` is
/// `mari:*`) or as typed (`a:*`, `an:*` are English stop words), either matches.
fn prefix_query(param: &str) -> String {
    format!("(SELECT to_tsquery('english', {param}::text) || to_tsquery('simple', {param}::text) AS q) AS t")
}

/// A SQL text with its parameters, built clause by clause.
#[derive(Default)]
struct Sql {
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    /// Adds a parameter; its placeholder.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// `FROM`, `WHERE` and the rank expression of `query`'s text and filters.
    fn matching(&mut self, query: &Query) -> (String, String) {
        let (from, mut condition, rank) = match &query.pg {
            PgText::Web(text) => {
                let p = self.param(text.clone());
                (
                    "docs, websearch_to_tsquery('english', ".to_string() + &p + ") q",
                    "tsv @@ q".into(),
                    "ts_rank_cd(tsv, q)".into(),
                )
            }
            PgText::Prefix(text) => {
                let p = self.param(text.clone());
                (format!("docs, {}", prefix_query(&p)), "tsv @@ q".into(), "ts_rank_cd(tsv, q)".into())
            }
            PgText::Similar(text) => {
                let p = self.param(text.clone());
                ("docs".to_string(), format!("{p} <% names"), format!("word_similarity({p}, names)"))
            }
        };
        condition.push_str(&self.filters(&query.filters));
        (format!("{from} WHERE {condition}"), rank)
    }

    fn filters(&mut self, f: &Filters) -> String {
        let mut sql = String::new();
        if !f.kinds.is_empty() {
            let kinds: Vec<String> = f.kinds.iter().map(|k| k.to_string()).collect();
            sql += &format!(" AND kind = ANY({}::text[])", self.param(kinds));
        }
        if let Some(s) = f.status {
            sql += &format!(" AND status = {}::text", self.param(s.to_string()));
        }
        if let Some(a) = &f.practice_area {
            sql += &format!(" AND practice_area = {}::text", self.param(a.clone()));
        }
        if let Some(c) = f.client_id {
            sql += &format!(" AND client_id = {}::bigint", self.param(c));
        }
        if let Some(d) = &f.from {
            sql += &format!(" AND day >= ({}::text)::date", self.param(d.clone()));
        }
        if let Some(d) = &f.to {
            sql += &format!(" AND day <= ({}::text)::date", self.param(d.clone()));
        }
        if let Some(b) = f.billed {
            sql += &format!(" AND billed = {}::bool", self.param(b));
        }
        sql
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// One connection, with its prepared statements.
pub struct PgClient {
    client: tokio_postgres::Client,
    statements: HashMap<String, Statement>,
}

impl PgClient {
    pub async fn connect(cluster: &Cluster) -> anyhow::Result<Client> {
        Ok(Box::new(PgClient { client: cluster.connect().await?, statements: HashMap::new() }))
    }

    async fn statement(&mut self, sql: &str) -> anyhow::Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await.with_context(|| format!("preparing {sql}"))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Top 20 with the total, and the facet counts (pipelined on the connection).
    async fn search(&mut self, query: &Query) -> anyhow::Result<u64> {
        let mut sql = Sql::default();
        let (matching, rank) = sql.matching(query);
        let order = if query.date_desc { "day DESC NULLS LAST, id DESC" } else { "r DESC" };
        let top = format!(
            "SELECT kind, id, title, {rank} AS r, count(*) OVER () AS total FROM {matching} ORDER BY {order} LIMIT {LIMIT}"
        );
        let top = self.statement(&top).await?;
        let mut facets = Vec::new();
        if query.facets {
            for facet in FACETS {
                facets
                    .push(self.statement(&format!("SELECT {facet}, count(*) FROM {matching} GROUP BY {facet}")).await?);
            }
        }
        let params = sql.refs();
        let client = &self.client;
        let (rows, _) = tokio::try_join!(
            client.query(&top, &params),
            futures_util::future::try_join_all(facets.iter().map(|s| client.query(s, &params)))
        )?;
        Ok(rows.first().map_or(0, |r| u64::try_from(r.get::<_, i64>("total")).unwrap_or(0)))
    }

    async fn suggest(&mut self, s: &Suggest) -> anyhow::Result<u64> {
        let sql = format!(
            "SELECT kind, id, title, ts_rank_cd(tsv, q) AS r FROM docs, {} \
             WHERE kind IN ('matter', 'contact', 'user') AND tsv @@ q ORDER BY r DESC LIMIT {SUGGEST_LIMIT}",
            prefix_query("$1")
        );
        let statement = self.statement(&sql).await?;
        Ok(self.client.query(&statement, &[&s.pg]).await?.len() as u64)
    }
}

impl SearchClient for PgClient {
    fn run<'a>(&'a mut self, op: &'a Op) -> Answer<'a> {
        Box::pin(async move {
            match op {
                Op::Search(q) => self.search(q).await,
                Op::Suggest(s) => self.suggest(s).await,
            }
        })
    }
}

//! Running a list of operations on 1 or N concurrent clients of any engine and
//! summarising the latencies (p50, p99, queries per second).
use crate::mix::Op;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What answering one operation returns: the total hits it reported.
pub type Answer<'a> = Pin<Box<dyn Future<Output = anyhow::Result<u64>> + Send + 'a>>;

/// One client of an engine (its own connection).
pub trait SearchClient: Send {
    fn run<'a>(&'a mut self, op: &'a Op) -> Answer<'a>;
}

pub type Client = Box<dyn SearchClient>;

/// Latencies of one run.
#[derive(Debug, Default)]
pub struct Run {
    pub latencies: Vec<Duration>,
    pub wall: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Run {
    /// The `q` quantile (0..=1) by nearest rank; zero when nothing ran.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    fn add(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// Each client runs `ops` `passes` times, client `i` starting at its own
/// offset so concurrent clients do not all send the same query at once.
pub async fn run(clients: Vec<Client>, ops: Arc<Vec<Op>>, passes: usize) -> (Run, Vec<Client>) {
    let n = clients.len().max(1);
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            let ops = ops.clone();
            tokio::spawn(async move {
                let mut run = Run::default();
                let offset = i * ops.len() / n;
                for k in 0..passes * ops.len() {
                    let op = &ops[(offset + k) % ops.len()];
                    let t = Instant::now();
                    let answer = client.run(op).await;
                    run.latencies.push(t.elapsed());
                    if let Err(e) = answer {
                        run.errors += 1;
                        run.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                (run, client)
            })
        })
        .collect();
    let mut total = Run::default();
    let mut back = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok((run, client)) => {
                total.add(run);
                back.push(client);
            }
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| format!("a client task failed: {e}"));
            }
        }
    }
    total.wall = started.elapsed();
    (total, back)
}

/// One pass over `ops` on one client, untimed (warms caches): each op's total
/// hits, or its error, for the table that shows the engines answer alike.
pub async fn totals(client: &mut Client, ops: &[Op]) -> Vec<Result<u64, String>> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        out.push(client.run(op).await.map_err(|e| format!("{e:#}")));
    }
    out
}

/// An engine's figures.
#[derive(Debug, Default)]
pub struct Figures {
    pub engine: &'static str,
    /// Records per second from start of indexing until searchable (load included for baselines).
    pub index_rate: f64,
    pub index_bytes: u64,
    pub one: Run,
    pub many: Run,
    pub typeahead: Run,
    /// Hits per query of the mix (warm-up pass), then per type-ahead request.
    pub totals: Vec<Result<u64, String>>,
    /// What this engine's figures mean (settings, what it cannot do).
    pub notes: Vec<String>,
}

/// The measuring part every engine shares once it has clients: warm-up with
/// hit counts, the mix at 1 client, the type-ahead list at 1 client, then an
/// untimed pass and the timed mix at `concurrency` clients.
pub async fn measure(
    figures: &mut Figures,
    mut connect: impl AsyncFnMut() -> anyhow::Result<Client>,
    mix: &Arc<Vec<Op>>,
    typeahead: &Arc<Vec<Op>>,
    plan: &Plan,
) -> anyhow::Result<()> {
    let mut first = connect().await?;
    figures.totals = totals(&mut first, mix).await;
    figures.totals.extend(totals(&mut first, typeahead).await);
    let (one, clients) = run(vec![first], mix.clone(), plan.passes).await;
    figures.one = one;
    let (typeahead_run, _) = run(clients, typeahead.clone(), plan.passes).await;
    figures.typeahead = typeahead_run;
    let mut many = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        many.push(connect().await?);
    }
    // Steady state, as behind a pool: every client has its connection (TLS
    // handshake, prepared statements, page cache) before the timed passes.
    let (_, warm) = run(many, mix.clone(), 1).await;
    figures.many = run(warm, mix.clone(), plan.concurrent_passes).await.0;
    Ok(())
}

/// How much to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub passes: usize,
    pub concurrency: usize,
    pub concurrent_passes: usize,
}

//! The printed result: the machine, the command, hits per query per engine
//! (to show the translations answer alike), the figures table, ratios, and
//! the goals beside docket's figures (met / not met, never asserted).
use crate::measure::{Figures, Run};
use crate::mix::Op;
use std::time::Duration;

/// What the benchmark ran with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub records: u64,
    pub engines: Vec<String>,
    pub plan: crate::measure::Plan,
}

/// docket's own extra figures.
#[derive(Clone, Debug, Default)]
pub struct StoreFigures {
    pub record_bytes: u64,
    pub store_bytes: u64,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(line.split_once(':').map_or(line, |(_, v)| v).trim().trim_matches('"').to_string())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let ram = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|kb| kb.parse::<f64>().ok()))
        .map_or("unknown".into(), |kb| format!("{:.1} GiB", kb / 1_048_576.0));
    let os = proc_field("/etc/os-release", "PRETTY_NAME=").unwrap_or_else(|| "unknown OS".into());
    let os = os.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_string();
    format!("{cores} cores (nproc), {cpu}, {ram} RAM, {os}")
}

fn command(settings: &Settings) -> String {
    let profile = if cfg!(debug_assertions) {
        "--profile dev (debug assertions on: figures are a smoke test, not representative)"
    } else {
        "(optimised profile)"
    };
    format!(
        "DOCKET_BENCH_RECORDS={} DOCKET_BENCH_ENGINES={} cargo bench --bench search {profile}",
        settings.records,
        settings.engines.join(",")
    )
}

fn short(op: &Op) -> String {
    let text = match op {
        Op::Search(q) => {
            let f = &q.filters;
            let mut s = format!("{}: `{}`", q.label, q.q);
            if !f.kinds.is_empty() {
                s.push_str(&format!(" kind={}", f.kinds.join(",")));
            }
            if q.facets {
                s.push_str(" +facets");
            }
            if q.date_desc {
                s.push_str(" sort=date_desc");
            }
            s
        }
        Op::Suggest(s) => format!("type-ahead: `{}`", s.typed),
    };
    text.replace('|', "\\|")
}

/// The hits each engine reported per operation of the warm-up pass.
pub fn print_hits(ops: &[&Op], all: &[Figures]) {
    println!("\n### Hits per query (warm-up pass; search: total, type-ahead: suggestions)\n");
    let engines: Vec<&str> = all.iter().map(|f| f.engine).collect();
    println!("| # | query | {} |", engines.join(" | "));
    println!("|---|---|{}", "---|".repeat(engines.len()));
    for (i, op) in ops.iter().enumerate() {
        let cells: Vec<String> = all
            .iter()
            .map(|f| match f.totals.get(i) {
                Some(Ok(n)) => n.to_string(),
                Some(Err(e)) => format!("error: {}", e.chars().take(80).collect::<String>().replace('|', "\\|")),
                None => "-".into(),
            })
            .collect();
        println!("| {} | {} | {} |", i + 1, short(op), cells.join(" | "));
    }
}

/// For each pair of engines: on how many operations their hit counts agree,
/// and which differ (typo tolerance, stemming and tokenising differ by design;
/// a long list points at a translation to check).
pub fn print_agreement(all: &[Figures]) {
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let differ: Vec<String> = a
                .totals
                .iter()
                .zip(&b.totals)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(k, _)| format!("#{}", k + 1))
                .collect();
            let same = a.totals.len().min(b.totals.len()) - differ.len();
            println!(
                "\n{} and {} report the same hits on {same} of {} operations{}",
                a.engine,
                b.engine,
                a.totals.len().min(b.totals.len()),
                if differ.is_empty() { String::new() } else { format!("; they differ on {}", differ.join(", ")) }
            );
        }
    }
}

fn errors(run: &Run) -> String {
    match &run.first_error {
        Some(e) => format!("{} errors, first: {e}", run.errors),
        None => String::new(),
    }
}

fn ratio(base: Duration, ours: Duration) -> String {
    if ours.is_zero() { "-".into() } else { format!("{:.1}×", base.as_secs_f64() / ours.as_secs_f64()) }
}

/// The whole report.
pub fn print(settings: &Settings, all: &[Figures], store: Option<&StoreFigures>, skipped: &[(String, String)]) {
    println!("\n## Search benchmark\n");
    println!("- machine: {}", machine());
    println!("- command: `{}`", command(settings));
    println!(
        "- records: {} (seed 1); mix of 50 queries × {} passes at 1 client, × {} per client at {} clients; type-ahead × {} passes at 1 client",
        thousands(settings.records as f64),
        settings.plan.passes,
        settings.plan.concurrent_passes,
        settings.plan.concurrency,
        settings.plan.passes
    );
    for (engine, why) in skipped {
        println!("- {engine}: {why}");
    }
    let n = settings.plan.concurrency;
    println!(
        "\n| engine | index records/s | index size | mix p50 @1 | mix p99 @1 | q/s @1 | mix p99 @{n} | q/s @{n} | type-ahead p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for f in all {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {:.0} | {} |",
            f.engine,
            thousands(f.index_rate),
            mib(f.index_bytes),
            ms(f.one.quantile(0.5)),
            ms(f.one.quantile(0.99)),
            f.one.per_second(),
            ms(f.many.quantile(0.99)),
            f.many.per_second(),
            ms(f.typeahead.quantile(0.99))
        );
    }
    let docket = all.iter().find(|f| f.engine == "docket");
    if let Some(d) = docket {
        for other in all.iter().filter(|f| f.engine != "docket") {
            println!(
                "\n{engine} p99 / docket p99: {} @1, {} @{n}, {} type-ahead; docket q/s @{n} / {engine}'s: {:.1}×",
                ratio(other.one.quantile(0.99), d.one.quantile(0.99)),
                ratio(other.many.quantile(0.99), d.many.quantile(0.99)),
                ratio(other.typeahead.quantile(0.99), d.typeahead.quantile(0.99)),
                d.many.per_second() / other.many.per_second().max(f64::EPSILON),
                engine = other.engine,
            );
        }
        goals(d, all.iter().find(|f| f.engine == "postgres"), store, n);
    }
    println!();
    for f in all {
        for note in &f.notes {
            println!("- {}: {note}", f.engine);
        }
        for run in [&f.one, &f.many, &f.typeahead] {
            let e = errors(run);
            if !e.is_empty() {
                println!("- {}: {e}", f.engine);
            }
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

fn goals(d: &Figures, pg: Option<&Figures>, store: Option<&StoreFigures>, n: usize) {
    let p99 = d.one.quantile(0.99);
    let at_n = d.many.quantile(0.99);
    let typeahead = d.typeahead.quantile(0.99);
    println!("\nGoals of issue 10 (for docket at 1,000,000 records over the API; figures, not assertions):\n");
    println!("- p99 ≤ 10 ms for the mix at 1 client: {} ({})", ms(p99), met(p99 <= Duration::from_millis(10)));
    println!("- type-ahead p99 ≤ 5 ms: {} ({})", ms(typeahead), met(typeahead <= Duration::from_millis(5)));
    println!("- p99 ≤ 50 ms at {n} clients: {} ({})", ms(at_n), met(at_n <= Duration::from_millis(50)));
    match pg {
        Some(pg) => {
            let times = pg.one.quantile(0.99).as_secs_f64() / p99.as_secs_f64().max(f64::EPSILON);
            println!("- p99 at least 10× lower than PostgreSQL's: {times:.1}× ({})", met(times >= 10.0));
        }
        None => println!("- p99 at least 10× lower than PostgreSQL's: not measured (PostgreSQL not run)"),
    }
    println!("- indexing ≥ 50,000 records/s: {} ({})", thousands(d.index_rate), met(d.index_rate >= 50_000.0));
    if let Some(s) = store {
        println!(
            "- index no larger than the store's record data: index {} vs record data {} (store file, journal included: {}) ({})",
            mib(d.index_bytes),
            mib(s.record_bytes),
            mib(s.store_bytes),
            met(d.index_bytes <= s.record_bytes)
        );
    }
}

//! Logs and metrics.
//!
//! Logs: tracing with JSON lines on stdout by default (human format on request);
//! each request runs in a span carrying its request id, so every line of a
//! request names it. Never log secrets or client data: log ids and counts.
//!
//! Metrics: a small registry rendered in the Prometheus text format at `/metrics`.
use crate::config::LogFormat;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is a tracing filter; `DOCKET_LOG`
/// overrides it. Safe to call twice (the second call is ignored).
pub fn init_logging(format: LogFormat, level: &str) {
    let from_env = std::env::var("DOCKET_LOG").ok().map(|f| EnvFilter::try_new(&f).map_err(|e| (f, e.to_string())));
    let mut refused = None;
    let filter = match from_env {
        Some(Ok(filter)) => filter,
        other => {
            refused = other.and_then(Result::err);
            EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Human => builder.try_init(),
    };
    if let Some((value, problem)) = refused {
        tracing::warn!(
            "DOCKET_LOG={value:?} is not a valid filter ({problem}); using log.level {level:?}. Fix: a filter such as `info` or `docket=debug,info`"
        );
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 11] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Family<T> {
    help: &'static str,
    series: BTreeMap<Labels, T>,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<&'static str, Family<u64>>,
    gauges: BTreeMap<&'static str, Family<f64>>,
    histograms: BTreeMap<&'static str, Family<Histogram>>,
}

/// Counters, gauges and histograms shared by every part of the appliance.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Registry>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Adds `by` to a counter.
    pub fn count(&self, name: &'static str, help: &'static str, labels: Labels, by: u64) {
        self.with(|r| {
            let family = r.counters.entry(name).or_default();
            family.help = help;
            *family.series.entry(labels).or_default() += by;
        });
    }

    /// Sets a gauge.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: Labels, value: f64) {
        self.with(|r| {
            let family = r.gauges.entry(name).or_default();
            family.help = help;
            family.series.insert(labels, value);
        });
    }

    /// Records one observation, in seconds.
    pub fn observe(&self, name: &'static str, help: &'static str, labels: Labels, seconds: f64) {
        self.with(|r| {
            let family = r.histograms.entry(name).or_default();
            family.help = help;
            let h = family.series.entry(labels).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        });
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.with(|r| {
            let mut out = String::new();
            for (name, family) in &r.counters {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", family.help);
                for (labels, v) in &family.series {
                    let _ = writeln!(out, "{name}{} {v}", render_labels(labels, None));
                }
            }
            for (name, family) in &r.gauges {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} gauge", family.help);
                for (labels, v) in &family.series {
                    let _ = writeln!(out, "{name}{} {v}", render_labels(labels, None));
                }
            }
            for (name, family) in &r.histograms {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", family.help);
                for (labels, h) in &family.series {
                    for (i, bound) in BUCKETS.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            render_labels(labels, Some(&bound.to_string())),
                            h.counts[i]
                        );
                    }
                    let _ = writeln!(out, "{name}_bucket{} {}", render_labels(labels, Some("+Inf")), h.count);
                    let _ = writeln!(out, "{name}_sum{} {}", render_labels(labels, None), h.sum);
                    let _ = writeln!(out, "{name}_count{} {}", render_labels(labels, None), h.count);
                }
            }
            out
        })
    }
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.count("docket_http_requests_total", "Requests.", vec![("route", "a\"b".into())], 2);
        m.observe("docket_http_request_duration_seconds", "Latency.", vec![("route", "x".into())], 0.02);
        m.gauge("docket_up", "Up.", vec![], 1.0);
        let text = m.render();
        assert!(text.contains("docket_http_requests_total{route=\"a\\\"b\"} 2"), "{text}");
        assert!(text.contains("docket_http_request_duration_seconds_bucket{route=\"x\",le=\"0.025\"} 1"), "{text}");
        assert!(text.contains("docket_http_request_duration_seconds_bucket{route=\"x\",le=\"0.01\"} 0"), "{text}");
        assert!(text.contains("# TYPE docket_up gauge\ndocket_up 1"), "{text}");
    }
}

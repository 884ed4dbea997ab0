//! Costs on the sign-in and request paths, as figures (not a timed test):
//! `cargo bench --bench auth`.
//!
//! - argon2id hash and verify with the production parameters;
//! - one TOTP check;
//! - authenticating an API token (SHA-256 + one store lookup), against a
//!   baseline of the bare SHA-256 measured in the same run.
use docket::auth::{passwords, tokens};
use docket::clock::Clock;
use docket::store::{OrgTask, OrgTaskContext, Store};
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<R>(runs: usize, mut f: impl FnMut() -> R) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    println!(
        "argon2id parameters: m = {} KiB, t = {}, p = {}",
        passwords::MEMORY_KIB,
        passwords::PASSES,
        passwords::LANES
    );
    let hash = passwords::hash("correct horse battery staple").expect("hash");
    let h = time(15, || passwords::hash("correct horse battery staple"));
    let v = time(15, || passwords::verify("correct horse battery staple", &hash));
    println!("argon2id hash:   {:>8.1} ms (median of 15)", h.as_secs_f64() * 1e3);
    println!("argon2id verify: {:>8.1} ms (median of 15)", v.as_secs_f64() * 1e3);

    let secret = passwords::generate_totp_secret();
    let t = time(1000, || passwords::totp_check(&secret, "123456", 1_800_000_000));
    println!("TOTP check:      {:>8.1} µs (median of 1000)", t.as_secs_f64() * 1e6);

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.redb"), Clock::system()).expect("store");
    let ctx = OrgTaskContext::new(OrgTask::Test);
    let org = docket::control::create_org(&store, &ctx, "bench", "Bench LLP").expect("org");
    for i in 0..1000 {
        tokens::create_service(&store, &ctx, org.id, &format!("t{i}"), "staff", None).expect("token");
    }
    let (token, _) = tokens::create_service(&store, &ctx, org.id, "probe", "staff", None).expect("token");
    tokens::authenticate(&store, token.expose()).expect("auth");
    let a = time(2000, || tokens::authenticate(&store, token.expose()));
    let base = time(2000, || docket::auth::secret_hash(token.expose()));
    println!(
        "token authenticate (1001 tokens in store): {:>6.1} µs; bare SHA-256 {:>5.2} µs; ratio {:.0}x",
        a.as_secs_f64() * 1e6,
        base.as_secs_f64() * 1e6,
        a.as_secs_f64() / base.as_secs_f64()
    );
}

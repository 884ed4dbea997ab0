//! Clio sync against the fake Clio on loopback: full sync equals the source;
//! incremental sync after edits, creations and deletions equals the source and
//! fetches only what changed; 429 storms, 5xx bursts, expired tokens, slow and
//! damaged responses; an interrupted pass resumes without refetching.
use docket::clio::client::{ClioClient, Endpoints, RetryPolicy, Tokens, http_client};
use docket::clio::fake::{Corruption, FakeClio};
use docket::clio::sync::{self, Checkpoint, Listing, SyncScope};
use docket::clock::Clock;
use docket::records::Kind;
use docket::store::{OrgScope, Store, SystemContext};
use docket::telemetry::Metrics;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Rig {
    fake: FakeClio,
    store: Arc<Store>,
    scope: OrgScope,
    sync: SyncScope,
    client: ClioClient,
    refreshed: Arc<Mutex<u32>>,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        rate_limit_waits: 50,
        max_retry_after: Duration::from_secs(2),
        timeout: Duration::from_secs(10),
    }
}

async fn rig(total: u64) -> Rig {
    rig_on(total, Clock::system()).await
}

/// A rig whose store and fake Clio share `clock`.
async fn rig_on(total: u64, clock: Clock) -> Rig {
    let fake = FakeClio::start_with_clock(42, total, clock.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("s.redb"), clock).unwrap());
    let ctx = SystemContext::new("test");
    let org = store.write(|w| docket::store::orgs::create(w, &ctx, "smith-jones", "Smith & Jones")).unwrap();
    let endpoints = Endpoints::at(&fake.base_url());
    let http = http_client(Duration::from_secs(10)).unwrap();
    let secret = docket::secrets::Secret::new(fake.client_secret.clone());
    let tokens = fake.grant(&http).await.unwrap();
    let refreshed = Arc::new(Mutex::new(0));
    let counter = refreshed.clone();
    let on_refresh = Arc::new(move |_: &Tokens| {
        *counter.lock().unwrap() += 1;
        Ok(())
    });
    let metrics = Arc::new(Metrics::default());
    let client = ClioClient::new(
        http,
        endpoints,
        fake.client_id.clone(),
        secret,
        tokens,
        on_refresh,
        metrics.clone(),
        fast_policy(),
    );
    let sync = SyncScope::begin(&store, &ctx, org.id).unwrap();
    Rig { fake, store, scope: ctx.org_scope(org.id), sync, client, refreshed, metrics, _dir: dir }
}

impl Rig {
    async fn sync_all(&self) -> sync::Report {
        let mut total = sync::Report::default();
        for kind in Kind::ALL {
            let r = sync::sync_kind(&self.store, &self.sync, &self.client, kind).await.unwrap();
            total.pages += r.pages;
            total.stored += r.stored;
            total.unchanged += r.unchanged;
            total.skipped += r.skipped;
        }
        total
    }

    /// Asserts the store holds exactly the fake's records (ids and etags).
    fn assert_equal(&self) {
        for kind in Kind::ALL {
            let source = self.fake.snapshot(kind);
            let stored = self.stored(kind);
            assert_eq!(stored.len(), source.len(), "{kind}: count");
            for record in &stored {
                let original =
                    source.get(&record.id).unwrap_or_else(|| panic!("{kind} {} not in the source", record.id));
                assert_eq!(record.etag.as_deref(), original["etag"].as_str(), "{kind} {}", record.id);
                assert_eq!(record.raw["updated_at"], original["updated_at"]);
            }
        }
    }

    fn checkpoint(&self, kind: Kind) -> Checkpoint {
        self.store.read(|r| sync::checkpoint(r, &self.scope, Listing::of(kind)[0])).unwrap()
    }

    fn stored(&self, kind: Kind) -> Vec<docket::records::Record> {
        self.store.read(|r| sync::records(r, &self.sync, kind)).unwrap()
    }

    async fn reconcile(&self, kind: Kind) -> sync::Reconciled {
        sync::reconcile(&self.store, &self.sync, &self.client, kind, 0.2).await.unwrap()
    }
}

#[tokio::test]
async fn full_then_incremental_sync_equals_the_source() {
    let rig = rig(3_000).await;
    let first = rig.sync_all().await;
    rig.assert_equal();
    let total = rig.fake.firm().total();
    assert_eq!(first.stored, total, "every record stored once");
    assert_eq!(first.skipped, 0);
    let calls = rig.fake.api_calls();
    let m = rig
        .store
        .read(|r| sync::record(r, &rig.sync, Kind::Matter, &rig.fake.firm().id(Kind::Matter, 0).to_string()))
        .unwrap()
        .unwrap();
    assert!(
        m.raw["client"]["name"].is_string() && m.raw["practice_area"]["name"].is_string(),
        "nested fields: {}",
        m.raw
    );

    // Random edits, creations and deletions at the source.
    let firm = rig.fake.firm();
    let mut changed = 0;
    for (i, kind) in Kind::ALL.iter().enumerate() {
        let n = firm.count(*kind);
        for k in 0..3 {
            assert!(rig.fake.edit(*kind, firm.id(*kind, (k * 37 + i as u64 * 11) % n)));
            changed += 1;
        }
        rig.fake.create(*kind);
        changed += 1;
        assert!(rig.fake.delete(*kind, firm.id(*kind, (i as u64 * 13 + 5) % n)));
    }
    let second = rig.sync_all().await;
    assert_eq!(second.stored, changed, "only changed records are written");
    assert!(rig.fake.api_calls() - calls < 20, "an incremental pass costs a page per kind, not a full sync");
    let mut deleted = 0;
    for kind in Kind::ALL {
        deleted += rig.reconcile(kind).await.deleted;
    }
    assert_eq!(deleted, Kind::ALL.len() as u64, "one deletion per kind found");
    rig.assert_equal();
    let again = rig.sync_all().await;
    assert_eq!(again.stored, 0, "nothing new: nothing written");
    assert!(rig.checkpoint(Kind::Activity).last_success_at.is_some());
}

#[tokio::test]
async fn storms_bursts_expiry_and_damaged_pages_are_survived() {
    let rig = rig(2_000).await;
    rig.fake.set_faults(|f| {
        f.rate_limit_per_minute = Some(4);
        f.rate_window = Duration::from_secs(1);
        // Without X-RateLimit-* the client cannot pace itself and meets 429 storms.
        f.rate_headers = false;
        // Two 503s and a truncated body on the first request: three failures, under the four attempts.
        f.fail_next = 2;
        f.delay = Duration::from_millis(5);
        f.corrupt_next = vec![Corruption::Truncated, Corruption::WrongType, Corruption::MissingId];
    });
    let report = rig.sync_all().await;
    assert_eq!(report.skipped, 2, "one mistyped and one id-less record skipped, nothing else");
    let metrics = rig.metrics.render();
    for name in ["docket_clio_rate_limited_total", "docket_clio_retries_total", "docket_clio_request_seconds"] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    rig.fake.set_faults(|f| f.rate_limit_per_minute = None);
    rig.fake.expire_access_tokens();
    rig.fake.edit(Kind::Matter, rig.fake.firm().id(Kind::Matter, 1));
    let after = sync::sync_kind(&rig.store, &rig.sync, &rig.client, Kind::Matter).await.unwrap();
    assert_eq!(after.stored, 1);
    assert_eq!(*rig.refreshed.lock().unwrap(), 1, "a 401 refreshes the token once and goes on");
    // The two damaged records come back on a full reconcile-and-resync; the store equals the source.
    for kind in Kind::ALL {
        rig.reconcile(kind).await;
    }
    let snapshot_counts: u64 = Kind::ALL.iter().map(|k| rig.fake.snapshot(*k).len() as u64).sum();
    let stored: u64 = Kind::ALL.iter().map(|k| rig.stored(*k).len() as u64).sum();
    assert_eq!(stored + 2, snapshot_counts, "exactly the two damaged records are missing");
}

#[tokio::test]
async fn an_interrupted_pass_resumes_where_it_stopped() {
    let rig = rig(5_000).await;
    let kind = Kind::Activity;
    let pages_needed = rig.fake.firm().count(kind).div_ceil(200);
    // Let four pages through, then fail every request until the client gives up.
    let before = rig.fake.api_calls();
    let probe = sync::sync_kind(&rig.store, &rig.sync, &rig.client, Kind::User).await.unwrap();
    assert_eq!(probe.pages, 1);
    let handle = {
        let fake = rig.fake.clone();
        tokio::spawn(async move {
            loop {
                if fake.api_calls() >= before + 1 + 4 {
                    fake.set_faults(|f| f.fail_next = 1_000);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let failed = sync::sync_kind(&rig.store, &rig.sync, &rig.client, kind).await;
    handle.await.unwrap();
    assert!(failed.is_err(), "the pass stops when Clio stays down");
    let cp = rig.checkpoint(kind);
    assert!(cp.next_url.is_some(), "the checkpoint points at the next page");
    assert!(cp.last_error.as_deref().unwrap_or("").contains("attempts"), "{:?}", cp.last_error);
    let served = cp.pages;
    assert!(served >= 1 && served < pages_needed, "{served} of {pages_needed}");
    rig.fake.set_faults(|f| f.fail_next = 0);
    let calls = rig.fake.api_calls();
    let resumed = sync::sync_kind(&rig.store, &rig.sync, &rig.client, kind).await.unwrap();
    assert_eq!(resumed.pages, pages_needed - served, "completed pages are not fetched again");
    assert_eq!(rig.fake.api_calls() - calls, pages_needed - served);
    assert_eq!(resumed.unchanged, 0, "no record was fetched twice");
    let stored = rig.stored(kind);
    assert_eq!(stored.len() as u64, rig.fake.firm().count(kind), "no duplicates, nothing missing");
}

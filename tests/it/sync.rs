//! Clio sync against the fake Clio on loopback: full sync equals the source;
//! incremental sync after edits, creations and deletions equals the source and
//! fetches only what changed; 429 storms, 5xx bursts, expired tokens, slow and
//! damaged responses; an interrupted pass resumes without refetching.
use docket::clio::client::{ClioClient, Endpoints, RetryPolicy, Tokens, http_client};
use docket::clio::fake::{Corruption, FakeClio};
use docket::clio::sync::{self, Checkpoint, Listing, SyncScope};
use docket::clock::Clock;
use docket::records::Kind;
use docket::store::{OrgScope, OrgTask, OrgTaskContext, Store};
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
    let ctx = OrgTaskContext::new(OrgTask::Test);
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
    crate::data::assert_index_matches(&rig.store, &rig.scope);
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
    // The two damaged records are missing until the reconcile, which fetches what Clio lists and the store lacks.
    let snapshot_counts: u64 = Kind::ALL.iter().map(|k| rig.fake.snapshot(*k).len() as u64).sum();
    let stored: u64 = Kind::ALL.iter().map(|k| rig.stored(*k).len() as u64).sum();
    assert_eq!(stored + 2, snapshot_counts, "exactly the two damaged records are missing");
    let mut refetched = 0;
    for kind in Kind::ALL {
        refetched += rig.reconcile(kind).await.refetched;
    }
    assert_eq!(refetched, 2, "the reconcile brings both back");
    rig.assert_equal();
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

/// 2026-01-01T00:00:00Z: later than every record of the generated firm.
fn fixed_clock() -> Clock {
    Clock::fixed(time::OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap())
}

#[tokio::test]
async fn edits_behind_the_cursor_of_a_long_pass_are_fetched_by_the_next() {
    let clock = fixed_clock();
    let rig = rig_on(2_000, clock.clone()).await;
    let kind = Kind::Activity;
    let firm = rig.fake.firm();
    assert!(firm.count(kind) > 400, "the pass takes several pages");
    let (behind, ahead) = (firm.id(kind, 5), firm.id(kind, firm.count(kind) - 1));
    // Once the first page is served: an edit behind the cursor, then, longer
    // than the overlap later, one ahead of it (which this pass does fetch).
    let (fake, c) = (rig.fake.clone(), clock.clone());
    rig.fake.after_call(rig.fake.api_calls() + 1, move || {
        c.advance(Duration::from_secs(10));
        assert!(fake.edit(kind, behind));
        c.advance(Duration::from_secs(2 * sync::OVERLAP_SECONDS as u64));
        assert!(fake.edit(kind, ahead));
    });
    sync::sync_kind(&rig.store, &rig.sync, &rig.client, kind).await.unwrap();
    let etag = |id: u64| {
        let stored = rig.store.read(|r| sync::record(r, &rig.sync, kind, &id.to_string())).unwrap().unwrap();
        (stored.etag, rig.fake.snapshot(kind)[&id.to_string()]["etag"].as_str().map(str::to_owned))
    };
    let (stored, source) = etag(ahead);
    assert_eq!(stored, source, "the edit ahead of the cursor came with the pass");
    let (stored, source) = etag(behind);
    assert_ne!(stored, source, "the edit behind the cursor was not (it came after its page)");

    clock.advance(Duration::from_secs(60));
    let next = sync::sync_kind(&rig.store, &rig.sync, &rig.client, kind).await.unwrap();
    let (stored, source) = etag(behind);
    assert_eq!(stored, source, "the next pass starts from when the last one started, so it fetches the edit");
    assert_eq!(next.stored, 1, "and only the edit is written");
    let cp = rig.checkpoint(kind);
    let started = docket::timestamp::Timestamp::from_micros(clock.now_micros());
    assert_eq!(cp.synced_through, Some(started), "the watermark is when the pass started, not a record's time");
}

#[tokio::test]
async fn notes_sync_per_type_with_a_checkpoint_each() {
    let rig = rig(2_000).await;
    rig.sync_all().await;
    let source = rig.fake.snapshot(Kind::Note);
    let stored = rig.stored(Kind::Note);
    assert_eq!(stored.len(), source.len(), "every note of both types");
    for t in sync::NOTE_TYPES {
        let listing = Listing { kind: Kind::Note, note_type: Some(t) };
        let cp = rig.store.read(|r| sync::checkpoint(r, &rig.scope, listing)).unwrap();
        let of_type = source.values().filter(|n| n["type"] == t).count() as u64;
        assert!(of_type > 0 && cp.full_done && cp.last_error.is_none(), "{t}: {cp:?}");
        assert_eq!(cp.stored, of_type, "{t}: its own checkpoint counts its own notes");
    }
    // The deletion reconcile lists both types too: a deleted note of each type is found.
    let of = |t: &str| source.iter().find(|(_, n)| n["type"] == t).map(|(id, _)| id.parse::<u64>().unwrap()).unwrap();
    assert!(rig.fake.delete(Kind::Note, of("Matter")) && rig.fake.delete(Kind::Note, of("Contact")));
    assert_eq!(rig.reconcile(Kind::Note).await, sync::Reconciled { deleted: 2, held: None, refetched: 0 });
    assert_eq!(rig.stored(Kind::Note).len(), source.len() - 2);
}

#[tokio::test]
async fn a_short_listing_is_held_until_a_second_listing_agrees_or_an_admin_confirms() {
    let rig = rig(2_000).await;
    rig.sync_all().await;
    let kind = Kind::Matter;
    let firm = rig.fake.firm();
    let total = firm.count(kind);
    let held = |rig: &Rig| rig.store.read(|r| sync::deletions(r, &rig.scope, kind)).unwrap().held;

    // A bad answer: Clio lists nothing. Nothing is deleted; the hold is recorded.
    rig.fake.set_faults(|f| f.empty_lists = true);
    assert_eq!(rig.reconcile(kind).await, sync::Reconciled { deleted: 0, held: Some(total), refetched: 0 });
    assert_eq!(rig.stored(kind).len() as u64, total, "the firm's matters are all still there");
    assert_eq!(held(&rig).map(|h| (h.count, h.of)), Some((total, total)));
    assert_eq!(rig.reconcile(kind).await.held, Some(total), "a second empty listing does not agree: only an admin can");
    // The next listing is whole again: nothing to delete, the hold is dropped.
    rig.fake.set_faults(|f| f.empty_lists = false);
    assert_eq!(rig.reconcile(kind).await, sync::Reconciled { deleted: 0, held: None, refetched: 0 });
    assert_eq!((rig.stored(kind).len() as u64, held(&rig)), (total, None));

    // A real mass deletion at Clio: held once, deleted when a second listing agrees.
    for i in 0..total / 2 {
        assert!(rig.fake.delete(kind, firm.id(kind, i)));
    }
    assert_eq!(rig.reconcile(kind).await.held, Some(total / 2));
    assert_eq!(rig.stored(kind).len() as u64, total);
    assert_eq!(rig.reconcile(kind).await, sync::Reconciled { deleted: total / 2, held: None, refetched: 0 });

    // Held, then confirmed by an admin: the next listing deletes even though it differs a little.
    let left = total - total / 2;
    for i in total / 2..total / 2 + left / 2 {
        rig.fake.delete(kind, firm.id(kind, i));
    }
    assert_eq!(rig.reconcile(kind).await.held, Some(left / 2));
    let confirmed = rig.store.write(|w| sync::confirm_held(w, &rig.scope, "user:admin")).unwrap();
    assert_eq!(confirmed, vec![(kind, left / 2)]);
    assert!(rig.store.read(|r| sync::confirmation_pending(r, &rig.scope)).unwrap());
    rig.fake.delete(kind, firm.id(kind, total - 1));
    assert_eq!(rig.reconcile(kind).await, sync::Reconciled { deleted: left / 2 + 1, held: None, refetched: 0 });
    assert!(!rig.store.read(|r| sync::confirmation_pending(r, &rig.scope)).unwrap());
    let done = rig.store.read(|r| sync::deletions(r, &rig.scope, kind)).unwrap();
    assert_eq!(done.deleted, total / 2 + left / 2 + 1, "only deletes that removed a row are counted");
    assert_eq!(rig.stored(kind).len(), rig.fake.snapshot(kind).len());
}

#[tokio::test]
async fn a_record_written_after_the_listing_began_is_not_deleted_by_it() {
    let rig = rig(2_000).await;
    rig.sync_all().await;
    let kind = Kind::Matter;
    // While the id listing is answered, Clio creates a matter and its webhook
    // stores it: the listing (taken before) does not have it.
    let (fake, store, sync) = (rig.fake.clone(), rig.store.clone(), rig.sync.clone());
    let created = Arc::new(Mutex::new(None));
    let seen = created.clone();
    rig.fake.after_call(rig.fake.api_calls() + 1, move || {
        let id = fake.create(kind).to_string();
        let raw = fake.snapshot(kind)[&id].clone();
        let record = docket::records::Record::from_clio(kind, raw).unwrap();
        assert!(sync::store_one(&store, &sync, record).unwrap());
        *seen.lock().unwrap() = Some(id);
    });
    assert_eq!(rig.reconcile(kind).await, sync::Reconciled { deleted: 0, held: None, refetched: 0 });
    let id = created.lock().unwrap().clone().expect("the hook ran during the listing");
    assert!(rig.store.read(|r| sync::record(r, &rig.sync, kind, &id)).unwrap().is_some(), "kept");
    rig.assert_equal();
}

#[tokio::test]
async fn a_disconnect_fences_the_pages_of_a_pass_in_flight() {
    let rig = rig(2_000).await;
    let kind = Kind::Activity;
    // The firm disconnects once Clio has answered the first page, before docket stores it.
    let (store, scope) = (rig.store.clone(), rig.scope.clone());
    rig.fake.after_call(rig.fake.api_calls() + 1, move || {
        store.write(|w| sync::bump_generation(w, &scope)).unwrap();
    });
    let fenced = sync::sync_kind(&rig.store, &rig.sync, &rig.client, kind).await;
    assert!(matches!(fenced, Err(sync::SyncError::Fenced)), "{fenced:?}");
    assert!(rig.stored(kind).is_empty(), "no page landed after the disconnect");
    let cp = rig.checkpoint(kind);
    assert_eq!((cp.pages, cp.last_error), (0, None), "nothing at all was written");
    let reconcile = sync::reconcile(&rig.store, &rig.sync, &rig.client, kind, 0.2).await;
    assert!(matches!(reconcile, Err(sync::SyncError::Fenced)), "deletes are fenced too");
    // A sync that begins after the disconnect (a reconnect) writes again.
    let fresh = SyncScope::begin(&rig.store, &OrgTaskContext::new(OrgTask::Test), rig.scope.org()).unwrap();
    let report = sync::sync_kind(&rig.store, &fresh, &rig.client, kind).await.unwrap();
    assert_eq!(report.stored, rig.fake.firm().count(kind));
}

#[tokio::test]
async fn the_fake_is_as_strict_as_clio() {
    let clock = fixed_clock();
    let rig = rig_on(500, clock.clone()).await;
    let http = http_client(Duration::from_secs(10)).unwrap();
    let tokens = rig.fake.grant(&http).await.unwrap();
    let token = tokens.access.expose().to_string();
    let api = |path: &str| format!("{}/api/v4/{path}", rig.fake.base_url());
    let get = async |path: &str, headers: &[(&str, &str)]| {
        let mut req = http.get(api(path)).bearer_auth(&token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let (status, head) = (resp.status().as_u16(), resp.headers().clone());
        (status, head, resp.json::<serde_json::Value>().await.unwrap_or_default())
    };
    let status = async |path: &str| get(path, &[]).await.0;
    // Notes need a type.
    assert_eq!(status("notes.json?fields=id").await, 400);
    assert_eq!(status("notes.json?fields=id&type=Other").await, 400);
    assert_eq!(status("notes?fields=id&type=Contact").await, 200, "with or without .json");
    // fields.
    let (s, _, body) = get("matters.json?fields=id,bogus", &[]).await;
    assert_eq!((s, body["error"]["type"].as_str()), (400, Some("InvalidFields")));
    assert_eq!(status("matters.json?fields=id,description{id}").await, 400, "braces on a plain field");
    assert_eq!(status("matters.json?fields=id,client{id,company{id}}").await, 400, "two levels");
    assert_eq!(status("matters.json?fields=id,matter_stage{id}").await, 200, "an association the firm leaves empty");
    let (_, _, body) = get("matters.json?limit=1", &[]).await;
    assert_eq!(body["data"][0].as_object().unwrap().len(), 2, "id and etag only without fields: {body}");
    // Paging and filters.
    assert_eq!(status("matters.json?limit=201").await, 400);
    assert_eq!(status("users.json?limit=2000").await, 200);
    assert_eq!(status("matters.json?order=display_number(asc)").await, 400, "other orders need offset");
    let (s, _, body) = get("activities.json?offset=9900&limit=200", &[]).await;
    assert_eq!((s, body["error"]["type"].as_str()), (422, Some("ArgumentError")));
    assert_eq!(status("matters.json?offset=0&page_token=x").await, 400);
    let (_, _, first) = get("matters.json?fields=id&limit=3&offset=3", &[]).await;
    let (_, _, cursor) = get("matters.json?fields=id&limit=6", &[]).await;
    assert_eq!(first["data"].as_array().unwrap()[..], cursor["data"].as_array().unwrap()[3..], "offset paging");
    assert_eq!(status("matters.json?updated_since=2024-01-01").await, 400, "a date is not a date-time");
    assert_eq!(status("matters.json?updated_since=2024-01-01T00:00:00-05:00").await, 200);
    let (_, _, created) = get("matters.json?created_since=2100-01-01T00:00:00Z", &[]).await;
    assert_eq!((created["data"].as_array().unwrap().len(), &created["meta"]["records"]), (0, &serde_json::json!(0)));
    // ids[] selects records (at most 200); page tokens die after their lifetime.
    let (first_id, second_id) = (rig.fake.firm().id(Kind::Matter, 1), rig.fake.firm().id(Kind::Matter, 4));
    let (s, _, picked) = get(&format!("matters.json?fields=id&ids%5B%5D={first_id}&ids%5B%5D={second_id}"), &[]).await;
    assert_eq!((s, picked["data"].as_array().unwrap().len()), (200, 2), "{picked}");
    let many: String = (0..201).map(|i| format!("&ids%5B%5D={i}")).collect();
    assert_eq!(status(&format!("matters.json?fields=id{many}")).await, 400);
    assert_eq!(status("matters.json?fields=id&ids%5B%5D=x").await, 400);
    rig.fake.set_faults(|f| f.page_token_ttl = Some(Duration::from_secs(60)));
    let (_, _, page) = get("matters.json?fields=id&limit=2", &[]).await;
    let next = page["meta"]["paging"]["next"].as_str().unwrap().trim_start_matches(&api("")).to_string();
    assert_eq!(status(&next).await, 200, "a fresh page token works");
    clock.advance(Duration::from_secs(61));
    let (s, _, dead) = get(&next, &[]).await;
    assert_eq!((s, dead["error"]["type"].as_str()), (400, Some("InvalidPageToken")), "a stale one does not");
    rig.fake.set_faults(|f| f.page_token_ttl = None);
    // Versions.
    assert_eq!(get("matters.json", &[("x-api-version", "3.9.0")]).await.0, 410);
    let (s, head, _) = get("matters.json", &[("x-api-version", "4.0.13")]).await;
    assert_eq!((s, head.get("x-api-version").and_then(|v| v.to_str().ok())), (200, Some("4.0.13")));
    // A single record: ETag, Last-Modified, 304.
    let id = rig.fake.firm().id(Kind::Matter, 0);
    let (s, head, _) = get(&format!("matters/{id}.json?fields=id,etag"), &[]).await;
    let etag = head.get("etag").and_then(|v| v.to_str().ok()).unwrap().to_string();
    assert!(s == 200 && etag.starts_with('"') && head.contains_key("last-modified"), "{head:?}");
    assert_eq!(get(&format!("matters/{id}.json"), &[("if-none-match", &etag)]).await.0, 304);
    assert_eq!(http.get(api("matters.json")).send().await.unwrap().status(), 401, "a token is required");
    // OAuth: form-encoded, codes single-use and short-lived.
    let token_url = format!("{}/oauth/token", rig.fake.base_url());
    let (id_, secret) = (rig.fake.client_id.clone(), rig.fake.client_secret.clone());
    let redirect = "https://docket.test/cb";
    let code = rig.fake.approve(redirect);
    let form = |code: &str| {
        [
            ("client_id", id_.clone()),
            ("client_secret", secret.clone()),
            ("grant_type", "authorization_code".into()),
            ("code", code.into()),
            ("redirect_uri", redirect.into()),
        ]
    };
    let as_json = http.post(&token_url).json(&serde_json::json!({"client_id": id_})).send().await.unwrap();
    assert_eq!(as_json.status(), 400, "the token endpoint takes a form");
    assert_eq!(http.post(&token_url).form(&form(&code)).send().await.unwrap().status(), 200);
    assert_eq!(http.post(&token_url).form(&form(&code)).send().await.unwrap().status(), 400, "a code is used once");
    let late = rig.fake.approve(redirect);
    clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(http.post(&token_url).form(&form(&late)).send().await.unwrap().status(), 400, "codes last 10 minutes");
    // Webhooks.
    let hook = |d: serde_json::Value| {
        http.post(api("webhooks.json")).bearer_auth(&token).json(&serde_json::json!({"data": d}))
    };
    let ok = serde_json::json!({"url": "https://docket.test/hooks/x", "model": "matter", "events": ["created"], "fields": "id,etag"});
    for (change, why) in [
        (serde_json::json!({"url": "http://docket.test/hooks/x"}), "https only"),
        (serde_json::json!({"model": "note"}), "Clio has no note webhooks"),
        (serde_json::json!({"fields": null}), "fields are required"),
        (serde_json::json!({"events": ["opened"]}), "known events only"),
        (serde_json::json!({"expires_at": "2026-03-01T00:00:00Z"}), "31 days at most"),
    ] {
        let mut d = ok.clone();
        for (k, v) in change.as_object().unwrap() {
            d[k] = v.clone();
        }
        assert_eq!(hook(d).send().await.unwrap().status(), 422, "{why}");
    }
    let made = hook(serde_json::json!({"model": 1, "url": ok["url"], "events": ok["events"], "fields": ok["fields"]}));
    let made: serde_json::Value = made.send().await.unwrap().json().await.unwrap();
    assert_eq!(made["data"]["status"], "pending", "{made}");
    let hook_id = made["data"]["id"].as_u64().unwrap();
    let (s, _, seen) = get(&format!("webhooks/{hook_id}.json?fields=id,status,expires_at"), &[]).await;
    assert_eq!((s, &seen["data"]["status"]), (200, &serde_json::json!("pending")), "{seen}");
    assert_eq!(status("webhooks.json?fields=id,bogus").await, 400);
    clock.advance(Duration::from_secs(4 * 86_400));
    assert_eq!(status(&format!("webhooks/{hook_id}.json")).await, 404, "expired (3 days by default): gone");
    let renew = http.patch(api(&format!("webhooks/{hook_id}.json"))).bearer_auth(&token);
    let renew = renew.json(&serde_json::json!({"data": {"expires_at": "2026-01-20T00:00:00Z"}})).send().await.unwrap();
    assert_eq!(renew.status(), 404, "renewing an expired subscription is a 404");
    // Deauthorize: a live token, named in the form too.
    let deauth = format!("{}/oauth/deauthorize", rig.fake.base_url());
    assert_eq!(http.post(&deauth).bearer_auth(&token).send().await.unwrap().status(), 401);
    let done = http.post(&deauth).bearer_auth(&token).form(&[("token", token.as_str())]).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(status("matters.json").await, 401, "the token is revoked");
}

/// Runs a first pass of `kind` until `pages` pages are stored, then drops it
/// mid-flight (as a SIGKILL would: every stored page committed with its checkpoint).
async fn killed_after(rig: &Rig, kind: Kind, pages: u64) {
    let (store, sync) = (rig.store.clone(), rig.sync.clone());
    let pass = sync::sync_kind(&store, &sync, &rig.client, kind);
    tokio::pin!(pass);
    loop {
        tokio::select! {
            done = &mut pass => panic!("the pass ended before it was killed: {done:?}"),
            () = tokio::time::sleep(Duration::from_millis(2)) => {
                if rig.checkpoint(kind).pages >= pages {
                    break;
                }
            }
        }
    }
    // The pass is never polled again. A page already handed to the blocking pool still commits (as it would have before a kill).
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_dead_page_token_restarts_the_listing_and_converges_after_a_kill_mid_first_sync() {
    for status in [400, 410] {
        let rig = rig(3_000).await;
        let kind = Kind::Activity;
        rig.fake.set_faults(|f| {
            f.dead_token_status = status;
            f.delay = Duration::from_millis(5);
        });
        killed_after(&rig, kind, 3).await;
        let cp = rig.checkpoint(kind);
        assert!(cp.next_url.is_some() && !cp.full_done, "killed part-way: {cp:?}");
        // While docket was down, Clio let every page token expire.
        rig.fake.expire_page_tokens();
        rig.fake.set_faults(|f| f.delay = Duration::ZERO);
        let resumed = sync::sync_kind(&rig.store, &rig.sync, &rig.client, kind).await;
        assert!(resumed.is_ok(), "{status}: the dead cursor does not wedge the kind: {resumed:?}");
        assert_eq!(rig.stored(kind).len() as u64, rig.fake.firm().count(kind), "{status}: every record stored");
        let cp = rig.checkpoint(kind);
        assert!(cp.full_done && cp.next_url.is_none() && cp.last_error.is_none(), "{cp:?}");
        assert_eq!(cp.restarts, 1);
        let reason = cp.last_restart_reason.unwrap_or_default();
        assert!(reason.contains(&status.to_string()) && reason.contains("from the beginning"), "{reason}");
        let progress = rig.store.read(|r| sync::progress(r, &rig.scope, kind)).unwrap();
        assert_eq!(progress.restarts, 1, "the sync status says so");

        // Later, mid-way through an incremental pass: it restarts from the watermark, not from scratch.
        let firm = rig.fake.firm();
        let watermark = cp.synced_through.unwrap();
        let edited: Vec<u64> = (0..500).step_by(2).map(|i| firm.id(kind, i)).collect();
        for id in &edited {
            assert!(rig.fake.edit(kind, *id));
        }
        let fake = rig.fake.clone();
        rig.fake.after_call(rig.fake.api_calls() + 1, move || fake.expire_page_tokens());
        let calls = rig.fake.api_calls();
        let report = sync::sync_kind(&rig.store, &rig.sync, &rig.client, kind).await.unwrap();
        let cp = rig.checkpoint(kind);
        assert_eq!(cp.restarts, 2);
        let from = cp.pass_since.expect("an incremental pass");
        assert!(from < watermark, "from the watermark less the overlap");
        assert!(cp.last_restart_reason.unwrap().contains(&from.to_rfc3339()));
        assert!(rig.fake.api_calls() - calls <= 6, "the restart lists only what changed since the watermark");
        assert_eq!(report.stored, edited.len() as u64, "each edit stored once");
        let source = rig.fake.snapshot(kind);
        let stored = rig.stored(kind);
        assert_eq!(stored.len(), source.len());
        assert!(stored.iter().all(|r| r.etag.as_deref() == source[&r.id]["etag"].as_str()), "equal to the source");
        crate::data::assert_index_matches(&rig.store, &rig.scope);
    }
}

#[tokio::test]
async fn the_reconcile_fetches_restored_records_and_backdated_edits() {
    let rig = rig(2_000).await;
    rig.sync_all().await;
    let firm = rig.fake.firm();
    let kind = Kind::Matter;
    let (restored, backdated, note) = (firm.id(kind, 7), firm.id(kind, 11), firm.id(Kind::Note, 3));
    assert!(rig.fake.delete(kind, restored));
    assert_eq!(rig.reconcile(kind).await.deleted, 1);
    // Restored in Clio: it comes back with its old `updated_at`, behind the watermark.
    assert!(rig.fake.restore(kind, restored));
    // An import stamps an edit a year back.
    assert!(rig.fake.edit_backdated(kind, backdated, docket::clio::generator::EPOCH + 60));
    assert!(rig.fake.edit_backdated(Kind::Note, note, docket::clio::generator::EPOCH + 60));
    let incremental = rig.sync_all().await;
    assert_eq!(incremental.stored, 0, "an incremental pass cannot see either");
    let found = rig.reconcile(kind).await;
    assert_eq!(found, sync::Reconciled { deleted: 0, held: None, refetched: 2 });
    assert_eq!(rig.reconcile(Kind::Note).await.refetched, 1, "notes are refetched by their own listing");
    rig.assert_equal();
    let stored = rig.store.read(|r| sync::record(r, &rig.sync, kind, &backdated.to_string())).unwrap().unwrap();
    assert_eq!(stored.raw, rig.fake.snapshot(kind)[&backdated.to_string()], "the whole backdated edit");
    assert_eq!(rig.reconcile(kind).await.refetched, 0, "nothing differs any more: nothing fetched");
    let state = rig.store.read(|r| sync::progress(r, &rig.scope, kind)).unwrap();
    assert_eq!(state.refetched, 2, "the sync status counts them");
    crate::data::assert_index_matches(&rig.store, &rig.scope);
}

#[tokio::test]
async fn numbers_text_and_null_versus_missing_are_kept_exactly() {
    let rig = rig(2_000).await;
    let kind = Kind::Activity;
    let firm = rig.fake.firm();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut decimals = vec![11556.236853404187];
    while decimals.len() < 80 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        decimals.push((x % 100_000_000) as f64 / 7919.0 + (x >> 40) as f64 * 1e-9);
    }
    let text = "Rene\u{301}e Mu\u{308}ller, Ümit Çelik, 山田 太郎, 🧾 \"quoted\" \\ back\u{0}slash\u{1F}";
    for (i, d) in decimals.iter().enumerate() {
        let d = *d;
        assert!(rig.fake.edit_with(kind, firm.id(kind, i as u64), move |v, _| {
            v["total"] = serde_json::json!(d);
            v["note"] = serde_json::json!(text);
            v["bill"] = serde_json::Value::Null;
            v.as_object_mut().unwrap().remove("rounded_quantity");
        }));
    }
    rig.sync_all().await;
    let source = rig.fake.snapshot(kind);
    let mut off = vec![];
    for i in 0..80 {
        let id = firm.id(kind, i).to_string();
        let stored = rig.store.read(|r| sync::record(r, &rig.sync, kind, &id)).unwrap().unwrap();
        let want = &source[&id];
        if stored.raw["total"] != want["total"] {
            off.push((want["total"].to_string(), stored.raw["total"].to_string()));
        }
        assert_eq!(stored.raw["note"], want["note"], "text code point for code point");
        assert!(
            stored.raw["bill"].is_null() && stored.raw.as_object().unwrap().contains_key("bill"),
            "null stays null"
        );
        assert!(!stored.raw.as_object().unwrap().contains_key("rounded_quantity"), "missing stays missing");
        assert_eq!(&stored.raw, want, "the whole record");
    }
    assert!(off.is_empty(), "{} of 80 decimals changed: {off:?}", off.len());
}

#[test]
fn only_the_viewer_and_the_sync_read_the_records_table() {
    // Records are read through `data::Viewer` (walls apply) or `clio::sync::SyncScope`; no other code names the table.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = ["data.rs", "clio/sync.rs"];
    let mut stack = vec![root.clone()];
    let mut offenders = vec![];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains("RECORDS") && !allowed.contains(&rel.as_str()) && !rel.starts_with("store/") {
                offenders.push(rel);
            }
        }
    }
    assert!(offenders.is_empty(), "these files reach the records table directly: {offenders:?}");
}

#[tokio::test]
async fn a_renamed_contact_reaches_the_matters_and_bills_that_name_it() {
    let rig = rig(2_000).await;
    rig.sync_all().await;
    let matters = rig.fake.snapshot(Kind::Matter);
    let (_, first) = matters.iter().next().unwrap();
    let contact = first["client"]["id"].as_u64().unwrap();
    let named: Vec<&String> = matters.iter().filter(|(_, m)| m["client"]["id"] == contact).map(|(id, _)| id).collect();
    assert!(rig.fake.edit_with(Kind::Contact, contact, |v, _| v["name"] = serde_json::json!("Ada Lovelace-Byron")));
    let renamed = rig.fake.snapshot(Kind::Matter);
    assert_eq!(renamed[named[0]]["client"]["name"], "Ada Lovelace-Byron", "Clio shows the new name in the matter");
    assert_eq!(renamed[named[0]]["etag"], first["etag"], "without a new etag or updated_at");
    let report = rig.sync_all().await;
    assert_eq!(report.stored, 1, "the pass itself brings only the contact");
    let refreshed = sync::refresh_dependants(&rig.store, &rig.sync, &rig.client).await.unwrap();
    let bills = rig.fake.snapshot(Kind::Bill).values().filter(|b| b["client"]["id"] == contact).count();
    assert_eq!(refreshed, (named.len() + bills) as u64, "every matter and bill naming the contact");
    for id in &named {
        let m = rig.store.read(|r| sync::record(r, &rig.sync, Kind::Matter, id)).unwrap().unwrap();
        assert_eq!(m.raw["client"]["name"], "Ada Lovelace-Byron", "matter {id}");
    }
    assert_eq!(sync::refresh_dependants(&rig.store, &rig.sync, &rig.client).await.unwrap(), 0, "the queue is empty");

    // Renamed again (a webhook stores it) while a refresh is fetching: that rename stays queued.
    assert!(rig.fake.edit_with(Kind::Contact, contact, |v, _| v["name"] = serde_json::json!("Second Name")));
    rig.sync_all().await;
    let (fake, store, sync) = (rig.fake.clone(), rig.store.clone(), rig.sync.clone());
    rig.fake.after_call(rig.fake.api_calls() + 1, move || {
        assert!(fake.edit_with(Kind::Contact, contact, |v, _| v["name"] = serde_json::json!("Third Name")));
        let raw = fake.snapshot(Kind::Contact)[&contact.to_string()].clone();
        let record = docket::records::Record::from_clio(Kind::Contact, raw).unwrap();
        assert!(sync::store_one(&store, &sync, record).unwrap());
    });
    sync::refresh_dependants(&rig.store, &rig.sync, &rig.client).await.unwrap();
    sync::refresh_dependants(&rig.store, &rig.sync, &rig.client).await.unwrap();
    let m = rig.store.read(|r| sync::record(r, &rig.sync, Kind::Matter, named[0])).unwrap().unwrap();
    assert_eq!(m.raw["client"]["name"], "Third Name", "the later rename was not lost");
    crate::data::assert_index_matches(&rig.store, &rig.scope);
}

#[tokio::test]
async fn a_process_killed_mid_first_sync_converges_though_its_saved_page_link_died() {
    use crate::support::{eventually, free_port, run_docket};
    let fake = FakeClio::start(31, 6_000).await.unwrap();
    fake.set_faults(|f| {
        f.delay = Duration::from_millis(15);
        f.dead_token_status = 410;
    });
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("docket.toml");
    let data = dir.path().join("data");
    let toml = format!(
        "data_dir = \"{}\"\n[tls]\nmode = \"off\"\n[server]\nlisten = [\"127.0.0.1:{port}\"]\n",
        data.display()
    );
    std::fs::write(&config, toml).unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--config".to_string(), cfg.clone()]);
        run_docket(&all.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    assert_eq!(run(&["key", "generate"]).0, 0);
    assert_eq!(run(&["org", "create", "--slug", "acme", "--name", "Acme"]).0, 0);
    let (code, out, err) = run(&["token", "create", "--org", "acme", "--role", "admin", "--name", "t"]);
    assert_eq!(code, 0, "{err}");
    let token = out.lines().next().unwrap().trim().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let ready = async || http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
    let activities = async || -> Option<serde_json::Value> {
        let st: serde_json::Value =
            http.get(format!("{base}/api/v1/clio/sync")).bearer_auth(&token).send().await.ok()?.json().await.ok()?;
        st["kinds"].as_array()?.iter().find(|k| k["kind"] == "activity").cloned()
    };
    let first = crate::crash::serve(&cfg);
    assert!(eventually(Duration::from_secs(20), ready).await, "docket serve starts");
    let settings = serde_json::json!({"location": fake.base_url(), "client_id": fake.client_id, "client_secret": fake.client_secret});
    let put = http.put(format!("{base}/api/v1/clio/connection")).bearer_auth(&token).json(&settings).send().await;
    assert_eq!(put.unwrap().status(), 200);
    let to_clio = http.get(format!("{base}/api/v1/clio/connect")).bearer_auth(&token).send().await.unwrap();
    let back = http.get(to_clio.headers()["location"].to_str().unwrap()).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(http.get(&callback).bearer_auth(&token).send().await.unwrap().status(), 303);
    let mid = eventually(Duration::from_secs(60), async || {
        activities().await.is_some_and(|a| a["in_progress"] == true && a["pages_fetched"].as_u64() >= Some(5))
    })
    .await;
    assert!(mid, "the first sync reached the middle of the activities");
    drop(first); // SIGKILL
    // While docket was down, Clio's page tokens expired: the saved link answers 410.
    fake.expire_page_tokens();
    let _second = crate::crash::serve(&cfg);
    assert!(eventually(Duration::from_secs(20), ready).await, "docket serve starts again");
    let count = fake.firm().count(Kind::Activity);
    let converged = eventually(Duration::from_secs(120), async || {
        activities().await.is_some_and(|a| a["records"].as_u64() == Some(count) && a["full_sync_done"] == true)
    })
    .await;
    let a = activities().await.unwrap_or_default();
    assert!(converged, "every activity stored after the restart: {a}");
    assert_eq!(a["listing_restarts"], 1, "{a}");
    assert!(a["last_restart_reason"].as_str().is_some_and(|r| r.contains("410")), "{a}");
    assert!(a.get("last_error").is_none(), "{a}");
}

//! Deletion on request through HTTPS: erasing the firm's cached Clio data
//! needs `data:erase` and the typed slug, removes every record from the API,
//! search and the live journal at once, keeps the sync stopped (pushed
//! changes are not kept) until someone starts it, and is audited; removing a
//! member ends their sessions and tokens at once.
use crate::clio::connect_and_sync;
use crate::support::{TestServer, client, eventually};
use docket::clio::fake::FakeClio;
use docket::clio::sync::{Pushed, SyncScope, apply_pushed};
use docket::records::{Kind, Record};
use docket::store::{OrgTask, OrgTaskContext, SystemContext, Task};
use serde_json::json;
use std::time::Duration;

const MARKER: &str = "ZQXJ-erase-marker-7731";

/// The marked contact every test here erases.
fn marked() -> serde_json::Value {
    json!({"id": 880001, "name": MARKER, "type": "Person", "updated_at": "2026-11-01T00:00:00Z"})
}

/// A server with a synced firm plus the marked contact: the server, its
/// state, the firm's id.
async fn marked_firm(fake: &FakeClio) -> (TestServer, std::sync::Arc<docket::state::AppState>, docket::store::OrgId) {
    let s = TestServer::start().await;
    connect_and_sync(&s, fake).await;
    let state = s.running.as_ref().unwrap().state.clone();
    let org = state.store.org_by_slug("smith-jones").unwrap().unwrap().id;
    let sync = SyncScope::begin(&state.store, &OrgTaskContext::new(OrgTask::Test), org).unwrap();
    let record = Record::from_clio(Kind::Contact, marked()).unwrap();
    state.store.write(|w| apply_pushed(w, &sync, Pushed::Upsert(record))).unwrap();
    (s, state, org)
}

#[tokio::test]
async fn erasing_the_firms_data_reaches_api_search_and_journal_and_stops_the_sync() {
    let fake = FakeClio::start(41, 300).await.unwrap();
    let (s, state, org) = marked_firm(&fake).await;
    let test = OrgTaskContext::new(OrgTask::Test);
    let indexed = eventually(Duration::from_secs(30), async || {
        s.get_json(&s.admin_token, &format!("/api/v1/search?q={MARKER}")).await.1["total"] == 1
    })
    .await;
    assert!(indexed);

    // Refused without the permission, without the slug, with another firm's.
    let erase = |token: &str, body: serde_json::Value| {
        client().post(s.url("/api/v1/clio/data/erase")).bearer_auth(token.to_string()).json(&body).send()
    };
    assert_eq!(erase(&s.staff_token, json!({"confirm": "smith-jones"})).await.unwrap().status(), 403);
    let manager = &s.role_tokens[&docket::auth::Role::Manager];
    assert_eq!(erase(manager, json!({"confirm": "smith-jones"})).await.unwrap().status(), 403);
    let wrong = erase(&s.admin_token, json!({"confirm": "smith"})).await.unwrap();
    assert_eq!(wrong.status(), 422);
    let text = wrong.text().await.unwrap();
    assert!(text.contains("confirm") && text.contains("smith-jones"), "names the field and the slug: {text}");
    assert_eq!(erase(&s.admin_token, json!({})).await.unwrap().status(), 400);
    let (_, before) = s.get_json(&s.admin_token, "/api/v1/contacts?limit=1").await;
    assert!(!before["items"].as_array().unwrap().is_empty(), "nothing was erased by a refusal");

    let done = erase(&s.admin_token, json!({"confirm": "smith-jones"})).await.unwrap();
    assert_eq!(done.status(), 200);
    let body: serde_json::Value = done.json().await.unwrap();
    assert_eq!(body["records"], fake.firm().total() + 1, "{body}");
    assert!(body["journal_entries"].as_u64().unwrap() > fake.firm().total());
    assert_eq!(body["sync_stopped"], true);

    // Gone from the API, at once.
    for kind in ["matters", "contacts", "activities", "bills", "users", "tasks", "calendar-entries", "notes"] {
        let (status, list) = s.get_json(&s.admin_token, &format!("/api/v1/{kind}?limit=5")).await;
        assert_eq!((status.as_u16(), list["items"].as_array().map(Vec::len)), (200, Some(0)), "{kind}: {list}");
    }
    // Gone from search.
    let unsearchable = eventually(Duration::from_secs(30), async || {
        let (status, body) = s.get_json(&s.admin_token, &format!("/api/v1/search?q={MARKER}")).await;
        status == 200 && body["total"] == 0
    })
    .await;
    assert!(unsearchable, "the erased records leave the search index");
    // Gone from the live journal: no entry still carries the record's bytes.
    let ctx = SystemContext::new(Task::Backup);
    let after = state.store.journal_start().unwrap().map_or(0, |first| first - 1);
    let batch = state.store.journal_since(&ctx, after, usize::MAX).unwrap();
    assert!(!batch.entries.is_empty());
    for entry in &batch.entries {
        if let docket::store::journal::Op::Put(bytes) = &entry.op {
            assert!(!String::from_utf8_lossy(bytes).contains(MARKER), "journal entry {} still holds it", entry.seq);
        }
    }

    // The sync stays stopped: a pushed change is not kept, the scheduled sync skips the firm.
    let sync = SyncScope::begin(&state.store, &test, org).unwrap();
    let again = Record::from_clio(Kind::Contact, marked()).unwrap();
    let kept = state.store.write(|w| apply_pushed(w, &sync, Pushed::Upsert(again))).unwrap();
    assert_eq!(kept, None, "nothing pushed is stored while the sync is stopped");
    assert!(!state.sync.connected_orgs().contains(&org), "the scheduled sync skips a stopped firm");
    // Starting a sync by hand ends the stop.
    let started = client().post(s.url("/api/v1/clio/sync")).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(started.status(), 202);
    assert!(state.sync.connected_orgs().contains(&org));

    let events = s.audit_events("clio.data.erase").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["details"]["records"], fake.firm().total() + 1);
    drop(state);
    s.stop().await;
}

#[tokio::test]
async fn removing_a_member_ends_their_sessions_and_tokens_at_once() {
    let s = TestServer::start().await;
    let (status, made) =
        s.post_json(&s.admin_token, "/api/v1/members", json!({"email": "leaver@firm.test", "role": "staff"})).await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let token = s.personal_token(&id);
    let (status, me) = s.get_json(&token, "/api/v1/me").await;
    assert_eq!(status, 200, "{me}");
    let del =
        client().delete(s.url(&format!("/api/v1/members/{id}"))).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(del.status(), 204, "{}", del.text().await.unwrap());
    let (status, _) = s.get_json(&token, "/api/v1/me").await;
    assert_eq!(status, 401, "the removed member's token stops working at once");
    s.stop().await;
}

#[tokio::test]
async fn a_restore_to_before_an_erasure_does_not_bring_the_data_back() {
    use docket::lifecycle::backup::{self, Quiet, Settings};
    use docket::lifecycle::restore::{self, RestoreOptions};
    let fake = FakeClio::start(42, 200).await.unwrap();
    let (s, state, org) = marked_firm(&fake).await;
    let test = OrgTaskContext::new(OrgTask::Test);
    // A backup taken before the erasure holds the marked record.
    let settings = Settings::from_config(&state.config).unwrap();
    let keyring = state.keys.current();
    let clock = docket::clock::Clock::system();
    let before = backup::run(&state.store, &settings, &keyring, &clock, &Quiet).unwrap();

    let done = client()
        .post(s.url("/api/v1/clio/data/erase"))
        .bearer_auth(&s.admin_token)
        .json(&json!({"confirm": "smith-jones"}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let ledger = std::fs::read_to_string(settings.dir.join(docket::lifecycle::ledger::FILE)).unwrap();
    assert!(
        ledger.contains("smith-jones") && !ledger.contains(MARKER),
        "the ledger names the erasure, never the content"
    );

    // Restore the backup from before the erasure: the ledger is re-applied before the store serves.
    let into = s.dir.path().join("restored");
    let signer = docket::lifecycle::signing::pinned(&state.config.data_dir).expect("the service pinned its signer");
    let options = RestoreOptions::new(clock.clone(), &Quiet, docket::lifecycle::backup::Trust::signer(signer));
    let identity = keyring.identity().clone();
    let restored = restore::restore(Some(&before), std::slice::from_ref(&identity), &into, &options, |_| {
        Ok::<(), restore::RestoreError>(())
    })
    .unwrap();
    drop(state);
    s.stop().await;
    let store = docket::store::Store::open(&restored.into.join("docket.redb"), clock).unwrap();
    let rows = store
        .read(|r| {
            let mut n = 0;
            docket::data::visit_records(r, &test.org_scope(org), |_| {
                n += 1;
                Ok(true)
            })?;
            Ok(n)
        })
        .unwrap();
    assert_eq!(rows, 0, "the restored store holds none of the erased records");
    let after = store.journal_start().unwrap().map_or(0, |first| first - 1);
    let batch = store.journal_since(&SystemContext::new(Task::Backup), after, usize::MAX).unwrap();
    for entry in &batch.entries {
        if let docket::store::journal::Op::Put(bytes) = &entry.op {
            assert!(!String::from_utf8_lossy(bytes).contains(MARKER), "restored journal entry {} holds it", entry.seq);
        }
    }
    // The restored search index was rebuilt from the store after the ledger: the marker is in no file of it.
    let search = restored.into.join("search");
    let mut stack = vec![search];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "{} holds it", path.display());
            }
        }
    }
}

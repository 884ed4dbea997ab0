//! The change feed and outbound webhooks, as an integrator uses them: a
//! mirror fed by the feed equals docket's copy after a Clio sync, Clio
//! webhooks, edits and deletes; walls hold in the feed; cursors are
//! tamper-evident and answer 410 once pruned; deliveries are signed, in
//! order per record, retried and visible with their attempts.
use crate::clio::connect;
use crate::data::PATHS;
use crate::support::{TestCa, TestServer, client, eventually};
use docket::clio::fake::FakeClio;
use docket::data;
use docket::records::{Kind, Record};
use docket::store::{OrgScope, OrgTask, OrgTaskContext, Store, SystemContext, Task};
use hmac::Mac as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A mirror: (kind, id) → the record as served, and the cursor it reached.
#[derive(Default)]
struct Mirror {
    records: BTreeMap<(String, String), Value>,
    cursor: Option<String>,
    deletes: Vec<(String, String)>,
    seqs: Vec<u64>,
}

impl Mirror {
    /// Reads the feed as `token` until caught up, applying every change.
    async fn catch_up(&mut self, s: &TestServer, token: &str) {
        loop {
            let path = match &self.cursor {
                Some(c) => format!("/api/v1/changes?limit=173&cursor={c}"),
                None => "/api/v1/changes?limit=173".to_string(),
            };
            let (status, page) = s.get_json(token, &path).await;
            assert_eq!(status, 200, "{path}: {page}");
            for change in page["items"].as_array().unwrap() {
                let key = (change["kind"].as_str().unwrap().to_string(), change["id"].as_str().unwrap().to_string());
                self.seqs.push(change["seq"].as_u64().unwrap());
                match change["op"].as_str().unwrap() {
                    "upsert" => {
                        self.records.insert(key, change["record"].clone());
                    }
                    "delete" => {
                        self.records.remove(&key);
                        self.deletes.push(key);
                    }
                    other => panic!("unknown op {other}"),
                }
            }
            self.cursor = Some(page["next_cursor"].as_str().expect("next_cursor is always present").to_string());
            if page["caught_up"] == true {
                return;
            }
        }
    }
}

/// docket's copy as `token` lists it: (kind, id) → record.
async fn listed(s: &TestServer, token: &str) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (kind, path) in PATHS {
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("/api/v1/{path}?limit=500&cursor={c}"),
                None => format!("/api/v1/{path}?limit=500"),
            };
            let (status, page) = s.get_json(token, &url).await;
            assert_eq!(status, 200, "{url}: {page}");
            for r in page["items"].as_array().unwrap() {
                out.insert((kind.as_str().to_string(), r["id"].as_str().unwrap().to_string()), r.clone());
            }
            match page["next_cursor"].as_str() {
                Some(n) => cursor = Some(n.to_string()),
                None => break,
            }
        }
    }
    out
}

fn assert_same(mirror: &Mirror, docket: &BTreeMap<(String, String), Value>, who: &str) {
    let missing: Vec<_> = docket.keys().filter(|k| !mirror.records.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = mirror.records.keys().filter(|k| !docket.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{who}: missing {missing:?}, extra {extra:?}");
    let differ: Vec<_> = docket.iter().filter(|(k, v)| mirror.records[*k] != **v).map(|(k, _)| k).take(5).collect();
    assert!(differ.is_empty(), "{who}: records differ: {differ:?}");
}

fn org_scope(s: &TestServer, slug: &str) -> (Arc<Store>, OrgScope) {
    let store = s.running.as_ref().unwrap().state.store.clone();
    let org = store.org_by_slug(slug).unwrap().unwrap();
    (store, OrgTaskContext::new(OrgTask::Test).org_scope(org.id))
}

#[tokio::test]
async fn a_mirror_fed_by_the_feed_converges_through_sync_webhooks_edits_and_deletes_and_walls_hold() {
    let fake = FakeClio::start(21, 600).await.unwrap();
    let s = TestServer::start().await;
    connect(&s, &fake, true).await;
    let total = fake.firm().total();
    let synced = eventually(Duration::from_secs(60), async || {
        let (_, st) = s.get_json(&s.auditor_token, "/api/v1/clio/sync").await;
        let n: u64 = st["kinds"].as_array().map_or(0, |k| k.iter().map(|k| k["records"].as_u64().unwrap_or(0)).sum());
        n == total && st["running"] == false && fake.webhooks_active() == 6
    })
    .await;
    assert!(synced, "the first sync finished and Clio's webhooks are live");

    // A service integration mirrors everything from the start of the feed.
    let mut mirror = Mirror::default();
    mirror.catch_up(&s, &s.admin_token).await;
    assert_same(&mirror, &listed(&s, &s.admin_token).await, "after the first sync");
    assert!(mirror.seqs.windows(2).all(|w| w[0] < w[1]), "commit order");

    // Edits, creations and deletions arrive by Clio webhook; then a sync.
    let firm = fake.firm();
    let (matter, contact) = (firm.id(Kind::Matter, 4), firm.id(Kind::Contact, 7));
    let activity = firm.id(Kind::Activity, 2);
    fake.edit(Kind::Matter, matter);
    fake.edit(Kind::Matter, matter);
    fake.delete(Kind::Contact, contact);
    fake.delete(Kind::Activity, activity);
    let task = fake.create(Kind::Task);
    let arrived = eventually(Duration::from_secs(20), async || {
        s.get_json(&s.staff_token, &format!("/api/v1/tasks/{task}")).await.0 == 200
            && s.get_json(&s.staff_token, &format!("/api/v1/contacts/{contact}")).await.0 == 404
            && s.get_json(&s.staff_token, &format!("/api/v1/activities/{activity}")).await.0 == 404
    })
    .await;
    assert!(arrived, "the webhooks were applied");
    let (status, _) = s.post_json(&s.admin_token, "/api/v1/clio/sync", Value::Null).await;
    assert_eq!(status, 202);
    let idle = eventually(Duration::from_secs(30), async || {
        s.get_json(&s.auditor_token, "/api/v1/clio/sync").await.1["running"] == false
    })
    .await;
    assert!(idle);
    mirror.catch_up(&s, &s.admin_token).await;
    assert_same(&mirror, &listed(&s, &s.admin_token).await, "after webhooks, edits, deletes and a sync");
    for gone in [("contact", contact), ("activity", activity)] {
        assert!(mirror.deletes.contains(&(gone.0.to_string(), gone.1.to_string())), "{gone:?} came as a delete");
    }
    let kinds_only = s.get_json(&s.admin_token, "/api/v1/changes?kinds=contact&limit=1000").await.1;
    assert!(kinds_only["items"].as_array().unwrap().iter().all(|c| c["kind"] == "contact"), "kinds filters");

    // An ethical wall: the screened member's feed leaves the matter and all
    // under it out, deletions under it included; others see them.
    let walled = firm.id(Kind::Matter, 0).to_string();
    let under: Vec<String> = fake
        .snapshot(Kind::Activity)
        .into_iter()
        .filter(|(_, v)| v["matter"]["id"].to_string().trim_matches('"') == walled)
        .map(|(id, _)| id)
        .collect();
    assert!(!under.is_empty(), "the walled matter has activities");
    let wall = json!({"matter_id": walled, "screened": [format!("user:{}", s.member_id)], "reason": "conflict"});
    assert_eq!(s.post_json(&s.admin_token, "/api/v1/walls", wall).await.0, 201);
    fake.edit(Kind::Matter, walled.parse().unwrap());
    fake.delete(Kind::Activity, under[0].parse().unwrap());
    let applied = eventually(Duration::from_secs(20), async || {
        s.get_json(&s.admin_token, &format!("/api/v1/activities/{}", under[0])).await.0 == 404
    })
    .await;
    assert!(applied);
    let mut member = Mirror::default();
    member.catch_up(&s, &s.member_token).await;
    assert_same(&member, &listed(&s, &s.member_token).await, "the walled member");
    assert!(!member.records.contains_key(&("matter".to_string(), walled.clone())), "the walled matter is left out");
    for id in &under {
        assert!(!member.records.contains_key(&("activity".to_string(), id.clone())), "what is under it too");
    }
    assert!(!member.deletes.contains(&("activity".to_string(), under[0].clone())), "even its deletions");
    mirror.catch_up(&s, &s.admin_token).await;
    assert!(mirror.deletes.contains(&("activity".to_string(), under[0].clone())), "the firm's mirror sees it");
    assert_same(&mirror, &listed(&s, &s.admin_token).await, "the firm after the wall");
    s.stop().await;
}

fn contact(id: u64, name: &str) -> Record {
    Record::from_clio(Kind::Contact, json!({"id": id, "name": name, "etag": format!("\"{name}\""), "type": "Person"}))
        .unwrap()
}

fn put(store: &Store, scope: &OrgScope, record: &Record) {
    store.write(|w| data::put_record(w, scope, record)).unwrap();
}

fn remove(store: &Store, scope: &OrgScope, id: u64) {
    store.write(|w| data::delete_record(w, scope, Kind::Contact, &id.to_string())).unwrap();
}

#[tokio::test]
async fn cursors_are_tamper_evident_parameters_strict_and_a_pruned_cursor_is_gone() {
    let s = TestServer::start().await;
    let (store, scope) = org_scope(&s, "smith-jones");
    for n in 1..=5 {
        put(&store, &scope, &contact(n, &format!("c{n}")));
    }
    let (status, page) = s.get_json(&s.staff_token, "/api/v1/changes?limit=2").await;
    assert_eq!((status.as_u16(), page["items"].as_array().unwrap().len(), &page["caught_up"]), (200, 2, &json!(false)));
    let cursor = page["next_cursor"].as_str().unwrap().to_string();

    // 20 first calls at once agree on the firm's cursor key.
    let calls = (0..20).map(|_| s.get_json(&s.staff_token, "/api/v1/changes/head"));
    let heads = futures_util::future::join_all(calls).await;
    for (status, head) in &heads {
        assert_eq!(*status, 200, "{head}");
        let (st, page) =
            s.get_json(&s.staff_token, &format!("/api/v1/changes?cursor={}", head["cursor"].as_str().unwrap())).await;
        assert_eq!((st.as_u16(), page["items"].as_array().unwrap().len()), (200, 0), "every head cursor works: {page}");
    }

    // Altered, foreign and malformed cursors; unknown parameters; bad values.
    let mut altered = cursor.clone().into_bytes();
    let at = 20;
    altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap();
    let (_, other_head) = s.get_json(&s.other_org_token, "/api/v1/changes/head").await;
    let foreign = other_head["cursor"].as_str().unwrap().to_string();
    for (path, field) in [
        (format!("/api/v1/changes?cursor={altered}"), "cursor"),
        (format!("/api/v1/changes?cursor={foreign}"), "cursor"),
        ("/api/v1/changes?cursor=c1.zz".to_string(), "cursor"),
        ("/api/v1/changes?after=5".to_string(), "after"),
        ("/api/v1/changes?kinds=matter,bogus".to_string(), "kinds"),
        ("/api/v1/changes?limit=1001".to_string(), "limit"),
        ("/api/v1/changes?limit=0".to_string(), "limit"),
        ("/api/v1/changes?wait=31".to_string(), "wait"),
        ("/api/v1/changes/head?cursor=x".to_string(), "cursor"),
    ] {
        let (status, body) = s.get_json(&s.staff_token, &path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["field"], field, "{path}: {body}");
    }
    assert_eq!(s.get_json(&s.auditor_token, "/api/v1/changes").await.0, 403, "data:read is required");

    // The cursor resumes after a restart, exactly where it was.
    let data_dir = s.dir.path().join("data");
    drop(store); // the server's store must be released to restart on it
    let dir = s.stop().await;
    let s = TestServer::start_with(|c| c.data_dir = data_dir.clone()).await;
    let (status, page) = s.get_json(&s.staff_token, &format!("/api/v1/changes?cursor={cursor}")).await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["3", "4", "5"], "the rest, once each");
    let resume = page["next_cursor"].as_str().unwrap().to_string();

    // Long polling: a change committed while the call waits is returned.
    let (store, scope) = org_scope(&s, "smith-jones");
    let writer = {
        let (store, scope) = (store.clone(), scope.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            remove(&store, &scope, 2);
        })
    };
    let (status, page) = s.get_json(&s.staff_token, &format!("/api/v1/changes?wait=10&cursor={resume}")).await;
    writer.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["op"], "delete", "{page}");
    assert_eq!(page["items"][0]["id"], "2");

    // The journal is pruned past the cursor: 410 with how to resynchronise.
    let head = store.journal_head().unwrap();
    put(&store, &scope, &contact(6, "c6"));
    store.prune_journal_before(&SystemContext::new(Task::Test), head + 1).unwrap();
    let (status, gone) = s.get_json(&s.staff_token, &format!("/api/v1/changes?cursor={resume}")).await;
    assert_eq!((status.as_u16(), gone["code"].as_str()), (410, Some("gone")), "{gone}");
    assert!(gone["detail"].as_str().unwrap().contains("/api/v1/changes/head"), "{gone}");
    assert_eq!(s.get_json(&s.staff_token, "/api/v1/changes").await.0, 410, "the start of the feed is gone too");
    let (_, head) = s.get_json(&s.staff_token, "/api/v1/changes/head").await;
    let (status, page) =
        s.get_json(&s.staff_token, &format!("/api/v1/changes?cursor={}", head["cursor"].as_str().unwrap())).await;
    assert_eq!((status.as_u16(), page["items"].as_array().unwrap().len()), (200, 0), "the head reads on: {page}");
    drop(store);
    s.stop().await;
    drop(dir);
}

/// What a receiver got: headers and body of each request, in arrival order.
type Received = Arc<Mutex<Vec<(BTreeMap<String, String>, Vec<u8>)>>>;

/// An HTTPS receiver on loopback with a certificate of `ca`; answers 500 to
/// the first `failures` requests, then 204.
async fn receiver(ca: &TestCa, failures: usize) -> (String, Received) {
    use poem::listener::{Acceptor as _, Listener as _, RustlsCertificate, RustlsConfig, TcpListener};
    let got: Received = Arc::default();
    let config =
        RustlsConfig::new().fallback(RustlsCertificate::new().cert(ca.leaf_pem.clone()).key(ca.leaf_key_pem.clone()));
    let acceptor = TcpListener::bind("127.0.0.1:0").rustls(config).into_acceptor().await.unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let seen = got.clone();
    let app = poem::endpoint::make(move |req: poem::Request| {
        let seen = seen.clone();
        async move {
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            let body = req.into_body().into_vec().await.unwrap_or_default();
            let n = {
                let mut all = seen.lock().unwrap();
                all.push((headers, body));
                all.len()
            };
            let status = if n <= failures { 500 } else { 204 };
            poem::Response::builder().status(poem::http::StatusCode::from_u16(status).unwrap()).finish()
        }
    });
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    (format!("https://localhost:{port}/hooks/docket"), got)
}

/// The documented verification: HMAC-SHA256(secret, "<t>.<body>"), hex, and `t` within five minutes.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let parts: BTreeMap<&str, &str> = header.split(',').filter_map(|p| p.split_once('=')).collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else { return false };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let Ok(t) = t.parse::<i64>() else { return false };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    (now - t).abs() <= 300 && mac.verify_slice(&hex::decode(v1).unwrap_or_default()).is_ok()
}

#[tokio::test]
async fn webhook_deliveries_are_signed_ordered_per_record_retried_and_visible() {
    let ca = TestCa::new("receiver");
    let ca_dir = tempfile::tempdir().unwrap();
    let (_, _, ca_file) = ca.write(ca_dir.path());
    let s = TestServer::start_with(|c| {
        c.webhooks.ca_file = Some(ca_file.clone());
        c.webhooks.allow_private_networks = true;
        c.webhooks.retry_base_seconds = 1;
    })
    .await;
    let (url, got) = receiver(&ca, 1).await;

    // Registration: https only; staff may not; the secret is shown once.
    let plain = json!({"url": url.replace("https:", "http:")});
    let (status, body) = s.post_json(&s.admin_token, "/api/v1/webhooks", plain).await;
    assert_eq!((status.as_u16(), body["field"].as_str()), (422, Some("url")), "{body}");
    let hook = json!({"url": url, "kinds": ["contact"], "description": "mirror"});
    assert_eq!(s.post_json(&s.staff_token, "/api/v1/webhooks", hook.clone()).await.0, 403);
    let (status, made) = s.post_json(&s.admin_token, "/api/v1/webhooks", hook).await;
    assert_eq!(status, 201, "{made}");
    let (id, secret) = (made["id"].as_str().unwrap().to_string(), made["secret"].as_str().unwrap().to_string());
    assert!(secret.starts_with("whsec_"));
    let (_, shown) = s.get_json(&s.admin_token, &format!("/api/v1/webhooks/{id}")).await;
    assert!(shown.get("secret").is_none() && !shown.to_string().contains(&secret), "never shown again: {shown}");
    assert_eq!(s.audit_events("webhook.create").await.len(), 1);

    // Changes: contact 1 three times (the first attempt of the first fails), contact 2 once, a matter (not wanted).
    let (store, scope) = org_scope(&s, "smith-jones");
    put(&store, &scope, &contact(1, "one"));
    put(&store, &scope, &contact(2, "two"));
    put(&store, &scope, &contact(1, "one-renamed"));
    remove(&store, &scope, 1);
    let matter = Record::from_clio(Kind::Matter, json!({"id": 9, "display_number": "M-9"})).unwrap();
    put(&store, &scope, &matter);
    let all_in = eventually(Duration::from_secs(30), async || got.lock().unwrap().len() >= 5).await;
    assert!(all_in, "4 deliveries and one retry arrived: {}", got.lock().unwrap().len());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let received = got.lock().unwrap().clone();
    let mut accepted: Vec<Value> = vec![];
    for (i, (headers, body)) in received.iter().enumerate() {
        assert!(verify(&secret, &headers["docket-signature"], body), "delivery {i} verifies: {headers:?}");
        assert!(!verify("whsec_wrong", &headers["docket-signature"], body));
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(headers["docket-delivery"], payload["id"].as_str().unwrap());
        if i >= 1 {
            accepted.push(payload);
        }
    }
    assert_eq!(received.len(), 5, "each change once, plus the one retry");
    let of = |id: &str| -> Vec<(String, u64)> {
        accepted
            .iter()
            .filter(|p| p["record_id"] == id)
            .map(|p| (p["event"].as_str().unwrap().to_string(), p["seq"].as_u64().unwrap()))
            .collect()
    };
    let one = of("1");
    assert_eq!(one.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["upsert", "upsert", "delete"], "{one:?}");
    assert!(one.windows(2).all(|w| w[0].1 < w[1].1), "in commit order for the record");
    assert_eq!(accepted.iter().find(|p| p["record_id"] == "1").unwrap()["record"]["data"]["name"], "one");
    assert_eq!(of("2").len(), 1);
    assert!(accepted.iter().all(|p| p["kind"] == "contact"), "only the kinds asked for");

    // The deliveries, with their attempts.
    let (status, page) = s.get_json(&s.admin_token, &format!("/api/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(|d| d["state"] == "delivered"), "{page}");
    let first = items.last().unwrap();
    let attempts: Vec<Value> = first["attempts"].as_array().unwrap().iter().map(|a| a["status"].clone()).collect();
    assert_eq!(attempts, [json!(500), json!(204)], "the failed attempt and the retry: {first}");
    let (_, paged) = s.get_json(&s.admin_token, &format!("/api/v1/webhooks/{id}/deliveries?limit=3")).await;
    let next = paged["next_cursor"].as_str().unwrap();
    let (_, rest) =
        s.get_json(&s.admin_token, &format!("/api/v1/webhooks/{id}/deliveries?limit=3&cursor={next}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest.get("next_cursor").is_none());

    // Rotation signs with the new secret only; deletion stops deliveries and is audited.
    let (status, rotated) =
        s.post_json(&s.admin_token, &format!("/api/v1/webhooks/{id}/rotate-secret"), Value::Null).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    put(&store, &scope, &contact(3, "three"));
    let arrived = eventually(Duration::from_secs(10), async || got.lock().unwrap().len() == 6).await;
    assert!(arrived);
    let (headers, body) = got.lock().unwrap()[5].clone();
    assert!(
        verify(&new_secret, &headers["docket-signature"], &body)
            && !verify(&secret, &headers["docket-signature"], &body)
    );
    let del =
        client().delete(s.url(&format!("/api/v1/webhooks/{id}"))).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(s.audit_events("webhook.delete").await.len(), 1);
    put(&store, &scope, &contact(4, "four"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(got.lock().unwrap().len(), 6, "a deleted endpoint receives nothing");
    drop(store);
    s.stop().await;
}

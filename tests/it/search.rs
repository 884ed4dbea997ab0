//! Search and type-ahead through HTTPS: the index follows a sync, walls and
//! tenancy inside totals and facets, bad input, deletes, a restart that
//! catches up without doubles, a corrupt index rebuilt (503 meanwhile), and
//! a reindex swapped in while searches go on.
use crate::clio::connect_and_sync;
use crate::support::{TestServer, client, eventually, run_docket};
use docket::clio::fake::FakeClio;
use docket::clio::sync::{Pushed, SyncScope, apply_pushed};
use docket::records::Kind;
use docket::store::{OrgTask, OrgTaskContext};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const EVERY_KIND: &str = "kind=matter,contact,activity,bill,user,task,calendar_entry,note";

/// Waits until a search for every kind counts `total` records.
async fn wait_indexed(s: &TestServer, total: u64) {
    let indexed = eventually(Duration::from_secs(60), async || {
        let (status, body) = s.get_json(&s.staff_token, &format!("/api/v1/search?{EVERY_KIND}&limit=1")).await;
        status == 200 && body["total"] == total
    })
    .await;
    assert!(indexed, "the index holds every synced record");
}

fn facet(body: &Value, name: &str) -> BTreeMap<String, u64> {
    body["facets"][name]
        .as_array()
        .map(|v| v.iter().map(|x| (x["value"].as_str().unwrap().to_string(), x["count"].as_u64().unwrap())).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn search_and_suggest_over_https_with_walls_tenancy_and_bad_input() {
    let fake = FakeClio::start(21, 400).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    let total = fake.firm().total();
    wait_indexed(&s, total).await;

    // Find a matter by its number, by either part of it, and as the user types.
    let matters = fake.snapshot(Kind::Matter);
    let (id, matter) = matters.iter().next().unwrap();
    let number = matter["display_number"].as_str().unwrap();
    let (status, body) = s.get_json(&s.staff_token, &format!("/api/v1/search?q={number}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["items"][0]["kind"].as_str(), body["items"][0]["id"].as_str()),
        (Some("matter"), Some(id.as_str()))
    );
    let (_, suggested) = s.get_json(&s.staff_token, &format!("/api/v1/search/suggest?q={}", &number[..4])).await;
    assert!(suggested["suggestions"].as_array().unwrap().iter().any(|x| x["id"] == id.as_str()), "{suggested}");

    // Tenancy: another firm's index is never read.
    let (status, other) = s.get_json(&s.other_org_token, &format!("/api/v1/search?{EVERY_KIND}&q={number}")).await;
    assert_eq!((status.as_u16(), &other["total"]), (200, &json!(0)), "{other}");
    let (_, other) = s.get_json(&s.other_org_token, &format!("/api/v1/search/suggest?q={}", &number[..4])).await;
    assert_eq!(other["suggestions"], json!([]));

    // Walls: totals and facet counts leave out the walled matter and everything under it.
    let wall = json!({"matter_id": id, "screened": [format!("user:{}", s.member_id)], "reason": "conflict"});
    assert_eq!(s.post_json(&s.admin_token, "/api/v1/walls", wall).await.0, 201);
    let facets = "facets=kind,status,practice_area,responsible_attorney,billed";
    let everything = format!("/api/v1/search?{EVERY_KIND}&{facets}&limit=5");
    let (_, admin) = s.get_json(&s.admin_token, &everything).await;
    let (_, member) = s.get_json(&s.member_token, &everything).await;
    let (_, under) = s.get_json(&s.admin_token, &format!("/api/v1/search?matter_id={id}&{facets}&limit=100")).await;
    let hidden = under["total"].as_u64().unwrap();
    assert!(hidden >= 1);
    assert_eq!(admin["total"], total, "the admin sees everything");
    assert_eq!(member["total"].as_u64().unwrap(), total - hidden, "the member's total leaves the walled records out");
    for name in ["kind", "status", "practice_area", "responsible_attorney", "billed"] {
        let (a, m, u) = (facet(&admin, name), facet(&member, name), facet(&under, name));
        for (value, n) in &a {
            let expect = n - u.get(value).copied().unwrap_or(0);
            assert_eq!(m.get(value).copied().unwrap_or(0), expect, "facet {name}={value}");
        }
    }
    assert_eq!(member["items"].as_array().unwrap().len(), 5, "pages stay full");
    let (_, found) = s.get_json(&s.member_token, &format!("/api/v1/search?q={number}&limit=100")).await;
    assert!(found["items"].as_array().unwrap().iter().all(|h| h["id"] != id.as_str() && h["matter_id"] != id.as_str()));
    let (_, suggested) = s.get_json(&s.member_token, &format!("/api/v1/search/suggest?q={}", &number[..4])).await;
    assert!(suggested["suggestions"].as_array().unwrap().iter().all(|x| x["id"] != id.as_str()));

    // Cursor pages cover a kind exactly once.
    let activities = fake.snapshot(Kind::Activity).len();
    let (mut seen, mut cursor) = (vec![], None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/search?kind=activity&sort=date_desc&limit=37&cursor={c}"),
            None => "/api/v1/search?kind=activity&sort=date_desc&limit=37".to_string(),
        };
        let (status, page) = s.get_json(&s.staff_token, &path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!((seen.len(), seen.iter().collect::<BTreeSet<_>>().len()), (activities, activities));

    // Bad input: a 400 problem naming the parameter and what to change.
    for (query, param) in [
        ("q=%22unbalanced", "q"),
        ("q=foo:bar", "q"),
        ("q=*", "q"),
        ("q=*a*", "q"),
        ("q=a*", "q"),
        ("q=", "q"),
        ("kind=planet", "kind"),
        ("kind=matter&facets=colour", "facets"),
        ("kind=matter&cursor=s1.r.0000000000000001.0000000000000001.00000000", "cursor"),
        ("kind=matter&from=2025-01-02&to=2025-01-01", "from"),
    ] {
        let r =
            client().get(s.url(&format!("/api/v1/search?{query}"))).bearer_auth(&s.staff_token).send().await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], param, "{query}: {body}");
        assert!(body["detail"].as_str().unwrap().len() > 20, "{body}");
    }
    let huge = "a ".repeat(300);
    let (status, body) = s.get_json(&s.staff_token, &format!("/api/v1/search?q={}", huge.trim())).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = s.get_json(&s.staff_token, "/api/v1/search?q=x&limit=101").await;
    assert_eq!(status, 400);
    let (status, _) = s.get_json(&s.role_tokens[&docket::auth::Role::Auditor], "/api/v1/search?q=x").await;
    assert_eq!(status, 403, "auditors do not read client data");

    // A delete (or purge) removes the document.
    let state = &s.running.as_ref().unwrap().state;
    let org = state.store.org_by_slug("smith-jones").unwrap().unwrap().id;
    let sync = SyncScope::begin(&state.store, &OrgTaskContext::new(OrgTask::Test), org).unwrap();
    let (contact, _) = fake.snapshot(Kind::Contact).into_iter().next().unwrap();
    state.store.write(|w| apply_pushed(w, &sync, Pushed::Delete(Kind::Contact, contact.clone()))).unwrap();
    let contacts = fake.snapshot(Kind::Contact).len() as u64;
    let gone = eventually(Duration::from_secs(10), async || {
        s.get_json(&s.staff_token, "/api/v1/search?kind=contact&limit=1").await.1["total"] == contacts - 1
    })
    .await;
    assert!(gone, "the deleted contact left the index");

    // Metrics: latency, documents and bytes per index, lag; labels are org ids, never slugs or text.
    let metrics = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for series in [
        "docket_search_query_duration_seconds_bucket{operation=\"search\"",
        "docket_search_query_duration_seconds_count{operation=\"suggest\"}",
        &format!("docket_search_documents{{org=\"{org}\"}} {}", total - 1),
        &format!("docket_search_index_bytes{{org=\"{org}\"}}"),
        "docket_search_lag_entries 0",
        &format!("docket_search_reindex_total{{org=\"{org}\"}}"),
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(!metrics.contains("smith-jones") && !metrics.contains(number), "no slugs or query text in labels");
    s.stop().await;
}

/// The first org's current index generation directory.
fn index_dir(data: &std::path::Path) -> std::path::PathBuf {
    let root = data.join("search");
    for org in std::fs::read_dir(&root).unwrap().flatten() {
        if let Ok(current) = std::fs::read_to_string(org.path().join("CURRENT")) {
            let dir = org.path().join(current.trim());
            if std::fs::read_dir(&dir).unwrap().count() > 3 {
                return dir;
            }
        }
    }
    panic!("no index with documents under {}", root.display());
}

#[tokio::test]
async fn restarts_catch_up_corrupt_indexes_are_rebuilt_and_reindex_swaps_while_serving() {
    let fake = FakeClio::start(5, 300).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    let total = fake.firm().total();
    wait_indexed(&s, total).await;
    let data = s.running.as_ref().unwrap().state.config.data_dir.clone();

    // A change the store committed but the index never saw (the process died in between).
    let _dir = s.stop().await;
    {
        let instance =
            docket::app::Instance::open(crate::support::test_config(&data), docket::clock::Clock::system()).unwrap();
        let org = instance.store.org_by_slug("smith-jones").unwrap().unwrap().id;
        let sync = SyncScope::begin(&instance.store, &OrgTaskContext::new(OrgTask::Test), org).unwrap();
        let record =
            docket::records::Record::from_clio(Kind::Contact, json!({"id": 987654, "name": "Quentin Latecomer"}))
                .unwrap();
        docket::clio::sync::store_one(&instance.store, &sync, record).unwrap();
    }
    let s = TestServer::start_with(|c| c.data_dir = data.clone()).await;
    let (status, body) = s.get_json(&s.staff_token, "/api/v1/search?q=latecomer").await;
    assert_eq!(status, 200, "{body}");
    let caught_up = eventually(Duration::from_secs(10), async || {
        s.get_json(&s.staff_token, "/api/v1/search?q=latecomer").await.1["total"] == 1
    })
    .await;
    assert!(caught_up, "the start catches the index up");
    wait_indexed(&s, total + 1).await;

    // Reindex through the running server: searches answer, complete, all along.
    let socket = s.running.as_ref().unwrap().state.config.control_socket_path();
    let command = docket::control::Command::Reindex { org: Some("smith-jones".into()) };
    let reindex = tokio::spawn(async move { docket::control::send(&socket, &command).await });
    let mut during = 0;
    while !reindex.is_finished() {
        let (status, body) = s.get_json(&s.staff_token, &format!("/api/v1/search?{EVERY_KIND}&limit=1")).await;
        assert_eq!((status.as_u16(), &body["total"]), (200, &json!(total + 1)), "the old index serves until the swap");
        during += 1;
    }
    let reply = reindex.await.unwrap().unwrap().unwrap();
    assert!(
        matches!(&reply, docket::control::Reply::Ok(t) if t.contains("rebuilt")),
        "{reply:?} after {during} searches"
    );
    wait_indexed(&s, total + 1).await;

    // A corrupt index is detected at start and rebuilt; meanwhile 503 with Retry-After, never partial results.
    let _dir = s.stop().await;
    std::fs::write(index_dir(&data).join("meta.json"), b"{ not json").unwrap();
    let s = TestServer::start_with(|c| c.data_dir = data.clone()).await;
    let rebuilt = eventually(Duration::from_secs(60), async || {
        let r = client()
            .get(s.url(&format!("/api/v1/search?{EVERY_KIND}&limit=1")))
            .bearer_auth(&s.staff_token)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: Value = r.json().await.unwrap();
                assert!(body["detail"].as_str().unwrap().contains("being built"), "{body}");
                false
            }
            200 => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["total"], total + 1, "a usable index is complete");
                true
            }
            other => panic!("{other}"),
        }
    })
    .await;
    assert!(rebuilt);
    let ready: Value = client().get(s.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["search"], "ready", "{ready}");
    let _dir = s.stop().await;

    // `docket reindex` with no server running: on the store directly.
    let (code, out, err) = run_docket(&["reindex", "--data-dir", data.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("smith-jones: search index rebuilt"), "{out}");
    drop(fake);
}

//! The audit trail: who may read it, what it records, exports, and detection
//! of tampering with the store file.
use crate::support::{TestServer, client, run_docket};
use redb::ReadableTable as _;
use serde_json::{Value, json};

#[tokio::test]
async fn changes_are_audited_and_readable_by_auditors_only() {
    let s = TestServer::start().await;
    let c = client();
    let resp = c
        .patch(s.url("/api/v1/org"))
        .bearer_auth(&s.admin_token)
        .header("user-agent", "billing-sync/1.0")
        .json(&json!({"time_zone": "Europe/Paris"}))
        .send()
        .await
        .unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.status(), 200);

    let list = |token: &str, query: &str| {
        c.get(s.url(&format!("/api/v1/audit/events{query}"))).bearer_auth(token.to_string()).send()
    };
    let page: Value = list(&s.auditor_token, "?action=org.update").await.unwrap().json().await.unwrap();
    let events = page["items"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    let e = &events[0];
    assert_eq!((e["action"].as_str(), e["outcome"].as_str()), (Some("org.update"), Some("success")));
    assert_eq!(e["details"]["changed"], json!(["time_zone"]));
    assert_eq!(e["ip"], "127.0.0.1");
    assert_eq!(e["user_agent"], "billing-sync/1.0");
    assert_eq!(e["request_id"], request_id.as_str());
    assert!(e["actor"].as_str().unwrap().starts_with("token:tok_"));
    assert!(!page.to_string().contains("Europe/Paris"), "the trail records what changed, not the values");

    let first: Value = list(&s.admin_token, "?limit=1").await.unwrap().json().await.unwrap();
    assert_eq!(first["items"][0]["action"], "org.create", "an org's chain opens with its creation");
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest: Value = list(&s.admin_token, &format!("?cursor={cursor}")).await.unwrap().json().await.unwrap();
    assert_eq!(rest["items"][0]["seq"].as_u64(), Some(2));
    assert!(rest["next_cursor"].is_null(), "no cursor on the last page");

    assert_eq!(list(&s.staff_token, "").await.unwrap().status(), 403);
    let other: Value = list(&s.other_org_token, "").await.unwrap().json().await.unwrap();
    assert!(!other.to_string().contains("org.update"), "another org never sees this org's trail");

    let csv = c.get(s.url("/api/v1/audit/export/csv")).bearer_auth(&s.auditor_token).send().await.unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers()["content-disposition"].to_str().unwrap().contains("audit.csv"));
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("seq,time,actor,action,target,outcome"));
    assert!(text.contains(",org.update,"));
    let after: Value = list(&s.auditor_token, "?action=audit.export").await.unwrap().json().await.unwrap();
    assert_eq!(after["items"][0]["action"], "audit.export", "exports are audited");
    assert_eq!(after["items"][0]["details"]["format"], "csv");
    s.stop().await;
}

#[tokio::test]
async fn audit_verify_detects_an_edited_store_file() {
    let s = TestServer::start().await;
    client()
        .patch(s.url("/api/v1/org"))
        .bearer_auth(&s.admin_token)
        .json(&json!({"name": "Renamed LLP"}))
        .send()
        .await
        .unwrap();
    let data = s.dir.path().join("data");
    let d = data.to_str().unwrap().to_string();
    let dd = d.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_docket(&["audit", "verify", "--data-dir", &dd], &[])).await.unwrap();
    assert_eq!(code, 0, "verify runs through the live server's socket: {err}");
    assert!(out.contains("smith-jones: 7 events, chain intact"), "{out}");
    let _dir = s.stop().await;

    let db = redb::Database::open(data.join("docket.redb")).unwrap();
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("audit");
    let mut key = 1u64.to_be_bytes().to_vec();
    key.extend_from_slice(&7u64.to_be_bytes());
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(table).unwrap();
        let mut event: Value = serde_json::from_slice(t.get(key.as_slice()).unwrap().unwrap().value()).unwrap();
        assert_eq!(event["action"], "org.update");
        event["actor"] = json!("system:nobody");
        t.insert(key.as_slice(), serde_json::to_vec(&event).unwrap().as_slice()).unwrap();
    }
    tx.commit().unwrap();
    drop(db);

    let (code, _, err) = run_docket(&["audit", "verify", "--data-dir", &d], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("smith-jones: TAMPERED: event 7 was altered"), "{err}");
    let (code, out, _) = run_docket(&["audit", "verify", "--org", "other-firm", "--data-dir", &d], &[]);
    assert_eq!(code, 0, "other orgs' chains are unaffected: {out}");
}

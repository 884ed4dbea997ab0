//! Self-service export through HTTPS: the zip's files and manifest against
//! what Clio holds, CSV columns, BOM and formula injection, a matter export,
//! walls (a walled member's matter export is a 403 that says nothing of the
//! matter; a whole export leaves it out), permissions, audit, bad input, and
//! the subject-access export.
use crate::clio::connect_and_sync;
use crate::support::{TestServer, client};
use docket::clio::fake::FakeClio;
use docket::clio::sync::{Pushed, SyncScope, apply_pushed};
use docket::records::{Kind, Record};
use docket::store::{OrgTask, OrgTaskContext};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;

/// The files of a zip by name.
pub fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a readable zip");
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut out = vec![];
        f.read_to_end(&mut out).unwrap();
        files.insert(f.name().unwrap().to_string(), out);
    }
    files
}

/// GETs an export: status, content type and body.
async fn fetch(s: &TestServer, token: &str, path: &str) -> (u16, String, Vec<u8>) {
    let resp = client().get(s.url(path)).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

/// Stores a record as if Clio pushed it.
fn push(s: &TestServer, kind: Kind, raw: Value) {
    let state = &s.running.as_ref().unwrap().state;
    let org = state.store.org_by_slug("smith-jones").unwrap().unwrap().id;
    let sync = SyncScope::begin(&state.store, &OrgTaskContext::new(OrgTask::Test), org).unwrap();
    let record = Record::from_clio(kind, raw).unwrap();
    state.store.write(|w| apply_pushed(w, &sync, Pushed::Upsert(record))).unwrap();
}

#[tokio::test]
async fn export_json_and_csv_with_walls_permissions_and_audit() {
    let fake = FakeClio::start(31, 400).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    push(
        &s,
        Kind::Contact,
        json!({"id": 77, "name": "=HYPERLINK(\"http://evil\")", "first_name": "+1", "last_name": "-2",
               "title": "@me", "type": "Person", "updated_at": "2026-11-01T00:00:00Z"}),
    );

    // JSON: one file per kind, the records as Clio sent them; a manifest with counts.
    let (status, ct, body) = fetch(&s, &s.admin_token, "/api/v1/export?format=json").await;
    assert_eq!((status, ct.as_str()), (200, "application/zip"), "{}", String::from_utf8_lossy(&body));
    let files = unzip(&body);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest["format"], "json");
    assert!(manifest["journal_seq"].as_u64().unwrap() > 0 && manifest["snapshot_at"].is_string());
    for kind in Kind::ALL {
        let name = format!("{}.json", kind.collection());
        let exported: Vec<Value> = serde_json::from_slice(&files[&name]).unwrap();
        let mut clio: Vec<Value> = fake.snapshot(kind).into_values().collect();
        if kind == Kind::Contact {
            assert!(exported.iter().any(|c| c["id"] == 77));
            clio.push(exported.iter().find(|c| c["id"] == 77).unwrap().clone());
        }
        assert_eq!(exported.len(), clio.len(), "{name}");
        assert_eq!(manifest["counts"][&name], clio.len() as u64);
        let ids = |v: &[Value]| {
            let mut ids: Vec<String> = v.iter().map(|r| r["id"].to_string()).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&exported), ids(&clio), "{name}: the same records");
        for record in &exported {
            if let Some(original) = clio.iter().find(|c| c["id"] == record["id"]) {
                assert_eq!(record, original, "{name}: exactly as Clio sent it");
            }
        }
    }

    // CSV with a BOM: stable columns, every record a row, formulas defused.
    let (status, _, body) = fetch(&s, &s.admin_token, "/api/v1/export?format=csv&bom=true").await;
    assert_eq!(status, 200);
    let files = unzip(&body);
    let contacts = &files["contacts.csv"];
    assert!(contacts.starts_with("\u{feff}".as_bytes()), "a BOM for spreadsheets");
    let text = std::str::from_utf8(&contacts[3..]).unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[0], "id");
    assert!(header.contains(&"company.name".to_string()), "{header:?}");
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), fake.snapshot(Kind::Contact).len() + 1);
    let evil = rows.iter().find(|r| &r[0] == "77").unwrap();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&evil[col("name")], "'=HYPERLINK(\"http://evil\")");
    assert_eq!(&evil[col("first_name")], "'+1");
    assert_eq!(&evil[col("last_name")], "'-2");
    assert_eq!(&evil[col("title")], "'@me");
    let (_, _, plain) = fetch(&s, &s.admin_token, "/api/v1/export?format=csv").await;
    assert!(!unzip(&plain)["matters.csv"].starts_with(b"\xef\xbb\xbf"), "no BOM unless asked");

    // A matter's export holds the matter and what belongs to it.
    let (matter_id, _) = fake.snapshot(Kind::Matter).into_iter().next().unwrap();
    let (status, _, body) = fetch(&s, &s.admin_token, &format!("/api/v1/export?matter={matter_id}")).await;
    assert_eq!(status, 200);
    let files = unzip(&body);
    let matters: Vec<Value> = serde_json::from_slice(&files["matters.json"]).unwrap();
    assert_eq!(matters.len(), 1);
    let contacts: Vec<Value> = serde_json::from_slice(&files["contacts.json"]).unwrap();
    assert!(contacts.is_empty(), "contacts do not belong to a matter");
    let under: u64 = serde_json::from_slice::<Value>(&files["manifest.json"]).unwrap()["total"].as_u64().unwrap();
    assert!(under >= 1);

    // Walls: the walled member's matter export is refused without a word about the matter.
    let wall = json!({"matter_id": matter_id, "screened": [format!("user:{}", s.member_id)], "reason": "conflict"});
    assert_eq!(s.post_json(&s.admin_token, "/api/v1/walls", wall).await.0, 201);
    let (status, _, body) = fetch(&s, &s.member_token, &format!("/api/v1/export?matter={matter_id}")).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{text}");
    let matter = &fake.snapshot(Kind::Matter)[&matter_id];
    for secret in [matter["display_number"].as_str().unwrap(), matter["description"].as_str().unwrap_or("-")] {
        assert!(!text.contains(secret), "the refusal says nothing of the matter: {text}");
    }
    // An unknown matter is a plain 404.
    let (status, _, body) = fetch(&s, &s.member_token, "/api/v1/export?matter=404404").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    // A whole export leaves the walled matter and everything under it out.
    let (_, _, body) = fetch(&s, &s.member_token, "/api/v1/export").await;
    let files = unzip(&body);
    let total: u64 = serde_json::from_slice::<Value>(&files["manifest.json"]).unwrap()["total"].as_u64().unwrap();
    assert_eq!(total, fake.firm().total() + 1 - under, "the member's export leaves out the walled records");
    let all = files.values().map(|b| String::from_utf8_lossy(b).to_string()).collect::<String>();
    assert!(!all.contains(&format!("\"id\":{matter_id},")), "the walled matter is not in the export");

    // Permissions, tenancy and bad input.
    let (status, _, _) = fetch(&s, &s.staff_token, "/api/v1/export").await;
    assert_eq!(status, 403, "staff do not export");
    let (status, _, body) = fetch(&s, &s.other_org_token, "/api/v1/export").await;
    assert_eq!(status, 200);
    let other: Value = serde_json::from_slice(&unzip(&body)["manifest.json"]).unwrap();
    assert_eq!(other["total"], 0, "another firm exports only its own (empty) data");
    for (bad, param) in [("format=xml", "format"), ("matter=%00", "matter"), ("bom=yes", "bom")] {
        let (status, _, body) = fetch(&s, &s.admin_token, &format!("/api/v1/export?{bad}")).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(text.contains(param), "the problem names `{param}`: {text}");
    }

    // Audited: who, which format, which matter.
    let events = s.audit_events("data.export").await;
    assert!(events.len() >= 5, "{events:?}");
    assert!(events.iter().any(|e| e["details"]["matter"] == matter_id.as_str()));
    assert!(events.iter().any(|e| e["details"]["format"] == "csv" && e["details"]["bom"] == true));
    s.stop().await;
}

#[tokio::test]
async fn a_subject_access_export_holds_the_contact_and_what_mentions_it() {
    let fake = FakeClio::start(32, 300).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    // A client of some matter: the matter links to it.
    let matters = fake.snapshot(Kind::Matter);
    let (matter_id, matter) = matters.iter().find(|(_, m)| m["client"]["id"].is_number()).unwrap();
    let contact_id = matter["client"]["id"].to_string();
    let contact = fake.snapshot(Kind::Contact)[&contact_id].clone();
    // A note that only mentions the contact by name: search finds it.
    let name = contact["name"].as_str().unwrap().to_string();
    push(
        &s,
        Kind::Note,
        json!({"id": 990001, "subject": "Call", "detail": format!("Spoke with {name} about the deposition"),
               "type": "Matter", "updated_at": "2026-11-02T00:00:00Z"}),
    );
    let mentioned = crate::support::eventually(std::time::Duration::from_secs(30), async || {
        let q = format!("/api/v1/search?q=%22{}%22&kind=note&limit=100", name.replace(' ', "%20"));
        let (_, body) = s.get_json(&s.admin_token, &q).await;
        body["items"].as_array().is_some_and(|h| h.iter().any(|h| h["id"] == "990001"))
    })
    .await;
    assert!(mentioned, "the note is indexed");

    let (status, ct, body) =
        fetch(&s, &s.admin_token, &format!("/api/v1/export/subject?contact_id={contact_id}")).await;
    assert_eq!((status, ct.as_str()), (200, "application/zip"), "{}", String::from_utf8_lossy(&body));
    let files = unzip(&body);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest["contact_id"], contact_id.as_str());
    let contacts: Vec<Value> = serde_json::from_slice(&files["contacts.json"]).unwrap();
    let cid = matter["client"]["id"].clone();
    assert!(contacts.iter().any(|c| c["id"] == cid), "the contact itself");
    let matters: Vec<Value> = serde_json::from_slice(&files["matters.json"]).unwrap();
    assert!(matters.iter().any(|m| &m["id"].to_string() == matter_id), "a matter it is the client of");
    assert!(matters.iter().all(|m| m["client"]["id"] == cid || m.to_string().contains(&name)));
    let notes: Vec<Value> = serde_json::from_slice(&files["notes.json"]).unwrap();
    assert!(notes.iter().any(|n| n["id"] == 990001), "the note that mentions it by name");

    let (status, _, _) = fetch(&s, &s.admin_token, "/api/v1/export/subject?contact_id=404404").await;
    assert_eq!(status, 404);
    let (status, _, _) = fetch(&s, &s.admin_token, "/api/v1/export/subject").await;
    assert_eq!(status, 400, "contact_id is required");
    let (status, _, _) = fetch(&s, &s.staff_token, &format!("/api/v1/export/subject?contact_id={contact_id}")).await;
    assert_eq!(status, 403);
    assert!(s.audit_events("data.export").await.iter().any(|e| e["details"]["contact_id"] == contact_id.as_str()));
    s.stop().await;
}

#[tokio::test]
async fn the_cli_exports_a_firm_and_erases_its_data_on_the_store() {
    let fake = FakeClio::start(33, 200).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    let data_dir = s.running.as_ref().unwrap().state.config.data_dir.clone();
    let root = s.stop().await;
    let data = data_dir.to_str().unwrap().to_string();
    let out = root.path().join("firm.zip");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            crate::support::run_docket(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
        })
    };
    let args =
        |extra: &[&str]| extra.iter().map(|a| a.to_string()).chain(["--data-dir".into(), data.clone()]).collect();

    let (code, stdout, stderr) =
        run(args(&["export", "--org", "smith-jones", "--format", "csv", "--out", out.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("exported {} records", fake.firm().total())), "{stdout}");
    let files = unzip(&std::fs::read(&out).unwrap());
    assert!(files.contains_key("matters.csv") && files.contains_key("manifest.json"), "{:?}", files.keys());
    let names: Vec<String> =
        std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "no temp file is left: {names:?}");

    let (code, _, stderr) = run(args(&["export", "--org", "nobody", "--out", out.to_str().unwrap()])).await.unwrap();
    assert_eq!(code, 1);
    assert!(stderr.contains("docket org list"), "an unknown org names the fix: {stderr}");
    let (code, _, stderr) =
        run(args(&["export", "--org", "smith-jones", "--format", "xml", "--out", out.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert!(stderr.contains("`json` or `csv`"), "{stderr}");

    let (code, _, stderr) =
        run(args(&["org", "erase-data", "--org", "smith-jones", "--confirm", "smith"])).await.unwrap();
    assert_eq!(code, 1);
    assert!(stderr.contains("smith-jones"), "the refusal names the slug to type: {stderr}");
    let (code, stdout, stderr) =
        run(args(&["org", "erase-data", "--org", "smith-jones", "--confirm", "smith-jones"])).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("erased {} records", fake.firm().total())), "{stdout}");
    let (code, stdout, _) =
        run(args(&["export", "--org", "smith-jones", "--out", out.to_str().unwrap()])).await.unwrap();
    assert_eq!(code, 0);
    assert!(stdout.contains("exported 0 records"), "{stdout}");
}

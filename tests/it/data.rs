//! The read API over synced Clio data: every kind listed and read by id,
//! filters, cursor pages, and ethical walls that make a matter and everything
//! under it vanish (404 on a direct read) for the members they screen.
use crate::clio::connect_and_sync;
use crate::support::TestServer;
use docket::clio::fake::FakeClio;
use docket::records::Kind;
use docket::store::{OrgScope, RECORD_INDEX, RECORDS, Store};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Asserts the invariant of the record index: every records row of the org has
/// exactly its index rows (`data::index::entries`), and there are no others.
pub fn assert_index_matches(store: &Store, scope: &OrgScope) {
    let (records, index) =
        store.read(|r| Ok((r.scan(scope, &RECORDS, b"")?, r.scan(scope, &RECORD_INDEX, b"")?))).unwrap();
    let want: BTreeSet<Vec<u8>> =
        records.iter().flat_map(|(_, v)| docket::data::index::entries(&serde_json::from_slice(v).unwrap())).collect();
    let got: BTreeSet<Vec<u8>> = index.into_iter().map(|(k, _)| k).collect();
    assert!(!records.is_empty(), "there are records to check");
    assert_eq!(got.difference(&want).count(), 0, "no index row without its record's field");
    assert_eq!(want.difference(&got).count(), 0, "every record's fields are indexed");
}

/// The ids of the source's records of `kind` that `keep` accepts.
fn source_ids(fake: &FakeClio, kind: Kind, keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    fake.snapshot(kind).into_iter().filter(|(_, v)| keep(v)).map(|(id, _)| id).collect()
}

/// Every kind and its list path.
pub const PATHS: [(Kind, &str); 8] = [
    (Kind::Matter, "matters"),
    (Kind::Contact, "contacts"),
    (Kind::Activity, "activities"),
    (Kind::Bill, "bills"),
    (Kind::User, "users"),
    (Kind::Task, "tasks"),
    (Kind::CalendarEntry, "calendar-entries"),
    (Kind::Note, "notes"),
];

/// Every id a caller sees in a list, following the cursor.
async fn all_ids(s: &TestServer, token: &str, path: &str) -> Vec<String> {
    let (mut ids, mut after) = (vec![], None::<String>);
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &after {
            Some(a) => format!("{path}{sep}limit=97&cursor={a}"),
            None => format!("{path}{sep}limit=97"),
        };
        let (status, page) = s.get_json(token, &url).await;
        assert_eq!(status, 200, "{url}: {page}");
        ids.extend(page["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn every_kind_is_listed_filtered_paged_and_walled() {
    let fake = FakeClio::start(11, 2_500).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;

    for (kind, path) in PATHS {
        let ids = all_ids(&s, &s.staff_token, &format!("/api/v1/{path}")).await;
        let source: BTreeSet<String> = fake.snapshot(kind).into_keys().collect();
        assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), source, "{path}: the pages cover the source exactly");
        assert_eq!(ids.len(), source.len(), "{path}: no record twice");
        let (status, one) = s.get_json(&s.staff_token, &format!("/api/v1/{path}/{}", ids[0])).await;
        assert_eq!((status.as_u16(), one["kind"].as_str()), (200, Some(kind.as_str())));
        assert!(one["data"]["updated_at"].is_string() && one["etag"].is_string(), "{one}");
        let updated = one["updated_at"].as_str().unwrap();
        assert!(updated.ends_with('Z') && docket::timestamp::Timestamp::parse(updated).is_ok(), "RFC 3339 UTC: {one}");
    }
    assert_eq!(s.get_json(&s.staff_token, "/api/v1/matters/999").await.0, 404);
    assert_eq!(
        s.get_json(&s.role_tokens[&docket::auth::Role::Auditor], "/api/v1/matters").await.0,
        403,
        "auditors do not read client data"
    );
    assert_eq!(
        s.get_json(&s.other_org_token, "/api/v1/matters").await.1["items"],
        json!([]),
        "another firm sees none of it"
    );

    // Filters.
    let open = fake.snapshot(Kind::Matter).values().filter(|m| m["status"] == "Open").count();
    assert_eq!(all_ids(&s, &s.staff_token, "/api/v1/matters?status=Open").await.len(), open);
    let matters = fake.snapshot(Kind::Matter);
    let (matter_id, _) = matters.iter().next().unwrap();
    let under: BTreeSet<String> = fake
        .snapshot(Kind::Activity)
        .into_iter()
        .filter(|(_, a)| a["matter"]["id"].as_u64().map(|id| id.to_string()).as_ref() == Some(matter_id))
        .map(|(id, _)| id)
        .collect();
    let listed = all_ids(&s, &s.staff_token, &format!("/api/v1/activities?matter_id={matter_id}")).await;
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), under, "activities of one matter");
    let unbilled = all_ids(&s, &s.staff_token, "/api/v1/activities?billed=false&date_from=2023-12-25").await;
    let (_, page) = s.get_json(&s.staff_token, "/api/v1/activities?billed=false&date_from=2023-12-25&limit=500").await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["data"]["billed"] == false && a["data"]["date"].as_str().unwrap() >= "2023-12-25")
    );
    assert!(!unbilled.is_empty());
    let (status, body) = s.get_json(&s.staff_token, "/api/v1/matters?updated_since=yesterday").await;
    assert_eq!(status, 400, "{body}");

    // Indexed filters, alone and together, answer as the source says.
    let id_of = |v: &Value| v.as_u64().map(|n| n.to_string()).or_else(|| v.as_str().map(str::to_string));
    let some_matter = fake.snapshot(Kind::Matter).into_values().nth(3).unwrap();
    let client = id_of(&some_matter["client"]["id"]).unwrap();
    let closed_of_client = source_ids(&fake, Kind::Matter, |m| {
        m["status"] == "Closed" && id_of(&m["client"]["id"]).as_deref() == Some(client.as_str())
    });
    let listed = all_ids(&s, &s.staff_token, &format!("/api/v1/matters?status=Closed&client_id={client}")).await;
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), closed_of_client, "two values intersected");
    let bills_of_matter = source_ids(&fake, Kind::Bill, |b| {
        b["matters"].as_array().is_some_and(|ms| ms.iter().any(|m| id_of(&m["id"]).as_ref() == Some(matter_id)))
    });
    let listed = all_ids(&s, &s.staff_token, &format!("/api/v1/bills?matter_id={matter_id}")).await;
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), bills_of_matter, "a bill is under each of its matters");
    let day = fake.snapshot(Kind::Task).into_values().find_map(|t| t["due_at"].as_str().map(|d| d[..10].to_string()));
    if let Some(day) = day {
        let due = source_ids(&fake, Kind::Task, |t| {
            t["due_at"].as_str().and_then(docket::data::index::instant_of).is_some_and(|at| {
                let on = docket::data::Date::parse(&day).unwrap();
                at >= on.first_instant() && at <= on.last_instant()
            })
        });
        let listed = all_ids(&s, &s.staff_token, &format!("/api/v1/tasks?due_from={day}&due_to={day}")).await;
        assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), due, "a date range");
    }

    // An ethical wall screens the owner member off from one matter and all under it.
    let walled = matter_id.clone();
    let wall = json!({"matter_id": walled, "screened": [format!("user:{}", s.member_id)], "reason": "conflict"});
    let (status, _) = s.post_json(&s.admin_token, "/api/v1/walls", wall).await;
    assert_eq!(status, 201);
    let member = &s.member_token;
    let (status, body) = s.get_json(member, &format!("/api/v1/matters/{walled}")).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (404, Some("not-found")), "404, not 403: {body}");
    if let Some(activity) = under.iter().next() {
        assert_eq!(s.get_json(member, &format!("/api/v1/activities/{activity}")).await.0, 404, "what is under it too");
    }
    assert!(all_ids(&s, member, &format!("/api/v1/activities?matter_id={walled}")).await.is_empty());
    assert!(!all_ids(&s, member, "/api/v1/matters").await.contains(&walled), "gone from lists");
    for path in ["bills", "tasks", "calendar-entries", "notes"] {
        let (_, page) = s.get_json(member, &format!("/api/v1/{path}?limit=500")).await;
        assert!(
            page["items"].as_array().unwrap().iter().all(|r| !r.to_string().contains(&format!("\"id\":{walled}"))),
            "{path}"
        );
    }
    assert_eq!(s.get_json(&s.staff_token, &format!("/api/v1/matters/{walled}")).await.0, 200, "others still see it");
    let (_, admin_view): (_, Value) = s.get_json(&s.admin_token, &format!("/api/v1/matters/{walled}")).await;
    assert_eq!(admin_view["id"], walled.as_str());

    // The sync status counts only what the caller may see: the walled matter and what is under it are not counted.
    let counts = async |token: &str| -> Vec<(String, u64)> {
        let (status, st) = s.get_json(token, "/api/v1/clio/sync").await;
        assert_eq!(status, 200, "{st}");
        st["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["kind"].as_str().unwrap().into(), k["records"].as_u64().unwrap()))
            .collect()
    };
    let (screened, full) = (counts(member).await, counts(&s.admin_token).await);
    let of = |c: &[(String, u64)], kind: &str| c.iter().find(|(k, _)| k == kind).map(|(_, n)| *n).unwrap();
    assert_eq!(of(&full, "matter"), fake.snapshot(Kind::Matter).len() as u64);
    assert_eq!(of(&screened, "matter"), of(&full, "matter") - 1, "the walled matter is not counted");
    assert_eq!(of(&screened, "activity"), of(&full, "activity") - under.len() as u64, "nor what is under it");
    assert_eq!(of(&screened, "user"), of(&full, "user"), "what no wall covers is counted alike");
    s.stop().await;
}

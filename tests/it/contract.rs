//! The API contract integrators build on (issue 21): one pagination
//! contract, the error contract, and the HTTP semantics (ETag, rate-limit
//! headers, idempotency, Location), each finding with its regression test.
use crate::support::{TestServer, client, in_ci};
use docket::auth::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// Follows `next_cursor` from `path` with `limit`, asserting the envelope on
/// every page; the ids seen, in order, and how many pages it took.
async fn walk(s: &TestServer, token: &str, path: &str, limit: usize) -> (Vec<String>, usize) {
    let (mut ids, mut cursor, mut pages) = (vec![], None::<String>, 0);
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (status, page) = s.get_json(token, &url).await;
        assert_eq!(status, 200, "{url}: {page}");
        let items = page["items"].as_array().unwrap_or_else(|| panic!("{url}: no `items` envelope: {page}"));
        assert!(items.len() <= limit, "{url}: more than `limit`");
        let keys: BTreeSet<&str> = page.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.is_subset(&BTreeSet::from(["items", "next_cursor", "total", "facets"])), "{url}: {keys:?}");
        ids.extend(items.iter().map(|i| i["id"].as_str().map_or_else(|| i["seq"].to_string(), str::to_owned)));
        pages += 1;
        match page.get("next_cursor") {
            Some(Value::String(c)) => cursor = Some(c.clone()),
            None => return (ids, pages),
            Some(other) => panic!("{url}: next_cursor must be a string or absent, got {other}"),
        }
    }
}

/// Finding 2: `tokens.list`, `members.list`, `walls.list`, `me.sessions`,
/// `audit.list` and `audit.export_json` all answer the envelope and page
/// with `cursor`/`next_cursor` to the end, each item once.
#[tokio::test]
async fn every_list_pages_with_one_contract() {
    let s = TestServer::start().await;
    let owner = s.role_tokens[&Role::Owner].clone();
    for i in 0..3 {
        let body = json!({"email": format!("m{i}@smith-jones.test"), "role": "staff"});
        let made = client().post(s.url("/api/v1/members")).bearer_auth(&owner).json(&body).send().await.unwrap();
        assert_eq!(made.status(), 201);
        let location = made.headers()["location"].to_str().unwrap().to_string();
        let member: Value = made.json().await.unwrap();
        assert_eq!(location, format!("/api/v1/members/{}", member["id"].as_str().unwrap()), "Location on 201");
        assert_eq!(s.get_json(&owner, &location).await.1, member, "Location names the member made");
    }
    for path in ["/api/v1/tokens", "/api/v1/members", "/api/v1/audit/events", "/api/v1/walls"] {
        let (all, _) = walk(&s, &owner, path, 500).await;
        let (paged, pages) = walk(&s, &owner, path, 2).await;
        assert_eq!(paged, all, "{path}: pages of 2 cover the list exactly, in order");
        assert_eq!(paged.iter().collect::<BTreeSet<_>>().len(), paged.len(), "{path}: no item twice");
        assert_eq!(pages, all.len().div_ceil(2).max(1), "{path}: no empty last page");
        if path != "/api/v1/walls" {
            assert!(all.len() >= 4, "{path}: a list worth paging ({})", all.len());
        }
    }
    let (status, export) = s.get_json(&owner, "/api/v1/audit/export/json").await;
    assert_eq!(status, 200);
    assert!(export["items"].is_array() && export.get("next_cursor").is_none(), "{export}");
    let (status, sessions) = s.get_json(&s.member_token, "/api/v1/me/sessions").await;
    assert_eq!((status.as_u16(), sessions["items"].is_array()), (200, true), "{sessions}");
    s.stop().await;
}

/// Finding 2: an unknown query parameter is a 400 naming it (it was ignored:
/// `?after=` on a list silently served page 1 again).
#[tokio::test]
async fn unknown_query_parameters_are_refused_by_name() {
    let s = TestServer::start().await;
    for (path, name, takes) in [
        ("/api/v1/contacts?after=abc", "after", "`cursor`"),
        ("/api/v1/org?verbose=1", "verbose", "no query parameters"),
        ("/api/v1/audit/events?limit=2&Cursor=x", "Cursor", "`cursor`"),
    ] {
        let (status, body) = s.get_json(&s.admin_token, path).await;
        assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("unknown-parameter")), "{path}: {body}");
        assert_eq!(body["field"], name, "{path}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("`{name}`")) && detail.contains(takes), "{path}: {detail}");
    }
    let (status, _) = s.get_json(&s.admin_token, "/api/v1/audit/events?limit=2").await;
    assert_eq!(status, 200, "declared parameters pass");
    s.stop().await;
}

/// Finding 2: malformed, altered and foreign cursors are a 400 `invalid-cursor`
/// (`after=zzz` was a 200 with nothing).
#[tokio::test]
async fn malformed_and_foreign_cursors_are_refused() {
    let s = TestServer::start().await;
    let owner = &s.role_tokens[&Role::Owner];
    let (_, tokens) = s.get_json(owner, "/api/v1/tokens?limit=1").await;
    let cursor = tokens["next_cursor"].as_str().unwrap().to_string();
    let (_, audit) = s.get_json(owner, "/api/v1/audit/events?limit=1&action=org").await;
    let audit_cursor = audit["next_cursor"].as_str().map(str::to_owned);
    let last = if cursor.ends_with('0') { '1' } else { '0' };
    let altered = format!("{}{last}", &cursor[..cursor.len() - 1]);
    let mut cases = vec![
        ("/api/v1/tokens?cursor=zzz".to_string(), "not a cursor this API gave"),
        (format!("/api/v1/members?cursor={cursor}"), "another list"),
        (format!("/api/v1/tokens?cursor={altered}"), "altered"),
        ("/api/v1/matters?cursor=%ff%fe".to_string(), "next_cursor"),
    ];
    if let Some(c) = &audit_cursor {
        cases.push((format!("/api/v1/audit/events?cursor={c}&action=token"), "other filters"));
    }
    for (path, says) in &cases {
        let (status, body) = s.get_json(owner, path).await;
        assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("invalid-cursor")), "{path}: {body}");
        assert_eq!(body["field"], "cursor");
        assert!(body["detail"].as_str().unwrap().contains(says), "{path}: {body}");
    }
    let (status, body) = s.get_json(&s.other_org_token, &format!("/api/v1/tokens?cursor={cursor}")).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("invalid-cursor")), "another firm's cursor");
    assert_eq!(s.get_json(owner, &format!("/api/v1/tokens?cursor={cursor}&limit=3")).await.0, 200, "limit may change");
    s.stop().await;
}

/// Finding 4: a filter value outside its closed set is a 400 naming the allowed values.
#[tokio::test]
async fn filter_values_outside_their_set_name_the_allowed_ones() {
    let s = TestServer::start().await;
    for (path, field, allowed) in [
        ("/api/v1/matters?status=Bogus", "status", "`Open`, `Pending`, `Closed`"),
        ("/api/v1/bills?state=Paid", "state", "`paid`"),
        ("/api/v1/contacts?type=person", "type", "`Person`, `Company`"),
        ("/api/v1/tasks?status=done", "status", "`complete`"),
        ("/api/v1/activities?type=Time", "type", "`TimeEntry`"),
    ] {
        let (status, body) = s.get_json(&s.staff_token, path).await;
        assert_eq!((status.as_u16(), body["field"].as_str()), (400, Some(field)), "{path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(allowed), "{path}: {body}");
    }
    assert_eq!(s.get_json(&s.staff_token, "/api/v1/matters?status=Open").await.0, 200);
    s.stop().await;
}

/// Finding 4: `tokens.create_service` answers each mistake with its own code
/// and `field`, no parser internals, and the refusals are audited.
#[tokio::test]
async fn token_creation_errors_are_precise_and_audited() {
    let s = TestServer::start().await;
    let path = "/api/v1/tokens/service";
    let (status, body) = s.post_json(&s.admin_token, path, json!({"name": "x", "role": "nobody"})).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str(), body["field"].as_str()),
        (422, Some("unknown-role"), Some("role"))
    );
    assert!(body["detail"].as_str().unwrap().contains("`nobody`"), "{body}");

    let (status, body) = s
        .post_json(&s.admin_token, path, json!({"name": "x", "role": "staff", "scopes": ["data:read", "data:rule"]}))
        .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str(), body["field"].as_str()),
        (422, Some("invalid-scope"), Some("scopes"))
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("`data:rule`") && detail.contains("`data:read`"),
        "names the bad and the allowed: {detail}"
    );
    for internal in ["failed to parse", "PermissionName", "occurred while", "payload error"] {
        assert!(!detail.contains(internal), "no parser internals: {detail}");
    }
    let (status, body) = s.post_json(&s.admin_token, path, json!({"name": 5, "role": "staff"})).await;
    assert_eq!((status.as_u16(), body["field"].as_str()), (400, Some("name")), "{body}");

    assert_eq!(s.post_json(&s.staff_token, path, json!({"name": "x", "role": "staff"})).await.0, 403);
    let refused = s.audit_events("tokens.create_service").await;
    let outcomes: Vec<(&str, &str)> =
        refused.iter().map(|e| (e["outcome"].as_str().unwrap(), e["details"]["code"].as_str().unwrap())).collect();
    assert_eq!(
        outcomes,
        [("failure", "unknown-role"), ("failure", "invalid-scope"), ("denied", "forbidden")],
        "{refused:?}"
    );
    assert_eq!(refused[0]["details"]["field"], "role");

    let made = json!({"name": "expiring", "role": "staff", "expires_in_days": 30});
    assert_eq!(s.post_json(&s.admin_token, path, made).await.0, 201);
    let created = s.audit_events("token.create").await;
    let expires = created.last().unwrap()["details"]["expires_at"].as_str().unwrap().to_string();
    assert!(docket::timestamp::Timestamp::parse(&expires).is_ok(), "audit `expires_at` is RFC 3339: {expires}");
    s.stop().await;
}

/// Failed attempts cannot fill the trail: past the per-firm bound they are
/// counted, and the next recorded one says how many were left out.
#[tokio::test]
async fn a_flood_of_refusals_is_bounded_in_the_trail() {
    let s = TestServer::start_with(|c| c.limits.per_credential_per_minute = 10_000).await;
    let c = client();
    let flood = docket::api::failures::PER_MINUTE as usize + 20;
    for _ in 0..flood {
        let r = c.get(s.url("/api/v1/audit/events")).bearer_auth(&s.staff_token).send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    let denied = s.audit_events("audit.list").await;
    let bound = docket::api::failures::PER_MINUTE as usize;
    // The bucket refills one event every 2 s, so a slow run may record a few more.
    assert!((bound..bound + 5).contains(&denied.len()), "the trail holds the bound, not the flood: {}", denied.len());
    assert!(denied.iter().all(|e| e["outcome"] == "denied" && e["actor"].as_str().unwrap().starts_with("token:")));
    s.stop().await;
}

/// Finding 5: `ETag` on records and lists, `If-None-Match` answered 304.
#[tokio::test]
async fn reads_carry_etags_and_revalidate() {
    let s = TestServer::start().await;
    let c = client();
    for path in ["/api/v1/org", "/api/v1/tokens", "/api/v1/matters", "/api/v1/audit/events?action=org.create"] {
        let first = c.get(s.url(path)).bearer_auth(&s.admin_token).send().await.unwrap();
        assert_eq!(first.status(), 200, "{path}");
        let etag = first.headers()["etag"].to_str().unwrap().to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong validator: {etag}");
        let again = c.get(s.url(path)).bearer_auth(&s.admin_token).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty(), "a 304 has no body");
        let other =
            c.get(s.url(path)).bearer_auth(&s.admin_token).header("if-none-match", "\"stale\"").send().await.unwrap();
        assert_eq!(other.status(), 200, "{path}: another validator gets the body");
    }
    let before = c.get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap();
    let etag = before.headers()["etag"].to_str().unwrap().to_string();
    let patched = c.patch(s.url("/api/v1/org")).bearer_auth(&s.admin_token).json(&json!({"time_zone": "Europe/Paris"}));
    assert_eq!(patched.send().await.unwrap().status(), 200);
    let after = c.get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).header("if-none-match", &etag);
    assert_eq!(after.send().await.unwrap().status(), 200, "a change changes the validator");
    s.stop().await;
}

/// Finding 5: `RateLimit-*` on every response, and `Retry-After` with them on 429.
#[tokio::test]
async fn rate_limit_headers_on_every_response() {
    let s = TestServer::start_with(|c| c.limits.per_credential_per_minute = 3).await;
    let c = client();
    let mut seen = vec![];
    for _ in 0..4 {
        let r = c.get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap();
        let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        seen.push((r.status().as_u16(), header("ratelimit-limit"), header("ratelimit-remaining")));
        if r.status() == 429 {
            assert!(header("retry-after").unwrap() >= 1 && header("ratelimit-reset").unwrap() >= 1);
        }
    }
    assert_eq!(
        seen,
        [(200, Some(3), Some(2)), (200, Some(3), Some(1)), (200, Some(3), Some(0)), (429, Some(3), Some(0))]
    );
    let nf = c.get(s.url("/api/v1/nothing-here")).send().await.unwrap();
    assert!(nf.headers().contains_key("ratelimit-remaining"), "errors carry them too");
    s.stop().await;
}

/// Finding 5: the same `Idempotency-Key` and body replays the first response
/// (one token, not two); another body is a 422; 20 parallel retries create one.
#[tokio::test]
async fn idempotency_keys_make_creations_safe_to_retry() {
    let s = TestServer::start().await;
    let c = client();
    let post = |key: &str, name: &str| {
        c.post(s.url("/api/v1/tokens/service"))
            .bearer_auth(&s.admin_token)
            .header("idempotency-key", key)
            .json(&json!({"name": name, "role": "staff"}))
            .send()
    };
    let first = post("key-1", "sync").await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_string();
    let first: Value = first.json().await.unwrap();
    assert_eq!(location, format!("/api/v1/tokens/{}", first["record"]["id"].as_str().unwrap()), "Location on 201");
    let again = post("key-1", "sync").await.unwrap();
    assert_eq!((again.status().as_u16(), again.headers()["idempotent-replayed"].to_str().unwrap()), (201, "true"));
    assert_eq!(again.json::<Value>().await.unwrap(), first, "the first response, replayed");
    let other = post("key-1", "other").await.unwrap();
    assert_eq!(other.status(), 422);
    assert_eq!(other.json::<Value>().await.unwrap()["code"], "idempotency-key-reused");

    let racers = (0..20).map(|_| post("key-2", "race"));
    let answers = futures_util::future::join_all(racers).await;
    let statuses: Vec<u16> = answers.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| [201, 409].contains(s)), "{statuses:?}");
    let (_, tokens) = s.get_json(&s.admin_token, "/api/v1/tokens?limit=500").await;
    let made = |name: &str| tokens["items"].as_array().unwrap().iter().filter(|t| t["name"] == name).count();
    assert_eq!((made("sync"), made("race"), made("other")), (1, 1, 0), "one creation per key");

    let bad = c.post(s.url("/api/v1/tokens/service")).bearer_auth(&s.admin_token).header("idempotency-key", "a b");
    let bad = bad.json(&json!({"name": "x", "role": "staff"})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    s.stop().await;
}

/// The integrator tooling `.ci/run` installs: Redocly, openapi-typescript and
/// tsc under tests/clients, openapi-python-client (with ruff) in .ci/venv.
struct Tools {
    clients: PathBuf,
    venv_bin: PathBuf,
}

fn tools() -> Option<Tools> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tools = Tools { clients: root.join("tests/clients"), venv_bin: root.join(".ci/venv/bin") };
    let bins = tools.clients.join("node_modules/.bin");
    let present = ["redocly", "openapi-typescript", "tsc"].iter().all(|b| bins.join(b).exists())
        && tools.venv_bin.join("openapi-python-client").exists()
        && tools.venv_bin.join("ruff").exists();
    present.then_some(tools)
}

/// Runs a command to completion off the async workers; its report if it failed.
async fn run(mut command: Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let out =
        tokio::task::spawn_blocking(move || command.output()).await.unwrap().map_err(|e| format!("{shown}: {e}"))?;
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(format!("{shown} failed:\n{text}")) }
}

/// Finding 3 and "Done when": the committed spec lints clean under Redocly's
/// `recommended` rules, and clients generated from it (Python by
/// openapi-python-client, TypeScript types by openapi-typescript checked by
/// `tsc --strict`) run an integrator's script against a live server.
#[tokio::test]
async fn generated_clients_work_against_a_live_server() {
    let Some(t) = tools() else {
        assert!(!in_ci(), "CI must install the client tooling (see .ci/run)");
        eprintln!("SKIPPED client test: run .ci/run once to install tests/clients and .ci/venv");
        return;
    };
    let spec = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/docket.json"));
    let bin = |name: &str| t.clients.join("node_modules/.bin").join(name);
    let mut lint = Command::new(bin("redocly"));
    lint.arg("lint").arg(&spec).arg("--config").arg(t.clients.join("redocly.yaml")).env("NO_COLOR", "1");
    let report = run(lint).await.unwrap();
    assert!(report.contains("Your API description is valid"), "{report}");

    let s = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let env = [("DOCKET_URL", s.base.clone()), ("DOCKET_TOKEN", s.admin_token.clone())];

    for file in ["client.ts", "tsconfig.json"] {
        std::fs::copy(t.clients.join(file), work.path().join(file)).unwrap();
    }
    let mut types = Command::new(bin("openapi-typescript"));
    types.arg(&spec).arg("-o").arg(work.path().join("docket.ts"));
    run(types).await.unwrap();
    let tsc = |extra: &[&str]| {
        let mut c = Command::new(bin("tsc"));
        c.arg("-p").arg(work.path().join("tsconfig.json")).args(extra);
        c
    };
    run(tsc(&["--noEmit", "--strict"])).await.unwrap();
    run(tsc(&[])).await.unwrap();
    let mut node = Command::new("node");
    node.arg(work.path().join("out/client.js")).envs(env.clone()).env("NODE_TLS_REJECT_UNAUTHORIZED", "0");
    let out = run(node).await.unwrap();
    assert!(out.contains("typescript client: ok"), "{out}");

    let path = format!("{}:{}", t.venv_bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut generate = Command::new(t.venv_bin.join("openapi-python-client"));
    generate.args(["generate", "--meta", "none", "--config"]).arg(t.clients.join("openapi-python-client.yaml"));
    generate.arg("--path").arg(&spec).arg("--output-path");
    generate.arg(work.path().join("py/docket_client")).env("PATH", &path).current_dir(work.path());
    let generated = run(generate).await.unwrap();
    assert!(!generated.contains("Warning"), "the spec generates without warnings:\n{generated}");
    let mut ruff = Command::new(t.venv_bin.join("ruff"));
    ruff.args(["check", "--no-cache", "--select", "E,F,W,I", "--line-length", "120"]).arg(t.clients.join("client.py"));
    run(ruff).await.unwrap();
    let mut python = Command::new(t.venv_bin.join("python"));
    python.arg(t.clients.join("client.py")).envs(env).env("PYTHONPATH", work.path().join("py"));
    let out = run(python).await.unwrap();
    assert!(out.contains("python client: ok"), "{out}");
    s.stop().await;
}

/// Whether `value` fits a (flat) property schema of the spec: its type, null
/// only when `nullable`, its enum, and `date`/`date-time` formats.
fn fits(value: &Value, schema: &Value) -> bool {
    if value.is_null() {
        return schema["nullable"] == true;
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        return false;
    }
    match (schema["type"].as_str(), schema["format"].as_str()) {
        (Some("string"), Some("date")) => value.as_str().is_some_and(|s| docket::data::Date::parse(s).is_ok()),
        (Some("string"), Some("date-time")) => {
            value.as_str().is_some_and(|s| docket::timestamp::Timestamp::parse(s).is_ok())
        }
        (Some("string"), _) => value.is_string(),
        (Some("integer"), _) => value.is_i64() || value.is_u64(),
        (Some("number"), _) => value.is_number(),
        (Some("boolean"), _) => value.is_boolean(),
        _ => true,
    }
}

/// Finding 3: each kind's `data` has a schema of its own (`Record` is a
/// `oneOf` on `kind`), and every synced record of every kind fits it.
#[tokio::test]
async fn every_record_fits_its_kinds_schema() {
    let fake = docket::clio::fake::FakeClio::start(5, 300).await.unwrap();
    let s = TestServer::start().await;
    crate::clio::connect_and_sync(&s, &fake).await;
    let (_, spec) = s.get_json(&s.admin_token, "/api/v1/openapi.json").await;
    let schemas = &spec["components"]["schemas"];
    let variants = schemas["Record"]["oneOf"].as_array().unwrap();
    assert_eq!(variants.len(), 8, "one schema per kind");
    for (path, kind) in [
        ("matters", "matter"),
        ("contacts", "contact"),
        ("activities", "activity"),
        ("bills", "bill"),
        ("users", "user"),
        ("tasks", "task"),
        ("calendar-entries", "calendar_entry"),
        ("notes", "note"),
    ] {
        let target = schemas["Record"]["discriminator"]["mapping"][kind].as_str().unwrap();
        let record_schema = &schemas[target.rsplit('/').next().unwrap()];
        assert_eq!(record_schema["properties"]["kind"]["enum"], json!([kind]));
        let data_ref = record_schema["properties"]["data"]["$ref"].as_str().unwrap();
        let data_schema = &schemas[data_ref.rsplit('/').next().unwrap()];
        assert_eq!(data_schema["additionalProperties"], true, "{kind}: open to fields Clio adds");
        let (_, page) = s.get_json(&s.admin_token, &format!("/api/v1/{path}?limit=500")).await;
        let records = page["items"].as_array().unwrap();
        assert!(!records.is_empty(), "{path}: synced");
        for record in records {
            assert_eq!(record["kind"], kind);
            for (field, schema) in data_schema["properties"].as_object().unwrap() {
                let value = record["data"].get(field).unwrap_or(&Value::Null);
                let absent_ok = record["data"].get(field).is_none();
                assert!(
                    absent_ok || fits(value, schema),
                    "{kind} {}: `{field}` = {value} does not fit {schema}",
                    record["id"]
                );
            }
        }
    }
    s.stop().await;
}

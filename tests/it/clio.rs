//! Connecting a firm to (the fake) Clio through the API, the background sync
//! it starts, its status, and disconnecting.
use crate::support::{TestServer, client, eventually};
use docket::clio::fake::FakeClio;
use docket::records::Kind;
use serde_json::{Value, json};
use std::time::Duration;

/// Sets the Clio app and walks the browser round trip (docket → Clio's
/// authorize, which approves → docket's callback) as an admin.
pub async fn connect(s: &TestServer, fake: &FakeClio, webhooks: bool) {
    let settings = json!({
        "location": fake.base_url(), "client_id": fake.client_id, "client_secret": fake.client_secret,
        "webhooks": webhooks,
    });
    let put = client().put(s.url("/api/v1/clio/connection")).bearer_auth(&s.admin_token).json(&settings).send();
    assert_eq!(put.await.unwrap().status(), 200);
    let to_clio = client().get(s.url("/api/v1/clio/connect")).bearer_auth(&s.admin_token).send().await.unwrap();
    let back = client().get(to_clio.headers()["location"].to_str().unwrap()).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(client().get(&callback).bearer_auth(&s.admin_token).send().await.unwrap().status(), 303);
}

/// Waits until the firm holds every record of `fake` and no sync runs.
async fn wait_synced(s: &TestServer, fake: &FakeClio) {
    let total = fake.firm().total();
    let synced = eventually(Duration::from_secs(60), async || {
        let (_, st) = s.get_json(&s.auditor_token, "/api/v1/clio/sync").await;
        let records: u64 =
            st["kinds"].as_array().map_or(0, |k| k.iter().map(|k| k["records"].as_u64().unwrap_or(0)).sum());
        records == total && st["running"] == false
    })
    .await;
    assert!(synced, "the first sync stores every record");
}

/// Connects the test firm to `fake` and waits for the first sync to finish.
pub async fn connect_and_sync(s: &TestServer, fake: &FakeClio) {
    connect(s, fake, false).await;
    wait_synced(s, fake).await;
}

#[tokio::test]
async fn an_admin_connects_clio_the_firm_syncs_and_disconnects() {
    let fake = FakeClio::start(9, 3_000).await.unwrap();
    let s = TestServer::start().await;
    let (status, body) = s.get_json(&s.admin_token, "/api/v1/clio/connection").await;
    assert_eq!((status.as_u16(), body["state"].as_str()), (200, Some("not_configured")));
    let settings =
        json!({"location": fake.base_url(), "client_id": fake.client_id, "client_secret": fake.client_secret});
    let put = client()
        .put(s.url("/api/v1/clio/connection"))
        .bearer_auth(&s.admin_token)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let shown = put.text().await.unwrap();
    assert!(!shown.contains(&fake.client_secret), "the secret is never shown again");
    let staff = client().get(s.url("/api/v1/clio/connect")).bearer_auth(&s.staff_token).send().await.unwrap();
    assert_eq!(staff.status(), 403, "staff cannot connect Clio");

    // The browser round trip: docket → Clio's authorize (approves) → docket's callback.
    let to_clio = client().get(s.url("/api/v1/clio/connect")).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(to_clio.status(), 303);
    let authorize = to_clio.headers()["location"].to_str().unwrap().to_string();
    assert!(
        authorize.starts_with(&format!("{}/oauth/authorize?", fake.base_url())) && authorize.contains("state="),
        "{authorize}"
    );
    let back = client().get(&authorize).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    assert!(callback.starts_with(&s.url("/api/v1/clio/callback?code=")), "{callback}");
    let forged = callback.replace("state=", "state=x");
    assert_eq!(client().get(&forged).bearer_auth(&s.admin_token).send().await.unwrap().status(), 404, "foreign state");
    let done = client().get(&callback).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(done.status(), 303, "{:?}", done.text().await);
    let replay = client().get(&callback).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(replay.status(), 404, "a state works once");

    // The sync runs in the background and ends equal to the source.
    wait_synced(&s, &fake).await;
    let (_, st) = s.get_json(&s.auditor_token, "/api/v1/clio/sync").await;
    for k in st["kinds"].as_array().unwrap() {
        let kind = Kind::ALL.into_iter().find(|x| x.as_str() == k["kind"]).unwrap();
        assert_eq!(k["records"].as_u64(), Some(fake.firm().count(kind)), "{k}");
        assert_eq!(k["full_sync_done"], true);
    }
    let (_, conn) = s.get_json(&s.admin_token, "/api/v1/clio/connection").await;
    assert_eq!(conn["state"], "connected");

    // Sync now picks up an edit.
    let firm = fake.firm();
    fake.edit(Kind::Matter, firm.id(Kind::Matter, 0));
    let (status, _) = s.post_json(&s.admin_token, "/api/v1/clio/sync", Value::Null).await;
    assert_eq!(status, 202);
    let picked = eventually(Duration::from_secs(30), async || {
        let (_, st) = s.get_json(&s.auditor_token, "/api/v1/clio/sync").await;
        st["kinds"].as_array().is_some_and(|k| {
            k.iter()
                .any(|k| k["kind"] == "matter" && k["records_written"].as_u64() == Some(firm.count(Kind::Matter) + 1))
        })
    })
    .await;
    assert!(picked, "the edit was synced");
    let metrics = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("docket_sync_last_success_seconds") && metrics.contains("docket_clio_requests_total"),
        "{metrics}"
    );

    // Disconnect: tokens gone, purge date set, audited.
    let off = client().delete(s.url("/api/v1/clio/connection")).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(off.status(), 200);
    let off: Value = off.json().await.unwrap();
    assert_eq!(off["state"], "disconnected");
    assert!(off["purge_due_at"].is_string(), "{off}");
    let (status, _) = s.post_json(&s.admin_token, "/api/v1/clio/sync", Value::Null).await;
    assert_eq!(status, 409, "no sync without a connection");
    let events = s.audit_events("clio").await;
    let actions = |outcome: &str| -> Vec<&str> {
        events.iter().filter(|e| e["outcome"] == outcome).map(|e| e["action"].as_str().unwrap()).collect()
    };
    assert_eq!(actions("success"), ["clio.configure", "clio.connect", "clio.disconnect"]);
    assert!(actions("failure").contains(&"clio.sync_now"), "the refused sync is audited: {events:?}");
    s.stop().await;
}

#[tokio::test]
async fn webhooks_apply_changes_within_seconds_and_refuse_forgeries() {
    let fake = FakeClio::start(13, 1_000).await.unwrap();
    let s = TestServer::start().await;
    connect(&s, &fake, true).await;
    let live = eventually(Duration::from_secs(60), async || fake.webhooks_active() == 6).await;
    assert!(live, "six subscriptions completed the X-Hook-Secret handshake");
    let (_, conn) = s.get_json(&s.admin_token, "/api/v1/clio/connection").await;
    assert_eq!(conn["webhooks_active"], 6, "{conn}");
    let urls: Vec<String> =
        conn["webhook_urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().into()).collect();
    assert_eq!(urls.len(), 6, "one unguessable endpoint per subscription: {conn}");
    let hook_url = urls[0].clone();
    let (_, seen_by_staff) = s.get_json(&s.staff_token, "/api/v1/clio/connection").await;
    assert!(seen_by_staff.get("webhook_urls").is_none(), "endpoints are shown only to clio:manage: {seen_by_staff}");
    assert_eq!(seen_by_staff["webhooks_active"], 6);

    // Finding 1: a handshake to a live endpoint cannot replace its secret.
    for url in &urls {
        let forged = client().post(url).header("x-hook-secret", "attacker").json(&json!({"data": {"webhook_id": 1}}));
        assert_eq!(forged.send().await.unwrap().status(), 403, "a second handshake is refused");
    }
    let huge =
        client().post(&hook_url).header("x-hook-secret", "a".repeat(10_000)).json(&json!({"data": {"webhook_id": 1}}));
    assert_eq!(huge.send().await.unwrap().status(), 400, "an oversized secret is refused before anything is stored");
    let stray = client().post(s.url("/hooks/clio/guess")).header("x-hook-secret", "attacker");
    assert_eq!(stray.json(&json!({"data": {"webhook_id": 1}})).send().await.unwrap().status(), 410);

    // No scheduled sync runs now (every 15 minutes): only webhooks can bring these in.
    let firm = fake.firm();
    let matter = firm.id(Kind::Matter, 3);
    fake.edit(Kind::Matter, matter);
    let want = fake.snapshot(Kind::Matter)[&matter.to_string()]["etag"].clone();
    let edited = eventually(Duration::from_secs(10), async || {
        s.get_json(&s.staff_token, &format!("/api/v1/matters/{matter}")).await.1["etag"] == want
    })
    .await;
    assert!(edited, "the edit arrived by webhook");
    let contact = firm.id(Kind::Contact, 2);
    fake.delete(Kind::Contact, contact);
    let gone = eventually(Duration::from_secs(10), async || {
        s.get_json(&s.staff_token, &format!("/api/v1/contacts/{contact}")).await.0 == 404
    })
    .await;
    assert!(gone, "the deletion arrived by webhook");
    let created = fake.create(Kind::Task);
    let arrived = eventually(Duration::from_secs(10), async || {
        s.get_json(&s.staff_token, &format!("/api/v1/tasks/{created}")).await.0 == 200
    })
    .await;
    assert!(arrived, "the creation arrived by webhook");

    // Forged deliveries change nothing.
    let forged = json!({"data": {"id": matter, "etag": "\"forged\"", "description": "forged"}, "meta": {"event": "updated", "webhook_id": 1}});
    let r = client().post(&hook_url).header("x-hook-signature", "00ff").json(&forged).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client().post(&hook_url).json(&forged).send().await.unwrap();
    assert_eq!(r.status(), 401, "unsigned");
    let r = client()
        .post(s.url("/hooks/clio/no-such-hook"))
        .header("x-hook-signature", "00")
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410, "unknown endpoints tell Clio to stop");
    assert_eq!(s.get_json(&s.staff_token, &format!("/api/v1/matters/{matter}")).await.1["etag"], want);

    // Genuine deliveries still verify after the refused handshakes, and every
    // accepted handshake and applied delivery is in the audit trail.
    fake.edit(Kind::Matter, matter);
    let want = fake.snapshot(Kind::Matter)[&matter.to_string()]["etag"].clone();
    let edited = eventually(Duration::from_secs(10), async || {
        s.get_json(&s.staff_token, &format!("/api/v1/matters/{matter}")).await.1["etag"] == want
    })
    .await;
    assert!(edited, "Clio's own secret is still the one in force");
    let audited = s.audit_events("clio.webhook").await;
    let count = |action: &str| audited.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("clio.webhook.handshake"), 6, "{audited:?}");
    assert!(count("clio.webhook.deliver") >= 4, "{audited:?}");

    // After a disconnect the endpoint is gone: Clio is told to stop (410), nothing is applied.
    let off = client().delete(s.url("/api/v1/clio/connection")).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(off.status(), 200);
    let r = client().post(&hook_url).header("x-hook-signature", "00").json(&forged).send().await.unwrap();
    assert_eq!(r.status(), 410, "deliveries after a disconnect are refused");
    // Clio's own next delivery meets the 410 and disables that subscription, as Clio does.
    let before = fake.webhooks_active();
    fake.edit(Kind::Matter, matter);
    let disabled = eventually(Duration::from_secs(10), async || fake.webhooks_active() == before - 1).await;
    assert!(disabled, "a 410 disables the subscription at Clio");
    s.stop().await;
}

#[tokio::test]
async fn a_listing_that_would_empty_the_firm_is_held_until_an_admin_confirms() {
    let fake = FakeClio::start(17, 1_000).await.unwrap();
    let s = TestServer::start_with(|c| {
        c.clio.sync_schedule = "* * * * * *".parse().unwrap();
        c.clio.reconcile_schedule = "* * * * * *".parse().unwrap();
    })
    .await;
    connect_and_sync(&s, &fake).await;
    let matters = fake.firm().count(Kind::Matter);
    let matter = async || {
        let (_, st) = s.get_json(&s.auditor_token, "/api/v1/clio/sync").await;
        st["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "matter").cloned().unwrap()
    };
    // A bad answer from Clio: every list is empty, listing after listing.
    fake.set_faults(|f| f.empty_lists = true);
    let held =
        eventually(Duration::from_secs(30), async || matter().await["held_deletions"].as_u64() == Some(matters)).await;
    assert!(held, "the status reports the held deletions: {}", matter().await);
    let later = fake.api_calls() + 40;
    assert!(eventually(Duration::from_secs(30), async || fake.api_calls() > later).await, "more listings ran");
    let m = matter().await;
    assert_eq!((m["records"].as_u64(), m["held_confirmed"].as_bool()), (Some(matters), Some(false)), "{m}");

    // Only `clio:manage` confirms; it is audited; then the next listing deletes.
    let path = "/api/v1/clio/sync/confirm-deletions";
    assert_eq!(s.post_json(&s.staff_token, path, Value::Null).await.0, 403);
    let (status, body) = s.post_json(&s.admin_token, path, Value::Null).await;
    assert_eq!(status, 202, "{body}");
    let confirmed = body["confirmed"].as_array().unwrap();
    assert!(confirmed.iter().any(|k| k["kind"] == "matter" && k["deletions"].as_u64() == Some(matters)), "{body}");
    let gone = eventually(Duration::from_secs(30), async || matter().await["records"].as_u64() == Some(0)).await;
    assert!(gone, "the confirmed deletions were made: {}", matter().await);
    assert!(matter().await["held_deletions"].is_null());
    let actions: Vec<String> =
        s.audit_events("clio").await.iter().map(|e| e["action"].as_str().unwrap().to_string()).collect();
    assert!(actions.contains(&"clio.confirm_deletions".to_string()), "{actions:?}");
    let (status, body) = s.post_json(&s.admin_token, path, Value::Null).await;
    assert_eq!(status, 409, "nothing is held now: {body}");
    s.stop().await;
}

#[tokio::test]
async fn disconnecting_with_an_expired_token_still_revokes_the_grant_or_says_it_could_not() {
    let fake = FakeClio::start(17, 200).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    fake.expire_access_tokens();
    let off = client().delete(s.url("/api/v1/clio/connection")).bearer_auth(&s.admin_token).send().await.unwrap();
    let off: Value = off.json().await.unwrap();
    assert_eq!(off["revocation_confirmed"], true, "{off}");
    assert!(!fake.grant_live(), "the grant is revoked at Clio after a refresh, not assumed revoked on a 401");

    // When Clio cannot confirm, the status says so, and keeps saying so.
    connect_and_sync(&s, &fake).await;
    fake.expire_access_tokens();
    fake.forget_refresh_tokens();
    let off = client().delete(s.url("/api/v1/clio/connection")).bearer_auth(&s.admin_token).send().await.unwrap();
    let off: Value = off.json().await.unwrap();
    assert_eq!(off["revocation_confirmed"], false, "{off}");
    let (_, later) = s.get_json(&s.admin_token, "/api/v1/clio/connection").await;
    assert_eq!(later["revocation_confirmed"], false, "{later}");
    assert!(later["warning"].as_str().unwrap().contains("Clio's settings"), "{later}");
    s.stop().await;
}

/// The sync status's entry for webhook `model`.
async fn webhook(s: &TestServer, model: &str) -> Value {
    let (_, st) = s.get_json(&s.auditor_token, "/api/v1/clio/sync").await;
    st["webhooks"].as_array().and_then(|w| w.iter().find(|w| w["model"] == model).cloned()).unwrap_or_default()
}

#[tokio::test]
async fn suspended_expired_and_forgotten_webhooks_are_replaced_and_their_health_shown() {
    let fake = FakeClio::start(17, 1_000).await.unwrap();
    // Clio refuses bills' subscription (the app lacks the permission): the models after it are still subscribed.
    fake.set_faults(|f| f.refuse_webhooks = vec![Kind::Bill]);
    let s = TestServer::start().await;
    connect(&s, &fake, true).await;
    assert!(eventually(Duration::from_secs(60), async || fake.webhooks_active() == 5).await, "five subscriptions");
    let refused = eventually(Duration::from_secs(30), async || {
        let (bill, task) = (webhook(&s, "bill").await, webhook(&s, "task").await);
        bill["active"] == false
            && bill["last_error"].as_str().is_some_and(|e| e.contains("403"))
            && task["active"] == true
            && webhook(&s, "calendar_entry").await["active"] == true
    })
    .await;
    assert!(refused, "one model's failure is shown and the rest go on: {}", webhook(&s, "bill").await);
    fake.set_faults(|f| f.refuse_webhooks.clear());
    let (status, _) = s.post_json(&s.admin_token, "/api/v1/clio/sync", Value::Null).await;
    assert_eq!(status, 202);
    assert!(eventually(Duration::from_secs(60), async || fake.webhooks_active() == 6).await, "six subscriptions");
    let all_active = eventually(Duration::from_secs(60), async || {
        let (_, st) = s.get_json(&s.auditor_token, "/api/v1/clio/sync").await;
        st["webhooks"].as_array().is_some_and(|w| w.len() == 6 && w.iter().all(|w| w["active"] == true))
    })
    .await;
    assert!(all_active, "the status shows each model's subscription");
    let matter = webhook(&s, "matter").await;
    assert!(matter["expires_at"].is_string() && matter["replaced"] == 0, "{matter}");

    // Clio suspends matters' subscription (deliveries failed while docket was down)
    // and forgets contacts' (it expired): nothing is pushed for either any more.
    fake.suspend_webhooks(Kind::Matter);
    fake.expire_webhooks(Kind::Contact);
    assert_eq!(fake.webhook_statuses(Kind::Matter), ["suspended"]);
    assert!(fake.webhook_statuses(Kind::Contact).is_empty());
    let (status, _) = s.post_json(&s.admin_token, "/api/v1/clio/sync", Value::Null).await;
    assert_eq!(status, 202);
    let replaced = eventually(Duration::from_secs(60), async || {
        let (m, c) = (webhook(&s, "matter").await, webhook(&s, "contact").await);
        m["replaced"] == 1 && c["replaced"] == 1 && m["active"] == true && c["active"] == true
    })
    .await;
    assert!(replaced, "both replaced: {} {}", webhook(&s, "matter").await, webhook(&s, "contact").await);
    let enabled = eventually(Duration::from_secs(10), async || {
        fake.webhook_statuses(Kind::Matter) == ["enabled"] && fake.webhook_statuses(Kind::Contact) == ["enabled"]
    })
    .await;
    assert!(enabled, "one live subscription each; the suspended one was deleted at Clio");
    let m = webhook(&s, "matter").await;
    assert!(m["last_error"].as_str().unwrap_or_default().contains("suspended"), "{m}");
    assert!(webhook(&s, "contact").await["last_error"].as_str().unwrap_or_default().contains("no longer has it"));

    // Deliveries flow again, and the status says when the last one arrived.
    let id = fake.firm().id(Kind::Matter, 4);
    fake.edit(Kind::Matter, id);
    let want = fake.snapshot(Kind::Matter)[&id.to_string()]["etag"].clone();
    let edited = eventually(Duration::from_secs(10), async || {
        s.get_json(&s.staff_token, &format!("/api/v1/matters/{id}")).await.1["etag"] == want
    })
    .await;
    assert!(edited, "the replacement delivers");
    assert!(webhook(&s, "matter").await["last_delivery_at"].is_string());
    let metrics = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for name in ["docket_clio_webhook_active", "docket_clio_webhook_expires_seconds", "docket_clio_webhook_failing"] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_disconnect_answers_only_once_no_clio_request_is_in_flight_and_none_follows() {
    let fake = FakeClio::start(19, 3_000).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    // Clio answers slowly now: a disconnect is sure to land while a request is in flight.
    fake.set_faults(|f| f.delay = Duration::from_millis(400));
    let (status, _) = s.post_json(&s.admin_token, "/api/v1/clio/sync", Value::Null).await;
    assert_eq!(status, 202);
    let in_flight = eventually(Duration::from_secs(10), async || {
        let (received, answered) = fake.requests();
        received > answered
    })
    .await;
    assert!(in_flight, "a sync request is in flight");
    let off = client().delete(s.url("/api/v1/clio/connection")).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(off.status(), 200);
    let (received, answered) = fake.requests();
    assert_eq!(received, answered, "the disconnect waited for the request in flight to be answered");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.requests().0, received, "and no request was sent after it answered");
    s.stop().await;
}

#[tokio::test]
async fn decomposed_and_renamed_names_are_found_by_search() {
    let fake = FakeClio::start(23, 400).await.unwrap();
    let matters = fake.snapshot(Kind::Matter);
    let (matter, first) = matters.iter().next().unwrap();
    let (matter, renamed): (u64, u64) = (matter.parse().unwrap(), first["client"]["id"].as_u64().unwrap());
    let decomposed =
        fake.snapshot(Kind::Contact).keys().map(|k| k.parse::<u64>().unwrap()).find(|c| *c != renamed).unwrap();
    assert!(fake.edit_with(Kind::Contact, decomposed, |v, _| v["name"] = json!("Rene\u{301}e Mu\u{308}ller")));
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    let found = async |q: &str, id: u64| {
        eventually(Duration::from_secs(30), async || {
            let (_, body) = s.get_json(&s.staff_token, &format!("/api/v1/search?q={q}&limit=100")).await;
            body["items"]
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h["id"].as_str().and_then(|s| s.parse::<u64>().ok()) == Some(id)))
        })
        .await
    };
    for q in ["muller", "M%C3%BCller", "renee", "Mu%CC%88ller"] {
        assert!(found(q, decomposed).await, "{q} finds the decomposed name");
    }
    // A renamed client: the matters naming it are found by the new name once the sync refreshed them.
    assert!(fake.edit_with(Kind::Contact, renamed, |v, _| v["name"] = json!("Zebulon Quixote")));
    let (status, _) = s.post_json(&s.admin_token, "/api/v1/clio/sync", Value::Null).await;
    assert_eq!(status, 202);
    assert!(found("quixote&kind=matter", matter).await, "the matter is found by its client's new name");
    s.stop().await;
}

#[tokio::test]
async fn numbers_text_and_null_versus_missing_reach_the_api_exactly_as_clio_sent_them() {
    let fake = FakeClio::start(29, 400).await.unwrap();
    let firm = fake.firm();
    let id = firm.id(Kind::Activity, 5);
    let text = "Rene\u{301}e Mu\u{308}ller · 山田 🧾 \"q\" \\ \u{0}";
    assert!(fake.edit_with(Kind::Activity, id, |v, _| {
        v["total"] = json!(11556.236853404187);
        v["price"] = json!(0.1 + 0.2);
        v["note"] = json!(text);
        v["bill"] = Value::Null;
        v.as_object_mut().unwrap().remove("rounded_quantity");
    }));
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    let resp = client().get(s.url(&format!("/api/v1/activities/{id}"))).bearer_auth(&s.staff_token).send().await;
    let body = resp.unwrap().text().await.unwrap();
    for number in ["11556.236853404187", "0.30000000000000004"] {
        assert!(body.contains(&format!(":{number}")), "{number} digit for digit in {body}");
    }
    let got: Value = serde_json::from_str(&body).unwrap();
    let data = &got["data"];
    assert_eq!(data["note"], text, "text code point for code point (decomposed accents kept as sent)");
    assert!(data.as_object().unwrap().contains_key("bill") && data["bill"].is_null(), "null stays null: {data}");
    assert!(!data.as_object().unwrap().contains_key("rounded_quantity"), "missing stays missing: {data}");
    assert_eq!(data, &fake.snapshot(Kind::Activity)[&id.to_string()], "the whole record as Clio sent it");
    s.stop().await;
}

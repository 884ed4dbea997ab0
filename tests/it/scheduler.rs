//! The scheduler seen from outside: the jobs API (a firm's own jobs and the
//! appliance's, never another firm's), `docket jobs` over the control socket,
//! and the job metrics.
use crate::clio::connect_and_sync;
use crate::support::{TestServer, client, eventually, run_docket};
use docket::clio::fake::FakeClio;
use docket::control::{Command, Reply};
use serde_json::Value;
use std::time::Duration;

const JOBS: &str = "/api/v1/system/jobs";

fn job<'a>(list: &'a Value, name: &str, scope: &str) -> Option<&'a Value> {
    list["jobs"].as_array()?.iter().find(|j| j["name"] == name && j["scope"] == scope)
}

#[tokio::test]
async fn the_jobs_api_shows_a_firms_sync_runs_and_no_other_firm_sees_them() {
    let fake = FakeClio::start(23, 300).await.unwrap();
    let s = TestServer::start().await;
    connect_and_sync(&s, &fake).await;
    let synced = eventually(Duration::from_secs(30), async || {
        let (_, list) = s.get_json(&s.admin_token, JOBS).await;
        job(&list, "clio-sync", "org").and_then(|j| j["runs"][0]["outcome"].as_str()) == Some("ok")
    })
    .await;
    let (status, list) = s.get_json(&s.admin_token, JOBS).await;
    assert_eq!(status, 200, "{list}");
    assert!(synced, "the connect's first sync is a recorded run of the firm's `clio-sync`: {list}");
    let sync = job(&list, "clio-sync", "org").unwrap();
    assert_eq!(sync["schedule"], "0 */15 * * * *");
    let first = sync["runs"].as_array().unwrap().last().unwrap();
    assert!(first["started"].as_str().unwrap() <= first["ended"].as_str().unwrap(), "{first}");
    assert_eq!(first["items"].as_u64(), Some(fake.firm().total()), "the first sync stored every record: {first}");
    let reconcile = job(&list, "clio-reconcile", "org").unwrap();
    assert!(reconcile["next_run"].is_string() && reconcile["runs"].as_array().unwrap().is_empty(), "{reconcile}");
    let sweep = job(&list, "session-sweep", "appliance").unwrap();
    assert!(job(&list, "clio-purge", "appliance").is_some(), "{list}");
    let swept = &sweep["runs"][0];
    assert_eq!(swept["outcome"], "ok", "the sweep ran at start: {sweep}");
    assert!(swept["items"].is_null(), "two firms share this appliance: no appliance-wide figures: {swept}");

    // The other firm's owner sees the appliance's jobs, none of this firm's.
    let (status, other) = s.get_json(&s.other_org_token, JOBS).await;
    assert_eq!(status, 200);
    let scopes: Vec<&str> = other["jobs"].as_array().unwrap().iter().map(|j| j["scope"].as_str().unwrap()).collect();
    assert!(!scopes.is_empty() && scopes.iter().all(|s| *s == "appliance"), "{other}");
    assert!(!other.to_string().contains("clio-sync"), "{other}");
    assert_eq!(s.get_json(&s.staff_token, JOBS).await.0, 403, "staff lack org:write");

    // The sysadmin sees everything through the control socket.
    let socket = s.dir.path().join("data").join("control.sock");
    let Some(Reply::Ok(text)) = docket::control::send(&socket, &Command::Jobs).await.unwrap() else {
        panic!("docket jobs answers over the socket")
    };
    assert!(text.contains("clio-sync (org ") && text.contains("session-sweep (appliance)"), "{text}");
    assert!(text.contains("    ok "), "{text}");

    let metrics = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("docket_job_last_success_timestamp_seconds{name=\"clio-sync\",org=\""), "{metrics}");
    assert!(metrics.contains("docket_job_runs_total{name=\"session-sweep\",outcome=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("docket_job_last_duration_seconds{name=\"session-sweep\"}"), "{metrics}");

    // With the service stopped, `docket jobs` reads the history from the store.
    let dir = s.stop().await;
    let data = dir.path().join("data");
    let (code, out, err) = run_docket(&["jobs", "--data-dir", data.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the service is not running") && out.contains("clio-sync (org "), "{out}");
}

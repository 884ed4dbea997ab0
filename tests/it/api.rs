//! The HTTP API: authentication, roles, tenancy, problem+json errors, limits,
//! security headers, ops endpoints.
use crate::support::{TestServer, client};
use serde_json::{Value, json};

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "application/problem+json");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], rid, "the problem carries the request id");
    assert!(body["type"].as_str().unwrap().starts_with("urn:docket:problem:"));
    body
}

#[tokio::test]
async fn tokens_roles_and_tenancy() {
    let s = TestServer::start().await;
    let c = client();
    let org: Value =
        c.get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(org["slug"], "smith-jones");
    let other: Value =
        c.get(s.url("/api/v1/org")).bearer_auth(&s.other_org_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(other["slug"], "other-firm", "a token only ever sees its own org");

    let r = c
        .patch(s.url("/api/v1/org"))
        .bearer_auth(&s.admin_token)
        .json(&json!({"name": "Smith Jones LLP", "time_zone": "America/Chicago"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(
        (updated["name"].as_str(), updated["time_zone"].as_str()),
        (Some("Smith Jones LLP"), Some("America/Chicago"))
    );

    let body = problem(
        c.patch(s.url("/api/v1/org")).bearer_auth(&s.staff_token).json(&json!({"name": "x"})).send().await.unwrap(),
        403,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("org:write"));
    let other_after: Value =
        c.get(s.url("/api/v1/org")).bearer_auth(&s.other_org_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(other_after["name"], "Other Firm", "one org's change never touches another");

    let status: Value =
        c.get(s.url("/api/v1/system/status")).bearer_auth(&s.staff_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["version"], docket::VERSION);
    assert!(status["journal_seq"].as_u64().unwrap() >= 6, "org and token writes are journaled");
    s.stop().await;
}

#[tokio::test]
async fn bad_credentials_get_401_without_leaks() {
    let s = TestServer::start().await;
    let c = client();
    let missing = problem(c.get(s.url("/api/v1/org")).send().await.unwrap(), 401).await;
    assert_eq!(missing["code"], "unauthenticated");
    let mut forged = s.admin_token.clone();
    forged.pop();
    forged.push('Z');
    for token in [forged.as_str(), "dkt_", "not-a-token", &"dkt_a".repeat(400)] {
        let resp = c.get(s.url("/api/v1/org")).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body = problem(resp, 401).await;
        assert!(!body.to_string().contains("smith"), "no org data in errors");
    }
    s.stop().await;
}

#[tokio::test]
async fn malformed_bodies_name_the_problem() {
    let s = TestServer::start().await;
    let c = client();
    let send = |body: &'static str| {
        c.patch(s.url("/api/v1/org"))
            .bearer_auth(&s.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let wrong_type = problem(send(r#"{"name": 5}"#).await.unwrap(), 400).await;
    assert_eq!(wrong_type["field"], "name", "{wrong_type}");
    assert!(wrong_type["detail"].as_str().unwrap().contains("must be of type string"));
    let truncated = problem(send(r#"{"name": "#).await.unwrap(), 400).await;
    assert!(truncated["detail"].as_str().unwrap().contains("EOF"), "{truncated}");
    let unknown = problem(send(r#"{"nmae": "x"}"#).await.unwrap(), 400).await;
    assert!(unknown["detail"].as_str().unwrap().contains("nmae"), "{unknown}");
    let invalid = problem(send(r#"{"time_zone": "Mars"}"#).await.unwrap(), 400).await;
    assert!(invalid["detail"].as_str().unwrap().contains("time_zone"), "{invalid}");
    let media = c
        .patch(s.url("/api/v1/org"))
        .bearer_auth(&s.admin_token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(media, 415).await;
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let big = c
        .patch(s.url("/api/v1/org"))
        .bearer_auth(&s.admin_token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let body = problem(big, 413).await;
    assert!(body["detail"].as_str().unwrap().contains("limit"));
    let org: Value =
        c.get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap().json().await.unwrap();
    assert_eq!(org["name"], "Smith & Jones LLP", "rejected requests change nothing");
    s.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let s = TestServer::start().await;
    let c = client();
    let resp = c.post(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, PATCH, HEAD");
    problem(resp, 405).await;
    let resp = c.delete(s.url("/api/v1/system/status")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    problem(resp, 405).await;
    let body = problem(c.get(s.url("/api/v1/nothing-here")).send().await.unwrap(), 404).await;
    assert_eq!(body["code"], "not-found");
    s.stop().await;
}

#[tokio::test]
async fn security_headers_request_ids_and_redirect() {
    let s = TestServer::start().await;
    let c = client();
    let resp = c.get(s.url("/healthz")).header("x-request-id", "trace-abc-1").send().await.unwrap();
    let h = resp.headers();
    assert_eq!(h["strict-transport-security"], "max-age=31536000; includeSubDomains");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-request-id"], "trace-abc-1", "a well-formed incoming request id is kept");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "no inline script may run: {csp}");
    let bad_id = c.get(s.url("/healthz")).header("x-request-id", "<script>").send().await.unwrap();
    assert_ne!(bad_id.headers()["x-request-id"], "<script>");

    let r = c.get(format!("{}/matters?q=1", s.redirect_base)).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], s.url("/matters?q=1"));
    let r = c.post(format!("{}/api/v1/org", s.redirect_base)).send().await.unwrap();
    assert_eq!(r.status(), 308, "every method is redirected, keeping the method");
    s.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = TestServer::start().await;
    let c = client();
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    let ready: Value = c.get(s.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    c.get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap();
    let text = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"docket_http_requests_total{route="org.get",method="GET",status="200"} 1"#), "{text}");
    assert!(text.contains(
        "docket_http_request_duration_seconds_bucket{route=\"org.get\",method=\"GET\",status=\"200\",le=\"+Inf\"} 1"
    ));
    assert!(text.contains("docket_journal_seq"));
    let proxied = c.get(s.url("/metrics")).header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
    problem(proxied, 401).await;
    s.stop().await;

    let s = TestServer::start_with(|c| c.metrics.token = Some(docket::secrets::Secret::new("scrape-me"))).await;
    problem(c.get(s.url("/metrics")).send().await.unwrap(), 401).await;
    let ok = c.get(s.url("/metrics")).bearer_auth("scrape-me").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn graceful_stop_finishes_in_flight_requests() {
    let s = TestServer::start().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    // The connection is set up first, so the streamed request's headers reach
    // the server at once however loaded the machine (no TLS handshake left to race the stop).
    let http = client();
    assert_eq!(http.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    let request = http
        .patch(s.url("/api/v1/org"))
        .bearer_auth(&s.admin_token)
        .header("content-type", "application/json")
        .body(body)
        .send();
    let inflight = tokio::spawn(request);
    tx.send(Ok(br#"{"name": "#.to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let base = s.base.clone();
    let stopping = tokio::spawn(s.stop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "stop waits for the request still being received");
    tx.send(Ok(br#""Finished During Shutdown"}"#.to_vec())).await.unwrap();
    drop(tx);
    let resp = inflight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the in-flight request completes");
    let org: Value = resp.json().await.unwrap();
    assert_eq!(org["name"], "Finished During Shutdown");
    stopping.await.unwrap();
    assert!(client().get(format!("{base}/healthz")).send().await.is_err(), "nothing listens after stop");
}

/// Adapts an mpsc receiver into a byte stream for a request body.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let s = TestServer::start_with(|c| {
        c.limits.per_credential_per_minute = 5;
        c.limits.per_ip_per_minute = 7;
    })
    .await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(c.get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap().status(), 200);
    }
    let resp = c.get(s.url("/api/v1/org")).bearer_auth(&s.admin_token).send().await.unwrap();
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body = problem(resp, 429).await;
    assert_eq!(body["code"], "rate-limited");
    assert!(body["detail"].as_str().unwrap().contains("credential"));
    assert_eq!(c.get(s.url("/api/v1/org")).bearer_auth(&s.staff_token).send().await.unwrap().status(), 200);
    for _ in 0..10 {
        assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200, "health checks are exempt");
    }
    let by_ip = problem(c.get(s.url("/api/v1/org")).bearer_auth(&s.auditor_token).send().await.unwrap(), 429).await;
    assert!(by_ip["detail"].as_str().unwrap().contains("address"), "{by_ip}");
    s.stop().await;
}

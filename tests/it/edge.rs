//! The HTTP edge under attack (issue 8, findings 7, 8, 9, 12, 13): extreme
//! parameter values, invented methods, slow and piled-up connections, HEAD
//! over HTTP/2, and errors that must all be problem+json.
use crate::support::{TestCa, TestServer, client, tls_connector};
use docket::auth::Role;
use docket::config::{Config, TlsMode};
use futures_util::StreamExt as _;
use rand::{Rng as _, SeedableRng as _};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

const PROBLEM: &str = "application/problem+json";

/// A fuzzing run is not a rate-limit test: lift the limits.
fn unlimited(c: &mut Config) {
    c.limits.per_credential_per_minute = 1_000_000;
    c.limits.per_ip_per_minute = 1_000_000;
    c.limits.sign_in_per_ip_per_minute = 1_000_000;
}

async fn served_spec(s: &TestServer) -> Value {
    client().get(s.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap()
}

/// Every (method, path template, operation) of the served spec.
fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut out = vec![];
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

/// Values that broke or could break a parser, already percent-encoded.
fn extreme_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "-1",
        "0",
        "-9223372036854775809",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999999999999999",
        "1e308",
        "NaN",
        "9999-12-31T23:59:59-23:59",
        "0000-01-01T00:00:00%2B23:59",
        "0001-01-01T00:00:00%2B23:59",
        "%2B275760-09-13T00:00:00Z",
        "-000001-01-01T00:00:00Z",
        "2026-13-45T25:61:61Z",
        "2026-02-29T00:00:00Z",
        "0000-00-00",
        "9999-99-99",
        "9999-12-31",
        "%ff%fe",
        "%00",
        "a%00b",
        "%C0%AF",
        "..%2F..%2Fetc%2Fpasswd",
        "%F0%9F%92%A5",
        "TRUE",
        "yes",
        "!!!",
        "dkt_%20%0d%0aX-Injected:%201",
    ]
    .map(String::from)
    .to_vec();
    v.push("x".repeat(10_000));
    v.push("0".repeat(70));
    v
}

/// Fills a path template: `target` gets `value`, other parameters a plain id.
fn fill(template: &str, target: Option<&str>, value: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if Some(name) == target => value.to_string(),
            Some(_) => "x1".to_string(),
            None => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Finding 7: every query and path parameter of every operation in the
/// served spec, driven with extreme values by an owner, answers 2xx or a
/// 4xx problem, never a 5xx or a reset; the server is alive afterwards.
/// A new operation is covered as soon as it is in the spec.
#[tokio::test]
async fn every_parameter_of_every_operation_survives_extreme_values() {
    let s = TestServer::start_with(unlimited).await;
    let spec = served_spec(&s).await;
    let owner = s.role_tokens[&Role::Owner].clone();
    let mut requests = vec![];
    for (method, path, op) in operations(&spec) {
        for param in op["parameters"].as_array().into_iter().flatten() {
            let (name, place) = (param["name"].as_str().unwrap(), param["in"].as_str().unwrap());
            for value in extreme_values() {
                let url = match place {
                    "path" => format!("/api/v1{}", fill(&path, Some(name), &value)),
                    "query" => format!("/api/v1{}?{name}={value}", fill(&path, None, "")),
                    _ => continue,
                };
                requests.push((method.clone(), url, format!("{method} {path} {place} `{name}`")));
            }
        }
    }
    let operations_with_parameters = operations(&spec)
        .iter()
        .filter(|(_, _, op)| op["parameters"].as_array().is_some_and(|p| !p.is_empty()))
        .count();
    assert!(operations_with_parameters >= 20, "the spec lists the list and read operations");
    let total = requests.len();
    let c = client();
    let failures: Vec<String> = futures_util::stream::iter(requests)
        .map(|(method, url, what)| {
            let (c, owner, base) = (c.clone(), owner.clone(), s.base.clone());
            async move {
                let sent = c.request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{url}"));
                let resp = match sent.bearer_auth(owner).send().await {
                    Ok(r) => r,
                    Err(e) => return Some(format!("{what}: no answer ({e})")),
                };
                let status = resp.status();
                let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let ok = status.is_success() || (status.is_client_error() && ct.starts_with(PROBLEM));
                (!ok).then(|| format!("{what} ({url:.120}): {status} {ct}"))
            }
        })
        .buffer_unordered(16)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    eprintln!("finding 7: {total} requests over {operations_with_parameters} operations with parameters");
    assert!(
        failures.is_empty(),
        "{} of {total} answers were not 2xx or a 4xx problem:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let alive = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200, "the server still answers");
    s.stop().await;
}

/// Finding 7, the reported value: a 400 problem naming the parameter and the form.
#[tokio::test]
async fn a_date_time_out_of_range_is_a_400_naming_the_parameter() {
    let s = TestServer::start().await;
    let owner = &s.role_tokens[&Role::Owner];
    for (query, name) in [
        ("/api/v1/matters?updated_since=9999-12-31T23:59:59-23:59", "updated_since"),
        ("/api/v1/matters?opened_from=0000-00-00", "opened_from"),
        ("/api/v1/matters?limit=18446744073709551616", "limit"),
        ("/api/v1/contacts?is_client=yes", "is_client"),
        ("/api/v1/notes?cursor=%ff%fe", "cursor"),
        ("/api/v1/audit/events?since=0000-01-01T00:00:00%2B23:59", "since"),
    ] {
        let r = client().get(s.url(query)).bearer_auth(owner).send().await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(r.headers()["content-type"], PROBLEM);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], name, "{query}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(&format!("`{name}`")), "{body}");
        assert!(body["detail"].as_str().unwrap().contains("expected"), "the detail names the form: {body}");
    }
    let r = client().get(s.url("/api/v1/matters?updated_since=2026-01-01T00:00:00-23:59")).bearer_auth(owner);
    assert_eq!(r.send().await.unwrap().status(), 200, "an odd offset within range is fine");
    s.stop().await;
}

/// The `/metrics` text as the loopback scraper sees it.
async fn metrics(s: &TestServer) -> String {
    client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

fn invented_method(rng: &mut rand::rngs::StdRng) -> String {
    let len = rng.gen_range(3..12);
    (0..len).map(|_| char::from(b'A' + rng.gen_range(0..26))).collect()
}

const PREFIXES: [&str; 7] = ["/", "/healthz", "/api/v1/", "/api/v1/matters/", "/api/docs/", "/hooks/clio/", "/metrics"];

fn random_path(rng: &mut rand::rngs::StdRng, i: usize) -> String {
    let prefix = PREFIXES[i % PREFIXES.len()];
    let tail: String = (0..rng.gen_range(0..16)).map(|_| char::from(b'a' + rng.gen_range(0..26))).collect();
    format!("{prefix}{tail}")
}

/// Finding 8: invented methods on random paths get 405 with `Allow` before
/// anything else, and metric labels stay within fixed sets: thousands of
/// such requests leave the size of `/metrics` essentially unchanged.
#[tokio::test]
async fn invented_methods_get_405_and_leave_metrics_bounded() {
    let s = TestServer::start_with(unlimited).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let send = |batch: Vec<(String, String)>| {
        let (c, base) = (client(), s.base.clone());
        futures_util::stream::iter(batch)
            .map(move |(method, path)| {
                let (c, base) = (c.clone(), base.clone());
                async move {
                    let r = c.request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{path}"));
                    let r = r.send().await.unwrap();
                    let problem = r.headers().get("content-type").is_some_and(|v| v == PROBLEM);
                    (r.status(), r.headers().contains_key("allow"), problem, format!("{method} {path}"))
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
    };
    // One request per route class first: their series appear once, then only counts change.
    let mut warm_up: Vec<_> = PREFIXES.iter().map(|p| (invented_method(&mut rng), p.to_string())).collect();
    warm_up.extend((0..50).map(|i| (invented_method(&mut rng), random_path(&mut rng, i))));
    for (status, allow, problem, what) in send(warm_up).await {
        assert_eq!((status, allow, problem), (StatusCode::METHOD_NOT_ALLOWED, true, true), "{what}");
    }
    metrics(&s).await; // the scrape itself is a series of its own
    let first = metrics(&s).await;
    let before = first.len();
    let http_bytes = |text: &str| text.lines().filter(|l| l.starts_with("docket_http_")).map(str::len).sum::<usize>();
    let n = 2000;
    let batch: Vec<_> = (0..n).map(|i| (invented_method(&mut rng), random_path(&mut rng, i))).collect();
    for (status, allow, problem, what) in send(batch).await {
        assert_eq!((status, allow, problem), (StatusCode::METHOD_NOT_ALLOWED, true, true), "{what}");
    }
    let text = metrics(&s).await;
    let growth = http_bytes(&text).saturating_sub(http_bytes(&first));
    eprintln!("finding 8: /metrics was {before} bytes, {} after {n} invented-method requests", text.len());
    // Background jobs (the first backup, shipping rounds) add their own fixed
    // series whenever they first run; the requests' series are the HTTP ones.
    let series = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("docket_http_"))
            .filter_map(|l| Some(l.rsplit_once(' ')?.0.to_string()))
            .collect()
    };
    let new: Vec<_> = series(&text).difference(&series(&first)).cloned().collect();
    assert!(new.is_empty(), "new series after invented methods: {new:?}");
    assert!(growth < 2048, "/metrics grew by {growth} bytes: labels are not from fixed sets");
    let known = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"];
    for label in text.split("method=\"").skip(1).filter_map(|rest| rest.split('"').next()) {
        assert!(known.contains(&label), "method label `{label}` is outside the fixed set");
    }
    assert!(!text.contains("route=\"/api/v1/matters/"), "routes are templates or fixed names, never raw paths");

    let r = client().post(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405, "a health check accepts GET and HEAD only");
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    s.stop().await;
}

/// Finding 12: a HEAD response over HTTP/2 has no body (a body is a protocol
/// error there) and the Content-Length of the GET, on pages, docs and problems.
#[tokio::test]
async fn head_over_http2_has_no_body() {
    let s = TestServer::start().await;
    let c = client();
    for (path, status) in
        [("/", 200), ("/healthz", 200), ("/api/docs", 200), ("/api/v1/nothing", 404), ("/api/v1/org", 401)]
    {
        let get = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(get.version(), reqwest::Version::HTTP_2, "the test client speaks HTTP/2");
        let length = get.bytes().await.unwrap().len();
        let head = c.head(s.url(path)).send().await.unwrap();
        assert_eq!(head.status(), status, "{path}");
        let declared = head.headers().get("content-length").map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
        assert_eq!(declared, Some(length), "{path}: HEAD declares the GET's length");
        assert!(head.bytes().await.unwrap().is_empty(), "{path}: HEAD carries no body");
    }
    let curl = std::process::Command::new("curl").arg("--version").output();
    if curl.is_ok_and(|o| o.status.success()) {
        for path in ["/", "/healthz", "/api/docs", "/api/v1/nothing"] {
            let url = s.url(path);
            let curl = move || std::process::Command::new("curl").args(["-ksI", "--http2", "-m", "20", &url]).output();
            let out = tokio::task::spawn_blocking(curl).await.unwrap().unwrap();
            assert!(out.status.success(), "curl -ksI --http2 {path} exited {:?}", out.status.code());
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/2"), "{path}");
        }
    } else {
        eprintln!("curl not installed: HEAD checked with the test client only");
    }
    s.stop().await;
}

async fn assert_problem(resp: reqwest::Response, status: u16, what: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "{what}");
    assert_eq!(resp.headers().get("content-type").map(|v| v.to_str().unwrap()), Some(PROBLEM), "{what}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status, "{what}");
    body
}

/// Finding 13: unrouted paths and oversized heads (HTTP/1.1 and HTTP/2)
/// answer problem+json.
#[tokio::test]
async fn unrouted_paths_and_oversized_heads_are_problems() {
    let s = TestServer::start().await;
    let c = client();
    for path in ["/api/v2/x", "/api//v1/org", "/api/v1/nothing/at/all"] {
        assert_problem(c.get(s.url(path)).bearer_auth(&s.admin_token).send().await.unwrap(), 404, path).await;
    }
    let query = format!("/api/v1/matters?status={}", "a".repeat(60 * 1024));
    let h1 = reqwest::Client::builder().danger_accept_invalid_certs(true).http1_only().build().unwrap();
    for (c, version) in [(&h1, reqwest::Version::HTTP_11), (&c, reqwest::Version::HTTP_2)] {
        let r = c.get(s.url(&query)).bearer_auth(&s.admin_token).send().await.unwrap();
        assert_eq!(r.version(), version);
        let body = assert_problem(r, 431, &format!("{version:?}")).await;
        assert_eq!(body["code"], "headers-too-large");
    }
    s.stop().await;
}

/// Finding 13: the plain-HTTP redirect never sends a browser to a host the
/// server is neither configured nor certified for.
#[tokio::test]
async fn redirect_only_to_known_hosts() {
    let s = TestServer::start().await;
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let c = client();
    let r = c.get(format!("{}/x?y=1", s.redirect_base)).header("host", "evil.example").send().await.unwrap();
    assert_problem(r, 400, "Host: evil.example").await;
    let r = c.get(format!("{}/x?y=1", s.redirect_base)).header("host", "evil.example:80").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c.get(format!("{}/x?y=1", s.redirect_base)).header("host", "localhost").send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("https://localhost:{port}/x?y=1").as_str());
    s.stop().await;

    let s = TestServer::start_with(|c| c.server.public_host = Some("docket.firm.example".into())).await;
    let r = client().get(format!("{}/x", s.redirect_base)).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 308);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("https://docket.firm.example:"), "{location}");
    s.stop().await;

    // With certificate files and no public_host, the certificate's names are the known hosts.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = TestCa::for_names("files", &["localhost", "docket.firm.example"]).write(dir.path());
    let s = TestServer::start_with(|c| {
        c.tls.mode = docket::config::TlsMode::Files;
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
    })
    .await;
    let get = |host: &'static str| client().get(format!("{}/x", s.redirect_base)).header("host", host).send();
    let r = get("docket.firm.example").await.unwrap();
    assert_eq!(r.status(), 308, "a name the certificate is for");
    assert!(r.headers()["location"].to_str().unwrap().starts_with("https://docket.firm.example:"));
    assert_eq!(get("evil.example").await.unwrap().status(), 400, "a name it is not for");
    s.stop().await;
}

/// Finding 13: the served spec declares every status the edge can answer,
/// on every operation; and `auth.providers` does answer 429.
#[tokio::test]
async fn every_operation_declares_the_edge_statuses() {
    let s = TestServer::start_with(|c| c.limits.per_ip_per_minute = 2).await;
    let spec = served_spec(&s).await;
    let mut missing = vec![];
    for (method, path, op) in operations(&spec) {
        let declared = op["responses"].as_object().unwrap();
        let mut expected = vec!["400", "405", "429", "431", "500", "503"];
        if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
            expected.extend(["401", "403"]);
        }
        if method != "GET" {
            expected.extend(["403", "413"]);
        }
        for status in expected {
            if !declared.contains_key(status) {
                missing.push(format!("{method} {path}: {status}"));
            }
        }
    }
    assert!(missing.is_empty(), "undeclared statuses:\n{}", missing.join("\n"));
    let c = client();
    let mut last = None;
    for _ in 0..4 {
        last = Some(c.get(s.url("/api/v1/auth/providers")).send().await.unwrap());
    }
    assert_problem(last.unwrap(), 429, "auth.providers over the limit").await;
    s.stop().await;
}

async fn connect_from(source: IpAddr, server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// Waits until the server closes `stream` (EOF or error); the time it took.
async fn closed<S: tokio::io::AsyncRead + Unpin>(mut stream: S, opened: Instant) -> Duration {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return opened.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("a slow connection was still open after 60 s"),
        }
    }
}

fn summary(name: &str, mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: &Duration| d.as_millis();
    format!(
        "{name}: {} opened, {} closed by the server; time to close min {} ms, median {} ms, max {} ms",
        times.len(),
        times.len(),
        times.first().map_or(0, ms),
        times.get(times.len() / 2).map_or(0, ms),
        times.last().map_or(0, ms)
    )
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

/// Finding 9: connections that stall in the TLS handshake (3 bytes of a
/// ClientHello) or in the request head (half a header after the handshake)
/// are closed by the server; past the per-address cap new connections are
/// refused, while a client from another address is still served.
#[tokio::test]
async fn slow_connections_are_closed_and_capped() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("edge");
    let (cert, key, _) = ca.write(certs.path());
    let per_address = 100;
    let s = TestServer::start_with(|c| {
        unlimited(c);
        c.tls.mode = TlsMode::Files;
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.limits.tls_handshake_seconds = 2;
        c.limits.header_read_seconds = 2;
        c.limits.idle_seconds = 5;
        c.limits.connections_per_address = per_address;
    })
    .await;
    let server = s.running.as_ref().unwrap().main_addrs[0];
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let (stall_a, stall_b, half_head) = (ip("127.0.0.10"), ip("127.0.0.11"), ip("127.0.0.12"));
    let (keep_alive, other) = (ip("127.0.0.13"), ip("127.0.0.2"));

    // 100 connections that finish the handshake, then send half a request head.
    let connector = tls_connector(&ca.ca_pem);
    let mut heads = vec![];
    for _ in 0..per_address {
        let tcp = connect_from(half_head, server).await;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localh").await.unwrap();
        tls.flush().await.unwrap();
        heads.push((tls, Instant::now()));
    }

    // 200 connections that send 3 bytes of a TLS ClientHello and stop.
    let mut handshakes = vec![];
    for source in [stall_a, stall_b] {
        for _ in 0..per_address {
            let mut stream = connect_from(source, server).await;
            stream.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
            handshakes.push((stream, Instant::now()));
        }
    }
    // 20 keep-alive connections that finish one request, then idle.
    let mut idle = vec![];
    for _ in 0..20 {
        let tcp = connect_from(keep_alive, server).await;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut answer = [0u8; 1024];
        let n = tls.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
        idle.push((tls, Instant::now()));
    }

    // The cap: one more from a full address is refused at once (counted), ...
    let before =
        counter(&metrics(&s).await, "docket_http_connections_refused_total{listener=\"main\",reason=\"per_address\"}");
    let refused = connect_from(stall_a, server).await;
    let refused_close = closed(refused, Instant::now()).await;
    let text = metrics(&s).await;
    let after = counter(&text, "docket_http_connections_refused_total{listener=\"main\",reason=\"per_address\"}");
    assert_eq!(after, before + 1, "the connection over the per-address cap is refused");
    // ... while a client from another address is served.
    let normal = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(other)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = normal.get(format!("https://127.0.0.1:{}/healthz", server.port())).send().await.unwrap();
    assert_eq!(r.status(), 200, "a normal client is still served");

    let handshake_times = futures_util::future::join_all(handshakes.into_iter().map(|(s, t)| closed(s, t))).await;
    let head_times = futures_util::future::join_all(heads.into_iter().map(|(s, t)| closed(s, t))).await;
    let idle_times = futures_util::future::join_all(idle.into_iter().map(|(s, t)| closed(s, t))).await;
    let text = metrics(&s).await;
    let by_reason = |reason: &str| {
        counter(&text, &format!("docket_http_connections_closed_total{{listener=\"main\",reason=\"{reason}\"}}"))
    };
    assert_eq!(by_reason("handshake_timeout"), 2 * per_address as u64, "every stalled handshake timed out");
    assert_eq!(by_reason("header_timeout"), per_address as u64, "every half head timed out");
    eprintln!("finding 9 (limits: handshake 2 s, header read 2 s, {per_address} per address):");
    eprintln!("  {}", summary("stalled TLS handshakes (3 bytes)", handshake_times));
    eprintln!("  {}", summary("half request heads after TLS", head_times));
    eprintln!("  {}", summary("idle HTTP/1.1 keep-alive after one request", idle_times));
    eprintln!(
        "  over the cap: 1 refused, closed after {} ms; a client from {other} got 200",
        refused_close.as_millis()
    );
    let alive = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(alive.status(), 200);
    s.stop().await;
}

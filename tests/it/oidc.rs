//! OIDC sign-in end to end against a real OpenID provider on loopback
//! (npm `oidc-provider`, started from tests/oidc/provider.mjs), including the
//! rejected cases: wrong state, missing flow cookie, wrong `iss`, tampered ID
//! tokens (signature, expiry, audience, nonce, issuer), replayed callbacks and
//! refused just-in-time sign-ups.
use crate::identity::same_site;
use crate::support::{TestServer, client, free_port, in_ci};
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

struct Provider {
    child: Child,
    issuer: String,
    /// A browser's cookie jar at the provider.
    browser: reqwest::Client,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn harness() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc"));
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    (node && dir.join("node_modules/oidc-provider").exists()).then_some(dir)
}

impl Provider {
    fn start(dir: &std::path::Path, redirect_uri: &str, post_logout: &str) -> Provider {
        let clients = json!([{
            "client_id": "docket", "client_secret": "docket-test-secret",
            "redirect_uris": [redirect_uri], "post_logout_redirect_uris": [post_logout],
        }]);
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args(["--port", "0", "--clients", &clients.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let issuer =
            line.trim().strip_prefix("READY ").unwrap_or_else(|| panic!("provider did not start: {line}")).to_string();
        let browser =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Provider { child, issuer, browser }
    }

    async fn control(&self, what: &str, body: Value) {
        let r = self.browser.post(format!("{}/__test/{what}", self.issuer)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 204, "{what}");
    }

    /// Follows the provider's redirects as a browser would, until it sends the
    /// browser back to docket; returns that callback URL.
    async fn authorize(&self, url: &str, docket_base: &str) -> String {
        let mut next = url.to_string();
        for _ in 0..10 {
            let r = self.browser.get(&next).send().await.unwrap();
            let location = r.headers().get("location").unwrap_or_else(|| panic!("{} at {next}", r.status()));
            let location = location.to_str().unwrap().to_string();
            if location.starts_with(docket_base) {
                return location;
            }
            next = if location.starts_with('/') { format!("{}{location}", self.issuer) } else { location };
        }
        panic!("the provider never redirected back to docket");
    }
}

fn cookie_named(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Starts a sign-in at docket and walks the provider; returns (callback URL, flow cookie).
async fn begin(s: &TestServer, idp: &Provider) -> (String, String) {
    let r = client().get(s.url("/api/v1/auth/oidc/test/sign-in?return_to=/matters")).send().await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let flow = cookie_named(&r, "__Host-docket_oidc_flow");
    let to_idp = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to_idp.starts_with(&idp.issuer), "{to_idp}");
    for part in ["code_challenge_method=S256", "state=", "nonce=", "client_id=docket", "scope=openid"] {
        assert!(to_idp.contains(part), "{part} in {to_idp}");
    }
    (idp.authorize(&to_idp, &s.base).await, flow)
}

async fn finish(callback: &str, flow: &str) -> reqwest::Response {
    client().get(callback).header("cookie", flow).send().await.unwrap()
}

async fn problem(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["detail"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn oidc_sign_in_against_a_real_provider() {
    let Some(dir) = harness() else {
        assert!(!in_ci(), "CI must install the OIDC test provider (npm ci --prefix tests/oidc in .ci/run)");
        eprintln!("SKIPPED oidc test: run `npm ci --prefix tests/oidc` (needs Node.js)");
        return;
    };
    let port = free_port();
    let base = format!("https://localhost:{port}");
    let idp = Provider::start(&dir, &format!("{base}/api/v1/auth/oidc/test/callback"), &format!("{base}/"));
    let provider: docket::config::OidcProviderConfig = toml::from_str(&format!(
        r#"id = "test"
           org = "smith-jones"
           display_name = "Test IdP"
           issuer = "{}"
           client_id = "docket"
           client_secret = "docket-test-secret"
           scopes = ["openid", "email", "profile", "groups"]
           groups_claim = "groups"
           jit = true
           allowed_domains = ["smith-jones.com"]
           [role_map]
           "Docket Admins" = "admin"
           "Partners" = "manager""#,
        idp.issuer
    ))
    .unwrap();
    let s = TestServer::start_with(move |c| {
        c.server.listen = vec![format!("127.0.0.1:{port}").parse().unwrap()];
        c.auth.oidc = vec![provider];
        c.limits.sign_in_per_ip_per_minute = 1000;
    })
    .await;
    assert_eq!(s.base, base);
    idp.control(
        "accounts",
        json!({
            "alice": {"email": "alice@smith-jones.com", "name": "Alice Smith", "groups": ["Partners", "Docket Admins"]},
            "mallory": {"email": "mallory@evil.test", "name": "Mallory", "groups": ["Docket Admins"]},
        }),
    )
    .await;

    let providers: Value = client().get(s.url("/api/v1/auth/providers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(providers["providers"][0]["display_name"], "Test IdP");

    // The happy path: JIT membership with the most privileged mapped role.
    let (callback, flow) = begin(&s, &idp).await;
    assert!(callback.contains("iss="), "RFC 9207 iss in the response: {callback}");
    let done = finish(&callback, &flow).await;
    assert_eq!(done.status(), 303, "{:?}", problem(done).await);
    assert_eq!(done.headers()["location"], "/matters", "back where the user started");
    let session = cookie_named(&done, "__Host-docket_session");
    let me: Value =
        client().get(s.url("/api/v1/me")).header("cookie", &session).send().await.unwrap().json().await.unwrap();
    assert_eq!((me["email"].as_str(), me["role"].as_str()), (Some("alice@smith-jones.com"), Some("admin")), "{me}");

    // Replaying the callback (same code and state) is refused.
    let (status, detail) = problem(finish(&callback, &flow).await).await;
    assert_eq!((status, detail.contains("state")), (400, true), "{detail}");

    // A state docket never issued; a flow cookie from another browser; a foreign `iss`.
    let (callback, flow) = begin(&s, &idp).await;
    let forged = regex_replace(&callback, "state=", "state=x");
    assert_eq!(problem(finish(&forged, &flow).await).await.0, 400, "wrong state");
    let (callback, _) = begin(&s, &idp).await;
    let (status, detail) = problem(finish(&callback, "__Host-docket_oidc_flow=someone-elses").await).await;
    assert_eq!((status, detail.contains("another browser")), (400, true), "{detail}");
    let (callback, flow) = begin(&s, &idp).await;
    let evil_iss = regex_replace(&callback, "iss=", "iss=http%3A%2F%2Fevil.test&x=");
    let (status, detail) = problem(finish(&evil_iss, &flow).await).await;
    assert_eq!((status, detail.contains("iss")), (400, true), "{detail}");

    // Tampered ID tokens: each is refused and signs nobody in.
    for mode in ["bad-signature", "expired", "wrong-audience", "wrong-nonce", "wrong-issuer"] {
        idp.control("tamper", json!({"mode": mode})).await;
        let (callback, flow) = begin(&s, &idp).await;
        let resp = finish(&callback, &flow).await;
        assert!(
            resp.headers()
                .get_all("set-cookie")
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("__Host-docket_session"))
        );
        let (status, detail) = problem(resp).await;
        assert_eq!(status, 400, "{mode}: {detail}");
        assert!(detail.contains("ID token is invalid"), "{mode}: {detail}");
    }
    idp.control("tamper", json!({"mode": null})).await;

    // Just-in-time sign-up only for the allowed domain.
    idp.control("next-login", json!({"login": "mallory"})).await;
    let (callback, flow) = begin(&s, &idp).await;
    let (status, detail) = problem(finish(&callback, &flow).await).await;
    assert_eq!((status, detail.contains("evil.test")), (403, true), "{detail}");

    // Sign-out ends the session and offers the provider's logout.
    let out =
        same_site(&s, client().post(s.url("/api/v1/auth/sign-out"))).header("cookie", &session).send().await.unwrap();
    assert_eq!(out.status(), 200);
    let body: Value = out.json().await.unwrap();
    let logout = body["logout_url"].as_str().unwrap();
    assert!(
        logout.starts_with(&format!("{}/session/end", idp.issuer)) && logout.contains("client_id=docket"),
        "{logout}"
    );
    assert_eq!(client().get(s.url("/api/v1/me")).header("cookie", &session).send().await.unwrap().status(), 401);

    let events = s.audit_events("auth.sign_in").await;
    let failures = events.iter().filter(|e| e["outcome"] == "failure").count();
    assert!(failures >= 9, "every refused sign-in is audited: {failures}");
    assert!(events.iter().any(|e| e["outcome"] == "success" && e["details"]["method"] == "oidc:test"));
    s.stop().await;
}

/// Replaces the first occurrence of `key` (a query-parameter prefix) with `with`.
fn regex_replace(url: &str, key: &str, with: &str) -> String {
    let at = url.find(&format!("&{key}")).or_else(|| url.find(&format!("?{key}"))).unwrap() + 1;
    format!("{}{with}{}", &url[..at], &url[at + key.len()..])
}

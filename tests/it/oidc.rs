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

/// docket with the `test` provider (JIT for smith-jones.com, role mapping)
/// against a fresh real provider, or `None` where the provider is not
/// installed (never in CI).
async fn start() -> Option<(TestServer, Provider)> {
    let Some(dir) = harness() else {
        assert!(!in_ci(), "CI must install the OIDC test provider (npm ci --prefix tests/oidc in .ci/run)");
        eprintln!("SKIPPED oidc test: run `npm ci --prefix tests/oidc` (needs Node.js)");
        return None;
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
           default_role = "staff"
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
        json!({"alice": {"email": "alice@smith-jones.com", "name": "Alice Smith", "groups": ["Partners", "Docket Admins"]}}),
    )
    .await;
    Some((s, idp))
}

/// Signs in as provider login `login`: the callback's response.
async fn sign_in_as(s: &TestServer, idp: &Provider, login: &str) -> reqwest::Response {
    idp.control("next-login", json!({"login": login})).await;
    let (callback, flow) = begin(s, idp).await;
    finish(&callback, &flow).await
}

/// Whether a response started a docket session.
fn signed_in(resp: &reqwest::Response) -> bool {
    resp.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with("__Host-docket_session"))
}

/// Who a session cookie is: (email, role).
async fn whoami(s: &TestServer, session: &str) -> (String, String) {
    let me: Value =
        client().get(s.url("/api/v1/me")).header("cookie", session).send().await.unwrap().json().await.unwrap();
    (me["email"].as_str().unwrap_or_default().into(), me["role"].as_str().unwrap_or_default().into())
}

/// Asks the API to add member `email` as staff.
async fn post_member(s: &TestServer, email: &str) -> reqwest::Response {
    let body = json!({"email": email, "role": "staff"});
    client().post(s.url("/api/v1/members")).bearer_auth(&s.admin_token).json(&body).send().await.unwrap()
}

/// Adds member `email` (no identity yet) through the API.
async fn add_member(s: &TestServer, email: &str) -> Value {
    let r = post_member(s, email).await;
    assert_eq!(r.status(), 201, "adding {email}");
    r.json().await.unwrap()
}

/// The member with `email`, as the API lists it.
async fn member(s: &TestServer, email: &str) -> Value {
    let all: Value =
        client().get(s.url("/api/v1/members")).bearer_auth(&s.admin_token).send().await.unwrap().json().await.unwrap();
    let list = all["items"].as_array().cloned().unwrap_or_default();
    list.into_iter().find(|m| m["email"] == email).unwrap_or(Value::Null)
}

#[tokio::test]
async fn oidc_sign_in_against_a_real_provider() {
    let Some((s, idp)) = start().await else { return };
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

/// The refusal of a sign-in that must not start a session: (status, detail).
async fn refused(resp: reqwest::Response) -> (u16, String) {
    assert!(!signed_in(&resp), "no session for a refused sign-in");
    problem(resp).await
}

/// Alice's sign-in with the provider tampering as `mode`: refused with a 400,
/// no session; returns the detail.
async fn tampered(s: &TestServer, idp: &Provider, mode: &str) -> String {
    idp.control("tamper", json!({ "mode": mode })).await;
    let (status, detail) = refused(sign_in_as(s, idp, "alice").await).await;
    assert_eq!(status, 400, "{mode}: {detail}");
    detail
}

#[tokio::test]
async fn emails_match_only_in_their_one_normal_form() {
    let Some((s, idp)) = start().await else { return };
    add_member(&s, "kate@smith-jones.com").await;
    idp.control(
        "accounts",
        json!({
            "kelvin": {"email": "\u{212A}ate@smith-jones.com"},
            "shouting": {"email": "KATE@Smith-Jones.COM", "name": "Kate"},
            "kate-2": {"email": "kate@smith-jones.com"},
        }),
    )
    .await;

    // KELVIN SIGN folds to `k` under Unicode lower-casing: refused, never kate.
    let (status, detail) = refused(sign_in_as(&s, &idp, "kelvin").await).await;
    assert_eq!(status, 400, "{detail}");
    assert!(detail.contains("`email` claim") && detail.contains("ASCII"), "{detail}");
    assert!(member(&s, "kate@smith-jones.com").await["identities"].as_array().unwrap().is_empty(), "kate unlinked");

    // ASCII case is not a difference: kate's own provider account links to her.
    let done = sign_in_as(&s, &idp, "shouting").await;
    assert_eq!(done.status(), 303, "{:?}", problem(done).await);
    let session = cookie_named(&done, "__Host-docket_session");
    assert_eq!(whoami(&s, &session).await.0, "kate@smith-jones.com");
    let kate = member(&s, "kate@smith-jones.com").await;
    assert_eq!(kate["identities"], json!([{"provider": "test", "subject": "shouting"}]), "{kate}");

    let events = s.audit_events("auth.sign_in").await;
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["details"]["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("`email` claim")), "{reasons:?}");
    s.stop().await;
}

#[tokio::test]
async fn padded_emails_are_refused_not_trimmed() {
    let Some((s, idp)) = start().await else { return };
    add_member(&s, "kate@smith-jones.com").await;
    idp.control(
        "accounts",
        json!({"padded": {"email": " kate@smith-jones.com"}, "trailing": {"email": "kate@smith-jones.com\t"}}),
    )
    .await;
    for login in ["padded", "trailing"] {
        let (status, detail) = refused(sign_in_as(&s, &idp, login).await).await;
        assert_eq!((status, detail.contains("spaces")), (400, true), "{login}: {detail}");
    }
    assert!(member(&s, "kate@smith-jones.com").await["identities"].as_array().unwrap().is_empty(), "kate unlinked");
    // Members are stored in the same normal form: a look-alike is refused there too.
    let (status, detail) = problem(post_member(&s, "\u{212A}ate@smith-jones.com").await).await;
    assert_eq!(status, 422, "{detail}");
    assert!(detail.contains("ASCII"), "{detail}");
    s.stop().await;
}

#[tokio::test]
async fn identities_match_by_subject_and_email_never_borrows_a_linked_account() {
    let Some((s, idp)) = start().await else { return };
    idp.control(
        "accounts",
        json!({
            "dave-1": {"email": "dave@smith-jones.com", "name": "Dave"},
            "dave-2": {"email": "dave@smith-jones.com", "name": "Not Dave"},
        }),
    )
    .await;
    let first = sign_in_as(&s, &idp, "dave-1").await;
    assert_eq!(first.status(), 303, "{:?}", problem(first).await);

    // A second subject with dave's email at the same provider: refused and audited.
    let (status, detail) = refused(sign_in_as(&s, &idp, "dave-2").await).await;
    assert_eq!(status, 403, "{detail}");
    assert!(detail.contains("already linked"), "{detail}");
    let dave = member(&s, "dave@smith-jones.com").await;
    assert_eq!(dave["identities"], json!([{"provider": "test", "subject": "dave-1"}]), "no second link: {dave}");
    let events = s.audit_events("auth.sign_in").await;
    let audited = events.iter().find(|e| e["details"]["subject"] == "dave-2").expect("the refusal is audited");
    assert_eq!(audited["outcome"], "failure");
    assert!(audited["details"]["reason"].as_str().unwrap().contains("already linked"), "{audited}");

    // The linked subject still signs in, matched by subject even if the email changes.
    idp.control("accounts", json!({"dave-1": {"email": "david@smith-jones.com"}})).await;
    let again = sign_in_as(&s, &idp, "dave-1").await;
    assert_eq!(again.status(), 303, "{:?}", problem(again).await);
    assert_eq!(whoami(&s, &cookie_named(&again, "__Host-docket_session")).await.0, "dave@smith-jones.com");
    s.stop().await;
}

#[tokio::test]
async fn the_break_glass_admin_is_never_linked_to_a_provider_account() {
    let Some((s, idp)) = start().await else { return };
    idp.control("accounts", json!({"breakglass": {"email": "breakglass@smith-jones.com"}})).await;
    crate::identity::create_admin(&s, "breakglass@smith-jones.com").await;
    let (status, detail) = refused(sign_in_as(&s, &idp, "breakglass").await).await;
    assert_eq!(status, 403, "{detail}");
    assert!(detail.contains("break-glass"), "{detail}");
    assert!(member(&s, "breakglass@smith-jones.com").await["identities"].as_array().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn id_tokens_issued_in_the_future_are_refused_beyond_the_clock_skew() {
    let Some((s, idp)) = start().await else { return };
    let detail = tampered(&s, &idp, "future-iat").await;
    assert!(detail.contains("ID token is invalid") && detail.contains("clock skew"), "{detail}");
    // A minute ahead is within the default skew of two minutes.
    idp.control("tamper", json!({"mode": "iat-ahead-60s"})).await;
    let done = sign_in_as(&s, &idp, "alice").await;
    assert_eq!(done.status(), 303, "{:?}", problem(done).await);
    s.stop().await;
}

#[tokio::test]
async fn a_missing_iss_is_refused_when_the_provider_advertises_it() {
    let Some((s, idp)) = start().await else { return };
    let discovery: Value = client()
        .get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["authorization_response_iss_parameter_supported"], true);
    let (callback, flow) = begin(&s, &idp).await;
    let at = callback.find("iss=").unwrap();
    let end = callback[at..].find('&').map_or(callback.len(), |e| at + e + 1);
    let without_iss = format!("{}{}", &callback[..at], &callback[end..]);
    let without_iss = without_iss.trim_end_matches(['&', '?']).to_string();
    assert!(!without_iss.contains("iss="), "{without_iss}");
    let (status, detail) = refused(finish(&without_iss, &flow).await).await;
    assert_eq!(status, 400, "{detail}");
    assert!(detail.contains("`iss` parameter is missing") && detail.contains("RFC 9207"), "{detail}");
    s.stop().await;
}

#[tokio::test]
async fn oversized_id_tokens_and_claims_are_refused_saying_so() {
    let Some((s, idp)) = start().await else { return };
    let detail = tampered(&s, &idp, "pad-1m").await;
    assert!(detail.contains("token response is larger than 262144 bytes"), "{detail}");
    let detail = tampered(&s, &idp, "pad-100k").await;
    assert!(detail.contains("ID token is larger than 65536 bytes"), "{detail}");
    idp.control("tamper", json!({"mode": null})).await;

    let many: Vec<String> = (0..501).map(|i| format!("g{i}")).collect();
    let long = vec!["x".repeat(257)];
    let fine: Vec<String> = (0..500).map(|i| format!("g{i}")).collect();
    idp.control(
        "accounts",
        json!({
            "many": {"email": "many@smith-jones.com", "groups": many},
            "long": {"email": "long@smith-jones.com", "groups": long},
            "fine": {"email": "fine@smith-jones.com", "groups": fine},
        }),
    )
    .await;
    for login in ["many", "long"] {
        let (status, detail) = refused(sign_in_as(&s, &idp, login).await).await;
        assert_eq!(status, 400, "{login}: {detail}");
        assert!(detail.contains("at most 500") && detail.contains("256 characters"), "{login}: {detail}");
    }
    let done = sign_in_as(&s, &idp, "fine").await;
    assert_eq!(done.status(), 303, "500 groups are accepted: {:?}", problem(done).await);
    assert_eq!(member(&s, "fine@smith-jones.com").await["groups"].as_array().map(Vec::len), Some(500));
    s.stop().await;
}

#[tokio::test]
async fn the_callback_url_comes_from_public_host_not_the_host_header() {
    let Some((s, _idp)) = start().await else { return };
    let port = s.base.rsplit(':').next().unwrap().to_string();
    // HTTP/1.1, so the forged `Host` header is what the server sees.
    let http1 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .build()
        .unwrap();
    let r = http1
        .get(s.url("/api/v1/auth/oidc/test/sign-in"))
        .header("host", format!("evil.test:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to_idp = r.headers()["location"].to_str().unwrap().to_string();
    let expected = format!("redirect_uri=https%3A%2F%2Flocalhost%3A{port}%2Fapi%2Fv1%2Fauth%2Foidc%2Ftest%2Fcallback");
    assert!(to_idp.contains(&expected), "{to_idp}");
    s.stop().await;
}

#[tokio::test]
async fn a_stranger_holding_the_state_cannot_spoil_the_sign_in() {
    let Some((s, idp)) = start().await else { return };
    let (callback, flow) = begin(&s, &idp).await;
    let (status, detail) = refused(finish(&callback, "__Host-docket_oidc_flow=stolen-state-only").await).await;
    assert_eq!((status, detail.contains("another browser")), (400, true), "{detail}");
    let (status, _) = refused(client().get(&callback).send().await.unwrap()).await;
    assert_eq!(status, 400, "no cookie at all");
    let done = finish(&callback, &flow).await;
    assert_eq!(done.status(), 303, "the real browser still signs in: {:?}", problem(done).await);
    s.stop().await;
}

async fn jwks_fetches(idp: &Provider) -> u64 {
    let counts: Value =
        idp.browser.get(format!("{}/__test/counts", idp.issuer)).send().await.unwrap().json().await.unwrap();
    counts["jwks"].as_u64().unwrap()
}

#[tokio::test]
async fn a_key_rotation_at_the_provider_refetches_the_key_set_once() {
    let Some((s, idp)) = start().await else { return };
    let first = sign_in_as(&s, &idp, "alice").await;
    assert_eq!(first.status(), 303, "{:?}", problem(first).await);
    let before = jwks_fetches(&idp).await;

    idp.control("rotate-key", json!({})).await;
    // Sign-ins at once after the rotation: all pass, on one refetch.
    let flows = futures_util::future::join_all((0..8).map(|_| begin(&s, &idp))).await;
    let done = futures_util::future::join_all(flows.iter().map(|(callback, flow)| finish(callback, flow))).await;
    for rotated in done {
        assert_eq!(rotated.status(), 303, "a rotated key is fetched: {:?}", problem(rotated).await);
    }
    assert_eq!(jwks_fetches(&idp).await, before + 1, "one refetch");

    // A key nobody lists: refused, and the key set is not fetched again at once.
    let detail = tampered(&s, &idp, "unknown-kid").await;
    assert!(detail.contains("key set does not list"), "{detail}");
    assert_eq!(jwks_fetches(&idp).await, before + 1, "refetches are rate-limited");
    s.stop().await;
}

/// A hostile provider on loopback: answers every request with what `answer`
/// gives for its path (status 200, JSON), one request per connection.
async fn hostile_provider(answer: impl Fn(&str, &str) -> String + Send + Sync + 'static) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    let at = issuer.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (answer, at) = (answer.clone(), at.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let body = answer(&at, &path);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    issuer
}

fn discovery_of(issuer: &str, padding: usize) -> String {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "padding": "x".repeat(padding),
    })
    .to_string()
}

async fn docket_with_provider(issuer: &str) -> TestServer {
    let provider: docket::config::OidcProviderConfig = toml::from_str(&format!(
        "id = 'test'\norg = 'smith-jones'\nissuer = '{issuer}'\nclient_id = 'docket'\nclient_secret = 's'\n"
    ))
    .unwrap();
    TestServer::start_with(move |c| {
        c.auth.oidc = vec![provider];
        c.limits.sign_in_per_ip_per_minute = 1000;
    })
    .await
}

#[tokio::test]
async fn oversized_discovery_documents_and_key_sets_are_refused_saying_so() {
    let big_discovery = hostile_provider(|issuer, _| discovery_of(issuer, 200 * 1024)).await;
    let s = docket_with_provider(&big_discovery).await;
    let (status, detail) = problem(client().get(s.url("/api/v1/auth/oidc/test/sign-in")).send().await.unwrap()).await;
    assert_eq!(status, 502, "{detail}");
    assert!(detail.contains("discovery document is larger than 131072 bytes"), "{detail}");
    s.stop().await;

    let big_keys = hostile_provider(|issuer, path| {
        if path.ends_with("/jwks") {
            json!({"keys": [], "padding": "x".repeat(200 * 1024)}).to_string()
        } else {
            discovery_of(issuer, 0)
        }
    })
    .await;
    let s = docket_with_provider(&big_keys).await;
    let (status, detail) = problem(client().get(s.url("/api/v1/auth/oidc/test/sign-in")).send().await.unwrap()).await;
    assert_eq!(status, 502, "{detail}");
    assert!(detail.contains("key set (JWKS) is larger than 131072 bytes"), "{detail}");
    s.stop().await;
}

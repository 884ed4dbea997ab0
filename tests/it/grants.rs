//! The one grant rule, proven over the served spec. Every operation that
//! confers a role or permissions, found structurally in the spec (a request
//! body with `role`, `roles`, `permissions` or `scopes`, or a response that
//! hands out a credential), must be in [`COVERED`]; each is then tried by a
//! caller of every role (the five built-ins and custom roles holding only
//! `tokens:manage`, only `roles:write`, only `members:write`), as a service
//! token and as a member's personal token, granting every role and permission
//! set. Afterwards no member or token of the firm, and no credential the caller
//! obtained, may hold a permission the caller lacked, and only owners may have
//! made owners. Plus one regression test per finding of issue 8 (#2, #3, #4).
use crate::support::{TestServer, client};
use docket::auth::{Permission, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Every granting operation this test exercises, and how.
const COVERED: &[(&str, &str)] = &[
    ("tokens.create", "personal tokens, unscoped, scoped to everything and to one permission"),
    ("tokens.create_service", "service tokens of every role, unscoped and scoped to everything"),
    ("tokens.rotate", "every token of the firm, the caller's own last"),
    ("roles.put", "new roles with each permission and with all; editing roles the caller and others hold"),
    ("members.create", "members of every role"),
    ("members.update", "every member to every role, the caller last"),
    ("auth.local_sign_in", "confers only the signing-in member's own role: tests in identity.rs"),
];

/// Custom roles of the callers, each with one permission.
const CUSTOM_CALLERS: [(&str, Permission); 3] = [
    ("tokens-only", Permission::TokensManage),
    ("roles-only", Permission::RolesWrite),
    ("members-only", Permission::MembersWrite),
];

type Perms = BTreeSet<String>;

fn all_perms() -> Perms {
    Permission::ALL.iter().map(|p| p.as_str().to_string()).collect()
}

fn strings(v: &Value) -> Perms {
    v.as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)).collect()
}

thread_local! {
    /// One client per test thread (and so per test runtime), reusing its connections.
    static HTTP: reqwest::Client = client();
}

async fn send(s: &TestServer, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let http = HTTP.with(|c| c.clone());
    let mut req = http.request(method, s.url(&format!("/api/v1{path}"))).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// The property names of a schema, following `$ref`s.
fn properties(spec: &Value, schema: &Value) -> Vec<String> {
    let resolved = match schema["$ref"].as_str() {
        Some(r) => &spec["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => schema,
    };
    resolved["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

/// Operations of the spec that confer a role or permissions, or hand out a credential.
fn granting_operations(spec: &Value) -> Vec<String> {
    let mut out = vec![];
    for ops in spec["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            let bodies = op["requestBody"]["content"].as_object().into_iter().flatten();
            let grants = bodies
                .flat_map(|(_, c)| properties(spec, &c["schema"]))
                .any(|p| ["role", "roles", "permissions", "scopes"].contains(&p.as_str()));
            let responses = op["responses"].as_object().into_iter().flatten().filter(|(code, _)| code.starts_with('2'));
            let credential = responses
                .flat_map(|(_, r)| r["content"].as_object().into_iter().flatten())
                .flat_map(|(_, c)| properties(spec, &c["schema"]))
                .any(|p| p == "token" || p == "session_id");
            if grants || credential {
                out.push(op["operationId"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

/// What a member or token holds.
#[derive(Clone, Debug, PartialEq)]
struct Holding {
    perms: Perms,
    owner: bool,
}

/// Every member and token of the firm and what each holds, as the firm's root sees it.
async fn holdings(s: &TestServer, root: &str) -> BTreeMap<String, Holding> {
    let (_, roles) = send(s, root, Method::GET, "/roles", None).await;
    let role_perms: BTreeMap<String, Perms> = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), strings(&r["permissions"])))
        .collect();
    let of_role = |role: &str| role_perms.get(role).cloned().unwrap_or_default();
    let (_, members) = send(s, root, Method::GET, "/members?limit=500", None).await;
    let mut out = BTreeMap::new();
    let mut member_roles = BTreeMap::new();
    for m in members["items"].as_array().unwrap() {
        let role = if m["disabled"] == true { "" } else { m["role"].as_str().unwrap() };
        member_roles.insert(m["id"].as_str().unwrap().to_string(), role.to_string());
        let held = Holding { perms: of_role(role), owner: role == "owner" };
        out.insert(format!("member {} ({role})", m["email"].as_str().unwrap()), held);
    }
    let (_, tokens) = send(s, root, Method::GET, "/tokens?limit=500", None).await;
    for t in tokens["items"].as_array().unwrap() {
        let role = match t["user_id"].as_str() {
            Some(user) => member_roles.get(user).cloned().unwrap_or_default(),
            None => t["role"].as_str().unwrap().to_string(),
        };
        let scopes = strings(&t["scopes"]);
        let perms: Perms = of_role(&role).into_iter().filter(|p| scopes.is_empty() || scopes.contains(p)).collect();
        let owner = role == "owner" && perms == all_perms();
        out.insert(format!("token {} ({role})", t["id"].as_str().unwrap()), Holding { perms, owner });
    }
    out
}

/// One firm set up for one caller: roles, members and tokens of every role.
struct Firm {
    s: TestServer,
    root: String,
    root_id: String,
    caller: String,
    caller_id: String,
    caller_member: Option<String>,
    roles: Vec<String>,
}

async fn firm(caller_role: &str, personal: bool) -> Firm {
    let s = TestServer::start_with(|c| c.limits.sign_in_per_ip_per_minute = 100_000).await;
    let root = s.role_tokens[&Role::Owner].clone();
    let (_, me) = send(&s, &root, Method::GET, "/me", None).await;
    let root_id = me["credential_id"].as_str().unwrap().to_string();
    let mut customs: Vec<(String, Vec<String>)> =
        CUSTOM_CALLERS.iter().map(|(name, p)| (name.to_string(), vec![p.as_str().to_string()])).collect();
    customs.push(("everything".into(), all_perms().into_iter().collect()));
    customs.push(("clerk".into(), vec!["org:read".into()]));
    for (name, perms) in &customs {
        let (status, body) =
            send(&s, &root, Method::PUT, &format!("/roles/{name}"), Some(json!({"permissions": perms}))).await;
        assert_eq!(status, 201, "{body}");
    }
    let roles: Vec<String> =
        Role::ALL.iter().map(|r| r.as_str().to_string()).chain(customs.into_iter().map(|c| c.0)).collect();
    for role in &roles {
        let member = json!({"email": format!("held-{role}@smith-jones.test"), "role": role});
        assert_eq!(send(&s, &root, Method::POST, "/members", Some(member)).await.0, 201);
        let token = json!({"name": format!("held {role}"), "role": role});
        assert_eq!(send(&s, &root, Method::POST, "/tokens/service", Some(token)).await.0, 201);
    }
    let (caller, caller_member) = if personal {
        let member = json!({"email": "caller@smith-jones.test", "role": caller_role});
        let (status, made) = send(&s, &root, Method::POST, "/members", Some(member)).await;
        assert_eq!(status, 201, "{made}");
        let id = made["id"].as_str().unwrap().to_string();
        (s.personal_token(&id), Some(id))
    } else {
        let token = json!({"name": "caller", "role": caller_role});
        let (status, made) = send(&s, &root, Method::POST, "/tokens/service", Some(token)).await;
        assert_eq!(status, 201, "{made}");
        (made["token"].as_str().unwrap().to_string(), None)
    };
    let (_, me) = send(&s, &caller, Method::GET, "/me", None).await;
    let caller_id = me["credential_id"].as_str().unwrap().to_string();
    Firm { s, root, root_id, caller, caller_id, caller_member, roles }
}

/// What one caller tried and obtained.
#[derive(Default)]
struct Outcome {
    /// (operation, what was granted) for each success.
    successes: Vec<String>,
    secrets: Vec<String>,
}

impl Outcome {
    fn note(&mut self, status: StatusCode, body: &Value, what: String) {
        assert!(status.as_u16() < 500 && status != 429, "{what}: {status} {body}");
        if status.is_success() {
            if let Some(secret) = body["token"].as_str() {
                self.secrets.push(secret.to_string());
            }
            self.successes.push(what);
        }
    }
}

/// Tries every granting operation as the caller, with every role and permission set.
async fn try_everything(f: &Firm) -> Outcome {
    let (s, caller) = (&f.s, f.caller.as_str());
    let mut out = Outcome::default();
    let scope_sets: Vec<Vec<String>> = vec![vec![], all_perms().into_iter().collect(), vec!["org:read".into()]];
    for scopes in &scope_sets {
        let (status, body) =
            send(s, caller, Method::POST, "/tokens", Some(json!({"name": "mine", "scopes": scopes}))).await;
        out.note(status, &body, format!("tokens.create {scopes:?}"));
    }
    for role in &f.roles {
        for scopes in &scope_sets[..2] {
            let body = json!({"name": "granted", "role": role, "scopes": scopes});
            let (status, body) = send(s, caller, Method::POST, "/tokens/service", Some(body)).await;
            out.note(status, &body, format!("tokens.create_service {role} {scopes:?}"));
        }
    }
    let mut sets: Vec<Vec<String>> = Permission::ALL.iter().map(|p| vec![p.as_str().to_string()]).collect();
    sets.push(all_perms().into_iter().collect());
    for (i, perms) in sets.iter().enumerate() {
        let (status, body) =
            send(s, caller, Method::PUT, &format!("/roles/new-{i}"), Some(json!({"permissions": perms}))).await;
        out.note(status, &body, format!("roles.put new {perms:?}"));
    }
    for role in &f.roles {
        let member = json!({"email": format!("new-{role}@smith-jones.test"), "role": role});
        let (status, body) = send(s, caller, Method::POST, "/members", Some(member)).await;
        out.note(status, &body, format!("members.create {role}"));
    }
    let (_, tokens) = send(s, &f.root, Method::GET, "/tokens?limit=500", None).await;
    for t in tokens["items"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        if id != f.root_id && id != f.caller_id {
            let (status, body) = send(s, caller, Method::POST, &format!("/tokens/{id}/rotate"), None).await;
            out.note(status, &body, format!("tokens.rotate {} {}", t["kind"], t["role"]));
        }
    }
    for role in f.roles.iter().filter(|r| r.parse::<Role>().is_err()) {
        for perms in [all_perms().into_iter().collect::<Vec<_>>(), vec!["org:read".to_string()]] {
            let (status, body) =
                send(s, caller, Method::PUT, &format!("/roles/{role}"), Some(json!({"permissions": perms}))).await;
            out.note(status, &body, format!("roles.put {role} {perms:?}"));
        }
    }
    let (_, members) = send(s, &f.root, Method::GET, "/members?limit=500", None).await;
    let mut ids: Vec<String> =
        members["items"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    ids.sort_by_key(|id| Some(id) == f.caller_member.as_ref());
    for id in &ids {
        for role in &f.roles {
            let (status, body) =
                send(s, caller, Method::PATCH, &format!("/members/{id}"), Some(json!({"role": role}))).await;
            out.note(status, &body, format!("members.update {id} to {role}"));
        }
    }
    let (status, body) = send(s, caller, Method::POST, &format!("/tokens/{}/rotate", f.caller_id), None).await;
    out.note(status, &body, "tokens.rotate own".into());
    out
}

#[tokio::test]
async fn every_granting_operation_grants_only_what_the_caller_holds() {
    let probe = TestServer::start().await;
    let spec: Value = client().get(probe.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    probe.stop().await;
    let covered: BTreeSet<&str> = COVERED.iter().map(|c| c.0).collect();
    let found = granting_operations(&spec);
    let mut failures: Vec<String> = found
        .iter()
        .filter(|op| !covered.contains(op.as_str()))
        .map(|op| format!("{op} grants a role, permissions or a credential but this test does not cover it; add it to COVERED and exercise it"))
        .collect();
    for op in &covered {
        if !found.iter().any(|f| f == op) {
            failures.push(format!("{op} is in COVERED but the spec has no such granting operation"));
        }
    }
    let callers: Vec<String> = Role::ALL
        .iter()
        .map(|r| r.as_str().to_string())
        .chain(CUSTOM_CALLERS.iter().map(|c| c.0.to_string()))
        .collect();
    let mut cells = 0;
    for caller_role in &callers {
        for personal in [false, true] {
            let f = firm(caller_role, personal).await;
            let who = format!("{caller_role} {}", if personal { "member's personal token" } else { "service token" });
            let (_, me) = send(&f.s, &f.caller, Method::GET, "/me", None).await;
            let held = strings(&me["permissions"]);
            let is_owner = me["role"] == "owner" && held == all_perms();
            let before = holdings(&f.s, &f.root).await;
            let outcome = try_everything(&f).await;
            cells += 1;
            let after = holdings(&f.s, &f.root).await;
            for (name, now) in &after {
                let was = before.get(name).cloned().unwrap_or(Holding { perms: Perms::new(), owner: false });
                let gained: Vec<&String> = now.perms.difference(&was.perms).filter(|p| !held.contains(*p)).collect();
                if !gained.is_empty() {
                    failures.push(format!("{who}: {name} gained {gained:?}, which the caller lacks"));
                }
                if now.owner && !was.owner && !is_owner {
                    failures.push(format!("{who}: {name} became an owner, granted by a non-owner"));
                }
            }
            for secret in &outcome.secrets {
                let (status, got) = send(&f.s, secret, Method::GET, "/me", None).await;
                if status != 200 {
                    continue; // rotated again later in the run
                }
                let extra: Vec<String> = strings(&got["permissions"]).difference(&held).cloned().collect();
                if !extra.is_empty() {
                    failures.push(format!("{who}: obtained a credential holding {extra:?}"));
                }
                if got["role"] == "owner" && !is_owner {
                    failures.push(format!("{who}: obtained an owner credential"));
                }
            }
            let must = must_succeed(caller_role, personal);
            for want in &must {
                if !outcome.successes.iter().any(|s| s.starts_with(want)) {
                    failures
                        .push(format!("{who}: `{want}` should have succeeded (it grants only what the caller holds)"));
                }
            }
            if caller_role == "owner" || caller_role == "admin" {
                assert!(outcome.successes.len() > 50, "{who}: only {:?}", outcome.successes);
            }
            f.s.stop().await;
        }
    }
    println!("grant rule: {} granting operations x {cells} callers", covered.len());
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

/// Grants each caller may make (within what it holds): the rule must not refuse them.
fn must_succeed(role: &str, personal: bool) -> Vec<String> {
    let mut want: Vec<&str> = match role {
        "owner" => vec!["tokens.create_service owner", "members.create owner", "roles.put new", "tokens.rotate"],
        "admin" => vec!["tokens.create_service admin", "members.create admin", "roles.put new", "tokens.rotate"],
        "tokens-only" => vec!["tokens.create_service tokens-only", "tokens.rotate \"service\" \"tokens-only\""],
        "roles-only" => vec!["roles.put new [\"roles:write\"]"],
        "members-only" => vec!["members.create members-only"],
        _ => vec![],
    };
    if personal && role.parse::<Role>().is_ok() {
        want.push("tokens.create []");
    }
    want.into_iter().map(str::to_owned).collect()
}

/// A service token of a new custom role holding `perms`, made by the firm's owner.
async fn custom_token(s: &TestServer, role: &str, perms: &[&str]) -> String {
    let root = &s.role_tokens[&Role::Owner];
    assert_eq!(send(s, root, Method::PUT, &format!("/roles/{role}"), Some(json!({"permissions": perms}))).await.0, 201);
    let (status, made) =
        send(s, root, Method::POST, "/tokens/service", Some(json!({"name": role, "role": role}))).await;
    assert_eq!(status, 201, "{made}");
    made["token"].as_str().unwrap().to_string()
}

/// Issue 8 #2: rotation handed a `tokens:manage`-only caller an admin token.
#[tokio::test]
async fn rotating_a_token_needs_everything_it_holds() {
    let s = TestServer::start().await;
    let manager = custom_token(&s, "token-keeper", &["tokens:manage"]).await;
    let (status, _) =
        send(&s, &manager, Method::POST, "/tokens/service", Some(json!({"name": "x", "role": "admin"}))).await;
    assert_eq!(status, 403, "creating an admin token is refused");
    let (_, admin) = send(&s, &s.admin_token, Method::GET, "/me", None).await;
    let admin_id = admin["credential_id"].as_str().unwrap();
    let (status, body) = send(&s, &manager, Method::POST, &format!("/tokens/{admin_id}/rotate"), None).await;
    assert_eq!(status, 403, "rotating an admin token is refused too: {body}");
    assert!(body["detail"].as_str().unwrap().contains("members:write"), "names what is missing: {body}");
    assert_eq!(send(&s, &s.admin_token, Method::GET, "/org", None).await.0, 200, "the admin token still works");
    let (_, owner) = send(&s, &s.member_token, Method::GET, "/me", None).await;
    let (status, _) = send(
        &s,
        &s.admin_token,
        Method::POST,
        &format!("/tokens/{}/rotate", owner["credential_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 403, "an admin cannot rotate itself into the owner's personal token");
    let (_, mine) = send(&s, &manager, Method::GET, "/me", None).await;
    let (status, _) =
        send(&s, &manager, Method::POST, &format!("/tokens/{}/rotate", mine["credential_id"].as_str().unwrap()), None)
            .await;
    assert_eq!(status, 201, "a token holding nothing more than the caller rotates");
    s.stop().await;
}

/// Issue 8 #3: an admin made an owner service token, then owners with it.
#[tokio::test]
async fn only_owners_make_owners_even_through_tokens() {
    let s = TestServer::start().await;
    let (status, body) =
        send(&s, &s.admin_token, Method::POST, "/tokens/service", Some(json!({"name": "x", "role": "owner"}))).await;
    assert_eq!(status, 403, "{body}");
    let scoped = json!({"name": "x", "role": "owner", "scopes": ["org:read"]});
    assert_eq!(send(&s, &s.admin_token, Method::POST, "/tokens/service", Some(scoped)).await.0, 403, "narrowed or not");
    let patch = json!({"role": "owner"});
    let (_, staff) = send(
        &s,
        &s.admin_token,
        Method::POST,
        "/members",
        Some(json!({"email": "s@smith-jones.test", "role": "staff"})),
    )
    .await;
    let path = format!("/members/{}", staff["id"].as_str().unwrap());
    assert_eq!(send(&s, &s.admin_token, Method::PATCH, &path, Some(patch.clone())).await.0, 403);
    let owner_path = format!("/members/{}", s.member_id);
    assert_eq!(send(&s, &s.admin_token, Method::PATCH, &owner_path, Some(json!({"role": "staff"}))).await.0, 403);
    let (status, made) =
        send(&s, &s.member_token, Method::POST, "/tokens/service", Some(json!({"name": "x", "role": "owner"}))).await;
    assert_eq!(status, 201, "an owner may: {made}");
    assert_eq!(send(&s, &s.member_token, Method::PATCH, &path, Some(patch)).await.0, 200, "an owner makes owners");
    s.stop().await;
}

/// Issue 8 #4: `roles:write` granted itself everything; `members:write` made admins.
#[tokio::test]
async fn roles_and_members_grant_nothing_beyond_the_caller() {
    let s = TestServer::start().await;
    let writer = custom_token(&s, "role-writer", &["roles:write"]).await;
    let everything: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
    let (status, body) =
        send(&s, &writer, Method::PUT, "/roles/role-writer", Some(json!({"permissions": everything}))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(send(&s, &writer, Method::PUT, "/roles/fresh", Some(json!({"permissions": everything}))).await.0, 403);
    let (_, me) = send(&s, &writer, Method::GET, "/me", None).await;
    assert_eq!(me["permissions"], json!(["roles:write"]), "nothing gained");
    let (status, _) =
        send(&s, &writer, Method::PUT, "/roles/fresh", Some(json!({"permissions": ["roles:write"]}))).await;
    assert_eq!(status, 201, "what it holds it may give");

    // Editing a role others hold: taking away what the editor lacks is refused too.
    let _ = custom_token(&s, "big", &everything).await;
    assert_eq!(
        send(&s, &writer, Method::PUT, "/roles/big", Some(json!({"permissions": ["roles:write"]}))).await.0,
        403
    );
    assert_eq!(send(&s, &writer, Method::DELETE, "/roles/big", None).await.0, 403, "nor delete it");

    let hr = custom_token(&s, "hr", &["members:write"]).await;
    let (status, body) =
        send(&s, &hr, Method::POST, "/members", Some(json!({"email": "a@smith-jones.test", "role": "admin"}))).await;
    assert_eq!(status, 403, "{body}");
    let (status, made) =
        send(&s, &hr, Method::POST, "/members", Some(json!({"email": "b@smith-jones.test", "role": "hr"}))).await;
    assert_eq!(status, 201, "{made}");
    let path = format!("/members/{}", made["id"].as_str().unwrap());
    assert_eq!(send(&s, &hr, Method::PATCH, &path, Some(json!({"role": "admin"}))).await.0, 403);
    let (_, members) = send(&s, &s.admin_token, Method::GET, "/members?limit=500", None).await;
    let admins = members["items"].as_array().unwrap().iter().filter(|m| m["role"] == "admin").count();
    assert_eq!(admins, 0, "no admin was made: {members}");
    s.stop().await;
}

/// Indirect grants: a personal token made before its member was promoted, or a
/// service token whose custom role was widened later, gains nothing.
#[tokio::test]
async fn tokens_never_gain_what_they_were_not_granted() {
    let s = TestServer::start().await;
    let root = &s.role_tokens[&Role::Owner];
    let (_, member) =
        send(&s, root, Method::POST, "/members", Some(json!({"email": "p@smith-jones.test", "role": "staff"}))).await;
    let id = member["id"].as_str().unwrap();
    let personal = s.personal_token(id);
    let staff: Vec<&str> = Role::Staff.permissions().iter().map(|p| p.as_str()).collect();
    assert_eq!(send(&s, root, Method::PATCH, &format!("/members/{id}"), Some(json!({"role": "admin"}))).await.0, 200);
    let (_, me) = send(&s, &personal, Method::GET, "/me", None).await;
    assert_eq!(me["permissions"], json!(staff), "the promotion does not reach the old token");
    assert_eq!(send(&s, root, Method::PATCH, &format!("/members/{id}"), Some(json!({"role": "auditor"}))).await.0, 200);
    let (_, me) = send(&s, &personal, Method::GET, "/me", None).await;
    assert_eq!(me["permissions"], json!(["org:read", "tokens:self"]), "a demotion does");

    let narrow = custom_token(&s, "narrow", &["org:read"]).await;
    let widen = json!({"permissions": ["org:read", "members:read"]});
    assert_eq!(send(&s, root, Method::PUT, "/roles/narrow", Some(widen)).await.0, 200);
    let (_, me) = send(&s, &narrow, Method::GET, "/me", None).await;
    assert_eq!(me["permissions"], json!(["org:read"]), "widening its role later does not widen the token");
    s.stop().await;
}

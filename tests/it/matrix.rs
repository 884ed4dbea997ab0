//! The authorization matrix: every operation of the served OpenAPI spec, called
//! by an anonymous client, a service token of each built-in role and of a
//! custom role, a member's personal token, and the owner of another firm.
//! Each call must be allowed or denied exactly as the table below says, and the
//! table must name every operation: a new operation without an entry fails.
use crate::support::{TestServer, client};
use docket::auth::{Permission, Role};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What an operation needs.
#[derive(Clone, Copy, Debug)]
enum Need {
    /// Nothing: every caller gets the same answer.
    Public,
    /// Any credential.
    Authenticated,
    /// A member (session or personal token), not a service token.
    Member,
    /// A permission.
    Perm(Permission),
    /// A member holding a permission.
    MemberPerm(Permission),
}

/// Operation id → (what it needs, a request body that passes validation).
fn table() -> BTreeMap<&'static str, (Need, Option<Value>)> {
    use Need::*;
    use Permission::*;
    // One email per caller: an unknown email is locked out like a known one after a few failures.
    let signin = json!({"email": "EMAIL", "password": "x", "code": "000000"});
    BTreeMap::from([
        ("system.status", (Perm(OrgRead), None)),
        ("system.jobs", (Perm(OrgWrite), None)),
        ("auth.providers", (Public, None)),
        ("auth.local_sign_in", (Public, Some(signin))),
        ("auth.oidc_sign_in", (Public, None)),
        ("auth.oidc_callback", (Public, None)),
        ("auth.sign_out", (Public, None)),
        ("me.get", (Authenticated, None)),
        ("me.sessions", (Member, None)),
        ("me.end_session", (Member, None)),
        ("me.sign_out_everywhere", (Member, None)),
        ("org.get", (Perm(OrgRead), None)),
        ("org.update", (Perm(OrgWrite), Some(json!({"time_zone": "UTC"})))),
        ("members.list", (Perm(MembersRead), None)),
        ("members.get", (Perm(MembersRead), None)),
        ("members.create", (Perm(MembersWrite), Some(json!({"email": "EMAIL", "role": "staff"})))),
        ("members.update", (Perm(MembersWrite), Some(json!({"name": "Renamed"})))),
        ("members.delete", (Perm(MembersWrite), None)),
        ("roles.list", (Perm(MembersRead), None)),
        ("roles.put", (Perm(RolesWrite), Some(json!({"permissions": ["org:read"]})))),
        ("roles.delete", (Perm(RolesWrite), None)),
        ("tokens.list", (Perm(TokensSelf), None)),
        ("tokens.create", (MemberPerm(TokensSelf), Some(json!({"name": "matrix"})))),
        ("tokens.create_service", (Perm(TokensManage), Some(json!({"name": "matrix", "role": "staff"})))),
        ("tokens.revoke", (Perm(TokensSelf), None)),
        ("tokens.rotate", (Perm(TokensSelf), None)),
        ("walls.list", (Perm(WallsManage), None)),
        ("walls.create", (Perm(WallsManage), Some(json!({"matter_id": "1001", "screened": ["group:Litigation"]})))),
        ("walls.delete", (Perm(WallsManage), None)),
        ("clio.connection", (Perm(OrgRead), None)),
        ("clio.configure", (Perm(ClioManage), Some(json!({"location": "us", "client_id": "x", "client_secret": "y"})))),
        ("clio.connect", (Perm(ClioManage), None)),
        ("clio.callback", (Perm(ClioManage), None)),
        ("clio.disconnect", (Perm(ClioManage), None)),
        ("clio.sync_now", (Perm(ClioManage), None)),
        ("clio.sync_status", (Perm(OrgRead), None)),
        ("clio.confirm_deletions", (Perm(ClioManage), None)),
        ("matters.list", (Perm(DataRead), None)),
        ("search.query", (Perm(DataRead), None)),
        ("search.suggest", (Perm(DataRead), None)),
        ("matters.get", (Perm(DataRead), None)),
        ("contacts.list", (Perm(DataRead), None)),
        ("contacts.get", (Perm(DataRead), None)),
        ("activities.list", (Perm(DataRead), None)),
        ("activities.get", (Perm(DataRead), None)),
        ("bills.list", (Perm(DataRead), None)),
        ("bills.get", (Perm(DataRead), None)),
        ("users.list", (Perm(DataRead), None)),
        ("users.get", (Perm(DataRead), None)),
        ("tasks.list", (Perm(DataRead), None)),
        ("tasks.get", (Perm(DataRead), None)),
        ("calendar_entries.list", (Perm(DataRead), None)),
        ("calendar_entries.get", (Perm(DataRead), None)),
        ("notes.list", (Perm(DataRead), None)),
        ("notes.get", (Perm(DataRead), None)),
        ("audit.list", (Perm(AuditRead), None)),
        ("audit.export_csv", (Perm(AuditRead), None)),
        ("audit.export_json", (Perm(AuditRead), None)),
        ("changes.list", (Perm(DataRead), None)),
        ("changes.head", (Perm(DataRead), None)),
        ("webhooks.list", (Perm(WebhooksManage), None)),
        ("webhooks.create", (Perm(WebhooksManage), Some(json!({"url": "https://hooks.example.com/docket"})))),
        ("webhooks.get", (Perm(WebhooksManage), None)),
        ("webhooks.update", (Perm(WebhooksManage), Some(json!({"description": "matrix"})))),
        ("webhooks.delete", (Perm(WebhooksManage), None)),
        ("webhooks.rotate_secret", (Perm(WebhooksManage), None)),
        ("webhooks.deliveries", (Perm(WebhooksManage), None)),
        ("export.get", (Perm(DataExport), None)),
        ("clio.erase_data", (Perm(DataErase), Some(json!({"confirm": "not-the-slug"})))),
        ("export.subject", (Perm(DataExport), None)),
    ])
}

/// The documented policy of each built-in role, written out independently of
/// `Role::permissions` so a change there must be made here too, on purpose.
fn policy(role: Role) -> Vec<Permission> {
    use Permission::*;
    match role {
        Role::Owner | Role::Admin => {
            vec![
                OrgRead,
                OrgWrite,
                AuditRead,
                MembersRead,
                MembersWrite,
                RolesWrite,
                TokensSelf,
                TokensManage,
                WallsManage,
                DataRead,
                ClioManage,
                WebhooksManage,
                DataExport,
                DataErase,
            ]
        }
        Role::Manager => vec![OrgRead, MembersRead, TokensSelf, DataRead],
        Role::Staff => vec![OrgRead, TokensSelf, DataRead],
        Role::Auditor => vec![OrgRead, AuditRead, MembersRead, TokensSelf],
    }
}

/// A caller: its name, bearer token, permissions, and whether it is a member.
struct Caller {
    name: String,
    token: Option<String>,
    permissions: Vec<Permission>,
    member: bool,
}

fn expected(need: Need, c: &Caller) -> bool {
    let has = |p: Permission| c.permissions.contains(&p);
    match need {
        Need::Public => true,
        Need::Authenticated => c.token.is_some(),
        Need::Member => c.member,
        Need::Perm(p) => has(p),
        Need::MemberPerm(p) => c.member && has(p),
    }
}

fn fill(path: &str) -> String {
    // The one operation with a required query parameter gets it, so every caller reaches authorization.
    path.replace("/export/subject", "/export/subject?contact_id=404404")
        .replace("{id}", "zz_000000000000")
        .replace("{name}", "matrix-role")
        .replace("{provider}", "no-such-idp")
}

#[tokio::test]
async fn every_operation_allows_and_denies_as_declared() {
    let s = TestServer::start_with(|c| c.limits.sign_in_per_ip_per_minute = 100_000).await;
    let http = client();
    // A custom role with org:read only: no token self-service, no members.
    let clerk = http
        .put(s.url("/api/v1/roles/clerk"))
        .bearer_auth(&s.admin_token)
        .json(&json!({"permissions": ["org:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(clerk.status(), 201);
    let (_, made) =
        s.post_json(&s.admin_token, "/api/v1/tokens/service", json!({"name": "clerk", "role": "clerk"})).await;

    let mut callers = vec![Caller { name: "anonymous".into(), token: None, permissions: vec![], member: false }];
    for role in Role::ALL {
        callers.push(Caller {
            name: format!("{role} token"),
            token: Some(s.role_tokens[&role].clone()),
            permissions: policy(role),
            member: false,
        });
    }
    callers.push(Caller {
        name: "custom role token".into(),
        token: Some(made["token"].as_str().unwrap().to_string()),
        permissions: vec![Permission::OrgRead],
        member: false,
    });
    callers.push(Caller {
        name: "owner member".into(),
        token: Some(s.member_token.clone()),
        permissions: policy(Role::Owner),
        member: true,
    });
    callers.push(Caller {
        name: "owner of another firm".into(),
        token: Some(s.other_org_token.clone()),
        permissions: policy(Role::Owner),
        member: false,
    });

    let spec: Value = http.get(s.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let table = table();
    let mut seen = vec![];
    let mut failures = vec![];
    let mut cells = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            seen.push(id.to_string());
            let Some((need, body)) = table.get(id) else {
                failures.push(format!("{id}: no entry in the authorization matrix"));
                continue;
            };
            let declared = op["description"].as_str().unwrap_or_default();
            let want = match need {
                Need::Perm(p) | Need::MemberPerm(p) => p.as_str(),
                _ => "none",
            };
            if !declared.contains(&format!("Requires permission `{want}`")) {
                failures.push(format!("{id}: the spec does not declare `{want}`"));
            }
            let mut public_answers = vec![];
            for (i, caller) in callers.iter().enumerate() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                // Browser-like headers, so CSRF (tested elsewhere) never decides the answer here.
                let mut req = http
                    .request(method, format!("{}/api/v1{}", s.base, fill(path)))
                    .header("origin", &s.base)
                    .header("x-docket-csrf", "1");
                if let Some(token) = &caller.token {
                    req = req.bearer_auth(token);
                }
                if let Some(body) = body {
                    let text = body.to_string().replace("EMAIL", &format!("m{i}@matrix.test"));
                    req = req.header("content-type", "application/json").body(text);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                cells += 1;
                if caller.name == "owner of another firm" && text.contains("smith-jones") {
                    failures.push(format!("{id}: another firm's owner sees smith-jones data: {text:.200}"));
                }
                if let Need::Public = need {
                    public_answers.push(status);
                    continue;
                }
                let allowed = expected(*need, caller);
                let ok = match (allowed, caller.token.is_some()) {
                    (true, _) => status != 401 && status != 403 && status < 500,
                    (false, false) => status == 401,
                    (false, true) => status == 403,
                };
                if !ok {
                    failures.push(format!(
                        "{id} as {}: got {status}, expected {} — {text:.160}",
                        caller.name,
                        if allowed { "allowed" } else { "denied" }
                    ));
                }
            }
            if public_answers.windows(2).any(|w| w[0] != w[1]) || public_answers.iter().any(|s| *s >= 500) {
                failures.push(format!("{id}: a public operation answered differently by caller: {public_answers:?}"));
            }
        }
    }
    for id in table.keys() {
        if !seen.iter().any(|s| s == id) {
            failures.push(format!("{id}: in the matrix but not in the spec"));
        }
    }
    println!("authorization matrix: {} operations x {} callers = {cells} checks", seen.len(), callers.len());
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
    s.stop().await;
}

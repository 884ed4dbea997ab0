//! Sign-in with the firm's OpenID Connect providers (`[[auth.oidc]]`).
//!
//! Authorization code flow with PKCE (S256), `state` bound to the browser by a
//! short-lived `__Host-` flow cookie, `nonce`, and the RFC 9207 `iss` response
//! parameter checked when sent. The ID token's signature, issuer, audience,
//! expiry and nonce are verified by `openidconnect`. A verified identity then
//! becomes a member ([`admit`]): by linked subject, else by email, else by
//! just-in-time provisioning within the provider's allowed domains and groups.
use super::grant::{self, Granted, Grantor};
use super::sessions::{self, Session, Timeouts};
use super::users::{self, MemberChanges, NewMember, User};
use super::{Role, random_token, secret_hash};
use crate::audit::{self, Outcome};
use crate::config::OidcProviderConfig;
use crate::secrets::Secret;
use crate::store::{Actor, OrgScope, OrgTask, OrgTaskContext, Store, StoreError};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout, RedirectUrl, Scope, TokenResponse as _,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie binding a sign-in flow to the browser that started it.
pub const FLOW_COOKIE: &str = "__Host-docket_oidc_flow";
/// How long a started sign-in may take.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// Started sign-ins kept at most (the oldest are dropped beyond).
const MAX_PENDING: usize = 10_000;
/// Discovery documents and keys are fetched again after this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);

const JIT: OrgTaskContext = OrgTaskContext::new(OrgTask::OidcSignIn);

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("there is no identity provider `{0}` on this appliance")]
    UnknownProvider(String),
    #[error("the identity provider could not be reached or answered wrongly: {0}; try again later")]
    Unavailable(String),
    #[error("the sign-in response was rejected: {0}; start the sign-in again")]
    Rejected(String),
    #[error("{0}")]
    Denied(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Provider {
    config: OidcProviderConfig,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(ProviderMetadataWithLogout, Instant)>>,
}

struct Pending {
    provider: String,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    flow: Vec<u8>,
    redirect_uri: String,
    return_to: String,
    started: Instant,
}

/// The configured providers and the sign-ins in progress.
pub struct Oidc {
    providers: BTreeMap<String, Provider>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// A started sign-in: where to send the browser, and its flow cookie.
pub struct Started {
    pub url: String,
    pub flow_cookie: Secret,
}

/// The query of the provider's redirect back to docket.
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// What a verified ID token says about the person.
#[derive(Debug, Clone)]
pub struct Claims {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// A provider as listed on the sign-in page.
pub struct ProviderInfo {
    pub id: String,
    pub display_name: String,
}

async fn send(client: reqwest::Client, req: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
    let (parts, body) = req.into_parts();
    let resp = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut out = HttpResponse::new(resp.bytes().await?.to_vec());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

fn http_client(config: &OidcProviderConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{}: {e}", path.display()))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// Only a local path may be returned to after sign-in (no open redirect).
pub fn safe_return_to(path: Option<&str>) -> String {
    match path {
        Some(p)
            if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.chars().any(char::is_control) =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

impl Oidc {
    pub fn new(configs: &[OidcProviderConfig]) -> Result<Oidc, String> {
        let mut providers = BTreeMap::new();
        for config in configs {
            let http = http_client(config).map_err(|e| format!("auth.oidc `{}`: {e}", config.id))?;
            providers.insert(
                config.id.clone(),
                Provider { config: config.clone(), http, metadata: tokio::sync::Mutex::new(None) },
            );
        }
        Ok(Oidc { providers, pending: Mutex::new(HashMap::new()) })
    }

    /// The providers signing people into the org `org_slug`, or all when `None`.
    pub fn list(&self) -> Vec<ProviderInfo> {
        self.providers
            .values()
            .map(|p| ProviderInfo {
                id: p.config.id.clone(),
                display_name: p.config.display_name.clone().unwrap_or_else(|| p.config.id.clone()),
            })
            .collect()
    }

    fn provider(&self, id: &str) -> Result<&Provider, OidcError> {
        self.providers.get(id).ok_or_else(|| OidcError::UnknownProvider(id.chars().take(64).collect()))
    }

    /// The provider's discovery document and keys, fetched at most hourly.
    async fn metadata(&self, p: &Provider) -> Result<ProviderMetadataWithLogout, OidcError> {
        let mut cached = p.metadata.lock().await;
        if let Some((m, at)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(p.config.issuer.clone()).map_err(|e| OidcError::Unavailable(e.to_string()))?;
        let http = |req| send(p.http.clone(), req);
        let m = ProviderMetadataWithLogout::discover_async(issuer, &http).await.map_err(|e| {
            tracing::warn!(provider = %p.config.id, error = %error_chain(&e), "OIDC discovery failed");
            OidcError::Unavailable(format!("discovery at {} failed: {}", p.config.issuer, error_chain(&e)))
        })?;
        *cached = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    fn client(
        p: &Provider,
        m: ProviderMetadataWithLogout,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        OidcError,
    > {
        let secret = p.config.client_secret.as_ref().map(|s| ClientSecret::new(s.expose().to_string()));
        let redirect = RedirectUrl::new(redirect_uri.to_string()).map_err(|e| OidcError::Rejected(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(m, ClientId::new(p.config.client_id.clone()), secret)
            .set_redirect_uri(redirect))
    }

    /// Starts a sign-in with provider `id`; `redirect_uri` is docket's callback URL.
    pub async fn start(&self, id: &str, redirect_uri: &str, return_to: &str) -> Result<Started, OidcError> {
        let p = self.provider(id)?;
        let m = self.metadata(p).await?;
        let client = Self::client(p, m, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in p.config.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let flow = random_token(32);
        let pending = Pending {
            provider: id.into(),
            nonce,
            verifier,
            flow: secret_hash(&flow),
            redirect_uri: redirect_uri.into(),
            return_to: return_to.into(),
            started: Instant::now(),
        };
        let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, p| p.started.elapsed() < FLOW_TTL);
        if all.len() >= MAX_PENDING
            && let Some(oldest) = all.iter().min_by_key(|(_, p)| p.started).map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert(state.secret().clone(), pending);
        Ok(Started { url: url.to_string(), flow_cookie: Secret::new(flow) })
    }

    /// Completes a sign-in: checks the callback against the started flow, redeems
    /// the code and verifies the ID token. Returns the claims and where to go next.
    pub async fn finish(
        &self,
        id: &str,
        cb: &Callback,
        flow_cookie: Option<&str>,
    ) -> Result<(Claims, String), OidcError> {
        let p = self.provider(id)?;
        if let Some(error) = &cb.error {
            let detail = cb.error_description.as_deref().unwrap_or("");
            return Err(OidcError::Rejected(format!("the provider answered `{error}` {detail}").trim().to_string()));
        }
        let state =
            cb.state.as_deref().ok_or_else(|| OidcError::Rejected("the `state` parameter is missing".into()))?;
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state)
            .ok_or_else(|| OidcError::Rejected("unknown, used or expired `state`".into()))?;
        if pending.provider != id || pending.started.elapsed() >= FLOW_TTL {
            return Err(OidcError::Rejected("unknown, used or expired `state`".into()));
        }
        if flow_cookie.map(secret_hash).as_deref() != Some(pending.flow.as_slice()) {
            return Err(OidcError::Rejected(
                "the sign-in was started in another browser (flow cookie missing or wrong)".into(),
            ));
        }
        let m = self.metadata(p).await?;
        if let Some(iss) = &cb.iss
            && iss != m.issuer().as_str()
        {
            return Err(OidcError::Rejected(format!("the `iss` parameter `{iss}` is not this provider's issuer")));
        }
        let code = cb.code.clone().ok_or_else(|| OidcError::Rejected("the `code` parameter is missing".into()))?;
        let client = Self::client(p, m, &pending.redirect_uri)?;
        let http = |req| send(p.http.clone(), req);
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| OidcError::Unavailable(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    OidcError::Rejected(format!("the provider refused the code: {}", r.error()))
                }
                other => OidcError::Unavailable(error_chain(&other)),
            })?;
        let id_token =
            response.id_token().ok_or_else(|| OidcError::Rejected("the provider sent no ID token".into()))?;
        let verified = id_token
            .claims(&client.id_token_verifier(), &pending.nonce)
            .map_err(|e| OidcError::Rejected(format!("the ID token is invalid: {e}")))?;
        let subject = verified.subject().to_string();
        let raw = payload(&id_token.to_string())?;
        Ok((claims(&p.config, subject, &raw), pending.return_to))
    }

    /// The provider's RP-initiated logout URL, if it offers one.
    pub async fn logout_url(&self, id: &str, post_logout_redirect_uri: &str) -> Option<String> {
        let p = self.providers.get(id)?;
        let m = self.metadata(p).await.ok()?;
        let endpoint = m.additional_metadata().end_session_endpoint.clone()?;
        let mut url = endpoint.url().clone();
        url.query_pairs_mut()
            .append_pair("client_id", &p.config.client_id)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        Some(url.to_string())
    }

    /// The configuration of provider `id`.
    pub fn config(&self, id: &str) -> Result<&OidcProviderConfig, OidcError> {
        Ok(&self.provider(id)?.config)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The JSON payload of a JWT whose signature was already verified.
fn payload(jwt: &str) -> Result<serde_json::Value, OidcError> {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).ok_or_else(|| OidcError::Rejected("malformed ID token".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| OidcError::Rejected("malformed ID token".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| OidcError::Rejected("malformed ID token".into()))
}

fn claims(config: &OidcProviderConfig, subject: String, raw: &serde_json::Value) -> Claims {
    let text = |name: &str| raw.get(name).and_then(|v| v.as_str()).map(str::to_owned).filter(|s| !s.is_empty());
    let groups = match config.groups_claim.as_deref().and_then(|g| raw.get(g)) {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => vec![],
    };
    Claims {
        subject,
        email: text(&config.email_claim).map(|e| e.to_lowercase()),
        email_verified: raw.get("email_verified").and_then(|v| v.as_bool()),
        name: text(&config.name_claim),
        groups,
    }
}

/// The role `role_map` gives for `groups`: the most privileged match.
fn mapped_role(config: &OidcProviderConfig, groups: &[String]) -> Option<String> {
    let rank = |r: &str| {
        r.parse::<Role>().map_or(usize::MAX, |role| Role::ALL.iter().position(|x| *x == role).unwrap_or(usize::MAX))
    };
    groups.iter().filter_map(|g| config.role_map.get(g)).min_by_key(|r| rank(r)).cloned()
}

/// Whether the identity provider may give role `role` (it exists, and is not
/// `owner`: see [`grant::check`]); the refusal says why not.
fn mapping_allowed(r: &impl crate::store::Reader, scope: &OrgScope, role: &str) -> Result<(), String> {
    let granted = Granted::role(r, scope, role, "role_map")
        .map_err(|_| format!("the mapped role `{role}` does not exist in this firm"))?;
    grant::check(&Grantor::identity_provider(), &granted)
        .map_err(|e| format!("the identity provider may not give role `{role}`: {e}"))
}

fn jit_refusal(config: &OidcProviderConfig, claims: &Claims) -> Option<String> {
    if !config.jit {
        return Some("you are not a member of this firm; ask an admin to add you".into());
    }
    let Some(email) = &claims.email else {
        return Some(format!(
            "the identity provider sent no `{}` claim; ask your admin to check the claim mapping",
            config.email_claim
        ));
    };
    if claims.email_verified == Some(false) {
        return Some("your email address is not verified at the identity provider".into());
    }
    let domain = email.rsplit('@').next().unwrap_or("");
    if !config.allowed_domains.is_empty() && !config.allowed_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Some(format!("sign-up is not open to the domain {domain}; ask an admin to add you"));
    }
    if !config.allowed_groups.is_empty() && !claims.groups.iter().any(|g| config.allowed_groups.contains(g)) {
        return Some("you are in none of the groups allowed to sign up; ask an admin to add you".into());
    }
    None
}

/// Turns verified claims into a signed-in member of the provider's org and a
/// new session. Every outcome is audited as `auth.sign_in`.
pub fn admit(
    store: &Store,
    config: &OidcProviderConfig,
    claims: &Claims,
    ctx: &audit::Context,
    timeouts: Timeouts,
) -> Result<(Secret, Session), OidcError> {
    let org = store.org_by_slug(&config.org)?.ok_or_else(|| {
        OidcError::Denied(format!(
            "the firm `{}` of this identity provider does not exist; ask the administrator to fix auth.oidc",
            config.org
        ))
    })?;
    let system = JIT.org_scope(org.id);
    let method = format!("oidc:{}", config.id);
    store.write(|w| {
        let refuse = |w: &mut crate::store::Tx, reason: String, target: String| -> Result<Result<(Secret, Session), OidcError>, StoreError> {
            let details = serde_json::json!({"method": method, "reason": reason, "subject": claims.subject, "email": claims.email});
            audit::record(w, &system, ctx, "auth.sign_in", &target, Outcome::Failure, details)?;
            Ok(Err(OidcError::Denied(reason)))
        };
        let by_subject = users::find_login(w, &users::oidc_login(&config.id, &claims.subject))?;
        let by_email = match (&claims.email, claims.email_verified) {
            (Some(email), v) if v != Some(false) => users::find_by_email(w, &system, email)?,
            _ => None,
        };
        let target = format!("oidc:{}:{}", config.id, claims.subject);
        let found = match by_subject {
            Some(f) if f.org != org.id => return refuse(w, "this account belongs to another firm".into(), target),
            Some(f) => Some(users::require(w, &system, &f.user)?),
            None => by_email,
        };
        let mut user: User = match found {
            Some(user) => user,
            None => {
                if let Some(reason) = jit_refusal(config, claims) {
                    return refuse(w, reason, target);
                }
                let Some(role) = mapped_role(config, &claims.groups).or_else(|| config.default_role.clone()) else {
                    return refuse(w, "no role applies to you (no group mapping and no default role)".into(), target);
                };
                if let Err(refusal) = mapping_allowed(w, &system, &role) {
                    return refuse(w, refusal, target);
                }
                let new = NewMember {
                    email: claims.email.clone().unwrap_or_default(),
                    name: claims.name.clone().unwrap_or_default(),
                    role,
                };
                let created = users::create(w, &system, &new, &Grantor::identity_provider())?;
                audit::record(w, &system, ctx, "member.create", &format!("user:{}", created.id), Outcome::Success,
                    serde_json::json!({"email": created.email, "role": created.role, "via": method}))?;
                created
            }
        };
        if user.disabled {
            return refuse(w, "your membership is disabled; ask an admin".into(), format!("user:{}", user.id));
        }
        let scope = OrgScope::authenticated(org.id, Actor::User(user.id.clone()));
        users::link_identity(w, &scope, &mut user, &config.id, &claims.subject)?;
        if let Some(mapped) = mapped_role(config, &claims.groups)
            && mapped != user.role
            && user.role != Role::Owner.as_str()
            && mapping_allowed(w, &scope, &mapped).is_ok()
        {
            let changes = MemberChanges { role: Some(mapped.clone()), ..Default::default() };
            let before = user.role.clone();
            user = users::update(w, &scope, &user.id, &changes, &Grantor::identity_provider())?;
            audit::record(w, &scope, ctx, "member.update", &format!("user:{}", user.id), Outcome::Success,
                serde_json::json!({"role": {"from": before, "to": mapped}, "via": method}))?;
        }
        if let Some(name) = claims.name.clone().filter(|n| crate::store::orgs::validate_name(n).is_ok()) {
            user.name = name;
        }
        user.groups = claims.groups.clone();
        user.last_sign_in_at = Some(w.time());
        users::save(w, &scope, &user)?;
        let (cookie, session) = sessions::create(w, &scope, &user.id, &method, ctx, timeouts)?;
        let details = serde_json::json!({"method": method, "session": session.id, "groups": claims.groups});
        audit::record(w, &scope, ctx, "auth.sign_in", &format!("user:{}", user.id), Outcome::Success, details)?;
        Ok(Ok((cookie, session)))
    })?
}

/// Audits a callback that failed before an identity was known.
pub fn record_rejection(
    store: &Store,
    config: &OidcProviderConfig,
    ctx: &audit::Context,
    reason: &str,
) -> Result<(), StoreError> {
    let Some(org) = store.org_by_slug(&config.org)? else { return Ok(()) };
    let scope = JIT.org_scope(org.id);
    let details = serde_json::json!({"method": format!("oidc:{}", config.id), "reason": reason});
    store.write(|w| {
        audit::record(w, &scope, ctx, "auth.sign_in", &format!("oidc:{}", config.id), Outcome::Failure, details)
            .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_stays_on_this_site() {
        assert_eq!(safe_return_to(Some("/matters?x=1")), "/matters?x=1");
        for evil in ["https://evil.test/", "//evil.test", "/\\evil.test", "javascript:alert(1)", ""] {
            assert_eq!(safe_return_to(Some(evil)), "/", "{evil}");
        }
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn role_mapping_never_makes_owners() {
        let (_dir, store, ctx, org) = crate::auth::test_org(crate::clock::Clock::system());
        let scope = ctx.org_scope(org.id);
        store
            .read(|r| {
                assert!(mapping_allowed(r, &scope, "owner").unwrap_err().contains("owner"));
                assert!(mapping_allowed(r, &scope, "ghost").unwrap_err().contains("does not exist"));
                assert!(mapping_allowed(r, &scope, "admin").is_ok());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn role_map_picks_the_most_privileged_match() {
        let mut config: OidcProviderConfig =
            toml::from_str("id = 'k'\norg = 'acme'\nissuer = 'https://idp.test'\nclient_id = 'c'\n").unwrap();
        config.role_map.insert("Staff".into(), "staff".into());
        config.role_map.insert("Admins".into(), "admin".into());
        config.role_map.insert("Paralegals".into(), "paralegal".into());
        assert_eq!(mapped_role(&config, &["Staff".into(), "Admins".into()]).as_deref(), Some("admin"));
        assert_eq!(mapped_role(&config, &["Paralegals".into()]).as_deref(), Some("paralegal"));
        assert_eq!(mapped_role(&config, &["Nobody".into()]), None);
    }
}

//! Sign-in with the firm's OpenID Connect providers (`[[auth.oidc]]`).
//!
//! Authorization code flow with PKCE (S256), `state` bound to the browser by a
//! short-lived `__Host-` flow cookie (the pending state is consumed only by
//! the browser holding it), `nonce`, and the RFC 9207 `iss` response parameter
//! (required when discovery advertises it). Every provider response is read
//! up to a size cap, and every endpoint must be https when the issuer is. The
//! ID token's signature, issuer, audience, expiry, issue time (both within
//! `clock_skew_seconds`) and nonce are verified by `openidconnect`; a key id
//! the cached key set lacks refetches it once (rate-limited), so key rotation
//! at the provider works. A verified identity then becomes a member
//! ([`admit`]): by (provider, subject); else by email, only for a member with
//! no identity at this provider and never the break-glass admin; else by
//! just-in-time provisioning within the provider's allowed domains and groups.
use super::grant::{self, Granted, Grantor};
use super::sessions::{self, Session, Timeouts};
use super::users::{self, MemberChanges, NewMember, User};
use super::{Role, random_token, secret_hash};
use crate::audit::{self, Outcome};
use crate::clock::Clock;
use crate::config::OidcProviderConfig;
use crate::secrets::Secret;
use crate::store::{Actor, OrgScope, OrgTask, OrgTaskContext, Store, StoreError};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreGrantType, CoreIdToken, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    HttpRequest, HttpResponse, IssuerUrl, LogoutProviderMetadata, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    ProviderMetadata, RedirectUrl, Scope, SignatureVerificationError, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
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
/// A key id missing from the cached key set refetches it at most this often.
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(60);

/// Size caps on what a provider sends (bytes), and on the claims docket keeps.
pub const MAX_DISCOVERY_BYTES: usize = 128 * 1024;
pub const MAX_JWKS_BYTES: usize = 128 * 1024;
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;
pub const MAX_ID_TOKEN_BYTES: usize = 64 * 1024;
/// Groups kept from one sign-in, and the longest group name.
pub const MAX_GROUPS: usize = 500;
pub const MAX_GROUP_CHARS: usize = 256;
/// The longest subject (OpenID Connect Core 1.0 §2: at most 255 ASCII characters).
pub const MAX_SUBJECT_CHARS: usize = 255;
/// The longest refusal reason kept in the audit trail.
const MAX_REASON_CHARS: usize = 1000;

/// Discovery metadata docket reads beyond the standard set: RFC 9207.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct IssParameter {
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: Option<bool>,
}
impl AdditionalProviderMetadata for IssParameter {}

/// A provider's discovery document (with RP-initiated logout and RFC 9207).
type Metadata = ProviderMetadata<
    LogoutProviderMetadata<IssParameter>,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

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
    metadata: tokio::sync::Mutex<Option<(Metadata, Instant)>>,
    /// When a key id miss last refetched the key set.
    jwks_refetched: tokio::sync::Mutex<Option<Instant>>,
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
    clock: Clock,
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

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the provider's {what} is larger than {limit} bytes, docket's limit; the provider must send less")]
    TooLarge { what: &'static str, limit: usize },
    #[error("{url} is not https although the issuer is; fix the provider's discovery document or the issuer")]
    NotHttps { url: String },
}

/// What a request fetches, and how much of it docket reads at most.
#[derive(Clone, Copy)]
struct Limit {
    what: &'static str,
    bytes: usize,
}

const DISCOVERY: Limit = Limit { what: "discovery document", bytes: MAX_DISCOVERY_BYTES };
const JWKS: Limit = Limit { what: "key set (JWKS)", bytes: MAX_JWKS_BYTES };
const TOKEN_RESPONSE: Limit = Limit { what: "token response", bytes: MAX_TOKEN_RESPONSE_BYTES };

/// The keys an ID token may be signed with: the provider's key set and algorithms.
struct Keys {
    keys: CoreJsonWebKeySet,
    algs: Vec<openidconnect::core::CoreJwsSigningAlgorithm>,
}

/// The path every discovery document is at, below the issuer.
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Sends `req` (https only when `https` is set) and reads at most `limit` of the answer.
async fn fetch(
    client: reqwest::Client,
    req: HttpRequest,
    limit: Limit,
    https: bool,
) -> Result<HttpResponse, FetchError> {
    let (parts, body) = req.into_parts();
    let url = parts.uri.to_string();
    if https && parts.uri.scheme_str() != Some("https") {
        return Err(FetchError::NotHttps { url });
    }
    let mut resp = client.request(parts.method, url).headers(parts.headers).body(body).send().await?;
    let too_large = FetchError::TooLarge { what: limit.what, limit: limit.bytes };
    if resp.content_length().is_some_and(|n| n > limit.bytes as u64) {
        return Err(too_large);
    }
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if bytes.len() + chunk.len() > limit.bytes {
            return Err(too_large);
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut out = HttpResponse::new(bytes);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The discovery fetch reads the discovery document, then the key set it names.
fn discovery_limit(req: &HttpRequest) -> Limit {
    if req.uri().path().ends_with(DISCOVERY_PATH) { DISCOVERY } else { JWKS }
}

/// The first endpoint of the discovery document that is not https, when the issuer is.
fn insecure_endpoint(m: &Metadata) -> Option<String> {
    if m.issuer().url().scheme() != "https" {
        return None;
    }
    let mut urls = vec![m.authorization_endpoint().url().clone(), m.jwks_uri().url().clone()];
    urls.extend(m.token_endpoint().map(|u| u.url().clone()));
    urls.extend(m.userinfo_endpoint().map(|u| u.url().clone()));
    urls.extend(m.additional_metadata().end_session_endpoint.as_ref().map(|u| u.url().clone()));
    urls.into_iter().find(|u| u.scheme() != "https").map(|u| u.to_string())
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
    pub fn new(configs: &[OidcProviderConfig], clock: Clock) -> Result<Oidc, String> {
        let mut providers = BTreeMap::new();
        for config in configs {
            let http = http_client(config).map_err(|e| format!("auth.oidc `{}`: {e}", config.id))?;
            let provider = Provider {
                config: config.clone(),
                http,
                metadata: tokio::sync::Mutex::new(None),
                jwks_refetched: tokio::sync::Mutex::new(None),
            };
            providers.insert(config.id.clone(), provider);
        }
        Ok(Oidc { providers, pending: Mutex::new(HashMap::new()), clock })
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
    async fn metadata(&self, p: &Provider) -> Result<Metadata, OidcError> {
        let mut cached = p.metadata.lock().await;
        if let Some((m, at)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(p.config.issuer.clone()).map_err(|e| OidcError::Unavailable(e.to_string()))?;
        let https = issuer.url().scheme() == "https";
        let http = |req: HttpRequest| {
            let limit = discovery_limit(&req);
            fetch(p.http.clone(), req, limit, https)
        };
        let failed = |e: &dyn std::error::Error| {
            tracing::warn!(provider = %p.config.id, error = %error_chain(e), "OIDC discovery failed");
            OidcError::Unavailable(format!("discovery at {} failed: {}", p.config.issuer, error_chain(e)))
        };
        let m = Metadata::discover_async(issuer, &http).await.map_err(|e| failed(&e))?;
        if let Some(url) = insecure_endpoint(&m) {
            return Err(failed(&FetchError::NotHttps { url }));
        }
        *cached = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    /// The provider's key set after an ID token named a key id the cached set
    /// lacks (a key rotation): fetched again, at most once a minute; within
    /// that minute the cached set, which a concurrent sign-in may just have
    /// refreshed.
    async fn refetch_keys(&self, p: &Provider) -> Result<CoreJsonWebKeySet, OidcError> {
        let mut last = p.jwks_refetched.lock().await;
        let m = self.metadata(p).await?;
        if last.is_some_and(|at| at.elapsed() < JWKS_REFETCH_EVERY) {
            return Ok(m.jwks().clone());
        }
        *last = Some(Instant::now());
        let https = m.issuer().url().scheme() == "https";
        let http = |req| fetch(p.http.clone(), req, JWKS, https);
        let keys = CoreJsonWebKeySet::fetch_async(m.jwks_uri(), &http).await.map_err(|e| {
            let at = m.jwks_uri().url();
            OidcError::Unavailable(format!("the key set at {at} could not be fetched: {}", error_chain(&e)))
        })?;
        let mut cached = p.metadata.lock().await;
        let fetched = cached.as_ref().map_or_else(Instant::now, |(_, at)| *at);
        *cached = Some((m.set_jwks(keys.clone()), fetched));
        Ok(keys)
    }

    fn client(
        p: &Provider,
        m: Metadata,
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

    /// The pending sign-in `state`, removed only once the flow cookie shows
    /// that this is the browser that started it (anyone else who learned the
    /// state cannot spoil the sign-in).
    fn take_pending(&self, id: &str, state: &str, flow_cookie: Option<&str>) -> Result<Pending, OidcError> {
        let unknown = || OidcError::Rejected("unknown, used or expired `state`".into());
        let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let pending = all.get(state).ok_or_else(unknown)?;
        if pending.started.elapsed() >= FLOW_TTL {
            all.remove(state);
            return Err(unknown());
        }
        if pending.provider != id {
            return Err(unknown());
        }
        if flow_cookie.map(secret_hash).as_deref() != Some(pending.flow.as_slice()) {
            return Err(OidcError::Rejected(
                "the sign-in was started in another browser (flow cookie missing or wrong)".into(),
            ));
        }
        all.remove(state).ok_or_else(unknown)
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
            let said: String = format!("{error} {detail}").chars().take(300).collect();
            return Err(OidcError::Rejected(format!("the provider answered `{}`", said.trim())));
        }
        let state =
            cb.state.as_deref().ok_or_else(|| OidcError::Rejected("the `state` parameter is missing".into()))?;
        let pending = self.take_pending(id, state, flow_cookie)?;
        let m = self.metadata(p).await?;
        check_iss(&m, cb.iss.as_deref())?;
        let code = cb.code.clone().ok_or_else(|| OidcError::Rejected("the `code` parameter is missing".into()))?;
        let https = m.issuer().url().scheme() == "https";
        let (keys, algs) = (m.jwks().clone(), m.id_token_signing_alg_values_supported().clone());
        let client = Self::client(p, m, &pending.redirect_uri)?;
        let http = |req| fetch(p.http.clone(), req, TOKEN_RESPONSE, https);
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
                openidconnect::RequestTokenError::Request(too_large @ FetchError::TooLarge { .. }) => {
                    OidcError::Rejected(too_large.to_string())
                }
                other => OidcError::Unavailable(error_chain(&other)),
            })?;
        let id_token =
            response.id_token().ok_or_else(|| OidcError::Rejected("the provider sent no ID token".into()))?;
        let raw_token = id_token.to_string();
        if raw_token.len() > MAX_ID_TOKEN_BYTES {
            return Err(OidcError::Rejected(format!(
                "the ID token is larger than {MAX_ID_TOKEN_BYTES} bytes, docket's limit; the provider must send fewer claims (filter the groups claim)"
            )));
        }
        let subject = self.verify(p, Keys { keys, algs }, id_token, &pending.nonce).await?;
        let raw = payload(&raw_token)?;
        Ok((claims(&p.config, subject, &raw)?, pending.return_to))
    }

    /// Verifies the ID token (signature, issuer, audience, expiry, issue time,
    /// nonce) and returns its subject. A key id the cached key set lacks
    /// fetches the key set again once and retries.
    async fn verify(&self, p: &Provider, keys: Keys, token: &CoreIdToken, nonce: &Nonce) -> Result<String, OidcError> {
        let algs = keys.algs.clone();
        let checked = match self.check_token(&p.config, keys, token, nonce) {
            Err(e) if no_matching_key(&e) => {
                let keys = self.refetch_keys(p).await?;
                self.check_token(&p.config, Keys { keys, algs }, token, nonce)
            }
            other => other,
        };
        checked.map_err(|e| {
            if no_matching_key(&e) {
                OidcError::Rejected(
                    "the ID token is invalid: it is signed with a key the provider's key set does not list".into(),
                )
            } else {
                OidcError::Rejected(format!("the ID token is invalid: {e}"))
            }
        })
    }

    /// One verification of `token` against `keys`, on docket's clock within
    /// the provider's clock skew.
    fn check_token(
        &self,
        config: &OidcProviderConfig,
        keys: Keys,
        token: &CoreIdToken,
        nonce: &Nonce,
    ) -> Result<String, ClaimsVerificationError> {
        let skew = chrono::Duration::seconds(config.clock_skew_seconds.min(3600) as i64);
        let now = chrono::DateTime::from_timestamp_micros(self.clock.now_micros()).unwrap_or_default();
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|e| ClaimsVerificationError::Other(format!("the configured issuer is not a URL: {e}")))?;
        let client_id = ClientId::new(config.client_id.clone());
        let verifier = openidconnect::core::CoreIdTokenVerifier::new_confidential_client(
            client_id,
            ClientSecret::new(config.client_secret.as_ref().map(|s| s.expose().to_string()).unwrap_or_default()),
            issuer,
            keys.keys,
        )
        .set_allowed_algs(keys.algs)
        .set_time_fn(move || now - skew)
        .set_issue_time_verifier_fn(move |iat| {
            if iat > now + skew {
                Err(format!("issued at {iat}, later than now ({now}) plus the allowed clock skew of {skew}"))
            } else {
                Ok(())
            }
        });
        let claims = token.claims(&verifier, nonce)?;
        Ok(claims.subject().to_string())
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

fn no_matching_key(e: &ClaimsVerificationError) -> bool {
    matches!(e, ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey))
}

/// RFC 9207: the `iss` of the authorization response must be the issuer's,
/// and must be present when the provider advertises that it sends it.
fn check_iss(m: &Metadata, iss: Option<&str>) -> Result<(), OidcError> {
    let advertised = m.additional_metadata().additional_metadata.authorization_response_iss_parameter_supported;
    match iss {
        Some(iss) if iss != m.issuer().as_str() => {
            let shown: String = iss.chars().take(200).collect();
            Err(OidcError::Rejected(format!("the `iss` parameter `{shown}` is not this provider's issuer")))
        }
        None if advertised == Some(true) => Err(OidcError::Rejected(
            "the `iss` parameter is missing, although the provider says it always sends it (RFC 9207)".into(),
        )),
        _ => Ok(()),
    }
}

/// The claims docket uses, checked: the email in its normal form, the
/// subject and the groups within their caps. A claim docket cannot accept
/// refuses the sign-in and says which.
fn claims(config: &OidcProviderConfig, subject: String, raw: &serde_json::Value) -> Result<Claims, OidcError> {
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(OidcError::Rejected(format!("the subject (`sub`) is longer than {MAX_SUBJECT_CHARS} characters")));
    }
    let text = |name: &str| raw.get(name).and_then(|v| v.as_str()).map(str::to_owned).filter(|s| !s.is_empty());
    let groups: Vec<String> = match config.groups_claim.as_deref().and_then(|g| raw.get(g)) {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => vec![],
    };
    if groups.len() > MAX_GROUPS || groups.iter().any(|g| g.chars().count() > MAX_GROUP_CHARS) {
        return Err(OidcError::Rejected(format!(
            "the `{}` claim holds {} groups; docket accepts at most {MAX_GROUPS}, each at most {MAX_GROUP_CHARS} characters: have the provider send only the groups docket maps",
            config.groups_claim.as_deref().unwrap_or("groups"),
            groups.len()
        )));
    }
    let email = match text(&config.email_claim) {
        Some(email) => Some(super::email::normalize(&email).map_err(|problem| {
            OidcError::Rejected(format!(
                "the `{}` claim is not an address docket accepts: {problem}; ask your administrator to correct it at the identity provider",
                config.email_claim
            ))
        })?),
        None => None,
    };
    Ok(Claims {
        subject,
        email,
        email_verified: raw.get("email_verified").and_then(|v| v.as_bool()),
        name: text(&config.name_claim),
        groups,
    })
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
    let allowed = |d: &String| super::email::normalize_domain(d).is_ok_and(|d| d == domain);
    if !config.allowed_domains.is_empty() && !config.allowed_domains.iter().any(allowed) {
        return Some(format!("sign-up is not open to the domain {domain}; ask an admin to add you"));
    }
    if !config.allowed_groups.is_empty() && !claims.groups.iter().any(|g| config.allowed_groups.contains(g)) {
        return Some("you are in none of the groups allowed to sign up; ask an admin to add you".into());
    }
    None
}

/// The member an identity with no link yet may be linked to by its email:
/// one whose email equals the (verified) claim, who has no identity at this
/// provider yet and is not the break-glass admin. `Err` is the refusal.
fn email_match(
    r: &impl crate::store::Reader,
    scope: &OrgScope,
    config: &OidcProviderConfig,
    claims: &Claims,
) -> Result<Result<Option<User>, String>, StoreError> {
    let Some(email) = claims.email.as_deref().filter(|_| claims.email_verified != Some(false)) else {
        return Ok(Ok(None));
    };
    let Some(user) = users::find_by_email(r, scope, email)? else { return Ok(Ok(None)) };
    if user.local.is_some() {
        return Ok(Err(format!(
            "{email} is the firm's break-glass admin, who signs in only with password and code, never through an identity provider"
        )));
    }
    if user.identities.iter().any(|i| i.provider == config.id) {
        return Ok(Err(format!(
            "the member {email} is already linked to another account at this identity provider; a second account with the same email is refused (an admin must remove the member and add them again to link the new account)"
        )));
    }
    Ok(Ok(Some(user)))
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
        let target = format!("oidc:{}:{}", config.id, claims.subject);
        let found = match users::find_login(w, &users::oidc_login(&config.id, &claims.subject))? {
            Some(f) if f.org != org.id => return refuse(w, "this account belongs to another firm".into(), target),
            Some(f) => Some(users::require(w, &system, &f.user)?),
            None => match email_match(w, &system, config, claims)? {
                Ok(found) => found,
                Err(reason) => return refuse(w, reason, target),
            },
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
    let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
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

    fn metadata(issuer: &str, token: &str, iss_supported: Option<bool>) -> Metadata {
        serde_json::from_value(serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": token,
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "authorization_response_iss_parameter_supported": iss_supported,
        }))
        .unwrap()
    }

    #[test]
    fn endpoints_must_be_https_when_the_issuer_is() {
        let plain = metadata("https://idp.test", "http://idp.test/token", None);
        assert_eq!(insecure_endpoint(&plain).as_deref(), Some("http://idp.test/token"));
        assert_eq!(insecure_endpoint(&metadata("https://idp.test", "https://idp.test/token", None)), None);
        assert_eq!(insecure_endpoint(&metadata("http://127.0.0.1:9", "http://127.0.0.1:9/token", None)), None);
    }

    #[tokio::test]
    async fn fetch_refuses_plain_http_for_an_https_issuer_without_sending() {
        let req = openidconnect::http::Request::builder().uri("http://127.0.0.1:9/jwks").body(vec![]).unwrap();
        let e = fetch(reqwest::Client::new(), req, JWKS, true).await.unwrap_err();
        assert!(matches!(e, FetchError::NotHttps { .. }), "{e}");
        assert!(e.to_string().contains("not https"), "{e}");
    }

    #[test]
    fn iss_is_required_when_advertised() {
        let advertised = metadata("https://idp.test", "https://idp.test/token", Some(true));
        assert!(check_iss(&advertised, None).unwrap_err().to_string().contains("RFC 9207"));
        assert!(check_iss(&advertised, Some("https://evil.test")).is_err());
        assert!(check_iss(&advertised, Some("https://idp.test")).is_ok());
        let silent = metadata("https://idp.test", "https://idp.test/token", None);
        assert!(check_iss(&silent, None).is_ok());
        assert!(check_iss(&silent, Some("https://evil.test")).is_err());
    }

    #[test]
    fn claims_are_normalized_and_capped() {
        let config: OidcProviderConfig = toml::from_str(
            "id = 'k'\norg = 'acme'\nissuer = 'https://idp.test'\nclient_id = 'c'\ngroups_claim = 'groups'\n",
        )
        .unwrap();
        let ok = claims(&config, "s".into(), &serde_json::json!({"email": "Kate@Firm.Test", "groups": "one"})).unwrap();
        assert_eq!((ok.email.as_deref(), ok.groups), (Some("kate@firm.test"), vec!["one".to_string()]));
        for email in ["\u{212A}ate@firm.test", " kate@firm.test"] {
            let e = claims(&config, "s".into(), &serde_json::json!({ "email": email })).unwrap_err();
            assert!(e.to_string().contains("`email` claim"), "{e}");
        }
        let groups: Vec<String> = (0..=MAX_GROUPS).map(|i| i.to_string()).collect();
        assert!(claims(&config, "s".into(), &serde_json::json!({ "groups": groups })).is_err());
        assert!(claims(&config, "s".repeat(MAX_SUBJECT_CHARS + 1), &serde_json::json!({})).is_err());
    }
}

//! Who is calling the API: an API token (`Authorization: Bearer dkt_…`) or a
//! browser session (the `__Host-docket_session` cookie). Both are declared as
//! alternative security schemes in the spec; [`Caller`] accepts either.
use super::problem::{ApiError, ApiResult, Code};
use crate::auth::{Permission, Principal, sessions, tokens};
use crate::state::AppState;
use poem::Request;
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme};
use std::sync::Arc;

/// `Authorization: Bearer dkt_…`: an API token.
#[derive(SecurityScheme)]
#[oai(rename = "TokenAuth", ty = "bearer", bearer_format = "dkt_ API token")]
#[allow(dead_code)] // declares the scheme in the spec; `Caller` does the checking
struct TokenScheme(Bearer);

/// The browser session cookie set by sign-in. State-changing requests with it
/// must also send `X-Docket-CSRF: 1` from this site's own pages.
#[derive(SecurityScheme)]
#[oai(rename = "SessionCookie", ty = "api_key", key_name = "__Host-docket_session", key_in = "cookie")]
#[allow(dead_code)]
struct SessionScheme(ApiKey);

/// An authenticated caller of an operation.
pub struct Caller(pub Principal);

/// Where the edge learns who an operation's caller was (to audit a refusal):
/// the edge puts an empty slot in the request, [`Caller`] fills it.
#[derive(Clone, Default)]
pub struct CallerSlot(pub Arc<std::sync::Mutex<Option<Principal>>>);

impl CallerSlot {
    /// The caller the operation authenticated, if any.
    pub fn take(&self) -> Option<Principal> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

fn unauthenticated(detail: &str) -> ApiError {
    ApiError::new(Code::Unauthenticated, detail).with_header("www-authenticate", "Bearer".into())
}

/// The bearer token of a request, if it sent one.
pub fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name` sent with a request.
pub fn cookie(headers: &poem::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// The session cookie of a request, if it sent one.
pub fn session_cookie(req: &Request) -> Option<String> {
    cookie(req.headers(), sessions::COOKIE)
}

fn authenticate(req: &Request) -> ApiResult<Principal> {
    let state = req.data::<Arc<AppState>>().ok_or_else(|| unauthenticated("no credentials"))?;
    if req.headers().contains_key("authorization") {
        let token = bearer(req)
            .ok_or_else(|| unauthenticated("the Authorization header must be `Bearer dkt_…` with an API token"))?;
        return match tokens::authenticate(&state.store, token) {
            Ok(p) => Ok(p),
            Err(tokens::TokenError::Invalid) => {
                Err(unauthenticated("the API token is malformed, unknown, revoked or expired; create a new one"))
            }
            Err(tokens::TokenError::Store(e)) => Err(e.into()),
        };
    }
    let Some(cookie) = session_cookie(req) else {
        return Err(unauthenticated("sign in, or send an API token as `Authorization: Bearer dkt_…`"));
    };
    match sessions::authenticate(&state.store, &cookie, state.timeouts) {
        Ok(p) => Ok(p),
        Err(sessions::SessionError::Invalid) => Err(unauthenticated("your session has ended; sign in again")),
        Err(sessions::SessionError::Store(e)) => Err(e.into()),
    }
}

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <TokenScheme as ApiExtractor>::register(registry);
        <SessionScheme as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        vec!["TokenAuth", "SessionCookie"]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut poem::RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let principal = authenticate(req)?;
        if let Some(slot) = req.data::<CallerSlot>() {
            *slot.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(principal.clone());
        }
        Ok(Caller(principal))
    }
}

impl Caller {
    /// The principal, if it holds `permission`.
    pub fn require(&self, permission: Permission) -> ApiResult<&Principal> {
        if self.0.can(permission) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "this needs the `{}` permission, which your role `{}`{} lacks",
                    permission.as_str(),
                    self.0.role(),
                    if matches!(self.0.credential(), crate::auth::Credential::Token(_)) {
                        " (or this token's scopes)"
                    } else {
                        ""
                    }
                ),
            ))
        }
    }

    /// The member acting (session or personal token); service tokens have none.
    pub fn member(&self) -> ApiResult<&str> {
        self.0.user().ok_or_else(|| {
            ApiError::new(
                Code::Forbidden,
                "this acts on your own account; a service token has none (use a session or a personal token)",
            )
        })
    }
}

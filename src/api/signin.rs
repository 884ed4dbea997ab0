//! `/auth`: signing in and out of the web app. The break-glass admin signs in
//! with password + TOTP; everyone else through the firm's identity provider.
//! These operations need no credential; sign-in gets a stricter per-address
//! rate limit and CSRF checks at the HTTP edge.
use super::auth::session_cookie;
use super::params::Id;
use super::problem::{ApiError, ApiResult, Code};
use super::types::Text;
use crate::auth::local::{self, Attempt, SignInError};
use crate::auth::oidc::{self, Callback, OidcError};
use crate::auth::sessions;
use crate::clock::{micros_to_datetime, rfc3339};
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// Signing in and out.
    Auth,
}

pub struct SignInApi {
    pub state: Arc<AppState>,
}

/// An identity provider offered on the sign-in page.
#[derive(Object)]
pub struct ProviderView {
    pub id: String,
    pub display_name: String,
    /// Where the browser goes to sign in with this provider.
    pub sign_in_url: String,
}

/// How one may sign in to this appliance.
#[derive(Object)]
pub struct SignInOptions {
    /// Whether the break-glass local admin may sign in.
    pub local_login: bool,
    pub providers: Vec<ProviderView>,
}

/// A break-glass admin's sign-in.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct LocalSignIn {
    #[oai(validator(max_length = 254))]
    pub email: Text,
    #[oai(validator(max_length = 256))]
    pub password: Text,
    /// The 6-digit code of the authenticator app, or one of the recovery codes.
    #[oai(validator(max_length = 32))]
    pub code: Text,
}

/// A started session.
#[derive(Object)]
pub struct SessionStarted {
    /// The session's public id.
    pub session_id: String,
    pub user_id: String,
    /// RFC 3339: the session's absolute end.
    pub expires_at: String,
}

/// The result of signing out.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SignedOut {
    /// Where to send the browser to also sign out of the identity provider, if it offers that.
    pub logout_url: Option<String>,
}

#[derive(ApiResponse)]
enum SignInResponse {
    /// Signed in; the session cookie is set.
    #[oai(status = 200)]
    Ok(Json<SessionStarted>, #[oai(header = "set-cookie")] String),
}

#[derive(ApiResponse)]
enum RedirectResponse {
    /// Go on in the browser at `Location`.
    #[oai(status = 303)]
    SeeOther(#[oai(header = "location")] String, #[oai(header = "set-cookie")] String),
}

#[derive(ApiResponse)]
enum SignOutResponse {
    /// Signed out; the session cookie is cleared.
    #[oai(status = 200)]
    Ok(Json<SignedOut>, #[oai(header = "set-cookie")] String),
}

fn cookie(name: &str, value: &str, max_age_seconds: i64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}")
}

fn started(session: &sessions::Session) -> SessionStarted {
    SessionStarted {
        session_id: session.id.clone(),
        user_id: session.user.clone(),
        expires_at: rfc3339(micros_to_datetime(session.expires_at)),
    }
}

fn session_cookie_for(state: &AppState, value: &str) -> String {
    cookie(sessions::COOKIE, value, state.timeouts.absolute / 1_000_000)
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        let code = match &e {
            OidcError::UnknownProvider(_) => Code::NotFound,
            OidcError::Unavailable(_) => Code::UpstreamUnavailable,
            OidcError::Rejected(_) => Code::BadRequest,
            OidcError::Denied(_) => Code::Forbidden,
            OidcError::Store(_) => {
                return match e {
                    OidcError::Store(s) => s.into(),
                    _ => ApiError::new(Code::Internal, "internal error"),
                };
            }
        };
        ApiError::new(code, e.to_string())
    }
}

fn callback_path(provider: &str) -> String {
    format!("{}/auth/oidc/{provider}/callback", super::BASE)
}

/// The origin people reach docket at, for URLs given to identity providers:
/// `server.public_host`, never the request's `Host` header. The port is the
/// listener's when the browser reached docket directly on a port other than
/// the scheme's default; behind a trusted proxy the proxy's default port.
fn public_origin(state: &AppState, req: &Request) -> String {
    let https = super::site_origin(req).starts_with("https:");
    let scheme = if https { "https" } else { "http" };
    let host = state.config.public_host();
    let via_proxy =
        req.remote_addr().as_socket_addr().is_some_and(|a| state.config.server.trusted_proxies.contains(&a.ip()));
    let port = req
        .local_addr()
        .as_socket_addr()
        .map(|a| a.port())
        .filter(|p| !via_proxy && *p != if https { 443 } else { 80 });
    match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

#[OpenApi(prefix_path = "/auth", tag = "Tag::Auth")]
impl SignInApi {
    /// How to sign in
    ///
    /// Requires permission `none`: anyone may ask.
    #[oai(path = "/providers", method = "get", operation_id = "auth.providers")]
    async fn providers(&self) -> Json<SignInOptions> {
        let providers = self
            .state
            .oidc
            .list()
            .into_iter()
            .map(|p| ProviderView {
                sign_in_url: format!("{}/auth/oidc/{}/sign-in", super::BASE, p.id),
                id: p.id,
                display_name: p.display_name,
            })
            .collect();
        Json(SignInOptions { local_login: self.state.config.auth.local_login, providers })
    }

    /// Sign in as the break-glass admin
    ///
    /// Password plus a TOTP code (or a one-time recovery code), each code usable
    /// once. Repeated failures lock the failing client address out of that
    /// account for a growing time (429 with `Retry-After`); other addresses
    /// are not locked. Unknown emails answer exactly as known ones. Browsers
    /// must send `Origin` and `X-Docket-CSRF: 1`.
    ///
    /// Requires permission `none`: this is how one gets a session.
    #[oai(path = "/local/sign-in", method = "post", operation_id = "auth.local_sign_in")]
    async fn local_sign_in(&self, req: &Request, body: Json<LocalSignIn>) -> ApiResult<SignInResponse> {
        if !self.state.config.auth.local_login {
            return Err(ApiError::new(Code::Forbidden, SignInError::Disabled.to_string()));
        }
        let body = body.0;
        let attempt = Attempt { email: body.email.0, password: body.password.0, code: body.code.0 };
        let keys = self.state.keys.current();
        let ctx = super::audit_context(req);
        let timeouts = self.state.timeouts;
        let state = self.state.clone();
        // argon2 takes tens of milliseconds: keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            local::sign_in(&state.store, &keys, &state.sign_in_decoys, &attempt, &ctx, timeouts)
        })
        .await
        .map_err(|_| ApiError::new(Code::Internal, "sign-in was interrupted; try again"))?;
        match result {
            Ok((value, session)) => {
                Ok(SignInResponse::Ok(Json(started(&session)), session_cookie_for(&self.state, value.expose())))
            }
            Err(e @ SignInError::Failed) => Err(ApiError::new(Code::Unauthenticated, e.to_string())),
            Err(SignInError::Locked(seconds)) => {
                Err(ApiError::new(Code::RateLimited, SignInError::Locked(seconds).to_string())
                    .with_header("retry-after", seconds.to_string()))
            }
            Err(e @ SignInError::Disabled) => Err(ApiError::new(Code::Forbidden, e.to_string())),
            Err(SignInError::Store(e)) => Err(e.into()),
        }
    }

    /// Start signing in with an identity provider
    ///
    /// Redirects the browser to the provider; it comes back to the callback.
    ///
    /// Requires permission `none`: this is how one gets a session.
    #[oai(path = "/oidc/:provider/sign-in", method = "get", operation_id = "auth.oidc_sign_in")]
    async fn oidc_sign_in(
        &self,
        req: &Request,
        provider: Path<Id>,
        /// A path of this site to return to after signing in.
        return_to: Query<Option<String>>,
    ) -> ApiResult<RedirectResponse> {
        let redirect_uri = format!("{}{}", public_origin(&self.state, req), callback_path(&provider.0));
        let back = oidc::safe_return_to(return_to.0.as_deref());
        let started = self.state.oidc.start(&provider.0, &redirect_uri, &back).await?;
        let flow = cookie(oidc::FLOW_COOKIE, started.flow_cookie.expose(), oidc::FLOW_TTL.as_secs() as i64);
        Ok(RedirectResponse::SeeOther(started.url, flow))
    }

    /// Finish signing in with an identity provider
    ///
    /// The provider redirects the browser here. On success the session cookie
    /// is set and the browser goes on to the page it came from.
    ///
    /// Requires permission `none`: this is how one gets a session.
    #[oai(path = "/oidc/:provider/callback", method = "get", operation_id = "auth.oidc_callback")]
    #[allow(clippy::too_many_arguments)] // the parameters of the OAuth 2.0 / RFC 9207 redirect
    async fn oidc_callback(
        &self,
        req: &Request,
        provider: Path<Id>,
        code: Query<Option<String>>,
        state: Query<Option<String>>,
        iss: Query<Option<String>>,
        error: Query<Option<String>>,
        error_description: Query<Option<String>>,
    ) -> ApiResult<RedirectResponse> {
        let config = self.state.oidc.config(&provider.0)?.clone();
        let cb = Callback {
            code: code.0,
            state: state.0,
            iss: iss.0,
            error: error.0,
            error_description: error_description.0,
        };
        let flow = super::auth::cookie(req.headers(), oidc::FLOW_COOKIE);
        let ctx = super::audit_context(req);
        let (claims, back) = match self.state.oidc.finish(&provider.0, &cb, flow.as_deref()).await {
            Ok(done) => done,
            Err(e) => {
                if let Err(store) = oidc::record_rejection(&self.state.store, &config, &ctx, &e.to_string()) {
                    tracing::warn!(error = %store, "could not audit a rejected sign-in");
                }
                return Err(e.into());
            }
        };
        let (value, _session) = oidc::admit(&self.state.store, &config, &claims, &ctx, self.state.timeouts)?;
        Ok(RedirectResponse::SeeOther(back, session_cookie_for(&self.state, value.expose())))
    }

    /// Sign out
    ///
    /// Ends this browser's session. If it was started with an identity provider
    /// that supports RP-initiated logout, `logout_url` signs out there too.
    ///
    /// Requires permission `none`: ends the caller's own session, if any.
    #[oai(path = "/sign-out", method = "post", operation_id = "auth.sign_out")]
    async fn sign_out(&self, req: &Request) -> ApiResult<SignOutResponse> {
        let mut logout_url = None;
        if let Some(value) = session_cookie(req)
            && let Some(session) = sessions::end(&self.state.store, &value)?
        {
            let scope = crate::store::OrgTaskContext::new(crate::store::OrgTask::SignOut).org_scope(session.org);
            let ctx = super::audit_context(req);
            crate::audit::audited(
                &self.state.store,
                &scope,
                &ctx,
                "auth.sign_out",
                &format!("user:{}", session.user),
                serde_json::json!({"session": session.id}),
                |_| Ok(()),
            )?;
            if let Some(provider) = session.method.strip_prefix("oidc:") {
                let back = format!("{}/", public_origin(&self.state, req));
                logout_url = self.state.oidc.logout_url(provider, &back).await;
            }
        }
        Ok(SignOutResponse::Ok(Json(SignedOut { logout_url }), cookie(sessions::COOKIE, "", 0)))
    }
}

//! `/me`: the caller, and their own browser sessions.
use super::auth::Caller;
use super::page::{self, Page, PageLimit};
use super::params::{Cursor, Id};
use super::problem::{ApiError, ApiResult};
use crate::auth::{Credential, sessions};
use crate::clock::{micros_to_datetime, rfc3339};
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// The caller and their sessions.
    Me,
}

pub struct MeApi {
    pub state: Arc<AppState>,
}

/// Who is calling.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Me {
    /// `session`, `personal-token` or `service-token`.
    pub credential: String,
    /// The session or token id.
    pub credential_id: String,
    /// The member acting; absent for service tokens.
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub org_id: u64,
    pub role: String,
    /// Effective permissions (the role's, narrowed by a token's scopes).
    pub permissions: Vec<String>,
}

/// A browser session.
#[derive(Object)]
#[oai(rename = "Session", skip_serializing_if_is_none)]
pub struct SessionView {
    pub id: String,
    /// RFC 3339.
    pub created_at: String,
    pub last_seen_at: String,
    /// The absolute end.
    pub expires_at: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `local` or `oidc:<provider>`.
    pub method: String,
    /// Whether this is the session making the request.
    pub current: bool,
}

/// How many sessions were ended.
#[derive(Object)]
pub struct SessionsEnded {
    pub ended: u64,
}

#[derive(ApiResponse)]
enum Deleted {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

fn time(micros: i64) -> String {
    rfc3339(micros_to_datetime(micros))
}

#[OpenApi(prefix_path = "/me", tag = "Tag::Me")]
impl MeApi {
    /// Who am I
    ///
    /// Requires permission `none`: any authenticated caller.
    #[oai(path = "/", method = "get", operation_id = "me.get")]
    async fn get(&self, auth: Caller) -> ApiResult<Json<Me>> {
        let p = &auth.0;
        let user = match p.user() {
            Some(id) => self.state.store.read(|r| crate::auth::users::get(r, p.scope(), id)).map_err(ApiError::from)?,
            None => None,
        };
        let (credential, credential_id) = match p.credential() {
            Credential::Session(id) => ("session", id.clone()),
            Credential::Token(id) if p.user().is_some() => ("personal-token", id.clone()),
            Credential::Token(id) => ("service-token", id.clone()),
        };
        Ok(Json(Me {
            credential: credential.into(),
            credential_id,
            user_id: p.user().map(str::to_owned),
            email: user.as_ref().map(|u| u.email.clone()),
            name: user.map(|u| u.name),
            org_id: p.scope().org().0,
            role: p.role().into(),
            permissions: p.permissions().names(),
        }))
    }

    /// My sessions
    ///
    /// Requires permission `none`: any signed-in member (not a service token).
    #[oai(path = "/sessions", method = "get", operation_id = "me.sessions")]
    async fn sessions(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Items per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
    ) -> ApiResult<Json<Page<SessionView>>> {
        let user = auth.member()?;
        let current = match auth.0.credential() {
            Credential::Session(id) => Some(id.clone()),
            Credential::Token(_) => None,
        };
        let all =
            sessions::list(&self.state.store, auth.0.scope(), user, self.state.timeouts).map_err(ApiError::from)?;
        let views = all
            .into_iter()
            .map(|s| SessionView {
                current: current.as_deref() == Some(s.id.as_str()),
                id: s.id,
                created_at: time(s.created_at),
                last_seen_at: time(s.last_seen_at),
                expires_at: time(s.expires_at),
                ip: s.ip,
                user_agent: s.user_agent,
                method: s.method,
            })
            .collect();
        let context = format!("{} {user}", auth.0.scope().org());
        page::of_list(req, "me.sessions", &context, views, |s| s.id.clone(), cursor.0, limit.0).map(Json)
    }

    /// End one of my sessions
    ///
    /// Requires permission `none`: any signed-in member (not a service token).
    #[oai(path = "/sessions/:id", method = "delete", operation_id = "me.end_session")]
    async fn end_session(&self, req: &Request, auth: Caller, id: Path<Id>) -> ApiResult<Deleted> {
        let user = auth.member()?.to_string();
        let target = format!("session:{}", id.0);
        super::audited(&self.state, req, &auth.0, "session.revoke", &target, serde_json::json!({}), |w| {
            sessions::revoke(w, auth.0.scope(), &user, &id.0)
        })?;
        Ok(Deleted::NoContent)
    }

    /// Sign out everywhere
    ///
    /// Ends every session of the caller, including this one.
    ///
    /// Requires permission `none`: any signed-in member (not a service token).
    #[oai(path = "/sessions/sign-out-everywhere", method = "post", operation_id = "me.sign_out_everywhere")]
    async fn sign_out_everywhere(&self, req: &Request, auth: Caller) -> ApiResult<Json<SessionsEnded>> {
        let user = auth.member()?.to_string();
        let target = format!("user:{user}");
        let ended =
            super::audited(&self.state, req, &auth.0, "session.revoke_all", &target, serde_json::json!({}), |w| {
                sessions::revoke_user(w, auth.0.scope(), &user)
            })?;
        Ok(Json(SessionsEnded { ended: ended as u64 }))
    }
}

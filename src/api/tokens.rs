//! `/tokens`: API tokens. Members manage their own personal tokens
//! (`tokens:self`); `tokens:manage` covers every token of the firm, including
//! service tokens, which act for the firm with a role of their own.
use super::auth::Caller;
use super::page::{self, Page, PageLimit};
use super::params::{Cursor, Id};
use super::problem::{ApiError, ApiResult, Code};
use super::types::{Optional, PermissionName, Text, permission_names};
use crate::auth::Permission;
use crate::auth::grant::Grantor;
use crate::auth::tokens::{self, NewToken, TokenRecord};
use crate::clock::{micros_to_datetime, rfc3339};
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// API tokens for integrators.
    Tokens,
}

pub struct TokensApi {
    pub state: Arc<AppState>,
}

/// Whom a token acts for.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum TokenKind {
    /// Acts as the member who made it, with their current role.
    Personal,
    /// Acts for the firm with its own role.
    Service,
}

/// An API token (never its secret).
#[derive(Object)]
#[oai(rename = "Token", skip_serializing_if_is_none)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub kind: TokenKind,
    pub role: String,
    /// The member a personal token acts as.
    pub user_id: Option<String>,
    /// The most the token may do (its role may hold less); empty, for tokens
    /// made before scopes were recorded, means all of its role's.
    pub scopes: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub rotated_at: Option<String>,
    pub created_by: String,
}

fn time(micros: i64) -> String {
    rfc3339(micros_to_datetime(micros))
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        TokenView {
            kind: if t.user.is_some() { TokenKind::Personal } else { TokenKind::Service },
            id: t.id,
            name: t.name,
            role: t.role,
            user_id: t.user,
            scopes: t.scopes,
            created_at: time(t.created_at),
            expires_at: t.expires_at.map(time),
            last_used_at: t.last_used_at.map(time),
            rotated_at: t.rotated_at.map(time),
            created_by: t.created_by,
        }
    }
}

/// A personal token to create: it acts as you, with your current role.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct PersonalTokenCreate {
    /// What the token is for, e.g. "billing export".
    #[oai(validator(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    pub name: Text,
    /// Narrow the token to these permissions.
    #[oai(validator(max_items = 64))]
    pub scopes: Optional<Vec<PermissionName>>,
    /// Lifetime in days (1 to 730); absent: never expires.
    #[oai(validator(minimum(value = "1"), maximum(value = "730")))]
    pub expires_in_days: Optional<u32>,
}

/// A service token to create: it acts for the firm with its own role.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct ServiceTokenCreate {
    /// What the token is for, e.g. "billing export".
    #[oai(validator(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    pub name: Text,
    /// A built-in role or a custom role's name.
    #[oai(validator(pattern = r"^[a-z][a-z0-9-]{1,39}$"))]
    pub role: Text,
    /// Narrow the token to these permissions.
    #[oai(validator(max_items = 64))]
    pub scopes: Optional<Vec<PermissionName>>,
    /// Lifetime in days (1 to 730); absent: never expires.
    #[oai(validator(minimum(value = "1"), maximum(value = "730")))]
    pub expires_in_days: Optional<u32>,
}

/// A new or rotated token: the secret is shown this once.
#[derive(Object)]
pub struct TokenSecret {
    /// `dkt_…`: send it as `Authorization: Bearer dkt_…`. It cannot be shown again.
    pub token: String,
    pub record: TokenView,
}

#[derive(ApiResponse)]
enum Created {
    /// Created.
    #[oai(status = 201)]
    Created(Json<TokenSecret>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Revoked: the token stops working at once.
    #[oai(status = 204)]
    NoContent,
}

impl TokensApi {
    fn create_token(&self, req: &Request, p: &crate::auth::Principal, new: &NewToken) -> ApiResult<Created> {
        let ctx = super::audit_context(req);
        let (secret, record) = self
            .state
            .store
            .write(|w| {
                let (secret, record) = tokens::create(w, p.scope(), new, &Grantor::caller(w, p)?)?;
                let target = format!("token:{}", record.id);
                crate::audit::record(
                    w,
                    p.scope(),
                    &ctx,
                    "token.create",
                    &target,
                    crate::audit::Outcome::Success,
                    tokens::details(&record),
                )?;
                Ok((secret, record))
            })
            .map_err(ApiError::from)?;
        Ok(Created::Created(Json(TokenSecret { token: secret.expose().to_string(), record: record.into() })))
    }

    /// Token `id` if the caller may act on it: their own personal token with
    /// `tokens:self`, any token of the firm with `tokens:manage`.
    fn may_act_on(&self, auth: &Caller, id: &str) -> ApiResult<TokenRecord> {
        let p = auth.require(Permission::TokensSelf).or_else(|_| auth.require(Permission::TokensManage))?;
        let record = self.state.store.read(|r| tokens::get(r, p.scope(), id)).map_err(ApiError::from)?;
        let own = record.user.is_some() && record.user.as_deref() == p.user();
        if (own && p.can(Permission::TokensSelf)) || p.can(Permission::TokensManage) {
            Ok(record)
        } else {
            Err(ApiError::new(Code::NotFound, format!("token `{id}` was not found")))
        }
    }
}

#[OpenApi(prefix_path = "/tokens", tag = "Tag::Tokens")]
impl TokensApi {
    /// List tokens
    ///
    /// Your own personal tokens; with `tokens:manage`, every token of the firm.
    ///
    /// Requires permission `tokens:self` (or `tokens:manage`).
    #[oai(path = "/", method = "get", operation_id = "tokens.list")]
    async fn list(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Items per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
    ) -> ApiResult<Json<Page<TokenView>>> {
        let p = auth.require(Permission::TokensSelf).or_else(|_| auth.require(Permission::TokensManage))?;
        let all = self.state.store.read(|r| tokens::list(r, p.scope())).map_err(ApiError::from)?;
        let manage = p.can(Permission::TokensManage);
        let views = all
            .into_iter()
            .filter(|t| manage || (t.user.is_some() && t.user.as_deref() == p.user()))
            .map(TokenView::from)
            .collect();
        let org = p.scope().org().to_string();
        page::of_list(req, "tokens.list", &org, views, |t| t.id.clone(), cursor.0, limit.0).map(Json)
    }

    /// Create a personal token
    ///
    /// The token acts as you, with your current role, narrowed by `scopes` (by
    /// default, to the permissions you hold now: it never gains more). The
    /// secret is in the response only.
    ///
    /// Requires permission `tokens:self`.
    #[oai(path = "/", method = "post", operation_id = "tokens.create")]
    async fn create(&self, req: &Request, auth: Caller, body: Json<PersonalTokenCreate>) -> ApiResult<Created> {
        let p = auth.require(Permission::TokensSelf)?;
        let body = body.0;
        let new = NewToken {
            name: body.name.0,
            role: String::new(),
            user: Some(auth.member()?.to_string()),
            scopes: permission_names(body.scopes.0.unwrap_or_default()),
            valid_days: body.expires_in_days.0,
        };
        self.create_token(req, p, &new)
    }

    /// Create a service token
    ///
    /// The token acts for the firm with the given role, narrowed by `scopes`;
    /// it cannot hold permissions you lack, only an owner makes a token of role
    /// `owner`, and it never gains permissions later. The secret is in the
    /// response only.
    ///
    /// Requires permission `tokens:manage`.
    #[oai(path = "/service", method = "post", operation_id = "tokens.create_service")]
    async fn create_service(&self, req: &Request, auth: Caller, body: Json<ServiceTokenCreate>) -> ApiResult<Created> {
        let p = auth.require(Permission::TokensManage)?;
        let body = body.0;
        let new = NewToken {
            name: body.name.0,
            role: body.role.0,
            user: None,
            scopes: permission_names(body.scopes.0.unwrap_or_default()),
            valid_days: body.expires_in_days.0,
        };
        self.create_token(req, p, &new)
    }

    /// Revoke a token
    ///
    /// Requires permission `tokens:self` (own personal tokens) or `tokens:manage`.
    #[oai(path = "/:id", method = "delete", operation_id = "tokens.revoke")]
    async fn revoke(&self, req: &Request, auth: Caller, id: Path<Id>) -> ApiResult<Deleted> {
        let record = self.may_act_on(&auth, &id.0)?;
        super::audited(
            &self.state,
            req,
            &auth.0,
            "token.revoke",
            &format!("token:{}", record.id),
            tokens::details(&record),
            |w| tokens::revoke(w, auth.0.scope(), &record.id),
        )?;
        Ok(Deleted::NoContent)
    }

    /// Rotate a token
    ///
    /// The old secret stops working at once; the new one is in the response
    /// only. Name, role, scopes and lifetime carry over. A new secret hands out
    /// everything the token holds, so you must hold all of it (and be an owner
    /// for a token of an owner).
    ///
    /// Requires permission `tokens:self` (own personal tokens) or `tokens:manage`.
    #[oai(path = "/:id/rotate", method = "post", operation_id = "tokens.rotate")]
    async fn rotate(&self, req: &Request, auth: Caller, id: Path<Id>) -> ApiResult<Created> {
        let record = self.may_act_on(&auth, &id.0)?;
        let (secret, record) = super::audited(
            &self.state,
            req,
            &auth.0,
            "token.rotate",
            &format!("token:{}", record.id),
            tokens::details(&record),
            |w| tokens::rotate(w, auth.0.scope(), &record.id, &Grantor::caller(w, &auth.0)?),
        )?;
        Ok(Created::Created(Json(TokenSecret { token: secret.expose().to_string(), record: record.into() })))
    }
}

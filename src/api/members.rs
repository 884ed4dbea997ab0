//! `/members`: who belongs to the firm, with which role.
use super::auth::Caller;
use super::page::{self, Page, PageLimit};
use super::params::{Cursor, Id};
use super::problem::{ApiError, ApiResult};
use super::types::{Optional, Text};
use crate::auth::Permission;
use crate::auth::grant::Grantor;
use crate::auth::users::{self, MemberChanges, NewMember, User};
use crate::clock::{micros_to_datetime, rfc3339};
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// The firm's members and their roles.
    Members,
}

pub struct MembersApi {
    pub state: Arc<AppState>,
}

/// A linked identity-provider account.
#[derive(Object)]
pub struct IdentityView {
    pub provider: String,
    pub subject: String,
}

/// A member of the firm.
#[derive(Object)]
#[oai(rename = "Member", skip_serializing_if_is_none)]
pub struct MemberView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    /// RFC 3339.
    pub created_at: String,
    pub last_sign_in_at: Option<String>,
    pub identities: Vec<IdentityView>,
    /// Groups the identity provider reported at the last sign-in.
    pub groups: Vec<String>,
    /// Whether this is a break-glass local admin.
    pub local_login: bool,
}

impl From<User> for MemberView {
    fn from(u: User) -> Self {
        MemberView {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
            disabled: u.disabled,
            created_at: rfc3339(micros_to_datetime(u.created_at)),
            last_sign_in_at: u.last_sign_in_at.map(|t| rfc3339(micros_to_datetime(t))),
            identities: u
                .identities
                .into_iter()
                .map(|i| IdentityView { provider: i.provider, subject: i.subject })
                .collect(),
            groups: u.groups,
            local_login: u.local.is_some(),
        }
    }
}

/// A member to add. They sign in with the identity provider under this email.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct MemberCreate {
    #[oai(validator(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s.\x00-\x1f\x7f-\x9f]([^@\s\x00-\x1f\x7f-\x9f]*\.)+[^@\s.\x00-\x1f\x7f-\x9f]+$"
    ))]
    pub email: Text,
    #[oai(validator(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    pub name: Optional<Text>,
    /// A built-in role or a custom role's name.
    #[oai(validator(pattern = r"^[a-z][a-z0-9-]{1,39}$"))]
    pub role: Text,
}

/// Changes to a member; absent fields stay as they are.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct MemberPatch {
    #[oai(validator(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    pub name: Optional<Text>,
    #[oai(validator(pattern = r"^[a-z][a-z0-9-]{1,39}$"))]
    pub role: Optional<Text>,
    /// A disabled member cannot sign in; their sessions end at once.
    pub disabled: Optional<bool>,
}

#[derive(ApiResponse)]
enum Created {
    /// Added.
    #[oai(status = 201)]
    Created(Json<MemberView>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Removed, with their sessions and personal tokens.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/members", tag = "Tag::Members")]
impl MembersApi {
    /// List members
    ///
    /// Requires permission `members:read`.
    #[oai(path = "/", method = "get", operation_id = "members.list")]
    async fn list(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Items per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
    ) -> ApiResult<Json<Page<MemberView>>> {
        let p = auth.require(Permission::MembersRead)?;
        let all = self.state.store.read(|r| users::list(r, p.scope())).map_err(ApiError::from)?;
        let views = all.into_iter().map(MemberView::from).collect();
        let org = p.scope().org().to_string();
        page::of_list(req, "members.list", &org, views, |m| m.id.clone(), cursor.0, limit.0).map(Json)
    }

    /// One member
    ///
    /// Requires permission `members:read`.
    #[oai(path = "/:id", method = "get", operation_id = "members.get")]
    async fn get(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<MemberView>> {
        let p = auth.require(Permission::MembersRead)?;
        let user = self.state.store.read(|r| users::require(r, p.scope(), &id.0)).map_err(ApiError::from)?;
        Ok(Json(user.into()))
    }

    /// Add a member
    ///
    /// The role's permissions must all be yours; only an owner may add another
    /// owner. An email already used in another firm is fine: firms never learn
    /// about each other's members.
    ///
    /// Requires permission `members:write`.
    #[oai(path = "/", method = "post", operation_id = "members.create")]
    async fn create(&self, req: &Request, auth: Caller, body: Json<MemberCreate>) -> ApiResult<Created> {
        let p = auth.require(Permission::MembersWrite)?;
        let new = NewMember {
            email: body.0.email.0,
            name: body.0.name.0.map(|t| t.0).unwrap_or_default(),
            role: body.0.role.0,
        };
        let details = serde_json::json!({"email": new.email, "role": new.role});
        let user = super::audited(&self.state, req, p, "member.create", "member", details, |w| {
            users::create(w, p.scope(), &new, &Grantor::caller(w, p)?)
        })?;
        Ok(Created::Created(Json(user.into())))
    }

    /// Change a member
    ///
    /// You must hold everything the member's current and new role hold; only an
    /// owner changes an owner. Demoting or disabling a member ends their
    /// sessions. The last owner cannot be demoted, disabled or removed.
    ///
    /// Requires permission `members:write`.
    #[oai(path = "/:id", method = "patch", operation_id = "members.update")]
    async fn update(
        &self,
        req: &Request,
        auth: Caller,
        id: Path<Id>,
        body: Json<MemberPatch>,
    ) -> ApiResult<Json<MemberView>> {
        let p = auth.require(Permission::MembersWrite)?;
        let changes = MemberChanges {
            name: body.0.name.0.map(|t| t.0),
            role: body.0.role.0.map(|t| t.0),
            disabled: body.0.disabled.0,
        };
        let details = serde_json::json!({"name": changes.name, "role": changes.role, "disabled": changes.disabled});
        let user = super::audited(&self.state, req, p, "member.update", &format!("user:{}", id.0), details, |w| {
            users::update(w, p.scope(), &id.0, &changes, &Grantor::caller(w, p)?)
        })?;
        Ok(Json(user.into()))
    }

    /// Remove a member
    ///
    /// You must hold everything the member holds; only an owner removes an owner.
    ///
    /// Requires permission `members:write`.
    #[oai(path = "/:id", method = "delete", operation_id = "members.delete")]
    async fn delete(&self, req: &Request, auth: Caller, id: Path<Id>) -> ApiResult<Deleted> {
        let p = auth.require(Permission::MembersWrite)?;
        super::audited(&self.state, req, p, "member.delete", &format!("user:{}", id.0), serde_json::json!({}), |w| {
            users::delete(w, p.scope(), &id.0, &Grantor::caller(w, p)?)
        })?;
        Ok(Deleted::NoContent)
    }
}

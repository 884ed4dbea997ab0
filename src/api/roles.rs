//! `/roles`: the built-in roles, the firm's custom roles, and the fixed
//! permission list custom roles pick from.
use super::auth::Caller;
use super::problem::{ApiError, ApiResult};
use super::types::{Optional, PermissionName, Text, permission_names};
use crate::auth::Permission;
use crate::auth::grant::Grantor;
use crate::auth::roles::{self, RoleInfo};
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// Roles and permissions.
    Roles,
}

pub struct RolesApi {
    pub state: Arc<AppState>,
}

/// A role.
#[derive(Object)]
#[oai(rename = "Role")]
pub struct RoleView {
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    /// Built-in roles cannot be changed or deleted.
    pub built_in: bool,
}

impl From<RoleInfo> for RoleView {
    fn from(r: RoleInfo) -> Self {
        RoleView { name: r.name, description: r.description, permissions: r.permissions.names(), built_in: r.built_in }
    }
}

/// A permission an operation may require.
#[derive(Object)]
pub struct PermissionView {
    /// e.g. `members:write`.
    pub name: String,
    pub description: String,
}

/// Every role of the firm and the permissions to build roles from.
#[derive(Object)]
pub struct RoleList {
    pub roles: Vec<RoleView>,
    pub permissions: Vec<PermissionView>,
}

/// A custom role's definition.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct RolePut {
    #[oai(validator(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))]
    pub description: Optional<Text>,
    /// Permissions from the list in `GET /roles`.
    #[oai(validator(max_items = 64))]
    pub permissions: Vec<PermissionName>,
}

#[derive(ApiResponse)]
enum Put {
    /// Changed.
    #[oai(status = 200)]
    Ok(Json<RoleView>),
    /// Created.
    #[oai(status = 201)]
    Created(Json<RoleView>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/roles", tag = "Tag::Roles")]
impl RolesApi {
    /// List roles and permissions
    ///
    /// Requires permission `members:read`.
    #[oai(path = "/", method = "get", operation_id = "roles.list")]
    async fn list(&self, auth: Caller) -> ApiResult<Json<RoleList>> {
        let p = auth.require(Permission::MembersRead)?;
        let all = self.state.store.read(|r| roles::list(r, p.scope())).map_err(ApiError::from)?;
        let permissions = Permission::ALL
            .iter()
            .map(|p| PermissionView { name: p.as_str().into(), description: p.description().into() })
            .collect();
        Ok(Json(RoleList { roles: all.into_iter().map(RoleView::from).collect(), permissions }))
    }

    /// Create or change a custom role
    ///
    /// Members holding the role get the new permissions at once; tokens never
    /// gain more than they were made with. You can only give a role permissions
    /// you hold, and only change a role holding nothing you lack.
    ///
    /// Requires permission `roles:write`.
    #[oai(path = "/:name", method = "put", operation_id = "roles.put")]
    async fn put(
        &self,
        req: &Request,
        auth: Caller,
        #[oai(validator(pattern = r"^[a-z][a-z0-9-]{1,39}$"))] name: Path<String>,
        body: Json<RolePut>,
    ) -> ApiResult<Put> {
        let p = auth.require(Permission::RolesWrite)?;
        let permissions = permission_names(body.0.permissions);
        let description = body.0.description.0.map(|t| t.0).unwrap_or_default();
        let details = serde_json::json!({"permissions": permissions});
        let (role, created) =
            super::audited(&self.state, req, p, "role.put", &format!("role:{}", name.0), details, |w| {
                roles::put(w, p.scope(), &name.0, &description, &permissions, &Grantor::caller(w, p)?)
            })?;
        let view =
            RoleView { name: role.name, description: role.description, permissions: role.permissions, built_in: false };
        Ok(if created { Put::Created(Json(view)) } else { Put::Ok(Json(view)) })
    }

    /// Delete a custom role
    ///
    /// Refused while a member or token holds it, and if it holds permissions you lack.
    ///
    /// Requires permission `roles:write`.
    #[oai(path = "/:name", method = "delete", operation_id = "roles.delete")]
    async fn delete(
        &self,
        req: &Request,
        auth: Caller,
        #[oai(validator(pattern = r"^[a-z][a-z0-9-]{1,39}$"))] name: Path<String>,
    ) -> ApiResult<Deleted> {
        let p = auth.require(Permission::RolesWrite)?;
        super::audited(&self.state, req, p, "role.delete", &format!("role:{}", name.0), serde_json::json!({}), |w| {
            roles::delete(w, p.scope(), &name.0, &Grantor::caller(w, p)?)
        })?;
        Ok(Deleted::NoContent)
    }
}

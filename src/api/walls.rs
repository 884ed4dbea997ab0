//! `/walls`: ethical walls around matters (see `auth::walls`).
use super::auth::Caller;
use super::page::{self, Page, PageLimit};
use super::params::{Cursor, Id};
use super::problem::{ApiError, ApiResult};
use super::types::{Optional, Text};
use crate::auth::Permission;
use crate::auth::walls::{self, NewWall, Wall};
use crate::clock::{micros_to_datetime, rfc3339};
use crate::state::AppState;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// Ethical walls around matters.
    Walls,
}

pub struct WallsApi {
    pub state: Arc<AppState>,
}

/// A wall: the matter, and who is screened off from it.
#[derive(Object)]
#[oai(rename = "Wall")]
pub struct WallView {
    pub id: String,
    /// The Clio matter id.
    pub matter_id: String,
    /// Member ids screened off.
    pub users: Vec<String>,
    /// Identity-provider groups screened off.
    pub groups: Vec<String>,
    pub reason: String,
    /// RFC 3339.
    pub created_at: String,
    pub created_by: String,
}

impl From<Wall> for WallView {
    fn from(w: Wall) -> Self {
        WallView {
            id: w.id,
            matter_id: w.matter_id,
            users: w.users,
            groups: w.groups,
            reason: w.reason,
            created_at: rfc3339(micros_to_datetime(w.created_at)),
            created_by: w.created_by,
        }
    }
}

/// A wall to build.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct WallCreate {
    /// The Clio matter id to screen.
    #[oai(validator(pattern = r"^[A-Za-z0-9-]{1,64}$"))]
    pub matter_id: Text,
    /// Who to screen off: `user:<member id>` or `group:<identity-provider group>`.
    #[oai(validator(
        min_items = 1,
        max_items = 1000,
        pattern = r"^(user:usr_[0-9a-f]{12}|group:[^\x00-\x1f\x7f-\x9f]{1,200})$"
    ))]
    pub screened: Vec<Text>,
    /// Why the wall exists.
    #[oai(validator(max_length = 500, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))]
    pub reason: Optional<Text>,
}

#[derive(ApiResponse)]
enum Created {
    /// Built; it applies at once.
    #[oai(status = 201)]
    Created(Json<WallView>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Taken down.
    #[oai(status = 204)]
    NoContent,
}

/// Splits `user:…` / `group:…` entries into member ids and groups.
fn split_screened(list: Vec<Text>) -> (Vec<String>, Vec<String>) {
    let (mut users, mut groups) = (vec![], vec![]);
    for entry in list {
        if let Some(user) = entry.0.strip_prefix("user:") {
            users.push(user.to_string());
        } else if let Some(group) = entry.0.strip_prefix("group:") {
            groups.push(group.to_string());
        }
    }
    (users, groups)
}

#[OpenApi(prefix_path = "/walls", tag = "Tag::Walls")]
impl WallsApi {
    /// List walls
    ///
    /// Requires permission `walls:manage`.
    #[oai(path = "/", method = "get", operation_id = "walls.list")]
    async fn list(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Items per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
    ) -> ApiResult<Json<Page<WallView>>> {
        let p = auth.require(Permission::WallsManage)?;
        let all = self.state.store.read(|r| walls::list(r, p.scope())).map_err(ApiError::from)?;
        let views = all.into_iter().map(WallView::from).collect();
        let org = p.scope().org().to_string();
        page::of_list(req, "walls.list", &org, views, |w| w.id.clone(), cursor.0, limit.0).map(Json)
    }

    /// Build a wall
    ///
    /// The matter and everything under it vanish at once for the named members
    /// and for members of the named groups.
    ///
    /// Requires permission `walls:manage`.
    #[oai(path = "/", method = "post", operation_id = "walls.create")]
    async fn create(&self, req: &Request, auth: Caller, body: Json<WallCreate>) -> ApiResult<Created> {
        let p = auth.require(Permission::WallsManage)?;
        let (users, groups) = split_screened(body.0.screened);
        let new = NewWall {
            matter_id: body.0.matter_id.0,
            users,
            groups,
            reason: body.0.reason.0.map(|t| t.0).unwrap_or_default(),
        };
        let details = serde_json::json!({"matter_id": new.matter_id, "users": new.users, "groups": new.groups});
        let target = format!("matter:{}", new.matter_id);
        let wall = super::audited(&self.state, req, p, "wall.create", &target, details, |w| {
            walls::create(w, p.scope(), &new)
        })?;
        Ok(Created::Created(Json(wall.into())))
    }

    /// Take a wall down
    ///
    /// Requires permission `walls:manage`.
    #[oai(path = "/:id", method = "delete", operation_id = "walls.delete")]
    async fn delete(&self, req: &Request, auth: Caller, id: Path<Id>) -> ApiResult<Deleted> {
        let p = auth.require(Permission::WallsManage)?;
        super::audited(&self.state, req, p, "wall.delete", &format!("wall:{}", id.0), serde_json::json!({}), |w| {
            walls::delete(w, p.scope(), &id.0)
        })?;
        Ok(Deleted::NoContent)
    }
}

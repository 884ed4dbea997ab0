//! `/org`: the caller's firm.
use super::auth::Caller;
use super::problem::{ApiError, ApiResult};
use super::types::{Optional, Text};
use crate::audit;
use crate::auth::Permission;
use crate::state::AppState;
use crate::store::orgs::{self, Org, OrgChanges};
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// The caller's firm.
    Org,
}

pub struct OrgApi {
    pub state: Arc<AppState>,
}

/// A firm.
#[derive(Object)]
#[oai(rename = "Org")]
pub struct OrgView {
    pub id: u64,
    /// Short stable name, e.g. `smith-jones`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// IANA time zone used for schedules and reports.
    pub time_zone: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<Org> for OrgView {
    fn from(o: Org) -> Self {
        OrgView { id: o.id.0, slug: o.slug, name: o.name, time_zone: o.time_zone, created_at: o.created_at }
    }
}

/// Changes to a firm; absent fields stay as they are.
#[derive(Object)]
#[oai(rename = "OrgPatch", deny_unknown_fields)]
pub struct OrgPatch {
    /// Display name, 1 to 200 characters.
    #[oai(validator(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    ))]
    pub name: Optional<Text>,
    /// IANA time zone such as `America/New_York`, or `UTC`.
    #[oai(validator(max_length = 64, pattern = r"^(UTC|[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)+)$"))]
    pub time_zone: Optional<Text>,
}

#[OpenApi(prefix_path = "/org", tag = "Tag::Org")]
impl OrgApi {
    /// The caller's firm
    ///
    /// Requires permission `org:read`.
    #[oai(path = "/", method = "get", operation_id = "org.get")]
    async fn get(&self, auth: Caller) -> ApiResult<Json<OrgView>> {
        let p = auth.require(Permission::OrgRead)?;
        Ok(Json(self.state.store.org(p.scope()).map_err(ApiError::from)?.into()))
    }

    /// Change the firm's settings
    ///
    /// Requires permission `org:write`.
    #[oai(path = "/", method = "patch", operation_id = "org.update")]
    async fn update(&self, req: &Request, auth: Caller, body: Json<OrgPatch>) -> ApiResult<Json<OrgView>> {
        let p = auth.require(Permission::OrgWrite)?;
        let changes = OrgChanges { name: body.0.name.0.map(|t| t.0), time_zone: body.0.time_zone.0.map(|t| t.0) };
        let changed: Vec<&str> = [("name", changes.name.is_some()), ("time_zone", changes.time_zone.is_some())]
            .iter()
            .filter(|c| c.1)
            .map(|c| c.0)
            .collect();
        let target = format!("org:{}", p.scope().org());
        let details = serde_json::json!({ "changed": changed });
        let org = audit::audited(
            &self.state.store,
            p.scope(),
            &super::audit_context(req),
            "org.update",
            &target,
            details,
            |w| orgs::update(w, p.scope(), &changes),
        )
        .map_err(ApiError::from)?;
        Ok(Json(org.into()))
    }
}

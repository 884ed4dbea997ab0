//! The firm's Clio data for integrators: `/matters`, `/contacts`,
//! `/activities`, `/bills`, `/users`, `/tasks`, `/calendar-entries`, `/notes`,
//! each listed with filters and cursor pages and read by id, through a
//! [`Viewer`] so ethical walls apply everywhere. Reads run on the blocking
//! pool ([`super::off_worker`]), never on an async worker.
use super::auth::Caller;
use super::page::{self, Page, PageLimit};
use super::params::{
    ActivityType, BillState, ContactType, Cursor, DateTime, Day, Flag, Id, MatterStatus, TaskStatus, opt,
};
use super::problem::{ApiError, ApiResult, Code};
use crate::auth::Permission;
use crate::data::{self, Filters, Viewer};
use crate::records::{Kind, Record};
use crate::state::AppState;
use crate::store::Store;
use crate::timestamp::Timestamp;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};
use std::sync::Arc;

#[derive(Tags)]
enum Tag {
    /// The firm's Clio data, as synced.
    Data,
}

pub struct DataApi {
    pub state: Arc<AppState>,
}

/// A record as Clio sent it, with its identity.
#[derive(Object)]
#[oai(rename = "Record", skip_serializing_if_is_none)]
pub struct RecordView {
    /// The Clio id.
    pub id: String,
    /// `matter`, `contact`, `activity`, `bill`, `user`, `task`, `calendar_entry` or `note`.
    pub kind: String,
    /// Clio's etag (with its quotes).
    pub etag: Option<String>,
    /// RFC 3339, UTC.
    pub updated_at: Option<String>,
    /// The record exactly as Clio sent it (unknown fields included).
    pub data: serde_json::Value,
}

impl From<Record> for RecordView {
    fn from(r: Record) -> Self {
        RecordView {
            id: r.id,
            kind: r.kind.as_str().into(),
            etag: r.etag,
            updated_at: r.updated_at.map(Timestamp::to_rfc3339),
            data: r.raw,
        }
    }
}

/// Cursor paging shared by every list.
pub struct Paging {
    cursor: Option<Cursor>,
    limit: usize,
    updated_since: Option<Timestamp>,
}

/// The paging of a list request.
fn paging(
    cursor: Query<Option<Cursor>>,
    limit: Query<Option<PageLimit>>,
    updated_since: Query<Option<DateTime>>,
) -> Paging {
    Paging { cursor: cursor.0, limit: page::limit(limit.0), updated_since: opt(updated_since.0) }
}

/// Runs `read` off the async workers as the caller's [`Viewer`] (`data:read`).
async fn as_viewer<R: Send + 'static>(
    state: &AppState,
    auth: &Caller,
    read: impl FnOnce(&Store, &Viewer) -> Result<R, crate::store::StoreError> + Send + 'static,
) -> ApiResult<R> {
    let principal = auth.require(Permission::DataRead)?.clone();
    super::off_worker(&state.store, move |store| {
        let viewer = Viewer::of(store, &principal)?;
        Ok(read(store, &viewer)?)
    })
    .await
}

impl DataApi {
    async fn list(
        &self,
        req: &Request,
        auth: &Caller,
        paging: Paging,
        kind: Kind,
        mut filters: Filters,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let principal = auth.require(Permission::DataRead)?;
        let context = page::Context::of(req, kind.as_str(), &principal.scope().org().to_string());
        let after = context.decode(paging.cursor)?;
        filters.updated_since = paging.updated_since;
        let page = as_viewer(&self.state, auth, move |store, viewer| {
            data::list(store, viewer, kind, &filters, after.as_deref(), paging.limit)
        })
        .await?;
        let next = page.next.map(|id| context.encode(&id));
        Ok(Json(Page::new(page.records.into_iter().map(RecordView::from).collect(), next)))
    }

    async fn get(&self, auth: &Caller, kind: Kind, id: String) -> ApiResult<Json<RecordView>> {
        let wanted = id.clone();
        let record = as_viewer(&self.state, auth, move |store, viewer| data::get(store, viewer, kind, &wanted)).await?;
        record
            .map(|r| Json(r.into()))
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("{kind} `{id}` was not found")))
    }
}

#[OpenApi(tag = "Tag::Data")]
impl DataApi {
    /// List matters
    ///
    /// Walled matters, and everything under them, are left out for the members they screen.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/matters", method = "get", operation_id = "matters.list")]
    #[allow(clippy::too_many_arguments)]
    async fn list_matter(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Records per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
        /// RFC 3339: only records updated after this.
        updated_since: Query<Option<DateTime>>,
        /// Only matters with this status.
        status: Query<Option<MatterStatus>>,
        /// The client (contact) id.
        client_id: Query<Option<Id>>,
        /// The responsible attorney (user) id.
        responsible_attorney_id: Query<Option<Id>>,
        /// Opened on or after this date.
        opened_from: Query<Option<Day>>,
        /// Opened on or before this date.
        opened_to: Query<Option<Day>>,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let filters = Filters {
            status: opt(status.0),
            client_id: opt(client_id.0),
            user_id: opt(responsible_attorney_id.0),
            from: opt(opened_from.0),
            to: opt(opened_to.0),
            ..Filters::default()
        };
        self.list(req, &auth, paging(cursor, limit, updated_since), Kind::Matter, filters).await
    }

    /// One matter
    ///
    /// 404 if it does not exist, or is walled off from the caller.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/matters/:id", method = "get", operation_id = "matters.get")]
    async fn get_matter(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<RecordView>> {
        self.get(&auth, Kind::Matter, id.0.0).await
    }

    /// List contacts
    ///
    /// Walled matters, and everything under them, are left out for the members they screen.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/contacts", method = "get", operation_id = "contacts.list")]
    #[allow(clippy::too_many_arguments)]
    async fn list_contact(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Records per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
        /// RFC 3339: only records updated after this.
        updated_since: Query<Option<DateTime>>,
        /// Only people or only companies.
        #[oai(name = "type")]
        record_type: Query<Option<ContactType>>,
        /// Only clients (true) or non-clients (false).
        is_client: Query<Option<Flag>>,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let filters = Filters { kind: opt(record_type.0), is_client: opt(is_client.0), ..Filters::default() };
        self.list(req, &auth, paging(cursor, limit, updated_since), Kind::Contact, filters).await
    }

    /// One contact
    ///
    /// 404 if it does not exist, or is walled off from the caller.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/contacts/:id", method = "get", operation_id = "contacts.get")]
    async fn get_contact(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<RecordView>> {
        self.get(&auth, Kind::Contact, id.0.0).await
    }

    /// List activities (time and expense entries)
    ///
    /// Walled matters, and everything under them, are left out for the members they screen.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/activities", method = "get", operation_id = "activities.list")]
    #[allow(clippy::too_many_arguments)]
    async fn list_activity(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Records per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
        /// RFC 3339: only records updated after this.
        updated_since: Query<Option<DateTime>>,
        /// Only activities of this type.
        #[oai(name = "type")]
        record_type: Query<Option<ActivityType>>,
        /// The matter id.
        matter_id: Query<Option<Id>>,
        /// The timekeeper (user) id.
        user_id: Query<Option<Id>>,
        /// Billed (true) or unbilled (false).
        billed: Query<Option<Flag>>,
        /// On or after this date.
        date_from: Query<Option<Day>>,
        /// On or before this date.
        date_to: Query<Option<Day>>,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let filters = Filters {
            kind: opt(record_type.0),
            matter_id: opt(matter_id.0),
            user_id: opt(user_id.0),
            billed: opt(billed.0),
            from: opt(date_from.0),
            to: opt(date_to.0),
            ..Filters::default()
        };
        self.list(req, &auth, paging(cursor, limit, updated_since), Kind::Activity, filters).await
    }

    /// One activity
    ///
    /// 404 if it does not exist, or is walled off from the caller.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/activities/:id", method = "get", operation_id = "activities.get")]
    async fn get_activity(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<RecordView>> {
        self.get(&auth, Kind::Activity, id.0.0).await
    }

    /// List bills
    ///
    /// Walled matters, and everything under them, are left out for the members they screen.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/bills", method = "get", operation_id = "bills.list")]
    #[allow(clippy::too_many_arguments)]
    async fn list_bill(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Records per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
        /// RFC 3339: only records updated after this.
        updated_since: Query<Option<DateTime>>,
        /// Only bills in this state.
        state: Query<Option<BillState>>,
        /// The client (contact) id.
        client_id: Query<Option<Id>>,
        /// The matter id.
        matter_id: Query<Option<Id>>,
        /// Issued on or after this date.
        issued_from: Query<Option<Day>>,
        /// Issued on or before this date.
        issued_to: Query<Option<Day>>,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let filters = Filters {
            status: opt(state.0),
            client_id: opt(client_id.0),
            matter_id: opt(matter_id.0),
            from: opt(issued_from.0),
            to: opt(issued_to.0),
            ..Filters::default()
        };
        self.list(req, &auth, paging(cursor, limit, updated_since), Kind::Bill, filters).await
    }

    /// One bill
    ///
    /// 404 if it does not exist, or is walled off from the caller.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/bills/:id", method = "get", operation_id = "bills.get")]
    async fn get_bill(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<RecordView>> {
        self.get(&auth, Kind::Bill, id.0.0).await
    }

    /// List users (timekeepers)
    ///
    /// Walled matters, and everything under them, are left out for the members they screen.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/users", method = "get", operation_id = "users.list")]
    #[allow(clippy::too_many_arguments)]
    async fn list_user(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Records per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
        /// RFC 3339: only records updated after this.
        updated_since: Query<Option<DateTime>>,
        /// Enabled (true) or disabled (false) users.
        enabled: Query<Option<Flag>>,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let filters = Filters { enabled: opt(enabled.0), ..Filters::default() };
        self.list(req, &auth, paging(cursor, limit, updated_since), Kind::User, filters).await
    }

    /// One user
    ///
    /// 404 if it does not exist, or is walled off from the caller.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/users/:id", method = "get", operation_id = "users.get")]
    async fn get_user(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<RecordView>> {
        self.get(&auth, Kind::User, id.0.0).await
    }

    /// List tasks
    ///
    /// Walled matters, and everything under them, are left out for the members they screen.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/tasks", method = "get", operation_id = "tasks.list")]
    #[allow(clippy::too_many_arguments)]
    async fn list_task(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Records per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
        /// RFC 3339: only records updated after this.
        updated_since: Query<Option<DateTime>>,
        /// Only tasks with this status.
        status: Query<Option<TaskStatus>>,
        /// The matter id.
        matter_id: Query<Option<Id>>,
        /// The assignee id.
        assignee_id: Query<Option<Id>>,
        /// Due on or after this date.
        due_from: Query<Option<Day>>,
        /// Due on or before this date.
        due_to: Query<Option<Day>>,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let filters = Filters {
            status: opt(status.0),
            matter_id: opt(matter_id.0),
            user_id: opt(assignee_id.0),
            from: opt(due_from.0),
            to: opt(due_to.0),
            ..Filters::default()
        };
        self.list(req, &auth, paging(cursor, limit, updated_since), Kind::Task, filters).await
    }

    /// One task
    ///
    /// 404 if it does not exist, or is walled off from the caller.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/tasks/:id", method = "get", operation_id = "tasks.get")]
    async fn get_task(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<RecordView>> {
        self.get(&auth, Kind::Task, id.0.0).await
    }

    /// List calendar entries
    ///
    /// Walled matters, and everything under them, are left out for the members they screen.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/calendar-entries", method = "get", operation_id = "calendar_entries.list")]
    #[allow(clippy::too_many_arguments)]
    async fn list_calendar_entry(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Records per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
        /// RFC 3339: only records updated after this.
        updated_since: Query<Option<DateTime>>,
        /// The matter id.
        matter_id: Query<Option<Id>>,
        /// The calendar owner (user) id.
        calendar_owner_id: Query<Option<Id>>,
        /// Starting on or after this date.
        from: Query<Option<Day>>,
        /// Starting on or before this date.
        to: Query<Option<Day>>,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let filters = Filters {
            matter_id: opt(matter_id.0),
            user_id: opt(calendar_owner_id.0),
            from: opt(from.0),
            to: opt(to.0),
            ..Filters::default()
        };
        self.list(req, &auth, paging(cursor, limit, updated_since), Kind::CalendarEntry, filters).await
    }

    /// One calendar entrie
    ///
    /// 404 if it does not exist, or is walled off from the caller.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/calendar-entries/:id", method = "get", operation_id = "calendar_entries.get")]
    async fn get_calendar_entry(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<RecordView>> {
        self.get(&auth, Kind::CalendarEntry, id.0.0).await
    }

    /// List notes
    ///
    /// Walled matters, and everything under them, are left out for the members they screen.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/notes", method = "get", operation_id = "notes.list")]
    #[allow(clippy::too_many_arguments)]
    async fn list_note(
        &self,
        req: &Request,
        auth: Caller,
        /// The `next_cursor` of the previous page; leave out for the first page.
        cursor: Query<Option<Cursor>>,
        /// Records per page, 1 to 500 (default 100).
        limit: Query<Option<PageLimit>>,
        /// RFC 3339: only records updated after this.
        updated_since: Query<Option<DateTime>>,
        /// The matter id.
        matter_id: Query<Option<Id>>,
        /// On or after this date.
        date_from: Query<Option<Day>>,
        /// On or before this date.
        date_to: Query<Option<Day>>,
    ) -> ApiResult<Json<Page<RecordView>>> {
        let filters =
            Filters { matter_id: opt(matter_id.0), from: opt(date_from.0), to: opt(date_to.0), ..Filters::default() };
        self.list(req, &auth, paging(cursor, limit, updated_since), Kind::Note, filters).await
    }

    /// One note
    ///
    /// 404 if it does not exist, or is walled off from the caller.
    ///
    /// Requires permission `data:read`.
    #[oai(path = "/notes/:id", method = "get", operation_id = "notes.get")]
    async fn get_note(&self, auth: Caller, id: Path<Id>) -> ApiResult<Json<RecordView>> {
        self.get(&auth, Kind::Note, id.0.0).await
    }
}

//! Reading the firm's records as a caller may see them: filters, cursor
//! pages, and ethical walls. Every read of Clio data (the read API, and later
//! search and export) goes through a [`Viewer`], which carries the caller's
//! org scope and [`Screen`]: a walled matter and everything under it is not
//! there for a screened member, in lists, counts and direct reads alike.
//! Besides the sync's own `clio::sync::SyncScope`, nothing else reads records.
use crate::auth::Principal;
use crate::auth::walls::{self, Screen};
use crate::records::{Kind, Record, Typed, record_key};
use crate::store::{OrgScope, RECORDS, Store, StoreError};
use crate::timestamp::Timestamp;

/// A caller's view of the records: scope plus ethical-wall screen.
pub struct Viewer {
    scope: OrgScope,
    screen: Screen,
}

impl Viewer {
    /// The view of an authenticated caller (walls apply to members).
    pub fn of(store: &Store, principal: &Principal) -> Result<Viewer, StoreError> {
        let screen = store.read(|r| walls::screen(r, principal))?;
        Ok(Viewer { scope: principal.scope().clone(), screen })
    }

    /// Whether the caller may see `record`.
    pub fn sees(&self, record: &Record) -> bool {
        !record.matters.iter().any(|m| self.screen.hides(m))
    }
}

/// Filters a list may apply; each kind uses those that make sense for it.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Only records updated after this.
    pub updated_since: Option<Timestamp>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub client_id: Option<String>,
    pub matter_id: Option<String>,
    pub user_id: Option<String>,
    pub billed: Option<bool>,
    pub is_client: Option<bool>,
    pub enabled: Option<bool>,
    /// Inclusive date (or date-time) bounds on the kind's main date.
    pub from: Option<String>,
    pub to: Option<String>,
}

fn eq(want: &Option<String>, have: Option<&str>) -> bool {
    want.as_deref().is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
}

fn eq_ref(want: &Option<String>, have: Option<&crate::records::Ref>) -> bool {
    want.as_deref().is_none_or(|w| have.is_some_and(|h| h.id == w))
}

fn flag(want: Option<bool>, have: Option<bool>) -> bool {
    want.is_none_or(|w| have == Some(w))
}

/// `date` (a date or an RFC 3339 date-time) within the inclusive bounds; dates compare by their first 10 characters.
fn within(from: &Option<String>, to: &Option<String>, date: Option<&str>) -> bool {
    if from.is_none() && to.is_none() {
        return true;
    }
    let Some(d) = date else { return false };
    let day = |s: &str| s.chars().take(10).collect::<String>();
    from.as_deref().is_none_or(|f| day(d) >= day(f)) && to.as_deref().is_none_or(|t| day(d) <= day(t))
}

impl Filters {
    fn accepts(&self, record: &Record, typed: &Typed) -> bool {
        if self.updated_since.is_some_and(|s| record.updated_at.is_none_or(|u| u <= s)) {
            return false;
        }
        match typed {
            Typed::Matter(m) => {
                eq(&self.status, m.status.as_deref())
                    && eq_ref(&self.client_id, m.client.as_ref())
                    && eq_ref(&self.user_id, m.responsible_attorney.as_ref())
                    && within(&self.from, &self.to, m.open_date.as_deref())
            }
            Typed::Contact(c) => eq(&self.kind, c.kind.as_deref()) && flag(self.is_client, c.is_client),
            Typed::Activity(a) => {
                eq(&self.kind, a.kind.as_deref())
                    && eq_ref(&self.matter_id, a.matter.as_ref())
                    && eq_ref(&self.user_id, a.user.as_ref())
                    && flag(self.billed, a.billed)
                    && within(&self.from, &self.to, a.date.as_deref())
            }
            Typed::Bill(b) => {
                eq(&self.status, b.state.as_deref())
                    && eq_ref(&self.client_id, b.client.as_ref())
                    && self.matter_id.as_deref().is_none_or(|m| record.matters.iter().any(|x| x == m))
                    && within(&self.from, &self.to, b.issued_at.as_deref())
            }
            Typed::User(u) => flag(self.enabled, u.enabled),
            Typed::Task(t) => {
                eq(&self.status, t.status.as_deref())
                    && eq_ref(&self.matter_id, t.matter.as_ref())
                    && eq_ref(&self.user_id, t.assignee.as_ref())
                    && within(&self.from, &self.to, t.due_at.as_deref())
            }
            Typed::CalendarEntry(c) => {
                eq_ref(&self.matter_id, c.matter.as_ref())
                    && eq_ref(&self.user_id, c.calendar_owner.as_ref())
                    && within(&self.from, &self.to, c.start_at.as_deref())
            }
            Typed::Note(n) => {
                eq_ref(&self.matter_id, n.matter.as_ref()) && within(&self.from, &self.to, n.date.as_deref())
            }
        }
    }
}

/// A page of records and the cursor of the next page.
pub struct Page {
    pub records: Vec<Record>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("record: {e}")))
}

/// One record the viewer may see; `None` if it does not exist or is walled off.
pub fn get(store: &Store, viewer: &Viewer, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
    let bytes = store.read(|r| r.get(&viewer.scope, &RECORDS, &record_key(kind, id)))?;
    Ok(bytes.map(|b| decode(&b)).transpose()?.filter(|r| viewer.sees(r)))
}

/// The matters a stored record belongs to, read without its body.
#[derive(serde::Deserialize)]
struct Belongs {
    #[serde(default)]
    matters: Vec<String>,
}

/// How many records of `kind` the viewer may see. Without walls on the
/// viewer the keys are counted (values not read).
pub fn count(store: &Store, viewer: &Viewer, kind: Kind) -> Result<u64, StoreError> {
    let prefix = [kind.code()];
    if viewer.screen.hidden().is_empty() {
        return store.read(|r| r.count(&viewer.scope, &RECORDS, &prefix));
    }
    let mut n = 0;
    store.read(|r| {
        r.visit(&viewer.scope, &RECORDS, &prefix, &prefix, |_, bytes| {
            let b: Belongs = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("record: {e}")))?;
            if !b.matters.iter().any(|m| viewer.screen.hides(m)) {
                n += 1;
            }
            Ok(true)
        })
    })?;
    Ok(n)
}

/// Up to `limit` records of `kind` after the record `after` (an id), in store order.
pub fn list(
    store: &Store,
    viewer: &Viewer,
    kind: Kind,
    filters: &Filters,
    after: Option<&str>,
    limit: usize,
) -> Result<Page, StoreError> {
    let prefix = record_key(kind, "");
    let mut start = after.map_or(prefix.clone(), |a| record_key(kind, a));
    if after.is_some() {
        start.push(0); // strictly after the cursor's key
    }
    let mut records = Vec::with_capacity(limit.min(1000));
    let mut more = false;
    store.read(|r| {
        r.visit(&viewer.scope, &RECORDS, &prefix, &start, |_, bytes| {
            let record = decode(bytes)?;
            if !viewer.sees(&record) {
                return Ok(true);
            }
            let Some(typed) = record.typed() else { return Ok(true) };
            if !filters.accepts(&record, &typed) {
                return Ok(true);
            }
            if records.len() == limit {
                more = true;
                return Ok(false);
            }
            records.push(record);
            Ok(true)
        })
    })?;
    let next = if more { records.last().map(|r| r.id.clone()) } else { None };
    Ok(Page { records, next })
}

//! Reading the firm's records as a caller may see them: filters, cursor
//! pages, and ethical walls. Every read of Clio data (the read API, and later
//! search and export) goes through a [`Viewer`], which carries the caller's
//! org scope and [`Screen`]: a walled matter and everything under it is not
//! there for a screened member, in lists, counts and direct reads alike.
//! Besides the sync's own `clio::sync::SyncScope`, nothing else reads records.
//!
//! Records are written only by [`put_record`] and [`delete_record`], which
//! keep the [`index`] rows of a record in the same transaction. A filtered
//! list reads candidates from the index (the values it names, intersected; or
//! a narrow date range), checks each against the wall and every filter, and
//! examines at most [`MAX_EXAMINED`] rows per page, returning a short page and
//! a `next` cursor when it runs out.
pub mod index;

use crate::auth::Principal;
use crate::auth::walls::{self, Screen};
use crate::records::{Kind, Record, Typed, record_key};
use crate::store::{OrgId, OrgScope, OrgTaskContext, RECORD_INDEX, RECORDS, ReadTx, Store, StoreError, Tx};
use crate::timestamp::Timestamp;
use index::Field;

/// A caller's view of the records: scope plus ethical-wall screen.
#[derive(Clone)]
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

    /// The view of a task acting for `org` (an export, a benchmark): no walls.
    pub fn unwalled(ctx: &OrgTaskContext, org: OrgId) -> Viewer {
        Viewer { scope: ctx.org_scope(org), screen: Screen::default() }
    }

    /// A view with `screen` (tests of what follows walls, e.g. the change feed).
    #[cfg(test)]
    pub(crate) fn screened(scope: OrgScope, screen: Screen) -> Viewer {
        Viewer { scope, screen }
    }

    /// Whether the caller may see `record`.
    pub fn sees(&self, record: &Record) -> bool {
        self.sees_matters(&record.matters)
    }

    /// Whether the caller may see what belongs to `matters` (the change feed's deletions).
    pub fn sees_all(&self, matters: &[String]) -> bool {
        self.sees_matters(matters)
    }

    /// Whether the caller may see a record belonging to `matters`.
    fn sees_matters(&self, matters: &[String]) -> bool {
        !matters.iter().any(|m| self.screen.hides(m))
    }
}

/// A calendar day (`YYYY-MM-DD`, years 0001 to 9999): the inclusive bounds
/// of a list's date filters. A day is taken in UTC: it covers the instants
/// from its midnight to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(time::Date);

/// Why a string is not a [`Date`]; the message names the expected form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("is not a calendar date between 0001-01-01 and 9999-12-31 (expected YYYY-MM-DD, e.g. 2026-01-31)")]
pub struct DateError;

impl Date {
    /// Parses `YYYY-MM-DD` (exactly four-digit years, a real month and day).
    pub fn parse(text: &str) -> Result<Date, DateError> {
        let format = time::macros::format_description!("[year repr:full sign:automatic]-[month]-[day]");
        let bytes = text.as_bytes();
        if bytes.len() != 10 || !bytes.first().is_some_and(u8::is_ascii_digit) {
            return Err(DateError);
        }
        let day = time::Date::parse(text, &format).map_err(|_| DateError)?;
        if day.year() < 1 {
            return Err(DateError);
        }
        Ok(Date(day))
    }

    /// The first instant of the day (its midnight, UTC).
    pub fn first_instant(self) -> Timestamp {
        Timestamp::from_datetime(self.0.midnight().assume_utc()).unwrap_or(Timestamp::MIN)
    }

    /// The last instant of the day (one microsecond before the next midnight, UTC).
    pub fn last_instant(self) -> Timestamp {
        self.first_instant().plus_micros(86_400_000_000 - 1)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), u8::from(self.0.month()), self.0.day())
    }
}

/// Filters a list may apply; each kind uses those that make sense for it.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Only records updated strictly after this instant.
    pub updated_since: Option<Timestamp>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub client_id: Option<String>,
    pub matter_id: Option<String>,
    pub user_id: Option<String>,
    pub billed: Option<bool>,
    pub is_client: Option<bool>,
    pub enabled: Option<bool>,
    /// Inclusive day bounds on the kind's main date.
    pub from: Option<Date>,
    pub to: Option<Date>,
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

/// `value` (a record's date or date-time) within the inclusive day bounds.
fn within(from: Option<Date>, to: Option<Date>, value: Option<&str>) -> bool {
    if from.is_none() && to.is_none() {
        return true;
    }
    let Some(at) = value.and_then(index::instant_of) else { return false };
    from.is_none_or(|f| at >= f.first_instant()) && to.is_none_or(|t| at <= t.last_instant())
}

/// Whether `updated_at` is strictly after `since`; a record without the time does not match.
fn updated_after(since: Option<Timestamp>, updated_at: Option<Timestamp>) -> bool {
    since.is_none_or(|s| updated_at.is_some_and(|u| u > s))
}

impl Filters {
    fn accepts(&self, record: &Record, typed: &Typed) -> bool {
        if !updated_after(self.updated_since, record.updated_at) {
            return false;
        }
        let within = |value: Option<&str>| within(self.from, self.to, value);
        match typed {
            Typed::Matter(m) => {
                eq(&self.status, m.status.as_deref())
                    && eq_ref(&self.client_id, m.client.as_ref())
                    && eq_ref(&self.user_id, m.responsible_attorney.as_ref())
                    && within(m.open_date.as_deref())
            }
            Typed::Contact(c) => eq(&self.kind, c.kind.as_deref()) && flag(self.is_client, c.is_client),
            Typed::Activity(a) => {
                eq(&self.kind, a.kind.as_deref())
                    && eq_ref(&self.matter_id, a.matter.as_ref())
                    && eq_ref(&self.user_id, a.user.as_ref())
                    && flag(self.billed, a.billed)
                    && within(a.date.as_deref())
            }
            Typed::Bill(b) => {
                eq(&self.status, b.state.as_deref())
                    && eq_ref(&self.client_id, b.client.as_ref())
                    && self.matter_id.as_deref().is_none_or(|m| record.matters.iter().any(|x| x == m))
                    && within(b.issued_at.as_deref())
            }
            Typed::User(u) => flag(self.enabled, u.enabled),
            Typed::Task(t) => {
                eq(&self.status, t.status.as_deref())
                    && eq_ref(&self.matter_id, t.matter.as_ref())
                    && eq_ref(&self.user_id, t.assignee.as_ref())
                    && within(t.due_at.as_deref())
            }
            Typed::CalendarEntry(c) => {
                eq_ref(&self.matter_id, c.matter.as_ref())
                    && eq_ref(&self.user_id, c.calendar_owner.as_ref())
                    && within(c.start_at.as_deref())
            }
            Typed::Note(n) => eq_ref(&self.matter_id, n.matter.as_ref()) && within(n.date.as_deref()),
        }
    }
}

/// The most rows one page examines (index rows and records read) before it
/// returns what it has, with a `next` cursor to continue from: a page may be
/// short, even empty, but it is never wrong and its cost is bounded.
pub const MAX_EXAMINED: u64 = 10_000;

/// A date or `updated_since` range is read through the index when it holds
/// at most this many rows (they are read and put in id order); a wider one
/// is dense enough for the id-order scan.
const RANGE_ROWS: u64 = MAX_EXAMINED / 2;

/// A page of records and the cursor of the next page.
pub struct Page {
    pub records: Vec<Record>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
    /// Rows read to answer (index rows and records): what the page cost.
    pub examined: u64,
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

/// How many records of `kind` the viewer may see, in the snapshot `r`.
/// Without walls on the viewer the keys are counted (values not read).
pub fn count(r: &ReadTx, viewer: &Viewer, kind: Kind) -> Result<u64, StoreError> {
    let prefix = [kind.code()];
    if viewer.screen.hidden().is_empty() {
        return r.count(&viewer.scope, &RECORDS, &prefix);
    }
    let mut n = 0;
    r.visit(&viewer.scope, &RECORDS, &prefix, &prefix, |_, bytes| {
        let b: Belongs = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("record: {e}")))?;
        if viewer.sees_matters(&b.matters) {
            n += 1;
        }
        Ok(true)
    })?;
    Ok(n)
}

/// Stores `record` and its index rows in `w`: the one way a record is written
/// (the sync's pages, webhooks), so the index always matches the records.
pub fn put_record(w: &mut Tx, scope: &OrgScope, record: &Record) -> Result<(), StoreError> {
    let key = record_key(record.kind, &record.id);
    // An unreadable old row has no rows we can name; its stale ones (if any) are
    // candidates that the filters then refuse, never wrong results.
    let before = w.get(scope, &RECORDS, &key)?.and_then(|b| decode(&b).ok()).map(|r| index::entries(&r));
    let before = before.unwrap_or_default();
    let after = index::entries(record);
    for gone in before.difference(&after) {
        w.delete(scope, &RECORD_INDEX, gone)?;
    }
    for new in after.difference(&before) {
        w.put(scope, &RECORD_INDEX, new, b"")?;
    }
    w.put_json(scope, &RECORDS, &key, record)
}

/// Removes a record and its index rows in `w`; whether the record existed.
pub fn delete_record(w: &mut Tx, scope: &OrgScope, kind: Kind, id: &str) -> Result<bool, StoreError> {
    delete_record_at(w, scope, &record_key(kind, id))
}

/// [`delete_record`] by the record's key (a purge walks keys, not ids).
pub fn delete_record_at(w: &mut Tx, scope: &OrgScope, key: &[u8]) -> Result<bool, StoreError> {
    let Some(bytes) = w.get(scope, &RECORDS, key)? else { return Ok(false) };
    for row in decode(&bytes).map(|r| index::entries(&r)).unwrap_or_default() {
        w.delete(scope, &RECORD_INDEX, &row)?;
    }
    w.delete(scope, &RECORDS, key)
}

/// Rows read per step of a rebuild (memory stays flat however large the org).
const REBUILD_CHUNK: usize = 1024;

/// Rebuilds one org's record index from its records in `w`: removes the org's
/// index rows, then writes every record's. Returns how many records it read.
/// (The schema 3 migration runs it once per org; it is idempotent.)
pub fn rebuild_index(w: &mut Tx, scope: &OrgScope) -> Result<u64, StoreError> {
    loop {
        let rows = w.scan_chunk(scope, &RECORD_INDEX, &[], &[], REBUILD_CHUNK)?;
        if rows.is_empty() {
            break;
        }
        for (key, _) in rows {
            w.delete(scope, &RECORD_INDEX, &key)?;
        }
    }
    let (mut start, mut read) = (vec![], 0);
    loop {
        let rows = w.scan_chunk(scope, &RECORDS, &[], &start, REBUILD_CHUNK)?;
        let Some((last, _)) = rows.last() else { break };
        start = [last.as_slice(), &[0]].concat();
        for (_, bytes) in &rows {
            read += 1;
            for row in decode(bytes).map(|r| index::entries(&r)).unwrap_or_default() {
                w.put(scope, &RECORD_INDEX, &row, b"")?;
            }
        }
    }
    Ok(read)
}

/// What a filter asks of one indexed field.
enum Want {
    /// Rows with this normalised value.
    Value(Vec<u8>),
    /// Rows whose instant is within these inclusive bounds.
    Range(Timestamp, Timestamp),
}

impl Filters {
    /// What the filters ask of `field`, normalised as [`index::entries`] keeps it.
    fn want(&self, field: Field) -> Option<Want> {
        let id = |v: &Option<String>| v.as_deref().map(|s| Want::Value(s.as_bytes().to_vec()));
        let text = |v: &Option<String>| v.as_deref().map(|s| Want::Value(index::text(s)));
        let flag = |v: Option<bool>| v.map(|b| Want::Value(index::flag(b)));
        match field {
            Field::Status => text(&self.status),
            Field::Type => text(&self.kind),
            Field::Client => id(&self.client_id),
            Field::Matter => id(&self.matter_id),
            Field::User => id(&self.user_id),
            Field::Billed => flag(self.billed),
            Field::IsClient => flag(self.is_client),
            Field::Enabled => flag(self.enabled),
            Field::Date => (self.from.is_some() || self.to.is_some()).then(|| {
                Want::Range(
                    self.from.map_or(Timestamp::MIN, Date::first_instant),
                    self.to.map_or(Timestamp::MAX, Date::last_instant),
                )
            }),
            // Strictly after: the next microsecond on.
            Field::Updated => self.updated_since.map(|s| Want::Range(s.plus_micros(1), Timestamp::MAX)),
        }
    }
}

/// Where a page's candidates come from.
enum Plan {
    /// Every record of the kind, in id order.
    Scan,
    /// The records in every one of these index value prefixes (intersected, in id order).
    Values(Vec<Vec<u8>>),
    /// These record ids (from a narrow range), sorted.
    Ids(Vec<Vec<u8>>),
}

/// Builds one page: checks each candidate against the wall and the filters,
/// and stops at `limit` (plus one, to know there is more) or at the cap.
struct Collector<'a> {
    viewer: &'a Viewer,
    filters: &'a Filters,
    limit: usize,
    cap: u64,
    examined: u64,
    records: Vec<Record>,
    next: Option<String>,
}

impl Collector<'_> {
    fn spent(&self) -> bool {
        self.examined >= self.cap
    }

    /// Examines candidate `id` (its stored row, if any); false when the page is done.
    fn offer(&mut self, id: &[u8], row: Option<&[u8]>) -> Result<bool, StoreError> {
        self.examined += 1;
        if let Some(bytes) = row {
            let record = decode(bytes)?;
            let matches =
                self.viewer.sees(&record) && record.typed().is_some_and(|typed| self.filters.accepts(&record, &typed));
            if matches {
                if self.records.len() == self.limit {
                    self.next = self.records.last().map(|r| r.id.clone());
                    return Ok(false);
                }
                self.records.push(record);
            }
        }
        if self.spent() {
            // Everything up to `id` is decided: the next page starts after it.
            self.next = Some(String::from_utf8_lossy(id).into_owned());
            return Ok(false);
        }
        Ok(true)
    }

    fn page(self) -> Page {
        Page { records: self.records, next: self.next, examined: self.examined }
    }
}

/// Chooses where the candidates come from: the index rows of every value the
/// filters name (intersected), else a narrow date or `updated_since` range,
/// else the scan. Reading a range counts toward the page's cost.
fn plan(r: &ReadTx, scope: &OrgScope, kind: Kind, filters: &Filters, c: &mut Collector) -> Result<Plan, StoreError> {
    let (mut values, mut ranges) = (vec![], vec![]);
    for &field in index::fields(kind) {
        match filters.want(field) {
            Some(Want::Value(v)) => values.push(index::value_prefix(kind, field, &v)),
            Some(Want::Range(from, to)) => ranges.push((field, from, to)),
            None => {}
        }
    }
    if !values.is_empty() {
        return Ok(Plan::Values(values));
    }
    // Two ranges share the budget, so planning never costs more than one would.
    let most = RANGE_ROWS / ranges.len().max(1) as u64;
    for (field, from, to) in ranges {
        if let Some(ids) = ids_in_range(r, scope, kind, field, (from, to), most, c)? {
            return Ok(Plan::Ids(ids));
        }
    }
    Ok(Plan::Scan)
}

/// The ids of the records of `kind` whose `field` is within `bounds`, in id
/// order, when there are at most `most` of them.
fn ids_in_range(
    r: &ReadTx,
    scope: &OrgScope,
    kind: Kind,
    field: Field,
    (from, to): (Timestamp, Timestamp),
    most: u64,
    c: &mut Collector,
) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
    let (prefix, last) = (index::field_prefix(kind, field), index::instant_bytes(to));
    let mut ids = vec![];
    let mut narrow = true;
    r.visit(scope, &RECORD_INDEX, &prefix, &index::instant_prefix(kind, field, from), |key, _| {
        if index::instant_row_at(key).is_none_or(|at| at > last) {
            return Ok(false);
        }
        c.examined += 1;
        if ids.len() as u64 == most {
            narrow = false;
            return Ok(false);
        }
        ids.extend(index::instant_row_id(key).map(<[u8]>::to_vec));
        Ok(true)
    })?;
    ids.sort_unstable();
    Ok(narrow.then_some(ids))
}

/// The record key of `kind` and a raw id.
fn key_of(kind: Kind, id: &[u8]) -> Vec<u8> {
    [&[kind.code()], id].concat()
}

/// The first id at or after `from` in the index rows under `prefix`.
fn first_id(r: &ReadTx, scope: &OrgScope, prefix: &[u8], from: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let mut found = None;
    r.visit(scope, &RECORD_INDEX, prefix, &[prefix, from].concat(), |key, _| {
        found = key.get(prefix.len()..).map(<[u8]>::to_vec);
        Ok(false)
    })?;
    Ok(found)
}

/// Offers the candidates of `plan` from `start` (an id, inclusive) on, until the page is done.
fn run(
    r: &ReadTx,
    scope: &OrgScope,
    kind: Kind,
    plan: Plan,
    start: &[u8],
    c: &mut Collector,
) -> Result<(), StoreError> {
    match plan {
        Plan::Scan => {
            let prefix = [kind.code()];
            r.visit(scope, &RECORDS, &prefix, &key_of(kind, start), |key, row| c.offer(&key[1..], Some(row)))
        }
        Plan::Ids(ids) => {
            for id in ids.iter().filter(|id| id.as_slice() >= start) {
                if !c.offer(id, r.get(scope, &RECORDS, &key_of(kind, id))?.as_deref())? {
                    break;
                }
            }
            Ok(())
        }
        Plan::Values(prefixes) => match prefixes.as_slice() {
            [one] => r.visit(scope, &RECORD_INDEX, one, &[one.as_slice(), start].concat(), |key, _| {
                let id = &key[one.len()..];
                c.offer(id, r.get(scope, &RECORDS, &key_of(kind, id))?.as_deref())
            }),
            many => intersect(r, scope, kind, many, start, c),
        },
    }
}

/// Offers the ids present under every prefix, in id order (a leapfrog join:
/// each prefix is sought to the greatest id seen so far until all agree).
/// When the budget runs out mid-way, the id reached is read and checked whole,
/// so the cursor after it is exact.
fn intersect(
    r: &ReadTx,
    scope: &OrgScope,
    kind: Kind,
    prefixes: &[Vec<u8>],
    start: &[u8],
    c: &mut Collector,
) -> Result<(), StoreError> {
    let mut target = start.to_vec();
    loop {
        let mut agreed = true;
        for prefix in prefixes {
            c.examined += 1;
            let Some(id) = first_id(r, scope, prefix, &target)? else { return Ok(()) };
            if id != target {
                (target, agreed) = (id, false);
                break;
            }
        }
        if agreed || c.spent() {
            if !c.offer(&target, r.get(scope, &RECORDS, &key_of(kind, &target))?.as_deref())? {
                return Ok(());
            }
            target.push(0);
        }
    }
}

/// Up to `limit` records of `kind` after the record `after` (an id), in id
/// order, read through the record index (see [`MAX_EXAMINED`] for the bound).
pub fn list(
    store: &Store,
    viewer: &Viewer,
    kind: Kind,
    filters: &Filters,
    after: Option<&str>,
    limit: usize,
) -> Result<Page, StoreError> {
    page(store, viewer, Ask { kind, filters, after, limit }, Some(MAX_EXAMINED))
}

/// The first `limit` records of the list by a full scan of the kind, without
/// the bound: the reference the planned [`list`] is tested and benchmarked against.
pub fn list_by_scan(
    store: &Store,
    viewer: &Viewer,
    kind: Kind,
    filters: &Filters,
    limit: usize,
) -> Result<Page, StoreError> {
    page(store, viewer, Ask { kind, filters, after: None, limit }, None)
}

/// What a list asks for: a kind, filters, the cursor and the page size.
struct Ask<'a> {
    kind: Kind,
    filters: &'a Filters,
    after: Option<&'a str>,
    limit: usize,
}

/// A planned page examining at most `cap` rows, or (`None`) the unbounded scan.
fn page(store: &Store, viewer: &Viewer, ask: Ask, cap: Option<u64>) -> Result<Page, StoreError> {
    let Ask { kind, filters, after, limit } = ask;
    // Strictly after the cursor: its id followed by the smallest byte.
    let start = after.map(|a| [a.as_bytes(), &[0]].concat()).unwrap_or_default();
    let mut c =
        Collector { viewer, filters, limit, cap: cap.unwrap_or(u64::MAX), examined: 0, records: vec![], next: None };
    store.read(|r| {
        let plan = if cap.is_some() { plan(r, &viewer.scope, kind, filters, &mut c)? } else { Plan::Scan };
        run(r, &viewer.scope, kind, plan, &start, &mut c)
    })?;
    Ok(c.page())
}

/// The org and the matters hidden from the viewer: what search turns into
/// clauses inside its query (another org's index is never opened; hidden
/// matters become must-not clauses), so totals and facets stay true.
impl Viewer {
    pub fn org(&self) -> crate::store::OrgId {
        self.scope.org()
    }

    pub fn hidden_matters(&self) -> &std::collections::BTreeSet<String> {
        self.screen.hidden()
    }
}

/// Visits every record of one org in the snapshot `r` (the search indexer's
/// rebuild, with the snapshot's journal head); stops when `visit` returns false.
pub fn visit_records(
    r: &ReadTx,
    scope: &OrgScope,
    mut visit: impl FnMut(Record) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    r.visit(scope, &RECORDS, &[], &[], |key, bytes| match decode(bytes) {
        Ok(record) => visit(record),
        Err(e) => {
            unreadable(key, &e);
            Ok(true)
        }
    })
}

/// Visits the records of `kind` the viewer may see in the snapshot `r`, in id
/// order, one at a time (an export streams them); stops when `visit` returns false.
pub fn visit_seen(
    r: &ReadTx,
    viewer: &Viewer,
    kind: Kind,
    mut visit: impl FnMut(Record) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let prefix = [kind.code()];
    r.visit(&viewer.scope, &RECORDS, &prefix, &prefix, |key, bytes| match decode(bytes) {
        Ok(record) if viewer.sees(&record) => visit(record),
        Ok(_) => Ok(true),
        Err(e) => {
            unreadable(key, &e);
            Ok(true)
        }
    })
}

/// Erasure (`lifecycle::erase`, and the ledger at restore): deletes `scope`'s
/// records that docket stored at or before `through` (microseconds; a record
/// without a stored time is older), in transactions of `page` records, and
/// redacts the live journal entries that held them. Returns (records
/// deleted, journal entries redacted).
pub fn erase_stored_through(
    store: &Store,
    ctx: &OrgTaskContext,
    scope: &OrgScope,
    through: i64,
    page: usize,
) -> Result<(u64, u64), StoreError> {
    let mut deleted = 0;
    let mut after: Vec<u8> = vec![];
    loop {
        let keys = store.read(|r| {
            let mut keys = vec![];
            let start = [after.as_slice(), &[0]].concat();
            r.visit(scope, &RECORDS, &[], if after.is_empty() { &[] } else { &start }, |key, bytes| {
                let old = decode(bytes).map_or(true, |rec| rec.stored_at.is_none_or(|t| t.micros() <= through));
                if old {
                    keys.push(key.to_vec());
                }
                after = key.to_vec();
                Ok(keys.len() < page)
            })?;
            Ok(keys)
        })?;
        if keys.is_empty() {
            break;
        }
        deleted += store.write(|w| {
            let mut n = 0;
            for key in &keys {
                n += u64::from(delete_record_at(w, scope, key)?);
            }
            Ok(n)
        })?;
    }
    let redacted = store.redact_journal(ctx, scope.org(), &[&RECORDS, &RECORD_INDEX], through)?;
    Ok((deleted, redacted))
}

/// A record row that does not decode is left out of what follows the
/// records (search): logged, never the reason everything else stops.
fn unreadable(key: &[u8], e: &StoreError) {
    tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "a stored record cannot be read; it is left out of search");
}

/// How many records of every kind one org has in the snapshot `r` (keys only).
pub fn count_records(r: &ReadTx, scope: &OrgScope) -> Result<u64, StoreError> {
    r.count(scope, &RECORDS, &[])
}

/// A journaled change to a record: what the search indexer applies.
#[derive(Debug)]
pub enum RecordChange {
    /// The record as stored now.
    Put(Box<Record>),
    /// The record of this kind and id is gone (deleted or purged).
    Delete(Kind, String),
}

/// The record change a journal entry carries, if it is one: `None` for rows
/// of other tables. A put whose row cannot be read is logged and taken as a
/// delete, so no stale document outlives it and indexing goes on.
pub fn record_change(entry: &crate::store::journal::Entry) -> Option<RecordChange> {
    if entry.table != RECORDS.name() {
        return None;
    }
    let body = entry.key.get(8..)?;
    let (&code, id) = body.split_first()?;
    let kind = Kind::ALL.into_iter().find(|k| k.code() == code)?;
    let gone = || RecordChange::Delete(kind, String::from_utf8_lossy(id).into_owned());
    Some(match &entry.op {
        crate::store::journal::Op::Put(bytes) => match decode(bytes) {
            Ok(record) => RecordChange::Put(Box::new(record)),
            Err(e) => {
                unreadable(body, &e);
                gone()
            }
        },
        crate::store::journal::Op::Delete => gone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Option<Date> {
        Some(Date::parse(s).unwrap())
    }

    #[test]
    fn day_bounds_compare_instants_of_any_offset() {
        let (from, to) = (day("2026-01-31"), day("2026-01-31"));
        assert!(within(from, to, Some("2026-01-31")));
        assert!(within(from, to, Some("2026-01-31T23:59:59Z")));
        assert!(within(from, to, Some("2026-01-31T18:00:00-05:00")), "23:00 UTC is on the day");
        assert!(!within(from, to, Some("2026-01-31T20:00:00-05:00")), "01:00 UTC the next day is not");
        assert!(!within(from, to, Some("2026-02-01")));
        assert!(!within(from, None, Some("not a date")), "an unparseable record time matches no bound");
        assert!(within(None, None, None));
        assert!(within(day("0001-01-01"), day("9999-12-31"), Some("9999-12-31T23:59:59.999999Z")));
    }

    #[test]
    fn updated_since_is_strictly_after_as_instants() {
        let since = Timestamp::parse("2026-01-31T10:00:00-05:00").ok();
        let at = |s: &str| Timestamp::parse(s).ok();
        assert!(!updated_after(since, at("2026-01-31T15:00:00Z")), "the same instant is not after");
        assert!(updated_after(since, at("2026-01-31T10:00:00.000001-05:00")), "instants, whatever the offset");
        assert!(!updated_after(since, None));
        assert!(updated_after(None, None));
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        for bad in ["0000-00-00", "2023-02-29", "2026-1-1", "-001-01-01", "", "2026-01-01T00:00:00Z"] {
            assert_eq!(Date::parse(bad), Err(DateError), "{bad:?}");
        }
        assert_eq!(day("0001-01-01").unwrap().first_instant(), Timestamp::MIN);
        assert_eq!(day("9999-12-31").unwrap().last_instant(), Timestamp::MAX);
    }

    mod planned {
        //! The planned list against the full scan (the oracle), and its cost.
        use super::super::*;
        use crate::auth::walls::{NewWall, create, screen_for};
        use crate::clock::Clock;
        use crate::store::OrgTask;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        const KINDS: [Kind; 8] = Kind::ALL;
        const STATUSES: [&str; 4] = ["Open", "open", "Closed", "Pending"];
        const DATES: [&str; 6] =
            ["2026-01-30", "2026-01-31", "2026-01-31T23:30:00-05:00", "2026-02-01", "2026-01-31T00:00:00Z", "soon"];
        const DAYS: [&str; 3] = ["2026-01-30", "2026-01-31", "2026-02-01"];
        const UPDATED: [i64; 4] = [1_000_000, 2_000_000, 2_000_001, 3_000_000];

        /// One record's fields, each drawn from a small domain so filters hit.
        #[derive(Clone, Debug)]
        struct Spec {
            kind: usize,
            id: u8,
            delete: bool,
            status: Option<usize>,
            client: Option<u8>,
            matter: Option<u8>,
            second_matter: Option<u8>,
            user: Option<u8>,
            flag: Option<bool>,
            date: Option<usize>,
            updated: Option<usize>,
        }

        fn spec() -> impl Strategy<Value = Spec> {
            let parts = (0..8usize, 0..14u8, proptest::bool::weighted(0.15), proptest::option::of(0..4usize));
            let refs = (proptest::option::of(0..3u8), proptest::option::of(0..4u8), proptest::option::of(0..4u8));
            let rest = (proptest::option::of(0..3u8), proptest::option::of(any::<bool>()));
            let times = (proptest::option::of(0..6usize), proptest::option::of(0..4usize));
            (parts, refs, rest, times).prop_map(
                |((kind, id, delete, status), (client, matter, second_matter), (user, flag), (date, updated))| Spec {
                    kind,
                    id,
                    delete,
                    status,
                    client,
                    matter,
                    second_matter,
                    user,
                    flag,
                    date,
                    updated,
                },
            )
        }

        fn reference(id: Option<u8>) -> Value {
            id.map_or(Value::Null, |id| json!({"id": id}))
        }

        fn record(s: &Spec) -> Record {
            let status = s.status.map(|i| STATUSES[i]);
            let date = s.date.map(|i| DATES[i]);
            let matters: Vec<Value> =
                [s.matter, s.second_matter].into_iter().flatten().map(|m| json!({"id": m})).collect();
            let raw = json!({
                "id": s.id, "status": status, "state": status, "type": status,
                "updated_at": s.updated.map(|i| Timestamp::from_micros(UPDATED[i]).to_rfc3339()),
                "client": reference(s.client), "matter": reference(s.matter), "matters": matters,
                "responsible_attorney": reference(s.user), "user": reference(s.user),
                "assignee": reference(s.user), "calendar_owner": reference(s.user),
                "billed": s.flag, "is_client": s.flag, "enabled": s.flag,
                "open_date": date, "date": date, "issued_at": date, "due_at": date, "start_at": date,
            });
            Record::from_clio(KINDS[s.kind], raw).unwrap()
        }

        fn filters() -> impl Strategy<Value = Filters> {
            let text = || proptest::option::of(proptest::sample::select(vec!["OPEN", "closed", "Pending", "none"]));
            let id = || proptest::option::of((0..4u8).prop_map(|i| i.to_string()));
            let flag = || proptest::option::of(any::<bool>());
            let day =
                || proptest::option::of(proptest::sample::select(DAYS.to_vec()).prop_map(|d| Date::parse(d).unwrap()));
            let since =
                proptest::option::of(proptest::sample::select(UPDATED.to_vec()).prop_map(Timestamp::from_micros));
            ((text(), text(), id(), id(), id()), (flag(), flag(), flag()), (day(), day(), since)).prop_map(
                |(
                    (status, kind, client_id, matter_id, user_id),
                    (billed, is_client, enabled),
                    (from, to, updated_since),
                )| {
                    Filters {
                        updated_since,
                        status: status.map(str::to_string),
                        kind: kind.map(str::to_string),
                        client_id,
                        matter_id,
                        user_id,
                        billed,
                        is_client,
                        enabled,
                        from,
                        to,
                    }
                },
            )
        }

        fn firm(specs: &[Spec]) -> (tempfile::TempDir, Store, OrgScope) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("docket.redb"), Clock::system()).unwrap();
            let scope = OrgTaskContext::new(OrgTask::Test).org_scope(OrgId(7));
            for chunk in specs.chunks(5) {
                store
                    .write(|w| {
                        for s in chunk {
                            if s.delete {
                                delete_record(w, &scope, KINDS[s.kind], &s.id.to_string())?;
                            } else {
                                put_record(w, &scope, &record(s))?;
                            }
                        }
                        Ok(())
                    })
                    .unwrap();
            }
            (dir, store, scope)
        }

        /// Every page of a planned list, followed to its end.
        fn all_pages(store: &Store, viewer: &Viewer, kind: Kind, f: &Filters, limit: usize, cap: u64) -> Vec<String> {
            let (mut ids, mut after) = (vec![], None::<String>);
            for _ in 0..1000 {
                let p =
                    page(store, viewer, Ask { kind, filters: f, after: after.as_deref(), limit }, Some(cap)).unwrap();
                assert!(p.examined <= cap + 2 * 4, "a page examines about its cap at most: {}", p.examined);
                ids.extend(p.records.iter().map(|r| r.id.clone()));
                match p.next {
                    Some(next) => after = Some(next),
                    None => return ids,
                }
            }
            panic!("the pages never ended")
        }

        fn ids(p: Page) -> Vec<String> {
            p.records.into_iter().map(|r| r.id).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
            #[test]
            fn planned_pages_equal_the_full_scan(
                specs in proptest::collection::vec(spec(), 0..60),
                f in filters(),
                limit in 1..6usize,
                cap in prop_oneof![2..12u64, Just(MAX_EXAMINED)],
                walled in any::<bool>(),
            ) {
                let (_dir, store, scope) = firm(&specs);
                let viewer = if walled {
                    let wall = NewWall { matter_id: "2".into(), users: vec![], groups: vec!["g".into()], reason: String::new() };
                    store.write(|w| create(w, &scope, &wall)).unwrap();
                    let screen = store.read(|r| screen_for(r, &scope, "someone", &["g".into()])).unwrap();
                    Viewer { scope: scope.clone(), screen }
                } else {
                    Viewer::unwalled(&OrgTaskContext::new(OrgTask::Test), OrgId(7))
                };
                for kind in KINDS {
                    let oracle = ids(list_by_scan(&store, &viewer, kind, &f, usize::MAX).unwrap());
                    prop_assert_eq!(all_pages(&store, &viewer, kind, &f, limit, cap), oracle, "{} {:?}", kind, f);
                }
            }
        }

        #[test]
        fn a_selective_filter_examines_its_matches_not_the_kind() {
            let specs: Vec<Spec> = (0..600u16)
                .map(|i| Spec {
                    kind: 2, // matters
                    id: 0,
                    delete: false,
                    status: Some(usize::from(i % 3 != 0) * 2),
                    client: Some(u8::from(i % 100 == 0)),
                    matter: None,
                    second_matter: None,
                    user: Some((i % 3) as u8),
                    flag: None,
                    date: Some(usize::from(i % 150 == 0)),
                    updated: None,
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("docket.redb"), Clock::system()).unwrap();
            let scope = OrgTaskContext::new(OrgTask::Test).org_scope(OrgId(7));
            store
                .write(|w| {
                    for (i, s) in specs.iter().enumerate() {
                        let mut r = record(s);
                        r.id = format!("{i:04}");
                        put_record(w, &scope, &r)?;
                    }
                    Ok(())
                })
                .unwrap();
            let viewer = Viewer::unwalled(&OrgTaskContext::new(OrgTask::Test), OrgId(7));
            let one_client = Filters { client_id: Some("1".into()), ..Filters::default() };
            let p = list(&store, &viewer, Kind::Matter, &one_client, None, 100).unwrap();
            assert_eq!(p.records.len(), 6);
            assert!(p.examined <= 6, "index rows are read with their records: {}", p.examined);
            let scanned = list_by_scan(&store, &viewer, Kind::Matter, &one_client, 100).unwrap();
            assert_eq!(scanned.examined, 600, "the scan reads every matter");

            // Two values intersected: client 1 and user 0 (every 300th matter).
            let both = Filters { user_id: Some("0".into()), ..one_client.clone() };
            let p = list(&store, &viewer, Kind::Matter, &both, None, 100).unwrap();
            assert_eq!(ids(p), ["0000", "0300"]);

            // A narrow date range: four matters opened on 2026-01-31.
            let day = Filters {
                from: Date::parse("2026-01-31").ok(),
                to: Date::parse("2026-01-31").ok(),
                ..Filters::default()
            };
            let p = list(&store, &viewer, Kind::Matter, &day, None, 100).unwrap();
            assert_eq!(p.records.len(), 4);
            assert!(p.examined <= 8, "{}", p.examined);

            // The cap: a page stops at it with a cursor, short but right.
            let closed = Filters { status: Some("closed".into()), ..Filters::default() };
            let p =
                page(&store, &viewer, Ask { kind: Kind::Matter, filters: &closed, after: None, limit: 100 }, Some(50))
                    .unwrap();
            assert_eq!((p.examined, p.records.len()), (50, 50));
            let p = page(
                &store,
                &viewer,
                Ask { kind: Kind::Matter, filters: &Filters::default(), after: None, limit: 1000 },
                Some(40),
            )
            .unwrap();
            assert_eq!((p.examined, p.records.len(), p.next.as_deref()), (40, 40, Some("0039")));
        }
    }
}

//! Reading the firm's records as a caller may see them: filters, cursor
//! pages, and ethical walls. Every read of Clio data (the read API, and later
//! search and export) goes through a [`Viewer`], which carries the caller's
//! org scope and [`Screen`]: a walled matter and everything under it is not
//! there for a screened member, in lists, counts and direct reads alike.
//! Besides the sync's own `clio::sync::SyncScope`, nothing else reads records.
use crate::auth::Principal;
use crate::auth::walls::{self, Screen};
use crate::records::{Kind, Record, Typed, record_key};
use crate::store::{OrgScope, RECORDS, ReadTx, Store, StoreError};
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
        self.sees_matters(&record.matters)
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

/// A record's date or date-time as an instant: a plain date is its first
/// instant (UTC), a date-time is parsed with [`Timestamp::parse`]. `None`
/// when it is neither, and such a record matches no bound.
fn instant_of(value: &str) -> Option<Timestamp> {
    Timestamp::parse(value).ok().or_else(|| Date::parse(value.trim()).ok().map(Date::first_instant))
}

/// `value` (a record's date or date-time) within the inclusive day bounds.
fn within(from: Option<Date>, to: Option<Date>, value: Option<&str>) -> bool {
    if from.is_none() && to.is_none() {
        return true;
    }
    let Some(at) = value.and_then(instant_of) else { return false };
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
    r.visit(scope, &RECORDS, &[], &[], |_, bytes| visit(decode(bytes)?))
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
/// of other tables; an entry whose row cannot be read is an error.
pub fn record_change(entry: &crate::store::journal::Entry) -> Option<Result<RecordChange, StoreError>> {
    if entry.table != RECORDS.name() {
        return None;
    }
    let body = entry.key.get(8..)?;
    let (&code, id) = body.split_first()?;
    let kind = Kind::ALL.into_iter().find(|k| k.code() == code)?;
    Some(match &entry.op {
        crate::store::journal::Op::Put(bytes) => decode(bytes).map(|r| RecordChange::Put(Box::new(r))),
        crate::store::journal::Op::Delete => Ok(RecordChange::Delete(kind, String::from_utf8_lossy(id).into_owned())),
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
}

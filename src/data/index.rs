//! The record index: the secondary-index rows of the `records` table that let
//! a filtered list read only the records that can match.
//!
//! Each row of `record_index` (a tenant table, so keyed under the org) is one
//! (field, value) of one record, with an empty value:
//!
//! ```text
//! kind code | field code | value | record id
//! ```
//!
//! - **Equality fields** (status, type, client, matter, user, flags): the value
//!   is `length (u16 BE) | bytes`, normalised as `data::list` compares them
//!   (status and type ASCII-lowercased, ids exact, flags `0`/`1`). All rows of
//!   one (kind, field, value) share a prefix and follow in record-key order,
//!   the order of list pages and of their `after` cursor.
//! - **Instant fields** (the kind's main date, `updated_at`): the value is the
//!   instant as 8 order-preserving bytes, so a date range is one key range.
//!
//! [`entries`] is a pure function of a record: `data::put_record` and
//! `data::delete_record` write a record's rows and its entries in the same
//! transaction, and the schema 3 migration derives them for stored records.
use crate::records::{Kind, Record, Ref, Typed};
use crate::timestamp::Timestamp;
use std::collections::BTreeSet;

/// An indexed field; its code is stored in keys, so codes are fixed for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// Matter, bill (`state`) and task status; case-insensitive.
    Status,
    /// Contact and activity `type`; case-insensitive.
    Type,
    Client,
    Matter,
    User,
    Billed,
    IsClient,
    Enabled,
    /// The kind's main date (open date, activity date, issue date, due date…), as an instant.
    Date,
    /// `updated_at`, as an instant.
    Updated,
}

impl Field {
    pub const fn code(self) -> u8 {
        match self {
            Field::Status => 1,
            Field::Type => 2,
            Field::Client => 3,
            Field::Matter => 4,
            Field::User => 5,
            Field::Billed => 6,
            Field::IsClient => 7,
            Field::Enabled => 8,
            Field::Date => 9,
            Field::Updated => 10,
        }
    }

    /// Whether the field is an instant (range scans) rather than a value (prefix scans).
    pub const fn is_instant(self) -> bool {
        matches!(self, Field::Date | Field::Updated)
    }
}

/// The fields `data::list` filters `kind` on, all of them indexed.
pub fn fields(kind: Kind) -> &'static [Field] {
    use Field::*;
    match kind {
        Kind::Matter => &[Status, Client, User, Date, Updated],
        Kind::Contact => &[Type, IsClient, Updated],
        Kind::Activity => &[Type, Matter, User, Billed, Date, Updated],
        Kind::Bill => &[Status, Client, Matter, Date, Updated],
        Kind::User => &[Enabled, Updated],
        Kind::Task => &[Status, Matter, User, Date, Updated],
        Kind::CalendarEntry => &[Matter, User, Date, Updated],
        Kind::Note => &[Matter, Date, Updated],
    }
}

/// A case-insensitive text as the index keeps it.
pub fn text(value: &str) -> Vec<u8> {
    value.to_ascii_lowercase().into_bytes()
}

/// A flag as the index keeps it.
pub fn flag(value: bool) -> Vec<u8> {
    vec![if value { b'1' } else { b'0' }]
}

/// The prefix of every row of one field of `kind`.
pub fn field_prefix(kind: Kind, field: Field) -> Vec<u8> {
    vec![kind.code(), field.code()]
}

/// The prefix of the rows of one (kind, equality field, normalised value):
/// what follows it is a record id.
pub fn value_prefix(kind: Kind, field: Field, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    let mut key = field_prefix(kind, field);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&value[..usize::from(len)]);
    key
}

/// The 8 bytes of an instant, ordered as the instants are.
pub fn instant_bytes(at: Timestamp) -> [u8; 8] {
    // Flipping the sign bit makes two's complement sort as unsigned big-endian.
    ((at.micros() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The prefix of the rows of one (kind, instant field, instant): what follows is a record id.
pub fn instant_prefix(kind: Kind, field: Field, at: Timestamp) -> Vec<u8> {
    let mut key = field_prefix(kind, field);
    key.extend_from_slice(&instant_bytes(at));
    key
}

/// The (kind, matter id, record id) of a `Matter` row (a key within the
/// org), `None` for any other row: what a deleted record belonged to.
pub fn matter_row(key: &[u8]) -> Option<(Kind, String, String)> {
    let [code, field, hi, lo, rest @ ..] = key else { return None };
    if *field != Field::Matter.code() {
        return None;
    }
    let kind = Kind::ALL.into_iter().find(|k| k.code() == *code)?;
    let (matter, id) = rest.split_at_checked(usize::from(u16::from_be_bytes([*hi, *lo])))?;
    Some((kind, String::from_utf8_lossy(matter).into_owned(), String::from_utf8_lossy(id).into_owned()))
}

/// The record id of an instant row (`None` if the key is too short to be one).
pub fn instant_row_id(key: &[u8]) -> Option<&[u8]> {
    key.get(2 + 8..)
}

/// The instant of an instant row (`None` if the key is too short to be one).
pub fn instant_row_at(key: &[u8]) -> Option<[u8; 8]> {
    key.get(2..2 + 8).and_then(|b| b.try_into().ok())
}

/// A record's date or date-time as an instant: a plain date is its first
/// instant (UTC), a date-time is parsed with [`Timestamp::parse`]. `None`
/// when it is neither, and such a record matches no bound.
pub fn instant_of(value: &str) -> Option<Timestamp> {
    Timestamp::parse(value).ok().or_else(|| super::Date::parse(value.trim()).ok().map(super::Date::first_instant))
}

/// The (field, value) pairs of a record, as the index normalises them.
fn values(record: &Record, typed: &Typed) -> Vec<(Field, Vec<u8>)> {
    let mut out = vec![];
    let mut add = |field: Field, value: Option<Vec<u8>>| out.extend(value.map(|v| (field, v)));
    let status = |s: &Option<String>| s.as_deref().map(text);
    let id = |r: &Option<Ref>| r.as_ref().map(|r| r.id.as_bytes().to_vec());
    let date = |d: &Option<String>| d.as_deref().and_then(instant_of).map(|t| instant_bytes(t).to_vec());
    let yes = |b: Option<bool>| b.map(flag);
    add(Field::Updated, record.updated_at.map(|t| instant_bytes(t).to_vec()));
    match typed {
        Typed::Matter(m) => {
            add(Field::Status, status(&m.status));
            add(Field::Client, id(&m.client));
            add(Field::User, id(&m.responsible_attorney));
            add(Field::Date, date(&m.open_date));
        }
        Typed::Contact(c) => {
            add(Field::Type, status(&c.kind));
            add(Field::IsClient, yes(c.is_client));
        }
        Typed::Activity(a) => {
            add(Field::Type, status(&a.kind));
            add(Field::Matter, id(&a.matter));
            add(Field::User, id(&a.user));
            add(Field::Billed, yes(a.billed));
            add(Field::Date, date(&a.date));
        }
        Typed::Bill(b) => {
            add(Field::Status, status(&b.state));
            add(Field::Client, id(&b.client));
            for matter in &record.matters {
                add(Field::Matter, Some(matter.as_bytes().to_vec()));
            }
            add(Field::Date, date(&b.issued_at));
        }
        Typed::User(u) => add(Field::Enabled, yes(u.enabled)),
        Typed::Task(t) => {
            add(Field::Status, status(&t.status));
            add(Field::Matter, id(&t.matter));
            add(Field::User, id(&t.assignee));
            add(Field::Date, date(&t.due_at));
        }
        Typed::CalendarEntry(c) => {
            add(Field::Matter, id(&c.matter));
            add(Field::User, id(&c.calendar_owner));
            add(Field::Date, date(&c.start_at));
        }
        Typed::Note(n) => {
            add(Field::Matter, id(&n.matter));
            add(Field::Date, date(&n.date));
        }
    }
    out
}

/// The index rows (keys within the org) of `record`: one per indexed field it has.
pub fn entries(record: &Record) -> BTreeSet<Vec<u8>> {
    let Some(typed) = record.typed() else { return BTreeSet::new() };
    values(record, &typed)
        .into_iter()
        .map(|(field, value)| {
            let mut key = if field.is_instant() {
                let mut k = field_prefix(record.kind, field);
                k.extend_from_slice(&value);
                k
            } else {
                value_prefix(record.kind, field, &value)
            };
            key.extend_from_slice(record.id.as_bytes());
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clio::generator::Firm;

    #[test]
    fn field_codes_are_pinned() {
        use Field::*;
        let all = [Status, Type, Client, Matter, User, Billed, IsClient, Enabled, Date, Updated];
        assert_eq!(all.map(Field::code), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn instants_sort_as_their_bytes() {
        let at = |m: i64| instant_bytes(Timestamp::from_micros(m));
        assert!(at(-1) < at(0) && at(0) < at(1) && at(i64::MIN) < at(-1));
        assert!(instant_bytes(Timestamp::MIN) < instant_bytes(Timestamp::MAX));
    }

    #[test]
    fn every_kind_indexes_exactly_its_filtered_fields() {
        let firm = Firm::new(3, 4000);
        for kind in Kind::ALL {
            let mut seen = BTreeSet::new();
            for i in 0..firm.count(kind).min(200) {
                let record = Record::from_clio(kind, firm.record(kind, i)).unwrap();
                for key in entries(&record) {
                    assert_eq!(key[0], kind.code());
                    seen.insert(key[1]);
                }
            }
            let want: BTreeSet<u8> = fields(kind).iter().map(|f| f.code()).collect();
            assert_eq!(seen, want, "{kind}: the generated firm's records fill every indexed field, and only those");
        }
    }

    #[test]
    fn values_are_normalised_as_lists_compare_them() {
        let raw = serde_json::json!({"id": 7, "status": "CLOSED", "client": {"id": 42}, "open_date": "2026-01-31"});
        let record = Record::from_clio(Kind::Matter, raw).unwrap();
        let keys = entries(&record);
        let closed = [value_prefix(Kind::Matter, Field::Status, &text("closed")), b"7".to_vec()].concat();
        assert!(keys.contains(&closed), "status is kept lowercased");
        let client = [value_prefix(Kind::Matter, Field::Client, b"42"), b"7".to_vec()].concat();
        assert!(keys.contains(&client), "ids exact");
        let day = super::super::Date::parse("2026-01-31").unwrap().first_instant();
        assert!(keys.contains(&[instant_prefix(Kind::Matter, Field::Date, day), b"7".to_vec()].concat()));
        assert_eq!(keys.len(), 3, "no updated_at, no attorney: no rows for them");
    }
}

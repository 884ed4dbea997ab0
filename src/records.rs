//! The firm's Clio data as typed records, with the raw Clio JSON kept beside
//! the typed fields so unknown fields survive and exports are faithful.
//!
//! The Clio client turns API JSON into [`Record`]s (checking each against its
//! typed shape); the store keeps the raw JSON; the read API, search and export
//! read records. Nothing else parses Clio JSON. Parsing is tolerant: optional
//! fields may be missing or `null`, ids may be numbers or strings, and new
//! fields are kept in `raw` untouched.
use crate::timestamp::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The kinds of record docket keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Matter,
    Contact,
    Activity,
    Bill,
    User,
    Task,
    CalendarEntry,
    Note,
}

impl Kind {
    /// In sync order: users and contacts before the matters that name them.
    pub const ALL: [Kind; 8] = [
        Kind::User,
        Kind::Contact,
        Kind::Matter,
        Kind::Activity,
        Kind::Bill,
        Kind::Task,
        Kind::CalendarEntry,
        Kind::Note,
    ];

    /// The kind's byte in record keys (and so in the journal). Fixed for good:
    /// never derived from [`Kind::ALL`]'s order, never reused; a new kind takes
    /// the next free code. The codes equal the sync order they were first
    /// given, so stores written before they were explicit read unchanged.
    pub const fn code(self) -> u8 {
        match self {
            Kind::User => 0,
            Kind::Contact => 1,
            Kind::Matter => 2,
            Kind::Activity => 3,
            Kind::Bill => 4,
            Kind::Task => 5,
            Kind::CalendarEntry => 6,
            Kind::Note => 7,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Matter => "matter",
            Kind::Contact => "contact",
            Kind::Activity => "activity",
            Kind::Bill => "bill",
            Kind::User => "user",
            Kind::Task => "task",
            Kind::CalendarEntry => "calendar_entry",
            Kind::Note => "note",
        }
    }

    /// The Clio collection path under `/api/v4`.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Matter => "matters",
            Kind::Contact => "contacts",
            Kind::Activity => "activities",
            Kind::Bill => "bills",
            Kind::User => "users",
            Kind::Task => "tasks",
            Kind::CalendarEntry => "calendar_entries",
            Kind::Note => "notes",
        }
    }

    pub fn from_collection(path: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.collection() == path)
    }

    /// The largest page Clio serves for this collection.
    pub fn page_limit(self) -> u32 {
        if self == Kind::User { 2000 } else { 200 }
    }

    /// The `fields` docket asks for (one nesting level, as Clio allows).
    pub fn fields(self) -> &'static str {
        match self {
            Kind::Matter => {
                "id,etag,number,display_number,description,status,billable,billing_method,open_date,close_date,\
                 pending_date,created_at,updated_at,client{id,name},responsible_attorney{id,name},\
                 originating_attorney{id,name},practice_area{id,name}"
            }
            Kind::Contact => {
                "id,etag,type,name,first_name,last_name,title,primary_email_address,primary_phone_number,\
                 is_client,created_at,updated_at,company{id,name}"
            }
            Kind::Activity => {
                "id,etag,type,date,quantity,rounded_quantity,price,total,note,billed,non_billable,no_charge,\
                 created_at,updated_at,matter{id,display_number},user{id,name},bill{id,number}"
            }
            Kind::Bill => {
                "id,etag,number,type,kind,state,subject,issued_at,due_at,paid_at,total,paid,balance,due,\
                 sub_total,total_tax,created_at,updated_at,client{id,name},matters{id,display_number}"
            }
            Kind::User => {
                "id,etag,name,first_name,last_name,email,enabled,subscription_type,rate,time_zone,created_at,updated_at"
            }
            Kind::Task => {
                "id,etag,name,description,status,priority,due_at,completed_at,created_at,updated_at,\
                 matter{id,display_number},assignee{id,type,name}"
            }
            Kind::CalendarEntry => {
                "id,etag,summary,description,location,start_at,end_at,all_day,created_at,updated_at,\
                 matter{id,display_number},calendar_owner{id,name}"
            }
            Kind::Note => {
                "id,etag,type,subject,detail,date,created_at,updated_at,matter{id,display_number},\
                 contact{id,name},author{id,name}"
            }
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The store key of a record (within its org): the kind's [`Kind::code`], then the Clio id.
pub fn record_key(kind: Kind, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(kind.code());
    key.extend_from_slice(id.as_bytes());
    key
}

/// An id Clio sends as a number (most resources) or a string (calendar entries).
fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) if !s.is_empty() => Ok(s),
        other => Err(serde::de::Error::custom(format!("expected an id, found {other}"))),
    }
}

/// A nested reference such as `client{id,name}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ref {
    #[serde(deserialize_with = "lenient_id")]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub display_number: Option<String>,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

macro_rules! typed {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name {
            #[serde(deserialize_with = "lenient_id")]
            pub id: String,
            pub etag: Option<String>,
            pub created_at: Option<Timestamp>,
            pub updated_at: Option<Timestamp>,
            $($(#[$fdoc])* pub $field: $ty,)*
        }
    };
}

typed!(
    /// A matter (a case or engagement).
    Matter {
        number: Option<Value>,
        display_number: Option<String>,
        description: Option<String>,
        /// `Open`, `Pending` or `Closed`.
        status: Option<String>,
        billable: Option<bool>,
        billing_method: Option<String>,
        open_date: Option<String>,
        close_date: Option<String>,
        pending_date: Option<String>,
        client: Option<Ref>,
        responsible_attorney: Option<Ref>,
        originating_attorney: Option<Ref>,
        practice_area: Option<Ref>,
    }
);

typed!(
    /// A person or company.
    Contact {
        /// `Person` or `Company`.
        #[serde(rename = "type")]
        kind: Option<String>,
        name: Option<String>,
        first_name: Option<String>,
        last_name: Option<String>,
        title: Option<String>,
        primary_email_address: Option<String>,
        primary_phone_number: Option<String>,
        is_client: Option<bool>,
        company: Option<Ref>,
    }
);

typed!(
    /// A time or expense entry.
    Activity {
        /// `TimeEntry`, `ExpenseEntry`, `HardCostEntry` or `SoftCostEntry`.
        #[serde(rename = "type")]
        kind: Option<String>,
        date: Option<String>,
        /// Seconds for time entries (API 4.0.4 and later).
        quantity: Option<f64>,
        rounded_quantity: Option<f64>,
        price: Option<f64>,
        total: Option<f64>,
        note: Option<String>,
        billed: Option<bool>,
        non_billable: Option<bool>,
        no_charge: Option<bool>,
        matter: Option<Ref>,
        user: Option<Ref>,
        bill: Option<Ref>,
    }
);

typed!(
    /// A bill.
    Bill {
        number: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        /// `draft`, `awaiting_approval`, `awaiting_payment`, `paid`, `void` or `deleted`.
        state: Option<String>,
        subject: Option<String>,
        issued_at: Option<String>,
        due_at: Option<String>,
        paid_at: Option<String>,
        total: Option<f64>,
        paid: Option<f64>,
        balance: Option<f64>,
        due: Option<f64>,
        client: Option<Ref>,
        matters: Option<Vec<Ref>>,
    }
);

typed!(
    /// A Clio user (timekeeper) of the firm.
    User {
        name: Option<String>,
        first_name: Option<String>,
        last_name: Option<String>,
        email: Option<String>,
        enabled: Option<bool>,
        subscription_type: Option<String>,
        rate: Option<f64>,
        time_zone: Option<String>,
    }
);

typed!(
    /// A task.
    Task {
        name: Option<String>,
        description: Option<String>,
        /// `pending`, `in_progress`, `in_review` or `complete`.
        status: Option<String>,
        priority: Option<String>,
        due_at: Option<String>,
        completed_at: Option<String>,
        matter: Option<Ref>,
        assignee: Option<Ref>,
    }
);

typed!(
    /// A calendar entry.
    CalendarEntry {
        summary: Option<String>,
        description: Option<String>,
        location: Option<String>,
        start_at: Option<String>,
        end_at: Option<String>,
        all_day: Option<bool>,
        matter: Option<Ref>,
        calendar_owner: Option<Ref>,
    }
);

typed!(
    /// A note on a matter or a contact.
    Note {
        /// `Matter` or `Contact`.
        #[serde(rename = "type")]
        kind: Option<String>,
        subject: Option<String>,
        detail: Option<String>,
        date: Option<String>,
        matter: Option<Ref>,
        contact: Option<Ref>,
        author: Option<Ref>,
    }
);

/// One typed record.
#[derive(Clone, Debug, PartialEq)]
pub enum Typed {
    Matter(Matter),
    Contact(Contact),
    Activity(Activity),
    Bill(Bill),
    User(User),
    Task(Task),
    CalendarEntry(CalendarEntry),
    Note(Note),
}

/// A record as stored: identity, version, and the raw Clio JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: Kind,
    pub id: String,
    /// Clio's etag (with its literal quotes), used to skip unchanged records.
    pub etag: Option<String>,
    /// Clio's `updated_at`, parsed once here (any offset in, a UTC instant kept).
    pub updated_at: Option<Timestamp>,
    /// When docket last wrote this record (its clock): a deletion reconcile
    /// never deletes a record written after its listing began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<Timestamp>,
    /// The matters this record belongs to (itself for a matter): what ethical walls key on.
    pub matters: Vec<String>,
    /// The JSON exactly as Clio sent it.
    pub raw: Value,
}

/// Why a Clio object could not become a record.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{kind} {id}: {problem}")]
pub struct RecordError {
    pub kind: Kind,
    /// The id if one could be read, else `?`.
    pub id: String,
    pub problem: String,
}

fn parse<T: serde::de::DeserializeOwned>(raw: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(raw).map_err(|e| format!("field `{}`: {}", e.path(), e.inner()))
}

impl Typed {
    pub fn parse(kind: Kind, raw: &Value) -> Result<Typed, String> {
        Ok(match kind {
            Kind::Matter => Typed::Matter(parse(raw)?),
            Kind::Contact => Typed::Contact(parse(raw)?),
            Kind::Activity => Typed::Activity(parse(raw)?),
            Kind::Bill => Typed::Bill(parse(raw)?),
            Kind::User => Typed::User(parse(raw)?),
            Kind::Task => Typed::Task(parse(raw)?),
            Kind::CalendarEntry => Typed::CalendarEntry(parse(raw)?),
            Kind::Note => Typed::Note(parse(raw)?),
        })
    }

    /// The matters the record belongs to.
    fn matters(&self) -> Vec<String> {
        let one = |r: &Option<Ref>| r.iter().map(|r| r.id.clone()).collect();
        match self {
            Typed::Matter(m) => vec![m.id.clone()],
            Typed::Activity(a) => one(&a.matter),
            Typed::Bill(b) => b.matters.iter().flatten().map(|r| r.id.clone()).collect(),
            Typed::Task(t) => one(&t.matter),
            Typed::CalendarEntry(c) => one(&c.matter),
            Typed::Note(n) => one(&n.matter),
            Typed::Contact(_) | Typed::User(_) => vec![],
        }
    }
}

impl Record {
    /// Checks a Clio object against its typed shape and wraps it.
    pub fn from_clio(kind: Kind, raw: Value) -> Result<Record, RecordError> {
        let id_hint = raw.get("id").map_or("?".to_string(), |v| v.to_string().trim_matches('"').to_string());
        let typed = Typed::parse(kind, &raw).map_err(|problem| RecordError { kind, id: id_hint.clone(), problem })?;
        let (id, etag, updated_at) = match &typed {
            Typed::Matter(x) => (x.id.clone(), x.etag.clone(), x.updated_at),
            Typed::Contact(x) => (x.id.clone(), x.etag.clone(), x.updated_at),
            Typed::Activity(x) => (x.id.clone(), x.etag.clone(), x.updated_at),
            Typed::Bill(x) => (x.id.clone(), x.etag.clone(), x.updated_at),
            Typed::User(x) => (x.id.clone(), x.etag.clone(), x.updated_at),
            Typed::Task(x) => (x.id.clone(), x.etag.clone(), x.updated_at),
            Typed::CalendarEntry(x) => (x.id.clone(), x.etag.clone(), x.updated_at),
            Typed::Note(x) => (x.id.clone(), x.etag.clone(), x.updated_at),
        };
        if id.is_empty() {
            return Err(RecordError { kind, id: id_hint, problem: "has no `id`".into() });
        }
        Ok(Record { kind, id, etag, updated_at, stored_at: None, matters: typed.matters(), raw })
    }

    /// The typed view (the raw JSON was checked when the record was made).
    pub fn typed(&self) -> Option<Typed> {
        Typed::parse(self.kind, &self.raw).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_keep_unknown_fields_and_tolerate_missing_ones() {
        let raw = json!({
            "id": 1001, "etag": "\"3f2c\"", "display_number": "00012-Smith", "description": "Smith v. Jones",
            "status": "Open", "close_date": null, "updated_at": "2024-03-02T09:12:44Z",
            "client": {"id": 501, "name": "Jane Smith"}, "brand_new_field": {"x": 1}
        });
        let r = Record::from_clio(Kind::Matter, raw.clone()).unwrap();
        assert_eq!(
            (r.id.as_str(), r.etag.as_deref(), r.matters.clone()),
            ("1001", Some("\"3f2c\""), vec!["1001".to_string()])
        );
        assert_eq!(r.raw["brand_new_field"], json!({"x": 1}), "unknown fields survive");
        let Some(Typed::Matter(m)) = r.typed() else { panic!("typed") };
        assert_eq!(m.client.unwrap().name.as_deref(), Some("Jane Smith"));
        assert_eq!(m.open_date, None);

        let cal = Record::from_clio(Kind::CalendarEntry, json!({"id": "abc-1", "matter": {"id": 7}})).unwrap();
        assert_eq!((cal.id.as_str(), cal.matters.clone()), ("abc-1", vec!["7".to_string()]));
        let bill = json!({"id": 3, "matters": [{"id": 1}, {"id": 2}]});
        assert_eq!(Record::from_clio(Kind::Bill, bill).unwrap().matters, ["1", "2"]);
    }

    #[test]
    fn bad_objects_name_the_record_and_the_field() {
        let err = Record::from_clio(Kind::Activity, json!({"id": 9, "total": "lots"})).unwrap_err();
        assert_eq!((err.kind, err.id.as_str()), (Kind::Activity, "9"));
        assert!(err.problem.contains("total"), "{err}");
        let err = Record::from_clio(Kind::Matter, json!({"description": "no id"})).unwrap_err();
        assert_eq!(err.id, "?");
        assert!(Record::from_clio(Kind::Note, json!({"id": null})).is_err());
        let err = Record::from_clio(Kind::Note, json!({"id": 4, "updated_at": "yesterday"})).unwrap_err();
        assert!(err.problem.contains("updated_at"), "{err}");
    }

    #[test]
    fn kind_codes_are_pinned() {
        // Record keys (and the journal) carry these bytes: changing one re-keys stored data.
        let codes: Vec<(Kind, u8)> = Kind::ALL.iter().map(|k| (*k, k.code())).collect();
        assert_eq!(
            codes,
            [
                (Kind::User, 0),
                (Kind::Contact, 1),
                (Kind::Matter, 2),
                (Kind::Activity, 3),
                (Kind::Bill, 4),
                (Kind::Task, 5),
                (Kind::CalendarEntry, 6),
                (Kind::Note, 7),
            ]
        );
        assert_eq!(record_key(Kind::Note, "12"), b"\x0712");
    }

    #[test]
    fn times_are_instants_and_old_stored_records_still_load() {
        let a = Record::from_clio(Kind::Matter, json!({"id": 1, "updated_at": "2024-03-02T04:12:44-05:00"})).unwrap();
        let b = Record::from_clio(Kind::Matter, json!({"id": 1, "updated_at": "2024-03-02T09:12:44Z"})).unwrap();
        assert_eq!(a.updated_at, b.updated_at, "two spellings of one instant are equal");
        let stored = serde_json::to_value(&a).unwrap();
        assert_eq!(stored["updated_at"], "2024-03-02T09:12:44Z", "stored and rendered as RFC 3339 UTC");
        // A record as an earlier docket stored it: `updated_at` as Clio spelled it, no `stored_at`.
        let old = r#"{"kind":"matter","id":"1","etag":"\"e\"","updated_at":"2024-03-02T10:12:44+01:00","matters":["1"],"raw":{"id":1}}"#;
        let old: Record = serde_json::from_str(old).unwrap();
        assert_eq!((old.updated_at, old.stored_at), (b.updated_at, None));
    }
}

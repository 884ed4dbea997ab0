//! A deterministic, realistic law firm: users (timekeepers), contacts,
//! matters ("Estate of …", "Smith v. Jones"), time and expense entries, bills,
//! tasks, calendar entries and notes, in the JSON shapes of Clio API v4.
//!
//! Records are computed from `(seed, kind, index)` on demand, so a firm of a
//! million records costs no memory until it is read. Ids and `updated_at`
//! both grow with the index, which lets the fake answer `updated_since` and
//! cursor paging by arithmetic.
use crate::records::Kind;
use serde_json::{Value, json};

/// The first `updated_at` of every kind, 2024-01-01T00:00:00Z (unix seconds).
pub const EPOCH: i64 = 1_704_067_200;
/// Seconds between consecutive records' `updated_at`.
const STEP: i64 = 7;

const FIRST: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Karen",
    "Daniel",
    "Lisa",
    "Matthew",
    "Nancy",
    "Anthony",
    "Betty",
    "Mark",
    "Sandra",
    "Priya",
    "Ashley",
    "Wei",
    "Aisha",
    "Olga",
    "Kenji",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Nguyen",
    "Patel",
    "Kowalski",
    "O'Brien",
];
const COMPANY: &[&str] = &[
    "Acme Holdings",
    "Blue Ridge Logistics",
    "Cedar & Pine Realty",
    "Delta Biotech",
    "Evergreen Foods",
    "Franklin Manufacturing",
    "Granite Insurance",
    "Harbor Shipping",
    "Ironwood Capital",
    "Juniper Health",
];
const SUFFIX: &[&str] = &["LLC", "Inc.", "Corp.", "LLP", "Co."];
const PRACTICE: &[&str] = &[
    "Litigation",
    "Estate Planning",
    "Corporate",
    "Real Estate",
    "Family Law",
    "Employment",
    "Intellectual Property",
    "Personal Injury",
];
const TIME_NOTES: &[&str] = &[
    "Draft motion to dismiss",
    "Telephone conference with client",
    "Review discovery responses",
    "Prepare for deposition",
    "Research case law on standing",
    "Revise settlement agreement",
    "Draft will and trust documents",
    "Review lease terms",
    "Attend mediation",
    "Correspondence with opposing counsel",
    "Prepare closing documents",
    "Draft demand letter",
];
const EXPENSES: &[&str] =
    &["Court filing fee", "Courier", "Deposition transcript", "Expert witness retainer", "Mileage"];
const EVENTS: &[&str] = &["Deposition", "Hearing", "Client meeting", "Mediation", "Filing deadline", "Closing"];
const TASKS: &[&str] = &[
    "File answer",
    "Serve subpoena",
    "Send engagement letter",
    "Calendar statute of limitations",
    "Collect medical records",
    "Prepare exhibit list",
    "Request title search",
];

/// A SplitMix64 step: the whole firm derives from it, stable across platforms and versions.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[(h % list.len() as u64) as usize]
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_else(|_| "2024-01-01".into())
}

/// RFC 3339 UTC at one-second precision, as Clio renders `updated_at`.
pub fn datetime(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "2024-01-01T00:00:00Z".into())
}

/// A firm of about `total` records.
#[derive(Clone, Debug)]
pub struct Firm {
    pub seed: u64,
    counts: [u64; 8],
}

/// Shares of the total per kind, in [`Kind::ALL`] order (users, contacts, matters,
/// activities, bills, tasks, calendar entries, notes), in thousandths.
const SHARES: [u64; 8] = [4, 100, 80, 600, 50, 70, 50, 46];

/// The kind's place in the firm's tables and ids: its stable [`Kind::code`].
fn slot(kind: Kind) -> usize {
    usize::from(kind.code())
}

impl Firm {
    pub fn new(seed: u64, total: u64) -> Firm {
        let mut counts = [0u64; 8];
        for (i, share) in SHARES.iter().enumerate() {
            counts[i] = (total * share / 1000).max(if i == 0 { 3 } else { 1 });
        }
        Firm { seed, counts }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[slot(kind)]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Ids are `kind number × 10⁹ + index + 1`, so they never collide across kinds.
    pub fn id(&self, kind: Kind, index: u64) -> u64 {
        (slot(kind) as u64 + 1) * 1_000_000_000 + index + 1
    }

    pub fn index_of(&self, kind: Kind, id: u64) -> Option<u64> {
        let base = (slot(kind) as u64 + 1) * 1_000_000_000 + 1;
        id.checked_sub(base).filter(|i| *i < 1_000_000_000)
    }

    /// Seconds since the epoch of the base version of record `index`.
    pub fn updated_at(&self, index: u64) -> i64 {
        EPOCH + i64::try_from(index).unwrap_or(i64::MAX / STEP) * STEP
    }

    /// The first index whose `updated_at` is after `since` (unix seconds).
    pub fn first_updated_after(&self, since: i64) -> u64 {
        if since < EPOCH {
            return 0;
        }
        u64::try_from((since - EPOCH) / STEP + 1).unwrap_or(u64::MAX)
    }

    fn h(&self, kind: Kind, index: u64, salt: u64) -> u64 {
        mix(self.seed ^ mix((slot(kind) as u64) << 56 ^ index ^ mix(salt)))
    }

    fn person(&self, kind: Kind, index: u64) -> (String, String) {
        (pick(FIRST, self.h(kind, index, 1)).into(), pick(LAST, self.h(kind, index, 2)).into())
    }

    fn reference(&self, kind: Kind, from: Kind, index: u64, salt: u64) -> u64 {
        self.h(from, index, salt) % self.count(kind)
    }

    fn user_ref(&self, from: Kind, index: u64, salt: u64) -> Value {
        let u = self.reference(Kind::User, from, index, salt);
        let (f, l) = self.person(Kind::User, u);
        json!({"id": self.id(Kind::User, u), "name": format!("{f} {l}")})
    }

    fn matter_ref(&self, from: Kind, index: u64) -> (u64, Value) {
        let m = self.reference(Kind::Matter, from, index, 3);
        (m, json!({"id": self.id(Kind::Matter, m), "display_number": self.display_number(m)}))
    }

    fn contact_name(&self, index: u64) -> String {
        if self.h(Kind::Contact, index, 4).is_multiple_of(4) {
            let c = self.h(Kind::Contact, index, 5);
            format!("{} {}", pick(COMPANY, c), pick(SUFFIX, c >> 8))
        } else {
            let (f, l) = self.person(Kind::Contact, index);
            format!("{f} {l}")
        }
    }

    fn display_number(&self, matter: u64) -> String {
        let client = self.reference(Kind::Contact, Kind::Matter, matter, 6);
        let name = self.contact_name(client);
        let short: String =
            name.split_whitespace().last().unwrap_or("Client").chars().filter(|c| c.is_alphanumeric()).collect();
        format!("{:05}-{short}", matter + 1)
    }

    fn etag(&self, kind: Kind, index: u64, version: u64) -> String {
        format!("\"{:016x}{:016x}\"", self.h(kind, index, 7), mix(version))
    }

    /// Seconds since the epoch when record `index` of `kind` was created.
    pub fn created_at(&self, kind: Kind, index: u64) -> i64 {
        self.updated_at(index) - 86_400 * i64::try_from(self.h(kind, index, 8) % 300).unwrap_or(0)
    }

    /// Note `index`'s `type`: `Matter` (three in four) or `Contact`.
    pub fn note_type(&self, index: u64) -> &'static str {
        if self.h(Kind::Note, index, 25).is_multiple_of(4) { "Contact" } else { "Matter" }
    }

    /// Record `index` of `kind` with every field docket asks for, at version 0.
    pub fn record(&self, kind: Kind, index: u64) -> Value {
        let id = self.id(kind, index);
        let updated = self.updated_at(index);
        let created = self.created_at(kind, index);
        let mut v = match kind {
            Kind::User => self.user(index),
            Kind::Contact => self.contact(index),
            Kind::Matter => self.matter(index),
            Kind::Activity => self.activity(index),
            Kind::Bill => self.bill(index),
            Kind::Task => self.task(index),
            Kind::CalendarEntry => self.calendar_entry(index),
            Kind::Note => self.note(index),
        };
        v["id"] = if kind == Kind::CalendarEntry { json!(id.to_string()) } else { json!(id) };
        v["etag"] = json!(self.etag(kind, index, 0));
        v["created_at"] = json!(datetime(created));
        v["updated_at"] = json!(datetime(updated));
        v
    }

    fn user(&self, i: u64) -> Value {
        let (f, l) = self.person(Kind::User, i);
        let attorney = i % 3 != 2;
        json!({
            "name": format!("{f} {l}"), "first_name": f, "last_name": l,
            "email": format!("{}.{}@firm.example", f.to_lowercase(), l.to_lowercase().replace('\'', "")),
            "enabled": !self.h(Kind::User, i, 9).is_multiple_of(20),
            "subscription_type": if attorney { "Attorney" } else { "NonAttorney" },
            "rate": if attorney { 250.0 + (self.h(Kind::User, i, 10) % 8) as f64 * 25.0 } else { 125.0 },
            "time_zone": "Eastern Time (US & Canada)",
        })
    }

    fn contact(&self, i: u64) -> Value {
        let name = self.contact_name(i);
        let company = self.h(Kind::Contact, i, 4).is_multiple_of(4);
        let (f, l) = if company { (String::new(), String::new()) } else { self.person(Kind::Contact, i) };
        let slug: String = name.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect();
        json!({
            "type": if company { "Company" } else { "Person" }, "name": name,
            "first_name": f, "last_name": l, "title": null,
            "primary_email_address": format!("{slug}@example.com"),
            "primary_phone_number": format!("555-{:04}", self.h(Kind::Contact, i, 11) % 10_000),
            "is_client": !self.h(Kind::Contact, i, 12).is_multiple_of(3), "company": null,
        })
    }

    fn matter(&self, i: u64) -> Value {
        let h = self.h(Kind::Matter, i, 13);
        let client = self.reference(Kind::Contact, Kind::Matter, i, 6);
        let client_name = self.contact_name(client);
        let area = pick(PRACTICE, h);
        let description = match area {
            "Estate Planning" => format!("Estate of {}", client_name),
            "Litigation" | "Personal Injury" | "Employment" => {
                let other = self.contact_name(self.reference(Kind::Contact, Kind::Matter, i, 14));
                format!("{client_name} v. {other}")
            }
            "Real Estate" => format!("{client_name}: purchase of {} Main Street", 100 + h % 900),
            "Family Law" => format!("In re Marriage of {client_name}"),
            _ => format!("{client_name}: {} review", pick(&["contract", "merger", "compliance", "financing"], h >> 9)),
        };
        let status = match h % 10 {
            0..=5 => "Open",
            6 => "Pending",
            _ => "Closed",
        };
        let open = self.updated_at(i) - 86_400 * i64::try_from(h % 700).unwrap_or(0);
        json!({
            "number": i + 1, "display_number": self.display_number(i), "description": description,
            "status": status, "billable": !h.is_multiple_of(17),
            "billing_method": pick(&["hourly", "hourly", "hourly", "flat", "contingency"], h >> 5),
            "open_date": date(open), "close_date": if status == "Closed" { json!(date(self.updated_at(i))) } else { Value::Null },
            "pending_date": null,
            "client": {"id": self.id(Kind::Contact, client), "name": client_name},
            "responsible_attorney": self.user_ref(Kind::Matter, i, 15),
            "originating_attorney": self.user_ref(Kind::Matter, i, 16),
            "practice_area": {"id": (h % PRACTICE.len() as u64) + 1, "name": area},
        })
    }

    fn activity(&self, i: u64) -> Value {
        let h = self.h(Kind::Activity, i, 17);
        let (_, matter) = self.matter_ref(Kind::Activity, i);
        let user = self.user_ref(Kind::Activity, i, 18);
        let billed = h.is_multiple_of(3);
        let bill = if billed {
            let b = self.reference(Kind::Bill, Kind::Activity, i, 19);
            json!({"id": self.id(Kind::Bill, b), "number": format!("{}", 1000 + b)})
        } else {
            Value::Null
        };
        let day = date(self.updated_at(i) - 86_400 * i64::try_from(h % 20).unwrap_or(0));
        if h.is_multiple_of(8) {
            let amount = 15.0 + (h % 400) as f64;
            return json!({
                "type": "ExpenseEntry", "date": day, "quantity": 1.0, "rounded_quantity": 1.0,
                "price": amount, "total": amount, "note": pick(EXPENSES, h >> 7), "billed": billed,
                "non_billable": false, "no_charge": false, "matter": matter, "user": user, "bill": bill,
            });
        }
        let seconds = 360.0 * (1 + h % 40) as f64;
        let rate = 150.0 + (h % 9) as f64 * 25.0;
        json!({
            "type": "TimeEntry", "date": day, "quantity": seconds, "rounded_quantity": seconds,
            "price": rate, "total": (rate * seconds / 3600.0 * 100.0).round() / 100.0,
            "note": pick(TIME_NOTES, h >> 7), "billed": billed, "non_billable": h.is_multiple_of(23),
            "no_charge": false, "matter": matter, "user": user, "bill": bill,
        })
    }

    fn bill(&self, i: u64) -> Value {
        let h = self.h(Kind::Bill, i, 20);
        let (m, matter) = self.matter_ref(Kind::Bill, i);
        let client = self.reference(Kind::Contact, Kind::Matter, m, 6);
        let total = ((h % 2_000_000) as f64) / 100.0 + 250.0;
        let state = pick(
            &["draft", "awaiting_approval", "awaiting_payment", "awaiting_payment", "paid", "paid", "void"],
            h >> 3,
        );
        let paid = if state == "paid" { total } else { 0.0 };
        let issued = self.updated_at(i) - 86_400 * i64::try_from(h % 60).unwrap_or(0);
        json!({
            "number": format!("{}", 1000 + i), "type": "MatterBill", "kind": "revenue_kind", "state": state,
            "subject": format!("Services through {}", date(issued)), "issued_at": date(issued),
            "due_at": date(issued + 30 * 86_400),
            "paid_at": if state == "paid" { json!(datetime(issued + 20 * 86_400)) } else { Value::Null },
            "total": total, "paid": paid, "balance": total - paid, "due": total - paid, "sub_total": total,
            "total_tax": 0.0,
            "client": {"id": self.id(Kind::Contact, client), "name": self.contact_name(client)},
            "matters": [matter],
        })
    }

    fn task(&self, i: u64) -> Value {
        let h = self.h(Kind::Task, i, 21);
        let (_, matter) = self.matter_ref(Kind::Task, i);
        let status = pick(&["pending", "pending", "in_progress", "in_review", "complete"], h);
        let mut assignee = self.user_ref(Kind::Task, i, 22);
        assignee["type"] = json!("User");
        json!({
            "name": pick(TASKS, h >> 4), "description": format!("{} for this matter", pick(TASKS, h >> 4)),
            "status": status, "priority": pick(&["High", "Normal", "Normal", "Low"], h >> 8),
            "due_at": date(self.updated_at(i) + 86_400 * i64::try_from(h % 45).unwrap_or(0)),
            "completed_at": if status == "complete" { json!(datetime(self.updated_at(i))) } else { Value::Null },
            "matter": matter, "assignee": assignee,
        })
    }

    fn calendar_entry(&self, i: u64) -> Value {
        let h = self.h(Kind::CalendarEntry, i, 23);
        let (m, matter) = self.matter_ref(Kind::CalendarEntry, i);
        let start = self.updated_at(i) + 86_400 * i64::try_from(h % 60).unwrap_or(0) + 3600 * 9;
        let what = pick(EVENTS, h);
        json!({
            "summary": format!("{what}: {}", self.display_number(m)), "description": format!("{what} for the matter"),
            "location": pick(&["Courtroom 4B", "Conference Room A", "Zoom", "Client office"], h >> 6),
            "start_at": datetime(start), "end_at": datetime(start + 3600), "all_day": false,
            "matter": matter, "calendar_owner": self.user_ref(Kind::CalendarEntry, i, 24),
        })
    }

    fn note(&self, i: u64) -> Value {
        let h = self.h(Kind::Note, i, 25);
        let kind = self.note_type(i);
        let (matter, contact) = if kind == "Matter" {
            (self.matter_ref(Kind::Note, i).1, Value::Null)
        } else {
            let c = self.reference(Kind::Contact, Kind::Note, i, 27);
            (Value::Null, json!({"id": self.id(Kind::Contact, c), "name": self.contact_name(c)}))
        };
        json!({
            "type": kind, "subject": pick(TIME_NOTES, h), "detail": format!("{}. Follow up next week.", pick(TIME_NOTES, h >> 5)),
            "date": date(self.updated_at(i)), "matter": matter, "contact": contact,
            "author": self.user_ref(Kind::Note, i, 26),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Record;

    #[test]
    fn the_firm_is_deterministic_realistic_and_parses_as_records() {
        let a = Firm::new(7, 10_000);
        let b = Firm::new(7, 10_000);
        assert_eq!(a.record(Kind::Matter, 42), b.record(Kind::Matter, 42), "same seed, same firm");
        assert_ne!(Firm::new(8, 10_000).record(Kind::Matter, 42), a.record(Kind::Matter, 42));
        assert!((9_900..=10_100).contains(&a.total()), "{}", a.total());
        for kind in Kind::ALL {
            for i in [0, 1, a.count(kind) - 1] {
                let r = Record::from_clio(kind, a.record(kind, i)).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(r.id, a.id(kind, i).to_string());
                assert_eq!(a.index_of(kind, a.id(kind, i)), Some(i));
            }
        }
        let descriptions: Vec<String> =
            (0..200).map(|i| a.record(Kind::Matter, i)["description"].as_str().unwrap().to_string()).collect();
        assert!(descriptions.iter().any(|d| d.starts_with("Estate of ")), "{descriptions:?}");
        assert!(descriptions.iter().any(|d| d.contains(" v. ")), "{descriptions:?}");
        assert!(a.updated_at(5) < a.updated_at(6));
        assert_eq!(a.first_updated_after(a.updated_at(5)), 6);
        assert_eq!(a.first_updated_after(EPOCH - 1), 0);
        let types: Vec<&str> = (0..40).map(|i| a.note_type(i)).collect();
        assert!(types.contains(&"Matter") && types.contains(&"Contact"), "{types:?}");
        for i in 0..40 {
            let note = a.record(Kind::Note, i);
            assert_eq!(note["type"], a.note_type(i));
            assert_eq!(note["contact"].is_null(), a.note_type(i) == "Matter", "{note}");
        }
    }
}

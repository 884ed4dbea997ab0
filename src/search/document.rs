//! A record as a search document: its identity, the matters it belongs to
//! (what walls filter on), kind-specific text and the filter and facet values.
use super::schema::Fields;
use crate::data::Date;
use crate::records::{Kind, Record, Ref, Typed};
use crate::timestamp::Timestamp;
use tantivy::TantivyDocument;

/// The document identity of a record: `kind:id`.
pub fn key(kind: Kind, id: &str) -> String {
    format!("{}:{id}", kind.as_str())
}

/// A stable 64-bit hash of a document key: the sort tie-breaker.
pub fn uid(key: &str) -> u64 {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A record's date or date-time as microseconds since the epoch.
fn micros(value: Option<&str>) -> Option<i64> {
    let value = value?.trim();
    Timestamp::parse(value).ok().or_else(|| Date::parse(value).ok().map(Date::first_instant)).map(Timestamp::micros)
}

fn name(r: &Option<Ref>) -> Option<&str> {
    r.as_ref().and_then(|r| r.name.as_deref())
}

fn number(r: &Option<Ref>) -> Option<&str> {
    r.as_ref().and_then(|r| r.display_number.as_deref().or(r.number.as_deref()))
}

/// What a record contributes to its document, before it is written.
#[derive(Default)]
struct Parts<'a> {
    title: String,
    subtitle: Option<String>,
    names: Vec<&'a str>,
    body: Vec<&'a str>,
    numbers: Vec<&'a str>,
    emails: Vec<&'a str>,
    phones: Vec<&'a str>,
    clients: Vec<&'a str>,
    status: Option<&'a str>,
    practice_area: Option<&'a str>,
    attorney: Option<&'a str>,
    client_id: Option<&'a str>,
    billed: Option<bool>,
    date: Option<&'a str>,
}

fn join(parts: &[Option<&str>], sep: &str) -> String {
    parts.iter().flatten().copied().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(sep)
}

fn s(v: &Option<String>) -> Option<&str> {
    v.as_deref()
}

fn parts(typed: &Typed) -> Parts<'_> {
    match typed {
        Typed::Matter(m) => Parts {
            title: join(&[s(&m.display_number), s(&m.description)], " · "),
            subtitle: name(&m.client).map(str::to_string),
            // Its own number is also a name, so it ranks above records that only mention it.
            names: [
                s(&m.display_number),
                name(&m.client),
                name(&m.responsible_attorney),
                name(&m.originating_attorney),
            ]
            .into_iter()
            .flatten()
            .collect(),
            body: [s(&m.description), m.practice_area.as_ref().and_then(|p| p.name.as_deref())]
                .into_iter()
                .flatten()
                .collect(),
            numbers: s(&m.display_number).into_iter().collect(),
            clients: name(&m.client).into_iter().collect(),
            status: s(&m.status),
            practice_area: m.practice_area.as_ref().and_then(|p| p.name.as_deref()),
            attorney: m.responsible_attorney.as_ref().map(|r| r.id.as_str()),
            client_id: m.client.as_ref().map(|r| r.id.as_str()),
            date: s(&m.open_date),
            ..Parts::default()
        },
        Typed::Contact(c) => Parts {
            title: c.name.clone().unwrap_or_else(|| join(&[s(&c.first_name), s(&c.last_name)], " ")),
            subtitle: s(&c.primary_email_address).or(name(&c.company)).map(str::to_string),
            names: [s(&c.name), s(&c.first_name), s(&c.last_name), name(&c.company)].into_iter().flatten().collect(),
            body: s(&c.title).into_iter().collect(),
            emails: s(&c.primary_email_address).into_iter().collect(),
            phones: s(&c.primary_phone_number).into_iter().collect(),
            ..Parts::default()
        },
        Typed::Activity(a) => Parts {
            title: join(&[s(&a.kind), number(&a.matter)], " · "),
            subtitle: name(&a.user).map(str::to_string),
            names: name(&a.user).into_iter().collect(),
            body: s(&a.note).into_iter().collect(),
            numbers: [number(&a.matter), number(&a.bill)].into_iter().flatten().collect(),
            billed: a.billed,
            date: s(&a.date),
            ..Parts::default()
        },
        Typed::Bill(b) => Parts {
            title: join(&[Some("Bill"), s(&b.number)], " "),
            subtitle: name(&b.client).map(str::to_string),
            names: [s(&b.number), name(&b.client)].into_iter().flatten().collect(),
            body: s(&b.subject).into_iter().collect(),
            numbers: s(&b.number)
                .into_iter()
                .chain(b.matters.iter().flatten().filter_map(|m| m.display_number.as_deref()))
                .collect(),
            clients: name(&b.client).into_iter().collect(),
            status: s(&b.state),
            client_id: b.client.as_ref().map(|r| r.id.as_str()),
            date: s(&b.issued_at),
            ..Parts::default()
        },
        Typed::User(u) => Parts {
            title: u.name.clone().unwrap_or_else(|| join(&[s(&u.first_name), s(&u.last_name)], " ")),
            subtitle: s(&u.email).map(str::to_string),
            names: [s(&u.name), s(&u.first_name), s(&u.last_name)].into_iter().flatten().collect(),
            emails: s(&u.email).into_iter().collect(),
            ..Parts::default()
        },
        Typed::Task(t) => Parts {
            title: t.name.clone().unwrap_or_default(),
            subtitle: number(&t.matter).map(str::to_string),
            names: [s(&t.name), name(&t.assignee)].into_iter().flatten().collect(),
            body: s(&t.description).into_iter().collect(),
            numbers: number(&t.matter).into_iter().collect(),
            status: s(&t.status),
            date: s(&t.due_at),
            ..Parts::default()
        },
        Typed::CalendarEntry(c) => Parts {
            title: c.summary.clone().unwrap_or_default(),
            subtitle: s(&c.location).map(str::to_string),
            names: [s(&c.summary), name(&c.calendar_owner)].into_iter().flatten().collect(),
            body: [s(&c.description), s(&c.location)].into_iter().flatten().collect(),
            numbers: number(&c.matter).into_iter().collect(),
            date: s(&c.start_at),
            ..Parts::default()
        },
        Typed::Note(n) => Parts {
            title: n.subject.clone().unwrap_or_default(),
            subtitle: number(&n.matter).or(name(&n.contact)).map(str::to_string),
            names: [s(&n.subject), name(&n.author), name(&n.contact)].into_iter().flatten().collect(),
            body: s(&n.detail).into_iter().collect(),
            numbers: number(&n.matter).into_iter().collect(),
            date: s(&n.date),
            ..Parts::default()
        },
    }
}

/// The search document of `record`; `None` if its JSON no longer fits its typed shape.
pub fn document(f: &Fields, record: &Record) -> Option<TantivyDocument> {
    let typed = record.typed()?;
    let p = parts(&typed);
    let key = key(record.kind, &record.id);
    let mut doc = TantivyDocument::default();
    doc.add_u64(f.uid, uid(&key));
    doc.add_text(f.key, key);
    doc.add_text(f.kind, record.kind.as_str());
    doc.add_text(f.id, &record.id);
    for m in &record.matters {
        doc.add_text(f.matters, m);
    }
    doc.add_text(f.title, if p.title.is_empty() { record.id.as_str() } else { p.title.as_str() });
    if let Some(sub) = p.subtitle.filter(|s| !s.is_empty()) {
        doc.add_text(f.subtitle, sub);
    }
    let title_words = p.title.as_str();
    for (field, values) in [
        (f.names, &p.names),
        (f.names_stem, &p.names),
        (f.number, &p.numbers),
        (f.email, &p.emails),
        (f.phone, &p.phones),
        (f.client, &p.clients),
    ] {
        for v in values.iter() {
            doc.add_text(field, v);
        }
    }
    let body = p.body.join("\n");
    doc.add_text(f.body, &body);
    doc.add_text(f.body_stem, &body);
    doc.add_text(f.body_stem, title_words);
    let lower = |v: &str| v.trim().to_lowercase();
    if let Some(v) = p.status {
        doc.add_text(f.status, lower(v));
    }
    if let Some(v) = p.practice_area {
        doc.add_text(f.practice_area, v.trim());
    }
    if let Some(v) = p.attorney {
        doc.add_text(f.attorney, v);
    }
    if let Some(v) = p.client_id {
        doc.add_text(f.client_id, v);
    }
    if let Some(b) = p.billed {
        doc.add_text(f.billed, if b { "true" } else { "false" });
    }
    if let Some(at) = micros(p.date) {
        doc.add_i64(f.date, at);
    }
    if matches!(record.kind, Kind::Matter | Kind::Contact | Kind::User) {
        doc.add_u64(f.suggest, 1);
    }
    Some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uids_are_stable_and_dates_are_instants() {
        assert_eq!(uid("matter:1"), uid("matter:1"));
        assert_ne!(uid("matter:1"), uid("matter:2"));
        assert_eq!(micros(Some("1970-01-02")), Some(86_400_000_000));
        assert_eq!(micros(Some("1970-01-01T01:00:00+01:00")), Some(0));
        assert_eq!(micros(Some("soon")), None);
    }

    #[test]
    fn a_matter_document_carries_its_filters() {
        let (_, f) = Fields::schema();
        let raw = json!({"id": 7, "display_number": "00042-Smith", "status": "Open", "open_date": "2024-01-02",
            "client": {"id": 5, "name": "Jane Smith"}, "practice_area": {"id": 1, "name": "Litigation"},
            "responsible_attorney": {"id": 9, "name": "Al Lawyer"}});
        let record = Record::from_clio(Kind::Matter, raw).unwrap();
        let doc = document(&f, &record).unwrap();
        let text = |field| {
            use tantivy::schema::document::Value as _;
            doc.get_all(field).filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>()
        };
        assert_eq!(text(f.key), ["matter:7"]);
        assert_eq!(text(f.matters), ["7"]);
        assert_eq!(text(f.status), ["open"]);
        assert_eq!(text(f.attorney), ["9"]);
        assert_eq!(text(f.client_id), ["5"]);
        assert_eq!(text(f.practice_area), ["Litigation"]);
        assert_eq!(text(f.title), ["00042-Smith"]);
    }
}

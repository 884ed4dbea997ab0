//! The benchmark's firm: records from `docket::clio::generator::Firm`, the one
//! flat document every baseline engine indexes (names, numbers, free text and
//! the filter columns), and loading the records into a docket store through
//! the sync's write path.
use anyhow::Context;
use docket::clio::generator::Firm;
use docket::clio::sync::{self, Pushed, SyncScope};
use docket::records::{Kind, Record, Ref, Typed};
use docket::store::Store;

/// Records written per store transaction (the sync writes a page of 200; bigger
/// batches only make loading, which is not a figure, faster).
const STORE_BATCH: usize = 2_000;

/// Every record of the firm, kind by kind in sync order (users and contacts
/// before the matters that name them), computed on demand.
pub fn records(firm: &Firm) -> impl Iterator<Item = anyhow::Result<Record>> + '_ {
    Kind::ALL.into_iter().flat_map(move |kind| {
        (0..firm.count(kind)).map(move |i| {
            Record::from_clio(kind, firm.record(kind, i)).with_context(|| format!("the generator's {kind} {i}"))
        })
    })
}

/// Loads the firm into `store` as the sync writes pages (`apply_pushed` inside
/// one transaction per batch). Returns the bytes of record JSON stored: the
/// "store's record data" the index size is compared with.
pub fn load_store(store: &Store, scope: &SyncScope, firm: &Firm) -> anyhow::Result<u64> {
    let mut bytes = 0u64;
    let mut batch = Vec::with_capacity(STORE_BATCH);
    let flush = |batch: &mut Vec<Record>| -> anyhow::Result<()> {
        let fenced = store.write(|w| {
            let mut fenced = false;
            for record in batch.drain(..) {
                fenced |= sync::apply_pushed(w, scope, Pushed::Upsert(record))?.is_none();
            }
            Ok(fenced)
        })?;
        anyhow::ensure!(!fenced, "the store fenced the bench's sync scope (the org's sync generation moved)");
        Ok(())
    };
    for record in records(firm) {
        let record = record?;
        bytes += serde_json::to_vec(&record).map(|v| v.len() as u64).unwrap_or(0);
        batch.push(record);
        if batch.len() == STORE_BATCH {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    Ok(bytes)
}

/// One record flattened for the baseline engines. Weights follow the issue:
/// names (A) over numbers, emails and phones (B) over free text (D).
#[derive(Clone, Debug, Default)]
pub struct Doc {
    pub kind: &'static str,
    pub id: i64,
    pub title: String,
    pub names: String,
    pub numbers: String,
    pub text: String,
    pub status: Option<String>,
    pub practice_area: Option<String>,
    pub responsible_attorney_id: Option<i64>,
    pub client_id: Option<i64>,
    pub matter_id: Option<i64>,
    /// `YYYY-MM-DD`: the date a record is filtered and sorted by.
    pub date: Option<String>,
    pub billed: Option<bool>,
}

fn join<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> String {
    parts.into_iter().flatten().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

fn name(r: &Option<Ref>) -> Option<&str> {
    r.as_ref().and_then(|r| r.name.as_deref())
}

fn number(r: &Option<Ref>) -> Option<&str> {
    r.as_ref().and_then(|r| r.display_number.as_deref().or(r.number.as_deref()))
}

fn id(r: &Option<Ref>) -> Option<i64> {
    r.as_ref().and_then(|r| r.id.parse().ok())
}

fn day(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| s.len() >= 10).map(|s| s[..10].to_string())
}

/// The digits of a phone number: how every engine is given phones, so any
/// way of typing one (normalised to digits by the client) finds it.
pub fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl Doc {
    pub fn of(record: &Record) -> anyhow::Result<Doc> {
        let typed = record.typed().with_context(|| format!("{} {} does not parse", record.kind, record.id))?;
        let created = record.raw.get("created_at").and_then(|v| v.as_str()).map(|s| s.chars().take(10).collect());
        let mut d = Doc {
            kind: record.kind.as_str(),
            id: record.id.parse().with_context(|| format!("{} id {} is not a number", record.kind, record.id))?,
            date: created,
            ..Doc::default()
        };
        match typed {
            Typed::Matter(m) => {
                d.title = join([m.display_number.as_deref(), m.description.as_deref()]);
                d.names = join([
                    m.description.as_deref(),
                    name(&m.client),
                    name(&m.responsible_attorney),
                    name(&m.originating_attorney),
                ]);
                d.numbers = join([m.display_number.as_deref()]);
                d.text = join([name(&m.practice_area)]);
                d.status = m.status;
                d.practice_area = name(&m.practice_area).map(str::to_owned);
                d.responsible_attorney_id = id(&m.responsible_attorney);
                d.client_id = id(&m.client);
                d.matter_id = Some(d.id);
                d.date = day(&m.open_date).or(d.date);
            }
            Typed::Contact(c) => {
                let phone = c.primary_phone_number.as_deref().map(digits);
                d.title = c.name.clone().unwrap_or_default();
                d.names = join([c.name.as_deref(), c.first_name.as_deref(), c.last_name.as_deref()]);
                d.numbers =
                    join([c.primary_email_address.as_deref(), c.primary_phone_number.as_deref(), phone.as_deref()]);
                d.client_id = Some(d.id);
            }
            Typed::Activity(a) => {
                d.title = a.note.clone().unwrap_or_default();
                d.names = join([name(&a.user)]);
                d.numbers = join([number(&a.matter), number(&a.bill)]);
                d.text = a.note.unwrap_or_default();
                d.matter_id = id(&a.matter);
                d.date = day(&a.date).or(d.date);
                d.billed = a.billed;
            }
            Typed::Bill(b) => {
                let matters = b.matters.unwrap_or_default();
                d.title = join([b.number.as_deref(), b.subject.as_deref()]);
                d.names = join([name(&b.client)]);
                d.numbers = join(
                    [b.number.as_deref()]
                        .into_iter()
                        .chain(matters.iter().map(|m| m.display_number.as_deref().or(m.number.as_deref()))),
                );
                d.text = b.subject.unwrap_or_default();
                d.status = b.state;
                d.client_id = id(&b.client);
                d.matter_id = matters.first().and_then(|m| m.id.parse().ok());
                d.date = day(&b.issued_at).or(d.date);
            }
            Typed::User(u) => {
                d.title = u.name.clone().unwrap_or_default();
                d.names = join([u.name.as_deref(), u.first_name.as_deref(), u.last_name.as_deref()]);
                d.numbers = join([u.email.as_deref()]);
            }
            Typed::Task(t) => {
                d.title = t.name.clone().unwrap_or_default();
                d.names = join([name(&t.assignee)]);
                d.numbers = join([number(&t.matter)]);
                d.text = join([t.name.as_deref(), t.description.as_deref()]);
                d.status = t.status;
                d.matter_id = id(&t.matter);
                d.date = day(&t.due_at).or(d.date);
            }
            Typed::CalendarEntry(c) => {
                d.title = c.summary.clone().unwrap_or_default();
                d.names = join([name(&c.calendar_owner)]);
                d.numbers = join([number(&c.matter)]);
                d.text = join([c.summary.as_deref(), c.description.as_deref(), c.location.as_deref()]);
                d.matter_id = id(&c.matter);
                d.date = day(&c.start_at).or(d.date);
            }
            Typed::Note(n) => {
                d.title = n.subject.clone().unwrap_or_default();
                d.names = join([name(&n.author), name(&n.contact)]);
                d.numbers = join([number(&n.matter)]);
                d.text = join([n.subject.as_deref(), n.detail.as_deref()]);
                d.matter_id = id(&n.matter);
                d.client_id = id(&n.contact);
                d.date = day(&n.date).or(d.date);
            }
        }
        Ok(d)
    }
}

/// The firm's documents in batches of `size`, for bulk loading a baseline.
pub fn doc_batches(firm: &Firm, size: usize) -> impl Iterator<Item = anyhow::Result<Vec<Doc>>> + '_ {
    let mut all = records(firm).map(|r| r.and_then(|r| Doc::of(&r)));
    std::iter::from_fn(move || {
        let batch: anyhow::Result<Vec<Doc>> = all.by_ref().take(size).collect();
        match batch {
            Ok(b) if b.is_empty() => None,
            other => Some(other),
        }
    })
}

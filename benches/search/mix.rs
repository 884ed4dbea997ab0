//! The fixed mix: 50 queries and the type-ahead list, built from the firm's
//! own records (real client names, numbers, emails, phones, note phrases), each
//! written once for docket's API and translated for PostgreSQL and SQLite.
//!
//! Translation rules (the same for every query):
//! - docket gets the text as a person types it;
//! - PostgreSQL gets `websearch_to_tsquery('english', …)` for words, phrases and
//!   `AND`/`OR`/`NOT` (`or`, `-`), `to_tsquery('x:*')` for prefixes (English-stemmed or as typed) and
//!   `word_similarity` on the names (pg_trgm) for misspelt names;
//! - SQLite gets an FTS5 `MATCH` with every term quoted, `*` for prefixes;
//!   FTS5 has no typo tolerance, so a misspelt name is matched as typed;
//! - a phone number is given to both baselines as its digits (the client
//!   normalises it, as docket's analyser does inside the engine).
use crate::firm::digits;
use anyhow::Context;
use docket::clio::generator::{Firm, datetime};
use docket::records::Kind;
use serde_json::Value;

/// The filters of a query, as `GET /api/v1/search` takes them.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub kinds: Vec<&'static str>,
    pub status: Option<&'static str>,
    pub practice_area: Option<String>,
    pub client_id: Option<i64>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub billed: Option<bool>,
}

/// How a baseline matches the text.
#[derive(Clone, Debug)]
pub enum PgText {
    /// `websearch_to_tsquery('english', …)`.
    Web(String),
    /// `to_tsquery(…)`, for prefixes, stemmed or as typed.
    Prefix(String),
    /// `word_similarity(…, names)` with pg_trgm, for misspelt names.
    Similar(String),
}

/// One query of the mix.
#[derive(Clone, Debug)]
pub struct Query {
    /// What the query stands for (printed beside its hit counts).
    pub label: String,
    /// docket's `q`.
    pub q: String,
    pub pg: PgText,
    /// SQLite's FTS5 `MATCH` expression.
    pub fts: String,
    pub filters: Filters,
    pub date_desc: bool,
    /// Ask for facet counts of kind, status and practice area.
    pub facets: bool,
}

/// One type-ahead request: what has been typed so far.
#[derive(Clone, Debug)]
pub struct Suggest {
    pub typed: String,
    /// `to_tsquery(…)` over the names (weight A), stemmed or as typed.
    pub pg: String,
    /// FTS5 `MATCH` on the names column.
    pub fts: String,
}

/// What one client sends.
#[derive(Clone, Debug)]
pub enum Op {
    Search(Box<Query>),
    Suggest(Suggest),
}

/// Facets every faceted query asks for.
pub const FACETS: [&str; 3] = ["kind", "status", "practice_area"];
/// Hits per page, as docket's default.
pub const LIMIT: usize = 20;
/// Suggestions per type-ahead request.
pub const SUGGEST_LIMIT: usize = 8;

fn text(v: &Value, field: &str) -> String {
    v.get(field).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn quoted(words: &[&str]) -> String {
    words.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(" ")
}

fn plain(label: &str, q: &str) -> Query {
    let words: Vec<&str> = q.split_whitespace().collect();
    Query {
        label: label.into(),
        q: q.into(),
        pg: PgText::Web(q.into()),
        fts: quoted(&words),
        filters: Filters::default(),
        date_desc: false,
        facets: false,
    }
}

fn prefix(label: &str, stem: &str) -> Query {
    let lower = stem.to_lowercase();
    Query {
        pg: PgText::Prefix(format!("{lower}:*")),
        fts: format!("\"{lower}\"*"),
        ..plain(label, &format!("{stem}*"))
    }
}

/// `a OP b [OP c]` in each engine's syntax; `ops` are `AND`, `OR`, `NOT`.
fn boolean(label: &str, first: &str, rest: &[(&str, &str)]) -> Query {
    let mut q = first.to_string();
    let mut web = first.to_string();
    let mut fts = format!("\"{first}\"");
    for (op, word) in rest {
        q.push_str(&format!(" {op} {word}"));
        web.push_str(&match *op {
            "OR" => format!(" or {word}"),
            "NOT" => format!(" -{word}"),
            _ => format!(" {word}"),
        });
        fts.push_str(&format!(" {op} \"{word}\""));
    }
    Query { pg: PgText::Web(web), fts, ..plain(label, &q) }
}

/// A person's name found in the firm: first and last.
struct Person {
    first: String,
    last: String,
}

/// The firm's facts the mix draws on.
struct Picks {
    people: Vec<Person>,
    companies: Vec<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    numbers: Vec<String>,
    notes: Vec<String>,
    client_id: i64,
    practice_area: String,
    user_last: String,
}

/// `n` indices spread over `0..count`.
fn spread(count: u64, n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |k| (count * (2 * k + 1) / (2 * n)).min(count.saturating_sub(1)))
}

fn alphabetic(s: &str) -> bool {
    !s.is_empty() && s.chars().all(char::is_alphabetic)
}

impl Picks {
    fn of(firm: &Firm) -> anyhow::Result<Picks> {
        let contacts = firm.count(Kind::Contact);
        let mut people = Vec::new();
        let mut companies = Vec::new();
        let (mut emails, mut phones) = (Vec::new(), Vec::new());
        for i in spread(contacts, 64) {
            let c = firm.record(Kind::Contact, i);
            let (first, last) = (text(&c, "first_name"), text(&c, "last_name"));
            if text(&c, "type") == "Company" {
                companies.push(text(&c, "name"));
            } else if alphabetic(&first) && alphabetic(&last) && last.len() >= 5 {
                people.push(Person { first, last });
            }
            emails.push(text(&c, "primary_email_address"));
            phones.push(text(&c, "primary_phone_number"));
        }
        let matters = firm.count(Kind::Matter);
        let numbers: Vec<String> =
            spread(matters, 5).map(|i| text(&firm.record(Kind::Matter, i), "display_number")).collect();
        let matter = firm.record(Kind::Matter, matters / 2);
        let client_id = matter.pointer("/client/id").and_then(Value::as_i64).context("a matter without a client")?;
        let practice_area =
            matter.pointer("/practice_area/name").and_then(Value::as_str).unwrap_or("Litigation").into();
        let mut notes: Vec<String> =
            spread(firm.count(Kind::Activity), 64).map(|i| text(&firm.record(Kind::Activity, i), "note")).collect();
        notes.sort();
        notes.dedup();
        let user_last = text(&firm.record(Kind::User, 0), "last_name");
        anyhow::ensure!(people.len() >= 8, "the firm has too few people with plain names for the mix");
        anyhow::ensure!(notes.len() >= 5, "the firm has too few distinct activity notes for the mix");
        anyhow::ensure!(!companies.is_empty(), "the firm has no company contact");
        Ok(Picks { people, companies, emails, phones, numbers, notes, client_id, practice_area, user_last })
    }

    /// The longest word of note `i` (a content word, never "to" or "with").
    fn note_word(&self, i: usize) -> String {
        let note = &self.notes[i % self.notes.len()];
        note.split_whitespace().max_by_key(|w| w.len()).unwrap_or("review").to_lowercase()
    }
}

/// `name` with its third letter dropped: one edit, the kind of slip type-ahead forgives.
fn misspell(name: &str) -> String {
    name.chars().enumerate().filter(|(i, _)| *i != 2).map(|(_, c)| c).collect()
}

/// The day of record `index`'s `updated_at`, `YYYY-MM-DD`.
fn day_of(firm: &Firm, index: u64) -> String {
    datetime(firm.updated_at(index)).chars().take(10).collect()
}

/// The 50 queries, in a fixed order.
pub fn queries(firm: &Firm) -> anyhow::Result<Vec<Query>> {
    let p = Picks::of(firm)?;
    let mut mix = Vec::with_capacity(50);
    for person in p.people.iter().take(5) {
        mix.push(plain("client name", &format!("{} {}", person.first, person.last)));
    }
    for (i, person) in p.people.iter().skip(5).take(4).enumerate() {
        let wrong = misspell(&person.last);
        let q = if i % 2 == 0 { format!("{} {wrong}", person.first) } else { wrong };
        let words: Vec<&str> = q.split_whitespace().collect();
        mix.push(Query { pg: PgText::Similar(q.clone()), fts: quoted(&words), ..plain("misspelt name", &q) });
    }
    for note in p.notes.iter().take(5) {
        let words: Vec<&str> = note.split_whitespace().collect();
        // The note's last three words, less a leading "with" or "and".
        let tail = &words[words.len().saturating_sub(3)..];
        let skip = usize::from(tail.len() == 3 && ["with", "and"].contains(&tail[0]));
        let phrase = tail[skip..].join(" ").to_lowercase();
        mix.push(Query { fts: format!("\"{phrase}\""), ..plain("note phrase", &format!("\"{phrase}\"")) });
    }
    for (i, number) in p.numbers.iter().enumerate() {
        let (digits_part, _) = number.split_once('-').unwrap_or((number, ""));
        let q = if i < 3 { digits_part.to_string() } else { number.clone() };
        let words: Vec<&str> = q.split('-').collect();
        mix.push(Query { fts: format!("\"{}\"", words.join(" ")), ..plain("matter number", &q) });
    }
    for email in p.emails.iter().take(3) {
        mix.push(Query { fts: format!("\"{email}\""), ..plain("email", email) });
    }
    for phone in p.phones.iter().take(2) {
        let d = digits(phone);
        let (head, tail) = d.split_at(3.min(d.len()));
        for typed in [phone.clone(), format!("{head}.{tail}"), d.clone()] {
            mix.push(Query { pg: PgText::Web(d.clone()), fts: format!("\"{d}\""), ..plain("phone", &typed) });
        }
    }
    let stems = [
        p.people[0].last.chars().take(4).collect::<String>(),
        p.people[1].first.chars().take(4).collect(),
        p.note_word(0).chars().take(5).collect(),
        p.companies[0].chars().take(4).collect(),
        p.numbers[0].chars().take(4).collect(),
    ];
    for stem in stems {
        mix.push(prefix("prefix", &stem));
    }
    let (a, b) = (&p.people[0], &p.people[2]);
    let area_word = p.practice_area.split_whitespace().next().unwrap_or("Litigation").to_string();
    let (w0, w1, w2) = (p.note_word(0), p.note_word(1), p.note_word(2));
    mix.push(boolean("AND", &a.last, &[("AND", &area_word)]));
    mix.push(boolean("OR", &w0, &[("OR", &w1)]));
    mix.push(boolean("NOT", &a.last, &[("NOT", &a.first)]));
    mix.push(boolean("OR", &a.last, &[("OR", &b.last)]));
    mix.push(boolean("AND NOT", &w0, &[("AND", &w1), ("NOT", &w2)]));

    let activities = firm.count(Kind::Activity);
    let window = (day_of(firm, activities / 3), day_of(firm, activities / 2));
    let filtered = |label: &str, q: &str, filters: Filters| Query { filters, ..plain(label, q) };
    let kinds = |k: &[&'static str]| k.to_vec();
    mix.push(filtered(
        "filter: open matters",
        &a.last,
        Filters { kinds: kinds(&["matter"]), status: Some("Open"), ..Filters::default() },
    ));
    mix.push(filtered(
        "filter: unbilled activities in a date range",
        &w1,
        Filters {
            kinds: kinds(&["activity"]),
            billed: Some(false),
            from: Some(window.0.clone()),
            to: Some(window.1.clone()),
            ..Filters::default()
        },
    ));
    mix.push(filtered(
        "filter: practice area",
        &b.last,
        Filters { kinds: kinds(&["matter"]), practice_area: Some(p.practice_area.clone()), ..Filters::default() },
    ));
    mix.push(filtered(
        "filter: client",
        &p.practice_area,
        Filters { kinds: kinds(&["matter", "bill"]), client_id: Some(p.client_id), ..Filters::default() },
    ));
    mix.push(filtered(
        "filter: tasks and events in a date range",
        &w2,
        Filters {
            kinds: kinds(&["task", "calendar_entry"]),
            from: Some(window.0.clone()),
            to: Some(window.1.clone()),
            ..Filters::default()
        },
    ));
    for (q, filters) in [
        (a.last.clone(), Filters::default()),
        (w0.clone(), Filters::default()),
        (b.first.clone(), Filters::default()),
        (p.people[3].last.clone(), Filters { kinds: kinds(&["matter"]), ..Filters::default() }),
    ] {
        mix.push(Query { facets: true, ..filtered("faceted", &q, filters) });
    }
    for (q, filters) in [
        (w1.clone(), Filters::default()),
        (p.user_last.clone(), Filters { kinds: kinds(&["activity"]), ..Filters::default() }),
        (p.numbers[1].split('-').next().unwrap_or("00001").to_string(), Filters::default()),
    ] {
        mix.push(Query { date_desc: true, ..filtered("sorted by date", &q, filters) });
    }
    anyhow::ensure!(mix.len() == 50, "the mix has {} queries, not 50", mix.len());
    Ok(mix)
}

/// Type-ahead: 1 to 6 typed characters of five names of at least six
/// letters (four of people, first or last, and a company's first word).
pub fn suggestions(firm: &Firm) -> anyhow::Result<Vec<Suggest>> {
    let p = Picks::of(firm)?;
    let mut names: Vec<String> = Vec::with_capacity(5);
    for name in p.people.iter().flat_map(|person| [&person.first, &person.last]) {
        if name.chars().count() >= 6 && !names.contains(name) && names.len() < 4 {
            names.push(name.clone());
        }
    }
    let company = p.companies.iter().flat_map(|c| c.split_whitespace().next()).find(|w| w.chars().count() >= 6);
    names.push(company.unwrap_or("Evergreen").to_string());
    anyhow::ensure!(names.len() == 5, "the firm has too few names of six letters for type-ahead");
    let mut out = Vec::with_capacity(30);
    for name in names {
        for n in 1..=6 {
            let typed: String = name.chars().take(n).collect();
            let lower = typed.to_lowercase();
            out.push(Suggest { pg: format!("{lower}:*A"), fts: format!("names : \"{lower}\"*"), typed });
        }
    }
    Ok(out)
}

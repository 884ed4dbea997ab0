//! The query language and its limits: free text with phrases, prefixes
//! (`smi*`), bounded typo tolerance, `AND`/`OR`/`NOT` (and `-word`),
//! parentheses and field syntax (`client:`, `status:`, ...). A query that is
//! too large, unbalanced or pathological is refused with a message saying
//! what to change; docs/search.md lists the limits.
use super::schema::{self, Fields, phone_digits, terms};
use crate::records::Kind;
use std::collections::BTreeSet;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, EmptyQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, Term};

/// The longest query accepted, in characters (the API declares it as `q`'s maxLength).
pub const MAX_QUERY_CHARS: usize = 512;
/// The most words, phrases and field clauses in one query.
pub const MAX_TERMS: usize = 24;
/// The deepest nesting of parentheses and `NOT`.
pub const MAX_DEPTH: usize = 8;
/// The shortest prefix before a `*`.
pub const MIN_PREFIX: usize = 2;
/// The most index terms one prefix expands to, per field.
pub const MAX_EXPANSIONS: usize = 64;
/// Words of at least this many characters tolerate one typo ...
pub const FUZZY_ONE: usize = 4;
/// ... and of at least this many, two.
pub const FUZZY_TWO: usize = 8;

/// Fields the query syntax knows (`field:value`).
pub const FIELDS: [&str; 10] =
    ["client", "status", "number", "email", "phone", "name", "kind", "practice_area", "text", "attorney"];

/// A refused query: what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadQuery(pub String);

fn bad(detail: impl Into<String>) -> BadQuery {
    BadQuery(detail.into())
}

/// One parsed clause.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    /// A word, or with a trailing `*` a prefix; `field` if written `field:word`.
    Word {
        field: Option<String>,
        text: String,
        prefix: bool,
    },
    Phrase {
        field: Option<String>,
        text: String,
    },
    /// A run that reads as a phone number, e.g. `(555) 010-2233`.
    Phone(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Lexeme {
    Open,
    Close,
    And,
    Or,
    Not,
    Atom(Node),
}

fn is_phone_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '+' | '(' | ')' | '-' | '.' | ' ')
}

/// A phone number starting at the front of `rest`: its length in bytes.
fn phone_run(rest: &str) -> Option<usize> {
    if !rest.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '(') {
        return None;
    }
    let end = rest.find(|c: char| !is_phone_char(c)).unwrap_or(rest.len());
    // A run ending inside a word (`2233abc`) is not a phone number.
    let run = rest[..end].trim_end_matches([' ', '-', '.', '(']);
    if rest[run.len()..].starts_with(|c: char| c.is_alphanumeric()) {
        return None;
    }
    let digits = run.chars().filter(char::is_ascii_digit).count();
    let spaces = run.matches(' ').count();
    let punctuated = run.contains(['(', ')', '+', '-', '.']);
    // A local number (`555-0102`, 7 digits) must be punctuated like one;
    // bare digit runs of that length stay words (years, matter numbers).
    let local = digits == 7 && spaces == 0 && run.contains(['-', '.']);
    let plausible = local || ((10..=15).contains(&digits) && spaces <= 2 && (punctuated || spaces == 0));
    (plausible && phone_digits(run).is_some()).then_some(run.len())
}

/// Splits the query into lexemes.
fn lex(q: &str) -> Result<Vec<Lexeme>, BadQuery> {
    let mut out = vec![];
    let mut rest = q;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else { return Ok(out) };
        if c == '(' && phone_run(rest).is_none() {
            out.push(Lexeme::Open);
            rest = &rest[1..];
            continue;
        }
        if c == ')' {
            out.push(Lexeme::Close);
            rest = &rest[1..];
            continue;
        }
        if let Some(n) = phone_run(rest) {
            out.push(Lexeme::Atom(Node::Phone(rest[..n].to_string())));
            rest = &rest[n..];
            continue;
        }
        if c == '-' && rest[1..].starts_with(|c: char| c.is_alphanumeric() || c == '"') {
            out.push(Lexeme::Not);
            rest = &rest[1..];
            continue;
        }
        let (atom, after) = atom(rest)?;
        rest = after;
        out.push(match atom {
            Node::Word { field: None, ref text, prefix: false } if text == "AND" => Lexeme::And,
            Node::Word { field: None, ref text, prefix: false } if text == "OR" => Lexeme::Or,
            Node::Word { field: None, ref text, prefix: false } if text == "NOT" => Lexeme::Not,
            other => Lexeme::Atom(other),
        });
    }
}

/// One word, phrase or `field:value` at the front of `rest`.
fn atom(rest: &str) -> Result<(Node, &str), BadQuery> {
    let mut field = None;
    let mut rest = rest;
    let name_end = rest.find(|c: char| !(c.is_ascii_alphabetic() || c == '_')).unwrap_or(rest.len());
    if name_end > 0 && rest[name_end..].starts_with(':') {
        let name = rest[..name_end].to_ascii_lowercase();
        if !FIELDS.contains(&name.as_str()) {
            return Err(bad(format!(
                "`{name}:` is not a field; use one of {} (or quote the text to search for it as written)",
                FIELDS.map(|f| format!("{f}:")).join(", ")
            )));
        }
        field = Some(name);
        rest = &rest[name_end + 1..];
    }
    if let Some(quoted) = rest.strip_prefix('"') {
        let Some(end) = quoted.find('"') else {
            return Err(bad("a quote is not closed; add the closing `\"` or remove the opening one"));
        };
        return Ok((Node::Phrase { field, text: quoted[..end].to_string() }, &quoted[end + 1..]));
    }
    let end = rest.find(|c: char| c.is_whitespace() || c == '(' || c == ')').unwrap_or(rest.len());
    let word = &rest[..end];
    if word.contains('"') {
        return Err(bad(format!("`{word}` has a quote inside a word; put quotes around whole phrases only")));
    }
    if word.is_empty() {
        let name = field.unwrap_or_default();
        return Err(bad(format!("`{name}:` has no value; write e.g. `{name}:smith`")));
    }
    let (text, prefix) = match word.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (word, false),
    };
    if prefix && text.is_empty() {
        return Err(bad(
            "`*` alone would match everything; leave `q` empty and use filters (e.g. `kind=matter`) instead",
        ));
    }
    if text.contains(['*', '?']) {
        return Err(bad(format!(
            "`{word}`: `*` may only end a word (a prefix such as `smi*`); leading and inner wildcards are not supported"
        )));
    }
    if prefix && text.chars().filter(|c| c.is_alphanumeric()).count() < MIN_PREFIX {
        return Err(bad(format!("`{word}`: a prefix needs at least {MIN_PREFIX} letters or digits before `*`")));
    }
    Ok((Node::Word { field, text: text.to_string(), prefix }, &rest[end..]))
}

struct Parser {
    lexemes: Vec<Lexeme>,
    at: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Lexeme> {
        self.lexemes.get(self.at)
    }

    fn or(&mut self, depth: usize) -> Result<Node, BadQuery> {
        let mut any = vec![self.and(depth)?];
        while self.peek() == Some(&Lexeme::Or) {
            self.at += 1;
            any.push(self.and(depth)?);
        }
        Ok(if any.len() == 1 { any.remove(0) } else { Node::Or(any) })
    }

    fn and(&mut self, depth: usize) -> Result<Node, BadQuery> {
        let mut all = vec![];
        loop {
            match self.peek() {
                None | Some(Lexeme::Close) | Some(Lexeme::Or) => break,
                Some(Lexeme::And) => {
                    self.at += 1;
                    continue;
                }
                _ => all.push(self.unary(depth)?),
            }
        }
        match all.len() {
            0 => Err(bad(
                "an operator (`AND`, `OR`, `NOT`) or parenthesis has nothing to apply to; remove it or add a word",
            )),
            1 => Ok(all.remove(0)),
            _ => Ok(Node::And(all)),
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Node, BadQuery> {
        if depth > MAX_DEPTH {
            return Err(bad(format!("the query nests deeper than {MAX_DEPTH} levels; remove parentheses or `NOT`s")));
        }
        match self.lexemes.get(self.at).cloned() {
            Some(Lexeme::Not) => {
                self.at += 1;
                if matches!(self.peek(), None | Some(Lexeme::Close) | Some(Lexeme::Or) | Some(Lexeme::And)) {
                    return Err(bad("`NOT` (or `-`) must be followed by a word, phrase or group"));
                }
                Ok(Node::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Lexeme::Open) => {
                self.at += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Lexeme::Close) {
                    return Err(bad("a parenthesis is not closed; add `)` or remove `(`"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Lexeme::Atom(node)) => {
                self.at += 1;
                self.terms += 1;
                if self.terms > MAX_TERMS {
                    return Err(bad(format!("the query has more than {MAX_TERMS} words or phrases; shorten it")));
                }
                Ok(node)
            }
            _ => Err(bad("the query has a misplaced operator; write e.g. `smith AND contract`")),
        }
    }
}

/// Parses a query; `None` for an empty (or blank) one.
pub fn parse(q: &str) -> Result<Option<Node>, BadQuery> {
    let chars = q.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(bad(format!("`q` is {chars} characters; at most {MAX_QUERY_CHARS} are searched, shorten it")));
    }
    if q.chars().any(char::is_control) {
        return Err(bad("`q` contains control characters; remove them"));
    }
    let lexemes = lex(q)?;
    if lexemes.is_empty() {
        return Ok(None);
    }
    let mut p = Parser { lexemes, at: 0, terms: 0 };
    let node = p.or(0)?;
    if p.at < p.lexemes.len() {
        return Err(bad("a `)` has no matching `(`; remove it"));
    }
    Ok(Some(node))
}

/// Builds tantivy queries from parsed nodes over one searcher.
pub struct Builder<'a> {
    pub searcher: &'a Searcher,
    pub f: Fields,
    text: TextAnalyzer,
    stem: TextAnalyzer,
    code: TextAnalyzer,
}

type Q = Box<dyn Query>;

fn boost(q: Q, by: f32) -> Q {
    Box::new(BoostQuery::new(q, by))
}

fn any(qs: Vec<Q>) -> Q {
    match qs.len() {
        0 => Box::new(EmptyQuery),
        _ => Box::new(BooleanQuery::new(qs.into_iter().map(|q| (Occur::Should, q)).collect())),
    }
}

/// A query matching a keyword field's exact value (scores nothing: filters).
pub fn keyword(field: Field, value: &str) -> Q {
    Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
}

fn term(field: Field, text: &str) -> Q {
    Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::WithFreqs))
}

impl<'a> Builder<'a> {
    pub fn new(searcher: &'a Searcher, f: Fields) -> Builder<'a> {
        let index = searcher.index();
        let analyzer = |name: &str| index.tokenizers().get(name).unwrap_or_else(schema::text_analyzer);
        Builder {
            searcher,
            f,
            text: analyzer(schema::TEXT),
            stem: analyzer(schema::STEM),
            code: analyzer(schema::CODE),
        }
    }

    /// The index terms of `field` that start with `prefix` (at most [`MAX_EXPANSIONS`]).
    fn expand(&self, field: Field, prefix: &str) -> Vec<String> {
        let mut found = BTreeSet::new();
        for segment in self.searcher.segment_readers() {
            let Ok(inverted) = segment.inverted_index(field) else { continue };
            let Ok(mut stream) = inverted.terms().range().ge(prefix.as_bytes()).into_stream() else { continue };
            while found.len() < MAX_EXPANSIONS && stream.advance() {
                let key = stream.key();
                if !key.starts_with(prefix.as_bytes()) {
                    break;
                }
                found.insert(String::from_utf8_lossy(key).into_owned());
            }
        }
        found.into_iter().collect()
    }

    pub(super) fn prefix(&self, field: Field, prefix: &str) -> Q {
        any(self.expand(field, prefix).iter().map(|t| term(field, t)).collect())
    }

    /// `tokens` in `field`: a term, a phrase, or with `prefix` the last one as a prefix.
    pub(super) fn tokens(&self, field: Field, tokens: &[String], prefix: bool) -> Option<Q> {
        let (last, init) = tokens.split_last()?;
        if prefix {
            let mut all: Vec<(Occur, Q)> = init.iter().map(|t| (Occur::Must, term(field, t))).collect();
            all.push((Occur::Must, self.prefix(field, last)));
            return Some(if all.len() == 1 { all.remove(0).1 } else { Box::new(BooleanQuery::new(all)) });
        }
        Some(match tokens.len() {
            1 => term(field, last),
            _ => Box::new(PhraseQuery::new(tokens.iter().map(|t| Term::from_field_text(field, t)).collect())),
        })
    }

    fn analyzed(&self, analyzer: &TextAnalyzer, field: Field, text: &str, prefix: bool) -> Option<Q> {
        self.tokens(field, &terms(&mut analyzer.clone(), text), prefix)
    }

    /// A code (`number:`, `email:`): the whole code lowercased, as one term or prefix.
    pub(super) fn code(&self, field: Field, text: &str, prefix: bool) -> Option<Q> {
        let whole = terms(&mut self.code.clone(), text).into_iter().next()?;
        Some(if prefix { self.prefix(field, &whole) } else { term(field, &whole) })
    }

    fn fuzzy(&self, field: Field, tokens: &[String]) -> Option<Q> {
        let [word] = tokens else { return None };
        // Numbers match exactly or by prefix: `00041` is not a typo of `00042`.
        if word.chars().any(|c| c.is_ascii_digit()) {
            return None;
        }
        let chars = word.chars().count();
        let distance = match chars {
            n if n >= FUZZY_TWO => 2,
            n if n >= FUZZY_ONE => 1,
            _ => return None,
        };
        Some(Box::new(FuzzyTermQuery::new(Term::from_field_text(field, word), distance, true)))
    }

    /// Free text: exact names score above exact text, above stems, above typos.
    fn free(&self, text: &str, prefix: bool, phrase: bool) -> Q {
        let f = self.f;
        let exact = terms(&mut self.text.clone(), text);
        let mut qs: Vec<Q> = vec![];
        let mut add = |q: Option<Q>, by: f32| {
            if let Some(q) = q {
                qs.push(boost(q, by));
            }
        };
        add(self.tokens(f.names, &exact, prefix), 4.0);
        add(self.tokens(f.client, &exact, prefix), 2.0);
        add(self.tokens(f.body, &exact, prefix), 1.0);
        if !prefix {
            add(self.analyzed(&self.stem, f.names_stem, text, false), 2.0);
            add(self.analyzed(&self.stem, f.body_stem, text, false), 0.5);
        }
        if !phrase {
            add(self.code(f.number, text, prefix), 6.0);
            add(self.code(f.email, text, prefix), 6.0);
            if !prefix {
                add(self.fuzzy(f.names, &exact), 0.4);
                add(self.fuzzy(f.body, &exact), 0.2);
            }
        }
        any(qs)
    }

    fn field(&self, name: &str, text: &str, prefix: bool) -> Result<Q, BadQuery> {
        let f = self.f;
        let q = match name {
            "client" => self.analyzed(&self.text, f.client, text, prefix),
            "name" => self.analyzed(&self.text, f.names, text, prefix),
            "text" => self.analyzed(&self.text, f.body, text, prefix),
            "number" => self.code(f.number, text, prefix),
            "email" => self.code(f.email, text, prefix),
            "phone" => Some(keyword(
                f.phone,
                &phone_digits(text).ok_or_else(|| {
                    bad(format!("`phone:{text}` is not a phone number; write 7 to 15 digits, e.g. phone:555-010-2233"))
                })?,
            )),
            "status" => Some(keyword(f.status, &text.to_lowercase())),
            "practice_area" => Some(keyword(f.practice_area, text)),
            "attorney" => Some(keyword(f.attorney, text)),
            "kind" => {
                let kind = parse_kind(text)?;
                Some(keyword(f.kind, kind.as_str()))
            }
            other => return Err(bad(format!("`{other}:` is not a field"))),
        };
        Ok(q.unwrap_or_else(|| Box::new(EmptyQuery)))
    }

    /// The exact-analysed terms of `text` (names and free text).
    pub(super) fn words(&self, text: &str) -> Vec<String> {
        terms(&mut self.text.clone(), text)
    }

    /// The tantivy query of a parsed node.
    pub fn build(&self, node: &Node) -> Result<Q, BadQuery> {
        Ok(match node {
            Node::Word { field: None, text, prefix } => self.free(text, *prefix, false),
            Node::Phrase { field: None, text } => self.free(text, false, true),
            Node::Word { field: Some(name), text, prefix } => self.field(name, text, *prefix)?,
            Node::Phrase { field: Some(name), text } => self.field(name, text, false)?,
            Node::Phone(raw) => {
                let digits = phone_digits(raw).unwrap_or_default();
                any(vec![boost(keyword(self.f.phone, &digits), 6.0), self.free(raw, false, true)])
            }
            Node::Or(nodes) => any(nodes.iter().map(|n| self.build(n)).collect::<Result<_, _>>()?),
            Node::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery)),
                (Occur::MustNot, self.build(inner)?),
            ])),
            Node::And(nodes) => {
                let mut clauses: Vec<(Occur, Q)> = vec![];
                for n in nodes {
                    match n {
                        Node::Not(inner) => clauses.push((Occur::MustNot, self.build(inner)?)),
                        other => clauses.push((Occur::Must, self.build(other)?)),
                    }
                }
                if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
        })
    }
}

/// A kind by its API name.
pub fn parse_kind(text: &str) -> Result<Kind, BadQuery> {
    Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == text.trim())
        .ok_or_else(|| bad(format!("`{text}` is not a kind; use one of {}", Kind::ALL.map(Kind::as_str).join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str) -> Node {
        Node::Word { field: None, text: text.into(), prefix: false }
    }

    #[test]
    fn operators_phrases_fields_and_prefixes_parse() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("  ").unwrap(), None);
        assert_eq!(parse("smith").unwrap(), Some(word("smith")));
        assert_eq!(parse("smith jones").unwrap(), Some(Node::And(vec![word("smith"), word("jones")])));
        assert_eq!(
            parse("a OR b c").unwrap(),
            Some(Node::Or(vec![word("a"), Node::And(vec![word("b"), word("c")])])),
            "AND binds tighter than OR"
        );
        assert_eq!(
            parse("smith NOT jones -lee").unwrap(),
            Some(Node::And(vec![word("smith"), Node::Not(Box::new(word("jones"))), Node::Not(Box::new(word("lee")))]))
        );
        assert_eq!(
            parse("client:\"Jane Smith\" smi*").unwrap(),
            Some(Node::And(vec![
                Node::Phrase { field: Some("client".into()), text: "Jane Smith".into() },
                Node::Word { field: None, text: "smi".into(), prefix: true },
            ]))
        );
        assert_eq!(parse("(a OR b) c").unwrap().map(|n| matches!(n, Node::And(_))), Some(true));
        assert_eq!(parse("00042-Smith").unwrap(), Some(word("00042-Smith")));
        assert_eq!(parse("at 10:30").unwrap(), Some(Node::And(vec![word("at"), word("10:30")])));
    }

    #[test]
    fn phone_numbers_are_one_atom_however_written() {
        for q in ["(555) 010-2233", "555.010.2233", "+15550102233", "555-010-2233", "555-5559", "010.2233"] {
            assert_eq!(parse(q).unwrap(), Some(Node::Phone(q.into())), "{q}");
        }
        assert_eq!(parse("1234567").unwrap(), Some(word("1234567")), "bare 7 digits stay a word");
        assert_eq!(parse("2019 2020").unwrap(), Some(Node::And(vec![word("2019"), word("2020")])));
    }

    #[test]
    fn bad_queries_say_what_to_change() {
        let cases = [
            ("\"unbalanced", "not closed"),
            ("foo:bar", "not a field"),
            ("*", "leave `q` empty"),
            ("**", "may only end a word"),
            ("*a*", "may only end a word"),
            ("a*", "at least 2"),
            ("sm?th", "may only end a word"),
            ("(a b", "not closed"),
            ("a b)", "no matching"),
            ("AND", "nothing to apply"),
            ("a NOT", "must be followed"),
            ("client:", "has no value"),
            ("kind:planet", "not a kind"),
        ];
        for (q, says) in cases {
            let e = parse(q).and_then(|n| {
                // `kind:` values are checked when the query is built.
                if let Some(Node::Word { field: Some(f), text, .. }) = &n
                    && f == "kind"
                {
                    parse_kind(text)?;
                }
                Ok(n)
            });
            let e = e.unwrap_err();
            assert!(e.0.contains(says), "{q:?}: {e}");
        }
    }

    #[test]
    fn size_terms_and_depth_are_capped() {
        assert!(parse(&"a".repeat(MAX_QUERY_CHARS + 1)).unwrap_err().0.contains("characters"));
        assert!(
            parse(&"é".repeat(MAX_QUERY_CHARS)).is_ok(),
            "the limit counts characters, as the spec's maxLength does"
        );
        let many = (0..MAX_TERMS + 1).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        assert!(parse(&many).unwrap_err().0.contains("more than"));
        let thousands = "x ".repeat(250);
        assert!(parse(&thousands).is_err());
        let deep = format!("{}a{}", "(".repeat(MAX_DEPTH + 2), ")".repeat(MAX_DEPTH + 2));
        assert!(parse(&deep).unwrap_err().0.contains("deeper"));
        let nots = "NOT ".repeat(MAX_DEPTH + 2) + "a";
        assert!(parse(&nots).unwrap_err().0.contains("deeper"));
        assert!(parse("a\u{0}b").is_err());
    }
}

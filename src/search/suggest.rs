//! Type-ahead: the top few matters, contacts and people whose names, numbers
//! or emails start with what the user is typing. Every word typed must match;
//! the last one as a prefix. Walls apply inside the query, as for search.
use super::collect::{Budget, Page};
use super::cursor::Sort;
use super::index::Opened;
use super::query::{Builder, keyword};
use super::run::TIME_BUDGET;
use std::collections::BTreeSet;
use std::time::Instant;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::schema::document::Value as _;
use tantivy::{TantivyDocument, Term};

/// The longest type-ahead text, in characters (the API's maxLength), and the most words it may have.
pub const MAX_CHARS: usize = 128;
pub const MAX_WORDS: usize = 6;

/// One suggestion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    pub kind: String,
    pub id: String,
    pub label: String,
    pub detail: Option<String>,
}

/// Why type-ahead text was refused.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    #[error("{0}")]
    Bad(String),
    #[error("the search index failed: {0}")]
    Index(#[from] tantivy::TantivyError),
}

/// Up to `limit` suggestions for `q` as a caller from whom `hidden` matters are screened.
pub fn suggest(o: &Opened, q: &str, limit: usize, hidden: &BTreeSet<String>) -> Result<Vec<Suggestion>, SuggestError> {
    let chars = q.chars().count();
    if chars > MAX_CHARS {
        return Err(SuggestError::Bad(format!("`q` is {chars} characters; type-ahead takes at most {MAX_CHARS}")));
    }
    let searcher = o.reader.searcher();
    let b = Builder::new(&searcher, o.fields);
    let words: Vec<&str> = q.split_whitespace().collect();
    if words.len() > MAX_WORDS {
        return Err(SuggestError::Bad(format!("`q` has {} words; type-ahead takes at most {MAX_WORDS}", words.len())));
    }
    let Some((last, init)) = words.split_last() else { return Ok(vec![]) };
    let f = o.fields;
    let mut clauses: Vec<(Occur, Box<dyn Query>)> =
        vec![(Occur::Must, Box::new(TermQuery::new(Term::from_field_u64(f.suggest, 1), IndexRecordOption::Basic)))];
    for (word, prefix) in init.iter().map(|w| (*w, false)).chain([(*last, true)]) {
        let tokens = b.words(word);
        let mut any: Vec<(Occur, Box<dyn Query>)> = vec![];
        for (q, by) in [
            (b.tokens(f.names, &tokens, prefix), 3.0),
            (b.code(f.number, word, prefix), 4.0),
            (b.code(f.email, word, prefix), 2.0),
        ] {
            if let Some(q) = q {
                any.push((Occur::Should, Box::new(BoostQuery::new(q, by))));
            }
        }
        if any.is_empty() {
            continue;
        }
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
    }
    for matter in hidden {
        clauses.push((Occur::MustNot, keyword(f.matters, matter)));
    }
    let page = Page { sort: Sort::Relevance, after: None, limit, budget: Budget::until(Instant::now() + TIME_BUDGET) };
    let mut ranked = searcher.search(&BooleanQuery::new(clauses), &page)?;
    ranked.truncate(limit);
    let text = |doc: &TantivyDocument, field| doc.get_first(field).and_then(|v| v.as_str().map(str::to_string));
    let mut out = Vec::with_capacity(ranked.len());
    for r in ranked {
        let doc: TantivyDocument = searcher.doc(r.doc())?;
        out.push(Suggestion {
            kind: text(&doc, f.kind).unwrap_or_default(),
            id: text(&doc, f.id).unwrap_or_default(),
            label: text(&doc, f.title).unwrap_or_default(),
            detail: text(&doc, f.subtitle),
        });
    }
    Ok(out)
}

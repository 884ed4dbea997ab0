//! The one pagination contract every list operation follows:
//!
//! - `cursor` in: the `next_cursor` of the previous page, passed back unchanged;
//! - `next_cursor` out: an opaque string, absent on the last page;
//! - `limit`: 1 to [`MAX_LIMIT`] items a page (default [`DEFAULT_LIMIT`]);
//! - the envelope `{"items": [...], "next_cursor": "..."}` ([`Page`]).
//!
//! A cursor names where the next page starts and carries a tag of what it
//! belongs to (the list, the firm, and the list's other query parameters),
//! so a malformed, altered or foreign cursor (another list, other filters,
//! another firm) is refused with a 400 `invalid-cursor` instead of silently
//! restarting or emptying the list. Cursors are positions, not offsets: a page
//! costs the same however deep it is, and a cursor does not expire.
//!
//! Form: `c1.<position, base64url>.<tag, 16 hex>`.
use super::params::{Cursor, Limit};
use super::problem::{ApiError, ApiResult, Code};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use poem::Request;
use poem_openapi::Object;
use poem_openapi::types::{ParseFromJSON, ToJSON};

/// The most items one page returns (search's ranked pages stop at 100).
pub const MAX_LIMIT: u64 = 500;
/// Items per page when `limit` is left out.
pub const DEFAULT_LIMIT: u64 = 100;
/// The `limit` parameter of a list.
pub type PageLimit = Limit<MAX_LIMIT>;

/// A page of a list: the items, and the cursor of the next page.
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Page<T: ParseFromJSON + ToJSON + Send + Sync> {
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
    /// Pass as `cursor` (with the same other parameters) for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T: ParseFromJSON + ToJSON + Send + Sync> Page<T> {
    pub fn new(items: Vec<T>, next_cursor: Option<String>) -> Self {
        Page { items, next_cursor }
    }
}

/// The page size asked for, or [`DEFAULT_LIMIT`].
pub fn limit(limit: Option<PageLimit>) -> usize {
    PageLimit::or(limit, DEFAULT_LIMIT)
}

/// What a cursor belongs to: the list (its operation id), the firm, and
/// every query parameter of the request but `cursor` and `limit`.
#[derive(Clone, Debug)]
pub struct Context {
    tag: u64,
}

const VERSION: &str = "c1";

impl Context {
    /// The context of `list` for `org`, from the request's query string.
    pub fn of(req: &Request, list: &str, org: &str) -> Self {
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k != "cursor" && k != "limit")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        pairs.sort();
        let mut parts = vec![list.to_string(), org.to_string()];
        parts.extend(pairs.into_iter().flat_map(|(k, v)| [k, v]));
        Context { tag: fnv(&parts) }
    }

    /// A context from fixed parts (lists whose parameters are known up front).
    pub fn of_parts(parts: &[&str]) -> Self {
        Context { tag: fnv(parts) }
    }

    /// The cursor of the page after `position`.
    pub fn encode(&self, position: &str) -> String {
        let pos = URL_SAFE_NO_PAD.encode(position.as_bytes());
        format!("{VERSION}.{pos}.{:016x}", self.tag ^ fnv(&[position]))
    }

    /// The position a cursor names, or a 400 `invalid-cursor` saying what to do.
    pub fn decode(&self, cursor: Option<Cursor>) -> ApiResult<Option<String>> {
        let Some(Cursor(cursor)) = cursor else { return Ok(None) };
        let malformed = || {
            invalid(
                "`cursor` is not a cursor this API gave; pass the `next_cursor` of the previous page unchanged, or leave `cursor` out for the first page",
            )
        };
        let mut parts = cursor.split('.');
        let (Some(VERSION), Some(pos), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let position = URL_SAFE_NO_PAD
            .decode(pos)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|p| !p.is_empty())
            .ok_or_else(malformed)?;
        let tag = (tag.len() == 16).then(|| u64::from_str_radix(tag, 16).ok()).flatten().ok_or_else(malformed)?;
        if tag != self.tag ^ fnv(&[&position]) {
            return Err(invalid(
                "`cursor` belongs to another list, other filters or another firm (or was altered); repeat the request with the same parameters as the page that gave it, or leave `cursor` out to start again",
            ));
        }
        Ok(Some(position))
    }
}

fn invalid(detail: &str) -> ApiError {
    ApiError::field(Code::InvalidCursor, "cursor", detail)
}

/// FNV-1a (64 bits) over parts, each followed by a separator byte.
fn fnv<S: AsRef<str>>(parts: &[S]) -> u64 {
    parts.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, part| {
        part.as_ref().bytes().chain([0xff]).fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    })
}

/// One page of an in-memory list sorted by `key`: the items after the
/// cursor's position, at most `limit`, and the next cursor.
pub fn slice<T, K: Fn(&T) -> String>(
    mut items: Vec<T>,
    key: K,
    context: &Context,
    cursor: Option<Cursor>,
    limit: usize,
) -> ApiResult<(Vec<T>, Option<String>)> {
    let after = context.decode(cursor)?;
    items.sort_by_key(|i| key(i));
    let mut page: Vec<T> = items.into_iter().filter(|i| after.as_ref().is_none_or(|a| key(i) > *a)).collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more { page.last().map(|i| context.encode(&key(i))) } else { None };
    Ok((page, next))
}

/// The page a request asks for of a small list held in memory (members,
/// tokens, walls, sessions), ordered by `key` (their ids).
pub fn of_list<T: ParseFromJSON + ToJSON + Send + Sync>(
    req: &Request,
    list: &str,
    org: &str,
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    cursor: Option<Cursor>,
    limit: Option<PageLimit>,
) -> ApiResult<Page<T>> {
    let context = Context::of(req, list, org);
    let (items, next) = slice(items, key, &context, cursor, self::limit(limit))?;
    Ok(Page::new(items, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(list: &str) -> Context {
        Context::of_parts(&[list, "org_1"])
    }

    #[test]
    fn cursors_round_trip_and_are_opaque() {
        let c = ctx("matters.list");
        let cursor = c.encode("12345");
        assert!(!cursor.contains("12345"), "{cursor}");
        assert_eq!(c.decode(Some(Cursor(cursor))).unwrap().as_deref(), Some("12345"));
        assert_eq!(c.decode(None).unwrap(), None);
    }

    #[test]
    fn foreign_altered_and_malformed_cursors_are_refused() {
        let c = ctx("matters.list");
        let cursor = c.encode("12345");
        let foreign = ctx("contacts.list").decode(Some(Cursor(cursor.clone()))).unwrap_err();
        assert_eq!((foreign.code, foreign.field.as_deref()), (Code::InvalidCursor, Some("cursor")));
        assert!(foreign.detail.contains("another list"), "{}", foreign.detail);
        let other_firm = Context::of_parts(&["matters.list", "org_2"]).decode(Some(Cursor(cursor.clone())));
        assert!(other_firm.is_err());
        let forged = format!("c1.{}.{}", URL_SAFE_NO_PAD.encode("99999"), cursor.rsplit('.').next().unwrap());
        assert!(c.decode(Some(Cursor(forged))).is_err(), "a changed position breaks the tag");
        for bad in ["zzz", "c1..0000000000000000", "c1.MTI.xyz", "c2.MTI.0000000000000000", "c1.MTI.00.00", "c1.!!.0"] {
            let e = c.decode(Some(Cursor(bad.into()))).unwrap_err();
            assert_eq!(e.code, Code::InvalidCursor, "{bad}");
            assert!(e.detail.contains("not a cursor this API gave"), "{bad}: {}", e.detail);
        }
    }

    #[test]
    fn slices_page_through_everything_once() {
        let c = ctx("tokens.list");
        let items: Vec<String> = (0..7).map(|i| format!("t{i}")).rev().collect();
        let (mut seen, mut cursor) = (vec![], None);
        loop {
            let (page, next) = slice(items.clone(), Clone::clone, &c, cursor.map(Cursor), 3).unwrap();
            seen.extend(page);
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (0..7).map(|i| format!("t{i}")).collect::<Vec<_>>());
        let (page, next) = slice(items, Clone::clone, &c, None, 7).unwrap();
        assert_eq!((page.len(), next), (7, None), "no cursor when the page holds the rest");
    }
}

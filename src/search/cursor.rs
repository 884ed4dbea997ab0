//! Cursors: the sort key and identity of the last hit of a page, tagged with
//! the search they belong to. A cursor is not an offset, so a page costs the
//! same however deep it is; one of another search (other text, filters, sort
//! or firm) or a forged one is refused.
//!
//! Form: `s1.<sort>.<rank:16 hex>.<uid:16 hex>.<tag:8 hex>` (47 characters).

/// The order of results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Relevance,
    DateDesc,
    DateAsc,
}

impl Sort {
    pub fn parse(text: &str) -> Option<Sort> {
        match text {
            "relevance" => Some(Sort::Relevance),
            "date_desc" => Some(Sort::DateDesc),
            "date_asc" => Some(Sort::DateAsc),
            _ => None,
        }
    }

    fn code(self) -> char {
        match self {
            Sort::Relevance => 'r',
            Sort::DateDesc => 'd',
            Sort::DateAsc => 'a',
        }
    }
}

/// Where a hit stands in the total order: its rank, then its uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub rank: u64,
    pub uid: u64,
}

/// Why a cursor was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("`cursor` is not a cursor this API gave; pass the `next_cursor` of the previous page unchanged")]
    Malformed,
    #[error("`cursor` belongs to another search (other text, filters or sort); start again without `cursor`")]
    Foreign,
}

/// A 32-bit tag of everything that defines a search (not its page).
pub fn tag(parts: &[&str]) -> u32 {
    parts.iter().fold(0x811c_9dc5u32, |h, part| {
        part.bytes().chain([0xff]).fold(h, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    })
}

pub fn encode(sort: Sort, position: Position, tag: u32) -> String {
    format!("s1.{}.{:016x}.{:016x}.{tag:08x}", sort.code(), position.rank, position.uid)
}

/// The position after which the next page starts.
pub fn decode(cursor: &str, sort: Sort, expected_tag: u32) -> Result<Position, CursorError> {
    let parts: Vec<&str> = cursor.split('.').collect();
    let [version, s, rank, uid, t] = parts.as_slice() else { return Err(CursorError::Malformed) };
    let hex64 = |v: &str| (v.len() == 16).then(|| u64::from_str_radix(v, 16).ok()).flatten();
    let hex32 = |v: &str| (v.len() == 8).then(|| u32::from_str_radix(v, 16).ok()).flatten();
    let (Some(rank), Some(uid), Some(t)) = (hex64(rank), hex64(uid), hex32(t)) else {
        return Err(CursorError::Malformed);
    };
    let code = s.chars().next().filter(|_| s.len() == 1).ok_or(CursorError::Malformed)?;
    if *version != "s1" || !['r', 'd', 'a'].contains(&code) {
        return Err(CursorError::Malformed);
    }
    if code != sort.code() || t != expected_tag {
        return Err(CursorError::Foreign);
    }
    Ok(Position { rank, uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        let p = Position { rank: 0xdead_beef, uid: u64::MAX };
        let t = tag(&["smith", "kind=matter"]);
        let c = encode(Sort::DateDesc, p, t);
        assert_eq!(c.len(), 47);
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'), "fits the Cursor parameter: {c}");
        assert_eq!(decode(&c, Sort::DateDesc, t), Ok(p));
        assert_eq!(decode(&c, Sort::DateAsc, t), Err(CursorError::Foreign));
        assert_eq!(decode(&c, Sort::DateDesc, tag(&["smith", "kind=contact"])), Err(CursorError::Foreign));
        for bad in [
            "",
            "abc",
            "s2.d.0000000000000001.0000000000000001.00000000",
            "s1.d.1.2.3",
            "s1.x.0000000000000001.0000000000000001.00000000",
        ] {
            assert_eq!(decode(bad, Sort::DateDesc, t), Err(CursorError::Malformed), "{bad}");
        }
        assert_ne!(tag(&["ab", "c"]), tag(&["a", "bc"]), "parts are delimited");
    }
}

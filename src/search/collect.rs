//! Collectors: the page after a cursor in a total order (relevance or date,
//! then document uid), facet counts over fast fields, and the time budget.
use super::cursor::{Position, Sort};
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

/// How often (in documents) a collector looks at the clock.
const CLOCK_EVERY: u32 = 4096;

/// A deadline shared by the collectors of one query; once passed they stop
/// collecting and the query is refused.
#[derive(Clone, Debug)]
pub struct Budget {
    deadline: Instant,
    exceeded: Arc<AtomicBool>,
}

impl Budget {
    pub fn until(deadline: Instant) -> Budget {
        Budget { deadline, exceeded: Arc::new(AtomicBool::new(false)) }
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    fn check(&self, seen: &mut u32) -> bool {
        *seen = seen.wrapping_add(1);
        if seen.is_multiple_of(CLOCK_EVERY) && Instant::now() > self.deadline {
            self.exceeded.store(true, Ordering::Relaxed);
        }
        self.exceeded()
    }
}

/// The rank of a hit in `sort` (smaller comes first).
pub fn rank(sort: Sort, score: Score, date: Option<i64>) -> u64 {
    let ordered_score = {
        let bits = score.to_bits();
        u64::from(if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 })
    };
    let ordered_date = |d: i64| (d as u64) ^ (1 << 63);
    match sort {
        Sort::Relevance => u64::from(u32::MAX) - ordered_score,
        // Records without a date come last either way.
        Sort::DateDesc => date.map_or(u64::MAX, |d| !ordered_date(d)),
        Sort::DateAsc => date.map_or(u64::MAX, ordered_date),
    }
}

/// One collected hit, ordered by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ranked {
    pub position: Position,
    pub address: (SegmentOrdinal, DocId),
    pub score_bits: u32,
}

impl Ranked {
    pub fn doc(&self) -> DocAddress {
        DocAddress::new(self.address.0, self.address.1)
    }

    pub fn score(&self) -> Score {
        Score::from_bits(self.score_bits)
    }
}

/// The first `limit + 1` hits after `after` in the sort order.
pub struct Page {
    pub sort: Sort,
    pub after: Option<Position>,
    pub limit: usize,
    pub budget: Budget,
}

pub struct PageSegment {
    sort: Sort,
    after: Option<Position>,
    keep: usize,
    segment: SegmentOrdinal,
    dates: Column<i64>,
    uids: Column<u64>,
    heap: BinaryHeap<Ranked>,
    budget: Budget,
    seen: u32,
}

impl Collector for Page {
    type Fruit = Vec<Ranked>;
    type Child = PageSegment;

    fn for_segment(&self, segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<PageSegment> {
        let fast = reader.fast_fields();
        Ok(PageSegment {
            sort: self.sort,
            after: self.after,
            keep: self.limit + 1,
            segment,
            dates: fast.i64("date")?,
            uids: fast.u64("uid")?,
            heap: BinaryHeap::new(),
            budget: self.budget.clone(),
            seen: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        self.sort == Sort::Relevance
    }

    fn merge_fruits(&self, fruits: Vec<Vec<Ranked>>) -> tantivy::Result<Vec<Ranked>> {
        let mut all: Vec<Ranked> = fruits.into_iter().flatten().collect();
        all.sort_unstable();
        all.truncate(self.limit + 1);
        Ok(all)
    }
}

impl SegmentCollector for PageSegment {
    type Fruit = Vec<Ranked>;

    fn collect(&mut self, doc: DocId, score: Score) {
        if self.budget.check(&mut self.seen) {
            return;
        }
        let position = Position {
            rank: rank(self.sort, score, self.dates.first(doc)),
            uid: self.uids.first(doc).unwrap_or_default(),
        };
        if self.after.is_some_and(|after| position <= after) {
            return;
        }
        let hit = Ranked { position, address: (self.segment, doc), score_bits: score.to_bits() };
        if self.heap.len() < self.keep {
            self.heap.push(hit);
        } else if self.heap.peek().is_some_and(|worst| hit < *worst) {
            self.heap.pop();
            self.heap.push(hit);
        }
    }

    fn harvest(self) -> Vec<Ranked> {
        self.heap.into_vec()
    }
}

/// Counts per value of the asked facet fields (fast string fields).
pub struct Facets {
    pub fields: Vec<&'static str>,
    pub budget: Budget,
}

pub struct FacetsSegment {
    columns: Vec<Option<(StrColumn, Vec<u64>)>>,
    budget: Budget,
    seen: u32,
}

/// Per field, value → count.
pub type FacetCounts = Vec<BTreeMap<String, u64>>;

impl Collector for Facets {
    type Fruit = FacetCounts;
    type Child = FacetsSegment;

    fn for_segment(&self, _: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<FacetsSegment> {
        let mut columns = vec![];
        for field in &self.fields {
            columns.push(reader.fast_fields().str(field)?.map(|c| {
                let n = c.num_terms();
                (c, vec![0u64; n])
            }));
        }
        Ok(FacetsSegment { columns, budget: self.budget.clone(), seen: 0 })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<FacetCounts>) -> tantivy::Result<FacetCounts> {
        let mut total: FacetCounts = vec![BTreeMap::new(); self.fields.len()];
        for fruit in fruits {
            for (into, from) in total.iter_mut().zip(fruit) {
                for (value, n) in from {
                    *into.entry(value).or_default() += n;
                }
            }
        }
        Ok(total)
    }
}

impl SegmentCollector for FacetsSegment {
    type Fruit = FacetCounts;

    fn collect(&mut self, doc: DocId, _: Score) {
        if self.columns.is_empty() || self.budget.check(&mut self.seen) {
            return;
        }
        for (column, counts) in self.columns.iter_mut().flatten() {
            for ord in column.term_ords(doc) {
                if let Some(n) = usize::try_from(ord).ok().and_then(|o| counts.get_mut(o)) {
                    *n += 1;
                }
            }
        }
    }

    fn harvest(self) -> FacetCounts {
        self.columns
            .into_iter()
            .map(|column| {
                let mut out = BTreeMap::new();
                let Some((column, counts)) = column else { return out };
                let mut value = String::new();
                for (ord, n) in counts.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                    value.clear();
                    if column.ord_to_str(ord as u64, &mut value).unwrap_or(false) {
                        out.insert(value.clone(), n);
                    }
                }
                out
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_order_scores_down_and_dates_both_ways() {
        assert!(rank(Sort::Relevance, 2.0, None) < rank(Sort::Relevance, 1.0, None));
        assert!(rank(Sort::Relevance, 0.5, None) < rank(Sort::Relevance, 0.0, None));
        assert!(rank(Sort::DateDesc, 0.0, Some(10)) < rank(Sort::DateDesc, 0.0, Some(-10)));
        assert!(rank(Sort::DateAsc, 0.0, Some(-10)) < rank(Sort::DateAsc, 0.0, Some(10)));
        assert_eq!(rank(Sort::DateAsc, 0.0, None), u64::MAX, "undated last");
    }
}

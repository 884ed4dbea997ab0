//! The change feed: a firm's record upserts and deletions in docket's own
//! commit order (the journal's `seq`), as a caller may see them.
//!
//! A position in the feed is a journal seq that ends a transaction (`after`)
//! plus, when a page ended inside the next transaction, the last seq of it
//! already handed out (`skip`). Positions travel as opaque cursors MACed
//! with a per-org key sealed in the store ([`cursor`]), so a cursor survives
//! restarts, cannot be forged or moved to another firm, and keeps working
//! after a master key rotation (the key is re-sealed, not changed).
//!
//! Walls: an upsert is shown when the [`Viewer`] sees the record. A deletion
//! carries no record, so its matters are read from the record-index rows the
//! same transaction removed (`data::delete_record` removes them in the write
//! that removes the record); a matter's own deletion belongs to itself. A
//! single-matter record moved from a visible matter into a walled one is a
//! deletion for the members the wall screens.
//!
//! The journal is pruned once shipped (`lifecycle::shipping`); the feed is a
//! journal follower ([`Follower::ChangeFeed`]) holding back pruning by
//! [`RETENTION`] of commit time ([`keep_window`]), so a mirror that is down
//! for up to that long resumes where it was. A position older than what is
//! retained (or newer than the head: a store restored to an earlier point)
//! is [`FeedError::Behind`], and the client resynchronises from
//! [`head`] (docs/integrators.md).
pub mod cursor;

use crate::data::{RecordChange, Viewer, index};
use crate::records::{Kind, Record};
use crate::store::journal::{Entry, Op};
use crate::store::{Follower, RECORD_INDEX, Store, StoreError, SystemContext, Task};
use crate::timestamp::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// How long the journal is kept for the feed, by commit time (72 hours: a
/// mirror down over a weekend resumes; longer outages resynchronise).
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(72 * 3600);
/// The most changes one page holds.
pub const MAX_LIMIT: usize = 1000;
/// Journal bytes read per step while filling a page.
const STEP_BYTES: usize = 1 << 20;
/// Journal entries one page may examine (other firms' rows, other tables)
/// before it returns what it has with the position reached.
const MAX_EXAMINED: usize = 50_000;

const CTX: SystemContext = SystemContext::new(Task::ChangeFeed);

/// Where a reader stands in the journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// A seq that ends a transaction (or 0): everything up to it was read.
    pub after: u64,
    /// The last seq already read inside the transaction after `after` (0: none).
    pub skip: u64,
}

impl Position {
    /// The position just after the transaction ending at `seq`.
    pub fn at(seq: u64) -> Position {
        Position { after: seq, skip: 0 }
    }
}

/// What happened to a record.
#[derive(Debug)]
pub enum ChangeOp {
    /// The record as stored now.
    Upsert(Box<Record>),
    /// The record is gone (deleted in Clio, purged, or walled off for the caller).
    Delete,
}

/// One change to one record.
#[derive(Debug)]
pub struct Change {
    /// The journal seq of the change: docket's commit order.
    pub seq: u64,
    /// When docket committed it.
    pub committed_at: Timestamp,
    pub kind: Kind,
    pub id: String,
    pub op: ChangeOp,
}

/// A page of the feed.
#[derive(Debug)]
pub struct FeedPage {
    pub changes: Vec<Change>,
    /// Where to read from next.
    pub next: Position,
    /// Whether the page reached the journal's head (nothing more right now).
    pub caught_up: bool,
}

/// Why the feed cannot be read from a position.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The position is no longer (or not yet) in the journal.
    #[error("{0}")]
    Behind(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The feed's head: reading from it returns only changes committed later.
pub fn head(store: &Store) -> Result<Position, StoreError> {
    Ok(Position::at(store.journal_head()?))
}

/// Up to `limit` changes of `kinds` (all when empty) after `from` that the
/// viewer may see, oldest first. A page can hold fewer (even none) without
/// being caught up when it examined [`MAX_EXAMINED`] entries of other rows.
pub fn read(
    store: &Store,
    viewer: &Viewer,
    from: Position,
    kinds: &BTreeSet<Kind>,
    limit: usize,
) -> Result<FeedPage, FeedError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    check_retained(store, from)?;
    let (mut pos, mut changes, mut examined) = (from, Vec::new(), 0usize);
    loop {
        let batch = store.journal_since(&CTX, pos.after, STEP_BYTES).map_err(|e| behind_or(e, from))?;
        if let Some(bad) = &batch.bad
            && batch.entries.is_empty()
        {
            return Err(StoreError::Journal(bad.clone()).into());
        }
        if batch.entries.is_empty() {
            return Ok(FeedPage { changes, next: pos, caught_up: true });
        }
        for tx in transactions(&batch.entries) {
            let mut found = changes_in(tx, viewer, kinds).into_iter().filter(|c| c.seq > pos.skip).peekable();
            while let Some(change) = found.next() {
                let seq = change.seq;
                changes.push(change);
                if changes.len() == limit {
                    let tx_end = tx.last().map_or(seq, |e| e.seq);
                    let next = if found.peek().is_none() || seq == tx_end {
                        Position::at(tx_end)
                    } else {
                        Position { after: pos.after, skip: seq }
                    };
                    let caught_up = next.after == batch.head && next.skip == 0;
                    return Ok(FeedPage { changes, next, caught_up });
                }
            }
            pos = Position::at(tx.last().map_or(pos.after, |e| e.seq));
            examined += tx.len();
        }
        if examined >= MAX_EXAMINED {
            let caught_up = pos.after >= batch.head;
            return Ok(FeedPage { changes, next: pos, caught_up });
        }
    }
}

/// Waits until the journal head passes `after` or `wait` elapses; whether it did.
pub async fn wait_for_commit(store: &Store, after: u64, wait: std::time::Duration) -> bool {
    let mut head = store.subscribe();
    let moved = tokio::time::timeout(wait, head.wait_for(|h| *h > after)).await;
    matches!(moved, Ok(Ok(_)))
}

/// Keeps [`RETENTION`] of journal for the feed: the feed's follower mark is
/// the last seq committed before the window (pruning may remove up to it).
/// Called at start and periodically by the outbound webhook worker.
pub fn keep_window(store: &Store) -> Result<(), StoreError> {
    store.register_follower(Follower::ChangeFeed);
    let window = i64::try_from(RETENTION.as_micros()).unwrap_or(i64::MAX);
    let before = Timestamp::from_micros(store.clock().now_micros().saturating_sub(window));
    if let Some(seq) = store.seq_at(before)? {
        store.mark_applied(Follower::ChangeFeed, seq);
    }
    Ok(())
}

/// The resync instructions every [`FeedError::Behind`] ends with.
pub const RESYNC: &str = "resynchronise: take the cursor of GET /api/v1/changes/head first, then list every kind in full, then read the feed from that cursor";

/// Refuses a position before the oldest retained entry or after the head.
fn check_retained(store: &Store, from: Position) -> Result<(), FeedError> {
    let head = store.journal_head()?;
    if from.after > head || from.skip > head {
        return Err(FeedError::Behind(format!(
            "the cursor is ahead of this appliance's journal (head {head}): the store was restored to an earlier point; {RESYNC}"
        )));
    }
    let start = store.journal_start()?.unwrap_or(head.saturating_add(1));
    if from.after < head && from.after.saturating_add(1) < start {
        return Err(FeedError::Behind(pruned(from.after, start)));
    }
    Ok(())
}

fn pruned(after: u64, start: u64) -> String {
    format!(
        "the changes after {after} are no longer kept (the journal now starts at {start}; the feed keeps {} hours); {RESYNC}",
        RETENTION.as_secs() / 3600
    )
}

/// A journal read refused because the entries were pruned meanwhile is `Behind`.
fn behind_or(e: StoreError, from: Position) -> FeedError {
    match e {
        StoreError::Refused { .. } => FeedError::Behind(pruned(from.after, from.after.saturating_add(1))),
        other => FeedError::Store(other),
    }
}

/// Splits whole transactions (the last entry of each carries the commit marker).
fn transactions(entries: &[Entry]) -> impl Iterator<Item = &[Entry]> {
    entries.split_inclusive(|e| e.last)
}

/// The changes of one transaction the viewer may see, in seq order.
fn changes_in(tx: &[Entry], viewer: &Viewer, kinds: &BTreeSet<Kind>) -> Vec<Change> {
    let org = viewer.org();
    let ours = || tx.iter().filter(move |e| e.org == Some(org));
    let unindexed = unindexed_matters(ours().filter(|e| e.table == RECORD_INDEX.name()));
    // `record_change` takes only the records table's entries.
    ours()
        .filter_map(|e| {
            let change = crate::data::record_change(e)?;
            let (kind, id, op) = match change {
                RecordChange::Put(record) => {
                    let (kind, id) = (record.kind, record.id.clone());
                    if viewer.sees(&record) {
                        (kind, id, ChangeOp::Upsert(record))
                    } else if moved_out_of_sight(kind, &unindexed, &id, viewer) {
                        (kind, id, ChangeOp::Delete)
                    } else {
                        return None;
                    }
                }
                RecordChange::Delete(kind, id) => {
                    let matters = if kind == Kind::Matter {
                        vec![id.clone()]
                    } else {
                        unindexed.get(&(kind, id.clone())).cloned().unwrap_or_default()
                    };
                    if !viewer.sees_all(&matters) {
                        return None;
                    }
                    (kind, id, ChangeOp::Delete)
                }
            };
            (kinds.is_empty() || kinds.contains(&kind)).then_some(Change {
                seq: e.seq,
                committed_at: Timestamp::from_micros(e.time),
                kind,
                id,
                op,
            })
        })
        .collect()
}

/// Whether a record the viewer cannot see now was, before this transaction,
/// in one visible matter (single-matter kinds only: for a bill the rows
/// removed need not be all its old matters, so nothing is inferred).
fn moved_out_of_sight(
    kind: Kind,
    unindexed: &BTreeMap<(Kind, String), Vec<String>>,
    id: &str,
    viewer: &Viewer,
) -> bool {
    if matches!(kind, Kind::Bill | Kind::Matter | Kind::Contact | Kind::User) {
        return false;
    }
    unindexed.get(&(kind, id.to_string())).is_some_and(|old| old.len() == 1 && viewer.sees_all(old))
}

/// The matters of the record-index `Matter` rows deleted by these entries,
/// by record: what a record belonged to before this transaction removed or
/// moved it.
fn unindexed_matters<'a>(entries: impl Iterator<Item = &'a Entry>) -> BTreeMap<(Kind, String), Vec<String>> {
    let mut out: BTreeMap<(Kind, String), Vec<String>> = BTreeMap::new();
    for entry in entries.filter(|e| e.op == Op::Delete) {
        if let Some((kind, matter, id)) = entry.key.get(8..).and_then(index::matter_row) {
            out.entry((kind, id)).or_default().push(matter);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::walls::{NewWall, create, screen_for};
    use crate::clock::Clock;
    use crate::data::{delete_record, put_record};
    use crate::store::{OrgId, OrgTask, OrgTaskContext};
    use serde_json::json;

    fn activity(id: u64, matter: u64) -> Record {
        Record::from_clio(Kind::Activity, json!({"id": id, "matter": {"id": matter}})).unwrap()
    }

    /// (id, whether a delete) of every change `viewer` reads from the start, `limit` a page.
    fn seen(store: &Store, viewer: &Viewer, limit: usize) -> Vec<(String, bool)> {
        let (mut pos, mut out) = (Position::default(), vec![]);
        loop {
            let page = read(store, viewer, pos, &BTreeSet::new(), limit).unwrap();
            out.extend(page.changes.iter().map(|c| (c.id.clone(), matches!(c.op, ChangeOp::Delete))));
            assert!(page.next != pos || page.caught_up, "a page always moves on");
            pos = page.next;
            if page.caught_up {
                return out;
            }
        }
    }

    #[test]
    fn walls_hide_upserts_and_deletions_and_a_move_behind_a_wall_is_a_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), Clock::system()).unwrap();
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let scope = ctx.org_scope(OrgId(1));
        let wall = NewWall { matter_id: "7".into(), users: vec![], groups: vec!["g".into()], reason: String::new() };
        store.write(|w| create(w, &scope, &wall)).unwrap();
        let screened =
            Viewer::screened(scope.clone(), store.read(|r| screen_for(r, &scope, "someone", &["g".into()])).unwrap());
        let firm = Viewer::unwalled(&ctx, OrgId(1));
        store.write(|w| put_record(w, &scope, &activity(1, 5))).unwrap();
        store.write(|w| put_record(w, &scope, &activity(2, 7))).unwrap();
        store.write(|w| put_record(w, &scope, &activity(1, 7))).unwrap();
        store.write(|w| delete_record(w, &scope, Kind::Activity, "2").map(|_| ())).unwrap();
        let other = ctx.org_scope(OrgId(2));
        store.write(|w| put_record(w, &other, &activity(3, 5))).unwrap();
        let s = |id: &str, delete: bool| (id.to_string(), delete);
        assert_eq!(seen(&store, &screened, 100), [s("1", false), s("1", true)], "walled: a move away is a delete");
        assert_eq!(seen(&store, &firm, 100), [s("1", false), s("2", false), s("1", false), s("2", true)]);
    }

    #[test]
    fn pages_that_end_inside_a_transaction_resume_exactly_and_a_pruned_start_is_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), Clock::system()).unwrap();
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let scope = ctx.org_scope(OrgId(1));
        store.write(|w| (1..=7).try_for_each(|n| put_record(w, &scope, &activity(n, 5)))).unwrap();
        store.write(|w| put_record(w, &scope, &activity(8, 5))).unwrap();
        let firm = Viewer::unwalled(&ctx, OrgId(1));
        for limit in [1, 2, 3, 7, 8, 100] {
            let ids: Vec<String> = seen(&store, &firm, limit).into_iter().map(|(id, _)| id).collect();
            assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8"], "limit {limit}");
        }
        let head = store.journal_head().unwrap();
        store.write(|w| put_record(w, &scope, &activity(9, 5))).unwrap();
        store.prune_journal_before(&SystemContext::new(Task::Test), head + 1).unwrap();
        let behind = read(&store, &firm, Position::default(), &BTreeSet::new(), 10);
        assert!(matches!(behind, Err(FeedError::Behind(ref why)) if why.contains("changes/head")), "{behind:?}");
        let ahead = read(&store, &firm, Position::at(head + 100), &BTreeSet::new(), 10);
        assert!(matches!(ahead, Err(FeedError::Behind(ref why)) if why.contains("restored")), "{ahead:?}");
        let page = read(&store, &firm, Position::at(head), &BTreeSet::new(), 10).unwrap();
        assert_eq!(page.changes.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["9"]);
    }
}

//! Following the journal: whole transactions after a `seq` (bounded by bytes),
//! commit notifications, the `seq` at an instant, and pruning. The search
//! indexer, backups and point-in-time recovery are built on these; the
//! contract is in ARCHITECTURE.md, "The journal".
use super::journal::{self, BadEntry, Entry};
use super::{JOURNAL, ReadTx, Store, StoreError, SystemContext, io};
use crate::timestamp::Timestamp;
use redb::ReadableTable as _;

type JournalTable = redb::ReadOnlyTable<u64, &'static [u8]>;

/// The journal's followers that pruning waits for: a follower's entries are
/// kept until it has durably applied them (or it rebuilds from the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Follower {
    /// The search indexer (its applied seq lives in its own index commit).
    Search,
    /// Journal shipping (its shipped seq lives in the segment files).
    Shipping,
    /// The change feed: keeps a window of commit time (`changes::keep_window`).
    ChangeFeed,
}

/// The applied seq of each registered follower (in memory: followers register
/// at start and announce what they recovered from their own durable state).
#[derive(Debug, Default)]
pub(super) struct Followers(std::sync::Mutex<std::collections::BTreeMap<Follower, u64>>);

impl Followers {
    fn with<T>(&self, f: impl FnOnce(&mut std::collections::BTreeMap<Follower, u64>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Whole transactions read from the journal, with the head of the same snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The journal head of the snapshot the entries were read from.
    pub head: u64,
    /// Whole transactions, oldest first (the last entry carries the commit marker).
    pub entries: Vec<Entry>,
    /// The entry the read stopped at because it cannot be read, if any: the
    /// whole transactions before it are in `entries`.
    pub bad: Option<BadEntry>,
}

impl Batch {
    /// The seq to read after next time: the last entry returned, or `after` if none.
    pub fn next_after(&self, after: u64) -> u64 {
        self.entries.last().map_or(after, |e| e.seq)
    }
}

impl ReadTx {
    fn journal(&self) -> Result<Option<JournalTable>, StoreError> {
        match self.tx.open_table(JOURNAL) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

impl Store {
    /// Whole transactions with `seq > after`, oldest first, adding transactions
    /// while the encoded total stays within `max_bytes` (a first transaction
    /// larger than that is returned alone, whole), read in one snapshot with
    /// its head. `after` must end a transaction (0, a `Batch`'s last seq, a
    /// [`Store::seq_at`] answer); entries pruned after it are an error.
    /// Entries carry every org's rows, so a named system task reads them.
    pub fn journal_since(&self, _ctx: &SystemContext, after: u64, max_bytes: usize) -> Result<Batch, StoreError> {
        self.read(|r| {
            let head = r.journal_head()?;
            let mut batch = Batch { head, entries: vec![], bad: None };
            let Some(journal) = r.journal()? else { return Ok(batch) };
            check_start(&journal, after, head)?;
            let (mut taken, mut open, mut open_bytes) = (0usize, Vec::new(), 0usize);
            for row in journal.range(after.saturating_add(1)..).map_err(io)? {
                let (k, v) = row.map_err(io)?;
                let entry = match journal::decode(k.value(), v.value()) {
                    Ok(entry) => entry,
                    Err(bad) => {
                        batch.bad = Some(bad);
                        break;
                    }
                };
                open_bytes += v.value().len() + 8;
                if !batch.entries.is_empty() && taken + open_bytes > max_bytes {
                    break;
                }
                let last = entry.last;
                open.push(entry);
                if last {
                    taken += open_bytes;
                    open_bytes = 0;
                    batch.entries.append(&mut open);
                    if taken >= max_bytes {
                        break;
                    }
                }
            }
            Ok(batch)
        })
    }

    /// A receiver of the journal head, sent after each commit that journaled
    /// something (it only moves up; a slow receiver sees the latest head).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The last seq committed at or before `time`: every transaction committed
    /// by then ends at or before it, none after. `None` if no retained entry is
    /// that old (the journal is empty there, or was pruned). O(log n) lookups:
    /// journal times never decrease with seq.
    pub fn seq_at(&self, time: Timestamp) -> Result<Option<u64>, StoreError> {
        let t = time.micros();
        self.read(|r| {
            let Some(journal) = r.journal()? else { return Ok(None) };
            let time_at = |seq: u64, bytes: &[u8]| journal::time_of(seq, bytes).map_err(StoreError::from);
            let (Some((first, first_v)), Some((last, last_v))) =
                (journal.first().map_err(io)?, journal.last().map_err(io)?)
            else {
                return Ok(None);
            };
            let (first, last) = (first.value(), last.value());
            if time_at(first, first_v.value())? > t {
                return Ok(None);
            }
            if time_at(last, last_v.value())? <= t {
                return Ok(Some(last));
            }
            // `lo` is an entry at or before t; every entry from `hi` on is after t.
            let (mut lo, mut hi) = (first, last);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let Some(row) = journal.range(mid..).map_err(io)?.next() else { break };
                let (k, v) = row.map_err(io)?;
                if time_at(k.value(), v.value())? <= t {
                    lo = k.value();
                } else {
                    hi = mid;
                }
            }
            Ok(Some(lo))
        })
    }

    /// Registers `follower` as one pruning must wait for, at seq 0 until it
    /// announces more with [`Store::mark_applied`]. Register before anything
    /// may prune (at start), so a follower still opening is not overtaken.
    pub fn register_follower(&self, follower: Follower) {
        self.followers.with(|f| {
            f.entry(follower).or_insert(0);
        });
    }

    /// Records that `follower` has durably applied every entry up to `seq`
    /// (it only moves up; registers the follower if it was not).
    pub fn mark_applied(&self, follower: Follower, seq: u64) {
        self.followers.with(|f| {
            let at = f.entry(follower).or_insert(0);
            *at = (*at).max(seq);
        });
    }

    /// The seq every registered follower has applied (entries up to it may be
    /// pruned as far as followers are concerned); `None` when none registered.
    pub fn applied_floor(&self) -> Option<u64> {
        self.followers.with(|f| f.values().copied().min())
    }

    /// The oldest retained journal seq, if any entry is retained.
    pub fn journal_start(&self) -> Result<Option<u64>, StoreError> {
        self.read(|r| {
            let Some(journal) = r.journal()? else { return Ok(None) };
            Ok(journal.first().map_err(io)?.map(|(k, _)| k.value()))
        })
    }

    /// Removes the journal entries before `seq`, whole transactions only (a
    /// transaction that `seq` falls inside is kept whole). Returns how many
    /// entries were removed. The head, transaction ids and times go on from
    /// where they were; the caller owns the policy (what has been shipped).
    pub fn prune_journal_before(&self, ctx: &SystemContext, seq: u64) -> Result<u64, StoreError> {
        tracing::info!(task = ctx.task(), before = seq, "pruning the journal");
        let tx = self.db.begin_write().map_err(io)?;
        let removed = {
            let mut journal = tx.open_table(JOURNAL).map_err(io)?;
            let mut cut = seq;
            for row in journal.range(..seq).map_err(io)?.rev() {
                let (k, v) = row.map_err(io)?;
                if journal::is_last(k.value(), v.value())? {
                    break;
                }
                cut = k.value();
            }
            let removed = journal.range(..cut).map_err(io)?.count() as u64;
            journal.retain_in(..cut, |_, _| false).map_err(io)?;
            removed
        };
        tx.commit().map_err(io)?;
        Ok(removed)
    }
}

/// Refuses to read after a seq inside a transaction or before pruned entries.
fn check_start(journal: &JournalTable, after: u64, head: u64) -> Result<(), StoreError> {
    if after > 0
        && let Some(v) = journal.get(after).map_err(io)?
        && !journal::is_last(after, v.value())?
    {
        return Err(StoreError::Invalid {
            field: "after",
            problem: format!(
                "is {after}, inside a transaction; read after the last seq of a batch, 0, or a seq_at answer"
            ),
        });
    }
    let first = journal.first().map_err(io)?.map_or(head.saturating_add(1), |(k, _)| k.value());
    if after < head && after.saturating_add(1) < first {
        return Err(StoreError::Refused {
            problem: format!(
                "journal entries {} to {} were pruned; restore from a backup taken at or after seq {}",
                after + 1,
                first - 1,
                first - 1
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::{OrgId, OrgTask, OrgTaskContext, SECRETS, Task};

    #[test]
    fn the_applied_floor_is_the_slowest_registered_follower() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), Clock::system()).unwrap();
        assert_eq!(store.applied_floor(), None);
        store.register_follower(Follower::Search);
        store.mark_applied(Follower::Shipping, 9);
        assert_eq!(store.applied_floor(), Some(0), "search registered but announced nothing yet");
        store.mark_applied(Follower::Search, 5);
        store.mark_applied(Follower::Search, 3);
        assert_eq!(store.applied_floor(), Some(5), "applied seqs only move up");
        store.register_follower(Follower::Shipping);
        assert_eq!(store.applied_floor(), Some(5), "registering again keeps what was announced");
    }

    #[test]
    fn a_bad_entry_is_reported_by_seq_after_the_whole_transactions_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), Clock::system()).unwrap();
        let scope = OrgTaskContext::new(OrgTask::Test).org_scope(OrgId(1));
        for n in 0..3u8 {
            store.write(|w| (0..2u8).try_for_each(|k| w.put(&scope, &SECRETS, &[n, k], b"v"))).unwrap();
        }
        // Seq 4 (the second entry of tx 2) gets an op byte no docket writes.
        let tx = store.db.begin_write().unwrap();
        {
            let mut journal = tx.open_table(JOURNAL).unwrap();
            let mut bytes = journal.get(4).unwrap().unwrap().value().to_vec();
            let op_at = 1 + 2 + 8 + 1 + 8 + 8 + 1 + "secrets".len();
            bytes[op_at] = 7;
            journal.insert(4, bytes.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let ctx = SystemContext::new(Task::Test);
        let batch = store.journal_since(&ctx, 0, usize::MAX).unwrap();
        assert_eq!(batch.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2], "tx 1, whole; not half of tx 2");
        let bad = batch.bad.unwrap();
        assert_eq!(bad.seq, 4);
        assert!(bad.problem.contains("op 7 is unknown"), "{bad}");
        assert_eq!(batch.head, 6);
        assert_eq!(store.journal_since(&ctx, 4, usize::MAX).unwrap().entries.len(), 2, "entries after it still read");
    }
}

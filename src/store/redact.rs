//! Redacting the live journal: an erasure must not leave the erased rows'
//! bytes in journal entries a follower, a backup or a replay could read.
//! A redacted `Put` becomes a `Delete` of the same key (same seq, tx, time,
//! commit marker), so the journal still replays to the current store: the
//! erasure deleted the row, and a replay to an earlier point now never
//! brings it back.
use super::journal::{self, Op};
use super::{JOURNAL, OrgId, Store, StoreError, SystemContext, TenantTable, io};
use redb::ReadableTable as _;

/// Journal entries read and rewritten per write transaction.
const BATCH: usize = 10_000;

impl Store {
    /// Turns every journaled `Put` of `org`'s rows in `tables` committed at
    /// or before `through` (microseconds) into a `Delete` of the same key;
    /// returns the entries redacted. Runs in batches of write transactions,
    /// so it can be interrupted and run again.
    pub fn redact_journal(
        &self,
        ctx: &SystemContext,
        org: OrgId,
        tables: &[&TenantTable],
        through: i64,
    ) -> Result<u64, StoreError> {
        tracing::info!(task = ctx.task(), org = %org, "redacting erased rows from the journal");
        let names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
        let (mut from, mut redacted) = (0u64, 0u64);
        loop {
            let tx = self.db.begin_write().map_err(io)?;
            let (next, n) = {
                let mut table = tx.open_table(JOURNAL).map_err(io)?;
                let mut rewrites = vec![];
                let mut last = None;
                for row in table.range(from..).map_err(io)?.take(BATCH) {
                    let (k, v) = row.map_err(io)?;
                    let seq = k.value();
                    last = Some(seq);
                    let Ok(mut entry) = journal::decode(seq, v.value()) else { continue };
                    if entry.org == Some(org)
                        && entry.time <= through
                        && matches!(entry.op, Op::Put(_))
                        && names.contains(&entry.table.as_str())
                    {
                        entry.op = Op::Delete;
                        rewrites.push((seq, entry.encode()));
                    }
                }
                for (seq, bytes) in &rewrites {
                    table.insert(*seq, bytes.as_slice()).map_err(io)?;
                }
                (last, rewrites.len() as u64)
            };
            tx.commit().map_err(io)?;
            redacted += n;
            match next {
                Some(seq) => from = seq + 1,
                None => return Ok(redacted),
            }
        }
    }
}

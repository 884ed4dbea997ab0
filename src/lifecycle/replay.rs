//! The one replay of shipped segments into a [`Restore`]: used by
//! point-in-time restore (`pitr`) and by backup verification alike.
//!
//! It reads the segments in order, keeps the whole transactions after `after`
//! up to a seq and an instant, refuses a gap, and replays one segment per
//! write transaction. A segment that vanishes under it (the shipper rewrote
//! the open segment under a longer name and removed the shorter one) is
//! found again by a fresh listing: the segment that starts at the same seq.
use super::segments::{self, Segment, SegmentSource, ShipError};
use crate::store::{JournalEntry, Restore, StoreError};
use crate::timestamp::Timestamp;

/// How often a vanished segment is looked for again before giving up.
const VANISHED_RETRIES: usize = 20;

/// Why a replay stopped; each names the file or range and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "journal entries {from} to {to} are missing from the segments (before {before})\n  fix: copy the missing segment files back into the segment directory, or restore to a time before {gap_time}"
    )]
    Gap { from: u64, to: u64, before: String, gap_time: String },
    #[error(transparent)]
    Segment(#[from] ShipError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a replay applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The last seq applied (`after` if none).
    pub head: u64,
    /// Entries applied.
    pub entries: u64,
}

/// Where a replay stops: the last seq and the last commit instant it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Until {
    pub seq: u64,
    pub time: i64,
}

impl Until {
    /// Every entry committed at or before `at`.
    pub fn instant(at: Timestamp) -> Until {
        Until { seq: u64::MAX, time: at.micros() }
    }

    /// Every entry up to `seq`.
    pub fn seq(seq: u64) -> Until {
        Until { seq, time: i64::MAX }
    }
}

/// Replays `segments` (ordered by first seq) into `restore`: the whole
/// transactions after `after` up to `until`.
pub fn replay(
    restore: &Restore<'_>,
    source: &dyn SegmentSource,
    segments: &[Segment],
    after: u64,
    until: Until,
) -> Result<Replayed, ReplayError> {
    let mut done = Replayed { head: after, entries: 0 };
    for segment in segments.iter().filter(|s| s.name.last > after) {
        if done.head >= until.seq {
            break;
        }
        let (segment, entries) = read_again_if_vanished(source, segment)?;
        let kept: Vec<JournalEntry> = entries
            .into_iter()
            .filter(|e| e.seq > done.head)
            .take_while(|e| e.time <= until.time && e.seq <= until.seq)
            .collect();
        if let Some(first) = kept.first()
            && first.seq != done.head + 1
        {
            return Err(ReplayError::Gap {
                from: done.head + 1,
                to: first.seq - 1,
                before: segment.path.display().to_string(),
                gap_time: Timestamp::from_micros(first.time).to_rfc3339(),
            });
        }
        restore.replay(&kept)?;
        done.entries += kept.len() as u64;
        done.head = kept.last().map_or(done.head, |e| e.seq);
        if segment.name.last_time > until.time {
            break;
        }
    }
    Ok(done)
}

/// Reads `segment`; if its file is gone (superseded by a longer one while we
/// read), lists its directory again and reads the segment starting at the same seq.
fn read_again_if_vanished(
    source: &dyn SegmentSource,
    segment: &Segment,
) -> Result<(Segment, Vec<JournalEntry>), ReplayError> {
    let mut current = segment.clone();
    for _ in 0..VANISHED_RETRIES {
        match segments::read(source, &current) {
            Ok(entries) => return Ok((current, entries)),
            Err(e) if current.path.exists() => return Err(e.into()),
            Err(e) => {
                let dir = current.path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
                let again = segments::list(&dir)?.chain.into_iter().find(|s| s.name.first == segment.name.first);
                match again {
                    Some(longer) => {
                        tracing::debug!(from = %current.path.display(), to = %longer.path.display(), "a segment was rolled while read: reading its successor");
                        current = longer;
                    }
                    None => return Err(e.into()),
                }
            }
        }
    }
    Ok((current.clone(), segments::read(source, &current)?))
}

//! The segment chain: journal segment files as shipping writes them and
//! restores read them, below both (`shipping` writes, `replay`, `pitr` and
//! `verify` read).
//!
//! A segment holds whole transactions with consecutive seqs. Its file name
//! carries its first and last seq and the commit times of both
//! (`seg_<first>_<last>_<first time>_<last time>.dseg`, seqs zero-padded to 20
//! digits, times in microseconds since the epoch), so a restore orders the
//! segments, finds the ones it needs and detects a gap without opening any.
//! Inside (frames of a sealed, signed file): a header frame repeating the
//! name's figures and the entry count, then one frame per entry (`seq:u64 LE`
//! and the journal entry as stored).
use super::sealed::{SealError, SealedReader, SealedWriter};
use super::signing::{Signer, Trust};
use crate::store::StoreError;
use crate::store::journal::{self, Entry};
use std::path::{Path, PathBuf};

const PREFIX: &str = "seg_";
const SUFFIX: &str = ".dseg";
const MAGIC: &[u8; 8] = b"DKTSEG01";

/// Why shipping, or reading what it shipped, failed; each names the file or
/// range and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Seal(#[from] SealError),
    #[error(
        "cannot use the segment directory {path}: {reason}\n  fix: make sure `backup.dir` is mounted and writable by docket"
    )]
    Dir { path: String, reason: String },
    #[error(
        "cannot write the segment {path}: {reason}\n  fix: free space in `backup.dir` or check the share; nothing was lost, the entries stay in the journal until shipped"
    )]
    Write { path: String, reason: String },
    #[error(
        "cannot read the segment {path}: {reason}\n  fix: restore that file from a copy of `backup.dir`, or restore to a time before the segment's first commit"
    )]
    Read { path: String, reason: String },
    #[error(
        "the segment {path} is corrupt: {problem}\n  fix: restore that file from a copy of `backup.dir`, or restore to a time before the segment's first commit"
    )]
    Corrupt { path: String, problem: String },
    #[error(
        "the segments in {dir} go up to seq {shipped}, past this store's journal (seq {head}): the store was restored to an earlier point\n  fix: move {dir} aside (it belongs to the timeline before the restore) and take a full backup; then restart docket"
    )]
    Ahead { dir: String, shipped: u64, head: u64 },
}

/// Writes segment files as a list of frames. Production segments are
/// backup's sealed files (compressed, encrypted to the appliance key and
/// every offline recipient, checksummed, atomic); the seam lets tests inject
/// a failing writer.
pub trait SegmentSink: Send + Sync {
    /// Writes `frames` to `path` atomically: a file with the final name is
    /// always complete. Returns the bytes written.
    fn write(&self, path: &Path, frames: &[Vec<u8>]) -> Result<u64, ShipError>;
}

/// Reads the frames of segment files, checking their integrity.
pub trait SegmentSource {
    fn read(&self, path: &Path) -> Result<Vec<Vec<u8>>, ShipError>;
}

/// Segments as backup's sealed files: written to `recipients` (the appliance
/// key and every offline key) and signed by `signer`, read with `identities`
/// once their signature verifies against `trust`.
#[derive(Clone)]
pub struct SealedSegments {
    pub recipients: Vec<age::x25519::Recipient>,
    pub identities: Vec<age::x25519::Identity>,
    /// Needed to write; a reader has none.
    pub signer: Option<Signer>,
    pub trust: Trust,
}

impl SealedSegments {
    /// A reader of segments: opens with `identities`, believes `trust`.
    pub fn reader(identities: Vec<age::x25519::Identity>, trust: Trust) -> SealedSegments {
        SealedSegments { recipients: vec![], identities, signer: None, trust }
    }
}

impl SegmentSink for SealedSegments {
    fn write(&self, path: &Path, frames: &[Vec<u8>]) -> Result<u64, ShipError> {
        let signer = self.signer.as_ref().ok_or_else(|| ShipError::Write {
            path: path.display().to_string(),
            reason: "no signing key to sign it with".into(),
        })?;
        let mut writer = SealedWriter::create(path, &self.recipients, signer)?;
        for frame in frames {
            writer.frame(frame)?;
        }
        Ok(writer.finish()?.bytes)
    }
}

impl SegmentSource for SealedSegments {
    fn read(&self, path: &Path) -> Result<Vec<Vec<u8>>, ShipError> {
        let mut reader = SealedReader::open(path, &self.identities, &self.trust)?;
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }
}

/// What a segment's name says: its seq range and the commit times at both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentName {
    pub first: u64,
    pub last: u64,
    /// Commit time of `first`, microseconds since the epoch.
    pub first_time: i64,
    /// Commit time of `last`.
    pub last_time: i64,
}

impl SegmentName {
    /// The name of the segment holding `entries` (none if empty).
    pub fn of(entries: &[Entry]) -> Option<SegmentName> {
        let (first, last) = (entries.first()?, entries.last()?);
        Some(SegmentName { first: first.seq, last: last.seq, first_time: first.time, last_time: last.time })
    }

    pub fn file_name(&self) -> String {
        format!("{PREFIX}{:020}_{:020}_{}_{}{SUFFIX}", self.first, self.last, self.first_time, self.last_time)
    }

    /// The figures of a segment file name; `None` for any other name (temp files included).
    pub fn parse(file_name: &str) -> Option<SegmentName> {
        let body = file_name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let mut parts = body.split('_');
        let name = SegmentName {
            first: parts.next()?.parse().ok()?,
            last: parts.next()?.parse().ok()?,
            first_time: parts.next()?.parse().ok()?,
            last_time: parts.next()?.parse().ok()?,
        };
        let sane = parts.next().is_none() && name.first >= 1 && name.first <= name.last;
        sane.then_some(name)
    }

    fn header(&self, count: u64) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for n in [self.first, self.last, self.first_time as u64, self.last_time as u64, count] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }
}

/// A segment file found in the segment directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    pub name: SegmentName,
}

/// The segments of a directory: the chain a restore reads (ordered by first
/// seq, at most one per first seq: the longest) and the shorter ones a rolled
/// segment superseded (left by a crash; safe to remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub chain: Vec<Segment>,
    pub superseded: Vec<Segment>,
}

/// Lists the segments in `dir` (a missing directory has none); other files,
/// temp files included, are ignored.
pub fn list(dir: &Path) -> Result<Listing, ShipError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(dir_error(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| dir_error(dir, e))?;
        if let Some(name) = entry.file_name().to_str().and_then(SegmentName::parse) {
            found.push(Segment { path: entry.path(), name });
        }
    }
    found.sort_by_key(|s| (s.name.first, std::cmp::Reverse(s.name.last)));
    let mut listing = Listing::default();
    for segment in found {
        match listing.chain.last() {
            Some(kept) if kept.name.first == segment.name.first => listing.superseded.push(segment),
            _ => listing.chain.push(segment),
        }
    }
    Ok(listing)
}

pub(crate) fn dir_error(dir: &Path, e: impl std::fmt::Display) -> ShipError {
    ShipError::Dir { path: dir.display().to_string(), reason: e.to_string() }
}

/// The frames of a segment holding `entries` (whole transactions).
pub fn encode(name: &SegmentName, entries: &[Entry]) -> Vec<Vec<u8>> {
    let mut frames = Vec::with_capacity(entries.len() + 1);
    frames.push(name.header(entries.len() as u64));
    for entry in entries {
        let mut frame = entry.seq.to_le_bytes().to_vec();
        frame.extend_from_slice(&entry.encode());
        frames.push(frame);
    }
    frames
}

/// Reads a segment's entries, checking that its contents are what its name
/// says: consecutive seqs from `first` to `last`, whole transactions, times
/// within the named range and never decreasing.
pub fn read(seal: &dyn SegmentSource, segment: &Segment) -> Result<Vec<Entry>, ShipError> {
    let frames = seal.read(&segment.path)?;
    decode(segment, &frames)
}

fn decode(segment: &Segment, frames: &[Vec<u8>]) -> Result<Vec<Entry>, ShipError> {
    let corrupt = |problem: String| ShipError::Corrupt { path: segment.path.display().to_string(), problem };
    let name = segment.name;
    let (header, rest) = frames.split_first().ok_or_else(|| corrupt("it holds no header".into()))?;
    if *header != name.header(rest.len() as u64) {
        return Err(corrupt(format!(
            "its header does not match its name (seq {} to {}, {} entries expected); the file was renamed or mixed up",
            name.first,
            name.last,
            name.last - name.first + 1
        )));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(rest.len());
    for (frame, expected) in rest.iter().zip(name.first..) {
        let (seq, bytes) =
            frame.split_at_checked(8).ok_or_else(|| corrupt(format!("entry {expected} is truncated")))?;
        let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
        if seq != expected {
            return Err(corrupt(format!("entry {seq} is out of order (expected seq {expected})")));
        }
        let entry = journal::decode(seq, bytes).map_err(|bad| corrupt(bad.to_string()))?;
        let before = entries.last().map_or(name.first_time, |e| e.time);
        if entry.time < before || entry.time > name.last_time {
            return Err(corrupt(format!("entry {seq} has a time outside the segment's range")));
        }
        entries.push(entry);
    }
    let whole = entries.last().is_some_and(|e| e.seq == name.last && e.last && e.time == name.last_time);
    if !whole {
        return Err(corrupt("it does not end with the commit of its last transaction".into()));
    }
    Ok(entries)
}

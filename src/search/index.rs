//! An org's index on disk: `<data_dir>/search/<org id>/CURRENT` names the
//! generation in use (`gen-<n>/`, a tantivy index). A rebuild writes the next
//! generation beside it and then replaces `CURRENT` by a rename, so a crash
//! at any point leaves one complete index in use; generations `CURRENT` does
//! not name are leftovers and are removed at the next open.
//!
//! Each tantivy commit carries a payload `{"format":F,"seq":S}`: every
//! journal entry up to `S` is in the index. An index whose payload is
//! missing, of another format, or unreadable is rebuilt.
use super::schema::{self, FORMAT, Fields};
use crate::store::OrgId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy};

/// Heap of one org's index writer (tantivy needs at least 15 MB per thread).
const WRITER_HEAP: usize = 32 * 1024 * 1024;

/// What is stored in each commit.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payload {
    pub format: u32,
    pub seq: u64,
}

impl Payload {
    pub fn at(seq: u64) -> String {
        serde_json::to_string(&Payload { format: FORMAT, seq }).unwrap_or_default()
    }
}

/// Why an org's index cannot be used as it is (it is rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("there is no index yet")]
    Missing,
    #[error("the index is of format {found}, this docket writes format {FORMAT}")]
    OldFormat { found: u32 },
    #[error("the index cannot be read: {0}")]
    Corrupt(String),
}

/// An opened index: what queries read, and the seq it holds.
pub struct Opened {
    pub index: Index,
    pub reader: IndexReader,
    pub fields: Fields,
    pub seq: u64,
    pub generation: String,
}

/// The directory of all orgs' indexes under a data dir.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("search")
}

pub fn org_dir(root: &Path, org: OrgId) -> PathBuf {
    root.join(org.0.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> Unusable {
    Unusable::Corrupt(e.to_string())
}

/// The generation `CURRENT` names, if any.
fn current(dir: &Path) -> Option<String> {
    let name = std::fs::read_to_string(dir.join("CURRENT")).ok()?;
    let name = name.trim();
    (name.starts_with("gen-") && !name.contains(['/', '\\', '.'])).then(|| name.to_string())
}

fn reader(index: &Index) -> tantivy::Result<IndexReader> {
    index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()
}

/// Opens the org's index in use, checking its format and payload (read-only:
/// `docket doctor` uses it while the service runs).
pub fn open(root: &Path, org: OrgId) -> Result<Opened, Unusable> {
    let dir = org_dir(root, org);
    let generation = current(&dir).ok_or(Unusable::Missing)?;
    let index = Index::open_in_dir(dir.join(&generation)).map_err(corrupt)?;
    schema::register(&index);
    let (expected, fields) = Fields::schema();
    let payload = index.load_metas().map_err(corrupt)?.payload.ok_or(Unusable::OldFormat { found: 0 })?;
    let payload: Payload = serde_json::from_str(&payload).map_err(|_| Unusable::OldFormat { found: 0 })?;
    if payload.format != FORMAT {
        return Err(Unusable::OldFormat { found: payload.format });
    }
    if index.schema() != expected {
        return Err(Unusable::OldFormat { found: payload.format });
    }
    let reader = reader(&index).map_err(corrupt)?;
    // Reading every segment's stores proves the files are there and whole.
    let searcher = reader.searcher();
    for segment in searcher.segment_readers() {
        segment.get_store_reader(1).map_err(corrupt)?;
        segment.inverted_index(fields.key).map_err(corrupt)?;
    }
    Ok(Opened { index, reader, fields, seq: payload.seq, generation })
}

/// Removes the generations other than `keep` (an interrupted rebuild, a swapped-out index).
pub fn remove_leftovers(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("gen-")
            && name != keep
            && let Err(e) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove an unused search index");
        }
    }
}

/// A new, empty generation beside the one in use (not yet in use).
pub fn create_next(root: &Path, org: OrgId) -> tantivy::Result<(String, Index)> {
    let dir = org_dir(root, org);
    std::fs::create_dir_all(&dir)?;
    let n = std::fs::read_dir(&dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("gen-").and_then(|n| n.parse::<u64>().ok()))
        .max()
        .map_or(1, |n| n + 1);
    let generation = format!("gen-{n}");
    let path = dir.join(&generation);
    std::fs::create_dir_all(&path)?;
    let (schema, _) = Fields::schema();
    let index = Index::create_in_dir(&path, schema)?;
    schema::register(&index);
    Ok((generation, index))
}

/// Merge threads of one writer: tantivy's default is four per writer (each
/// org's), more than two cores can use.
const MERGE_THREADS: usize = 1;

/// The writer of an index (one per index; only the indexer holds it): one
/// indexing thread, one merge thread, a heap of at most [`WRITER_HEAP`].
pub fn writer(index: &Index) -> tantivy::Result<IndexWriter> {
    let options = tantivy::indexer::IndexWriterOptions::builder()
        .num_worker_threads(1)
        .num_merge_threads(MERGE_THREADS)
        .memory_budget_per_thread(WRITER_HEAP)
        .build();
    index.writer_with_options(options)
}

/// Commits `writer` with the seq it now holds in the payload.
pub fn commit(writer: &mut IndexWriter, seq: u64) -> tantivy::Result<()> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&Payload::at(seq));
    prepared.commit()?;
    Ok(())
}

/// Puts `generation` in use atomically (write a temporary file, rename it
/// over `CURRENT`, sync the directory), then removes the others.
pub fn swap(root: &Path, org: OrgId, generation: &str) -> std::io::Result<()> {
    let dir = org_dir(root, org);
    let tmp = dir.join("CURRENT.tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(generation.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("CURRENT"))?;
    std::fs::File::open(&dir)?.sync_all()?;
    remove_leftovers(&dir, generation);
    Ok(())
}

/// Opens a freshly built generation for queries.
pub fn opened(index: Index, generation: String, seq: u64) -> tantivy::Result<Opened> {
    let reader = reader(&index)?;
    let (_, fields) = Fields::schema();
    Ok(Opened { index, reader, fields, seq, generation })
}

/// Bytes on disk of the org's index in use.
pub fn bytes_on_disk(root: &Path, org: OrgId, generation: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(org_dir(root, org).join(generation)) else { return 0 };
    entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// Every org index under `root` and whether it can be used: `(org id, seq or why not)`.
pub fn inspect(root: &Path) -> Vec<(u64, Result<u64, Unusable>)> {
    let Ok(entries) = std::fs::read_dir(root) else { return vec![] };
    let mut out: Vec<(u64, Result<u64, Unusable>)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u64>().ok())
        .map(|org| (org, open(root, OrgId(org)).map(|o| o.seq)))
        .collect();
    out.sort_by_key(|(org, _)| *org);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_puts_the_new_generation_in_use_and_removes_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let org = OrgId(3);
        assert_eq!(open(root, org).err(), Some(Unusable::Missing));
        let (g1, index) = create_next(root, org).unwrap();
        let mut w = writer(&index).unwrap();
        commit(&mut w, 7).unwrap();
        drop(w);
        assert_eq!(open(root, org).err(), Some(Unusable::Missing), "not in use before the swap");
        swap(root, org, &g1).unwrap();
        assert_eq!(open(root, org).unwrap().seq, 7);
        let (g2, _) = create_next(root, org).unwrap();
        assert_ne!(g1, g2);
        // A crash before the swap: the old generation stays in use, the new one is a leftover.
        let opened = open(root, org).unwrap();
        assert_eq!(opened.generation, g1);
        remove_leftovers(&org_dir(root, org), &opened.generation);
        assert!(!org_dir(root, org).join(&g2).exists(), "leftovers are removed");
    }

    #[test]
    fn payloads_of_another_format_or_none_are_old() {
        let dir = tempfile::tempdir().unwrap();
        let org = OrgId(1);
        let (g, index) = create_next(dir.path(), org).unwrap();
        let mut w = writer(&index).unwrap();
        w.commit().unwrap();
        drop(w);
        swap(dir.path(), org, &g).unwrap();
        assert_eq!(open(dir.path(), org).err(), Some(Unusable::OldFormat { found: 0 }));
        let mut w = writer(&index).unwrap();
        let mut p = w.prepare_commit().unwrap();
        p.set_payload(r#"{"format":0,"seq":1}"#);
        p.commit().unwrap();
        drop(w);
        assert_eq!(open(dir.path(), org).err(), Some(Unusable::OldFormat { found: 0 }));
        std::fs::write(org_dir(dir.path(), org).join(&g).join("meta.json"), b"{not json").unwrap();
        assert!(matches!(open(dir.path(), org).err(), Some(Unusable::Corrupt(_))));
        let found = inspect(dir.path());
        assert_eq!(found.len(), 1);
        assert!(matches!(found[0], (1, Err(Unusable::Corrupt(_)))), "{found:?}");
        assert!(inspect(&dir.path().join("none")).is_empty());
    }
}

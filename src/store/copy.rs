//! Whole-store copies: a consistent raw export of every table (for backups),
//! a restore that imports exported rows and replays journal entries into an
//! empty store keeping their `seq`, transaction ids and times, and a content
//! digest that proves two stores hold the same rows.
use super::journal::{self, Entry, Op};
use super::{
    JOURNAL, Kind, META, ReadTx, SCHEMA_VERSION, Store, StoreError, SystemContext, TABLES, TAIL, Table, Tail, Task, io,
    migrate, table_named,
};
use redb::{ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// Where an exported row lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The store's settings: schema version, writer, journal tail.
    Meta,
    /// One of [`TABLES`].
    Table(Table),
    /// The journal; keys are the seq, 8 bytes big-endian, values encoded entries.
    Journal,
}

impl Section {
    pub fn name(&self) -> &'static str {
        match self {
            Section::Meta => "meta",
            Section::Table(t) => t.name,
            Section::Journal => "journal",
        }
    }

    /// The section a backup names, if this docket has it.
    pub fn named(name: &str) -> Option<Section> {
        match name {
            "meta" => Some(Section::Meta),
            "journal" => Some(Section::Journal),
            other => table_named(other).map(Section::Table),
        }
    }
}

/// One exported row, as stored.
#[derive(Clone, Copy, Debug)]
pub struct RawRow<'a> {
    pub section: Section,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl RawRow<'_> {
    /// The journal tail (`seq`, commit time in microseconds) if this is the
    /// meta row that records it (a backup's manifest names both).
    pub fn journal_tail(&self) -> Result<Option<(u64, i64)>, StoreError> {
        if self.section != Section::Meta || self.key != TAIL.as_bytes() {
            return Ok(None);
        }
        let tail = Tail::decode(self.value)?;
        Ok(Some((tail.seq, tail.time)))
    }
}

/// Rows and content hash of one part of the store: a tenant table's rows of
/// one org (`records/org 7`), or a whole appliance or index table (`tokens`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartDigest {
    pub rows: u64,
    /// SHA-256 (hex) over each row's key and value, length-prefixed, in key order.
    pub sha256: String,
}

/// Per-part digests, fed rows in key order (as an export or a scan visits them).
#[derive(Default)]
pub struct Digester {
    parts: BTreeMap<String, (u64, Sha256)>,
}

impl Digester {
    pub fn add(&mut self, table: &Table, key: &[u8], value: &[u8]) {
        let part = match (table.kind, key.first_chunk::<8>()) {
            (Kind::Tenant, Some(org)) => format!("{}/org {}", table.name, u64::from_be_bytes(*org)),
            _ => table.name.to_string(),
        };
        let (rows, hash) = self.parts.entry(part).or_insert_with(|| (0, Sha256::new()));
        *rows += 1;
        for bytes in [key, value] {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
    }

    pub fn finish(self) -> BTreeMap<String, PartDigest> {
        self.parts
            .into_iter()
            .map(|(part, (rows, hash))| (part, PartDigest { rows, sha256: hex::encode(hash.finalize()) }))
            .collect()
    }
}

/// A meta key that marks a restore in progress (so it can resume).
const RESTORING: &str = "restoring";

impl Store {
    /// Visits every row of `meta`, of every table in [`TABLES`] (in that order)
    /// and of the journal, all in one read transaction; returns that snapshot's
    /// journal head. Rows are as stored (ciphertext stays sealed).
    pub fn export(
        &self,
        ctx: &SystemContext,
        mut visit: impl FnMut(RawRow<'_>) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        tracing::info!(task = ctx.task(), "exporting every table");
        self.read(|r| {
            let meta = r.tx.open_table(META).map_err(io)?;
            for row in meta.iter().map_err(io)? {
                let (k, v) = row.map_err(io)?;
                visit(RawRow { section: Section::Meta, key: k.value().as_bytes(), value: v.value() })?;
            }
            for table in TABLES {
                visit_table(r, table, |key, value| visit(RawRow { section: Section::Table(*table), key, value }))?;
            }
            let journal = r.tx.open_table(JOURNAL).map_err(io)?;
            for row in journal.iter().map_err(io)? {
                let (k, v) = row.map_err(io)?;
                visit(RawRow { section: Section::Journal, key: &k.value().to_be_bytes(), value: v.value() })?;
            }
            r.journal_head()
        })
    }

    /// A SHA-256 (hex) over every row of every table in [`TABLES`], journal and
    /// meta excluded: equal digests mean equal contents.
    pub fn digest(&self) -> Result<String, StoreError> {
        self.read(|r| {
            let mut hash = Sha256::new();
            for table in TABLES {
                hash.update([table.name.len() as u8]);
                hash.update(table.name.as_bytes());
                visit_table(r, table, |key, value| {
                    for part in [key, value] {
                        hash.update((part.len() as u64).to_le_bytes());
                        hash.update(part);
                    }
                    Ok(())
                })?;
                hash.update([0xff]);
            }
            Ok(hex::encode(hash.finalize()))
        })
    }

    /// Per-part digests ([`Digester`]) of every table in [`TABLES`] and the
    /// journal head, from one snapshot: the store's content at that seq.
    pub fn digests(&self) -> Result<(u64, BTreeMap<String, PartDigest>), StoreError> {
        self.read(|r| {
            let mut digester = Digester::default();
            for table in TABLES {
                visit_table(r, table, |key, value| {
                    digester.add(table, key, value);
                    Ok(())
                })?;
            }
            Ok((r.journal_head()?, digester.finish()))
        })
    }

    /// Starts (or resumes) a restore into this store, which must be empty:
    /// no row in any table and no journal entry.
    pub fn restore(&self, ctx: &SystemContext) -> Result<Restore<'_>, StoreError> {
        tracing::info!(task = ctx.task(), path = %self.path.display(), "restoring into the store");
        let resuming = self.meta_bytes(RESTORING)?.is_some();
        if !resuming && !self.is_empty()? {
            return Err(StoreError::Refused {
                problem: format!(
                    "the store {} is not empty; a restore or replay writes only into a new, empty store (point `data_dir` at an empty directory)",
                    self.path.display()
                ),
            });
        }
        let tx = self.db.begin_write().map_err(io)?;
        tx.open_table(META).map_err(io)?.insert(RESTORING, [1u8].as_slice()).map_err(io)?;
        tx.commit().map_err(io)?;
        Ok(Restore { store: self })
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        self.read(|r| {
            for table in TABLES {
                if let Some(t) = r.open(table)?
                    && t.first().map_err(io)?.is_some()
                {
                    return Ok(false);
                }
            }
            Ok(r.journal_head()? == 0)
        })
    }
}

/// Visits every row of `table` in the snapshot `r` (none if it does not exist).
fn visit_table(
    r: &ReadTx,
    table: &Table,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let Some(t) = r.open(table)? else { return Ok(()) };
    for row in t.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        visit(k.value(), v.value())?;
    }
    Ok(())
}

/// A restore in progress: exported rows and journal entries go in as they
/// were, keeping `seq`, transaction ids and times; nothing is journaled anew.
/// It does not stop other writers: restore into a store nothing else uses.
/// Until [`Restore::finish`], [`Store::restore`] may resume it.
pub struct Restore<'a> {
    store: &'a Store,
}

impl Restore<'_> {
    /// Writes exported rows (any sections, any order) in one transaction;
    /// returns how many. Refuses a schema newer than this docket's.
    pub fn import<'r>(&self, rows: impl IntoIterator<Item = RawRow<'r>>) -> Result<u64, StoreError> {
        let tx = self.store.db.begin_write().map_err(io)?;
        let mut count = 0;
        for row in rows {
            match row.section {
                Section::Meta => {
                    let key = std::str::from_utf8(row.key)
                        .map_err(|_| StoreError::Corrupt("an exported meta key is not UTF-8".into()))?;
                    check_meta(key, row.value)?;
                    tx.open_table(META).map_err(io)?.insert(key, row.value).map_err(io)?;
                }
                Section::Table(table) => {
                    tx.open_table(table.def()).map_err(io)?.insert(row.key, row.value).map_err(io)?;
                }
                Section::Journal => {
                    let seq = row
                        .key
                        .try_into()
                        .map(u64::from_be_bytes)
                        .map_err(|_| StoreError::Corrupt("an exported journal key is not 8 bytes".into()))?;
                    tx.open_table(JOURNAL).map_err(io)?.insert(seq, row.value).map_err(io)?;
                }
            }
            count += 1;
        }
        tx.commit().map_err(io)?;
        Ok(count)
    }

    /// Applies whole transactions of journal entries in one write transaction,
    /// keeping their seq, transaction ids and times. They must continue the
    /// store's journal (seq above its head, time not below its last), end with
    /// a commit marker, and be written under a schema whose rows this docket reads.
    pub fn replay(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let Some(end) = entries.last() else { return Ok(()) };
        if !end.last {
            return Err(invalid_replay(end.seq, "ends inside a transaction; replay whole transactions"));
        }
        let tx = self.store.db.begin_write().map_err(io)?;
        let mut tail = Tail::read(&tx.open_table(META).map_err(io)?)?;
        for entry in entries {
            if entry.seq <= tail.seq || entry.tx < tail.tx || entry.time < tail.time {
                return Err(invalid_replay(
                    entry.seq,
                    &format!("does not follow seq {} (tx {}, time {})", tail.seq, tail.tx, tail.time),
                ));
            }
            if !migrate::replayable(entry.schema) {
                return Err(invalid_replay(
                    entry.seq,
                    &format!("was written under schema {}; this docket replays up to {SCHEMA_VERSION}", entry.schema),
                ));
            }
            apply(&tx, entry)?;
            tx.open_table(JOURNAL).map_err(io)?.insert(entry.seq, entry.encode().as_slice()).map_err(io)?;
            tail = Tail { seq: entry.seq, tx: entry.tx, time: entry.time };
        }
        tx.open_table(META).map_err(io)?.insert(TAIL, tail.encode().as_slice()).map_err(io)?;
        tx.commit().map_err(io)?;
        self.store.head.send_replace(tail.seq);
        Ok(())
    }

    /// Ends the restore: migrates imported rows of an older schema, checks
    /// every retained journal entry reads (an export of a pruned journal
    /// starts past 1), and returns the journal head.
    pub fn finish(self) -> Result<u64, StoreError> {
        self.store.migrate(migrate::MIGRATIONS)?;
        let tail = self.store.journal_head()?;
        let mut after = self.store.journal_start()?.map_or(tail, |start| start.saturating_sub(1));
        loop {
            let batch = self.store.journal_since(&SystemContext::new(Task::Restore), after, 1 << 20)?;
            if let Some(bad) = batch.bad {
                return Err(bad.into());
            }
            if batch.entries.is_empty() {
                break;
            }
            after = batch.next_after(after);
        }
        let tx = self.store.db.begin_write().map_err(io)?;
        tx.open_table(META).map_err(io)?.remove(RESTORING).map_err(io)?;
        tx.commit().map_err(io)?;
        let head = self.store.journal_head()?;
        self.store.head.send_replace(head);
        Ok(head)
    }
}

fn invalid_replay(seq: u64, problem: &str) -> StoreError {
    StoreError::Invalid { field: "entries", problem: format!("entry {seq} {problem}") }
}

fn check_meta(key: &str, value: &[u8]) -> Result<(), StoreError> {
    if key == "schema_version"
        && let Ok(bytes) = <[u8; 4]>::try_from(value)
        && u32::from_le_bytes(bytes) > SCHEMA_VERSION
    {
        return Err(StoreError::Refused {
            problem: format!(
                "the export is of schema {}; this docket reads schema {SCHEMA_VERSION} at most; restore it with a newer docket",
                u32::from_le_bytes(bytes)
            ),
        });
    }
    Ok(())
}

/// Applies one entry's change to its table (`meta` included).
fn apply(tx: &redb::WriteTransaction, entry: &Entry) -> Result<(), StoreError> {
    if entry.table == "meta" {
        let key = std::str::from_utf8(&entry.key)
            .map_err(|_| journal::BadEntry { seq: entry.seq, problem: "its meta key is not UTF-8".into() })?;
        let mut meta = tx.open_table(META).map_err(io)?;
        match &entry.op {
            Op::Put(v) => meta.insert(key, v.as_slice()).map(drop).map_err(io)?,
            Op::Delete => meta.remove(key).map(drop).map_err(io)?,
        }
        return Ok(());
    }
    let table = table_named(&entry.table).ok_or_else(|| journal::BadEntry {
        seq: entry.seq,
        problem: format!("its table `{}` is unknown to this docket", entry.table),
    })?;
    let def: TableDefinition<&[u8], &[u8]> = table.def();
    let mut t = tx.open_table(def).map_err(io)?;
    match &entry.op {
        Op::Put(v) => t.insert(entry.key.as_slice(), v.as_slice()).map(drop).map_err(io),
        Op::Delete => t.remove(entry.key.as_slice()).map(drop).map_err(io),
    }
}

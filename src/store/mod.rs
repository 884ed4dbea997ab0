//! The embedded redb store: the only code that writes docket's data to disk.
//!
//! - One file, `<data_dir>/docket.redb`, created 0600 in a 0700 directory.
//! - Every write goes through [`Store::write`]; each `put`/`delete` in it appends
//!   a journal entry in the same transaction (see [`journal`]; the follower API
//!   is in [`follow`], export, restore and digest in [`copy`]).
//! - Tenancy by type: tenant tables ([`TenantTable`]) are keyed
//!   `org_id (8 bytes BE) ++ key` and reached only through an [`OrgScope`];
//!   appliance tables ([`SystemTable`]) and org-owned indexes ([`IndexTable`])
//!   are written with a [`SystemContext`], an index row always naming its org.
//!   Only this module makes tables, so no table can be forged, and a tenant
//!   table cannot be read as a system one (each `compile_fail` below differs
//!   from the example that compiles by the one forbidden step):
//!
//! ```
//! use docket::store::{ReadTx, RECORDS, TABLES, TOKENS, Table};
//! fn allowed(r: &ReadTx) {
//!     let _ = r.scan_system(&TOKENS, b"");
//!     let listed: Table = TABLES[0];
//!     let _ = (listed.name(), RECORDS.name());
//! }
//! ```
//!
//! ```compile_fail
//! use docket::store::{ReadTx, RECORDS};
//! fn leak(r: &ReadTx) {
//!     let _ = r.scan_system(&RECORDS, b""); // every org's records, no scope
//! }
//! ```
//!
//! ```compile_fail
//! let forged = docket::store::SystemTable(docket::store::TABLES[12]);
//! ```
//!
//! ```compile_fail
//! let forged = docket::store::Table { name: "records", kind: docket::store::Kind::System };
//! ```
//!
//! - A schema version in the `meta` table, forward migrations on open (see
//!   [`migrate`]), and a clear refusal of a file written by a newer docket.
pub mod copy;
pub mod follow;
pub mod journal;
mod migrate;
pub mod orgs;
mod redact;
pub mod scope;

use crate::clock::Clock;
use crate::secrets::{Keyring, Sealer, SecretBytes, SecretsError};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

pub use copy::{Digester, PartDigest, RawRow, Restore, Section};
pub use follow::{Batch, Follower};
pub use journal::{BadEntry, Entry as JournalEntry, Op};
pub use scope::{Actor, OrgId, OrgScope, OrgTask, OrgTaskContext, SystemContext, Task};

/// Rows of a table: (key, value) pairs.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

type BytesTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The store's page cache.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The schema this binary writes. Bump it with a new entry in `migrate::MIGRATIONS`.
/// Schema 2: journal format v2 (versioned entries, transaction ids and commit
/// markers, monotonic time, the org of every org-owned row, journaled meta).
/// Schema 3: the `record_index` table, built for stored records.
pub const SCHEMA_VERSION: u32 = 3;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// The meta key holding the last committed `seq | tx | time`: the journal's
/// own bookkeeping (kept when entries are pruned, never journaled).
const TAIL: &str = "journal_tail";

/// Whose rows a table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One org's rows, keyed `org id ++ key` ([`TenantTable`]).
    Tenant,
    /// The appliance's own rows ([`SystemTable`]).
    System,
    /// A system-keyed index whose rows each belong to one org ([`IndexTable`]).
    Index,
}

/// A table of the store as [`TABLES`] lists it: a name and a kind. Only this
/// module makes tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    name: &'static str,
    kind: Kind,
}

impl Table {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn def(&self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

/// A table of one org's rows, reached only through an [`OrgScope`].
#[derive(Clone, Copy, Debug)]
pub struct TenantTable(Table);

/// A table of the appliance's own rows.
#[derive(Clone, Copy, Debug)]
pub struct SystemTable(Table);

/// A system-keyed index (token hash, session id, sign-in name…) whose rows each
/// belong to one org: writes name that org, so the journal records it.
#[derive(Clone, Copy, Debug)]
pub struct IndexTable(Table);

impl TenantTable {
    pub fn name(&self) -> &'static str {
        self.0.name
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A table keyed without an org prefix: [`SystemTable`] or [`IndexTable`].
pub trait SystemKeyed: sealed::Sealed {
    fn table(&self) -> &Table;
}

impl sealed::Sealed for SystemTable {}
impl sealed::Sealed for IndexTable {}
impl SystemKeyed for SystemTable {
    fn table(&self) -> &Table {
        &self.0
    }
}
impl SystemKeyed for IndexTable {
    fn table(&self) -> &Table {
        &self.0
    }
}

const fn tenant(name: &'static str) -> TenantTable {
    TenantTable(Table { name, kind: Kind::Tenant })
}

const fn system(name: &'static str) -> SystemTable {
    SystemTable(Table { name, kind: Kind::System })
}

const fn index(name: &'static str) -> IndexTable {
    IndexTable(Table { name, kind: Kind::Index })
}

/// Org records, keyed by org id (each row is its org's).
pub const ORGS: IndexTable = index("orgs");
/// Org slug → org id.
pub const ORG_SLUGS: IndexTable = index("org_slugs");
/// Sealed secrets of an org, keyed by name (tenant; values are age ciphertext).
pub const SECRETS: TenantTable = tenant("secrets");
/// Sealed secrets of the appliance itself, e.g. the ACME account (system).
pub const SYSTEM_SECRETS: SystemTable = system("system_secrets");
/// API token hash → token record (index; each record names its org).
pub const TOKENS: IndexTable = index("tokens");

/// Audit events of an org, keyed by seq (tenant; see `audit`).
pub const AUDIT: TenantTable = tenant("audit");
/// The head (last seq and hash) of each org's audit chain (tenant).
pub const AUDIT_HEAD: TenantTable = tenant("audit_head");

/// Members of an org, keyed by user id (tenant).
pub const USERS: TenantTable = tenant("users");
/// Sign-in names → member: `email:<address>` and `oidc:<provider>:<subject>` (index).
pub const LOGINS: IndexTable = index("logins");
/// Browser session id hash → session (index; each record names its org).
pub const SESSIONS: IndexTable = index("sessions");
/// Custom roles of an org, keyed by name (tenant).
pub const ROLES: TenantTable = tenant("roles");

/// Ethical walls of an org, keyed by wall id (tenant).
pub const WALLS: TenantTable = tenant("walls");
/// The org's copy of its Clio data, keyed by kind byte ++ Clio id (tenant; see `clio::sync`).
pub const RECORDS: TenantTable = tenant("records");
/// The org's Clio connection (tenant; secrets apart, sealed).
pub const CLIO: TenantTable = tenant("clio");
/// Webhook endpoint name → org (index; see `clio::webhooks`).
pub const HOOKS: IndexTable = index("webhook_hooks");
/// Sync checkpoints, keyed by kind (tenant).
pub const SYNC_STATE: TenantTable = tenant("sync_state");
/// The records' secondary index: `kind | field | value | record id`, empty
/// values (tenant; see `data::index`). Written with its record, journaled.
pub const RECORD_INDEX: TenantTable = tenant("record_index");
/// Runs of the appliance's scheduled jobs, keyed `job name ++ 0 ++ start`
/// (system; see `lifecycle::jobs`).
pub const JOB_RUNS: SystemTable = system("job_runs");
/// Runs of an org's own scheduled jobs (its Clio sync), keyed like `job_runs` (tenant).
pub const ORG_JOB_RUNS: TenantTable = tenant("org_job_runs");
/// Outbound webhook endpoints, feed positions, queued and finished deliveries (tenant; see `outbound`).
pub const OUTBOUND: TenantTable = tenant("outbound_webhooks");

/// Every byte-keyed table: backups, digests and integrity checks walk this list.
pub const TABLES: &[Table] = &[
    ORGS.0,
    ORG_SLUGS.0,
    SECRETS.0,
    SYSTEM_SECRETS.0,
    TOKENS.0,
    AUDIT.0,
    AUDIT_HEAD.0,
    USERS.0,
    LOGINS.0,
    SESSIONS.0,
    ROLES.0,
    WALLS.0,
    RECORDS.0,
    SYNC_STATE.0,
    CLIO.0,
    HOOKS.0,
    RECORD_INDEX.0,
    JOB_RUNS.0,
    ORG_JOB_RUNS.0,
    OUTBOUND.0,
];
/// The tables whose values are sealed, re-sealed by key rotation.
const SEALED_TABLES: &[Table] = &[SECRETS.0, SYSTEM_SECRETS.0];

/// The table named `name`, if the store has one.
pub fn table_named(name: &str) -> Option<Table> {
    TABLES.iter().find(|t| t.name == name).copied()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store {path} was written by a newer docket (schema {found}, written by docket {writer}); this docket {ours} reads schema {SCHEMA_VERSION} at most\n  fix: run docket {writer} or newer, or restore a backup taken by this version"
    )]
    TooNew { path: String, found: u32, writer: String, ours: &'static str },
    #[error(
        "the store {path} is in use by another docket process\n  fix: stop the other process, or run this command while the service is up so it goes through its admin socket"
    )]
    Locked { path: String },
    #[error("cannot open the store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("storage error: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A journal entry that cannot be read (unknown version or op, truncated).
    #[error("{0}\n  fix: restore the store from a backup; the entries before it are intact")]
    Journal(#[from] BadEntry),
    #[error("{0}")]
    Secrets(#[from] SecretsError),
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("{what} was not found")]
    NotFound { what: String },
    #[error("`{field}` {problem}")]
    Invalid { field: &'static str, problem: String },
    /// The change is refused as things stand (409), e.g. deleting a role in use.
    #[error("{problem}")]
    Refused { problem: String },
    /// The caller may not make this change (403), e.g. granting a role above their own.
    #[error("{problem}")]
    Denied { problem: String },
    /// A request names a role the firm does not have (422 `unknown-role`).
    #[error(
        "`{field}`: `{name}` is not a role of this firm; use a built-in role (owner, admin, manager, staff, auditor) or create the custom role first"
    )]
    UnknownRole { field: &'static str, name: String },
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// The store.
pub struct Store {
    db: redb::Database,
    clock: Clock,
    path: PathBuf,
    /// The journal head, sent after each commit that journaled something.
    head: tokio::sync::watch::Sender<u64>,
    /// What each registered journal follower has durably applied.
    followers: follow::Followers,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store file, then migrates it forward.
    pub fn open(path: &Path, clock: Clock) -> Result<Store, StoreError> {
        Self::open_with(path, clock, migrate::MIGRATIONS)
    }

    fn open_with(path: &Path, clock: Clock, migrations: &[migrate::Migration]) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            crate::secrets::create_private_dir(dir)
                .map_err(|e| StoreError::Open { path: dir.display().to_string(), reason: e.to_string() })?;
        }
        // redb caches up to 1 GiB by default; a bounded cache keeps the appliance's
        // memory flat however large the firm (the OS page cache still helps reads).
        let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: shown.clone() },
            other => StoreError::Open { path: shown.clone(), reason: other.to_string() },
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Open { path: shown.clone(), reason: e.to_string() })?;
        let (head, _) = tokio::sync::watch::channel(0);
        let store = Store { db, clock, path: path.to_path_buf(), head, followers: Default::default() };
        store.migrate(migrations)?;
        store.head.send_replace(store.journal_head()?);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the store file at `path` without migrating it:
    /// `None` when there is no file or it records no version. (redb has no
    /// read-only open: this opens the file, reads `meta`, and closes it.)
    pub fn peek_schema(path: &Path) -> Result<Option<u32>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let shown = path.display().to_string();
        let db = redb::Database::open(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: shown.clone() },
            other => StoreError::Open { path: shown.clone(), reason: other.to_string() },
        })?;
        let head = tokio::sync::watch::Sender::new(0);
        Store { db, clock: Clock::system(), path: path.to_path_buf(), head, followers: Default::default() }
            .schema_version()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The schema version recorded in the file, if it has one.
    pub fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        let Some(bytes) = self.meta_bytes("schema_version")? else {
            return Ok(None);
        };
        let arr: [u8; 4] = bytes.try_into().map_err(|_| StoreError::Corrupt("schema_version".into()))?;
        Ok(Some(u32::from_le_bytes(arr)))
    }

    fn meta_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let meta = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        Ok(meta.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn meta_string(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.meta_bytes(key)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Runs `f` in one write transaction; commits if it returns `Ok`, then
    /// tells subscribers the new journal head.
    pub fn write<R>(&self, f: impl FnOnce(&mut Tx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        let mut w = Tx::begin(tx, self.clock.now_micros(), SCHEMA_VERSION)?;
        let out = f(&mut w)?;
        self.commit(w)?;
        Ok(out)
    }

    fn commit(&self, w: Tx) -> Result<(), StoreError> {
        if let Some(head) = w.commit()? {
            // Writers commit one at a time but may notify out of order: the head only moves up.
            self.head.send_if_modified(|seen| {
                let newer = head > *seen;
                if newer {
                    *seen = head;
                }
                newer
            });
        }
        Ok(())
    }

    /// Runs `f` against a consistent snapshot.
    pub fn read<R>(&self, f: impl FnOnce(&ReadTx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        f(&ReadTx { tx })
    }

    /// The highest journal sequence number committed so far (0 when none),
    /// pruned entries included.
    pub fn journal_head(&self) -> Result<u64, StoreError> {
        self.read(|r| r.journal_head())
    }

    /// Re-seals every sealed value from `old` to `new` in one transaction.
    /// Returns how many values were re-sealed.
    /// `then` runs last in the same transaction (the caller records the rotation
    /// and puts the new key in force there).
    pub fn reseal_all(
        &self,
        ctx: &SystemContext,
        old: &Keyring,
        new: &Keyring,
        then: impl FnOnce(&mut Tx) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        tracing::info!(task = ctx.task(), "re-sealing every secret under a new master key");
        self.write(|w| {
            let mut count = 0;
            for table in SEALED_TABLES {
                for (key, ciphertext) in w.scan_raw(table, &[])? {
                    let clear = old.open(&ciphertext)?;
                    let sealed = new.seal(clear.expose())?;
                    w.put_raw(table, org_of_key(table, &key), &key, &sealed)?;
                    count += 1;
                }
            }
            then(w)?;
            Ok(count)
        })
    }
}

/// The org of a tenant row, from its key prefix.
fn org_of_key(table: &Table, full_key: &[u8]) -> Option<OrgId> {
    match table.kind {
        Kind::System | Kind::Index => None,
        Kind::Tenant => full_key.get(..8).and_then(|p| p.try_into().ok()).map(|p| OrgId(u64::from_be_bytes(p))),
    }
}

fn tenant_key(scope: &OrgScope, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(8 + key.len());
    full.extend_from_slice(&scope.org().prefix());
    full.extend_from_slice(key);
    full
}

fn strip_org(rows: Rows) -> Rows {
    rows.into_iter().map(|(k, v)| (k[8..].to_vec(), v)).collect()
}

/// The last committed `seq`, transaction id and time (all 0 / earliest when none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tail {
    seq: u64,
    tx: u64,
    time: i64,
}

impl Tail {
    const EMPTY: Tail = Tail { seq: 0, tx: 0, time: i64::MIN };

    fn encode(self) -> [u8; 24] {
        let mut out = [0; 24];
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.tx.to_le_bytes());
        out[16..].copy_from_slice(&self.time.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Tail, StoreError> {
        let field = |at: usize| -> Result<[u8; 8], StoreError> {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("meta `{TAIL}` has {} bytes, not 24", bytes.len())))
        };
        Ok(Tail {
            seq: u64::from_le_bytes(field(0)?),
            tx: u64::from_le_bytes(field(8)?),
            time: i64::from_le_bytes(field(16)?),
        })
    }

    fn read(meta: &impl redb::ReadableTable<&'static str, &'static [u8]>) -> Result<Tail, StoreError> {
        match meta.get(TAIL).map_err(io)? {
            Some(v) => Tail::decode(v.value()),
            None => Ok(Tail::EMPTY),
        }
    }
}

/// A write transaction. Every mutation is journaled.
pub struct Tx {
    tx: redb::WriteTransaction,
    /// This transaction's id.
    id: u64,
    next_seq: u64,
    time: i64,
    /// The schema entries are written under.
    schema: u32,
    /// The latest entry, held back so it can carry the commit marker.
    pending: Option<(u64, Vec<u8>)>,
}

impl Tx {
    /// Starts journaling after the last commit; time never goes below its time.
    fn begin(tx: redb::WriteTransaction, now: i64, schema: u32) -> Result<Tx, StoreError> {
        let tail = Tail::read(&tx.open_table(META).map_err(io)?)?;
        Ok(Tx { tx, id: tail.tx + 1, next_seq: tail.seq + 1, time: now.max(tail.time), schema, pending: None })
    }

    /// Marks the last entry, records the tail and commits; returns the new
    /// journal head if anything was journaled.
    fn commit(mut self) -> Result<Option<u64>, StoreError> {
        let head = match self.pending.take() {
            Some((seq, mut bytes)) => {
                journal::mark_last(&mut bytes);
                self.tx.open_table(JOURNAL).map_err(io)?.insert(seq, bytes.as_slice()).map_err(io)?;
                let tail = Tail { seq, tx: self.id, time: self.time };
                self.tx.open_table(META).map_err(io)?.insert(TAIL, tail.encode().as_slice()).map_err(io)?;
                Some(seq)
            }
            None => None,
        };
        self.tx.commit().map_err(io)?;
        Ok(head)
    }

    /// Time of this transaction, microseconds since the epoch (never earlier
    /// than the previous commit's).
    pub fn time(&self) -> i64 {
        self.time
    }

    fn put_raw(&mut self, table: &Table, org: Option<OrgId>, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tx.open_table(table.def()).map_err(io)?.insert(key, value).map_err(io)?;
        self.journal(org, table.name, key, Some(value))
    }

    fn delete_raw(&mut self, table: &Table, org: Option<OrgId>, key: &[u8]) -> Result<bool, StoreError> {
        let existed = self.tx.open_table(table.def()).map_err(io)?.remove(key).map_err(io)?.is_some();
        if existed {
            self.journal(org, table.name, key, None)?;
        }
        Ok(existed)
    }

    /// Writes a `meta` setting, journaled (a migration's schema, for one).
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tx.open_table(META).map_err(io)?.insert(key, value).map_err(io)?;
        self.journal(None, "meta", key.as_bytes(), Some(value))
    }

    /// Journals a put of `value` (a delete when `None`) of `key`.
    fn journal(&mut self, org: Option<OrgId>, table: &str, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let header = journal::Header { schema: self.schema, tx: self.id, last: false, time: self.time, org };
        let bytes = journal::encode(header, table, key, value);
        if let Some((seq, bytes)) = self.pending.replace((self.next_seq, bytes)) {
            self.tx.open_table(JOURNAL).map_err(io)?.insert(seq, bytes.as_slice()).map_err(io)?;
        }
        self.next_seq += 1;
        Ok(())
    }

    fn get_raw(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.tx.open_table(table.def()).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn scan_raw(&self, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError> {
        let t = self.tx.open_table(table.def()).map_err(io)?;
        collect_prefix(&t, prefix)
    }

    /// Stores `value` under `key` in one org's table.
    pub fn put(&mut self, scope: &OrgScope, table: &TenantTable, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.put_raw(&table.0, Some(scope.org()), &tenant_key(scope, key), value)
    }

    /// Removes `key` from one org's table; returns whether it existed.
    pub fn delete(&mut self, scope: &OrgScope, table: &TenantTable, key: &[u8]) -> Result<bool, StoreError> {
        self.delete_raw(&table.0, Some(scope.org()), &tenant_key(scope, key))
    }

    pub fn get(&self, scope: &OrgScope, table: &TenantTable, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_raw(&table.0, &tenant_key(scope, key))
    }

    /// Every row of one org's table whose key starts with `prefix` (keys without the org prefix).
    pub fn scan(&self, scope: &OrgScope, table: &TenantTable, prefix: &[u8]) -> Result<Rows, StoreError> {
        Ok(strip_org(self.scan_raw(&table.0, &tenant_key(scope, prefix))?))
    }

    /// Every row of a system table or index whose key starts with `prefix`.
    pub fn scan_system(&self, table: &impl SystemKeyed, prefix: &[u8]) -> Result<Rows, StoreError> {
        self.scan_raw(table.table(), prefix)
    }

    /// Up to `max` rows of one org's table whose keys start with `prefix`,
    /// from key `start` (inclusive) on; keys without the org prefix. For work
    /// on many rows in one transaction, a chunk at a time.
    pub fn scan_chunk(
        &self,
        scope: &OrgScope,
        table: &TenantTable,
        prefix: &[u8],
        start: &[u8],
        max: usize,
    ) -> Result<Rows, StoreError> {
        let t = self.tx.open_table(table.0.def()).map_err(io)?;
        let full_prefix = tenant_key(scope, prefix);
        let from = tenant_key(scope, start).max(full_prefix.clone());
        let mut out = vec![];
        for row in t.range::<&[u8]>(from.as_slice()..).map_err(io)?.take(max) {
            let (k, v) = row.map_err(io)?;
            if !k.value().starts_with(&full_prefix) {
                break;
            }
            out.push((k.value()[8..].to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Stores `value` under `key` in an appliance table.
    pub fn put_system(
        &mut self,
        _ctx: &SystemContext,
        table: &SystemTable,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.put_raw(&table.0, None, key, value)
    }

    pub fn delete_system(&mut self, _ctx: &SystemContext, table: &SystemTable, key: &[u8]) -> Result<bool, StoreError> {
        self.delete_raw(&table.0, None, key)
    }

    /// Stores `value` under `key` in an index, as a row of `org`.
    pub fn put_index(
        &mut self,
        _ctx: &SystemContext,
        table: &IndexTable,
        org: OrgId,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.put_raw(&table.0, Some(org), key, value)
    }

    /// Removes `key`, a row of `org`, from an index; returns whether it existed.
    pub fn delete_index(
        &mut self,
        _ctx: &SystemContext,
        table: &IndexTable,
        org: OrgId,
        key: &[u8],
    ) -> Result<bool, StoreError> {
        self.delete_raw(&table.0, Some(org), key)
    }

    /// Removes an index row whose value cannot be read, so whose org is
    /// unknown (journaled with no org); returns whether it existed.
    pub fn delete_index_unowned(
        &mut self,
        _ctx: &SystemContext,
        table: &IndexTable,
        key: &[u8],
    ) -> Result<bool, StoreError> {
        self.delete_raw(&table.0, None, key)
    }

    pub fn get_system(&self, table: &impl SystemKeyed, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_raw(table.table(), key)
    }

    /// JSON-encodes and stores a tenant record.
    pub fn put_json<T: Serialize>(
        &mut self,
        scope: &OrgScope,
        table: &TenantTable,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.put(scope, table, key, &encode_json(value)?)
    }

    /// JSON-encodes and stores an appliance record.
    pub fn put_system_json<T: Serialize>(
        &mut self,
        ctx: &SystemContext,
        table: &SystemTable,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.put_system(ctx, table, key, &encode_json(value)?)
    }

    /// JSON-encodes and stores an index row of `org`.
    pub fn put_index_json<T: Serialize>(
        &mut self,
        ctx: &SystemContext,
        table: &IndexTable,
        org: OrgId,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.put_index(ctx, table, org, key, &encode_json(value)?)
    }

    /// The greatest key of a system table keyed by 8-byte ids.
    pub fn last_system_key(&self, table: &impl SystemKeyed) -> Result<Option<[u8; 8]>, StoreError> {
        let t = self.tx.open_table(table.table().def()).map_err(io)?;
        Ok(t.last().map_err(io)?.and_then(|(k, _)| k.value().try_into().ok()))
    }

    /// Seals `plaintext` with the master key and stores it as an org secret.
    pub fn put_secret(
        &mut self,
        scope: &OrgScope,
        keys: &impl Sealer,
        name: &str,
        plaintext: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = keys.seal(plaintext)?;
        self.put(scope, &SECRETS, name.as_bytes(), &sealed)
    }

    /// Seals and stores a secret of the appliance itself.
    pub fn put_system_secret(
        &mut self,
        ctx: &SystemContext,
        keys: &impl Sealer,
        name: &str,
        plaintext: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = keys.seal(plaintext)?;
        self.put_system(ctx, &SYSTEM_SECRETS, name.as_bytes(), &sealed)
    }
}

/// A read-only snapshot.
pub struct ReadTx {
    tx: redb::ReadTransaction,
}

impl ReadTx {
    fn open(&self, table: &Table) -> Result<Option<BytesTable>, StoreError> {
        match self.tx.open_table(table.def()) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    fn get_raw(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(t) = self.open(table)? else {
            return Ok(None);
        };
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    /// The journal head of this snapshot: every change up to it, none after,
    /// is what this snapshot reads (so a scan and its head agree).
    pub fn journal_head(&self) -> Result<u64, StoreError> {
        match self.tx.open_table(META) {
            Ok(meta) => Ok(Tail::read(&meta)?.seq),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(io(e)),
        }
    }

    pub fn get(&self, scope: &OrgScope, table: &TenantTable, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_raw(&table.0, &tenant_key(scope, key))
    }

    pub fn get_system(&self, table: &impl SystemKeyed, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_raw(table.table(), key)
    }

    /// Every row of one org's table whose key starts with `prefix`; keys are
    /// returned without the org prefix.
    pub fn scan(&self, scope: &OrgScope, table: &TenantTable, prefix: &[u8]) -> Result<Rows, StoreError> {
        let Some(t) = self.open(&table.0)? else {
            return Ok(vec![]);
        };
        Ok(strip_org(collect_prefix(&t, &tenant_key(scope, prefix))?))
    }

    /// Visits the rows of one org's table whose keys start with `prefix`, from
    /// key `start` (inclusive) on, until `visit` returns false. Keys are given
    /// without the org prefix. Reads lazily: a page costs what it visits.
    pub fn visit(
        &self,
        scope: &OrgScope,
        table: &TenantTable,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let Some(t) = self.open(&table.0)? else { return Ok(()) };
        let full_prefix = tenant_key(scope, prefix);
        let from = tenant_key(scope, start).max(full_prefix.clone());
        for row in t.range::<&[u8]>(from.as_slice()..).map_err(io)? {
            let (k, v) = row.map_err(io)?;
            if !k.value().starts_with(&full_prefix) || !visit(&k.value()[8..], v.value())? {
                break;
            }
        }
        Ok(())
    }

    /// Rows of one org's table from key `start` (inclusive) to the end of the
    /// org's range; keys are returned without the org prefix.
    pub fn scan_from(&self, scope: &OrgScope, table: &TenantTable, start: &[u8]) -> Result<Rows, StoreError> {
        let mut out = vec![];
        self.visit(scope, table, &[], start, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        Ok(out)
    }

    /// How many rows of one org's table have keys starting with `prefix` (values not read).
    pub fn count(&self, scope: &OrgScope, table: &TenantTable, prefix: &[u8]) -> Result<u64, StoreError> {
        let Some(t) = self.open(&table.0)? else { return Ok(0) };
        let full = tenant_key(scope, prefix);
        let mut n = 0;
        for row in t.range::<&[u8]>(full.as_slice()..).map_err(io)? {
            let (k, _) = row.map_err(io)?;
            if !k.value().starts_with(&full) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Every row of a system table or index whose key starts with `prefix`.
    pub fn scan_system(&self, table: &impl SystemKeyed, prefix: &[u8]) -> Result<Rows, StoreError> {
        let Some(t) = self.open(table.table())? else {
            return Ok(vec![]);
        };
        collect_prefix(&t, prefix)
    }

    /// Opens an org secret with the master key.
    pub fn get_secret(&self, scope: &OrgScope, keys: &Keyring, name: &str) -> Result<Option<SecretBytes>, StoreError> {
        self.get(scope, &SECRETS, name.as_bytes())?.map(|c| keys.open(&c).map_err(StoreError::from)).transpose()
    }

    /// Opens a secret of the appliance itself.
    pub fn get_system_secret(&self, keys: &Keyring, name: &str) -> Result<Option<SecretBytes>, StoreError> {
        self.get_system(&SYSTEM_SECRETS, name.as_bytes())?.map(|c| keys.open(&c).map_err(StoreError::from)).transpose()
    }
}

/// What both kinds of transaction can read, so one lookup serves reads and writes.
pub trait Reader {
    fn get(&self, scope: &OrgScope, table: &TenantTable, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn get_system(&self, table: &impl SystemKeyed, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, scope: &OrgScope, table: &TenantTable, prefix: &[u8]) -> Result<Rows, StoreError>;
    fn scan_system(&self, table: &impl SystemKeyed, prefix: &[u8]) -> Result<Rows, StoreError>;

    /// A JSON-encoded tenant record.
    fn get_json<T: DeserializeOwned>(
        &self,
        scope: &OrgScope,
        table: &TenantTable,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        Reader::get(self, scope, table, key)?.map(|b| decode_json(&table.0, &b)).transpose()
    }

    /// A JSON-encoded system or index record.
    fn get_system_record<T: DeserializeOwned>(
        &self,
        table: &impl SystemKeyed,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        Reader::get_system(self, table, key)?.map(|b| decode_json(table.table(), &b)).transpose()
    }

    /// Every JSON-encoded tenant record whose key starts with `prefix`.
    fn scan_json<T: DeserializeOwned>(
        &self,
        scope: &OrgScope,
        table: &TenantTable,
        prefix: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        Reader::scan(self, scope, table, prefix)?.iter().map(|(_, v)| decode_json(&table.0, v)).collect()
    }
}

macro_rules! impl_reader {
    ($t:ty) => {
        impl Reader for $t {
            fn get(&self, scope: &OrgScope, table: &TenantTable, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                <$t>::get(self, scope, table, key)
            }
            fn get_system(&self, table: &impl SystemKeyed, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                <$t>::get_system(self, table, key)
            }
            fn scan(&self, scope: &OrgScope, table: &TenantTable, prefix: &[u8]) -> Result<Rows, StoreError> {
                <$t>::scan(self, scope, table, prefix)
            }
            fn scan_system(&self, table: &impl SystemKeyed, prefix: &[u8]) -> Result<Rows, StoreError> {
                <$t>::scan_system(self, table, prefix)
            }
        }
    };
}
impl_reader!(Tx);
impl_reader!(ReadTx);

fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_json<T: DeserializeOwned>(table: &Table, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{}: {e}", table.name)))
}

fn collect_prefix(
    t: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<Rows, StoreError> {
    let mut out = vec![];
    for row in t.range::<&[u8]>(prefix..).map_err(io)? {
        let (k, v) = row.map_err(io)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Store {
        Store::open(&dir.join("data/docket.redb"), Clock::system()).unwrap()
    }

    #[test]
    fn writes_are_journaled_in_order_and_scoped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let (a, b) = (ctx.org_scope(OrgId(1)), ctx.org_scope(OrgId(2)));
        store
            .write(|w| {
                w.put(&a, &SECRETS, b"k", b"1")?;
                w.put(&b, &SECRETS, b"k", b"2")?;
                w.delete(&a, &SECRETS, b"k")?;
                assert!(!w.delete(&a, &SECRETS, b"missing")?, "deleting nothing is not journaled");
                Ok(())
            })
            .unwrap();
        let entries = store.journal_since(&SystemContext::new(Task::Test), 0, usize::MAX).unwrap().entries;
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(entries[2].op, Op::Delete);
        assert_eq!(entries[1].org, Some(OrgId(2)));
        assert_eq!(store.journal_head().unwrap(), 3);
        store
            .read(|r| {
                assert_eq!(r.get(&a, &SECRETS, b"k")?, None);
                assert_eq!(r.get(&b, &SECRETS, b"k")?, Some(b"2".to_vec()));
                assert_eq!(r.scan(&b, &SECRETS, b"")?, vec![(b"k".to_vec(), b"2".to_vec())]);
                assert!(r.scan(&a, &SECRETS, b"")?.is_empty(), "one org never sees another's rows");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn failed_write_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let scope = OrgTaskContext::new(OrgTask::Test).org_scope(OrgId(1));
        let r: Result<(), _> = store.write(|w| {
            w.put(&scope, &SECRETS, b"k", b"v")?;
            Err(StoreError::Conflict { what: "test".into() })
        });
        assert!(r.is_err());
        assert_eq!(store.journal_head().unwrap(), 0);
        assert_eq!(store.read(|r| r.get(&scope, &SECRETS, b"k")).unwrap(), None);
    }

    #[test]
    fn file_and_dir_modes_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(std::fs::metadata(store.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(dir.path().join("data")).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn second_process_gets_a_clear_lock_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let e = Store::open(&dir.path().join("data/docket.redb"), Clock::system()).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    }

    #[test]
    fn reseal_moves_every_secret_to_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ctx = OrgTaskContext::new(OrgTask::Test);
        let old = Keyring::generate(&dir.path().join("old.key")).unwrap();
        let new = Keyring::generate(&dir.path().join("new.key")).unwrap();
        let scope = ctx.org_scope(OrgId(3));
        store
            .write(|w| {
                w.put_secret(&scope, &old, "clio.refresh", b"r1")?;
                w.put_system_secret(&ctx, &old, "acme.account", b"a1")
            })
            .unwrap();
        assert_eq!(store.reseal_all(&ctx, &old, &new, |_| Ok(())).unwrap(), 2);
        store
            .read(|r| {
                assert_eq!(r.get_secret(&scope, &new, "clio.refresh")?.unwrap().expose(), b"r1");
                assert!(r.get_secret(&scope, &old, "clio.refresh").is_err());
                assert_eq!(r.get_system_secret(&new, "acme.account")?.unwrap().expose(), b"a1");
                Ok(())
            })
            .unwrap();
    }
}

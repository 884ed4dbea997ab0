//! The embedded redb store: the only code that writes docket's data to disk.
//!
//! - One file, `<data_dir>/docket.redb`, created 0600 in a 0700 directory.
//! - Every write goes through [`Store::write`]; each `put`/`delete` in it appends
//!   a journal entry in the same transaction (see [`journal`]).
//! - Tenant tables are keyed `org_id (8 bytes BE) ++ key` and reached only
//!   through an [`OrgScope`]; system tables take a [`SystemContext`].
//! - A schema version in the `meta` table, forward migrations on open, and a
//!   clear refusal of a file written by a newer docket.
pub mod journal;
pub mod orgs;
pub mod scope;

use crate::clock::Clock;
use crate::secrets::{Keyring, Sealer, SecretBytes, SecretsError};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

pub use journal::{Entry as JournalEntry, Op};

/// Rows of a table: (key, value) pairs.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

type BytesTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
pub use scope::{Actor, OrgId, OrgScope, SystemContext};

/// The store's page cache.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The schema this binary writes. Bump it with a new entry in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

/// Whether a table's rows belong to one org or to the appliance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tenant,
    System,
}

/// A byte-keyed table of the store.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub name: &'static str,
    pub kind: Kind,
}

impl Table {
    pub const fn system(name: &'static str) -> Table {
        Table { name, kind: Kind::System }
    }

    pub const fn tenant(name: &'static str) -> Table {
        Table { name, kind: Kind::Tenant }
    }

    fn def(&self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

/// Org records, keyed by org id (system).
pub const ORGS: Table = Table::system("orgs");
/// Org slug → org id (system).
pub const ORG_SLUGS: Table = Table::system("org_slugs");
/// Sealed secrets of an org, keyed by name (tenant; values are age ciphertext).
pub const SECRETS: Table = Table::tenant("secrets");
/// Sealed secrets of the appliance itself, e.g. the ACME account (system).
pub const SYSTEM_SECRETS: Table = Table::system("system_secrets");
/// API token hash → token record (system index; each record names its org).
pub const TOKENS: Table = Table::system("tokens");

/// Audit events of an org, keyed by seq (tenant; see `audit`).
pub const AUDIT: Table = Table::tenant("audit");
/// The head (last seq and hash) of each org's audit chain (tenant).
pub const AUDIT_HEAD: Table = Table::tenant("audit_head");

/// Every byte-keyed table: backups and integrity checks walk this list.
/// Members of an org, keyed by user id (tenant).
pub const USERS: Table = Table::tenant("users");
/// Sign-in names → member: `email:<address>` and `oidc:<provider>:<subject>` (system index).
pub const LOGINS: Table = Table::system("logins");
/// Browser session id hash → session (system index; each record names its org).
pub const SESSIONS: Table = Table::system("sessions");
/// Custom roles of an org, keyed by name (tenant).
pub const ROLES: Table = Table::tenant("roles");

/// Ethical walls of an org, keyed by wall id (tenant).
pub const WALLS: Table = Table::tenant("walls");
/// The org's copy of its Clio data, keyed by kind byte ++ Clio id (tenant; see `clio::sync`).
pub const RECORDS: Table = Table::tenant("records");
/// The org's Clio connection (tenant; secrets apart, sealed).
pub const CLIO: Table = Table::tenant("clio");
/// Webhook endpoint name → org (system index; see `clio::webhooks`).
pub const HOOKS: Table = Table::system("webhook_hooks");
/// Sync checkpoints, keyed by kind (tenant).
pub const SYNC_STATE: Table = Table::tenant("sync_state");

/// Every byte-keyed table: backups and integrity checks walk this list.
pub const TABLES: &[Table] = &[
    ORGS,
    ORG_SLUGS,
    SECRETS,
    SYSTEM_SECRETS,
    TOKENS,
    AUDIT,
    AUDIT_HEAD,
    USERS,
    LOGINS,
    SESSIONS,
    ROLES,
    WALLS,
    RECORDS,
    SYNC_STATE,
    CLIO,
    HOOKS,
];
/// The tables whose values are sealed, re-sealed by key rotation.
pub const SEALED_TABLES: &[Table] = &[SECRETS, SYSTEM_SECRETS];

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
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// The store.
pub struct Store {
    db: redb::Database,
    clock: Clock,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

type Migration = fn(&redb::WriteTransaction) -> Result<(), StoreError>;

/// Forward migrations: entry `i` takes a store from schema `i + 1` to `i + 2`.
const MIGRATIONS: &[Migration] = &[];

impl Store {
    /// Opens (creating if needed) the store file, then migrates it forward.
    pub fn open(path: &Path, clock: Clock) -> Result<Store, StoreError> {
        Self::open_with(path, clock, MIGRATIONS)
    }

    fn open_with(path: &Path, clock: Clock, migrations: &[Migration]) -> Result<Store, StoreError> {
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
        let store = Store { db, clock, path: path.to_path_buf() };
        store.migrate(migrations)?;
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
        Store { db, clock: Clock::system(), path: path.to_path_buf() }.schema_version()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn migrate(&self, migrations: &[Migration]) -> Result<(), StoreError> {
        let target = migrations.len() as u32 + 1;
        let found = self.schema_version()?;
        match found {
            None => {
                let tx = self.db.begin_write().map_err(io)?;
                {
                    let mut meta = tx.open_table(META).map_err(io)?;
                    meta.insert("schema_version", target.to_le_bytes().as_slice()).map_err(io)?;
                    meta.insert("writer", crate::VERSION.as_bytes()).map_err(io)?;
                    tx.open_table(JOURNAL).map_err(io)?;
                    for t in TABLES {
                        tx.open_table(t.def()).map_err(io)?;
                    }
                }
                tx.commit().map_err(io)?;
            }
            Some(v) if v > target => {
                let writer = self.meta_string("writer")?.unwrap_or_else(|| "unknown".into());
                return Err(StoreError::TooNew {
                    path: self.path.display().to_string(),
                    found: v,
                    writer,
                    ours: crate::VERSION,
                });
            }
            Some(mut v) => {
                while v < target {
                    let tx = self.db.begin_write().map_err(io)?;
                    migrations[(v - 1) as usize](&tx)?;
                    v += 1;
                    {
                        let mut meta = tx.open_table(META).map_err(io)?;
                        meta.insert("schema_version", v.to_le_bytes().as_slice()).map_err(io)?;
                        meta.insert("writer", crate::VERSION.as_bytes()).map_err(io)?;
                    }
                    tx.commit().map_err(io)?;
                    tracing::info!(schema = v, "store migrated");
                }
            }
        }
        Ok(())
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

    /// Runs `f` in one write transaction; commits if it returns `Ok`.
    pub fn write<R>(&self, f: impl FnOnce(&mut Tx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        let next_seq = {
            let journal = tx.open_table(JOURNAL).map_err(io)?;
            journal.last().map_err(io)?.map_or(1, |(k, _)| k.value() + 1)
        };
        let mut w = Tx { tx, next_seq, time: self.clock.now_micros() };
        let out = f(&mut w)?;
        w.tx.commit().map_err(io)?;
        Ok(out)
    }

    /// Runs `f` against a consistent snapshot.
    pub fn read<R>(&self, f: impl FnOnce(&ReadTx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        f(&ReadTx { tx })
    }

    /// The highest journal sequence number written so far (0 when empty).
    pub fn journal_head(&self) -> Result<u64, StoreError> {
        self.read(|r| {
            let journal = r.tx.open_table(JOURNAL).map_err(io)?;
            Ok(journal.last().map_err(io)?.map_or(0, |(k, _)| k.value()))
        })
    }

    /// Up to `limit` journal entries with `seq > after`, oldest first.
    pub fn journal_after(&self, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        self.read(|r| {
            let journal = r.tx.open_table(JOURNAL).map_err(io)?;
            let mut out = vec![];
            for row in journal.range(after.saturating_add(1)..).map_err(io)?.take(limit) {
                let (k, v) = row.map_err(io)?;
                let entry = journal::decode(k.value(), v.value())
                    .ok_or_else(|| StoreError::Corrupt(format!("journal entry {}", k.value())))?;
                out.push(entry);
            }
            Ok(out)
        })
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
                    w.put_raw(table, org_of(table, &key), &key, &sealed)?;
                    count += 1;
                }
            }
            then(w)?;
            Ok(count)
        })
    }
}

fn org_of(table: &Table, full_key: &[u8]) -> Option<OrgId> {
    match table.kind {
        Kind::System => None,
        Kind::Tenant => full_key.get(..8).and_then(|p| p.try_into().ok()).map(|p| OrgId(u64::from_be_bytes(p))),
    }
}

fn tenant_key(scope: &OrgScope, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(8 + key.len());
    full.extend_from_slice(&scope.org().prefix());
    full.extend_from_slice(key);
    full
}

fn expect_kind(table: &Table, kind: Kind) -> Result<(), StoreError> {
    if table.kind == kind {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!("table {} used as {:?}", table.name, kind)))
    }
}

/// A write transaction. Every mutation is journaled.
pub struct Tx {
    tx: redb::WriteTransaction,
    next_seq: u64,
    time: i64,
}

impl Tx {
    /// Time of this transaction, microseconds since the epoch.
    pub fn time(&self) -> i64 {
        self.time
    }

    fn put_raw(&mut self, table: &Table, org: Option<OrgId>, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tx.open_table(table.def()).map_err(io)?.insert(key, value).map_err(io)?;
        self.journal(org, table, key, Op::Put(value.to_vec()))
    }

    fn delete_raw(&mut self, table: &Table, org: Option<OrgId>, key: &[u8]) -> Result<bool, StoreError> {
        let existed = self.tx.open_table(table.def()).map_err(io)?.remove(key).map_err(io)?.is_some();
        if existed {
            self.journal(org, table, key, Op::Delete)?;
        }
        Ok(existed)
    }

    fn journal(&mut self, org: Option<OrgId>, table: &Table, key: &[u8], op: Op) -> Result<(), StoreError> {
        let bytes = journal::encode(self.time, org, table.name, key, &op);
        self.tx.open_table(JOURNAL).map_err(io)?.insert(self.next_seq, bytes.as_slice()).map_err(io)?;
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
    pub fn put(&mut self, scope: &OrgScope, table: &Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        expect_kind(table, Kind::Tenant)?;
        self.put_raw(table, Some(scope.org()), &tenant_key(scope, key), value)
    }

    /// Removes `key` from one org's table; returns whether it existed.
    pub fn delete(&mut self, scope: &OrgScope, table: &Table, key: &[u8]) -> Result<bool, StoreError> {
        expect_kind(table, Kind::Tenant)?;
        self.delete_raw(table, Some(scope.org()), &tenant_key(scope, key))
    }

    pub fn get(&self, scope: &OrgScope, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        expect_kind(table, Kind::Tenant)?;
        self.get_raw(table, &tenant_key(scope, key))
    }

    /// Every row of one org's table whose key starts with `prefix` (keys without the org prefix).
    pub fn scan(&self, scope: &OrgScope, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError> {
        expect_kind(table, Kind::Tenant)?;
        let rows = self.scan_raw(table, &tenant_key(scope, prefix))?;
        Ok(rows.into_iter().map(|(k, v)| (k[8..].to_vec(), v)).collect())
    }

    /// Every row of a system table whose key starts with `prefix`.
    pub fn scan_system(&self, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError> {
        expect_kind(table, Kind::System)?;
        self.scan_raw(table, prefix)
    }

    /// Stores `value` under `key` in a system table.
    pub fn put_system(
        &mut self,
        _ctx: &SystemContext,
        table: &Table,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        expect_kind(table, Kind::System)?;
        self.put_raw(table, None, key, value)
    }

    pub fn delete_system(&mut self, _ctx: &SystemContext, table: &Table, key: &[u8]) -> Result<bool, StoreError> {
        expect_kind(table, Kind::System)?;
        self.delete_raw(table, None, key)
    }

    pub fn get_system(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        expect_kind(table, Kind::System)?;
        self.get_raw(table, key)
    }

    /// JSON-encodes and stores a tenant record.
    pub fn put_json<T: Serialize>(
        &mut self,
        scope: &OrgScope,
        table: &Table,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.put(scope, table, key, &bytes)
    }

    /// JSON-encodes and stores a system record.
    pub fn put_system_json<T: Serialize>(
        &mut self,
        ctx: &SystemContext,
        table: &Table,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.put_system(ctx, table, key, &bytes)
    }

    pub fn get_system_json<T: DeserializeOwned>(&self, table: &Table, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get_system(table, key)?.map(|b| decode_json(table, &b)).transpose()
    }

    /// The greatest key of a system table keyed by 8-byte ids.
    pub fn last_system_key(&self, table: &Table) -> Result<Option<[u8; 8]>, StoreError> {
        expect_kind(table, Kind::System)?;
        let t = self.tx.open_table(table.def()).map_err(io)?;
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

    pub fn get(&self, scope: &OrgScope, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        expect_kind(table, Kind::Tenant)?;
        self.get_raw(table, &tenant_key(scope, key))
    }

    pub fn get_system(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        expect_kind(table, Kind::System)?;
        self.get_raw(table, key)
    }

    pub fn get_system_json<T: DeserializeOwned>(&self, table: &Table, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get_system(table, key)?.map(|b| decode_json(table, &b)).transpose()
    }

    /// Every row of one org's table whose key starts with `prefix`; keys are
    /// returned without the org prefix.
    pub fn scan(&self, scope: &OrgScope, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError> {
        expect_kind(table, Kind::Tenant)?;
        let Some(t) = self.open(table)? else {
            return Ok(vec![]);
        };
        let rows = collect_prefix(&t, &tenant_key(scope, prefix))?;
        Ok(rows.into_iter().map(|(k, v)| (k[8..].to_vec(), v)).collect())
    }

    /// Visits the rows of one org's table whose keys start with `prefix`, from
    /// key `start` (inclusive) on, until `visit` returns false. Keys are given
    /// without the org prefix. Reads lazily: a page costs what it visits.
    pub fn visit(
        &self,
        scope: &OrgScope,
        table: &Table,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        expect_kind(table, Kind::Tenant)?;
        let Some(t) = self.open(table)? else { return Ok(()) };
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
    pub fn scan_from(&self, scope: &OrgScope, table: &Table, start: &[u8]) -> Result<Rows, StoreError> {
        expect_kind(table, Kind::Tenant)?;
        let Some(t) = self.open(table)? else { return Ok(vec![]) };
        let prefix = scope.org().prefix();
        let mut out = vec![];
        for row in t.range::<&[u8]>(tenant_key(scope, start).as_slice()..).map_err(io)? {
            let (k, v) = row.map_err(io)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push((k.value()[8..].to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// How many rows of one org's table have keys starting with `prefix` (values not read).
    pub fn count(&self, scope: &OrgScope, table: &Table, prefix: &[u8]) -> Result<u64, StoreError> {
        expect_kind(table, Kind::Tenant)?;
        let Some(t) = self.open(table)? else { return Ok(0) };
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

    /// Every row of a system table whose key starts with `prefix`.
    pub fn scan_system(&self, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError> {
        expect_kind(table, Kind::System)?;
        let Some(t) = self.open(table)? else {
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
    fn get(&self, scope: &OrgScope, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn get_system(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn scan(&self, scope: &OrgScope, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError>;
    fn scan_system(&self, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError>;

    /// A JSON-encoded tenant record.
    fn get_json<T: DeserializeOwned>(
        &self,
        scope: &OrgScope,
        table: &Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        Reader::get(self, scope, table, key)?.map(|b| decode_json(table, &b)).transpose()
    }

    /// A JSON-encoded system record.
    fn get_system_record<T: DeserializeOwned>(&self, table: &Table, key: &[u8]) -> Result<Option<T>, StoreError> {
        Reader::get_system(self, table, key)?.map(|b| decode_json(table, &b)).transpose()
    }

    /// Every JSON-encoded tenant record whose key starts with `prefix`.
    fn scan_json<T: DeserializeOwned>(
        &self,
        scope: &OrgScope,
        table: &Table,
        prefix: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        Reader::scan(self, scope, table, prefix)?.iter().map(|(_, v)| decode_json(table, v)).collect()
    }
}

macro_rules! impl_reader {
    ($t:ty) => {
        impl Reader for $t {
            fn get(&self, scope: &OrgScope, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                <$t>::get(self, scope, table, key)
            }
            fn get_system(&self, table: &Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
                <$t>::get_system(self, table, key)
            }
            fn scan(&self, scope: &OrgScope, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError> {
                <$t>::scan(self, scope, table, prefix)
            }
            fn scan_system(&self, table: &Table, prefix: &[u8]) -> Result<Rows, StoreError> {
                <$t>::scan_system(self, table, prefix)
            }
        }
    };
}
impl_reader!(Tx);
impl_reader!(ReadTx);

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
        let ctx = SystemContext::new("test");
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
        let entries = store.journal_after(0, 10).unwrap();
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
        let scope = SystemContext::new("test").org_scope(OrgId(1));
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
    fn migrations_run_forward_and_newer_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docket.redb");
        drop(Store::open(&path, Clock::system()).unwrap());
        fn add_table(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
            tx.open_table(TableDefinition::<&[u8], &[u8]>::new("added_in_v2")).map_err(io)?;
            Ok(())
        }
        let store = Store::open_with(&path, Clock::system(), &[add_table]).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(2));
        drop(store);
        let e = Store::open(&path, Clock::system()).unwrap_err();
        assert!(matches!(e, StoreError::TooNew { found: 2, .. }), "{e}");
        assert!(e.to_string().contains("newer docket"), "{e}");
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
        let ctx = SystemContext::new("test");
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

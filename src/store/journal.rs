//! The numbered journal: one entry per change, appended in the same redb write
//! transaction as the change. The search indexer, point-in-time recovery and
//! purges follow it by `seq` (ARCHITECTURE.md, "The journal", has the contract).
//!
//! Encoding v2 (little-endian, compact because a sync writes millions):
//! `version:u8 (=2) | schema:u16 | tx:u64 | flags:u8 | time:i64 | org:u64 |
//! table_len:u8 | table | op:u8 | key_len:u32 | key | value_len:u32 | value`.
//! `flags` bit 0 marks the last entry of its transaction (the commit marker);
//! `org` 0 means "no org" (appliance rows); `op` is 0 delete, 1 put. Any other
//! version, flag bit or op is an error naming the entry's seq.
//!
//! Version 1 (schema 1) had no version, schema, tx or flags:
//! `time:i64 | org:u64 | table_len:u8 | table | op:u8 | key_len:u32 | key |
//! value_len:u32 | value`; [`decode_v1`] reads it for the migration.
use super::scope::OrgId;

/// The format version this binary writes.
pub const FORMAT: u8 = 2;
/// Offset of the flags byte in a v2 entry.
const FLAGS_AT: usize = 11;
/// Offset of the time in a v2 entry.
const TIME_AT: usize = 12;
const LAST_IN_TX: u8 = 1;

/// What happened to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The key now holds this value (stored bytes, so ciphertext for secrets).
    Put(Vec<u8>),
    Delete,
}

/// One change, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// The transaction that made the change; ids grow with `seq`.
    pub tx: u64,
    /// Whether this is the last entry of its transaction (the commit marker).
    pub last: bool,
    /// The store schema the entry was written under.
    pub schema: u32,
    /// Commit time, microseconds since the Unix epoch; never less than an
    /// earlier entry's, and the same for every entry of a transaction.
    pub time: i64,
    /// The org the row belongs to, wherever it lives; `None` for appliance rows.
    pub org: Option<OrgId>,
    /// The table name (`meta` for the store's own settings, e.g. a migration's schema).
    pub table: String,
    /// The full stored key (tenant keys begin with the org prefix).
    pub key: Vec<u8>,
    pub op: Op,
}

impl Entry {
    /// The entry as stored (v2).
    pub fn encode(&self) -> Vec<u8> {
        let header = Header { schema: self.schema, tx: self.tx, last: self.last, time: self.time, org: self.org };
        let value = match &self.op {
            Op::Put(v) => Some(v.as_slice()),
            Op::Delete => None,
        };
        encode(header, &self.table, &self.key, value)
    }
}

/// What an entry says besides its change.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub schema: u32,
    pub tx: u64,
    pub last: bool,
    pub time: i64,
    pub org: Option<OrgId>,
}

/// Encodes a v2 entry: a put of `value`, or a delete when `None`.
pub(super) fn encode(h: Header, table: &str, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let bytes = value.unwrap_or_default();
    let mut out = Vec::with_capacity(38 + table.len() + key.len() + bytes.len());
    out.push(FORMAT);
    out.extend_from_slice(&u16::try_from(h.schema).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(&h.tx.to_le_bytes());
    out.push(if h.last { LAST_IN_TX } else { 0 });
    out.extend_from_slice(&h.time.to_le_bytes());
    out.extend_from_slice(&h.org.map_or(0, |o| o.0).to_le_bytes());
    out.push(u8::try_from(table.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(table.as_bytes());
    out.push(value.is_some() as u8);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// A journal entry that cannot be read, named by its seq.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("journal entry {seq} cannot be read: {problem}")]
pub struct BadEntry {
    pub seq: u64,
    pub problem: String,
}

/// Sets the commit marker on an encoded v2 entry.
pub(super) fn mark_last(bytes: &mut [u8]) {
    if let Some(flags) = bytes.get_mut(FLAGS_AT) {
        *flags |= LAST_IN_TX;
    }
}

/// The commit time of an encoded v2 entry, read without decoding the rest.
pub(super) fn time_of(seq: u64, bytes: &[u8]) -> Result<i64, BadEntry> {
    check_version(seq, bytes)?;
    bytes
        .get(TIME_AT..TIME_AT + 8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| bad(seq, "it is truncated"))
}

/// Whether an encoded v2 entry carries the commit marker.
pub(super) fn is_last(seq: u64, bytes: &[u8]) -> Result<bool, BadEntry> {
    check_version(seq, bytes)?;
    let flags = *bytes.get(FLAGS_AT).ok_or_else(|| bad(seq, "it is truncated"))?;
    Ok(flags & LAST_IN_TX != 0)
}

fn check_version(seq: u64, bytes: &[u8]) -> Result<(), BadEntry> {
    match bytes.first() {
        Some(&FORMAT) => Ok(()),
        Some(v) => Err(bad(seq, &format!("format version {v} is unknown (this docket reads version {FORMAT})"))),
        None => Err(bad(seq, "it is empty")),
    }
}

fn bad(seq: u64, problem: &str) -> BadEntry {
    BadEntry { seq, problem: problem.into() }
}

/// Reads a v2 entry.
pub fn decode(seq: u64, bytes: &[u8]) -> Result<Entry, BadEntry> {
    check_version(seq, bytes)?;
    let truncated = || bad(seq, "it is truncated");
    let mut r = Reader(&bytes[1..]);
    let schema = u16::from_le_bytes(r.array().ok_or_else(truncated)?) as u32;
    let tx = u64::from_le_bytes(r.array().ok_or_else(truncated)?);
    let flags = r.take(1).ok_or_else(truncated)?[0];
    if flags & !LAST_IN_TX != 0 {
        return Err(bad(seq, &format!("flags {flags:#04x} are unknown")));
    }
    let time = i64::from_le_bytes(r.array().ok_or_else(truncated)?);
    let body = r.body(seq)?;
    Ok(Entry {
        seq,
        tx,
        last: flags & LAST_IN_TX != 0,
        schema,
        time,
        org: body.org,
        table: body.table,
        key: body.key,
        op: body.op,
    })
}

/// A v1 entry: what the v2 migration re-encodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct V1 {
    pub time: i64,
    pub org: Option<OrgId>,
    pub table: String,
    pub key: Vec<u8>,
    pub op: Op,
}

/// Reads a v1 entry (schema 1); an op byte other than 0 or 1 is an error.
pub(super) fn decode_v1(seq: u64, bytes: &[u8]) -> Result<V1, BadEntry> {
    let mut r = Reader(bytes);
    let time = i64::from_le_bytes(r.array().ok_or_else(|| bad(seq, "it is truncated"))?);
    let body = r.body(seq)?;
    Ok(V1 { time, org: body.org, table: body.table, key: body.key, op: body.op })
}

/// The part both versions share: `org | table | op | key | value`.
struct Body {
    org: Option<OrgId>,
    table: String,
    key: Vec<u8>,
    op: Op,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn sized(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.take(len)
    }

    fn body(&mut self, seq: u64) -> Result<Body, BadEntry> {
        let truncated = || bad(seq, "it is truncated");
        let org = u64::from_le_bytes(self.array().ok_or_else(truncated)?);
        let table_len = self.take(1).ok_or_else(truncated)?[0] as usize;
        let table = std::str::from_utf8(self.take(table_len).ok_or_else(truncated)?)
            .map_err(|_| bad(seq, "its table name is not UTF-8"))?
            .to_string();
        let op = self.take(1).ok_or_else(truncated)?[0];
        let key = self.sized().ok_or_else(truncated)?.to_vec();
        let value = self.sized().ok_or_else(truncated)?.to_vec();
        if !self.0.is_empty() {
            return Err(bad(seq, &format!("{} bytes follow its end", self.0.len())));
        }
        let op = match op {
            0 if value.is_empty() => Op::Delete,
            0 => return Err(bad(seq, "a delete carries a value")),
            1 => Op::Put(value),
            other => return Err(bad(seq, &format!("op {other} is unknown (0 is delete, 1 is put)"))),
        };
        Ok(Body { org: (org != 0).then_some(OrgId(org)), table, key, op })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A v1 entry exactly as docket 0.1 (schema 1) wrote it.
    pub fn encode_v1(time: i64, org: u64, table: &str, key: &[u8], op: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        out.extend_from_slice(&time.to_le_bytes());
        out.extend_from_slice(&org.to_le_bytes());
        out.push(table.len() as u8);
        out.extend_from_slice(table.as_bytes());
        out.push(op);
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn entry(op: Op) -> Entry {
        Entry {
            seq: 9,
            tx: 4,
            last: true,
            schema: 2,
            time: 42,
            org: Some(OrgId(7)),
            table: "records".into(),
            key: b"k".to_vec(),
            op,
        }
    }

    #[test]
    fn round_trip() {
        for op in [Op::Put(b"v".to_vec()), Op::Delete] {
            let e = entry(op);
            let bytes = e.encode();
            assert_eq!(decode(9, &bytes).unwrap(), e);
            assert_eq!(time_of(9, &bytes).unwrap(), 42);
            assert!(is_last(9, &bytes).unwrap());
        }
        let mut open = Entry { last: false, ..entry(Op::Delete) }.encode();
        assert!(!is_last(9, &open).unwrap());
        mark_last(&mut open);
        assert!(decode(9, &open).unwrap().last);
        assert_eq!(decode(1, &[2, 2, 3]).unwrap_err().problem, "it is truncated");
    }

    #[test]
    fn unknown_op_version_and_flags_are_errors_naming_the_seq() {
        let good = entry(Op::Put(b"v".to_vec())).encode();
        let op_at = 1 + 2 + 8 + 1 + 8 + 8 + 1 + "records".len();
        let mut op = good.clone();
        op[op_at] = 2;
        let e = decode(17, &op).unwrap_err();
        assert_eq!(e.seq, 17);
        assert!(e.to_string().contains("journal entry 17") && e.problem.contains("op 2 is unknown"), "{e}");
        let mut version = good.clone();
        version[0] = 3;
        assert!(decode(18, &version).unwrap_err().problem.contains("format version 3"));
        assert!(time_of(18, &version).is_err() && is_last(18, &version).is_err());
        let mut flags = good;
        flags[FLAGS_AT] = 0x82;
        assert!(decode(19, &flags).unwrap_err().problem.contains("flags"));
        let v1 = encode_v1(5, 0, "orgs", b"k", 7, b"");
        assert!(decode_v1(20, &v1).unwrap_err().problem.contains("op 7 is unknown"), "v1 ops are checked too");
    }

    #[test]
    fn v1_entries_decode() {
        let bytes = encode_v1(5, 3, "secrets", b"k", 1, b"v");
        let v1 = decode_v1(1, &bytes).unwrap();
        assert_eq!(
            v1,
            V1 {
                time: 5,
                org: Some(OrgId(3)),
                table: "secrets".into(),
                key: b"k".to_vec(),
                op: Op::Put(b"v".to_vec())
            }
        );
        assert_eq!(decode_v1(2, &encode_v1(5, 0, "orgs", b"k", 0, b"")).unwrap().op, Op::Delete);
    }
}

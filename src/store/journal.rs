//! The numbered journal: one entry per change, appended in the same redb write
//! transaction as the change. The search indexer, point-in-time recovery and
//! purges follow it by `seq`.
//!
//! Encoding (little-endian, compact because a sync writes millions):
//! `time:i64 | org:u64 | table_len:u8 | table | op:u8 | key_len:u32 | key | value_len:u32 | value`.
use super::scope::OrgId;

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
    /// Microseconds since the Unix epoch.
    pub time: i64,
    /// The org the key belongs to; `None` for system tables.
    pub org: Option<OrgId>,
    pub table: String,
    /// The full stored key (tenant keys begin with the org prefix).
    pub key: Vec<u8>,
    pub op: Op,
}

pub(super) fn encode(time: i64, org: Option<OrgId>, table: &str, key: &[u8], op: &Op) -> Vec<u8> {
    let value: &[u8] = match op {
        Op::Put(v) => v,
        Op::Delete => &[],
    };
    let mut out = Vec::with_capacity(26 + table.len() + key.len() + value.len());
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(&org.map_or(0, |o| o.0).to_le_bytes());
    out.push(table.len() as u8);
    out.extend_from_slice(table.as_bytes());
    out.push(matches!(op, Op::Put(_)) as u8);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out
}

pub(super) fn decode(seq: u64, bytes: &[u8]) -> Option<Entry> {
    let mut r = Reader(bytes);
    let time = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let org = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let table_len = r.take(1)?[0] as usize;
    let table = std::str::from_utf8(r.take(table_len)?).ok()?.to_string();
    let is_put = r.take(1)?[0] == 1;
    let key_len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
    let key = r.take(key_len)?.to_vec();
    let value_len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
    let value = r.take(value_len)?.to_vec();
    let op = if is_put { Op::Put(value) } else { Op::Delete };
    Some(Entry { seq, time, org: (org != 0).then_some(OrgId(org)), table, key, op })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for op in [Op::Put(b"v".to_vec()), Op::Delete] {
            let bytes = encode(42, Some(OrgId(7)), "matters", b"k", &op);
            let e = decode(9, &bytes).unwrap();
            assert_eq!(
                e,
                Entry { seq: 9, time: 42, org: Some(OrgId(7)), table: "matters".into(), key: b"k".to_vec(), op }
            );
        }
        assert!(decode(1, &[1, 2, 3]).is_none());
    }
}

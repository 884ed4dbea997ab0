//! Change feed cursors: a [`Position`] with its firm, MACed (HMAC-SHA-256,
//! truncated to 128 bits) with a random per-org key sealed in the store, so a
//! cursor outlives restarts and key rotations, and a forged, altered or
//! another firm's cursor is refused.
//!
//! Form: `c1.<org:16 hex><after:16 hex><skip:16 hex>.<mac:32 hex>` (84 characters).
use super::Position;
use crate::secrets::{Keyring, SecretBytes};
use crate::store::{OrgId, OrgScope, SECRETS, Store, StoreError};
use hmac::{Hmac, Mac as _};

/// The org secret holding the cursor key.
const KEY_NAME: &str = "change-feed-cursor-key";
const MAC_BYTES: usize = 16;

/// A firm's cursor key, opened.
pub struct CursorKey(SecretBytes);

/// Why a cursor was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`cursor` is not a change feed cursor of this firm; pass the `next_cursor` of the previous page unchanged, or start from GET /api/v1/changes/head"
)]
pub struct CursorError;

/// The firm's cursor key, made (once, in one write transaction, so parallel
/// first calls agree) when the firm has none yet.
pub fn key(store: &Store, scope: &OrgScope, keys: &Keyring) -> Result<CursorKey, StoreError> {
    if let Some(key) = store.read(|r| r.get_secret(scope, keys, KEY_NAME))? {
        return Ok(CursorKey(key));
    }
    store.write(|w| {
        if let Some(sealed) = w.get(scope, &SECRETS, KEY_NAME.as_bytes())? {
            return Ok(CursorKey(keys.open(&sealed)?));
        }
        let fresh: [u8; 32] = rand::random();
        w.put_secret(scope, keys, KEY_NAME, &fresh)?;
        Ok(CursorKey(SecretBytes::new(fresh.to_vec())))
    })
}

impl CursorKey {
    fn mac(&self, body: &str) -> String {
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(self.0.expose()) else { return String::new() };
        mac.update(body.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..MAC_BYTES])
    }

    /// The cursor of `pos` in `org`'s feed.
    pub fn encode(&self, org: OrgId, pos: Position) -> String {
        let body = format!("c1.{:016x}{:016x}{:016x}", org.0, pos.after, pos.skip);
        let tag = self.mac(&body);
        format!("{body}.{tag}")
    }

    /// The position of a cursor this key made for `org`.
    pub fn decode(&self, org: OrgId, cursor: &str) -> Result<Position, CursorError> {
        let (body, tag) = cursor.rsplit_once('.').ok_or(CursorError)?;
        let expected = self.mac(body);
        let agrees = tag.len() == expected.len()
            && tag.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        let fields = body.strip_prefix("c1.").filter(|f| f.len() == 48 && agrees).ok_or(CursorError)?;
        let hex64 = |i: usize| fields.get(i * 16..(i + 1) * 16).and_then(|h| u64::from_str_radix(h, 16).ok());
        let (Some(of), Some(after), Some(skip)) = (hex64(0), hex64(1), hex64(2)) else { return Err(CursorError) };
        if of != org.0 || (skip != 0 && skip <= after) {
            return Err(CursorError);
        }
        Ok(Position { after, skip })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CursorKey {
        CursorKey(SecretBytes::new(vec![byte; 32]))
    }

    #[test]
    fn a_cursor_round_trips_and_refuses_any_change() {
        let (k, org) = (key(1), OrgId(7));
        let pos = Position { after: 41, skip: 43 };
        let c = k.encode(org, pos);
        assert_eq!(c.len(), 84);
        assert_eq!(k.decode(org, &c), Ok(pos));
        assert_eq!(k.decode(OrgId(8), &c), Err(CursorError), "another firm");
        assert_eq!(key(2).decode(org, &c), Err(CursorError), "another key");
        for i in 0..c.len() {
            let mut bytes = c.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(bytes).unwrap();
            assert_eq!(k.decode(org, &altered), Err(CursorError), "byte {i} altered");
        }
        for bad in ["", ".", "c1..", "c1.zz.zz", &c[..83], &format!("{c}0"), "\u{0}"] {
            assert_eq!(k.decode(org, bad), Err(CursorError), "{bad:?}");
        }
    }
}

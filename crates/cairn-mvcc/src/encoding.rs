//! On-disk encodings of the MVCC families: keys and values. Nothing else.
//!
//! Every stored value starts with [`FORMAT_V1`], so that the format can evolve under a
//! rolling upgrade: a reader that meets an unknown version byte reports corruption instead
//! of misreading the row.
//!
//! History keys are `memcomparable(user_key) ++ revision (u64 big-endian)`. The
//! memcomparable encoding escapes `0x00` as `0x00 0xFF` and ends the key with `0x00 0x01`,
//! which keeps user-key order and is prefix-free: all rows of key `a` sort before every row
//! of `a\0`, `a\x01`, `b`, …, so one key's versions never interleave with another's.

use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use crate::error::MvccError;

/// The first byte of every stored value.
pub const FORMAT_V1: u8 = 1;

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

/// Encode a revision (always ≥ 0) so that byte order equals numeric order.
pub fn encode_revision(rev: i64) -> [u8; 8] {
    debug_assert!(rev >= 0, "negative revision {rev}");
    (rev as u64).to_be_bytes()
}

pub fn decode_revision(bytes: &[u8]) -> Result<i64, MvccError> {
    let arr: [u8; 8] =
        bytes.try_into().map_err(|_| MvccError::Corrupt(format!("revision of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr) as i64)
}

/// The order-preserving, prefix-free encoding of a user key (without a revision).
pub fn encode_user_key(key: &[u8], out: &mut Vec<u8>) {
    out.reserve(key.len() + 2);
    for &b in key {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// `memcomparable(key) ++ rev`.
pub fn history_key(key: &[u8], rev: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    encode_user_key(key, &mut out);
    out.extend_from_slice(&encode_revision(rev));
    out
}

/// The smallest history key of `key` (every row of `key` is ≥ this).
pub fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    encode_user_key(key, &mut out);
    out
}

/// Split a history key back into (user key, revision).
pub fn decode_history_key(encoded: &[u8]) -> Result<(Vec<u8>, i64), MvccError> {
    let corrupt = || MvccError::Corrupt("malformed history key".into());
    let mut key = Vec::with_capacity(encoded.len().saturating_sub(10));
    let mut i = 0;
    loop {
        let b = *encoded.get(i).ok_or_else(corrupt)?;
        if b != 0 {
            key.push(b);
            i += 1;
            continue;
        }
        match encoded.get(i + 1) {
            Some(0xFF) => {
                key.push(0);
                i += 2;
            }
            Some(0x01) => {
                i += 2;
                break;
            }
            _ => return Err(corrupt()),
        }
    }
    let rev = decode_revision(&encoded[i..])?;
    Ok((key, rev))
}

/// A stored version: the key's state at one revision.
#[derive(Debug, Clone, PartialEq)]
pub enum Version {
    /// The key was put; the `KeyValue` has an empty `key` field (the key is in the row key).
    Put(KeyValue),
    /// The key was deleted at this revision.
    Tombstone,
}

/// Value of a `kv` row: the latest version of a live key (its `key` field left empty).
pub fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + kv.encoded_len());
    out.push(FORMAT_V1);
    kv.encode(&mut out).expect("Vec has unbounded capacity");
    out
}

pub fn decode_kv(key: &[u8], value: &[u8]) -> Result<KeyValue, MvccError> {
    match value.split_first() {
        Some((&FORMAT_V1, rest)) => {
            let mut kv = KeyValue::decode(rest).map_err(|e| MvccError::Corrupt(format!("kv row: {e}")))?;
            kv.key = key.to_vec();
            Ok(kv)
        }
        _ => Err(MvccError::Corrupt("kv row with unknown format".into())),
    }
}

/// Value of a `history` row.
pub fn encode_version(version: &Version) -> Vec<u8> {
    match version {
        Version::Put(kv) => {
            let mut out = Vec::with_capacity(2 + kv.encoded_len());
            out.extend_from_slice(&[FORMAT_V1, KIND_PUT]);
            kv.encode(&mut out).expect("Vec has unbounded capacity");
            out
        }
        Version::Tombstone => vec![FORMAT_V1, KIND_DELETE],
    }
}

pub fn decode_version(value: &[u8]) -> Result<Version, MvccError> {
    match value {
        [FORMAT_V1, KIND_PUT, rest @ ..] => Ok(Version::Put(
            KeyValue::decode(rest).map_err(|e| MvccError::Corrupt(format!("history row: {e}")))?,
        )),
        [FORMAT_V1, KIND_DELETE] => Ok(Version::Tombstone),
        _ => Err(MvccError::Corrupt("history row with unknown format".into())),
    }
}

/// One event in an `events` row: which key changed at that revision and how. The data
/// itself lives in `history` (same key and revision), so it is not stored twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    pub deleted: bool,
    pub key: Vec<u8>,
}

/// Value of an `events` row: the keys a revision changed, in the order they changed.
pub fn encode_events(events: &[EventKey]) -> Vec<u8> {
    let len: usize = events.iter().map(|e| 5 + e.key.len()).sum();
    let mut out = Vec::with_capacity(1 + len);
    out.push(FORMAT_V1);
    for e in events {
        out.push(if e.deleted { KIND_DELETE } else { KIND_PUT });
        out.extend_from_slice(&(e.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&e.key);
    }
    out
}

pub fn decode_events(value: &[u8]) -> Result<Vec<EventKey>, MvccError> {
    let corrupt = || MvccError::Corrupt("malformed events row".into());
    let Some((&FORMAT_V1, mut rest)) = value.split_first() else {
        return Err(corrupt());
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(corrupt());
        }
        let deleted = match rest[0] {
            KIND_PUT => false,
            KIND_DELETE => true,
            _ => return Err(corrupt()),
        };
        let len = u32::from_be_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let key = rest.get(5..5 + len).ok_or_else(corrupt)?.to_vec();
        rest = &rest[5 + len..];
        out.push(EventKey { deleted, key });
    }
    Ok(out)
}

/// A lease id as a key: big-endian with the sign bit flipped, so byte order is numeric order.
pub fn encode_lease_id(id: i64) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_lease_id(bytes: &[u8]) -> Result<i64, MvccError> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| MvccError::Corrupt(format!("lease id of {} bytes", bytes.len())))?;
    Ok((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

/// Value of a `leases` row: the granted TTL in seconds.
pub fn encode_lease(ttl: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(FORMAT_V1);
    out.extend_from_slice(&ttl.to_be_bytes());
    out
}

pub fn decode_lease(value: &[u8]) -> Result<i64, MvccError> {
    match value.split_first() {
        Some((&FORMAT_V1, rest)) if rest.len() == 8 => {
            Ok(i64::from_be_bytes(rest.try_into().expect("checked length")))
        }
        _ => Err(MvccError::Corrupt("lease row with unknown format".into())),
    }
}

/// Key of a `lease_keys` row: `lease id ++ user key`.
pub fn lease_key_row(id: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&encode_lease_id(id));
    out.extend_from_slice(key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_keep_user_key_order_and_never_interleave() {
        let keys: &[&[u8]] =
            &[b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0\xff", b"a\x01", b"ab", b"b", b"\xff"];
        let mut encoded = Vec::new();
        for k in keys {
            for rev in [1i64, 7, 300, i64::MAX] {
                encoded.push((history_key(k, rev), k.to_vec(), rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(sorted, encoded, "byte order must equal (user key, revision) order");
        for (enc, key, rev) in &encoded {
            assert_eq!(decode_history_key(enc).unwrap(), (key.clone(), *rev));
            assert!(enc.starts_with(&history_prefix(key)));
        }
    }

    #[test]
    fn versions_round_trip_and_reject_unknown_formats() {
        let kv = KeyValue {
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            value: b"v".to_vec(),
            lease: 9,
            ..Default::default()
        };
        let put = Version::Put(kv.clone());
        assert_eq!(decode_version(&encode_version(&put)).unwrap(), put);
        assert_eq!(decode_version(&encode_version(&Version::Tombstone)).unwrap(), Version::Tombstone);
        assert!(decode_version(&[2, 0]).is_err());
        assert!(decode_version(&[]).is_err());
        let mut with_key = kv.clone();
        with_key.key = b"k".to_vec();
        assert_eq!(decode_kv(b"k", &encode_kv(&kv)).unwrap(), with_key);
        assert!(decode_kv(b"k", &[9]).is_err());
    }

    #[test]
    fn events_round_trip() {
        let events =
            vec![EventKey { deleted: false, key: b"a".to_vec() }, EventKey { deleted: true, key: vec![] }];
        assert_eq!(decode_events(&encode_events(&events)).unwrap(), events);
        assert!(decode_events(&[FORMAT_V1, 0, 0, 0, 0, 9]).is_err());
    }
}

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

use cairn_core::seal::Sealer;
use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use crate::error::MvccError;

/// The first byte of every stored value.
pub const FORMAT_V1: u8 = 1;
/// The first byte of a `kv` or `history` row whose value is sealed (secrets at rest): the
/// layout of [`FORMAT_V1`], with the KeyValue's `value` replaced by its sealed bytes
/// ([`cairn_core::seal`]; bound to the key and the version's `mod_revision`, which stay in
/// the clear with the rest of the metadata).
pub const FORMAT_SEALED: u8 = 2;

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

/// The start of the history rows of every key with `prefix`: the prefix escaped as in
/// [`encode_user_key`], without the end marker (a key's escaped bytes start with it exactly
/// when the key starts with `prefix`).
pub fn encode_user_key_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut out = history_prefix(prefix);
    out.truncate(out.len() - 2);
    out
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

/// Value of a `kv` row: the latest version of a live key (its `key` field left empty), its
/// value sealed when `sealer` covers `key`.
pub fn encode_kv(key: &[u8], kv: &KeyValue, sealer: Option<&Sealer>) -> Vec<u8> {
    match sealed_copy(key, kv, sealer) {
        Some(sealed) => encode_with(&[FORMAT_SEALED], &sealed),
        None => encode_with(&[FORMAT_V1], kv),
    }
}

pub fn decode_kv(key: &[u8], value: &[u8], sealer: Option<&Sealer>) -> Result<KeyValue, MvccError> {
    let mut kv = match value.split_first() {
        Some((&FORMAT_V1, rest)) => decode_message(rest, "kv row")?,
        Some((&FORMAT_SEALED, rest)) => open(key, decode_message(rest, "kv row")?, sealer)?,
        _ => return Err(MvccError::Corrupt("kv row with unknown format".into())),
    };
    kv.key = key.to_vec();
    Ok(kv)
}

/// Value of a `history` row of `key`, its value sealed when `sealer` covers `key`.
pub fn encode_version(key: &[u8], version: &Version, sealer: Option<&Sealer>) -> Vec<u8> {
    match version {
        Version::Put(kv) => match sealed_copy(key, kv, sealer) {
            Some(sealed) => encode_with(&[FORMAT_SEALED, KIND_PUT], &sealed),
            None => encode_with(&[FORMAT_V1, KIND_PUT], kv),
        },
        Version::Tombstone => vec![FORMAT_V1, KIND_DELETE],
    }
}

pub fn decode_version(key: &[u8], value: &[u8], sealer: Option<&Sealer>) -> Result<Version, MvccError> {
    match value {
        [FORMAT_V1, KIND_PUT, rest @ ..] => Ok(Version::Put(decode_message(rest, "history row")?)),
        [FORMAT_SEALED, KIND_PUT, rest @ ..] => {
            Ok(Version::Put(open(key, decode_message(rest, "history row")?, sealer)?))
        }
        [FORMAT_V1, KIND_DELETE] => Ok(Version::Tombstone),
        _ => Err(MvccError::Corrupt("history row with unknown format".into())),
    }
}

/// Whether a `history` row is a tombstone, without opening a sealed value.
pub fn is_tombstone(value: &[u8]) -> Result<bool, MvccError> {
    match value {
        [FORMAT_V1 | FORMAT_SEALED, KIND_PUT, ..] => Ok(false),
        [FORMAT_V1, KIND_DELETE] => Ok(true),
        _ => Err(MvccError::Corrupt("history row with unknown format".into())),
    }
}

/// A `history` row as it would be stored unsealed (HashKV hashes these, so that members
/// agree whatever each seals, and a hash does not change when values are re-sealed).
pub fn unsealed_history_row(key: &[u8], value: &[u8], sealer: Option<&Sealer>) -> Result<Vec<u8>, MvccError> {
    match value.first() {
        Some(&FORMAT_SEALED) => Ok(encode_version(key, &decode_version(key, value, sealer)?, None)),
        _ => Ok(value.to_vec()),
    }
}

/// `kv` with its value sealed, when `sealer` covers `key`.
fn sealed_copy(key: &[u8], kv: &KeyValue, sealer: Option<&Sealer>) -> Option<KeyValue> {
    let sealer = sealer.filter(|s| s.covers(key))?;
    Some(KeyValue { value: sealer.seal_value(key, kv.mod_revision, &kv.value), ..kv.clone() })
}

fn open(key: &[u8], mut kv: KeyValue, sealer: Option<&Sealer>) -> Result<KeyValue, MvccError> {
    kv.value = match sealer {
        Some(s) => s.open_value(key, kv.mod_revision, &kv.value)?,
        None => return Err(cairn_core::seal::SealError::no_key(&kv.value).into()),
    };
    Ok(kv)
}

fn encode_with(header: &[u8], kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + kv.encoded_len());
    out.extend_from_slice(header);
    kv.encode(&mut out).expect("Vec has unbounded capacity");
    out
}

fn decode_message(bytes: &[u8], what: &str) -> Result<KeyValue, MvccError> {
    KeyValue::decode(bytes).map_err(|e| MvccError::Corrupt(format!("{what}: {e}")))
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
        assert_eq!(decode_version(b"k", &encode_version(b"k", &put, None), None).unwrap(), put);
        let tomb = encode_version(b"k", &Version::Tombstone, None);
        assert_eq!(decode_version(b"k", &tomb, None).unwrap(), Version::Tombstone);
        assert!(decode_version(b"k", &[3, 0], None).is_err());
        assert!(decode_version(b"k", &[], None).is_err());
        let mut with_key = kv.clone();
        with_key.key = b"k".to_vec();
        assert_eq!(decode_kv(b"k", &encode_kv(b"k", &kv, None), None).unwrap(), with_key);
        assert!(decode_kv(b"k", &[9], None).is_err());
    }

    fn sealer(n: u8) -> Sealer {
        use cairn_core::seal::DataKey;
        Sealer::new(DataKey::new([n; 8], [n; 32], [n; 32]), Vec::new(), vec![b"/secrets/".to_vec()])
    }

    #[test]
    fn covered_values_are_sealed_on_disk_and_open_only_with_the_key() {
        let s = sealer(1);
        let kv = KeyValue {
            create_revision: 2,
            mod_revision: 5,
            version: 1,
            value: b"hunter2".to_vec(),
            ..Default::default()
        };
        let key = b"/secrets/db".as_slice();
        let row = encode_kv(key, &kv, Some(&s));
        let history = encode_version(key, &Version::Put(kv.clone()), Some(&s));
        for stored in [&row, &history] {
            assert!(!stored.windows(7).any(|w| w == b"hunter2"), "plaintext on disk");
        }
        let opened = decode_kv(key, &row, Some(&s)).unwrap();
        assert_eq!((opened.value.as_slice(), opened.mod_revision), (b"hunter2".as_slice(), 5));
        assert_eq!(decode_version(key, &history, Some(&s)).unwrap(), Version::Put(kv.clone()));
        assert!(!is_tombstone(&history).unwrap());
        // HashKV sees the unsealed row whatever the member seals.
        assert_eq!(
            unsealed_history_row(key, &history, Some(&s)).unwrap(),
            encode_version(key, &Version::Put(kv.clone()), None)
        );
        // Without the key, or with another, the member says which key it lacks.
        let none = decode_kv(key, &row, None).unwrap_err().to_string();
        assert!(none.contains("0101010101010101") && none.contains("no cluster key"), "{none}");
        let other = decode_kv(key, &row, Some(&sealer(2))).unwrap_err().to_string();
        assert!(other.contains("which this member does not have"), "{other}");
        // A sealed row moved to another key does not open.
        assert!(decode_kv(b"/secrets/dc", &row, Some(&s)).is_err());
        // Keys outside the prefixes are stored as before.
        assert_eq!(encode_kv(b"/config/x", &kv, Some(&s)), encode_kv(b"/config/x", &kv, None));
    }

    #[test]
    fn events_round_trip() {
        let events =
            vec![EventKey { deleted: false, key: b"a".to_vec() }, EventKey { deleted: true, key: vec![] }];
        assert_eq!(decode_events(&encode_events(&events)).unwrap(), events);
        assert!(decode_events(&[FORMAT_V1, 0, 0, 0, 0, 9]).is_err());
    }
}

//! Secrets at rest: values under configured key prefixes are sealed with AES-256-GCM before
//! they are stored, and opened when read, so that a stolen disk, backup or snapshot gives
//! them away to no one without the cluster key.
//!
//! - The data key is derived from the cluster key (HKDF-SHA256, by the caller) and named by
//!   the cluster key's public fingerprint, which every sealed value carries: a member without
//!   that key says which key it lacks instead of misreading.
//! - A value's nonce is synthetic: HMAC-SHA256 of its key, revision and plaintext under a
//!   second derived key. Unique per (key, revision, value) — a nonce repeats only for the
//!   very same plaintext at the same place — and needs no random source, so every member
//!   seals a version alike.
//! - The key and revision are bound as associated data: a sealed value moved to another key
//!   or revision does not open.
//! - [`Sealer::seal_blob`] seals whole records (Raft log entries) with a random nonce and
//!   caller-chosen associated data.
//!
//! Layout of a sealed value: key id (8 bytes) ‖ nonce (12) ‖ ciphertext and tag.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const KEY_ID_BYTES: usize = 8;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES;

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Sealed with a key this member does not hold (another cluster key, or a rotated one).
    #[error(
        "a value is sealed with cluster key {key_id}, which this member does not have (it has {have}): start it with that key, or as the previous key during a rotation"
    )]
    UnknownKey { key_id: String, have: String },
    /// The key matched but the value does not open: damaged, or moved to another key or
    /// revision.
    #[error("a sealed value does not open with cluster key {key_id}: damaged, or moved")]
    Damaged { key_id: String },
    /// Too short to be a sealed value.
    #[error("a sealed value of {0} bytes is malformed")]
    Malformed(usize),
}

impl SealError {
    /// Why `sealed` does not open on a member that holds no cluster key at all.
    pub fn no_key(sealed: &[u8]) -> SealError {
        match sealed.get(..KEY_ID_BYTES) {
            Some(id) => SealError::UnknownKey { key_id: hex(id), have: "no cluster key".into() },
            None => SealError::Malformed(sealed.len()),
        }
    }
}

/// One data key: what a cluster key gives for sealing.
#[derive(Clone)]
pub struct DataKey {
    id: [u8; KEY_ID_BYTES],
    cipher: Aes256Gcm,
    nonce_key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", hex(&self.id))
    }
}

impl DataKey {
    /// `id`: the cluster key's fingerprint; `encryption` and `nonce`: two keys derived from it.
    pub fn new(id: [u8; KEY_ID_BYTES], encryption: [u8; 32], nonce: [u8; 32]) -> DataKey {
        DataKey { id, cipher: Aes256Gcm::new(&encryption.into()), nonce_key: nonce }
    }

    pub fn id(&self) -> String {
        hex(&self.id)
    }
}

/// Seals and opens values: the current data key seals; it and any previous keys open.
#[derive(Debug, Clone)]
pub struct Sealer {
    current: DataKey,
    previous: Vec<DataKey>,
    prefixes: Vec<Vec<u8>>,
}

impl Sealer {
    /// Seal values of keys under `prefixes` with `current`; open with it or `previous`.
    pub fn new(current: DataKey, previous: Vec<DataKey>, prefixes: Vec<Vec<u8>>) -> Sealer {
        Sealer { current, previous, prefixes }
    }

    /// Whether the value of `key` is sealed when written.
    pub fn covers(&self, key: &[u8]) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p))
    }

    pub fn prefixes(&self) -> &[Vec<u8>] {
        &self.prefixes
    }

    /// Whether previous keys are kept to open what they sealed (a rotation under way).
    pub fn has_previous(&self) -> bool {
        !self.previous.is_empty()
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> String {
        self.current.id()
    }

    /// Seal `plaintext`, the value of `key` at `revision`.
    pub fn seal_value(&self, key: &[u8], revision: i64, plaintext: &[u8]) -> Vec<u8> {
        let aad = value_aad(key, revision);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.current.nonce_key)
            .expect("HMAC takes any key length");
        mac.update(&aad);
        mac.update(plaintext);
        let tag = mac.finalize().into_bytes();
        let nonce: [u8; NONCE_BYTES] = tag[..NONCE_BYTES].try_into().expect("SHA-256 is 32 bytes");
        self.seal_with(&self.current, nonce, &aad, plaintext)
    }

    /// Open the value of `key` at `revision`.
    pub fn open_value(&self, key: &[u8], revision: i64, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open(&value_aad(key, revision), sealed)
    }

    /// Seal a whole record with a random nonce; `aad` must be given again to open it.
    pub fn seal_blob(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        crate::sim::fill_random(&mut nonce);
        self.seal_with(&self.current, nonce, aad, plaintext)
    }

    pub fn open_blob(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open(aad, sealed)
    }

    /// Whether `sealed` was sealed with the current key (else it is due for re-sealing).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.get(..KEY_ID_BYTES) == Some(&self.current.id[..])
    }

    fn seal_with(&self, key: &DataKey, nonce: [u8; NONCE_BYTES], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let sealed = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .expect("AES-GCM seals any message below 64 GiB");
        let mut out = Vec::with_capacity(KEY_ID_BYTES + NONCE_BYTES + sealed.len());
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Malformed(sealed.len()));
        }
        let (id, rest) = sealed.split_at(KEY_ID_BYTES);
        let (nonce, body) = rest.split_at(NONCE_BYTES);
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id[..] == *id)
            .ok_or_else(|| SealError::UnknownKey { key_id: hex(id), have: self.key_ids() })?;
        key.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .map_err(|_| SealError::Damaged { key_id: key.id() })
    }

    fn key_ids(&self) -> String {
        std::iter::once(&self.current).chain(&self.previous).map(DataKey::id).collect::<Vec<_>>().join(", ")
    }
}

/// Associated data of a value: its key (length-prefixed) and revision.
fn value_aad(key: &[u8], revision: i64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(key.len() + 16);
    aad.extend_from_slice(&(key.len() as u64).to_be_bytes());
    aad.extend_from_slice(key);
    aad.extend_from_slice(&revision.to_be_bytes());
    aad
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> DataKey {
        DataKey::new([n; 8], [n; 32], [n.wrapping_add(1); 32])
    }

    fn sealer(n: u8) -> Sealer {
        Sealer::new(key(n), Vec::new(), vec![b"/secrets/".to_vec()])
    }

    #[test]
    fn a_sealed_value_opens_only_at_its_key_and_revision() {
        let s = sealer(1);
        let sealed = s.seal_value(b"/secrets/db", 7, b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(sealed.len(), 7 + OVERHEAD);
        assert_eq!(s.open_value(b"/secrets/db", 7, &sealed).unwrap(), b"hunter2");
        assert!(matches!(s.open_value(b"/secrets/db", 8, &sealed), Err(SealError::Damaged { .. })));
        assert!(matches!(s.open_value(b"/secrets/dc", 7, &sealed), Err(SealError::Damaged { .. })));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(s.open_value(b"/secrets/db", 7, &flipped), Err(SealError::Damaged { .. })));
        assert_eq!(s.open_value(b"k", 1, &[0; 5]), Err(SealError::Malformed(5)));
    }

    #[test]
    fn sealing_is_deterministic_per_version_and_differs_between_versions() {
        let s = sealer(1);
        assert_eq!(s.seal_value(b"/secrets/a", 3, b"v"), s.seal_value(b"/secrets/a", 3, b"v"));
        assert_ne!(s.seal_value(b"/secrets/a", 3, b"v")[8..20], s.seal_value(b"/secrets/a", 4, b"v")[8..20]);
        assert_ne!(s.seal_value(b"/secrets/a", 3, b"v")[8..20], s.seal_value(b"/secrets/a", 3, b"w")[8..20]);
        // Blobs take a fresh nonce each time.
        assert_ne!(s.seal_blob(b"1", b"entry"), s.seal_blob(b"1", b"entry"));
        assert_eq!(s.open_blob(b"1", &s.seal_blob(b"1", b"entry")).unwrap(), b"entry");
    }

    #[test]
    fn a_member_without_the_key_says_which_key_it_lacks() {
        let sealed = sealer(1).seal_value(b"/secrets/a", 3, b"v");
        let err = sealer(2).open_value(b"/secrets/a", 3, &sealed).unwrap_err();
        assert_eq!(
            err,
            SealError::UnknownKey { key_id: "0101010101010101".into(), have: "0202020202020202".into() }
        );
        assert!(err.to_string().contains("which this member does not have"));
        // With the old key as a previous one, it opens, and is due for re-sealing.
        let rotated = Sealer::new(key(2), vec![key(1)], vec![b"/secrets/".to_vec()]);
        assert_eq!(rotated.open_value(b"/secrets/a", 3, &sealed).unwrap(), b"v");
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.is_current(&rotated.seal_value(b"/secrets/a", 3, b"v")));
    }

    #[test]
    fn prefixes_decide_what_is_sealed() {
        let s = sealer(1);
        assert!(s.covers(b"/secrets/x"));
        assert!(s.covers(b"/secrets/"));
        assert!(!s.covers(b"/secrets"));
        assert!(!s.covers(b"/config/x"));
    }
}

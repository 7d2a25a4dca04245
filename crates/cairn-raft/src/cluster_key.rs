//! The cluster key: every member of a cluster is started with the same secret
//! (`--encryption-key-file` or `CAIRN_ENCRYPTION_KEY`), as the product's HA guide asks. The
//! key never crosses the wire. Two values are derived from it with HKDF-SHA256: a public
//! fingerprint, which names the key in messages, logs and headers, and the peer key, with
//! which every peer connection proves that both ends hold the key ([`crate::peer_auth`]).
//! A node with another key cannot join, and a member restarted with the wrong key cannot
//! take part; both are told why, with both fingerprints. A cluster may run without a key
//! (fingerprint `none`, peers unauthenticated), which `cairn` reports plainly.

use hkdf::Hkdf;
use sha2::Sha256;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::peer_auth::PeerConnInfo;
use crate::peer_error::PeerError;

/// The header that carries the caller's fingerprint on every peer request.
pub const FINGERPRINT_HEADER: &str = "cairn-key-fingerprint";

/// The fingerprint of "no key" (also what a member of 0.1, which sends no header, has).
pub const NO_KEY: &str = "none";

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// A member's cluster key, as far as anyone else may know it: its fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    fingerprint: String,
    /// What peer connections prove they hold (`None`: no key).
    peer_key: Option<[u8; 32]>,
    /// What seals secrets at rest: the fingerprint's bytes (the key's id in sealed values),
    /// the encryption key and the nonce key (`None`: no key).
    data_key: Option<([u8; 8], [u8; 32], [u8; 32])>,
    /// The key in use before a rotation: peers may still prove it, and this member proves
    /// it to members that have not switched yet.
    previous: Option<std::sync::Arc<ClusterKey>>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({})", self.fingerprint)
    }
}

impl ClusterKey {
    /// No key.
    pub fn none() -> ClusterKey {
        ClusterKey { fingerprint: NO_KEY.into(), peer_key: None, data_key: None, previous: None }
    }

    /// The key `secret` (surrounding whitespace ignored, so a file's trailing newline does not
    /// matter). Refused when shorter than [`MIN_KEY_BYTES`].
    pub fn from_secret(secret: &[u8]) -> Result<ClusterKey, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the cluster key is {} bytes; it must be at least {MIN_KEY_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)",
                secret.len()
            ));
        }
        let hk = Hkdf::<Sha256>::new(Some(b"cairn cluster key v1"), secret);
        let mut out = [0u8; 8];
        hk.expand(b"fingerprint", &mut out).map_err(|e| format!("deriving the key fingerprint: {e}"))?;
        let mut peer_key = [0u8; 32];
        hk.expand(b"peer authentication", &mut peer_key)
            .map_err(|e| format!("deriving the peer key: {e}"))?;
        let (mut encryption, mut nonce) = ([0u8; 32], [0u8; 32]);
        hk.expand(b"data encryption", &mut encryption).map_err(|e| format!("deriving the data key: {e}"))?;
        hk.expand(b"data nonce", &mut nonce).map_err(|e| format!("deriving the nonce key: {e}"))?;
        Ok(ClusterKey {
            fingerprint: out.iter().map(|b| format!("{b:02x}")).collect(),
            peer_key: Some(peer_key),
            data_key: Some((out, encryption, nonce)),
            previous: None,
        })
    }

    /// This key, with `previous` (the key before a rotation) still accepted from peers.
    pub fn with_previous(self, previous: ClusterKey) -> ClusterKey {
        ClusterKey { previous: Some(std::sync::Arc::new(ClusterKey { previous: None, ..previous })), ..self }
    }

    /// The key before a rotation, if this member was given one.
    pub fn previous(&self) -> Option<&ClusterKey> {
        self.previous.as_deref()
    }

    /// The key that seals secrets at rest, named by this key's fingerprint (`None` without a
    /// cluster key).
    pub fn data_key(&self) -> Option<cairn_core::seal::DataKey> {
        self.data_key.map(|(id, encryption, nonce)| cairn_core::seal::DataKey::new(id, encryption, nonce))
    }

    /// The key peer connections authenticate with (`None` without a cluster key).
    pub fn peer_key(&self) -> Option<&[u8; 32]> {
        self.peer_key.as_ref()
    }

    /// A key that claims `fingerprint` but holds `actual`'s secret (tests of forgery).
    #[cfg(test)]
    pub(crate) fn forged(fingerprint: &str, actual: ClusterKey) -> ClusterKey {
        ClusterKey { fingerprint: fingerprint.to_string(), ..actual }
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn is_none(&self) -> bool {
        self.fingerprint == NO_KEY
    }

    /// The caller side: stamps every outgoing peer request with this member's fingerprint.
    pub fn stamp(&self) -> KeyStamp {
        // A fingerprint is hex or "none": always a valid header value.
        KeyStamp(
            MetadataValue::try_from(self.fingerprint.as_str())
                .unwrap_or_else(|_| MetadataValue::from_static(NO_KEY)),
        )
    }

    /// The server side: serve a request that came on a connection authenticated with this
    /// key; without a key, one whose caller has no key either. Refuse anything else.
    pub fn check<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        let connection = request.extensions().get::<PeerConnInfo>().copied();
        if connection.is_some_and(|c| c.authenticated) {
            return Ok(request);
        }
        let theirs =
            request.metadata().get(FINGERPRINT_HEADER).and_then(|v| v.to_str().ok()).unwrap_or(NO_KEY);
        if self.is_none() && theirs == NO_KEY {
            return Ok(request);
        }
        let why = if theirs == self.fingerprint {
            // Only a caller that skipped the handshake gets here with our fingerprint.
            "authentication failed: the caller did not prove that it holds the cluster key".to_string()
        } else {
            crate::peer_auth::mismatch(&self.fingerprint, theirs)
        };
        crate::peer_auth::record_refusal(
            crate::peer_auth::Refusal::Unauthenticated,
            connection.and_then(|c| c.remote),
            &why,
        );
        Err(PeerError::Refused(why).into_status())
    }
}

/// Adds the fingerprint header to each request of a peer client.
#[derive(Clone)]
pub struct KeyStamp(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for KeyStamp {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(FINGERPRINT_HEADER, self.0.clone());
        Ok(request)
    }
}

/// The server-side check as a tonic interceptor.
#[derive(Clone)]
pub struct KeyCheck(pub ClusterKey);

impl tonic::service::Interceptor for KeyCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_the_key_only() {
        let a = ClusterKey::from_secret(b"0123456789abcdef0123").unwrap();
        let a_again = ClusterKey::from_secret(b"  0123456789abcdef0123\n").unwrap();
        let b = ClusterKey::from_secret(b"0123456789abcdef0124").unwrap();
        assert_eq!(a, a_again, "surrounding whitespace is not part of the key");
        assert_ne!(a, b);
        assert_eq!(a.fingerprint().len(), 16);
        assert!(!a.fingerprint().contains("0123456789"), "the fingerprint does not show the key");
        assert!(ClusterKey::from_secret(b"short").unwrap_err().contains("at least 16"));
    }

    #[test]
    fn a_request_with_another_fingerprint_is_refused_naming_both() {
        let ours = ClusterKey::from_secret(b"the cluster's own secret").unwrap();
        let theirs = ClusterKey::from_secret(b"somebody else's secret!!").unwrap();
        let mut stamp = theirs.stamp();
        let request = tonic::service::Interceptor::call(&mut stamp, Request::new(())).unwrap();
        let refused = ours.check(request).unwrap_err();
        assert!(
            refused.message().contains(ours.fingerprint())
                && refused.message().contains(theirs.fingerprint())
        );
        assert_eq!(PeerError::from_status(&refused), PeerError::Refused(refused.message().to_string()));
        // The right fingerprint on a connection that skipped the handshake proves nothing.
        let mut stamp = ours.stamp();
        let copied = ours.check(tonic::service::Interceptor::call(&mut stamp, Request::new(())).unwrap());
        assert!(copied.unwrap_err().message().contains("did not prove that it holds the cluster key"));
        // A connection that made the handshake is served.
        let mut request = Request::new(());
        let info = PeerConnInfo { remote: None, authenticated: true };
        request.extensions_mut().insert(info);
        assert!(ours.check(request).is_ok());
        // No header (a 0.1 member) is "no key".
        assert!(ClusterKey::none().check(Request::new(())).is_ok());
        assert!(ours.check(Request::new(())).is_err());
    }
}

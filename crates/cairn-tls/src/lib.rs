//! TLS for Cairn's two ports, configured as etcd is: a certificate and key file
//! (`--cert-file`/`--key-file`, `--peer-cert-file`/`--peer-key-file`), a CA to verify the
//! other side's certificate with (`--trusted-ca-file`, `--peer-trusted-ca-file`), and
//! whether a client certificate is required (`--client-cert-auth`,
//! `--peer-client-cert-auth`). rustls with the ring provider; TLS 1.2 and 1.3 only.
//!
//! A server's certificate and key are read again when either file changes (checked at most
//! once a second, at a handshake), so that certificates can be renewed without a restart; a
//! pair that does not load keeps the previous one in use, and says so in the log.
//!
//! **Architecture invariant:** this crate knows TLS only: no gRPC, no HTTP, no Raft.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

mod stream;

pub use rustls;
pub use stream::{Io, MaybeTls};
pub use tokio_rustls;

/// One port's TLS files, as etcd's flags name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA that signs the other side's certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require the other side to present a certificate the CA signed.
    pub client_cert_auth: bool,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the key in {path} cannot sign: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("the CA in {path}: {message}")]
    BadCa { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read { path: path.into(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::Read { path: path.into(), message: e.to_string() })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa { path: path.into(), message: e.to_string() })?;
    }
    Ok(roots)
}

fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(cert)?;
    let signing = provider()
        .key_provider
        .load_private_key(read_key(key)?)
        .map_err(|e| TlsError::BadKey { path: key.into(), message: e.to_string() })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| TlsError::BadKey {
        path: key.into(),
        message: format!("it does not match {}: {e}", cert.display()),
    })?;
    Ok(Arc::new(certified))
}

/// The server certificate, read again when its files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    checked: Instant,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    current: Arc<CertifiedKey>,
}

/// How often, at most, a handshake looks at the files' modification times.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloading {
    fn new(cert: &Path, key: &Path) -> Result<Reloading, TlsError> {
        let current = certified_key(cert, key)?;
        let state = Loaded { checked: Instant::now(), stamps: (modified(cert), modified(key)), current };
        Ok(Reloading { cert: cert.into(), key: key.into(), state: Mutex::new(state) })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != state.stamps {
                match certified_key(&self.cert, &self.key) {
                    Ok(fresh) => {
                        tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                        state.current = fresh;
                        state.stamps = stamps;
                    }
                    // Perhaps half written: keep serving the old pair, and look again.
                    Err(e) => {
                        tracing::warn!(error = %e, "the changed TLS certificate does not load; keeping the previous one")
                    }
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A server configuration for `files`, offering `alpn` (e.g. `h2` and `http/1.1`).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.trusted_ca_file {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
            let verifier = if files.client_cert_auth { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(
                verifier.build().map_err(|e| TlsError::BadCa { path: ca.clone(), message: e.to_string() })?,
            )
        }
        None if files.client_cert_auth => {
            return Err(TlsError::Config("client certificate auth needs a trusted CA file".into()))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Reloading::new(&files.cert_file, &files.key_file)?));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration: servers verified against `ca`, presenting `identity` (a
/// certificate and key file) when the server asks for one.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| TlsError::BadKey { path: key.into(), message: e.to_string() })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name to check a server's certificate against for `host` (a DNS name or an IP).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
        .map_err(|e| TlsError::Config(format!("{host} is not a server name: {e}")))
}

/// The common name of a certificate's subject (etcd's user for certificate auth).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: PathBuf,
        ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl Pki {
        fn new(dir: &Path) -> Pki {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
            Pki { dir: dir.into(), ca: rcgen::Issuer::new(params, key) }
        }

        /// A certificate for `cn` (and 127.0.0.1), its files named `name`.
        fn issue(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            let (c, k) = (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}-key.pem")));
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        }
    }

    /// A handshake over an in-memory pipe: the server's view of the client's certificate CN.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> Result<Option<String>, String> {
        let (a, b) = tokio::io::duplex(1 << 16);
        let accept = tokio::spawn(async move {
            let tls = tokio_rustls::TlsAcceptor::from(server).accept(b).await.map_err(|e| e.to_string())?;
            let cn = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c));
            Ok::<_, String>(cn)
        });
        let connect =
            tokio_rustls::TlsConnector::from(client).connect(server_name("localhost").unwrap(), a).await;
        let accepted = accept.await.unwrap();
        connect.map_err(|e| e.to_string())?;
        accepted
    }

    #[tokio::test]
    async fn client_certificates_are_verified_and_name_the_user() {
        let dir = tempdir();
        let pki = Pki::new(dir.path());
        let (cert, key) = pki.issue("server", "server");
        let (alice, alice_key) = pki.issue("alice", "alice");
        let ca = dir.path().join("ca.pem");
        let files = TlsFiles {
            cert_file: cert,
            key_file: key,
            trusted_ca_file: Some(ca.clone()),
            client_cert_auth: true,
        };
        let server = server_config(&files, &[b"h2"]).unwrap();
        let with_cert = client_config(&ca, Some((&alice, &alice_key)), &[b"h2"]).unwrap();
        assert_eq!(handshake(server.clone(), with_cert).await, Ok(Some("alice".into())));
        let without = client_config(&ca, None, &[b"h2"]).unwrap();
        assert!(handshake(server, without).await.is_err(), "a client without a certificate is refused");
        // Another CA's certificate is refused too.
        let other_dir = tempdir();
        let other = Pki::new(other_dir.path());
        let (mallory, mallory_key) = other.issue("mallory", "root");
        let forged = client_config(&ca, Some((&mallory, &mallory_key)), &[b"h2"]).unwrap();
        let server = server_config(&files, &[b"h2"]).unwrap();
        assert!(handshake(server, forged).await.is_err());
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_a_restart() {
        let dir = tempdir();
        let pki = Pki::new(dir.path());
        let (cert, key) = pki.issue("server", "first");
        let files = TlsFiles {
            cert_file: cert.clone(),
            key_file: key.clone(),
            trusted_ca_file: None,
            client_cert_auth: false,
        };
        let reloading = Reloading::new(&files.cert_file, &files.key_file).unwrap();
        let first = reloading.current().cert[0].clone();
        std::thread::sleep(Duration::from_millis(1100));
        // A half-written pair keeps the old one.
        std::fs::write(&cert, "garbage").unwrap();
        assert_eq!(reloading.current().cert[0], first);
        std::thread::sleep(Duration::from_millis(1100));
        let (new_cert, new_key) = pki.issue("renewed", "second");
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        let renewed = reloading.current().cert[0].clone();
        assert_ne!(renewed, first);
        assert_eq!(common_name(&renewed).as_deref(), Some("second"));
    }

    #[test]
    fn missing_and_mismatched_files_are_clear_errors() {
        let dir = tempdir();
        let pki = Pki::new(dir.path());
        let (cert, _) = pki.issue("a", "a");
        let (_, other_key) = pki.issue("b", "b");
        let files = |cert: &Path, key: &Path| TlsFiles {
            cert_file: cert.into(),
            key_file: key.into(),
            trusted_ca_file: None,
            client_cert_auth: false,
        };
        let missing = server_config(&files(&dir.path().join("nope.pem"), &other_key), &[]).unwrap_err();
        assert!(missing.to_string().contains("nope.pem"), "{missing}");
        let mismatched = server_config(&files(&cert, &other_key), &[]).unwrap_err();
        assert!(mismatched.to_string().contains("does not match"), "{mismatched}");
        let no_ca = TlsFiles { client_cert_auth: true, ..files(&cert, &other_key) };
        assert!(server_config(&no_ca, &[]).unwrap_err().to_string().contains("trusted CA"));
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }
}

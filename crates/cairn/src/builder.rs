//! [`NodeBuilder`]: every setting of the binary, for a product that runs a member in its
//! own process (`cairn::Node::builder()...start().await`). The binary builds the same
//! [`Config`] from its flags, environment and file.

use std::path::PathBuf;

use crate::{Config, Error, Node};

/// Builds and starts a [`Node`]. Unset settings keep [`Config::default`]'s values (a single
/// member with its data in `cairn-data`, clients on 127.0.0.1:2379).
///
/// ```no_run
/// # async fn demo() -> Result<(), cairn::Error> {
/// let node = cairn::Node::builder()
///     .name("web-1")
///     .data_dir("/var/lib/product/cairn")
///     .client_addr("10.0.0.1:2379")
///     .peer_addr("10.0.0.1:2380")
///     .join(["10.0.0.2:2380", "10.0.0.3:2380"])
///     .cluster_key_file("/etc/product/cluster.key")
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct NodeBuilder {
    config: Config,
}

impl NodeBuilder {
    /// Starts from `config` (e.g. one read from the product's own configuration file).
    pub fn from_config(config: Config) -> NodeBuilder {
        NodeBuilder { config }
    }

    /// This member's name, unique in the cluster.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Where this member keeps its data (created if missing).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// host:port for etcd clients, the JSON gateway, health checks and the cluster page
    /// (port 0: any free port; [`Node::client_addr`] tells which).
    pub fn client_addr(mut self, addr: impl Into<String>) -> Self {
        self.config.client_addr = addr.into();
        self
    }

    /// host:port for the other members.
    pub fn peer_addr(mut self, addr: impl Into<String>) -> Self {
        self.config.peer_addr = addr.into();
        self
    }

    /// Found a cluster of these `(name, peer address)` members, started together (etcd's
    /// `--initial-cluster`).
    pub fn initial_cluster<N: AsRef<str>, A: AsRef<str>>(
        mut self,
        members: impl IntoIterator<Item = (N, A)>,
    ) -> Self {
        let list: Vec<String> =
            members.into_iter().map(|(n, a)| format!("{}={}", n.as_ref(), a.as_ref())).collect();
        self.config.initial_cluster = Some(list.join(","));
        self
    }

    /// Join a running cluster through any of these members' peer addresses (`--join`).
    pub fn join<A: AsRef<str>>(mut self, peers: impl IntoIterator<Item = A>) -> Self {
        let list: Vec<String> = peers.into_iter().map(|a| a.as_ref().to_string()).collect();
        self.config.join = Some(list.join(","));
        self
    }

    /// The cluster key every member shares, read from a file.
    pub fn cluster_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.encryption_key_file = Some(path.into());
        self.config.encryption_key = None;
        self
    }

    /// The cluster key itself.
    pub fn cluster_key(mut self, key: impl Into<String>) -> Self {
        self.config.encryption_key = Some(key.into());
        self.config.encryption_key_file = None;
        self
    }

    /// Serve from a SQL database rather than the embedded replicated store:
    /// `postgres://user@host/db`, `mysql://…`/`mariadb://…` or `sqlite:///path` (every
    /// member points at the same one; no data directory and no peer port are used). The
    /// password may be in the URL or given with [`NodeBuilder::backend_password`] or
    /// [`NodeBuilder::backend_password_file`]; it is never logged.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let url = format!("sqlite://{}", dir.path().join("cairn.db").display());
    /// let node = cairn::Node::builder().name("web-1").backend(url).client_addr("127.0.0.1:0").start().await.unwrap();
    /// assert_eq!(node.status().role, cairn::Role::SharedDatabase);
    /// node.client().put("greeting", "hello").await.unwrap();
    /// node.shutdown().await;
    /// # });
    /// ```
    pub fn backend(mut self, url: impl Into<String>) -> Self {
        self.config.backend = Some(url.into());
        self
    }

    /// The SQL database's password (replaces the URL's).
    pub fn backend_password(mut self, password: impl Into<String>) -> Self {
        self.config.backend_password = Some(password.into());
        self.config.backend_password_file = None;
        self
    }

    /// A file holding the SQL database's password (replaces the URL's).
    pub fn backend_password_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.backend_password_file = Some(path.into());
        self.config.backend_password = None;
        self
    }

    /// Serve clients over TLS only, with this certificate and private key (PEM files).
    pub fn client_tls(mut self, cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        self.config.cert_file = Some(cert_file.into());
        self.config.key_file = Some(key_file.into());
        self
    }

    /// Require client certificates signed by this CA (PEM) on the client port; a
    /// certificate's common name is the user when a request carries no token.
    pub fn client_cert_auth(mut self, trusted_ca_file: impl Into<PathBuf>) -> Self {
        self.config.trusted_ca_file = Some(trusted_ca_file.into());
        self.config.client_cert_auth = true;
        self
    }

    /// Speak TLS only between members: this member's certificate and key, and the CA that
    /// signs every member's certificate (PEM files); each side checks the other's.
    pub fn peer_tls(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        trusted_ca_file: impl Into<PathBuf>,
    ) -> Self {
        self.config.peer_cert_file = Some(cert_file.into());
        self.config.peer_key_file = Some(key_file.into());
        self.config.peer_trusted_ca_file = Some(trusted_ca_file.into());
        self.config.peer_client_cert_auth = true;
        self
    }

    /// Any other setting, on the [`Config`] being built.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Validates the settings and starts the member (see [`Node::start`]).
    pub async fn start(self) -> Result<Node, Error> {
        Node::start(self.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_land_in_the_config() {
        let b = NodeBuilder::default()
            .name("n2")
            .data_dir("/tmp/x")
            .client_addr("127.0.0.2:2379")
            .peer_addr("127.0.0.2:2380")
            .join(["127.0.0.1:2380", "127.0.0.3:2380"])
            .cluster_key("0123456789abcdef0123")
            .configure(|c| c.election_timeout = 2000);
        let c = b.config();
        assert_eq!(c.name, "n2");
        assert_eq!(c.join.as_deref(), Some("127.0.0.1:2380,127.0.0.3:2380"));
        assert_eq!(c.encryption_key.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(c.election_timeout, 2000);
        let sql = NodeBuilder::default()
            .backend("postgres://cairn@db/cairn")
            .backend_password_file("/run/secrets/db")
            .client_tls("c.pem", "k.pem")
            .client_cert_auth("ca.pem")
            .peer_tls("p.pem", "pk.pem", "ca.pem");
        let c = sql.config();
        assert_eq!(c.backend.as_deref(), Some("postgres://cairn@db/cairn"));
        assert_eq!(c.backend_password_file.as_deref(), Some(std::path::Path::new("/run/secrets/db")));
        assert!(c.client_cert_auth && c.peer_client_cert_auth);
        assert_eq!(c.peer_trusted_ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
        let founders = NodeBuilder::default().name("a").initial_cluster([("a", "h1:1"), ("b", "h2:2")]);
        assert_eq!(founders.config().initial_cluster.as_deref(), Some("a=h1:1,b=h2:2"));
        assert!(founders.config().resolve().is_ok());
    }
}

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
        let founders = NodeBuilder::default().name("a").initial_cluster([("a", "h1:1"), ("b", "h2:2")]);
        assert_eq!(founders.config().initial_cluster.as_deref(), Some("a=h1:1,b=h2:2"));
        assert!(founders.config().resolve().is_ok());
    }
}

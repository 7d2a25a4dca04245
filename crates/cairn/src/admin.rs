//! The operator's subcommands against a running cluster, over the etcd API of any member:
//! `cairn status` (one table of every member), `cairn member list|add|update|remove|promote`,
//! `cairn move-leader`, `cairn snapshot save`. Member ids are printed and read in hex, as
//! etcdctl does.

use std::time::Duration;

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, MoveLeaderRequest, StatusRequest, StatusResponse,
};
use tonic::transport::{Channel, Endpoint};

/// Where to reach the cluster: any member's client address.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// host:port,... of one or more members' client addresses
    #[arg(
        long,
        global = true,
        env = "CAIRN_ENDPOINTS",
        default_value = "127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum MemberCommand {
    /// Every member: id, name, role, peer and client URLs
    List,
    /// Add a member (etcd's flow; `cairn serve --join` does it all in one step) and print how
    /// to start it
    Add {
        /// The new member's name (it starts with `--name NAME`)
        name: String,
        /// Where the members will reach it: http://host:port
        #[arg(long)]
        peer_url: String,
        /// Add it as a learner (promote it later with `member promote`)
        #[arg(long)]
        learner: bool,
    },
    /// Move a member to another peer address (by hex id)
    Update {
        id: String,
        /// Its new peer address: http://host:port
        #[arg(long)]
        peer_url: String,
    },
    /// Remove a member (by hex id, as `member list` shows it)
    Remove { id: String },
    /// Make a learner a voter (by hex id)
    Promote { id: String },
}

/// Why an admin command failed: the message to print (exit code 1).
pub type Failure = String;

fn endpoint_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn connect(addr: &str) -> Result<Channel, Failure> {
    let url = endpoint_url(addr);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("bad endpoint {addr}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    endpoint.connect().await.map_err(|e| format!("cannot reach {url}: {e}"))
}

/// The first endpoint that answers.
async fn any(target: &Target) -> Result<Channel, Failure> {
    let mut last = String::from("no endpoints given");
    for addr in &target.endpoints {
        match connect(addr).await {
            Ok(channel) => return Ok(channel),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn parse_id(id: &str) -> Result<u64, Failure> {
    u64::from_str_radix(id.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{id:?} is not a member id (hex)"))
}

fn status_error(what: &str, s: tonic::Status) -> Failure {
    format!("{what}: {}", s.message())
}

async fn members(channel: Channel) -> Result<Vec<Member>, Failure> {
    let resp = ClusterClient::new(channel)
        .member_list(MemberListRequest { linearizable: false })
        .await
        .map_err(|s| status_error("member list", s))?;
    Ok(resp.into_inner().members)
}

/// `cairn member …`: prints what happened.
pub async fn member(target: &Target, command: &MemberCommand) -> Result<String, Failure> {
    let channel = any(target).await?;
    match command {
        MemberCommand::List => {
            let mut rows = vec![row(&["ID", "NAME", "ROLE", "PEER URLS", "CLIENT URLS"])];
            for m in members(channel).await? {
                let role = if m.is_learner { "learner" } else { "voter" };
                rows.push(row(&[
                    &format!("{:x}", m.id),
                    &m.name,
                    role,
                    &m.peer_ur_ls.join(","),
                    &m.client_ur_ls.join(","),
                ]));
            }
            Ok(table(&rows))
        }
        MemberCommand::Add { name, peer_url, learner } => {
            let resp = ClusterClient::new(channel)
                .member_add(MemberAddRequest { peer_ur_ls: vec![peer_url.clone()], is_learner: *learner })
                .await
                .map_err(|s| status_error("member add", s))?
                .into_inner();
            let id = resp.member.as_ref().map_or(0, |m| m.id);
            Ok(start_instructions(name, peer_url, id, &resp.members, *learner))
        }
        MemberCommand::Update { id, peer_url } => {
            let id = parse_id(id)?;
            ClusterClient::new(channel)
                .member_update(MemberUpdateRequest { id, peer_ur_ls: vec![peer_url.clone()] })
                .await
                .map_err(|s| status_error("member update", s))?;
            Ok(format!("Member {id:x} now has peer URL {peer_url}\n"))
        }
        MemberCommand::Remove { id } => {
            let id = parse_id(id)?;
            ClusterClient::new(channel)
                .member_remove(MemberRemoveRequest { id })
                .await
                .map_err(|s| status_error("member remove", s))?;
            Ok(format!("Member {id:x} removed from the cluster\n"))
        }
        MemberCommand::Promote { id } => {
            let id = parse_id(id)?;
            ClusterClient::new(channel)
                .member_promote(MemberPromoteRequest { id })
                .await
                .map_err(|s| status_error("member promote", s))?;
            Ok(format!("Member {id:x} promoted to voter\n"))
        }
    }
}

/// What `member add` prints: the new member's id and the command that starts it.
fn start_instructions(name: &str, peer_url: &str, id: u64, members: &[Member], learner: bool) -> String {
    let cluster: Vec<String> = members
        .iter()
        .flat_map(|m| {
            let n = if m.id == id { name } else { m.name.as_str() };
            m.peer_ur_ls.iter().map(move |u| format!("{n}={u}"))
        })
        .collect();
    let role = if learner { "learner" } else { "voter" };
    let addr = peer_url.trim_start_matches("http://").trim_end_matches('/');
    let mut out = format!("Member {id:x} added to the cluster as a {role}\n\nStart it with:\n");
    out.push_str(&format!(
        "  cairn serve --name {name} --peer-addr {addr} --initial-cluster {} --initial-cluster-state existing\n",
        cluster.join(",")
    ));
    if learner {
        out.push_str(&format!("then, once it has caught up: cairn member promote {id:x}\n"));
    }
    out
}

/// `cairn snapshot save FILE`: stream a backup from the first member that answers into
/// `FILE.part` (progress on stderr), check that it is whole (its size and SHA-256), sync it
/// and move it to `FILE`. Returns what to print.
pub async fn snapshot_save(target: &Target, file: &std::path::Path) -> Result<String, Failure> {
    use cairn_proto::etcdserverpb::SnapshotRequest;
    use std::io::Write;
    let mut stream = MaintenanceClient::new(any(target).await?)
        .max_decoding_message_size(64 << 20)
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| status_error("snapshot", s))?
        .into_inner();
    let part = file.with_extension(match file.extension() {
        Some(ext) => format!("{}.part", ext.to_string_lossy()),
        None => "part".to_string(),
    });
    let write_error = |e: std::io::Error| format!("cannot write {}: {e}", part.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&part).map_err(write_error)?);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
            .map_err(|e| e.to_string())?,
    );
    let (mut received, mut revision) = (0u64, 0i64);
    let outcome = async {
        while let Some(msg) = stream.message().await.map_err(|s| status_error("snapshot", s))? {
            if received == 0 {
                bar.set_length(msg.remaining_bytes + msg.blob.len() as u64);
                revision = msg.header.as_ref().map_or(0, |h| h.revision);
            }
            out.write_all(&msg.blob).map_err(write_error)?;
            received += msg.blob.len() as u64;
            bar.set_position(received);
        }
        let file = out.into_inner().map_err(|e| write_error(e.into_error()))?;
        file.sync_all().map_err(write_error)?;
        let mut file = std::fs::File::open(&part).map_err(write_error)?;
        cairn_mvcc::verify_backup(&mut file)
            .map_err(|e| format!("the snapshot received is not whole: {e}"))?;
        Ok::<(), Failure>(())
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, file)
        .map_err(|e| format!("cannot move {} to {}: {e}", part.display(), file.display()))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable once the directory is synced.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(format!("Snapshot saved at {} ({received} bytes, revision {revision})\n", file.display()))
}

/// One member's status, or why it could not be had.
async fn member_status(m: &Member) -> Result<StatusResponse, Failure> {
    Ok(member_status_and_facts(m).await?.0)
}

/// What `Maintenance.Status` says of a member beyond etcd's fields: Cairn's version (from
/// the `cairn-version` header; "etcd <api version>" for a member that does not send it) and
/// its cluster key fingerprint (absent from etcd and Cairn 0.1).
struct Facts {
    version: String,
    key: Option<String>,
}

async fn member_status_and_facts(m: &Member) -> Result<(StatusResponse, Facts), Failure> {
    let addr = m.client_ur_ls.first().ok_or_else(|| "no client URL published".to_string())?;
    let channel = connect(addr).await?;
    let resp = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .map_err(|s| s.message().to_string())?;
    let header = |name: &str| resp.metadata().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let version = header(cairn_api::maintenance::SOFTWARE_VERSION_HEADER);
    let key = header(cairn_api::maintenance::KEY_FINGERPRINT_HEADER);
    let status = resp.into_inner();
    let version = version.unwrap_or_else(|| format!("etcd {}", status.version));
    Ok((status, Facts { version, key }))
}

/// Whether a member's key matches the cluster's: the fingerprint most members report.
fn key_column(key: &Option<String>, common: Option<&str>) -> String {
    match (key.as_deref(), common) {
        (None, _) => "?".into(),
        (Some("none"), Some("none")) => "none".into(),
        (Some(k), Some(c)) if k == c => format!("{} in sync", &k[..k.len().min(8)]),
        (Some(k), _) => format!("{} MISMATCH", &k[..k.len().min(8)]),
    }
}

/// `cairn status`: one table of every member. Lag is the leader's applied index minus the
/// member's; KEY is the member's cluster key fingerprint and whether it matches the others'.
pub async fn status(target: &Target) -> Result<String, Failure> {
    let members = members(any(target).await?).await?;
    let statuses = futures::future::join_all(members.iter().map(member_status_and_facts)).await;
    let leader_applied = statuses
        .iter()
        .flatten()
        .map(|(s, _)| s)
        .find(|s| s.header.as_ref().is_some_and(|h| h.member_id == s.leader))
        .map(|s| s.raft_applied_index);
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, facts) in statuses.iter().flatten() {
        if let Some(k) = facts.key.as_deref() {
            *counts.entry(k).or_default() += 1;
        }
    }
    let common = counts.iter().max_by_key(|(_, n)| **n).map(|(k, _)| *k);
    let versions: std::collections::BTreeSet<&str> =
        statuses.iter().flatten().map(|(_, f)| cairn_raft::join::release_line(&f.version)).collect();
    let mut rows =
        vec![row(&["NAME", "ID", "ROLE", "VERSION", "KEY", "TERM", "APPLIED", "LAG", "DB SIZE", "ERRORS"])];
    for (m, s) in members.iter().zip(&statuses) {
        let id = format!("{:x}", m.id);
        match s {
            Ok((s, facts)) => {
                let is_leader = s.header.as_ref().is_some_and(|h| h.member_id == s.leader);
                let role = if is_leader {
                    "leader"
                } else if s.is_learner || m.is_learner {
                    "learner"
                } else {
                    "follower"
                };
                let lag = leader_applied
                    .map_or("?".to_string(), |l| l.saturating_sub(s.raft_applied_index).to_string());
                rows.push(row(&[
                    &m.name,
                    &id,
                    role,
                    &facts.version,
                    &key_column(&facts.key, common),
                    &s.raft_term.to_string(),
                    &s.raft_applied_index.to_string(),
                    &lag,
                    &s.db_size.to_string(),
                    &s.errors.join("; "),
                ]));
            }
            Err(e) => rows.push(row(&[&m.name, &id, "unreachable", "", "", "", "", "", "", e])),
        }
    }
    let mut out = table(&rows);
    if common == Some("none") {
        out.push_str(
            "\nWARNING: the cluster runs without a cluster key: any node that reaches a peer port can join it. Give every member the same --encryption-key-file (docs/operations.md).\n",
        );
    }
    if counts.len() > 1 {
        out.push_str("\nWARNING: the members do not all run with the same cluster key.\n");
    }
    if versions.len() > 1 {
        out.push_str("\nNOTE: the members run different releases (a rolling upgrade under way?).\n");
    }
    Ok(out)
}

/// `cairn move-leader ID`: asks the current leader to hand over.
pub async fn move_leader(target: &Target, id: &str) -> Result<String, Failure> {
    let to = parse_id(id)?;
    let members = members(any(target).await?).await?;
    for m in &members {
        let Ok(s) = member_status(m).await else { continue };
        if s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
            let addr = m.client_ur_ls.first().ok_or_else(|| "the leader has no client URL".to_string())?;
            MaintenanceClient::new(connect(addr).await?)
                .move_leader(MoveLeaderRequest { target_id: to })
                .await
                .map_err(|s| status_error("move leader", s))?;
            return Ok(format!("Leadership transferred from {:x} to {to:x}\n", m.id));
        }
    }
    Err("no member reports being the leader".into())
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Columns padded to their widest cell.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_tables_align() {
        assert_eq!(parse_id("8b37e07b558d9d9"), Ok(0x8b37e07b558d9d9));
        assert_eq!(parse_id("0x10"), Ok(16));
        assert!(parse_id("n1").is_err());
        let t = table(&[row(&["A", "BB"]), row(&["ccc", "d"])]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}

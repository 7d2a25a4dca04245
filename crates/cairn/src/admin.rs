//! The operator's subcommands against a running cluster, over the etcd API of any member:
//! `cairn status` (one table of every member), `cairn member list|add|update|remove|promote`,
//! `cairn move-leader`, `cairn snapshot save`. Member ids are printed and read in hex, as
//! etcdctl does.

use std::time::Duration;

use cairn_http::cluster::MemberView;
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
    let addr = m.client_ur_ls.first().ok_or_else(|| "no client URL published".to_string())?;
    let channel = connect(addr).await?;
    let resp = MaintenanceClient::new(channel).status(StatusRequest {}).await;
    Ok(resp.map_err(|s| s.message().to_string())?.into_inner())
}

/// The KEY column: the member's fingerprint (short) and whether most members share it.
fn key_column(m: &MemberView) -> String {
    match m.key_fingerprint.as_str() {
        "" => "?".into(),
        "none" if m.key_in_sync => "none".into(),
        k if m.key_in_sync => format!("{} in sync", &k[..k.len().min(8)]),
        k => format!("{} MISMATCH", &k[..k.len().min(8)]),
    }
}

/// `cairn status`: the cluster page's overview (`GET /v1/cluster`), asked once through any
/// endpoint and printed as a table. Lag is the leader's applied index minus the member's;
/// KEY is the member's cluster key fingerprint and whether it matches the others'.
pub async fn status(target: &Target) -> Result<String, Failure> {
    let timing = cairn_http::cluster::Timing {
        heartbeat_interval: Duration::ZERO,
        election_timeout: Duration::ZERO,
        // Each member gets a third of this (2 s) to answer; one that does not is unreachable.
        stale_timeout: Duration::from_secs(6),
    };
    let view = cairn_http::cluster::ClusterView::new(any(target).await?, timing, None);
    let overview = view.overview().await.map_err(|e| format!("cluster overview: {e}"))?;
    let mut rows =
        vec![row(&["NAME", "ID", "ROLE", "VERSION", "KEY", "TERM", "APPLIED", "LAG", "DB SIZE", "ERRORS"])];
    for m in &overview.members {
        if !m.healthy {
            rows.push(row(&[&m.name, &m.id, "unreachable", "", "", "", "", "", "", &m.error]));
            continue;
        }
        rows.push(row(&[
            &m.name,
            &m.id,
            &m.role,
            &m.version,
            &key_column(m),
            &m.term.to_string(),
            &m.applied_index.to_string(),
            &m.lag.map_or("?".to_string(), |l| l.to_string()),
            &m.db_size.to_string(),
            &m.error,
        ]));
    }
    let mut out = table(&rows);
    for warning in &overview.warnings {
        let mut chars = warning.chars();
        let first = chars.next().map(|c| c.to_lowercase().to_string()).unwrap_or_default();
        out.push_str(&format!("\nWARNING: {first}{}\n", chars.as_str()));
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

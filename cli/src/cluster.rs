//! `berth cluster`: the API-server peers of a cluster. Status of each peer,
//! adding, removing and moving leadership between peers (each change is
//! sent to the Raft leader, through the etcd v3 Cluster and Maintenance
//! services every peer serves), and saving and restoring the store.

use crate::config::{ConnectArgs, Target};
use crate::verbs::one_line;
use anyhow::{anyhow, bail, Context, Result};
use berth_proto::etcd::etcdserverpb::cluster_client::ClusterClient;
use berth_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use berth_proto::etcd::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberRemoveRequest, MoveLeaderRequest,
    SnapshotRequest, StatusRequest, StatusResponse,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Subcommand)]
enum ClusterCommand {
    /// Each peer: id, address, Raft role and term, commit and applied index, health
    Status {
        /// Output format
        #[arg(short = 'o', long = "output", value_enum)]
        output: Option<Format>,
    },
    /// Add a running peer: start it first with `berth server --id N --listen ADDR
    /// --data-dir EMPTY_DIR` (no --peers), then add it by its address
    AddPeer {
        /// The new peer's gRPC address (host:port)
        address: String,
        /// Keep it a non-voting learner
        #[arg(long)]
        learner: bool,
    },
    /// Remove a peer (by id); the last voter cannot be removed
    RemovePeer {
        id: u64,
        /// Remove the leader too (leadership moves to another voter first)
        #[arg(long)]
        force: bool,
    },
    /// Make another voter the Raft leader
    TransferLeader { id: u64 },
    /// Save or restore the store's key space
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(clap::Subcommand)]
enum SnapshotCommand {
    /// Save a consistent copy of the key space from one peer to FILE
    Save { file: PathBuf },
    /// Create a new peer's data directory from FILE; a peer started on it
    /// as its own only initial peer leads a new cluster with that state
    Restore {
        file: PathBuf,
        /// The new data directory (must not exist or be empty)
        #[arg(long)]
        data_dir: PathBuf,
        /// The cluster name the restored peer will be started with
        #[arg(long, default_value = "berth")]
        cluster: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Json,
}

pub fn run(args: &ClusterArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn command(args: &ClusterArgs) -> Result<ExitCode> {
    if let ClusterCommand::Snapshot(SnapshotCommand::Restore { file, data_dir, cluster }) =
        &args.command
    {
        let revision = berth_raft_store::restore_snapshot(file, data_dir, cluster)
            .map_err(|e| anyhow!("{e}"))?;
        println!("restored the key space at revision {revision} into {}", data_dir.display());
        println!(
            "start it with: berth server --id 1 --cluster {cluster} --peers 1=HOST:PORT \
             --listen HOST:PORT --data-dir {}",
            data_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let target = args.connect.target()?;
    match &args.command {
        ClusterCommand::Status { output } => status(&target, output.is_some()).await,
        ClusterCommand::AddPeer { address, learner } => {
            add_peer(&target, address, *learner).await.map(|_| ExitCode::SUCCESS)
        }
        ClusterCommand::RemovePeer { id, force } => {
            remove_peer(&target, *id, *force).await.map(|_| ExitCode::SUCCESS)
        }
        ClusterCommand::TransferLeader { id } => {
            transfer_leader(&target, *id).await.map(|_| ExitCode::SUCCESS)
        }
        ClusterCommand::Snapshot(SnapshotCommand::Save { file }) => {
            save(&target, file).await.map(|_| ExitCode::SUCCESS)
        }
        ClusterCommand::Snapshot(SnapshotCommand::Restore { .. }) => Ok(ExitCode::SUCCESS),
    }
}

fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// One peer's own view, or why it gave none.
async fn peer_status(target: &Target, addr: &str) -> Result<StatusResponse> {
    let channel = target.auth.channel(addr, Some(Duration::from_secs(3))).await?;
    let response = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .map_err(|s| anyhow!("{addr}: {}", s.message()))?;
    Ok(response.into_inner())
}

/// The members, from the first endpoint that answers.
async fn members(target: &Target) -> Result<Vec<Member>> {
    let mut last = anyhow!("no endpoints");
    for addr in &target.endpoints {
        let listed = async {
            let channel = target.auth.channel(addr, Some(Duration::from_secs(3))).await?;
            let response = ClusterClient::new(channel)
                .member_list(MemberListRequest { linearizable: false })
                .await
                .map_err(|s| anyhow!("{addr}: {}", s.message()))?;
            anyhow::Ok(response.into_inner().members)
        };
        match listed.await {
            Ok(members) if !members.is_empty() => return Ok(members),
            Ok(_) => last = anyhow!("{addr} is not a member of a cluster"),
            Err(e) => last = e,
        }
    }
    Err(last.context("no API server peer answered"))
}

fn member_addr(m: &Member) -> String {
    let url = m.client_ur_ls.first().or(m.peer_ur_ls.first()).cloned().unwrap_or_default();
    url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or(&url).to_string()
}

/// The leader's id and address, waiting out an election for a while.
async fn leader(target: &Target) -> Result<(u64, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let members = members(target).await?;
        let mut addrs: Vec<String> = members.iter().map(member_addr).collect();
        addrs.extend(target.endpoints.iter().cloned());
        for addr in &addrs {
            if let Ok(status) = peer_status(target, addr).await {
                if status.leader != 0 {
                    if let Some(m) = members.iter().find(|m| m.id == status.leader) {
                        return Ok((m.id, member_addr(m)));
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no peer knows a Raft leader: the cluster has no quorum");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PeerRow {
    id: u64,
    address: String,
    role: String,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    revision: i64,
    health: String,
}

async fn status(target: &Target, json: bool) -> Result<ExitCode> {
    let members = members(target).await?;
    let mut peers: BTreeMap<u64, String> = members.iter().map(|m| (m.id, member_addr(m))).collect();
    let learners: Vec<u64> = members.iter().filter(|m| m.is_learner).map(|m| m.id).collect();
    let answers =
        futures::future::join_all(peers.values().map(|addr| peer_status(target, addr))).await;
    let mut rows = Vec::new();
    let mut leaders = 0;
    for ((id, addr), answer) in std::mem::take(&mut peers).into_iter().zip(answers) {
        let row = match answer {
            Ok(s) => {
                let role = if s.leader == id {
                    leaders += 1;
                    "leader"
                } else if s.is_learner || learners.contains(&id) {
                    "learner"
                } else {
                    "follower"
                };
                let health = if s.leader == 0 { "no leader" } else { "healthy" };
                PeerRow {
                    id,
                    address: addr,
                    role: role.into(),
                    term: s.raft_term,
                    commit_index: s.raft_index,
                    applied_index: s.raft_applied_index,
                    revision: s.header.map_or(0, |h| h.revision),
                    health: health.into(),
                }
            }
            Err(e) => PeerRow {
                id,
                address: addr,
                role: "unknown".into(),
                term: 0,
                commit_index: 0,
                applied_index: 0,
                revision: 0,
                health: format!("unreachable: {}", one_line(&e)),
            },
        };
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let table = crate::verbs::Table {
            header: ["ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "REVISION", "HEALTH"]
                .map(String::from)
                .to_vec(),
            rows: rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.address.clone(),
                        r.role.clone(),
                        r.term.to_string(),
                        r.commit_index.to_string(),
                        r.applied_index.to_string(),
                        r.revision.to_string(),
                        r.health.clone(),
                    ]
                })
                .collect(),
        };
        print!("{}", table.render(true));
    }
    Ok(if leaders == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Runs a membership call on the leader, finding it again when leadership
/// moved in between.
async fn on_leader<T, F, Fut>(target: &Target, mut call: F) -> Result<T>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut attempts = 0;
    loop {
        let (_, addr) = leader(target).await?;
        let channel = target.auth.channel(&addr, Some(Duration::from_secs(120))).await?;
        match call(channel).await {
            Ok(value) => return Ok(value),
            Err(s) if s.code() == tonic::Code::Unavailable && attempts < 5 => attempts += 1,
            Err(s) => bail!("{}", s.message()),
        }
    }
}

async fn add_peer(target: &Target, address: &str, learner: bool) -> Result<()> {
    eprintln!("adding the peer at {address}; it joins as a learner and catches up first");
    let response = on_leader(target, |channel| async move {
        ClusterClient::new(channel)
            .member_add(MemberAddRequest { peer_ur_ls: vec![url(address)], is_learner: learner })
            .await
            .map(tonic::Response::into_inner)
    })
    .await?;
    let id = response.member.map_or(0, |m| m.id);
    let role = if learner { "learner" } else { "voter" };
    println!("added peer {id} ({address}) as a {role}");
    Ok(())
}

async fn remove_peer(target: &Target, id: u64, force: bool) -> Result<()> {
    let members = members(target).await?;
    let Some(member) = members.iter().find(|m| m.id == id) else {
        let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
        bail!("NotFound: peer {id} is not a member (members: {})", ids.join(", "));
    };
    let voters: Vec<u64> = members.iter().filter(|m| !m.is_learner).map(|m| m.id).collect();
    if !member.is_learner && voters.len() == 1 {
        bail!("peer {id} is the last voter: removing it would leave no one to hold the store");
    }
    let (leader_id, _) = leader(target).await?;
    if leader_id == id {
        if !force {
            bail!(
                "peer {id} is the Raft leader: removing it interrupts writes until another \
                 voter leads. Move leadership first (berth cluster transfer-leader ID), or \
                 pass --force to have it moved for you"
            );
        }
        let Some(next) = voters.iter().copied().find(|v| *v != id) else {
            bail!("peer {id} is the last voter");
        };
        eprintln!("warning: peer {id} leads; moving leadership away from it first");
        let now = move_leadership(target, next, false).await?;
        println!("leadership moved from peer {id} to peer {now}");
    }
    on_leader(target, |channel| async move {
        ClusterClient::new(channel)
            .member_remove(MemberRemoveRequest { id })
            .await
            .map(tonic::Response::into_inner)
    })
    .await?;
    println!("removed peer {id} ({})", member_addr(member));
    Ok(())
}

async fn transfer_leader(target: &Target, id: u64) -> Result<()> {
    let members = members(target).await?;
    match members.iter().find(|m| m.id == id) {
        None => bail!("NotFound: peer {id} is not a member"),
        Some(m) if m.is_learner => bail!("peer {id} is a learner; only voters can lead"),
        Some(_) => {}
    }
    let (from, _) = leader(target).await?;
    if from == id {
        println!("peer {id} already leads");
        return Ok(());
    }
    move_leadership(target, id, true).await?;
    println!("leadership moved from peer {from} to peer {id}");
    Ok(())
}

/// Moves leadership towards voter `to`; returns the new leader. The old
/// leader steps back and `to` campaigns, but another voter may still win
/// that election: unless `exactly`, any new leader will do; otherwise the
/// move is tried again from the new leader.
async fn move_leadership(target: &Target, to: u64, exactly: bool) -> Result<u64> {
    const ATTEMPTS: usize = 10;
    let from = settled_leader(target).await?;
    let mut now = from;
    for _ in 0..ATTEMPTS {
        on_leader(target, |channel| async move {
            MaintenanceClient::new(channel)
                .move_leader(MoveLeaderRequest { target_id: to })
                .await
                .map(tonic::Response::into_inner)
        })
        .await?;
        now = settled_leader(target).await?;
        if now == to || (!exactly && now != from) {
            return Ok(now);
        }
    }
    bail!("leadership went to peer {now}, not peer {to}, {ATTEMPTS} times; try again")
}

/// The leader once the members that answer agree on it.
async fn settled_leader(target: &Target) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let members = members(target).await?;
        let answers = futures::future::join_all(members.iter().map(|m| async move {
            peer_status(target, &member_addr(m)).await.ok().map(|s| s.leader)
        }))
        .await;
        let seen: Vec<u64> = answers.into_iter().flatten().collect();
        if let Some(first) = seen.first().copied() {
            if first != 0 && seen.iter().all(|l| *l == first) {
                return Ok(first);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the peers do not agree on a leader");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn save(target: &Target, file: &std::path::Path) -> Result<()> {
    let mut last = anyhow!("no endpoints");
    for addr in &target.endpoints {
        match save_from(target, addr, file).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn save_from(target: &Target, addr: &str, file: &std::path::Path) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let channel = target.auth.channel(addr, Some(Duration::from_secs(600))).await?;
    let mut stream = MaintenanceClient::new(channel)
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| anyhow!("{addr}: {}", s.message()))?
        .into_inner();
    let part = file.with_extension("part");
    let mut out = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("create {}", part.display()))?;
    let mut written = 0u64;
    let mut revision = 0;
    let mut progress = crate::verbs::Progress::new();
    let result = async {
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|s| anyhow!("{addr}: {}", s.message()))?;
            revision = piece.header.map_or(revision, |h| h.revision);
            out.write_all(&piece.blob).await?;
            written += piece.blob.len() as u64;
            progress.update(&format!(
                "saving snapshot: {written} bytes received, {} to go",
                piece.remaining_bytes
            ));
        }
        out.sync_all().await?;
        anyhow::Ok(())
    }
    .await;
    progress.finish();
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    tokio::fs::rename(&part, file)
        .await
        .with_context(|| format!("rename to {}", file.display()))?;
    println!(
        "saved the key space at revision {revision} ({written} bytes) from {addr} to {}",
        file.display()
    );
    Ok(())
}

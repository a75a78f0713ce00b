//! A peer's store: the Raft node, its RocksDB, the watch hub and the lease
//! keeper, and the operations the API server (and the etcd facade) call.
//!
//! Writes on a follower are forwarded to the leader and answered once this
//! peer has applied them too; linearizable reads get a read index from the
//! leader (which confirms its leadership with a quorum) and wait until this
//! peer has applied that far. Without a leader or quorum, the answer is
//! `Unavailable`, never stale data.

use crate::db::Db;
use crate::error::StoreError;
use crate::lease::Lessor;
use crate::log_store::LogStore;
use crate::mvcc::{self, KeyRange};
use crate::network::{Faults, Peers};
use crate::state_machine::StateMachine;
use crate::types::{NodeId, Proposal, Raft, TypeConfig};
use crate::watch::{self, Watch, WatchHub, WatchOptions};
use berth_proto::etcd::etcdserverpb::{
    request_op, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use berth_proto::raft_v1::{command::Op, command_result, ApplyError, Command, CommandResult};
use openraft::error::{ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
};
use openraft::{BasicNode, ChangeMembers, ServerState};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Proposes a command, takes its result of the given kind and stamps the
/// response header with the revision the command produced.
macro_rules! replicate {
    ($store:expr, $op:expr, $kind:ident) => {{
        let result = $store.propose(Command { op: Some($op) }).await?;
        match result.result {
            Some(command_result::Result::$kind(mut response)) => {
                response.header = Some($store.header(result.revision));
                Ok(response)
            }
            _ => Err(mismatched()),
        }
    }};
}

/// Values larger than this are refused (etcd's default request limit).
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;
/// Operations one transaction may hold (etcd's default).
pub const MAX_TXN_OPS: usize = 128;

/// How a peer's store is set up.
#[derive(Clone)]
pub struct StoreConfig {
    pub id: NodeId,
    /// The cluster's name; a data directory of another cluster is refused.
    pub cluster: String,
    pub data_dir: PathBuf,
    /// Address other peers reach this peer's Raft service at (host:port).
    pub advertise: String,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Campaign as soon as no leader has been heard for the leader lease
    /// (`election_timeout.1`) plus a short fresh jitter, rather than waiting
    /// for openraft's own timer too (see `election`; both wait for a
    /// pre-vote). On by default.
    pub campaign_when_leader_silent: bool,
    /// How long a write or linearizable read may wait for a leader/quorum.
    pub request_timeout: Duration,
    /// Applied entries between snapshots (the log is purged behind them).
    pub snapshot_every: u64,
    /// Faults injected on this peer's outgoing messages (tests).
    pub faults: Arc<Faults>,
    /// Mutual TLS between peers: this peer dials others with its peer
    /// certificate, and its peer service accepts only callers presenting
    /// one of a current member. None: plain TCP, for an explicitly
    /// insecure setup.
    pub tls: Option<berth_tls::ClientTls>,
}

impl StoreConfig {
    pub fn new(
        id: NodeId,
        cluster: &str,
        data_dir: impl Into<PathBuf>,
        advertise: &str,
    ) -> StoreConfig {
        StoreConfig {
            id,
            cluster: cluster.to_string(),
            data_dir: data_dir.into(),
            advertise: advertise.to_string(),
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
            campaign_when_leader_silent: true,
            request_timeout: Duration::from_secs(5),
            snapshot_every: 10_000,
            faults: Arc::default(),
            tls: None,
        }
    }
}

/// One peer of the replicated store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) cluster_id: u64,
    pub(crate) raft: Raft,
    pub(crate) db: Arc<Db>,
    pub(crate) hub: Arc<WatchHub>,
    pub(crate) peers: Peers,
    pub(crate) lessor: Arc<Lessor>,
    pub(crate) config: StoreConfig,
    /// When a leader was last heard, for the election watchdog.
    pub(crate) contact: crate::election::Contact,
    /// Set while this leader hands leadership over: new writes wait.
    transferring: std::sync::atomic::AtomicBool,
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    proposals: mpsc::Sender<Pending>,
    reads: mpsc::Sender<oneshot::Sender<Result<u64, String>>>,
}

/// A command waiting to be proposed, and where its result goes.
type Pending = (Command, oneshot::Sender<Result<CommandResult, StoreError>>);

/// Commands in one log entry at most.
const MAX_BATCH: usize = 256;
/// Entries proposed but not yet answered at once, so batching never waits on
/// a single round trip.
const IN_FLIGHT: usize = 1;

/// Status of a peer, as etcd's Maintenance.Status reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub state: String,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub is_learner: bool,
    pub voters: BTreeSet<NodeId>,
    pub members: BTreeMap<NodeId, String>,
}

pub(crate) fn cluster_hash(cluster: &str) -> u64 {
    // FNV-1a: stable across builds, unlike the std hasher.
    cluster.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

impl Store {
    /// Opens the data directory and starts the Raft node (not yet serving:
    /// add `peer_service()` to a gRPC server).
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let db = Arc::new(Db::open(&config.data_dir, &config.cluster)?);
        let (revision, _) = mvcc::revisions(&db.latest())?;
        let hub = WatchHub::new(revision);
        let log = LogStore::new(db.clone());
        let sm = StateMachine::new(db.clone(), hub.clone())?;
        let peers = Peers::new(config.faults.clone(), config.request_timeout, config.tls.clone());
        let raft_config = openraft::Config {
            cluster_name: config.cluster.clone(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_every / 10,
            max_payload_entries: 1024,
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: 10_000,
            // Turned on by the election module, after a pre-vote.
            enable_elect: false,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config.validate().map_err(|e| StoreError::InvalidArgument(e.to_string()))?,
        );
        let raft = Raft::new(config.id, raft_config, peers.clone(), log, sm)
            .await
            .map_err(|e| StoreError::Internal(format!("raft: {e}")))?;
        let stop = CancellationToken::new();
        let lessor = Arc::new(Lessor::default());
        let (proposals, pending) = mpsc::channel(MAX_BATCH * IN_FLIGHT);
        let (reads, readers) = mpsc::channel(1024);
        let inner = Arc::new(Inner {
            id: config.id,
            cluster_id: cluster_hash(&config.cluster),
            raft,
            db,
            hub,
            peers,
            lessor,
            config,
            contact: Default::default(),
            transferring: Default::default(),
            stop,
            tasks: Default::default(),
            proposals,
            reads,
        });
        let store = Store { inner };
        let tasks = vec![
            crate::lease::spawn_expirer(store.clone()),
            crate::metrics::spawn_reporter(store.clone()),
            spawn_proposer(store.clone(), pending),
            spawn_reader(store.clone(), readers),
            crate::election::spawn_watchdog(store.clone()),
        ];
        *store.inner.tasks.lock().expect("task list lock is never poisoned") = tasks;
        Ok(store)
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Faults injected on this peer's outgoing messages.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.inner.config.faults
    }

    /// Whether `id` may send this peer Raft messages and forwarded
    /// requests: a member (voter or learner), or anyone of the cluster's
    /// peers while this peer has no membership yet (it is being created or
    /// joined, and learns the members from the first messages).
    pub(crate) fn admits_peer(&self, id: NodeId) -> bool {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let mut members = membership.nodes().peekable();
        members.peek().is_none() || membership.nodes().any(|(member, _)| *member == id)
    }

    /// Whether peers must prove who they are (mutual TLS is on).
    pub(crate) fn requires_peer_certificates(&self) -> bool {
        self.inner.config.tls.is_some()
    }

    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// Stops the Raft node and every task of this peer. Data stays on disk.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let tasks = std::mem::take(
            &mut *self.inner.tasks.lock().expect("task list lock is never poisoned"),
        );
        for task in tasks {
            let _ = task.await;
        }
        let _ = self.inner.raft.shutdown().await;
    }

    /// Creates a new cluster whose voters are `members` (id -> address).
    /// Only the first start of a cluster does this, on one peer.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), StoreError> {
        let nodes: BTreeMap<NodeId, BasicNode> =
            members.into_iter().map(|(id, addr)| (id, BasicNode::new(addr))).collect();
        match self.inner.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(e)) => {
                Err(StoreError::InvalidArgument(format!("cannot initialize: {e}")))
            }
            Err(e) => Err(StoreError::Internal(e.to_string())),
        }
    }

    // ---------------------------------------------------------------- writes

    /// Replicates a command through the leader and returns its result once
    /// this peer has applied it. Commands proposed at the same time share a
    /// log entry (and so one fsync on each peer).
    pub(crate) async fn propose(&self, command: Command) -> Result<CommandResult, StoreError> {
        let result = self.enqueue(command.clone()).await?;
        refusal(&command, &result)?;
        Ok(result)
    }

    /// Queues a command for the next batch; returns its raw result.
    pub(crate) async fn enqueue(&self, command: Command) -> Result<CommandResult, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .proposals
            .send((command, tx))
            .await
            .map_err(|_| unavailable("the store is shutting down"))?;
        rx.await.map_err(|_| unavailable("the store is shutting down"))?
    }

    /// Replicates one log entry through the leader and returns its result
    /// once this peer has applied it.
    async fn propose_entry(&self, command: Command) -> Result<CommandResult, StoreError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        let result = loop {
            // A leader handing over takes no new entries, so the target
            // catches up and stays caught up; after the handover the write
            // goes to the new leader.
            while self.inner.transferring.load(std::sync::atomic::Ordering::Acquire) {
                if tokio::time::Instant::now() >= deadline {
                    return Err(unavailable("leadership is moving; try again"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let write = self.inner.raft.client_write(Proposal(command.clone()));
            match tokio::time::timeout_at(deadline, write).await {
                Err(_) => break Err(unavailable("the write did not commit in time (no quorum?)")),
                Ok(Ok(response)) => break Ok(response.data.0),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    match (forward.leader_id, forward.leader_node) {
                        (Some(leader), Some(node)) if leader != self.inner.id => {
                            match self.forward(leader, &node.addr, &command, deadline).await {
                                Forwarded::Done(result) => break result,
                                Forwarded::Retry => {}
                            }
                        }
                        _ => {}
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break Err(unavailable("no leader"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => break Err(StoreError::Internal(e.to_string())),
            }
        };
        metrics::histogram!("berth_store_proposal_seconds").record(started.elapsed().as_secs_f64());
        let result = result?;
        self.wait_applied(result.log_index, deadline).await?;
        Ok(result)
    }

    async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        command: &Command,
        deadline: tokio::time::Instant,
    ) -> Forwarded {
        let Some(mut client) = self.inner.peers.client(leader, addr) else {
            return Forwarded::Retry;
        };
        if !self.inner.config.faults.pass(leader).await {
            return Forwarded::Retry;
        }
        let mut request = tonic::Request::new(command.clone());
        request.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
        // A leader cut off from this peer never answers; once an election
        // has begun (a newer term) the forward is given up, so that this
        // peer's proposals (one batch in flight) move on to the next leader
        // instead of waiting out the whole deadline. Its outcome is unknown.
        let mut metrics = self.inner.raft.metrics();
        let term = metrics.borrow().current_term;
        let reply = tokio::select! {
            reply = client.propose(request) => reply,
            _ = metrics.wait_for(|m| m.current_term > term) => {
                return Forwarded::Done(Err(unavailable(&format!(
                    "leader {leader} was replaced while a forwarded write was in flight; \
                     it may or may not have been applied"
                ))));
            }
        };
        match reply {
            Ok(reply) => Forwarded::Done(Ok(reply.into_inner())),
            // The leader answers FailedPrecondition only when it did not
            // propose (it is no longer leader): safe to try again.
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Forwarded::Retry,
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && status.message().starts_with("connect") =>
            {
                Forwarded::Retry
            }
            Err(status) => {
                Forwarded::Done(Err(unavailable(&format!("leader {leader}: {}", status.message()))))
            }
        }
    }

    /// Waits until this peer has applied `index`.
    async fn wait_applied(
        &self,
        index: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), StoreError> {
        let timeout = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(1));
        self.inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read or write barrier")
            .await
            .map(|_| ())
            .map_err(|_| unavailable("this peer did not apply the committed entries in time"))
    }

    /// A linearizable read barrier: after it, this peer's state includes
    /// every write acknowledged before it began. Concurrent readers share
    /// one confirmation of leadership: each round starts after every reader
    /// it answers has arrived.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner.reads.send(tx).await.map_err(|_| unavailable("the store is shutting down"))?;
        let index = rx
            .await
            .map_err(|_| unavailable("the store is shutting down"))?
            .map_err(StoreError::Unavailable)?;
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        self.wait_applied(index, deadline).await
    }

    /// One round: the leader's read index, asked of the leader wherever it is.
    async fn read_index_round(&self) -> Result<u64, StoreError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        loop {
            match self.leader_read_index(deadline).await {
                Ok(Some(index)) => return Ok(index),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable("no leader to confirm a linearizable read"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The read index from the leader (this peer or another); None when there
    /// is no leader to ask right now.
    async fn leader_read_index(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<u64>, StoreError> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let Some(leader) = metrics.current_leader else {
            return Ok(None);
        };
        if leader == self.inner.id {
            return tokio::time::timeout_at(deadline, self.local_read_index())
                .await
                .unwrap_or_else(|_| {
                    Err(unavailable("leadership not confirmed in time (no quorum?)"))
                });
        }
        let Some(node) = metrics.membership_config.membership().get_node(&leader).cloned() else {
            return Ok(None);
        };
        let Some(mut client) = self.inner.peers.client(leader, &node.addr) else {
            return Ok(None);
        };
        if !self.inner.config.faults.pass(leader).await {
            return Ok(None);
        }
        let mut request = tonic::Request::new(berth_proto::raft_v1::ReadIndexRequest {});
        request.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match client.read_index(request).await {
            Ok(reply) => Ok(Some(reply.into_inner().index)),
            Err(_) => Ok(None),
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index
    /// a linearizable read must wait for.
    pub(crate) async fn local_read_index(&self) -> Result<Option<u64>, StoreError> {
        match self.inner.raft.get_read_log_id().await {
            Ok((read, _)) => Ok(Some(read.map_or(0, |id| id.index))),
            Err(RaftError::APIError(_)) => Ok(None),
            Err(e) => Err(StoreError::Internal(e.to_string())),
        }
    }

    // ------------------------------------------------------------ operations

    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.inner.cluster_id,
            member_id: self.inner.id,
            revision,
            raft_term: self.inner.raft.metrics().borrow().current_term,
        }
    }

    /// Reads a key or range. Linearizable unless `serializable` is set, in
    /// which case this peer's applied state answers at once.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, StoreError> {
        if request.key.is_empty() {
            return Err(StoreError::InvalidArgument("key is not provided".into()));
        }
        if !request.serializable {
            self.read_barrier().await?;
        }
        let db = self.inner.db.clone();
        let (mut response, revision) = tokio::task::spawn_blocking(move || {
            let view = db.view();
            let response = mvcc::range(&view, &request)?;
            let (revision, _) = mvcc::revisions(&view)?;
            Ok::<_, StoreError>((response, revision))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        response.header = Some(self.header(revision));
        Ok(response)
    }

    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, StoreError> {
        check_put(&request)?;
        replicate!(self, Op::Put(request), Put)
    }

    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        if request.key.is_empty() {
            return Err(StoreError::InvalidArgument("key is not provided".into()));
        }
        replicate!(self, Op::DeleteRange(request), DeleteRange)
    }

    /// Compare-and-swap and friends: compares, then one list of operations
    /// or the other, all at one revision.
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, StoreError> {
        check_txn(&request, &mut 0)?;
        let read_only = is_read_only(&request);
        if read_only {
            // Nothing to replicate: evaluate against a linearizable view.
            self.read_barrier().await?;
            let db = self.inner.db.clone();
            let command = Command { op: Some(Op::Txn(request)) };
            let result = tokio::task::spawn_blocking(move || {
                let view = db.latest();
                mvcc::Apply::new(&view)?.command(&command)
            })
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))??;
            refusal(&Command::default(), &result)?;
            let revision = result.revision;
            let mut response = match result.result {
                Some(command_result::Result::Txn(r)) => r,
                _ => return Err(mismatched()),
            };
            response.header = Some(self.header(revision));
            return Ok(response);
        }
        replicate!(self, Op::Txn(request), Txn)
    }

    pub async fn compact(
        &self,
        request: CompactionRequest,
    ) -> Result<CompactionResponse, StoreError> {
        replicate!(self, Op::Compaction(request), Compaction)
    }

    /// Watches a key or range from a revision; see `Watch`.
    pub fn watch(&self, options: WatchOptions) -> Watch {
        watch::start(self.inner.db.clone(), self.inner.hub.clone(), options)
    }

    pub async fn lease_grant(
        &self,
        mut request: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, StoreError> {
        if request.ttl <= 0 {
            return Err(StoreError::InvalidArgument(format!(
                "lease TTL must be positive, got {}",
                request.ttl
            )));
        }
        if request.id < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "lease ID must be positive, got {}",
                request.id
            )));
        }
        if request.id == 0 {
            request.id = random_lease_id()?;
        }
        replicate!(self, Op::LeaseGrant(request), LeaseGrant)
    }

    /// Revokes a lease; every key attached to it is deleted in one revision.
    pub async fn lease_revoke(
        &self,
        request: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, StoreError> {
        replicate!(self, Op::LeaseRevoke(request), LeaseRevoke)
    }

    /// Renews a lease on the leader; returns its TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, StoreError> {
        crate::lease::keep_alive(self, id).await
    }

    pub async fn lease_time_to_live(
        &self,
        request: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, StoreError> {
        crate::lease::time_to_live(self, request).await
    }

    /// Every lease id.
    pub async fn lease_ids(&self) -> Result<Vec<i64>, StoreError> {
        self.read_barrier().await?;
        Ok(mvcc::leases(&self.inner.db.view())?.into_iter().map(|l| l.id).collect())
    }

    // ----------------------------------------------------------- membership

    /// This peer's view of the cluster.
    pub fn status(&self) -> Result<PeerStatus, StoreError> {
        let m = self.inner.raft.metrics().borrow().clone();
        let (revision, compact_revision) = mvcc::revisions(&self.inner.db.latest())?;
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        Ok(PeerStatus {
            id: self.inner.id,
            leader: m.current_leader,
            term: m.current_term,
            state: format!("{:?}", m.state),
            commit_index: self.committed_index(),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            revision,
            compact_revision,
            is_learner: m.state == ServerState::Learner,
            members: membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            voters,
        })
    }

    pub(crate) fn committed_index(&self) -> u64 {
        // openraft reports what was replicated to a quorum as the leader's
        // last log; followers know the commit index from heartbeats.
        let m = self.inner.raft.metrics().borrow().clone();
        m.last_applied.map_or(0, |l| l.index).max(m.last_log_index.unwrap_or(0).min(
            m.replication.as_ref().map_or(u64::MAX, |r| {
                let mut matched: Vec<u64> = r.values().map(|v| v.map_or(0, |l| l.index)).collect();
                matched.sort_unstable();
                matched.get(matched.len() / 2).copied().unwrap_or(0)
            }),
        ))
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.id)
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Adds a peer as a learner: it receives the log but does not vote.
    /// Returns once it has caught up.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), StoreError> {
        self.on_leader(|raft| {
            let addr = addr.to_string();
            async move { raft.add_learner(id, BasicNode::new(addr), true).await.map(|_| ()) }
        })
        .await
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, id: NodeId) -> Result<(), StoreError> {
        let voters = self.status()?.voters;
        if voters.contains(&id) {
            return Ok(());
        }
        self.on_leader(|raft| async move {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Removes a peer from the cluster (voter or learner). The last voter
    /// cannot be removed.
    pub async fn remove_peer(&self, id: NodeId) -> Result<(), StoreError> {
        let status = self.status()?;
        if status.voters.contains(&id) && status.voters.len() == 1 {
            return Err(StoreError::InvalidArgument(format!(
                "peer {id} is the last voter; it cannot be removed"
            )));
        }
        self.on_leader(|raft| async move {
            if status.voters.contains(&id) {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await?;
            }
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map(|_| ())
        })
        .await
    }

    async fn on_leader<F, Fut>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(Raft) -> Fut,
        Fut: std::future::Future<
            Output = Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
        >,
    {
        match f(self.inner.raft.clone()).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(unavailable(&format!(
                    "membership changes go to the leader{}",
                    f.leader_id.map(|l| format!(" (peer {l})")).unwrap_or_default()
                )))
            }
            Err(RaftError::APIError(e)) => Err(StoreError::InvalidArgument(e.to_string())),
            Err(e) => Err(StoreError::Internal(e.to_string())),
        }
    }

    /// Moves leadership from this peer (the leader) to voter `to`: this peer
    /// stops its heartbeats so the others' leader lease runs out, and `to`
    /// campaigns. Returns the new leader.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<NodeId, StoreError> {
        let status = self.status()?;
        if status.leader != Some(self.inner.id) {
            // As a membership change: the caller finds the leader and asks
            // again (its idea of the leader may be a term behind).
            return Err(unavailable(&format!(
                "leadership transfers go to the leader{}",
                status.leader.map(|l| format!(" (peer {l})")).unwrap_or_default()
            )));
        }
        if !status.voters.contains(&to) {
            return Err(StoreError::InvalidArgument(format!("peer {to} is not a voter")));
        }
        if to == self.inner.id {
            return Ok(to);
        }
        let addr = status.members.get(&to).cloned().unwrap_or_default();
        let raft = &self.inner.raft;
        let _holding = Holding::start(&self.inner.transferring);
        raft.runtime_config().elect(false);
        self.inner.contact.pause(true);
        raft.runtime_config().heartbeat(false);
        let (_, lease) = self.inner.config.election_timeout;
        let heartbeat = self.inner.config.heartbeat;
        let started = tokio::time::Instant::now();
        // Room for several campaigns, each after the others' leader lease
        // (election_timeout.1) has run out.
        let deadline = started + lease * 15;
        // The target campaigns once it holds every entry this leader has, and
        // once the others' lease on this leader has run out (no heartbeats,
        // no new entries): then its campaign can win. Once per lease, so a
        // failed one does not keep raising the term under a new election.
        let mut next_campaign = started + lease + heartbeat;
        let mut outcome = Err(unavailable("leadership transfer did not finish in time"));
        while tokio::time::Instant::now() < deadline {
            let metrics = raft.metrics().borrow().clone();
            if let Some(leader) = metrics.current_leader.filter(|l| *l != self.inner.id) {
                outcome = Ok(leader);
                break;
            }
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).cloned().flatten())
                .map(|l| l.index);
            let caught_up = match (matched, metrics.last_log_index) {
                (_, None) => true,
                (Some(matched), Some(last)) => matched >= last,
                (None, Some(_)) => false,
            };
            let now = tokio::time::Instant::now();
            if caught_up && now >= next_campaign {
                if let Some(mut client) = self.inner.peers.client(to, &addr) {
                    let _ = client
                        .transfer_leader(berth_proto::raft_v1::TransferLeaderRequest { to })
                        .await;
                }
                next_campaign = now + lease;
            }
            tokio::time::sleep(heartbeat).await;
        }
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        self.inner.contact.pause(false);
        outcome
    }

    /// On the transfer target: campaign now.
    pub(crate) async fn campaign(&self) {
        let _ = self.inner.raft.trigger().elect().await;
    }

    /// Hands a leader's AppendEntries to Raft; one it accepts tells the
    /// election watchdog that a leader is alive.
    pub(crate) async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let result = self.inner.raft.append_entries(rpc).await;
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.inner.contact.heard();
        }
        result
    }

    /// Hands a snapshot chunk to Raft; like `append_entries`, an accepted
    /// one (answered with the sender's own vote) counts as the leader heard.
    pub(crate) async fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let vote = rpc.vote;
        let result = self.inner.raft.install_snapshot(rpc).await;
        if matches!(&result, Ok(r) if r.vote == vote) {
            self.inner.contact.heard();
        }
        result
    }

    /// The Raft handle, for this crate's service and tests.
    pub(crate) fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// A hash over every live key and value, to compare peers' key spaces.
    pub fn key_space_hash(&self) -> Result<(i64, u64), StoreError> {
        let view = self.inner.db.view();
        let (revision, _) = mvcc::revisions(&view)?;
        let mut hash = 0xcbf29ce484222325u64;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash = (hash ^ *b as u64).wrapping_mul(0x100000001b3);
            }
        };
        let everything = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
        for kv in mvcc::range(&view, &everything)?.kvs {
            feed(&kv.key);
            feed(&kv.value);
            feed(&kv.mod_revision.to_be_bytes());
        }
        Ok((revision, hash))
    }

    /// The revision this peer has applied.
    pub fn revision(&self) -> i64 {
        self.inner.hub.revision()
    }

    /// A response header at this peer's applied revision.
    pub(crate) fn header_now(&self) -> ResponseHeader {
        self.header(self.revision())
    }

    /// Bytes the store's data takes on disk.
    pub fn disk_usage(&self) -> u64 {
        self.inner.db.size()
    }

    pub fn watchers(&self) -> usize {
        self.inner.hub.watchers()
    }

    /// Where this peer keeps snapshot files.
    pub(crate) fn snapshot_dir(&self) -> PathBuf {
        self.inner.db.path().join("snapshots")
    }

    /// Writes a consistent copy of this peer's key space (its applied
    /// state) to `path`.
    pub async fn save_snapshot(&self, path: &Path) -> Result<SavedSnapshot, StoreError> {
        let db = self.inner.db.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(&path).map_err(|e| StoreError::io(&path, e))?;
            let mut out = std::io::BufWriter::new(file);
            let revision =
                crate::state_machine::dump(&db, &mut out).map_err(|e| StoreError::io(&path, e))?;
            let file = out.into_inner().map_err(|e| StoreError::io(&path, e.into_error()))?;
            file.sync_all().map_err(|e| StoreError::io(&path, e))?;
            let size = file.metadata().map(|m| m.len()).map_err(|e| StoreError::io(&path, e))?;
            Ok(SavedSnapshot { size, revision })
        })
        .await
        .map_err(|e| StoreError::Internal(format!("snapshot task: {e}")))?
    }
}

/// What `Store::save_snapshot` wrote.
#[derive(Debug, Clone, Copy)]
pub struct SavedSnapshot {
    /// Bytes in the file.
    pub size: u64,
    /// The key space's revision in the copy.
    pub revision: i64,
}

/// Creates the data directory of a peer of `cluster` from a snapshot that
/// `save_snapshot` wrote; returns the key space's revision. The directory
/// keeps no Raft history: a peer started on it with itself as its only
/// initial peer creates a new one-voter cluster holding the key space, and
/// grows by adding peers.
pub fn restore_snapshot(
    snapshot: &Path,
    data_dir: &Path,
    cluster: &str,
) -> Result<i64, StoreError> {
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir).map_err(|e| StoreError::io(data_dir, e))?;
        if entries.next().is_some() {
            return Err(StoreError::InvalidArgument(format!(
                "{} is not empty; restore into a new directory",
                data_dir.display()
            )));
        }
    }
    let file = std::fs::File::open(snapshot).map_err(|e| StoreError::io(snapshot, e))?;
    let mut input = std::io::BufReader::new(file);
    let db = Db::open(data_dir, cluster)?;
    let restored = crate::state_machine::restore(&db, &mut input);
    if let Err(e) = restored {
        drop(db);
        // Leave nothing half-restored behind.
        let _ = std::fs::remove_dir_all(data_dir);
        return Err(StoreError::io(snapshot, e));
    }
    let (revision, _) = mvcc::revisions(&db.latest())?;
    Ok(revision)
}

/// Takes waiting commands in batches and proposes each batch as one entry.
fn spawn_proposer(
    store: Store,
    mut pending: mpsc::Receiver<Pending>,
) -> tokio::task::JoinHandle<()> {
    let stop = store.stop_token();
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => break,
                first = pending.recv() => match first { Some(p) => p, None => break },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
            };
            // Waiting for a slot must not hold up a shutdown.
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match pending.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let store = store.clone();
            in_flight.spawn(async move {
                propose_batch(&store, batch).await;
                drop(slot);
            });
        }
        in_flight.abort_all();
    })
}

/// Answers waiting linearizable readers in rounds: all readers waiting when
/// a round starts share its read index.
fn spawn_reader(
    store: Store,
    mut readers: mpsc::Receiver<oneshot::Sender<Result<u64, String>>>,
) -> tokio::task::JoinHandle<()> {
    let stop = store.stop_token();
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                first = readers.recv() => match first { Some(r) => r, None => return },
            };
            let mut waiting = vec![first];
            while let Ok(more) = readers.try_recv() {
                waiting.push(more);
            }
            metrics::histogram!("berth_store_read_index_batch_readers")
                .record(waiting.len() as f64);
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = store.read_index_round() => r.map_err(|e| e.to_string()),
            };
            for reader in waiting {
                let _ = reader.send(result.clone());
            }
        }
    })
}

async fn propose_batch(store: &Store, batch: Vec<Pending>) {
    metrics::histogram!("berth_store_proposal_batch_commands").record(batch.len() as f64);
    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
    if commands.len() == 1 {
        let command = commands.into_iter().next().expect("one command");
        let result = store.propose_entry(command).await;
        if let Some(reply) = replies.into_iter().next() {
            let _ = reply.send(result);
        }
        return;
    }
    let entry = Command { op: Some(Op::Batch(berth_proto::raft_v1::CommandBatch { commands })) };
    match store.propose_entry(entry).await {
        Ok(result) => {
            let log_index = result.log_index;
            let results = match result.result {
                Some(command_result::Result::Batch(b)) => b.results,
                _ => Vec::new(),
            };
            if results.len() != replies.len() {
                for reply in replies {
                    let _ = reply.send(Err(mismatched()));
                }
                return;
            }
            for (mut result, reply) in results.into_iter().zip(replies) {
                result.log_index = log_index;
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(match &e {
                    StoreError::Unavailable(_) => StoreError::Unavailable(message.clone()),
                    _ => StoreError::Internal(message.clone()),
                }));
            }
        }
    }
}

/// Holds new writes while it lives (a leadership transfer).
struct Holding<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> Holding<'a> {
    fn start(flag: &'a std::sync::atomic::AtomicBool) -> Holding<'a> {
        flag.store(true, std::sync::atomic::Ordering::Release);
        Holding(flag)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

enum Forwarded {
    Done(Result<CommandResult, StoreError>),
    Retry,
}

pub(crate) fn unavailable(why: &str) -> StoreError {
    StoreError::Unavailable(why.to_string())
}

fn mismatched() -> StoreError {
    StoreError::Internal("the applied result does not match the command".into())
}

/// Turns a deterministic refusal at apply time into the caller's error.
fn refusal(command: &Command, result: &CommandResult) -> Result<(), StoreError> {
    let lease = match &command.op {
        Some(Op::Put(p)) => p.lease,
        Some(Op::LeaseGrant(g)) => g.id,
        Some(Op::LeaseRevoke(r)) => r.id,
        _ => 0,
    };
    let compact = match &command.op {
        Some(Op::Compaction(c)) => c.revision,
        _ => 0,
    };
    match result.error() {
        ApplyError::None => Ok(()),
        ApplyError::LeaseNotFound => Err(StoreError::LeaseNotFound(lease)),
        ApplyError::LeaseExists => Err(StoreError::LeaseExists(lease)),
        ApplyError::Compacted => {
            Err(StoreError::Compacted { requested: compact, compact_revision: 0 })
        }
        ApplyError::FutureRevision => {
            Err(StoreError::FutureRevision { requested: compact, current: result.revision })
        }
        ApplyError::KeyNotFound => Err(StoreError::KeyNotFound),
    }
}

fn check_put(request: &PutRequest) -> Result<(), StoreError> {
    if request.key.is_empty() {
        return Err(StoreError::InvalidArgument("key is not provided".into()));
    }
    if request.value.len() + request.key.len() > MAX_VALUE_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "request is too large: {} bytes (limit {MAX_VALUE_BYTES})",
            request.value.len() + request.key.len()
        )));
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(StoreError::InvalidArgument("value is provided with ignore_value".into()));
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(StoreError::InvalidArgument("lease is provided with ignore_lease".into()));
    }
    Ok(())
}

/// Validates a transaction before it is proposed: sizes, operation count,
/// and no key written twice (etcd's rule, so one revision has one value per
/// key).
fn check_txn(request: &TxnRequest, ops: &mut usize) -> Result<(), StoreError> {
    for branch in [&request.success, &request.failure] {
        *ops += branch.len();
        if *ops > MAX_TXN_OPS {
            return Err(StoreError::InvalidArgument(format!(
                "too many operations in txn request (limit {MAX_TXN_OPS})"
            )));
        }
        let mut written: Vec<KeyRange> = Vec::new();
        let mut puts: HashSet<&[u8]> = HashSet::new();
        for op in branch.iter() {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    check_put(p)?;
                    if !puts.insert(&p.key) || written.iter().any(|r| r.contains(&p.key)) {
                        return Err(StoreError::InvalidArgument(
                            "duplicate key given in txn request".into(),
                        ));
                    }
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    let range = KeyRange::new(&d.key, &d.range_end);
                    if puts.iter().any(|k| range.contains(k)) {
                        return Err(StoreError::InvalidArgument(
                            "duplicate key given in txn request".into(),
                        ));
                    }
                    written.push(range);
                }
                Some(request_op::Request::RequestTxn(t)) => check_txn(t, ops)?,
                Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                    return Err(StoreError::InvalidArgument("key is not provided".into()));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn is_read_only(request: &TxnRequest) -> bool {
    request.success.iter().chain(request.failure.iter()).all(|op| match &op.request {
        Some(request_op::Request::RequestRange(_)) | None => true,
        Some(request_op::Request::RequestTxn(t)) => is_read_only(t),
        _ => false,
    })
}

/// A random positive lease id from the operating system's generator.
fn random_lease_id() -> Result<i64, StoreError> {
    let n = getrandom::u64()
        .map_err(|e| StoreError::Internal(format!("no randomness for a lease id: {e}")))?;
    Ok((n >> 1).max(1) as i64)
}

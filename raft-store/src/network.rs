//! Raft messages between peers over tonic, with deadlines, and a fault
//! injector that drops or delays messages to chosen peers (for tests of
//! partitions and message loss without touching the host's network).

use crate::types::{NodeId, TypeConfig};
use berth_proto::raft_v1::raft_client::RaftClient;
use berth_proto::raft_v1::RaftPayload;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tonic::transport::Channel;

/// Faults injected on this peer's outgoing messages: peers it cannot reach,
/// and delays before messages to a peer are sent.
#[derive(Default)]
pub struct Faults {
    blocked: RwLock<HashSet<NodeId>>,
    delays: RwLock<HashMap<NodeId, Duration>>,
}

impl Faults {
    /// Drops every message from this peer to `to` until healed.
    pub fn block(&self, to: NodeId) {
        self.blocked.write().expect("fault lock is never poisoned").insert(to);
    }

    pub fn unblock(&self, to: NodeId) {
        self.blocked.write().expect("fault lock is never poisoned").remove(&to);
    }

    pub fn delay(&self, to: NodeId, by: Duration) {
        self.delays.write().expect("fault lock is never poisoned").insert(to, by);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.blocked.write().expect("fault lock is never poisoned").clear();
        self.delays.write().expect("fault lock is never poisoned").clear();
    }

    /// Applies the faults for a message to `to`: false when it is dropped.
    pub(crate) async fn pass(&self, to: NodeId) -> bool {
        let delay = self.delays.read().expect("fault lock is never poisoned").get(&to).copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        !self.blocked.read().expect("fault lock is never poisoned").contains(&to)
    }
}

/// Connections to the other peers, one lazily connected channel each.
#[derive(Clone)]
pub(crate) struct Peers {
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
    pub(crate) faults: Arc<Faults>,
    timeout: Duration,
    tls: Option<berth_tls::ClientTls>,
}

impl Peers {
    pub(crate) fn new(
        faults: Arc<Faults>,
        timeout: Duration,
        tls: Option<berth_tls::ClientTls>,
    ) -> Peers {
        Peers { channels: Arc::default(), faults, timeout, tls }
    }

    /// A client for `addr`, or None when the address is malformed.
    pub(crate) fn client(&self, id: NodeId, addr: &str) -> Option<RaftClient<Channel>> {
        let mut channels = self.channels.lock().expect("channel lock is never poisoned");
        let key = (id, addr.to_string());
        if let Some(channel) = channels.get(&key) {
            return Some(RaftClient::new(channel.clone()));
        }
        let endpoint = berth_tls::endpoint(addr, self.tls.as_ref())
            .map_err(|e| tracing::warn!(peer = id, error = %e, "cannot dial peer"))
            .ok()?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        channels.insert(key, channel.clone());
        Some(
            RaftClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        PeerLink { target, client: self.client(target, &node.addr), faults: self.faults.clone() }
    }
}

pub(crate) struct PeerLink {
    target: NodeId,
    client: Option<RaftClient<Channel>>,
    faults: Arc<Faults>,
}

/// Encodes openraft values for the wire.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, String> {
    postcard::to_allocvec(value).map(|data| RaftPayload { data }).map_err(|e| e.to_string())
}

pub(crate) fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, String> {
    postcard::from_bytes(&payload.data).map_err(|e| e.to_string())
}

impl PeerLink {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        Result<Resp, E>: DeserializeOwned,
    {
        let unreachable =
            |why: String| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)));
        if !self.faults.pass(self.target).await {
            return Err(unreachable(format!("messages to peer {} are dropped", self.target)));
        }
        let Some(client) = self.client.as_mut() else {
            return Err(unreachable(format!("peer {} has a malformed address", self.target)));
        };
        let payload = encode(request)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let mut request = tonic::Request::new(payload);
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        }
        .map_err(|status| unreachable(format!("peer {}: {}", self.target, status.message())))?;
        let result: Result<Resp, E> = decode(reply.get_ref())
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        metrics::counter!("berth_store_snapshot_chunks_sent_total").increment(1);
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

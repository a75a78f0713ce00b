//! The peer-to-peer gRPC service: Raft messages in, and the requests a
//! follower sends its leader (forwarded writes, read indexes, lease
//! keep-alives, leadership hand-over).

use crate::error::StoreError;
use crate::network::{decode, encode};
use crate::store::Store;
use crate::types::{NodeId, TypeConfig};
use berth_proto::etcd::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use berth_proto::raft_v1::raft_server::{Raft as RaftService, RaftServer};
use berth_proto::raft_v1::{
    Command, CommandResult, RaftPayload, ReadIndexRequest, ReadIndexResponse,
    TransferLeaderRequest, TransferLeaderResponse,
};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status};

/// The peer service of `store`, to add to a tonic server. With mutual TLS
/// on, only a current member's peer certificate gets through.
pub fn peer_service(store: Store) -> InterceptedService<RaftServer<PeerService>, PeerCheck> {
    let check = PeerCheck { store: store.clone(), admins_too: false };
    let service = RaftServer::new(PeerService { store })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    InterceptedService::new(service, check)
}

/// Admits a request to the peer service, or to the etcd API, by the
/// caller's client certificate (verified against the cluster CA by the TLS
/// layer) while mutual TLS is on. The peer service takes a peer id that is
/// a current member; the etcd API, which reads and writes the raw store
/// around every check the API server makes, takes only peers and
/// administrators (group `system:masters`), as etcd with client
/// certificate authentication takes only the API server.
#[derive(Clone)]
pub struct PeerCheck {
    store: Store,
    admins_too: bool,
}

/// The group of a cluster's administrators.
const ADMINS_GROUP: &str = "system:masters";

impl PeerCheck {
    pub(crate) fn etcd(store: Store) -> PeerCheck {
        PeerCheck { store, admins_too: true }
    }
}

impl Interceptor for PeerCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.store.requires_peer_certificates() {
            return Ok(request);
        }
        let connection = request.extensions().get::<berth_tls::ConnectionInfo>();
        let identity = connection.and_then(|c| c.client.as_ref());
        if self.admins_too {
            return match identity {
                Some(i)
                    if i.organizations
                        .iter()
                        .any(|o| o == ADMINS_GROUP || o == berth_tls::PEERS_GROUP) =>
                {
                    Ok(request)
                }
                Some(i) => Err(Status::permission_denied(format!(
                    "the etcd API is for the cluster's administrators (group {ADMINS_GROUP}); \
                     {:?} is not one",
                    i.common_name
                ))),
                None => Err(Status::unauthenticated(
                    "the etcd API needs a client certificate of the cluster CA",
                )),
            };
        }
        let Some(id) = identity.and_then(|i| i.peer_id()) else {
            let who = identity.map_or("no client certificate".to_string(), |i| {
                format!("a certificate for {:?}", i.common_name)
            });
            return Err(Status::unauthenticated(format!(
                "the peer service takes only API server peers' certificates of this cluster; \
                 the caller presented {who}"
            )));
        };
        if !self.store.admits_peer(id) {
            return Err(Status::permission_denied(format!(
                "peer {id} is not a member of this cluster"
            )));
        }
        Ok(request)
    }
}

pub struct PeerService {
    store: Store,
}

fn bad_payload(e: String) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    encode(value).map(Response::new).map_err(Status::internal)
}

pub(crate) fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(m) => Status::unavailable(m),
        StoreError::InvalidArgument(m) => Status::invalid_argument(m),
        StoreError::LeaseNotFound(id) => {
            Status::not_found(format!("requested lease not found: {id}"))
        }
        StoreError::LeaseExists(id) => {
            Status::failed_precondition(format!("lease {id} already exists"))
        }
        e @ (StoreError::Compacted { .. } | StoreError::FutureRevision { .. }) => {
            Status::out_of_range(e.to_string())
        }
        StoreError::KeyNotFound => Status::invalid_argument("key not found"),
        e => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(request.get_ref()).map_err(bad_payload)?;
        reply(&self.store.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request.get_ref()).map_err(bad_payload)?;
        reply(&self.store.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode(request.get_ref()).map_err(bad_payload)?;
        reply(&self.store.install_snapshot(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.store.grant_pre_vote(request.get_ref()).map(Response::new).map_err(bad_payload)
    }

    async fn propose(&self, request: Request<Command>) -> Result<Response<CommandResult>, Status> {
        // Not proposed at all: the caller may safely retry elsewhere.
        if !self.store.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        // Forwarded batches join this leader's own, sharing its fsyncs.
        self.store.enqueue(request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    async fn read_index(
        &self,
        _: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        match self.store.local_read_index().await.map_err(to_status)? {
            Some(index) => Ok(Response::new(ReadIndexResponse { index })),
            None => Err(Status::failed_precondition("not the leader")),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let id = request.into_inner().id;
        if !self.store.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        let ttl = crate::lease::keep_alive_on_leader(&self.store, id).await.map_err(to_status)?;
        Ok(Response::new(LeaseKeepAliveResponse { header: None, id, ttl }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        if !self.store.is_leader() {
            return Err(Status::failed_precondition("not the leader"));
        }
        crate::lease::time_to_live_on_leader(&self.store, request.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        if request.get_ref().to == self.store.id() && !self.store.is_leader() {
            self.store.campaign().await;
        }
        Ok(Response::new(TransferLeaderResponse { leader: self.store.leader().unwrap_or(0) }))
    }
}

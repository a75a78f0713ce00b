//! The etcd v3 gRPC API over the store, so etcdctl and etcd client
//! libraries work against berth: KV, Watch, Lease, Cluster, Maintenance.

use crate::error::StoreError;
use crate::peer_service::to_status;
use crate::store::Store;
use crate::watch::WatchOptions;
use berth_proto::etcd::etcdserverpb as pb;
use berth_proto::etcd::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use berth_proto::etcd::etcdserverpb::kv_server::{Kv, KvServer};
use berth_proto::etcd::etcdserverpb::lease_server::{Lease, LeaseServer};
use berth_proto::etcd::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use berth_proto::etcd::etcdserverpb::watch_server::{Watch, WatchServer};
use futures::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// One etcd service, behind the check of who may call it.
pub type Guarded<S> = InterceptedService<S, crate::peer_service::PeerCheck>;

/// The five etcd services of one peer, to add to a tonic server.
pub struct EtcdServices {
    pub kv: Guarded<KvServer<Facade>>,
    pub watch: Guarded<WatchServer<Facade>>,
    pub lease: Guarded<LeaseServer<Facade>>,
    pub cluster: Guarded<ClusterServer<Facade>>,
    pub maintenance: Guarded<MaintenanceServer<Facade>>,
}

/// Serves the etcd v3 API from `store`.
pub fn etcd_services(store: Store) -> EtcdServices {
    let check = crate::peer_service::PeerCheck::etcd(store.clone());
    let facade = Facade { store };
    // Room for a 1.5 MiB value plus the request around it; larger requests
    // are refused by tonic with ResourceExhausted before reaching the store.
    const LIMIT: usize = 2 << 20;
    EtcdServices {
        kv: InterceptedService::new(
            KvServer::new(facade.clone()).max_decoding_message_size(LIMIT),
            check.clone(),
        ),
        watch: InterceptedService::new(
            WatchServer::new(facade.clone()).max_decoding_message_size(LIMIT),
            check.clone(),
        ),
        lease: InterceptedService::new(LeaseServer::new(facade.clone()), check.clone()),
        cluster: InterceptedService::new(ClusterServer::new(facade.clone()), check.clone()),
        maintenance: InterceptedService::new(MaintenanceServer::new(facade), check),
    }
}

#[derive(Clone)]
pub struct Facade {
    store: Store,
}

fn status(e: StoreError) -> Status {
    match e {
        // etcd's own wording, which clients match on.
        StoreError::Compacted { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
        }
        StoreError::FutureRevision { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        StoreError::LeaseNotFound(_) => Status::not_found("etcdserver: requested lease not found"),
        StoreError::LeaseExists(_) => {
            Status::failed_precondition("etcdserver: lease already exists")
        }
        StoreError::KeyNotFound => Status::invalid_argument("etcdserver: key not found"),
        StoreError::InvalidArgument(m) => Status::invalid_argument(format!("etcdserver: {m}")),
        e => to_status(e),
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for Facade {
    async fn range(
        &self,
        r: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.store.range(r.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.store.put(r.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn delete_range(
        &self,
        r: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        self.store.delete_range(r.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn txn(&self, r: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        self.store.txn(r.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn compact(
        &self,
        r: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        self.store.compact(r.into_inner()).await.map(Response::new).map_err(status)
    }
}

#[tonic::async_trait]
impl Watch for Facade {
    type WatchStream = ResponseStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(256);
        let store = self.store.clone();
        // The stream's task owns every watcher it creates; when the client
        // goes away, the task ends and drops them all.
        tokio::spawn(async move {
            let mut watchers: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
            let mut progress: HashMap<i64, std::sync::Arc<tokio::sync::Notify>> = HashMap::new();
            let mut next_id = 0i64;
            while let Some(Ok(message)) = incoming.next().await {
                use pb::watch_request::RequestUnion;
                match message.request_union {
                    Some(RequestUnion::CreateRequest(create)) => {
                        let id = if create.watch_id > 0 { create.watch_id } else { next_id };
                        next_id = next_id.max(id + 1);
                        let revision = store.revision();
                        if watchers.contains_key(&id) {
                            let _ = tx
                                .send(Ok(pb::WatchResponse {
                                    header: Some(store.header(revision)),
                                    watch_id: id,
                                    created: true,
                                    canceled: true,
                                    cancel_reason: "etcdserver: duplicate watch ID provided".into(),
                                    ..Default::default()
                                }))
                                .await;
                            continue;
                        }
                        let options = WatchOptions {
                            key: create.key.clone(),
                            range_end: create.range_end.clone(),
                            start_revision: create.start_revision,
                            prev_kv: create.prev_kv,
                            no_put: create
                                .filters
                                .contains(&(pb::watch_create_request::FilterType::Noput as i32)),
                            no_delete: create
                                .filters
                                .contains(&(pb::watch_create_request::FilterType::Nodelete as i32)),
                            progress_interval: create
                                .progress_notify
                                .then(|| std::time::Duration::from_secs(600)),
                        };
                        let watch = store.watch(options);
                        let _ = tx
                            .send(Ok(pb::WatchResponse {
                                header: Some(store.header(revision)),
                                watch_id: id,
                                created: true,
                                ..Default::default()
                            }))
                            .await;
                        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
                        progress.insert(id, notify.clone());
                        watchers.insert(
                            id,
                            tokio::spawn(forward(store.clone(), id, watch, notify, tx.clone())),
                        );
                    }
                    Some(RequestUnion::CancelRequest(cancel)) => {
                        if let Some(task) = watchers.remove(&cancel.watch_id) {
                            task.abort();
                            progress.remove(&cancel.watch_id);
                            let revision = store.revision();
                            let _ = tx
                                .send(Ok(pb::WatchResponse {
                                    header: Some(store.header(revision)),
                                    watch_id: cancel.watch_id,
                                    canceled: true,
                                    ..Default::default()
                                }))
                                .await;
                        }
                    }
                    Some(RequestUnion::ProgressRequest(_)) => {
                        for notify in progress.values() {
                            notify.notify_one();
                        }
                    }
                    None => {}
                }
            }
            for (_, task) in watchers {
                task.abort();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Copies one watcher's batches to the stream as WatchResponses.
async fn forward(
    store: Store,
    id: i64,
    mut watch: crate::watch::Watch,
    progress: std::sync::Arc<tokio::sync::Notify>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) {
    loop {
        let next = tokio::select! {
            next = watch.next() => next,
            _ = progress.notified() => { watch.request_progress(); continue; }
        };
        let response = match next {
            None => return,
            Some(Ok(batch)) => pb::WatchResponse {
                header: Some(store.header(batch.revision)),
                watch_id: id,
                events: batch.events,
                ..Default::default()
            },
            Some(Err(StoreError::Compacted { compact_revision, .. })) => pb::WatchResponse {
                header: Some(store.header(compact_revision)),
                watch_id: id,
                canceled: true,
                compact_revision,
                cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
                ..Default::default()
            },
            Some(Err(e)) => pb::WatchResponse {
                header: Some(store.header_now()),
                watch_id: id,
                canceled: true,
                cancel_reason: e.to_string(),
                ..Default::default()
            },
        };
        let last = response.canceled;
        if tx.send(Ok(response)).await.is_err() || last {
            return;
        }
    }
}

#[tonic::async_trait]
impl Lease for Facade {
    async fn lease_grant(
        &self,
        r: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        self.store.lease_grant(r.into_inner()).await.map(Response::new).map_err(status)
    }

    async fn lease_revoke(
        &self,
        r: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        self.store.lease_revoke(r.into_inner()).await.map(Response::new).map_err(status)
    }

    type LeaseKeepAliveStream = ResponseStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                let reply = match store.lease_keep_alive(message.id).await {
                    Ok(ttl) => Ok(pb::LeaseKeepAliveResponse {
                        header: Some(store.header_now()),
                        id: message.id,
                        ttl,
                    }),
                    // etcd answers an unknown lease with TTL 0: expired or revoked.
                    Err(StoreError::LeaseNotFound(_)) => Ok(pb::LeaseKeepAliveResponse {
                        header: Some(store.header_now()),
                        id: message.id,
                        ttl: 0,
                    }),
                    Err(e) => Err(status(e)),
                };
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let id = r.get_ref().id;
        match self.store.lease_time_to_live(r.into_inner()).await {
            Ok(response) => Ok(Response::new(response)),
            // etcd reports a missing lease as TTL -1 rather than an error.
            Err(StoreError::LeaseNotFound(_)) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: Some(self.store.header_now()),
                id,
                ttl: -1,
                ..Default::default()
            })),
            Err(e) => Err(status(e)),
        }
    }

    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let ids = self.store.lease_ids().await.map_err(status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.store.header_now()),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

impl Facade {
    /// The id of the peer serving at `addr`, which must belong to this
    /// cluster (by name) and not yet to any membership.
    async fn joining_peer_id(&self, addr: &str) -> Result<u64, Status> {
        use berth_proto::etcd::etcdserverpb::cluster_client::ClusterClient;
        use berth_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
        let unreachable =
            |e: &dyn std::fmt::Display| Status::unavailable(format!("peer at {addr}: {e}"));
        let channel = berth_tls::endpoint(addr, self.store.inner.config.tls.as_ref())
            .map_err(|e| Status::invalid_argument(format!("peer URL {addr:?}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(3))
            .timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = MaintenanceClient::new(channel.clone())
            .status(pb::StatusRequest {})
            .await
            .map_err(|e| unreachable(&e.message()))?
            .into_inner();
        let header = status.header.unwrap_or_default();
        if header.cluster_id != self.store.inner.cluster_id {
            return Err(Status::failed_precondition(format!(
                "the peer at {addr} was started for another cluster (--cluster differs)"
            )));
        }
        let members = ClusterClient::new(channel)
            .member_list(pb::MemberListRequest { linearizable: false })
            .await
            .map_err(|e| unreachable(&e.message()))?
            .into_inner()
            .members;
        if !members.is_empty() {
            return Err(Status::failed_precondition(format!(
                "the peer at {addr} (id {}) already belongs to a cluster; start it with an empty \
                 --data-dir and no --peers",
                header.member_id
            )));
        }
        Ok(header.member_id)
    }

    fn members(&self) -> Result<Vec<pb::Member>, Status> {
        let status = self.store.status().map_err(to_status)?;
        let scheme = if self.store.requires_peer_certificates() { "https" } else { "http" };
        Ok(status
            .members
            .iter()
            .map(|(id, addr)| pb::Member {
                id: *id,
                name: format!("peer-{id}"),
                peer_ur_ls: vec![format!("{scheme}://{addr}")],
                client_ur_ls: vec![format!("{scheme}://{addr}")],
                is_learner: !status.voters.contains(id),
            })
            .collect())
    }
}

#[tonic::async_trait]
impl Cluster for Facade {
    /// Adds the running, empty peer at the one peer URL given. Its id is
    /// the one it was started with (`berth server --id`), asked of the
    /// peer itself; it joins as a learner, and once caught up becomes a
    /// voter unless `is_learner`. Call it on the leader.
    async fn member_add(
        &self,
        r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let r = r.into_inner();
        let [url] = r.peer_ur_ls.as_slice() else {
            return Err(Status::invalid_argument("give exactly one peer URL"));
        };
        let addr = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(url)
            .trim_end_matches('/')
            .to_string();
        let id = self.joining_peer_id(&addr).await?;
        let peers = self.store.status().map_err(to_status)?;
        if peers.members.contains_key(&id) {
            return Err(Status::already_exists(format!("peer {id} is already a member")));
        }
        if let Some((other, _)) = peers.members.iter().find(|(_, a)| **a == addr) {
            return Err(Status::already_exists(format!("peer {other} already has address {addr}")));
        }
        self.store.add_learner(id, &addr).await.map_err(status)?;
        if !r.is_learner {
            self.store.promote(id).await.map_err(status)?;
        }
        let members = self.members()?;
        let member = members.iter().find(|m| m.id == id).cloned();
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.store.header_now()),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.store.remove_peer(r.get_ref().id).await.map_err(status)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.store.header_now()),
            members: self.members()?,
        }))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented("a peer's address changes by removing and re-adding it"))
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.store.header_now()),
            members: self.members()?,
        }))
    }

    async fn member_promote(
        &self,
        r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.store.promote(r.get_ref().id).await.map_err(status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.store.header_now()),
            members: self.members()?,
        }))
    }
}

#[tonic::async_trait]
impl Maintenance for Facade {
    async fn alarm(
        &self,
        _: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.store.header_now()),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.store.status().map_err(to_status)?;
        let size = self.store.disk_usage() as i64;
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.store.header(s.revision)),
            version: concat!("3.4.0-berth-", env!("CARGO_PKG_VERSION")).into(),
            db_size: size,
            leader: s.leader.unwrap_or(0),
            raft_index: s.commit_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: s.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(Status::unimplemented(
            "RocksDB compacts in the background; there is nothing to defragment",
        ))
    }

    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (revision, hash) = self.store.key_space_hash().map_err(to_status)?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.store.header(revision)),
            hash: hash as u32,
        }))
    }

    async fn hash_kv(
        &self,
        _: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let (revision, hash) = self.store.key_space_hash().map_err(to_status)?;
        let compacted = self.store.status().map_err(to_status)?.compact_revision;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.store.header(revision)),
            hash: hash as u32,
            compact_revision: compacted,
        }))
    }

    type SnapshotStream = ResponseStream<pb::SnapshotResponse>;

    /// A consistent copy of this peer's key space in berth's snapshot
    /// format (for `berth cluster snapshot restore`), in 1 MiB pieces.
    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A ".part" file in the snapshots directory: removed when sent, and
        // by the next start if this one is cut short.
        let dir = self.store.snapshot_dir();
        let file = TempFile(dir.join(format!("save-{}-{n}.part", std::process::id())));
        let saved = self.store.save_snapshot(&file.0).await.map_err(to_status)?;
        let reader = tokio::fs::File::open(&file.0)
            .await
            .map_err(|e| Status::internal(format!("reopen the saved snapshot: {e}")))?;
        // The revision of the copy itself: writes after it are not in it.
        let (size, header) = (saved.size, self.store.header(saved.revision));
        let stream = futures::stream::unfold(
            (reader, size, file, header),
            |(mut reader, remaining, file, header)| async move {
                use tokio::io::AsyncReadExt;
                if remaining == 0 {
                    return None;
                }
                let mut blob = vec![0u8; remaining.min(1 << 20) as usize];
                if let Err(e) = reader.read_exact(&mut blob).await {
                    let error = Status::internal(format!("read the saved snapshot: {e}"));
                    return Some((Err(error), (reader, 0, file, header)));
                }
                let remaining = remaining - blob.len() as u64;
                let response =
                    pb::SnapshotResponse { header: Some(header), remaining_bytes: remaining, blob };
                Some((Ok(response), (reader, remaining, file, header)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        r: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.store.transfer_leader(r.get_ref().target_id).await.map_err(status)?;
        Ok(Response::new(pb::MoveLeaderResponse { header: Some(self.store.header_now()) }))
    }
}

/// A file removed when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

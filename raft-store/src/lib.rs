//! berth-raft-store: the replicated store that plays etcd's role.
//!
//! Every API-server peer embeds a [`Store`]. One openraft group whose voters
//! are the peers replicates a log on RocksDB (fsynced before a write is
//! acknowledged); applying it builds an MVCC key space with etcd v3
//! semantics: one global revision, per-key create/mod revision, version and
//! lease, ranges at past revisions, transactions, watches, leases and
//! compaction. The API server calls it in-process through [`KeyValue`];
//! [`etcd_services`] serves the same operations as etcd's v3 gRPC API.
//!
//! [`linearizability`] checks recorded histories of operations on the store
//! (used by its tests and by `berth chaos`).
//!
//! openraft is used at 0.9.25 with storage-v2 (the stable line). 0.9 has no
//! leadership-transfer call; [`Store::transfer_leader`] pauses the leader's
//! heartbeats and has the target campaign instead.

// openraft's StorageError, which its storage traits return, is large; the
// helpers that build it return it as the traits do.
#![allow(clippy::result_large_err)]

mod db;
mod election;
mod error;
mod etcd;
mod keys;
mod lease;
pub mod linearizability;
mod log_store;
mod metrics;
mod mvcc;
mod network;
mod peer_service;
mod state_machine;
mod store;
mod types;
mod watch;

pub use error::StoreError;
pub use etcd::{etcd_services, EtcdServices};
pub use network::Faults;
pub use peer_service::{peer_service, PeerCheck, PeerService};
pub use store::{
    restore_snapshot, PeerStatus, SavedSnapshot, Store, StoreConfig, MAX_TXN_OPS, MAX_VALUE_BYTES,
};
pub use types::NodeId;
pub use watch::{Watch, WatchBatch, WatchOptions};

use berth_proto::etcd::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use std::future::Future;

/// The etcd v3 key-value operations, as the API server uses them in-process.
pub trait KeyValue: Send + Sync {
    fn range(
        &self,
        request: RangeRequest,
    ) -> impl Future<Output = Result<RangeResponse, StoreError>> + Send;
    fn put(
        &self,
        request: PutRequest,
    ) -> impl Future<Output = Result<PutResponse, StoreError>> + Send;
    fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> impl Future<Output = Result<DeleteRangeResponse, StoreError>> + Send;
    fn txn(
        &self,
        request: TxnRequest,
    ) -> impl Future<Output = Result<TxnResponse, StoreError>> + Send;
    fn compact(
        &self,
        request: CompactionRequest,
    ) -> impl Future<Output = Result<CompactionResponse, StoreError>> + Send;
    fn watch(&self, options: WatchOptions) -> Watch;
    /// Grants a lease of `ttl_seconds`; keys put with it go when it expires.
    fn lease_grant(&self, ttl_seconds: i64)
        -> impl Future<Output = Result<i64, StoreError>> + Send;
}

impl KeyValue for Store {
    fn range(
        &self,
        request: RangeRequest,
    ) -> impl Future<Output = Result<RangeResponse, StoreError>> + Send {
        Store::range(self, request)
    }
    fn put(
        &self,
        request: PutRequest,
    ) -> impl Future<Output = Result<PutResponse, StoreError>> + Send {
        Store::put(self, request)
    }
    fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> impl Future<Output = Result<DeleteRangeResponse, StoreError>> + Send {
        Store::delete_range(self, request)
    }
    fn txn(
        &self,
        request: TxnRequest,
    ) -> impl Future<Output = Result<TxnResponse, StoreError>> + Send {
        Store::txn(self, request)
    }
    fn compact(
        &self,
        request: CompactionRequest,
    ) -> impl Future<Output = Result<CompactionResponse, StoreError>> + Send {
        Store::compact(self, request)
    }
    fn watch(&self, options: WatchOptions) -> Watch {
        Store::watch(self, options)
    }
    async fn lease_grant(&self, ttl_seconds: i64) -> Result<i64, StoreError> {
        let request =
            berth_proto::etcd::etcdserverpb::LeaseGrantRequest { ttl: ttl_seconds, id: 0 };
        Store::lease_grant(self, request).await.map(|r| r.id)
    }
}

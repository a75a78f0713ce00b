//! The etcd v3 gRPC facade as a client sees it: limits, watch streams with
//! cancel and progress, lease keep-alive streams.

mod common;

use berth_proto::etcd::etcdserverpb::kv_client::KvClient;
use berth_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use berth_proto::etcd::etcdserverpb::watch_client::WatchClient;
use berth_proto::etcd::etcdserverpb::{
    watch_request, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use common::*;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_and_change_nothing() {
    let cluster = Cluster::start(1).await;
    let mut kv =
        KvClient::new(channel(&cluster.peer(1).addr).await).max_encoding_message_size(8 << 20);
    let before = cluster.store(1).key_space_hash().unwrap();
    // Over the 1.5 MiB value limit but under the gRPC limit: the store says why.
    let big =
        PutRequest { key: b"/big".to_vec(), value: vec![b'x'; 1600 * 1024], ..Default::default() };
    let status = kv.put(big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    // Over the gRPC message limit: refused before it reaches the store.
    let huge =
        PutRequest { key: b"/huge".to_vec(), value: vec![b'x'; 3 << 20], ..Default::default() };
    let status = kv.put(huge).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    assert_eq!(cluster.store(1).key_space_hash().unwrap(), before);
    cluster.shutdown().await;
}

async fn next(
    responses: &mut tonic::Streaming<berth_proto::etcd::etcdserverpb::WatchResponse>,
) -> berth_proto::etcd::etcdserverpb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("a response in time")
        .expect("no stream error")
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_create_deliver_progress_and_cancel() {
    let cluster = Cluster::start(1).await;
    let addr = cluster.peer(1).addr.clone();
    let mut watch = WatchClient::new(channel(&addr).await);
    let (tx, rx) = mpsc::channel(8);
    let create = |key: &str, id: i64| WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            watch_id: id,
            ..Default::default()
        })),
    };
    tx.send(create("/w/a", 7)).await.unwrap();
    tx.send(create("/w/b", 8)).await.unwrap();
    let mut responses = watch.watch(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let created: Vec<berth_proto::etcd::etcdserverpb::WatchResponse> =
        vec![next(&mut responses).await, next(&mut responses).await];
    assert!(created.iter().all(|r| r.created));
    let store = cluster.store(1);
    store.put(put("/w/a", "1")).await.unwrap();
    let got = next(&mut responses).await;
    assert_eq!((got.watch_id, got.events.len()), (7, 1));

    // Progress: every watcher reports the revision it has caught up to.
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})),
    })
    .await
    .unwrap();
    let mut progressed = Vec::new();
    for _ in 0..2 {
        let p = next(&mut responses).await;
        assert!(p.events.is_empty());
        progressed.push(p.watch_id);
    }
    progressed.sort();
    assert_eq!(progressed, [7, 8]);

    // Cancel one; the other still delivers.
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 7,
        })),
    })
    .await
    .unwrap();
    let canceled = next(&mut responses).await;
    assert!(canceled.canceled && canceled.watch_id == 7);
    store.put(put("/w/a", "2")).await.unwrap();
    store.put(put("/w/b", "1")).await.unwrap();
    let got = next(&mut responses).await;
    assert_eq!(got.watch_id, 8, "the canceled watch delivered {got:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keep_alive_stream_answers_each_ping() {
    let cluster = Cluster::start(3).await;
    // Ask a follower: keep-alives are forwarded to the leader.
    let leader = cluster.wait_for_leader(None).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let mut lease = LeaseClient::new(channel(&cluster.peer(follower).addr).await);
    let id = lease.lease_grant(LeaseGrantRequest { ttl: 30, id: 0 }).await.unwrap().into_inner().id;
    let (tx, rx) = mpsc::channel(4);
    let mut replies = lease.lease_keep_alive(ReceiverStream::new(rx)).await.unwrap().into_inner();
    for _ in 0..3 {
        tx.send(LeaseKeepAliveRequest { id }).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((reply.id, reply.ttl), (id, 30));
    }
    tx.send(LeaseKeepAliveRequest { id: 4242 }).await.unwrap();
    let unknown = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(unknown.ttl, 0, "an unknown lease is reported expired");
    cluster.shutdown().await;
}

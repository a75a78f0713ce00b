//! Watch guarantees on recorded streams: ordered, unique, atomic per
//! transaction, reliable (no gaps) and resumable from any revision.

mod common;

use berth_proto::etcd::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, RequestOp, TxnRequest,
};
use berth_proto::etcd::mvccpb::event::EventType;
use berth_raft_store::{Store, StoreError, Watch, WatchBatch, WatchOptions};
use common::*;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

fn everything(start: i64) -> WatchOptions {
    WatchOptions { key: vec![0], range_end: vec![0], start_revision: start, ..Default::default() }
}

async fn next(watch: &mut Watch) -> WatchBatch {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a batch arrives in time")
        .expect("the watch is open")
        .expect("no watch error")
}

/// Collects batches until one at or after `upto` arrives.
async fn collect(watch: &mut Watch, upto: i64) -> Vec<WatchBatch> {
    let mut out = Vec::new();
    loop {
        let batch = next(watch).await;
        let done = batch.revision >= upto;
        out.push(batch);
        if done {
            return out;
        }
    }
}

/// Writes a mix of puts, deletes and multi-key transactions; returns the
/// number of events each revision must carry.
async fn workload(store: &Store, rounds: usize) -> BTreeMap<i64, usize> {
    let mut expected = BTreeMap::new();
    for i in 0..rounds {
        let r = store.put(put(&format!("/k/{}", i % 7), &i.to_string())).await.unwrap();
        expected.insert(r.header.unwrap().revision, 1);
        if i % 5 == 0 {
            let ops = (0..3)
                .map(|j| RequestOp {
                    request: Some(request_op::Request::RequestPut(put(
                        &format!("/t/{i}/{j}"),
                        "x",
                    ))),
                })
                .collect();
            let r = store.txn(TxnRequest { success: ops, ..Default::default() }).await.unwrap();
            expected.insert(r.header.unwrap().revision, 3);
        }
        if i % 11 == 10 {
            let r = store
                .delete_range(DeleteRangeRequest {
                    key: format!("/k/{}", i % 7).into_bytes(),
                    ..Default::default()
                })
                .await
                .unwrap();
            expected.insert(r.header.unwrap().revision, 1);
        }
    }
    expected
}

fn check_stream(batches: &[WatchBatch], expected: &BTreeMap<i64, usize>) {
    let mut last = 0;
    let mut seen = HashSet::new();
    let mut delivered = BTreeMap::new();
    for batch in batches {
        assert!(batch.revision > last, "ordered: {} after {last}", batch.revision);
        last = batch.revision;
        for event in &batch.events {
            let kv = event.kv.as_ref().unwrap();
            assert_eq!(kv.mod_revision, batch.revision, "an event sits in its revision's batch");
            assert!(seen.insert((kv.mod_revision, kv.key.clone())), "unique: {kv:?} twice");
        }
        delivered.insert(batch.revision, batch.events.len());
    }
    // Reliable and atomic: every revision, with all of its events at once.
    assert_eq!(&delivered, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_delivers_every_revision_in_order_once() {
    let cluster = Cluster::start(3).await;
    let start = cluster.store(1).put(put("/start", "")).await.unwrap().header.unwrap().revision + 1;
    let mut watches: Vec<Watch> =
        (1..=3).map(|id| cluster.store(id).watch(everything(start))).collect();
    let expected = workload(cluster.store(2), 40).await;
    let upto = *expected.keys().last().unwrap();
    for (i, watch) in watches.iter_mut().enumerate() {
        let batches = collect(watch, upto).await;
        check_stream(&batches, &expected);
        assert!(!batches.is_empty(), "peer {}", i + 1);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_from_any_revision_after_a_reconnect() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    let first = s.put(put("/start", "")).await.unwrap().header.unwrap().revision + 1;
    let expected = workload(s, 30).await;
    let upto = *expected.keys().last().unwrap();
    let full = collect(&mut s.watch(everything(first)), upto).await;
    check_stream(&full, &expected);
    // Drop the watch after any batch and start again from the next revision:
    // the joined stream is the full stream.
    for cut in [0usize, 1, full.len() / 2, full.len() - 2] {
        let mut joined: Vec<WatchBatch> = full[..=cut].to_vec();
        let resume_from = full[cut].revision + 1;
        joined.extend(collect(&mut s.watch(everything(resume_from)), upto).await);
        assert_eq!(joined, full, "resumed after revision {}", full[cut].revision);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_gets_an_explicit_error() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    for i in 0..5 {
        s.put(put("/c", &i.to_string())).await.unwrap();
    }
    let rev = s.put(put("/c", "last")).await.unwrap().header.unwrap().revision;
    s.compact(CompactionRequest { revision: rev - 1, physical: false }).await.unwrap();
    let mut watch =
        s.watch(WatchOptions { key: b"/c".to_vec(), start_revision: 2, ..Default::default() });
    let err = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { compact_revision, .. } if compact_revision == rev - 1),
        "{err}"
    );
    // From the compacted revision itself, history is still there.
    let mut ok = s.watch(WatchOptions {
        key: b"/c".to_vec(),
        start_revision: rev - 1,
        ..Default::default()
    });
    assert_eq!(next(&mut ok).await.revision, rev - 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prev_kv_filters_and_progress() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    s.put(put("/p", "old")).await.unwrap();
    let mut with_prev =
        s.watch(WatchOptions { key: b"/p".to_vec(), prev_kv: true, ..Default::default() });
    let mut deletes_only =
        s.watch(WatchOptions { key: b"/p".to_vec(), no_put: true, ..Default::default() });
    s.put(put("/p", "new")).await.unwrap();
    let rev = s
        .delete_range(DeleteRangeRequest { key: b"/p".to_vec(), ..Default::default() })
        .await
        .unwrap();
    let rev = rev.header.unwrap().revision;
    let put_event = next(&mut with_prev).await;
    assert_eq!(put_event.events[0].prev_kv.as_ref().unwrap().value, b"old");
    let delete_event = next(&mut with_prev).await;
    assert_eq!(delete_event.events[0].r#type, EventType::Delete as i32);
    assert_eq!(delete_event.events[0].prev_kv.as_ref().unwrap().value, b"new");
    let only = next(&mut deletes_only).await;
    assert_eq!((only.revision, only.events[0].r#type), (rev, EventType::Delete as i32));
    // A progress notification says everything up to its revision was sent.
    deletes_only.request_progress();
    let progress = next(&mut deletes_only).await;
    assert!(progress.events.is_empty());
    assert!(progress.revision >= rev, "{} < {rev}", progress.revision);
    cluster.shutdown().await;
}

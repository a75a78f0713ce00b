//! etcd v3 semantics of one peer: revisions, versions, ranges, transactions,
//! deletes, compaction, leases and limits.

mod common;

use berth_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use berth_proto::etcd::etcdserverpb::range_request::{SortOrder, SortTarget};
use berth_proto::etcd::etcdserverpb::{
    request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use berth_raft_store::{StoreError, MAX_TXN_OPS};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_versions_and_ranges() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    s.put(put("/first", "so that revision r1 - 1 is a real one")).await.unwrap();
    let r1 = s.put(put("/a", "1")).await.unwrap().header.unwrap().revision;
    let r2 = s.put(put("/a", "2")).await.unwrap().header.unwrap().revision;
    s.put(put("/b", "x")).await.unwrap();
    s.put(put("/c", "y")).await.unwrap();
    assert_eq!(r2, r1 + 1);

    let a = s.range(get("/a")).await.unwrap();
    let kv = &a.kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r1, r2, 2));
    assert_eq!(a.count, 1);

    // A past revision shows the old value.
    let old = s.range(RangeRequest { revision: r1, ..get("/a") }).await.unwrap();
    assert_eq!(old.kvs[0].value, b"1");
    let before = s.range(RangeRequest { revision: r1 - 1, ..get("/a") }).await.unwrap();
    assert!(before.kvs.is_empty());

    // Prefix, limit, count-only, keys-only, sort.
    s.delete_range(DeleteRangeRequest { key: b"/first".to_vec(), ..Default::default() })
        .await
        .unwrap();
    let all = s.range(prefix("/")).await.unwrap();
    assert_eq!(all.kvs.len(), 3);
    let limited = s.range(RangeRequest { limit: 2, ..prefix("/") }).await.unwrap();
    assert_eq!((limited.kvs.len(), limited.more, limited.count), (2, true, 3));
    let counted = s.range(RangeRequest { count_only: true, ..prefix("/") }).await.unwrap();
    assert_eq!((counted.kvs.len(), counted.count), (0, 3));
    let keys = s.range(RangeRequest { keys_only: true, ..prefix("/") }).await.unwrap();
    assert!(keys.kvs.iter().all(|kv| kv.value.is_empty()));
    let sorted = s
        .range(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            ..prefix("/")
        })
        .await
        .unwrap();
    let order: Vec<&[u8]> = sorted.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(order, [b"/c".as_slice(), b"/b", b"/a"]);
    // Everything from a key on ("\0" as range end).
    let from_b = s
        .range(RangeRequest { key: b"/b".to_vec(), range_end: vec![0], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(from_b.kvs.len(), 2);

    // A future revision is refused.
    let future = s.range(RangeRequest { revision: 1000, ..get("/a") }).await.unwrap_err();
    assert!(matches!(future, StoreError::FutureRevision { .. }), "{future}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_prev_kv() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    for k in ["/p/1", "/p/2", "/q"] {
        s.put(put(k, k)).await.unwrap();
    }
    let prev = s.put(PutRequest { prev_kv: true, ..put("/q", "new") }).await.unwrap();
    assert_eq!(prev.prev_kv.unwrap().value, b"/q");
    let p = prefix("/p/");
    let deleted = s
        .delete_range(DeleteRangeRequest {
            key: p.key.clone(),
            range_end: p.range_end.clone(),
            prev_kv: true,
        })
        .await
        .unwrap();
    assert_eq!(deleted.deleted, 2);
    assert_eq!(deleted.prev_kvs.len(), 2);
    assert!(s.range(prefix("/p/")).await.unwrap().kvs.is_empty());
    // Deleting nothing does not move the revision.
    let rev = deleted.header.unwrap().revision;
    let none = s
        .delete_range(DeleteRangeRequest { key: b"/zz".to_vec(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((none.deleted, none.header.unwrap().revision), (0, rev));
    // A recreated key starts a new generation.
    let again = s.put(put("/p/1", "back")).await.unwrap().header.unwrap().revision;
    let kv = s.range(get("/p/1")).await.unwrap().kvs.remove(0);
    assert_eq!((kv.create_revision, kv.version), (again, 1));
    cluster.shutdown().await;
}

fn cmp_mod(key: &str, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.into(),
        target_union: Some(TargetUnion::ModRevision(rev)),
        ..Default::default()
    }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(put(key, value))) }
}

fn op_get(key: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(get(key))) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_compare_and_swap() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    let rev = s.put(put("/x", "1")).await.unwrap().header.unwrap().revision;

    // Success branch: both writes share one revision, and the range inside
    // the transaction sees the transaction's own write.
    let ok = s
        .txn(TxnRequest {
            compare: vec![cmp_mod("/x", rev)],
            success: vec![op_put("/x", "2"), op_put("/y", "2"), op_get("/x")],
            failure: vec![op_get("/x")],
        })
        .await
        .unwrap();
    assert!(ok.succeeded);
    let txn_rev = ok.header.unwrap().revision;
    assert_eq!(txn_rev, rev + 1);
    let Some(response_op::Response::ResponseRange(seen)) = &ok.responses[2].response else {
        panic!()
    };
    assert_eq!(seen.kvs[0].value, b"2");
    assert_eq!(s.range(get("/y")).await.unwrap().kvs[0].mod_revision, txn_rev);

    // The same compare now fails: the failure branch runs, nothing changes.
    let failed = s
        .txn(TxnRequest {
            compare: vec![cmp_mod("/x", rev)],
            success: vec![op_put("/x", "3")],
            failure: vec![op_get("/x")],
        })
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert_eq!(value(s, "/x").await.as_deref(), Some("2"));

    // Create-if-absent: compare create_revision == 0.
    let absent = Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: b"/new".to_vec(),
        target_union: Some(TargetUnion::CreateRevision(0)),
        ..Default::default()
    };
    let first = s
        .txn(TxnRequest {
            compare: vec![absent.clone()],
            success: vec![op_put("/new", "a")],
            failure: vec![],
        })
        .await
        .unwrap();
    let second = s
        .txn(TxnRequest {
            compare: vec![absent],
            success: vec![op_put("/new", "b")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(first.succeeded && !second.succeeded);

    // A value compare on a missing key fails.
    let missing = Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Value as i32,
        key: b"/nope".to_vec(),
        target_union: Some(TargetUnion::Value(Vec::new())),
        ..Default::default()
    };
    assert!(
        !s.txn(TxnRequest { compare: vec![missing], ..Default::default() })
            .await
            .unwrap()
            .succeeded
    );

    // Limits and duplicates are refused before anything is proposed.
    let dup = s
        .txn(TxnRequest {
            success: vec![op_put("/d", "1"), op_put("/d", "2")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("duplicate key"), "{dup}");
    let many = (0..=MAX_TXN_OPS).map(|i| op_put(&format!("/m/{i}"), "v")).collect();
    let too_many = s.txn(TxnRequest { success: many, ..Default::default() }).await.unwrap_err();
    assert!(too_many.to_string().contains("too many operations"), "{too_many}");
    assert!(s.range(prefix("/m/")).await.unwrap().kvs.is_empty());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_compacted_revision_readable() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    let r1 = s.put(put("/k", "1")).await.unwrap().header.unwrap().revision;
    let r2 = s.put(put("/k", "2")).await.unwrap().header.unwrap().revision;
    s.put(put("/gone", "x")).await.unwrap();
    s.delete_range(DeleteRangeRequest { key: b"/gone".to_vec(), ..Default::default() })
        .await
        .unwrap();
    let r3 = s.put(put("/k", "3")).await.unwrap().header.unwrap().revision;

    s.compact(CompactionRequest { revision: r2, physical: false }).await.unwrap();
    let at_r2 = s.range(RangeRequest { revision: r2, ..get("/k") }).await.unwrap();
    assert_eq!(at_r2.kvs[0].value, b"2");
    let at_r1 = s.range(RangeRequest { revision: r1, ..get("/k") }).await.unwrap_err();
    assert!(
        matches!(at_r1, StoreError::Compacted { compact_revision, .. } if compact_revision == r2),
        "{at_r1}"
    );
    assert_eq!(value(s, "/k").await.as_deref(), Some("3"));
    let again = s.compact(CompactionRequest { revision: r2, physical: false }).await.unwrap_err();
    assert!(matches!(again, StoreError::Compacted { .. }), "{again}");
    let future =
        s.compact(CompactionRequest { revision: r3 + 10, physical: false }).await.unwrap_err();
    assert!(matches!(future, StoreError::FutureRevision { .. }), "{future}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    let before = s.key_space_hash().unwrap();
    let huge = "x".repeat(1536 * 1024 + 1);
    let err = s.put(put("/big", &huge)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(ref m) if m.contains("too large")), "{err}");
    let err = s.put(PutRequest { lease: 12345, ..put("/leased", "v") }).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(12345)), "{err}");
    let err = s.range(RangeRequest::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    let err = s.put(put("", "v")).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    let err = s.lease_revoke(LeaseRevokeRequest { id: 999 }).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(999)), "{err}");
    // A range whose end sorts before its start is empty, not an error.
    let inverted =
        RangeRequest { key: b"/z".to_vec(), range_end: b"/a".to_vec(), ..Default::default() };
    assert!(s.range(inverted).await.unwrap().kvs.is_empty());
    assert_eq!(s.key_space_hash().unwrap(), before);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_and_take_their_keys_in_one_revision() {
    let cluster = Cluster::start(1).await;
    let s = cluster.store(1);
    let lease = s.lease_grant(LeaseGrantRequest { ttl: 1, id: 0 }).await.unwrap().id;
    let kept = s.lease_grant(LeaseGrantRequest { ttl: 1, id: 0 }).await.unwrap().id;
    for k in ["/l/1", "/l/2", "/l/3"] {
        s.put(PutRequest { lease, ..put(k, "v") }).await.unwrap();
    }
    s.put(PutRequest { lease: kept, ..put("/kept", "v") }).await.unwrap();
    let ttl = s.lease_time_to_live(LeaseTimeToLiveRequest { id: lease, keys: true }).await.unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys.len()), (1, 3));

    let mut watch = s.watch(berth_raft_store::WatchOptions {
        key: b"/l/".to_vec(),
        range_end: b"/l0".to_vec(),
        ..Default::default()
    });
    // Keep one lease alive while the other runs out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        s.lease_keep_alive(kept).await.unwrap();
        if s.range(prefix("/l/")).await.unwrap().kvs.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lease did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let batch =
        tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(batch.events.len(), 3, "all three keys go in one revision");
    assert_eq!(value(s, "/kept").await.as_deref(), Some("v"));
    let err = s.lease_keep_alive(lease).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_is_refused() {
    let cluster = Cluster::start(1).await;
    let dir = cluster.peer(1).dir.clone();
    cluster.store(1).put(put("/k", "v")).await.unwrap();
    let _root = cluster.shutdown().await;
    let config = berth_raft_store::StoreConfig::new(1, "someone-else", &dir, "127.0.0.1:1");
    let err = open_refused(config).await;
    assert!(err.to_string().contains("belongs to cluster"), "{err}");

    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join("notes.txt"), "mine").unwrap();
    let config = berth_raft_store::StoreConfig::new(1, "c", junk.path(), "127.0.0.1:1");
    let err = berth_raft_store::Store::open(config).await.err().expect("refused");
    assert!(err.to_string().contains("holds no berth store"), "{err}");
    assert_eq!(std::fs::read_to_string(junk.path().join("notes.txt")).unwrap(), "mine");

    // A corrupt store (its manifest pointer garbled) is refused, untouched.
    let current = dir.join("CURRENT");
    std::fs::write(&current, "MANIFEST-999999\n").unwrap();
    let config = berth_raft_store::StoreConfig::new(1, "x", &dir, "127.0.0.1:1");
    let err = open_refused(config).await;
    assert!(err.to_string().contains("cannot open the store"), "{err}");
    assert_eq!(std::fs::read_to_string(&current).unwrap(), "MANIFEST-999999\n");
}

/// Opens a store that must be refused; waits out the lock of the stopped
/// peer that used the directory before.
async fn open_refused(config: berth_raft_store::StoreConfig) -> StoreError {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match berth_raft_store::Store::open(config.clone()).await {
            Ok(_) => panic!("{} was opened", config.data_dir.display()),
            Err(e) if e.to_string().contains("lock") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return e,
        }
    }
}

//! Concurrent reads, writes and compare-and-sets on a few keys, recorded
//! while partitions come and go and messages are delayed, must form a
//! linearizable history.

mod common;

use berth_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use berth_proto::etcd::etcdserverpb::{request_op, Compare, RequestOp, TxnRequest};
use berth_raft_store::linearizability::{check, KvInput, KvModel, KvOutput, Operation, Verdict};
use berth_raft_store::Store;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEYS: [&str; 3] = ["/lin/a", "/lin/b", "/lin/c"];

async fn run_op(store: &Store, input: &KvInput) -> Option<KvOutput> {
    match input {
        KvInput::Get { key } => {
            let r = store.range(get(key)).await.ok()?;
            Some(KvOutput::Get(
                r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            ))
        }
        KvInput::Put { key, value } => store.put(put(key, value)).await.ok().map(|_| KvOutput::Put),
        KvInput::Cas { key, expected, new } => {
            let compare = match expected {
                Some(v) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key.clone().into_bytes(),
                    target_union: Some(TargetUnion::Value(v.clone().into_bytes())),
                    ..Default::default()
                },
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: key.clone().into_bytes(),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            };
            let txn = TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(put(key, new))),
                }],
                failure: vec![],
            };
            store.txn(txn).await.ok().map(|r| KvOutput::Cas(r.succeeded))
        }
        KvInput::Delete { .. } => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_partitions_are_linearizable() {
    let cluster = Cluster::start(3).await;
    let stores: Vec<Store> = cluster.peers.iter().map(|p| p.store().clone()).collect();
    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..5u64 {
        let stores = stores.clone();
        let history = history.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut seed = client * 7919 + 17;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let key = KEYS[(seed >> 40) as usize % KEYS.len()].to_string();
                let value = format!("{client}-{n}");
                let input = match (seed >> 20) % 3 {
                    0 => KvInput::Get { key },
                    1 => KvInput::Put { key, value },
                    _ => {
                        let expected = if (seed >> 50) % 4 == 0 {
                            None
                        } else {
                            Some(format!("{}-{}", (seed >> 30) % 5, n.saturating_sub(1)))
                        };
                        KvInput::Cas { key, expected, new: value }
                    }
                };
                let store = &stores[(seed >> 10) as usize % stores.len()];
                let call = start.elapsed().as_nanos() as u64;
                let output = run_op(store, &input).await;
                let ret = start.elapsed().as_nanos() as u64;
                // A write whose outcome is unknown may still take effect
                // later: it never "returned".
                let ret = output.as_ref().map(|_| ret);
                history.lock().unwrap().push(Operation { client, input, call, output, ret });
                n += 1;
            }
        }));
    }
    // Faults: isolate a random peer (often the leader), delay links, heal.
    let mut seed = 99u64;
    for round in 0..6 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let victim =
            if round % 2 == 0 { cluster.wait_for_leader(None).await } else { 1 + (seed >> 33) % 3 };
        for other in 1..=3 {
            if other != victim {
                cluster.cut(victim, other);
            }
        }
        cluster
            .store(1 + (seed >> 20) % 3)
            .faults()
            .delay(1 + (seed >> 10) % 3, Duration::from_millis(30));
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.heal();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let history = history.lock().unwrap().clone();
    let completed = history.iter().filter(|op| op.output.is_some()).count();
    assert!(completed > 50, "too few operations completed: {completed}");
    match check(&KvModel, &history, Duration::from_secs(60)) {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable { ops, explanation } => {
            panic!("not linearizable: {explanation}\n{ops:#?}")
        }
        Verdict::Unknown { reason } => panic!("checker gave up: {reason}"),
    }
    cluster.converged().await;
    cluster.shutdown().await;
}

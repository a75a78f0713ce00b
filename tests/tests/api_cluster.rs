//! Three API-server peers (the real `serve`, in one process) on loopback,
//! driven through berth-client: every peer serves every request, concurrent
//! writers get one winner per resourceVersion, every peer's watch sees the
//! same events in the same order, a failover client loses no acknowledged
//! write when the leader stops, informers follow the cluster, and a stale
//! leader's fenced writes are refused.

use berth_client::{
    Api, Change, Client, DeleteParams, ElectionTiming, Index, Informer, InformerParams,
    LeaderElector, ListParams, WatchEvent, WatchParams,
};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Node, Pod};
use berth_proto::meta_v1::{ObjectMeta, OwnerReference};
use berth_tests::cluster::ApiCluster;
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn pod(name: &str) -> Pod {
    berth_tests::fixtures::pod("default", name, &[])
}

fn pods(client: &Client) -> Api<Pod> {
    Api::namespaced(client, "default")
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_serves_and_one_writer_wins_each_version() {
    let cluster = ApiCluster::start(3, "api-crud").await.unwrap();
    let on = |i: usize| pods(&cluster.client_of(&[i]).unwrap());
    // CRUD through different peers.
    let created = on(0).create(&pod("a")).await.unwrap();
    let got = on(1).get("a").await.unwrap();
    assert_eq!(got, created);
    let mut changed = got.clone();
    changed.metadata.as_mut().unwrap().labels.insert("v".into(), "1".into());
    on(2).update(&changed).await.unwrap();

    // 50 concurrent updates from the same version: exactly one succeeds.
    let current = on(0).get("a").await.unwrap();
    let mut writers = Vec::new();
    for i in 0..50 {
        let api = on(i % 3);
        let mut attempt = current.clone();
        attempt.metadata.as_mut().unwrap().labels.insert("writer".into(), i.to_string());
        writers.push(tokio::spawn(async move { api.update(&attempt).await.map(|_| ()) }));
    }
    let mut wins = 0;
    for w in writers {
        match w.await.unwrap() {
            Ok(()) => wins += 1,
            Err(e) => assert!(e.is_conflict(), "a loser gets a Conflict, not {e}"),
        }
    }
    assert_eq!(wins, 1);

    on(1).delete("a", &DeleteParams::default()).await.unwrap();
    assert!(on(2).get("a").await.unwrap_err().is_not_found());

    // A name generated from a prefix.
    let mut generated = pod("");
    generated.metadata.as_mut().unwrap().generate_name = "gen-".into();
    let created = on(0).create(&generated).await.unwrap();
    let name = created.metadata.unwrap().name;
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let mut bad = pod("");
    bad.metadata.as_mut().unwrap().generate_name = "Bad_".into();
    let err = on(0).create(&bad).await.unwrap_err();
    assert!(err.to_string().contains("metadata.generateName"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_on_every_peer_see_the_same_events_in_order() {
    let cluster = ApiCluster::start(3, "api-watch").await.unwrap();
    let on = |i: usize| pods(&cluster.client_of(&[i]).unwrap());
    // Watch from a known version, so no write can slip in before a watch
    // registers.
    let from = on(0).list(&ListParams::default()).await.unwrap().resource_version;
    let mut streams = Vec::new();
    for i in 0..3 {
        streams.push(on(i).watch(&WatchParams::default(), &from).await.unwrap());
    }
    for i in 0..10 {
        on(i % 3).create(&pod(&format!("p{i}"))).await.unwrap();
    }
    for i in 0..10 {
        on(i % 3).delete(&format!("p{i}"), &DeleteParams::default()).await.unwrap();
    }
    let mut seen: Vec<Vec<(String, String, String)>> = Vec::new();
    for stream in &mut streams {
        let mut events = Vec::new();
        while events.len() < 20 {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("the watch delivers within 10 s")
                .expect("the watch stays open")
                .unwrap();
            let (kind, object) = match event {
                WatchEvent::Added(p) => ("ADDED", p),
                WatchEvent::Modified(p) => ("MODIFIED", p),
                WatchEvent::Deleted(p) => ("DELETED", p),
                WatchEvent::Bookmark(_) => continue,
            };
            let meta = object.metadata.unwrap();
            events.push((kind.to_string(), meta.name, meta.resource_version));
        }
        seen.push(events);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    let versions: Vec<i64> = seen[0].iter().map(|(_, _, rv)| rv.parse().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_client_loses_no_acknowledged_write_when_the_leader_stops() {
    let mut cluster = ApiCluster::start(3, "api-failover").await.unwrap();
    let leader = cluster.leader().await.unwrap();
    let client = cluster.client().unwrap();
    let api = pods(&client);
    // Writers stream creates through the failover client; the leader stops
    // partway through.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (api, acked) = (api.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..40 {
                let name = format!("w{w}-{i}");
                match api.create(&pod(&name)).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    // The first attempt's answer was lost but it committed:
                    // the retry finds it.
                    Err(e) if e.is_already_exists() => acked.lock().unwrap().push(name),
                    Err(e) => panic!("write {name} failed after failover: {e}"),
                }
            }
        }));
    }
    eventually("some writes are acknowledged", || acked.lock().unwrap().len() >= 30).await;
    cluster.stop(leader).await;
    for w in writers {
        w.await.unwrap();
    }
    let survivor = (leader + 1) % 3;
    let listed =
        pods(&cluster.client_of(&[survivor]).unwrap()).list(&ListParams::default()).await.unwrap();
    let names: HashSet<String> =
        listed.items.into_iter().map(|p| p.metadata.unwrap().name).collect();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 160);
    for name in &acked {
        assert!(names.contains(name), "acknowledged {name} lost");
    }
    // With two of three peers gone, the last one refuses instead of
    // answering from stale state.
    let other = (0..3).find(|&i| i != survivor && cluster.is_running(i)).unwrap();
    cluster.stop(other).await;
    let mut config = berth_client::Config::new([cluster.address(survivor)]);
    config.retry_for = Duration::from_millis(200);
    let alone = pods(&Client::with_config(config).unwrap());
    let err = alone.create(&pod("alone")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    let err = alone.get(&acked[0]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "a linearizable read refuses too: {err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_informer_follows_the_cluster_and_indexes_what_it_holds() {
    let cluster = ApiCluster::start(3, "api-informer").await.unwrap();
    let client = cluster.client().unwrap();
    let api = pods(&client);
    // Objects that exist before the informer starts come from its list.
    let mut owned = pod("owned");
    owned.metadata.as_mut().unwrap().owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "rs".into(),
        uid: "rs-uid".into(),
        controller: Some(true),
        ..Default::default()
    });
    api.create(&owned).await.unwrap();
    api.create(&pod("bound")).await.unwrap();
    api.bind("bound", "node-a").await.unwrap();

    let mut informer = Informer::new(Api::<Pod>::all(&client), InformerParams::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    informer.on_change(move |change| {
        let what = match change {
            Change::Added(_) => "added",
            Change::Updated { .. } => "updated",
            Change::Deleted(_) => "deleted",
            Change::Resync(_) => "resync",
        };
        log.lock().unwrap().push((what, change.object().metadata.as_ref().unwrap().name.clone()));
    });
    let cache = informer.cache();
    let stop = CancellationToken::new();
    let task = tokio::spawn(informer.run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(20), cache.wait_synced()).await.unwrap();
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.by_index(Index::Owner, "rs-uid").len(), 1);
    assert_eq!(cache.by_index(Index::Node, "node-a")[0].metadata.as_ref().unwrap().name, "bound");

    // Later changes arrive through the watch, in order.
    api.create(&pod("later")).await.unwrap();
    api.bind("later", "node-a").await.unwrap();
    api.delete("owned", &DeleteParams::default()).await.unwrap();
    eventually("the informer sees the deletion", || cache.get("default/owned").is_none()).await;
    assert_eq!(cache.by_index(Index::Node, "node-a").len(), 2);
    assert!(cache.by_index(Index::Owner, "rs-uid").is_empty());
    assert_eq!(cache.by_index(Index::Namespace, "default").len(), 2);
    let seen = seen.lock().unwrap().clone();
    let tail: Vec<_> = seen.iter().skip(2).cloned().collect();
    assert_eq!(
        tail,
        vec![
            ("added", "later".to_string()),
            ("updated", "later".to_string()),
            ("deleted", "owned".to_string())
        ]
    );

    // A node's view: only the pods bound to it, through a field selector on
    // both the list and the watch.
    let node_view = Informer::new(
        Api::<Pod>::all(&client),
        InformerParams { field_selector: "spec.nodeName=node-b".into(), ..Default::default() },
    );
    let node_cache = node_view.cache();
    let node_task = tokio::spawn(node_view.run(stop.clone()));
    node_cache.wait_synced().await;
    assert!(node_cache.is_empty());
    api.create(&pod("for-b")).await.unwrap();
    api.create(&pod("not-for-b")).await.unwrap();
    api.bind("for-b", "node-b").await.unwrap();
    eventually("the node sees its pod", || node_cache.get("default/for-b").is_some()).await;
    eventually("the full view sees the other pod", || cache.get("default/not-for-b").is_some())
        .await;
    assert_eq!(node_cache.len(), 1);

    stop.cancel();
    task.await.unwrap();
    node_task.await.unwrap();
    cluster.shutdown().await;
}

fn fast_election() -> ElectionTiming {
    ElectionTiming {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leaders_fenced_write_is_refused_after_another_takes_the_lease() {
    let cluster = ApiCluster::start(3, "api-fence").await.unwrap();
    let client = cluster.client().unwrap();
    let first = LeaderElector::new(&client, "kube-system", "scheduler", "one", fast_election());
    let mut leading = first.subscribe();
    let stop_first = CancellationToken::new();
    let campaign = {
        let stop = stop_first.clone();
        tokio::spawn(async move { first.run(stop).await })
    };
    leading.wait_for(Option::is_some).await.unwrap();
    let token = leading.borrow().clone().unwrap();
    let fenced = pods(&client.fenced(&token));
    fenced.create(&pod("by-first")).await.unwrap();

    // The first leader is paused (it stops renewing without giving the
    // lease up); a second candidate takes over once the lease lapses.
    campaign.abort();
    let _ = campaign.await;
    let second = LeaderElector::new(&client, "kube-system", "scheduler", "two", fast_election());
    let mut second_leading = second.subscribe();
    let stop_second = CancellationToken::new();
    let campaign = {
        let stop = stop_second.clone();
        tokio::spawn(async move { second.run(stop).await })
    };
    tokio::time::timeout(Duration::from_secs(20), second_leading.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap();
    let second_token = second_leading.borrow().clone().unwrap();
    assert!(second_token.revision > token.revision);
    let lease = Api::<Lease>::namespaced(&client, "kube-system").get("scheduler").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("two"));
    assert_eq!(spec.lease_transitions, Some(1));

    // The stale leader's write is refused; the new leader's goes through.
    let err = fenced.create(&pod("by-stale-first")).await.unwrap_err();
    assert!(err.code() == tonic::Code::PermissionDenied || err.is_conflict(), "{err}");
    assert!(pods(&client).get_opt("by-stale-first").await.unwrap().is_none());
    pods(&client.fenced(&second_token)).create(&pod("by-second")).await.unwrap();

    // Stopping releases the lease at once, which revokes the token too.
    stop_second.cancel();
    campaign.await.unwrap();
    assert!(second_leading.borrow().is_none());
    let err = pods(&client.fenced(&second_token)).create(&pod("after-release")).await;
    assert!(err.is_err(), "a released lease's token still writes");
    let _ = stop_first;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_objects_round_trip_through_a_failover_client() {
    let cluster = ApiCluster::start(3, "api-nodes").await.unwrap();
    let nodes = Api::<Node>::all(&cluster.client().unwrap());
    let node = Node {
        metadata: Some(ObjectMeta { name: "n1".into(), ..Default::default() }),
        ..Default::default()
    };
    nodes.create(&node).await.unwrap();
    let patched = nodes
        .patch("n1", &serde_json::json!({"metadata": {"labels": {"zone": "a"}}}))
        .await
        .unwrap();
    assert_eq!(patched.metadata.unwrap().labels.get("zone").map(String::as_str), Some("a"));
    let listed = nodes
        .list(&ListParams { label_selector: "zone=a".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_informer_relists_when_its_watch_window_was_compacted_away() {
    use berth_proto::etcd::etcdserverpb::kv_client::KvClient;
    use berth_proto::etcd::etcdserverpb::CompactionRequest;
    let cluster = ApiCluster::start(3, "api-relist").await.unwrap();
    let direct = cluster.client().unwrap();
    let api = pods(&direct);
    api.create(&pod("a")).await.unwrap();
    api.create(&pod("b")).await.unwrap();

    // The informer reaches peer 0 only through a proxy the test can cut.
    let proxy =
        berth_tests::proxy::Proxy::start(cluster.address(0).parse().unwrap()).await.unwrap();
    let behind_proxy = Client::new([proxy.address().to_string()]).unwrap();
    let mut informer = Informer::new(Api::<Pod>::all(&behind_proxy), InformerParams::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    informer.on_change(move |change| {
        let name = change.object().metadata.as_ref().unwrap().name.clone();
        match change {
            Change::Added(_) => log.lock().unwrap().push(format!("added {name}")),
            Change::Deleted(_) => log.lock().unwrap().push(format!("deleted {name}")),
            _ => {}
        }
    });
    let cache = informer.cache();
    let stop = CancellationToken::new();
    let task = tokio::spawn(informer.run(stop.clone()));
    cache.wait_synced().await;
    assert_eq!(cache.len(), 2);

    // While the informer is cut off, "a" goes, "c" comes, and the history
    // it would need to catch up is compacted away (on peer 0 too).
    proxy.cut();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    api.create(&pod("c")).await.unwrap();
    let now: i64 =
        api.list(&ListParams::default()).await.unwrap().resource_version.parse().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cluster.address(0)))
        .unwrap()
        .connect_lazy();
    KvClient::new(channel)
        .compact(CompactionRequest { revision: now, physical: true })
        .await
        .unwrap();
    proxy.heal();

    // Its watch from the old revision is Expired: it relists, and the
    // handlers learn of the deletion they missed.
    eventually("the informer relists", || {
        cache.get("default/c").is_some() && cache.get("default/a").is_none()
    })
    .await;
    assert_eq!(cache.len(), 2);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&"deleted a".to_string()), "{seen:?}");
    assert!(seen.contains(&"added c".to_string()), "{seen:?}");
    stop.cancel();
    task.await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_before_its_lease_lapses() {
    let cluster = ApiCluster::start(3, "api-stepdown").await.unwrap();
    // The candidate reaches the cluster only through a proxy the test cuts.
    let proxy =
        berth_tests::proxy::Proxy::start(cluster.address(1).parse().unwrap()).await.unwrap();
    let cut_off = Client::new([proxy.address().to_string()]).unwrap();
    // Calls that hang rather than fail: the renew deadline must still hold.
    let timing = ElectionTiming {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(100),
    };
    let elector = LeaderElector::new(&cut_off, "kube-system", "controllers", "one", timing.clone());
    let mut leading = elector.subscribe();
    let stop = CancellationToken::new();
    let campaign = {
        let stop = stop.clone();
        tokio::spawn(async move { elector.run(stop).await })
    };
    leading.wait_for(Option::is_some).await.unwrap();
    proxy.cut();
    let cut_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(Option::is_none))
        .await
        .expect("the leader steps down")
        .unwrap();
    // It stopped leading before anyone else could take the lease over.
    assert!(cut_at.elapsed() < timing.lease_duration, "{:?}", cut_at.elapsed());
    stop.cancel();
    campaign.await.unwrap();
    cluster.shutdown().await;
}

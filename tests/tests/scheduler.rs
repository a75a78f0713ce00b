//! The scheduler against three in-process API peers: pods land where the
//! rules say, an unschedulable pod is told why and placed once a node that
//! fits appears, replicas of a ReplicaSet spread, only the leading replica
//! binds and a stale leader's bind is refused, and a killed leader's
//! successor takes over.

use berth_client::{Api, Client, ElectionTiming, LeaderElector, ListParams};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Event, Node, Pod, Taint, Toleration};
use berth_proto::meta_v1::OwnerReference;
use berth_scheduler::{QueueTiming, SchedulerConfig};
use berth_tests::cluster::ApiCluster;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn node(name: &str, allocatable: &[(&str, &str)]) -> Node {
    berth_tests::fixtures::node(name, allocatable)
}

fn pod(name: &str, requests: &[(&str, &str)]) -> Pod {
    berth_tests::fixtures::pod("default", name, requests)
}

fn fast_config(identity: &str) -> SchedulerConfig {
    let mut config = SchedulerConfig::new(identity);
    config.election = ElectionTiming {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
    };
    config.queue = QueueTiming {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        unschedulable_timeout: Duration::from_secs(60),
    };
    config
}

/// A scheduler replica running until dropped or stopped.
struct Replica {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    fn start(client: &Client, identity: &str) -> Replica {
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(berth_scheduler::run(client.clone(), fast_config(identity), stop.clone()));
        Replica { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Killed: gone without giving up its lease.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Waits until `check` gives Some.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    let pod = pods.get(name).await.ok()?;
    let node = pod.spec?.node_name;
    (!node.is_empty()).then_some(node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_where_the_rules_say() {
    let cluster = ApiCluster::start(3, "sched-rules").await.unwrap();
    let client = cluster.client().unwrap();
    let nodes = Api::<Node>::all(&client);
    let mut gpu = node("gpu", &[("cpu", "8"), ("memory", "32Gi"), ("nvidia.com/gpu", "8")]);
    gpu.spec.as_mut().unwrap().taints.push(Taint {
        key: "dedicated".into(),
        value: "gpu".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    });
    let mut big = node("big", &[("cpu", "8"), ("memory", "32Gi")]);
    big.metadata.as_mut().unwrap().labels.insert("zone".into(), "a".into());
    let small = node("small", &[("cpu", "1"), ("memory", "2Gi")]);
    let mut cordoned = node("cordoned", &[("cpu", "64"), ("memory", "256Gi")]);
    cordoned.spec.as_mut().unwrap().unschedulable = true;
    for n in [gpu, big, small, cordoned] {
        nodes.create(&n).await.unwrap();
    }
    let replica = Replica::start(&client, "only");
    let pods = Api::<Pod>::namespaced(&client, "default");

    let mut zoned = pod("zoned", &[("cpu", "100m")]);
    zoned.spec.as_mut().unwrap().node_selector.insert("zone".into(), "a".into());
    let mut trainer = pod("trainer", &[("cpu", "1"), ("nvidia.com/gpu", "2")]);
    trainer.spec.as_mut().unwrap().tolerations.push(Toleration {
        key: "dedicated".into(),
        operator: "Equal".into(),
        value: "gpu".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    });
    let hungry = pod("hungry", &[("cpu", "4"), ("memory", "8Gi")]);
    let mut other_scheduler = pod("not-mine", &[]);
    other_scheduler.spec.as_mut().unwrap().scheduler_name = "someone-else".into();
    for p in [&zoned, &trainer, &hungry, &other_scheduler] {
        pods.create(p).await.unwrap();
    }
    assert_eq!(eventually("zoned is bound", || node_of(&pods, "zoned")).await, "big");
    assert_eq!(eventually("trainer is bound", || node_of(&pods, "trainer")).await, "gpu");
    assert_eq!(eventually("hungry is bound", || node_of(&pods, "hungry")).await, "big");
    let bound = pods.get("trainer").await.unwrap();
    let condition =
        bound.status.unwrap().conditions.into_iter().find(|c| c.r#type == "PodScheduled");
    assert_eq!(condition.map(|c| c.status).as_deref(), Some("True"));
    // Another scheduler's pod is left alone.
    assert_eq!(node_of(&pods, "not-mine").await, None);
    replica.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_is_told_why_and_placed_when_a_node_fits() {
    let cluster = ApiCluster::start(3, "sched-unschedulable").await.unwrap();
    let client = cluster.client().unwrap();
    let nodes = Api::<Node>::all(&client);
    for i in 0..3 {
        nodes
            .create(&node(&format!("small-{i}"), &[("cpu", "1"), ("memory", "4Gi")]))
            .await
            .unwrap();
    }
    let mut tainted = node("tainted", &[("cpu", "16"), ("memory", "64Gi")]);
    tainted.spec.as_mut().unwrap().taints.push(Taint {
        key: "dedicated".into(),
        value: "gpu".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    });
    nodes.create(&tainted).await.unwrap();
    let replica = Replica::start(&client, "only");
    let pods = Api::<Pod>::namespaced(&client, "default");
    pods.create(&pod("big", &[("cpu", "4")])).await.unwrap();

    let expected =
        "0/4 nodes are available: 3 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}.";
    let condition = eventually("the pod is marked unschedulable", || async {
        let pod = pods.get("big").await.ok()?;
        pod.status?.conditions.into_iter().find(|c| c.r#type == "PodScheduled")
    })
    .await;
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason, "Unschedulable");
    assert_eq!(condition.message, expected);
    // Events are written apart from the pod's status, so may come later.
    let events = Api::<Event>::namespaced(&client, "default");
    let failed = eventually("a FailedScheduling event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason == "FailedScheduling")
    })
    .await;
    assert_eq!(failed.message, expected);
    assert_eq!(failed.r#type, "Warning");
    assert_eq!(failed.involved_object.as_ref().unwrap().name, "big");

    // A node that fits appears: the pod is placed there.
    nodes.create(&node("roomy", &[("cpu", "8"), ("memory", "16Gi")])).await.unwrap();
    assert_eq!(eventually("big is bound", || node_of(&pods, "big")).await, "roomy");
    replica.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sets_pods_spread_over_the_nodes() {
    let cluster = ApiCluster::start(3, "sched-spread").await.unwrap();
    let client = cluster.client().unwrap();
    let nodes = Api::<Node>::all(&client);
    for i in 0..3 {
        nodes.create(&node(&format!("n{i}"), &[("cpu", "16"), ("memory", "64Gi")])).await.unwrap();
    }
    let replica = Replica::start(&client, "only");
    let pods = Api::<Pod>::namespaced(&client, "default");
    for i in 0..6 {
        let mut p = pod(&format!("web-{i}"), &[("cpu", "100m")]);
        p.metadata.as_mut().unwrap().owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web".into(),
            uid: "web-uid".into(),
            controller: Some(true),
            ..Default::default()
        });
        pods.create(&p).await.unwrap();
    }
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..6 {
        let name = format!("web-{i}");
        let node = eventually("the replica is bound", || node_of(&pods, &name)).await;
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_node:?}");
    replica.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_binds_a_stale_leader_cannot_and_a_killed_one_is_replaced() {
    let cluster = ApiCluster::start(3, "sched-ha").await.unwrap();
    let client = cluster.client().unwrap();
    Api::<Node>::all(&client)
        .create(&node("n", &[("cpu", "64"), ("memory", "64Gi")]))
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(&client, "default");
    pods.create(&pod("early", &[])).await.unwrap();

    // A replica that took the lease and then stalled: its token is stale
    // once another takes over.
    let stale = LeaderElector::new(
        &client,
        "kube-system",
        berth_scheduler::LEASE_NAME,
        "stalled",
        fast_config("stalled").election,
    );
    let mut stale_leading = stale.subscribe();
    let stall = CancellationToken::new();
    let campaign = tokio::spawn({
        let stall = stall.clone();
        async move { stale.run(stall).await }
    });
    stale_leading.wait_for(Option::is_some).await.unwrap();
    let stale_token = stale_leading.borrow().clone().unwrap();
    campaign.abort();
    let _ = campaign.await;

    let a = Replica::start(&client, "a");
    let b = Replica::start(&client, "b");
    assert!(eventually("early is bound", || node_of(&pods, "early")).await == "n");
    let leases = Api::<Lease>::namespaced(&client, "kube-system");
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let first = holder(leases.get(berth_scheduler::LEASE_NAME).await.unwrap());
    assert!(first == "a" || first == "b", "{first}");

    // The stalled replica wakes up and binds with its old token: refused.
    pods.create(&pod("contested", &[])).await.unwrap();
    let refused = Api::<Pod>::namespaced(&client.fenced(&stale_token), "default")
        .bind("contested", "n")
        .await;
    assert!(refused.is_err(), "a stale leader's bind went through");
    assert_eq!(eventually("contested is bound", || node_of(&pods, "contested")).await, "n");

    // Kill the active replica; the other takes over and binds new pods.
    let (active, standby) = if first == "a" { (a, b) } else { (b, a) };
    active.kill().await;
    let killed_at = Instant::now();
    pods.create(&pod("after", &[])).await.unwrap();
    eventually("after is bound", || node_of(&pods, "after")).await;
    let takeover = killed_at.elapsed();
    let second = holder(leases.get(berth_scheduler::LEASE_NAME).await.unwrap());
    assert_ne!(second, first);
    println!("takeover after the leader was killed: {takeover:?}");
    standby.stop().await;
    cluster.shutdown().await;
}

//! The node agent against three in-process API peers and the real node
//! lifecycle controller: the agent registers its Node with this machine's
//! capacity and a Ready condition, renews its Lease in kube-node-lease, and
//! while it does the node stays untainted; once it stops, the node is
//! tainted unreachable; when an agent comes back, the taint goes.

use berth_client::{Api, ElectionTiming};
use berth_controllers::{Config, ControllerManager, UNREACHABLE_TAINT};
use berth_kubelet::agent::{self, AgentConfig};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::Node;
use berth_tests::cluster::ApiCluster;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tainted(node: &Node) -> bool {
    node.spec.as_ref().is_some_and(|s| s.taints.iter().any(|t| t.key == UNREACHABLE_TAINT))
}

/// An agent task for `node`, stopped by its token.
fn start_agent(
    client: &berth_client::Client,
    dir: &std::path::Path,
    node: &str,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let mut config = AgentConfig::new(node, dir.join(node));
    config.lease_renew = Duration::from_millis(200);
    config.lease_duration = Duration::from_secs(2);
    config.status_report = Duration::from_secs(1);
    let stop = CancellationToken::new();
    let (client, token) = (client.clone(), stop.clone());
    let task = tokio::spawn(async move { agent::run(&client, &config, token).await.unwrap() });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_its_node_ready_and_its_silence_taints_the_node() {
    let cluster = ApiCluster::start(3, "agent").await.unwrap();
    let client = cluster.client().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new("cm");
    config.election = ElectionTiming {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
    };
    config.controllers = vec!["nodelifecycle".into()];
    config.node_lifecycle.grace_period = Duration::from_secs(1);
    let manager = ControllerManager::new(&client, config);
    let stop_manager = CancellationToken::new();
    let manager_task = {
        let stop = stop_manager.clone();
        tokio::spawn(async move { manager.run(stop).await })
    };

    let (stop_agent, agent_task) = start_agent(&client, dir.path(), "worker-1");
    let nodes = Api::<Node>::all(&client);
    let node =
        until("the node registers", || async { nodes.get_opt("worker-1").await.ok().flatten() })
            .await;
    let status = node.status.clone().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as i128;
    assert_eq!(status.capacity["cpu"].value(), cpus);
    assert_eq!(status.allocatable["pods"].value(), 110);
    assert!(
        status.capacity["memory"].value() > 0 && status.capacity["ephemeral-storage"].value() > 0
    );
    let ready = status.conditions.iter().find(|c| c.r#type == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(node.metadata.as_ref().unwrap().labels["kubernetes.io/hostname"], "worker-1");
    assert!(status.node_info.unwrap().kernel_version.len() > 1);

    // The Lease is renewed.
    let leases = Api::<Lease>::namespaced(&client, "kube-node-lease");
    let renewed = |lease: &Lease| {
        lease.spec.as_ref().and_then(|s| s.renew_time).map(|t| (t.unix_seconds(), t.subsec_nanos()))
    };
    let first =
        until("the lease exists", || async { leases.get_opt("worker-1").await.ok().flatten() })
            .await;
    assert_eq!(first.spec.as_ref().unwrap().holder_identity.as_deref(), Some("worker-1"));
    until("the lease is renewed", || async {
        let now = leases.get("worker-1").await.ok()?;
        (renewed(&now) > renewed(&first)).then_some(())
    })
    .await;
    // Alive for longer than the grace period: no taint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!tainted(&nodes.get("worker-1").await.unwrap()), "a live node was tainted");

    // Silence: the node is tainted unreachable.
    stop_agent.cancel();
    agent_task.await.unwrap();
    until("the silent node is tainted", || async {
        nodes.get("worker-1").await.ok().filter(tainted).map(|_| ())
    })
    .await;

    // A restarted agent takes its node back and the taint goes.
    let (stop_agent, agent_task) = start_agent(&client, dir.path(), "worker-1");
    until("the taint is removed", || async {
        nodes.get("worker-1").await.ok().filter(|n| !tainted(n)).map(|_| ())
    })
    .await;
    stop_agent.cancel();
    agent_task.await.unwrap();
    stop_manager.cancel();
    manager_task.await.unwrap();
    cluster.shutdown().await;
}

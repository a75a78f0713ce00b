//! `berth scheduler` processes against a `berth server`: one of two
//! replicas binds pods, serves /healthz and /metrics, and when it is killed
//! (SIGKILL, no chance to give up its lease) the other takes over.

mod common;

use berth_client::{Api, Client};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Container, Node, NodeStatus, Pod, PodSpec};
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::Quantity;
use common::{free_addr, http_get};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Child processes killed when the test ends, however it ends.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    fn kill(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.0.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn berth(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth starts")
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn bound_to(pods: &Api<Pod>, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(p) = pods.get(name).await {
            let node = p.spec.map(|s| s.node_name).unwrap_or_default();
            if !node.is_empty() {
                return node;
            }
        }
        assert!(Instant::now() < deadline, "{name} was never bound");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_replicas_one_binds_and_the_other_takes_over_when_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_addr(), free_addr());
    let data = dir.path().join("peer-1");
    let mut processes = Processes(vec![(
        "server".into(),
        berth(&[
            "server",
            "--insecure",
            "--id",
            "1",
            "--cluster",
            "sched-cli",
            "--peers",
            &format!("1={grpc}"),
            "--listen",
            &grpc,
            "--http",
            &http,
            "--data-dir",
            data.to_str().unwrap(),
            "--heartbeat-ms",
            "50",
            "--election-timeout-ms",
            "200-400",
        ]),
    )]);
    let client = Client::new([grpc.clone()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Api::<berth_proto::core_v1::Namespace>::all(&client).get("default").await.is_err() {
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics: Vec<String> = (0..2).map(|_| free_addr()).collect();
    for (i, id) in ["a", "b"].iter().enumerate() {
        processes.0.push((
            id.to_string(),
            berth(&["scheduler", "--server", &grpc, "--id", id, "--http", &metrics[i]]),
        ));
    }
    let node = Node {
        metadata: Some(ObjectMeta { name: "n1".into(), ..Default::default() }),
        status: Some(NodeStatus {
            allocatable: [
                ("cpu".to_string(), Quantity::parse("4").unwrap()),
                ("memory".to_string(), Quantity::parse("8Gi").unwrap()),
                ("pods".to_string(), Quantity::parse("110").unwrap()),
            ]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Node>::all(&client).create(&node).await.unwrap();
    let pods = Api::<Pod>::namespaced(&client, "default");
    pods.create(&pod("first")).await.unwrap();
    assert_eq!(bound_to(&pods, "first").await, "n1");

    let leases = Api::<Lease>::namespaced(&client, "kube-system");
    let lease = leases.get(berth_scheduler_lease()).await.unwrap();
    let leader = lease.spec.unwrap().holder_identity.unwrap();
    let leader_metrics = &metrics[if leader == "a" { 0 } else { 1 }];
    assert_eq!(
        http_get(leader_metrics, "/healthz").filter(|r| r.0 == 200).map(|r| r.1).as_deref(),
        Some("ok\n")
    );
    let text = http_get(leader_metrics, "/metrics")
        .filter(|r| r.0 == 200)
        .map(|r| r.1)
        .expect("metrics are served");
    assert!(
        text.contains("berth_scheduler_schedule_attempts_total{result=\"scheduled\"}"),
        "{text}"
    );

    processes.kill(&leader);
    let killed = Instant::now();
    pods.create(&pod("second")).await.unwrap();
    assert_eq!(bound_to(&pods, "second").await, "n1");
    let lease = leases.get(berth_scheduler_lease()).await.unwrap();
    assert_ne!(lease.spec.unwrap().holder_identity.unwrap(), leader);
    println!("the standby bound a new pod {:?} after the leader was killed", killed.elapsed());
}

fn berth_scheduler_lease() -> &'static str {
    "berth-scheduler"
}

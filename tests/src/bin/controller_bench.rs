//! controller-bench: a Deployment of 1,000 replicas on 200 hollow nodes —
//! Node objects with Leases, and a hollow kubelet that marks each bound pod
//! Running and Ready at once and confirms deletions — with the real
//! scheduler and controller-manager in this process and three API server
//! peers as processes (fsync on). Prints the time from the Deployment's
//! creation to 1,000 available replicas, and of a full rolling update (a
//! new image, 25% surge, 25% unavailable) to 1,000 updated and available
//! with the old pods gone.
//!
//!     cargo run --release -p berth-tests --bin controller-bench -- [--replicas N] [--nodes N]

use anyhow::{bail, Context, Result};
use berth_client::{
    Api, Change, Client, DeleteParams, Informer, InformerParams, RateLimit, WorkQueue,
};
use berth_proto::apps_v1::{Deployment, DeploymentSpec};
use berth_proto::coordination_v1::{Lease, LeaseSpec};
use berth_proto::core_v1::{Pod, PodCondition, PodTemplateSpec};
use berth_proto::meta_v1::{LabelSelector, ObjectMeta};
use berth_proto::{MicroTime, Time};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("peer") {
        return berth_tests::processes::run_peer(&args[2..]);
    }
    let flag = |name: &str, default: usize| -> Result<usize> {
        match args.iter().position(|a| a == name) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} takes a number")),
        }
    };
    let (replicas, nodes) = (flag("--replicas", 1000)?, flag("--nodes", 200)?.max(1));
    let root = tempfile::tempdir()?;
    let peers = berth_tests::processes::Peers::start(root.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(&peers.endpoints, replicas, nodes))
}

async fn run(endpoints: &[String], replicas: usize, nodes: usize) -> Result<()> {
    let client = Client::new(endpoints.to_vec())?;
    berth_tests::processes::wait_ready(&client).await?;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    hollow_nodes(&client, nodes, &stop, &mut tasks).await?;
    tasks.spawn(berth_scheduler::run(
        client.clone(),
        berth_scheduler::SchedulerConfig::new("bench"),
        stop.clone(),
    ));
    let manager =
        berth_controllers::ControllerManager::new(&client, berth_controllers::Config::new("bench"));
    {
        let stop = stop.clone();
        tasks.spawn(async move { manager.run(stop).await });
    }

    let deployments = Api::<Deployment>::namespaced(&client, "default");
    let started = Instant::now();
    deployments.create(&deployment(replicas as i32, "registry.local/web:1")).await?;
    wait_rolled_out(&deployments, replicas, 1).await?;
    let created = started.elapsed();

    let started = Instant::now();
    let mut current = deployments.get("web").await?;
    let template = current.spec.as_mut().and_then(|s| s.template.as_mut()).context("a template")?;
    if let Some(c) = template.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.image = "registry.local/web:2".into();
    }
    deployments.update(&current).await?;
    wait_rolled_out(&deployments, replicas, 2).await?;
    let rolled = started.elapsed();

    println!("| test | seconds | pods/s |");
    println!("| --- | ---: | ---: |");
    let rate = |d: Duration| replicas as f64 / d.as_secs_f64();
    println!(
        "| create -> {replicas} available ({nodes} nodes) | {:.2} | {:.0} |",
        created.as_secs_f64(),
        rate(created)
    );
    println!(
        "| rolling update of {replicas} | {:.2} | {:.0} |",
        rolled.as_secs_f64(),
        rate(rolled)
    );
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn deployment(replicas: i32, image: &str) -> Deployment {
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_string(), "web".to_string())].into();
    let mut pod = berth_tests::fixtures::pod("default", "", &[("cpu", "10m"), ("memory", "16Mi")]);
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.image = image.into();
    }
    Deployment {
        metadata: Some(ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector { match_labels: labels.clone(), ..Default::default() }),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta { labels, ..Default::default() }),
                spec: pod.spec,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Until the Deployment's status shows every replica updated and available
/// at `generation`, and no other pods left.
async fn wait_rolled_out(
    deployments: &Api<Deployment>,
    replicas: usize,
    generation: i64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let d = deployments.get("web").await?;
        let observed = d.status.as_ref().map_or(0, |s| s.observed_generation);
        let s = d.status.unwrap_or_default();
        let n = replicas as i32;
        if observed >= generation
            && s.updated_replicas == n
            && s.available_replicas == n
            && s.replicas == n
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not rolled out after 10 minutes: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Node objects with renewed Leases, and a hollow kubelet for them: a pod
/// bound to one of them is Running and Ready at once; a deleted one is
/// confirmed gone.
async fn hollow_nodes(
    client: &Client,
    count: usize,
    stop: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<()> {
    let name = |i: usize| format!("hollow-{i}");
    let nodes = Api::<berth_proto::core_v1::Node>::all(client);
    let leases = Api::<Lease>::namespaced(client, "kube-node-lease");
    for i in 0..count {
        let mut node = berth_tests::fixtures::node(&name(i), &[("cpu", "32"), ("memory", "128Gi")]);
        if let Some(status) = node.status.as_mut() {
            status.conditions.push(berth_proto::core_v1::NodeCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time::now()),
                ..Default::default()
            });
        }
        nodes.create(&node).await?;
        let lease = Lease {
            metadata: Some(ObjectMeta {
                name: name(i),
                namespace: "kube-node-lease".into(),
                ..Default::default()
            }),
            spec: Some(LeaseSpec {
                holder_identity: Some(name(i)),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime::now()),
                ..Default::default()
            }),
            ..Default::default()
        };
        leases.create(&lease).await?;
    }
    {
        let (stop, leases) = (stop.clone(), leases.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                for i in 0..count {
                    if let Ok(mut lease) = leases.get(&name(i)).await {
                        lease.spec.get_or_insert_with(Default::default).renew_time =
                            Some(MicroTime::now());
                        let _ = leases.update(&lease).await;
                    }
                }
            }
        });
    }
    let mut pods = Informer::new(Api::<Pod>::all(client), InformerParams::default());
    let queue = WorkQueue::<String>::new("hollow-kubelet", RateLimit::default());
    let on_change = queue.clone();
    pods.on_change(move |change| {
        if !matches!(change, Change::Deleted(_)) {
            on_change.add(berth_client::key(change.object().as_ref()));
        }
    });
    let cache = pods.cache();
    tasks.spawn(pods.run(stop.clone()));
    for _ in 0..16 {
        let (client, queue, cache) = (client.clone(), queue.clone(), cache.clone());
        tasks.spawn(async move {
            while let Some(key) = queue.get().await {
                if let Some(pod) = cache.get(&key) {
                    if hollow_kubelet(&client, &pod).await.is_err() {
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    {
        let (stop, queue) = (stop.clone(), queue.clone());
        tasks.spawn(async move {
            stop.cancelled().await;
            queue.shut_down();
        });
    }
    Ok(())
}

async fn hollow_kubelet(client: &Client, pod: &Pod) -> Result<(), berth_client::Error> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let bound = pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
    if !bound {
        return Ok(());
    }
    let api = Api::<Pod>::namespaced(client, &meta.namespace);
    if meta.deletion_timestamp.is_some() {
        let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        return match api.delete(&meta.name, &params).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        };
    }
    let ready = pod
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "Ready" && c.status == "True"));
    if ready {
        return Ok(());
    }
    let mut updated = pod.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    status.phase = "Running".into();
    status.start_time = Some(Time::now());
    for kind in ["Ready", "ContainersReady"] {
        status.conditions.retain(|c| c.r#type != kind);
        status.conditions.push(PodCondition {
            r#type: kind.into(),
            status: "True".into(),
            last_transition_time: Some(Time::now()),
            ..Default::default()
        });
    }
    match api.update_status(&updated).await {
        Err(e) if !(e.is_conflict() || e.is_not_found()) => Err(e),
        _ => Ok(()),
    }
}

//! The controller-manager against three in-process API peers, with a fake
//! node agent standing in for the kubelets and the scheduler: it binds
//! unscheduled pods to hollow nodes round-robin, marks bound pods Running
//! and Ready, confirms their deletion, and renews each node's Lease.
//!
//! Covered: ReplicaSets scaling, replacing, adopting and releasing pods;
//! each cascading deletion policy; namespace deletion; fenced leadership
//! across two replicas; node lease loss -> taint -> eviction.

use berth_client::{
    Api, Change, Client, DeleteParams, ElectionTiming, FenceToken, Informer, InformerParams,
    ListParams, RateLimit, WorkQueue,
};
use berth_controllers::{
    Config, ControllerManager, LEASE_NAME, LEASE_NAMESPACE, UNREACHABLE_TAINT,
};
use berth_proto::apps_v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec,
    RollingUpdateDeployment,
};
use berth_proto::coordination_v1::{Lease, LeaseSpec};
use berth_proto::core_v1::{
    Container, Event, Namespace, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodSpec,
    PodTemplateSpec,
};
use berth_proto::meta_v1::{LabelSelector, ObjectMeta};
use berth_proto::IntOrString;
use berth_proto::{MicroTime, Resource, Time};
use berth_tests::cluster::ApiCluster;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

// ------------------------------------------------------------------ helpers

/// Polls `check` until it yields a value, or fails the test after `within`.
async fn until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

const WAIT: Duration = Duration::from_secs(30);

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta { name: name.into(), namespace: namespace.into(), ..Default::default() }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn template(app: &str, image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: labels(&[("app", app)]), ..Default::default() }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: image.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn replica_set(namespace: &str, name: &str, app: &str, replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: Some(meta(namespace, name)),
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: labels(&[("app", app)]),
                ..Default::default()
            }),
            template: Some(template(app, "busybox:1.36")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn bare_pod(namespace: &str, name: &str, app: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta { labels: labels(&[("app", app)]), ..meta(namespace, name) }),
        spec: template(app, "busybox:1.36").spec,
        ..Default::default()
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "Ready" && c.status == "True"))
}

fn is_active(pod: &Pod) -> bool {
    pod.metadata().deletion_timestamp.is_none()
}

fn owner_uids(pod: &Pod) -> Vec<String> {
    pod.metadata().owner_references.iter().map(|r| r.uid.clone()).collect()
}

async fn list_pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    let params = ListParams { label_selector: selector.into(), ..Default::default() };
    Api::<Pod>::namespaced(client, namespace)
        .list(&params)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Changes the object as `change` says, again on a fresh copy when someone
/// (a controller, a renewing leader) wrote it meanwhile; answers the object
/// as written.
async fn edit<T: berth_client::ApiResource>(
    api: &Api<T>,
    name: &str,
    change: impl Fn(&mut T),
) -> T {
    for _ in 0..10 {
        let mut object = api.get(name).await.unwrap();
        change(&mut object);
        match api.update(&object).await {
            Ok(written) => return written,
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("updating {name}: {e}"),
        }
    }
    panic!("{name} kept changing");
}

/// Timings that make failover quick in tests; the CLI's defaults.
fn fast_election() -> ElectionTiming {
    ElectionTiming {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
    }
}

// ---------------------------------------------------- controller-manager

/// One controller-manager replica running in this process.
struct Replica {
    stop: CancellationToken,
    task: JoinHandle<()>,
    leading: watch::Receiver<Option<FenceToken>>,
}

impl Replica {
    fn start(client: &Client, identity: &str, adjust: impl FnOnce(&mut Config)) -> Replica {
        let mut config = Config::new(identity);
        config.election = fast_election();
        config.workers = 2;
        config.resync = Duration::from_secs(5);
        adjust(&mut config);
        let manager = ControllerManager::new(client, config);
        let leading = manager.leading();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { manager.run(token).await });
        Replica { stop, task, leading }
    }

    fn token(&self) -> Option<FenceToken> {
        self.leading.borrow().clone()
    }

    async fn wait_leading(&mut self, within: Duration) -> FenceToken {
        tokio::time::timeout(within, self.leading.wait_for(Option::is_some))
            .await
            .expect("the replica became leader in time")
            .expect("the replica is running")
            .clone()
            .expect("waited for Some")
    }

    /// Stops it as an operator would: it gives the Lease up.
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Kills it as a crash would: no release, its Lease must lapse.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

// ------------------------------------------------------- fake node agent

/// Hollow nodes and the agent that plays their kubelets and the scheduler.
struct FakeNodes {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Nodes whose agent is "down": no lease renewal, no pod handling.
    down: Arc<Mutex<HashSet<String>>>,
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

impl FakeNodes {
    async fn start(client: &Client, count: usize) -> FakeNodes {
        FakeNodes::start_with(client, count, Timing::default()).await
    }

    /// Pods turn Ready `ready_after` they were bound (a container
    /// starting), and go `stop_after` their deletion was asked (a
    /// container shutting down).
    async fn start_with(client: &Client, count: usize, timing: Timing) -> FakeNodes {
        let nodes_api: Api<Node> = Api::all(client);
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        for i in 0..count {
            let node = Node {
                metadata: Some(meta("", &node_name(i))),
                status: Some(NodeStatus {
                    conditions: vec![NodeCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time::now()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            };
            nodes_api.create(&node).await.unwrap();
            let lease = Lease {
                metadata: Some(meta("kube-node-lease", &node_name(i))),
                spec: Some(LeaseSpec {
                    holder_identity: Some(node_name(i)),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(MicroTime::now()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            leases.create(&lease).await.unwrap();
        }
        let stop = CancellationToken::new();
        let down: Arc<Mutex<HashSet<String>>> = Default::default();
        let mut tasks = Vec::new();

        // Heartbeats: every live node renews its Lease.
        {
            let (stop, down, leases) = (stop.clone(), down.clone(), leases.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    for i in 0..count {
                        let name = node_name(i);
                        if down.lock().unwrap().contains(&name) {
                            continue;
                        }
                        if let Ok(mut lease) = leases.get(&name).await {
                            lease.spec.get_or_insert_with(Default::default).renew_time =
                                Some(MicroTime::now());
                            let _ = leases.update(&lease).await;
                        }
                    }
                }
            }));
        }

        // Pods: bind, run, confirm deletion.
        let mut pods = Informer::new(
            Api::<Pod>::all(client),
            InformerParams { resync: Some(Duration::from_secs(1)), ..Default::default() },
        );
        let nodes = Informer::new(Api::<Node>::all(client), InformerParams::default());
        let queue = WorkQueue::<String>::new("fake-agent", RateLimit::default());
        {
            let queue = queue.clone();
            pods.on_change(move |change| {
                if !matches!(change, Change::Deleted(_)) {
                    queue.add(berth_client::key(change.object().as_ref()));
                }
            });
        }
        let (pod_cache, node_cache) = (pods.cache(), nodes.cache());
        tasks.push(tokio::spawn(pods.run(stop.clone())));
        tasks.push(tokio::spawn(nodes.run(stop.clone())));
        let next = Arc::new(Mutex::new(0usize));
        let started: Arc<Mutex<BTreeMap<String, Instant>>> = Default::default();
        for _ in 0..4 {
            let (client, queue, down) = (client.clone(), queue.clone(), down.clone());
            let (pod_cache, node_cache) = (pod_cache.clone(), node_cache.clone());
            let (next, started) = (next.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                let agent = Agent { client, count, down, nodes: node_cache, next, started, timing };
                while let Some(key) = queue.get().await {
                    let Some(pod) = pod_cache.get(&key) else {
                        queue.done(&key);
                        continue;
                    };
                    match agent.handle(&pod).await {
                        Ok(Some(later)) => queue.add_after(key.clone(), later),
                        Ok(None) => {}
                        Err(_) => queue.add_rate_limited(key.clone()),
                    }
                    queue.done(&key);
                }
            }));
        }
        {
            let (stop, queue) = (stop.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                stop.cancelled().await;
                queue.shut_down();
            }));
        }
        FakeNodes { stop, tasks, down }
    }

    /// The node's agent stops: no heartbeats, its pods are left as they are.
    fn take_down(&self, node: &str) {
        self.down.lock().unwrap().insert(node.to_string());
    }

    fn bring_up(&self, node: &str) {
        self.down.lock().unwrap().remove(node);
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// How long the fake containers take to start and to stop.
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    ready_after: Duration,
    stop_after: Duration,
}

/// What each agent worker shares.
struct Agent {
    client: Client,
    count: usize,
    down: Arc<Mutex<HashSet<String>>>,
    nodes: berth_client::Cache<Node>,
    /// The next node of the round-robin.
    next: Arc<Mutex<usize>>,
    /// When each pod (by uid) was first seen bound, and first seen going.
    started: Arc<Mutex<BTreeMap<String, Instant>>>,
    timing: Timing,
}

impl Agent {
    /// Moves the pod one step on; Some(d): look again after d.
    async fn handle(&self, pod: &Pod) -> Result<Option<Duration>, berth_client::Error> {
        let meta = pod.metadata();
        let api: Api<Pod> = Api::namespaced(&self.client, &meta.namespace);
        let node = pod.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default();
        if node.is_empty() {
            if meta.deletion_timestamp.is_some() {
                return Ok(None);
            }
            let Some(target) = self.pick_node() else { return Ok(None) };
            return match api.bind(&meta.name, &target).await {
                Err(e) if !(e.is_conflict() || e.is_not_found()) => Err(e),
                _ => Ok(None),
            };
        }
        if self.down.lock().unwrap().contains(&node) {
            return Ok(None);
        }
        if meta.deletion_timestamp.is_some() {
            let going = format!("{}/stop", meta.uid);
            let since = *self.started.lock().unwrap().entry(going).or_insert_with(Instant::now);
            if since.elapsed() < self.timing.stop_after {
                return Ok(Some(self.timing.stop_after - since.elapsed()));
            }
            let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
            return match api.delete(&meta.name, &params).await {
                Err(e) if !e.is_not_found() => Err(e),
                _ => Ok(None),
            };
        }
        if is_ready(pod) {
            return Ok(None);
        }
        let since =
            *self.started.lock().unwrap().entry(meta.uid.clone()).or_insert_with(Instant::now);
        let ready_after = self.timing.ready_after;
        let ready = since.elapsed() >= ready_after;
        let running = pod.status.as_ref().is_some_and(|s| s.phase == "Running");
        if running && !ready {
            return Ok(Some(ready_after - since.elapsed()));
        }
        let mut updated = pod.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        status.phase = "Running".into();
        status.start_time.get_or_insert_with(Time::now);
        if ready {
            for kind in ["Ready", "ContainersReady"] {
                status.conditions.retain(|c| c.r#type != kind);
                status.conditions.push(PodCondition {
                    r#type: kind.into(),
                    status: "True".into(),
                    last_transition_time: Some(Time::now()),
                    ..Default::default()
                });
            }
        }
        match api.update_status(&updated).await {
            Err(e) if !(e.is_conflict() || e.is_not_found()) => Err(e),
            _ => Ok((!ready).then(|| ready_after.saturating_sub(since.elapsed()))),
        }
    }

    /// Round-robin over nodes that are up and not tainted NoExecute, as a
    /// scheduler would.
    fn pick_node(&self) -> Option<String> {
        let down = self.down.lock().unwrap();
        let mut next = self.next.lock().unwrap();
        (0..self.count)
            .map(|_| {
                *next = (*next + 1) % self.count;
                node_name(*next)
            })
            .find(|n| {
                !down.contains(n)
                    && self.nodes.get(n).is_some_and(|node| {
                        node.spec
                            .as_ref()
                            .is_none_or(|s| !s.taints.iter().any(|t| t.effect == "NoExecute"))
                    })
            })
    }
}

/// A cluster, hollow nodes, and one controller-manager replica that leads.
struct Setup {
    cluster: ApiCluster,
    client: Client,
    nodes: FakeNodes,
    replica: Replica,
}

impl Setup {
    async fn start(name: &str, nodes: usize, adjust: impl FnOnce(&mut Config)) -> Setup {
        Setup::start_with(name, nodes, Timing::default(), adjust).await
    }

    async fn start_with(
        name: &str,
        nodes: usize,
        timing: Timing,
        adjust: impl FnOnce(&mut Config),
    ) -> Setup {
        let cluster = ApiCluster::start(3, name).await.unwrap();
        let client = cluster.client().unwrap();
        let nodes = FakeNodes::start_with(&client, nodes, timing).await;
        let mut replica = Replica::start(&client, "cm-1", adjust);
        replica.wait_leading(WAIT).await;
        Setup { cluster, client, nodes, replica }
    }

    async fn shutdown(self) {
        self.replica.stop().await;
        self.nodes.stop().await;
        self.cluster.shutdown().await;
    }
}

/// Pods of `app` that are active (not being deleted), and of those, ready.
async fn active_and_ready(client: &Client, namespace: &str, app: &str) -> (Vec<Pod>, usize) {
    let active: Vec<Pod> = list_pods(client, namespace, &format!("app={app}"))
        .await
        .into_iter()
        .filter(is_active)
        .collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    (active, ready)
}

// ------------------------------------------------------------ ReplicaSet

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_scales_up_and_down_and_reports_its_status() {
    let setup = Setup::start("cm-rs-scale", 3, |_| {}).await;
    let client = &setup.client;
    let sets: Api<ReplicaSet> = Api::namespaced(client, "default");
    let rs = sets.create(&replica_set("default", "web", "web", 3)).await.unwrap();
    let uid = rs.metadata().uid.clone();

    for replicas in [3, 6, 2] {
        sets.scale("web", replicas).await.unwrap();
        until(&format!("{replicas} ready pods owned by the ReplicaSet"), WAIT, || async {
            let (active, ready) = active_and_ready(client, "default", "web").await;
            let owned = active.iter().all(|p| owner_uids(p) == [uid.clone()]);
            (active.len() == replicas as usize && ready == replicas as usize && owned).then_some(())
        })
        .await;
        let status = until("the status to catch up", WAIT, || async {
            let rs = sets.get("web").await.ok()?;
            let status = rs.status.clone()?;
            (status.ready_replicas == replicas
                && status.available_replicas == replicas
                && status.replicas == replicas
                && status.observed_generation == rs.metadata().generation)
                .then_some(status)
        })
        .await;
        assert_eq!(status.fully_labeled_replicas, replicas);
    }

    let events: Api<Event> = Api::namespaced(client, "default");
    until("SuccessfulCreate and SuccessfulDelete events on the ReplicaSet", WAIT, || async {
        let events = events.list(&ListParams::default()).await.ok()?.items;
        let count = |reason: &str| {
            events
                .iter()
                .filter(|e| {
                    e.reason == reason
                        && e.involved_object
                            .as_ref()
                            .is_some_and(|o| o.uid == uid && o.kind == "ReplicaSet")
                })
                .map(|e| e.count)
                .sum::<i32>()
        };
        (count("SuccessfulCreate") == 6 && count("SuccessfulDelete") == 4).then_some(())
    })
    .await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_deleted_behind_the_controllers_back_are_replaced_once() {
    let setup = Setup::start("cm-rs-replace", 3, |_| {}).await;
    let client = &setup.client;
    let sets: Api<ReplicaSet> = Api::namespaced(client, "default");
    sets.create(&replica_set("default", "api", "api", 4)).await.unwrap();
    let before = until("4 ready pods", WAIT, || async {
        let (active, ready) = active_and_ready(client, "default", "api").await;
        (active.len() == 4 && ready == 4).then_some(active)
    })
    .await;

    // Every state the pods pass through, from before the deletions on.
    let seen_max = Arc::new(Mutex::new(0usize));
    let names_seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut informer = Informer::new(
        Api::<Pod>::namespaced(client, "default"),
        InformerParams { label_selector: "app=api".into(), ..Default::default() },
    );
    let cache = informer.cache();
    {
        let (cache, seen_max, names_seen) = (cache.clone(), seen_max.clone(), names_seen.clone());
        informer.on_change(move |change| {
            names_seen.lock().unwrap().insert(change.object().metadata().name.clone());
            let active = cache.list().iter().filter(|p| is_active(p)).count();
            let mut max = seen_max.lock().unwrap();
            *max = (*max).max(active);
        });
    }
    let stop = CancellationToken::new();
    let watching = tokio::spawn(informer.run(stop.clone()));
    cache.wait_synced().await;

    let pods: Api<Pod> = Api::namespaced(client, "default");
    for victim in &before[..2] {
        pods.delete(&victim.metadata().name, &DeleteParams::default()).await.unwrap();
    }
    until("4 ready pods again", WAIT, || async {
        let (active, ready) = active_and_ready(client, "default", "api").await;
        (active.len() == 4 && ready == 4).then_some(())
    })
    .await;
    // Two deletions, two replacements: six names in all, never five pods.
    until("the watcher to see the replacements", WAIT, || async {
        (names_seen.lock().unwrap().len() >= 6).then_some(())
    })
    .await;
    let total_pods_ever = names_seen.lock().unwrap().len();
    assert_eq!(total_pods_ever, 6, "each deleted pod was replaced exactly once");
    assert_eq!(*seen_max.lock().unwrap(), 4, "never more active pods than replicas");
    stop.cancel();
    watching.await.unwrap();
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_adopts_matching_orphans_and_releases_pods_that_stop_matching() {
    let setup = Setup::start("cm-rs-adopt", 2, |_| {}).await;
    let client = &setup.client;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&bare_pod("default", "orphan", "db")).await.unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(client, "default");
    let rs = sets.create(&replica_set("default", "db", "db", 3)).await.unwrap();
    let uid = rs.metadata().uid.clone();
    until("the orphan adopted and two pods created", WAIT, || async {
        let (active, ready) = active_and_ready(client, "default", "db").await;
        let adopted =
            active.iter().any(|p| p.metadata().name == "orphan" && owner_uids(p) == [uid.clone()]);
        (active.len() == 3 && ready == 3 && adopted).then_some(())
    })
    .await;

    // Relabelled out of the selector: released, and replaced.
    edit(&pods, "orphan", |p| {
        p.metadata_mut().labels.insert("app".into(), "debugging".into());
    })
    .await;
    until("the relabelled pod released and replaced", WAIT, || async {
        let released = pods.get("orphan").await.ok()?;
        let (active, ready) = active_and_ready(client, "default", "db").await;
        (released.metadata().owner_references.is_empty() && active.len() == 3 && ready == 3)
            .then_some(())
    })
    .await;
    setup.shutdown().await;
}

// ---------------------------------------------------- garbage collection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cascading_policy_deletes_dependents_as_asked() {
    let setup = Setup::start("cm-gc", 2, |_| {}).await;
    let client = &setup.client;
    let sets: Api<ReplicaSet> = Api::namespaced(client, "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for app in ["background", "foreground", "orphan"] {
        sets.create(&replica_set("default", app, app, 2)).await.unwrap();
    }
    for app in ["background", "foreground", "orphan"] {
        until(&format!("{app}: 2 ready pods"), WAIT, || async {
            let (active, ready) = active_and_ready(client, "default", app).await;
            (active.len() == 2 && ready == 2).then_some(())
        })
        .await;
    }

    // Background: the owner goes at once, the collector takes the pods.
    sets.delete("background", &DeleteParams::default()).await.unwrap();
    assert!(sets.get_opt("background").await.unwrap().is_none());
    until("background: the pods collected", WAIT, || async {
        list_pods(client, "default", "app=background").await.is_empty().then_some(())
    })
    .await;

    // Foreground: the owner stays, marked, until its pods are gone.
    let foreground = DeleteParams { propagation_policy: "Foreground".into(), ..Default::default() };
    let marked = sets.delete("foreground", &foreground).await.unwrap();
    assert!(marked.metadata().deletion_timestamp.is_some());
    let order = until("foreground: the owner gone", WAIT, || async {
        let owner = sets.get_opt("foreground").await.ok()?;
        let pods_left = list_pods(client, "default", "app=foreground").await.len();
        match owner {
            // While the owner exists its pods may exist; once it is gone
            // they must be gone too.
            Some(_) => None,
            None => Some(pods_left),
        }
    })
    .await;
    assert_eq!(order, 0, "the owner went before its pods");

    // Orphan: the owner goes, its pods stay without the reference.
    let orphan = DeleteParams { propagation_policy: "Orphan".into(), ..Default::default() };
    sets.delete("orphan", &orphan).await.unwrap();
    until("orphan: owner gone, pods kept without owner", WAIT, || async {
        let gone = sets.get_opt("orphan").await.ok()?.is_none();
        let left = list_pods(client, "default", "app=orphan").await;
        (gone && left.len() == 2 && left.iter().all(|p| p.metadata().owner_references.is_empty()))
            .then_some(())
    })
    .await;

    // A dependent whose owner never existed is collected too.
    let mut dangling = bare_pod("default", "dangling", "dangling");
    dangling.metadata_mut().owner_references.push(berth_proto::meta_v1::OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "never-was".into(),
        uid: "no-such-uid".into(),
        controller: Some(true),
        ..Default::default()
    });
    pods.create(&dangling).await.unwrap();
    until("the dangling pod collected", WAIT, || async {
        pods.get_opt("dangling")
            .await
            .ok()?
            .is_none_or(|p| p.metadata().deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    setup.shutdown().await;
}

// -------------------------------------------------------------- namespace

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_it_then_removes_it() {
    let setup = Setup::start("cm-namespace", 2, |_| {}).await;
    let client = &setup.client;
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces
        .create(&Namespace { metadata: Some(meta("", "team")), ..Default::default() })
        .await
        .unwrap();
    until("the namespace holds the finalizer", WAIT, || async {
        let ns = namespaces.get("team").await.ok()?;
        ns.metadata().finalizers.iter().any(|f| f == "kubernetes").then_some(())
    })
    .await;
    let sets: Api<ReplicaSet> = Api::namespaced(client, "team");
    sets.create(&replica_set("team", "svc", "svc", 2)).await.unwrap();
    Api::<Pod>::namespaced(client, "team").create(&bare_pod("team", "lone", "lone")).await.unwrap();
    until("the namespace's pods run", WAIT, || async {
        let (active, ready) = active_and_ready(client, "team", "svc").await;
        (active.len() == 2 && ready == 2).then_some(())
    })
    .await;

    let marked = namespaces.delete("team", &DeleteParams::default()).await.unwrap();
    assert!(marked.metadata().deletion_timestamp.is_some(), "the finalizer holds the namespace");
    let refused = sets.create(&replica_set("team", "late", "late", 1)).await;
    assert!(refused.is_err(), "nothing new goes into a terminating namespace");
    until("the namespace and everything in it gone", WAIT, || async {
        let ns_gone = namespaces.get_opt("team").await.ok()?.is_none();
        let pods_left = list_pods(client, "team", "").await.len();
        let sets_left = sets.list(&ListParams::default()).await.ok()?.items.len();
        (ns_gone && pods_left == 0 && sets_left == 0).then_some(())
    })
    .await;
    setup.shutdown().await;
}

// ---------------------------------------------------------------- fencing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_both_act_and_a_stale_leaders_writes_are_refused() {
    let cluster = ApiCluster::start(3, "cm-fencing").await.unwrap();
    let client = cluster.client().unwrap();
    let nodes = FakeNodes::start(&client, 2).await;
    let mut a = Replica::start(&client, "cm-a", |_| {});
    let mut b = Replica::start(&client, "cm-b", |_| {});
    let first = tokio::select! {
        t = a.wait_leading(WAIT) => t,
        t = b.wait_leading(WAIT) => t,
    };
    assert!(a.token().is_none() || b.token().is_none(), "one leader at a time");

    // Both replicas see the ReplicaSet; exactly the replicas exist.
    let sets: Api<ReplicaSet> = Api::namespaced(&client, "default");
    sets.create(&replica_set("default", "web", "web", 3)).await.unwrap();
    until("3 ready pods", WAIT, || async {
        let (active, ready) = active_and_ready(&client, "default", "web").await;
        (active.len() == 3 && ready == 3).then_some(())
    })
    .await;

    // Someone else takes the Lease and keeps it: the leader's token is
    // revoked at once and both replicas stand back.
    let leases: Api<Lease> = Api::namespaced(&client, LEASE_NAMESPACE);
    edit(&leases, LEASE_NAME, |lease| {
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some("intruder".into());
        spec.lease_duration_seconds = Some(3600);
        spec.renew_time = Some(MicroTime::now());
    })
    .await;
    let stale = Api::<Pod>::namespaced(&client.fenced(&first), "default");
    let refused = stale.create(&bare_pod("default", "by-stale-leader", "other")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    until("both replicas step down", WAIT, || async {
        (a.token().is_none() && b.token().is_none()).then_some(())
    })
    .await;
    sets.scale("web", 5).await.unwrap();
    // While neither leads nothing acts on the scale-up; check every state
    // for a while (the replicas retry the Lease every 250 ms meanwhile).
    let hold_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < hold_until {
        let (active, _) = active_and_ready(&client, "default", "web").await;
        assert_eq!(active.len(), 3, "a replica acted without the Lease");
        assert!(a.token().is_none() && b.token().is_none());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The intruder lets go: one replica takes over and finishes the work.
    edit(&leases, LEASE_NAME, |lease| {
        lease.spec.get_or_insert_with(Default::default).holder_identity = None;
    })
    .await;
    until("a replica leads again and scales up", WAIT, || async {
        let (active, ready) = active_and_ready(&client, "default", "web").await;
        let one_leader = a.token().is_some() != b.token().is_some();
        (one_leader && active.len() == 5 && ready == 5).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
    nodes.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_the_other_replica_takes_over_within_3_s_and_finishes_the_rollout() {
    let cluster = ApiCluster::start(3, "cm-takeover").await.unwrap();
    let client = cluster.client().unwrap();
    let timing = Timing { ready_after: Duration::from_millis(400), stop_after: Duration::ZERO };
    let nodes = FakeNodes::start_with(&client, 2, timing).await;
    let mut a = Replica::start(&client, "cm-a", |_| {});
    a.wait_leading(WAIT).await;
    let mut b = Replica::start(&client, "cm-b", |_| {});
    let api: Api<Deployment> = Api::namespaced(&client, "default");
    api.create(&deployment("web", "web", 8, "web:1", "RollingUpdate")).await.unwrap();
    rolled_out(&client, "web", "web", 8, "web:1").await;
    assert!(b.token().is_none());

    // 8 replicas, 25%/25%: at most 10 pods, at least 6 ready, throughout.
    let states = PodStates::follow(&client, "web", |active, ready, _| {
        (active > 10 || ready < 6).then(|| format!("{active} active pods, {ready} ready"))
    })
    .await;
    set_image(&api, "web", "web:2").await;
    until("the rollout under way", WAIT, || async {
        let status = api.get("web").await.ok()?.status?;
        (status.updated_replicas > 0 && status.updated_replicas < 8).then_some(())
    })
    .await;
    let killed = Instant::now();
    a.kill().await;
    b.wait_leading(Duration::from_secs(10)).await;
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_secs(3), "takeover took {takeover:?}");
    rolled_out(&client, "web", "web", 8, "web:2").await;
    let (violations, _) = states.finish().await;
    assert!(violations.is_empty(), "bounds broken across the failover: {violations:?}");
    b.stop().await;
    nodes.stop().await;
    cluster.shutdown().await;
}

// ---------------------------------------------------------- node lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_its_pods_evicted_after_their_toleration_and_untainted_on_return()
{
    let grace = Duration::from_secs(1);
    let toleration = Duration::from_secs(2);
    let setup = Setup::start("cm-nodes", 2, |config| {
        config.node_lifecycle.grace_period = grace;
        config.node_lifecycle.default_toleration = toleration;
    })
    .await;
    let client = &setup.client;
    let sets: Api<ReplicaSet> = Api::namespaced(client, "default");
    sets.create(&replica_set("default", "web", "web", 4)).await.unwrap();
    let pods_before = until("4 ready pods on both nodes", WAIT, || async {
        let (active, ready) = active_and_ready(client, "default", "web").await;
        (active.len() == 4 && ready == 4).then_some(active)
    })
    .await;
    let on_node_1: Vec<String> = pods_before
        .iter()
        .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name == "node-1"))
        .map(|p| p.metadata().name.clone())
        .collect();
    assert!(!on_node_1.is_empty(), "round-robin put pods on node-1");

    let nodes: Api<Node> = Api::all(client);
    let silent_since = Instant::now();
    setup.nodes.take_down("node-1");
    let tainted = until("node-1 tainted and Ready=Unknown", WAIT, || async {
        let node = nodes.get("node-1").await.ok()?;
        let taint = node
            .spec
            .as_ref()?
            .taints
            .iter()
            .any(|t| t.key == UNREACHABLE_TAINT && t.effect == "NoExecute");
        let unknown = node
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "Unknown");
        (taint && unknown).then(Instant::now)
    })
    .await;
    // Silence counts from the last renewal, up to one heartbeat (100 ms)
    // before the agent went down.
    let heartbeat = Duration::from_millis(100);
    assert!(tainted - silent_since >= grace - heartbeat, "tainted before the grace period ran out");
    assert!(
        nodes.get("node-0").await.unwrap().spec.unwrap_or_default().taints.is_empty(),
        "the healthy node keeps renewing and stays untainted"
    );

    // Not yet evicted while the toleration lasts ...
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for name in &on_node_1 {
        let pod = pods.get(name).await.unwrap();
        if tainted.elapsed() < toleration {
            assert!(pod.metadata().deletion_timestamp.is_none(), "{name} evicted early");
        }
    }
    // ... then evicted, and replaced on the healthy node.
    until("node-1's pods evicted", WAIT, || async {
        let mut all_marked = true;
        for name in &on_node_1 {
            let pod = pods.get(name).await.ok()?;
            all_marked &= pod.metadata().deletion_timestamp.is_some();
        }
        all_marked.then_some(())
    })
    .await;
    assert!(
        tainted.elapsed() >= toleration - Duration::from_millis(100),
        "evicted before the toleration ran out"
    );
    until("replacements run on node-0", WAIT, || async {
        let (active, ready) = active_and_ready(client, "default", "web").await;
        let placed =
            active.iter().all(|p| p.spec.as_ref().is_some_and(|s| s.node_name == "node-0"));
        (active.len() == 4 && ready == 4 && placed).then_some(())
    })
    .await;

    // The node comes back: the taint goes, and its evicted pods finish.
    setup.nodes.bring_up("node-1");
    until("node-1 untainted", WAIT, || async {
        let node = nodes.get("node-1").await.ok()?;
        node.spec.as_ref().is_none_or(|s| s.taints.is_empty()).then_some(())
    })
    .await;
    until("the evicted pods gone", WAIT, || async {
        let mut gone = true;
        for name in &on_node_1 {
            gone &= pods.get_opt(name).await.ok()?.is_none();
        }
        gone.then_some(())
    })
    .await;
    setup.shutdown().await;
}

// -------------------------------------------------------------- Deployment

fn deployment(name: &str, app: &str, replicas: i32, image: &str, strategy: &str) -> Deployment {
    Deployment {
        metadata: Some(meta("default", name)),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: labels(&[("app", app)]),
                ..Default::default()
            }),
            template: Some(template(app, image)),
            strategy: Some(DeploymentStrategy {
                r#type: strategy.into(),
                rolling_update: (strategy == "RollingUpdate").then(|| RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn image_of(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.containers.first()).map_or("", |c| c.image.as_str())
}

/// Sets the Deployment's container image (a new template: a rollout).
async fn set_image(api: &Api<Deployment>, name: &str, image: &str) {
    edit(api, name, |d| {
        let template = d.spec.as_mut().unwrap().template.as_mut().unwrap();
        template.spec.as_mut().unwrap().containers[0].image = image.into();
    })
    .await;
}

/// Until every replica runs `image`, ready, nothing else is left, and the
/// status says the rollout is complete.
async fn rolled_out(client: &Client, name: &str, app: &str, replicas: usize, image: &str) {
    let api: Api<Deployment> = Api::namespaced(client, "default");
    until(&format!("{replicas} ready pods of {image} and a complete status"), WAIT, || async {
        let all = list_pods(client, "default", &format!("app={app}")).await;
        let done = all.len() == replicas
            && all.iter().all(|p| is_active(p) && is_ready(p) && image_of(p) == image);
        let d = api.get(name).await.ok()?;
        let status = d.status.clone()?;
        let progressing = status.conditions.iter().find(|c| c.r#type == "Progressing")?;
        let complete = status.updated_replicas == replicas as i32
            && status.available_replicas == replicas as i32
            && status.replicas == replicas as i32
            && status.observed_generation == d.metadata().generation
            && progressing.reason == "NewReplicaSetAvailable"
            && status.conditions.iter().any(|c| c.r#type == "Available" && c.status == "True");
        (done && complete).then_some(())
    })
    .await;
}

/// Follows every state the pods of `app` pass through, checking `check`
/// (active pods, of those ready, and every pod) on each.
struct PodStates {
    stop: CancellationToken,
    task: JoinHandle<()>,
    violations: Arc<Mutex<Vec<String>>>,
    states: Arc<Mutex<usize>>,
}

impl PodStates {
    async fn follow(
        client: &Client,
        app: &str,
        check: impl Fn(usize, usize, &[Arc<Pod>]) -> Option<String> + Send + Sync + 'static,
    ) -> PodStates {
        let mut informer = Informer::new(
            Api::<Pod>::namespaced(client, "default"),
            InformerParams { label_selector: format!("app={app}"), ..Default::default() },
        );
        let cache = informer.cache();
        let violations: Arc<Mutex<Vec<String>>> = Default::default();
        let states = Arc::new(Mutex::new(0));
        {
            let (cache, violations, states) = (cache.clone(), violations.clone(), states.clone());
            informer.on_change(move |_| {
                let pods = cache.list();
                let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
                let ready = active.iter().filter(|p| is_ready(p)).count();
                *states.lock().unwrap() += 1;
                if let Some(v) = check(active.len(), ready, &pods) {
                    violations.lock().unwrap().push(v);
                }
            });
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(informer.run(stop.clone()));
        cache.wait_synced().await;
        PodStates { stop, task, violations, states }
    }

    /// Stops following; answers the violations seen, and how many states.
    async fn finish(self) -> (Vec<String>, usize) {
        self.stop.cancel();
        let _ = self.task.await;
        let v = self.violations.lock().unwrap().clone();
        let n = *self.states.lock().unwrap();
        (v, n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_of_20_stays_within_max_surge_and_max_unavailable_at_every_state() {
    let timing =
        Timing { ready_after: Duration::from_millis(150), stop_after: Duration::from_millis(50) };
    let setup = Setup::start_with("cm-rolling", 4, timing, |_| {}).await;
    let client = &setup.client;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    api.create(&deployment("web", "web", 20, "web:1", "RollingUpdate")).await.unwrap();
    rolled_out(client, "web", "web", 20, "web:1").await;

    let states = PodStates::follow(client, "web", |active, ready, _| {
        (active > 25 || ready < 15).then(|| format!("{active} active pods, {ready} ready"))
    })
    .await;
    set_image(&api, "web", "web:2").await;
    rolled_out(client, "web", "web", 20, "web:2").await;
    let (violations, seen) = states.finish().await;
    assert!(violations.is_empty(), "bounds broken: {violations:?}");
    assert!(seen >= 60, "the rollout passed through only {seen} states");

    let d = api.get("web").await.unwrap();
    assert_eq!(
        d.metadata().annotations.get("deployment.kubernetes.io/revision").map(String::as_str),
        Some("2")
    );
    let sets = Api::<ReplicaSet>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(sets.len(), 2, "the old ReplicaSet is kept as history");
    let hashes: BTreeSet<&String> =
        sets.iter().filter_map(|rs| rs.metadata().labels.get("pod-template-hash")).collect();
    assert_eq!(hashes.len(), 2, "each template has its own pod-template-hash");
    let events: Api<Event> = Api::namespaced(client, "default");
    until("ScalingReplicaSet events on the Deployment", WAIT, || async {
        let events = events.list(&ListParams::default()).await.ok()?.items;
        let scaled = events.iter().filter(|e| {
            e.reason == "ScalingReplicaSet"
                && e.involved_object
                    .as_ref()
                    .is_some_and(|o| o.kind == "Deployment" && o.name == "web")
        });
        (scaled.count() >= 4).then_some(())
    })
    .await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_restores_an_earlier_template_and_history_is_limited() {
    let setup = Setup::start("cm-rollback", 3, |_| {}).await;
    let client = &setup.client;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let mut d = deployment("app", "app", 3, "app:1", "RollingUpdate");
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    api.create(&d).await.unwrap();
    rolled_out(client, "app", "app", 3, "app:1").await;
    set_image(&api, "app", "app:2").await;
    rolled_out(client, "app", "app", 3, "app:2").await;
    set_image(&api, "app", "app:3").await;
    rolled_out(client, "app", "app", 3, "app:3").await;
    let sets: Api<ReplicaSet> = Api::namespaced(client, "default");
    until("history limited to one old ReplicaSet", WAIT, || async {
        (sets.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;

    // Back to the previous revision (2).
    edit(&api, "app", |d| {
        d.metadata_mut().annotations.insert("deployment.berth.io/rollback-to".into(), "0".into());
    })
    .await;
    rolled_out(client, "app", "app", 3, "app:2").await;
    let d = api.get("app").await.unwrap();
    assert!(!d.metadata().annotations.contains_key("deployment.berth.io/rollback-to"));
    assert_eq!(
        d.metadata().annotations.get("deployment.kubernetes.io/revision").map(String::as_str),
        Some("4")
    );
    let template = d.spec.unwrap().template.unwrap();
    assert_eq!(image_of(&Pod { spec: template.spec, ..Default::default() }), "app:2");
    let events: Api<Event> = Api::namespaced(client, "default");
    until("a DeploymentRollback event", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .any(|e| e.reason == "DeploymentRollback")
            .then_some(())
    })
    .await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_runs_old_and_new_pods_together() {
    // Old pods take a while to stop: the new ones must wait for them.
    let timing =
        Timing { ready_after: Duration::from_millis(100), stop_after: Duration::from_millis(300) };
    let setup = Setup::start_with("cm-recreate", 3, timing, |_| {}).await;
    let client = &setup.client;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    api.create(&deployment("batch", "batch", 4, "batch:1", "Recreate")).await.unwrap();
    rolled_out(client, "batch", "batch", 4, "batch:1").await;
    let states = PodStates::follow(client, "batch", |_, _, pods| {
        let images: BTreeSet<&str> = pods.iter().map(|p| image_of(p)).collect();
        (images.len() > 1).then(|| format!("old and new pods together: {images:?}"))
    })
    .await;
    set_image(&api, "batch", "batch:2").await;
    rolled_out(client, "batch", "batch", 4, "batch:2").await;
    let (violations, seen) = states.finish().await;
    assert!(violations.is_empty(), "{violations:?}");
    assert!(seen >= 16, "the rollout passed through only {seen} states");
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_scales_but_does_not_roll_until_resumed() {
    let setup = Setup::start("cm-pause", 3, |_| {}).await;
    let client = &setup.client;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    api.create(&deployment("svc", "svc", 2, "svc:1", "RollingUpdate")).await.unwrap();
    rolled_out(client, "svc", "svc", 2, "svc:1").await;

    let paused = edit(&api, "svc", |d| {
        let spec = d.spec.as_mut().unwrap();
        spec.paused = true;
        spec.replicas = Some(4);
        spec.template.as_mut().unwrap().spec.as_mut().unwrap().containers[0].image = "svc:2".into();
    })
    .await;
    // Once the controller has seen the paused spec it has scaled the old
    // ReplicaSet and made no new one.
    until("the paused spec observed and scaled", WAIT, || async {
        let d = api.get("svc").await.ok()?;
        let status = d.status.clone()?;
        let progressing = status.conditions.iter().find(|c| c.r#type == "Progressing")?;
        let (active, ready) = active_and_ready(client, "default", "svc").await;
        (status.observed_generation >= paused.metadata().generation
            && progressing.reason == "DeploymentPaused"
            && active.len() == 4
            && ready == 4)
            .then_some(active)
    })
    .await
    .iter()
    .for_each(|p| assert_eq!(image_of(p), "svc:1", "a paused deployment rolled"));
    let sets = Api::<ReplicaSet>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(sets.len(), 1, "no new ReplicaSet while paused");

    edit(&api, "svc", |d| d.spec.as_mut().unwrap().paused = false).await;
    rolled_out(client, "svc", "svc", 4, "svc:2").await;
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_stalls_past_its_progress_deadline_is_reported() {
    let setup = Setup::start("cm-deadline", 2, |_| {}).await;
    let client = &setup.client;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let mut d = deployment("stuck", "stuck", 2, "stuck:1", "RollingUpdate");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    api.create(&d).await.unwrap();
    rolled_out(client, "stuck", "stuck", 2, "stuck:1").await;

    // No node takes new pods any more: the rollout cannot progress.
    setup.nodes.take_down("node-0");
    setup.nodes.take_down("node-1");
    let changed = Instant::now();
    set_image(&api, "stuck", "stuck:2").await;
    let timed_out = until("Progressing=False ProgressDeadlineExceeded", WAIT, || async {
        let status = api.get("stuck").await.ok()?.status?;
        let c = status.conditions.iter().find(|c| c.r#type == "Progressing")?;
        (c.status == "False" && c.reason == "ProgressDeadlineExceeded").then(Instant::now)
    })
    .await;
    assert!(timed_out - changed >= Duration::from_secs(1), "timed out before the deadline");
    let status = api.get("stuck").await.unwrap().status.unwrap();
    let available = status.conditions.iter().find(|c| c.r#type == "Available").unwrap();
    assert_eq!(available.status, "True", "the old pods still serve");
    setup.shutdown().await;
}

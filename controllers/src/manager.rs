//! The controller-manager: replicas campaign for one Lease, and only the
//! holder runs the controllers, through a client fenced with its token.
//! Each time leadership is won a new term starts (fresh informers, queues
//! and expectations); when it is lost the term's tasks are stopped, and any
//! write still in flight is refused by the API server.

use crate::informers::Informers;
use crate::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
use crate::runner::{run_workers, Reconciler};
use crate::{aggregation, deployment, gc, namespace, node_lifecycle, replicaset};
use berth_client::EventRecorder;
use berth_client::{Client, ElectionTiming, FenceToken, LeaderElector, RateLimit, WorkQueue};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The Lease the replicas campaign for.
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "berth-controller-manager";

/// Every controller this manager runs, by the name `--controllers` takes.
pub const CONTROLLERS: &[&str] = &[
    replicaset::NAME,
    deployment::NAME,
    gc::NAME,
    namespace::NAME,
    node_lifecycle::NAME,
    aggregation::NAME,
];

#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's name in the Lease and in the events it writes.
    pub identity: String,
    pub election: ElectionTiming,
    /// Workers per controller.
    pub workers: usize,
    /// How often informers hand every object to the controllers again.
    pub resync: Duration,
    /// Which controllers run: names, "*" for all, "-name" to leave one out.
    pub controllers: Vec<String>,
    pub node_lifecycle: NodeLifecycleConfig,
}

impl Config {
    pub fn new(identity: &str) -> Config {
        Config {
            identity: identity.to_string(),
            election: ElectionTiming::default(),
            workers: 5,
            resync: Duration::from_secs(60),
            controllers: vec!["*".into()],
            node_lifecycle: NodeLifecycleConfig::default(),
        }
    }

    /// Whether the controller called `name` runs.
    pub fn enabled(&self, name: &str) -> bool {
        let excluded = self.controllers.iter().any(|c| c.strip_prefix('-') == Some(name));
        let included = self.controllers.iter().any(|c| c == "*" || c == name);
        included && !excluded
    }
}

/// One replica of the controller-manager.
pub struct ControllerManager {
    client: Client,
    config: Config,
    elector: LeaderElector,
}

impl ControllerManager {
    pub fn new(client: &Client, config: Config) -> ControllerManager {
        let elector = LeaderElector::new(
            client,
            LEASE_NAMESPACE,
            LEASE_NAME,
            &config.identity,
            config.election.clone(),
        );
        ControllerManager { client: client.clone(), config, elector }
    }

    /// This replica's fencing token while it leads, None otherwise.
    pub fn leading(&self) -> watch::Receiver<Option<FenceToken>> {
        self.elector.subscribe()
    }

    /// Campaigns, and runs the controllers while leading, until `stop`;
    /// then stops them and gives the Lease up.
    pub async fn run(&self, stop: CancellationToken) {
        let terms = stop.child_token();
        let campaign = async {
            self.elector.run(stop.clone()).await;
            // The elector stepped down: no term may outlive it.
            terms.cancel();
        };
        tokio::join!(campaign, self.lead_while_elected(terms.clone()));
    }

    async fn lead_while_elected(&self, stop: CancellationToken) {
        let mut leading = self.elector.subscribe();
        let gauge = metrics::gauge!("berth_controllers_leader");
        loop {
            let token = tokio::select! {
                _ = stop.cancelled() => return,
                token = leading.wait_for(Option::is_some) => match token {
                    Ok(token) => token.clone().expect("waited for Some"),
                    Err(_) => return,
                },
            };
            tracing::info!(identity = %self.config.identity, %token, "leading: starting controllers");
            gauge.set(1.0);
            let term_stop = stop.child_token();
            let term = run_term(self.client.fenced(&token), &self.config, term_stop.clone());
            tokio::pin!(term);
            tokio::select! {
                () = &mut term => {}
                _ = leading.wait_for(|t| t.as_ref() != Some(&token)) => {}
                _ = stop.cancelled() => {}
            }
            term_stop.cancel();
            term.await;
            gauge.set(0.0);
            tracing::info!(identity = %self.config.identity, %token, "controllers stopped");
        }
    }
}

/// Campaigns and runs the controllers until `stop`.
pub async fn run(client: &Client, config: Config, stop: CancellationToken) {
    ControllerManager::new(client, config).run(stop).await
}

/// One leadership term: every enabled controller over shared informers, all
/// writing through `client`, which carries the term's fencing token.
async fn run_term(client: Client, config: &Config, stop: CancellationToken) {
    let mut tasks = JoinSet::new();
    let (recorder, writer) = EventRecorder::new(&client, &config.identity);
    tasks.spawn(writer.run(stop.clone()));
    let mut informers = Informers::new(&client, config.resync);
    let caches = informers.caches();
    let mut starts: Vec<DeferredStart> = Vec::new();
    let queue = |name: &str| WorkQueue::<String>::new(name, RateLimit::default());
    let workers = config.workers;

    if config.enabled(replicaset::NAME) {
        let q = queue(replicaset::NAME);
        let c = replicaset::ReplicaSetController::new(
            &client,
            &mut informers,
            recorder.for_component("replicaset-controller"),
            &q,
        );
        starts.push(start(c, q, workers, &stop));
    }
    if config.enabled(deployment::NAME) {
        let q = queue(deployment::NAME);
        let c = deployment::DeploymentController::new(
            &client,
            &mut informers,
            recorder.for_component("deployment-controller"),
            &q,
        );
        starts.push(start(c, q, workers, &stop));
    }
    if config.enabled(gc::NAME) {
        let q = queue(gc::NAME);
        let c = gc::GarbageCollector::new(&client, &mut informers, &q);
        starts.push(start(c, q, workers, &stop));
    }
    if config.enabled(namespace::NAME) {
        let q = queue(namespace::NAME);
        let c = namespace::NamespaceController::new(
            &client,
            &mut informers,
            recorder.for_component("namespace-controller"),
            &q,
        );
        starts.push(start(c, q, workers, &stop));
    }
    if config.enabled(node_lifecycle::NAME) {
        let q = queue(node_lifecycle::NAME);
        let c = NodeLifecycleController::new(
            &client,
            &mut informers,
            recorder.for_component("node-controller"),
            &q,
            config.node_lifecycle.clone(),
        );
        starts.push(start(c, q, workers, &stop));
    }
    if config.enabled(aggregation::NAME) {
        let q = queue(aggregation::NAME);
        let (c, roles) = aggregation::AggregationController::new(&client, config.resync, &q);
        let workers = start(c, q, workers, &stop);
        let stop = stop.clone();
        starts.push(Box::new(move |tasks: &mut JoinSet<()>| {
            tasks.spawn(roles.run(stop));
            workers(tasks);
        }));
    }

    informers.spawn(&mut tasks, &stop);
    // Workers must not act on half-filled caches: a missing pod would be
    // created again.
    tokio::select! {
        _ = stop.cancelled() => {}
        () = caches.wait_synced() => {
            for start in starts {
                start(&mut tasks);
            }
        }
    }
    stop.cancelled().await;
    while tasks.join_next().await.is_some() {}
}

/// Starts one controller's workers, once the caches are synced.
type DeferredStart = Box<dyn FnOnce(&mut JoinSet<()>) + Send>;

fn start<R: Reconciler>(
    reconciler: R,
    queue: WorkQueue<String>,
    workers: usize,
    stop: &CancellationToken,
) -> DeferredStart {
    let stop = stop.clone();
    Box::new(move |tasks: &mut JoinSet<()>| {
        tasks.spawn(run_workers(Arc::new(reconciler), queue, workers, stop));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_are_chosen_by_name_star_and_exclusion() {
        let mut config = Config::new("a");
        assert!(CONTROLLERS.iter().all(|c| config.enabled(c)));
        config.controllers = vec!["*".into(), "-garbagecollector".into()];
        assert!(!config.enabled("garbagecollector"));
        assert!(config.enabled("replicaset"));
        config.controllers = vec!["replicaset".into()];
        assert!(config.enabled("replicaset"));
        assert!(!config.enabled("deployment"));
    }
}

//! berth's own verbs (get, describe, apply, delete, wait) against three
//! `berth server` processes: their output (tables against golden files
//! under tests/golden, with ages normalised) and exit codes, apply's
//! idempotence and three-way merge, errors that name the line and field,
//! the config file and its overrides, and failover when a peer dies.

mod common;
mod peers;

use berth_client::{Api, Client};
use berth_proto::apps_v1::Deployment;
use berth_proto::core_v1::{Event, ObjectReference, Pod, PodCondition, PodStatus};
use berth_proto::meta_v1::ObjectMeta;
use peers::{golden, normalise, Cluster};
use std::io::{BufRead, BufReader};

const MANIFESTS: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
---
apiVersion: v1
kind: Pod
metadata:
  name: solo
  namespace: demo
  labels: {app: solo}
spec:
  containers:
  - name: main
    image: busybox:1.36
    command: [sleep, '3600']
";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn the_verbs_against_three_peers() {
    let mut cluster = Cluster::start("verbs");
    let rt = runtime();
    let client = rt.block_on(async { Client::new(cluster.endpoints()) }).unwrap();
    let dir = cluster.dir.path().to_path_buf();
    let manifest = dir.join("all.yaml");
    std::fs::write(&manifest, MANIFESTS).unwrap();
    let manifest = manifest.to_str().unwrap();

    // apply: created, then unchanged.
    let out = cluster.ok(&["apply", "-f", manifest]);
    assert_eq!(out, "namespace/demo created\ndeployment.apps/web created\npod/solo created\n");
    let out = cluster.ok(&["apply", "-f", manifest]);
    assert_eq!(
        out,
        "namespace/demo unchanged\ndeployment.apps/web unchanged\npod/solo unchanged\n"
    );

    // Another writer's label survives an apply that changes the replicas;
    // a label dropped from the manifest goes.
    rt.block_on(async {
        let api: Api<Deployment> = Api::namespaced(&client, "demo");
        let patch = serde_json::json!({"metadata": {"labels": {"owner": "team-a"}}});
        api.patch("web", &patch).await.unwrap();
    });
    let changed = MANIFESTS
        .replace("replicas: 2", "replicas: 3")
        .replace("app: web, tier: front", "app: web");
    let out = cluster.ok_with(&["apply", "-f", "-"], Some(&changed));
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("pod/solo unchanged"), "{out}");
    let live = rt.block_on(Api::<Deployment>::namespaced(&client, "demo").get("web")).unwrap();
    let labels = &live.metadata.as_ref().unwrap().labels;
    assert_eq!(labels.get("owner").map(String::as_str), Some("team-a"), "{labels:?}");
    assert!(!labels.contains_key("tier"), "{labels:?}");
    assert_eq!(live.spec.as_ref().unwrap().replicas, Some(3));
    assert!(cluster.ok_with(&["apply", "-f", "-"], Some(&changed)).contains("web unchanged"));

    // A directory of manifests is applied in name order.
    let tree = dir.join("manifests");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(
        tree.join("a.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n",
    )
    .unwrap();
    std::fs::write(tree.join("notes.txt"), "not a manifest").unwrap();
    assert_eq!(cluster.ok(&["apply", "-f", tree.to_str().unwrap()]), "namespace/other created\n");

    // get: tables in kubectl's columns (golden), and the other forms.
    golden("get-deployments.txt", &normalise(&cluster.ok(&["get", "deployments", "-n", "demo"])));
    golden(
        "get-deployments-wide.txt",
        &normalise(&cluster.ok(&["get", "deploy", "-n", "demo", "-o", "wide"])),
    );
    golden("get-pods.txt", &normalise(&cluster.ok(&["get", "pods", "-n", "demo"])));
    golden(
        "get-pods-wide.txt",
        &normalise(&cluster.ok(&["get", "po", "-n", "demo", "-o", "wide"])),
    );
    golden("get-namespaces.txt", &normalise(&cluster.ok(&["get", "namespaces"])));
    assert_eq!(cluster.ok(&["get", "pods", "-n", "demo", "-o", "name"]), "pod/solo\n");
    assert_eq!(
        cluster.ok(&["get", "deploy/web", "-n", "demo", "-o", "name"]),
        "deployment.apps/web\n"
    );
    let all = cluster.ok(&["get", "pods", "-A"]);
    assert!(all.starts_with("NAMESPACE   NAME   READY   STATUS    RESTARTS   AGE\n"), "{all}");
    let json: serde_json::Value =
        serde_json::from_str(&cluster.ok(&["get", "deploy", "web", "-n", "demo", "-o", "json"]))
            .unwrap();
    assert_eq!(json["kind"], "Deployment");
    assert_eq!(json["spec"]["replicas"], 3);
    let list: serde_json::Value =
        serde_json::from_str(&cluster.ok(&["get", "pods", "-n", "demo", "-o", "json"])).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["metadata"]["name"], "solo");
    let yaml = cluster.ok(&["get", "pod", "solo", "-n", "demo", "-o", "yaml"]);
    assert!(yaml.starts_with("apiVersion: v1\nkind: Pod\nmetadata:\n"), "{yaml}");
    assert_eq!(cluster.ok(&["get", "pods", "-A", "-l", "app=solo", "-o", "name"]), "pod/solo\n");
    assert_eq!(
        cluster.ok(&["get", "ns", "--field-selector", "metadata.name=other", "-o", "name"]),
        "namespace/other\n"
    );
    let missing = cluster.fails(&["get", "pod", "nope", "-n", "demo"], None);
    assert_eq!(missing, "error: NotFound: pods \"nope\" not found\n");
    let unknown = cluster.fails(&["get", "widgets"], None);
    assert!(unknown.contains("unknown resource type \"widgets\""), "{unknown}");
    let empty = cluster.berth(&["get", "pods", "-n", "other"], None);
    assert_eq!((empty.code, empty.stdout.as_str()), (0, ""));
    assert_eq!(empty.stderr, "No resources found in other namespace.\n");

    // describe, with the object's Events.
    rt.block_on(async {
        let pod = Api::<Pod>::namespaced(&client, "demo").get("solo").await.unwrap();
        let uid = pod.metadata.unwrap().uid;
        let now = berth_proto::Time::now();
        let event = Event {
            metadata: Some(ObjectMeta { name: "solo.1".into(), ..Default::default() }),
            involved_object: Some(ObjectReference {
                kind: "Pod".into(),
                namespace: "demo".into(),
                name: "solo".into(),
                uid,
                ..Default::default()
            }),
            reason: "Tested".into(),
            message: "an event for describe".into(),
            r#type: "Normal".into(),
            count: 1,
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            source: Some(berth_proto::core_v1::EventSource {
                component: "verbs-test".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<Event>::namespaced(&client, "demo").create(&event).await.unwrap();
    });
    let described = cluster.ok(&["describe", "pod", "solo", "-n", "demo"]);
    for want in [
        "Name:              solo\n",
        "Namespace:         demo\n",
        "Labels:            app=solo\n",
        "Status:            Pending\n",
        "Events:\n",
        "Tested",
        "verbs-test",
        "an event for describe",
    ] {
        assert!(described.contains(want), "{want:?} missing from:\n{described}");
    }
    let described = cluster.ok(&["describe", "deploy/web", "-n", "demo"]);
    assert!(described.contains("Replicas:          3 desired"), "{described}");
    assert!(described.contains("Events:            <none>"), "{described}");
    assert!(!described.contains("last-applied"), "{described}");
    let events = cluster.ok(&["get", "events", "-n", "demo"]);
    assert_eq!(
        normalise(&events),
        "LAST SEEN TYPE REASON OBJECT MESSAGE\n<age> Normal Tested pod/solo an event for describe\n"
    );

    // wait: a condition that another writer makes true, and a timeout.
    let timed_out = cluster.fails(
        &["wait", "pod/solo", "-n", "demo", "--for=condition=Ready", "--timeout", "1s"],
        None,
    );
    assert!(
        timed_out.contains("timed out after 1s waiting for condition Ready=True on pod/solo"),
        "{timed_out}"
    );
    let mut waiter = cluster.spawn_berth(&[
        "wait",
        "pods",
        "-l",
        "app=solo",
        "-n",
        "demo",
        "--for",
        "condition=ready",
        "--timeout",
        "60s",
    ]);
    rt.block_on(async {
        let api: Api<Pod> = Api::namespaced(&client, "demo");
        let mut pod = api.get("solo").await.unwrap();
        pod.status = Some(PodStatus {
            phase: "Running".into(),
            conditions: vec![PodCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        api.update_status(&pod).await.unwrap();
    });
    let status = waiter.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(waiter.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");
    assert_eq!(out, "pod/solo condition met\n");

    // get -w: the list, then each change.
    let mut watcher = cluster.spawn_berth(&["get", "pods", "-n", "demo", "-w", "--no-headers"]);
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("solo   0/1   Running"), "{first}");
    cluster.ok_with(
        &["apply", "-f", "-", "-n", "demo"],
        Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: later\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n"),
    );
    let next = lines.next().unwrap().unwrap();
    assert!(next.starts_with("later   0/1   Pending"), "{next}");
    let _ = watcher.kill();
    let _ = watcher.wait();

    // YAML errors name the file, field and line, and apply nothing.
    let bad = format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: typo\n  namespace: demo\nspec:\n  replicass: 1\n",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: never\n"
    );
    let err = cluster.fails(&["apply", "-f", "-"], Some(&bad));
    assert_eq!(
        err,
        "error: <stdin>: spec.replicass: unknown field (did you mean \"replicas\"?) (line 12, column 3)\n"
    );
    cluster.fails(&["get", "ns", "never"], None);
    // The server's validation error: one line with the field path.
    let invalid = MANIFESTS.split("---").nth(1).unwrap().replace("replicas: 2", "replicas: -1");
    let err = cluster.fails(&["apply", "-f", "-"], Some(&invalid));
    assert!(err.lines().count() == 2 && err.contains("spec.replicas"), "{err}");

    // delete: by name, waiting; NotFound is an error unless ignored.
    let out = cluster.ok(&["delete", "pod", "later", "-n", "demo", "--grace-period", "0"]);
    assert_eq!(out, "pod \"later\" deleted\n");
    cluster.fails(&["get", "pod", "later", "-n", "demo"], None);
    let err = cluster.fails(&["delete", "pod/later", "-n", "demo"], None);
    assert_eq!(err, "error: NotFound: pods \"later\" not found\n");
    cluster.ok(&["delete", "pod/later", "-n", "demo", "--ignore-not-found"]);
    // --cascade=orphan without waiting, and wait --for=delete.
    let out =
        cluster.ok(&["delete", "deploy", "web", "-n", "demo", "--cascade=orphan", "--wait=false"]);
    assert_eq!(out, "deployment.apps \"web\" deleted\n");
    // The orphan finalizer holds it until the garbage collector (not
    // running here) lets go; the test plays the collector.
    let live = rt.block_on(Api::<Deployment>::namespaced(&client, "demo").get("web")).unwrap();
    let meta = live.metadata.unwrap();
    assert!(meta.deletion_timestamp.is_some() && meta.finalizers == ["orphan"], "{meta:?}");
    let mut waiter = cluster.spawn_berth(&[
        "wait",
        "deploy/web",
        "-n",
        "demo",
        "--for=delete",
        "--timeout",
        "60s",
    ]);
    rt.block_on(async {
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        Api::<Deployment>::namespaced(&client, "demo").patch("web", &patch).await.unwrap();
    });
    let status = waiter.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(waiter.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");
    assert_eq!(out, "deployment.apps/web deleted\n");
    // delete -f deletes what the manifests name.
    let out = cluster.ok(&["delete", "-f", tree.to_str().unwrap()]);
    assert_eq!(out, "namespace \"other\" deleted\n");

    // The config file: --server overrides it, --context picks another,
    // and without either a cluster is asked for.
    let only_second = cluster.peers[1].grpc.clone();
    assert_eq!(
        cluster.ok(&["get", "ns", "demo", "-o", "name", "--server", &only_second]),
        "namespace/demo\n"
    );
    let err = cluster.fails(&["get", "ns", "--context", "elsewhere"], None);
    assert!(err.contains("no context \"elsewhere\""), "{err}");
    let empty = dir.join("empty-config");
    let run = peers::berth_with(&empty, &["get", "ns"], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("pass --server"), "{}", run.stderr);

    // Failover: the first peer in the config dies; the verbs go on.
    cluster.kill(0);
    assert_eq!(cluster.ok(&["get", "pods", "-n", "demo", "-o", "name"]), "pod/solo\n");
    assert!(cluster
        .ok_with(&["apply", "-f", "-"], Some(MANIFESTS))
        .contains("deployment.apps/web created"));
}

//! Node authorization, NodeRestriction and pod security admission on a
//! running peer, reached with static bearer tokens: a node's credential
//! reaches only its own Node, Lease and bound pods, and a namespace's pod
//! security label decides which pods it takes.

use berth_apiserver::filters::{
    AdmissionPlugin, AuthorizationMode, PodSecurityConfig, ENFORCE_LABEL, WARN_LABEL,
};
use berth_client::{Api, Client, Config, DeleteParams};
use berth_proto::coordination_v1::{Lease, LeaseSpec};
use berth_proto::core_v1::{
    Container, HostPathVolumeSource, Namespace, Node, NodeStatus, Pod, PodSpec, PodStatus,
    SecurityContext, Volume,
};
use berth_proto::meta_v1::ObjectMeta;
use berth_tests::cluster::ApiCluster;

const TOKENS: &str = r#"admin-token,system:admin,1,"system:masters"
node-a-token,system:node:a,2,"system:nodes"
node-b-token,system:node:b,3,"system:nodes"
ops-token,ops,4
"#;

fn client_as(cluster: &ApiCluster, token: &str) -> Client {
    let mut config = Config::new([cluster.address(0)]);
    config.token = Some(token.into());
    Client::with_config(config).expect("a client of a loopback address")
}

fn meta(namespace: &str, name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta { name: name.into(), namespace: namespace.into(), ..Default::default() })
}

fn node(name: &str) -> Node {
    Node { metadata: meta("", name), ..Default::default() }
}

fn lease(name: &str) -> Lease {
    Lease {
        metadata: meta("kube-node-lease", name),
        spec: Some(LeaseSpec { holder_identity: Some(name.into()), ..Default::default() }),
        ..Default::default()
    }
}

fn pod(namespace: &str, name: &str, spec: PodSpec) -> Pod {
    let mut spec = spec;
    if spec.containers.is_empty() {
        spec.containers =
            vec![Container { name: "c".into(), image: "busybox".into(), ..Default::default() }];
    }
    Pod { metadata: meta(namespace, name), spec: Some(spec), ..Default::default() }
}

fn bound_to(node: &str) -> PodSpec {
    PodSpec { node_name: node.into(), ..Default::default() }
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, berth_client::Error>) -> String {
    match result {
        Err(e) if e.reason() == "Forbidden" => e.to_string(),
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

fn privileged() -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            security_context: Some(SecurityContext {
                privileged: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn host_path() -> PodSpec {
    PodSpec {
        volumes: vec![Volume {
            name: "root".into(),
            host_path: Some(HostPathVolumeSource { path: "/".into(), r#type: None }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn secured_cluster(name: &str, dir: &tempfile::TempDir) -> ApiCluster {
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    ApiCluster::start_with(1, name, |config| {
        // Node first: its Deny of another node's objects is final; what it
        // has no opinion on, everyone may do here (RBAC is tested apart).
        config.authorization_modes = vec![AuthorizationMode::Node, AuthorizationMode::AlwaysAllow];
        config.admission_plugins =
            vec![AdmissionPlugin::NodeRestriction, AdmissionPlugin::PodSecurity];
        config.pod_security =
            PodSecurityConfig { exempt_users: vec!["ops".into()], ..Default::default() };
        config.guards.token_auth_file = Some(tokens.clone());
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_only_its_own_node_lease_and_pods() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secured_cluster("node-authorization", &dir).await;
    let (a, b) = (client_as(&cluster, "node-a-token"), client_as(&cluster, "node-b-token"));
    let admin = client_as(&cluster, "admin-token");

    // Each node registers itself and keeps its own Node and Lease.
    let (nodes_a, nodes_b) = (Api::<Node>::all(&a), Api::<Node>::all(&b));
    let mut own = nodes_a.create(&node("a")).await.unwrap();
    nodes_b.create(&node("b")).await.unwrap();
    own.status = Some(NodeStatus::default());
    own = nodes_a.update_status(&own).await.unwrap();
    own.metadata.as_mut().unwrap().labels.insert("zone".into(), "one".into());
    nodes_a.update(&own).await.unwrap();
    let (leases_a, leases_b) = (
        Api::<Lease>::namespaced(&a, "kube-node-lease"),
        Api::<Lease>::namespaced(&b, "kube-node-lease"),
    );
    let own_lease = leases_a.create(&lease("a")).await.unwrap();
    leases_a.update(&own_lease).await.unwrap();
    let b_lease = leases_b.create(&lease("b")).await.unwrap();

    // B's Node and Lease are out of A's reach, by name or by object.
    let b_node = nodes_a.list(&Default::default()).await.unwrap().items;
    let mut b_node = b_node.into_iter().find(|n| n.metadata.as_ref().unwrap().name == "b").unwrap();
    let err = forbidden(nodes_a.get("b").await);
    assert!(err.contains("may only reach its own Node"), "{err}");
    forbidden(nodes_a.update(&b_node).await);
    b_node.status = Some(NodeStatus::default());
    forbidden(nodes_a.update_status(&b_node).await);
    forbidden(nodes_a.create(&node("c")).await);
    forbidden(leases_a.get("b").await);
    forbidden(leases_a.update(&b_lease).await);
    forbidden(leases_a.create(&lease("c")).await);

    // Pods: status and deletion only of pods bound to the node itself.
    let pods_admin = Api::<Pod>::namespaced(&admin, "default");
    let on_a = pods_admin.create(&pod("default", "on-a", bound_to("a"))).await.unwrap();
    let on_b = pods_admin.create(&pod("default", "on-b", bound_to("b"))).await.unwrap();
    let (pods_a, pods_b) =
        (Api::<Pod>::namespaced(&a, "default"), Api::<Pod>::namespaced(&b, "default"));
    let running = |mut p: Pod| {
        p.status = Some(PodStatus { phase: "Running".into(), ..Default::default() });
        p
    };
    let err = forbidden(pods_a.update_status(&running(on_b.clone())).await);
    assert!(err.contains("bound to"), "{err}");
    forbidden(pods_a.delete("on-b", &DeleteParams::default()).await);
    forbidden(pods_a.create(&pod("default", "mine", bound_to("a"))).await);
    pods_a.update_status(&running(on_a.clone())).await.unwrap();
    pods_b.update_status(&running(on_b)).await.unwrap();
    let gone = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    pods_a.delete("on-a", &gone).await.unwrap();
    // Reads stay open to nodes: the agent lists the pods bound to it.
    assert_eq!(pods_a.list(&Default::default()).await.unwrap().items.len(), 1);

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespace_label_sets_the_pod_security_level() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secured_cluster("pod-security", &dir).await;
    let admin = client_as(&cluster, "admin-token");
    let namespaces = Api::<Namespace>::all(&admin);
    for level in ["restricted", "baseline", "privileged"] {
        let mut ns = Namespace { metadata: meta("", level), ..Default::default() };
        ns.metadata.as_mut().unwrap().labels.insert(ENFORCE_LABEL.into(), level.into());
        namespaces.create(&ns).await.unwrap();
    }
    let pods = |ns: &str| Api::<Pod>::namespaced(&admin, ns);

    let err = forbidden(pods("restricted").create(&pod("restricted", "priv", privileged())).await);
    assert!(err.contains(r#"violates PodSecurity "restricted:latest""#), "{err}");
    assert!(
        err.contains(r#"privileged (container "c" must not set securityContext.privileged=true)"#),
        "{err}"
    );
    let err = forbidden(pods("restricted").create(&pod("restricted", "disk", host_path())).await);
    assert!(err.contains(r#"hostPath volumes (volume "root")"#), "{err}");

    let host_network = PodSpec { host_network: true, ..Default::default() };
    let err =
        forbidden(pods("baseline").create(&pod("baseline", "net", host_network.clone())).await);
    assert!(
        err.contains(
            r#"violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
        ),
        "{err}"
    );
    // A baseline pod is fine there; anything goes where privileged is
    // enforced, and in the default namespace, unlabelled (default level
    // privileged).
    pods("baseline").create(&pod("baseline", "plain", PodSpec::default())).await.unwrap();
    pods("privileged").create(&pod("privileged", "net", host_network)).await.unwrap();
    pods("privileged").create(&pod("privileged", "priv", privileged())).await.unwrap();
    pods("default").create(&pod("default", "disk", host_path())).await.unwrap();

    // An exempt user's pods are not checked.
    let ops = Api::<Pod>::namespaced(&client_as(&cluster, "ops-token"), "restricted");
    ops.create(&pod("restricted", "priv", privileged())).await.unwrap();

    // The warn label lets the pod in, and REST says why it would not be.
    let mut warned = Namespace { metadata: meta("", "warned"), ..Default::default() };
    warned.metadata.as_mut().unwrap().labels.insert(WARN_LABEL.into(), "restricted".into());
    namespaces.create(&warned).await.unwrap();
    // Through the client first, which retries until admission knows the
    // namespace.
    pods("warned").create(&pod("warned", "first", PodSpec::default())).await.unwrap();
    let body = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"plain"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let response =
        post(cluster.http_address(0), "/api/v1/namespaces/warned/pods", "admin-token", body).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let warning = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("warning:"))
        .unwrap_or_else(|| panic!("no Warning header: {response}"));
    assert!(
        warning.contains(r#"299 - "would violate PodSecurity \"restricted:latest\": "#),
        "{warning}"
    );
    assert!(warning.contains("allowPrivilegeEscalation != false"), "{warning}");

    cluster.shutdown().await;
}

/// A REST POST of `body` as JSON with a bearer token; the whole response.
async fn post(addr: std::net::SocketAddr, path: &str, token: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

//! The rbac.authorization.k8s.io kinds over gRPC on a real store, and the
//! RBAC authorizer deciding requests from the roles and bindings stored.

use berth_apiserver::api::{services, Api};
use berth_apiserver::filters::{Anonymous, Filters, Rbac, TokenFile};
use berth_apiserver::Registry;
use berth_proto::api_v1::cluster_role_bindings_client::ClusterRoleBindingsClient;
use berth_proto::api_v1::cluster_roles_client::ClusterRolesClient;
use berth_proto::api_v1::pods_client::PodsClient;
use berth_proto::api_v1::role_bindings_client::RoleBindingsClient;
use berth_proto::api_v1::roles_client::RolesClient;
use berth_proto::api_v1::{DeleteRequest, GetRequest, ListRequest};
use berth_proto::meta_v1::{ObjectMeta, Status};
use berth_proto::rbac_v1::{ClusterRole, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use berth_raft_store::{Store, StoreConfig};
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::Channel;

const RBAC: &str = "rbac.authorization.k8s.io";

/// One apiserver peer with every gRPC service, its bootstrap done.
struct Peer {
    api: Api,
    channel: Channel,
    store: Store,
    stop: tokio_util::sync::CancellationToken,
    _dir: tempfile::TempDir,
}

/// `rbac`: tokens `admin-token` (group system:masters) and `alice-token`
/// are known, and RBAC alone authorizes; otherwise the default filters.
async fn peer(rbac: bool) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(1, "rbac-test", dir.path().join("store"), "127.0.0.1:1");
    config.election_timeout = (Duration::from_millis(150), Duration::from_millis(300));
    config.heartbeat = Duration::from_millis(50);
    let store = Store::open(config).await.unwrap();
    store.initialize(BTreeMap::from([(1, "127.0.0.1:1".to_string())])).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let registry = Registry::new(store.clone());
    let mut filters = Filters::default();
    if rbac {
        let tokens =
            TokenFile::parse("admin-token,admin,1,\"system:masters\"\nalice-token,alice,2\n")
                .unwrap();
        filters.authenticators = vec![Box::new(tokens), Box::new(Anonymous)];
        filters.authorizers = vec![Box::new(Rbac::start(registry.clone(), &stop))];
    }
    let api = Api::new(registry, stop.clone()).with_filters(filters);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.bootstrap().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "bootstrap never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = services(api.clone());
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(s.pods)
            .add_service(s.roles)
            .add_service(s.cluster_roles)
            .add_service(s.role_bindings)
            .add_service(s.cluster_role_bindings)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                token.cancelled(),
            )
            .await;
    });
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    Peer { api, channel, store, stop, _dir: dir }
}

impl Peer {
    async fn stop(self) {
        self.stop.cancel();
        self.store.shutdown().await;
    }
}

fn meta(namespace: &str, name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta { name: name.into(), namespace: namespace.into(), ..Default::default() })
}

fn role_ref(kind: &str, name: &str) -> Option<RoleRef> {
    Some(RoleRef { api_group: RBAC.into(), kind: kind.into(), name: name.into() })
}

fn user(name: &str) -> Subject {
    Subject { kind: "User".into(), name: name.into(), ..Default::default() }
}

/// A request carrying `token` as a bearer token.
fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

fn status_of(e: &tonic::Status) -> Status {
    Status::decode(e.details()).unwrap()
}

#[tokio::test]
async fn roles_and_bindings_are_created_read_updated_and_deleted() {
    let peer = peer(false).await;
    let mut roles = RolesClient::new(peer.channel.clone());
    let mut cluster_roles = ClusterRolesClient::new(peer.channel.clone());
    let mut bindings = RoleBindingsClient::new(peer.channel.clone());
    let mut cluster_bindings = ClusterRoleBindingsClient::new(peer.channel.clone());

    // The bootstrap policy is there.
    let list = cluster_roles.list(ListRequest::default()).await.unwrap().into_inner();
    let names: Vec<&str> =
        list.items.iter().filter_map(|r| r.metadata.as_ref()).map(|m| m.name.as_str()).collect();
    for name in ["cluster-admin", "admin", "edit", "view", "system:kube-scheduler"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let admin = cluster_bindings
        .get(GetRequest { name: "cluster-admin".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(admin.subjects[0].name, "system:masters");

    let role = Role {
        metadata: meta("default", "pod-reader"),
        rules: vec![PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let created = roles.create(role).await.unwrap().into_inner();
    assert_eq!(created.api_version, "rbac.authorization.k8s.io/v1");
    assert!(!created.metadata.as_ref().unwrap().uid.is_empty());

    let binding = RoleBinding {
        metadata: meta("default", "read-pods"),
        subjects: vec![user("alice")],
        role_ref: role_ref("Role", "pod-reader"),
        ..Default::default()
    };
    let created = bindings.create(binding).await.unwrap().into_inner();
    // Users are in the RBAC group unless they say otherwise.
    assert_eq!(created.subjects[0].api_group, RBAC);

    // More subjects: fine. Another role: refused, the reference is fixed.
    let mut more = created.clone();
    more.subjects.push(user("bob"));
    let updated = bindings.update(more).await.unwrap().into_inner();
    assert_eq!(updated.subjects.len(), 2);
    let mut other = updated.clone();
    other.role_ref = role_ref("ClusterRole", "view");
    let err = bindings.update(other).await.unwrap_err();
    let status = status_of(&err);
    assert_eq!(status.reason, "Invalid", "{status:?}");
    assert!(status.message.contains("cannot change roleRef"), "{}", status.message);

    // A ClusterRoleBinding may not refer to a Role; nothing refers to a Foo.
    let mut bad = RoleBinding {
        metadata: meta("default", "bad"),
        subjects: vec![user("alice")],
        role_ref: role_ref("Foo", "x"),
        ..Default::default()
    };
    let err = bindings.create(bad.clone()).await.unwrap_err();
    assert_eq!(status_of(&err).reason, "Invalid");
    bad.role_ref = role_ref("ClusterRole", "view");
    bindings.create(bad).await.unwrap();

    let custom = ClusterRole {
        metadata: meta("", "node-reader"),
        rules: vec![PolicyRule {
            verbs: vec!["get".into()],
            non_resource_ur_ls: vec!["/healthz".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    cluster_roles.create(custom).await.unwrap();

    let list = bindings
        .list(ListRequest { namespace: "default".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.items.len(), 2);
    bindings
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "read-pods".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = bindings
        .get(GetRequest {
            namespace: "default".into(),
            name: "read-pods".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cluster_roles
        .delete(DeleteRequest { name: "node-reader".into(), ..Default::default() })
        .await
        .unwrap();
    peer.stop().await;
}

#[tokio::test]
async fn a_user_without_a_binding_is_forbidden_until_a_role_binding_grants_access() {
    let peer = peer(true).await;
    let mut pods = PodsClient::new(peer.channel.clone());
    let mut bindings = RoleBindingsClient::new(peer.channel.clone());
    let list = |namespace: &str| ListRequest { namespace: namespace.into(), ..Default::default() };

    let err = pods.list(with_token("alice-token", list("default"))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        status_of(&err).message,
        r#"forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    // Anonymous callers are no better off.
    let err = pods.list(list("default")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // The admin (system:masters, bound to cluster-admin at bootstrap) may
    // bind once the authorizer's cache has the bootstrap policy.
    let grant = RoleBinding {
        metadata: meta("default", "alice-views"),
        subjects: vec![user("alice")],
        role_ref: role_ref("ClusterRole", "view"),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match bindings.create(with_token("admin-token", grant.clone())).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::PermissionDenied => {
                assert!(tokio::time::Instant::now() < deadline, "admin never allowed: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    loop {
        match pods.list(with_token("alice-token", list("default"))).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::PermissionDenied => {
                assert!(tokio::time::Instant::now() < deadline, "alice never allowed: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    // view reads in its namespace only, and writes nothing.
    let err = pods.list(with_token("alice-token", list("kube-system"))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let delete =
        DeleteRequest { namespace: "default".into(), name: "x".into(), ..Default::default() };
    let err = pods.delete(with_token("alice-token", delete)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = bindings.create(with_token("alice-token", grant)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    peer.stop().await;
}

/// Escalation prevention: alice, `admin` in namespace x, may grant there
/// what she holds there (`edit`) and nothing more.
#[tokio::test]
async fn a_namespace_admin_grants_only_what_it_holds() {
    use berth_proto::core_v1::Namespace;
    let peer = peer(true).await;
    let x = Namespace { metadata: meta("", "x"), ..Default::default() };
    Registry::new(peer.store.clone()).create(x).await.unwrap();
    let mut roles = RolesClient::new(peer.channel.clone());
    let mut bindings = RoleBindingsClient::new(peer.channel.clone());
    let grant = |who: &str, role: &str| RoleBinding {
        metadata: meta("x", &format!("{who}-{role}")),
        subjects: vec![user(who)],
        role_ref: role_ref("ClusterRole", role),
        ..Default::default()
    };
    // Each write is retried until the authorizer's cache has what allows it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for (token, binding) in
        [("admin-token", grant("alice", "admin")), ("alice-token", grant("bob", "edit"))]
    {
        loop {
            match bindings.create(with_token(token, binding.clone())).await {
                Ok(_) => break,
                Err(e) if e.code() == tonic::Code::PermissionDenied => {
                    assert!(tokio::time::Instant::now() < deadline, "never allowed: {e:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    let escalation = "is attempting to grant RBAC permissions not currently held";
    let err = bindings
        .create(with_token("alice-token", grant("bob", "cluster-admin")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let message = status_of(&err).message;
    assert!(message.contains(escalation) && message.contains(r#"user "alice""#), "{message}");
    let rule = |resource: &str| PolicyRule {
        verbs: vec!["get".into()],
        api_groups: vec!["".into()],
        resources: vec![resource.into()],
        ..Default::default()
    };
    let nodes =
        Role { metadata: meta("x", "nodes"), rules: vec![rule("nodes")], ..Default::default() };
    let err = roles.create(with_token("alice-token", nodes)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let message = status_of(&err).message;
    assert!(
        message.contains(escalation) && message.contains(r#"Resources:["nodes"]"#),
        "{message}"
    );
    let pods =
        Role { metadata: meta("x", "pods"), rules: vec![rule("pods")], ..Default::default() };
    roles.create(with_token("alice-token", pods)).await.unwrap();
    peer.stop().await;
}

#[tokio::test]
async fn bootstrap_roles_get_back_the_rules_they_lack_unless_opted_out() {
    let peer = peer(false).await;
    let mut cluster_roles = ClusterRolesClient::new(peer.channel.clone());
    let get = |name: &str| GetRequest { name: name.into(), ..Default::default() };
    let attach = |r: &PolicyRule| r.resources.iter().any(|x| x == "pods/attach");

    // An older cluster's edit role: no attach, and a rule of the admin's own.
    let mut edit = cluster_roles.get(get("edit")).await.unwrap().into_inner();
    let default_rule = edit.rules.iter().find(|r| attach(r)).cloned().unwrap();
    for rule in &mut edit.rules {
        rule.resources.retain(|x| x != "pods/attach");
    }
    let own = PolicyRule {
        verbs: vec!["get".into()],
        api_groups: vec!["example.com".into()],
        resources: vec!["widgets".into()],
        ..Default::default()
    };
    edit.rules.push(own.clone());
    cluster_roles.update(edit).await.unwrap();
    // view opts out of updates and is emptied.
    let mut view = cluster_roles.get(get("view")).await.unwrap().into_inner();
    let meta = view.metadata.as_mut().unwrap();
    meta.annotations.insert("rbac.authorization.kubernetes.io/autoupdate".into(), "false".into());
    view.rules.clear();
    cluster_roles.update(view).await.unwrap();

    // The next start reconciles.
    peer.api.bootstrap().await.unwrap();
    let edit = cluster_roles.get(get("edit")).await.unwrap().into_inner();
    assert!(edit.rules.contains(&default_rule), "{:?}", edit.rules);
    assert!(edit.rules.contains(&own), "the admin's own rule stays: {:?}", edit.rules);
    let view = cluster_roles.get(get("view")).await.unwrap().into_inner();
    assert!(view.rules.is_empty(), "an opted-out role is left alone: {:?}", view.rules);
    // A reconciled role is not written again.
    let version = edit.metadata.as_ref().unwrap().resource_version.clone();
    peer.api.bootstrap().await.unwrap();
    let again = cluster_roles.get(get("edit")).await.unwrap().into_inner();
    assert_eq!(again.metadata.unwrap().resource_version, version);
    peer.stop().await;
}

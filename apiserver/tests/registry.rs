//! The registry over a real (single-peer) store: create, get, list with
//! selectors and pages, optimistic concurrency, delete and watch.

use berth_apiserver::registry::{ListOptions, WatchEvent};
use berth_apiserver::{ApiError, Registry};
use berth_proto::core_v1::{Pod, PodSpec};
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::Resource;
use berth_raft_store::{Store, StoreConfig};
use std::collections::BTreeMap;
use std::time::Duration;

struct Fixture {
    registry: Registry<Store>,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(1, "registry-test", dir.path().join("store"), "127.0.0.1:1");
    config.election_timeout = (Duration::from_millis(150), Duration::from_millis(300));
    config.heartbeat = Duration::from_millis(50);
    let store = Store::open(config).await.unwrap();
    store.initialize(BTreeMap::from([(1, "127.0.0.1:1".to_string())])).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !store.is_leader() {
        assert!(tokio::time::Instant::now() < deadline, "single peer never led");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Fixture { registry: Registry::new(store.clone()), store, _dir: dir }
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], node: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
        spec: Some(PodSpec { node_name: node.into(), ..Default::default() }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_delete_with_resource_versions() {
    let f = fixture().await;
    let created = f.registry.create(pod("default", "a", &[("app", "web")], "")).await.unwrap();
    let meta = created.metadata();
    assert_eq!(meta.generation, 1);
    assert_eq!(meta.uid.len(), 36);
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(created.type_meta(), ("v1", "Pod"));
    let rv: i64 = meta.resource_version.parse().unwrap();

    let err = f.registry.create(pod("default", "a", &[], "")).await.unwrap_err();
    assert!(matches!(err, ApiError::AlreadyExists { .. }), "{err}");

    let got: Pod = f.registry.get("default", "a", "").await.unwrap();
    assert_eq!(got, created);
    // The key layout is Kubernetes' own.
    let raw = f
        .store
        .range(berth_proto::etcd::etcdserverpb::RangeRequest {
            key: b"/registry/pods/default/a".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(raw.kvs[0].mod_revision, rv);

    let mut changed = got.clone();
    changed.metadata_mut().labels.insert("tier".into(), "front".into());
    let updated = f.registry.update(changed.clone(), |_, _| Ok(())).await.unwrap();
    assert!(updated.metadata().resource_version.parse::<i64>().unwrap() > rv);
    // The same stale version again: a conflict, nothing written.
    let err = f.registry.update(changed, |_, _| Ok(())).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err}");

    let err = f.registry.remove::<Pod>("default", "a", Some(&rv.to_string())).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err}");
    let gone: Pod = f.registry.remove("default", "a", None).await.unwrap();
    assert_eq!(gone.metadata().labels["tier"], "front");
    let err = f.registry.get::<Pod>("default", "a", "").await.unwrap_err();
    assert!(matches!(err, ApiError::NotFound { .. }), "{err}");
    assert_eq!(err.status().code, 404);
    f.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_makes_unique_names() {
    let f = fixture().await;
    let mut names = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut p = pod("default", "", &[], "");
        p.metadata_mut().generate_name = "web-".into();
        let created = f.registry.create(p).await.unwrap();
        assert!(created.metadata().name.starts_with("web-"));
        assert_eq!(created.metadata().name.len(), 9);
        assert!(names.insert(created.metadata().name.clone()));
    }
    f.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_selectors_and_pages_at_one_revision() {
    let f = fixture().await;
    for i in 0..30 {
        let app = if i % 3 == 0 { "db" } else { "web" };
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        f.registry.create(pod("shop", &format!("p{i:02}"), &[("app", app)], node)).await.unwrap();
    }
    f.registry.create(pod("other", "x", &[("app", "web")], "n1")).await.unwrap();

    let all = f.registry.list::<Pod>(None, &ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 31);
    let shop = f.registry.list::<Pod>(Some("shop"), &ListOptions::default()).await.unwrap();
    assert_eq!(shop.items.len(), 30);
    let web = ListOptions { label_selector: "app=web".into(), ..Default::default() };
    assert_eq!(f.registry.list::<Pod>(Some("shop"), &web).await.unwrap().items.len(), 20);
    let on_n1 = ListOptions {
        field_selector: "spec.nodeName=n1".into(),
        label_selector: "app in (db)".into(),
        ..Default::default()
    };
    let found = f.registry.list::<Pod>(Some("shop"), &on_n1).await.unwrap().items;
    assert!(found
        .iter()
        .all(|p| p.spec.as_ref().unwrap().node_name == "n1" && p.metadata().labels["app"] == "db"));
    assert_eq!(found.len(), 5);

    // Pages of 7 over a pinned revision: a create in between is not seen.
    let mut options =
        ListOptions { limit: 7, label_selector: "app=web".into(), ..Default::default() };
    let mut seen = Vec::new();
    let mut revision = None;
    loop {
        let page = f.registry.list::<Pod>(Some("shop"), &options).await.unwrap();
        assert!(page.items.len() <= 7);
        revision.get_or_insert(page.resource_version.clone());
        assert_eq!(Some(&page.resource_version), revision.as_ref());
        seen.extend(page.items.into_iter().map(|p| p.metadata().name.clone()));
        if seen.len() == 7 {
            f.registry.create(pod("shop", "p99", &[("app", "web")], "n1")).await.unwrap();
        }
        if page.continue_token.is_empty() {
            break;
        }
        options.continue_token = page.continue_token;
    }
    assert_eq!(seen.len(), 20, "{seen:?}");
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 20);

    let bad = ListOptions { field_selector: "spec.hostname=x".into(), ..Default::default() };
    assert!(matches!(
        f.registry.list::<Pod>(None, &bad).await.unwrap_err(),
        ApiError::BadRequest(_)
    ));
    let bad = ListOptions { label_selector: "app in web".into(), ..Default::default() };
    assert!(matches!(
        f.registry.list::<Pod>(None, &bad).await.unwrap_err(),
        ApiError::BadRequest(_)
    ));
    f.store.shutdown().await;
}

async fn next(w: &mut berth_apiserver::registry::WatchStream<Pod>) -> WatchEvent<Pod> {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("an event in time")
        .expect("open")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_changes_and_selector_moves() {
    let f = fixture().await;
    let first = f.registry.create(pod("default", "a", &[("app", "web")], "")).await.unwrap();
    let rv = first.metadata().resource_version.clone();
    let mut all = f.registry.watch::<Pod>(Some("default"), &rv, "", "", None).unwrap();
    let mut web = f.registry.watch::<Pod>(Some("default"), &rv, "app=web", "", None).unwrap();

    let mut b = f.registry.create(pod("default", "b", &[("app", "web")], "")).await.unwrap();
    b.metadata_mut().labels.insert("app".into(), "db".into());
    let b = f.registry.update(b, |_, _| Ok(())).await.unwrap();
    f.registry.remove::<Pod>("default", "b", None).await.unwrap();

    assert!(matches!(next(&mut all).await, WatchEvent::Added(p) if p.metadata().name == "b"));
    assert!(
        matches!(next(&mut all).await, WatchEvent::Modified(p) if p.metadata().resource_version == b.metadata().resource_version)
    );
    assert!(matches!(next(&mut all).await, WatchEvent::Deleted(p) if p.metadata().name == "b"));
    // The selector watch sees b arrive, then leave when its label changes.
    assert!(matches!(next(&mut web).await, WatchEvent::Added(_)));
    assert!(matches!(next(&mut web).await, WatchEvent::Deleted(_)));
    web.request_bookmark();
    assert!(matches!(next(&mut web).await, WatchEvent::Bookmark(_)));
    f.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_compacted_after_the_retention_window() {
    let f = fixture().await;
    let first = f.registry.create(pod("default", "old", &[], "")).await.unwrap();
    let old_rv = first.metadata().resource_version.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let compactor = berth_apiserver::spawn_compactor(
        f.store.clone(),
        Duration::from_millis(200),
        Duration::from_millis(50),
        stop.clone(),
    );
    // Keep writing until a watch from the first revision is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    loop {
        f.registry.create(pod("default", &format!("new-{i}"), &[], "")).await.unwrap();
        i += 1;
        let mut watch = f.registry.watch::<Pod>(Some("default"), &old_rv, "", "", None).unwrap();
        let first_event =
            tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap();
        if let Err(ApiError::Expired { .. }) = first_event {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "history was never compacted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What is current is still there.
    let listed = f.registry.list::<Pod>(Some("default"), &ListOptions::default()).await.unwrap();
    assert_eq!(listed.items.len(), i + 1);
    stop.cancel();
    compactor.await.unwrap();
    f.store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_check_preconditions_and_store_nothing() {
    let f = fixture().await;
    let dry = f.registry.dry_run();
    let would = dry.create(pod("default", "a", &[], "")).await.unwrap();
    assert!(would.metadata().resource_version.is_empty());
    let err = f.registry.get::<Pod>("default", "a", "").await.unwrap_err();
    assert!(matches!(err, ApiError::NotFound { .. }), "{err}");

    let stored = f.registry.create(pod("default", "a", &[], "")).await.unwrap();
    let err = dry.create(pod("default", "a", &[], "")).await.unwrap_err();
    assert!(matches!(err, ApiError::AlreadyExists { .. }), "{err}");

    let mut changed = stored.clone();
    changed.metadata_mut().labels.insert("x".into(), "1".into());
    let would = dry.update(changed.clone(), |_, _| Ok(())).await.unwrap();
    assert_eq!(would.metadata().labels["x"], "1");
    let now: Pod = f.registry.get("default", "a", "").await.unwrap();
    assert_eq!(now, stored);
    // Against a version that has moved on: the real write's Conflict.
    let stored = f.registry.update(changed.clone(), |_, _| Ok(())).await.unwrap();
    let err = dry.update(changed, |_, _| Ok(())).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict { .. }), "{err}");

    let removed: Pod = dry.remove("default", "a", None).await.unwrap();
    assert_eq!(removed, stored);
    let still: Pod = f.registry.get("default", "a", "").await.unwrap();
    assert_eq!(still, stored);
    // Nothing was written since the real update.
    assert_eq!(f.store.revision().to_string(), stored.metadata().resource_version);
}

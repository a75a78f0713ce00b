//! Informers: a local, indexed copy of one resource kept current by list +
//! watch, telling handlers what changed.
//!
//! The loop is a small state machine:
//!
//! ```text
//!   Relist --(all pages at one revision; cache replaced)--> Watch(rv)
//!   Watch(rv) --(event/bookmark)--> Watch(rv')
//!   Watch(rv) --(stream lost)--> Watch(rv)        (re-opened, on any peer)
//!   Watch(rv) --(Expired: rv was compacted)--> Relist
//! ```
//!
//! A relist replaces the cache in one step and reports the difference, so
//! a deletion missed while the watch was down still reaches the handlers.

use crate::api::{Api, ListParams, WatchEvent, WatchParams};
use crate::error::Error;
use crate::resource::ApiResource;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Items per list page during a relist.
const PAGE_SIZE: i64 = 500;
/// The first pause after a failed list or watch; doubles up to the max.
const BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A change to the cache, handed to handlers after the cache has it.
#[derive(Clone, Debug)]
pub enum Change<T> {
    Added(Arc<T>),
    Updated {
        old: Arc<T>,
        new: Arc<T>,
    },
    /// The last state the cache knew; after a relist it may be older than
    /// the object's real final state.
    Deleted(Arc<T>),
    /// Nothing changed; the periodic resync hands every object again so a
    /// controller re-checks it.
    Resync(Arc<T>),
}

impl<T> Change<T> {
    /// The object as it is now (or was last, for a deletion).
    pub fn object(&self) -> &Arc<T> {
        match self {
            Change::Added(o) | Change::Deleted(o) | Change::Resync(o) => o,
            Change::Updated { new, .. } => new,
        }
    }
}

/// The indexes every cache keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Index {
    Namespace,
    /// spec.nodeName (pods bound to a node).
    Node,
    /// The uid of each owner in metadata.ownerReferences.
    Owner,
}

const INDEXES: [Index; 3] = [Index::Namespace, Index::Node, Index::Owner];

/// The cache key of an object: `namespace/name`, or `name` when it has no
/// namespace — the key work queues carry.
pub fn key<T: ApiResource>(object: &T) -> String {
    let meta = object.metadata();
    if meta.namespace.is_empty() {
        meta.name.clone()
    } else {
        format!("{}/{}", meta.namespace, meta.name)
    }
}

/// A read handle on an informer's cache; cheap to clone.
pub struct Cache<T> {
    state: Arc<RwLock<Objects<T>>>,
    synced: watch::Receiver<bool>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache { state: self.state.clone(), synced: self.synced.clone() }
    }
}

struct Objects<T> {
    by_key: HashMap<String, Arc<T>>,
    indexes: HashMap<Index, HashMap<String, BTreeSet<String>>>,
}

fn index_values<T: ApiResource>(index: Index, object: &T) -> Vec<String> {
    let meta = object.metadata();
    match index {
        Index::Namespace => vec![meta.namespace.clone()],
        Index::Node => object.node_name().map(str::to_string).into_iter().collect(),
        Index::Owner => meta.owner_references.iter().map(|o| o.uid.clone()).collect(),
    }
}

impl<T: ApiResource> Objects<T> {
    fn insert(&mut self, key: String, object: Arc<T>) -> Option<Arc<T>> {
        let old = self.remove(&key);
        for index in INDEXES {
            let values = self.indexes.entry(index).or_default();
            for value in index_values(index, object.as_ref()) {
                values.entry(value).or_default().insert(key.clone());
            }
        }
        self.by_key.insert(key, object);
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<T>> {
        let old = self.by_key.remove(key)?;
        for index in INDEXES {
            let Some(values) = self.indexes.get_mut(&index) else { continue };
            for value in index_values(index, old.as_ref()) {
                if let Some(keys) = values.get_mut(&value) {
                    keys.remove(key);
                    if keys.is_empty() {
                        values.remove(&value);
                    }
                }
            }
        }
        Some(old)
    }
}

impl<T: ApiResource> Cache<T> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<T>> {
        self.state.read().expect("no handler panics while holding the cache lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<T>> {
        self.state.write().expect("no handler panics while holding the cache lock")
    }

    /// The object with this cache key (see [`key`]).
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().by_key.get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<T>> {
        self.read().by_key.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects whose `index` has `value` (a namespace, a node name, an
    /// owner's uid).
    pub fn by_index(&self, index: Index, value: &str) -> Vec<Arc<T>> {
        let objects = self.read();
        let Some(keys) = objects.indexes.get(&index).and_then(|v| v.get(value)) else {
            return Vec::new();
        };
        keys.iter().filter_map(|k| objects.by_key.get(k).cloned()).collect()
    }

    /// Whether the first list has been loaded.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list has been loaded (a controller must not act
    /// on a half-filled cache).
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // An error means the informer is gone; nothing more will come.
        let _ = synced.wait_for(|s| *s).await;
    }
}

/// What an informer follows.
#[derive(Clone, Debug, Default)]
pub struct InformerParams {
    pub label_selector: String,
    /// e.g. `spec.nodeName=node-1`: a kubelet's pods.
    pub field_selector: String,
    /// Hands every object to the handlers again this often; None = never.
    pub resync: Option<Duration>,
}

type Handler<T> = Box<dyn Fn(&Change<T>) + Send + Sync>;

/// Keeps a [`Cache`] of one resource current and reports each change.
pub struct Informer<T> {
    api: Api<T>,
    params: InformerParams,
    cache: Cache<T>,
    synced: watch::Sender<bool>,
    handlers: Vec<Handler<T>>,
}

/// Where the list + watch loop stands.
enum State {
    Relist,
    Watch { resource_version: String },
}

impl<T: ApiResource> Informer<T> {
    pub fn new(api: Api<T>, params: InformerParams) -> Informer<T> {
        let (synced, synced_rx) = watch::channel(false);
        let state = Objects { by_key: HashMap::new(), indexes: HashMap::new() };
        Informer {
            api,
            params,
            cache: Cache { state: Arc::new(RwLock::new(state)), synced: synced_rx },
            synced,
            handlers: Vec::new(),
        }
    }

    pub fn cache(&self) -> Cache<T> {
        self.cache.clone()
    }

    /// Calls `handler` on every change, after the cache has it. Handlers run
    /// on the informer's task: they should only note the change (queue a
    /// key), never wait.
    pub fn on_change(&mut self, handler: impl Fn(&Change<T>) + Send + Sync + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// Lists, watches and relists until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut state = State::Relist;
        let mut backoff = BACKOFF;
        let mut resync = self.params.resync.map(|every| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            let failed = match state {
                State::Relist => {
                    let listed = tokio::select! {
                        _ = stop.cancelled() => return,
                        listed = self.list_all() => listed,
                    };
                    match listed {
                        Ok((items, resource_version)) => {
                            self.replace(items);
                            let _ = self.synced.send_replace(true);
                            state = State::Watch { resource_version };
                            None
                        }
                        Err(e) => Some(e),
                    }
                }
                State::Watch { ref mut resource_version } => {
                    match self.watch(resource_version, &mut resync, &stop, &mut backoff).await {
                        Ok(true) => return,
                        Ok(false) => None,
                        Err(e) if e.is_expired() => {
                            tracing::info!(resource = T::PLURAL, "watch window lost; relisting");
                            metrics::counter!("berth_client_informer_relists_total", "resource" => T::PLURAL)
                                .increment(1);
                            state = State::Relist;
                            None
                        }
                        Err(e) => Some(e),
                    }
                }
            };
            if let Some(e) = failed {
                tracing::warn!(resource = T::PLURAL, error = %e, ?backoff, "list or watch failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(crate::client::jitter(backoff)) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Every page of a list, all at the first page's revision.
    async fn list_all(&self) -> Result<(Vec<T>, String), Error> {
        let mut params = ListParams {
            label_selector: self.params.label_selector.clone(),
            field_selector: self.params.field_selector.clone(),
            limit: PAGE_SIZE,
            ..Default::default()
        };
        let mut items = Vec::new();
        loop {
            let page = self.api.list(&params).await?;
            items.extend(page.items);
            if page.continue_token.is_empty() {
                return Ok((items, page.resource_version));
            }
            params.continue_token = page.continue_token;
        }
    }

    /// Follows one watch until it ends; Ok(true) when stopped, Ok(false)
    /// when the stream ended and should be reopened.
    async fn watch(
        &self,
        resource_version: &mut String,
        resync: &mut Option<tokio::time::Interval>,
        stop: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<bool, Error> {
        let params = WatchParams {
            label_selector: self.params.label_selector.clone(),
            field_selector: self.params.field_selector.clone(),
            bookmarks: true,
        };
        let mut stream = tokio::select! {
            _ = stop.cancelled() => return Ok(true),
            opened = self.api.watch(&params, resource_version) => opened?,
        };
        loop {
            let tick = async {
                match resync {
                    Some(tick) => tick.tick().await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                _ = stop.cancelled() => return Ok(true),
                _ = tick => {
                    self.resync();
                    continue;
                }
                event = stream.next() => event,
            };
            let Some(event) = event else { return Ok(false) };
            *backoff = BACKOFF;
            match event? {
                WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                    *resource_version = object.metadata().resource_version.clone();
                    self.upsert(object);
                }
                WatchEvent::Deleted(object) => {
                    *resource_version = object.metadata().resource_version.clone();
                    let removed = self.cache.write().remove(&key(&object));
                    let last = removed.unwrap_or_else(|| Arc::new(object));
                    self.notify(&Change::Deleted(last));
                }
                WatchEvent::Bookmark(version) => *resource_version = version,
            }
        }
    }

    fn upsert(&self, object: T) {
        let object = Arc::new(object);
        let old = self.cache.write().insert(key(object.as_ref()), object.clone());
        match old {
            Some(old) => self.notify(&Change::Updated { old, new: object }),
            None => self.notify(&Change::Added(object)),
        }
    }

    /// Swaps the cache for a fresh list in one step, then reports the
    /// difference.
    fn replace(&self, items: Vec<T>) {
        let mut changes = Vec::new();
        {
            let mut objects = self.cache.write();
            let mut gone: BTreeSet<String> = objects.by_key.keys().cloned().collect();
            for item in items {
                let k = key(&item);
                gone.remove(&k);
                let same = objects.by_key.get(&k).is_some_and(|o| {
                    o.metadata().resource_version == item.metadata().resource_version
                });
                if same {
                    continue;
                }
                let new = Arc::new(item);
                match objects.insert(k, new.clone()) {
                    Some(old) => changes.push(Change::Updated { old, new }),
                    None => changes.push(Change::Added(new)),
                }
            }
            for k in gone {
                if let Some(old) = objects.remove(&k) {
                    changes.push(Change::Deleted(old));
                }
            }
        }
        for change in &changes {
            self.notify(change);
        }
    }

    fn resync(&self) {
        for object in self.cache.list() {
            self.notify(&Change::Resync(object));
        }
    }

    fn notify(&self, change: &Change<T>) {
        for handler in &self.handlers {
            handler(change);
        }
    }
}

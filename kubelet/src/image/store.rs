//! The image store: pulls images into the content store, unpacks each layer
//! once, records images and their names, and makes container rootfs from them.
//!
//! On disk, under its root:
//!
//! ```text
//! lock                      held (flock) by the one process that owns the store
//! images.json               images, names and rootfs leases; replaced atomically
//! blobs/<alg>/<hex>         verified blobs: manifests, configs, compressed layers
//! layers/<alg>/<hex>/       unpacked layers by diff_id; appear only complete (rename)
//! rootfs/<container>/       upper/, work/ and merged/ (the overlay mount)
//! tmp/                      downloads and unpacks in progress; emptied on open
//! ```
//!
//! Concurrency: pulls hold the GC lock shared and GC holds it exclusive, so
//! GC never removes what a pull is about to record; each layer has a keyed
//! lock, so concurrent pulls of one image download and unpack it once.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::content::{fsync_dir, temp_path, ContentStore};
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::manifest::{
    host_platform, layer_compression, parse_config, parse_manifest, select_manifest, Descriptor,
    ManifestDoc, Platform, RunConfig, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
};
use super::reference::Reference;
use super::registry::{RegistryClient, RegistryConfig};
use super::rootfs::{self, Rootfs};
use super::source::{blocking, Fetcher, ImageSource};
use super::unpack::unpack_layer;

/// Layers downloaded and unpacked at once by one pull (docker's default).
const CONCURRENT_LAYERS: usize = 3;
/// Progress for a download is reported at most once per this many bytes.
const PROGRESS_STEP: u64 = 512 << 10;

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The config's digest: the image's identity whatever it is called.
    pub id: Digest,
    /// Names (`registry/repository:tag`) that point at it.
    pub names: Vec<String>,
    /// `registry/repository@digest` for each repository it was pulled from.
    pub repo_digests: Vec<String>,
    /// What the name resolved to at pull time: an index or a manifest.
    pub digest: Digest,
    /// This platform's manifest.
    pub manifest_digest: Digest,
    pub layers: Vec<Layer>,
    /// What the image says to run.
    pub config: RunConfig,
    pub platform: Platform,
    /// Compressed size of config and layers, as the registry counts it.
    pub size: u64,
    /// RFC 3339 time of the last pull.
    pub pulled_at: String,
}

/// One layer of an image, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The (compressed) blob's digest.
    pub digest: Digest,
    /// The uncompressed tar's digest, which names the unpacked layer.
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// How a layer is getting on during a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPhase {
    /// Being downloaded; `done` of `total` bytes.
    Downloading,
    /// Downloaded and verified; being unpacked.
    Unpacking,
    /// Unpacked by this pull.
    Unpacked,
    /// Already unpacked in the store (by an earlier or concurrent pull).
    Present,
}

/// A progress event while pulling, for a CLI to draw one bar per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullEvent {
    pub layer: Digest,
    pub phase: LayerPhase,
    pub done: u64,
    pub total: u64,
}

/// Receives progress events; called from the pulling task, so it should only
/// hand the event on (to a channel, say).
pub type ProgressFn = Arc<dyn Fn(PullEvent) + Send + Sync>;

#[derive(Clone, Default)]
pub struct PullOptions {
    /// The name to record for the image; for a registry source the reference
    /// is the name already. A local source without one uses the name its
    /// exporter recorded, if any, and is otherwise known by digest only.
    pub name: Option<Reference>,
    pub progress: Option<ProgressFn>,
}

/// The store's metadata, kept whole in `images.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Db {
    images: BTreeMap<String, Image>,
    /// container id -> image id of its rootfs.
    rootfs: BTreeMap<String, String>,
}

pub(super) struct Inner {
    pub(super) root: PathBuf,
    pub(super) content: ContentStore,
    pub(super) layers: PathBuf,
    pub(super) tmp: PathBuf,
    rootfs_dir: PathBuf,
    registry: Arc<RegistryClient>,
    platform: Platform,
    db: Mutex<Db>,
    pub(super) gc_lock: tokio::sync::RwLock<()>,
    inflight: KeyedLocks,
    _lock: Flock<File>,
}

/// The node's image store. Cheap to clone; clones share one store.
#[derive(Clone)]
pub struct ImageStore {
    pub(super) inner: Arc<Inner>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, takes its lock and
    /// discards whatever an interrupted pull left in `tmp/`.
    pub fn open(root: impl Into<PathBuf>, registry: RegistryConfig) -> Result<ImageStore> {
        let root = root.into();
        let tmp = root.join("tmp");
        let layers = root.join("layers");
        let rootfs_dir = root.join("rootfs");
        for d in [&root, &tmp, &layers.join("sha256"), &layers.join("sha512"), &rootfs_dir] {
            fs::create_dir_all(d).map_err(ImageError::io(d))?;
        }
        let lock_path = root.join("lock");
        let lock_file = File::create(&lock_path).map_err(ImageError::io(&lock_path))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                match errno {
                    nix::Error::EWOULDBLOCK => ImageError::Locked(root.clone()),
                    e => ImageError::Sys {
                        context: format!("lock {}", lock_path.display()),
                        source: e,
                    },
                }
            })?;
        for e in fs::read_dir(&tmp).map_err(ImageError::io(&tmp))?.flatten() {
            let p = e.path();
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
        let db_path = root.join("images.json");
        let db = match fs::read(&db_path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| ImageError::CorruptMetadata {
                path: db_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Db::default(),
            Err(e) => return Err(ImageError::Io { path: db_path, source: e }),
        };
        Ok(ImageStore {
            inner: Arc::new(Inner {
                content: ContentStore::new(&root)?,
                registry: RegistryClient::new(registry)?,
                platform: host_platform(),
                db: Mutex::new(db),
                gc_lock: tokio::sync::RwLock::new(()),
                inflight: KeyedLocks::default(),
                _lock: lock,
                root,
                layers,
                tmp,
                rootfs_dir,
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Pulls an image: resolves the source to this platform's manifest,
    /// fetches and verifies config and layers, unpacks each missing layer,
    /// and records the image under its name.
    pub async fn pull(&self, source: &ImageSource, opts: &PullOptions) -> Result<Image> {
        let started = Instant::now();
        let result = self.pull_inner(source, opts).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("berth_kubelet_image_pulls_total", "result" => outcome).increment(1);
        metrics::histogram!("berth_kubelet_image_pull_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(img) => {
                tracing::info!(source = %source, id = %img.id, layers = img.layers.len(), elapsed_ms = started.elapsed().as_millis() as u64, "image pulled")
            }
            Err(e) => tracing::warn!(source = %source, error = %e, "image pull failed"),
        }
        result
    }

    async fn pull_inner(&self, source: &ImageSource, opts: &PullOptions) -> Result<Image> {
        let inner = &self.inner;
        let _no_gc = inner.gc_lock.read().await;
        let fetcher = Fetcher::open(source, &inner.registry).await?;
        let top = fetcher.top().await?;
        let what = source.to_string();
        let (manifest_digest, manifest_bytes, manifest) =
            match parse_manifest(&what, top.media_type.as_deref(), &top.bytes)? {
                ManifestDoc::Manifest(m) => (top.digest.clone(), top.bytes.clone(), m),
                ManifestDoc::Index(index) => {
                    let desc = select_manifest(&index, &inner.platform).ok_or_else(|| {
                        ImageError::NoMatchingPlatform {
                            platform: platform_string(&inner.platform),
                            index: top.digest.to_string(),
                        }
                    })?;
                    let bytes = fetcher.small_blob("manifest", desc, MAX_MANIFEST_BYTES).await?;
                    match parse_manifest(&desc.digest.to_string(), Some(&desc.media_type), &bytes)?
                    {
                        ManifestDoc::Manifest(m) => (desc.digest.clone(), bytes, m),
                        ManifestDoc::Index(_) => {
                            return Err(ImageError::Unsupported(format!(
                                "{what}: an index inside an index"
                            )))
                        }
                    }
                }
            };
        // Refuse what cannot be unpacked before downloading anything.
        for l in &manifest.layers {
            layer_compression(&l.media_type)?;
            if !l.urls.is_empty() {
                return Err(ImageError::Unsupported(format!(
                    "foreign layer {} (fetched from {:?})",
                    l.digest, l.urls
                )));
            }
        }
        let config_desc = &manifest.config;
        let config_bytes = if inner.content.has(&config_desc.digest) {
            let (content, d) = (inner.content.clone(), config_desc.digest.clone());
            blocking(move || content.read(&d, MAX_CONFIG_BYTES)).await?
        } else {
            fetcher.small_blob("config", config_desc, MAX_CONFIG_BYTES).await?
        };
        let config =
            parse_config(&format!("config {}", config_desc.digest), &config_bytes, &manifest)?;

        {
            let content = inner.content.clone();
            let (td, tb) = (top.digest.clone(), top.bytes.clone());
            let (md, mb) = (manifest_digest.clone(), manifest_bytes);
            let (cd, cb) = (config_desc.digest.clone(), config_bytes);
            blocking(move || {
                content.put("manifest", &td, &tb)?;
                content.put("manifest", &md, &mb)?;
                content.put("config", &cd, &cb)
            })
            .await?;
        }

        // The first layer to fail stops the others; a dropped pull stops
        // them all. Every layer's work has ended before the pull returns,
        // so no unpack outlives it.
        let cancel = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = StopOnDrop(cancel.clone());
        let progress = opts.progress.clone();
        let fetcher = &fetcher;
        let results: Vec<Result<()>> =
            futures::stream::iter(manifest.layers.iter().zip(&config.rootfs.diff_ids))
                .map(|(desc, diff_id)| {
                    let (cancel, progress) = (cancel.clone(), progress.clone());
                    async move {
                        let r = self.ensure_layer(fetcher, desc, diff_id, progress, &cancel).await;
                        if r.is_err() {
                            cancel.store(true, Ordering::Relaxed);
                        }
                        r
                    }
                })
                .buffer_unordered(CONCURRENT_LAYERS)
                .collect()
                .await;
        let mut errors = results.into_iter().filter_map(Result::err);
        if let Some(first) = errors.next() {
            return Err(match first {
                ImageError::Cancelled => {
                    errors.find(|e| !matches!(e, ImageError::Cancelled)).unwrap_or(first)
                }
                e => e,
            });
        }

        let name = match (source, &opts.name) {
            (_, Some(n)) => Some(n.clone()),
            (ImageSource::Registry(r), None) => Some(r.clone()),
            (_, None) => top.recorded_name.as_deref().and_then(|n| n.parse::<Reference>().ok()),
        };
        let mut image = Image {
            id: config_desc.digest.clone(),
            names: name.iter().filter(|n| n.tag().is_some()).map(tag_name).collect(),
            repo_digests: name
                .iter()
                .map(|n| n.with_digest(top.digest.clone()).to_string())
                .collect(),
            digest: top.digest.clone(),
            manifest_digest,
            layers: manifest
                .layers
                .iter()
                .zip(&config.rootfs.diff_ids)
                .map(|(d, diff_id)| Layer {
                    digest: d.digest.clone(),
                    diff_id: diff_id.clone(),
                    size: d.size,
                    media_type: d.media_type.clone(),
                })
                .collect(),
            config: config.config.clone().unwrap_or_default(),
            platform: Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                variant: None,
            },
            size: config_desc.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
            pulled_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.update_db(|db| {
            let key = image.id.to_string();
            // A name belongs to one image: the newest pull takes it.
            for other in db.images.values_mut() {
                other.names.retain(|n| !image.names.contains(n));
                other.repo_digests.retain(|n| !image.repo_digests.contains(n));
            }
            if let Some(old) = db.images.get(&key) {
                for n in &old.names {
                    if !image.names.contains(n) {
                        image.names.push(n.clone());
                    }
                }
                for n in &old.repo_digests {
                    if !image.repo_digests.contains(n) {
                        image.repo_digests.push(n.clone());
                    }
                }
            }
            db.images.insert(key, image.clone());
            Ok(())
        })?;
        Ok(image)
    }

    /// Makes sure `diff_id` is unpacked, downloading its blob if needed.
    async fn ensure_layer(
        &self,
        fetcher: &Fetcher,
        desc: &Descriptor,
        diff_id: &Digest,
        progress: Option<ProgressFn>,
        cancel: &Arc<AtomicBool>,
    ) -> Result<()> {
        let inner = &self.inner;
        let emit = |phase, done| {
            if let Some(p) = &progress {
                p(PullEvent { layer: desc.digest.clone(), phase, done, total: desc.size });
            }
        };
        let _one_at_a_time = inner.inflight.lock(diff_id.to_string()).await;
        let dest = self.layer_path(diff_id);
        if dest.is_dir() {
            emit(LayerPhase::Present, desc.size);
            return Ok(());
        }
        if !inner.content.has(&desc.digest) {
            let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let p = progress.clone();
            let (layer, total) = (desc.digest.clone(), desc.size);
            let on_bytes: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |done| {
                let prev = last.load(std::sync::atomic::Ordering::Relaxed);
                if done == total || done >= prev + PROGRESS_STEP || prev == 0 {
                    last.store(done.max(1), std::sync::atomic::Ordering::Relaxed);
                    if let Some(p) = &p {
                        p(PullEvent {
                            layer: layer.clone(),
                            phase: LayerPhase::Downloading,
                            done,
                            total,
                        });
                    }
                }
            });
            fetcher.blob_to_store(&inner.content, "layer", desc, on_bytes, cancel).await?;
        }
        emit(LayerPhase::Unpacking, desc.size);
        let started = Instant::now();
        let (blob, tmp, diff, layer_parent) = (
            inner.content.path(&desc.digest),
            temp_path(&inner.tmp, "layer"),
            diff_id.clone(),
            dest.parent().expect("layer paths have a parent").to_path_buf(),
        );
        let dest2 = dest.clone();
        let cancel = cancel.clone();
        let unpacked = blocking(move || {
            fs::create_dir(&tmp).map_err(ImageError::io(&tmp))?;
            let result = unpack_layer(&blob, &diff, &tmp, &cancel).and_then(|u| {
                // One syncfs makes every file of the layer durable before the
                // rename publishes it; cheaper than an fsync per file.
                let dir = File::open(&tmp).map_err(ImageError::io(&tmp))?;
                nix::unistd::syncfs(&dir)
                    .map_err(ImageError::sys(format!("syncfs {}", tmp.display())))?;
                fs::rename(&tmp, &dest2).map_err(ImageError::io(&dest2))?;
                fsync_dir(&layer_parent)?;
                Ok(u)
            });
            if result.is_err() {
                let _ = fs::remove_dir_all(&tmp);
            }
            result
        })
        .await?;
        metrics::histogram!("berth_kubelet_image_unpack_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(layer = %desc.digest, diff_id = %diff_id, entries = unpacked.entries, tar_bytes = unpacked.tar_bytes, "layer unpacked");
        emit(LayerPhase::Unpacked, desc.size);
        Ok(())
    }

    pub(super) fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.inner.layers.join(diff_id.algorithm().name()).join(diff_id.hex())
    }

    /// Every image, by id.
    pub fn list(&self) -> Vec<Image> {
        self.inner.db.lock().expect("db lock is never poisoned").images.values().cloned().collect()
    }

    /// The image a reference, repo digest, or digest (id, manifest or index)
    /// names, if the store has it.
    pub fn status(&self, query: &str) -> Result<Option<Image>> {
        let db = self.inner.db.lock().expect("db lock is never poisoned");
        Ok(find(&db, query)?.map(|k| db.images[&k].clone()))
    }

    /// Removes a name, or an image. A name (`repo:tag`) is dropped from its
    /// image, and the image goes with its last name; a digest removes the
    /// image and all its names. An image a container rootfs uses is kept
    /// (and `InUse` returned) while that rootfs exists. Its layers and blobs
    /// stay on disk until [`ImageStore::gc`].
    pub fn remove(&self, query: &str) -> Result<()> {
        self.update_db(|db| {
            let key = find(db, query)?.ok_or_else(|| ImageError::NotFound(query.to_string()))?;
            let by_name = !is_digest_query(query);
            let image = db.images.get_mut(&key).expect("find returns present keys");
            if by_name {
                let name = normalize_name(query)?;
                image.names.retain(|n| *n != name);
                image.repo_digests.retain(|n| *n != name);
                if !image.names.is_empty() {
                    return Ok(());
                }
            }
            let users: Vec<String> =
                db.rootfs.iter().filter(|(_, img)| **img == key).map(|(c, _)| c.clone()).collect();
            if !users.is_empty() {
                return Err(ImageError::InUse { image: key, containers: users });
            }
            db.images.remove(&key);
            tracing::info!(image = %key, "image removed");
            Ok(())
        })
    }

    /// Creates and mounts the rootfs of `container_id` from `image` (any
    /// query [`ImageStore::status`] takes). The image cannot be removed
    /// while the rootfs exists.
    pub fn create_rootfs(&self, container_id: &str, image: &str) -> Result<Rootfs> {
        check_container_id(container_id)?;
        let inner = &self.inner;
        let mut db = inner.db.lock().expect("db lock is never poisoned");
        let key = find(&db, image)?.ok_or_else(|| ImageError::NotFound(image.to_string()))?;
        if db.rootfs.contains_key(container_id) {
            return Err(ImageError::RootfsExists(container_id.to_string()));
        }
        let lowers: Vec<PathBuf> =
            db.images[&key].layers.iter().rev().map(|l| self.layer_path(&l.diff_id)).collect();
        if let Some(missing) = lowers.iter().find(|l| !l.is_dir()) {
            return Err(ImageError::NotFound(format!(
                "unpacked layer {} of image {key}; pull it again",
                missing.display()
            )));
        }
        let dir = inner.rootfs_dir.join(container_id);
        let (upper, work, merged, empty) =
            (dir.join("upper"), dir.join("work"), dir.join("merged"), dir.join("empty"));
        // The lease is durable before the mount, so a crash in between leaves
        // something remove_rootfs knows to clean.
        let mut next = db.clone();
        next.rootfs.insert(container_id.to_string(), key.clone());
        self.save_db(&next)?;
        *db = next;
        let made = (|| {
            for d in [&upper, &work, &merged] {
                fs::create_dir_all(d).map_err(ImageError::io(d))?;
            }
            // overlayfs needs a lower dir; an image without layers gets an empty one.
            let lowers = if lowers.is_empty() {
                fs::create_dir_all(&empty).map_err(ImageError::io(&empty))?;
                vec![empty.clone()]
            } else {
                lowers
            };
            rootfs::mount_overlay(&lowers, &upper, &work, &merged)
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&dir);
            let mut next = db.clone();
            next.rootfs.remove(container_id);
            if self.save_db(&next).is_ok() {
                *db = next;
            }
            return Err(e);
        }
        tracing::info!(container = container_id, image = %key, "rootfs mounted");
        Ok(Rootfs { container_id: container_id.to_string(), image_id: key, path: merged, upper })
    }

    /// The rootfs of `container_id`, if the store made one.
    pub fn rootfs(&self, container_id: &str) -> Option<Rootfs> {
        let db = self.inner.db.lock().expect("db lock is never poisoned");
        let image_id = db.rootfs.get(container_id)?.clone();
        let dir = self.inner.rootfs_dir.join(container_id);
        Some(Rootfs {
            container_id: container_id.to_string(),
            image_id,
            path: dir.join("merged"),
            upper: dir.join("upper"),
        })
    }

    /// Unmounts and deletes a container's rootfs (its writes go with it) and
    /// releases its image. Removing one that does not exist is not an error.
    pub fn remove_rootfs(&self, container_id: &str) -> Result<()> {
        check_container_id(container_id)?;
        let inner = &self.inner;
        let mut db = inner.db.lock().expect("db lock is never poisoned");
        let dir = inner.rootfs_dir.join(container_id);
        rootfs::unmount(&dir.join("merged"))?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::Io { path: dir, source: e }),
        }
        if db.rootfs.contains_key(container_id) {
            let mut next = db.clone();
            next.rootfs.remove(container_id);
            self.save_db(&next)?;
            *db = next;
            tracing::info!(container = container_id, "rootfs removed");
        }
        Ok(())
    }

    /// Blobs and layers the recorded images use (for GC).
    pub(super) fn referenced(&self) -> (Vec<Digest>, Vec<Digest>) {
        let db = self.inner.db.lock().expect("db lock is never poisoned");
        let mut blobs = Vec::new();
        let mut layers = Vec::new();
        for img in db.images.values() {
            blobs.extend([img.id.clone(), img.digest.clone(), img.manifest_digest.clone()]);
            for l in &img.layers {
                blobs.push(l.digest.clone());
                layers.push(l.diff_id.clone());
            }
        }
        (blobs, layers)
    }

    fn update_db(&self, f: impl FnOnce(&mut Db) -> Result<()>) -> Result<()> {
        let mut db = self.inner.db.lock().expect("db lock is never poisoned");
        let mut next = db.clone();
        f(&mut next)?;
        self.save_db(&next)?;
        *db = next;
        Ok(())
    }

    /// Writes the metadata durably: temp file, fsync, rename, fsync the dir.
    fn save_db(&self, db: &Db) -> Result<()> {
        let root = &self.inner.root;
        let path = root.join("images.json");
        let tmp = temp_path(&self.inner.tmp, "images.json");
        let data = serde_json::to_vec_pretty(db).expect("the metadata always serializes");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(ImageError::Io { path, source: e });
        }
        fsync_dir(root)
    }
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// `registry/repository:tag` (without any digest) for a reference with a tag.
fn tag_name(r: &Reference) -> String {
    format!("{}:{}", r.name(), r.tag().unwrap_or("latest"))
}

fn is_digest_query(q: &str) -> bool {
    q.parse::<Digest>().is_ok()
}

/// The stored spelling of a name query: `name:tag` or `name@digest`.
fn normalize_name(q: &str) -> Result<String> {
    let r: Reference = q.parse()?;
    Ok(match r.digest() {
        Some(d) => r.with_digest(d.clone()).to_string(),
        None => tag_name(&r),
    })
}

/// The key of the image `query` names.
fn find(db: &Db, query: &str) -> Result<Option<String>> {
    if let Ok(d) = query.parse::<Digest>() {
        return Ok(db
            .images
            .iter()
            .find(|(_, i)| i.id == d || i.digest == d || i.manifest_digest == d)
            .map(|(k, _)| k.clone()));
    }
    let name = normalize_name(query)?;
    let r: Reference = query.parse()?;
    Ok(db
        .images
        .iter()
        .find(|(_, i)| {
            i.names.contains(&name)
                || i.repo_digests.contains(&name)
                || r.digest().is_some_and(|d| {
                    (i.digest == *d || i.manifest_digest == *d)
                        && i.repo_digests.iter().any(|n| n.starts_with(&format!("{}@", r.name())))
                })
        })
        .map(|(k, _)| k.clone()))
}

fn check_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidContainerId(id.to_string()))
    }
}

/// Raises a pull's stop flag when the pull ends or is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Per-key async locks whose entries go away when nobody holds or waits.
#[derive(Default)]
struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    async fn lock(&self, key: String) -> KeyedGuard<'_> {
        let lock = self
            .map
            .lock()
            .expect("keyed lock map is never poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        KeyedGuard { locks: self, key, lock, guard: Some(guard) }
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock().expect("keyed lock map is never poisoned");
        // Two references left: the map's and ours, so no one else waits.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_cannot_escape() {
        for bad in ["", "..", ".", "a/b", "../x", "a b"] {
            assert!(check_container_id(bad).is_err(), "{bad:?}");
        }
        check_container_id("pod_ns_c-1.2").unwrap();
    }

    #[test]
    fn one_process_owns_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let _a = ImageStore::open(dir.path(), RegistryConfig::default()).unwrap();
        // flock locks belong to the open file, so a second open in this
        // process conflicts just as another process would.
        assert!(matches!(
            ImageStore::open(dir.path(), RegistryConfig::default()),
            Err(ImageError::Locked(_))
        ));
    }

    #[test]
    fn open_discards_leftovers_and_rejects_corrupt_metadata() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp/layer-1-1/etc")).unwrap();
        fs::write(dir.path().join("tmp/blob-1-2"), b"partial").unwrap();
        drop(ImageStore::open(dir.path(), RegistryConfig::default()).unwrap());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        fs::write(dir.path().join("images.json"), b"{truncated").unwrap();
        assert!(matches!(
            ImageStore::open(dir.path(), RegistryConfig::default()),
            Err(ImageError::CorruptMetadata { .. })
        ));
    }

    #[tokio::test]
    async fn keyed_locks_serialize_one_key_and_forget_it_after() {
        let locks = Arc::new(KeyedLocks::default());
        let g = locks.lock("a".into()).await;
        let other = locks.lock("b".into()).await;
        drop(other);
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("a".into()).await;
        });
        // The waiter cannot finish while "a" is held.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g);
        waiter.await.unwrap();
        assert!(locks.map.lock().unwrap().is_empty());
    }
}

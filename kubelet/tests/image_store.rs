//! The image store end to end against a real registry (Debian's
//! docker-registry on a loopback port), OCI layouts and oci-archives of test
//! images built from busybox-static: pulls, the composed overlayfs rootfs,
//! running the image with the executor, bad input, remove and GC.
//!
//! Each test owns its temp dirs, registry process and port; the fixtures
//! unmount, kill and remove them on drop, failed or not. Without root,
//! overlayfs, busybox or docker-registry the tests print `SKIPPED: <why>`.

mod image_support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_kubelet::executor::{cgroups, Container, CreateOptions, ExitStatus, Stdio};
use berth_kubelet::image::{
    Credentials, Image, ImageError, ImageSource, ImageStore, LayerPhase, PullEvent, PullOptions,
    RegistryConfig,
};
use image_support::*;
use serde_json::json;

/// A store in its own temp dir; on drop, whatever is still mounted under it
/// is unmounted so the dir can go.
struct Fixture {
    dir: tempfile::TempDir,
    store: Option<ImageStore>,
    config: RegistryConfig,
}

impl Fixture {
    fn new(config: RegistryConfig) -> Fixture {
        let dir = tempfile::Builder::new().prefix("berth-image-store-").tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store"), config.clone()).unwrap();
        Fixture { dir, store: Some(store), config }
    }

    fn store(&self) -> &ImageStore {
        self.store.as_ref().expect("the fixture always holds a store")
    }

    /// Closes the store (releasing its lock) and opens it again.
    fn reopen(&mut self) {
        self.store = None;
        self.store = Some(ImageStore::open(self.root(), self.config.clone()).unwrap());
    }

    fn plain(registry: &Registry) -> Fixture {
        Fixture::new(RegistryConfig {
            plain_http: vec![registry.addr.clone()],
            ..Default::default()
        })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Unpacked layers in the store, by digest hex.
    fn layer_dirs(&self) -> BTreeSet<String> {
        fs::read_dir(self.root().join("layers/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn blobs(&self) -> BTreeSet<String> {
        fs::read_dir(self.root().join("blobs/sha256"))
            .unwrap()
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect()
    }

    fn tmp_is_empty(&self) -> bool {
        fs::read_dir(self.root().join("tmp")).unwrap().next().is_none()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        unmount_all_under(self.dir.path());
    }
}

fn hex(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

/// Collects progress events.
fn recorder() -> (PullOptions, Arc<Mutex<Vec<PullEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let opts =
        PullOptions { name: None, progress: Some(Arc::new(move |e| sink.lock().unwrap().push(e))) };
    (opts, events)
}

fn count(events: &[PullEvent], phase: LayerPhase) -> usize {
    events.iter().filter(|e| e.phase == phase).count()
}

/// What a user sees in the composed rootfs of the busybox test image.
fn check_composed_rootfs(root: &Path) {
    assert!(fs::symlink_metadata(root.join("etc/gone")).is_err(), "whiteout hides etc/gone");
    assert_eq!(fs::read(root.join("etc/keep")).unwrap(), b"kept");
    let opaque: BTreeSet<String> = fs::read_dir(root.join("opaque"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(opaque, BTreeSet::from(["new".to_string()]), "opaque dir shows only its own layer");
    let (a, b) = (
        fs::metadata(root.join("data/file")).unwrap(),
        fs::metadata(root.join("data/hard")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard link shares the inode");
    assert_eq!(a.nlink(), 2);
    assert_eq!(fs::read_link(root.join("data/link")).unwrap(), Path::new("file"));
    assert_eq!(fs::read(root.join("data/link")).unwrap(), b"shared inode");
    assert!(fs::symlink_metadata(root.join("dev/fifo")).unwrap().file_type().is_fifo());
    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((nix::sys::stat::major(null.rdev()), nix::sys::stat::minor(null.rdev())), (1, 3));
    assert_eq!(fs::read_link(root.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(fs::metadata(root.join("bin/busybox")).unwrap().mode() & 0o777, 0o755);
    assert_eq!(fs::read_to_string(root.join("etc/motd")).unwrap(), "hello from layer 3\n");
}

/// Runs the image's entrypoint + cmd, env and workdir in `rootfs` with the
/// executor and returns what it printed.
fn run_image(image: &Image, rootfs: &Path, work: &Path, id: &str, extra: &str) -> String {
    let bundle = work.join("bundle");
    fs::create_dir_all(&bundle).unwrap();
    let mut args: Vec<String> = image.config.entrypoint.clone().unwrap_or_default();
    args.extend(image.config.cmd.clone().unwrap_or_default());
    if let Some(last) = args.last_mut() {
        last.push_str(extra);
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": image.config.env.clone().unwrap_or_default(),
            "cwd": image.config.working_dir.clone().unwrap_or("/".into()),
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": "image-test",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]},
    });
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let log = work.join("container.log");
    let mut opts = CreateOptions::new(id, &bundle, work.join("state"));
    opts.stdio = Stdio::CriLog(log.clone());
    opts.cgroup_parent = PathBuf::from(format!("/{id}-parent"));
    let mut c = Container::create(opts).unwrap();
    let ran = c.start().and_then(|_| c.wait());
    let deleted = c.delete(true);
    if let Ok(parent) = cgroups::manager_for(Path::new(&format!("/{id}-parent"))) {
        let _ = parent.remove();
    }
    assert_eq!(
        ran.unwrap(),
        ExitStatus::Exited(0),
        "log: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    deleted.unwrap();
    fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_pull_composes_an_overlay_rootfs_that_runs() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let img = busybox_image();
    registry.push("test/busybox", "v1", &img);
    let f = Fixture::plain(&registry);
    let source: ImageSource = format!("{}/test/busybox:v1", registry.addr).parse().unwrap();

    let (opts, events) = recorder();
    let image = f.store().pull(&source, &opts).await.unwrap();
    assert_eq!(image.id.to_string(), img.id());
    assert_eq!(image.digest.to_string(), img.top().digest, "the tag's index digest");
    assert_eq!(
        image.manifest_digest.to_string(),
        img.manifests[0].digest,
        "this platform's manifest"
    );
    assert_eq!(image.names, [format!("{}/test/busybox:v1", registry.addr)]);
    assert_eq!(
        image.repo_digests,
        [format!("{}/test/busybox@{}", registry.addr, img.top().digest)]
    );
    assert_eq!(image.layers.len(), 3);
    assert_eq!(image.platform.architecture, host_arch());
    assert_eq!(
        image.config.entrypoint.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".to_string()][..])
    );
    assert_eq!(image.config.working_dir.as_deref(), Some("/data"));
    assert_eq!(image.config.user.as_deref(), Some("0:0"));
    assert!(image.config.env.as_ref().unwrap().contains(&"GREETING=hello".to_string()));

    // Progress: every layer downloaded to its full size, then unpacked.
    let events = events.lock().unwrap().clone();
    for l in &image.layers {
        let last = events
            .iter()
            .rfind(|e| e.layer == l.digest && e.phase == LayerPhase::Downloading)
            .unwrap();
        assert_eq!((last.done, last.total), (l.size, l.size), "{}", l.digest);
    }
    assert_eq!(count(&events, LayerPhase::Unpacked), 3);
    // The decoy platform's layer was never fetched.
    assert!(!f.blobs().contains(&img.layers[3].digest));
    assert_eq!(f.layer_dirs().len(), 3);

    for query in [
        format!("{}/test/busybox:v1", registry.addr),
        img.top().digest.clone(),
        img.id().to_string(),
        format!("{}/test/busybox@{}", registry.addr, img.top().digest),
    ] {
        assert_eq!(
            f.store().status(&query).unwrap().map(|i| i.id),
            Some(image.id.clone()),
            "{query}"
        );
    }
    assert_eq!(f.store().status(&format!("{}/test/busybox:v2", registry.addr)).unwrap(), None);
    assert_eq!(f.store().list().len(), 1);

    let rootfs = f.store().create_rootfs("c1", &source.to_string()).unwrap();
    check_composed_rootfs(&rootfs.path);
    fs::write(rootfs.path.join("etc/keep"), b"changed").unwrap();
    assert_eq!(
        fs::read(rootfs.upper.join("etc/keep")).unwrap(),
        b"changed",
        "writes land in the upper dir"
    );
    let layer1 = f.root().join("layers/sha256").join(hex(&image.layers[0].diff_id.to_string()));
    assert_eq!(fs::read(layer1.join("etc/keep")).unwrap(), b"kept", "layers stay untouched");

    let out = run_image(
        &image,
        &rootfs.path,
        &f.dir.path().join("run"),
        &format!("berth-image-{}", std::process::id()),
        "; pwd; echo $GREETING",
    );
    assert_eq!(
        out, "hello from layer 3\n/data\nhello",
        "entrypoint, cmd, workdir and env from the image config"
    );

    // A second pull finds every layer present and downloads nothing.
    let (opts, events) = recorder();
    f.store().pull(&source, &opts).await.unwrap();
    let events = events.lock().unwrap().clone();
    assert_eq!(count(&events, LayerPhase::Present), 3, "{events:?}");
    assert_eq!(count(&events, LayerPhase::Downloading), 0);

    let err = f.store().remove(&source.to_string()).unwrap_err();
    assert!(
        matches!(err, ImageError::InUse { ref containers, .. } if containers == &["c1"]),
        "{err}"
    );
    f.store().remove_rootfs("c1").unwrap();
    assert!(!rootfs.path.exists());
    f.store().remove(&source.to_string()).unwrap();
    assert!(f.store().list().is_empty());
    let report = f.store().gc().await.unwrap();
    assert_eq!(report.layers_removed, 3);
    assert_eq!(report.blobs_removed, 3 + 1 + 2, "layers, config, manifest and index");
    assert!(f.layer_dirs().is_empty() && f.blobs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_unpack_each_layer_once() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    // Docker v2 media types through the registry (OCI ones in the test above).
    let img = image(
        vec![layer(base_layer(), true), layer(change_layer(), true), layer(top_layer("x\n"), true)],
        true,
    );
    registry.push("test/busybox", "v1", &img);
    let f = Fixture::plain(&registry);
    let source: ImageSource = format!("{}/test/busybox:v1", registry.addr).parse().unwrap();
    let (a_opts, a_events) = recorder();
    let (b_opts, b_events) = recorder();
    let (a, b) = tokio::join!(f.store().pull(&source, &a_opts), f.store().pull(&source, &b_opts));
    assert_eq!(a.unwrap().id, b.unwrap().id);
    let (a, b) = (a_events.lock().unwrap().clone(), b_events.lock().unwrap().clone());
    assert_eq!(
        count(&a, LayerPhase::Unpacked) + count(&b, LayerPhase::Unpacked),
        3,
        "each layer unpacked once"
    );
    assert_eq!(count(&a, LayerPhase::Unpacked) + count(&a, LayerPhase::Present), 3);
    assert_eq!(count(&b, LayerPhase::Unpacked) + count(&b, LayerPhase::Present), 3);
    assert_eq!(f.layer_dirs().len(), 3);
    assert!(f.tmp_is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_and_archive_sources() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let f = Fixture::new(RegistryConfig::default());
    // Docker v2 media types here, OCI ones through the registry test.
    let docker = image(
        vec![
            layer(base_layer(), true),
            layer(change_layer(), true),
            layer(top_layer("hello from layer 3\n"), true),
        ],
        true,
    );
    let layout = f.dir.path().join("layout");
    write_layout(&layout, &docker, "v1");
    let archive = f.dir.path().join("image.tar");
    write_archive(&archive, &busybox_image(), "v2");

    let name = "localhost/imported/app:v1".parse().unwrap();
    let from_layout = f
        .store()
        .pull(
            &format!("oci:{}:v1", layout.display()).parse().unwrap(),
            &PullOptions { name: Some(name), progress: None },
        )
        .await
        .unwrap();
    assert_eq!(from_layout.id.to_string(), docker.id());
    assert_eq!(from_layout.names, ["localhost/imported/app:v1"]);
    let from_archive = f
        .store()
        .pull(
            &format!("oci-archive:{}:v2", archive.display()).parse().unwrap(),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    // The same config (other manifest and media types) is the same image.
    assert_eq!(from_archive.id, from_layout.id);
    assert_eq!(
        from_archive.names,
        ["localhost/imported/app:v1"],
        "the archive gave no name; the old one stays"
    );
    assert_eq!(from_archive.manifest_digest.to_string(), busybox_image().manifests[0].digest);
    // Same tars, other compression/media types: the same unpacked layers.
    assert_eq!(f.layer_dirs().len(), 3);
    assert_eq!(
        from_layout.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
        from_archive.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()
    );

    for (id, image) in [("layout", &from_layout), ("archive", &from_archive)] {
        let rootfs = f.store().create_rootfs(id, &image.id.to_string()).unwrap();
        check_composed_rootfs(&rootfs.path);
    }
    let err = f
        .store()
        .pull(&format!("oci:{}:nope", layout.display()).parse().unwrap(), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err}");
    f.store().remove_rootfs("layout").unwrap();
    f.store().remove_rootfs("archive").unwrap();
}

/// Pushes `img` as `repo:v1`, pulls it, and checks the error and that the
/// store kept nothing of it.
async fn refused(f: &Fixture, registry: &Registry, repo: &str, img: &TestImage) -> ImageError {
    registry.push(repo, "v1", img);
    let before = f.layer_dirs();
    let source: ImageSource = format!("{}/{repo}:v1", registry.addr).parse().unwrap();
    let err = f.store().pull(&source, &PullOptions::default()).await.unwrap_err();
    assert!(f.tmp_is_empty(), "{repo}: temp files left");
    assert_eq!(f.layer_dirs(), before, "{repo}: a layer was published");
    assert!(f.store().status(&source.to_string()).unwrap().is_none());
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registry_images_are_refused_and_leave_nothing() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let f = Fixture::plain(&registry);
    let outside = tempfile::tempdir().unwrap();

    // A config whose diff_id does not match the layer's tar.
    let wrong = image_for(
        vec![layer(top_layer("x"), true)],
        false,
        host_arch(),
        Some(vec![sha256(b"not the tar")]),
    );
    let err = refused(&f, &registry, "bad/diffid", &wrong).await;
    assert!(matches!(err, ImageError::DigestMismatch { what: "layer diff_id", .. }), "{err}");

    // A gzip layer cut short (the registry stores it under its own digest).
    let tar = base_layer();
    let mut truncated = image(vec![layer(tar.clone(), true)], false);
    let gz = gzip(&tar);
    truncated.layers[0] = Blob::new(OCI_LAYER_GZIP, gz[..gz.len() / 2].to_vec());
    truncated.manifests[0] = Blob::json(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": truncated.configs[0].descriptor(), "layers": [truncated.layers[0].descriptor()]}),
    );
    let err = refused(&f, &registry, "bad/truncated", &truncated).await;
    assert!(matches!(err, ImageError::Malformed { .. }), "{err}");

    // Entries that climb out of the layer, directly or through symlinks.
    let target = outside.path().to_str().unwrap();
    for (repo, tar) in [
        ("bad/dotdot", LayerTar::default().file("../../escaped", b"x").finish()),
        (
            "bad/abs-symlink",
            LayerTar::default().symlink("evil", target).file("evil/pwned", b"x").finish(),
        ),
        (
            "bad/rel-symlink",
            LayerTar::default()
                .symlink("up", "../../../../../../../..")
                .file(&format!("up{target}/pwned"), b"x")
                .finish(),
        ),
    ] {
        let err = refused(&f, &registry, repo, &image(vec![layer(tar, true)], false)).await;
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{repo}: {err}");
    }
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");

    // A layer media type the store does not know: refused before download.
    let mut odd = image(vec![layer(top_layer("odd"), true)], false);
    odd.layers[0].media_type = "application/vnd.example.unknown".into();
    odd.manifests[0] = Blob::json(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": odd.configs[0].descriptor(), "layers": [odd.layers[0].descriptor()]}),
    );
    let err = refused(&f, &registry, "bad/mediatype", &odd).await;
    assert!(matches!(err, ImageError::Unsupported(_)), "{err}");
    assert!(!f.blobs().contains(&odd.layers[0].digest));

    // A digest reference the registry does not have.
    let err = f
        .store()
        .pull(
            &format!("{}/bad/diffid@{}", registry.addr, sha256(b"nothing")).parse().unwrap(),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err}");
    assert!(f.store().list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_local_images_are_refused_and_leave_nothing() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let f = Fixture::new(RegistryConfig::default());
    let img = image(vec![layer(base_layer(), true), layer(top_layer("x"), false)], false);

    // A layer blob whose bytes no longer match its digest (same size).
    let layout = f.dir.path().join("corrupt");
    write_layout(&layout, &img, "v1");
    let blob = layout.join("blobs/sha256").join(hex(&img.layers[1].digest));
    let mut bytes = fs::read(&blob).unwrap();
    bytes[600] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let err = f
        .store()
        .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap(), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { what: "layer", .. }), "{err}");
    assert!(f.tmp_is_empty());
    assert!(!f.blobs().contains(&img.layers[1].digest), "the corrupt blob was not kept");
    assert!(f.layer_dirs().len() <= 1, "only the intact layer may be unpacked");
    assert!(f.store().list().is_empty());

    // A manifest of a type the store does not speak (Docker schema 1).
    let layout = f.dir.path().join("schema1");
    let schema1 = Blob::json(
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        &json!({"schemaVersion": 1, "name": "x", "tag": "v1", "fsLayers": [], "history": []}),
    );
    let old = TestImage { manifests: vec![schema1], configs: vec![], layers: vec![], index: None };
    write_layout(&layout, &old, "v1");
    let err = f
        .store()
        .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap(), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unsupported(_)), "{err}");

    // An archive that is not an oci-archive.
    let not_oci = f.dir.path().join("plain.tar");
    fs::write(&not_oci, LayerTar::default().file("hello", b"x").finish()).unwrap();
    let err = f
        .store()
        .pull(
            &format!("oci-archive:{}", not_oci.display()).parse().unwrap(),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Malformed { .. }), "{err}");
    assert!(f.store().list().is_empty() && f.tmp_is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_layers_survive_removal_and_gc_of_one_image() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let f = Fixture::new(RegistryConfig::default());
    let a = image(
        vec![
            layer(base_layer(), true),
            layer(change_layer(), true),
            layer(top_layer("a\n"), false),
        ],
        false,
    );
    let b = image(
        vec![
            layer(base_layer(), true),
            layer(change_layer(), true),
            layer(top_layer("b\n"), false),
        ],
        false,
    );
    let (la, lb) = (f.dir.path().join("a"), f.dir.path().join("b"));
    write_layout(&la, &a, "v1");
    write_layout(&lb, &b, "v1");
    let pull = |dir: &Path, name: &str| {
        let source: ImageSource = format!("oci:{}:v1", dir.display()).parse().unwrap();
        let opts = PullOptions { name: Some(name.parse().unwrap()), progress: None };
        let store = f.store().clone();
        async move { store.pull(&source, &opts).await }
    };
    pull(&la, "localhost/a:v1").await.unwrap();
    pull(&la, "localhost/a:also").await.unwrap();
    pull(&lb, "localhost/b:v1").await.unwrap();
    assert_eq!(f.layer_dirs().len(), 4, "two shared layers and one each");
    assert_eq!(
        f.store().status("localhost/a:also").unwrap().unwrap().names,
        ["localhost/a:also", "localhost/a:v1"]
    );

    let rootfs = f.store().create_rootfs("uses-b", "localhost/b:v1").unwrap();
    assert!(matches!(
        f.store().create_rootfs("uses-b", "localhost/b:v1"),
        Err(ImageError::RootfsExists(_))
    ));
    assert!(matches!(
        f.store().create_rootfs("../x", "localhost/b:v1"),
        Err(ImageError::InvalidContainerId(_))
    ));

    // Removing one of two names keeps the image; the last name removes it.
    f.store().remove("localhost/a:v1").unwrap();
    assert!(f.store().status("localhost/a:also").unwrap().is_some());
    f.store().remove("localhost/a:also").unwrap();
    assert!(f.store().status(a.id()).unwrap().is_none());
    assert!(matches!(f.store().remove("localhost/a:v1"), Err(ImageError::NotFound(_))));
    // An image under a rootfs is kept, by name or by digest.
    assert!(matches!(f.store().remove(b.id()), Err(ImageError::InUse { .. })));

    let report = f.store().gc().await.unwrap();
    assert_eq!(report.layers_removed, 1, "only a's own layer");
    assert!(report.bytes_freed > 0);
    assert_eq!(f.layer_dirs().len(), 3);
    assert_eq!(fs::read_to_string(rootfs.path.join("etc/motd")).unwrap(), "b\n");
    check_shared_layers(&rootfs.path);
    assert_eq!(f.store().gc().await.unwrap(), Default::default(), "nothing left to collect");

    f.store().remove_rootfs("uses-b").unwrap();
    f.store().remove("localhost/b:v1").unwrap();
    f.store().gc().await.unwrap();
    assert!(f.layer_dirs().is_empty() && f.blobs().is_empty());
}

fn check_shared_layers(root: &Path) {
    assert!(fs::symlink_metadata(root.join("etc/gone")).is_err());
    assert_eq!(fs::read(root.join("opaque/new")).unwrap(), b"only this");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_rootfs_leases_survive_reopening() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let mut f = Fixture::new(RegistryConfig::default());
    let layout = f.dir.path().join("layout");
    let img = image(vec![layer(top_layer("persist\n"), true)], false);
    write_layout(&layout, &img, "v1");
    let opts = PullOptions { name: Some("localhost/p:v1".parse().unwrap()), progress: None };
    f.store().pull(&format!("oci:{}:v1", layout.display()).parse().unwrap(), &opts).await.unwrap();
    f.store().create_rootfs("keep", "localhost/p:v1").unwrap();
    f.reopen();
    assert_eq!(f.store().list().len(), 1);
    let rootfs = f.store().rootfs("keep").unwrap();
    assert_eq!(fs::read_to_string(rootfs.path.join("etc/motd")).unwrap(), "persist\n");
    assert!(matches!(f.store().remove("localhost/p:v1"), Err(ImageError::InUse { .. })));
    f.store().remove_rootfs("keep").unwrap();
    f.store().remove("localhost/p:v1").unwrap();
}

/// Makes a private CA and a server certificate for 127.0.0.1 signed by it,
/// with the openssl CLI. Returns (CA cert, server cert, server key).
fn private_ca(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let p = |n: &str| dir.join(n);
    fs::write(p("server.ext"), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n").ok()?;
    let steps: [Vec<&str>; 3] = [
        vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=berth test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    ];
    for args in steps {
        let out =
            std::process::Command::new("openssl").args(args).current_dir(dir).output().ok()?;
        if !out.status.success() {
            println!("openssl: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
    }
    Some((p("ca.pem"), p("server.pem"), p("server.key")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registry_with_a_private_ca() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = private_ca(certs.path()) else {
        println!("SKIPPED: needs the openssl command (Debian package openssl)");
        return;
    };
    let plain = Registry::start();
    let img = image(vec![layer(base_layer(), true), layer(top_layer("over tls\n"), false)], false);
    plain.push("secure/app", "v1", &img);
    let tls = Registry::start_with(RegistryOptions {
        storage: Some(plain.storage.clone()),
        tls: Some((cert, key)),
        ..Default::default()
    });
    let source: ImageSource = format!("{}/secure/app:v1", tls.addr).parse().unwrap();

    // Without the CA the certificate is not trusted.
    let untrusting = Fixture::new(RegistryConfig::default());
    let err = untrusting.store().pull(&source, &PullOptions::default()).await.unwrap_err();
    assert!(
        matches!(err, ImageError::Registry { ref reason, .. } if reason.contains("TLS")),
        "{err}"
    );

    let f = Fixture::new(RegistryConfig { ca_files: vec![ca], ..Default::default() });
    let image = f.store().pull(&source, &PullOptions::default()).await.unwrap();
    assert_eq!(image.id.to_string(), img.id());
    let rootfs = f.store().create_rootfs("tls", &source.to_string()).unwrap();
    assert_eq!(fs::read_to_string(rootfs.path.join("etc/motd")).unwrap(), "over tls\n");
    f.store().remove_rootfs("tls").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_auth_against_a_token_registry() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let Some(tokens) = TokenServer::start("berth", "s3cret").await else {
        println!("SKIPPED: needs the openssl command (Debian package openssl)");
        return;
    };
    // Push anonymously, then serve the same storage behind token auth.
    let plain = Registry::start();
    let img =
        image(vec![layer(base_layer(), true), layer(top_layer("with a token\n"), false)], false);
    plain.push("private/app", "v1", &img);
    let guarded = Registry::start_with(RegistryOptions {
        storage: Some(plain.storage.clone()),
        auth_yaml: Some(tokens.auth_yaml()),
        ..Default::default()
    });
    let source: ImageSource = format!("{}/private/app:v1", guarded.addr).parse().unwrap();
    let config = |creds: Option<(&str, &str)>| RegistryConfig {
        plain_http: vec![guarded.addr.clone()],
        credentials: creds
            .map(|(u, p)| {
                (guarded.addr.clone(), Credentials { username: u.into(), password: p.into() })
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };

    let anonymous = Fixture::new(config(None));
    let err = anonymous.store().pull(&source, &PullOptions::default()).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let wrong = Fixture::new(config(Some(("berth", "wrong"))));
    let err = wrong.store().pull(&source, &PullOptions::default()).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");

    let f = Fixture::new(config(Some(("berth", "s3cret"))));
    let image = f.store().pull(&source, &PullOptions::default()).await.unwrap();
    assert_eq!(image.id.to_string(), img.id());
    let rootfs = f.store().create_rootfs("token", &source.to_string()).unwrap();
    assert_eq!(fs::read_to_string(rootfs.path.join("etc/motd")).unwrap(), "with a token\n");
    f.store().remove_rootfs("token").unwrap();
    // The challenge's service and scope reached the token service, and the
    // token was reused for the blobs rather than fetched per request.
    let requests = tokens.requests.lock().unwrap().clone();
    let last = requests.last().unwrap();
    assert!(last.contains(&format!("service={TOKEN_SERVICE}")), "{last}");
    assert!(last.contains("scope=repository%3Aprivate%2Fapp%3Apull"), "{last}");
    assert_eq!(requests.len(), 3, "one token per pull: {requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_challenge_without_credentials_is_unauthorized() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    // htpasswd auth; without credentials the pull cannot answer the challenge.
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    fs::write(&htpasswd, "berth:$2y$05$ELwAhf3mwOAhZh7CJtD2Qe7ltf61HbhTpz9OhVgBaaTG3vpGXBzea\n")
        .unwrap();
    let plain = Registry::start();
    let img = image(vec![layer(top_layer("basic\n"), true)], false);
    plain.push("private/app", "v1", &img);
    let auth =
        format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", htpasswd.display());
    let guarded = Registry::start_with(RegistryOptions {
        storage: Some(plain.storage.clone()),
        auth_yaml: Some(auth),
        ..Default::default()
    });
    let source: ImageSource = format!("{}/private/app:v1", guarded.addr).parse().unwrap();
    let f = Fixture::plain(&guarded);
    let err = f.store().pull(&source, &PullOptions::default()).await.unwrap_err();
    assert!(
        matches!(err, ImageError::Unauthorized { ref reason, .. } if reason.contains("basic")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_layers_unpack_and_truncated_ones_are_refused() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let f = Fixture::new(RegistryConfig::default());
    let img = image(
        vec![
            zstd_layer(base_layer()),
            zstd_layer(change_layer()),
            layer(top_layer("hello from layer 3\n"), true),
        ],
        false,
    );
    assert_eq!(img.layers[0].media_type, OCI_LAYER_ZSTD);
    let layout = f.dir.path().join("zstd");
    write_layout(&layout, &img, "v1");
    let pulled = f
        .store()
        .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap(), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.id.to_string(), img.id());
    let rootfs = f.store().create_rootfs("zstd", &pulled.id.to_string()).unwrap();
    check_composed_rootfs(&rootfs.path);
    f.store().remove_rootfs("zstd").unwrap();
    let unpacked = f.layer_dirs();

    // A zstd layer cut short: a clear error, nothing new in the store.
    let tar = top_layer("cut short\n");
    let mut truncated = image(vec![zstd_layer(tar.clone())], false);
    let z = zstd(&tar);
    truncated.layers[0] = Blob::new(OCI_LAYER_ZSTD, z[..z.len() / 2].to_vec());
    truncated.manifests[0] = Blob::json(
        OCI_MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": truncated.configs[0].descriptor(), "layers": [truncated.layers[0].descriptor()]}),
    );
    let layout = f.dir.path().join("zstd-truncated");
    write_layout(&layout, &truncated, "v1");
    let err = f
        .store()
        .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap(), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Malformed { .. }), "{err}");
    assert!(f.tmp_is_empty());
    assert_eq!(f.layer_dirs(), unpacked, "a layer of the truncated image was published");
}

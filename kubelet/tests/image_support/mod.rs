//! Test support for the image store: a real registry (Debian's
//! `docker-registry`) on a free loopback port, and test images built here from
//! busybox-static, pushed through the distribution API or written as an OCI
//! layout directory and an oci-archive. Nothing is fetched from outside.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Why this machine cannot run the image store's end-to-end tests.
pub fn skip_reason(need_registry: bool) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (overlayfs mounts, whiteout devices, trusted.* xattrs)".into());
    }
    if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
        return Some("needs overlayfs in the kernel".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (Debian package busybox-static)".into());
    }
    if need_registry && !Path::new(REGISTRY_BIN).exists() {
        return Some(format!("needs {REGISTRY_BIN} (Debian package docker-registry)"));
    }
    None
}

/// A blob with its media type and digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob { media_type: media_type.into(), digest: sha256(&bytes), bytes }
    }

    pub fn json(media_type: &str, v: &Value) -> Blob {
        Blob::new(media_type, serde_json::to_vec(v).unwrap())
    }

    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// Writes layer tars entry by entry, with raw names so hostile entries
/// (`../x`) can be made too.
#[derive(Default)]
pub struct LayerTar {
    out: Vec<u8>,
}

impl LayerTar {
    fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let bytes = name.as_bytes();
        assert!(bytes.len() <= 100, "test names fit the ustar name field");
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn push(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().div_ceil(512) * 512, 0);
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.push(Self::header(name, tar::EntryType::Directory, 0, 0o755), b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_mode(name, data, 0o644)
    }

    pub fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.push(Self::header(name, tar::EntryType::Regular, data.len() as u64, mode), data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Symlink, name, target)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(tar::EntryType::Link, name, target)
    }

    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(name, kind, 0, 0o777);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        self.push(h, b"")
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        self.push(Self::header(name, tar::EntryType::Fifo, 0, 0o640), b"")
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(name, tar::EntryType::Char, 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, b"")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub const APPLETS: [&str; 8] = ["sh", "cat", "ls", "echo", "stat", "true", "id", "test"];

/// Layer 1: busybox and its applet symlinks, plus files later layers hide.
pub fn base_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox");
    let mut t = LayerTar::default();
    t.dir("bin/").file_mode("bin/busybox", &busybox, 0o755);
    for a in APPLETS {
        t.symlink(&format!("bin/{a}"), "busybox");
    }
    t.dir("etc/")
        .file("etc/gone", b"whited out by layer 2")
        .file("etc/keep", b"kept")
        .dir("opaque/")
        .file("opaque/old", b"hidden by the opaque dir")
        .dir("opaque/sub/")
        .file("opaque/sub/old2", b"hidden too")
        .finish()
}

/// Layer 2: a whiteout, an opaque dir, a hard link, a symlink, a fifo and a
/// device node.
pub fn change_layer() -> Vec<u8> {
    LayerTar::default()
        .dir("etc/")
        .file("etc/.wh.gone", b"")
        .dir("opaque/")
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/new", b"only this")
        .dir("data/")
        .file("data/file", b"shared inode")
        .hardlink("data/hard", "data/file")
        .symlink("data/link", "file")
        .dir("dev/")
        .fifo("dev/fifo")
        .char_device("dev/null", 1, 3)
        .finish()
}

/// Layer 3, left uncompressed: a file the container prints.
pub fn top_layer(text: &str) -> Vec<u8> {
    LayerTar::default().dir("etc/").file("etc/motd", text.as_bytes()).finish()
}

/// What the test images say to run.
pub fn run_config() -> Value {
    json!({
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["cat /etc/motd"],
        "Env": ["PATH=/bin", "GREETING=hello"],
        "WorkingDir": "/data",
        "User": "0:0",
    })
}

/// An image: manifest, config and layer blobs, and the index above them when
/// there is one (with the manifests it lists).
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifests: Vec<Blob>,
    pub configs: Vec<Blob>,
    pub layers: Vec<Blob>,
    pub index: Option<Blob>,
}

impl TestImage {
    /// What a tag points at.
    pub fn top(&self) -> &Blob {
        self.index.as_ref().unwrap_or(&self.manifests[0])
    }

    /// The host platform's config digest: the image id the store reports.
    pub fn id(&self) -> &str {
        &self.configs[0].digest
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub struct Layer {
    pub tar: Vec<u8>,
    pub gzip: bool,
    pub zstd: bool,
}

pub fn layer(tar: Vec<u8>, gzip: bool) -> Layer {
    Layer { tar, gzip, zstd: false }
}

/// A layer compressed with zstd (OCI media type `tar+zstd`).
pub fn zstd_layer(tar: Vec<u8>) -> Layer {
    Layer { tar, gzip: false, zstd: true }
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A single-manifest image. `docker` picks Docker v2 media types (all layers
/// gzip) instead of OCI ones.
pub fn image(layers: Vec<Layer>, docker: bool) -> TestImage {
    image_for(layers, docker, host_arch(), None)
}

/// Like [`image`], with `diff_ids` overriding the true ones (for bad input).
pub fn image_for(
    layers: Vec<Layer>,
    docker: bool,
    arch: &str,
    diff_ids: Option<Vec<String>>,
) -> TestImage {
    let true_diff_ids: Vec<String> = layers.iter().map(|l| sha256(&l.tar)).collect();
    let blobs: Vec<Blob> = layers
        .iter()
        .map(|l| match (l.gzip || docker, docker) {
            _ if l.zstd => Blob::new(OCI_LAYER_ZSTD, zstd(&l.tar)),
            (true, true) => Blob::new(DOCKER_LAYER, gzip(&l.tar)),
            (true, false) => Blob::new(OCI_LAYER_GZIP, gzip(&l.tar)),
            (false, _) => Blob::new(OCI_LAYER, l.tar.clone()),
        })
        .collect();
    let config = Blob::json(
        if docker { DOCKER_CONFIG } else { OCI_CONFIG },
        &json!({
            "architecture": arch,
            "os": "linux",
            "config": run_config(),
            "rootfs": {"type": "layers", "diff_ids": diff_ids.unwrap_or(true_diff_ids)},
        }),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": if docker { DOCKER_MANIFEST } else { OCI_MANIFEST },
        "config": config.descriptor(),
        "layers": blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    TestImage {
        manifests: vec![Blob::json(if docker { DOCKER_MANIFEST } else { OCI_MANIFEST }, &manifest)],
        configs: vec![config],
        layers: blobs,
        index: None,
    }
}

/// The same layers as a multi-platform index: the host's manifest and a
/// decoy for another architecture that the store must not pick.
pub fn multi_platform(layers: Vec<Layer>) -> TestImage {
    let decoy_arch = if host_arch() == "s390x" { "ppc64le" } else { "s390x" };
    let mut host = image_for(layers, false, host_arch(), None);
    let decoy_layers = vec![layer(top_layer("decoy platform"), true)];
    let decoy = image_for(decoy_layers, false, decoy_arch, None);
    let entry = |m: &Blob, arch: &str| {
        let mut d = m.descriptor();
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry(&decoy.manifests[0], decoy_arch), entry(&host.manifests[0], host_arch())],
    });
    host.index = Some(Blob::json(OCI_INDEX, &index));
    host.manifests.extend(decoy.manifests);
    host.configs.extend(decoy.configs);
    host.layers.extend(decoy.layers);
    host
}

/// The test image: three layers over busybox, behind a two-platform index.
pub fn busybox_image() -> TestImage {
    multi_platform(vec![
        layer(base_layer(), true),
        layer(change_layer(), true),
        layer(top_layer("hello from layer 3\n"), false),
    ])
}

/// Writes `img` as an OCI image layout at `dir`, `tag` naming its top entry.
pub fn write_layout(dir: &Path, img: &TestImage, tag: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for b in img.manifests.iter().chain(&img.configs).chain(&img.layers).chain(img.index.iter()) {
        std::fs::write(blobs.join(&b.digest["sha256:".len()..]), &b.bytes).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
    let mut top = img.top().descriptor();
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [top]}).to_string(),
    )
    .unwrap();
}

/// Writes `img` as an oci-archive (the layout in one tar) at `file`.
pub fn write_archive(file: &Path, img: &TestImage, tag: &str) {
    let staging = tempfile::tempdir().unwrap();
    write_layout(staging.path(), img, tag);
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    b.append_dir_all(".", staging.path()).unwrap();
    b.into_inner().unwrap().sync_all().unwrap();
}

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How to start a registry.
#[derive(Default)]
pub struct RegistryOptions {
    /// Serve another registry's storage (to reach the same images over TLS
    /// or with auth, after pushing them anonymously).
    pub storage: Option<PathBuf>,
    /// Certificate and key files for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Extra YAML for the `auth:` section.
    pub auth_yaml: Option<String>,
}

/// A docker-registry process on a free loopback port with its own config and
/// storage; killed and removed on drop.
pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> Registry {
        let mut dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().unwrap();
        let storage = opts.storage.unwrap_or_else(|| dir.path().join("storage"));
        std::fs::create_dir_all(&storage).unwrap();
        // A port just freed may be taken by a parallel test before the
        // registry binds it; the registry then exits and we try another.
        for _ in 0..5 {
            let port = free_port();
            let mut config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            );
            if let Some((cert, key)) = &opts.tls {
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
            }
            if let Some(auth) = &opts.auth_yaml {
                config.push_str(auth);
            }
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut reg = Registry {
                addr: format!("127.0.0.1:{port}"),
                storage: storage.clone(),
                child,
                dir,
            };
            if reg.wait_ready() {
                return reg;
            }
            let log =
                std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default();
            eprintln!("registry on port {port} did not come up, retrying: {log}");
            let _ = reg.child.kill();
            let _ = reg.child.wait();
            dir = std::mem::replace(&mut reg.dir, tempfile::tempdir().unwrap());
        }
        panic!("docker-registry did not start");
    }

    /// Polls until the port accepts connections, or the process has exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(&self.addr).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Pushes an image's blobs and manifests (children before the index) and
    /// tags its top as `repo:tag`.
    pub fn push(&self, repo: &str, tag: &str, img: &TestImage) {
        for b in img.configs.iter().chain(&img.layers) {
            self.put_blob(repo, &b.bytes);
        }
        if img.index.is_some() {
            for m in &img.manifests {
                self.put_manifest(repo, &m.digest, m);
            }
        }
        self.put_manifest(repo, tag, img.top());
    }

    /// A monolithic blob upload: POST for a session, PUT with the digest.
    pub fn put_blob(&self, repo: &str, data: &[u8]) {
        let (status, headers, body) =
            http(&self.addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(status, 202, "start upload: {}", String::from_utf8_lossy(&body));
        let location = header(&headers, "location").expect("upload Location");
        let path = location
            .split_once("://")
            .map_or(location.as_str(), |(_, rest)| &rest[rest.find('/').unwrap_or(0)..]);
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = format!("{path}{sep}digest={}", sha256(data));
        let (status, _, body) =
            http(&self.addr, "PUT", &put, &[("Content-Type", "application/octet-stream")], data);
        assert_eq!(status, 201, "finish upload: {}", String::from_utf8_lossy(&body));
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, m: &Blob) {
        let (status, _, body) = http(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", &m.media_type)],
            &m.bytes,
        );
        assert_eq!(status, 201, "put manifest {reference}: {}", String::from_utf8_lossy(&body));
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

/// One HTTP/1.1 request on its own connection: enough to push test images.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP response head");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers, resp[split + 4..].to_vec())
}

/// Unmounts everything mounted under `dir` (deepest first), so a test's temp
/// dir can be removed even when the test failed with a rootfs mounted.
pub fn unmount_all_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A token service for the distribution token protocol: it checks HTTP basic
/// credentials and hands out ES256 JWTs that a docker-registry configured
/// with `auth: token` verifies (the signing certificate travels in `x5c` and
/// is the registry's root bundle). Serves until dropped.
pub struct TokenServer {
    pub realm: String,
    pub cert: PathBuf,
    /// The query strings of the token requests it answered.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const TOKEN_SERVICE: &str = "berth-test-registry";
pub const TOKEN_ISSUER: &str = "berth-test-issuer";

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenServer {
    /// Starts on a free port, accepting `user:password`. None when the
    /// openssl command is missing.
    pub async fn start(user: &str, password: &str) -> Option<TokenServer> {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let steps: [Vec<&str>; 2] = [
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "key.pem",
            ],
            vec![
                "req",
                "-x509",
                "-key",
                "key.pem",
                "-subj",
                "/CN=berth token issuer",
                "-days",
                "1",
                "-out",
                "cert.pem",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output().ok()?;
            if !out.status.success() {
                println!("openssl: {}", String::from_utf8_lossy(&out.stderr));
                return None;
            }
        }
        let pkcs8 = pem_der(&std::fs::read_to_string(&key).unwrap());
        let cert_der = pem_der(&std::fs::read_to_string(&cert).unwrap());
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &rng,
        )
        .unwrap();
        let header = b64url(
            json!({"typ": "JWT", "alg": "ES256", "x5c": [base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &cert_der)]})
                .to_string()
                .as_bytes(),
        );
        let expected_auth = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{password}")
            )
        );

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
                seen.lock().unwrap().push(query.clone());
                let authorized = head.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("authorization") && v.trim() == expected_auth
                    })
                });
                let scope = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| s.replace("%3A", ":").replace("%2F", "/"))
                    .unwrap_or_default();
                let (status, body) = match scope.split(':').collect::<Vec<_>>()[..] {
                    ["repository", name, actions] if authorized => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        let claims = json!({
                            "iss": TOKEN_ISSUER, "sub": "berth", "aud": TOKEN_SERVICE,
                            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", buf.len()),
                            "access": [{"type": "repository", "name": name, "actions": actions.split(',').collect::<Vec<_>>()}],
                        });
                        let signing_input =
                            format!("{header}.{}", b64url(claims.to_string().as_bytes()));
                        let sig = signer
                            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
                            .unwrap();
                        (
                            "200 OK",
                            json!({"token": format!("{signing_input}.{}", b64url(sig.as_ref()))})
                                .to_string(),
                        )
                    }
                    _ if !authorized => {
                        ("401 Unauthorized", r#"{"details":"bad credentials"}"#.to_string())
                    }
                    _ => ("400 Bad Request", r#"{"details":"bad scope"}"#.to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            }
        });
        Some(TokenServer { realm, cert, requests, task, _dir: dir })
    }

    /// The registry's `auth:` section for this token service.
    pub fn auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.cert.display()
        )
    }
}

//! Mutual TLS on a real three-peer cluster whose certificates `berth pki`
//! issued: who may reach each surface (the berth API over gRPC and REST,
//! the etcd API, the Raft peer service), and that a peer of another CA can
//! neither join nor talk Raft.

mod common;

use common::{free_addr, print_log_tails};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().expect("berth runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The certificates of one test: a cluster CA with its peers and users,
/// and a stranger CA with an administrator and a peer of its own.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn create(dir: &Path) -> Pki {
        let pki = Pki { dir: dir.to_path_buf() };
        for (ca, name) in [("ca", "tls-test"), ("stranger", "stranger")] {
            let out = berth(&["pki", "init", "--dir", &pki.path(ca), "--cluster", name]);
            assert!(out.status.success(), "{}", text(&out));
        }
        let issue = |ca: &str, out: &str, who: &[&str]| {
            let (ca, out) = (pki.path(ca), pki.path(out));
            let mut args = vec!["pki", "issue", "--dir", &ca, "--out", &out];
            args.extend(who);
            let run = berth(&args);
            assert!(run.status.success(), "{}", text(&run));
        };
        for id in ["1", "2", "3", "9"] {
            issue("ca", &format!("peer-{id}"), &["--peer", id, "--host", "127.0.0.1"]);
        }
        issue("ca", "admin", &["--user", "tls-admin", "--group", "system:masters"]);
        issue("ca", "alice", &["--user", "alice"]);
        issue("ca", "prometheus", &["--user", "prometheus", "--group", "system:monitoring"]);
        issue("stranger", "stranger-admin", &["--user", "mallory", "--group", "system:masters"]);
        issue("stranger", "stranger-peer-4", &["--peer", "4", "--host", "127.0.0.1"]);
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn ca(&self) -> String {
        self.dir.join("ca").join("ca.crt").to_string_lossy().into_owned()
    }

    fn cert(&self, who: &str) -> String {
        format!("{}.crt", self.path(who))
    }

    fn key(&self, who: &str) -> String {
        format!("{}.key", self.path(who))
    }

    /// berth's client flags as `who` (None: the CA only, no certificate).
    fn flags(&self, who: Option<&str>) -> Vec<String> {
        let mut flags = vec!["--certificate-authority".to_string(), self.ca()];
        if let Some(who) = who {
            flags.extend(["--client-certificate".into(), self.cert(who)]);
            flags.extend(["--client-key".into(), self.key(who)]);
        }
        flags
    }

    fn client_tls(&self, who: &str, ca: &str) -> berth_tls::ClientTls {
        let trust = berth_tls::Trust::load(Path::new(&self.dir.join(ca).join("ca.crt"))).unwrap();
        let credential =
            berth_tls::Credential::load(Path::new(&self.cert(who)), Path::new(&self.key(who)))
                .unwrap();
        berth_tls::ClientTls::new(trust, Some(credential))
    }
}

struct Peers {
    children: Vec<Child>,
    grpc: Vec<String>,
    http: Vec<String>,
    dir: PathBuf,
}

impl Drop for Peers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Peers {
    /// Peer `id` at (gRPC, HTTP) with its (certificate, key), trusting `ca`.
    fn spawn(
        &mut self,
        id: &str,
        (grpc, http): (&str, &str),
        (cert, key): (&str, &str),
        ca: &str,
        initial: Option<&str>,
    ) {
        let log = std::fs::File::create(self.dir.join(format!("peer-{id}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .args(["server", "--id", id, "--cluster", "tls-test", "--listen", grpc, "--http", http])
            .args(["--data-dir", &self.dir.join(format!("data-{id}")).to_string_lossy()])
            .args(["--tls-cert-file", cert, "--tls-private-key-file", key, "--client-ca-file", ca])
            .args(["--authorization-mode", "RBAC"])
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300-600"])
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(initial) = initial {
            command.args(["--peers", initial]);
        }
        self.children.push(command.spawn().expect("berth server starts"));
    }
}

#[test]
fn every_surface_takes_only_this_clusters_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki"));
    let mut peers =
        Peers { children: Vec::new(), grpc: Vec::new(), http: Vec::new(), dir: dir.path().into() };
    peers.grpc = (0..3).map(|_| free_addr()).collect();
    peers.http = (0..3).map(|_| free_addr()).collect();
    let initial: Vec<String> =
        peers.grpc.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    for i in 0..3 {
        let (grpc, http) = (peers.grpc[i].clone(), peers.http[i].clone());
        let id = (i + 1).to_string();
        let (cert, key) = (pki.cert(&format!("peer-{id}")), pki.key(&format!("peer-{id}")));
        peers.spawn(&id, (&grpc, &http), (&cert, &key), &pki.ca(), Some(&initial.join(",")));
    }
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_surfaces(&pki, &mut peers)));
    if let Err(panic) = result {
        print_log_tails(dir.path(), 30);
        std::panic::resume_unwind(panic);
    }
}

fn check_surfaces(pki: &Pki, peers: &mut Peers) {
    let servers = peers.grpc.join(",");
    let as_user = |who: Option<&str>, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--server".into(), servers.clone()]);
        all.extend(pki.flags(who));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        berth(&refs)
    };

    // The administrator's certificate reads, once the cluster serves.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = as_user(Some("admin"), &["get", "ns", "kube-system", "-o", "name"]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "namespace/kube-system\n");
            break;
        }
        assert!(Instant::now() < deadline, "the cluster never served: {}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }

    // gRPC: no certificate is anonymous, and anonymous may not read pods;
    // alice is known but has no role; plain TCP and a stranger's
    // certificate do not get a TLS session at all.
    let out = as_user(None, &["get", "pods"]);
    assert!(!out.status.success() && text(&out).contains("Forbidden"), "{}", text(&out));
    let out = as_user(Some("alice"), &["get", "pods"]);
    assert!(!out.status.success() && text(&out).contains("alice"), "{}", text(&out));
    let plain = berth(&["get", "ns", "--server", &peers.grpc[0]]);
    assert!(!plain.status.success(), "plain TCP was served: {}", text(&plain));
    let mut stranger = vec!["get", "ns", "--server", &peers.grpc[0]];
    let stranger_flags = [
        "--certificate-authority".to_string(),
        pki.ca(),
        "--client-certificate".into(),
        pki.cert("stranger-admin"),
        "--client-key".into(),
        pki.key("stranger-admin"),
    ];
    stranger.extend(stranger_flags.iter().map(String::as_str));
    let out = berth(&stranger);
    assert!(!out.status.success(), "a stranger's certificate was taken: {}", text(&out));

    // REST, through the real kubectl: the same answers.
    let kubeconfig = |who: Option<&str>| {
        let path = peers.dir.join(format!("kubeconfig-{}", who.unwrap_or("anonymous")));
        let mut user = String::from("{}");
        if let Some(who) = who {
            user = format!(
                "\n    client-certificate: {}\n    client-key: {}",
                pki.cert(who),
                pki.key(who)
            );
        }
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: \
             https://{}\n    certificate-authority: {}\nusers:\n- name: u\n  user: {user}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
            peers.http[1],
            pki.ca()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let kubectl = |who: Option<&str>, args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig(who))
            .args(args)
            .output()
            .expect("kubectl runs")
    };
    if Command::new("kubectl").arg("version").arg("--client").output().is_ok() {
        let out = kubectl(Some("admin"), &["get", "ns", "kube-system", "-o", "name"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "namespace/kube-system\n",
            "{}",
            text(&out)
        );
        let out = kubectl(Some("alice"), &["get", "pods"]);
        assert!(
            text(&out).contains("forbidden") || text(&out).contains("Forbidden"),
            "{}",
            text(&out)
        );
        let out = kubectl(Some("stranger-admin"), &["get", "ns"]);
        assert!(!out.status.success(), "{}", text(&out));
    } else {
        println!("SKIPPED (part): no kubectl on PATH");
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // REST without a certificate: anonymous, and refused.
    let anonymous =
        berth_tls::ClientTls::new(berth_tls::Trust::load(Path::new(&pki.ca())).unwrap(), None);
    let (status, body) = runtime.block_on(https_get(&peers.http[2], "/api/v1/pods", &anonymous));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("system:anonymous"), "{body}");
    // Probes may ask anyone's health; only monitoring and administrators
    // read the metrics.
    for path in ["/livez", "/readyz"] {
        let (status, body) = runtime.block_on(https_get(&peers.http[2], path, &anonymous));
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = runtime.block_on(https_get(&peers.http[2], "/metrics", &anonymous));
    assert_eq!(status, 403, "{body}");
    let alice = pki.client_tls("alice", "ca");
    let (status, body) = runtime.block_on(https_get(&peers.http[2], "/metrics", &alice));
    assert_eq!(status, 403, "{body}");
    for who in ["prometheus", "admin"] {
        let tls = pki.client_tls(who, "ca");
        let (status, body) = runtime.block_on(https_get(&peers.http[2], "/metrics", &tls));
        assert_eq!(status, 200, "{who}: {body}");
        assert!(body.contains("berth_store_raft_term"), "{who}: {body}");
    }
    runtime.block_on(async {
        use berth_proto::etcd::etcdserverpb::kv_client::KvClient;
        use berth_proto::etcd::etcdserverpb::RangeRequest;
        use berth_proto::raft_v1::raft_client::RaftClient;
        use berth_proto::raft_v1::ReadIndexRequest;
        let dial = |addr: &str, tls: &berth_tls::ClientTls| {
            berth_tls::endpoint(addr, Some(tls)).unwrap().connect_lazy()
        };
        let range = RangeRequest { key: b"/registry/namespaces/".to_vec(), ..Default::default() };
        let addr = &peers.grpc[0];

        // The etcd API: administrators and peers only.
        let mut kv = KvClient::new(dial(addr, &pki.client_tls("admin", "ca")));
        kv.range(range.clone()).await.expect("the administrator reads the etcd API");
        let mut kv = KvClient::new(dial(addr, &pki.client_tls("alice", "ca")));
        let refused = kv.range(range.clone()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let anonymous =
            berth_tls::ClientTls::new(berth_tls::Trust::load(Path::new(&pki.ca())).unwrap(), None);
        let mut kv = KvClient::new(dial(addr, &anonymous));
        let refused = kv.range(range.clone()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

        // The Raft peer service: current members' peer certificates only.
        let read_index = ReadIndexRequest::default();
        let mut raft = RaftClient::new(dial(addr, &pki.client_tls("peer-2", "ca")));
        raft.read_index(read_index).await.expect("a member's certificate is taken");
        let mut raft = RaftClient::new(dial(addr, &pki.client_tls("admin", "ca")));
        let refused = raft.read_index(read_index).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        let mut raft = RaftClient::new(dial(addr, &pki.client_tls("peer-9", "ca")));
        let refused = raft.read_index(read_index).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        // A peer of another CA: no TLS session, so no Raft message.
        let mut raft = RaftClient::new(dial(addr, &pki.client_tls("stranger-peer-4", "stranger")));
        assert!(raft.read_index(read_index).await.is_err());
    });

    // A peer with the stranger CA's certificate cannot join: the leader
    // cannot verify it, and it cannot verify the leader.
    let (grpc, http) = (free_addr(), free_addr());
    let (cert, key) = (pki.cert("stranger-peer-4"), pki.key("stranger-peer-4"));
    let stranger_ca = pki.dir.join("stranger").join("ca.crt").to_string_lossy().into_owned();
    peers.spawn("4", (&grpc, &http), (&cert, &key), &stranger_ca, None);
    let out = as_user(Some("admin"), &["cluster", "add-peer", &grpc]);
    assert!(!out.status.success(), "a stranger peer joined: {}", text(&out));
    let out = as_user(Some("admin"), &["cluster", "status", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&grpc), "{}", text(&out));
}

/// An HTTPS GET over `tls`; returns (status, body).
async fn https_get(addr: &str, path: &str, tls: &berth_tls::ClientTls) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(tls.rustls().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

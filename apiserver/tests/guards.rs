//! Token authentication, the audit log and the request limits on a real
//! peer (`berth_apiserver::serve`), over REST and gRPC: no token is still
//! anonymous, a bad token is Unauthorized, a good one is its user (as the
//! audit log records), a service-account token is its account, bodies over
//! the limit are refused, and one user flooding in-flight requests is
//! refused while another user is served.

use berth_apiserver::filters::{AuditConfig, Guards, ServiceAccountKey};
use berth_apiserver::PeerConfig;
use berth_proto::api_v1::namespaces_client::NamespacesClient;
use berth_proto::api_v1::ListRequest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(60);

/// Two distinct ports free right now, for a peer's listeners.
fn free_ports() -> (SocketAddr, SocketAddr) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap(), b.local_addr().unwrap())
}

struct Peer {
    grpc: SocketAddr,
    http: SocketAddr,
    audit: PathBuf,
    key_file: PathBuf,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn peer(max_per_user: usize) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001,\"dev,ops\"\nbob-token,bob,1002\n").unwrap();
    let key_file = dir.path().join("sa.key");
    ServiceAccountKey::create_or_load(&key_file).unwrap();
    let audit = dir.path().join("audit/audit.log");
    let (grpc, http) = free_ports();
    let config = PeerConfig {
        id: 1,
        cluster: "guards-test".into(),
        data_dir: dir.path().join("data"),
        listen: grpc,
        advertise: grpc.to_string(),
        http,
        initial_peers: BTreeMap::from([(1, grpc.to_string())]),
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
        history_retention: Duration::from_secs(300),
        event_ttl: Duration::from_secs(3600),
        max_requests_in_flight: 1024,
        max_watchers: 100,
        request_timeout: Duration::from_secs(60),
        kubelet_secret: Some("cluster-secret".into()),
        tls: None,
        authorization_modes: Vec::new(),
        admission_plugins: Vec::new(),
        pod_security: Default::default(),
        guards: Guards {
            token_auth_file: Some(tokens),
            service_account_key_file: Some(key_file.clone()),
            max_requests_in_flight_per_user: max_per_user,
            audit: Some(AuditConfig { path: audit.clone(), max_size_mb: 100, max_backups: 2 }),
        },
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            if let Err(e) = berth_apiserver::serve(config, stop).await {
                panic!("the peer failed: {e}");
            }
        }
    });
    let peer = Peer { grpc, http, audit, key_file, stop, task, _dir: dir };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (code, body) = peer.rest("GET", "/api/v1/namespaces", Some("alice-token"), &[]).await;
        if code == 200 && body.contains("kube-system") {
            break;
        }
        // A peer that could not listen (a port taken meanwhile) ends.
        assert!(!peer.task.is_finished(), "the peer stopped");
        assert!(tokio::time::Instant::now() < deadline, "never ready: {code} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peer
}

impl Peer {
    /// One HTTP/1.1 request; the status code and body.
    async fn rest(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        self.rest_with(method, path, token, &[], body).await
    }

    async fn rest_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let Ok(mut stream) = tokio::net::TcpStream::connect(self.http).await else {
            return (0, "cannot connect".into());
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.http,
            body.len()
        );
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
            head.push_str("Content-Type: application/json\r\n");
        }
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).await.is_err() {
            return (0, "cannot send".into());
        }
        // The server may answer (413) before it has read a large body.
        let _ = stream.write_all(body).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).to_string();
        let code = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (code, body)
    }

    async fn grpc_list(&self, token: Option<&str>) -> Result<usize, tonic::Status> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = NamespacesClient::new(channel);
        let mut request = tonic::Request::new(ListRequest::default());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        client.list(request).await.map(|r| r.into_inner().items.len())
    }

    /// The audit lines written so far.
    fn audit_lines(&self) -> Vec<serde_json::Value> {
        read_lines(&self.audit)
    }

    /// Waits for an audit line that `matches`.
    async fn audited(&self, what: &str, matches: impl Fn(&serde_json::Value) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !self.audit_lines().iter().any(&matches) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no audit line for {what} in {:#?}",
                self.audit_lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_over_rest_and_grpc_and_the_audit_log() {
    let peer = peer(0).await;

    // REST: no token is anonymous (Anonymous stays last for now), a bad
    // token is refused, a good one is its user.
    let (code, body) = peer.rest("GET", "/api/v1/namespaces", None, &[]).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = peer.rest("GET", "/api/v1/namespaces", Some("forged"), &[]).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Unauthorized"), "{body}");
    let (code, body) =
        peer.rest("GET", "/api/v1/namespaces/default/pods/web", Some("bob-token"), &[]).await;
    assert_eq!(code, 404, "{body}");

    // gRPC alike, in the authorization metadata.
    assert!(peer.grpc_list(None).await.unwrap() >= 3);
    let err = peer.grpc_list(Some("forged")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(peer.grpc_list(Some("alice-token")).await.unwrap() >= 3);

    // A service-account token minted with the cluster's key.
    let key = ServiceAccountKey::load(&peer.key_file).unwrap();
    let token = key.mint("default", "builder", Duration::from_secs(600)).unwrap();
    assert!(peer.grpc_list(Some(&token)).await.unwrap() >= 3);
    let other = ServiceAccountKey::from_pem(ServiceAccountKey::generate_pem().unwrap().as_bytes())
        .unwrap()
        .mint("default", "builder", Duration::from_secs(600))
        .unwrap();
    let (code, body) = peer.rest("GET", "/api/v1/namespaces", Some(&other), &[]).await;
    assert_eq!(code, 401, "{body}");

    // The audit log has each, with who asked and what came of it.
    peer.audited("bob's get", |l| {
        l["user"] == "bob"
            && l["verb"] == "get"
            && l["resource"] == "pods"
            && l["namespace"] == "default"
            && l["name"] == "web"
            && l["code"] == 404
            && l["groups"].as_array().is_some_and(|g| g.iter().any(|g| g == "system:authenticated"))
    })
    .await;
    peer.audited("alice's gRPC list", |l| {
        l["user"] == "alice" && l["verb"] == "list" && l["resource"] == "namespaces"
    })
    .await;
    peer.audited("the anonymous list", |l| l["user"] == "system:anonymous" && l["code"] == 200)
        .await;
    peer.audited("a refused token", |l| l["code"] == 401 && l["resource"] == "namespaces").await;
    peer.audited("the service account", |l| {
        l["user"] == "system:serviceaccount:default:builder"
            && l["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == "system:serviceaccounts:default"))
    })
    .await;
    for line in peer.audit_lines() {
        assert!(line["latencySeconds"].as_f64().is_some(), "{line}");
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bodies_are_refused_with_their_codes() {
    let peer = peer(0).await;
    let token = Some("alice-token");
    let pods = "/api/v1/namespaces/default/pods";

    // Over 3 MiB.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"big","annotations":{{"a":"{}"}}}}}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let (code, _) = peer.rest("POST", pods, token, big.as_bytes()).await;
    assert_eq!(code, 413);

    // A gzip body that inflates past the limit.
    let bomb = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![b' '; 16 * 1024 * 1024]).unwrap();
        encoder.finish().unwrap()
    };
    let gzip = [("Content-Encoding", "gzip")];
    let (code, body) = peer.rest_with("POST", pods, token, &gzip, &bomb).await;
    assert_eq!(code, 413, "{body}");
    // A small gzip body is inflated and served.
    let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"zipped"},
        "spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    let zipped = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(pod).unwrap();
        encoder.finish().unwrap()
    };
    let (code, body) = peer.rest_with("POST", pods, token, &gzip, &zipped).await;
    assert_eq!(code, 201, "{body}");
    // Nested past the JSON and YAML decoders' recursion limits: a clear 400.
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let zipped_pod = format!("{pods}/zipped");
    let merge = [("Content-Type", "application/merge-patch+json")];
    let deep = format!(r#"{{"metadata":{{"annotations":{nested}}}}}"#);
    let (code, body) = peer.rest_with("PATCH", &zipped_pod, token, &merge, deep.as_bytes()).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("recursion limit"), "{body}");
    let apply = [("Content-Type", "application/apply-patch+yaml")];
    let deep =
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: zipped\n  labels: {nested}\n");
    let path = format!("{zipped_pod}?fieldManager=test");
    let (code, body) = peer.rest_with("PATCH", &path, token, &apply, deep.as_bytes()).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nests deeper than 128"), "{body}");
    // Aliases, which could expand a small body into billions of nodes.
    let laughs = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: zipped\n  \
                  annotations: &a {x: y}\nspec: *a\n";
    let (code, body) = peer.rest_with("PATCH", &path, token, &apply, laughs.as_bytes()).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("alias"), "{body}");
    let (code, body) =
        peer.rest_with("POST", pods, token, &[("Content-Encoding", "br")], pod).await;
    assert_eq!(code, 415, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_flooding_is_refused_while_another_is_served() {
    let peer = peer(2).await;
    // A node whose agent accepts connections and never answers: requests
    // relayed to it stay in flight.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_port = stalled.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = stalled.accept().await {
            held.push(socket);
        }
    });
    let admin = Some("bob-token");
    let node = br#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"stalled"}}"#;
    let (code, body) = peer.rest("POST", "/api/v1/nodes", admin, node).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = peer.rest("GET", "/api/v1/nodes/stalled", admin, &[]).await;
    assert_eq!(code, 200, "{body}");
    let mut node: serde_json::Value = serde_json::from_str(&body).unwrap();
    node["status"] = serde_json::json!({
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": stalled_port}},
    });
    let (code, body) =
        peer.rest("PUT", "/api/v1/nodes/stalled/status", admin, node.to_string().as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"nodeName":"stalled","containers":[{"name":"c","image":"busybox"}]}}"#;
    let (code, body) = peer.rest("POST", "/api/v1/namespaces/default/pods", admin, pod).await;
    assert_eq!(code, 201, "{body}");

    // Alice asks for the pod's log twice: both wait on the stalled node.
    let peer = std::sync::Arc::new(peer);
    let mut flood = Vec::new();
    for _ in 0..2 {
        let peer = peer.clone();
        flood.push(tokio::spawn(async move {
            let log = "/api/v1/namespaces/default/pods/p/log";
            // Refused while her other requests hold both places: again.
            loop {
                let (code, body) = peer.rest("GET", log, Some("alice-token"), &[]).await;
                if code != 429 {
                    return (code, body);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    // Her next request is refused once both are in flight ...
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (code, body) = peer.rest("GET", "/api/v1/namespaces", Some("alice-token"), &[]).await;
        if code == 429 {
            assert!(body.contains("alice"), "{body}");
            break;
        }
        assert_eq!(code, 200, "{body}");
        for request in &mut flood {
            if request.is_finished() {
                panic!("a log request was answered: {:?}", request.await);
            }
        }
        assert!(!peer.task.is_finished(), "the peer stopped");
        assert!(tokio::time::Instant::now() < deadline, "alice was never limited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        match peer.grpc_list(Some("alice-token")).await {
            Err(err) if err.code() == tonic::Code::ResourceExhausted => break,
            Err(err) => panic!("{err}"),
            Ok(_) => {
                assert!(tokio::time::Instant::now() < deadline, "alice was never limited");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // ... while Bob is served.
    let (code, body) = peer.rest("GET", "/api/v1/namespaces", Some("bob-token"), &[]).await;
    assert_eq!(code, 200, "{body}");
    assert!(peer.grpc_list(Some("bob-token")).await.unwrap() >= 3);
    peer.audited("alice's refusal", |l| l["user"] == "alice" && l["code"] == 429).await;
    for request in flood {
        request.abort();
    }
    accepted.abort();
}

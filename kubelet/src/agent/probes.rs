//! Container probes: liveness, readiness and startup, each run by a worker
//! of its own per running container (exec through CRI ExecSync, an HTTP
//! GET, or a TCP connect), with Kubernetes' delays, periods, timeouts and
//! thresholds. A failed liveness (or startup) probe kills the container so
//! the pod's sync restarts it as its restart policy says; readiness decides
//! the container's `ready`; a startup probe holds the other two back until
//! it has succeeded once. The workers belong to the pod's sync: it starts
//! them for the containers it sees running and drops them (which stops
//! them) when a container stops or the pod goes.

use berth_client::{EventRecorder, WorkQueue};
use berth_proto::core_v1::{Container, ContainerStatus, Pod, Probe};
use berth_proto::cri_v1 as cri;
use berth_proto::IntOrString;
use cri::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// Kubernetes' probe defaults, for fields left at zero.
const PERIOD: i32 = 10;
const TIMEOUT: i32 = 1;
const FAILURE_THRESHOLD: i32 = 3;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }

    fn probe(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
            Kind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// Latest result per (container id, probe kind): true once the success
/// threshold is met, false once the failure threshold is.
type Results = Arc<Mutex<HashMap<(String, Kind), bool>>>;

/// A pod's probe workers by container name and probe kind.
type PodWorkers = HashMap<(String, Kind), Worker>;

/// A probe worker; dropping it stops it.
struct Worker {
    container_id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a worker needs besides its probe.
#[derive(Clone)]
struct Context {
    runtime: RuntimeServiceClient<Channel>,
    events: EventRecorder,
    queue: WorkQueue<String>,
    results: Results,
}

pub(super) struct Prober {
    context: Context,
    node_ip: String,
    /// Per pod uid: the workers of its containers, by container name and
    /// probe kind.
    workers: Mutex<HashMap<String, PodWorkers>>,
}

impl Prober {
    pub(super) fn new(
        runtime: RuntimeServiceClient<Channel>,
        events: EventRecorder,
        queue: WorkQueue<String>,
        node_ip: &str,
    ) -> Prober {
        Prober {
            context: Context { runtime, events, queue, results: Default::default() },
            node_ip: node_ip.into(),
            workers: Default::default(),
        }
    }

    /// Brings the pod's probe workers in line with its containers (one per
    /// probe of each running container; none for the others) and sets each
    /// container status's `started` and `ready` from the results so far.
    pub(super) fn apply(&self, pod: &Pod, pod_ip: &str, statuses: &mut [ContainerStatus]) {
        let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let host = if pod_ip.is_empty() { self.node_ip.clone() } else { pod_ip.to_string() };
        let mut all = self.workers.lock().expect("no panic while probing");
        let workers = all.entry(uid.clone()).or_default();
        let mut keep = Vec::new();
        for status in statuses.iter_mut() {
            let Some(c) = spec.containers.iter().find(|c| c.name == status.name) else { continue };
            let running = status.state.as_ref().and_then(|s| s.running.as_ref());
            let Some(running) = running else { continue };
            let id = status.container_id.rsplit("://").next().unwrap_or_default().to_string();
            for kind in [Kind::Liveness, Kind::Readiness, Kind::Startup] {
                let Some(probe) = kind.probe(c) else { continue };
                let key = (c.name.clone(), kind);
                keep.push(key.clone());
                if workers.get(&key).is_some_and(|w| w.container_id == id) {
                    continue;
                }
                let started_at = running.started_at.map(|t| {
                    std::time::UNIX_EPOCH
                        + Duration::new(t.unix_seconds().max(0) as u64, t.subsec_nanos())
                });
                let job = Job {
                    kind,
                    probe: probe.clone(),
                    container: c.clone(),
                    container_id: id.clone(),
                    pod: Arc::new(pod.clone()),
                    pod_key: berth_client::key(pod),
                    host: host.clone(),
                    started_at,
                    gated: kind != Kind::Startup && c.startup_probe.is_some(),
                    grace: probe
                        .termination_grace_period_seconds
                        .or(spec.termination_grace_period_seconds)
                        .unwrap_or(30),
                };
                let task = tokio::spawn(job.run(self.context.clone()));
                if let Some(old) = workers.insert(key, Worker { container_id: id.clone(), task }) {
                    self.forget_results(&old);
                }
            }
            let results = self.context.results.lock().expect("no panic while probing");
            let result = |kind: Kind| results.get(&(id.clone(), kind)).copied();
            let started = c.startup_probe.is_none() || result(Kind::Startup) == Some(true);
            let ready = c.readiness_probe.is_none() || result(Kind::Readiness) == Some(true);
            status.started = Some(started);
            status.ready = started && ready;
        }
        let gone: Vec<(String, Kind)> =
            workers.keys().filter(|k| !keep.contains(k)).cloned().collect();
        for key in gone {
            if let Some(old) = workers.remove(&key) {
                self.forget_results(&old);
            }
        }
        if workers.is_empty() {
            all.remove(&uid);
        }
    }

    /// Stops the pod's probe workers.
    pub(super) fn forget(&self, uid: &str) {
        let removed = self.workers.lock().expect("no panic while probing").remove(uid);
        for worker in removed.into_iter().flat_map(|w| w.into_values()) {
            self.forget_results(&worker);
        }
    }

    /// Stops every worker (the agent is stopping).
    pub(super) fn stop_all(&self) {
        self.workers.lock().expect("no panic while probing").clear();
    }

    fn forget_results(&self, worker: &Worker) {
        self.context
            .results
            .lock()
            .expect("no panic while probing")
            .retain(|(id, _), _| *id != worker.container_id);
    }
}

/// One probe of one container.
struct Job {
    kind: Kind,
    probe: Probe,
    container: Container,
    container_id: String,
    pod: Arc<Pod>,
    pod_key: String,
    host: String,
    started_at: Option<std::time::SystemTime>,
    /// Waits for the container's startup probe to succeed first.
    gated: bool,
    /// Grace period when a failure kills the container.
    grace: i64,
}

fn seconds(value: i32, default: i32) -> Duration {
    Duration::from_secs(if value > 0 { value } else { default } as u64)
}

impl Job {
    async fn run(self, cx: Context) {
        let p = &self.probe;
        let period = seconds(p.period_seconds, PERIOD);
        let success_threshold = p.success_threshold.max(1);
        let failure_threshold =
            if p.failure_threshold > 0 { p.failure_threshold } else { FAILURE_THRESHOLD };
        // No probe before initialDelaySeconds have passed since the start.
        let delay = Duration::from_secs(p.initial_delay_seconds.max(0) as u64);
        let since_start = self.started_at.and_then(|t| t.elapsed().ok()).unwrap_or_default();
        tokio::time::sleep(delay.saturating_sub(since_start)).await;
        let key = (self.container_id.clone(), self.kind);
        let result = |kind: Kind| {
            cx.results
                .lock()
                .expect("no panic while probing")
                .get(&(self.container_id.clone(), kind))
                .copied()
        };
        let (mut successes, mut failures) = (0, 0);
        loop {
            if self.kind == Kind::Startup && result(Kind::Startup) == Some(true) {
                // Started: a startup probe has done its work.
                return;
            }
            if self.gated && result(Kind::Startup) != Some(true) {
                tokio::time::sleep(period).await;
                continue;
            }
            let outcome = self.probe_once(&cx).await;
            let label = if outcome.is_ok() { "success" } else { "failure" };
            metrics::counter!("berth_kubelet_probes_total", "probe" => self.kind.name(), "result" => label)
                .increment(1);
            match outcome {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                }
                Err(why) => {
                    failures += 1;
                    successes = 0;
                    tracing::debug!(pod = %self.pod_key, container = %self.container.name, probe = self.kind.name(), %why, "probe failed");
                    cx.events.warning(
                        self.pod.as_ref(),
                        "Unhealthy",
                        format!("{} probe failed: {why}", self.kind.name()),
                    );
                }
            }
            let now = if successes >= success_threshold {
                Some(true)
            } else if failures >= failure_threshold {
                Some(false)
            } else {
                None
            };
            if let Some(now) = now {
                let before =
                    cx.results.lock().expect("no panic while probing").insert(key.clone(), now);
                if before != Some(now) {
                    cx.queue.add(self.pod_key.clone());
                }
            }
            if now == Some(false) && self.kind != Kind::Readiness {
                if self.kill(&cx).await {
                    return;
                }
                // Still running: probe on, and try again at the threshold.
                failures = 0;
                cx.results.lock().expect("no panic while probing").remove(&key);
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Stops the container after a failed liveness or startup probe; the
    /// pod's sync then restarts it as the restart policy says. False when
    /// the runtime could not stop it.
    async fn kill(&self, cx: &Context) -> bool {
        let name = &self.container.name;
        cx.events.normal(
            self.pod.as_ref(),
            "Killing",
            format!("Container {name} failed {} probe, will be restarted", self.kind.name()),
        );
        let request = cri::StopContainerRequest {
            container_id: self.container_id.clone(),
            timeout: self.grace.max(0),
        };
        let stopped = cx.runtime.clone().stop_container(request).await;
        if let Err(e) = &stopped {
            tracing::warn!(pod = %self.pod_key, container = %name, error = %e, "could not stop an unhealthy container");
        }
        cx.queue.add(self.pod_key.clone());
        stopped.is_ok()
    }

    /// One try: Ok when the probe passes, else why not.
    async fn probe_once(&self, cx: &Context) -> Result<(), String> {
        let p = &self.probe;
        let timeout = seconds(p.timeout_seconds, TIMEOUT);
        if let Some(exec) = &p.exec {
            let request = cri::ExecSyncRequest {
                container_id: self.container_id.clone(),
                cmd: exec.command.clone(),
                timeout: timeout.as_secs() as i64,
            };
            // The runtime enforces the timeout; the extra second covers the
            // call itself.
            let mut runtime = cx.runtime.clone();
            let call = runtime.exec_sync(request);
            let reply = tokio::time::timeout(timeout + Duration::from_secs(1), call)
                .await
                .map_err(|_| format!("command timed out after {}s", timeout.as_secs()))?
                .map_err(|e| e.message().to_string())?
                .into_inner();
            if reply.exit_code == 0 {
                return Ok(());
            }
            let output = String::from_utf8_lossy(&reply.stdout).trim().to_string();
            return Err(format!("command exited with {}: {output}", reply.exit_code));
        }
        if let Some(get) = &p.http_get {
            let tls = match get.scheme.to_ascii_uppercase().as_str() {
                "" | "HTTP" => false,
                "HTTPS" => true,
                other => return Err(format!("unsupported scheme {other:?}")),
            };
            let port = self.port(&get.port)?;
            let host = if get.host.is_empty() { self.host.as_str() } else { get.host.as_str() };
            let headers: Vec<(String, String)> =
                get.http_headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
            let path = if get.path.is_empty() { "/" } else { get.path.as_str() };
            let target = Target { host, port, path, tls };
            let code = tokio::time::timeout(timeout, http_get(&target, &headers))
                .await
                .map_err(|_| format!("GET {path} timed out after {}s", timeout.as_secs()))??;
            return if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        if let Some(tcp) = &p.tcp_socket {
            let port = self.port(&tcp.port)?;
            let host = if tcp.host.is_empty() { self.host.as_str() } else { tcp.host.as_str() };
            let connect = tokio::net::TcpStream::connect((host, port));
            return match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
                Err(_) => Err(format!("dial tcp {host}:{port}: timed out")),
            };
        }
        Err("the probe has no handler (exec, httpGet or tcpSocket)".into())
    }

    /// A port number, or the number of the container's port of that name.
    fn port(&self, port: &Option<IntOrString>) -> Result<u16, String> {
        let number = match port {
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(name)) => self
                .container
                .ports
                .iter()
                .find(|p| p.name == *name)
                .map(|p| p.container_port)
                .ok_or_else(|| format!("the container has no port named {name:?}"))?,
            None => 0,
        };
        u16::try_from(number)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port {number}"))
    }
}

/// Where an httpGet probe goes.
struct Target<'a> {
    host: &'a str,
    port: u16,
    path: &'a str,
    tls: bool,
}

/// Sends `GET path` to host:port over HTTP/1.1 (in TLS for HTTPS, the
/// server's certificate unchecked as in Kubernetes: a probe asks whether
/// the endpoint answers, not who it is) and returns the status code.
async fn http_get(target: &Target<'_>, headers: &[(String, String)]) -> Result<u16, String> {
    let Target { host, port, path, tls } = *target;
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    if !tls {
        return request(stream, target, headers).await;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("GET {path}: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("GET {path}: host {host:?}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("GET {path}: TLS handshake: {e}"))?;
    request(stream, target, headers).await
}

async fn request<S>(
    stream: S,
    target: &Target<'_>,
    headers: &[(String, String)],
) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    let Target { host, port, path, .. } = *target;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let authority =
        if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "kube-probe/1.32")
        .header(http::header::ACCEPT, "*/*")
        .header(http::header::CONNECTION, "close");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request =
        request.body(Empty::<bytes::Bytes>::new()).map_err(|e| format!("GET {path}: {e}"))?;
    let mut conn = std::pin::pin!(conn);
    let mut response = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        // The connection may finish first, having handed over the response.
        done = &mut conn => match done {
            Ok(()) => response.await,
            Err(e) => return Err(format!("GET {path}: {e}")),
        },
    };
    response.map(|r| r.status().as_u16()).map_err(|e| format!("GET {path}: {e}"))
}

/// Takes any server certificate; handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one request with `status` on `stream`; returns the request.
    async fn answer_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
        status: u16,
    ) -> String {
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        s.write_all(reply.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    /// A one-shot HTTP server answering `status`; returns its port.
    async fn answer(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            answer_on(s, status).await
        });
        (port, task)
    }

    fn target(port: u16, path: &str, tls: bool) -> Target<'_> {
        Target { host: "127.0.0.1", port, path, tls }
    }

    #[tokio::test]
    async fn http_get_reports_the_status_and_sends_headers() {
        let (port, server) = answer(204).await;
        let headers = vec![("X-Probe".to_string(), "yes".to_string())];
        assert_eq!(http_get(&target(port, "/healthz", false), &headers).await, Ok(204));
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /healthz HTTP/1.1\r\n"), "{request}");
        assert!(request.to_lowercase().contains("x-probe: yes"), "{request}");
        let (port, server) = answer(503).await;
        assert_eq!(http_get(&target(port, "/", false), &[]).await, Ok(503));
        server.await.unwrap();
        // Nothing listening: an error, not a status.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(http_get(&target(closed.port(), "/", false), &[]).await.is_err());
    }

    #[tokio::test]
    async fn https_probes_take_a_self_signed_certificate() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .args(["-nodes", "-days", "1", "-subj", "/CN=probe-test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output();
        if !made.is_ok_and(|o| o.status.success()) {
            println!("SKIPPED: needs the openssl command to make a certificate");
            return;
        }
        let certs = CertificateDer::pem_file_iter(&cert).unwrap().collect::<Result<_, _>>();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs.unwrap(), key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            answer_on(acceptor.accept(s).await.unwrap(), 200).await
        });
        assert_eq!(http_get(&target(port, "/tls", true), &[]).await, Ok(200));
        assert!(server.await.unwrap().starts_with("GET /tls HTTP/1.1\r\n"));
        // Plain HTTP to a TLS port fails rather than passing.
        let (port, server) = answer(200).await;
        assert!(http_get(&target(port, "/", true), &[]).await.is_err());
        server.abort();
    }
}

//! The connection to the API servers: every peer of the cluster, with
//! failover. A call goes to the peer that last answered; when that peer is
//! unreachable or has no quorum, the call moves on to the next peer and is
//! retried there with backoff, if retrying it cannot apply it twice.

use crate::error::Error;
use crate::leader::FenceToken;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// How the client dials and retries. The defaults suit a control loop.
#[derive(Clone, Debug)]
pub struct Config {
    /// The API server peers, as `host:port` or `http://host:port`.
    pub peers: Vec<String>,
    /// One unary call's limit on one peer.
    pub request_timeout: Duration,
    /// How long dialling one peer may take before the next is tried.
    pub connect_timeout: Duration,
    /// How long a call that is safe to retry keeps being retried.
    pub retry_for: Duration,
    /// The first pause between retries; it doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// TLS towards the peers (the cluster CA, and a client certificate if
    /// the client authenticates with one); None: plain TCP.
    pub tls: Option<berth_tls::ClientTls>,
    /// A bearer token every call carries (a static or service-account
    /// token), for clients without a client certificate.
    pub token: Option<String>,
    /// Who is calling, as `name/version`: the API server records the name
    /// as the field manager of this client's writes.
    pub user_agent: Option<String>,
    /// Called with each warning an answer carries (admission's: `would
    /// violate PodSecurity ...`); None drops them.
    pub on_warning: Option<WarningHandler>,
}

/// What a client does with the API's warnings.
#[derive(Clone)]
pub struct WarningHandler(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for WarningHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WarningHandler")
    }
}

impl Config {
    pub fn new<S: Into<String>>(peers: impl IntoIterator<Item = S>) -> Config {
        Config {
            peers: peers.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            retry_for: Duration::from_secs(30),
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            tls: None,
            token: None,
            user_agent: None,
            on_warning: None,
        }
    }
}

/// What may be done with a call that failed without a clear answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and writes that cannot take effect twice: a create with a
    /// name, an update or delete (conditioned on the object), a merge patch.
    Safe,
    /// A create with only generateName: sending it twice may create two
    /// objects, so it is retried only when a peer refused it unseen.
    OnlyIfRefused,
}

/// A client of the API servers; cheap to clone, clones share connections.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// The `berth-fence` header value writes carry, for a leader's client.
    fence: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

struct Shared {
    peers: Vec<Peer>,
    /// The peer calls go to first: the one that answered last.
    current: AtomicUsize,
    config: Config,
    /// The `authorization` header every call carries, from the token.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

struct Peer {
    address: String,
    channel: Channel,
}

/// The header a fenced write carries; the API server checks it in the same
/// transaction as the write.
const FENCE_HEADER: &str = "berth-fence";

impl Client {
    /// A client of these peers with the default configuration. Connections
    /// are made on first use; call it within a Tokio runtime.
    pub fn new<S: Into<String>>(peers: impl IntoIterator<Item = S>) -> Result<Client, Error> {
        Client::with_config(Config::new(peers))
    }

    pub fn with_config(config: Config) -> Result<Client, Error> {
        if config.peers.is_empty() {
            return Err(Error::NoPeers);
        }
        // Connections are made lazily by the runtime's reactor.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let peers = config
            .peers
            .iter()
            .map(|address| {
                let invalid = |e: &dyn std::fmt::Display| Error::InvalidAddress {
                    address: address.clone(),
                    reason: e.to_string(),
                };
                let mut endpoint = berth_tls::endpoint(address, config.tls.as_ref())
                    .map_err(|e| invalid(&e))?
                    .connect_timeout(config.connect_timeout)
                    .tcp_nodelay(true)
                    // A peer that vanished without closing its connections
                    // (a partition, a paused process) is noticed by watches.
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true);
                if let Some(agent) = &config.user_agent {
                    endpoint = endpoint.user_agent(agent.clone()).map_err(|e| invalid(&e))?;
                }
                Ok(Peer { address: address.clone(), channel: endpoint.connect_lazy() })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let authorization = match &config.token {
            None => None,
            Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                Error::InvalidToken("a token must be printable ASCII without line breaks".into())
            })?),
        };
        Ok(Client {
            shared: Arc::new(Shared { peers, current: AtomicUsize::new(0), config, authorization }),
            fence: None,
        })
    }

    /// A client whose writes carry a leader's fencing token: the API server
    /// refuses them once another holder has taken the token's Lease.
    pub fn fenced(&self, token: &FenceToken) -> Client {
        let value = token
            .to_string()
            .parse()
            .expect("a fencing token is namespace, name and number: always header-safe");
        Client { shared: self.shared.clone(), fence: Some(value) }
    }

    /// The peer address calls go to first.
    pub fn current_peer(&self) -> &str {
        let i = self.shared.current.load(Ordering::Relaxed) % self.shared.peers.len();
        &self.shared.peers[i].address
    }

    /// One unary call, moved across peers on failure while `retry` allows.
    pub(crate) async fn unary<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        message: Req,
        retry: Retry,
    ) -> Result<Resp, Error>
    where
        Req: prost::Message + Clone + 'static,
        Resp: prost::Message + Default + 'static,
    {
        self.call(service, method, message, retry, |mut grpc, request, path| async move {
            grpc.unary(request, path, tonic_prost::ProstCodec::default()).await
        })
        .await
    }

    /// Opens a server stream; opening moves across peers like a read, what
    /// happens to the stream later is the caller's to handle.
    pub(crate) async fn server_stream<Req, Item>(
        &self,
        service: &str,
        method: &str,
        message: Req,
    ) -> Result<tonic::Streaming<Item>, Error>
    where
        Req: prost::Message + Clone + 'static,
        Item: prost::Message + Default + 'static,
    {
        self.call(service, method, message, Retry::Safe, |mut grpc, request, path| async move {
            grpc.server_streaming(request, path, tonic_prost::ProstCodec::default()).await
        })
        .await
    }

    /// One call made by `invoke` on a ready connection, within the request
    /// timeout, moved across peers on failure while `retry` allows.
    async fn call<Req, Out, F, Fut>(
        &self,
        service: &str,
        method: &str,
        message: Req,
        retry: Retry,
        invoke: F,
    ) -> Result<Out, Error>
    where
        Req: prost::Message + Clone + 'static,
        F: Fn(tonic::client::Grpc<Channel>, tonic::Request<Req>, PathAndQuery) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Out>, tonic::Status>>,
    {
        let path = path(service, method)?;
        let timeout = self.shared.config.request_timeout;
        self.with_failover(retry, |channel| {
            let request = self.request(message.clone());
            let (path, invoke) = (path.clone(), &invoke);
            async move {
                let call = async {
                    let mut grpc = tonic::client::Grpc::new(channel);
                    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                    invoke(grpc, request, path).await
                };
                match tokio::time::timeout(timeout, call).await {
                    Ok(result) => result.map(|response| {
                        self.warned(&response);
                        response.into_inner()
                    }),
                    Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                        "{service}/{method}: no answer within {timeout:?}"
                    ))),
                }
            }
        })
        .await
    }

    /// Hands the answer's warnings to the configured handler.
    fn warned<T>(&self, response: &tonic::Response<T>) {
        let Some(handler) = &self.shared.config.on_warning else { return };
        for value in response.metadata().get_all("warning") {
            if let Ok(text) = value.to_str() {
                (handler.0)(text);
            }
        }
    }

    fn request<M>(&self, message: M) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        if let Some(fence) = &self.fence {
            request.metadata_mut().insert(FENCE_HEADER, fence.clone());
        }
        if let Some(authorization) = &self.shared.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        request
    }

    /// Runs `attempt` on the current peer; on a failure worth retrying,
    /// moves to the next peer and tries again after a backoff, until the
    /// configured retry time is spent.
    async fn with_failover<T, F, Fut>(&self, retry: Retry, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let config = &self.shared.config;
        let deadline = tokio::time::Instant::now() + config.retry_for;
        let mut backoff = config.backoff;
        let n = self.shared.peers.len();
        loop {
            let index = self.shared.current.load(Ordering::Relaxed) % n;
            let peer = &self.shared.peers[index];
            let status = match attempt(peer.channel.clone()).await {
                Ok(value) => return Ok(value),
                Err(status) => status,
            };
            let error = Error::from(status);
            let worth_retrying = match error.reason() {
                // Refused before anything was done: always safe.
                "TooManyRequests" => true,
                _ => {
                    retry == Retry::Safe
                        && matches!(
                            error.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Cancelled
                                | tonic::Code::DeadlineExceeded
                                | tonic::Code::Unknown
                        )
                }
            };
            if !worth_retrying || tokio::time::Instant::now() + backoff > deadline {
                return Err(error);
            }
            tracing::debug!(peer = %peer.address, %error, "API call failed; trying the next peer");
            metrics::counter!("berth_client_failovers_total").increment(1);
            let _ = self.shared.current.compare_exchange(
                index,
                (index + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }
}

fn path(service: &str, method: &str) -> Result<PathAndQuery, Error> {
    let text = format!("/{service}/{method}");
    PathAndQuery::try_from(text.as_str())
        .map_err(|e| Error::InvalidAddress { address: text.clone(), reason: e.to_string() })
}

/// Between half and all of `d`, so clients that failed together do not
/// retry together.
pub(crate) fn jitter(d: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / u32::MAX as f64;
    d.mul_f64(0.5 + r / 2.0)
}

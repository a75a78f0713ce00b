//! The workloads: register clients on the etcd facade, an API-object writer
//! through the apiserver, a watcher pinned to every peer, and two candidates
//! of a leader-elected, fenced writer. Each records what it saw.

use crate::history::{
    AckedWrite, ApiWrite, FencedWrite, Outcome, RegisterOp, StoreEvent, WatchLog,
};
use crate::schedule::Rng;
use berth_client::{Api, ElectionTiming, LeaderElector};
use berth_proto::coordination_v1::{Lease, LeaseSpec};
use berth_proto::etcd::etcdserverpb as pb;
use berth_proto::meta_v1::ObjectMeta;
use berth_raft_store::linearizability::{KvInput, KvOutput};
use futures::StreamExt;
use pb::kv_client::KvClient;
use pb::watch_client::WatchClient;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Keys of the registers live under this prefix, which the watchers watch.
pub const PREFIX: &str = "/chaos/";
/// The namespace of the API objects and Leases the workloads use.
pub const NAMESPACE: &str = "default";

/// Nanoseconds since the run started.
#[derive(Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A gRPC channel to one peer's etcd facade over TLS, dialled lazily.
pub fn channel(address: &str, tls: &berth_tls::ClientTls) -> Result<Channel, crate::Error> {
    Ok(berth_tls::endpoint(address, Some(tls))
        .map_err(|e| crate::Error::Harness(format!("bad peer address {address}: {e}")))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// One client of the registers: reads, writes and compare-and-sets on
/// `keys`, one call at a time. After a failure it moves to the next peer,
/// but a peer that answered with a refusal (no leader yet, or its forward
/// given up on a new term) is tried once more first: it is alive and soon
/// reaches the new leader, while the next peer may be the one cut off or
/// stopped, which costs the whole call deadline.
pub async fn registers(
    client: u64,
    seed: u64,
    peers: Vec<Channel>,
    keys: Vec<String>,
    clock: Clock,
    stop: CancellationToken,
) -> Vec<RegisterOp> {
    let mut rng = Rng::new(seed ^ client.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut ops = Vec::new();
    let mut peer = client as usize % peers.len();
    let mut seen: Vec<Option<String>> = vec![None; keys.len()];
    let mut written = 0u64;
    let mut tried_again = false;
    while !stop.is_cancelled() {
        let k = rng.below(keys.len() as u64) as usize;
        let key = keys[k].clone();
        let input = match rng.below(10) {
            0..=3 => KvInput::Get { key },
            4..=6 => {
                written += 1;
                KvInput::Put { key, value: format!("c{client}-{written}") }
            }
            _ => {
                written += 1;
                let new = format!("c{client}-{written}");
                KvInput::Cas { key, expected: seen[k].clone(), new }
            }
        };
        let call = clock.now();
        let answer =
            tokio::time::timeout(Duration::from_secs(1), register_call(&peers[peer], &input)).await;
        let ret = clock.now();
        // A status the peer sent has no local cause; a transport failure
        // (no connection, a reset) carries one.
        let refused =
            matches!(&answer, Ok(Err(status)) if std::error::Error::source(status).is_none());
        let (outcome, output, revision) = match answer {
            Ok(Ok((output, revision))) => (Outcome::Ok, Some(output), Some(revision)),
            // A read that failed did nothing; a write may have been applied.
            _ if matches!(input, KvInput::Get { .. }) => (Outcome::Fail, None, None),
            _ => (Outcome::Unknown, None, None),
        };
        match (&input, &output) {
            (KvInput::Get { .. }, Some(KvOutput::Get(value))) => seen[k] = value.clone(),
            (KvInput::Put { value, .. }, Some(_)) => seen[k] = Some(value.clone()),
            (KvInput::Cas { new, .. }, Some(KvOutput::Cas(true))) => seen[k] = Some(new.clone()),
            _ => {}
        }
        let failed = outcome != Outcome::Ok;
        ops.push(RegisterOp {
            client,
            peer,
            input,
            call,
            ret: Some(ret),
            outcome,
            output,
            revision,
        });
        if failed && refused && !tried_again {
            tried_again = true;
        } else if failed {
            tried_again = false;
            peer = (peer + 1) % peers.len();
        } else {
            tried_again = false;
        }
        // Pacing keeps the history a size the checker handles in seconds.
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(10 + rng.below(20))) => {}
        }
    }
    ops
}

async fn register_call(
    channel: &Channel,
    input: &KvInput,
) -> Result<(KvOutput, i64), tonic::Status> {
    let mut kv = KvClient::new(channel.clone());
    let revision = |header: Option<pb::ResponseHeader>| header.map_or(0, |h| h.revision);
    match input {
        KvInput::Get { key } => {
            let response = kv
                .range(pb::RangeRequest { key: key.clone().into_bytes(), ..Default::default() })
                .await?
                .into_inner();
            let value =
                response.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            Ok((KvOutput::Get(value), revision(response.header)))
        }
        KvInput::Put { key, value } => {
            let response = kv
                .put(pb::PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((KvOutput::Put, revision(response.header)))
        }
        KvInput::Cas { key, expected, new } => {
            use pb::compare::{CompareResult, CompareTarget, TargetUnion};
            let (target, union) = match expected {
                Some(value) => {
                    (CompareTarget::Value, TargetUnion::Value(value.clone().into_bytes()))
                }
                None => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
            };
            let put = pb::PutRequest {
                key: key.clone().into_bytes(),
                value: new.clone().into_bytes(),
                ..Default::default()
            };
            let response = kv
                .txn(pb::TxnRequest {
                    compare: vec![pb::Compare {
                        result: CompareResult::Equal as i32,
                        target: target as i32,
                        key: key.clone().into_bytes(),
                        range_end: Vec::new(),
                        target_union: Some(union),
                    }],
                    success: vec![pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(put)),
                    }],
                    failure: Vec::new(),
                })
                .await?
                .into_inner();
            Ok((KvOutput::Cas(response.succeeded), revision(response.header)))
        }
        KvInput::Delete { .. } => Err(tonic::Status::unimplemented("the workload never deletes")),
    }
}

/// Writes both keys of `pair` in one transaction, over and over, through
/// the peers in turn; returns the acknowledged writes. A watch must deliver
/// the two events of one transaction in one response (atomicity).
pub async fn pairs(
    peers: Vec<Channel>,
    pair: [String; 2],
    stop: CancellationToken,
) -> Vec<AckedWrite> {
    let mut acked = Vec::new();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let value = format!("pair-{n}");
        let put = |key: &String| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            })),
        };
        let txn = pb::TxnRequest {
            compare: Vec::new(),
            success: pair.iter().map(put).collect(),
            failure: Vec::new(),
        };
        let mut kv = KvClient::new(peers[n as usize % peers.len()].clone());
        let answer = tokio::time::timeout(Duration::from_secs(1), kv.txn(txn)).await;
        if let Ok(Ok(response)) = answer {
            if let Some(header) = response.into_inner().header {
                acked.extend(pair.iter().map(|key| AckedWrite {
                    key: key.clone(),
                    revision: header.revision,
                    value: Some(value.clone()),
                }));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    acked
}

/// The acknowledged writes of a register history, with their revisions.
pub fn acked_register_writes(ops: &[RegisterOp]) -> Vec<AckedWrite> {
    ops.iter()
        .filter(|op| op.acknowledged_write())
        .filter_map(|op| {
            let value = match &op.input {
                KvInput::Put { value, .. } => value.clone(),
                KvInput::Cas { new, .. } => new.clone(),
                _ => return None,
            };
            Some(AckedWrite {
                key: op.input.key().into(),
                revision: op.revision?,
                value: Some(value),
            })
        })
        .collect()
}

fn lease(name: &str, holder: String) -> Lease {
    Lease {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: NAMESPACE.into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec { holder_identity: Some(holder), ..Default::default() }),
        ..Default::default()
    }
}

fn resource_version(lease: &Lease) -> Option<i64> {
    lease.metadata.as_ref()?.resource_version.parse().ok()
}

/// Creates and updates API objects (Leases used as plain records) with
/// resourceVersion preconditions, through the failover client. Several
/// writers on the same objects race, so preconditions decide.
pub async fn api_objects(
    writer: u64,
    client: berth_client::Client,
    objects: Vec<String>,
    clock: Clock,
    stop: CancellationToken,
) -> Vec<ApiWrite> {
    let api: Api<Lease> = Api::namespaced(&client, NAMESPACE);
    let mut writes = Vec::new();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        for name in &objects {
            n += 1;
            let call = clock.now();
            let current = tokio::time::timeout(Duration::from_secs(3), api.get_opt(name)).await;
            let (result, from) = match current {
                Ok(Ok(None)) => (api.create(&lease(name, format!("api{writer}-{n}"))).await, None),
                Ok(Ok(Some(mut object))) => {
                    let from = resource_version(&object);
                    object.spec.get_or_insert_with(Default::default).holder_identity =
                        Some(format!("api{writer}-{n}"));
                    (api.update(&object).await, from)
                }
                _ => continue,
            };
            let outcome = match &result {
                Ok(_) => Outcome::Ok,
                Err(e) if e.is_conflict() || e.is_already_exists() => Outcome::Fail,
                Err(_) => Outcome::Unknown,
            };
            let to = result.as_ref().ok().and_then(resource_version);
            writes.push(ApiWrite {
                writer,
                object: name.clone(),
                call,
                ret: clock.now(),
                outcome,
                from,
                to,
            });
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    writes
}

/// The store key of an API object of the workload.
pub fn object_key(name: &str) -> String {
    format!("/registry/leases/{NAMESPACE}/{name}")
}

fn store_event(event: &berth_proto::etcd::mvccpb::Event) -> Option<StoreEvent> {
    let kv = event.kv.as_ref()?;
    let delete = event.r#type == berth_proto::etcd::mvccpb::event::EventType::Delete as i32;
    Some(StoreEvent {
        revision: kv.mod_revision,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: (!delete).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
    })
}

/// The end of the range that holds every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One watch stream from `from`; feeds `sink` until the stream ends or
/// fails.
async fn watch_once(
    channel: &Channel,
    key: &[u8],
    range_end: Vec<u8>,
    from: i64,
    mut sink: impl FnMut(Vec<StoreEvent>),
) -> Result<(), String> {
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.to_vec(),
                range_end,
                start_revision: from,
                ..Default::default()
            },
        )),
    };
    let requests = futures::stream::iter([create]).chain(futures::stream::pending());
    let mut stream = WatchClient::new(channel.clone())
        .watch(requests)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    while let Some(response) = stream.next().await {
        let response = response.map_err(|e| e.to_string())?;
        if response.canceled || response.compact_revision > 0 {
            return Err(format!("watch cancelled (compacted at {})", response.compact_revision));
        }
        sink(response.events.iter().filter_map(store_event).collect());
    }
    Err("stream ended".into())
}

/// Watches the registers' prefix on one peer from `start`, resuming after
/// the last revision it received whenever the stream breaks.
pub async fn watcher(
    peer: usize,
    channel: Channel,
    start: i64,
    log: Arc<Mutex<WatchLog>>,
    stop: CancellationToken,
) {
    let key = PREFIX.as_bytes();
    {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        *log = WatchLog { peer, start_revision: start, ..WatchLog::default() };
    }
    loop {
        let from = {
            let log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.events.last().map_or(start, |e| e.revision + 1)
        };
        let sink = |events: Vec<StoreEvent>| {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            let response = log.responses.last().map_or(0, |r| r + 1);
            log.responses.extend(events.iter().map(|_| response));
            log.events.extend(events);
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = watch_once(&channel, key, prefix_end(key), from, sink) => {}
        }
        log.lock().unwrap_or_else(|e| e.into_inner()).resumes += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Every change of the whole key space from `start` through `through`, read
/// with one watch on a healed peer.
pub async fn store_history(
    channel: &Channel,
    start: i64,
    through: i64,
    within: Duration,
) -> Result<Vec<StoreEvent>, String> {
    let events = Mutex::new(Vec::new());
    let done = tokio::sync::Notify::new();
    let sink = |batch: Vec<StoreEvent>| {
        let mut events = events.lock().unwrap_or_else(|e| e.into_inner());
        events.extend(batch);
        if events.last().is_some_and(|e: &StoreEvent| e.revision >= through) {
            done.notify_one();
        }
    };
    if through < start {
        return Ok(Vec::new());
    }
    let read = async {
        tokio::select! {
            result = watch_once(channel, &[0], vec![0], start, sink) => result,
            _ = done.notified() => Ok(()),
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(Ok(())) => Ok(events.into_inner().unwrap_or_else(|e| e.into_inner())),
        Ok(Err(e)) => Err(format!("reading the store's history: {e}")),
        Err(_) => {
            Err(format!("the store's history through revision {through} took over {within:?}"))
        }
    }
}

/// Freezes a task mid-flight, as SIGSTOP freezes a process: while frozen,
/// the futures behind it are not polled at all, timers included.
#[derive(Default)]
pub struct Freezer {
    frozen: AtomicBool,
    /// Freeze when about to write, holding a token: the case fencing is for.
    before_write: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Freezer {
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Freezes the writer once it holds a token and is about to write.
    pub fn freeze_before_next_write(&self) {
        self.before_write.store(true, Ordering::SeqCst);
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// Called by the writer with a token in hand; freezes it if asked to.
    async fn checkpoint(&self) {
        if self.before_write.swap(false, Ordering::SeqCst) {
            self.freeze();
            // The next poll sees the freeze and parks the whole task.
            tokio::task::yield_now().await;
        }
    }

    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        for waker in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            waker.wake();
        }
    }
}

struct Frozen<F> {
    freezer: Arc<Freezer>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Frozen<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.freezer.frozen.load(Ordering::SeqCst) {
            let mut wakers = this.freezer.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if this.freezer.frozen.load(Ordering::SeqCst) {
                wakers.push(cx.waker().clone());
                return Poll::Pending;
            }
        }
        this.inner.as_mut().poll(cx)
    }
}

/// The Lease the fenced writer's candidates elect a leader on.
pub const WRITER_LEASE: &str = "chaos-writer";
/// The object the elected writer writes.
pub const FENCED_OBJECT: &str = "chaos-fenced";

/// One candidate of the leader-elected writer: campaigns for
/// [`WRITER_LEASE`] and, while it leads, updates [`FENCED_OBJECT`] with
/// its fencing token on every write. Returns its writes and whether it
/// leads now.
pub struct Candidate {
    pub freezer: Arc<Freezer>,
    pub leading: tokio::sync::watch::Receiver<Option<berth_client::FenceToken>>,
    pub task: tokio::task::JoinHandle<Vec<FencedWrite>>,
}

pub fn candidate(
    index: usize,
    client: berth_client::Client,
    clock: Clock,
    stop: CancellationToken,
) -> Candidate {
    let timing = ElectionTiming {
        lease_duration: Duration::from_millis(2000),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
    };
    let elector = LeaderElector::new(
        &client,
        NAMESPACE,
        WRITER_LEASE,
        &format!("chaos-writer-{index}"),
        timing,
    );
    let leading = elector.subscribe();
    let freezer = Arc::new(Freezer::default());
    let mut tokens = elector.subscribe();
    let gate = freezer.clone();
    let work = async move {
        let campaign = elector.run(stop.clone());
        let write = async {
            let mut writes = Vec::new();
            while !stop.is_cancelled() {
                let token = tokens.borrow_and_update().clone();
                let Some(token) = token else {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokens.changed() => continue,
                    }
                };
                gate.checkpoint().await;
                writes.push(fenced_write(index, &client, &token, &clock).await);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            writes
        };
        let ((), writes) = tokio::join!(campaign, write);
        writes
    };
    let task = tokio::spawn(Frozen { freezer: freezer.clone(), inner: Box::pin(work) });
    Candidate { freezer, leading, task }
}

async fn fenced_write(
    index: usize,
    client: &berth_client::Client,
    token: &berth_client::FenceToken,
    clock: &Clock,
) -> FencedWrite {
    let call = clock.now();
    let api: Api<Lease> = Api::namespaced(&client.fenced(token), NAMESPACE);
    let holder = format!("chaos-writer-{index}@{}", token.revision);
    let attempt = async {
        match api.get_opt(FENCED_OBJECT).await? {
            None => api.create(&lease(FENCED_OBJECT, holder)).await,
            Some(mut object) => {
                object.spec.get_or_insert_with(Default::default).holder_identity = Some(holder);
                api.update(&object).await
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(3), attempt).await;
    let (outcome, revision) = match result {
        Ok(Ok(object)) => (Outcome::Ok, resource_version(&object)),
        Ok(Err(e)) if e.is_conflict() || e.is_already_exists() || e.reason() == "Forbidden" => {
            (Outcome::Fail, None)
        }
        _ => (Outcome::Unknown, None),
    };
    FencedWrite {
        candidate: index,
        token: token.revision,
        call,
        ret: Some(clock.now()),
        outcome,
        revision,
    }
}

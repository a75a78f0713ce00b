//! Watches served by each peer from its own applied stream.
//!
//! The state machine publishes each applied revision's events on a broadcast
//! channel after writing them. A watcher first catches up from the stored
//! history, then follows the broadcast; whenever it falls behind (the channel
//! lagged or a snapshot moved the revision) it reads the missing revisions
//! from the history again. It tracks the next revision it owes, so delivery is
//! ordered, gapless and free of duplicates, and all events of one revision
//! go out in one batch.

use crate::db::Db;
use crate::error::StoreError;
use crate::mvcc::{self, KeyRange};
use berth_proto::etcd::mvccpb::{event::EventType, Event};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Broadcast depth; a watcher further behind reads from the history instead.
const BROADCAST_DEPTH: usize = 1024;
/// Batches buffered per watcher before it waits for its reader.
const WATCHER_BUFFER: usize = 128;

/// One applied revision's events (empty: the revision moved without events
/// a watcher could have seen live, e.g. a snapshot was installed).
#[derive(Clone, Debug)]
pub(crate) struct Published {
    pub revision: i64,
    pub events: Arc<Vec<Event>>,
}

pub(crate) struct WatchHub {
    tx: broadcast::Sender<Published>,
    /// Highest revision whose events are stored and published.
    published: AtomicI64,
    watchers: AtomicUsize,
}

impl WatchHub {
    pub(crate) fn new(revision: i64) -> Arc<WatchHub> {
        let (tx, _) = broadcast::channel(BROADCAST_DEPTH);
        Arc::new(WatchHub {
            tx,
            published: AtomicI64::new(revision),
            watchers: AtomicUsize::new(0),
        })
    }

    /// Called by the state machine after the revision is written.
    pub(crate) fn publish(&self, revision: i64, events: Vec<Event>) {
        self.published.store(revision, Ordering::Release);
        let _ = self.tx.send(Published { revision, events: Arc::new(events) });
    }

    pub(crate) fn revision(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }

    pub(crate) fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

/// What to watch: etcd's WatchCreateRequest in Rust terms.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// First revision to deliver; 0 = changes after now.
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    /// Send an empty batch at this interval when nothing else was sent.
    pub progress_interval: Option<Duration>,
}

/// Events of one revision, or (with no events) a progress notification:
/// every event up to `revision` has been delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// A running watch. Dropping it stops the watcher.
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchBatch, StoreError>>,
    progress: Arc<Notify>,
    _stop: tokio_util::sync::DropGuard,
}

impl Watch {
    /// The next batch; `None` once the watch has ended. An `Err(Compacted)`
    /// ends the watch: the start revision (or where it fell behind to) is no
    /// longer in history.
    pub async fn next(&mut self) -> Option<Result<WatchBatch, StoreError>> {
        self.rx.recv().await
    }

    /// Asks for a progress notification after everything owed so far.
    pub fn request_progress(&self) {
        self.progress.notify_one();
    }
}

pub(crate) fn start(db: Arc<Db>, hub: Arc<WatchHub>, options: WatchOptions) -> Watch {
    let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
    let stop = CancellationToken::new();
    let progress = Arc::new(Notify::new());
    // Subscribe before reading the published revision, so nothing published
    // between the two is missed.
    let live = hub.tx.subscribe();
    let now = hub.revision();
    let next = if options.start_revision > 0 { options.start_revision } else { now + 1 };
    let watcher = Watcher {
        db,
        hub: hub.clone(),
        range: KeyRange::new(&options.key, &options.range_end),
        options,
        next,
        tx,
    };
    hub.watchers.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("berth_store_watchers").increment(1.0);
    let token = stop.clone();
    let progress_signal = progress.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => {}
            _ = watcher.run(live, progress_signal) => {}
        }
        hub.watchers.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("berth_store_watchers").decrement(1.0);
    });
    Watch { rx, progress, _stop: stop.drop_guard() }
}

struct Watcher {
    db: Arc<Db>,
    hub: Arc<WatchHub>,
    options: WatchOptions,
    range: KeyRange,
    /// The next revision this watcher owes its reader.
    next: i64,
    tx: mpsc::Sender<Result<WatchBatch, StoreError>>,
}

/// Why a watcher stopped.
enum Stop {
    ReaderGone,
    Failed,
}

impl Watcher {
    async fn run(mut self, mut live: broadcast::Receiver<Published>, progress: Arc<Notify>) {
        if self.catch_up(self.hub.revision()).await.is_err() {
            return;
        }
        let interval =
            self.options.progress_interval.unwrap_or(Duration::from_secs(3600 * 24 * 365));
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                received = live.recv() => {
                    let outcome = match received {
                        Ok(batch) if batch.revision < self.next => Ok(()),
                        Ok(batch) if batch.revision == self.next && !batch.events.is_empty() => {
                            self.deliver(batch.revision, &batch.events).await
                        }
                        // A gap or a jump: the history has what was missed.
                        Ok(batch) => self.catch_up(batch.revision).await,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            self.catch_up(self.hub.revision()).await
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if outcome.is_err() {
                        return;
                    }
                }
                _ = progress.notified() => {
                    if self.send_progress().await.is_err() {
                        return;
                    }
                }
                _ = ticker.tick(), if self.options.progress_interval.is_some() => {
                    if self.send_progress().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn send_progress(&mut self) -> Result<(), Stop> {
        let batch = WatchBatch { revision: self.next - 1, events: Vec::new() };
        self.tx.send(Ok(batch)).await.map_err(|_| Stop::ReaderGone)
    }

    /// Delivers every stored revision from `next` through `upto`.
    async fn catch_up(&mut self, upto: i64) -> Result<(), Stop> {
        while self.next <= upto {
            let db = self.db.clone();
            let (from, to) = (self.next, upto.min(self.next + 1000));
            let read = tokio::task::spawn_blocking(move || {
                let view = db.view();
                let (_, compacted) = mvcc::revisions(&view)?;
                if from < compacted {
                    return Err(StoreError::Compacted {
                        requested: from,
                        compact_revision: compacted,
                    });
                }
                mvcc::events_between(&view, from, to)
            })
            .await
            .unwrap_or_else(|e| Err(StoreError::Internal(format!("watch reader failed: {e}"))));
            let revisions = match read {
                Ok(revisions) => revisions,
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return Err(Stop::Failed);
                }
            };
            for (rev, events) in revisions {
                self.deliver(rev, &events).await?;
            }
            self.next = to + 1;
        }
        Ok(())
    }

    async fn deliver(&mut self, revision: i64, events: &[Event]) -> Result<(), Stop> {
        self.next = revision + 1;
        let mut chosen = Vec::new();
        for event in events {
            let Some(kv) = &event.kv else { continue };
            if !self.range.contains(&kv.key) {
                continue;
            }
            let is_put = event.r#type == EventType::Put as i32;
            if (is_put && self.options.no_put) || (!is_put && self.options.no_delete) {
                continue;
            }
            let mut event = event.clone();
            if self.options.prev_kv {
                let view = self.db.view();
                event.prev_kv =
                    mvcc::value_before(&view, &kv.key, revision).map_err(|_| Stop::Failed)?;
            }
            chosen.push(event);
        }
        if chosen.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Ok(WatchBatch { revision, events: chosen }))
            .await
            .map_err(|_| Stop::ReaderGone)
    }
}

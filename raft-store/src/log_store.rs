//! The Raft log and vote on RocksDB, in their own column families. Appends
//! and votes are fsynced before they are acknowledged; one append call writes
//! all its entries in one batch, so concurrent proposals share an fsync.

use crate::db::{Db, CF_LOG, CF_RAFT};
use crate::keys;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogId, RaftLogReader, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Db>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        LogStore { db }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let bytes = self.db.get_cf(CF_RAFT, key).map_err(|e| read_err(ErrorSubject::Store, e))?;
        bytes
            .map(|b| postcard::from_bytes(&b).map_err(|e| read_err(ErrorSubject::Store, e)))
            .transpose()
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut iter = self.db.iterator_cf(CF_LOG, IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(|e| read_err(ErrorSubject::Logs, e))?;
                let entry: Entry =
                    postcard::from_bytes(&value).map_err(|e| read_err(ErrorSubject::Logs, e))?;
                Ok(Some(*entry.get_log_id()))
            }
        }
    }

    /// Runs a synchronous RocksDB write off the async workers and waits for it.
    async fn write(
        &self,
        batch: WriteBatch,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let db = self.db.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || db.write_synced(batch))
            .await
            .map_err(|e| write_err(subject.clone(), e))?;
        metrics::histogram!("berth_store_fsync_seconds").record(started.elapsed().as_secs_f64());
        result.map_err(|e| write_err(subject, e))
    }
}

fn encode<T: serde::Serialize>(
    value: &T,
    subject: ErrorSubject<NodeId>,
) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(|e| write_err(subject, e))
}

pub(crate) fn read_err(
    subject: ErrorSubject<NodeId>,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::from_io_error(subject, ErrorVerb::Read, std::io::Error::other(e.to_string()))
}

pub(crate) fn write_err(
    subject: ErrorSubject<NodeId>,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::from_io_error(subject, ErrorVerb::Write, std::io::Error::other(e.to_string()))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = keys::revision(start as i64);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(CF_LOG, IteratorMode::From(&from, Direction::Forward)) {
            let (key, value) = item.map_err(|e| read_err(ErrorSubject::Logs, e))?;
            let index = keys::parse_revision(&key).unwrap_or(i64::MAX) as u64;
            if !range.contains(&index) {
                break;
            }
            out.push(postcard::from_bytes(&value).map_err(|e| read_err(ErrorSubject::Logs, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(LAST_PURGED)?;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        self.db.put_in(&mut batch, CF_RAFT, VOTE, encode(vote, ErrorSubject::Vote)?);
        self.write(batch, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced: losing it only means re-learning the commit index from the leader.
        let bytes = encode(&committed, ErrorSubject::Store)?;
        self.db.put_cf(CF_RAFT, COMMITTED, bytes).map_err(|e| write_err(ErrorSubject::Store, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let index = entry.get_log_id().index;
            let bytes = encode(&entry, ErrorSubject::Logs)?;
            self.db.put_in(&mut batch, CF_LOG, &keys::revision(index as i64), bytes);
        }
        let result = self.write(batch, ErrorSubject::Logs).await;
        callback.log_io_completed(
            result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        self.db.delete_range_in(
            &mut batch,
            CF_LOG,
            &keys::revision(log_id.index as i64),
            &keys::revision(i64::MAX),
        );
        self.write(batch, ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purged entries are covered by a snapshot built from the state
        // machine; make every state-machine write before it durable first.
        self.db.sync_wal().map_err(|e| write_err(ErrorSubject::Store, e))?;
        let mut batch = WriteBatch::default();
        self.db.put_in(&mut batch, CF_RAFT, LAST_PURGED, encode(&log_id, ErrorSubject::Logs)?);
        self.db.delete_range_in(
            &mut batch,
            CF_LOG,
            &keys::revision(0),
            &keys::revision(log_id.index as i64 + 1),
        );
        self.write(batch, ErrorSubject::Logs).await
    }
}

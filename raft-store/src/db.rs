//! The one RocksDB instance of a peer: the Raft log and vote, and the state
//! machine, each in its own column families, sharing one write-ahead log so a
//! state-machine batch and its applied log id land together.

use crate::error::StoreError;
use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBIteratorWithThreadMode, IteratorMode,
    MultiThreaded, Options, WriteBatch, WriteOptions,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Rocks = rocksdb::DBWithThreadMode<MultiThreaded>;

/// Raft log entries by index.
pub(crate) const CF_LOG: &str = "raft_log";
/// Vote, last purged log id, committed log id, cluster identity.
pub(crate) const CF_RAFT: &str = "raft_meta";
/// Current value of every live key.
pub(crate) const CF_KV: &str = "kv";
/// Every revision of every key: escaped key + revision -> KeyValue (empty
/// value with version 0 marks a deletion).
pub(crate) const CF_HISTORY: &str = "history";
/// Events in revision order: revision + position -> Event.
pub(crate) const CF_EVENTS: &str = "events";
/// Leases by id, and the keys attached to each.
pub(crate) const CF_LEASES: &str = "leases";
pub(crate) const CF_LEASE_KEYS: &str = "lease_keys";
/// Last applied log id, membership, revision, compacted revision.
pub(crate) const CF_SM: &str = "sm_meta";

pub(crate) const STATE_MACHINE_CFS: &[&str] =
    &[CF_KV, CF_HISTORY, CF_EVENTS, CF_LEASES, CF_LEASE_KEYS, CF_SM];
const ALL_CFS: &[&str] =
    &[CF_LOG, CF_RAFT, CF_KV, CF_HISTORY, CF_EVENTS, CF_LEASES, CF_LEASE_KEYS, CF_SM];

const CLUSTER_ID: &[u8] = b"cluster_id";

pub(crate) struct Db {
    rocks: Rocks,
    path: PathBuf,
}

impl Db {
    /// Opens (or creates) the data directory of a peer of `cluster`. A
    /// directory of another cluster, a non-empty directory that is not a
    /// store, or a corrupt store is refused and left untouched.
    pub(crate) fn open(path: &Path, cluster: &str) -> Result<Db, StoreError> {
        let exists = path.join("CURRENT").exists();
        if !exists && path.exists() {
            let mut entries = std::fs::read_dir(path).map_err(|e| StoreError::io(path, e))?;
            if entries.next().is_some() {
                return Err(StoreError::NotAStore { path: path.to_path_buf() });
            }
        }
        std::fs::create_dir_all(path).map_err(|e| StoreError::io(path, e))?;

        let mut options = Options::default();
        options.create_if_missing(!exists);
        options.create_missing_column_families(true);
        options.set_paranoid_checks(true);
        options.set_max_background_jobs(2);
        let cfs = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let rocks = Rocks::open_cf_descriptors(&options, path, cfs)
            .map_err(|e| StoreError::Open { path: path.to_path_buf(), reason: e.to_string() })?;
        let db = Db { rocks, path: path.to_path_buf() };

        let open_err = |e: rocksdb::Error| StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        match db.get_cf(CF_RAFT, CLUSTER_ID).map_err(open_err)? {
            Some(found) if found != cluster.as_bytes() => {
                return Err(StoreError::OtherCluster {
                    path: path.to_path_buf(),
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: cluster.to_string(),
                })
            }
            Some(_) => {}
            None => {
                let mut batch = WriteBatch::default();
                db.put_in(&mut batch, CF_RAFT, CLUSTER_ID, cluster.as_bytes());
                db.write_synced(batch).map_err(open_err)?;
            }
        }
        Ok(db)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of live data files (SSTs and memtables), for status reports.
    pub(crate) fn size(&self) -> u64 {
        let property = |name| self.rocks.property_int_value(name).ok().flatten().unwrap_or(0);
        property("rocksdb.total-sst-files-size") + property("rocksdb.cur-size-all-mem-tables")
    }

    fn cf(&self, name: &str) -> Arc<BoundColumnFamily<'_>> {
        self.rocks.cf_handle(name).expect("every column family is created at open")
    }

    pub(crate) fn get_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.rocks.get_cf(&self.cf(cf), key)
    }

    pub(crate) fn put_cf(
        &self,
        cf: &str,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), rocksdb::Error> {
        self.rocks.put_cf(&self.cf(cf), key, value)
    }

    pub(crate) fn iterator_cf<'a>(
        &'a self,
        cf: &str,
        mode: IteratorMode<'_>,
    ) -> DBIteratorWithThreadMode<'a, Rocks> {
        self.rocks.iterator_cf(&self.cf(cf), mode)
    }

    pub(crate) fn put_in(
        &self,
        batch: &mut WriteBatch,
        cf: &str,
        key: &[u8],
        value: impl AsRef<[u8]>,
    ) {
        batch.put_cf(&self.cf(cf), key, value);
    }

    pub(crate) fn delete_in(&self, batch: &mut WriteBatch, cf: &str, key: &[u8]) {
        batch.delete_cf(&self.cf(cf), key);
    }

    pub(crate) fn delete_range_in(&self, batch: &mut WriteBatch, cf: &str, from: &[u8], to: &[u8]) {
        batch.delete_range_cf(&self.cf(cf), from, to);
    }

    /// Writes and fsyncs before returning.
    pub(crate) fn write_synced(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.rocks.write_opt(batch, &options)
    }

    /// Writes without waiting for the disk: used for state-machine batches,
    /// which the fsynced log can always reproduce.
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        self.rocks.write(batch)
    }

    pub(crate) fn sync_wal(&self) -> Result<(), rocksdb::Error> {
        self.rocks.flush_wal(true)
    }

    /// A consistent read view: everything read through it is as of one
    /// moment, even while batches are being applied.
    pub(crate) fn view(&self) -> View<'_> {
        View { db: self, snapshot: Some(self.rocks.snapshot()) }
    }

    /// A view of the latest state, for the single writer (apply), which
    /// sees its own earlier writes.
    pub(crate) fn latest(&self) -> View<'_> {
        View { db: self, snapshot: None }
    }
}

/// Reads as of one moment (or of the latest state, for the writer).
pub(crate) struct View<'a> {
    db: &'a Db,
    snapshot: Option<rocksdb::SnapshotWithThreadMode<'a, Rocks>>,
}

impl<'a> View<'a> {
    fn options(&self) -> rocksdb::ReadOptions {
        let mut options = rocksdb::ReadOptions::default();
        if let Some(snapshot) = &self.snapshot {
            options.set_snapshot(snapshot);
        }
        options
    }

    pub(crate) fn db(&self) -> &'a Db {
        self.db
    }

    pub(crate) fn get_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        self.db.rocks.get_cf_opt(&self.db.cf(cf), key, &self.options())
    }

    pub(crate) fn iterator_cf(
        &self,
        cf: &str,
        mode: IteratorMode<'_>,
    ) -> DBIteratorWithThreadMode<'_, Rocks> {
        self.db.rocks.iterator_cf_opt(&self.db.cf(cf), self.options(), mode)
    }
}

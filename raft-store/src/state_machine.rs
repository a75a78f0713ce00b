//! The Raft state machine: applies committed commands to the MVCC key space,
//! one RocksDB batch per command together with the applied log id, and
//! builds and installs snapshots.
//!
//! A snapshot is a consistent dump of the state-machine column families
//! (read through one RocksDB snapshot) into a file that openraft streams to a
//! follower in chunks; installing it replaces those column families in one
//! batch.

use crate::db::{Db, View, CF_SM, STATE_MACHINE_CFS};
use crate::log_store::{read_err, write_err};
use crate::mvcc::{self, Apply};
use crate::types::{
    Applied, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::watch::WatchHub;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, RaftSnapshotBuilder};
use rocksdb::{IteratorMode, WriteBatch};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncSeekExt;

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
const SNAPSHOT_MAGIC: &[u8; 8] = b"BERTHSN1";

pub(crate) struct StateMachine {
    db: Arc<Db>,
    hub: Arc<WatchHub>,
    snapshots: PathBuf,
    counter: Arc<AtomicU64>,
}

impl StateMachine {
    pub(crate) fn new(db: Arc<Db>, hub: Arc<WatchHub>) -> Result<StateMachine, crate::StoreError> {
        let snapshots = db.path().join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(|e| crate::StoreError::io(&snapshots, e))?;
        // Partial files from an interrupted send or build are never valid.
        if let Ok(entries) = std::fs::read_dir(&snapshots) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "part") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(StateMachine { db, hub, snapshots, counter: Arc::new(AtomicU64::new(0)) })
    }
}

fn sm_err(e: impl std::fmt::Display) -> StorageError {
    write_err(ErrorSubject::StateMachine, std::io::Error::other(e.to_string()))
}

fn read_applied(view: &View) -> Result<(Option<LogId>, StoredMembership), StorageError> {
    let get = |key| view.get_cf(CF_SM, key).map_err(|e| read_err(ErrorSubject::StateMachine, e));
    let applied = match get(APPLIED)? {
        Some(b) => postcard::from_bytes(&b).map_err(|e| read_err(ErrorSubject::StateMachine, e))?,
        None => None,
    };
    let membership = match get(MEMBERSHIP)? {
        Some(b) => postcard::from_bytes(&b).map_err(|e| read_err(ErrorSubject::StateMachine, e))?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

fn stage_applied(db: &Db, batch: &mut WriteBatch, applied: &LogId) -> Result<(), StorageError> {
    let bytes = postcard::to_allocvec(&Some(*applied)).map_err(sm_err)?;
    db.put_in(batch, CF_SM, APPLIED, bytes);
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        read_applied(&self.db.latest())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            let started = Instant::now();
            let log_id = entry.log_id;
            let (mut batch, result, published) = match &entry.payload {
                EntryPayload::Blank => (WriteBatch::default(), Default::default(), Vec::new()),
                EntryPayload::Normal(proposal) => {
                    let view = self.db.latest();
                    let mut apply = Apply::new(&view).map_err(sm_err)?;
                    let result = apply.command(&proposal.0).map_err(sm_err)?;
                    let staged = apply.finish().map_err(sm_err)?;
                    (staged.batch, result, staged.published)
                }
                EntryPayload::Membership(membership) => {
                    let mut batch = WriteBatch::default();
                    let stored = StoredMembership::new(Some(log_id), membership.clone());
                    let bytes = postcard::to_allocvec(&stored).map_err(sm_err)?;
                    self.db.put_in(&mut batch, CF_SM, MEMBERSHIP, bytes);
                    (batch, Default::default(), Vec::new())
                }
            };
            stage_applied(&self.db, &mut batch, &log_id)?;
            self.db.write(batch).map_err(sm_err)?;
            for (revision, events) in published {
                self.hub.publish(revision, events);
            }
            let mut result: berth_proto::raft_v1::CommandResult = result;
            result.log_index = log_id.index;
            if result.revision == 0 {
                result.revision = self.hub.revision();
            }
            metrics::histogram!("berth_store_apply_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::gauge!("berth_store_applied_index").set(log_id.index as f64);
            out.push(Applied(result));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            dir: self.snapshots.clone(),
            counter: self.counter.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.snapshots.join(format!("incoming-{n}.part"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| write_err(ErrorSubject::Snapshot(None), e))?;
        // The open handle keeps the data; the name is not needed any more.
        let _ = std::fs::remove_file(&path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut file = *snapshot;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| read_err(ErrorSubject::Snapshot(None), e))?;
        let file = file.into_std().await;
        let db = self.db.clone();
        let dir = self.snapshots.clone();
        let meta = meta.clone();
        let revision = tokio::task::spawn_blocking(move || install(&db, &dir, &meta, file))
            .await
            .map_err(sm_err)??;
        // Watchers catch up from the installed history.
        self.hub.publish(revision, Vec::new());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        current_snapshot(&self.snapshots).await
    }
}

/// Replaces the state machine with a snapshot's content in one batch.
fn install(
    db: &Db,
    dir: &Path,
    meta: &SnapshotMeta,
    mut file: std::fs::File,
) -> Result<i64, StorageError> {
    let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic).map_err(|e| read_err(subject(), e))?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(read_err(subject(), std::io::Error::other("not a berth snapshot")));
    }
    let mut batch = WriteBatch::default();
    let latest = db.latest();
    for cf in STATE_MACHINE_CFS {
        for item in latest.iterator_cf(cf, IteratorMode::Start) {
            let (key, _) = item.map_err(|e| read_err(subject(), e))?;
            db.delete_in(&mut batch, cf, &key);
        }
    }
    let mut reader = std::io::BufReader::new(&mut file);
    loop {
        let mut tag = [0u8; 1];
        reader.read_exact(&mut tag).map_err(|e| read_err(subject(), e))?;
        if tag[0] == 0xFF {
            break;
        }
        let cf = STATE_MACHINE_CFS.get(tag[0] as usize).ok_or_else(|| {
            read_err(subject(), std::io::Error::other("bad column family in snapshot"))
        })?;
        let key = read_chunk(&mut reader).map_err(|e| read_err(subject(), e))?;
        let value = read_chunk(&mut reader).map_err(|e| read_err(subject(), e))?;
        db.put_in(&mut batch, cf, &key, value);
    }
    db.write(batch).map_err(|e| write_err(subject(), e))?;
    db.sync_wal().map_err(|e| write_err(subject(), e))?;
    // Keep the installed snapshot as this peer's current one.
    file.sync_all().map_err(|e| write_err(subject(), e))?;
    save_snapshot_file(dir, meta, &mut file).map_err(|e| write_err(subject(), e))?;
    let (revision, _) = mvcc::revisions(&db.latest()).map_err(sm_err)?;
    Ok(revision)
}

fn read_chunk(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    // No key or value comes near this; a larger length is a damaged file.
    if len > 64 << 20 {
        return Err(std::io::Error::other(format!(
            "damaged snapshot: an entry claims {len} bytes"
        )));
    }
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_chunk(writer: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(&(bytes.len() as u32).to_be_bytes())?;
    writer.write_all(bytes)
}

const CURRENT: &str = "current.snap";
const CURRENT_META: &str = "current.meta";

/// Makes `file` (positioned anywhere) the current snapshot, atomically.
fn save_snapshot_file(
    dir: &Path,
    meta: &SnapshotMeta,
    file: &mut std::fs::File,
) -> std::io::Result<()> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))?;
    let part = dir.join("current.snap.part");
    let mut out = std::fs::File::create(&part)?;
    std::io::copy(file, &mut out)?;
    out.sync_all()?;
    let meta_part = dir.join("current.meta.part");
    std::fs::write(&meta_part, postcard::to_allocvec(meta).map_err(std::io::Error::other)?)?;
    std::fs::rename(&part, dir.join(CURRENT))?;
    std::fs::rename(&meta_part, dir.join(CURRENT_META))?;
    Ok(())
}

async fn current_snapshot(dir: &Path) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
    let meta_path = dir.join(CURRENT_META);
    let Ok(bytes) = tokio::fs::read(&meta_path).await else {
        return Ok(None);
    };
    let meta: SnapshotMeta =
        postcard::from_bytes(&bytes).map_err(|e| read_err(ErrorSubject::Snapshot(None), e))?;
    let file = tokio::fs::File::open(dir.join(CURRENT))
        .await
        .map_err(|e| read_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
    Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
}

pub(crate) struct SnapshotBuilder {
    db: Arc<Db>,
    dir: PathBuf,
    counter: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let dir = self.dir.clone();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || build(&db, &dir, n)).await.map_err(sm_err)??;
        let snapshot = current_snapshot(&self.dir).await?;
        metrics::counter!("berth_store_snapshots_built_total").increment(1);
        snapshot.ok_or_else(|| sm_err("snapshot vanished after it was built"))
    }
}

fn build(db: &Db, dir: &Path, n: u64) -> Result<(), StorageError> {
    let view = db.view();
    let (applied, membership) = read_applied(&view)?;
    let snapshot_id = match &applied {
        Some(id) => format!("{}-{}-{n}", id.leader_id.term, id.index),
        None => format!("0-0-{n}"),
    };
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id };
    let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
    let path = dir.join(format!("build-{n}.part"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| write_err(subject(), e))?;
    {
        let mut out = std::io::BufWriter::new(&mut file);
        dump_view(&view, &mut out).map_err(|e| write_err(subject(), e))?;
        out.flush().map_err(|e| write_err(subject(), e))?;
    }
    let result = save_snapshot_file(dir, &meta, &mut file).map_err(|e| write_err(subject(), e));
    let _ = std::fs::remove_file(&path);
    result
}

/// Writes the state-machine column families as seen by `view`, in the
/// snapshot format.
fn dump_view(view: &View, out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(SNAPSHOT_MAGIC)?;
    for (tag, cf) in STATE_MACHINE_CFS.iter().enumerate() {
        for item in view.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.map_err(std::io::Error::other)?;
            out.write_all(&[tag as u8])?;
            write_chunk(out, &key)?;
            write_chunk(out, &value)?;
        }
    }
    out.write_all(&[0xFF])
}

/// A consistent copy of the key space (read through one RocksDB snapshot),
/// in the snapshot format: what `berth cluster snapshot save` keeps.
/// Returns the revision of the copy, read through the same snapshot.
pub(crate) fn dump(db: &Db, out: &mut impl Write) -> std::io::Result<i64> {
    let view = db.view();
    let (revision, _) = crate::mvcc::revisions(&view).map_err(std::io::Error::other)?;
    dump_view(&view, out)?;
    Ok(revision)
}

/// Fills an empty store from a saved snapshot, leaving out its Raft
/// position and membership: a peer started on it as its own only initial
/// peer creates a new cluster that holds the key space, at its revision.
pub(crate) fn restore(db: &Db, input: &mut impl Read) -> std::io::Result<()> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(std::io::Error::other("not a berth snapshot"));
    }
    let mut batch = WriteBatch::default();
    loop {
        let mut tag = [0u8; 1];
        input.read_exact(&mut tag)?;
        if tag[0] == 0xFF {
            break;
        }
        let cf = STATE_MACHINE_CFS
            .get(tag[0] as usize)
            .ok_or_else(|| std::io::Error::other("bad column family in snapshot"))?;
        let key = read_chunk(input)?;
        let value = read_chunk(input)?;
        if *cf == CF_SM && (key == APPLIED || key == MEMBERSHIP) {
            continue;
        }
        db.put_in(&mut batch, cf, &key, value);
    }
    db.write_synced(batch).map_err(std::io::Error::other)
}

//! The MVCC key space with etcd v3 semantics, on the state-machine column
//! families: one global revision; per key create/mod revision, version and
//! lease; history for reads at past revisions and for watches; compaction.
//!
//! `Apply` changes it, one command at a time, as one RocksDB batch together
//! with the applied log id; `Reader` answers ranges from a RocksDB snapshot so
//! a multi-key read sees one revision.

use crate::db::{View, CF_EVENTS, CF_HISTORY, CF_KV, CF_LEASES, CF_LEASE_KEYS, CF_SM};
use crate::error::StoreError;
use crate::keys;
use berth_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use berth_proto::etcd::etcdserverpb::range_request::{SortOrder, SortTarget};
use berth_proto::etcd::etcdserverpb::{
    request_op, response_op, CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};
use berth_proto::etcd::mvccpb::{event::EventType, Event, KeyValue};
use berth_proto::raft_v1::{
    command::Op, command_result, ApplyError, Command, CommandBatchResult, CommandResult,
};
use prost::Message;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::collections::BTreeMap;
use std::ops::Bound;

/// State-machine bookkeeping kept in CF_SM.
pub(crate) const SM_REVISION: &[u8] = b"revision";
pub(crate) const SM_COMPACTED: &[u8] = b"compacted";

/// A lease as the state machine knows it; deadlines live on the leader.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LeaseRecord {
    pub id: i64,
    pub ttl: i64,
}

/// A key range in etcd's terms: `end` empty = just `key`; `end` = "\0" = every
/// key >= `key`; otherwise [key, end).
#[derive(Clone, Debug)]
pub(crate) struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub single: bool,
}

impl KeyRange {
    pub(crate) fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        if range_end.is_empty() {
            KeyRange { start: key.to_vec(), end: None, single: true }
        } else if range_end == b"\0" {
            KeyRange { start: key.to_vec(), end: None, single: false }
        } else {
            KeyRange { start: key.to_vec(), end: Some(range_end.to_vec()), single: false }
        }
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        if self.single {
            return key == self.start.as_slice();
        }
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// True when it can never match a key (etcd answers such ranges empty).
    fn is_empty(&self) -> bool {
        matches!(&self.end, Some(end) if !self.single && end.as_slice() <= self.start.as_slice())
    }
}

fn tombstone(key: &[u8], rev: i64) -> KeyValue {
    KeyValue { key: key.to_vec(), mod_revision: rev, ..Default::default() }
}

fn is_tombstone(kv: &KeyValue) -> bool {
    kv.version == 0
}

fn decode_kv(bytes: &[u8]) -> Result<KeyValue, StoreError> {
    KeyValue::decode(bytes)
        .map_err(|e| StoreError::Internal(format!("corrupt value in store: {e}")))
}

fn db_err(e: rocksdb::Error) -> StoreError {
    StoreError::Internal(format!("rocksdb: {e}"))
}

fn read_i64(db: &View, key: &[u8]) -> Result<i64, StoreError> {
    Ok(db.get_cf(CF_SM, key).map_err(db_err)?.and_then(|b| keys::parse_revision(&b)).unwrap_or(0))
}

/// The store's current and compacted revisions.
pub(crate) fn revisions(db: &View) -> Result<(i64, i64), StoreError> {
    Ok((read_i64(db, SM_REVISION)?, read_i64(db, SM_COMPACTED)?))
}

/// Reads the current value of every key in a range, without pending writes.
fn scan_current(
    db: &View,
    range: &KeyRange,
    mut f: impl FnMut(KeyValue) -> bool,
) -> Result<(), StoreError> {
    if range.is_empty() {
        return Ok(());
    }
    if range.single {
        if let Some(bytes) = db.get_cf(CF_KV, &range.start).map_err(db_err)? {
            f(decode_kv(&bytes)?);
        }
        return Ok(());
    }
    for item in db.iterator_cf(CF_KV, IteratorMode::From(&range.start, Direction::Forward)) {
        let (key, value) = item.map_err(db_err)?;
        if !range.contains(&key) {
            break;
        }
        if !f(decode_kv(&value)?) {
            break;
        }
    }
    Ok(())
}

/// Reads every key of a range as it was at `rev`, from the history.
fn scan_at(
    db: &View,
    range: &KeyRange,
    rev: i64,
    mut f: impl FnMut(KeyValue) -> bool,
) -> Result<(), StoreError> {
    if range.is_empty() {
        return Ok(());
    }
    let from = keys::escaped(&range.start);
    let mut pending: Option<KeyValue> = None;
    let mut current_key: Option<Vec<u8>> = None;
    let emit = |kv: Option<KeyValue>, f: &mut dyn FnMut(KeyValue) -> bool| -> bool {
        match kv {
            Some(kv) if !is_tombstone(&kv) => f(kv),
            _ => true,
        }
    };
    for item in db.iterator_cf(CF_HISTORY, IteratorMode::From(&from, Direction::Forward)) {
        let (raw, value) = item.map_err(db_err)?;
        let Some((key, at)) = keys::parse_history(&raw) else {
            return Err(StoreError::Internal("corrupt history key".into()));
        };
        if !range.contains(&key) {
            if range.single || range.end.as_deref().is_some_and(|end| key.as_slice() >= end) {
                break;
            }
            continue;
        }
        if current_key.as_deref() != Some(key.as_slice()) {
            if !emit(pending.take(), &mut f) {
                return Ok(());
            }
            current_key = Some(key);
        }
        if at <= rev {
            pending = Some(decode_kv(&value)?);
        }
    }
    emit(pending, &mut f);
    Ok(())
}

/// Answers a Range request from the state as of `current` (the revision of
/// the snapshot the caller read it with).
pub(crate) fn range(db: &View, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
    let (current, compacted) = revisions(db)?;
    let rev = if req.revision <= 0 { current } else { req.revision };
    if rev > current {
        return Err(StoreError::FutureRevision { requested: rev, current });
    }
    if rev < compacted {
        return Err(StoreError::Compacted { requested: rev, compact_revision: compacted });
    }
    let range = KeyRange::new(&req.key, &req.range_end);
    let filtered = req.min_mod_revision > 0
        || req.max_mod_revision > 0
        || req.min_create_revision > 0
        || req.max_create_revision > 0;
    let sorted = req.sort_order() != SortOrder::None
        && !(req.sort_target() == SortTarget::Key && req.sort_order() == SortOrder::Ascend);
    let limit = if req.limit > 0 { req.limit as usize } else { usize::MAX };

    let mut kvs = Vec::new();
    let mut count = 0i64;
    let keep = |kv: &KeyValue| {
        (req.min_mod_revision <= 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision <= 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision <= 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision <= 0 || kv.create_revision <= req.max_create_revision)
    };
    let mut visit = |mut kv: KeyValue| {
        if filtered && !keep(&kv) {
            return true;
        }
        count += 1;
        if req.count_only {
            return true;
        }
        // Past the limit only the count goes on (etcd reports the total).
        if kvs.len() < limit || sorted {
            if req.keys_only {
                kv.value.clear();
            }
            kvs.push(kv);
        }
        true
    };
    if rev == current {
        scan_current(db, &range, &mut visit)?;
    } else {
        scan_at(db, &range, rev, &mut visit)?;
    }
    if sorted {
        sort_kvs(&mut kvs, req.sort_target(), req.sort_order());
    }
    let more = count as usize > kvs.len().min(limit) && !req.count_only;
    kvs.truncate(limit);
    Ok(RangeResponse { header: None, kvs, more, count })
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    kvs.sort_by(|a, b| {
        let ord = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        if order == SortOrder::Descend {
            ord.reverse()
        } else {
            ord
        }
    });
}

/// The value a key had just before `rev` (for a watch's prev_kv).
pub(crate) fn value_before(
    db: &View,
    key: &[u8],
    rev: i64,
) -> Result<Option<KeyValue>, StoreError> {
    let start = keys::history(key, rev);
    for item in db.iterator_cf(CF_HISTORY, IteratorMode::From(&start, Direction::Reverse)) {
        let (raw, value) = item.map_err(db_err)?;
        match keys::parse_history(&raw) {
            Some((k, at)) if k == key && at < rev => {
                let kv = decode_kv(&value)?;
                return Ok((!is_tombstone(&kv)).then_some(kv));
            }
            Some((k, _)) if k == key => continue,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Events with revision in [from, to], in order, grouped per revision.
pub(crate) fn events_between(
    db: &View,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Vec<Event>)>, StoreError> {
    let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
    let start = keys::event(from, 0);
    for item in db.iterator_cf(CF_EVENTS, IteratorMode::From(&start, Direction::Forward)) {
        let (raw, value) = item.map_err(db_err)?;
        let Some((rev, _)) = keys::parse_event(&raw) else {
            return Err(StoreError::Internal("corrupt event key".into()));
        };
        if rev > to {
            break;
        }
        let event = Event::decode(value.as_ref())
            .map_err(|e| StoreError::Internal(format!("corrupt event: {e}")))?;
        match out.last_mut() {
            Some((r, events)) if *r == rev => events.push(event),
            _ => out.push((rev, vec![event])),
        }
    }
    Ok(out)
}

/// Every lease the state machine holds.
pub(crate) fn leases(db: &View) -> Result<Vec<LeaseRecord>, StoreError> {
    let mut out = Vec::new();
    for item in db.iterator_cf(CF_LEASES, IteratorMode::Start) {
        let (_, value) = item.map_err(db_err)?;
        out.push(
            postcard::from_bytes(&value)
                .map_err(|e| StoreError::Internal(format!("corrupt lease: {e}")))?,
        );
    }
    Ok(out)
}

pub(crate) fn lease(db: &View, id: i64) -> Result<Option<LeaseRecord>, StoreError> {
    db.get_cf(CF_LEASES, &keys::revision(id))
        .map_err(db_err)?
        .map(|b| {
            postcard::from_bytes(&b)
                .map_err(|e| StoreError::Internal(format!("corrupt lease: {e}")))
        })
        .transpose()
}

/// Keys attached to a lease.
pub(crate) fn lease_keys(db: &View, id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    let prefix = keys::revision(id);
    let mut out = Vec::new();
    for item in db.iterator_cf(CF_LEASE_KEYS, IteratorMode::From(&prefix, Direction::Forward)) {
        let (raw, _) = item.map_err(db_err)?;
        if !raw.starts_with(&prefix) {
            break;
        }
        out.push(raw[prefix.len()..].to_vec());
    }
    Ok(out)
}

/// The changes of one log entry (a command, or a batch of them), staged over
/// the stored state so that each command sees the ones before it, then
/// written as one RocksDB batch together with the applied log id.
pub(crate) struct Apply<'a> {
    db: &'a View<'a>,
    batch: WriteBatch,
    kv: BTreeMap<Vec<u8>, Option<KeyValue>>,
    leases: BTreeMap<i64, Option<LeaseRecord>>,
    lease_keys: BTreeMap<(i64, Vec<u8>), bool>,
    /// The stored revision when this entry began.
    initial: i64,
    /// The revision after the commands applied so far.
    revision: i64,
    compacted: i64,
    /// Events of the command being applied.
    events: Vec<Event>,
    /// Events of each revision this entry made, for watchers.
    published: Vec<(i64, Vec<Event>)>,
}

/// What an entry's commands wrote, and the events watchers get.
pub(crate) struct Staged {
    pub batch: WriteBatch,
    pub published: Vec<(i64, Vec<Event>)>,
}

impl<'a> Apply<'a> {
    pub(crate) fn new(db: &'a View<'a>) -> Result<Apply<'a>, StoreError> {
        let (revision, compacted) = revisions(db)?;
        Ok(Apply {
            db,
            batch: WriteBatch::default(),
            kv: BTreeMap::new(),
            leases: BTreeMap::new(),
            lease_keys: BTreeMap::new(),
            initial: revision,
            revision,
            compacted,
            events: Vec::new(),
            published: Vec::new(),
        })
    }

    fn next_rev(&self) -> i64 {
        self.revision + 1
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        if let Some(staged) = self.kv.get(key) {
            return Ok(staged.clone());
        }
        self.db.get_cf(CF_KV, key).map_err(db_err)?.map(|b| decode_kv(&b)).transpose()
    }

    fn get_lease(&self, id: i64) -> Result<Option<LeaseRecord>, StoreError> {
        match self.leases.get(&id) {
            Some(staged) => Ok(staged.clone()),
            None => lease(self.db, id),
        }
    }

    /// Keys attached to a lease: stored ones, with staged changes.
    fn keys_of_lease(&self, id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> =
            lease_keys(self.db, id)?.into_iter().collect();
        for ((lease, key), attached) in self.lease_keys.range((id, Vec::new())..) {
            if *lease != id {
                break;
            }
            if *attached {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Current values in a range: stored ones overlaid with staged writes.
    fn current(&self, range: &KeyRange) -> Result<Vec<KeyValue>, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
        scan_current(self.db, range, |kv| {
            merged.insert(kv.key.clone(), kv);
            true
        })?;
        let upper = match (&range.end, range.single) {
            (_, true) => Bound::Included(range.start.clone()),
            (Some(end), false) => Bound::Excluded(end.clone()),
            (None, false) => Bound::Unbounded,
        };
        if !range.is_empty() {
            for (key, staged) in self.kv.range((Bound::Included(range.start.clone()), upper)) {
                match staged {
                    Some(kv) => merged.insert(key.clone(), kv.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_values().collect())
    }

    /// Applies one command; a batch applies each of its commands in turn,
    /// each with its own revision and result. Refusals that every peer
    /// reaches alike (unknown lease, compacted revision) are results and
    /// change nothing; errors mean the store itself failed.
    pub(crate) fn command(&mut self, command: &Command) -> Result<CommandResult, StoreError> {
        if let Some(Op::Batch(batch)) = &command.op {
            let mut results = Vec::with_capacity(batch.commands.len());
            for command in &batch.commands {
                results.push(self.command(command)?);
            }
            return Ok(CommandResult {
                revision: self.revision,
                result: Some(command_result::Result::Batch(CommandBatchResult { results })),
                ..Default::default()
            });
        }
        // Only a transaction can be refused after staging some of its
        // writes; keep what to roll back to.
        let saved = matches!(command.op, Some(Op::Txn(_)))
            .then(|| (self.kv.clone(), self.leases.clone(), self.lease_keys.clone()));
        let outcome = match &command.op {
            None | Some(Op::Batch(_)) => Ok(None),
            Some(Op::Put(req)) => self.put(req).map(|r| Some(command_result::Result::Put(r))),
            Some(Op::DeleteRange(req)) => {
                self.delete_range(req).map(|r| Some(command_result::Result::DeleteRange(r)))
            }
            Some(Op::Txn(req)) => self.txn(req).map(|r| Some(command_result::Result::Txn(r))),
            Some(Op::Compaction(req)) => {
                self.compact(req).map(|r| Some(command_result::Result::Compaction(r)))
            }
            Some(Op::LeaseGrant(req)) => {
                self.lease_grant(req).map(|r| Some(command_result::Result::LeaseGrant(r)))
            }
            Some(Op::LeaseRevoke(req)) => {
                self.lease_revoke(req).map(|r| Some(command_result::Result::LeaseRevoke(r)))
            }
        };
        let mut result = CommandResult::default();
        match outcome {
            Ok(r) => result.result = r,
            Err(Failure::Store(e)) => return Err(e),
            Err(Refused(e)) => {
                if let Some((kv, leases, lease_keys)) = saved {
                    (self.kv, self.leases, self.lease_keys) = (kv, leases, lease_keys);
                }
                self.events.clear();
                result.set_error(e);
                result.revision = self.revision;
                return Ok(result);
            }
        }
        if !self.events.is_empty() {
            self.revision += 1;
            let events = std::mem::take(&mut self.events);
            let db = self.db.db();
            for (sub, event) in events.iter().enumerate() {
                let kv = event.kv.as_ref().expect("every staged event carries its key-value");
                db.put_in(
                    &mut self.batch,
                    CF_EVENTS,
                    &keys::event(self.revision, sub as u32),
                    event.encode_to_vec(),
                );
                db.put_in(
                    &mut self.batch,
                    CF_HISTORY,
                    &keys::history(&kv.key, self.revision),
                    kv.encode_to_vec(),
                );
            }
            self.published.push((self.revision, events));
        }
        result.revision = self.revision;
        Ok(result)
    }

    /// Stages the current values, leases and revisions; returns the batch to
    /// write and the events to publish once it is written.
    pub(crate) fn finish(mut self) -> Result<Staged, StoreError> {
        let db = self.db.db();
        for (key, staged) in &self.kv {
            match staged {
                Some(kv) => db.put_in(&mut self.batch, CF_KV, key, kv.encode_to_vec()),
                None => db.delete_in(&mut self.batch, CF_KV, key),
            }
        }
        for (id, staged) in &self.leases {
            match staged {
                Some(lease) => {
                    let bytes = postcard::to_allocvec(lease)
                        .map_err(|e| StoreError::Internal(format!("encode lease: {e}")))?;
                    db.put_in(&mut self.batch, CF_LEASES, &keys::revision(*id), bytes)
                }
                None => db.delete_in(&mut self.batch, CF_LEASES, &keys::revision(*id)),
            }
        }
        for ((id, key), attached) in &self.lease_keys {
            let k = keys::lease_key(*id, key);
            if *attached {
                db.put_in(&mut self.batch, CF_LEASE_KEYS, &k, []);
            } else {
                db.delete_in(&mut self.batch, CF_LEASE_KEYS, &k);
            }
        }
        db.put_in(&mut self.batch, CF_SM, SM_REVISION, keys::revision(self.revision));
        db.put_in(&mut self.batch, CF_SM, SM_COMPACTED, keys::revision(self.compacted));
        Ok(Staged { batch: self.batch, published: self.published })
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, Failure> {
        let prev = self.get(&req.key)?;
        let lease = if req.ignore_lease {
            match &prev {
                Some(p) => p.lease,
                None => return Err(Refused(ApplyError::KeyNotFound)),
            }
        } else {
            req.lease
        };
        let value = if req.ignore_value {
            match &prev {
                Some(p) => p.value.clone(),
                None => return Err(Refused(ApplyError::KeyNotFound)),
            }
        } else {
            req.value.clone()
        };
        if lease != 0 && self.get_lease(lease)?.is_none() {
            return Err(Refused(ApplyError::LeaseNotFound));
        }
        let rev = self.next_rev();
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        if let Some(p) = &prev {
            if p.lease != 0 && p.lease != lease {
                self.lease_keys.insert((p.lease, req.key.clone()), false);
            }
        }
        if lease != 0 {
            self.lease_keys.insert((lease, req.key.clone()), true);
        }
        self.kv.insert(req.key.clone(), Some(kv.clone()));
        self.events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None });
        Ok(PutResponse { header: None, prev_kv: if req.prev_kv { prev } else { None } })
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, Failure> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let doomed = self.current(&range)?;
        let rev = self.next_rev();
        for kv in &doomed {
            self.delete_key(kv, rev);
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    fn delete_key(&mut self, kv: &KeyValue, rev: i64) {
        if kv.lease != 0 {
            self.lease_keys.insert((kv.lease, kv.key.clone()), false);
        }
        self.kv.insert(kv.key.clone(), None);
        self.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(tombstone(&kv.key, rev)),
            prev_kv: None,
        });
    }

    fn compare(&self, cmp: &Compare) -> Result<bool, StoreError> {
        let range = KeyRange::new(&cmp.key, &cmp.range_end);
        let kvs = if range.single {
            vec![self
                .get(&cmp.key)?
                .unwrap_or_else(|| KeyValue { key: cmp.key.clone(), ..Default::default() })]
        } else {
            self.current(&range)?
        };
        let target = cmp.target();
        let result = cmp.result();
        Ok(kvs.iter().all(|kv| {
            let exists = kv.version > 0;
            let ord = match (target, &cmp.target_union) {
                (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
                (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
                    kv.create_revision.cmp(v)
                }
                (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
                (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
                (CompareTarget::Value, Some(TargetUnion::Value(v))) => {
                    // A missing key has no value to compare: the compare fails.
                    if !exists {
                        return false;
                    }
                    kv.value.as_slice().cmp(v.as_slice())
                }
                // Unset numeric targets compare against zero, as etcd does.
                (CompareTarget::Version, None) => kv.version.cmp(&0),
                (CompareTarget::Create, None) => kv.create_revision.cmp(&0),
                (CompareTarget::Mod, None) => kv.mod_revision.cmp(&0),
                (CompareTarget::Lease, None) => kv.lease.cmp(&0),
                _ => return false,
            };
            match result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
                CompareResult::NotEqual => ord.is_ne(),
            }
        }))
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, Failure> {
        let mut succeeded = true;
        for cmp in &req.compare {
            if !self.compare(cmp)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.txn_op(op)?);
        }
        Ok(TxnResponse { header: None, succeeded, responses })
    }

    fn txn_op(&mut self, op: &RequestOp) -> Result<ResponseOp, Failure> {
        let response = match &op.request {
            None => None,
            Some(request_op::Request::RequestRange(r)) => {
                Some(response_op::Response::ResponseRange(self.txn_range(r)?))
            }
            Some(request_op::Request::RequestPut(r)) => {
                Some(response_op::Response::ResponsePut(self.put(r)?))
            }
            Some(request_op::Request::RequestDeleteRange(r)) => {
                Some(response_op::Response::ResponseDeleteRange(self.delete_range(r)?))
            }
            Some(request_op::Request::RequestTxn(r)) => {
                Some(response_op::Response::ResponseTxn(self.txn(r)?))
            }
        };
        Ok(ResponseOp { response })
    }

    /// A range inside a transaction sees the entry's own earlier writes,
    /// also when it names a revision made earlier in the same entry.
    fn txn_range(&self, req: &RangeRequest) -> Result<RangeResponse, Failure> {
        let keys = KeyRange::new(&req.key, &req.range_end);
        let rev = if req.revision <= 0 { self.revision } else { req.revision };
        if rev > self.revision {
            return Err(Refused(ApplyError::FutureRevision));
        }
        if rev < self.compacted {
            return Err(Refused(ApplyError::Compacted));
        }
        let kvs = if rev == self.revision {
            self.current(&keys)?
        } else if rev <= self.initial {
            let whole = RangeRequest {
                key: req.key.clone(),
                range_end: req.range_end.clone(),
                revision: rev,
                ..Default::default()
            };
            range(self.db, &whole)?.kvs
        } else {
            // Start from the stored state and replay this entry's revisions.
            let mut at: BTreeMap<Vec<u8>, KeyValue> =
                self.db_current(&keys)?.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
            for (r, events) in self.published.iter().take_while(|(r, _)| *r <= rev) {
                let _ = r;
                for event in events {
                    let Some(kv) = &event.kv else { continue };
                    if !keys.contains(&kv.key) {
                        continue;
                    }
                    if event.r#type == EventType::Put as i32 {
                        at.insert(kv.key.clone(), kv.clone());
                    } else {
                        at.remove(&kv.key);
                    }
                }
            }
            at.into_values().collect()
        };
        Ok(shape_range(req, kvs))
    }

    fn db_current(&self, range: &KeyRange) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        scan_current(self.db, range, |kv| {
            out.push(kv);
            true
        })?;
        Ok(out)
    }

    fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, Failure> {
        if req.revision > self.revision {
            return Err(Refused(ApplyError::FutureRevision));
        }
        if req.revision <= self.compacted {
            return Err(Refused(ApplyError::Compacted));
        }
        let upto = req.revision;
        let view = self.db;
        let db = view.db();
        db.delete_range_in(&mut self.batch, CF_EVENTS, &keys::event(0, 0), &keys::event(upto, 0));
        // Keep, per key, the newest history entry at or below `upto` unless it
        // is a deletion: reads at `upto` still need it. (Entries staged by
        // this same log entry are newer than anything compacted here.)
        let mut previous: Option<(Vec<u8>, Vec<u8>, bool)> = None;
        for item in view.iterator_cf(CF_HISTORY, IteratorMode::Start) {
            let (raw, value) = item.map_err(db_err)?;
            let Some((key, at)) = keys::parse_history(&raw) else {
                return Err(StoreError::Internal("corrupt history key".into()).into());
            };
            if at > upto {
                continue;
            }
            let dead = is_tombstone(&decode_kv(&value)?);
            if let Some((prev_key, prev_raw, prev_dead)) = &previous {
                if *prev_key == key || *prev_dead {
                    db.delete_in(&mut self.batch, CF_HISTORY, prev_raw);
                }
            }
            previous = Some((key, raw.to_vec(), dead));
        }
        if let Some((_, raw, true)) = previous {
            db.delete_in(&mut self.batch, CF_HISTORY, &raw);
        }
        self.compacted = upto;
        Ok(CompactionResponse { header: None })
    }

    fn lease_grant(&mut self, req: &LeaseGrantRequest) -> Result<LeaseGrantResponse, Failure> {
        if self.get_lease(req.id)?.is_some() {
            return Err(Refused(ApplyError::LeaseExists));
        }
        self.leases.insert(req.id, Some(LeaseRecord { id: req.id, ttl: req.ttl }));
        Ok(LeaseGrantResponse { header: None, id: req.id, ttl: req.ttl, error: String::new() })
    }

    /// Revokes a lease and deletes its keys, all in one revision.
    fn lease_revoke(&mut self, req: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse, Failure> {
        if self.get_lease(req.id)?.is_none() {
            return Err(Refused(ApplyError::LeaseNotFound));
        }
        let rev = self.next_rev();
        for key in self.keys_of_lease(req.id)? {
            if let Some(kv) = self.get(&key)? {
                if kv.lease == req.id {
                    self.delete_key(&kv, rev);
                }
            }
            self.lease_keys.insert((req.id, key), false);
        }
        self.leases.insert(req.id, None);
        Ok(LeaseRevokeResponse { header: None })
    }
}

/// Filters, counts, sorts and limits a range's key-values as etcd does.
fn shape_range(req: &RangeRequest, mut kvs: Vec<KeyValue>) -> RangeResponse {
    kvs.retain(|kv| {
        (req.min_mod_revision <= 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision <= 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision <= 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision <= 0 || kv.create_revision <= req.max_create_revision)
    });
    let count = kvs.len() as i64;
    if req.count_only {
        return RangeResponse { header: None, kvs: Vec::new(), more: false, count };
    }
    if req.sort_order() != SortOrder::None {
        sort_kvs(&mut kvs, req.sort_target(), req.sort_order());
    }
    let limit = if req.limit > 0 { req.limit as usize } else { usize::MAX };
    let more = kvs.len() > limit;
    kvs.truncate(limit);
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    RangeResponse { header: None, kvs, more, count }
}

/// Why applying a command stopped: refused alike on every peer, or the
/// store failed underneath.
enum Failure {
    Refused(ApplyError),
    Store(StoreError),
}

use Failure::Refused;

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

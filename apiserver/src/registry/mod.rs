//! The registry: API objects stored in the replicated store under
//! `/registry/<resource>/<namespace>/<name>`, as Kubernetes lays them out in
//! etcd. The store's revision is every object's resourceVersion; creates,
//! updates and deletes are transactions conditioned on it, so concurrent
//! writers never clobber each other.

mod list;
mod watch;

pub use list::{ListOptions, ListResult};
pub use watch::{WatchEvent, WatchStream};

use crate::error::ApiError;
use berth_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use berth_proto::etcd::etcdserverpb::{
    request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use berth_proto::etcd::mvccpb::KeyValue as StoredValue;
use berth_proto::{Resource, Time};
use berth_raft_store::KeyValue;

/// Where objects live in the store.
pub fn key<T: Resource>(namespace: &str, name: &str) -> String {
    if T::NAMESPACED {
        format!("/registry/{}/{namespace}/{name}", T::PLURAL)
    } else {
        format!("/registry/{}/{name}", T::PLURAL)
    }
}

/// The key prefix of a resource, or of its objects in one namespace.
pub fn prefix<T: Resource>(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if T::NAMESPACED && !ns.is_empty() => format!("/registry/{}/{ns}/", T::PLURAL),
        _ => format!("/registry/{}/", T::PLURAL),
    }
}

/// Decodes a stored object and sets its resourceVersion from the store.
pub(crate) fn decode<T: Resource>(kv: &StoredValue) -> Result<T, ApiError> {
    let mut object = T::decode(kv.value.as_slice()).map_err(|e| {
        ApiError::Internal(format!(
            "undecodable {} at {}: {e}",
            T::KIND,
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    object.metadata_mut().resource_version = kv.mod_revision.to_string();
    object.set_type_meta();
    Ok(object)
}

/// Encodes an object for the store; its resourceVersion is not stored (the
/// revision is the truth).
fn encode<T: Resource>(object: &T) -> Vec<u8> {
    let mut stored = object.clone();
    stored.metadata_mut().resource_version.clear();
    stored.set_type_meta();
    stored.encode_to_vec()
}

/// Objects larger than this are refused, as Kubernetes refuses them (etcd's
/// request limit is 1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// The encoded object, or RequestEntityTooLarge when it is over the limit.
fn encode_checked<T: Resource>(object: &T) -> Result<Vec<u8>, ApiError> {
    let bytes = encode(object);
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::TooLarge(format!(
            "{} {:?} is {} bytes; objects may be at most {MAX_OBJECT_BYTES} bytes",
            T::KIND,
            object.metadata().name,
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn parse_resource_version(rv: &str) -> Result<i64, ApiError> {
    rv.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid resourceVersion {rv:?}: must be a non-negative integer"
        ))
    })
}

fn compare_mod(key: &str, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(TargetUnion::ModRevision(revision)),
        ..Default::default()
    }
}

fn get_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// API objects over a key-value store.
#[derive(Clone)]
pub struct Registry<S> {
    store: S,
    fence: Option<Fence>,
    /// Writes check their preconditions and change nothing (dryRun=All).
    dry_run: bool,
}

/// A leader-elected writer's proof that it still leads: its Lease and the
/// revision at which it took the Lease (the Lease's resourceVersion then).
/// A fenced write is checked in the same transaction as the write and
/// refused once another holder has taken the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub namespace: String,
    pub name: String,
    pub revision: i64,
}

impl Fence {
    /// Parses the `berth-fence` header: `<namespace>/<name>/<revision>`.
    pub fn parse(text: &str) -> Result<Fence, ApiError> {
        let bad = || {
            ApiError::BadRequest(format!(
                "invalid fencing token {text:?}: want <namespace>/<name>/<revision>"
            ))
        };
        let mut parts = text.splitn(3, '/');
        let (Some(namespace), Some(name), Some(revision)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let revision = revision.parse::<i64>().ok().filter(|r| *r > 0).ok_or_else(bad)?;
        if namespace.is_empty() || name.is_empty() {
            return Err(bad());
        }
        Ok(Fence { namespace: namespace.into(), name: name.into(), revision })
    }

    fn key(&self) -> String {
        holder_key(&self.namespace, &self.name)
    }
}

/// Where the store records who holds a Lease: written only when the holder
/// changes, so its mod revision is when the current holder took the Lease.
fn holder_key(namespace: &str, name: &str) -> String {
    format!("/registry/leaseholders/{namespace}/{name}")
}

/// The write that keeps a Lease's holder record current, when the holder
/// changes (or the Lease is new).
fn holder_ops<T: Resource>(old: Option<&T>, new: Option<&T>) -> Option<RequestOp> {
    let new = new.filter(|_| T::KIND == "Lease")?;
    let holder = |o: &T| list::field_value(o, "spec.holderIdentity");
    if old.map(holder) == Some(holder(new)) {
        return None;
    }
    let key = holder_key(&new.metadata().namespace, &new.metadata().name);
    Some(RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into_bytes(),
            value: holder(new).into_bytes(),
            ..Default::default()
        })),
    })
}

impl<S: KeyValue + Clone + 'static> Registry<S> {
    pub fn new(store: S) -> Self {
        Registry { store, fence: None, dry_run: false }
    }

    /// The same registry, with every write checked against `fence`.
    pub fn fenced(&self, fence: Fence) -> Registry<S> {
        Registry { store: self.store.clone(), fence: Some(fence), dry_run: self.dry_run }
    }

    /// The same registry, whose writes run their transactions' compares
    /// (existence, resourceVersion, fence) but store nothing: dryRun=All.
    /// A dry-run create answers without a resourceVersion, an update with
    /// the version it was compared against.
    pub fn dry_run(&self) -> Registry<S> {
        Registry { dry_run: true, ..self.clone() }
    }

    /// Adds the fence's compare to a transaction, and a read of the holder
    /// record to its failure branch so a refusal can say why.
    fn guard(&self, txn: &mut TxnRequest) {
        if let Some(fence) = &self.fence {
            txn.compare.push(compare_mod(&fence.key(), fence.revision));
            txn.failure.push(get_op(&fence.key()));
        }
    }

    /// Runs `success` only if the object at `key` is still at `expected` (and
    /// the fence, if any, holds); otherwise says which precondition failed.
    async fn write_if_unchanged<T: Resource>(
        &self,
        key: &str,
        name: &str,
        expected: i64,
        success: Vec<RequestOp>,
    ) -> Result<berth_proto::etcd::etcdserverpb::TxnResponse, ApiError> {
        let mut txn = TxnRequest {
            compare: vec![compare_mod(key, expected)],
            success,
            failure: vec![get_op(key)],
        };
        self.guard(&mut txn);
        let response = self.store.txn(txn).await?;
        if !response.succeeded {
            self.check_fence(&response)?;
            return Err(missing_or_conflict::<T>(name, &response.responses));
        }
        Ok(response)
    }

    /// After a failed guarded transaction: was it the fence?
    fn check_fence(
        &self,
        response: &berth_proto::etcd::etcdserverpb::TxnResponse,
    ) -> Result<(), ApiError> {
        let Some(fence) = &self.fence else { return Ok(()) };
        let holder = response.responses.last().and_then(|r| match &r.response {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.first().cloned(),
            _ => None,
        });
        match holder {
            Some(kv) if kv.mod_revision == fence.revision => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "fenced: lease {}/{} has changed holder since revision {}; this writer no longer leads",
                fence.namespace, fence.name, fence.revision
            ))),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Stores a new object: uid, creationTimestamp and generation 1 are set
    /// here, a name is generated from generateName when none is given, and
    /// the returned object carries its resourceVersion.
    pub async fn create<T: Resource>(&self, object: T) -> Result<T, ApiError> {
        self.create_leased(object, 0).await
    }

    /// Like `create`, with the object attached to a store lease: it goes
    /// away when the lease expires (Events use this for their TTL).
    pub async fn create_leased<T: Resource>(
        &self,
        mut object: T,
        lease: i64,
    ) -> Result<T, ApiError> {
        object.set_type_meta();
        let generated =
            object.metadata().name.is_empty() && !object.metadata().generate_name.is_empty();
        // A generated name that happens to exist is retried with a new suffix.
        for _ in 0..8 {
            let meta = object.metadata_mut();
            if generated {
                meta.name = format!("{}{}", meta.generate_name, random_suffix()?);
            }
            if meta.name.is_empty() {
                return Err(invalid::<T>("", "metadata.name", "name or generateName is required"));
            }
            meta.uid = new_uid()?;
            meta.creation_timestamp = Some(Time::now());
            meta.generation = 1;
            meta.resource_version.clear();
            let (namespace, name) = (meta.namespace.clone(), meta.name.clone());
            let key = key::<T>(&namespace, &name);
            let put = RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone().into_bytes(),
                    value: encode_checked(&object)?,
                    lease,
                    ..Default::default()
                })),
            };
            let absent = Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone().into_bytes(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Default::default()
            };
            let mut success = vec![put];
            success.extend(holder_ops(None, Some(&object)));
            if self.dry_run {
                success.clear();
            }
            let mut txn = TxnRequest { compare: vec![absent], success, failure: vec![] };
            self.guard(&mut txn);
            let response = self.store.txn(txn).await?;
            if !response.succeeded {
                self.check_fence(&response)?;
            }
            if response.succeeded && self.dry_run {
                return Ok(object);
            }
            if response.succeeded {
                let revision = response.header.map_or(0, |h| h.revision);
                object.metadata_mut().resource_version = revision.to_string();
                return Ok(object);
            }
            if !generated {
                return Err(ApiError::AlreadyExists { kind: T::PLURAL.into(), name });
            }
        }
        Err(ApiError::AlreadyExists {
            kind: T::PLURAL.into(),
            name: object.metadata().generate_name.clone(),
        })
    }

    /// Reads one object. `resource_version` empty = linearizable; "0" =
    /// this peer's state, whatever it is.
    pub async fn get<T: Resource>(
        &self,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> Result<T, ApiError> {
        let key = key::<T>(namespace, name);
        let request = RangeRequest {
            key: key.into_bytes(),
            serializable: resource_version == "0",
            ..Default::default()
        };
        let response = self.store.range(request).await?;
        match response.kvs.first() {
            Some(kv) => decode(kv),
            None => Err(ApiError::NotFound { kind: T::PLURAL.into(), name: name.into() }),
        }
    }

    /// The stored object for a write conditioned on `expected`: this peer's
    /// copy when it is at least that new, else a linearizable read. The
    /// write's own compare catches a copy that is stale, so the local read
    /// costs at most a Conflict and saves a read-index round otherwise.
    pub(crate) async fn current<T: Resource>(
        &self,
        namespace: &str,
        name: &str,
        expected: i64,
    ) -> Result<T, ApiError> {
        if let Ok(local) = self.get::<T>(namespace, name, "0").await {
            if parse_resource_version(&local.metadata().resource_version)? >= expected {
                return Ok(local);
            }
        }
        self.get(namespace, name, "").await
    }

    /// Replaces an object if it has not changed since `metadata.resourceVersion`.
    /// `mutate` sees the stored object and the new one and may refuse or
    /// adjust (immutable fields, generation, status preserved).
    pub async fn update<T: Resource>(
        &self,
        mut object: T,
        mutate: impl FnOnce(&T, &mut T) -> Result<(), ApiError>,
    ) -> Result<T, ApiError> {
        object.set_type_meta();
        let (namespace, name) =
            (object.metadata().namespace.clone(), object.metadata().name.clone());
        let key = key::<T>(&namespace, &name);
        let expected = match object.metadata().resource_version.as_str() {
            "" => {
                return Err(invalid::<T>(
                    &name,
                    "metadata.resourceVersion",
                    "must be specified for an update",
                ))
            }
            rv => parse_resource_version(rv)?,
        };
        let current: T = self.current(&namespace, &name, expected).await?;
        let current_rv = parse_resource_version(&current.metadata().resource_version)?;
        if expected != current_rv {
            return Err(conflict::<T>(&name));
        }
        // Identity fields are the store's, not the caller's.
        {
            let (from, to) = (current.metadata(), object.metadata_mut());
            to.uid = from.uid.clone();
            to.creation_timestamp = from.creation_timestamp;
            to.generation = from.generation;
            if to.deletion_timestamp.is_none() {
                to.deletion_timestamp = from.deletion_timestamp;
                to.deletion_grace_period_seconds = from.deletion_grace_period_seconds;
            }
        }
        mutate(&current, &mut object)?;
        if encode(&object) == encode(&current) {
            // Nothing changed: Kubernetes answers with the object as it is.
            return Ok(current);
        }
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone().into_bytes(),
                value: encode_checked(&object)?,
                ..Default::default()
            })),
        };
        let mut success = vec![put];
        success.extend(holder_ops(Some(&current), Some(&object)));
        if self.dry_run {
            self.write_if_unchanged::<T>(&key, &name, expected, Vec::new()).await?;
            return Ok(object);
        }
        let response = self.write_if_unchanged::<T>(&key, &name, expected, success).await?;
        let revision = response.header.map_or(0, |h| h.revision);
        object.metadata_mut().resource_version = revision.to_string();
        Ok(object)
    }

    /// Removes an object, if `precondition_rv` (when given) still matches.
    /// Returns the object as it was.
    pub async fn remove<T: Resource>(
        &self,
        namespace: &str,
        name: &str,
        precondition_rv: Option<&str>,
    ) -> Result<T, ApiError> {
        let key = key::<T>(namespace, name);
        let expected = match precondition_rv {
            Some(rv) => parse_resource_version(rv)?,
            None => {
                let current: T = self.get(namespace, name, "").await?;
                parse_resource_version(&current.metadata().resource_version)?
            }
        };
        let delete = RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.clone().into_bytes(),
                prev_kv: true,
                ..Default::default()
            })),
        };
        let mut success = vec![delete];
        success.extend(lease_forgotten::<T>(namespace, name));
        if self.dry_run {
            // Read instead of delete: the answer is the object as it is.
            success = vec![get_op(&key)];
        }
        let response = self.write_if_unchanged::<T>(&key, name, expected, success).await?;
        let deleted = response.responses.first().and_then(|r| match &r.response {
            Some(response_op::Response::ResponseDeleteRange(d)) => d.prev_kvs.first().cloned(),
            Some(response_op::Response::ResponseRange(r)) => r.kvs.first().cloned(),
            _ => None,
        });
        match deleted {
            Some(kv) => {
                let mut object: T = decode(&kv)?;
                if !self.dry_run {
                    object.metadata_mut().resource_version =
                        response.header.map_or(0, |h| h.revision).to_string();
                }
                Ok(object)
            }
            None => Err(ApiError::NotFound { kind: T::PLURAL.into(), name: name.into() }),
        }
    }
}

/// A deleted Lease takes its holder record with it.
fn lease_forgotten<T: Resource>(namespace: &str, name: &str) -> Option<RequestOp> {
    (T::KIND == "Lease").then(|| RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: holder_key(namespace, name).into_bytes(),
            ..Default::default()
        })),
    })
}

fn missing_or_conflict<T: Resource>(
    name: &str,
    responses: &[berth_proto::etcd::etcdserverpb::ResponseOp],
) -> ApiError {
    let exists = responses.first().is_some_and(|r| match &r.response {
        Some(response_op::Response::ResponseRange(range)) => !range.kvs.is_empty(),
        _ => false,
    });
    if exists {
        conflict::<T>(name)
    } else {
        ApiError::NotFound { kind: T::PLURAL.into(), name: name.into() }
    }
}

fn conflict<T: Resource>(name: &str) -> ApiError {
    ApiError::Conflict {
        kind: T::PLURAL.into(),
        name: name.into(),
        reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

pub(crate) fn invalid<T: Resource>(name: &str, field: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        kind: T::KIND.into(),
        name: name.into(),
        causes: vec![berth_proto::meta_v1::StatusCause {
            reason: "FieldValueInvalid".into(),
            message: message.into(),
            field: field.into(),
        }],
    }
}

/// A random version-4 UUID.
pub(crate) fn new_uid() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness for a uid: {e}")))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// Five characters from Kubernetes' alphabet for generated names (no
/// vowels, no look-alikes).
fn random_suffix() -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = getrandom::u64()
        .map_err(|e| ApiError::Internal(format!("no randomness for a name: {e}")))?;
    Ok((0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect())
}

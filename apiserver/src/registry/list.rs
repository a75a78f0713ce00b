//! List with label and field selectors, and limit + continue pagination over
//! one consistent revision.

use super::{decode, parse_resource_version, prefix, Registry};
use crate::error::ApiError;
use berth_proto::etcd::etcdserverpb::RangeRequest;
use berth_proto::labels::Selector;
use berth_proto::Resource;
use berth_raft_store::KeyValue;

#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub label_selector: String,
    /// `metadata.name=x,spec.nodeName!=y`; the fields Kubernetes indexes
    /// for the resource (metadata.name, metadata.namespace, spec.nodeName,
    /// status.phase).
    pub field_selector: String,
    /// At most this many items (0 = all); `continue` resumes after them.
    pub limit: i64,
    pub continue_token: String,
    /// "" = linearizable; "0" = any state this peer has; N = at revision N.
    pub resource_version: String,
}

#[derive(Debug)]
pub struct ListResult<T> {
    pub items: Vec<T>,
    pub resource_version: String,
    /// Set when more items remain.
    pub continue_token: String,
}

/// A continue token: the revision the list is pinned to and where to resume.
fn encode_continue(revision: i64, next_key: &[u8]) -> String {
    let mut raw = revision.to_string().into_bytes();
    raw.push(b':');
    raw.extend_from_slice(next_key);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(i64, Vec<u8>), ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let raw: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let colon = raw.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let revision =
        std::str::from_utf8(&raw[..colon]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((revision, raw[colon + 1..].to_vec()))
}

/// One requirement of a field selector.
struct FieldRequirement {
    path: String,
    value: String,
    equal: bool,
}

/// A parsed field selector over the fields Kubernetes lets clients select.
pub(crate) struct Fields(Vec<FieldRequirement>);

impl Fields {
    pub(crate) fn parse(selector: &str) -> Result<Fields, ApiError> {
        parse_fields(selector, FIELDS).map(Fields)
    }

    pub(crate) fn matches<T: Resource>(&self, object: &T) -> bool {
        self.0.iter().all(|f| (field_value(object, &f.path) == f.value) == f.equal)
    }
}

fn parse_fields(selector: &str, allowed: &[&str]) -> Result<Vec<FieldRequirement>, ApiError> {
    let mut out = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = term.split_once("==") {
            (p, v, true)
        } else if let Some((p, v)) = term.split_once('=') {
            (p, v, true)
        } else {
            return Err(ApiError::BadRequest(format!(
                "invalid field selector {term:?}: want field=value or field!=value"
            )));
        };
        let path = path.trim();
        if !allowed.contains(&path) {
            return Err(ApiError::BadRequest(format!(
                "field selector {path:?} is not supported; supported: {}",
                allowed.join(", ")
            )));
        }
        out.push(FieldRequirement { path: path.into(), value: value.trim().into(), equal });
    }
    Ok(out)
}

/// The value of a selectable field of an object, via its JSON form.
pub(crate) fn field_value<T: Resource>(object: &T, path: &str) -> String {
    match path {
        "metadata.name" => return object.metadata().name.clone(),
        "metadata.namespace" => return object.metadata().namespace.clone(),
        _ => {}
    }
    let json = serde_json::to_value(object).unwrap_or_default();
    let mut at = &json;
    for part in path.split('.') {
        at = &at[part];
    }
    at.as_str().unwrap_or_default().to_string()
}

const FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    // Events, as `kubectl describe` selects them.
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "type",
];

impl<S: KeyValue + Clone + 'static> Registry<S> {
    pub async fn list<T: Resource>(
        &self,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ListResult<T>, ApiError> {
        let labels = Selector::parse(&options.label_selector)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = Fields::parse(&options.field_selector)?;
        let prefix = prefix::<T>(namespace);
        let mut end = prefix.clone().into_bytes();
        *end.last_mut().expect("a prefix ends with '/'") += 1;

        let (mut revision, mut start) = if options.continue_token.is_empty() {
            let revision = match options.resource_version.as_str() {
                "" | "0" => 0,
                rv => parse_resource_version(rv)?,
            };
            (revision, prefix.clone().into_bytes())
        } else {
            decode_continue(&options.continue_token)?
        };
        if !start.starts_with(prefix.as_bytes()) {
            return Err(ApiError::BadRequest("continue token belongs to another list".into()));
        }
        let limit = if options.limit > 0 { options.limit as usize } else { usize::MAX };
        let page = if options.limit > 0 { options.limit.clamp(16, 1000) } else { 0 };
        let mut items = Vec::new();
        loop {
            let request = RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: page,
                revision,
                serializable: options.resource_version == "0" && revision == 0,
                ..Default::default()
            };
            let response = self.store.range(request).await?;
            // Pin every later page to the revision of the first.
            if revision == 0 {
                revision = response.header.as_ref().map_or(0, |h| h.revision);
            }
            let mut last_key = None;
            for kv in &response.kvs {
                last_key = Some(kv.key.clone());
                let object: T = decode(kv)?;
                let meta = object.metadata();
                if !labels.matches(&meta.labels) {
                    continue;
                }
                if !fields.matches(&object) {
                    continue;
                }
                items.push(object);
                if items.len() == limit {
                    let mut next = kv.key.clone();
                    next.push(0);
                    let more = response.more
                        || kv.key != response.kvs.last().map(|l| l.key.clone()).unwrap_or_default();
                    let token = if more { encode_continue(revision, &next) } else { String::new() };
                    return Ok(ListResult {
                        items,
                        resource_version: revision.to_string(),
                        continue_token: token,
                    });
                }
            }
            match (response.more, last_key) {
                (true, Some(mut key)) => {
                    key.push(0);
                    start = key;
                }
                _ => break,
            }
        }
        Ok(ListResult {
            items,
            resource_version: revision.to_string(),
            continue_token: String::new(),
        })
    }
}

//! Request bodies in Kubernetes' protobuf encoding, for the kinds kubectl's
//! typed commands send that way (`kubectl create namespace`, the Evictions
//! and DeleteOptions of `kubectl drain`). A body is Kubernetes' envelope
//! (the magic `k8s\0`, then a runtime.Unknown holding the type and the raw
//! message); the message is read with Kubernetes' field numbers into the
//! object's JSON form, which then goes through the same strict decoding as
//! a JSON body. Responses stay JSON: clients read the Content-Type.

use crate::error::ApiError;
use berth_proto::Time;
use serde_json::{json, Map, Value};

/// The content type of Kubernetes' protobuf encoding.
pub(super) const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// How one field is read.
enum Ty {
    Str,
    Int,
    Bool,
    Time,
    StrMap,
    Strs,
    Msg(&'static [Field]),
    Msgs(&'static [Field]),
    /// Read and dropped: read-only fields clients echo (selfLink,
    /// managedFields) and status conditions.
    Skip,
}

struct Field(u64, &'static str, Ty);

const TYPE_META: &[Field] = &[Field(1, "apiVersion", Ty::Str), Field(2, "kind", Ty::Str)];

const OWNER_REFERENCE: &[Field] = &[
    Field(1, "kind", Ty::Str),
    Field(3, "name", Ty::Str),
    Field(4, "uid", Ty::Str),
    Field(5, "apiVersion", Ty::Str),
    Field(6, "controller", Ty::Bool),
    Field(7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "generateName", Ty::Str),
    Field(3, "namespace", Ty::Str),
    Field(4, "selfLink", Ty::Skip),
    Field(5, "uid", Ty::Str),
    Field(6, "resourceVersion", Ty::Str),
    Field(7, "generation", Ty::Int),
    Field(8, "creationTimestamp", Ty::Time),
    Field(9, "deletionTimestamp", Ty::Time),
    Field(10, "deletionGracePeriodSeconds", Ty::Int),
    Field(11, "labels", Ty::StrMap),
    Field(12, "annotations", Ty::StrMap),
    Field(13, "ownerReferences", Ty::Msgs(OWNER_REFERENCE)),
    Field(14, "finalizers", Ty::Strs),
    Field(17, "managedFields", Ty::Skip),
];

const NAMESPACE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(&[Field(1, "finalizers", Ty::Strs)])),
    Field(3, "status", Ty::Msg(&[Field(1, "phase", Ty::Str), Field(2, "conditions", Ty::Skip)])),
];

const PRECONDITIONS: &[Field] = &[Field(1, "uid", Ty::Str), Field(2, "resourceVersion", Ty::Str)];

const DELETE_OPTIONS: &[Field] = &[
    Field(1, "gracePeriodSeconds", Ty::Int),
    Field(2, "preconditions", Ty::Msg(PRECONDITIONS)),
    Field(3, "orphanDependents", Ty::Bool),
    Field(4, "propagationPolicy", Ty::Str),
    Field(5, "dryRun", Ty::Strs),
];

const EVICTION: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "deleteOptions", Ty::Msg(DELETE_OPTIONS)),
];

/// The kinds read from protobuf, by their envelope's apiVersion and kind.
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("policy/v1", "Eviction") => EVICTION,
        // DeleteOptions travel under the group version of the request.
        (_, "DeleteOptions") => DELETE_OPTIONS,
        _ => return None,
    })
}

fn bad(message: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("the protobuf body cannot be read: {message}"))
}

/// A protobuf body as the JSON of the object it holds, with its apiVersion
/// and kind.
pub(super) fn to_json(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| bad("it lacks the k8s envelope"))?;
    let mut type_meta = Value::Null;
    let mut raw: &[u8] = &[];
    let mut encoding = String::new();
    let mut input = envelope;
    while !input.is_empty() {
        let (number, wire) = key(&mut input)?;
        match (number, wire) {
            (1, 2) => type_meta = message(length_delimited(&mut input)?, TYPE_META)?,
            (2, 2) => raw = length_delimited(&mut input)?,
            (3, 2) => encoding = string(length_delimited(&mut input)?)?,
            _ => skip(&mut input, wire)?,
        }
    }
    if !encoding.is_empty() {
        return Err(bad(format!("content encoding {encoding:?} is not supported")));
    }
    let api_version = type_meta["apiVersion"].as_str().unwrap_or("").to_string();
    let kind = type_meta["kind"].as_str().unwrap_or("").to_string();
    let fields = schema(&api_version, &kind).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "{CONTENT_TYPE} for {api_version} {kind} (only Namespace, Eviction and DeleteOptions are read from protobuf; send application/json)"
        ))
    })?;
    let mut object = message(raw, fields)?;
    if let Value::Object(map) = &mut object {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(object)
}

fn varint(input: &mut &[u8]) -> Result<u64, ApiError> {
    prost::encoding::decode_varint(input).map_err(bad)
}

fn key(input: &mut &[u8]) -> Result<(u64, u64), ApiError> {
    let key = varint(input)?;
    Ok((key >> 3, key & 7))
}

fn length_delimited<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], ApiError> {
    let len = usize::try_from(varint(input)?).map_err(bad)?;
    if len > input.len() {
        return Err(bad("a field runs past the end of the body"));
    }
    let (field, rest) = input.split_at(len);
    *input = rest;
    Ok(field)
}

fn skip(input: &mut &[u8], wire: u64) -> Result<(), ApiError> {
    let n = match wire {
        0 => return varint(input).map(|_| ()),
        1 => 8,
        2 => return length_delimited(input).map(|_| ()),
        5 => 4,
        other => return Err(bad(format!("wire type {other} is not supported"))),
    };
    if n > input.len() {
        return Err(bad("a field runs past the end of the body"));
    }
    *input = &input[n..];
    Ok(())
}

fn string(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

/// One message into a JSON object; an unknown field number is an error, so
/// nothing a client sent is silently lost.
fn message(mut input: &[u8], fields: &[Field]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    while !input.is_empty() {
        let (number, wire) = key(&mut input)?;
        let Some(Field(_, name, ty)) = fields.iter().find(|f| f.0 == number) else {
            return Err(bad(format!("field number {number} is not known here")));
        };
        let name = name.to_string();
        let scalar = |input: &mut &[u8]| -> Result<Value, ApiError> {
            Ok(match ty {
                Ty::Str => json!(string(length_delimited(input)?)?),
                Ty::Int => json!(varint(input)? as i64),
                Ty::Bool => json!(varint(input)? != 0),
                _ => unreachable!("only scalars are read here"),
            })
        };
        match ty {
            Ty::Str | Ty::Int | Ty::Bool => {
                let value = scalar(&mut input)?;
                out.insert(name, value);
            }
            Ty::Skip => skip(&mut input, wire)?,
            Ty::Time => {
                let time = message(length_delimited(&mut input)?, TIME)?;
                let seconds = time["seconds"].as_i64().unwrap_or(0);
                let nanos = time["nanos"].as_i64().unwrap_or(0);
                let nanos = u32::try_from(nanos).map_err(|_| bad("a time's nanos is negative"))?;
                let value = serde_json::to_value(Time::from_unix(seconds, nanos))
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                out.insert(name, value);
            }
            Ty::Msg(inner) => {
                out.insert(name, message(length_delimited(&mut input)?, inner)?);
            }
            Ty::Msgs(inner) => {
                let item = message(length_delimited(&mut input)?, inner)?;
                push(&mut out, name, item);
            }
            Ty::Strs => {
                let item = json!(string(length_delimited(&mut input)?)?);
                push(&mut out, name, item);
            }
            Ty::StrMap => {
                let entry = message(length_delimited(&mut input)?, MAP_ENTRY)?;
                let map = out.entry(name).or_insert_with(|| json!({}));
                let k = entry["key"].as_str().unwrap_or("").to_string();
                map[k] = entry.get("value").cloned().unwrap_or(json!(""));
            }
        }
    }
    Ok(Value::Object(out))
}

const TIME: &[Field] = &[Field(1, "seconds", Ty::Int), Field(2, "nanos", Ty::Int)];
const MAP_ENTRY: &[Field] = &[Field(1, "key", Ty::Str), Field(2, "value", Ty::Str)];

fn push(out: &mut Map<String, Value>, name: String, item: Value) {
    match out.entry(name).or_insert_with(|| json!([])) {
        Value::Array(items) => items.push(item),
        other => *other = json!([item]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(number << 3 | 2, &mut out);
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), field(1, &type_meta), field(2, raw)].concat()
    }

    #[test]
    fn a_namespace_and_an_eviction_are_read() {
        let labels = [field(1, b"team"), field(2, b"a")].concat();
        let meta = [field(1, b"demo"), field(11, &labels), field(4, b"/self")].concat();
        let ns = to_json(&envelope("v1", "Namespace", &field(1, &meta))).unwrap();
        assert_eq!(
            ns,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {"team": "a"}}})
        );

        let mut options = vec![1 << 3, 0];
        options.extend(field(4, b"Foreground"));
        let eviction = [field(1, &field(1, b"web")), field(2, &options)].concat();
        let e = to_json(&envelope("policy/v1", "Eviction", &eviction)).unwrap();
        assert_eq!(
            e["deleteOptions"],
            json!({"gracePeriodSeconds": 0, "propagationPolicy": "Foreground"})
        );
        assert_eq!(e["metadata"]["name"], "web");
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        assert!(to_json(b"{}").is_err());
        assert!(matches!(
            to_json(&envelope("apps/v1", "Deployment", b"")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        // Field 99 of ObjectMeta.
        let meta = field(99, b"x");
        assert!(to_json(&envelope("v1", "Namespace", &field(1, &meta))).is_err());
        // A length past the end.
        assert!(to_json(&envelope("v1", "Namespace", &[10, 50, 1])).is_err());
    }
}

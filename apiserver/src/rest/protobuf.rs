//! Request bodies in Kubernetes' protobuf encoding, for every kind the
//! REST front end serves (`kubectl create deployment`, `kubectl run`,
//! `kubectl create namespace`, the Evictions and DeleteOptions of `kubectl
//! drain`, client-go's typed clients). A body is Kubernetes' envelope (the
//! magic `k8s\0`, then a runtime.Unknown holding the type and the raw
//! message); the message is read with Kubernetes' field numbers (tables.rs)
//! into the object's JSON form, which then goes through the same decoding,
//! field validation included, as a JSON body. Responses stay JSON: clients
//! read the Content-Type.
//!
//! Kubernetes' Go encoder writes every non-pointer field, zero or not;
//! its JSON leaves zero scalars out. So a zero scalar is dropped unless the
//! field has presence (`Opt*`, a pointer in Kubernetes' types); a message,
//! zero or not, is kept, as Go's JSON keeps structs.

mod tables;

use crate::error::ApiError;
use berth_proto::{MicroTime, Time};
use serde_json::{json, Map, Value};

/// The content type of Kubernetes' protobuf encoding.
pub(super) const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// How one field is read.
enum Ty {
    Str,
    Int,
    Bool,
    /// With presence: a zero value is kept.
    OptStr,
    OptInt,
    OptBool,
    /// meta.v1.Time and MicroTime, as RFC 3339 text.
    Time,
    MicroTime,
    /// resource.Quantity, as its text.
    Quantity,
    /// intstr.IntOrString, as a number or text.
    IntOrString,
    StrMap,
    QuantityMap,
    Strs,
    Ints,
    Msg(&'static [Field]),
    Msgs(&'static [Field]),
    /// A message whose fields JSON holds in the enclosing object (Go's
    /// inline embedding: Probe's handler, Volume's source).
    Inline(&'static [Field]),
    /// A field berth does not model: dropped when zero, else kept under its
    /// name for field validation to refuse or warn about.
    Other,
    /// Read and dropped: read-only fields clients echo (selfLink,
    /// managedFields).
    Skip,
}

struct Field(u64, &'static str, Ty);

const TYPE_META: &[Field] = &[Field(1, "apiVersion", Ty::Str), Field(2, "kind", Ty::Str)];

/// The kinds read from protobuf, by their envelope's apiVersion and kind.
fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    use tables::*;
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "Node") => NODE,
        ("v1", "Pod") => POD,
        ("v1", "Event") => EVENT,
        ("v1", "Binding") => BINDING,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("apps/v1", "ReplicaSet") => REPLICA_SET,
        ("coordination.k8s.io/v1", "Lease") => LEASE,
        ("autoscaling/v1", "Scale") => SCALE,
        ("policy/v1", "Eviction") => EVICTION,
        ("rbac.authorization.k8s.io/v1", "Role") => ROLE,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => CLUSTER_ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => ROLE_BINDING,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => CLUSTER_ROLE_BINDING,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_SUBJECT_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => SELF_SUBJECT_RULES_REVIEW,
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
            (1, 2) => type_meta = message(length_delimited(&mut input)?, TYPE_META, "typeMeta")?,
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
            "{CONTENT_TYPE} for {api_version} {kind}: berth serves no such kind"
        ))
    })?;
    let mut object = message(raw, fields, "")?;
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

/// Whether a message holds only zero values (as Go writes a zero struct).
fn is_zero(mut input: &[u8]) -> bool {
    while !input.is_empty() {
        let Ok((_, wire)) = key(&mut input) else { return false };
        let zero = match wire {
            0 => varint(&mut input).is_ok_and(|v| v == 0),
            2 => length_delimited(&mut input).is_ok_and(is_zero),
            _ => false,
        };
        if !zero {
            return false;
        }
    }
    true
}

/// The value of a field berth does not model, enough for field validation
/// to name it: a number, text, or an object.
fn other(input: &mut &[u8], wire: u64) -> Result<Option<Value>, ApiError> {
    Ok(match wire {
        0 => Some(varint(input)?).filter(|v| *v != 0).map(|v| json!(v)),
        2 => {
            let bytes = length_delimited(input)?;
            match (is_zero(bytes), std::str::from_utf8(bytes)) {
                (true, _) => None,
                (false, Ok(text)) => Some(json!(text)),
                (false, Err(_)) => Some(json!({})),
            }
        }
        _ => {
            skip(input, wire)?;
            Some(json!({}))
        }
    })
}

fn wrong_wire(path: &str, wire: u64) -> ApiError {
    bad(format!("{path} has wire type {wire}, which its type cannot have"))
}

fn timestamp(bytes: &[u8], path: &str) -> Result<Option<(i64, u32)>, ApiError> {
    if bytes.is_empty() {
        // Go writes a zero time as an empty message.
        return Ok(None);
    }
    let time = message(bytes, TIME, path)?;
    let seconds = time["seconds"].as_i64().unwrap_or(0);
    let nanos = time["nanos"].as_i64().unwrap_or(0);
    let nanos = u32::try_from(nanos).map_err(|_| bad(format!("{path} has negative nanos")))?;
    Ok(Some((seconds, nanos)))
}

fn quantity(bytes: &[u8], path: &str) -> Result<Value, ApiError> {
    let q = message(bytes, QUANTITY, path)?;
    Ok(q.get("string").cloned().unwrap_or(json!("0")))
}

fn to_value(value: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))
}

/// One message into a JSON object, read with `fields`. A field number the
/// table lacks is refused unless its value is zero, so nothing a client
/// sent is silently lost.
fn message(input: &[u8], fields: &[Field], path: &str) -> Result<Value, ApiError> {
    let mut out = Map::new();
    read_into(&mut out, input, fields, path)?;
    Ok(Value::Object(out))
}

fn read_into(
    out: &mut Map<String, Value>,
    mut input: &[u8],
    fields: &[Field],
    path: &str,
) -> Result<(), ApiError> {
    while !input.is_empty() {
        let (number, wire) = key(&mut input)?;
        let Some(Field(_, name, ty)) = fields.iter().find(|f| f.0 == number) else {
            if other(&mut input, wire)?.is_some() {
                return Err(bad(format!(
                    "field number {number} of {} is not known here",
                    if path.is_empty() { "the object" } else { path }
                )));
            }
            continue;
        };
        let here = match path {
            "" => name.to_string(),
            _ => format!("{path}.{name}"),
        };
        let name = name.to_string();
        fn len<'a>(input: &mut &'a [u8], wire: u64, here: &str) -> Result<&'a [u8], ApiError> {
            match wire {
                2 => length_delimited(input),
                _ => Err(wrong_wire(here, wire)),
            }
        }
        let num = |input: &mut &[u8]| match wire {
            0 => varint(input),
            _ => Err(wrong_wire(&here, wire)),
        };
        let value = match ty {
            Ty::Str | Ty::OptStr => {
                let text = string(len(&mut input, wire, &here)?)?;
                (!text.is_empty() || matches!(ty, Ty::OptStr)).then(|| json!(text))
            }
            // Every integer here is int32 or int64, both sign-extended.
            Ty::Int | Ty::OptInt => {
                let n = num(&mut input)? as i64;
                (n != 0 || matches!(ty, Ty::OptInt)).then(|| json!(n))
            }
            Ty::Bool | Ty::OptBool => {
                let b = num(&mut input)? != 0;
                (b || matches!(ty, Ty::OptBool)).then(|| json!(b))
            }
            Ty::Time => match timestamp(len(&mut input, wire, &here)?, &here)? {
                Some((s, n)) => Some(to_value(Time::from_unix(s, n))?),
                None => None,
            },
            Ty::MicroTime => match timestamp(len(&mut input, wire, &here)?, &here)? {
                Some((s, n)) => Some(to_value(MicroTime::from_unix(s, n))?),
                None => None,
            },
            Ty::Quantity => {
                let bytes = len(&mut input, wire, &here)?;
                (!bytes.is_empty()).then(|| quantity(bytes, &here)).transpose()?
            }
            Ty::IntOrString => {
                let bytes = len(&mut input, wire, &here)?;
                if bytes.is_empty() {
                    None
                } else {
                    let v = message(bytes, INT_OR_STRING, &here)?;
                    Some(match v["type"].as_i64().unwrap_or(0) {
                        0 => json!(v["intVal"].as_i64().unwrap_or(0)),
                        _ => json!(v["strVal"].as_str().unwrap_or("")),
                    })
                }
            }
            // Go's JSON keeps a struct even when it is zero.
            Ty::Msg(inner) => Some(message(len(&mut input, wire, &here)?, inner, &here)?),
            Ty::Inline(inner) => {
                read_into(out, len(&mut input, wire, &here)?, inner, path)?;
                None
            }
            Ty::Msgs(inner) => {
                let item = message(len(&mut input, wire, &here)?, inner, &here)?;
                push(out, name.clone(), item);
                None
            }
            Ty::Strs => {
                let item = json!(string(len(&mut input, wire, &here)?)?);
                push(out, name.clone(), item);
                None
            }
            Ty::Ints => {
                // Packed or one by one.
                let mut items = Vec::new();
                match wire {
                    2 => {
                        let mut packed = length_delimited(&mut input)?;
                        while !packed.is_empty() {
                            items.push(varint(&mut packed)? as i64);
                        }
                    }
                    _ => items.push(num(&mut input)? as i64),
                }
                for item in items {
                    push(out, name.clone(), json!(item));
                }
                None
            }
            Ty::StrMap | Ty::QuantityMap => {
                let (k, v) = map_entry(len(&mut input, wire, &here)?, &here)?;
                let v = match ty {
                    Ty::StrMap => json!(string(v)?),
                    _ => quantity(v, &here)?,
                };
                let map = out.entry(name.clone()).or_insert_with(|| json!({}));
                map[k] = v;
                None
            }
            Ty::Other => other(&mut input, wire)?,
            Ty::Skip => {
                skip(&mut input, wire)?;
                None
            }
        };
        if let Some(value) = value {
            out.insert(name, value);
        }
    }
    Ok(())
}

const TIME: &[Field] = &[Field(1, "seconds", Ty::Int), Field(2, "nanos", Ty::Int)];
const QUANTITY: &[Field] = &[Field(1, "string", Ty::Str)];
const INT_OR_STRING: &[Field] =
    &[Field(1, "type", Ty::Int), Field(2, "intVal", Ty::Int), Field(3, "strVal", Ty::Str)];

/// A map entry: its key, and its value's bytes.
fn map_entry<'a>(mut input: &'a [u8], path: &str) -> Result<(String, &'a [u8]), ApiError> {
    let (mut k, mut v) = (String::new(), &[][..]);
    while !input.is_empty() {
        match key(&mut input)? {
            (1, 2) => k = string(length_delimited(&mut input)?)?,
            (2, 2) => v = length_delimited(&mut input)?,
            (_, wire) => return Err(wrong_wire(path, wire)),
        }
    }
    Ok((k, v))
}

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

    fn number(number: u64, value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(number << 3, &mut out);
        prost::encoding::encode_varint(value as u64, &mut out);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), field(1, &type_meta), field(2, raw)].concat()
    }

    /// ObjectMeta as Go writes it: every non-pointer field, zero or not.
    fn meta(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
        let mut out =
            [field(1, name.as_bytes()), field(2, b""), field(3, b""), field(4, b"")].concat();
        out.extend([field(5, b""), field(6, b""), number(7, 0), field(8, b"")].concat());
        for (k, v) in labels {
            out.extend(field(11, &[field(1, k.as_bytes()), field(2, v.as_bytes())].concat()));
        }
        out
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

        let mut options = number(1, 0);
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
    fn a_deployment_is_read_as_its_json_with_zero_values_left_out() {
        let quantity = |q: &str| field(1, q.as_bytes());
        let limits = field(1, &[field(1, b"memory"), field(2, &quantity("64Mi"))].concat());
        let port = [number(1, 0), number(2, 8080), field(3, b"")].concat();
        let probe_handler = field(2, &[field(1, b"/healthz"), field(2, &port)].concat());
        let probe = [field(1, &probe_handler), number(2, 3), number(5, 0)].concat();
        let container = [
            field(1, b"web"),
            field(2, b"busybox"),
            field(3, b"sleep"),
            field(3, b"3600"),
            field(5, b""),
            field(8, &limits),
            field(10, &probe),
            field(13, b""),
            field(14, b"IfNotPresent"),
            number(16, 0),
            number(18, 0),
        ]
        .concat();
        let volume = [field(1, b"scratch"), field(2, &field(2, &field(1, b"")))].concat();
        let pod_spec =
            [field(1, &volume), field(2, &container), field(3, b""), number(11, 0)].concat();
        let template = [field(1, &meta("", &[("app", "web")])), field(2, &pod_spec)].concat();
        let selector = field(1, &[field(1, b"app"), field(2, b"web")].concat());
        let surge = [number(1, 1), number(2, 0), field(3, b"25%")].concat();
        let strategy = [field(1, b"RollingUpdate"), field(2, &field(2, &surge))].concat();
        let spec = [
            number(1, 0),
            field(2, &selector),
            field(3, &template),
            field(4, &strategy),
            number(5, 0),
        ]
        .concat();
        // A zero status, as Go writes one.
        let status = [number(1, 0), number(2, 0)].concat();
        let raw = [field(1, &meta("web", &[("app", "web")])), field(2, &spec), field(3, &status)]
            .concat();
        let d = to_json(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(
            d,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "volumes": [{"name": "scratch", "emptyDir": {}}],
                            "containers": [{
                                "name": "web",
                                "image": "busybox",
                                "command": ["sleep", "3600"],
                                "resources": {"limits": {"memory": "64Mi"}},
                                "livenessProbe": {
                                    "httpGet": {"path": "/healthz", "port": 8080},
                                    "initialDelaySeconds": 3
                                },
                                "imagePullPolicy": "IfNotPresent"
                            }]
                        }
                    },
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}
                },
                "status": {}
            })
        );
        // The JSON decodes as berth's Deployment.
        let bytes = serde_json::to_vec(&d).unwrap();
        let typed: berth_proto::apps_v1::Deployment = berth_proto::from_json(&bytes).unwrap();
        assert_eq!(typed.spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn times_lease_micro_times_and_fields_berth_lacks() {
        let time = [number(1, 1_700_000_000), number(2, 123_456_789)].concat();
        let spec = [field(1, b"peer-1"), number(2, 15), field(4, &time), number(5, 0)].concat();
        let raw = [field(1, &meta("lock", &[])), field(2, &spec)].concat();
        let lease = to_json(&envelope("coordination.k8s.io/v1", "Lease", &raw)).unwrap();
        assert_eq!(
            lease["spec"],
            json!({
                "holderIdentity": "peer-1",
                "leaseDurationSeconds": 15,
                "renewTime": "2023-11-14T22:13:20.123456Z",
                "leaseTransitions": 0
            })
        );

        // A field berth does not model (hostAliases) is kept under its
        // name when set, for field validation; dropped when zero.
        let alias = field(23, &field(1, b"10.0.0.1"));
        let unset = number(21, 0);
        let spec = [field(2, &field(1, b"c")), alias, unset].concat();
        let raw = [field(1, &meta("p", &[])), field(2, &spec)].concat();
        let pod = to_json(&envelope("v1", "Pod", &raw)).unwrap();
        let spec = pod["spec"].as_object().unwrap();
        assert!(spec.contains_key("hostAliases"));
        assert!(!spec.contains_key("automountServiceAccountToken"));
        let bytes = serde_json::to_vec(&pod).unwrap();
        let strict: Result<berth_proto::core_v1::Pod, _> = berth_proto::from_json(&bytes);
        assert!(strict.unwrap_err().to_string().contains("hostAliases"));
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        assert!(to_json(b"{}").is_err());
        assert!(matches!(
            to_json(&envelope("apps/v1", "StatefulSet", b"")),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        // Field 99 of ObjectMeta, set: refused; zero: as if absent.
        let meta = field(99, b"x");
        let e = to_json(&envelope("v1", "Namespace", &field(1, &meta))).unwrap_err();
        assert!(e.to_string().contains("field number 99 of metadata"), "{e}");
        let zero = [field(1, b"n"), number(99, 0)].concat();
        assert!(to_json(&envelope("v1", "Namespace", &field(1, &zero))).is_ok());
        // A length past the end.
        assert!(to_json(&envelope("v1", "Namespace", &[10, 50, 1])).is_err());
        // A string field sent as a number.
        let e = to_json(&envelope("v1", "Namespace", &field(1, &number(1, 5)))).unwrap_err();
        assert!(e.to_string().contains("metadata.name"), "{e}");
    }
}

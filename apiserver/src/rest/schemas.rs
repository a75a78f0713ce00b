//! OpenAPI schemas of the served objects, derived from the same proto
//! descriptors the code is generated from, so `kubectl explain` shows the
//! fields the server really accepts (with their comments as descriptions).

use super::kinds::KINDS;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// The Kubernetes schema-name prefix of each served proto package.
fn prefix(package: &str) -> Option<&'static str> {
    Some(match package {
        "berth.core.v1" => "io.k8s.api.core.v1",
        "berth.apps.v1" => "io.k8s.api.apps.v1",
        "berth.coordination.v1" => "io.k8s.api.coordination.v1",
        "berth.rbac.v1" => "io.k8s.api.rbac.v1",
        "berth.authorization.v1" => "io.k8s.api.authorization.v1",
        "berth.meta.v1" => "io.k8s.apimachinery.pkg.apis.meta.v1",
        _ => return None,
    })
}

/// Types that travel as strings (or numbers) rather than objects.
fn scalar_message(type_name: &str) -> Option<Value> {
    Some(match type_name {
        ".berth.meta.v1.Time" | ".berth.meta.v1.MicroTime" => {
            json!({"type": "string", "format": "date-time"})
        }
        ".berth.meta.v1.FieldsV1" => json!({"type": "object"}),
        ".berth.meta.v1.Quantity" | ".berth.meta.v1.IntOrString" => {
            json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]})
        }
        _ => return None,
    })
}

/// `.berth.core.v1.PodSpec` -> `io.k8s.api.core.v1.PodSpec`.
fn schema_name(type_name: &str) -> Option<String> {
    let name = type_name.trim_start_matches('.');
    let (package, message) = name.rsplit_once('.')?;
    Some(format!("{}.{message}", prefix(package)?))
}

fn scalar(kind: Type) -> Value {
    match kind {
        Type::String => json!({"type": "string"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
            json!({"type": "integer", "format": "int64"})
        }
        Type::Double | Type::Float => json!({"type": "number", "format": "double"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        _ => json!({}),
    }
}

/// The schema of a message-typed value: inline for scalars, a reference
/// otherwise.
fn message_ref(type_name: &str) -> Value {
    if let Some(s) = scalar_message(type_name) {
        return s;
    }
    match schema_name(type_name) {
        Some(name) => {
            json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}], "default": {}})
        }
        None => json!({"type": "object"}),
    }
}

fn message_schema(
    message: &DescriptorProto,
    comments: &dyn Fn(&[i32]) -> String,
    path: &[i32],
) -> Value {
    let mut properties = Map::new();
    for (i, field) in message.field.iter().enumerate() {
        let kind = field.r#type();
        let mut field_path = path.to_vec();
        field_path.extend([2, i as i32]);
        let mut schema = if kind == Type::Message {
            let entry = message.nested_type.iter().find(|n| {
                field.type_name().ends_with(&format!(".{}", n.name()))
                    && n.options.as_ref().is_some_and(|o| o.map_entry())
            });
            match entry {
                Some(entry) => {
                    let value = &entry.field[1];
                    let value_schema = if value.r#type() == Type::Message {
                        message_ref(value.type_name())
                    } else {
                        scalar(value.r#type())
                    };
                    json!({"type": "object", "additionalProperties": value_schema})
                }
                None if field.label() == Label::Repeated => {
                    json!({"type": "array", "items": message_ref(field.type_name())})
                }
                None => message_ref(field.type_name()),
            }
        } else if field.label() == Label::Repeated {
            json!({"type": "array", "items": scalar(kind)})
        } else {
            scalar(kind)
        };
        let description = comments(&field_path);
        if !description.is_empty() {
            schema["description"] = json!(description);
        }
        properties.insert(field.json_name().to_string(), schema);
    }
    let mut schema = json!({"type": "object", "properties": properties});
    let description = comments(path);
    if !description.is_empty() {
        schema["description"] = json!(description);
    }
    schema
}

/// Every served object's schema, keyed by Kubernetes schema name.
pub(super) fn schemas() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut out = Map::new();
        let Ok(set) = FileDescriptorSet::decode(berth_proto::FILE_DESCRIPTOR_SET) else {
            tracing::error!(
                "the compiled-in proto descriptors do not decode; OpenAPI schemas are empty"
            );
            return out;
        };
        for file in &set.file {
            let Some(prefix) = prefix(file.package()) else { continue };
            let locations =
                file.source_code_info.as_ref().map(|s| s.location.as_slice()).unwrap_or(&[]);
            let comments = |path: &[i32]| {
                locations
                    .iter()
                    .find(|l| l.path == path)
                    .map(|l| l.leading_comments().trim().replace('\n', " "))
                    .unwrap_or_default()
            };
            for (i, message) in file.message_type.iter().enumerate() {
                if scalar_message(&format!(".{}.{}", file.package(), message.name())).is_some() {
                    continue;
                }
                let mut schema = message_schema(message, &comments, &[4, i as i32]);
                if let Some(k) = KINDS
                    .iter()
                    .find(|k| k.kind == message.name() && prefix.ends_with(group_suffix(k.group)))
                {
                    schema["x-kubernetes-group-version-kind"] =
                        json!([{"group": k.group, "version": "v1", "kind": k.kind}]);
                }
                out.insert(format!("{prefix}.{}", message.name()), schema);
            }
        }
        out
    })
}

/// The last part of a group's schema prefix: "" -> "core.v1".
fn group_suffix(group: &str) -> &'static str {
    match group {
        "" => "core.v1",
        "apps" => "apps.v1",
        "coordination.k8s.io" => "coordination.v1",
        "rbac.authorization.k8s.io" => "rbac.v1",
        "authorization.k8s.io" => "authorization.v1",
        _ => "\u{0}",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_carry_their_group_version_kind_and_fields_their_types() {
        let s = schemas();
        let pod = &s["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert_eq!(
            pod["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        let container = &s["io.k8s.api.core.v1.Container"]["properties"];
        assert_eq!(container["args"]["type"], "array");
        let meta = &s["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
        assert_eq!(meta["labels"]["additionalProperties"]["type"], "string");
        assert_eq!(meta["creationTimestamp"]["format"], "date-time");
        let deployment = &s["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(deployment["x-kubernetes-group-version-kind"][0]["group"], "apps");
    }
}

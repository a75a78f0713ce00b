//! Generates Rust from the .proto files with a pure-Rust protobuf compiler
//! (protox), so a fresh machine needs no protoc.
//!
//! API object messages also get serde derives with the Kubernetes JSON
//! conventions. The per-field attributes come from the parsed descriptors, so
//! every field follows the same rules without a hand-kept list.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use std::error::Error;

/// Proto files, relative to `proto/`.
const PROTOS: &[&str] = &[
    "berth/meta/v1/meta.proto",
    "berth/core/v1/core.proto",
    "berth/apps/v1/apps.proto",
    "berth/coordination/v1/coordination.proto",
    "berth/rbac/v1/rbac.proto",
    "berth/authorization/v1/authorization.proto",
    "berth/raft/v1/raft.proto",
    "berth/api/v1/api.proto",
    "berth/api/v1/rbac.proto",
    "etcd/mvccpb/kv.proto",
    "etcd/etcdserverpb/rpc.proto",
    "runtime/v1/api.proto",
    "deviceplugin/v1beta1/api.proto",
];

/// Packages whose messages are API objects with a JSON/YAML form. Wire
/// protocols (etcd, CRI's runtime.v1) are left out: they have no serde form.
const API_PACKAGES: &[&str] = &[
    "berth.meta.v1",
    "berth.core.v1",
    "berth.apps.v1",
    "berth.coordination.v1",
    "berth.rbac.v1",
    "berth.authorization.v1",
];

/// Messages with hand-written Rust types (their JSON form is a string or a
/// bare value, not an object).
const EXTERN: &[(&str, &str)] = &[
    (".berth.meta.v1.Time", "crate::time::Time"),
    (".berth.meta.v1.MicroTime", "crate::time::MicroTime"),
    (".berth.meta.v1.Quantity", "crate::quantity::Quantity"),
    (".berth.meta.v1.IntOrString", "crate::int_or_string::IntOrString"),
    (".berth.meta.v1.FieldsV1", "crate::fields_v1::FieldsV1"),
];

/// Fields (or whole messages) that Kubernetes writes even when they hold
/// their zero value: the ones without `omitempty` in its Go types.
const ALWAYS_EMITTED: &[&str] = &[
    ".berth.core.v1.NodeSystemInfo",
    ".berth.core.v1.ContainerStatus.name",
    ".berth.core.v1.ContainerStatus.ready",
    ".berth.core.v1.ContainerStatus.restartCount",
    ".berth.core.v1.ContainerStatus.image",
    ".berth.core.v1.ContainerStatus.imageID",
    ".berth.core.v1.ContainerStateTerminated.exitCode",
    ".berth.core.v1.NodeCondition.type",
    ".berth.core.v1.NodeCondition.status",
    ".berth.core.v1.PodCondition.type",
    ".berth.core.v1.PodCondition.status",
    ".berth.core.v1.DaemonEndpoint.Port",
    ".berth.core.v1.ContainerPort.containerPort",
    ".berth.core.v1.SeccompProfile.type",
    ".berth.core.v1.Sysctl",
    ".berth.apps.v1.ReplicaSetStatus.replicas",
    ".berth.apps.v1.ScaleSpec.replicas",
    ".berth.apps.v1.ScaleStatus.replicas",
    ".berth.rbac.v1.Role.rules",
    ".berth.rbac.v1.ClusterRole.rules",
    ".berth.rbac.v1.PolicyRule.verbs",
    ".berth.rbac.v1.Subject.kind",
    ".berth.rbac.v1.Subject.name",
    ".berth.rbac.v1.RoleRef",
    ".berth.authorization.v1.SubjectAccessReviewStatus.allowed",
    ".berth.authorization.v1.SubjectRulesReviewStatus.resourceRules",
    ".berth.authorization.v1.SubjectRulesReviewStatus.nonResourceRules",
    ".berth.authorization.v1.SubjectRulesReviewStatus.incomplete",
    ".berth.authorization.v1.ResourceRule.verbs",
    ".berth.authorization.v1.NonResourceRule.verbs",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    // The descriptors themselves, for gRPC server reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), prost::Message::encode_to_vec(&fds))?;

    let mut builder = tonic_prost_build::configure().btree_map(".");
    for (proto, rust) in EXTERN {
        builder = builder.extern_path(*proto, *rust);
    }
    for (path, attribute) in serde_attributes(&fds) {
        builder = builder.field_attribute(path, attribute);
    }
    for path in api_messages(&fds) {
        builder = builder.message_attribute(
            path,
            "#[derive(serde::Serialize, serde::Deserialize)]\n#[serde(default, deny_unknown_fields)]",
        );
    }
    builder.compile_fds(fds)?;
    Ok(())
}

fn api_files(fds: &FileDescriptorSet) -> impl Iterator<Item = (&str, &DescriptorProto)> {
    fds.file
        .iter()
        .filter(|f| API_PACKAGES.contains(&f.package()))
        .flat_map(|f| f.message_type.iter().map(move |m| (f.package(), m)))
        .filter(|(package, m)| {
            let path = format!(".{package}.{}", m.name());
            !EXTERN.iter().any(|(p, _)| *p == path)
        })
}

fn api_messages(fds: &FileDescriptorSet) -> Vec<String> {
    api_files(fds).map(|(package, m)| format!(".{package}.{}", m.name())).collect()
}

/// One attribute per field: the Kubernetes JSON name, omission of zero
/// values, and `null` accepted wherever Kubernetes' decoder accepts it.
fn serde_attributes(fds: &FileDescriptorSet) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (package, message) in api_files(fds) {
        for field in &message.field {
            let path = format!(".{package}.{}.{}", message.name(), field.name());
            let mut parts = vec![format!("rename = \"{}\"", field.name())];
            let message_path = format!(".{package}.{}", message.name());
            let always = ALWAYS_EMITTED.contains(&path.as_str())
                || ALWAYS_EMITTED.contains(&message_path.as_str());
            if !always {
                parts.push("skip_serializing_if = \"crate::serde_support::is_default\"".into());
            }
            if !is_rust_option(field) {
                parts.push("deserialize_with = \"crate::serde_support::null_as_default\"".into());
            }
            out.push((path, format!("#[serde({})]", parts.join(", "))));
        }
    }
    out
}

/// prost makes singular message fields and proto3 `optional` fields `Option`.
fn is_rust_option(field: &FieldDescriptorProto) -> bool {
    if field.label() == Label::Repeated {
        return false;
    }
    field.r#type() == Type::Message || field.proto3_optional()
}

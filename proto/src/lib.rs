//! berth-proto: every API object and wire protocol of berth, defined once as
//! protobuf under `proto/` and generated at build time.
//!
//! API objects have the Kubernetes shape and field names. Their JSON/YAML form
//! follows the Kubernetes conventions (camelCase, int64 as numbers, enum-like
//! fields as strings, RFC 3339 times, quantities as "250m"/"1Gi"), and
//! decoding is strict: an unknown field is an error naming its path.

/// The generated code, nested as the proto packages are so that its
/// cross-package paths resolve; the public names are the re-exports below.
mod generated {
    pub mod berth {
        pub mod meta {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/berth.meta.v1.rs"));
            }
        }
        pub mod core {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/berth.core.v1.rs"));
            }
        }
        pub mod apps {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/berth.apps.v1.rs"));
            }
        }
        pub mod coordination {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/berth.coordination.v1.rs"));
            }
        }
        pub mod rbac {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/berth.rbac.v1.rs"));
            }
        }
        pub mod authorization {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/berth.authorization.v1.rs"));
            }
        }
        pub mod api {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/berth.api.v1.rs"));
            }
        }
        pub mod raft {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/berth.raft.v1.rs"));
            }
        }
    }
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    }
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    }
    pub mod runtime {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
        }
    }
    pub mod v1beta1 {
        include!(concat!(env!("OUT_DIR"), "/v1beta1.rs"));
    }
}

/// berth's typed gRPC API: one service per resource.
pub use generated::berth::api::v1 as api_v1;
/// appsv1: ReplicaSet, Deployment (and the Scale subresource).
pub use generated::berth::apps::v1 as apps_v1;
/// authorizationv1: SelfSubjectAccessReview, SelfSubjectRulesReview.
pub use generated::berth::authorization::v1 as authorization_v1;
/// coordinationv1: Lease.
pub use generated::berth::coordination::v1 as coordination_v1;
/// The store's replicated commands and its internal peer service.
pub use generated::berth::raft::v1 as raft_v1;
/// rbacv1: Role, ClusterRole, RoleBinding, ClusterRoleBinding.
pub use generated::berth::rbac::v1 as rbac_v1;
/// The etcd v3 API (a subset: KV, Watch, Lease, Cluster, Maintenance),
/// wire-compatible with etcd's own so etcd clients work against berth.
pub mod etcd {
    pub use crate::generated::etcdserverpb;
    pub use crate::generated::mvccpb;
}
/// corev1: Namespace, Node, Pod, Event.
pub use generated::berth::core::v1 as core_v1;
/// metav1: ObjectMeta, LabelSelector, Status.
pub use generated::berth::meta::v1 as meta_v1;
/// The container runtime interface, CRI runtime.v1 (a subset: pod sandboxes,
/// containers, exec, stats, images), wire-compatible with the published API
/// so the kubelet can talk to any CRI runtime and any CRI client to berth's.
pub use generated::runtime::v1 as cri_v1;
/// The kubelet device-plugin API, v1beta1 (Registration served by the
/// kubelet, DevicePlugin served by each plugin), wire-compatible with the
/// published API so Kubernetes' device plugins register with berth's kubelet.
pub use generated::v1beta1 as device_plugin_v1beta1;

/// Every message and service as an encoded FileDescriptorSet, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

mod codec;
mod fields_v1;
mod int_or_string;
pub mod labels;
mod object;
mod quantity;
pub mod remotecommand;
mod serde_support;
mod time;
mod wire;

pub use codec::{from_json, from_yaml, to_json, to_yaml, DecodeError};
pub use fields_v1::FieldsV1;
pub use int_or_string::{IntOrPercentError, IntOrString};
pub use object::{Object, Resource};
pub use quantity::{Quantity, QuantityError, QuantityFormat};
pub use time::{MicroTime, Time, TimeError};

//! What differs between resources when they are written: which part is the
//! spec (a change bumps generation) and which the status (written only
//! through the status subresource).

use super::defaults;
use super::validation::{self, Causes, NameRule};
use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Event, Namespace, NamespaceStatus, Node, Pod, PodStatus};
use berth_proto::meta_v1::{LabelSelector, ObjectMeta, StatusCause};
use berth_proto::Resource;
use std::any::Any;

pub(crate) trait Kind: Resource + 'static {
    /// Takes `from`'s status (a spec writer never changes status).
    fn keep_status_of(&mut self, from: &Self);
    /// Takes `from`'s spec (a status writer never changes spec).
    fn keep_spec_of(&mut self, from: &Self);
    fn spec_changed(&self, from: &Self) -> bool;
    /// Resets what a client may not set on create.
    fn prepare_for_create(&mut self) {}
    /// Whether a node agent runs this object and must confirm its deletion
    /// (a pod bound to a node).
    fn held_by_node(&self) -> bool {
        false
    }
    /// The grace period a delete gets when the request names none.
    fn default_grace_seconds(&self) -> i64 {
        0
    }
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }
    /// Fills in what Kubernetes defaults.
    fn apply_defaults(&mut self) {}
    fn validate(&self) -> Causes {
        let mut causes = Causes::default();
        validation::object_meta(&mut causes, self.metadata(), self.name_rule());
        causes
    }
    /// Whether objects of this kind expire after the API's event TTL.
    fn expires(&self) -> bool {
        false
    }
    /// What may not change from `old` to `self`.
    fn validate_update(&self, _old: &Self) -> Causes {
        Causes::default()
    }
}

/// Admission sees every kind through its defaults and validation. (Not
/// imported: in scope, its methods would clash with `Resource`'s and `Kind`'s.)
impl<T: Kind> crate::filters::Admitted for T {
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn metadata(&self) -> &ObjectMeta {
        Resource::metadata(self)
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        Resource::metadata_mut(self)
    }
    fn apply_defaults(&mut self) {
        Kind::apply_defaults(self)
    }
    fn validate(&self, old: Option<&dyn crate::filters::Admitted>) -> Vec<StatusCause> {
        let causes = Kind::validate(self).0;
        let Some(old) = old.filter(|_| causes.is_empty()) else { return causes };
        match old.as_any().downcast_ref::<T>() {
            Some(old) => Kind::validate_update(self, old).0,
            None => vec![StatusCause {
                reason: "FieldValueInvalid".into(),
                message: format!("a {} cannot replace a {}", T::KIND, old.kind()),
                field: "kind".into(),
            }],
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

macro_rules! spec_and_status {
    ($($ty:ty => $prepare:expr $(, { $($extra:tt)* })? ;)*) => {$(
        impl Kind for $ty {
            fn keep_status_of(&mut self, from: &Self) {
                self.status = from.status.clone();
            }
            fn keep_spec_of(&mut self, from: &Self) {
                self.spec = from.spec.clone();
            }
            fn spec_changed(&self, from: &Self) -> bool {
                self.spec != from.spec
            }
            fn prepare_for_create(&mut self) {
                let prepare: fn(&mut $ty) = $prepare;
                prepare(self)
            }
            $($($extra)*)?
        }
    )*};
}

spec_and_status! {
    Namespace => |ns| ns.status = Some(NamespaceStatus { phase: "Active".into(), ..Default::default() }), {
        fn name_rule(&self) -> NameRule {
            NameRule::Label
        }
    };
    // A node's agent reports its status from the start.
    Node => |_| {};
    Pod => |pod| pod.status = Some(PodStatus { phase: "Pending".into(), ..Default::default() }), {
        fn held_by_node(&self) -> bool {
            self.spec.as_ref().is_some_and(|s| !s.node_name.is_empty())
        }
        fn default_grace_seconds(&self) -> i64 {
            self.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30)
        }
        fn apply_defaults(&mut self) {
            if let Some(spec) = self.spec.as_mut() {
                defaults::pod(spec);
            }
        }
        fn validate(&self) -> Causes {
            validation::pod(self)
        }
        fn validate_update(&self, old: &Self) -> Causes {
            validation::pod_update(old, self)
        }
    };
    ReplicaSet => |rs| rs.status = None, {
        fn apply_defaults(&mut self) {
            defaults::replica_set(self);
        }
        fn validate(&self) -> Causes {
            validation::replica_set(self)
        }
        fn validate_update(&self, old: &Self) -> Causes {
            validation::selector_update(old.selector(), self.selector())
        }
    };
    Deployment => |d| d.status = None, {
        fn apply_defaults(&mut self) {
            defaults::deployment(self);
        }
        fn validate(&self) -> Causes {
            validation::deployment(self)
        }
        fn validate_update(&self, old: &Self) -> Causes {
            validation::selector_update(old.selector(), self.selector())
        }
    };
}

impl Kind for Lease {
    fn keep_status_of(&mut self, _: &Self) {}
    fn keep_spec_of(&mut self, from: &Self) {
        self.spec = from.spec.clone();
    }
    fn spec_changed(&self, from: &Self) -> bool {
        self.spec != from.spec
    }
}

/// An Event is all data, no spec or status.
impl Kind for Event {
    fn name_rule(&self) -> NameRule {
        NameRule::Any
    }
    fn expires(&self) -> bool {
        true
    }
    fn keep_status_of(&mut self, _: &Self) {}
    fn keep_spec_of(&mut self, _: &Self) {}
    fn spec_changed(&self, _: &Self) -> bool {
        false
    }
}

/// A workload with replicas, a selector and the scale subresource.
pub(crate) trait Workload: Kind {
    fn selector(&self) -> Option<&LabelSelector>;
    fn set_replicas(&mut self, replicas: i32);
    /// The replicas asked for (spec.replicas, 1 when unset).
    fn replicas(&self) -> i32;
    /// The replicas that exist, as the status reports them.
    fn status_replicas(&self) -> i32;
}

macro_rules! workload {
    ($($ty:ty),*) => {$(
        impl Workload for $ty {
            fn selector(&self) -> Option<&LabelSelector> {
                self.spec.as_ref().and_then(|s| s.selector.as_ref())
            }
            fn set_replicas(&mut self, replicas: i32) {
                self.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
            }
            fn replicas(&self) -> i32 {
                self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
            }
            fn status_replicas(&self) -> i32 {
                self.status.as_ref().map_or(0, |s| s.replicas)
            }
        }
    )*};
}

workload!(ReplicaSet, Deployment);

//! berth-controllers: the controller-manager's reconcilers.
//!
//! ReplicaSet, Deployment, node lifecycle, garbage collection, namespace
//! deletion and ClusterRole aggregation, each a [`Reconciler`] over shared
//! informers and a work queue, run by the elected leader among the replicas
//! ([`ControllerManager`]):
//! only the holder of the Lease kube-system/berth-controller-manager runs
//! them, and its writes carry its fencing token, so a replica that lost the
//! Lease cannot write.
//!
//! A Deployment is rolled back by setting the [`ROLLBACK_TO`] annotation to
//! a revision ("0": the previous one); apps/v1 has no spec.rollbackTo.

mod aggregation;
mod claims;
mod deployment;
mod error;
mod expectations;
mod gc;
mod informers;
mod manager;
mod namespace;
mod node_lifecycle;
mod pods;
mod replicaset;
mod runner;

pub use berth_client::{EventRecorder, EventType, EventWriter};
pub use deployment::ROLLBACK_TO;
pub use error::Error;
pub use manager::{run, Config, ControllerManager, CONTROLLERS, LEASE_NAME, LEASE_NAMESPACE};
pub use node_lifecycle::{NodeLifecycleConfig, UNREACHABLE_TAINT};
pub use runner::{run_workers, Action, Reconciler};

/// Re-exported so the binary needs no other crate for its flags.
pub use berth_client::{Client, ElectionTiming};

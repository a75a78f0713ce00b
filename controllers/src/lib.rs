//! berth-controllers: the controller-manager's reconcilers.
//!
//! ReplicaSet, Deployment, node lifecycle, garbage collection and namespace
//! deletion, each a reconciler over informers and a work queue, run by the
//! elected leader among the replicas.

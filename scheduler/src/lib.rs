//! berth-scheduler: places pods on nodes.
//!
//! A plugin framework with one trait per extension point (queue sort,
//! pre-filter, filter, score, reserve, bind), an assumed-pod cache and a
//! back-off queue, run by the elected leader among the replicas.

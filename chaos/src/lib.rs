//! berth-chaos: partition and crash testing of a real berth cluster.
//!
//! [`run`] starts N `berth server` peers, each in its own network namespace
//! joined to a bridge, plus scheduler and controller-manager replicas; drives
//! register, API-object, watch and fenced-writer workloads against them while
//! it applies a seeded [`schedule`] of faults (partitions, one-way loss,
//! SIGKILL, SIGSTOP, netem, a frozen writer); heals everything; then checks
//! the recorded histories ([`check`]) and writes a [`Report`]. Everything it
//! creates is removed at the end, on error and on Ctrl-C.

pub mod check;
pub mod history;
mod net;
mod procs;
mod report;
mod run;
pub mod schedule;
mod workload;

pub use check::Violation;
pub use net::sweep_abandoned;
pub use report::{FaultRecord, Report};
pub use run::{run, schedule_of, Config};

/// What can stop a chaos run before it has a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host lacks what a run needs (root, ip, nft): nothing was started.
    #[error("this host cannot run chaos: {0}")]
    Unsupported(String),
    /// Setting up or driving the cluster failed; everything was cleaned up.
    #[error("{0}")]
    Harness(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// Ctrl-C or SIGTERM; everything was cleaned up.
    #[error("interrupted; the cluster and its namespaces were removed")]
    Interrupted,
}

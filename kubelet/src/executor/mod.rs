//! The OCI executor: runs a container from an OCI bundle (config.json plus
//! a rootfs) with Linux namespaces, pivot_root, mounts, capabilities,
//! rlimits, seccomp filters and cgroup limits, and drives its lifecycle the way runc does
//! (create, start, state, kill, exec, delete).
//!
//! The split follows youki: [`Container`] holds the lifecycle logic,
//! [`cgroups`] puts cgroup v1 and v2 behind one trait, and [`runtime_main`]
//! is the thin runc-compatible command line over both.

pub mod cgroups;
mod channel;
mod cli;
mod console;
mod container;
mod error;
mod log;
mod process;
mod rootfs;
mod seccomp;

#[cfg(test)]
mod tests;

pub use cli::runtime_main;
pub use console::receive as receive_console;
pub use container::{Container, CreateOptions, ExecProcess, ExitStatus, Stdio};
pub use error::ExecutorError;
pub use log::{parse_record, LogPump, LogRecord, Tap};
pub use seccomp::{runtime_default as seccomp_runtime_default, SeccompError};

//! berth's CRI runtime service: the runtime.v1 RuntimeService and
//! ImageService on a unix socket, backed by the executor and the image store.
//!
//! A pod sandbox is a holder process keeping the pod's network, IPC and UTS
//! namespaces ([`sandbox`]), bind-mounted under the runtime's root so
//! containers join them by path, and a pod cgroup under a QoS level.
//! Containers get their own mount and PID namespaces, an overlay rootfs from
//! the image store and an OCI spec built from the CRI config ([`spec`]).
//! Everything is mirrored on disk ([`state`]) so a restarted service finds
//! its sandboxes and containers again.

mod attach;
pub(crate) mod cni;
mod container;
mod error;
mod runtime;
mod sandbox;
mod server;
mod spec;
mod state;
mod streaming;

pub use cni::CniNetwork;
pub use error::CriError;
pub use runtime::RuntimeConfig;
pub use server::{serve, CriServer};

//! berth-apiserver: the API server that every peer runs.
//!
//! Requests pass authentication, authorization and admission ([`filters`]),
//! then a registry with one strategy per resource turns them into raft-store
//! transactions; front ends serve it as typed gRPC and as the Kubernetes REST
//! API. Today a peer serves the replicated store (Raft peer service and the
//! etcd v3 API) and its health and metrics endpoints; see [`serve`].

pub mod api;
mod compactor;
mod error;
pub mod filters;
mod health;
mod peer;
pub mod registry;
mod rest;

pub use compactor::spawn_compactor;
pub use error::ApiError;
pub use peer::{serve, PeerConfig, PeerTls, ServeError};
pub use registry::Registry;

//! berth-apiserver: the API server that every peer runs.
//!
//! Requests pass authentication, authorization and admission, then a
//! registry with one strategy per resource turns them into raft-store
//! transactions; front ends serve it as typed gRPC and as the Kubernetes REST
//! API.

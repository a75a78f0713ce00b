//! What can go wrong, said so the caller knows what to do about it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No leader reachable, or this peer is cut off from the quorum: retry
    /// on another peer or later. Never answered with stale data instead.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request is malformed or over a limit; it changed nothing.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The revision asked for was compacted away; relist from a newer one.
    #[error(
        "required revision {requested} has been compacted (compacted up to {compact_revision})"
    )]
    Compacted { requested: i64, compact_revision: i64 },
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("requested lease not found: {0}")]
    LeaseNotFound(i64),
    #[error("lease {0} already exists")]
    LeaseExists(i64),
    #[error("key not found")]
    KeyNotFound,
    #[error(
        "data directory {path} belongs to cluster {found:?}, not {expected:?}; refusing to use it"
    )]
    OtherCluster { path: PathBuf, found: String, expected: String },
    #[error("{path} is not empty and holds no berth store; refusing to write there")]
    NotAStore { path: PathBuf },
    #[error("cannot open the store in {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Storage or Raft failed underneath; the peer should stop.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io { path: path.to_path_buf(), source }
    }
}

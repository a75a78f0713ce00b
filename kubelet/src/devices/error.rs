//! What can go wrong with devices, each variant saying what the caller can do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The allocations on disk cannot be trusted; starting without them
    /// could hand running pods' devices to others, so the operator decides
    /// (remove the file to start over).
    #[error("the device checkpoint {path} is unusable ({reason}); remove it to start without the recorded allocations")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("no device plugin is registered for {0}")]
    NoPlugin(String),
    /// The resource's plugin went away (or the kubelet restarted) and has
    /// not registered again yet; worth retrying within the grace period.
    #[error("the device plugin for {0} is not connected (yet)")]
    Disconnected(String),
    #[error("{resource}: {wanted} device(s) wanted, {available} free and healthy")]
    Insufficient { resource: String, wanted: usize, available: usize },
    /// The plugin answered with an error, garbage, or not within the deadline.
    #[error("device plugin for {resource}: {call}: {message}")]
    Plugin { resource: String, call: &'static str, message: String },
    #[error("refused registration: {0}")]
    Registration(String),
    #[error("cannot serve on {path}: {source}")]
    Serve { path: PathBuf, source: tonic::transport::Error },
}

impl DevicesError {
    /// Whether trying again later may succeed without anyone acting.
    pub fn is_transient(&self) -> bool {
        matches!(self, DevicesError::Disconnected(_))
    }

    pub(super) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DevicesError {
        let path = path.into();
        move |source| DevicesError::Io { path, source }
    }
}

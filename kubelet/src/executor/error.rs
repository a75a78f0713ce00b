//! The executor's one error type.

use std::path::PathBuf;

/// What went wrong running a container, phrased by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The bundle's config.json is missing or not a valid OCI runtime spec:
    /// fix the bundle.
    #[error("bundle {bundle}: invalid OCI runtime spec: {reason}")]
    InvalidBundle { bundle: PathBuf, reason: String },

    /// The spec asks for something this executor does not do: change the spec
    /// or use another runtime.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The container id is empty or could escape the state directory: pick
    /// another id.
    #[error("invalid container id {0:?}: use letters, digits, '.', '_' and '-'")]
    InvalidId(String),

    /// A container with this id already has state under the root: delete it
    /// first or pick another id.
    #[error("container {0} already exists")]
    AlreadyExists(String),

    /// No state for this id under the root: check `--root` and the id.
    #[error("container {0} does not exist")]
    NotFound(String),

    /// The operation needs another lifecycle state (e.g. start on a running
    /// container, delete of a running one without force).
    #[error("container {id} is {status}; {wanted}")]
    WrongState { id: String, status: String, wanted: &'static str },

    /// The container's init or exec process failed while setting up, before
    /// the user's program ran; the message comes from inside the container.
    #[error("container setup failed: {0}")]
    Setup(String),

    /// A cgroup file could not be created, written or read: check that the
    /// controller is mounted and the parent path is writable.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A system call failed in the runtime itself; the context says which.
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },

    /// A file under the state root or bundle could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The container's state file is corrupt: delete the container with force.
    #[error("state file {path}: {reason}")]
    CorruptState { path: PathBuf, reason: String },

    /// The calling process is not the container's parent, so it cannot wait
    /// for its exit status; poll `state` instead.
    #[error("container {0}: exit status is only known to the process that created it")]
    NotParent(String),

    /// The spec's linux.seccomp cannot be compiled: fix the profile.
    #[error(transparent)]
    Seccomp(super::seccomp::SeccompError),
}

pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

impl ExecutorError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ExecutorError::Io { path, source }
    }

    pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let context = context.into();
        move |source| ExecutorError::Sys { context, source }
    }

    pub(crate) fn cgroup(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ExecutorError::Cgroup { path, source }
    }
}

//! The runtime service's one error type, and how each kind reaches a CRI
//! client as a gRPC status.

use std::path::PathBuf;

use crate::executor::ExecutorError;
use crate::image::ImageError;

/// What went wrong serving a CRI call, phrased by what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// No sandbox, container or image by this id: list again, it may be gone.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },

    /// The request lacks something it must carry or carries something
    /// malformed: fix the request.
    #[error("invalid request: {0}")]
    InvalidArgument(String),

    /// The object is in a state that does not allow the call (start of a
    /// running container, a container in a stopped sandbox): check its status.
    #[error("{0}")]
    FailedPrecondition(String),

    /// The request asks for something this runtime does not do.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// An ExecSync command outlived its timeout and was killed.
    #[error("command timed out after {0} s")]
    Timeout(i64),

    /// The executor could not create, run or signal a container.
    #[error(transparent)]
    Executor(#[from] ExecutorError),

    /// The image store could not pull, find or mount an image.
    #[error(transparent)]
    Image(#[from] ImageError),

    /// A system call of the runtime itself failed; the context says which.
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },

    /// A file under the runtime's root could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A task of the runtime panicked or was cancelled mid-call: the object
    /// may be half-changed; check its status and retry.
    #[error("runtime task failed: {0}")]
    Task(String),

    /// The gRPC server failed (socket errors): restart the service.
    #[error("serving CRI: {0}")]
    Serve(String),

    /// A state file under the root is unreadable: remove the object by id.
    #[error("state file {path}: {reason}")]
    CorruptState { path: PathBuf, reason: String },
}

pub type Result<T, E = CriError> = std::result::Result<T, E>;

impl CriError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CriError::Io { path, source }
    }

    pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let context = context.into();
        move |source| CriError::Sys { context, source }
    }

    pub(crate) fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        CriError::NotFound { kind, id: id.into() }
    }
}

impl From<CriError> for tonic::Status {
    fn from(e: CriError) -> Self {
        use tonic::Code;
        let code = match &e {
            CriError::NotFound { .. } => Code::NotFound,
            CriError::InvalidArgument(_) => Code::InvalidArgument,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::Unsupported(_) => Code::Unimplemented,
            CriError::Timeout(_) => Code::DeadlineExceeded,
            CriError::Image(ImageError::NotFound(_)) => Code::NotFound,
            CriError::Image(ImageError::InvalidReference { .. }) => Code::InvalidArgument,
            CriError::Image(ImageError::InUse { .. }) => Code::FailedPrecondition,
            CriError::Executor(ExecutorError::NotFound(_)) => Code::NotFound,
            CriError::Executor(ExecutorError::WrongState { .. }) => Code::FailedPrecondition,
            _ => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

//! API errors in Kubernetes' terms: each maps to a Status with a reason and
//! an HTTP code, and to a gRPC code.

use berth_proto::meta_v1::{Status, StatusCause, StatusDetails};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    /// The object changed since the caller read it; re-read and retry.
    #[error("Operation cannot be fulfilled on {kind} {name:?}: {reason}")]
    Conflict { kind: String, name: String, reason: String },
    /// A server-side apply would change fields other managers own; one
    /// cause per field, naming it and its manager. Apply with force to take
    /// them over.
    #[error("Apply failed with {} conflict(s): {}", causes.len(), causes.iter().map(|c| format!("{}: {}", c.message, c.field)).collect::<Vec<_>>().join(", "))]
    FieldConflicts { kind: String, name: String, causes: Vec<StatusCause> },
    /// One cause per bad field, each naming the field path.
    #[error("{kind} {name:?} is invalid: {}", causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", "))]
    Invalid { kind: String, name: String, causes: Vec<StatusCause> },
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The resourceVersion asked for was compacted away: relist.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: i64, oldest: i64 },
    /// The caller could not be authenticated: present valid credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("request entity too large: {0}")]
    TooLarge(String),
    /// The body's encoding is not served: send JSON or YAML.
    #[error(
        "the body's content type {0:?} is not supported; send application/json or application/yaml"
    )]
    UnsupportedMediaType(String),
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// No quorum or no leader: retry on another peer or later.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<berth_patch::PatchError> for ApiError {
    fn from(e: berth_patch::PatchError) -> Self {
        use berth_patch::PatchError as P;
        match e {
            P::BadRequest(m) => ApiError::BadRequest(m),
            P::UnsupportedMediaType(m) => ApiError::UnsupportedMediaType(m),
            P::RequestEntityTooLarge(m) => ApiError::TooLarge(m),
            P::FieldConflicts { kind, name, causes } => {
                ApiError::FieldConflicts { kind, name, causes }
            }
        }
    }
}

impl ApiError {
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::FieldConflicts { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Expired { .. } => "Expired",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::TooManyRequests(_) => "TooManyRequests",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    pub fn http_code(&self) -> i32 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::FieldConflicts { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Expired { .. } => 410,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::TooLarge(_) => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::TooManyRequests(_) => 429,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::NotFound { .. } => tonic::Code::NotFound,
            ApiError::AlreadyExists { .. } => tonic::Code::AlreadyExists,
            ApiError::Conflict { .. } | ApiError::FieldConflicts { .. } => tonic::Code::Aborted,
            ApiError::Invalid { .. } | ApiError::BadRequest(_) => tonic::Code::InvalidArgument,
            ApiError::Expired { .. } => tonic::Code::OutOfRange,
            ApiError::Unauthorized(_) => tonic::Code::Unauthenticated,
            ApiError::Forbidden(_) => tonic::Code::PermissionDenied,
            ApiError::TooManyRequests(_) | ApiError::TooLarge(_) => tonic::Code::ResourceExhausted,
            ApiError::UnsupportedMediaType(_) => tonic::Code::InvalidArgument,
            ApiError::Unavailable(_) => tonic::Code::Unavailable,
            ApiError::Internal(_) => tonic::Code::Internal,
        }
    }

    /// The Kubernetes Status object for this error.
    pub fn status(&self) -> Status {
        let (kind, name, causes) = match self {
            ApiError::NotFound { kind, name }
            | ApiError::AlreadyExists { kind, name }
            | ApiError::Conflict { kind, name, .. } => (kind.clone(), name.clone(), Vec::new()),
            ApiError::Invalid { kind, name, causes }
            | ApiError::FieldConflicts { kind, name, causes } => {
                (kind.clone(), name.clone(), causes.clone())
            }
            _ => (String::new(), String::new(), Vec::new()),
        };
        let details = (!kind.is_empty() || !causes.is_empty()).then(|| StatusDetails {
            name,
            kind,
            causes,
            ..Default::default()
        });
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: "Failure".into(),
            message: self.to_string(),
            reason: self.reason().into(),
            details,
            code: self.http_code(),
            ..Default::default()
        }
    }
}

impl From<berth_raft_store::StoreError> for ApiError {
    fn from(e: berth_raft_store::StoreError) -> Self {
        use berth_raft_store::StoreError as S;
        match e {
            S::Unavailable(m) => ApiError::Unavailable(m),
            S::Compacted { requested, compact_revision } => {
                ApiError::Expired { requested, oldest: compact_revision }
            }
            S::FutureRevision { requested, current } => ApiError::Unavailable(format!(
                "resource version {requested} is newer than this peer's {current}"
            )),
            S::InvalidArgument(m) => ApiError::BadRequest(m),
            S::LeaseNotFound(id) => ApiError::Conflict {
                kind: "leases".into(),
                name: id.to_string(),
                reason: "the store lease expired before the write".into(),
            },
            e => ApiError::Internal(e.to_string()),
        }
    }
}

use berth_proto::meta_v1::StatusCause;

/// Why a patch or an apply was refused. Each variant is the API error of
/// the same name: the caller fixes the request, or forces the apply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch is malformed or cannot be applied to this object.
    #[error("{0}")]
    BadRequest(String),
    /// The patch is larger than allowed (too many JSON patch operations).
    #[error("{0}")]
    RequestEntityTooLarge(String),
    /// The content type names no patch format (the message lists them).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An apply would change fields other managers own; one cause per field,
    /// naming it and its manager.
    #[error("apply to {kind} {name:?} conflicts on {} field(s)", causes.len())]
    FieldConflicts { kind: String, name: String, causes: Vec<StatusCause> },
}

//! What a call can end in: the API server's Kubernetes Status, or a client
//! side problem with how the client was set up.

use berth_proto::meta_v1::Status;
use prost::Message;

/// An error from the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed the request; `reason` is the Kubernetes
    /// reason (NotFound, Conflict, Invalid, Expired, ...), and `status` the
    /// whole Status with its field causes.
    #[error("{reason}: {message}")]
    Api { code: tonic::Code, reason: String, message: String, status: Box<Status> },
    /// The client was given no API server address.
    #[error("no API server address was given")]
    NoPeers,
    /// An API server address is not a URL the client can dial.
    #[error("invalid API server address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// The bearer token cannot be sent as a header.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The client was made outside a Tokio runtime.
    #[error("the API client must be created within a Tokio runtime")]
    NoRuntime,
    /// A fencing token was not `<namespace>/<name>/<revision>`.
    #[error("invalid fencing token {0:?}: want <namespace>/<name>/<revision>")]
    InvalidFence(String),
}

impl Error {
    /// The Kubernetes reason: from the Status the server sent, or one that
    /// matches the gRPC code when the failure came from the transport.
    pub fn reason(&self) -> &str {
        match self {
            Error::Api { reason, .. } => reason,
            Error::NoPeers
            | Error::NoRuntime
            | Error::InvalidAddress { .. }
            | Error::InvalidToken(_)
            | Error::InvalidFence(_) => "BadRequest",
        }
    }

    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Api { code, .. } => *code,
            _ => tonic::Code::InvalidArgument,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.reason() == "NotFound"
    }

    pub fn is_already_exists(&self) -> bool {
        self.reason() == "AlreadyExists"
    }

    pub fn is_conflict(&self) -> bool {
        self.reason() == "Conflict"
    }

    /// The watch or list named a revision that was compacted: relist.
    pub fn is_expired(&self) -> bool {
        self.reason() == "Expired" || self.reason() == "Gone"
    }

    /// The Status with its causes, when the server sent one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Api { status, .. } => Some(status),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        let status = Status::decode(s.details()).unwrap_or_default();
        let reason = if status.reason.is_empty() {
            reason_of(s.code()).to_string()
        } else {
            status.reason.clone()
        };
        let message = if status.message.is_empty() {
            s.message().to_string()
        } else {
            status.message.clone()
        };
        Error::Api { code: s.code(), reason, message, status: Box::new(status) }
    }
}

/// The Kubernetes reason closest to a gRPC code the transport produced.
fn reason_of(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        Aborted => "Conflict",
        InvalidArgument => "BadRequest",
        OutOfRange => "Expired",
        PermissionDenied => "Forbidden",
        Unauthenticated => "Unauthorized",
        ResourceExhausted => "TooManyRequests",
        Unavailable | Cancelled => "ServiceUnavailable",
        DeadlineExceeded => "Timeout",
        _ => "InternalError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_in_the_details_names_the_reason() {
        let sent = Status {
            reason: "Conflict".into(),
            message: "stale".into(),
            code: 409,
            ..Default::default()
        };
        let e = Error::from(tonic::Status::with_details(
            tonic::Code::Aborted,
            "ignored",
            sent.encode_to_vec().into(),
        ));
        assert!(e.is_conflict());
        assert_eq!(e.to_string(), "Conflict: stale");
    }

    #[test]
    fn a_transport_failure_gets_a_reason_from_its_code() {
        let e = Error::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(e.reason(), "ServiceUnavailable");
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }
}

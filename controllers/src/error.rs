//! What a reconcile can fail with. Every error is retried with the key's
//! backoff; the variants say whether waiting can help.

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or failed a call; retrying later may succeed (a
    /// Conflict means the cache was stale, a Forbidden "fenced" means this
    /// replica no longer leads and is about to stop).
    #[error(transparent)]
    Api(#[from] berth_client::Error),
    /// The object asks for something the controller cannot do until a user
    /// changes it (a malformed selector, a bad percentage).
    #[error("{object}: {reason}")]
    Invalid { object: String, reason: String },
}

impl Error {
    pub(crate) fn invalid(object: &str, reason: impl std::fmt::Display) -> Error {
        Error::Invalid { object: object.to_string(), reason: reason.to_string() }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Error::Api(e) if e.is_not_found())
    }
}

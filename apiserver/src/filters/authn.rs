//! Authentication: from what a request carries to who sent it.

use super::UserInfo;
use crate::error::ApiError;

/// One way of recognising a caller (a client certificate, a bearer token).
///
/// `request` is the request without its body: its metadata, and in its
/// extensions the connection (peer certificates, remote address).
/// `Ok(None)`: these are not credentials this authenticator knows; the next
/// one is asked. `Ok(Some(user))`: the caller, and the chain stops.
/// `Err`: credentials it knows were presented and are not valid
/// (`ApiError::Unauthorized`); the chain stops and the request is refused,
/// so a bad token never falls through to a weaker authenticator.
/// Runs on every request, so it must not block; one that needs remote data
/// keeps a cache that its own task refreshes.
pub trait Authenticator: Send + Sync {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<Option<UserInfo>, ApiError>;
}

/// Everyone is `system:anonymous` in group `system:unauthenticated`.
///
/// The pre-security default, the only authenticator until berth checks
/// client certificates and tokens. Kept last in a chain afterwards, it
/// makes credentials optional, as Kubernetes' `--anonymous-auth` does.
pub struct Anonymous;

impl Authenticator for Anonymous {
    fn authenticate(&self, _: &tonic::Request<()>) -> Result<Option<UserInfo>, ApiError> {
        Ok(Some(UserInfo {
            name: "system:anonymous".into(),
            groups: vec![super::UNAUTHENTICATED.into()],
        }))
    }
}

/// The first user an authenticator recognises.
pub(super) fn authenticate(
    chain: &[Box<dyn Authenticator>],
    request: &tonic::Request<()>,
) -> Result<UserInfo, ApiError> {
    for authenticator in chain {
        if let Some(user) = authenticator.authenticate(request)? {
            return Ok(user);
        }
    }
    Err(ApiError::Unauthorized("the request carries no credentials this server accepts".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Knows the `token` header only: `good` is alice, anything else is bad.
    struct Tokens;

    impl Authenticator for Tokens {
        fn authenticate(&self, request: &tonic::Request<()>) -> Result<Option<UserInfo>, ApiError> {
            match request.metadata().get("token").map(|t| t.to_str()) {
                None => Ok(None),
                Some(Ok("good")) => Ok(Some(UserInfo { name: "alice".into(), groups: Vec::new() })),
                Some(_) => Err(ApiError::Unauthorized("invalid token".into())),
            }
        }
    }

    fn with_token(token: Option<&str>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        if let Some(token) = token {
            request.metadata_mut().insert("token", token.parse().unwrap());
        }
        request
    }

    fn chain() -> Vec<Box<dyn Authenticator>> {
        vec![Box::new(Tokens), Box::new(Anonymous)]
    }

    #[test]
    fn the_first_authenticator_that_knows_the_caller_wins() {
        let user = authenticate(&chain(), &with_token(Some("good"))).unwrap();
        assert_eq!(user.name, "alice");
        let user = authenticate(&chain(), &with_token(None)).unwrap();
        assert_eq!(user.name, "system:anonymous");
        assert_eq!(user.groups, ["system:unauthenticated"]);
    }

    #[test]
    fn bad_credentials_are_unauthorized_even_with_anonymous_behind() {
        let err = authenticate(&chain(), &with_token(Some("forged"))).unwrap_err();
        assert_eq!(err, ApiError::Unauthorized("invalid token".into()));
        assert_eq!(err.grpc_code(), tonic::Code::Unauthenticated);
        let status = err.status();
        assert_eq!((status.reason.as_str(), status.code), ("Unauthorized", 401));
    }

    #[test]
    fn nobody_recognised_is_unauthorized() {
        let only_tokens: Vec<Box<dyn Authenticator>> = vec![Box::new(Tokens)];
        let err = authenticate(&only_tokens, &with_token(None)).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)), "{err:?}");
        assert!(matches!(authenticate(&[], &with_token(None)), Err(ApiError::Unauthorized(_))));
    }
}

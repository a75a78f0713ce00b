//! Client certificates: a TLS client that presented a certificate of the
//! cluster CA is the user its CN names, in the groups its O entries name,
//! as Kubernetes reads them.

use super::authn::Authenticator;
use super::UserInfo;
use crate::error::ApiError;

/// Recognises callers by the client certificate their connection
/// presented. The TLS layer has verified it against the cluster CA before
/// any request arrives; a connection without one is not its business.
pub struct ClientCertificates;

impl Authenticator for ClientCertificates {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<Option<UserInfo>, ApiError> {
        let connection = request.extensions().get::<berth_tls::ConnectionInfo>();
        let Some(identity) = connection.and_then(|c| c.client.as_ref()) else {
            return Ok(None);
        };
        if identity.common_name.is_empty() {
            return Err(ApiError::Unauthorized("the client certificate names no user (CN)".into()));
        }
        Ok(Some(UserInfo {
            name: identity.common_name.clone(),
            groups: super::token::authenticated(identity.organizations.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_tls::{ConnectionInfo, Identity};

    fn on(client: Option<Identity>) -> tonic::Request<()> {
        let mut extensions = tonic::Extensions::default();
        extensions.insert(ConnectionInfo { remote: None, tls: true, client });
        tonic::Request::from_parts(Default::default(), extensions, ())
    }

    #[test]
    fn the_certificate_subject_is_the_user() {
        let alice = Identity { common_name: "alice".into(), organizations: vec!["dev".into()] };
        let user = ClientCertificates.authenticate(&on(Some(alice))).unwrap().unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "system:authenticated"]);
    }

    #[test]
    fn no_certificate_is_left_to_the_next_authenticator() {
        assert_eq!(ClientCertificates.authenticate(&on(None)).unwrap(), None);
        let plain = tonic::Request::new(());
        assert_eq!(ClientCertificates.authenticate(&plain).unwrap(), None);
    }

    #[test]
    fn a_certificate_without_a_user_is_refused() {
        let nobody = Identity { common_name: String::new(), organizations: vec![] };
        let err = ClientCertificates.authenticate(&on(Some(nobody))).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)), "{err:?}");
    }
}

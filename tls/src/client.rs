//! Dialling a berth server: over TLS with the cluster CA as the only root,
//! presenting a certificate when the client has one.

use crate::{Credential, TlsError, Trust};
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A client's TLS setup.
#[derive(Clone, Debug)]
pub struct ClientTls {
    trust: Trust,
    credential: Option<Credential>,
}

impl ClientTls {
    /// Trusts `trust`; presents `credential` (a client certificate) if any.
    pub fn new(trust: Trust, credential: Option<Credential>) -> ClientTls {
        ClientTls { trust, credential }
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The setup as rustls takes it, for HTTP clients.
    pub fn rustls(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.trust.roots());
        let config = match &self.credential {
            None => builder.with_no_client_auth(),
            Some(credential) => {
                let source = std::path::Path::new("<client certificate>");
                let chain = crate::pem::certificates(&credential.cert_pem, source)?;
                let key = crate::pem::private_key(&credential.key_pem, source)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Config(e.to_string()))?
            }
        };
        Ok(Arc::new(config))
    }

    fn tonic(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.trust.pem()));
        match &self.credential {
            Some(c) => config.identity(Identity::from_pem(&c.cert_pem, &c.key_pem)),
            None => config,
        }
    }
}

/// A gRPC endpoint for `address` (`host:port`, or a URL): https with
/// `tls`, plain http without. A URL's own scheme must agree.
pub fn endpoint(address: &str, tls: Option<&ClientTls>) -> Result<Endpoint, TlsError> {
    let bad = |reason: String| TlsError::Address { address: address.into(), reason };
    let url = match (address.split_once("://"), tls) {
        (None, Some(_)) => format!("https://{address}"),
        (None, None) => format!("http://{address}"),
        (Some(("https", _)), Some(_)) | (Some(("http", _)), None) => address.to_string(),
        (Some(("http", _)), Some(_)) => {
            return Err(bad("an http:// address with TLS configured; use https://".into()))
        }
        (Some(("https", _)), None) => {
            return Err(bad("an https:// address without a CA certificate to trust".into()))
        }
        (Some((scheme, _)), _) => return Err(bad(format!("unknown scheme {scheme:?}"))),
    };
    let endpoint = Endpoint::from_shared(url).map_err(|e| bad(e.to_string()))?;
    match tls {
        None => Ok(endpoint),
        Some(tls) => endpoint.tls_config(tls.tonic()).map_err(|e| bad(e.to_string())),
    }
}

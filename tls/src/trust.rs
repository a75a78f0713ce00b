//! The CA certificates a party trusts: the cluster CA.

use crate::TlsError;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

/// The trusted CA certificates, as PEM and as a root store.
#[derive(Clone)]
pub struct Trust {
    pem: String,
    roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("roots", &self.roots.len()).finish()
    }
}

impl Trust {
    pub fn from_pem(pem: &str) -> Result<Trust, TlsError> {
        Trust::parse(pem, Path::new("<CA certificate>"))
    }

    /// The CA certificate(s) in the PEM file at `path`.
    pub fn load(path: &Path) -> Result<Trust, TlsError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|source| TlsError::Io { path: path.into(), source })?;
        Trust::parse(&pem, path)
    }

    fn parse(pem: &str, path: &Path) -> Result<Trust, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in crate::pem::certificates(pem, path)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Pem { path: path.into(), reason: e.to_string() })?;
        }
        Ok(Trust { pem: pem.to_string(), roots: Arc::new(roots) })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub(crate) fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// A verifier of client certificates against these roots; clients that
    /// present none are let through (they may carry a token instead).
    pub(crate) fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        WebPkiClientVerifier::builder_with_provider(self.roots(), crate::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))
    }

    /// Whether the certificate in `cert_pem` was issued by these roots.
    pub fn verify_client(&self, cert_pem: &str) -> Result<(), TlsError> {
        let certs = crate::pem::certificates(cert_pem, Path::new("<certificate>"))?;
        let (end, intermediates) =
            certs.split_first().expect("certificates() returns at least one");
        self.client_verifier()?
            .verify_client_cert(end, intermediates, rustls_pki_types::UnixTime::now())
            .map(|_| ())
            .map_err(|e| TlsError::Config(e.to_string()))
    }
}

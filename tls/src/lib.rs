//! berth-tls: the cluster's certificate authority and mutual TLS.
//!
//! A cluster gets its own CA when it is created ([`ClusterCa`]); the CA
//! issues every certificate the cluster uses: each API server peer's (CN
//! `system:peer:<id>`, also its server certificate), each component's and
//! node's, and users'. Servers accept connections through an [`Acceptor`]
//! that verifies client certificates against the CA and hands each
//! request the connection's [`ConnectionInfo`]; clients dial through
//! [`endpoint`] with a [`ClientTls`]. Plain TCP is only for setups that ask
//! for it explicitly.

mod ca;
mod client;
mod identity;
mod pem;
mod server;
mod trust;

pub use ca::{ClusterCa, Credential, Subject, CA_CERT_FILE, CA_KEY_FILE, DEFAULT_VALIDITY};
pub use client::{endpoint, ClientTls};
pub use identity::{ConnectionInfo, Identity, PEERS_GROUP, PEER_PREFIX};
pub use server::{Acceptor, Connection, Protocol, ServerTls};
pub use trust::Trust;

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a usable PEM certificate or key: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("cannot make a key or certificate: {0}")]
    Generate(String),
    #[error("cannot issue a certificate for this subject: {0}")]
    BadSubject(String),
    #[error("TLS setup refused: {0}")]
    Config(String),
    #[error("address {address:?}: {reason}")]
    Address { address: String, reason: String },
}

impl TlsError {
    fn generate(e: rcgen::Error) -> TlsError {
        TlsError::Generate(e.to_string())
    }
}

/// Every TLS config uses ring, whatever else is linked into the process.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The subject of an API server peer's certificate: its id in the CN,
/// valid as a server for `hosts` (the addresses it is reached at).
pub fn peer_subject(id: u64, hosts: Vec<String>) -> Subject {
    Subject {
        common_name: format!("{PEER_PREFIX}{id}"),
        organizations: vec![PEERS_GROUP.into()],
        hosts,
        server: true,
        validity: None,
    }
}

/// Whether `address` (`host:port` or a bare host) is a loopback address,
/// where plain TCP may be allowed.
pub fn is_loopback(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;

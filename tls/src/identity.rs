//! Who is on the other end of a connection, as its certificate says.

use std::net::SocketAddr;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject of a verified client certificate, read the way Kubernetes
/// reads it: CN is the user, each O a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub common_name: String,
    pub organizations: Vec<String>,
}

impl Identity {
    /// The subject of a DER certificate; None when it does not parse or
    /// names no CN.
    pub fn from_der(der: &[u8]) -> Option<Identity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let common_name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
        let organizations = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        Some(Identity { common_name, organizations })
    }

    /// The peer id of a peer certificate (`CN=system:peer:<id>`).
    pub fn peer_id(&self) -> Option<u64> {
        self.common_name.strip_prefix(PEER_PREFIX)?.parse().ok()
    }
}

/// CN prefix and group of an API server peer's certificate.
pub const PEER_PREFIX: &str = "system:peer:";
pub const PEERS_GROUP: &str = "system:peers";

/// What a server knows about one accepted connection; every request on it
/// carries this in its extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub remote: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client's certificate subject, verified against the cluster CA;
    /// None when the client presented none (or the connection is plain).
    pub client: Option<Identity>,
}

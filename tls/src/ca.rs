//! The cluster's certificate authority: made once when a cluster is
//! created, it signs the certificates of peers, components, nodes and users.

use crate::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::Path;
use std::time::Duration;

/// How long the cluster CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a certificate the CA issues is valid, unless asked otherwise.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start being valid a little before they are made, so a
/// clock slightly behind the issuer's accepts them.
const BACKDATE: Duration = Duration::from_secs(300);

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl Credential {
    /// Reads a certificate file and its key file.
    pub fn load(cert: &Path, key: &Path) -> Result<Credential, TlsError> {
        let credential = Credential { cert_pem: read(cert)?, key_pem: read(key)? };
        // Parse both now, so a wrong file is named at start and not at the
        // first connection.
        crate::pem::certificates(&credential.cert_pem, cert)?;
        crate::pem::private_key(&credential.key_pem, key)?;
        Ok(credential)
    }

    /// The subject of the certificate (its first, the leaf).
    pub fn identity(&self) -> Option<crate::Identity> {
        let certs = crate::pem::certificates(&self.cert_pem, Path::new("<certificate>")).ok()?;
        crate::Identity::from_der(certs.first()?)
    }

    /// Writes the certificate to `cert` and the key, readable by its owner
    /// only, to `key`.
    pub fn save(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        write(cert, &self.cert_pem, 0o644)?;
        write(key, &self.key_pem, 0o600)
    }
}

/// Who a certificate names and what it may be used for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The user (Kubernetes reads CN as the user name).
    pub common_name: String,
    /// The groups (Kubernetes reads each O as a group).
    pub organizations: Vec<String>,
    /// Host names and IP addresses a server certificate answers for.
    pub hosts: Vec<String>,
    /// Also valid as a server certificate (peers, node agents); every
    /// certificate is valid as a client certificate.
    pub server: bool,
    /// How long it is valid; None: [`DEFAULT_VALIDITY`].
    pub validity: Option<Duration>,
}

/// The cluster CA: its certificate and the key that signs with it.
pub struct ClusterCa {
    credential: Credential,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

/// The file names of a CA in a directory, as Kubernetes' PKI folder has them.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

impl ClusterCa {
    /// A new CA for the cluster `cluster`.
    pub fn create(cluster: &str) -> Result<ClusterCa, TlsError> {
        let key = KeyPair::generate().map_err(TlsError::generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("berth-ca-{cluster}"));
        params.distinguished_name.push(DnType::OrganizationName, "berth");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(TlsError::generate)?;
        Ok(ClusterCa {
            credential: Credential { cert_pem: cert.pem(), key_pem: key.serialize_pem() },
            key,
        })
    }

    /// The CA whose certificate and key are `ca.crt` and `ca.key` in `dir`.
    pub fn load(dir: &Path) -> Result<ClusterCa, TlsError> {
        let credential = Credential::load(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))?;
        let key = KeyPair::from_pem(&credential.key_pem)
            .map_err(|e| TlsError::Pem { path: dir.join(CA_KEY_FILE), reason: e.to_string() })?;
        // A key that is not the certificate's would sign certificates no
        // one accepts: refuse it now.
        let ca = ClusterCa { credential, key };
        let probe = ca.issue(&Subject { common_name: "probe".into(), ..Default::default() })?;
        crate::Trust::from_pem(&ca.credential.cert_pem)?.verify_client(&probe.cert_pem).map_err(
            |_| TlsError::Pem {
                path: dir.join(CA_KEY_FILE),
                reason: "the key does not belong to ca.crt".into(),
            },
        )?;
        Ok(ca)
    }

    /// Loads the CA in `dir`, or creates it there if `dir` has none.
    pub fn load_or_create(dir: &Path, cluster: &str) -> Result<ClusterCa, TlsError> {
        if dir.join(CA_CERT_FILE).exists() {
            return ClusterCa::load(dir);
        }
        let ca = ClusterCa::create(cluster)?;
        ca.save(dir)?;
        Ok(ca)
    }

    /// Writes `ca.crt` and `ca.key` (owner-only) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| TlsError::Io { path: dir.to_path_buf(), source })?;
        self.credential.save(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))
    }

    /// The CA certificate, PEM: what every party trusts.
    pub fn cert_pem(&self) -> &str {
        &self.credential.cert_pem
    }

    /// A new key and a certificate for `subject`, signed by this CA.
    pub fn issue(&self, subject: &Subject) -> Result<Credential, TlsError> {
        let key = KeyPair::generate().map_err(TlsError::generate)?;
        let mut params = CertificateParams::new(subject.hosts.clone())
            .map_err(|e| TlsError::BadSubject(e.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, subject.common_name.as_str());
        for group in &subject.organizations {
            params.distinguished_name.push(DnType::OrganizationName, group.as_str());
        }
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if subject.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, subject.validity.unwrap_or(DEFAULT_VALIDITY));
        let issuer = Issuer::from_ca_cert_pem(&self.credential.cert_pem, &self.key)
            .map_err(TlsError::generate)?;
        let cert = params.signed_by(&key, &issuer).map_err(TlsError::generate)?;
        Ok(Credential { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.into(), source })
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io { path: path.into(), source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // Written beside and renamed, so a reader never sees half a key.
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

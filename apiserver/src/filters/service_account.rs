//! Service-account tokens: JWTs the cluster signs with its service-account
//! key (`--service-account-key-file`, a PEM private key: ECDSA P-256 signs
//! ES256, RSA signs RS256), carrying the claims Kubernetes puts in a bound
//! token. The key verifies what it signed; a token of this issuer that is
//! expired, not yet valid, for another audience or wrongly signed is
//! Unauthorized.

use super::authn::Authenticator;
use super::token::{authenticated, bearer_token};
use super::UserInfo;
use crate::error::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The issuer (and audience) of the tokens, as Kubernetes names its own.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How long a minted token is valid unless told otherwise (Kubernetes'
/// default for a TokenRequest).
pub const DEFAULT_TOKEN_DURATION: Duration = Duration::from_secs(3600);

/// The group of every service account.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountKeyError {
    #[error("cannot read the service-account key file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "the service-account key is not a PEM PKCS#8 ECDSA P-256 or RSA private key ({0}); \
         convert an \"EC PRIVATE KEY\" with `openssl pkcs8 -topk8 -nocrypt`"
    )]
    Key(String),
    #[error("cannot write the service-account key file {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("cannot sign a token: {0}")]
    Sign(String),
    #[error("invalid service account {0:?}")]
    Name(String),
}

/// The `kubernetes.io` claim.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct KubernetesClaim {
    namespace: String,
    serviceaccount: ServiceAccountRef,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct ServiceAccountRef {
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    uid: String,
}

/// A token's claims, as Kubernetes issues them.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaim,
}

/// The cluster's service-account key: signs tokens and verifies them.
pub struct ServiceAccountKey {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey").field("algorithm", &self.algorithm).finish()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl ServiceAccountKey {
    /// Reads the PEM private key at `path`.
    pub fn load(path: &Path) -> Result<ServiceAccountKey, ServiceAccountKeyError> {
        let pem = std::fs::read(path).map_err(|error| ServiceAccountKeyError::Read {
            path: path.display().to_string(),
            error,
        })?;
        ServiceAccountKey::from_pem(&pem)
    }

    /// A key from PEM text: PKCS#8 ECDSA P-256 (ES256), or RSA in PKCS#8
    /// or PKCS#1 (RS256). Checked by signing and verifying a token.
    pub fn from_pem(pem: &[u8]) -> Result<ServiceAccountKey, ServiceAccountKeyError> {
        let (algorithm, encoding) = match EncodingKey::from_ec_pem(pem) {
            Ok(key) => (Algorithm::ES256, key),
            Err(ec) => match EncodingKey::from_rsa_pem(pem) {
                Ok(key) => (Algorithm::RS256, key),
                Err(rsa) => {
                    return Err(ServiceAccountKeyError::Key(format!("EC: {ec}; RSA: {rsa}")))
                }
            },
        };
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(|e| ServiceAccountKeyError::Key(e.to_string()))?;
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| ServiceAccountKeyError::Key(e.to_string()))?;
        let key = ServiceAccountKey { algorithm, encoding, decoding };
        let probe = key
            .mint("default", "default", Duration::from_secs(60))
            .map_err(|e| ServiceAccountKeyError::Key(e.to_string()))?;
        key.verify(&probe).map_err(|e| ServiceAccountKeyError::Key(e.to_string()))?;
        Ok(key)
    }

    /// A new ECDSA P-256 private key as PEM (PKCS#8), for a cluster's
    /// service-account key file.
    pub fn generate_pem() -> Result<String, ServiceAccountKeyError> {
        use base64::Engine;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .map_err(|e| ServiceAccountKeyError::Key(e.to_string()))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// Writes a new key to `path` (mode 0600) unless a file is there;
    /// then loads it.
    pub fn create_or_load(path: &Path) -> Result<ServiceAccountKey, ServiceAccountKeyError> {
        if !path.exists() {
            let pem = ServiceAccountKey::generate_pem()?;
            let write_error =
                |error| ServiceAccountKeyError::Write { path: path.display().to_string(), error };
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(write_error)?;
            std::io::Write::write_all(&mut file, pem.as_bytes()).map_err(write_error)?;
        }
        ServiceAccountKey::load(path)
    }

    /// The algorithm this key signs with: ES256 or RS256.
    pub fn algorithm(&self) -> &'static str {
        match self.algorithm {
            Algorithm::RS256 => "RS256",
            _ => "ES256",
        }
    }

    /// A token for service account `namespace/name`, valid from now for
    /// `valid_for`.
    pub fn mint(
        &self,
        namespace: &str,
        name: &str,
        valid_for: Duration,
    ) -> Result<String, ServiceAccountKeyError> {
        for part in [namespace, name] {
            if part.is_empty() || part.contains(':') || part.contains('/') {
                return Err(ServiceAccountKeyError::Name(format!("{namespace}/{name}")));
            }
        }
        let issued = now();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: service_account_user(namespace, name),
            aud: vec![ISSUER.into()],
            exp: issued.saturating_add(valid_for.as_secs().max(1)),
            iat: issued,
            nbf: issued,
            jti: token_id(),
            kubernetes: KubernetesClaim {
                namespace: namespace.into(),
                serviceaccount: ServiceAccountRef { name: name.into(), uid: String::new() },
            },
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &Claims) -> Result<String, ServiceAccountKeyError> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.encoding)
            .map_err(|e| ServiceAccountKeyError::Sign(e.to_string()))
    }

    /// The service account a token of this key names, if its signature,
    /// issuer, audience and times check.
    fn verify(&self, token: &str) -> Result<UserInfo, String> {
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| e.to_string())?
            .claims;
        let namespace = &claims.kubernetes.namespace;
        let name = &claims.kubernetes.serviceaccount.name;
        if claims.sub != service_account_user(namespace, name) {
            return Err("the subject does not match the kubernetes.io claim".into());
        }
        Ok(UserInfo {
            name: claims.sub,
            groups: authenticated(vec![
                SERVICE_ACCOUNTS_GROUP.into(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
            ]),
        })
    }
}

/// A random token id (jti).
fn token_id() -> String {
    let mut bytes = [0u8; 16];
    // Without randomness the id is still unique enough with the time in it;
    // it is not a secret.
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&now().to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Authenticates service-account tokens of the cluster's issuer. A bearer
/// token that is not a JWT, or is another issuer's, is left to the next
/// authenticator.
pub struct ServiceAccounts {
    key: ServiceAccountKey,
}

impl ServiceAccounts {
    pub fn new(key: ServiceAccountKey) -> ServiceAccounts {
        ServiceAccounts { key }
    }
}

/// Only what decides whether a JWT is this authenticator's to judge; read
/// before the signature is checked, and trusted for nothing else.
#[derive(Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: Option<serde_json::Value>,
}

impl Authenticator for ServiceAccounts {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<Option<UserInfo>, ApiError> {
        let Some(token) = bearer_token(request) else { return Ok(None) };
        if jsonwebtoken::decode_header(token).is_err() {
            return Ok(None);
        }
        let ours = jsonwebtoken::dangerous::insecure_decode::<IssuerOnly>(token)
            .map(|t| t.claims.iss.as_ref().and_then(|i| i.as_str()) == Some(ISSUER))
            .unwrap_or(false);
        if !ours {
            return Ok(None);
        }
        match self.key.verify(token) {
            Ok(user) => Ok(Some(user)),
            Err(reason) => {
                Err(ApiError::Unauthorized(format!("invalid service-account token: {reason}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    fn key() -> ServiceAccountKey {
        ServiceAccountKey::from_pem(ServiceAccountKey::generate_pem().unwrap().as_bytes()).unwrap()
    }

    fn claims(key_namespace: &str, exp: u64, nbf: u64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: service_account_user(key_namespace, "builder"),
            aud: vec![ISSUER.into()],
            exp,
            iat: nbf,
            nbf,
            jti: token_id(),
            kubernetes: KubernetesClaim {
                namespace: key_namespace.into(),
                serviceaccount: ServiceAccountRef { name: "builder".into(), uid: String::new() },
            },
        }
    }

    #[test]
    fn a_minted_token_is_its_service_account() {
        let key = key();
        assert_eq!(key.algorithm(), "ES256");
        let token = key.mint("ci", "builder", Duration::from_secs(600)).unwrap();
        let accounts = ServiceAccounts::new(key);
        let user = accounts.authenticate(&bearer(&token)).unwrap().unwrap();
        assert_eq!(user.name, "system:serviceaccount:ci:builder");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]
        );
    }

    #[test]
    fn the_claims_are_kubernetes_ones() {
        let key = key();
        let token = key.mint("ci", "builder", Duration::from_secs(600)).unwrap();
        let claims: serde_json::Value =
            jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token).unwrap().claims;
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["sub"], "system:serviceaccount:ci:builder");
        assert_eq!(claims["aud"][0], ISSUER);
        assert_eq!(claims["kubernetes.io"]["namespace"], "ci");
        assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "builder");
        let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
        assert_eq!(exp - iat, 600);
        assert_eq!(claims["nbf"], claims["iat"]);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
    }

    #[test]
    fn expired_or_not_yet_valid_tokens_are_unauthorized() {
        let key = key();
        let past = now() - 7200;
        let expired = key.sign(&claims("ci", past + 60, past)).unwrap();
        let future = now() + 7200;
        let early = key.sign(&claims("ci", future + 600, future)).unwrap();
        let accounts = ServiceAccounts::new(key);
        for token in [expired, early] {
            let err = accounts.authenticate(&bearer(&token)).unwrap_err();
            assert!(matches!(err, ApiError::Unauthorized(_)), "{err:?}");
        }
    }

    #[test]
    fn a_token_signed_by_another_key_is_unauthorized() {
        let other = key().mint("ci", "builder", Duration::from_secs(600)).unwrap();
        let accounts = ServiceAccounts::new(key());
        let err = accounts.authenticate(&bearer(&other)).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)), "{err:?}");
        // A token whose claims were changed after signing.
        let key = key();
        let token = key.mint("ci", "builder", Duration::from_secs(600)).unwrap();
        let accounts = ServiceAccounts::new(key);
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = {
            use base64::Engine;
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut claims: serde_json::Value =
                serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
            claims["sub"] = "system:serviceaccount:kube-system:admin".into();
            claims["kubernetes.io"]["namespace"] = "kube-system".into();
            claims["kubernetes.io"]["serviceaccount"]["name"] = "admin".into();
            engine.encode(serde_json::to_vec(&claims).unwrap())
        };
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert!(matches!(accounts.authenticate(&bearer(&forged)), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn a_wrong_audience_or_mismatched_subject_is_unauthorized() {
        let key = key();
        let mut wrong_audience = claims("ci", now() + 600, now());
        wrong_audience.aud = vec!["https://elsewhere".into()];
        let mut mismatched = claims("ci", now() + 600, now());
        mismatched.sub = service_account_user("kube-system", "builder");
        let tokens = [key.sign(&wrong_audience).unwrap(), key.sign(&mismatched).unwrap()];
        let accounts = ServiceAccounts::new(key);
        for token in tokens {
            let err = accounts.authenticate(&bearer(&token)).unwrap_err();
            assert!(matches!(err, ApiError::Unauthorized(_)), "{err:?}");
        }
    }

    #[test]
    fn other_tokens_are_left_to_the_next_authenticator() {
        let key = key();
        let mut foreign = claims("ci", now() + 600, now());
        foreign.iss = "https://issuer.example".into();
        let foreign = key.sign(&foreign).unwrap();
        let accounts = ServiceAccounts::new(key);
        assert_eq!(accounts.authenticate(&bearer("plain-static-token")).unwrap(), None);
        assert_eq!(accounts.authenticate(&bearer(&foreign)).unwrap(), None);
        assert_eq!(accounts.authenticate(&tonic::Request::new(())).unwrap(), None);
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        let err = ServiceAccountKey::from_pem(b"not a key").unwrap_err();
        assert!(err.to_string().contains("PKCS#8"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let missing = ServiceAccountKey::load(&dir.path().join("missing.pem")).unwrap_err();
        assert!(matches!(missing, ServiceAccountKeyError::Read { .. }), "{missing}");
    }

    #[test]
    fn create_or_load_keeps_an_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        let first = ServiceAccountKey::create_or_load(&path).unwrap();
        let token = first.mint("ci", "builder", Duration::from_secs(60)).unwrap();
        let again = ServiceAccounts::new(ServiceAccountKey::create_or_load(&path).unwrap());
        assert!(again.authenticate(&bearer(&token)).unwrap().is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}

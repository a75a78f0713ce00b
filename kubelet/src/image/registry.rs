//! The OCI distribution API, read side: manifests by tag or digest and blobs
//! by digest, over HTTP or HTTPS, anonymous or with credentials (HTTP basic or
//! bearer tokens from the registry's token service), following redirects to
//! blob storage.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use http::{StatusCode, Uri};

use super::auth::{self, Credentials};
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::manifest::{ACCEPTED_MANIFESTS, MAX_MANIFEST_BYTES};
use super::reference::Reference;
use super::transport::{Response, Transport};

/// How this node reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registries (`host[:port]` as in references) spoken to over plain HTTP;
    /// every other registry is HTTPS.
    pub plain_http: Vec<String>,
    /// PEM files of CA certificates trusted for HTTPS besides the host's own.
    pub ca_files: Vec<PathBuf>,
    /// Credentials by registry (`host[:port]` as in references).
    pub credentials: BTreeMap<String, Credentials>,
    pub connect_timeout: Duration,
    /// How long a registry may stay silent mid-response before the pull fails.
    pub read_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            plain_http: Vec::new(),
            ca_files: Vec::new(),
            credentials: BTreeMap::new(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Redirects a registry may send (blob storage, CDNs) before we give up.
const MAX_REDIRECTS: usize = 5;

/// A manifest or index as a registry served it.
pub(crate) struct FetchedManifest {
    pub media_type: Option<String>,
    pub bytes: Vec<u8>,
    /// The registry's `Docker-Content-Digest`, checked when present.
    pub digest: Option<Digest>,
}

pub(crate) struct RegistryClient {
    config: RegistryConfig,
    transport: Transport,
    /// Bearer tokens by (registry, repository); refetched when refused.
    tokens: Mutex<HashMap<(String, String), HeaderValue>>,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Arc<Self>> {
        let transport =
            Transport::new(&config.ca_files, config.connect_timeout, config.read_timeout)?;
        Ok(Arc::new(Self { config, transport, tokens: Mutex::new(HashMap::new()) }))
    }

    fn base(&self, r: &Reference) -> String {
        let scheme =
            if self.config.plain_http.iter().any(|h| h == r.registry()) { "http" } else { "https" };
        format!("{scheme}://{}", r.api_host())
    }

    pub async fn manifest(&self, r: &Reference, key: &str) -> Result<FetchedManifest> {
        let url = format!("{}/v2/{}/manifests/{key}", self.base(r), r.repository());
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_str(&ACCEPTED_MANIFESTS.join(", "))
                .expect("media types are valid header text"),
        );
        let resp = self.get(r, &url, headers).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound(format!("{}:{key}", r.name())));
        }
        let resp = check_ok(r, resp).await?;
        let media_type = resp
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let digest = resp
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = resp.bytes(MAX_MANIFEST_BYTES).await?;
        Ok(FetchedManifest { media_type, bytes, digest })
    }

    /// Starts a blob download; the caller streams and verifies the body.
    pub async fn blob(&self, r: &Reference, digest: &Digest) -> Result<Response> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base(r), r.repository());
        let resp = self.get(r, &url, HeaderMap::new()).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound(format!("{}@{digest} (blob)", r.name())));
        }
        check_ok(r, resp).await
    }

    /// GET with authentication and redirects: on 401 the challenge is answered
    /// once; credentials never follow a redirect to another host.
    async fn get(&self, r: &Reference, url: &str, headers: HeaderMap) -> Result<Response> {
        let key = (r.registry().to_string(), r.repository().to_string());
        let mut authorized = false;
        loop {
            let mut h = headers.clone();
            let token =
                self.tokens.lock().expect("token cache lock is never poisoned").get(&key).cloned();
            if let Some(t) = token {
                h.insert(AUTHORIZATION, t);
            }
            let resp = self.follow(r, url, h).await?;
            if resp.status != StatusCode::UNAUTHORIZED || authorized {
                if resp.status == StatusCode::UNAUTHORIZED {
                    return Err(ImageError::Unauthorized {
                        registry: r.registry().to_string(),
                        reason: "credentials refused".into(),
                    });
                }
                return Ok(resp);
            }
            authorized = true;
            let challenge = resp
                .headers
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(auth::parse_challenges)
                .collect::<Vec<_>>();
            drop(resp);
            let header = self.answer(r, &challenge).await?;
            self.tokens
                .lock()
                .expect("token cache lock is never poisoned")
                .insert(key.clone(), header);
        }
    }

    /// The Authorization header that answers a registry's challenges.
    async fn answer(&self, r: &Reference, challenges: &[auth::Challenge]) -> Result<HeaderValue> {
        let creds = self.config.credentials.get(r.registry());
        let unauthorized = |reason: &str| ImageError::Unauthorized {
            registry: r.registry().to_string(),
            reason: reason.to_string(),
        };
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let scope = format!("repository:{}:pull", r.repository());
            let url = auth::token_url(bearer, &scope)
                .ok_or_else(|| unauthorized("bearer challenge without a usable http(s) realm"))?;
            let mut h = HeaderMap::new();
            if let Some(basic) = creds.and_then(Credentials::basic_header) {
                h.insert(AUTHORIZATION, basic);
            }
            tracing::debug!(registry = r.registry(), realm = %url, "fetching registry token");
            let resp = self.transport.get(&url, &h).await?;
            if resp.status == StatusCode::UNAUTHORIZED || resp.status == StatusCode::FORBIDDEN {
                return Err(unauthorized(&format!("token service answered {}", resp.status)));
            }
            if !resp.status.is_success() {
                return Err(ImageError::registry(
                    r.registry(),
                    format!("token service {url} answered {}", resp.status),
                ));
            }
            let body = resp.bytes(1 << 20).await?;
            let token = auth::parse_token(&body)
                .ok_or_else(|| unauthorized("token service sent no token"))?;
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| unauthorized("token is not valid header text"))?;
            v.set_sensitive(true);
            return Ok(v);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return creds
                .and_then(Credentials::basic_header)
                .ok_or_else(|| unauthorized("basic auth required and no credentials configured"));
        }
        Err(unauthorized("401 without a bearer or basic challenge"))
    }

    async fn follow(&self, r: &Reference, url: &str, mut headers: HeaderMap) -> Result<Response> {
        let mut uri: Uri = url
            .parse()
            .map_err(|e| ImageError::registry(r.registry(), format!("URL {url}: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.transport.get(&uri, &headers).await?;
            if !resp.status.is_redirection() {
                return Ok(resp);
            }
            let location =
                resp.headers.get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                    ImageError::registry(
                        r.registry(),
                        format!("{} without a Location", resp.status),
                    )
                })?;
            let next = resolve(&uri, location).ok_or_else(|| {
                ImageError::registry(r.registry(), format!("bad redirect {location:?}"))
            })?;
            if next.authority() != uri.authority() || next.scheme() != uri.scheme() {
                // Signed storage URLs carry their own authorization.
                headers.remove(AUTHORIZATION);
            }
            tracing::debug!(from = %uri, to = %next, "registry redirect");
            uri = next;
        }
        Err(ImageError::registry(r.registry(), format!("more than {MAX_REDIRECTS} redirects")))
    }
}

/// A Location header against the URL that sent it (absolute or path-only).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    if !location.starts_with('/') {
        return None;
    }
    Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(location)
        .build()
        .ok()
}

/// Passes 2xx responses; turns others into an error carrying the registry's
/// own error text.
async fn check_ok(r: &Reference, resp: Response) -> Result<Response> {
    if resp.status.is_success() {
        return Ok(resp);
    }
    let status = resp.status;
    let body = resp.bytes(64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let text: String = text.chars().take(300).collect();
    Err(ImageError::registry(r.registry(), format!("{status}: {}", text.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_sender() {
        let base: Uri = "http://127.0.0.1:5000/v2/a/blobs/x".parse().unwrap();
        assert_eq!(
            resolve(&base, "/storage/y?sig=1").unwrap().to_string(),
            "http://127.0.0.1:5000/storage/y?sig=1"
        );
        assert_eq!(
            resolve(&base, "https://cdn.example/z").unwrap().to_string(),
            "https://cdn.example/z"
        );
        assert!(resolve(&base, "relative/path").is_none());
    }
}

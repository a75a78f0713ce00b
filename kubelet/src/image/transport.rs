//! HTTP/1.1 GETs over TCP or TLS (rustls, the host's CA roots plus any the
//! configuration adds), one connection per request: a pull makes few requests
//! and most of its time goes to a few large blobs, so pooling would buy little.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::error::{ImageError, Result};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Transport {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    read_timeout: Duration,
}

/// A response whose body is still on the wire. It owns the task that drives
/// its connection; dropping the response stops that task.
pub(crate) struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    conn: JoinHandle<()>,
    read_timeout: Duration,
    authority: String,
}

impl Drop for Response {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Response {
    /// The next piece of the body, `None` at its end. A peer silent for the
    /// read timeout is an error, so a stalled registry cannot hang a pull.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let frame =
                tokio::time::timeout(self.read_timeout, self.body.frame()).await.map_err(|_| {
                    ImageError::registry(
                        &self.authority,
                        format!("no data for {:?} while reading a response", self.read_timeout),
                    )
                })?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ImageError::registry(
                        &self.authority,
                        format!("reading response: {e}"),
                    ))
                }
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    /// The whole body, refusing more than `limit` bytes.
    pub async fn bytes(mut self, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            if out.len() as u64 + c.len() as u64 > limit {
                return Err(ImageError::registry(
                    &self.authority,
                    format!("response larger than {limit} bytes"),
                ));
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

impl Transport {
    /// A transport trusting the host's CA roots and the certificates in `ca_files`.
    pub fn new(
        ca_files: &[impl AsRef<Path>],
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "skipping unreadable host CA certificates");
        }
        roots.add_parsable_certificates(native.certs);
        for file in ca_files {
            let file = file.as_ref();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .and_then(|it| it.collect::<std::result::Result<_, _>>())
                .map_err(|e| ImageError::Io {
                    path: file.to_path_buf(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                })?;
            for c in certs {
                roots.add(c).map_err(|e| ImageError::Io {
                    path: file.to_path_buf(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ImageError::registry("tls", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            connect_timeout,
            read_timeout,
        })
    }

    /// Sends a GET for an absolute `http://` or `https://` URI.
    pub async fn get(&self, uri: &Uri, headers: &HeaderMap) -> Result<Response> {
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
        let fail = |reason: String| ImageError::registry(&authority, reason);
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(fail(format!("unsupported URL {uri}"))),
        };
        let host = uri.host().ok_or_else(|| fail(format!("URL {uri} has no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });

        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| fail(format!("connect timed out after {:?}", self.connect_timeout)))?
            .map_err(|e| fail(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if https {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| fail(format!("TLS server name {host:?}: {e}")))?;
            let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| fail("TLS handshake timed out".into()))?
                .map_err(|e| fail(format!("TLS: {e}")))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };

        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(format!("HTTP handshake: {e}")))?;
        // Owned by the Response (aborted on its drop): it only pumps this one
        // connection while the body is read.
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "registry connection ended");
            }
        });
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::get(path)
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(format!("request for {uri}: {e}")))?;
        *req.headers_mut() = headers.clone();
        req.headers_mut().insert(
            HOST,
            HeaderValue::from_str(&authority).map_err(|e| fail(format!("host header: {e}")))?,
        );
        req.headers_mut().insert(USER_AGENT, HeaderValue::from_static("berth-kubelet"));
        let sent = tokio::time::timeout(self.read_timeout, sender.send_request(req)).await;
        let resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                conn.abort();
                return Err(fail(format!("GET {uri}: {e}")));
            }
            Err(_) => {
                conn.abort();
                return Err(fail(format!("GET {uri}: no response within {:?}", self.read_timeout)));
            }
        };
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            conn,
            read_timeout: self.read_timeout,
            authority,
        })
    }
}

//! Accepting connections: TLS (with optional client certificates) or, in
//! an explicitly insecure setup, plain TCP; either way each connection
//! knows its [`ConnectionInfo`], which tonic and axum hand to requests.

use crate::{ConnectionInfo, Credential, Identity, TlsError, Trust};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rustls::ServerConfig;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol a listener speaks over TLS, for ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The REST and health endpoints: HTTP/1.1.
    Http1,
}

/// A server's TLS setup: its certificate, and the CA its clients'
/// certificates must come from.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("alpn", &self.config.alpn_protocols).finish()
    }
}

impl ServerTls {
    pub fn new(
        credential: &Credential,
        trust: &Trust,
        protocol: Protocol,
    ) -> Result<ServerTls, TlsError> {
        let source = std::path::Path::new("<server certificate>");
        let chain = crate::pem::certificates(&credential.cert_pem, source)?;
        let key = crate::pem::private_key(&credential.key_pem, source)?;
        let mut config = ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(trust.client_verifier()?)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = match protocol {
            Protocol::Grpc => vec![b"h2".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
        };
        Ok(ServerTls { config: Arc::new(config) })
    }
}

/// An accepted connection, TLS or plain.
pub struct Connection {
    stream: Stream,
    info: ConnectionInfo,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connection {
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }
}

/// Accepts connections on a listener, doing TLS handshakes concurrently so
/// a slow client cannot hold up the others.
pub struct Acceptor {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handshakes: FuturesUnordered<Pin<Box<dyn Future<Output = Option<Connection>> + Send>>>,
}

impl Acceptor {
    /// `tls` None: plain TCP, for a setup that asked for it (`--insecure`).
    pub fn new(listener: TcpListener, tls: Option<ServerTls>) -> Acceptor {
        Acceptor {
            listener,
            tls: tls.map(|t| TlsAcceptor::from(t.config)),
            handshakes: FuturesUnordered::new(),
        }
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection that completed its handshake. Connections that
    /// fail theirs are logged and dropped; accept errors (out of file
    /// descriptors) are retried after a pause.
    pub async fn accept(&mut self) -> Connection {
        loop {
            tokio::select! {
                Some(done) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    if let Some(connection) = done {
                        return connection;
                    }
                }
                accepted = self.listener.accept() => {
                    let (tcp, remote) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Small replies must not wait for delayed ACKs.
                    let _ = tcp.set_nodelay(true);
                    let Some(tls) = self.tls.clone() else {
                        let info = ConnectionInfo { remote: Some(remote), tls: false, client: None };
                        return Connection { stream: Stream::Plain(tcp), info };
                    };
                    self.handshakes.push(Box::pin(handshake(tls, tcp, remote)));
                }
            }
        }
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Connection>> + Send {
        futures::stream::unfold(self, |mut acceptor| async move {
            let connection = acceptor.accept().await;
            Some((Ok(connection), acceptor))
        })
    }
}

async fn handshake(
    tls: TlsAcceptor,
    tcp: TcpStream,
    remote: std::net::SocketAddr,
) -> Option<Connection> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    // rustls has verified the chain against the cluster CA by now.
    let client = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| Identity::from_der(cert));
    let info = ConnectionInfo { remote: Some(remote), tls: true, client };
    Some(Connection { stream: Stream::Tls(Box::new(stream)), info })
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

//! The berth config file (~/.berth/config; BERTH_CONFIG or --config name
//! another): named clusters with their API server endpoints, contexts that
//! pick a cluster and a default namespace, and the current context.
//!
//! ```yaml
//! current-context: up
//! clusters:
//! - name: up
//!   endpoints: [127.0.0.1:2379, 127.0.0.1:2380, 127.0.0.1:2381]
//!   certificate-authority: /root/berth-up/pki/ca.crt
//!   credentials:
//!     client-certificate: /root/berth-up/pki/admin.crt
//!     client-key: /root/berth-up/pki/admin.key
//! contexts:
//! - name: up
//!   cluster: up
//!   namespace: default
//! ```
//!
//! A cluster without `certificate-authority` is dialled over plain TCP
//! (a server started with `--insecure`).

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// The environment variable that names the config file.
pub const ENV: &str = "BERTH_CONFIG";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_context: String,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// The API server peers' gRPC addresses (host:port).
    pub endpoints: Vec<String>,
    /// The cluster CA's certificate (PEM file): the peers are dialled over
    /// TLS and must present certificates it issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    /// Who the client is.
    #[serde(default, skip_serializing_if = "Credentials::is_empty")]
    pub credentials: Credentials,
}

/// A client's credentials: a client certificate and its key, or a bearer
/// token (static or service-account), as kubectl's user entries have them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Credentials {
    fn is_empty(&self) -> bool {
        self == &Credentials::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    pub name: String,
    pub cluster: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// The flags every verb that talks to a cluster takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConnectArgs {
    /// The berth config file [default: $BERTH_CONFIG, else ~/.berth/config]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The context of the config file to use [default: its current-context]
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// API server peers, comma-separated host:port (overrides the context's endpoints)
    #[arg(long, global = true, value_delimiter = ',')]
    pub server: Vec<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// How a client proves who it is and knows the servers are the cluster's,
/// as flags (they override the berth config's context).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AuthArgs {
    /// The cluster CA's certificate: connect over TLS and trust only
    /// servers it issued certificates to
    #[arg(long, global = true)]
    pub certificate_authority: Option<PathBuf>,
    /// A client certificate issued by the cluster CA (CN = user, O = groups)
    #[arg(long, global = true, requires = "client_key")]
    pub client_certificate: Option<PathBuf>,
    /// The client certificate's private key
    #[arg(long, global = true, requires = "client_certificate")]
    pub client_key: Option<PathBuf>,
    /// A file holding a bearer token (static or service-account)
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
}

impl AuthArgs {
    /// The flags over what the config file says.
    fn over(&self, ca: Option<PathBuf>, credentials: Credentials) -> Result<Auth> {
        let token = match &self.token_file {
            Some(path) => Some(crate::server::read_cluster_secret(path).with_context(|| {
                format!("the token file {} must hold one token", path.display())
            })?),
            None => credentials.token,
        };
        let (client_certificate, client_key) = match &self.client_certificate {
            Some(cert) => (Some(cert.clone()), self.client_key.clone()),
            None => (credentials.client_certificate, credentials.client_key),
        };
        Ok(Auth {
            certificate_authority: self.certificate_authority.clone().or(ca),
            client_certificate,
            client_key,
            token,
        })
    }

    /// These flags alone (the control-loop subcommands take no config file).
    pub fn auth(&self) -> Result<Auth> {
        self.over(None, Credentials::default())
    }
}

/// A client's resolved TLS trust and credentials.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    pub certificate_authority: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub token: Option<String>,
}

impl Auth {
    /// TLS towards the servers, when a CA is known; None: plain TCP.
    pub fn tls(&self) -> Result<Option<berth_tls::ClientTls>> {
        let Some(ca) = &self.certificate_authority else {
            if self.client_certificate.is_some() {
                bail!(
                    "a client certificate needs the cluster CA to trust (--certificate-authority)"
                );
            }
            return Ok(None);
        };
        let trust = berth_tls::Trust::load(ca)?;
        let credential = match (&self.client_certificate, &self.client_key) {
            (Some(cert), Some(key)) => Some(berth_tls::Credential::load(cert, key)?),
            (None, None) => None,
            _ => bail!("a client certificate and its key go together"),
        };
        Ok(Some(berth_tls::ClientTls::new(trust, credential)))
    }

    /// A client configuration for `endpoints` with these credentials, for
    /// `component` (berth, berth-scheduler, ...: the field manager of its
    /// writes).
    pub fn client_config(
        &self,
        component: &str,
        endpoints: Vec<String>,
    ) -> Result<berth_client::Config> {
        let mut config = berth_client::Config::new(endpoints);
        config.user_agent = Some(format!("{component}/{}", env!("CARGO_PKG_VERSION")));
        config.tls = self.tls()?;
        config.token = self.token.clone();
        // The command line shows the API's warnings as kubectl does; a
        // component logs them.
        let interactive = component == "berth";
        config.on_warning =
            Some(berth_client::WarningHandler(std::sync::Arc::new(move |warning: &str| {
                match interactive {
                    true => eprintln!("Warning: {warning}"),
                    false => tracing::warn!(warning, "the API warns"),
                }
            })));
        Ok(config)
    }

    /// A connected gRPC channel to one peer, for the services the typed
    /// client does not carry (the etcd API, log and exec streams).
    /// `timeout` bounds each call on it; None for streams.
    pub async fn channel(
        &self,
        addr: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<Channel> {
        let mut endpoint = berth_tls::endpoint(addr, self.tls()?.as_ref())
            .with_context(|| format!("address {addr:?}"))?
            .connect_timeout(std::time::Duration::from_secs(2));
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        endpoint.connect().await.with_context(|| format!("connect to {addr}"))
    }

    /// What puts the bearer token (if any) on every call of a raw client.
    pub fn bearer(&self) -> Result<Bearer> {
        let value = match &self.token {
            None => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .context("the token must be printable ASCII on one line")?,
            ),
        };
        Ok(Bearer(value))
    }
}

/// A tonic interceptor adding `authorization: Bearer <token>`.
#[derive(Clone, Debug)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Where to connect: the endpoints and the namespace of the chosen context,
/// and the credentials to connect with.
#[derive(Clone, Debug)]
pub struct Target {
    pub endpoints: Vec<String>,
    pub namespace: String,
    pub auth: Auth,
}

/// The config file's path: the flag, else $BERTH_CONFIG, else ~/.berth/config.
pub fn path(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: name the config file with --config or BERTH_CONFIG")?;
    Ok(PathBuf::from(home).join(".berth").join("config"))
}

impl Config {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            anyhow::anyhow!("{}: {field}: {}", path.display(), e.inner())
        })
    }

    /// Writes the file atomically (through a temporary file in the same
    /// directory), creating its directory.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let text = serde_yaml_ng::to_string(self).context("encode the berth config")?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
        Ok(())
    }

    /// Adds or replaces a cluster and a context of the same name, and makes
    /// it the current context.
    pub fn set_cluster(
        &mut self,
        name: &str,
        endpoints: Vec<String>,
        certificate_authority: Option<PathBuf>,
        credentials: Credentials,
    ) {
        self.clusters.retain(|c| c.name != name);
        self.clusters.push(Cluster {
            name: name.into(),
            endpoints,
            certificate_authority,
            credentials,
        });
        if !self.contexts.iter().any(|c| c.name == name) {
            self.contexts.push(Context {
                name: name.into(),
                cluster: name.into(),
                namespace: String::new(),
            });
        }
        self.current_context = name.into();
    }

    /// The endpoints, namespace and credentials of `context` (or the
    /// current context).
    pub fn resolve(&self, context: Option<&str>) -> Result<Target> {
        let name = match context {
            Some(name) => name,
            None if self.current_context.is_empty() => {
                bail!("no cluster chosen: pass --server HOST:PORT,..., or --context, or set current-context in the berth config (berth up writes one)")
            }
            None => &self.current_context,
        };
        let Some(ctx) = self.contexts.iter().find(|c| c.name == name) else {
            let known: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
            bail!("no context {name:?} in the berth config (contexts: {})", known.join(", "));
        };
        let Some(cluster) = self.clusters.iter().find(|c| c.name == ctx.cluster) else {
            bail!("context {name:?} names cluster {:?}, which the berth config lacks", ctx.cluster);
        };
        if cluster.endpoints.is_empty() {
            bail!("cluster {:?} in the berth config has no endpoints", cluster.name);
        }
        Ok(Target {
            endpoints: cluster.endpoints.clone(),
            namespace: ctx.namespace.clone(),
            auth: Auth {
                certificate_authority: cluster.certificate_authority.clone(),
                client_certificate: cluster.credentials.client_certificate.clone(),
                client_key: cluster.credentials.client_key.clone(),
                token: cluster.credentials.token.clone(),
            },
        })
    }
}

/// Records a cluster in the config file (`flag`, else the default path)
/// under the name of its directory, as the current context; returns the
/// context's name and the file.
pub fn record(
    flag: Option<&Path>,
    dir: &Path,
    endpoints: Vec<String>,
    certificate_authority: Option<PathBuf>,
    credentials: Credentials,
) -> Result<(String, PathBuf)> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "up".into());
    let path = path(flag)?;
    let mut config = Config::load(&path)?;
    config.set_cluster(&name, endpoints, certificate_authority, credentials);
    config.save(&path)?;
    Ok((name, path))
}

impl ConnectArgs {
    /// Where to connect: --server wins; otherwise the context's endpoints.
    pub fn target(&self) -> Result<Target> {
        let servers: Vec<String> =
            self.server.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        let path = path(self.config.as_deref())?;
        let config = Config::load(&path)?;
        if !servers.is_empty() {
            // Explicit servers: the context still lends its namespace and
            // credentials if there is one.
            let context = config.resolve(self.context.as_deref()).ok();
            let (namespace, auth) = context.map(|t| (t.namespace, t.auth)).unwrap_or_default();
            let auth = self.auth.over(
                auth.certificate_authority,
                Credentials {
                    client_certificate: auth.client_certificate,
                    client_key: auth.client_key,
                    token: auth.token,
                },
            )?;
            return Ok(Target { endpoints: servers, namespace, auth });
        }
        let mut target = config
            .resolve(self.context.as_deref())
            .with_context(|| format!("berth config {}", path.display()))?;
        let auth = std::mem::take(&mut target.auth);
        target.auth = self.auth.over(
            auth.certificate_authority,
            Credentials {
                client_certificate: auth.client_certificate,
                client_key: auth.client_key,
                token: auth.token,
            },
        )?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_set_twice_is_replaced_and_becomes_current() {
        let mut config = Config::default();
        config.set_cluster("a", vec!["127.0.0.1:1".into()], None, Credentials::default());
        config.set_cluster("b", vec!["127.0.0.1:2".into()], None, Credentials::default());
        config.set_cluster("a", vec!["127.0.0.1:3".into()], None, Credentials::default());
        assert_eq!(config.clusters.len(), 2);
        assert_eq!(config.contexts.len(), 2);
        assert_eq!(config.current_context, "a");
        assert_eq!(config.resolve(None).unwrap().endpoints, vec!["127.0.0.1:3".to_string()]);
        assert_eq!(config.resolve(Some("b")).unwrap().endpoints, vec!["127.0.0.1:2".to_string()]);
        assert!(config.resolve(Some("c")).is_err());
    }

    #[test]
    fn the_file_round_trips_and_unknown_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        let mut config = Config::default();
        let credentials = Credentials {
            client_certificate: Some("/pki/admin.crt".into()),
            client_key: Some("/pki/admin.key".into()),
            token: None,
        };
        config.set_cluster(
            "x",
            vec!["h:1".into(), "h:2".into()],
            Some("/pki/ca.crt".into()),
            credentials,
        );
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        std::fs::write(&path, "clusters:\n- name: x\n  endpoint: [h:1]\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("clusters[0]") && e.contains("endpoint"), "{e}");
    }
}

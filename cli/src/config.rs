//! The berth config file (~/.berth/config; BERTH_CONFIG or --config name
//! another): named clusters with their API server endpoints, contexts that
//! pick a cluster and a default namespace, and the current context.
//!
//! ```yaml
//! current-context: up
//! clusters:
//! - name: up
//!   endpoints: [127.0.0.1:2379, 127.0.0.1:2380, 127.0.0.1:2381]
//! contexts:
//! - name: up
//!   cluster: up
//!   namespace: default
//! ```

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Client credentials; kept as written and not used by this build,
    /// whose API servers accept unauthenticated clients.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, String>,
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
}

/// Where to connect: the endpoints and the namespace of the chosen context.
#[derive(Clone, Debug)]
pub struct Target {
    pub endpoints: Vec<String>,
    pub namespace: String,
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
    pub fn set_cluster(&mut self, name: &str, endpoints: Vec<String>) {
        let credentials = self
            .clusters
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.credentials.clone())
            .unwrap_or_default();
        self.clusters.retain(|c| c.name != name);
        self.clusters.push(Cluster { name: name.into(), endpoints, credentials });
        if !self.contexts.iter().any(|c| c.name == name) {
            self.contexts.push(Context {
                name: name.into(),
                cluster: name.into(),
                namespace: String::new(),
            });
        }
        self.current_context = name.into();
    }

    /// The endpoints and namespace of `context` (or the current context).
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
        Ok(Target { endpoints: cluster.endpoints.clone(), namespace: ctx.namespace.clone() })
    }
}

/// Records a cluster in the config file (`flag`, else the default path)
/// under the name of its directory, as the current context; returns the
/// context's name and the file.
pub fn record(
    flag: Option<&Path>,
    dir: &Path,
    endpoints: Vec<String>,
) -> Result<(String, PathBuf)> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "up".into());
    let path = path(flag)?;
    let mut config = Config::load(&path)?;
    config.set_cluster(&name, endpoints);
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
            let namespace =
                config.resolve(self.context.as_deref()).map(|t| t.namespace).unwrap_or_default();
            return Ok(Target { endpoints: servers, namespace });
        }
        config
            .resolve(self.context.as_deref())
            .with_context(|| format!("berth config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_set_twice_is_replaced_and_becomes_current() {
        let mut config = Config::default();
        config.set_cluster("a", vec!["127.0.0.1:1".into()]);
        config.set_cluster("b", vec!["127.0.0.1:2".into()]);
        config.set_cluster("a", vec!["127.0.0.1:3".into()]);
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
        config.set_cluster("x", vec!["h:1".into(), "h:2".into()]);
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        std::fs::write(&path, "clusters:\n- name: x\n  endpoint: [h:1]\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("clusters[0]") && e.contains("endpoint"), "{e}");
    }
}

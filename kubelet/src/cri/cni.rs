//! Pod networking through CNI plugins (the CNI 1.0 protocol): each plugin
//! of a network configuration list is run as a program, with the command
//! in its environment and its configuration — with the previous plugin's
//! result — on stdin. ADD when a sandbox starts gives the pod its address;
//! DEL when it stops is tolerant of a half-made network, so teardown always
//! completes.
//!
//! Plugins only ever run against a [`PodNetns`]: a sandbox sharing the
//! host's network namespace has none, and a path that turns out to be the
//! host's namespace is refused before any plugin runs, so no ADD or DEL can
//! touch the host's interfaces.

use super::error::{CriError, Result};
use super::sandbox::ns_path;
use super::state::HostNamespaces;
use serde_json::{json, Value};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The network namespace of a sandbox that has a pod network of its own:
/// what CNI plugins run against.
#[derive(Clone, Debug)]
pub struct PodNetns {
    path: PathBuf,
}

impl PodNetns {
    /// The pod network namespace of the sandbox in `sandbox_dir`; None for
    /// a sandbox in the host's network namespace, which has no pod network.
    pub fn of(sandbox_dir: &Path, host: HostNamespaces) -> Option<PodNetns> {
        (!host.network).then(|| PodNetns { path: ns_path(sandbox_dir, "net") })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a path that is the host's network namespace (the runtime's
    /// own): a plugin must never run there.
    fn check_not_host(&self) -> Result<()> {
        let ours = Path::new("/proc/self/ns/net");
        let (Ok(pod), Ok(host)) = (std::fs::metadata(&self.path), std::fs::metadata(ours)) else {
            // A missing bind mount is the plugin's to report (DEL tolerates it).
            return Ok(());
        };
        if (pod.dev(), pod.ino()) == (host.dev(), host.ino()) {
            return Err(CriError::FailedPrecondition(format!(
                "{} is the host's network namespace; no CNI plugin runs there",
                self.path.display()
            )));
        }
        Ok(())
    }
}

/// A network: a CNI configuration list and where its plugins live.
#[derive(Clone, Debug)]
pub struct CniNetwork {
    /// The conflist: `{"cniVersion", "name", "plugins": [...]}`.
    pub conflist: Value,
    /// Directories searched for plugin programs (`bridge`, `host-local`).
    pub bin_dirs: Vec<PathBuf>,
}

impl CniNetwork {
    /// A bridge network with host-local addresses from `subnet`, the pods'
    /// gateway on `bridge` (what a single node needs).
    pub fn bridge(
        name: &str,
        bridge: &str,
        subnet: &str,
        ipam_dir: &Path,
        bin_dirs: Vec<PathBuf>,
    ) -> CniNetwork {
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            }],
        });
        CniNetwork { conflist, bin_dirs }
    }

    fn plugins(&self) -> Result<Vec<Value>> {
        let list = self.conflist.get("plugins").and_then(Value::as_array).ok_or_else(|| {
            CriError::InvalidArgument("the CNI configuration has no plugins list".into())
        })?;
        Ok(list.clone())
    }

    fn program(&self, kind: &str) -> Result<PathBuf> {
        self.bin_dirs.iter().map(|d| d.join(kind)).find(|p| p.is_file()).ok_or_else(|| {
            CriError::FailedPrecondition(format!(
                "CNI plugin {kind:?} not found in {:?} (Debian: containernetworking-plugins)",
                self.bin_dirs
            ))
        })
    }

    /// Runs one plugin; its stdout is the result (ADD) or empty.
    fn exec(
        &self,
        command: &str,
        plugin: &Value,
        prev: Option<&Value>,
        id: &str,
        netns: &PodNetns,
        ifname: &str,
    ) -> Result<Value> {
        netns.check_not_host()?;
        let kind = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        let mut config = plugin.clone();
        config["name"] = self.conflist["name"].clone();
        config["cniVersion"] = self.conflist["cniVersion"].clone();
        if let Some(prev) = prev {
            config["prevResult"] = prev.clone();
        }
        let paths = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut child = Command::new(self.program(kind)?)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns.path())
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", paths)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(CriError::io(self.program(kind)?))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(config.to_string().as_bytes());
        }
        let out = child.wait_with_output().map_err(CriError::io(PathBuf::from(kind)))?;
        let stdout = plugin_output(&out.stdout);
        if !out.status.success() {
            let message = stdout
                .get("msg")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
            return Err(CriError::FailedPrecondition(format!(
                "CNI {command} by {kind} failed: {message}"
            )));
        }
        Ok(stdout)
    }

    /// Wires the sandbox `id`'s network namespace up; returns the pod's
    /// address (without the prefix length).
    pub fn add(&self, id: &str, netns: &PodNetns) -> Result<Option<String>> {
        let mut result: Option<Value> = None;
        for plugin in self.plugins()? {
            result = Some(self.exec("ADD", &plugin, result.as_ref(), id, netns, "eth0")?);
        }
        Ok(result.as_ref().and_then(pod_address))
    }

    /// Undoes `add`, plugins in reverse; a failure is logged, not returned,
    /// so a half-made network never blocks a teardown.
    pub fn del(&self, id: &str, netns: &PodNetns) {
        let Ok(plugins) = self.plugins() else { return };
        for plugin in plugins.iter().rev() {
            if let Err(e) = self.exec("DEL", plugin, None, id, netns, "eth0") {
                tracing::warn!(sandbox = %id, error = %e, "CNI DEL failed; continuing the teardown");
            }
        }
    }
}

/// A plugin's stdout as JSON: its result, or its error on failure. Output
/// that is not JSON reads as null (no result; on failure stderr explains).
pub(crate) fn plugin_output(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout).unwrap_or(Value::Null)
}

/// The pod's address in a CNI result: its first `ips` entry's address,
/// without the prefix length, and only if it is an IP address.
pub(crate) fn pod_address(result: &Value) -> Option<String> {
    let address = result.get("ips")?.as_array()?.first()?.get("address")?.as_str()?;
    let ip: IpAddr = address.split('/').next()?.parse().ok()?;
    Some(ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_never_run_in_the_hosts_network_namespace() {
        let dir = Path::new("/run/berth/sandboxes/abc");
        let host = HostNamespaces { network: true, ..Default::default() };
        assert!(PodNetns::of(dir, host).is_none());
        let pod = PodNetns::of(dir, HostNamespaces::default()).unwrap();
        assert_eq!(pod.path(), ns_path(dir, "net"));
        // The runtime's own namespace is the host's: refused before a
        // plugin (here one that does not exist) would be looked for.
        let hosts = PodNetns { path: PathBuf::from("/proc/self/ns/net") };
        let net = CniNetwork::bridge("t", "br-t", "10.99.0.0/24", dir, vec![]);
        let err = net.add("abc", &hosts).unwrap_err().to_string();
        assert!(err.contains("host's network namespace"), "{err}");
    }

    #[test]
    fn the_pod_address_is_the_first_ip_without_its_prefix() {
        let result = plugin_output(
            br#"{"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1"}, {"address": "fd00::5/64"}]}"#,
        );
        assert_eq!(pod_address(&result).as_deref(), Some("10.88.0.5"));
        let v6 = plugin_output(br#"{"ips": [{"address": "fd00::5/64"}]}"#);
        assert_eq!(pod_address(&v6).as_deref(), Some("fd00::5"));
        for bad in [
            &br#"{"ips": [{"address": "not an address/24"}]}"#[..],
            br#"{"ips": [{"address": 5}]}"#,
            br#"{"ips": []}"#,
            br#"{"ips": {"address": "10.0.0.1/8"}}"#,
            b"not json",
        ] {
            assert_eq!(pod_address(&plugin_output(bad)), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}

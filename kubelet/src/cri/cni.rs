//! Pod networking through CNI plugins (the CNI 1.0 protocol): each plugin
//! of a network configuration list is run as a program, with the command
//! in its environment and its configuration — with the previous plugin's
//! result — on stdin. ADD when a sandbox starts gives the pod its address;
//! DEL when it stops is tolerant of a half-made network, so teardown always
//! completes.

use super::error::{CriError, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
        netns: &Path,
        ifname: &str,
    ) -> Result<Value> {
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
            .env("CNI_NETNS", netns)
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
        let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
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
    pub fn add(&self, id: &str, netns: &Path) -> Result<Option<String>> {
        let mut result: Option<Value> = None;
        for plugin in self.plugins()? {
            result = Some(self.exec("ADD", &plugin, result.as_ref(), id, netns, "eth0")?);
        }
        let ip = result
            .as_ref()
            .and_then(|r| r.get("ips"))
            .and_then(Value::as_array)
            .and_then(|ips| ips.first())
            .and_then(|ip| ip.get("address"))
            .and_then(Value::as_str)
            .map(|a| a.split('/').next().unwrap_or(a).to_string());
        Ok(ip)
    }

    /// Undoes `add`, plugins in reverse; a failure is logged, not returned,
    /// so a half-made network never blocks a teardown.
    pub fn del(&self, id: &str, netns: &Path) {
        let Ok(plugins) = self.plugins() else { return };
        for plugin in plugins.iter().rev() {
            if let Err(e) = self.exec("DEL", plugin, None, id, netns, "eth0") {
                tracing::warn!(sandbox = %id, error = %e, "CNI DEL failed; continuing the teardown");
            }
        }
    }
}

//! What the runtime service keeps on disk, so that a restarted service finds
//! its sandboxes and containers again instead of losing or duplicating them.
//!
//! ```text
//! <root>/sandboxes/<id>/sandbox.json    SandboxRecord (runtime-owned state)
//! <root>/sandboxes/<id>/config.pb       the PodSandboxConfig as the client sent it
//! <root>/sandboxes/<id>/ns/{net,ipc,uts} bind mounts keeping the pod's namespaces
//! <root>/containers/<id>/container.json ContainerRecord
//! <root>/containers/<id>/config.pb      the ContainerConfig as the client sent it
//! <root>/containers/<id>/bundle/        the OCI bundle (config.json) the executor runs
//! <root>/executor/<id>/                 the executor's own state
//! ```
//!
//! Every file is replaced atomically (write, fsync, rename), so a crash
//! leaves the old or the new version, never a torn one. Client configs are
//! kept in their protobuf form so annotations and labels come back exactly.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::error::{CriError, Result};

/// A sandbox's lifecycle as CRI sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxPhase {
    Ready,
    NotReady,
}

/// What the runtime knows about a sandbox beyond its config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub phase: SandboxPhase,
    /// The holder process keeping the namespaces; 0 once it is stopped.
    pub holder_pid: i32,
    /// The holder's /proc start time, so a reused pid is not taken for it.
    pub holder_start: u64,
    /// The pod's cgroup, relative to the cgroup hierarchy root.
    pub cgroup: PathBuf,
    /// The pod's address from its CNI network, when it has one.
    #[serde(default)]
    pub ip: Option<String>,
    /// The host's namespaces the sandbox shares instead of having its own
    /// (records from before this field had their own of each).
    #[serde(default)]
    pub host: HostNamespaces,
}

/// Which of the host's namespaces a sandbox and its containers share (the
/// CRI's NamespaceMode NODE). A sandbox sharing the host's network
/// namespace has no pod network: no CNI plugin ever runs for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNamespaces {
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub ipc: bool,
    #[serde(default)]
    pub pid: bool,
}

/// A container's lifecycle as CRI sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    /// The image store's id of the image (its config digest).
    pub image_id: String,
    /// A digested reference to the image (`repo@sha256:...`), or its id.
    pub image_ref: String,
    pub phase: ContainerPhase,
    /// Nanoseconds since the epoch; 0 means not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// CamelCase cause of the exit ("Completed", "Error", "OOMKilled").
    pub reason: String,
    pub message: String,
    /// Absolute path of the CRI log file, if the client asked for one.
    pub log_path: Option<PathBuf>,
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(CriError::io(&tmp))?;
    f.write_all(bytes).map_err(CriError::io(&tmp))?;
    f.sync_all().map_err(CriError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(CriError::io(path))
}

pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| CriError::CorruptState { path: path.to_path_buf(), reason: e.to_string() })?;
    write_atomic(path, &bytes)
}

pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(CriError::io(path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CriError::CorruptState { path: path.to_path_buf(), reason: e.to_string() })
}

pub fn save_proto<M: prost::Message>(path: &Path, message: &M) -> Result<()> {
    write_atomic(path, &message.encode_to_vec())
}

pub fn load_proto<M: prost::Message + Default>(path: &Path) -> Result<M> {
    let bytes = fs::read(path).map_err(CriError::io(path))?;
    M::decode(bytes.as_slice())
        .map_err(|e| CriError::CorruptState { path: path.to_path_buf(), reason: e.to_string() })
}

/// The names of the entries of `dir` that are directories; none if it is missing.
pub fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CriError::io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CriError::io(dir))?;
        if entry.file_type().map_err(CriError::io(entry.path()))?.is_dir() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Nanoseconds since the epoch, CRI's timestamp unit.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// A fresh object id: 32 hex digits from the kernel's random pool.
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    let path = Path::new("/dev/urandom");
    let mut f = fs::File::open(path).map_err(CriError::io(path))?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(CriError::io(path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Object ids come from clients in later calls; they must name a directory
/// under the root and nothing else.
pub fn check_id(kind: &'static str, id: &str) -> Result<()> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(CriError::not_found(kind, id))
    }
}

/// The start time (clock ticks since boot) of `pid`, if it is alive and
/// not a zombie.
pub fn process_start(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first()? == &"Z" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_hex_like_names() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 32);
        assert!(check_id("container", &id).is_ok());
        for bad in ["", "..", "a/b", "a.b", &"a".repeat(65)] {
            assert!(check_id("container", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandbox.json");
        let record = SandboxRecord {
            id: "abc".into(),
            created_at: 5,
            phase: SandboxPhase::Ready,
            holder_pid: 42,
            holder_start: 7,
            cgroup: "/berth/pod".into(),
            ip: Some("10.88.0.2".into()),
            host: HostNamespaces { network: true, ipc: false, pid: true },
        };
        save_json(&path, &record).unwrap();
        let back: SandboxRecord = load_json(&path).unwrap();
        assert_eq!(back.holder_pid, 42);
        assert_eq!(back.host, record.host);
        // A record written before sandboxes could share the host's
        // namespaces had its own of each.
        let old = br#"{"id": "a", "created_at": 1, "phase": "Ready", "holder_pid": 3,
            "holder_start": 4, "cgroup": "/berth/pod", "ip": "10.88.0.3"}"#;
        let old: SandboxRecord = serde_json::from_slice(old).unwrap();
        assert_eq!(old.host, HostNamespaces::default());
        assert!(!path.with_extension("tmp").exists());
        assert!(process_start(std::process::id() as i32).is_some());
    }
}

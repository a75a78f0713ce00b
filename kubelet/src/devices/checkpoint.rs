//! The allocations on disk, so a restarted kubelet keeps every running
//! pod's devices and never hands them out again. The file is a checksum
//! line (`sha256:<hex>` of the rest) followed by the JSON document; it is
//! replaced atomically (write, fsync, rename).

use super::error::DevicesError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How a plugin said to expose a container's devices (its
/// ContainerAllocateResponse), kept so a container restarted later gets
/// the same without asking the plugin again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Exposure {
    pub envs: BTreeMap<String, String>,
    /// (container path, host path, read only)
    pub mounts: Vec<(String, String, bool)>,
    /// (container path, host path, cgroup permissions)
    pub devices: Vec<(String, String, String)>,
    pub annotations: BTreeMap<String, String>,
}

/// One container's devices of one resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Allocation {
    pub device_ids: Vec<String>,
    pub exposure: Exposure,
    /// Reserved, Allocate not answered yet: held in memory, never saved.
    #[serde(skip)]
    pub pending: bool,
}

/// pod uid -> container name -> resource name -> allocation.
pub(super) type Allocations = BTreeMap<String, BTreeMap<String, BTreeMap<String, Allocation>>>;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub allocations: Allocations,
    /// The devices each resource's plugin advertised last.
    pub registered: BTreeMap<String, Vec<String>>,
}

fn checksum(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Reads the checkpoint; a missing file is an empty one, a file whose
/// checksum does not match (or that does not parse) is refused.
pub(super) fn read(path: &Path) -> Result<Checkpoint, DevicesError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
        Err(e) => return Err(DevicesError::io(path)(e)),
    };
    let refused = |reason: String| DevicesError::Checkpoint { path: path.to_path_buf(), reason };
    let newline =
        bytes.iter().position(|b| *b == b'\n').ok_or_else(|| refused("no checksum line".into()))?;
    let (line, body) = (&bytes[..newline], &bytes[newline + 1..]);
    if line != checksum(body).as_bytes() {
        return Err(refused("checksum mismatch".into()));
    }
    serde_json::from_slice(body).map_err(|e| refused(format!("bad document: {e}")))
}

/// Writes the checkpoint atomically.
pub(super) fn write(path: &Path, checkpoint: &Checkpoint) -> Result<(), DevicesError> {
    let body = serde_json::to_vec(checkpoint).expect("the checkpoint always serializes");
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut file = std::fs::File::create(&tmp).map_err(DevicesError::io(&tmp))?;
    file.write_all(checksum(&body).as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .and_then(|_| file.write_all(&body))
        .and_then(|_| file.sync_all())
        .map_err(DevicesError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(DevicesError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let allocation = Allocation {
            device_ids: vec!["dev-0".into(), "dev-1".into()],
            exposure: Exposure {
                envs: [("DEVS".to_string(), "dev-0,dev-1".to_string())].into(),
                mounts: vec![("/dev-0".into(), "/tmp/dev-0".into(), false)],
                devices: vec![("/dev/x".into(), "/dev/null".into(), "rw".into())],
                annotations: Default::default(),
            },
            pending: false,
        };
        Checkpoint {
            allocations: [(
                "uid-1".to_string(),
                [("app".to_string(), [("example.com/dev".to_string(), allocation)].into())].into(),
            )]
            .into(),
            registered: [("example.com/dev".to_string(), vec!["dev-0".into(), "dev-1".into()])]
                .into(),
        }
    }

    #[test]
    fn a_written_checkpoint_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        assert_eq!(read(&path).unwrap(), Checkpoint::default(), "missing means empty");
        write(&path, &sample()).unwrap();
        assert_eq!(read(&path).unwrap(), sample());
    }

    #[test]
    fn a_checksum_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        write(&path, &sample()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // One changed device id, the checksum left as it was.
        std::fs::write(&path, text.replacen("dev-1", "dev-9", 1)).unwrap();
        let err = read(&path).unwrap_err();
        assert!(matches!(err, DevicesError::Checkpoint { .. }), "{err}");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        std::fs::write(&path, b"no newline at all").unwrap();
        assert!(matches!(read(&path), Err(DevicesError::Checkpoint { .. })));
    }
}

//! A pod's volumes on this node: emptyDir (a directory of the pod's own in
//! the agent's root, or a tmpfs there for medium Memory, its size the
//! sizeLimit) and hostPath (checked against its type, created for the
//! *OrCreate types), handed to the runtime as CRI mounts per the
//! container's volumeMounts (readOnly, subPath). Everything a pod got is
//! removed with it, tmpfs unmounted first, also when the pod was only half
//! set up.

use berth_proto::core_v1::{Container, HostPathVolumeSource, Pod, Volume};
use berth_proto::cri_v1 as cri;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(super) enum VolumeError {
    #[error("volume {volume:?}: {message}")]
    Invalid { volume: String, message: String },
    #[error("volume {volume:?} at {path}: {source}")]
    Io { volume: String, path: PathBuf, source: std::io::Error },
}

fn invalid(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::Invalid { volume: volume.into(), message: message.into() }
}

fn io(volume: &str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let (volume, path) = (volume.to_string(), path.to_path_buf());
    move |source| VolumeError::Io { volume, path, source }
}

/// The host paths of a pod's volumes, by volume name.
#[derive(Default)]
pub(super) struct PodVolumes {
    paths: HashMap<String, PathBuf>,
}

/// The volumes of every pod, under one directory of the agent's root.
pub(super) struct Volumes {
    root: PathBuf,
}

impl Volumes {
    pub(super) fn new(root: PathBuf) -> Volumes {
        Volumes { root }
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join(uid)
    }

    /// Sets up the pod's volumes (again: what is already there stays).
    pub(super) fn prepare(&self, pod: &Pod) -> Result<PodVolumes, VolumeError> {
        let uid = pod.metadata.as_ref().map(|m| m.uid.as_str()).unwrap_or_default();
        if uid.is_empty() || uid.contains('/') || uid == "." || uid == ".." {
            return Err(invalid("", format!("the pod's uid {uid:?} cannot name a directory")));
        }
        let mut out = PodVolumes::default();
        for v in pod.spec.iter().flat_map(|s| &s.volumes) {
            let path = match (&v.empty_dir, &v.host_path) {
                (Some(_), _) => self.empty_dir(uid, v)?,
                (None, Some(host)) => host_path(&v.name, host)?,
                (None, None) => return Err(invalid(&v.name, "no volume source")),
            };
            out.paths.insert(v.name.clone(), path);
        }
        Ok(out)
    }

    fn empty_dir(&self, uid: &str, v: &Volume) -> Result<PathBuf, VolumeError> {
        let source = v.empty_dir.clone().unwrap_or_default();
        let dir = self.pod_dir(uid).join(&v.name);
        if dir.components().count() != self.pod_dir(uid).components().count() + 1 {
            return Err(invalid(&v.name, "the name cannot name a directory"));
        }
        fs::create_dir_all(&dir).map_err(io(&v.name, &dir))?;
        match source.medium.as_str() {
            "" => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
                    .map_err(io(&v.name, &dir))?;
            }
            "Memory" => {
                if !is_mount_point(&dir) {
                    let mut options = "mode=0777".to_string();
                    if let Some(limit) = &source.size_limit {
                        let bytes = limit.value().clamp(0, i64::MAX as i128);
                        if bytes > 0 {
                            options.push_str(&format!(",size={bytes}"));
                        }
                    }
                    use nix::mount::MsFlags;
                    nix::mount::mount(
                        Some("tmpfs"),
                        &dir,
                        Some("tmpfs"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                        Some(options.as_str()),
                    )
                    .map_err(|e| io(&v.name, &dir)(e.into()))?;
                }
            }
            other => {
                return Err(invalid(&v.name, format!("unsupported emptyDir medium {other:?}")));
            }
        }
        Ok(dir)
    }

    /// The CRI mounts for `c`'s volumeMounts.
    pub(super) fn mounts(
        &self,
        volumes: &PodVolumes,
        c: &Container,
    ) -> Result<Vec<cri::Mount>, VolumeError> {
        let mut out = Vec::new();
        for m in &c.volume_mounts {
            let base = volumes
                .paths
                .get(&m.name)
                .ok_or_else(|| invalid(&m.name, "the pod has no volume of that name"))?;
            let host = if m.sub_path.is_empty() {
                base.clone()
            } else {
                sub_path(&m.name, base, &m.sub_path)?
            };
            out.push(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: m.read_only,
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// Removes what the pod got (tmpfs unmounted first); nothing there is
    /// fine.
    pub(super) fn remove(&self, uid: &str) -> Result<(), VolumeError> {
        if uid.is_empty() || uid.contains('/') || uid == "." || uid == ".." {
            return Ok(());
        }
        let dir = self.pod_dir(uid);
        if !dir.exists() {
            return Ok(());
        }
        let mut mounted = mounts_under(&dir);
        // Deepest first.
        mounted.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in mounted {
            nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| io(uid, &m)(e.into()))?;
        }
        fs::remove_dir_all(&dir).map_err(io(uid, &dir))
    }

    /// The uids of the pods with volumes here.
    pub(super) fn pods(&self) -> Vec<String> {
        fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect()
    }
}

/// `base`/`sub`, created as a directory if missing, and kept inside `base`
/// (no `..`, no absolute path, no symlink out).
fn sub_path(volume: &str, base: &Path, sub: &str) -> Result<PathBuf, VolumeError> {
    let relative = Path::new(sub);
    if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(invalid(volume, format!("subPath {sub:?} must be a relative path without ..")));
    }
    let path = base.join(relative);
    if !path.exists() {
        fs::create_dir_all(&path).map_err(io(volume, &path))?;
    }
    let real = path.canonicalize().map_err(io(volume, &path))?;
    let real_base = base.canonicalize().map_err(io(volume, base))?;
    if !real.starts_with(&real_base) {
        return Err(invalid(volume, format!("subPath {sub:?} leads out of the volume")));
    }
    Ok(real)
}

/// Checks (or creates) a hostPath as its type says.
fn host_path(volume: &str, source: &HostPathVolumeSource) -> Result<PathBuf, VolumeError> {
    let path = PathBuf::from(&source.path);
    if !path.is_absolute() {
        return Err(invalid(volume, format!("hostPath {:?} is not absolute", source.path)));
    }
    let kind = source.r#type.as_deref().unwrap_or("");
    let meta = fs::metadata(&path);
    let is = |check: fn(&fs::Metadata) -> bool| meta.as_ref().is_ok_and(check);
    let wrong = |what: &str| invalid(volume, format!("hostPath {} is not {what}", path.display()));
    match kind {
        "" => {}
        "DirectoryOrCreate" => {
            if meta.is_err() {
                fs::create_dir_all(&path).map_err(io(volume, &path))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .map_err(io(volume, &path))?;
            } else if !is(fs::Metadata::is_dir) {
                return Err(wrong("a directory"));
            }
        }
        "Directory" if !is(fs::Metadata::is_dir) => return Err(wrong("a directory")),
        "FileOrCreate" => {
            if meta.is_err() {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io(volume, &path))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                    .map_err(io(volume, &path))?;
            } else if !is(fs::Metadata::is_file) {
                return Err(wrong("a file"));
            }
        }
        "File" if !is(fs::Metadata::is_file) => return Err(wrong("a file")),
        "Socket" if !is(|m| m.file_type().is_socket()) => return Err(wrong("a socket")),
        "CharDevice" if !is(|m| m.file_type().is_char_device()) => {
            return Err(wrong("a character device"))
        }
        "BlockDevice" if !is(|m| m.file_type().is_block_device()) => {
            return Err(wrong("a block device"))
        }
        "Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice" => {}
        other => return Err(invalid(volume, format!("unknown hostPath type {other:?}"))),
    }
    Ok(path)
}

/// The mount points at or below `dir`, from this process's mount table.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn is_mount_point(dir: &Path) -> bool {
    mounts_under(dir).iter().any(|m| m == dir)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let digits =
            bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], digits) {
            let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(v) = u8::try_from(value) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &Path, kind: &str) -> HostPathVolumeSource {
        HostPathVolumeSource { path: path.display().to_string(), r#type: Some(kind.into()) }
    }

    #[test]
    fn host_path_types_are_checked_and_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(host_path("v", &source(dir.path(), "Directory")).is_ok());
        assert!(host_path("v", &source(&file, "Directory")).is_err());
        assert!(host_path("v", &source(&file, "File")).is_ok());
        assert!(host_path("v", &source(dir.path(), "File")).is_err());
        assert!(host_path("v", &source(&dir.path().join("none"), "")).is_ok());
        assert!(host_path("v", &source(&dir.path().join("none"), "Directory")).is_err());
        assert!(host_path("v", &source(&file, "Socket")).is_err());
        assert!(host_path("v", &source(&file, "Sideways")).is_err());
        let socket = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(host_path("v", &source(&socket, "Socket")).is_ok());

        let made = dir.path().join("made/deeper");
        host_path("v", &source(&made, "DirectoryOrCreate")).unwrap();
        assert!(made.is_dir());
        assert!(host_path("v", &source(&file, "DirectoryOrCreate")).is_err());
        let new_file = dir.path().join("new-file");
        host_path("v", &source(&new_file, "FileOrCreate")).unwrap();
        assert!(new_file.is_file());
        assert!(host_path("v", &source(dir.path(), "FileOrCreate")).is_err());
        let relative = HostPathVolumeSource { path: "rel/path".into(), r#type: None };
        assert!(host_path("v", &relative).is_err());
    }

    #[test]
    fn sub_paths_stay_inside_their_volume() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("vol");
        fs::create_dir(&base).unwrap();
        let inside = sub_path("v", &base, "a/b").unwrap();
        assert!(inside.is_dir() && inside.starts_with(base.canonicalize().unwrap()));
        assert!(sub_path("v", &base, "../x").is_err());
        assert!(sub_path("v", &base, "/etc").is_err());
        std::os::unix::fs::symlink("/etc", base.join("out")).unwrap();
        assert!(sub_path("v", &base, "out").is_err());
    }

    #[test]
    fn disk_empty_dirs_are_made_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(dir.path().join("volumes"));
        let pod = Pod {
            metadata: Some(berth_proto::meta_v1::ObjectMeta {
                uid: "u-1".into(),
                ..Default::default()
            }),
            spec: Some(berth_proto::core_v1::PodSpec {
                volumes: vec![Volume {
                    name: "scratch".into(),
                    empty_dir: Some(Default::default()),
                    host_path: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let prepared = volumes.prepare(&pod).unwrap();
        let c = Container {
            volume_mounts: vec![berth_proto::core_v1::VolumeMount {
                name: "scratch".into(),
                mount_path: "/data".into(),
                read_only: true,
                sub_path: String::new(),
            }],
            ..Default::default()
        };
        let mounts = volumes.mounts(&prepared, &c).unwrap();
        assert_eq!(mounts.len(), 1);
        assert!(mounts[0].readonly && mounts[0].container_path == "/data");
        assert!(Path::new(&mounts[0].host_path).is_dir());
        assert_eq!(volumes.pods(), vec!["u-1".to_string()]);
        volumes.remove("u-1").unwrap();
        assert!(!Path::new(&mounts[0].host_path).exists());
        assert!(volumes.pods().is_empty());
        let missing = Container {
            volume_mounts: vec![berth_proto::core_v1::VolumeMount {
                name: "nope".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(volumes.mounts(&prepared, &missing).is_err());
    }

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}

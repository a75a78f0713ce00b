//! A container's root filesystem: an overlayfs mount of its image's unpacked
//! layers (read-only lower dirs) under its own upper and work dirs, so
//! containers share layers on disk and each writes only to its own upper dir.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::error::{ImageError, Result};

/// The kernel copies mount(2) options into one page; longer lowerdir lists
/// are refused by the kernel, so they are refused here with a clearer error.
const MAX_MOUNT_DATA: usize = 4095;

/// A container rootfs made by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rootfs {
    pub container_id: String,
    /// The image (its id) whose layers are the lower dirs.
    pub image_id: String,
    /// The mounted root: the path to give the runtime as `root.path`.
    pub path: PathBuf,
    /// Where the container's writes land.
    pub upper: PathBuf,
}

/// Mounts overlayfs at `target`. `lowers` are top layer first, as overlayfs
/// orders them.
pub(crate) fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    let all: Vec<&Path> = lowers.iter().map(PathBuf::as_path).chain([upper, work]).collect();
    if let Some(bad) = all.iter().find(|p| p.to_string_lossy().contains([',', ':'])) {
        return Err(ImageError::Unsupported(format!(
            "overlay path {} contains ',' or ':'; move the image store to a plain path",
            bad.display()
        )));
    }
    let lowerdir = lowers.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join(":");
    let data =
        format!("lowerdir={lowerdir},upperdir={},workdir={}", upper.display(), work.display());
    if data.len() > MAX_MOUNT_DATA {
        return Err(ImageError::Unsupported(format!(
            "{} layers make {} bytes of overlay options, over the kernel's {MAX_MOUNT_DATA}",
            lowers.len(),
            data.len()
        )));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(ImageError::sys(format!(
        "mount overlay at {} (needs root and overlayfs)",
        target.display()
    )))
}

/// Unmounts `target` if it is a mount point. A busy mount (a process still
/// inside) is detached so the directories can go; the kernel frees it later.
pub(crate) fn unmount(target: &Path) -> Result<()> {
    if !is_mount_point(target) {
        return Ok(());
    }
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::Error::EBUSY) => nix::mount::umount2(target, MntFlags::MNT_DETACH)
            .map_err(ImageError::sys(format!("detach {}", target.display()))),
        Err(nix::Error::EINVAL) => Ok(()),
        Err(e) => {
            Err(ImageError::Sys { context: format!("unmount {}", target.display()), source: e })
        }
    }
}

/// Whether `path` is a mount point in this mount namespace, from mountinfo
/// (a bind of a directory onto itself would fool a device-number check).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| unescape_mountinfo(m) == want))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn refuses_paths_overlayfs_would_misread_and_oversized_options() {
        let p = PathBuf::from("/x");
        let err = mount_overlay(&[PathBuf::from("/a:b")], &p, &p, &p).unwrap_err();
        assert!(matches!(err, ImageError::Unsupported(_)), "{err}");
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/berth/images/layers/sha256/{i:064}")))
            .collect();
        let err = mount_overlay(&many, &p, &p, &p).unwrap_err();
        assert!(matches!(err, ImageError::Unsupported(_)), "{err}");
    }

    #[test]
    fn root_is_a_mount_point_and_a_temp_dir_is_not() {
        assert!(is_mount_point(Path::new("/")));
        let t = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(t.path()));
        unmount(t.path()).unwrap();
    }
}

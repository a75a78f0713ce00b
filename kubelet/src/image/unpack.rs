//! Unpacks one layer tar into a directory ready to be an overlayfs lower
//! layer: OCI whiteouts (`.wh.name`) become overlay whiteouts (a 0/0 character
//! device), opaque markers (`.wh..wh..opq`) become the `trusted.overlay.opaque`
//! xattr on their directory, and hard links, symlinks, devices, fifos,
//! ownership, modes, mtimes and xattrs are kept.
//!
//! Nothing is written outside the destination: entry paths are resolved
//! lexically (`..` may not climb above the layer) and never through a symlink
//! (an entry below a symlink is refused, whatever the symlink points at).
//! The uncompressed stream is hashed and checked against the config's diff_id.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use super::digest::{Digest, HashingReader};
use super::error::{ImageError, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What unpacking a layer found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Unpacked {
    /// Bytes of the uncompressed tar.
    pub tar_bytes: u64,
    pub entries: u64,
}

/// Unpacks the (possibly compressed) layer tar in `blob` into `dest`, a fresh
/// empty directory, and checks the tar against `diff_id`. On error `dest`
/// holds a partial tree that the caller must discard.
/// `cancel` is checked between entries, so a failed or dropped pull stops it.
pub(crate) fn unpack_layer(
    blob: &Path,
    diff_id: &Digest,
    dest: &Path,
    cancel: &AtomicBool,
) -> Result<Unpacked> {
    let layer = diff_id.to_string();
    let file = File::open(blob).map_err(ImageError::io(blob))?;
    let mut buffered = BufReader::with_capacity(256 << 10, file);
    let magic = buffered.fill_buf().map_err(ImageError::io(blob))?;
    // The content, not the media type, says how it is compressed: some
    // registries label plain tars as gzip and the other way round.
    let decoded: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::stream::read::Decoder::with_buffer(buffered).map_err(|e| {
            ImageError::malformed(format!("layer {layer}"), format!("zstd stream: {e}"))
        })?;
        Box::new(decoder)
    } else {
        Box::new(buffered)
    };
    let hashed = HashingReader::new(decoded, diff_id.algorithm());
    let mut archive = tar::Archive::new(hashed);
    let mut state = State {
        root: dest,
        layer: &layer,
        dirs: HashMap::new(),
        entries: 0,
        is_root: nix::unistd::geteuid().is_root(),
    };
    let corrupt = |e: io::Error| {
        ImageError::malformed(format!("layer {layer}"), format!("corrupt or truncated tar: {e}"))
    };
    for entry in archive.entries().map_err(corrupt)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(ImageError::Cancelled);
        }
        let mut entry = entry.map_err(corrupt)?;
        state.apply(&mut entry).map_err(|e| match e {
            ImageError::Io { ref source, .. } if source.kind() == io::ErrorKind::UnexpectedEof => {
                corrupt(io::Error::new(io::ErrorKind::UnexpectedEof, source.to_string()))
            }
            other => other,
        })?;
    }
    // The diff_id covers the whole stream, end-of-archive blocks included.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
    let hasher = rest.into_hasher();
    let tar_bytes = hasher.len();
    hasher.verify("layer diff_id", diff_id, None)?;
    state.finish_dirs()?;
    Ok(Unpacked { tar_bytes, entries: state.entries })
}

struct State<'a> {
    root: &'a Path,
    layer: &'a str,
    /// Directory modes and mtimes, applied last: creating children would
    /// change the mtime, and a read-only mode would not stop root anyway.
    dirs: HashMap<PathBuf, (u32, i64)>,
    entries: u64,
    is_root: bool,
}

impl State<'_> {
    fn unsafe_entry(&self, entry: &Path, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if matches!(kind, T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink) {
            return Ok(());
        }
        let raw_path = entry
            .path()
            .map_err(|e| ImageError::malformed(format!("layer {}", self.layer), e))?
            .into_owned();
        let Some(rel) = self.clean(&raw_path)? else {
            // The layer root itself: the container's upper dir decides its attributes.
            return Ok(());
        };
        self.entries += 1;
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();

        if name == OPAQUE_MARKER {
            let dir = self.make_dirs(&raw_path, &parent)?;
            return set_xattr(&dir, OPAQUE_XATTR, b"y");
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() {
                // Other `.wh..wh.` names are aufs bookkeeping, not content.
                return Ok(());
            }
            let dir = self.make_dirs(&raw_path, &parent)?;
            let target = dir.join(hidden);
            remove_existing(&target)?;
            return nix::sys::stat::mknod(&target, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| {
                ImageError::Sys {
                    context: format!("mknod whiteout {} (needs root)", target.display()),
                    source: e,
                }
            });
        }

        let dir = self.make_dirs(&raw_path, &parent)?;
        let path = dir.join(&name);
        let header = entry.header();
        let mode =
            header.mode().map_err(|e| ImageError::malformed(format!("layer {}", self.layer), e))?
                & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header.mtime().unwrap_or(0) as i64;

        match kind {
            T::Directory => {
                let is_dir = fs::symlink_metadata(&path).map(|m| m.is_dir()).unwrap_or(false);
                if !is_dir {
                    remove_existing(&path)?;
                    fs::create_dir(&path).map_err(ImageError::io(&path))?;
                }
                self.chown(&path, uid, gid)?;
                self.apply_xattrs(entry, &path)?;
                self.dirs.insert(path, (mode, mtime));
                return Ok(());
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_existing(&path)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(ImageError::io(&path))?;
                let want = entry.size();
                let got = io::copy(entry, &mut f).map_err(ImageError::io(&path))?;
                if got != want {
                    return Err(ImageError::malformed(
                        format!("layer {}", self.layer),
                        format!("corrupt or truncated tar: {rel:?} has {got} of {want} bytes"),
                    ));
                }
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| ImageError::malformed(format!("layer {}", self.layer), e))?
                    .ok_or_else(|| {
                        ImageError::malformed(
                            format!("layer {}", self.layer),
                            format!("symlink {rel:?} without a target"),
                        )
                    })?;
                remove_existing(&path)?;
                // Stored as written, absolute or not: it is only followed
                // inside the container, never while unpacking.
                std::os::unix::fs::symlink(&target, &path).map_err(ImageError::io(&path))?;
                self.chown(&path, uid, gid)?;
                self.apply_xattrs(entry, &path)?;
                return set_mtime(&path, mtime);
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| ImageError::malformed(format!("layer {}", self.layer), e))?
                    .ok_or_else(|| {
                        ImageError::malformed(
                            format!("layer {}", self.layer),
                            format!("hard link {rel:?} without a target"),
                        )
                    })?
                    .into_owned();
                let target_rel = self
                    .clean(&target)?
                    .ok_or_else(|| self.unsafe_entry(&raw_path, "hard link to the layer root"))?;
                let target_parent = target_rel.parent().unwrap_or(Path::new(""));
                self.check_no_symlinks(&raw_path, target_parent)?;
                let source = self.root.join(&target_rel);
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    Ok(_) => return Err(self.unsafe_entry(&raw_path, "hard link to a directory")),
                    Err(_) => {
                        return Err(ImageError::malformed(
                            format!("layer {}", self.layer),
                            format!("hard link {rel:?} to {target_rel:?}, which is not earlier in the layer"),
                        ))
                    }
                }
                if source == path {
                    return Ok(());
                }
                remove_existing(&path)?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                return fs::hard_link(&source, &path).map_err(ImageError::io(&path));
            }
            T::Char | T::Block | T::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let sflag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_existing(&path)?;
                nix::sys::stat::mknod(
                    &path,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(ImageError::sys(format!(
                    "mknod {} (devices need root)",
                    path.display()
                )))?;
            }
            other => {
                tracing::warn!(layer = self.layer, entry = %rel.display(), kind = ?other, "skipping tar entry of unknown type");
                return Ok(());
            }
        }
        // Ownership first: chown clears setuid bits and file capabilities.
        self.chown(&path, uid, gid)?;
        self.apply_xattrs(entry, &path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(ImageError::io(&path))?;
        set_mtime(&path, mtime)
    }

    /// The entry's path relative to the layer root, `None` for the root itself.
    fn clean(&self, raw: &Path) -> Result<Option<PathBuf>> {
        let mut out = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if !out.pop() {
                        return Err(self.unsafe_entry(raw, "'..' climbs above the layer root"));
                    }
                }
            }
        }
        Ok((!out.as_os_str().is_empty()).then_some(out))
    }

    /// Refuses a path whose directories include a symlink.
    fn check_no_symlinks(&self, entry: &Path, rel_dir: &Path) -> Result<()> {
        let mut cur = self.root.to_path_buf();
        for c in rel_dir.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "its directory {:?} is a symlink",
                            cur.strip_prefix(self.root).unwrap_or(&cur)
                        ),
                    ));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(ImageError::malformed(
                        format!("layer {}", self.layer),
                        format!("{cur:?} is not a directory"),
                    ))
                }
                Err(_) => {
                    return Err(ImageError::malformed(
                        format!("layer {}", self.layer),
                        format!("{cur:?} does not exist"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Creates the directories of `rel_dir` that are missing (0755, as
    /// docker does for implied parents) and returns its absolute path,
    /// refusing to pass through a symlink.
    fn make_dirs(&self, entry: &Path, rel_dir: &Path) -> Result<PathBuf> {
        let mut cur = self.root.to_path_buf();
        for c in rel_dir.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => continue,
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "its directory {:?} is a symlink",
                            cur.strip_prefix(self.root).unwrap_or(&cur)
                        ),
                    ));
                }
                // A whiteout or file where a directory now goes: the layer replaces it.
                Ok(_) => fs::remove_file(&cur).map_err(ImageError::io(&cur))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::Io { path: cur, source: e }),
            }
            fs::create_dir(&cur).map_err(ImageError::io(&cur))?;
            fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                .map_err(ImageError::io(&cur))?;
        }
        Ok(cur)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        if !self.is_root {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(ImageError::io(path))
    }

    /// xattrs from PAX `SCHILY.xattr.*` records (file capabilities, SELinux
    /// labels). Overlay's own xattrs are dropped: only this unpacker may
    /// decide what overlayfs sees as opaque or redirected.
    fn apply_xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<()> {
        let Ok(Some(exts)) = entry.pax_extensions() else { return Ok(()) };
        let mut xattrs = Vec::new();
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if !name.starts_with("trusted.overlay.") && !name.starts_with("user.overlay.") {
                        xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        for (name, value) in xattrs {
            if let Err(e) = set_xattr(path, &name, &value) {
                // Unprivileged or unsupported namespaces are skipped, as docker does.
                tracing::debug!(layer = self.layer, path = %path.display(), xattr = name, error = %e, "xattr not applied");
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        for (path, (mode, mtime)) in self.dirs.drain() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(ImageError::io(&path))?;
            set_mtime(&path, mtime)?;
        }
        Ok(())
    }
}

/// Clears the way for a new entry at `path`, whatever is there (a later
/// entry of the same path wins, as with tar itself).
fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(ImageError::io(path)),
        Ok(_) => fs::remove_file(path).map_err(ImageError::io(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::Io { path: path.to_path_buf(), source: e }),
    }
}

fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let t = TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(ImageError::sys(format!("set mtime of {}", path.display())))
}

pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::malformed(path.display().to_string(), "NUL in path"))?;
    let n = CString::new(name).map_err(|_| ImageError::malformed(name, "NUL in xattr name"))?;
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // value pointer and length describe one valid slice.
    let rc =
        unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc != 0 {
        return Err(ImageError::Sys {
            context: format!("set xattr {name} on {} (trusted.* needs root)", path.display()),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: as in set_xattr; the buffer is valid for its length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (rc >= 0).then(|| {
        buf.truncate(rc as usize);
        buf
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// Builds layer tars entry by entry, writing names raw so tests can make
    /// the hostile ones (`..`) the tar crate's own builder refuses.
    #[derive(Default)]
    pub(crate) struct LayerTar {
        out: Vec<u8>,
    }

    impl LayerTar {
        fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(mode);
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h
        }

        fn push(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
            h.set_cksum();
            self.out.extend_from_slice(h.as_bytes());
            self.out.extend_from_slice(data);
            self.out.resize(self.out.len().div_ceil(512) * 512, 0);
            self
        }

        pub fn dir(&mut self, name: &str) -> &mut Self {
            self.push(Self::header(name, tar::EntryType::Directory, 0, 0o755), b"")
        }

        pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.push(Self::header(name, tar::EntryType::Regular, data.len() as u64, 0o644), data)
        }

        pub fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
            let mut h = Self::header(name, kind, 0, 0o777);
            let t = target.as_bytes();
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            self.push(h, b"")
        }

        pub fn fifo(&mut self, name: &str) -> &mut Self {
            self.push(Self::header(name, tar::EntryType::Fifo, 0, 0o600), b"")
        }

        pub fn finish(&mut self) -> Vec<u8> {
            let mut out = std::mem::take(&mut self.out);
            out.extend_from_slice(&[0u8; 1024]);
            out
        }
    }

    fn unpack(tar: &[u8], gzip: bool) -> (tempfile::TempDir, Result<Unpacked>) {
        let tmp = tempfile::tempdir().unwrap();
        let blob = tmp.path().join("blob");
        let data = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, tar).unwrap();
            e.finish().unwrap()
        } else {
            tar.to_vec()
        };
        fs::write(&blob, data).unwrap();
        let dest = tmp.path().join("layer");
        fs::create_dir(&dest).unwrap();
        let r = unpack_layer(&blob, &Digest::sha256_of(tar), &dest, &AtomicBool::new(false));
        (tmp, r)
    }

    fn root_or_skip() -> bool {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED: needs root (mknod whiteouts, trusted.* xattrs)");
            return false;
        }
        true
    }

    #[test]
    fn files_links_and_special_files_are_kept() {
        let tar = LayerTar::default()
            .dir("data/")
            .file("data/file", b"payload")
            .link(tar::EntryType::Link, "data/hard", "data/file")
            .link(tar::EntryType::Symlink, "data/soft", "file")
            .link(tar::EntryType::Symlink, "data/abs", "/etc/passwd")
            .file("./implied/parent/f", b"x")
            .finish();
        for gzip in [false, true] {
            let (tmp, r) = unpack(&tar, gzip);
            let u = r.unwrap();
            assert_eq!(u.tar_bytes, tar.len() as u64);
            let root = tmp.path().join("layer");
            assert_eq!(fs::read(root.join("data/file")).unwrap(), b"payload");
            let a = fs::metadata(root.join("data/file")).unwrap();
            let b = fs::metadata(root.join("data/hard")).unwrap();
            assert_eq!(a.ino(), b.ino(), "hard link shares the inode");
            assert_eq!(a.mode() & 0o7777, 0o644);
            assert_eq!(a.mtime(), 1_600_000_000);
            assert_eq!(fs::read_link(root.join("data/soft")).unwrap(), Path::new("file"));
            assert_eq!(fs::read_link(root.join("data/abs")).unwrap(), Path::new("/etc/passwd"));
            assert_eq!(
                fs::metadata(root.join("data")).unwrap().mtime(),
                1_600_000_000,
                "dir mtime set last"
            );
            assert_eq!(fs::read(root.join("implied/parent/f")).unwrap(), b"x");
        }
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_overlay_markers() {
        if !root_or_skip() {
            return;
        }
        let tar = LayerTar::default()
            .dir("etc/")
            .file("etc/.wh.gone", b"")
            .dir("opaque/")
            .file("opaque/.wh..wh..opq", b"")
            .file("opaque/new", b"n")
            .file(".wh..wh.plnk", b"")
            .fifo("dev/fifo")
            .finish();
        let (tmp, r) = unpack(&tar, true);
        r.unwrap();
        let root = tmp.path().join("layer");
        let wh = fs::symlink_metadata(root.join("etc/gone")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "0/0 char device whiteout");
        assert!(!root.join("etc/.wh.gone").exists());
        assert_eq!(get_xattr(&root.join("opaque"), OPAQUE_XATTR).as_deref(), Some(&b"y"[..]));
        assert!(!root.join("opaque/.wh..wh..opq").exists());
        assert!(!root.join(".wh..wh.plnk").exists());
        assert!(fs::symlink_metadata(root.join("dev/fifo")).unwrap().file_type().is_fifo());
    }

    #[test]
    fn escaping_entries_are_refused_and_nothing_lands_outside() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", LayerTar::default().file("../escape", b"x").finish()),
            ("nested dotdot", LayerTar::default().file("a/../../escape", b"x").finish()),
            (
                "through absolute symlink",
                LayerTar::default()
                    .link(tar::EntryType::Symlink, "evil", &target)
                    .file("evil/pwned", b"x")
                    .finish(),
            ),
            (
                "through relative symlink",
                LayerTar::default()
                    .link(tar::EntryType::Symlink, "up", "../../../../../../..")
                    .file("up/tmp/pwned", b"x")
                    .finish(),
            ),
            (
                "hard link out",
                LayerTar::default()
                    .link(tar::EntryType::Link, "h", "../../../../etc/passwd")
                    .finish(),
            ),
            (
                "hard link through symlink",
                LayerTar::default()
                    .link(tar::EntryType::Symlink, "evil", &target)
                    .link(tar::EntryType::Link, "h", "evil/secret")
                    .finish(),
            ),
        ];
        fs::write(outside.path().join("secret"), b"s").unwrap();
        for (what, tar) in cases {
            let (_tmp, r) = unpack(&tar, false);
            let err = r.unwrap_err();
            assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{what}: {err}");
            assert!(!outside.path().join("pwned").exists(), "{what}");
        }
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    }

    #[test]
    fn replacing_a_symlink_does_not_write_through_it() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"original").unwrap();
        let tar = LayerTar::default()
            .link(tar::EntryType::Symlink, "f", victim.to_str().unwrap())
            .file("f", b"new")
            .finish();
        let (tmp, r) = unpack(&tar, false);
        r.unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"original");
        assert_eq!(fs::read(tmp.path().join("layer/f")).unwrap(), b"new");
    }

    #[test]
    fn truncated_and_mismatched_layers_are_errors() {
        let tar = LayerTar::default().file("big", &vec![7u8; 100_000]).finish();
        let tmp = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let diff_id = Digest::sha256_of(&tar);
        for (what, data) in
            [("truncated gzip", &gz[..gz.len() / 2]), ("truncated tar", &tar[..50_000])]
        {
            let blob = tmp.path().join("blob");
            fs::write(&blob, data).unwrap();
            let dest = tmp.path().join(what);
            fs::create_dir(&dest).unwrap();
            let err = unpack_layer(&blob, &diff_id, &dest, &AtomicBool::new(false)).unwrap_err();
            assert!(matches!(err, ImageError::Malformed { .. }), "{what}: {err}");
        }
        let blob = tmp.path().join("blob");
        fs::write(&blob, &gz).unwrap();
        let dest = tmp.path().join("wrong");
        fs::create_dir(&dest).unwrap();
        let err = unpack_layer(&blob, &Digest::sha256_of(b"other"), &dest, &AtomicBool::new(false))
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        let dest = tmp.path().join("cancelled");
        fs::create_dir(&dest).unwrap();
        let err = unpack_layer(&blob, &diff_id, &dest, &AtomicBool::new(true)).unwrap_err();
        assert!(matches!(err, ImageError::Cancelled), "{err}");
    }
}

//! Image layers (tar, gzip'd or zstd'd) unpacked as a pull does: the
//! unpacker never panics or hangs, and never writes outside its destination.
//!
//! Each run unpacks into `dest` inside a scratch directory that also holds
//! `outside/sentinel`; afterwards the scratch directory must hold exactly
//! the blob, `dest` (still a directory) and the untouched sentinel (same
//! content, no new hard links). Seeds aim at it with `../outside` paths,
//! symlinks and hard links.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::LazyLock;

const SENTINEL: &[u8] = b"must not change";

static SCRATCH: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let dir = tempfile::Builder::new().prefix("berth-fuzz-unpack-").tempdir().expect("a temp dir");
    fs::create_dir(dir.path().join("outside")).expect("outside/");
    fs::write(dir.path().join("outside/sentinel"), SENTINEL).expect("the sentinel");
    dir
});

/// Removes a tree the unpacker made, whatever modes it left on it.
fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn open_up(path: &Path) {
        let Ok(meta) = fs::symlink_metadata(path) else { return };
        if meta.is_dir() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                open_up(&entry.path());
            }
        }
    }
    open_up(path);
    fs::remove_dir_all(path).expect("the unpacked tree can be removed");
}

fuzz_target!(|data: &[u8]| {
    let root = SCRATCH.path();
    let blob = root.join("blob");
    let dest = root.join("dest");
    fs::write(&blob, data).expect("the blob is written");
    fs::create_dir(&dest).expect("dest is created");
    let _ = berth_kubelet::fuzzing::unpack_layer(&blob, &dest);

    let mut names: Vec<String> = fs::read_dir(root)
        .expect("the scratch dir is readable")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["blob", "dest", "outside"], "the unpacker wrote beside its destination");
    assert!(fs::symlink_metadata(&dest).expect("dest").is_dir(), "dest was replaced");
    let outside: Vec<_> = fs::read_dir(root.join("outside")).expect("outside/").collect();
    assert_eq!(outside.len(), 1, "the unpacker wrote into outside/");
    let sentinel = root.join("outside/sentinel");
    let meta = fs::symlink_metadata(&sentinel).expect("the sentinel is still there");
    assert!(meta.is_file() && meta.nlink() == 1, "the sentinel was replaced or linked to");
    assert_eq!(fs::read(&sentinel).expect("the sentinel"), SENTINEL, "the sentinel changed");

    remove_tree(&dest);
});

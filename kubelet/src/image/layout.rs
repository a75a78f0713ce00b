//! Local image sources: an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/<alg>/<hex>`) and an oci-archive, the same layout in
//! one tar file, read in place by seeking to each member.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::digest::Digest;
use super::error::{ImageError, Result};
use super::manifest::{Descriptor, Index, MAX_MANIFEST_BYTES};

/// The annotation naming an image in a layout (`latest`, or a full reference).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for the image's full name in exported archives.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// An OCI layout, as a directory or a tar archive.
#[derive(Debug)]
pub(crate) struct Layout {
    path: PathBuf,
    /// For an archive: member name -> (offset of its data, size).
    members: Option<HashMap<String, (u64, u64)>>,
    index: Index,
}

impl Layout {
    pub fn open_dir(path: &Path) -> Result<Layout> {
        let marker = path.join("oci-layout");
        let raw = std::fs::read(&marker).map_err(ImageError::io(&marker))?;
        check_marker(path, &raw)?;
        let index_path = path.join("index.json");
        let raw = read_limited(
            File::open(&index_path).map_err(ImageError::io(&index_path))?,
            &index_path,
        )?;
        let index = parse_index(path, &raw)?;
        Ok(Layout { path: path.to_path_buf(), members: None, index })
    }

    pub fn open_archive(path: &Path) -> Result<Layout> {
        let file = File::open(path).map_err(ImageError::io(path))?;
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| ImageError::malformed(path.display().to_string(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::malformed(path.display().to_string(), e))?;
            if entry.header().entry_type() != tar::EntryType::Regular
                && entry.header().entry_type() != tar::EntryType::Continuous
            {
                continue;
            }
            let name =
                entry.path().map_err(|e| ImageError::malformed(path.display().to_string(), e))?;
            let name: PathBuf =
                name.components().filter(|c| matches!(c, Component::Normal(_))).collect();
            members.insert(
                name.to_string_lossy().into_owned(),
                (entry.raw_file_position(), entry.size()),
            );
        }
        let mut layout = Layout {
            path: path.to_path_buf(),
            members: Some(members),
            index: Index { manifests: vec![] },
        };
        let marker = layout.read_member("oci-layout", 4096)?;
        check_marker(path, &marker)?;
        let raw = layout.read_member("index.json", MAX_MANIFEST_BYTES)?;
        layout.index = parse_index(path, &raw)?;
        Ok(layout)
    }

    /// The index.json entry for `tag`: matched against the ref.name annotation
    /// (a bare tag, or the tag of a full name); without a tag, the only entry.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor> {
        let entries = &self.index.manifests;
        let found = match tag {
            Some(t) => entries.iter().find(|d| {
                [REF_NAME, CONTAINERD_NAME].iter().any(|k| {
                    d.annotations.get(*k).is_some_and(|n| {
                        n == t
                            || n.rsplit_once(':')
                                .is_some_and(|(_, tag)| tag == t && !tag.contains('/'))
                    })
                })
            }),
            None if entries.len() == 1 => entries.first(),
            None => {
                return Err(ImageError::InvalidReference {
                    reference: self.path.display().to_string(),
                    reason: format!(
                        "the layout holds {} images; name one with :TAG",
                        entries.len()
                    ),
                })
            }
        };
        found.cloned().ok_or_else(|| {
            ImageError::NotFound(format!("{}:{}", self.path.display(), tag.unwrap_or("")))
        })
    }

    /// The full name an archive's exporter recorded for an entry, if any.
    pub fn recorded_name(desc: &Descriptor) -> Option<&str> {
        desc.annotations.get(CONTAINERD_NAME).map(String::as_str)
    }

    /// Opens a blob for reading; the caller verifies it against `digest`.
    pub fn open_blob(&self, digest: &Digest) -> Result<(Box<dyn Read + Send>, u64)> {
        let rel = format!("blobs/{}/{}", digest.algorithm().name(), digest.hex());
        match &self.members {
            None => {
                let p = self.path.join(&rel);
                let f = File::open(&p).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        ImageError::NotFound(format!("{} in {}", digest, self.path.display()))
                    }
                    _ => ImageError::Io { path: p.clone(), source: e },
                })?;
                let len = f.metadata().map_err(ImageError::io(&p))?.len();
                Ok((Box::new(f), len))
            }
            Some(members) => {
                let &(offset, size) = members.get(&rel).ok_or_else(|| {
                    ImageError::NotFound(format!("{digest} in {}", self.path.display()))
                })?;
                let mut f = File::open(&self.path).map_err(ImageError::io(&self.path))?;
                f.seek(SeekFrom::Start(offset)).map_err(ImageError::io(&self.path))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// A small blob (manifest, config) read whole, refusing more than `limit`.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let (r, len) = self.open_blob(digest)?;
        if len > limit {
            return Err(ImageError::malformed(
                digest.to_string(),
                format!("{len} bytes is over the {limit}-byte limit"),
            ));
        }
        let mut out = Vec::with_capacity(len as usize);
        r.take(limit).read_to_end(&mut out).map_err(ImageError::io(&self.path))?;
        Ok(out)
    }

    fn read_member(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let &(offset, size) = self.members.as_ref().and_then(|m| m.get(name)).ok_or_else(|| {
            ImageError::malformed(
                self.path.display().to_string(),
                format!("no {name} in the archive: not an oci-archive"),
            )
        })?;
        if size > limit {
            return Err(ImageError::malformed(
                self.path.display().to_string(),
                format!("{name} is over {limit} bytes"),
            ));
        }
        let mut f = File::open(&self.path).map_err(ImageError::io(&self.path))?;
        f.seek(SeekFrom::Start(offset)).map_err(ImageError::io(&self.path))?;
        let mut out = Vec::with_capacity(size as usize);
        f.take(size).read_to_end(&mut out).map_err(ImageError::io(&self.path))?;
        Ok(out)
    }
}

fn read_limited(f: File, path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut out).map_err(ImageError::io(path))?;
    if out.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ImageError::malformed(path.display().to_string(), "index.json is too large"));
    }
    Ok(out)
}

fn check_marker(path: &Path, raw: &[u8]) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| ImageError::malformed(format!("{}/oci-layout", path.display()), e))?;
    match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(ver) if ver.starts_with("1.") => Ok(()),
        other => Err(ImageError::Unsupported(format!(
            "{}: OCI layout version {other:?}",
            path.display()
        ))),
    }
}

fn parse_index(path: &Path, raw: &[u8]) -> Result<Index> {
    serde_json::from_slice(raw)
        .map_err(|e| ImageError::malformed(format!("{}/index.json", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::OCI_MANIFEST;

    fn write_layout(dir: &Path, blob: &[u8], names: &[&str]) -> Digest {
        let d = Digest::sha256_of(blob);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("blobs/sha256").join(d.hex()), blob).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let manifests: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": blob.len(), "annotations": {REF_NAME: n}}))
            .collect();
        std::fs::write(
            dir.join("index.json"),
            serde_json::json!({"schemaVersion": 2, "manifests": manifests}).to_string(),
        )
        .unwrap();
        d
    }

    #[test]
    fn directory_and_archive_resolve_tags_and_read_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        let d = write_layout(&dir, b"manifest bytes", &["v1", "registry.local/app:v2"]);

        let archive = tmp.path().join("image.tar");
        let mut b = tar::Builder::new(File::create(&archive).unwrap());
        b.append_dir_all(".", &dir).unwrap();
        b.finish().unwrap();
        drop(b);

        for layout in [Layout::open_dir(&dir).unwrap(), Layout::open_archive(&archive).unwrap()] {
            assert_eq!(layout.resolve(Some("v1")).unwrap().digest, d);
            assert_eq!(layout.resolve(Some("v2")).unwrap().digest, d, "tag of a full name");
            assert!(matches!(layout.resolve(Some("v3")), Err(ImageError::NotFound(_))));
            assert!(layout.resolve(None).is_err(), "two entries need a tag");
            assert_eq!(layout.read_blob(&d, 1024).unwrap(), b"manifest bytes");
            assert!(layout.read_blob(&d, 4).is_err(), "over the limit");
            let missing = Digest::sha256_of(b"other");
            assert!(matches!(layout.open_blob(&missing).map(|_| ()), Err(ImageError::NotFound(_))));
        }
    }

    #[test]
    fn a_directory_without_a_layout_marker_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(Layout::open_dir(tmp.path()), Err(ImageError::Io { .. })));
        std::fs::write(tmp.path().join("oci-layout"), br#"{"imageLayoutVersion":"2.0.0"}"#)
            .unwrap();
        assert!(matches!(Layout::open_dir(tmp.path()), Err(ImageError::Unsupported(_))));
    }
}

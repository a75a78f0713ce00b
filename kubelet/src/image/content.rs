//! The content store: blobs (manifests, configs, compressed layers) under
//! `blobs/<alg>/<hex>`, each written to a temp file, checked against its
//! digest and size, fsynced and renamed into place, so a blob path that exists
//! always holds exactly the content its name says.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::digest::{Digest, Hasher};
use super::error::{ImageError, Result};
use super::manifest::Descriptor;

#[derive(Debug, Clone)]
pub(crate) struct ContentStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh name under the store's temp dir; unique within this process, and
/// the store's lock keeps other processes out.
pub(crate) fn temp_path(tmp: &Path, what: &str) -> PathBuf {
    let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    tmp.join(format!("{what}-{}-{n}", std::process::id()))
}

/// Makes a rename or create in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ImageError::io(dir))
}

impl ContentStore {
    pub fn new(root: &Path) -> Result<Self> {
        let s = Self { blobs: root.join("blobs"), tmp: root.join("tmp") };
        for alg in ["sha256", "sha512"] {
            let d = s.blobs.join(alg);
            fs::create_dir_all(&d).map_err(ImageError::io(&d))?;
        }
        Ok(s)
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.algorithm().name()).join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Stores bytes already in memory (a manifest or config just fetched).
    pub fn put(&self, what: &'static str, desc_digest: &Digest, bytes: &[u8]) -> Result<()> {
        if self.has(desc_digest) {
            return Ok(());
        }
        let mut w = self.writer(what, desc_digest.clone(), Some(bytes.len() as u64))?;
        w.write(bytes)?;
        w.commit()
    }

    pub fn read(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let p = self.path(d);
        let mut out = Vec::new();
        File::open(&p)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut out))
            .map_err(ImageError::io(&p))?;
        if out.len() as u64 > limit {
            return Err(ImageError::malformed(
                d.to_string(),
                format!("over the {limit}-byte limit"),
            ));
        }
        Ok(out)
    }

    pub fn writer(
        &self,
        what: &'static str,
        digest: Digest,
        size: Option<u64>,
    ) -> Result<BlobWriter> {
        let tmp = temp_path(&self.tmp, "blob");
        let file = File::create(&tmp).map_err(ImageError::io(&tmp))?;
        Ok(BlobWriter {
            what,
            hasher: Hasher::new(digest.algorithm()),
            digest,
            size,
            tmp,
            file: Some(io::BufWriter::with_capacity(256 << 10, file)),
            dest: self.clone(),
        })
    }

    /// Copies a local blob (layout, archive) into the store, verifying it.
    pub fn ingest(
        &self,
        what: &'static str,
        desc: &Descriptor,
        mut r: impl Read,
        progress: &dyn Fn(u64),
        cancel: &AtomicBool,
    ) -> Result<()> {
        let mut w = self.writer(what, desc.digest.clone(), Some(desc.size))?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(ImageError::Cancelled);
            }
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ImageError::Io {
                        path: PathBuf::from(desc.digest.to_string()),
                        source: e,
                    })
                }
            };
            w.write(&buf[..n])?;
            progress(w.written());
        }
        w.commit()
    }

    /// Every blob in the store.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let dir = self.blobs.join(alg);
            for e in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
                let e = e.map_err(ImageError::io(&dir))?;
                if let Ok(d) = format!("{alg}:{}", e.file_name().to_string_lossy()).parse() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Removes a blob; returns the bytes freed.
    pub fn remove(&self, d: &Digest) -> Result<u64> {
        let p = self.path(d);
        let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&p) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(ImageError::Io { path: p, source: e }),
        }
    }
}

/// A blob being written: hashed as it comes, and only renamed into the store
/// when digest and size match. Dropped uncommitted, it leaves nothing behind.
pub(crate) struct BlobWriter {
    what: &'static str,
    digest: Digest,
    size: Option<u64>,
    hasher: Hasher,
    tmp: PathBuf,
    file: Option<io::BufWriter<File>>,
    dest: ContentStore,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if let Some(size) = self.size {
            if self.hasher.len() + data.len() as u64 > size {
                return Err(ImageError::DigestMismatch {
                    what: self.what,
                    expected: format!("{} ({size} bytes)", self.digest),
                    actual: "longer content".into(),
                    size: self.hasher.len() + data.len() as u64,
                });
            }
        }
        self.hasher.update(data);
        let f = self.file.as_mut().expect("file is present until commit");
        f.write_all(data).map_err(ImageError::io(&self.tmp))
    }

    /// Verifies, syncs and renames the blob into place.
    pub fn commit(mut self) -> Result<()> {
        let hasher = std::mem::replace(&mut self.hasher, Hasher::new(self.digest.algorithm()));
        hasher.verify(self.what, &self.digest, self.size)?;
        let file = self.file.take().expect("file is present until commit");
        let file = file
            .into_inner()
            .map_err(|e| ImageError::Io { path: self.tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(ImageError::io(&self.tmp))?;
        drop(file);
        let dest = self.dest.path(&self.digest);
        fs::rename(&self.tmp, &dest).map_err(ImageError::io(&dest))?;
        fsync_dir(dest.parent().expect("blob paths have a parent"))?;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful commit the temp name no longer exists.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let s = ContentStore::new(dir.path()).unwrap();
        (dir, s)
    }

    fn tmp_is_empty(dir: &Path) -> bool {
        fs::read_dir(dir.join("tmp")).unwrap().next().is_none()
    }

    #[test]
    fn verified_content_lands_under_its_digest() {
        let (dir, s) = store();
        let d = Digest::sha256_of(b"hello");
        s.put("blob", &d, b"hello").unwrap();
        assert_eq!(s.read(&d, 100).unwrap(), b"hello");
        assert_eq!(s.list().unwrap(), vec![d.clone()]);
        assert_eq!(s.remove(&d).unwrap(), 5);
        assert!(!s.has(&d));
        assert!(tmp_is_empty(dir.path()));
    }

    #[test]
    fn wrong_digest_short_or_long_content_leaves_nothing() {
        let (dir, s) = store();
        let d = Digest::sha256_of(b"hello");
        assert!(matches!(s.put("blob", &d, b"jello"), Err(ImageError::DigestMismatch { .. })));
        let desc = Descriptor {
            media_type: "x".into(),
            digest: d.clone(),
            size: 5,
            platform: None,
            annotations: Default::default(),
            urls: vec![],
        };
        let err =
            s.ingest("layer", &desc, &b"hel"[..], &|_| {}, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { size: 3, .. }), "{err}");
        let err = s
            .ingest("layer", &desc, &b"hello world"[..], &|_| {}, &AtomicBool::new(false))
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!s.has(&d));
        assert!(tmp_is_empty(dir.path()));
        s.ingest("layer", &desc, &b"hello"[..], &|_| {}, &AtomicBool::new(false)).unwrap();
        assert!(s.has(&d));
    }
}

//! Garbage collection: removes blobs and unpacked layers that no recorded
//! image refers to. Images themselves go only by [`ImageStore::remove`];
//! layers under a container rootfs are safe because its image stays recorded.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::content::temp_path;
use super::digest::Digest;
use super::error::{ImageError, Result};
use super::source::blocking;
use super::store::ImageStore;

/// What a collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub layers_removed: usize,
    pub bytes_freed: u64,
}

impl ImageStore {
    /// Removes every blob and unpacked layer no image refers to, and any
    /// leftovers of interrupted pulls. Waits for pulls in progress to finish
    /// and holds new ones off while it runs.
    pub async fn gc(&self) -> Result<GcReport> {
        let _exclusive = self.inner.gc_lock.write().await;
        let store = self.clone();
        let report = blocking(move || store.collect()).await?;
        metrics::counter!("berth_kubelet_image_gc_freed_bytes_total").increment(report.bytes_freed);
        tracing::info!(
            blobs = report.blobs_removed,
            layers = report.layers_removed,
            bytes = report.bytes_freed,
            "image gc done"
        );
        Ok(report)
    }

    fn collect(&self) -> Result<GcReport> {
        let inner = &self.inner;
        let (blobs, layers) = self.referenced();
        let blobs: HashSet<Digest> = blobs.into_iter().collect();
        let layers: HashSet<Digest> = layers.into_iter().collect();
        let mut report = GcReport::default();

        for d in inner.content.list()? {
            if !blobs.contains(&d) {
                report.bytes_freed += inner.content.remove(&d)?;
                report.blobs_removed += 1;
                tracing::debug!(blob = %d, "blob collected");
            }
        }
        for alg in ["sha256", "sha512"] {
            let dir = inner.layers.join(alg);
            for e in fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
                let e = e.map_err(ImageError::io(&dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let keep =
                    format!("{alg}:{name}").parse::<Digest>().is_ok_and(|d| layers.contains(&d));
                if keep {
                    continue;
                }
                // Renamed away first, so a crash mid-delete never leaves a
                // half-deleted layer under its content address.
                let doomed = temp_path(&inner.tmp, "gc-layer");
                fs::rename(e.path(), &doomed).map_err(ImageError::io(e.path()))?;
                report.bytes_freed += disk_usage(&doomed);
                fs::remove_dir_all(&doomed).map_err(ImageError::io(&doomed))?;
                report.layers_removed += 1;
                tracing::debug!(layer = %name, "layer collected");
            }
        }
        // No pull runs now (the GC lock is exclusive): anything in tmp/ is debris.
        for e in fs::read_dir(&inner.tmp).map_err(ImageError::io(&inner.tmp))?.flatten() {
            let p = e.path();
            report.bytes_freed += disk_usage(&p);
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
        Ok(report)
    }
}

/// Bytes of regular files under `path` (each hard-linked inode once).
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
            total += m.len();
        }
    }
    total
}

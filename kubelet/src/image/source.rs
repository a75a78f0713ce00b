//! Where an image is pulled from, and the one fetch interface the store uses
//! for all of them, so digest checks happen the same way whatever the source.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::content::ContentStore;
use super::digest::{Digest, Hasher};
use super::error::{ImageError, Result};
use super::layout::Layout;
use super::manifest::{Descriptor, MAX_MANIFEST_BYTES};
use super::reference::Reference;
use super::registry::RegistryClient;

/// An image source, as `berth image pull` spells it:
/// `REFERENCE` or `docker://REFERENCE` for a registry, `oci:DIR[:TAG]` for an
/// OCI layout directory, `oci-archive:FILE[:TAG]` for an oci-archive tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Registry(Reference),
    OciLayout { path: PathBuf, tag: Option<String> },
    OciArchive { path: PathBuf, tag: Option<String> },
}

impl FromStr for ImageSource {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self> {
        let local = |rest: &str| -> Result<(PathBuf, Option<String>)> {
            // A ':' after the last '/' separates the tag from the path.
            let slash = rest.rfind('/').map_or(0, |i| i + 1);
            let (path, tag) = match rest[slash..].rfind(':') {
                Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
                None => (rest, None),
            };
            if path.is_empty() || tag.as_deref() == Some("") {
                return Err(ImageError::InvalidReference {
                    reference: s.to_string(),
                    reason: "expected PATH or PATH:TAG".into(),
                });
            }
            Ok((PathBuf::from(path), tag))
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = local(rest)?;
            Ok(ImageSource::OciLayout { path, tag })
        } else if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = local(rest)?;
            Ok(ImageSource::OciArchive { path, tag })
        } else {
            Ok(ImageSource::Registry(s.strip_prefix("docker://").unwrap_or(s).parse()?))
        }
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, path, tag) = match self {
            ImageSource::Registry(r) => return write!(f, "{r}"),
            ImageSource::OciLayout { path, tag } => ("oci", path, tag),
            ImageSource::OciArchive { path, tag } => ("oci-archive", path, tag),
        };
        write!(f, "{prefix}:{}", path.display())?;
        if let Some(t) = tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

/// The document a source names: its bytes (already checked where the source
/// gives a digest), its digest and the media type the source declared.
pub(crate) struct Top {
    pub media_type: Option<String>,
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// The name an archive's exporter recorded, if any.
    pub recorded_name: Option<String>,
}

/// One fetch interface over registries and local layouts.
#[derive(Clone)]
pub(crate) enum Fetcher {
    Registry { client: Arc<RegistryClient>, reference: Reference },
    Layout(Arc<Layout>, Option<String>),
}

impl Fetcher {
    pub async fn open(source: &ImageSource, client: &Arc<RegistryClient>) -> Result<Fetcher> {
        Ok(match source {
            ImageSource::Registry(r) => {
                Fetcher::Registry { client: client.clone(), reference: r.clone() }
            }
            ImageSource::OciLayout { path, tag } => {
                let p = path.clone();
                let layout = blocking(move || Layout::open_dir(&p)).await?;
                Fetcher::Layout(Arc::new(layout), tag.clone())
            }
            ImageSource::OciArchive { path, tag } => {
                let p = path.clone();
                let layout = blocking(move || Layout::open_archive(&p)).await?;
                Fetcher::Layout(Arc::new(layout), tag.clone())
            }
        })
    }

    pub async fn top(&self) -> Result<Top> {
        match self {
            Fetcher::Registry { client, reference } => {
                let m = client.manifest(reference, &reference.manifest_key()).await?;
                // By digest, the reference's digest is the check; by tag, the
                // registry's Docker-Content-Digest is, when it sends one.
                let digest = match reference.digest().or(m.digest.as_ref()) {
                    Some(d) => {
                        let mut h = Hasher::new(d.algorithm());
                        h.update(&m.bytes);
                        h.verify("manifest", d, None)?;
                        d.clone()
                    }
                    None => Digest::sha256_of(&m.bytes),
                };
                Ok(Top { media_type: m.media_type, bytes: m.bytes, digest, recorded_name: None })
            }
            Fetcher::Layout(layout, tag) => {
                let desc = layout.resolve(tag.as_deref())?;
                let bytes = self.small_blob("manifest", &desc, MAX_MANIFEST_BYTES).await?;
                Ok(Top {
                    media_type: Some(desc.media_type.clone()),
                    bytes,
                    recorded_name: Layout::recorded_name(&desc).map(str::to_string),
                    digest: desc.digest,
                })
            }
        }
    }

    /// A manifest or config, read whole and checked against `desc`.
    pub async fn small_blob(
        &self,
        what: &'static str,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(ImageError::malformed(
                format!("{what} {}", desc.digest),
                format!("{} bytes is over the {limit}-byte limit", desc.size),
            ));
        }
        let bytes = match self {
            Fetcher::Registry { client, reference } => {
                if matches!(what, "manifest" | "index") {
                    client.manifest(reference, &desc.digest.to_string()).await?.bytes
                } else {
                    client.blob(reference, &desc.digest).await?.bytes(limit).await?
                }
            }
            Fetcher::Layout(layout, _) => {
                let (layout, d) = (layout.clone(), desc.digest.clone());
                blocking(move || layout.read_blob(&d, limit)).await?
            }
        };
        let mut h = Hasher::new(desc.digest.algorithm());
        h.update(&bytes);
        h.verify(what, &desc.digest, Some(desc.size))?;
        Ok(bytes)
    }

    /// Streams a blob into the content store, verified; `progress` sees the
    /// bytes done so far.
    pub async fn blob_to_store(
        &self,
        content: &ContentStore,
        what: &'static str,
        desc: &Descriptor,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
        cancel: &Arc<AtomicBool>,
    ) -> Result<()> {
        match self {
            Fetcher::Registry { client, reference } => {
                let mut resp = client.blob(reference, &desc.digest).await?;
                let mut w = content.writer(what, desc.digest.clone(), Some(desc.size))?;
                while let Some(chunk) = resp.chunk().await? {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(ImageError::Cancelled);
                    }
                    w.write(&chunk)?;
                    metrics::counter!("berth_kubelet_image_downloaded_bytes_total")
                        .increment(chunk.len() as u64);
                    progress(w.written());
                }
                drop(resp);
                // fsync and rename block; keep them off the async workers.
                blocking(move || w.commit()).await
            }
            Fetcher::Layout(layout, _) => {
                let (layout, content, desc, cancel) =
                    (layout.clone(), content.clone(), desc.clone(), cancel.clone());
                blocking(move || {
                    let (r, _) = layout.open_blob(&desc.digest)?;
                    content.ingest(what, &desc, r, &*progress, &cancel)
                })
                .await
            }
        }
    }
}

/// Runs blocking file work on tokio's blocking pool and waits for it.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ImageError::Io {
            path: PathBuf::from("<blocking task>"),
            source: std::io::Error::other(format!("blocking task failed: {e}")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_source_strings() {
        let s: ImageSource = "oci:/srv/images/app:v1".parse().unwrap();
        assert_eq!(
            s,
            ImageSource::OciLayout { path: "/srv/images/app".into(), tag: Some("v1".into()) }
        );
        let s: ImageSource = "oci-archive:./app.tar".parse().unwrap();
        assert_eq!(s, ImageSource::OciArchive { path: "./app.tar".into(), tag: None });
        assert_eq!(s.to_string(), "oci-archive:./app.tar");
        let s: ImageSource = "docker://busybox:1.36".parse().unwrap();
        assert_eq!(s.to_string(), "docker.io/library/busybox:1.36");
        assert!("oci:".parse::<ImageSource>().is_err());
        assert!("oci:/dir:".parse::<ImageSource>().is_err());
    }
}

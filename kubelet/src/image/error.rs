//! The image store's one error type.

use std::path::PathBuf;

/// What went wrong pulling, storing or mounting an image, phrased by what the
/// caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image reference or source string does not parse: fix the spelling.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// No image by this name or digest in the registry, layout or store:
    /// check the name, the tag and the source.
    #[error("image {0} not found")]
    NotFound(String),

    /// The registry refused the credentials or gave no token: check the
    /// credentials configured for this registry.
    #[error("registry {registry}: unauthorized: {reason}")]
    Unauthorized { registry: String, reason: String },

    /// The registry could not be reached or answered with an unexpected
    /// status; retrying later may help.
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },

    /// Content did not hash to the digest that named it (or had another size):
    /// the source is corrupt or was tampered with; nothing of it was kept.
    #[error("{what} {expected}: content has digest {actual} ({size} bytes)")]
    DigestMismatch { what: &'static str, expected: String, actual: String, size: u64 },

    /// The manifest, index, config or layer uses a media type or format this
    /// store does not handle: use an image built with OCI or Docker v2 types.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The index has no manifest for this host's platform: pull an image built
    /// for it.
    #[error("no manifest for platform {platform} in index {index}")]
    NoMatchingPlatform { platform: String, index: String },

    /// A manifest, index, config or layer is malformed (bad JSON, truncated
    /// or corrupt tar or gzip): the image is broken at its source.
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },

    /// A layer entry would land outside the layer (`..`, or a path through a
    /// symlink): the image is unsafe and was refused.
    #[error("layer {layer}: entry {entry:?} escapes the layer: {reason}")]
    UnsafeEntry { layer: String, entry: String, reason: String },

    /// The pull was dropped, or another of its layers failed first; nothing
    /// of this layer was kept.
    #[error("pull cancelled")]
    Cancelled,

    /// A container rootfs uses this image: remove the container first.
    #[error("image {image} is in use by container rootfs {containers:?}")]
    InUse { image: String, containers: Vec<String> },

    /// A rootfs for this container id already exists: remove it first or
    /// pick another id.
    #[error("rootfs for container {0} already exists")]
    RootfsExists(String),

    /// The container id could escape the store's directories: use letters,
    /// digits, '.', '_' and '-'.
    #[error("invalid container id {0:?}: use letters, digits, '.', '_' and '-'")]
    InvalidContainerId(String),

    /// Another process holds the store's lock: only one process may own a
    /// store directory at a time.
    #[error("image store {0} is in use by another process")]
    Locked(PathBuf),

    /// The store's metadata file is corrupt: restore it from a backup or move
    /// the store aside and pull again.
    #[error("image store metadata {path}: {reason}")]
    CorruptMetadata { path: PathBuf, reason: String },

    /// A system call failed (mount, mknod, xattr); the context says which.
    /// Most need root or a kernel with overlayfs.
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },

    /// A file in the store or a local source could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }

    pub(crate) fn sys(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let context = context.into();
        move |source| ImageError::Sys { context, source }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl ToString) -> Self {
        ImageError::Malformed { what: what.into(), reason: reason.to_string() }
    }

    pub(crate) fn registry(registry: &str, reason: impl ToString) -> Self {
        ImageError::Registry { registry: registry.to_string(), reason: reason.to_string() }
    }
}

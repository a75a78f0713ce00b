//! The image store: pulls OCI images from distribution registries (HTTP or
//! HTTPS, anonymous, basic or bearer-token auth), OCI layout directories and
//! oci-archive tarballs; verifies every digest; unpacks each layer once into a
//! content-addressed directory with whiteouts in overlayfs form; and makes
//! each container's rootfs an overlayfs mount of its image's layers under the
//! container's own upper dir.
//!
//! [`ImageStore`] is the door: `pull`, `list`, `status`, `remove`, `gc`, and
//! `create_rootfs`/`remove_rootfs`. One file per concern sits behind it:
//! references, the registry client (transport, auth), local layouts, the
//! content store, unpacking, rootfs mounts and GC.

mod auth;
mod build;
mod content;
mod digest;
mod error;
mod gc;
mod layout;
mod manifest;
mod progress;
mod reference;
mod registry;
mod rootfs;
mod source;
mod store;
mod transport;
pub(crate) mod unpack;

pub use auth::Credentials;
pub use build::{busybox_layout, busybox_layout_with_cmd};
pub use digest::{Algorithm, Digest};
pub use error::ImageError;
pub use gc::GcReport;
pub use manifest::{Platform, RunConfig};
pub use progress::{human_bytes, pull_summary};
pub use reference::Reference;
pub use registry::RegistryConfig;
pub use rootfs::Rootfs;
pub use source::ImageSource;
pub use store::{Image, ImageStore, Layer, LayerPhase, ProgressFn, PullEvent, PullOptions};

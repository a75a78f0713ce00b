//! berth-kubelet: the node agent and everything below it.
//!
//! The kubelet drives each pod bound to its node through CRI; berth's own
//! runtime service turns CRI calls into OCI runtime specs run by the executor
//! (namespaces, cgroups) on images from the image store, wires pods up with
//! CNI plugins, and hosts device plugins.

pub mod agent;
pub mod cri;
pub mod devices;
pub mod executor;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;

pub use cri::{CriError, CriServer, RuntimeConfig as CriConfig};
pub use image::{ImageError, ImageSource, ImageStore};

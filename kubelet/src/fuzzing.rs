//! Entry points for berth's fuzz targets (fuzz/ at the repository root)
//! into readers of untrusted input that are private to their modules. Not
//! an API: nothing else calls these.

use crate::image::{Digest, ImageError};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Unpacks the layer blob at `blob` (a tar, plain, gzip or zstd) into
/// `dest`, an empty directory, as a pull does. The expected diff_id is the
/// blob's own sha256, so a plain tar unpacks completely and a compressed one
/// unpacks and then fails the digest check. Returns the entries unpacked.
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<u64, ImageError> {
    let bytes = std::fs::read(blob).map_err(ImageError::io(blob))?;
    let diff_id = Digest::sha256_of(&bytes);
    crate::image::unpack::unpack_layer(blob, &diff_id, dest, &AtomicBool::new(false))
        .map(|u| u.entries)
}

/// What the CRI runtime takes from a CNI plugin's stdout: the result, and
/// from it the pod's address.
pub fn cni_result(stdout: &[u8]) -> (Value, Option<String>) {
    let result = crate::cri::cni::plugin_output(stdout);
    let address = crate::cri::cni::pod_address(&result);
    (result, address)
}

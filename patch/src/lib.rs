//! berth-patch: how a client changes an object without sending it whole,
//! on the object's JSON form. JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902) and strategic merge patch in [`Patch`]; server-side apply and
//! the field ownership it records in metadata.managedFields in [`apply`]
//! and [`track_update`].
//!
//! Pure functions of JSON values: the API server reads and writes the
//! objects around them, so they can be tested and fuzzed on their own.

mod error;
mod formats;
mod ownership;

pub use error::PatchError;
pub use formats::Patch;
pub use ownership::{apply, track_update, Manager};

//! PATCH bodies on an object's JSON form. The first byte picks the format
//! (merge, JSON or strategic merge patch); the rest is the object's JSON, a
//! NUL byte, and the patch. Parsing and applying never panic or hang, a
//! merge patch applied twice changes nothing more (RFC 7386 patches are
//! idempotent), and a patched object is still JSON.
#![no_main]

use berth_patch::Patch;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const TYPES: [&str; 3] = [
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let content_type = TYPES[usize::from(which) % TYPES.len()];
    let (document, body) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&b"{}"[..], rest),
    };
    let Ok(mut document) = serde_json::from_slice::<Value>(document) else { return };
    let Ok(patch) = Patch::parse(content_type, body) else { return };
    if patch.apply(&mut document).is_err() {
        return;
    }
    if content_type == TYPES[0] {
        let once = document.clone();
        patch.apply(&mut document).expect("a merge patch always applies");
        assert_eq!(document, once, "a merge patch applied twice changed the object again");
    }
    serde_json::to_vec(&document).expect("a patched object is JSON");
});

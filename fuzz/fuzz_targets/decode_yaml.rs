//! Manifests in YAML (several documents, `---` between them), as `berth
//! apply -f` reads them: decoding never panics, each object survives JSON
//! and protobuf round trips, and its own YAML decodes back to it.
#![no_main]

use berth_proto::Object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(objects) = Object::from_yaml_documents(text) else { return };
    for object in &objects {
        berth_fuzz::check_round_trips(object);
        let yaml = object.to_yaml();
        let back = Object::from_yaml_documents(&yaml).unwrap_or_else(|e| {
            panic!("{}'s own YAML does not decode: {e}\n{yaml}", object.kind())
        });
        assert_eq!(back, std::slice::from_ref(object), "YAML round trip changed the object");
    }
});

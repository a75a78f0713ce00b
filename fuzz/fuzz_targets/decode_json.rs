//! A manifest in JSON, as `kubectl apply` and the REST API send it: decoding
//! never panics, and what decodes survives JSON and protobuf round trips.
#![no_main]

use berth_proto::Object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = Object::from_json(data) {
        berth_fuzz::check_round_trips(&object);
    }
});

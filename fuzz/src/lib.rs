//! What several fuzz targets check: that an API object survives the
//! encodings berth promises it survives.

use berth_proto::Object;

/// An object decoded from any encoding encodes to JSON and protobuf and
/// decodes back from each to an equal object: the API serves JSON and the
/// store keeps protobuf, and neither may change what was written.
pub fn check_round_trips(object: &Object) {
    let json = object.to_json();
    let back = Object::from_json(&json).unwrap_or_else(|e| {
        panic!(
            "{}'s own JSON does not decode: {e}\n{}",
            object.kind(),
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(&back, object, "JSON round trip changed the object");
    let bytes = object.encode_to_vec();
    let back = Object::from_protobuf(object.kind(), &bytes)
        .expect("a decoded object's kind is served")
        .unwrap_or_else(|e| panic!("{}'s own protobuf does not decode: {e}", object.kind()));
    assert_eq!(&back, object, "protobuf round trip changed the object");
}

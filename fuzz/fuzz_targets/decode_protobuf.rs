//! Objects in protobuf, as the store keeps them and gRPC clients send them
//! (the first byte picks the kind): decoding never panics, and what decodes
//! survives protobuf and JSON round trips.
#![no_main]

use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Event, Namespace, Node, Pod};
use berth_proto::{Object, Resource};
use libfuzzer_sys::fuzz_target;

/// Decodes as `T`, with the apiVersion and kind a served object carries.
fn decode<T: Resource>(bytes: &[u8]) -> Option<T> {
    let mut object = T::decode(bytes).ok()?;
    object.set_type_meta();
    Some(object)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let object = match which % 7 {
        0 => decode::<Pod>(bytes).map(Object::Pod),
        1 => decode::<Deployment>(bytes).map(Object::Deployment),
        2 => decode::<ReplicaSet>(bytes).map(Object::ReplicaSet),
        3 => decode::<Node>(bytes).map(Object::Node),
        4 => decode::<Namespace>(bytes).map(Object::Namespace),
        5 => decode::<Event>(bytes).map(Object::Event),
        _ => decode::<Lease>(bytes).map(Object::Lease),
    };
    if let Some(object) = object {
        berth_fuzz::check_round_trips(&object);
    }
});

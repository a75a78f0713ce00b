//! Resource quantities ("250m", "1.5Gi", "2e3"): parsing never panics, a
//! parsed quantity prints in a form that parses back to the same value, in
//! text and in protobuf, and printing is stable from the first reprint on.
//! (Not before: as in Kubernetes, 312.5Ki prints as 320000, which reads back
//! as a plain decimal and prints as 320k.)
#![no_main]

use berth_proto::Quantity;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(quantity) = Quantity::parse(text) else { return };
    let canonical = quantity.to_string();
    let again = Quantity::parse(&canonical)
        .unwrap_or_else(|e| panic!("{text:?} prints as {canonical:?}, which does not parse: {e}"));
    assert_eq!(again, quantity, "{text:?} prints as {canonical:?}, another value");
    let reprinted = again.to_string();
    let third = Quantity::parse(&reprinted).expect("a reprinted quantity parses");
    assert_eq!(third.to_string(), reprinted, "the printed form of {text:?} is not stable");
    let wire = Quantity::decode(quantity.encode_to_vec().as_slice())
        .unwrap_or_else(|e| panic!("{text:?} does not survive protobuf: {e}"));
    assert_eq!(wire, quantity);
    // Rounding and arithmetic must not overflow or panic either.
    let _ = (quantity.value(), quantity.milli_value(), quantity.checked_neg());
    let _ = (quantity.checked_add(&quantity), quantity.checked_sub(&again));
});

//! A CNI plugin's stdout, as the CRI runtime reads it after ADD: reading
//! never panics, and the pod address it takes is an IP address.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, address) = berth_kubelet::fuzzing::cni_result(data);
    if let Some(address) = address {
        address
            .parse::<std::net::IpAddr>()
            .unwrap_or_else(|e| panic!("pod address {address:?} is not an IP address: {e}"));
    }
});

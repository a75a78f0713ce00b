//! Each local cluster's pod network: a block of addresses and bridge names
//! of its own, derived from its directory, so that several `berth up`
//! clusters on one host never share a CNI bridge or a subnet.
//!
//! Cluster block `b` (0..2048) is 10.128.0.0/9's `b`-th /20; its node `n`
//! (1..=16) gets the block's `n-1`-th /24 on the bridge `berth<b as 3 hex
//! digits>-<n>` (at most 10 characters; Linux allows 15). The block is
//! chosen once, on the cluster's first start, and kept in its layout.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// /20 blocks in 10.128.0.0/9.
const BLOCKS: u32 = 1 << 11;
const FIRST_BLOCK: u32 = 10 << 24 | 128 << 16;
/// /24 subnets in a /20: the nodes a cluster can have.
pub const MAX_NODES: usize = 16;

/// A cluster's block of pod addresses and bridge names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    block: u32,
}

impl PodNetwork {
    /// The block for the cluster kept in `dir`: the one its path hashes to,
    /// or the next one whose bridges do not exist and whose addresses no
    /// route of this host covers.
    pub fn choose(dir: &Path) -> Result<PodNetwork> {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let exists = |bridge: &str| Path::new("/sys/class/net").join(bridge).exists();
        PodNetwork::choose_among(&dir, &host_routes(), exists)
    }

    fn choose_among(
        dir: &Path,
        routes: &[(u32, u32)],
        bridge_exists: impl Fn(&str) -> bool,
    ) -> Result<PodNetwork> {
        let start = fnv1a(dir.as_os_str().as_encoded_bytes()) % u64::from(BLOCKS);
        for step in 0..BLOCKS {
            let network = PodNetwork { block: (start as u32 + step) % BLOCKS };
            let (base, mask) = network.range();
            // The default route (mask 0) covers everything and counts not.
            let routed = routes.iter().any(|&(dest, m)| {
                let common = m & mask;
                m != 0 && dest & common == base & common
            });
            let bridged = (1..=MAX_NODES).any(|n| bridge_exists(&network.bridge(n)));
            if !routed && !bridged {
                return Ok(network);
            }
        }
        bail!("every pod network block in 10.128.0.0/9 is in use on this host")
    }

    /// The block's first address and netmask (host order).
    fn range(&self) -> (u32, u32) {
        (FIRST_BLOCK + (self.block << 12), !0u32 << 12)
    }

    /// Node `n`'s bridge (nodes count from 1).
    pub fn bridge(&self, n: usize) -> String {
        format!("berth{:03x}-{n}", self.block)
    }

    /// The cluster's whole block, a /20.
    pub fn block_cidr(&self) -> String {
        format!("{}/20", std::net::Ipv4Addr::from(self.range().0))
    }

    /// Node `n`'s pod subnet, a /24 (nodes count from 1, at most
    /// [`MAX_NODES`]).
    pub fn subnet(&self, n: usize) -> String {
        let base = self.range().0 + ((n as u32 - 1) << 8);
        format!("{}/24", std::net::Ipv4Addr::from(base))
    }
}

/// FNV-1a: a small hash that stays the same across builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// This host's IPv4 routes as (destination, mask), host order.
fn host_routes() -> Vec<(u32, u32)> {
    parse_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
}

fn parse_routes(text: &str) -> Vec<(u32, u32)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Each address is printed as its network-order bytes read as a
            // native-endian number.
            let field = |i: usize| u32::from_str_radix(fields.get(i)?, 16).ok();
            let (dest, mask) = (field(1)?, field(7)?);
            Some((u32::from_be_bytes(dest.to_ne_bytes()), u32::from_be_bytes(mask.to_ne_bytes())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_and_subnets_stay_inside_the_block() {
        let last = PodNetwork { block: BLOCKS - 1 };
        assert_eq!(last.bridge(MAX_NODES), "berth7ff-16");
        assert!(last.bridge(MAX_NODES).len() <= 15);
        assert_eq!(last.subnet(MAX_NODES), "10.255.255.0/24");
        let first = PodNetwork { block: 0 };
        assert_eq!(first.subnet(1), "10.128.0.0/24");
        assert_eq!(PodNetwork { block: 1 }.subnet(1), "10.128.16.0/24");
    }

    #[test]
    fn two_directories_get_different_blocks_and_one_keeps_its_own() {
        let none = |_: &str| false;
        let (a, b) = (Path::new("/srv/a"), Path::new("/srv/b"));
        let na = PodNetwork::choose_among(a, &[], none).unwrap();
        let nb = PodNetwork::choose_among(b, &[], none).unwrap();
        assert_ne!(na.bridge(1), nb.bridge(1));
        assert_ne!(na.subnet(1), nb.subnet(1));
        assert_eq!(PodNetwork::choose_among(a, &[], none).unwrap(), na);
    }

    #[test]
    fn a_block_in_use_is_passed_over() {
        let dir = Path::new("/srv/a");
        let free = PodNetwork::choose_among(dir, &[], |_| false).unwrap();
        let next = PodNetwork { block: (free.block + 1) % BLOCKS };
        // A route into the block (a /24 inside it, or a /16 around it).
        let (base, _) = free.range();
        for route in [(base + (3 << 8), !0u32 << 8), (base & !0xffff, !0u32 << 16)] {
            let chosen = PodNetwork::choose_among(dir, &[route, (0, 0)], |_| false).unwrap();
            assert_ne!(chosen, free, "{route:x?}");
        }
        // The default route alone takes nothing.
        assert_eq!(PodNetwork::choose_among(dir, &[(0, 0)], |_| false).unwrap(), free);
        // A bridge of the block left on the host.
        let taken = free.bridge(2);
        assert_eq!(PodNetwork::choose_among(dir, &[], |b| b == taken).unwrap(), next);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn routes_are_read_in_host_order() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        let net = u32::from_be_bytes([192, 0, 2, 0]);
        assert_eq!(parse_routes(text), vec![(0, 0), (net, 0xffff_ff00)]);
    }
}

//! The fault schedule: drawn from a seed, so the same seed gives the same
//! faults in the same order with the same timings. Who a fault hits ("the
//! leader", "the active scheduler") is resolved when it is applied.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A small deterministic generator (SplitMix64); the schedule must not
/// depend on any library's choice of algorithm.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultKind {
    /// The Raft leader loses all traffic with the other peers.
    IsolateLeader,
    /// A minority of the peers loses all traffic with the majority.
    SplitMajorityMinority,
    /// Two sides that cannot reach each other, and one peer that reaches both.
    BridgePartition,
    /// One peer's packets to another are dropped; the reverse direction works.
    OneWayLoss,
    /// SIGKILL of a peer, restarted on the same data directory when healed.
    KillPeer,
    /// SIGKILL of the Raft leader, restarted when healed.
    KillLeader,
    /// SIGSTOP of the leader, SIGCONT when healed: it wakes believing it leads.
    PauseLeader,
    /// SIGKILL of the scheduler replica holding the Lease, restarted when healed.
    KillScheduler,
    /// SIGKILL of the controller-manager replica holding the Lease.
    KillControllerManager,
    /// Delay and loss on one peer's link (tc netem; nftables random drops
    /// where the kernel has no netem).
    DelayAndLoss,
    /// The leader-elected writer frozen mid-flight for longer than its Lease,
    /// then woken still believing it leads.
    PauseFencedWriter,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::IsolateLeader,
        FaultKind::SplitMajorityMinority,
        FaultKind::BridgePartition,
        FaultKind::OneWayLoss,
        FaultKind::KillPeer,
        FaultKind::KillLeader,
        FaultKind::PauseLeader,
        FaultKind::KillScheduler,
        FaultKind::KillControllerManager,
        FaultKind::DelayAndLoss,
        FaultKind::PauseFencedWriter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::SplitMajorityMinority => "split-majority-minority",
            FaultKind::BridgePartition => "bridge-partition",
            FaultKind::OneWayLoss => "one-way-loss",
            FaultKind::KillPeer => "kill-peer",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::KillScheduler => "kill-scheduler",
            FaultKind::KillControllerManager => "kill-controller-manager",
            FaultKind::DelayAndLoss => "delay-and-loss",
            FaultKind::PauseFencedWriter => "pause-fenced-writer",
        }
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub index: usize,
    pub kind: FaultKind,
    /// Drawn once per fault; picks targets and sides when it is applied.
    pub pick: u64,
    /// How long the fault holds before it is healed.
    pub hold_ms: u64,
    /// How long the cluster runs healed before the next fault.
    pub gap_ms: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} for {} ms, then {} ms healed (pick {:#x})",
            self.index,
            self.kind.name(),
            self.hold_ms,
            self.gap_ms,
            self.pick
        )
    }
}

/// `count` faults from `seed`: each round takes every kind once, in an order
/// drawn from the seed, so a run of [`FaultKind::ALL`]`.len()` (11) or more
/// covers them all.
pub fn draw(seed: u64, count: usize, hold_ms: (u64, u64), gap_ms: (u64, u64)) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    let mut faults = Vec::with_capacity(count);
    while faults.len() < count {
        let mut round = FaultKind::ALL;
        rng.shuffle(&mut round);
        for kind in round.into_iter().take(count - faults.len()) {
            faults.push(Fault {
                index: faults.len() + 1,
                kind,
                pick: rng.next_u64(),
                hold_ms: rng.between(hold_ms.0, hold_ms.1),
                gap_ms: rng.between(gap_ms.0, gap_ms.1),
            });
        }
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        let a = draw(7, 25, (1000, 3000), (500, 1500));
        assert_eq!(a, draw(7, 25, (1000, 3000), (500, 1500)));
        assert_ne!(a, draw(8, 25, (1000, 3000), (500, 1500)));
        assert!(a.iter().all(|f| (1000..=3000).contains(&f.hold_ms)));
        assert!(a.iter().all(|f| (500..=1500).contains(&f.gap_ms)));
    }

    #[test]
    fn one_round_covers_every_kind() {
        let faults = draw(42, FaultKind::ALL.len(), (1, 2), (1, 2));
        let kinds: std::collections::HashSet<_> = faults.iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), FaultKind::ALL.len());
        assert_eq!(
            faults.iter().map(|f| f.index).collect::<Vec<_>>(),
            (1..=FaultKind::ALL.len()).collect::<Vec<_>>()
        );
    }
}

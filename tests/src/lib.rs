//! berth-tests: harnesses shared by the multi-process, chaos and end-to-end
//! tests and the benchmarks: history checkers and cluster launchers.

pub mod cluster;
pub mod fixtures;
pub mod processes;
pub mod proxy;
pub mod stats;

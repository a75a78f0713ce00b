//! berth-scheduler: places pods on nodes.
//!
//! [`run`] campaigns for the scheduler Lease and, while leading, runs the
//! scheduling loop with a fenced client: pending pods wait in a queue
//! (active by priority, back-off, unschedulable until a cluster event can
//! help), each is run through a framework of plugins with one trait per
//! extension point (queue sort, pre-filter, filter, post-filter, score,
//! reserve, bind), assumed on the chosen node in the cache, and bound
//! asynchronously through pods/binding.

mod cache;
pub mod framework;
mod plugins;
mod queue;
mod resources;
mod scheduler;

pub use queue::QueueTiming;
pub use resources::Resources;
pub use scheduler::{run, run_reporting, SchedulerConfig, DEFAULT_SCHEDULER_NAME, LEASE_NAME};

//! The plugins, one file each, and the default set of them.

mod balanced_allocation;
mod default_binder;
mod least_allocated;
mod node_affinity;
mod node_name;
mod node_unschedulable;
mod priority_sort;
mod resources_fit;
mod spread;
mod taint_toleration;
#[cfg(test)]
pub(crate) mod testing;

pub use default_binder::DefaultBinder;
#[cfg(test)]
pub(crate) use priority_sort::PrioritySort;

use crate::framework::Framework;
use berth_client::Client;
use std::sync::Arc;

/// The default plugins, in Kubernetes' order: cheap, decisive filters
/// first; resources last.
pub fn default_framework(client: Client) -> Framework {
    let affinity = Arc::new(node_affinity::NodeAffinity);
    let taints = Arc::new(taint_toleration::TaintToleration);
    Framework {
        queue_sort: Arc::new(priority_sort::PrioritySort),
        pre_filter: Vec::new(),
        filter: vec![
            Arc::new(node_name::NodeName),
            Arc::new(node_unschedulable::NodeUnschedulable),
            affinity.clone(),
            taints.clone(),
            Arc::new(resources_fit::ResourcesFit),
        ],
        post_filter: Vec::new(),
        score: vec![
            (Arc::new(least_allocated::LeastAllocated), 1),
            (Arc::new(balanced_allocation::BalancedAllocation), 1),
            (affinity, 2),
            (taints, 3),
            (Arc::new(spread::ControllerSpread), 2),
        ],
        reserve: Vec::new(),
        bind: vec![Arc::new(DefaultBinder::new(client))],
    }
}

//! Queue sort: higher spec.priority first, then whoever has waited longest.

use crate::framework::{QueueSort, QueuedPod};

pub struct PrioritySort;

impl QueueSort for PrioritySort {
    fn less(&self, a: &QueuedPod, b: &QueuedPod) -> bool {
        let (pa, pb) = (a.info.priority, b.info.priority);
        pa > pb || (pa == pb && a.queued < b.queued)
    }
}

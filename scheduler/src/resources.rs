//! Amounts of node resources, as the scheduler counts them: cpu in
//! millicores, memory and ephemeral storage in bytes, a pod count, and
//! extended resources (nvidia.com/gpu, hugepages-2Mi, ...) as integers.

use berth_proto::core_v1::Pod;
use berth_proto::Quantity;
use std::collections::BTreeMap;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// What a container without requests counts as when nodes are scored (not
/// when they are filtered), so that such pods still spread: Kubernetes'
/// 100m cpu and 200 MiB memory.
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    /// Extended resources by name.
    pub scalar: BTreeMap<String, i64>,
}

fn clamp(v: i128) -> i64 {
    v.clamp(0, i64::MAX as i128) as i64
}

impl Resources {
    /// From a capacity, allocatable or requests map.
    pub fn from_map<'a>(map: impl IntoIterator<Item = (&'a String, &'a Quantity)>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in map {
            match name.as_str() {
                CPU => r.milli_cpu = clamp(q.milli_value()),
                MEMORY => r.memory = clamp(q.value()),
                EPHEMERAL_STORAGE => r.ephemeral_storage = clamp(q.value()),
                PODS => r.pods = clamp(q.value()),
                other => {
                    r.scalar.insert(other.to_string(), clamp(q.value()));
                }
            }
        }
        r
    }

    /// What a pod asks of a node: the sum over its containers, or the
    /// largest init container if that is more (init containers run one at
    /// a time, before the others), and one pod slot.
    pub fn of_pod(pod: &Pod) -> Resources {
        let Some(spec) = &pod.spec else {
            return Resources { pods: 1, ..Default::default() };
        };
        let mut sum = Resources::default();
        for c in &spec.containers {
            if let Some(r) = &c.resources {
                sum.add(&Resources::from_map(&r.requests));
            }
        }
        for c in &spec.init_containers {
            if let Some(r) = &c.resources {
                sum.max_with(&Resources::from_map(&r.requests));
            }
        }
        sum.pods = 1;
        sum
    }

    /// Cpu and memory of a pod for scoring, with the defaults for
    /// containers that request none.
    pub fn non_zero_of_pod(pod: &Pod) -> (i64, i64) {
        let Some(spec) = &pod.spec else { return (DEFAULT_MILLI_CPU, DEFAULT_MEMORY) };
        let (mut cpu, mut memory) = (0i64, 0i64);
        for c in &spec.containers {
            let requests = c.resources.as_ref().map(|r| Resources::from_map(&r.requests));
            let requests = requests.unwrap_or_default();
            let has =
                |name: &str| c.resources.as_ref().is_some_and(|r| r.requests.contains_key(name));
            cpu = cpu.saturating_add(if has(CPU) { requests.milli_cpu } else { DEFAULT_MILLI_CPU });
            memory =
                memory.saturating_add(if has(MEMORY) { requests.memory } else { DEFAULT_MEMORY });
        }
        (cpu, memory)
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(other.ephemeral_storage);
        self.pods = self.pods.saturating_add(other.pods);
        for (name, v) in &other.scalar {
            let e = self.scalar.entry(name.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(other.ephemeral_storage);
        self.pods = self.pods.saturating_sub(other.pods);
        for (name, v) in &other.scalar {
            let e = self.scalar.entry(name.clone()).or_default();
            *e = e.saturating_sub(*v);
        }
    }

    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            let e = self.scalar.entry(name.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::core_v1::{Container, PodSpec, ResourceRequirements};

    fn container(cpu: &str, memory: &str) -> Container {
        Container {
            resources: Some(ResourceRequirements {
                requests: [
                    (CPU.to_string(), Quantity::parse(cpu).unwrap()),
                    (MEMORY.to_string(), Quantity::parse(memory).unwrap()),
                ]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_asks_for_its_containers_or_its_largest_init_container() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("250m", "64Mi"), container("250m", "64Mi")],
                init_containers: vec![container("1", "16Mi")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = Resources::of_pod(&pod);
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.memory, 128 * 1024 * 1024);
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn extended_resources_are_counted_by_name() {
        let map: BTreeMap<String, Quantity> =
            [("nvidia.com/gpu".to_string(), Quantity::parse("8").unwrap())].into();
        assert_eq!(Resources::from_map(&map).scalar["nvidia.com/gpu"], 8);
    }
}

//! A pod's requests and limits as the runtime applies them: cgroup cpu
//! shares from requests, a CFS quota and a memory limit from limits, and
//! the pod's QoS class (the cgroup level its pod goes under), computed as
//! Kubernetes does.

use berth_proto::core_v1::{Container, Pod};
use berth_proto::cri_v1 as cri;

/// The CFS period Kubernetes uses (100 ms).
const CPU_PERIOD: i64 = 100_000;

fn milli_cpu(q: Option<&berth_proto::Quantity>) -> Option<i64> {
    q.map(|q| q.milli_value().clamp(0, i64::MAX as i128) as i64)
}

fn bytes(q: Option<&berth_proto::Quantity>) -> Option<i64> {
    q.map(|q| q.value().clamp(0, i64::MAX as i128) as i64)
}

/// The container's cgroup limits.
pub(super) fn container(c: &Container) -> cri::LinuxContainerResources {
    let r = c.resources.clone().unwrap_or_default();
    // A limit without a request requests the limit.
    let cpu_request = milli_cpu(r.requests.get("cpu")).or(milli_cpu(r.limits.get("cpu")));
    let cpu_limit = milli_cpu(r.limits.get("cpu"));
    cri::LinuxContainerResources {
        cpu_shares: cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2)),
        cpu_period: if cpu_limit.is_some() { CPU_PERIOD } else { 0 },
        cpu_quota: cpu_limit.map_or(0, |m| (m * CPU_PERIOD / 1000).max(1000)),
        memory_limit_in_bytes: bytes(r.limits.get("memory")).unwrap_or(0),
        ..Default::default()
    }
}

/// Guaranteed, Burstable or BestEffort.
pub(super) fn qos_class(pod: &Pod) -> &'static str {
    // Init containers count as much as the others, as in Kubernetes.
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<&Container> = spec.init_containers.iter().chain(&spec.containers).collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let r = c.resources.clone().unwrap_or_default();
        any |= !r.requests.is_empty() || !r.limits.is_empty();
        for resource in ["cpu", "memory"] {
            let limit = r.limits.get(resource);
            let request = r.requests.get(resource).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (_, true) => "Guaranteed",
        (false, _) => "BestEffort",
        _ => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::core_v1::{PodSpec, ResourceRequirements};
    use berth_proto::Quantity;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let q = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), Quantity::parse(v).unwrap())).collect()
        };
        Container {
            resources: Some(ResourceRequirements { requests: q(requests), limits: q(limits) }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod { spec: Some(PodSpec { containers, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn requests_and_limits_become_cgroup_settings() {
        let r = super::container(&container(
            &[("cpu", "250m")],
            &[("cpu", "500m"), ("memory", "64Mi")],
        ));
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_quota, r.cpu_period), (50_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        let none = super::container(&Container::default());
        assert_eq!((none.cpu_shares, none.cpu_quota, none.memory_limit_in_bytes), (2, 0, 0));
    }

    #[test]
    fn qos_classes_follow_kubernetes() {
        let limits = [("cpu", "1"), ("memory", "1Gi")];
        assert_eq!(qos_class(&pod(vec![container(&[], &limits)])), "Guaranteed");
        assert_eq!(qos_class(&pod(vec![container(&limits, &limits)])), "Guaranteed");
        assert_eq!(qos_class(&pod(vec![container(&[("cpu", "100m")], &[])])), "Burstable");
        assert_eq!(qos_class(&pod(vec![container(&[], &[])])), "BestEffort");
    }
}

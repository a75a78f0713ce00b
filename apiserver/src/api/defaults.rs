//! Defaults Kubernetes applies to the fields berth supports, applied before
//! validation on create and update.

use berth_proto::apps_v1::{Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment};
use berth_proto::core_v1::{Container, PodSpec, PodTemplateSpec};
use berth_proto::IntOrString;

fn pod_spec(spec: &mut PodSpec) {
    if spec.restart_policy.is_empty() {
        spec.restart_policy = "Always".into();
    }
    spec.termination_grace_period_seconds.get_or_insert(30);
    if spec.dns_policy.is_empty() {
        spec.dns_policy = "ClusterFirst".into();
    }
    if spec.scheduler_name.is_empty() {
        spec.scheduler_name = "default-scheduler".into();
    }
    for container in spec.init_containers.iter_mut().chain(spec.containers.iter_mut()) {
        container_defaults(container);
    }
}

/// A Pod's defaults: its spec's, and as Kubernetes does for Pods (not for
/// pod templates), each container's limits copied into the requests it
/// leaves unset, for every resource, extended resources included; so the
/// scheduler counts what a container is limited to.
pub(crate) fn pod(spec: &mut PodSpec) {
    pod_spec(spec);
    for container in spec.init_containers.iter_mut().chain(spec.containers.iter_mut()) {
        if let Some(resources) = container.resources.as_mut() {
            for (name, limit) in &resources.limits {
                resources.requests.entry(name.clone()).or_insert(*limit);
            }
        }
    }
}

fn container_defaults(container: &mut Container) {
    if container.image_pull_policy.is_empty() {
        container.image_pull_policy = pull_policy_for(&container.image).into();
    }
    if container.termination_message_path.is_empty() {
        container.termination_message_path = "/dev/termination-log".into();
    }
    if container.termination_message_policy.is_empty() {
        container.termination_message_policy = "File".into();
    }
    for port in &mut container.ports {
        if port.protocol.is_empty() {
            port.protocol = "TCP".into();
        }
    }
    // As Kubernetes with ProcMountType: a present securityContext says which
    // /proc it gets. An absent seccompProfile stays absent; the kubelet's
    // --seccomp-default decides it.
    if let Some(sc) = container.security_context.as_mut() {
        sc.proc_mount.get_or_insert_with(|| "Default".into());
    }
}

/// Kubernetes pulls `:latest` (or untagged) images always, others if absent.
fn pull_policy_for(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn template(template: &mut Option<PodTemplateSpec>) {
    if let Some(spec) = template.as_mut().and_then(|t| t.spec.as_mut()) {
        pod_spec(spec);
    }
}

pub(crate) fn replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    template(&mut spec.template);
}

pub(crate) fn deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
    if strategy.r#type.is_empty() {
        strategy.r#type = "RollingUpdate".into();
    }
    if strategy.r#type == "RollingUpdate" {
        let rolling = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
        rolling.max_unavailable.get_or_insert(IntOrString::String("25%".into()));
        rolling.max_surge.get_or_insert(IntOrString::String("25%".into()));
    }
    template(&mut spec.template);
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::core_v1::ResourceRequirements;
    use berth_proto::Quantity;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(pull_policy_for("busybox"), "Always");
        assert_eq!(pull_policy_for("busybox:latest"), "Always");
        assert_eq!(pull_policy_for("busybox:1.36"), "IfNotPresent");
        assert_eq!(pull_policy_for("registry.local:5000/busybox"), "Always");
        assert_eq!(pull_policy_for("registry.local:5000/busybox:1"), "IfNotPresent");
        assert_eq!(pull_policy_for("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn proc_mount_defaults_only_where_a_security_context_is() {
        let mut spec = PodSpec {
            containers: vec![
                Container { name: "a".into(), ..Default::default() },
                Container {
                    name: "b".into(),
                    security_context: Some(Default::default()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        pod_spec(&mut spec);
        assert!(spec.containers[0].security_context.is_none());
        let sc = spec.containers[1].security_context.as_ref().unwrap();
        assert_eq!(sc.proc_mount.as_deref(), Some("Default"));
        assert!(sc.seccomp_profile.is_none());
    }

    #[test]
    fn limits_fill_the_requests_a_pod_leaves_unset() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        let resources = |requests: &[(&str, &str)], limits: &[(&str, &str)]| {
            let map = |l: &[(&str, &str)]| l.iter().map(|(k, v)| (k.to_string(), q(v))).collect();
            Some(ResourceRequirements { requests: map(requests), limits: map(limits) })
        };
        let spec = || PodSpec {
            init_containers: vec![Container {
                name: "init".into(),
                resources: resources(&[], &[("cpu", "1")]),
                ..Default::default()
            }],
            containers: vec![
                Container {
                    name: "only-limits".into(),
                    resources: resources(&[], &[("example.com/dev", "2"), ("memory", "1Gi")]),
                    ..Default::default()
                },
                Container {
                    name: "both".into(),
                    resources: resources(
                        &[("cpu", "250m")],
                        &[("cpu", "1"), ("example.com/dev", "1")],
                    ),
                    ..Default::default()
                },
                Container { name: "none".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let mut p = spec();
        pod(&mut p);
        let requests = |c: &Container| {
            let r = &c.resources.as_ref().unwrap().requests;
            r.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
        };
        assert_eq!(requests(&p.init_containers[0]), ["cpu=1"]);
        assert_eq!(requests(&p.containers[0]), ["example.com/dev=2", "memory=1Gi"]);
        // A request that is set stays as it is.
        assert_eq!(requests(&p.containers[1]), ["cpu=250m", "example.com/dev=1"]);
        assert!(p.containers[2].resources.is_none());
        // Pod templates keep their requests as written, as in Kubernetes.
        let mut t = Some(PodTemplateSpec { spec: Some(spec()), ..Default::default() });
        template(&mut t);
        assert!(t.unwrap().spec.unwrap().containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .is_empty());
    }

    #[test]
    fn deployment_defaults_are_kubernetes_own() {
        let mut d = Deployment::default();
        deployment(&mut d);
        let spec = d.spec.unwrap();
        assert_eq!(
            (spec.replicas, spec.revision_history_limit, spec.progress_deadline_seconds),
            (Some(1), Some(10), Some(600))
        );
        let rolling = spec.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(rolling.max_surge, Some(IntOrString::String("25%".into())));
    }
}

//! Defaults Kubernetes applies to the fields berth supports, applied before
//! validation on create and update.

use berth_proto::apps_v1::{Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment};
use berth_proto::core_v1::{Container, PodSpec, PodTemplateSpec};
use berth_proto::IntOrString;

pub(crate) fn pod_spec(spec: &mut PodSpec) {
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

//! Validation as Kubernetes does it for the supported fields: names, labels,
//! required fields, value sets, limits >= requests, selectors that match
//! their template, and fields that may not change. Every problem is a cause
//! naming its field path.

use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::core_v1::{
    Container, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecurityContext,
};
use berth_proto::labels::{check_key, check_value, Selector};
use berth_proto::meta_v1::{LabelSelector, ObjectMeta, StatusCause};

/// The causes found so far.
#[derive(Default)]
pub(crate) struct Causes(pub Vec<StatusCause>);

impl Causes {
    fn add(&mut self, field: impl Into<String>, reason: &str, message: impl Into<String>) {
        self.0.push(StatusCause {
            reason: reason.into(),
            message: message.into(),
            field: field.into(),
        });
    }
    fn required(&mut self, field: impl Into<String>) {
        self.add(field, "FieldValueRequired", "Required value");
    }
    fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.add(field, "FieldValueInvalid", message);
    }
    fn not_supported(&mut self, field: impl Into<String>, value: &str, allowed: &[&str]) {
        let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        self.add(
            field,
            "FieldValueNotSupported",
            format!("Unsupported value: {value:?}: supported values: {}", quoted.join(", ")),
        );
    }
    fn forbidden(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.add(field, "FieldValueForbidden", message);
    }
}

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Which rule an object's name follows.
#[derive(Clone, Copy)]
pub(crate) enum NameRule {
    Label,
    Subdomain,
    /// Events are named after their object plus a suffix; any path segment.
    Any,
}

pub(crate) fn object_meta(causes: &mut Causes, meta: &ObjectMeta, rule: NameRule) {
    // A name still to be generated is checked as it will be: the prefix
    // plus the five characters the registry appends.
    let (field, name) = if meta.name.is_empty() && !meta.generate_name.is_empty() {
        ("metadata.generateName", format!("{}xxxxx", meta.generate_name))
    } else {
        ("metadata.name", meta.name.clone())
    };
    let shown = if field == "metadata.name" { &meta.name } else { &meta.generate_name };
    match rule {
        NameRule::Label if !is_dns1123_label(&name) => {
            causes.invalid(field, format!("Invalid value: {shown:?}: {DNS1123_LABEL}"))
        }
        NameRule::Subdomain if !is_dns1123_subdomain(&name) => {
            causes.invalid(field, format!("Invalid value: {shown:?}: {DNS1123_SUBDOMAIN}"))
        }
        NameRule::Any if name.is_empty() || name.contains('/') || name == "." || name == ".." => {
            causes.invalid(
                field,
                format!("Invalid value: {shown:?}: may not be empty or contain '/'"),
            )
        }
        _ => {}
    }
    for (key, value) in &meta.labels {
        if let Err(e) = check_key(key) {
            causes.invalid(format!("metadata.labels[{key}]"), e);
        }
        if let Err(e) = check_value(value) {
            causes.invalid(format!("metadata.labels[{key}]"), e);
        }
    }
    let annotations: usize = meta.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if annotations > 256 * 1024 {
        causes.add(
            "metadata.annotations",
            "FieldValueTooLong",
            format!("Too long: may not be more than 262144 bytes, got {annotations}"),
        );
    }
    for key in meta.annotations.keys() {
        if let Err(e) = check_key(key) {
            causes.invalid(format!("metadata.annotations[{key}]"), e);
        }
    }
}

pub(crate) fn pod(pod: &Pod) -> Causes {
    let mut causes = Causes::default();
    object_meta(&mut causes, &pod.metadata.clone().unwrap_or_default(), NameRule::Subdomain);
    match &pod.spec {
        Some(spec) => pod_spec(&mut causes, "spec", spec),
        None => causes.required("spec"),
    }
    causes
}

fn pod_spec(causes: &mut Causes, path: &str, spec: &PodSpec) {
    if spec.containers.is_empty() {
        causes.required(format!("{path}.containers"));
    }
    let mut names = std::collections::HashSet::new();
    for (kind, list) in
        [("initContainers", &spec.init_containers), ("containers", &spec.containers)]
    {
        for (i, c) in list.iter().enumerate() {
            container(causes, &format!("{path}.{kind}[{i}]"), c);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                causes.add(
                    format!("{path}.{kind}[{i}].name"),
                    "FieldValueDuplicate",
                    format!("Duplicate value: {:?}", c.name),
                );
            }
        }
    }
    if let Some(sc) = &spec.security_context {
        pod_security_context(causes, &format!("{path}.securityContext"), sc);
    }
    let restart = spec.restart_policy.as_str();
    if !["Always", "OnFailure", "Never"].contains(&restart) {
        causes.not_supported(
            format!("{path}.restartPolicy"),
            restart,
            &["Always", "OnFailure", "Never"],
        );
    }
    if spec.termination_grace_period_seconds.is_some_and(|g| g < 0) {
        causes.invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            "must be greater than or equal to 0",
        );
    }
    for (i, t) in spec.tolerations.iter().enumerate() {
        let at = format!("{path}.tolerations[{i}]");
        if !["", "Equal", "Exists"].contains(&t.operator.as_str()) {
            causes.not_supported(format!("{at}.operator"), &t.operator, &["Equal", "Exists"]);
        }
        if t.operator == "Exists" && !t.value.is_empty() {
            causes.invalid(
                format!("{at}.operator"),
                "value must be empty when `operator` is 'Exists'",
            );
        }
        if !["", "NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
            causes.not_supported(
                format!("{at}.effect"),
                &t.effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
    let mut volumes = std::collections::HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let at = format!("{path}.volumes[{i}]");
        if !is_dns1123_label(&v.name) {
            causes.invalid(
                format!("{at}.name"),
                format!("Invalid value: {:?}: {DNS1123_LABEL}", v.name),
            );
        }
        if !volumes.insert(v.name.as_str()) {
            causes.add(
                format!("{at}.name"),
                "FieldValueDuplicate",
                format!("Duplicate value: {:?}", v.name),
            );
        }
        match (v.empty_dir.is_some(), v.host_path.is_some()) {
            (true, true) => causes.forbidden(&at, "may not specify more than 1 volume type"),
            (false, false) => causes.required(format!("{at}.emptyDir")),
            _ => {}
        }
    }
    for (kind, list) in
        [("initContainers", &spec.init_containers), ("containers", &spec.containers)]
    {
        for (i, c) in list.iter().enumerate() {
            for (j, m) in c.volume_mounts.iter().enumerate() {
                if !volumes.contains(m.name.as_str()) {
                    causes.add(
                        format!("{path}.{kind}[{i}].volumeMounts[{j}].name"),
                        "FieldValueNotFound",
                        format!("Not found: {:?}", m.name),
                    );
                }
            }
        }
    }
}

fn container(causes: &mut Causes, path: &str, c: &Container) {
    if c.name.is_empty() {
        causes.required(format!("{path}.name"));
    } else if !is_dns1123_label(&c.name) {
        causes.invalid(
            format!("{path}.name"),
            format!("Invalid value: {:?}: {DNS1123_LABEL}", c.name),
        );
    }
    if c.image.trim().is_empty() {
        causes.required(format!("{path}.image"));
    }
    let pull = c.image_pull_policy.as_str();
    if !["Always", "IfNotPresent", "Never"].contains(&pull) {
        causes.not_supported(
            format!("{path}.imagePullPolicy"),
            pull,
            &["Always", "IfNotPresent", "Never"],
        );
    }
    for (i, p) in c.ports.iter().enumerate() {
        if !(1..=65535).contains(&p.container_port) {
            causes.invalid(
                format!("{path}.ports[{i}].containerPort"),
                "must be between 1 and 65535, inclusive",
            );
        }
        if !["TCP", "UDP", "SCTP"].contains(&p.protocol.as_str()) {
            causes.not_supported(
                format!("{path}.ports[{i}].protocol"),
                &p.protocol,
                &["SCTP", "TCP", "UDP"],
            );
        }
    }
    if let Some(resources) = &c.resources {
        for (name, limit) in &resources.limits {
            if let Some(request) = resources.requests.get(name) {
                if request > limit {
                    causes.invalid(
                        format!("{path}.resources.requests[{name}]"),
                        format!("Invalid value: {request:?}: must be less than or equal to {name} limit of {limit}", request = request.to_string()),
                    );
                }
            }
        }
        for (kind, list) in [("limits", &resources.limits), ("requests", &resources.requests)] {
            for (name, q) in list {
                if q.sign() == std::cmp::Ordering::Less {
                    causes.invalid(
                        format!("{path}.resources.{kind}[{name}]"),
                        "must be greater than or equal to 0",
                    );
                }
            }
        }
    }
    if let Some(sc) = &c.security_context {
        security_context(causes, &format!("{path}.securityContext"), sc);
    }
    for (name, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            let handlers = [p.exec.is_some(), p.http_get.is_some(), p.tcp_socket.is_some()]
                .iter()
                .filter(|h| **h)
                .count();
            if handlers == 0 {
                causes.required(format!("{path}.{name}"));
            } else if handlers > 1 {
                causes.forbidden(
                    format!("{path}.{name}"),
                    "may not specify more than 1 handler type",
                );
            }
        }
    }
}

/// User and group ids Kubernetes accepts: non-negative 32-bit values.
fn id_range(causes: &mut Causes, field: String, id: Option<i64>) {
    if id.is_some_and(|id| !(0..=i64::from(i32::MAX)).contains(&id)) {
        causes.invalid(field, "must be between 0 and 2147483647, inclusive");
    }
}

fn seccomp_profile(causes: &mut Causes, path: &str, profile: &SeccompProfile) {
    let localhost = profile.localhost_profile.as_deref();
    match profile.r#type.as_str() {
        "" => causes.required(format!("{path}.type")),
        "RuntimeDefault" | "Unconfined" => {
            if localhost.is_some() {
                causes.invalid(
                    format!("{path}.localhostProfile"),
                    "can only be set when seccomp type is Localhost",
                );
            }
        }
        "Localhost" => match localhost {
            None | Some("") => causes.add(
                format!("{path}.localhostProfile"),
                "FieldValueRequired",
                "Required value: must be set when seccomp type is Localhost",
            ),
            Some(p) if p.starts_with('/') => causes.invalid(
                format!("{path}.localhostProfile"),
                format!("Invalid value: {p:?}: must be a relative path"),
            ),
            Some(p) if p.split(['/', '\\']).any(|part| part == "..") => causes.invalid(
                format!("{path}.localhostProfile"),
                format!("Invalid value: {p:?}: must not contain '..'"),
            ),
            Some(_) => {}
        },
        other => causes.not_supported(
            format!("{path}.type"),
            other,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        ),
    }
}

/// A sysctl name as Kubernetes accepts it: dot- or slash-separated segments
/// of lower-case alphanumerics, '-' and '_', each starting and ending with an
/// alphanumeric.
fn is_sysctl_name(name: &str) -> bool {
    name.len() <= 253
        && name.split(['.', '/']).all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_'
                })
        })
}

fn pod_security_context(causes: &mut Causes, path: &str, sc: &PodSecurityContext) {
    id_range(causes, format!("{path}.runAsUser"), sc.run_as_user);
    id_range(causes, format!("{path}.runAsGroup"), sc.run_as_group);
    id_range(causes, format!("{path}.fsGroup"), sc.fs_group);
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        id_range(causes, format!("{path}.supplementalGroups[{i}]"), Some(*g));
    }
    let mut names = std::collections::HashSet::new();
    for (i, sysctl) in sc.sysctls.iter().enumerate() {
        let at = format!("{path}.sysctls[{i}].name");
        if sysctl.name.is_empty() {
            causes.required(at);
        } else if !is_sysctl_name(&sysctl.name) {
            causes.invalid(
                at,
                format!(
                    "Invalid value: {:?}: must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
                    sysctl.name
                ),
            );
        } else if !names.insert(sysctl.name.replace('/', ".")) {
            causes.add(at, "FieldValueDuplicate", format!("Duplicate value: {:?}", sysctl.name));
        }
    }
    if let Some(profile) = &sc.seccomp_profile {
        seccomp_profile(causes, &format!("{path}.seccompProfile"), profile);
    }
}

fn security_context(causes: &mut Causes, path: &str, sc: &SecurityContext) {
    id_range(causes, format!("{path}.runAsUser"), sc.run_as_user);
    id_range(causes, format!("{path}.runAsGroup"), sc.run_as_group);
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            causes.invalid(
                path,
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            );
        }
        let adds = sc.capabilities.iter().flat_map(|c| &c.add);
        if adds.into_iter().any(|cap| cap == "SYS_ADMIN" || cap == "CAP_SYS_ADMIN") {
            causes.invalid(
                path,
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            );
        }
    }
    match sc.proc_mount.as_deref() {
        None | Some("Default") => {}
        // Unmasked needs a user namespace (hostUsers: false), which berth
        // does not offer, as Kubernetes refuses it with host users.
        Some("Unmasked") => causes
            .forbidden(format!("{path}.procMount"), "`hostUsers` must be false to use `Unmasked`"),
        Some(other) => {
            causes.not_supported(format!("{path}.procMount"), other, &["Default", "Unmasked"])
        }
    }
    if let Some(profile) = &sc.seccomp_profile {
        seccomp_profile(causes, &format!("{path}.seccompProfile"), profile);
    }
}

fn workload(
    causes: &mut Causes,
    replicas: Option<i32>,
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
) {
    if replicas.is_some_and(|r| r < 0) {
        causes.invalid("spec.replicas", "must be greater than or equal to 0");
    }
    let Some(selector) = selector else {
        causes.required("spec.selector");
        return;
    };
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        causes.invalid("spec.selector", "empty selector is invalid for deployment");
    }
    let parsed = match Selector::from_label_selector(Some(selector)) {
        Ok(s) => Some(s),
        Err(e) => {
            causes.invalid("spec.selector", e.to_string());
            None
        }
    };
    let Some(template) = template else {
        causes.required("spec.template");
        return;
    };
    let labels = template.metadata.as_ref().map(|m| m.labels.clone()).unwrap_or_default();
    if let Some(parsed) = parsed {
        if !parsed.matches(&labels) {
            causes.invalid(
                "spec.template.metadata.labels",
                "`selector` does not match template `labels`",
            );
        }
    }
    match &template.spec {
        Some(spec) => {
            pod_spec(causes, "spec.template.spec", spec);
            if spec.restart_policy != "Always" {
                causes.not_supported(
                    "spec.template.spec.restartPolicy",
                    &spec.restart_policy,
                    &["Always"],
                );
            }
        }
        None => causes.required("spec.template.spec"),
    }
}

pub(crate) fn replica_set(rs: &ReplicaSet) -> Causes {
    let mut causes = Causes::default();
    object_meta(&mut causes, &rs.metadata.clone().unwrap_or_default(), NameRule::Subdomain);
    let spec = rs.spec.clone().unwrap_or_default();
    workload(&mut causes, spec.replicas, spec.selector.as_ref(), spec.template.as_ref());
    causes
}

pub(crate) fn deployment(d: &Deployment) -> Causes {
    let mut causes = Causes::default();
    object_meta(&mut causes, &d.metadata.clone().unwrap_or_default(), NameRule::Subdomain);
    let spec = d.spec.clone().unwrap_or_default();
    workload(&mut causes, spec.replicas, spec.selector.as_ref(), spec.template.as_ref());
    if let Some(strategy) = &spec.strategy {
        match strategy.r#type.as_str() {
            "RollingUpdate" => {
                if let Some(rolling) = &strategy.rolling_update {
                    let surge = rolling.max_surge.as_ref().map(|v| v.scaled_value(100, true));
                    let unavailable =
                        rolling.max_unavailable.as_ref().map(|v| v.scaled_value(100, false));
                    for (field, value) in [("maxSurge", &surge), ("maxUnavailable", &unavailable)] {
                        match value {
                            Some(Err(e)) => causes.invalid(
                                format!("spec.strategy.rollingUpdate.{field}"),
                                e.to_string(),
                            ),
                            Some(Ok(v)) if *v < 0 => causes.invalid(
                                format!("spec.strategy.rollingUpdate.{field}"),
                                "must be greater than or equal to 0",
                            ),
                            _ => {}
                        }
                    }
                    if matches!((&surge, &unavailable), (Some(Ok(0)), Some(Ok(0)))) {
                        causes.invalid(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            "may not be 0 when `maxSurge` is 0",
                        );
                    }
                }
            }
            "Recreate" => {
                if strategy.rolling_update.is_some() {
                    causes.forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    );
                }
            }
            other => {
                causes.not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"])
            }
        }
    }
    causes
}

/// A pod's spec may change only in its containers' images, its
/// activeDeadlineSeconds and added tolerations, as in Kubernetes.
pub(crate) fn pod_update(old: &Pod, new: &Pod) -> Causes {
    let mut causes = Causes::default();
    let (Some(old_spec), Some(new_spec)) = (&old.spec, &new.spec) else { return causes };
    let mut comparable = new_spec.clone();
    for (c, o) in comparable.containers.iter_mut().zip(&old_spec.containers) {
        c.image = o.image.clone();
    }
    for (c, o) in comparable.init_containers.iter_mut().zip(&old_spec.init_containers) {
        c.image = o.image.clone();
    }
    comparable.active_deadline_seconds = old_spec.active_deadline_seconds;
    let kept_tolerations = new_spec.tolerations.starts_with(&old_spec.tolerations);
    if kept_tolerations {
        comparable.tolerations = old_spec.tolerations.clone();
    }
    if comparable != *old_spec {
        causes.forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` (only additions to existing tolerations)",
        );
    }
    causes
}

/// A workload's selector is immutable.
pub(crate) fn selector_update(old: Option<&LabelSelector>, new: Option<&LabelSelector>) -> Causes {
    let mut causes = Causes::default();
    if old != new {
        causes.invalid("spec.selector", "field is immutable");
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::core_v1::{Capabilities, Sysctl};

    fn fields(causes: Causes) -> Vec<(String, String)> {
        causes.0.into_iter().map(|c| (c.field, c.reason)).collect()
    }

    fn container_causes(sc: SecurityContext) -> Vec<(String, String)> {
        let mut causes = Causes::default();
        security_context(&mut causes, "sc", &sc);
        fields(causes)
    }

    fn profile(kind: &str, localhost: Option<&str>) -> Option<SeccompProfile> {
        Some(SeccompProfile { r#type: kind.into(), localhost_profile: localhost.map(Into::into) })
    }

    #[test]
    fn seccomp_profiles_follow_kubernetes_rules() {
        let ok = |p| container_causes(SecurityContext { seccomp_profile: p, ..Default::default() });
        assert!(ok(profile("RuntimeDefault", None)).is_empty());
        assert!(ok(profile("Unconfined", None)).is_empty());
        assert!(ok(profile("Localhost", Some("profiles/a.json"))).is_empty());
        let invalid = |f: &str| vec![(f.to_string(), "FieldValueInvalid".to_string())];
        assert_eq!(
            ok(profile("RuntimeDefault", Some("a.json"))),
            invalid("sc.seccompProfile.localhostProfile")
        );
        assert_eq!(
            ok(profile("Localhost", None)),
            vec![("sc.seccompProfile.localhostProfile".into(), "FieldValueRequired".into())]
        );
        assert_eq!(
            ok(profile("Localhost", Some("/etc/a.json"))),
            invalid("sc.seccompProfile.localhostProfile")
        );
        assert_eq!(
            ok(profile("Localhost", Some("a/../../b.json"))),
            invalid("sc.seccompProfile.localhostProfile")
        );
        assert_eq!(
            ok(profile("", None)),
            vec![("sc.seccompProfile.type".into(), "FieldValueRequired".into())]
        );
        assert_eq!(
            ok(profile("Strict", None)),
            vec![("sc.seccompProfile.type".into(), "FieldValueNotSupported".into())]
        );
    }

    #[test]
    fn privilege_escalation_conflicts_are_refused() {
        let privileged = SecurityContext {
            privileged: Some(true),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        };
        assert_eq!(container_causes(privileged), vec![("sc".into(), "FieldValueInvalid".into())]);
        let sys_admin = SecurityContext {
            capabilities: Some(Capabilities { add: vec!["SYS_ADMIN".into()], drop: vec![] }),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        };
        assert_eq!(container_causes(sys_admin), vec![("sc".into(), "FieldValueInvalid".into())]);
        let fine = SecurityContext {
            capabilities: Some(Capabilities { add: vec!["NET_ADMIN".into()], drop: vec![] }),
            allow_privilege_escalation: Some(false),
            run_as_user: Some(0),
            proc_mount: Some("Default".into()),
            ..Default::default()
        };
        assert!(container_causes(fine).is_empty());
    }

    #[test]
    fn ids_and_proc_mounts_are_checked() {
        let sc = SecurityContext {
            run_as_user: Some(-1),
            run_as_group: Some(1 << 31),
            proc_mount: Some("Unmasked".into()),
            ..Default::default()
        };
        assert_eq!(
            container_causes(sc),
            vec![
                ("sc.runAsUser".into(), "FieldValueInvalid".into()),
                ("sc.runAsGroup".into(), "FieldValueInvalid".into()),
                ("sc.procMount".into(), "FieldValueForbidden".into()),
            ]
        );
        let odd = SecurityContext { proc_mount: Some("Masked".into()), ..Default::default() };
        assert_eq!(
            container_causes(odd),
            vec![("sc.procMount".into(), "FieldValueNotSupported".into())]
        );
    }

    #[test]
    fn pod_security_context_checks_groups_and_sysctls() {
        let sysctl = |name: &str| Sysctl { name: name.into(), value: "1".into() };
        let sc = PodSecurityContext {
            supplemental_groups: vec![10, -5],
            fs_group: Some(1 << 40),
            sysctls: vec![
                sysctl("net.ipv4.ip_forward"),
                sysctl("net/ipv4/ip_forward"),
                sysctl("Kernel.Bad"),
                sysctl(""),
                sysctl("kernel.shm_rmid_forced"),
            ],
            seccomp_profile: profile("Localhost", None),
            ..Default::default()
        };
        let mut causes = Causes::default();
        pod_security_context(&mut causes, "spec.securityContext", &sc);
        assert_eq!(
            fields(causes),
            vec![
                ("spec.securityContext.fsGroup".into(), "FieldValueInvalid".into()),
                ("spec.securityContext.supplementalGroups[1]".into(), "FieldValueInvalid".into()),
                ("spec.securityContext.sysctls[1].name".into(), "FieldValueDuplicate".into()),
                ("spec.securityContext.sysctls[2].name".into(), "FieldValueInvalid".into()),
                ("spec.securityContext.sysctls[3].name".into(), "FieldValueRequired".into()),
                (
                    "spec.securityContext.seccompProfile.localhostProfile".into(),
                    "FieldValueRequired".into()
                ),
            ]
        );
    }
}

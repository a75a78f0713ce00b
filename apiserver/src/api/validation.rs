//! Validation as Kubernetes does it for the supported fields: names, labels,
//! required fields, value sets, limits >= requests, selectors that match
//! their template, and fields that may not change. Every problem is a cause
//! naming its field path.

use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::core_v1::{Container, Pod, PodSpec, PodTemplateSpec};
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

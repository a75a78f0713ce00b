//! Tables in kubectl's columns per kind, and human ages.

use super::resource::{name_of, namespace_of, str_at, Kind};
use serde_json::Value;

/// A table: a header and rows of cells, printed in columns three spaces
/// apart, as kubectl prints them.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn render(&self, with_header: bool) -> String {
        let columns = self.header.len();
        let mut widths = vec![0; columns];
        let all = std::iter::once(&self.header).filter(|_| with_header).chain(self.rows.iter());
        for row in all.clone() {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in all {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The columns and cells of `kind`; `all_namespaces` adds NAMESPACE first.
pub fn table(
    kind: Kind,
    objects: &[Value],
    wide: bool,
    all_namespaces: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Table {
    let mut header: Vec<&str> = match kind {
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        Kind::Node => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        Kind::Namespace => vec!["NAME", "STATUS", "AGE"],
        Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        Kind::ReplicaSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        Kind::Lease => vec!["NAME", "HOLDER", "AGE"],
        Kind::Role | Kind::ClusterRole => vec!["NAME", "CREATED AT"],
        Kind::RoleBinding | Kind::ClusterRoleBinding => vec!["NAME", "ROLE", "AGE"],
    };
    if wide {
        header.extend(match kind {
            Kind::Pod => &["IP", "NODE", "NOMINATED NODE", "READINESS GATES"][..],
            Kind::Node => {
                &["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
            }
            Kind::Deployment | Kind::ReplicaSet => &["CONTAINERS", "IMAGES", "SELECTOR"],
            Kind::RoleBinding | Kind::ClusterRoleBinding => &["USERS", "GROUPS", "SERVICEACCOUNTS"],
            Kind::Event => &["SOURCE", "SUBOBJECT", "FIRST SEEN", "COUNT", "NAME"],
            _ => &[],
        });
    }
    let namespaced = all_namespaces && kind.namespaced();
    let mut rows = Vec::new();
    for o in objects {
        let mut row = if namespaced { vec![namespace_of(o).to_string()] } else { Vec::new() };
        row.extend(cells(kind, o, wide, now));
        rows.push(row);
    }
    let mut header: Vec<String> = header.into_iter().map(String::from).collect();
    if namespaced {
        header.insert(0, "NAMESPACE".into());
    }
    Table { header, rows }
}

fn int_at(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn none_if_empty(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

fn age(value: &Value, pointer: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let text = str_at(value, pointer);
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => human_duration(now.signed_duration_since(t.with_timezone(&chrono::Utc))),
        Err(_) => "<unknown>".into(),
    }
}

/// kubectl's short durations: 45s, 3m12s, 17m, 5h2m, 30h, 6d, 2y.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (m, h, days) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60).replace("m0s", "m")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60).replace("h0m", "h")
    } else if h < 48 {
        format!("{h}h")
    } else if days < 365 * 2 {
        format!("{days}d")
    } else {
        format!("{}y", days / 365)
    }
}

fn containers_and_images(spec: Option<&Value>) -> (String, String) {
    let containers = spec
        .and_then(|s| s.pointer("/template/spec/containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector_text(selector: Option<&Value>) -> String {
    let Some(selector) = selector else { return "<none>".into() };
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        parts.extend(labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let op = str_at(e, "/operator").to_ascii_lowercase();
            let key = str_at(e, "/key");
            parts.push(match op.as_str() {
                "exists" => key.to_string(),
                "doesnotexist" => format!("!{key}"),
                _ => format!("{key} {op} ({})", values.join(",")),
            });
        }
    }
    none_if_empty(&parts.join(","))
}

/// What kubectl shows as a pod's STATUS: the phase, or the reason of the
/// first container that waits or terminated abnormally, or Terminating.
pub fn pod_status(pod: &Value) -> String {
    let mut reason = str_at(pod, "/status/reason").to_string();
    if reason.is_empty() {
        reason = none_if_empty(str_at(pod, "/status/phase")).replace("<none>", "Pending");
    }
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    for c in statuses.into_iter().flatten() {
        let waiting = str_at(c, "/state/waiting/reason");
        let terminated = str_at(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if !terminated.is_empty() {
            // A container that completed in a pod that succeeded says nothing new.
            let done = terminated == "Completed" && reason == "Succeeded";
            if !done {
                reason = terminated.to_string();
            }
        }
    }
    if !str_at(pod, "/metadata/deletionTimestamp").is_empty() {
        reason = "Terminating".into();
    }
    reason
}

fn cells(kind: Kind, o: &Value, wide: bool, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let name = name_of(o).to_string();
    let created = age(o, "/metadata/creationTimestamp", now);
    match kind {
        Kind::Pod => {
            let total = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"].as_bool() == Some(true)).count();
            let restarts: i64 = statuses.iter().map(|c| int_at(c, "/restartCount")).sum();
            let mut row = vec![
                name,
                format!("{ready}/{total}"),
                pod_status(o),
                restarts.to_string(),
                created,
            ];
            if wide {
                row.push(none_if_empty(str_at(o, "/status/podIP")));
                row.push(none_if_empty(str_at(o, "/spec/nodeName")));
                row.push(none_if_empty(str_at(o, "/status/nominatedNodeName")));
                row.push("<none>".into());
            }
            row
        }
        Kind::Node => {
            let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
            let ready = conditions
                .into_iter()
                .flatten()
                .find(|c| str_at(c, "/type") == "Ready")
                .map(|c| str_at(c, "/status"));
            let mut status = match ready {
                Some("True") => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<&str> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|labels| {
                    labels
                        .keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            let mut row = vec![
                name,
                status,
                none_if_empty(&roles.join(",")),
                created,
                str_at(o, "/status/nodeInfo/kubeletVersion").to_string(),
            ];
            if wide {
                let address = |t: &str| {
                    let list = o.pointer("/status/addresses").and_then(Value::as_array);
                    none_if_empty(
                        list.into_iter()
                            .flatten()
                            .find(|a| str_at(a, "/type") == t)
                            .map_or("", |a| str_at(a, "/address")),
                    )
                };
                row.push(address("InternalIP"));
                row.push(address("ExternalIP"));
                row.push(none_if_empty(str_at(o, "/status/nodeInfo/osImage")));
                row.push(none_if_empty(str_at(o, "/status/nodeInfo/kernelVersion")));
                row.push(none_if_empty(str_at(o, "/status/nodeInfo/containerRuntimeVersion")));
            }
            row
        }
        Kind::Namespace => {
            let phase = str_at(o, "/status/phase");
            vec![name, if phase.is_empty() { "Active".into() } else { phase.into() }, created]
        }
        Kind::Deployment | Kind::ReplicaSet => {
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let mut row = if kind == Kind::Deployment {
                vec![
                    name,
                    format!("{}/{desired}", int_at(o, "/status/readyReplicas")),
                    int_at(o, "/status/updatedReplicas").to_string(),
                    int_at(o, "/status/availableReplicas").to_string(),
                    created,
                ]
            } else {
                vec![
                    name,
                    desired.to_string(),
                    int_at(o, "/status/replicas").to_string(),
                    int_at(o, "/status/readyReplicas").to_string(),
                    created,
                ]
            };
            if wide {
                let (containers, images) = containers_and_images(o.get("spec"));
                row.push(containers);
                row.push(images);
                row.push(selector_text(o.pointer("/spec/selector")));
            }
            row
        }
        Kind::Event => {
            let mut last = age(o, "/lastTimestamp", now);
            if last == "<unknown>" {
                last = age(o, "/eventTime", now);
            }
            let object = format!(
                "{}/{}",
                str_at(o, "/involvedObject/kind").to_ascii_lowercase(),
                str_at(o, "/involvedObject/name")
            );
            let mut row = vec![
                last,
                str_at(o, "/type").to_string(),
                str_at(o, "/reason").to_string(),
                object,
                str_at(o, "/message").trim().to_string(),
            ];
            if wide {
                let source = str_at(o, "/source/component");
                let source =
                    if source.is_empty() { str_at(o, "/reportingComponent") } else { source };
                row.push(source.to_string());
                row.push(str_at(o, "/involvedObject/fieldPath").to_string());
                row.push(age(o, "/firstTimestamp", now));
                row.push(int_at(o, "/count").max(1).to_string());
                row.push(name);
            }
            row
        }
        Kind::Lease => {
            vec![name, str_at(o, "/spec/holderIdentity").to_string(), created]
        }
        Kind::Role | Kind::ClusterRole => {
            vec![name, str_at(o, "/metadata/creationTimestamp").to_string()]
        }
        Kind::RoleBinding | Kind::ClusterRoleBinding => {
            let role = format!("{}/{}", str_at(o, "/roleRef/kind"), str_at(o, "/roleRef/name"));
            let mut row = vec![name, role, created];
            if wide {
                let subjects = o.get("subjects").and_then(Value::as_array).cloned();
                let subjects = subjects.unwrap_or_default();
                for kind in ["User", "Group", "ServiceAccount"] {
                    let names: Vec<String> = subjects
                        .iter()
                        .filter(|s| str_at(s, "/kind") == kind)
                        .map(|s| match kind {
                            "ServiceAccount" => {
                                format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name"))
                            }
                            _ => str_at(s, "/name").to_string(),
                        })
                        .collect();
                    row.push(names.join(", "));
                }
            }
            row
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubectl_prints_them() {
        let d = chrono::TimeDelta::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(192)), "3m12s");
        assert_eq!(human_duration(d(180)), "3m");
        assert_eq!(human_duration(d(17 * 60)), "17m");
        assert_eq!(human_duration(d(5 * 3600 + 120)), "5h2m");
        assert_eq!(human_duration(d(30 * 3600)), "30h");
        assert_eq!(human_duration(d(6 * 86400)), "6d");
    }

    #[test]
    fn columns_line_up_three_spaces_apart() {
        let t = Table {
            header: vec!["NAME".into(), "STATUS".into()],
            rows: vec![vec!["a-long-name".into(), "Ready".into()]],
        };
        assert_eq!(t.render(true), "NAME          STATUS\na-long-name   Ready\n");
        assert_eq!(t.render(false), "a-long-name   Ready\n");
    }
}

//! Table responses (meta.k8s.io/v1 Table): the columns `kubectl get` shows
//! for each kind, with `-o wide`'s extra columns at priority 1, computed on
//! the server as Kubernetes does.

use serde_json::{json, Value};

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    priority: u8,
}

const fn col(name: &'static str, kind: &'static str, priority: u8) -> Column {
    Column { name, kind, format: "", priority }
}

fn columns(kind: &str) -> Vec<Column> {
    let name = Column { name: "Name", kind: "string", format: "name", priority: 0 };
    let age = col("Age", "string", 0);
    match kind {
        "Pod" => vec![
            name,
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            age,
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ],
        "Node" => vec![
            name,
            col("Status", "string", 0),
            col("Roles", "string", 0),
            age,
            col("Version", "string", 0),
            col("Internal-IP", "string", 1),
            col("External-IP", "string", 1),
            col("OS-Image", "string", 1),
            col("Kernel-Version", "string", 1),
            col("Container-Runtime", "string", 1),
        ],
        "Namespace" => vec![name, col("Status", "string", 0), age],
        "Deployment" => vec![
            name,
            col("Ready", "string", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            age,
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        "ReplicaSet" => vec![
            name,
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            age,
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        "Lease" => vec![name, col("Holder", "string", 0), age],
        "Role" | "ClusterRole" => {
            vec![name, Column { name: "Created At", kind: "date", format: "", priority: 0 }]
        }
        "RoleBinding" | "ClusterRoleBinding" => vec![
            name,
            col("Role", "string", 0),
            age,
            col("Users", "string", 1),
            col("Groups", "string", 1),
            col("ServiceAccounts", "string", 1),
        ],
        "Event" => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Message", "string", 0),
            name,
        ],
        _ => vec![name, age],
    }
}

/// Kubernetes' short human durations: 45s, 3m12s, 5h10m, 3d4h, 400d.
pub(super) fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age(object: &Value, now: i64, field: &str) -> String {
    let at = object.pointer(field).and_then(Value::as_str);
    match at.and_then(|t| berth_proto::Time::parse(t).ok()) {
        Some(t) => human_age(now - t.unix_seconds()),
        None => "<unknown>".into(),
    }
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

fn list_of<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn containers_and_images(object: &Value) -> (String, String) {
    let containers = list_of(object, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector(object: &Value) -> String {
    let mut terms: Vec<String> = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    for e in list_of(object, "/spec/selector/matchExpressions") {
        let values: Vec<&str> = list_of(e, "/values").iter().filter_map(Value::as_str).collect();
        let key = str_at(e, "/key");
        terms.push(match str_at(e, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    or_none(&terms.join(","))
}

fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut status = str_at(pod, "/status/phase").to_string();
    let reason = str_at(pod, "/status/reason");
    if !reason.is_empty() {
        status = reason.into();
    }
    for c in list_of(pod, "/status/containerStatuses") {
        let waiting = str_at(c, "/state/waiting/reason");
        let terminated = str_at(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            status = waiting.into();
        } else if !terminated.is_empty() {
            status = terminated.into();
        }
    }
    or_none(&status)
}

fn node_status(node: &Value) -> String {
    let ready = list_of(node, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == "Ready")
        .map(|c| str_at(c, "/status"));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        _ => "NotReady".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_address(node: &Value, kind: &str) -> String {
    let address = list_of(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == kind)
        .map(|a| str_at(a, "/address"))
        .unwrap_or("");
    or_none(address)
}

fn cells(kind: &str, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(str_at(o, "/metadata/name"));
    let created = age(o, now, "/metadata/creationTimestamp");
    match kind {
        "Pod" => {
            let statuses = list_of(o, "/status/containerStatuses");
            let total = list_of(o, "/spec/containers").len();
            let ready = statuses
                .iter()
                .filter(|c| c.pointer("/ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = statuses.iter().map(|c| int_at(c, "/restartCount")).sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(created),
                json!(or_none(str_at(o, "/status/podIP"))),
                json!(or_none(str_at(o, "/spec/nodeName"))),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        "Node" => {
            let roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/").map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(node_status(o)),
                json!(or_none(&roles.join(","))),
                json!(created),
                json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
                json!(node_address(o, "InternalIP")),
                json!(node_address(o, "ExternalIP")),
                json!(or_none(str_at(o, "/status/nodeInfo/osImage"))),
                json!(or_none(str_at(o, "/status/nodeInfo/kernelVersion"))),
                json!(or_none(str_at(o, "/status/nodeInfo/containerRuntimeVersion"))),
            ]
        }
        "Namespace" => vec![name, json!(str_at(o, "/status/phase")), json!(created)],
        "Deployment" => {
            let (containers, images) = containers_and_images(o);
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            vec![
                name,
                json!(format!("{}/{desired}", int_at(o, "/status/readyReplicas"))),
                json!(int_at(o, "/status/updatedReplicas")),
                json!(int_at(o, "/status/availableReplicas")),
                json!(created),
                json!(containers),
                json!(images),
                json!(selector(o)),
            ]
        }
        "ReplicaSet" => {
            let (containers, images) = containers_and_images(o);
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            vec![
                name,
                json!(desired),
                json!(int_at(o, "/status/replicas")),
                json!(int_at(o, "/status/readyReplicas")),
                json!(created),
                json!(containers),
                json!(images),
                json!(selector(o)),
            ]
        }
        "Lease" => vec![name, json!(or_none(str_at(o, "/spec/holderIdentity"))), json!(created)],
        "Role" | "ClusterRole" => vec![name, json!(str_at(o, "/metadata/creationTimestamp"))],
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = |kind: &str| {
                let names: Vec<String> = list_of(o, "/subjects")
                    .iter()
                    .filter(|s| str_at(s, "/kind") == kind)
                    .map(|s| match str_at(s, "/namespace") {
                        ns if kind == "ServiceAccount" => format!("{ns}/{}", str_at(s, "/name")),
                        _ => str_at(s, "/name").to_string(),
                    })
                    .collect();
                json!(names.join(", "))
            };
            let role = format!("{}/{}", str_at(o, "/roleRef/kind"), str_at(o, "/roleRef/name"));
            vec![
                name,
                json!(role),
                json!(created),
                subjects("User"),
                subjects("Group"),
                subjects("ServiceAccount"),
            ]
        }
        "Event" => {
            let last = if o.pointer("/lastTimestamp").is_some() {
                age(o, now, "/lastTimestamp")
            } else {
                created.clone()
            };
            let object = format!(
                "{}/{}",
                str_at(o, "/involvedObject/kind").to_lowercase(),
                str_at(o, "/involvedObject/name")
            );
            vec![
                json!(last),
                json!(str_at(o, "/type")),
                json!(str_at(o, "/reason")),
                json!(object),
                json!(str_at(o, "/message")),
                name,
            ]
        }
        _ => vec![name, json!(created)],
    }
}

/// A Table of `items` (objects in their JSON form) of one kind.
pub(super) fn table(
    kind: &str,
    items: &[Value],
    resource_version: &str,
    continue_token: &str,
) -> Value {
    let now = berth_proto::Time::now().unix_seconds();
    let definitions: Vec<Value> = columns(kind)
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": "",
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(kind, o, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                },
            })
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if !continue_token.is_empty() {
        metadata["continue"] = json!(continue_token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        assert_eq!(human_age(45), "45s");
        assert_eq!(human_age(192), "3m12s");
        assert_eq!(human_age(3600 * 5 + 600), "5h10m");
        assert_eq!(human_age(86400 * 3 + 3600 * 4), "3d4h");
        assert_eq!(human_age(86400 * 400), "400d");
    }

    #[test]
    fn a_pod_row_has_kubectls_columns() {
        let pod = json!({
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2},
                {"name": "b", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let t = table("Pod", &[pod], "7", "");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "3");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
    }
}

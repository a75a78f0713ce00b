//! Discovery: what kubectl asks first to learn which groups, versions and
//! resources this server has (/version, /api, /apis, and each group
//! version's resource list with verbs, short names and categories).

use super::kinds::{RestKind, KINDS};
use serde_json::{json, Value};

pub(super) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0-berth.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

pub(super) fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

/// Every named group (the core group is served at /api).
fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = KINDS.iter().map(|k| k.group).filter(|g| !g.is_empty()).collect();
    groups.dedup();
    groups.sort_unstable();
    groups.dedup();
    groups
}

pub(super) fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn verbs(kind: &RestKind) -> Vec<&'static str> {
    vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        .into_iter()
        .filter(|v| *v != "deletecollection" || kind.namespaced)
        .collect()
}

/// The resources of one group version, or None if it is not served.
pub(super) fn resource_list(group: &str, version: &str) -> Option<Value> {
    if version != "v1" {
        return None;
    }
    let kinds: Vec<&RestKind> = KINDS.iter().filter(|k| k.group == group).collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in kinds {
        let mut resource = json!({
            "name": k.plural,
            "singularName": k.kind.to_lowercase(),
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": verbs(k),
        });
        if !k.short_names.is_empty() {
            resource["shortNames"] = json!(k.short_names);
        }
        if k.in_all {
            resource["categories"] = json!(["all"]);
        }
        resources.push(resource);
        for sub in k.subresources {
            let (sub_kind, sub_group, sub_version) = match *sub {
                "scale" => ("Scale", "autoscaling", "v1"),
                "binding" => ("Binding", "", "v1"),
                _ => (k.kind, k.group, "v1"),
            };
            let verbs: &[&str] = match *sub {
                "binding" => &["create"],
                _ => &["get", "patch", "update"],
            };
            resources.push(json!({
                "name": format!("{}/{sub}", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "group": sub_group,
                "version": sub_version,
                "kind": sub_kind,
                "verbs": verbs,
            }));
        }
    }
    let group_version =
        if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

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
    kind.verbs()
}

/// A subresource's kind, group, version and verbs.
fn subresource(
    kind: &RestKind,
    sub: &str,
) -> (&'static str, &'static str, &'static str, &'static [&'static str]) {
    let (sub_kind, sub_group) = match sub {
        "scale" => ("Scale", "autoscaling"),
        "binding" => ("Binding", ""),
        "eviction" => ("Eviction", "policy"),
        _ => (kind.kind, kind.group),
    };
    let verbs: &[&str] = match sub {
        "binding" | "eviction" => &["create"],
        _ => &["get", "patch", "update"],
    };
    (sub_kind, sub_group, "v1", verbs)
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
            let (sub_kind, sub_group, sub_version, verbs) = subresource(k, sub);
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

/// The aggregated discovery version a client accepts, if any: kubectl asks
/// for `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`
/// (or v2beta1) first, and falls back to one request per group version.
pub(super) fn aggregated_version(accept: &str) -> Option<&'static str> {
    let wanted = |v: &str| {
        accept.split(',').any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"g=apidiscovery.k8s.io")
                && params.contains(&format!("v={v}").as_str())
                && params.contains(&"as=APIGroupDiscoveryList")
        })
    };
    ["v2", "v2beta1"].into_iter().find(|v| wanted(v))
}

/// The content type of an aggregated discovery answer.
pub(super) fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

/// Every resource of the core group (`/api`, `core`) or of the named groups
/// (`/apis`) in one APIGroupDiscoveryList, with verbs, short names,
/// categories and subresources.
pub(super) fn aggregated(core: bool, version: &str) -> Value {
    let groups: Vec<&str> = if core { vec![""] } else { groups() };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|group| {
            let resources: Vec<Value> = KINDS
                .iter()
                .filter(|k| k.group == group)
                .map(|k| {
                    let mut resource = json!({
                        "resource": k.plural,
                        "responseKind": {"group": k.group, "version": "v1", "kind": k.kind},
                        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": k.kind.to_lowercase(),
                        "verbs": verbs(k),
                    });
                    if !k.short_names.is_empty() {
                        resource["shortNames"] = json!(k.short_names);
                    }
                    if k.in_all {
                        resource["categories"] = json!(["all"]);
                    }
                    let subresources: Vec<Value> = k
                        .subresources
                        .iter()
                        .map(|sub| {
                            let (kind, group, version, verbs) = subresource(k, sub);
                            json!({
                                "subresource": sub,
                                "responseKind": {"group": group, "version": version, "kind": kind},
                                "verbs": verbs,
                            })
                        })
                        .collect();
                    if !subresources.is_empty() {
                        resource["subresources"] = json!(subresources);
                    }
                    resource
                })
                .collect();
            json!({
                "metadata": {"name": group, "creationTimestamp": null},
                "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_is_served_when_asked_for() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(kubectl), Some("v2"));
        assert_eq!(
            aggregated_version(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            ),
            Some("v2beta1")
        );
        assert_eq!(aggregated_version("application/json, */*"), None);

        let core = aggregated(true, "v2");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        let resources = &core["items"][0]["versions"][0]["resources"];
        let pods = resources.as_array().unwrap().iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["scope"], "Namespaced");
        let eviction = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "eviction")
            .unwrap();
        assert_eq!(eviction["responseKind"]["group"], "policy");
        let groups = aggregated(false, "v2");
        let names: Vec<&str> = groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["metadata"]["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["apps", "authorization.k8s.io", "coordination.k8s.io", "rbac.authorization.k8s.io"]
        );
    }
}

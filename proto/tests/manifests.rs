//! Real Kubernetes manifests decode strictly and re-encode to the same content.

use berth_proto::apps_v1::Deployment;
use berth_proto::core_v1::Pod;
use berth_proto::{from_json, from_yaml, to_json, IntOrString, Object, Quantity, Resource};
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The manifest as plain data, to compare content regardless of key order.
fn yaml_as_json(text: &str) -> Value {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap();
    serde_json::to_value(value).unwrap()
}

fn assert_round_trip(name: &str) -> Object {
    let text = fixture(name);
    let objects = Object::from_yaml_documents(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(objects.len(), 1, "{name}");
    let object = objects.into_iter().next().unwrap();
    let encoded: Value = serde_json::from_slice(&object.to_json()).unwrap();
    assert_eq!(encoded, yaml_as_json(&text), "{name} did not round-trip");

    // YAML out, YAML back in, and protobuf (the stored form) too.
    let again = Object::from_yaml_documents(&object.to_yaml()).unwrap();
    assert_eq!(again, vec![object.clone()]);
    object
}

#[test]
fn deployment_round_trips() {
    let Object::Deployment(d) = assert_round_trip("deployment.yaml") else { panic!("kind") };
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(4));
    let rolling = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
    assert_eq!(rolling.max_surge, Some(IntOrString::String("25%".into())));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
    let pod = spec.template.as_ref().unwrap().spec.as_ref().unwrap();
    let app = &pod.containers[0];
    let requests = &app.resources.as_ref().unwrap().requests;
    assert_eq!(requests["cpu"], "250m".parse::<Quantity>().unwrap());
    assert_eq!(requests["memory"], "128Mi".parse::<Quantity>().unwrap());
    let live = app.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(live.port, Some(IntOrString::String("http".into())));
    assert_eq!(pod.tolerations[1].toleration_seconds, Some(60));
    // `emptyDir: {}` is a present, empty source, not an absent one.
    assert!(pod.volumes[0].empty_dir.is_some());
    assert!(pod.volumes[2].empty_dir.is_none());
}

#[test]
fn pod_round_trips_with_status() {
    let Object::Pod(p) = assert_round_trip("pod.yaml") else { panic!("kind") };
    // An explicit zero that Kubernetes keeps as a pointer survives.
    assert_eq!(p.spec.as_ref().unwrap().termination_grace_period_seconds, Some(0));
    let status = p.status.as_ref().unwrap();
    let terminated = status.container_statuses[0].last_state.as_ref().unwrap();
    assert_eq!(terminated.terminated.as_ref().unwrap().exit_code, 137);
    assert_eq!(p.metadata().creation_timestamp.unwrap().to_string(), "2024-05-01T10:00:00Z");
}

#[test]
fn node_round_trips() {
    let Object::Node(n) = assert_round_trip("node.yaml") else { panic!("kind") };
    let status = n.status.as_ref().unwrap();
    assert!(status.allocatable["cpu"] < status.capacity["cpu"]);
    assert_eq!(status.daemon_endpoints.as_ref().unwrap().kubelet_endpoint.unwrap().port, 10250);
}

#[test]
fn lease_round_trips_with_micro_times() {
    let Object::Lease(l) = assert_round_trip("lease.yaml") else { panic!("kind") };
    let spec = l.spec.as_ref().unwrap();
    assert_eq!(spec.lease_transitions, Some(0));
    assert_eq!(spec.renew_time.unwrap().subsec_nanos(), 123_456_000);
}

#[test]
fn multi_document_yaml() {
    let objects = Object::from_yaml_documents(&fixture("multi.yaml")).unwrap();
    let kinds: Vec<&str> = objects.iter().map(|o| o.kind()).collect();
    assert_eq!(kinds, ["Namespace", "Pod", "Event"]);
    assert_eq!(objects[1].metadata().namespace, "shop");
}

#[test]
fn protobuf_round_trip_of_every_fixture() {
    use prost::Message;
    for name in ["deployment.yaml", "pod.yaml", "node.yaml", "lease.yaml"] {
        let object = Object::from_yaml_documents(&fixture(name)).unwrap().remove(0);
        let bytes = object.encode_to_vec();
        let back = match &object {
            Object::Deployment(_) => Object::Deployment(Deployment::decode(&bytes[..]).unwrap()),
            Object::Pod(_) => Object::Pod(Pod::decode(&bytes[..]).unwrap()),
            Object::Node(_) => {
                Object::Node(berth_proto::core_v1::Node::decode(&bytes[..]).unwrap())
            }
            Object::Lease(_) => {
                Object::Lease(berth_proto::coordination_v1::Lease::decode(&bytes[..]).unwrap())
            }
            other => panic!("unexpected {}", other.kind()),
        };
        assert_eq!(back, object, "{name}");
    }
}

fn yaml_error(text: &str) -> String {
    Object::from_yaml_documents(text).unwrap_err().to_string()
}

#[test]
fn misspelled_field_is_named_with_its_path() {
    let text = fixture("deployment.yaml").replacen(
        "imagePullPolicy: IfNotPresent",
        "imagePullPolcy: IfNotPresent",
        1,
    );
    let err = yaml_error(&text);
    assert!(
        err.starts_with("spec.template.spec.containers[1].imagePullPolcy: unknown field")
            || err.starts_with("spec.template.spec.containers[0].imagePullPolcy: unknown field"),
        "{err}"
    );
    assert!(err.contains("did you mean \"imagePullPolicy\""), "{err}");
    assert!(err.contains("line 80"), "{err}");
}

#[test]
fn unknown_fields_are_errors_at_every_level() {
    let cases = [
        ("apiVersion: v1\nkind: Pod\nmetadta: {}\n", "metadta: unknown field"),
        ("apiVersion: v1\nkind: Pod\nspec:\n  hostNetwrok: true\n", "spec.hostNetwrok: unknown field"),
        (
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    resources:\n      limit: {}\n",
            "spec.containers[0].resources.limit: unknown field",
        ),
        (
            "apiVersion: v1\nkind: Pod\nspec:\n  affinity:\n    podAntiAffinity: {}\n",
            "spec.affinity.podAntiAffinity: unknown field",
        ),
    ];
    for (text, want) in cases {
        let err = yaml_error(text);
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
    }
}

#[test]
fn json_decoding_is_strict_too() {
    let text =
        r#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"a","imag":"x"}]}}"#;
    let err = Object::from_json(text.as_bytes()).unwrap_err().to_string();
    assert!(err.starts_with("spec.containers[0].imag: unknown field"), "{err}");
    let err = from_json::<Pod>(br#"{"spec":{"nodeName":5}}"#).unwrap_err().to_string();
    assert!(err.starts_with("spec.nodeName: invalid type"), "{err}");
    let err = from_json::<Pod>(br#"{"spec":{}} trailing"#).unwrap_err().to_string();
    assert!(err.contains("unexpected text"), "{err}");
}

#[test]
fn wrong_types_and_bad_values_name_the_field() {
    let err = yaml_error("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: many\n");
    assert!(err.starts_with("spec.replicas: invalid type"), "{err}");
    let err = yaml_error(
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    resources:\n      limits:\n        cpu: lots\n",
    );
    assert!(err.starts_with("spec.containers[0].resources.limits.cpu:"), "{err}");
    assert!(err.contains("lots"), "{err}");
    let err = yaml_error("apiVersion: v1\nkind: Pod\nmetadata:\n  creationTimestamp: yesterday\n");
    assert!(err.starts_with("metadata.creationTimestamp: invalid timestamp"), "{err}");
}

#[test]
fn unsupported_kinds_and_versions_are_explained() {
    let err = yaml_error("apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n");
    assert!(err.starts_with("kind: unsupported kind \"Service\""), "{err}");
    let err = yaml_error("apiVersion: extensions/v1beta1\nkind: Deployment\n");
    assert!(err.contains("use apps/v1"), "{err}");
    let err = yaml_error("kind: Pod\n");
    assert!(err.starts_with("apiVersion: required field is missing"), "{err}");
}

#[test]
fn error_lines_count_from_the_start_of_a_multi_document_text() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Pod\nspec:\n  bogus: 1\n";
    let err = yaml_error(text);
    assert!(err.starts_with("spec.bogus: unknown field"), "{err}");
    assert!(err.contains("line 9"), "{err}");
}

#[test]
fn null_and_empty_values_mean_absent() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n  creationTimestamp: null\nspec:\n  containers:\n  - name: a\n    args:\n";
    let pod: Pod = from_yaml(text).unwrap();
    assert!(pod.metadata().labels.is_empty());
    assert!(pod.metadata().creation_timestamp.is_none());
    assert!(pod.spec.unwrap().containers[0].args.is_empty());
}

#[test]
fn zero_values_are_omitted_as_kubernetes_omits_them() {
    let pod: Pod =
        from_yaml("apiVersion: v1\nkind: Pod\nspec:\n  hostNetwork: false\n  nodeName: \"\"\n")
            .unwrap();
    let json: Value = serde_json::from_slice(&to_json(&pod)).unwrap();
    assert_eq!(json, serde_json::json!({"apiVersion": "v1", "kind": "Pod", "spec": {}}));
}

#[test]
fn int64_fields_are_json_numbers() {
    let pod: Pod = from_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  generation: 9007199254740993\nspec:\n  activeDeadlineSeconds: 30\n",
    )
    .unwrap();
    let json = String::from_utf8(to_json(&pod)).unwrap();
    assert!(json.contains("\"generation\":9007199254740993"), "{json}");
    assert!(json.contains("\"activeDeadlineSeconds\":30"), "{json}");
}

#[test]
fn resource_descriptions() {
    assert_eq!(Deployment::API_VERSION, "apps/v1");
    assert_eq!(Deployment::PLURAL, "deployments");
    const { assert!(!berth_proto::core_v1::Node::NAMESPACED) };
    assert_eq!(berth_proto::coordination_v1::Lease::GROUP, "coordination.k8s.io");
    let mut pod = Pod::default();
    pod.set_type_meta();
    assert_eq!(pod.type_meta(), ("v1", "Pod"));
    pod.metadata_mut().name = "a".into();
    assert_eq!(pod.metadata().name, "a");
}

#[test]
fn security_contexts_round_trip() {
    let Object::Pod(p) = assert_round_trip("secure-pod.yaml") else { panic!("kind") };
    let spec = p.spec.as_ref().unwrap();
    let pod_sc = spec.security_context.as_ref().unwrap();
    assert_eq!(pod_sc.seccomp_profile.as_ref().unwrap().r#type, "RuntimeDefault");
    // A sysctl's empty value is kept: Kubernetes always writes name and value.
    assert_eq!(pod_sc.sysctls[1].value, "");
    let sc = spec.containers[0].security_context.as_ref().unwrap();
    assert_eq!(sc.proc_mount.as_deref(), Some("Default"));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let profile = sc.seccomp_profile.as_ref().unwrap();
    assert_eq!(
        (profile.r#type.as_str(), profile.localhost_profile.as_deref()),
        ("Localhost", Some("profiles/app.json"))
    );
    assert_eq!(sc.capabilities.as_ref().unwrap().drop, vec!["ALL".to_string()]);
}

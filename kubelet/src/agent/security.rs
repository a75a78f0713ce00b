//! A pod's securityContext in CRI terms, as Kubernetes' kubelet gives it:
//! the pod-level settings under each container's own, host namespaces,
//! no_new_privs from allowPrivilegeEscalation, the seccomp profile (the
//! node's default where the pod names none), the runAsNonRoot check, and
//! which sysctls a pod may set.

use std::path::{Path, PathBuf};

use berth_proto::core_v1::{Container, Pod, PodSpec, SeccompProfile};
use berth_proto::cri_v1 as cri;

/// The node's settings for pod security.
#[derive(Clone, Debug)]
pub(super) struct SecurityDefaults {
    /// RuntimeDefault for containers whose pod names no seccomp profile
    /// (Kubernetes' SeccompDefault); Unconfined otherwise.
    pub seccomp_default: bool,
    /// Where Localhost seccomp profiles are, by their relative names.
    pub seccomp_root: PathBuf,
}

/// The sysctls Kubernetes' kubelet lets every pod set: namespaced, and
/// unable to affect other pods or the node.
const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

fn mode(host: bool, otherwise: cri::NamespaceMode) -> i32 {
    if host {
        cri::NamespaceMode::Node as i32
    } else {
        otherwise as i32
    }
}

fn namespaces(spec: &PodSpec) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: mode(spec.host_network, cri::NamespaceMode::Pod),
        pid: mode(spec.host_pid, cri::NamespaceMode::Container),
        ipc: mode(spec.host_ipc, cri::NamespaceMode::Pod),
        target_id: String::new(),
    }
}

/// The pod's supplemental groups, fsGroup among them, as the kubelet
/// passes them.
fn supplemental_groups(spec: &PodSpec) -> Vec<i64> {
    let pod = spec.security_context.clone().unwrap_or_default();
    let mut groups = pod.supplemental_groups.clone();
    if let Some(fs) = pod.fs_group {
        if !groups.contains(&fs) {
            groups.push(fs);
        }
    }
    groups
}

/// The sandbox's security context and sysctls.
pub(super) fn sandbox(
    spec: &PodSpec,
    defaults: &SecurityDefaults,
) -> (cri::LinuxSandboxSecurityContext, std::collections::BTreeMap<String, String>) {
    let pod = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true));
    let context = cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespaces(spec)),
        run_as_user: pod.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: pod.run_as_group.map(|value| cri::Int64Value { value }),
        supplemental_groups: supplemental_groups(spec),
        privileged,
        seccomp: Some(seccomp(pod.seccomp_profile.as_ref(), defaults)),
        ..Default::default()
    };
    let sysctls = pod.sysctls.iter().map(|s| (s.name.replace('/', "."), s.value.clone())).collect();
    (context, sysctls)
}

/// The sysctls of the pod the node does not allow, if any (Kubernetes
/// fails such a pod with SysctlForbidden): those not on the safe list, and
/// those of a host namespace the pod shares (net.* with hostNetwork, IPC
/// ones with hostIPC), which would change the node's own.
pub(super) fn forbidden_sysctls(spec: &PodSpec) -> Vec<String> {
    let pod = spec.security_context.clone().unwrap_or_default();
    let in_host_namespace = |name: &str| {
        let ipc = name.starts_with("kernel.shm")
            || name.starts_with("kernel.msg")
            || name == "kernel.sem"
            || name.starts_with("fs.mqueue.");
        (spec.host_network && name.starts_with("net.")) || (spec.host_ipc && ipc)
    };
    pod.sysctls
        .iter()
        .map(|s| s.name.replace('/', "."))
        .filter(|name| !SAFE_SYSCTLS.contains(&name.as_str()) || in_host_namespace(name))
        .collect()
}

fn seccomp(profile: Option<&SeccompProfile>, defaults: &SecurityDefaults) -> cri::SecurityProfile {
    use cri::security_profile::ProfileType;
    let (kind, localhost) = match profile.map(|p| p.r#type.as_str()) {
        Some("RuntimeDefault") => (ProfileType::RuntimeDefault, String::new()),
        Some("Localhost") => {
            let name = profile.and_then(|p| p.localhost_profile.clone()).unwrap_or_default();
            (ProfileType::Localhost, defaults.seccomp_root.join(name).display().to_string())
        }
        Some(_) => (ProfileType::Unconfined, String::new()),
        None if defaults.seccomp_default => (ProfileType::RuntimeDefault, String::new()),
        None => (ProfileType::Unconfined, String::new()),
    };
    cri::SecurityProfile { profile_type: kind as i32, localhost_ref: localhost }
}

/// A container's security context: its own settings over the pod's.
pub(super) fn container(
    spec: &PodSpec,
    c: &Container,
    defaults: &SecurityDefaults,
) -> cri::LinuxContainerSecurityContext {
    let pod = spec.security_context.clone().unwrap_or_default();
    let own = c.security_context.clone().unwrap_or_default();
    let run_as_user = own.run_as_user.or(pod.run_as_user);
    let run_as_group = own.run_as_group.or(pod.run_as_group);
    let profile = own.seccomp_profile.as_ref().or(pod.seccomp_profile.as_ref());
    let caps = own.capabilities.clone().unwrap_or_default();
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add,
            drop_capabilities: caps.drop,
            add_ambient_capabilities: Vec::new(),
        }),
        privileged: own.privileged == Some(true),
        namespace_options: Some(namespaces(spec)),
        run_as_user: run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: own.read_only_root_filesystem == Some(true),
        supplemental_groups: supplemental_groups(spec),
        no_new_privs: own.allow_privilege_escalation == Some(false),
        seccomp: Some(seccomp(profile, defaults)),
        ..Default::default()
    }
}

/// Kubernetes' runAsNonRoot check, before a container is created: with
/// runAsNonRoot it must run as a uid other than 0, known from runAsUser
/// or from the image's numeric user (an image without one runs as root).
/// The error is the CreateContainerConfigError message.
pub(super) fn verify_run_as_non_root(
    pod: &Pod,
    c: &Container,
    image_user: Option<&cri::Image>,
) -> Result<(), String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let own = c.security_context.clone().unwrap_or_default();
    if own.run_as_non_root.or(pod_sc.run_as_non_root) != Some(true) {
        return Ok(());
    }
    let name = pod.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default();
    if let Some(uid) = own.run_as_user.or(pod_sc.run_as_user) {
        if uid == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {name:?}, container: {})",
                c.name
            ));
        }
        return Ok(());
    }
    let uid = image_user.and_then(|i| i.uid.as_ref()).map(|u| u.value);
    let username = image_user.map(|i| i.username.as_str()).unwrap_or_default();
    match uid {
        Some(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {name:?}, container: {})",
            c.name
        )),
        Some(_) => Ok(()),
        None if !username.is_empty() => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({username}), cannot verify user is non-root (pod: {name:?}, container: {})",
            c.name
        )),
        None => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {name:?}, container: {})",
            c.name
        )),
    }
}

/// The default place of Localhost seccomp profiles under the agent's root.
pub(super) fn seccomp_root(root_dir: &Path) -> PathBuf {
    root_dir.join("seccomp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::core_v1::{Capabilities, PodSecurityContext, SecurityContext, Sysctl};
    use cri::security_profile::ProfileType;

    fn defaults(seccomp_default: bool) -> SecurityDefaults {
        SecurityDefaults { seccomp_default, seccomp_root: "/var/lib/kubelet/seccomp".into() }
    }

    fn pod(pod_sc: PodSecurityContext, sc: Option<SecurityContext>) -> Pod {
        Pod {
            metadata: Some(berth_proto::meta_v1::ObjectMeta {
                name: "p".into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                security_context: Some(pod_sc),
                containers: vec![Container {
                    name: "c".into(),
                    security_context: sc,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_settings_override_the_pods() {
        let p = pod(
            PodSecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(2000),
                supplemental_groups: vec![5],
                fs_group: Some(7),
                seccomp_profile: Some(SeccompProfile {
                    r#type: "Localhost".into(),
                    localhost_profile: Some("prof.json".into()),
                }),
                ..Default::default()
            },
            Some(SecurityContext {
                run_as_user: Some(3000),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    add: vec!["NET_ADMIN".into()],
                    drop: vec!["ALL".into()],
                }),
                ..Default::default()
            }),
        );
        let spec = p.spec.clone().unwrap();
        let sc = container(&spec, &spec.containers[0], &defaults(true));
        assert_eq!(sc.run_as_user.map(|u| u.value), Some(3000));
        assert_eq!(sc.run_as_group.map(|g| g.value), Some(2000));
        assert_eq!(sc.supplemental_groups, vec![5, 7]);
        assert!(sc.no_new_privs && sc.readonly_rootfs && !sc.privileged);
        let caps = sc.capabilities.unwrap();
        assert_eq!(
            (caps.add_capabilities, caps.drop_capabilities),
            (vec!["NET_ADMIN".into()], vec!["ALL".into()])
        );
        let profile = sc.seccomp.unwrap();
        assert_eq!(profile.profile_type, ProfileType::Localhost as i32);
        assert_eq!(profile.localhost_ref, "/var/lib/kubelet/seccomp/prof.json");
    }

    #[test]
    fn seccomp_follows_the_node_default_when_the_pod_is_silent() {
        let p = pod(PodSecurityContext::default(), None);
        let spec = p.spec.clone().unwrap();
        let kind =
            |d| container(&spec, &spec.containers[0], &defaults(d)).seccomp.unwrap().profile_type;
        assert_eq!(kind(true), ProfileType::RuntimeDefault as i32);
        assert_eq!(kind(false), ProfileType::Unconfined as i32);
        let unconfined = pod(
            PodSecurityContext::default(),
            Some(SecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    r#type: "Unconfined".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
        );
        let spec = unconfined.spec.unwrap();
        let sc = container(&spec, &spec.containers[0], &defaults(true));
        assert_eq!(sc.seccomp.unwrap().profile_type, ProfileType::Unconfined as i32);
    }

    #[test]
    fn host_namespaces_and_sysctls_reach_the_sandbox() {
        let mut p = pod(
            PodSecurityContext {
                sysctls: vec![
                    Sysctl { name: "net/ipv4/tcp_syncookies".into(), value: "1".into() },
                    Sysctl { name: "kernel.msgmax".into(), value: "1".into() },
                ],
                ..Default::default()
            },
            None,
        );
        let spec = p.spec.as_mut().unwrap();
        spec.host_pid = true;
        let (sandbox_sc, sysctls) = sandbox(spec, &defaults(true));
        let ns = sandbox_sc.namespace_options.unwrap();
        assert_eq!(ns.pid, cri::NamespaceMode::Node as i32);
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(sysctls.get("net.ipv4.tcp_syncookies").map(String::as_str), Some("1"));
        assert_eq!(forbidden_sysctls(spec), vec!["kernel.msgmax".to_string()]);
        spec.host_network = true;
        spec.host_ipc = true;
        spec.security_context
            .as_mut()
            .unwrap()
            .sysctls
            .push(Sysctl { name: "kernel.shm_rmid_forced".into(), value: "1".into() });
        let (sandbox_sc, _) = sandbox(spec, &defaults(true));
        let ns = sandbox_sc.namespace_options.unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        assert_eq!(ns.ipc, cri::NamespaceMode::Node as i32);
        assert_eq!(
            forbidden_sysctls(spec),
            ["net.ipv4.tcp_syncookies", "kernel.msgmax", "kernel.shm_rmid_forced"]
        );
    }

    #[test]
    fn run_as_non_root_refuses_uid_zero() {
        let non_root = |user: Option<i64>| {
            pod(
                PodSecurityContext { run_as_non_root: Some(true), ..Default::default() },
                Some(SecurityContext { run_as_user: user, ..Default::default() }),
            )
        };
        let image = |uid: Option<i64>, name: &str| cri::Image {
            uid: uid.map(|value| cri::Int64Value { value }),
            username: name.into(),
            ..Default::default()
        };
        let check = |p: &Pod, i: Option<&cri::Image>| {
            verify_run_as_non_root(p, &p.spec.as_ref().unwrap().containers[0], i)
        };
        assert!(check(&non_root(Some(0)), None).unwrap_err().contains("breaks non-root policy"));
        assert!(check(&non_root(Some(1000)), None).is_ok());
        assert!(check(&non_root(None), Some(&image(Some(0), ""))).is_err());
        assert!(check(&non_root(None), Some(&image(None, ""))).is_err(), "no user is root");
        assert!(check(&non_root(None), Some(&image(None, "app")))
            .unwrap_err()
            .contains("non-numeric"));
        assert!(check(&non_root(None), Some(&image(Some(65534), ""))).is_ok());
        let free = pod(PodSecurityContext::default(), None);
        assert!(check(&free, Some(&image(Some(0), ""))).is_ok());
    }
}

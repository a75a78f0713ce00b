//! Pod security admission: Kubernetes' Pod Security Standards (privileged,
//! baseline, restricted), chosen per namespace by its labels.
//!
//! `pod-security.kubernetes.io/enforce` refuses pods that break the level;
//! `pod-security.kubernetes.io/warn` lets them in with a warning (on REST, a
//! `Warning` header). A namespace without an enforce label gets the
//! configured default level (privileged unless set otherwise); an invalid
//! level is read as restricted. Pods are checked when created and when an
//! update changes their spec; Deployment and ReplicaSet pod templates only
//! warn, as in Kubernetes, since the pods they make are checked themselves.
//! Exempt users and groups pass unchecked.
//!
//! The labels come from a cache of namespaces that the plugin's own task
//! keeps current with a watch (admission must not block, and a write must
//! not pay for a namespace read); until the first list has arrived, pods are
//! refused as unavailable rather than let through unchecked.

use super::admission::{Admission, Admitted};
use super::RequestInfo;
use crate::error::ApiError;
use crate::registry::{ListOptions, Registry, WatchEvent};
use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::core_v1::{Container, Namespace, Pod, PodSpec, SeccompProfile};
use berth_proto::meta_v1::ObjectMeta;
use berth_raft_store::Store;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The label that names the level a namespace enforces.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The label that names the level a namespace warns about.
pub const WARN_LABEL: &str = "pod-security.kubernetes.io/warn";

/// One of the Pod Security Standards, from least to most restrictive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Level, String> {
        match text {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            other => Err(format!(
                "{other:?} is not a pod security level (privileged, baseline, restricted)"
            )),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        })
    }
}

/// What `berth server`'s `--pod-security-*` flags set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSecurityConfig {
    /// Enforced in namespaces without an enforce label.
    pub default_level: Level,
    /// Users whose pods are never checked.
    pub exempt_users: Vec<String>,
    /// Groups whose members' pods are never checked.
    pub exempt_groups: Vec<String>,
}

impl Default for PodSecurityConfig {
    /// Kubernetes' defaults: privileged where unlabelled, nobody exempt.
    fn default() -> PodSecurityConfig {
        PodSecurityConfig {
            default_level: Level::Privileged,
            exempt_users: Vec::new(),
            exempt_groups: Vec::new(),
        }
    }
}

/// The levels one namespace's labels choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Policy {
    enforce: Option<Level>,
    warn: Option<Level>,
}

impl Policy {
    fn of(labels: &BTreeMap<String, String>) -> Policy {
        // A level nobody can read is the strictest, not none.
        let level = |key: &str| labels.get(key).map(|v| v.parse().unwrap_or(Level::Restricted));
        Policy { enforce: level(ENFORCE_LABEL), warn: level(WARN_LABEL) }
    }
}

/// Every namespace's policy, as the watch last saw it.
#[derive(Default)]
struct NamespacePolicies {
    /// Set once the first list is in.
    synced: AtomicBool,
    policies: RwLock<HashMap<String, Policy>>,
}

impl NamespacePolicies {
    fn replace(&self, namespaces: &[Namespace]) {
        let policies = namespaces.iter().map(|ns| {
            let meta = ns.metadata.as_ref();
            let name = meta.map(|m| m.name.clone()).unwrap_or_default();
            (name, meta.map_or(Policy { enforce: None, warn: None }, |m| Policy::of(&m.labels)))
        });
        if let Ok(mut map) = self.policies.write() {
            *map = policies.collect();
        }
        self.synced.store(true, Ordering::Release);
    }

    fn set(&self, namespace: &Namespace) {
        let Some(meta) = namespace.metadata.as_ref() else { return };
        if let Ok(mut map) = self.policies.write() {
            map.insert(meta.name.clone(), Policy::of(&meta.labels));
        }
    }

    fn remove(&self, namespace: &Namespace) {
        let Some(meta) = namespace.metadata.as_ref() else { return };
        if let Ok(mut map) = self.policies.write() {
            map.remove(&meta.name);
        }
    }

    /// `namespace`'s policy; Unavailable until the first list is in, or
    /// while the namespace (which the write found) has not reached the
    /// watch yet.
    fn get(&self, namespace: &str) -> Result<Policy, ApiError> {
        let unavailable = || {
            ApiError::Unavailable(format!(
                "pod security admission has not yet seen namespace {namespace:?}; retry"
            ))
        };
        if !self.synced.load(Ordering::Acquire) {
            return Err(unavailable());
        }
        let map = self.policies.read().map_err(|_| unavailable())?;
        map.get(namespace).copied().ok_or_else(unavailable)
    }
}

/// Aborts the namespace watch when the plugin goes.
struct Follower(tokio::task::JoinHandle<()>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pod security admission plugin; see the module comment.
pub struct PodSecurity {
    config: PodSecurityConfig,
    namespaces: Arc<NamespacePolicies>,
    _follower: Option<Follower>,
}

/// How long the namespace watch waits before listing again after a failure.
const RELIST_AFTER: Duration = Duration::from_millis(200);

impl PodSecurity {
    /// The plugin, with a task that follows the namespaces in `registry`
    /// until `stop` is cancelled or the plugin is dropped. Needs a tokio
    /// runtime.
    pub fn new(
        config: PodSecurityConfig,
        registry: Registry<Store>,
        stop: CancellationToken,
    ) -> PodSecurity {
        let namespaces = Arc::new(NamespacePolicies::default());
        let task = tokio::spawn(follow(registry, namespaces.clone(), stop));
        PodSecurity { config, namespaces, _follower: Some(Follower(task)) }
    }

    fn exempt(&self, info: &RequestInfo) -> bool {
        let user = &info.user;
        self.config.exempt_users.contains(&user.name)
            || user.groups.iter().any(|g| self.config.exempt_groups.contains(g))
    }

    /// The namespace's enforced and warned levels.
    fn levels(&self, namespace: &str) -> Result<(Level, Option<Level>), ApiError> {
        let policy = self.namespaces.get(namespace)?;
        Ok((policy.enforce.unwrap_or(self.config.default_level), policy.warn))
    }
}

/// Lists the namespaces, then watches them, again after every failure.
async fn follow(
    registry: Registry<Store>,
    namespaces: Arc<NamespacePolicies>,
    stop: CancellationToken,
) {
    loop {
        if let Err(e) = follow_once(&registry, &namespaces, &stop).await {
            tracing::debug!(error = %e, "pod security admission relists namespaces");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RELIST_AFTER) => {}
        }
    }
}

async fn follow_once(
    registry: &Registry<Store>,
    namespaces: &NamespacePolicies,
    stop: &CancellationToken,
) -> Result<(), ApiError> {
    let options = ListOptions::default();
    let listed = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        listed = registry.list::<Namespace>(None, &options) => listed?,
    };
    namespaces.replace(&listed.items);
    let mut watch = registry.watch::<Namespace>(None, &listed.resource_version, "", "", None)?;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            event = watch.next() => event,
        };
        match event {
            None => return Ok(()),
            Some(Err(e)) => return Err(e),
            Some(Ok(WatchEvent::Added(ns) | WatchEvent::Modified(ns))) => namespaces.set(&ns),
            Some(Ok(WatchEvent::Deleted(ns))) => namespaces.remove(&ns),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
        }
    }
}

impl Admission for PodSecurity {
    fn validate(
        &self,
        info: &RequestInfo,
        object: &dyn Admitted,
        old: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        let Some(pod) = object.as_any().downcast_ref::<Pod>() else {
            return self.warn_about_template(info, object, old);
        };
        let old_spec = old.and_then(|o| o.as_any().downcast_ref::<Pod>()).map(|o| &o.spec);
        if old_spec == Some(&pod.spec) || self.exempt(info) {
            return Ok(());
        }
        let meta = pod.metadata.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let (enforce, warn) = self.levels(&meta.namespace)?;
        let refused = violations(enforce, &meta, &spec);
        if !refused.is_empty() {
            return Err(ApiError::Forbidden(format!(
                "violates PodSecurity \"{enforce}:latest\": {}",
                refused.join(", ")
            )));
        }
        warn_about(info, warn, &meta, &spec);
        Ok(())
    }
}

impl PodSecurity {
    /// A Deployment's or ReplicaSet's pod template is only warned about,
    /// at the namespace's warn level, as in Kubernetes: the pods made from
    /// it are checked when created.
    fn warn_about_template(
        &self,
        info: &RequestInfo,
        object: &dyn Admitted,
        old: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        let Some(template) = template_of(object) else { return Ok(()) };
        if old.and_then(template_of).as_ref() == Some(&template) || self.exempt(info) {
            return Ok(());
        }
        // A namespace not yet known only costs the warning, not the write.
        if let Ok((_, warn)) = self.levels(&object.metadata().namespace) {
            warn_about(info, warn, &template.0, &template.1);
        }
        Ok(())
    }
}

/// Adds a warning when the pod breaks the `warn` level.
fn warn_about(info: &RequestInfo, warn: Option<Level>, meta: &ObjectMeta, spec: &PodSpec) {
    let Some(level) = warn else { return };
    let found = violations(level, meta, spec);
    if !found.is_empty() {
        info.warnings
            .add(format!("would violate PodSecurity \"{level}:latest\": {}", found.join(", ")));
    }
}

/// A Deployment's or ReplicaSet's pod template: its metadata and spec.
fn template_of(object: &dyn Admitted) -> Option<(ObjectMeta, PodSpec)> {
    let any = object.as_any();
    let template = match any.downcast_ref::<Deployment>() {
        Some(deployment) => deployment.spec.as_ref()?.template.clone(),
        None => any.downcast_ref::<ReplicaSet>()?.spec.as_ref()?.template.clone(),
    }?;
    Some((template.metadata.unwrap_or_default(), template.spec.unwrap_or_default()))
}

/// Capabilities baseline lets a container add: Kubernetes' default set.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls baseline allows: namespaced, and harmless to other pods.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const APPARMOR_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// What a pod (its metadata and spec) does that `level` forbids, one entry
/// per check in Kubernetes' order and words: `host namespaces
/// (hostNetwork=true)`. Empty when it meets the level.
pub fn violations(level: Level, meta: &ObjectMeta, spec: &PodSpec) -> Vec<String> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let restricted = level == Level::Restricted;
    let containers: Vec<&Container> =
        spec.init_containers.iter().chain(spec.containers.iter()).collect();
    let pod_context = spec.security_context.clone().unwrap_or_default();
    let context = |c: &Container| c.security_context.clone().unwrap_or_default();
    let mut found = Vec::new();

    if restricted {
        let escalating =
            names(&containers, |c| context(c).allow_privilege_escalation != Some(false));
        check(
            &mut found,
            "allowPrivilegeEscalation != false",
            detail(&escalating, "must set securityContext.allowPrivilegeEscalation=false"),
        );
    }

    let mut apparmor: Vec<String> = meta
        .annotations
        .iter()
        .filter(|(key, _)| key.starts_with(APPARMOR_PREFIX))
        .filter(|(_, value)| *value != "runtime/default" && !value.starts_with("localhost/"))
        .map(|(key, value)| format!("{key}={value:?}"))
        .collect();
    apparmor.sort();
    if !apparmor.is_empty() {
        let noun = if apparmor.len() == 1 { "profile" } else { "profiles" };
        found.push(format!("forbidden AppArmor {noun} ({})", apparmor.join(", ")));
    }

    let added = |c: &Container| context(c).capabilities.map(|k| k.add).unwrap_or_default();
    let beyond = |allowed: &[&str]| {
        let offenders =
            names(&containers, |c| added(c).iter().any(|a| !allowed.contains(&a.as_str())));
        let mut caps: Vec<String> = containers
            .iter()
            .flat_map(|c| added(c))
            .filter(|a| !allowed.contains(&a.as_str()))
            .collect();
        caps.sort();
        caps.dedup();
        let caps: Vec<String> = caps.iter().map(|c| format!("{c:?}")).collect();
        detail(
            &offenders,
            &format!("must not include {} in securityContext.capabilities.add", caps.join(", ")),
        )
    };
    check(&mut found, "non-default capabilities", beyond(BASELINE_CAPABILITIES));
    if restricted {
        let not_dropping = names(&containers, |c| {
            !context(c).capabilities.is_some_and(|k| k.drop.iter().any(|d| d == "ALL"))
        });
        let mut details =
            detail(&not_dropping, "must set securityContext.capabilities.drop=[\"ALL\"]");
        details.extend(beyond(&["NET_BIND_SERVICE"]));
        check(&mut found, "unrestricted capabilities", details);
    }

    let hosts: Vec<String> = [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| format!("{name}=true"))
    .collect();
    if !hosts.is_empty() {
        found.push(format!("host namespaces ({})", hosts.join(", ")));
    }

    let host_paths: Vec<&str> =
        spec.volumes.iter().filter(|v| v.host_path.is_some()).map(|v| v.name.as_str()).collect();
    if !host_paths.is_empty() {
        found.push(format!("hostPath volumes ({})", quoted_list("volume", &host_paths)));
    }

    let using_ports = names(&containers, |c| c.ports.iter().any(|p| p.host_port != 0));
    if !using_ports.is_empty() {
        let mut ports: Vec<i32> = containers
            .iter()
            .flat_map(|c| &c.ports)
            .map(|p| p.host_port)
            .filter(|p| *p != 0)
            .collect();
        ports.sort();
        ports.dedup();
        let ports: Vec<String> = ports.iter().map(i32::to_string).collect();
        let (verb, noun) = match (using_ports.len(), ports.len()) {
            (1, 1) => ("uses", "hostPort"),
            (1, _) => ("uses", "hostPorts"),
            (_, 1) => ("use", "hostPort"),
            _ => ("use", "hostPorts"),
        };
        found.push(format!(
            "hostPort ({} {verb} {noun} {})",
            quoted_list("container", &using_ports),
            ports.join(", ")
        ));
    }

    let privileged = names(&containers, |c| context(c).privileged == Some(true));
    check(
        &mut found,
        "privileged",
        detail(&privileged, "must not set securityContext.privileged=true"),
    );

    let unmasked: Vec<String> = containers
        .iter()
        .filter_map(|c| {
            context(c).proc_mount.filter(|m| m != "Default").map(|m| (c.name.clone(), m))
        })
        .map(|(name, mount)| {
            format!("container {name:?} must not set securityContext.procMount to {mount:?}")
        })
        .collect();
    check(&mut found, "procMount", unmasked);

    if restricted {
        let volumes: Vec<&str> = host_paths.clone();
        if !volumes.is_empty() {
            let verb = if volumes.len() == 1 { "uses" } else { "use" };
            found.push(format!(
                "restricted volume types ({} {verb} restricted volume type \"hostPath\")",
                quoted_list("volume", &volumes)
            ));
        }

        let mut details = Vec::new();
        if pod_context.run_as_non_root == Some(false) {
            details.push("pod must not set securityContext.runAsNonRoot=false".to_string());
        }
        let explicitly_root = names(&containers, |c| context(c).run_as_non_root == Some(false));
        details.extend(detail(&explicitly_root, "must not set securityContext.runAsNonRoot=false"));
        if pod_context.run_as_non_root != Some(true) {
            let unset = names(&containers, |c| context(c).run_as_non_root.is_none());
            if !unset.is_empty() {
                details.push(format!(
                    "pod or {} must set securityContext.runAsNonRoot=true",
                    quoted_list("container", &unset)
                ));
            }
        }
        check(&mut found, "runAsNonRoot != true", details);

        let mut details = Vec::new();
        if pod_context.run_as_user == Some(0) {
            details.push("pod must not set runAsUser=0".to_string());
        }
        let root = names(&containers, |c| context(c).run_as_user == Some(0));
        details.extend(detail(&root, "must not set runAsUser=0"));
        check(&mut found, "runAsUser=0", details);
    }

    let kind = |p: &Option<SeccompProfile>| p.as_ref().map(|p| p.r#type.clone());
    let pod_seccomp = kind(&pod_context.seccomp_profile);
    let mut details = Vec::new();
    if restricted {
        let allowed = |t: &str| t == "RuntimeDefault" || t == "Localhost";
        if let Some(t) = pod_seccomp.as_deref().filter(|t| !allowed(t)) {
            details.push(format!("pod must not set securityContext.seccompProfile.type to {t:?}"));
        }
        let mut bad_types: Vec<String> = Vec::new();
        let bad = names(&containers, |c| {
            kind(&context(c).seccomp_profile).is_some_and(|t| {
                let bad = !allowed(&t);
                if bad {
                    bad_types.push(t);
                }
                bad
            })
        });
        bad_types.sort();
        bad_types.dedup();
        let bad_types: Vec<String> = bad_types.iter().map(|t| format!("{t:?}")).collect();
        details.extend(detail(
            &bad,
            &format!(
                "must not set securityContext.seccompProfile.type to {}",
                bad_types.join(", ")
            ),
        ));
        if !pod_seccomp.as_deref().is_some_and(allowed) {
            let unset = names(&containers, |c| kind(&context(c).seccomp_profile).is_none());
            if !unset.is_empty() {
                details.push(format!(
                    "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                    quoted_list("container", &unset)
                ));
            }
        }
    } else {
        if pod_seccomp.as_deref() == Some("Unconfined") {
            details.push(
                "pod must not set securityContext.seccompProfile.type to \"Unconfined\""
                    .to_string(),
            );
        }
        let unconfined = names(&containers, |c| {
            kind(&context(c).seccomp_profile).as_deref() == Some("Unconfined")
        });
        details.extend(detail(
            &unconfined,
            "must not set securityContext.seccompProfile.type to \"Unconfined\"",
        ));
    }
    check(&mut found, "seccompProfile", details);

    let mut sysctls: Vec<&str> = pod_context
        .sysctls
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| !SAFE_SYSCTLS.contains(name))
        .collect();
    sysctls.sort();
    sysctls.dedup();
    if !sysctls.is_empty() {
        found.push(format!("forbidden sysctls ({})", sysctls.join(", ")));
    }
    found
}

/// Adds `name (detail; detail)` when there are details.
fn check(found: &mut Vec<String>, name: &str, details: Vec<String>) {
    if !details.is_empty() {
        found.push(format!("{name} ({})", details.join("; ")));
    }
}

/// The names of the containers `test` holds for.
fn names<'a>(containers: &[&'a Container], test: impl FnMut(&&Container) -> bool) -> Vec<&'a str> {
    let mut test = test;
    containers.iter().filter(|c| test(c)).map(|c| c.name.as_str()).collect()
}

/// `container "a" <rule>` or `containers "a", "b" <rule>`; none when no
/// container breaks the rule.
fn detail(containers: &[&str], rule: &str) -> Vec<String> {
    if containers.is_empty() {
        return Vec::new();
    }
    vec![format!("{} {rule}", quoted_list("container", containers))]
}

/// `volume "a"` or `volumes "a", "b"`.
fn quoted_list(noun: &str, items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    let plural = if items.len() == 1 { "" } else { "s" };
    format!("{noun}{plural} {}", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::UserInfo;
    use berth_proto::core_v1::{
        Capabilities, ContainerPort, HostPathVolumeSource, PodSecurityContext, SecurityContext,
        Sysctl, Volume,
    };

    fn container(name: &str) -> Container {
        Container { name: name.into(), image: "busybox".into(), ..Default::default() }
    }

    /// A pod that meets restricted: non-root, no escalation, every
    /// capability dropped, the runtime's seccomp profile.
    fn restricted_spec() -> PodSpec {
        PodSpec {
            containers: vec![Container {
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: vec!["ALL".into()],
                        add: vec!["NET_BIND_SERVICE".into()],
                    }),
                    ..Default::default()
                }),
                ..container("app")
            }],
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile {
                    r#type: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn check(level: Level, spec: &PodSpec) -> Vec<String> {
        violations(level, &ObjectMeta::default(), spec)
    }

    fn host_path(name: &str) -> Volume {
        Volume {
            name: name.into(),
            host_path: Some(HostPathVolumeSource { path: "/etc".into(), r#type: None }),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_pod_is_baseline_but_not_restricted() {
        let spec = PodSpec { containers: vec![container("app")], ..Default::default() };
        assert!(check(Level::Baseline, &spec).is_empty());
        assert_eq!(
            check(Level::Restricted, &spec),
            [
                r#"allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false)"#,
                r#"unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"])"#,
                r#"runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)"#,
                r#"seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
            ]
        );
        assert!(check(Level::Restricted, &restricted_spec()).is_empty());
    }

    #[test]
    fn baseline_refuses_what_reaches_the_host() {
        let mut spec = PodSpec {
            host_network: true,
            host_pid: true,
            volumes: vec![host_path("etc"), host_path("proc")],
            ..Default::default()
        };
        let mut privileged = container("a");
        privileged.security_context = Some(SecurityContext {
            privileged: Some(true),
            capabilities: Some(Capabilities {
                add: vec!["NET_ADMIN".into(), "CHOWN".into(), "SYS_ADMIN".into()],
                drop: Vec::new(),
            }),
            proc_mount: Some("Unmasked".into()),
            seccomp_profile: Some(SeccompProfile {
                r#type: "Unconfined".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        });
        let mut ported = container("b");
        ported.ports =
            vec![ContainerPort { host_port: 8080, container_port: 80, ..Default::default() }];
        spec.containers = vec![privileged, ported];
        spec.security_context = Some(PodSecurityContext {
            sysctls: vec![
                Sysctl { name: "net.core.somaxconn".into(), value: "1024".into() },
                Sysctl { name: "net.ipv4.tcp_syncookies".into(), value: "1".into() },
            ],
            ..Default::default()
        });
        assert_eq!(
            check(Level::Baseline, &spec),
            [
                r#"non-default capabilities (container "a" must not include "NET_ADMIN", "SYS_ADMIN" in securityContext.capabilities.add)"#,
                r#"host namespaces (hostNetwork=true, hostPID=true)"#,
                r#"hostPath volumes (volumes "etc", "proc")"#,
                r#"hostPort (container "b" uses hostPort 8080)"#,
                r#"privileged (container "a" must not set securityContext.privileged=true)"#,
                r#"procMount (container "a" must not set securityContext.procMount to "Unmasked")"#,
                r#"seccompProfile (container "a" must not set securityContext.seccompProfile.type to "Unconfined")"#,
                r#"forbidden sysctls (net.core.somaxconn)"#,
            ]
        );
        assert!(check(Level::Privileged, &spec).is_empty());
    }

    #[test]
    fn restricted_adds_to_baseline() {
        let mut spec = restricted_spec();
        spec.volumes = vec![host_path("data")];
        let context = spec.containers[0].security_context.as_mut().unwrap();
        context.capabilities.as_mut().unwrap().add.push("SYS_TIME".into());
        context.run_as_user = Some(0);
        context.run_as_non_root = Some(false);
        spec.init_containers = vec![Container {
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities { drop: vec!["ALL".into()], add: Vec::new() }),
                seccomp_profile: Some(SeccompProfile {
                    r#type: "Unconfined".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            ..container("init")
        }];
        assert_eq!(
            check(Level::Restricted, &spec),
            [
                r#"non-default capabilities (container "app" must not include "SYS_TIME" in securityContext.capabilities.add)"#,
                r#"unrestricted capabilities (container "app" must not include "SYS_TIME" in securityContext.capabilities.add)"#,
                r#"hostPath volumes (volume "data")"#,
                r#"restricted volume types (volume "data" uses restricted volume type "hostPath")"#,
                r#"runAsNonRoot != true (container "app" must not set securityContext.runAsNonRoot=false)"#,
                r#"runAsUser=0 (container "app" must not set runAsUser=0)"#,
                r#"seccompProfile (container "init" must not set securityContext.seccompProfile.type to "Unconfined")"#,
            ]
        );
    }

    #[test]
    fn apparmor_annotations_other_than_the_runtimes_are_refused() {
        let meta = ObjectMeta {
            annotations: [
                (format!("{APPARMOR_PREFIX}a"), "unconfined".to_string()),
                (format!("{APPARMOR_PREFIX}b"), "runtime/default".to_string()),
                (format!("{APPARMOR_PREFIX}c"), "localhost/mine".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let spec = PodSpec { containers: vec![container("a")], ..Default::default() };
        assert_eq!(
            violations(Level::Baseline, &meta, &spec),
            [
                r#"forbidden AppArmor profile (container.apparmor.security.beta.kubernetes.io/a="unconfined")"#
            ]
        );
    }

    #[test]
    fn levels_parse_and_an_unreadable_label_is_restricted() {
        assert_eq!("baseline".parse::<Level>(), Ok(Level::Baseline));
        assert!("Baseline".parse::<Level>().is_err());
        let labels = |value: &str| BTreeMap::from([(ENFORCE_LABEL.to_string(), value.to_string())]);
        assert_eq!(Policy::of(&labels("baseline")).enforce, Some(Level::Baseline));
        assert_eq!(Policy::of(&labels("lenient")).enforce, Some(Level::Restricted));
        assert_eq!(Policy::of(&BTreeMap::new()), Policy { enforce: None, warn: None });
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: Some(ObjectMeta {
                name: name.into(),
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn plugin(config: PodSecurityConfig, namespaces: &[Namespace]) -> PodSecurity {
        let policies = NamespacePolicies::default();
        policies.replace(namespaces);
        PodSecurity { config, namespaces: Arc::new(policies), _follower: None }
    }

    fn create(user: &str, groups: &[&str], pod: &Pod) -> RequestInfo {
        let meta = pod.metadata.as_ref().unwrap();
        let mut info = RequestInfo::new::<Pod>("create", "", &meta.namespace, &meta.name);
        info.user =
            UserInfo { name: user.into(), groups: groups.iter().map(|g| g.to_string()).collect() };
        info
    }

    fn host_network_pod(namespace: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: namespace.into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                host_network: true,
                containers: vec![container("app")],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_namespace_label_chooses_the_level_and_exemptions_skip_it() {
        let config = PodSecurityConfig {
            exempt_users: vec!["ops".into()],
            exempt_groups: vec!["system:masters".into()],
            ..Default::default()
        };
        let namespaces = [
            namespace("open", &[]),
            namespace("base", &[(ENFORCE_LABEL, "baseline")]),
            namespace("warned", &[(WARN_LABEL, "restricted")]),
        ];
        let plugin = plugin(config, &namespaces);
        let pod = host_network_pod("base");
        let err = plugin.validate(&create("alice", &[], &pod), &pod, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
        );
        assert_eq!(plugin.validate(&create("ops", &[], &pod), &pod, None), Ok(()));
        assert_eq!(plugin.validate(&create("root", &["system:masters"], &pod), &pod, None), Ok(()));
        for ns in ["open", "warned"] {
            let pod = host_network_pod(ns);
            assert_eq!(plugin.validate(&create("alice", &[], &pod), &pod, None), Ok(()), "{ns}");
        }
        // A namespace the watch has not delivered yet: retry, never unchecked.
        let pod = host_network_pod("new");
        let err = plugin.validate(&create("alice", &[], &pod), &pod, None).unwrap_err();
        assert!(matches!(err, ApiError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn the_default_level_covers_unlabelled_namespaces_and_updates_need_a_spec_change() {
        let config = PodSecurityConfig { default_level: Level::Baseline, ..Default::default() };
        let plugin = plugin(config, &[namespace("open", &[])]);
        let pod = host_network_pod("open");
        let info = create("alice", &[], &pod);
        assert!(matches!(plugin.validate(&info, &pod, None), Err(ApiError::Forbidden(_))));
        // A pod admitted before the label changed keeps its status writes
        // and label changes.
        let mut relabelled = pod.clone();
        relabelled.metadata.as_mut().unwrap().labels.insert("tier".into(), "web".into());
        assert_eq!(plugin.validate(&info, &relabelled, Some(&pod)), Ok(()));
        let ns = namespace("open", &[]);
        assert_eq!(plugin.validate(&info, &ns, None), Ok(()));
    }

    #[test]
    fn the_warn_label_warns_about_pods_and_workload_templates() {
        let namespaces = [namespace("warned", &[(WARN_LABEL, "baseline")])];
        let plugin = plugin(PodSecurityConfig::default(), &namespaces);
        let pod = host_network_pod("warned");
        let info = create("alice", &[], &pod);
        assert_eq!(plugin.validate(&info, &pod, None), Ok(()));
        let warning =
            r#"would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#;
        assert_eq!(info.warnings.all(), [warning]);

        let template =
            berth_proto::core_v1::PodTemplateSpec { metadata: None, spec: pod.spec.clone() };
        let deployment = Deployment {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "warned".into(),
                ..Default::default()
            }),
            spec: Some(berth_proto::apps_v1::DeploymentSpec {
                template: Some(template),
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = RequestInfo::new::<Deployment>("create", "", "warned", "web");
        assert_eq!(plugin.validate(&info, &deployment, None), Ok(()));
        assert_eq!(info.warnings.all(), [warning]);
        // An update that leaves the template alone says nothing again.
        let info = RequestInfo::new::<Deployment>("update", "", "warned", "web");
        assert_eq!(plugin.validate(&info, &deployment, Some(&deployment)), Ok(()));
        assert!(info.warnings.all().is_empty());
    }

    #[test]
    fn nothing_passes_before_the_first_list() {
        let plugin = PodSecurity {
            config: PodSecurityConfig::default(),
            namespaces: Arc::new(NamespacePolicies::default()),
            _follower: None,
        };
        let pod = host_network_pod("default");
        let err = plugin.validate(&create("alice", &[], &pod), &pod, None).unwrap_err();
        assert!(matches!(err, ApiError::Unavailable(_)), "{err:?}");
    }
}

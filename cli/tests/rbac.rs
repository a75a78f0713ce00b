//! RBAC end to end: one `berth server` with TLS, static tokens and
//! `--authorization-mode RBAC`, driven by the real kubectl as two users:
//! an admin (group system:masters) and alice, who may do nothing until a
//! RoleBinding lets her; `kubectl auth can-i` answers as Kubernetes does,
//! the four RBAC kinds are created, listed and deleted over REST, and
//! discovery is for authenticated users only.

mod common;

use common::free_addr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The server process, killed when the test ends however it ends.
struct Server {
    child: Child,
    grpc: String,
    http: String,
    dir: tempfile::TempDir,
}

/// A process killed when the test ends however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_addr(), free_addr());
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "admin-token,admin,1,\"system:masters\"\nalice-token,alice,2\n\
         cm-token,system:kube-controller-manager,3\n",
    )
    .unwrap();
    // kubectl sends tokens only over TLS.
    let pki = dir.path().join("pki");
    berth(&[&["pki", "init", "--dir"][..], &[pki.to_str().unwrap()]].concat());
    let peer = pki.join("peer-1");
    berth(&[
        "pki",
        "issue",
        "--dir",
        pki.to_str().unwrap(),
        "--out",
        peer.to_str().unwrap(),
        "--peer",
        "1",
        "--host",
        "127.0.0.1",
    ]);
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--id", "1", "--cluster", "rbac", "--peers", &format!("1={grpc}")])
        .args(["--listen", &grpc, "--http", &http])
        .arg("--tls-cert-file")
        .arg(peer.with_extension("crt"))
        .arg("--tls-private-key-file")
        .arg(peer.with_extension("key"))
        .arg("--client-ca-file")
        .arg(pki.join("ca.crt"))
        .args(["--authorization-mode", "RBAC"])
        .arg("--token-auth-file")
        .arg(&tokens)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--heartbeat-ms", "50", "--election-timeout-ms", "200-400"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("server.log")).unwrap()))
        .spawn()
        .expect("berth server starts");
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: berth
  cluster:
    server: https://{http}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: admin-token
- name: alice
  user:
    token: alice-token
# Basic credentials, which berth does not take: kubectl sends them
# instead of asking for some, and the server sees an anonymous caller.
- name: anonymous
  user: {{username: nobody, password: none}}
contexts:
- name: admin
  context: {{cluster: berth, user: admin}}
- name: alice
  context: {{cluster: berth, user: alice}}
- name: anonymous
  context: {{cluster: berth, user: anonymous}}
current-context: admin
",
        ca = pki.join("ca.crt").display()
    );
    std::fs::write(dir.path().join("kubeconfig"), config).unwrap();
    Server { child, grpc, http, dir }
}

/// Runs a `berth` command that must succeed.
fn berth(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().unwrap();
    assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Server {
    fn kubectl(&self, context: &str, args: &[&str]) -> Output {
        Command::new("kubectl")
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .args(["--context", context])
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    fn ok(&self, context: &str, args: &[&str]) -> String {
        let out = self.kubectl(context, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} as {context} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl auth can-i` as `context`: its answer and whether it exited
    /// as an answer of that kind does (0 for yes, 1 for no).
    fn can_i(&self, context: &str, args: &[&str]) -> String {
        let mut all = vec!["auth", "can-i"];
        all.extend(args);
        let out = self.kubectl(context, &all);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let expected_code = if answer == "yes" { 0 } else { 1 };
        assert_eq!(
            out.status.code(),
            Some(expected_code),
            "can-i {args:?} as {context}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        answer
    }

    /// Polls `can-i` until it answers `want` (the authorizer's cache follows
    /// the store by a watch).
    fn wait_can_i(&self, context: &str, args: &[&str], want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.kubectl(context, &[&["auth", "can-i"][..], args].concat());
            let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if answer == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "can-i {args:?} as {context} never said {want}: {answer} {}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kubectl apply` of `manifest` as `context`.
    fn apply(&self, context: &str, manifest: &str) -> String {
        let file = self.dir.path().join("manifest.yaml");
        std::fs::write(&file, manifest).unwrap();
        self.ok(context, &["apply", "-f", file.to_str().unwrap()])
    }

    /// A controller-manager as system:kube-controller-manager (its own
    /// identity and bootstrap role), killed when dropped.
    fn controller_manager(&self) -> Killed {
        let token = self.dir.path().join("cm.token");
        std::fs::write(&token, "cm-token\n").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["controller-manager", "--server", &self.grpc, "--id", "cm-1"])
            .arg("--certificate-authority")
            .arg(self.dir.path().join("pki/ca.crt"))
            .arg("--token-file")
            .arg(&token)
            .args(["--http", &free_addr(), "--controllers", "clusterrole-aggregation"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join("controller-manager.log")).unwrap(),
            ))
            .spawn()
            .expect("berth controller-manager starts");
        Killed(child)
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

#[test]
fn kubectl_auth_can_i_and_a_role_binding_that_grants_access() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("skipped: kubectl is not on PATH");
        return;
    }
    let server = start();
    // The admin is allowed once the server bootstrapped its policy.
    server.wait_can_i("admin", &["create", "pods", "-n", "default"], "yes");
    assert!(!server.http.is_empty());
    server.ok("admin", &["create", "namespace", "team"]);
    let resources =
        server.ok("admin", &["api-resources", "--api-group", "rbac.authorization.k8s.io"]);
    for kind in ["ClusterRoleBinding", "ClusterRole", "RoleBinding", "Role"] {
        let listed = resources.lines().any(|l| l.split_whitespace().last() == Some(kind));
        assert!(listed, "{resources}");
    }

    // Non-resource URLs: /version is public; discovery and OpenAPI are for
    // authenticated users (system:discovery), as in Kubernetes.
    assert!(server.ok("anonymous", &["get", "--raw", "/version"]).contains("gitVersion"));
    for path in ["/api", "/apis", "/openapi/v2"] {
        let out = server.kubectl("anonymous", &["get", "--raw", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path}: {stderr}");
        let refusal = format!(r#"User "system:anonymous" cannot get path "{path}""#);
        assert!(stderr.contains(&refusal), "{path}: {stderr}");
        server.ok("alice", &["get", "--raw", path]);
    }

    // Admission's warnings reach berth's own command line over gRPC, as
    // kubectl shows them from REST.
    std::fs::write(server.dir.path().join("admin.token"), "admin-token\n").unwrap();
    let manifest = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: warned\n  labels:\n    pod-security.kubernetes.io/warn: baseline\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: on-host\n  namespace: warned\nspec:\n  hostNetwork: true\n  containers:\n  - name: main\n    image: busybox\n";
    let mut apply = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["apply", "-f", "-", "--server", &server.grpc, "--certificate-authority"])
        .arg(server.dir.path().join("pki/ca.crt"))
        .arg("--token-file")
        .arg(server.dir.path().join("admin.token"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut apply.stdin.take().unwrap(), manifest.as_bytes()).unwrap();
    let out = apply.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"Warning: would violate PodSecurity "baseline:latest": host namespaces"#),
        "{stderr}"
    );

    // alice is authenticated but bound to nothing.
    let out = server.kubectl("alice", &["get", "pods", "-n", "team"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            r#"User "alice" cannot list resource "pods" in API group "" in the namespace "team""#
        ),
        "{stderr}"
    );
    assert_eq!(server.can_i("alice", &["create", "pods", "-n", "team"]), "no");
    // Every authenticated user may ask what it may do.
    let rules = server.ok("alice", &["auth", "can-i", "--list", "-n", "team"]);
    assert!(rules.contains("selfsubjectaccessreviews.authorization.k8s.io"), "{rules}");
    assert!(!rules.lines().any(|l| l.starts_with("pods ")), "{rules}");

    // The admin grants alice `edit` in team, over REST.
    server.ok(
        "admin",
        &[
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
            "-n",
            "team",
        ],
    );
    let listed = server.ok("admin", &["get", "rolebindings", "-n", "team"]);
    let row = listed.lines().find(|l| l.starts_with("alice-edit")).unwrap_or_default();
    assert!(row.contains("ClusterRole/edit"), "{listed}");
    server.wait_can_i("alice", &["create", "pods", "-n", "team"], "yes");
    server.ok("alice", &["get", "pods", "-n", "team"]);
    assert_eq!(server.can_i("alice", &["delete", "deployments.apps", "-n", "team"]), "yes");
    // Only in team, and nothing cluster-wide.
    assert_eq!(server.can_i("alice", &["create", "pods", "-n", "default"]), "no");
    assert_eq!(server.can_i("alice", &["get", "nodes"]), "no");
    assert_eq!(server.can_i("alice", &["create", "rolebindings", "-n", "team"]), "no");
    let rules = server.ok("alice", &["auth", "can-i", "--list", "-n", "team"]);
    let pods = rules.lines().find(|l| l.starts_with("pods ")).unwrap_or_default();
    assert!(pods.contains("create") && pods.contains("delete"), "{rules}");

    // The other kinds over REST: a Role, a ClusterRole and a
    // ClusterRoleBinding, created, read and deleted.
    server
        .ok("admin", &["create", "role", "reader", "--verb=get", "--resource=pods", "-n", "team"]);
    let role = server.ok("admin", &["get", "role", "reader", "-n", "team", "-o", "yaml"]);
    assert!(role.contains("rbac.authorization.k8s.io/v1") && role.contains("- pods"), "{role}");
    server.ok(
        "admin",
        &["create", "clusterrole", "node-reader", "--verb=get,list", "--resource=nodes"],
    );
    server.ok(
        "admin",
        &[
            "create",
            "clusterrolebinding",
            "alice-nodes",
            "--clusterrole=node-reader",
            "--user=alice",
        ],
    );
    let listed = server.ok("admin", &["get", "clusterrolebindings"]);
    assert!(listed.contains("ClusterRole/cluster-admin"), "{listed}");
    server.wait_can_i("alice", &["list", "nodes"], "yes");
    server.ok("admin", &["delete", "clusterrolebinding", "alice-nodes"]);
    server.wait_can_i("alice", &["list", "nodes"], "no");
    server.ok("admin", &["delete", "clusterrole", "node-reader"]);
    server.ok("admin", &["delete", "role", "reader", "-n", "team"]);
    let listed = server.ok("admin", &["get", "clusterroles"]);
    assert!(
        listed.contains("system:kube-scheduler") && !listed.contains("node-reader"),
        "{listed}"
    );

    // Aggregation: a ClusterRole labelled aggregate-to-edit adds its rules
    // to edit, and through edit to admin, once the controller-manager
    // (under its own identity and bootstrap role) writes them.
    let leases = ["create", "leases.coordination.k8s.io", "-n", "team"];
    assert_eq!(server.can_i("alice", &leases), "no");
    let _controller_manager = server.controller_manager();
    server.apply(
        "admin",
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: lease-editor
  labels:
    rbac.authorization.k8s.io/aggregate-to-edit: \"true\"
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, create]
",
    );
    server.wait_can_i("alice", &leases, "yes");
    server
        .ok("admin", &["create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob"]);
    server.wait_can_i("admin", &["create", "leases.coordination.k8s.io", "--as=bob"], "yes");
    // An aggregated role of one's own, applied with kubectl's strict
    // validation, gathers the roles its selector picks.
    server.apply(
        "admin",
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: pod-watchers
aggregationRule:
  clusterRoleSelectors:
  - matchLabels:
      example.com/aggregate-to-pod-watchers: \"true\"
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: pod-watch-part
  labels:
    example.com/aggregate-to-pod-watchers: \"true\"
rules:
- apiGroups: [\"\"]
  resources: [pods]
  verbs: [watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: alice-pod-watchers
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: pod-watchers
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: alice
",
    );
    server.wait_can_i("alice", &["watch", "pods", "-n", "default"], "yes");
    let role = server.ok("admin", &["get", "clusterrole", "pod-watchers", "-o", "yaml"]);
    assert!(role.contains("aggregationRule:") && role.contains("- watch"), "{role}");
    // A label taken off takes the rules back out.
    server.ok(
        "admin",
        &["label", "clusterrole", "lease-editor", "rbac.authorization.k8s.io/aggregate-to-edit-"],
    );
    server.wait_can_i("alice", &leases, "no");
}

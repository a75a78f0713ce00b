//! The namespaced kubectl session as an ordinary user over mutual TLS: three
//! `berth server` peers with certificates from `berth pki` and
//! `--authorization-mode RBAC`; user `dev` (a client certificate, no
//! groups) holds ClusterRole `admin` in namespace `demo` only. As `dev`,
//! kubectl applies, reads, edits, scales and deletes a Deployment there;
//! is Forbidden in another namespace and for nodes; cannot grant what it
//! does not hold; and goes on through another peer's context when the one
//! it talks to is killed.

mod common;
mod kubectl_session;

use kubectl_session::{have_kubectl, Kubectl, Servers, DEPLOYMENT};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs a `berth` command that must succeed.
fn berth(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().unwrap();
    assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The cluster CA in `dir`, peer certificates `peer-1`..`peer-3`, and
/// client certificates `admin` (group system:masters) and `dev`.
fn issue_certificates(dir: &Path) {
    let ca = dir.to_str().unwrap();
    berth(&["pki", "init", "--dir", ca, "--cluster", "kubectl-tls"]);
    let issue = |out: &str, who: &[&str]| {
        let out = dir.join(out);
        berth(&[&["pki", "issue", "--dir", ca, "--out", out.to_str().unwrap()][..], who].concat());
    };
    for id in ["1", "2", "3"] {
        issue(&format!("peer-{id}"), &["--peer", id, "--host", "127.0.0.1"]);
    }
    issue("admin", &["--user", "admin", "--group", "system:masters"]);
    issue("dev", &["--user", "dev"]);
}

/// A kubeconfig with a context `peer-N` for each peer, all as `who` (the
/// certificate `pki`/`who`.crt).
fn kubeconfig(dir: &Path, pki: &Path, http: &[String], who: &str) -> PathBuf {
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (i, addr) in http.iter().enumerate() {
        text += &format!(
            "- name: peer-{i}\n  cluster:\n    server: https://{addr}\n    \
             certificate-authority: {}\n",
            pki.join("ca.crt").display()
        );
    }
    text += &format!(
        "users:\n- name: {who}\n  user:\n    client-certificate: {}\n    client-key: {}\n\
         contexts:\n",
        pki.join(format!("{who}.crt")).display(),
        pki.join(format!("{who}.key")).display()
    );
    for i in 0..http.len() {
        text += &format!("- name: peer-{i}\n  context:\n    cluster: peer-{i}\n    user: {who}\n");
    }
    text += "current-context: peer-0\n";
    let path = dir.join(format!("kubeconfig-{who}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Polls `kubectl auth can-i` in `context` until it says `want`: each
/// peer's authorizer follows the roles and bindings by a watch.
fn wait_can_i(kubectl: &Kubectl, context: &str, args: &[&str], want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let context = format!("--context={context}");
    let all = [&[context.as_str(), "auth", "can-i"][..], args].concat();
    loop {
        let out = kubectl.run(&all, None);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if answer == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{all:?} never said {want}: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_kubectl_session_as_a_namespace_admin_over_tls() {
    if !have_kubectl() {
        eprintln!("SKIPPED: kubectl is not on PATH");
        return;
    }
    let pki = tempfile::tempdir().unwrap();
    issue_certificates(pki.path());
    let flags = |i: usize| -> Vec<String> {
        let peer = pki.path().join(format!("peer-{}", i + 1));
        vec![
            "--tls-cert-file".into(),
            peer.with_extension("crt").display().to_string(),
            "--tls-private-key-file".into(),
            peer.with_extension("key").display().to_string(),
            "--client-ca-file".into(),
            pki.path().join("ca.crt").display().to_string(),
            "--authorization-mode".into(),
            "RBAC".into(),
        ]
    };
    let mut servers = Servers::start_with("kubectl-tls", flags);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        session(&mut servers, pki.path());
    }));
    if let Err(panic) = result {
        common::print_log_tails(servers.dir.path(), 30);
        std::panic::resume_unwind(panic);
    }
}

fn session(servers: &mut Servers, pki: &Path) {
    let configs = tempfile::tempdir().unwrap();
    let admin = Kubectl { config: kubeconfig(configs.path(), pki, &servers.http, "admin") };
    let dev = Kubectl { config: kubeconfig(configs.path(), pki, &servers.http, "dev") };
    // Ready once every peer lets the administrator list the bootstrap
    // namespaces (its RBAC cache has the bootstrap policy).
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let context = format!("--context=peer-{i}");
        while !admin.run(&[&context, "get", "ns", "kube-system"], None).status.success() {
            assert!(Instant::now() < deadline, "peer {i} never served the administrator");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    admin.ok(&["create", "namespace", "demo"]);
    admin.ok(&["create", "namespace", "other"]);
    admin.ok(&[
        "-n",
        "demo",
        "create",
        "rolebinding",
        "dev-admin",
        "--clusterrole=admin",
        "--user=dev",
    ]);
    for i in 0..3 {
        wait_can_i(
            &dev,
            &format!("peer-{i}"),
            &["create", "deployments.apps", "-n", "demo"],
            "yes",
        );
    }

    // dev may grant what it holds in demo, and nothing more.
    let escalation = "is attempting to grant RBAC permissions not currently held";
    let refused = dev.fails(
        &[
            "-n",
            "demo",
            "create",
            "rolebinding",
            "eve-root",
            "--clusterrole=cluster-admin",
            "--user=eve",
        ],
        None,
    );
    assert!(refused.contains(escalation) && refused.contains(r#"user "dev""#), "{refused}");
    let refused = dev.fails(
        &["-n", "demo", "create", "role", "node-reader", "--verb=get,list", "--resource=nodes"],
        None,
    );
    assert!(
        refused.contains(escalation) && refused.contains(r#"Resources:["nodes"]"#),
        "{refused}"
    );
    dev.ok(&[
        "-n",
        "demo",
        "create",
        "rolebinding",
        "eve-edit",
        "--clusterrole=edit",
        "--user=eve",
    ]);
    dev.ok(&["-n", "demo", "create", "role", "pod-reader", "--verb=get,list", "--resource=pods"]);

    kubectl_session::edit_a_deployment(&dev, "demo");
    assert!(dev
        .ok_with(
            &["-n", "demo", "apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(DEPLOYMENT)
        )
        .contains("serverside-applied"));
    assert_eq!(
        dev.ok(&["-n", "demo", "get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );

    // Nothing outside demo.
    let refused = dev.fails(&["-n", "other", "get", "pods"], None);
    assert!(
        refused.contains(
            r#"User "dev" cannot list resource "pods" in API group "" in the namespace "other""#
        ),
        "{refused}"
    );
    let refused = dev.fails(&["-n", "other", "apply", "-f", "-"], Some(DEPLOYMENT));
    assert!(refused.contains("Forbidden") || refused.contains("forbidden"), "{refused}");
    let refused = dev.fails(&["get", "nodes"], None);
    assert!(
        refused.contains(
            r#"User "dev" cannot list resource "nodes" in API group "" at the cluster scope"#
        ),
        "{refused}"
    );
    let refused = dev.fails(&["create", "namespace", "mine"], None);
    assert!(refused.contains(r#"User "dev" cannot create resource "namespaces""#), "{refused}");

    // The peer kubectl talks to goes away; another context goes on.
    servers.kill(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = dev.run(
            &["--context=peer-1", "-n", "demo", "scale", "deploy", "web", "--replicas=1"],
            None,
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no peer took over: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        dev.ok(&[
            "--context=peer-2",
            "-n",
            "demo",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "1"
    );
    let refused = dev.fails(&["--context=peer-2", "get", "nodes"], None);
    assert!(refused.contains(r#"User "dev" cannot list resource "nodes""#), "{refused}");
    dev.ok(&["--context=peer-2", "-n", "demo", "delete", "deploy", "web"]);
    let left = dev.run(&["--context=peer-1", "-n", "demo", "get", "deploy"], None);
    assert!(String::from_utf8_lossy(&left.stderr).contains("No resources found"), "{left:?}");
}

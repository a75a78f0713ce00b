//! The `berth` binary as a user runs it: help, validate, completion.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn berth(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth binary runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("berth exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_subcommand() {
    let out = berth(&["--help"], None);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for sub in [
        "server",
        "agent",
        "scheduler",
        "controller-manager",
        "up",
        "runtime",
        "device-plugin",
        "chaos",
        "get",
        "describe",
        "apply",
        "delete",
        "logs",
        "exec",
        "wait",
        "cluster",
        "validate",
        "completion",
    ] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(sub)), "{sub} missing:\n{help}");
    }
}

#[test]
fn validate_accepts_the_examples() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let out = berth(&["validate", "-f", dir], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("deployment/web valid"), "{}", text(&out.stdout));
}

#[test]
fn validate_reports_the_field_path_and_line() {
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: a\n    imagePullPolcy: Always\n";
    let out = berth(&["validate", "-f", "-"], Some(manifest));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("<stdin>: spec.containers[0].imagePullPolcy: unknown field"), "{err}");
    assert!(err.contains("line 8"), "{err}");
}

#[test]
fn validate_prints_the_normal_form() {
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: a\n    resources:\n      limits:\n        cpu: 0.5\n        memory: 1.5Gi\n";
    let out = berth(&["validate", "-f", "-", "-o", "json"], Some(manifest));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let limits = &json["spec"]["containers"][0]["resources"]["limits"];
    assert_eq!(limits["cpu"], "500m");
    assert_eq!(limits["memory"], "1536Mi");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = berth(&["validate", "-f", "/nonexistent/berth.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/berth.yaml"), "{}", text(&out.stderr));
}

#[test]
fn completion_scripts_are_generated() {
    let out = berth(&["completion", "bash"], None);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("berth"));
}

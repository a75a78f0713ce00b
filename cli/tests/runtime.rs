//! `berth runtime` hands its command line to the executor, as runc's CLI.

use std::process::Command;

#[test]
fn runtime_reports_a_missing_container() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("runtime")
        .arg("--root")
        .arg(root.path())
        .args(["state", "no-such-container"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-container does not exist"), "{err}");
}

#[test]
fn runtime_help_lists_the_runc_verbs() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_berth")).args(["runtime", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for verb in ["create", "start", "state", "kill", "delete", "run", "exec"] {
        assert!(help.contains(verb), "{verb} missing:\n{help}");
    }
}

//! `berth logs`, `berth exec` and `berth attach` against a real node: one
//! API server (with the cluster secret), a scheduler and a node agent
//! running busybox pods through berth's CRI runtime. Needs root, overlayfs and /bin/busybox;
//! prints `SKIPPED: <why>` without them.

mod common;
mod peers;

use berth_client::{Api, Client};
use berth_proto::core_v1::Pod;
use common::{free_addr, pod_skip_reason, Node};
use peers::berth_with;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn logs_and_exec_reach_the_container() {
    if let Some(why) = pod_skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let name = format!("le-{}", std::process::id());
    let mut node = Node::new("berth-le-", name.clone());
    let root = node.dir.path().to_path_buf();
    let secret = root.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let (grpc, http) = (free_addr(), free_addr());
    node.spawn(
        &[
            "server",
            "--insecure",
            "--id",
            "1",
            "--cluster",
            "le",
            "--peers",
            &format!("1={grpc}"),
            "--listen",
            &grpc,
            "--http",
            &http,
            "--data-dir",
            root.join("api").to_str().unwrap(),
            "--heartbeat-ms",
            "50",
            "--election-timeout-ms",
            "200-400",
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
        "server.log",
    );
    let config = root.join("berth-config");
    std::fs::write(
        &config,
        format!("current-context: le\nclusters:\n- name: le\n  endpoints: [{grpc}]\ncontexts:\n- name: le\n  cluster: le\n"),
    )
    .unwrap();
    let berth = |args: &[&str], stdin: Option<&str>| berth_with(&config, args, stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    while berth(&["get", "ns", "default"], None).code != 0 {
        assert!(Instant::now() < deadline, "the server never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    node.spawn(
        &["scheduler", "--server", &grpc, "--id", "s", "--http", &free_addr()],
        "scheduler.log",
    );
    let agent = common::agent_args(&grpc, &name, &root, &secret);
    node.spawn(&agent.iter().map(String::as_str).collect::<Vec<_>>(), "agent.log");
    let image_dir = root.join("image");
    berth_kubelet::image::busybox_layout(Path::new("/bin/busybox"), &image_dir, "busybox").unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: talker\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: oci:{}:busybox\n    command: [sh, -c, 'echo one; echo two; exec sleep 1000']\n",
        image_dir.display()
    );
    assert_eq!(berth(&["apply", "-f", "-"], Some(&manifest)).stdout, "pod/talker created\n");
    let run = berth(&["wait", "pod/talker", "--for=condition=Ready", "--timeout", "90s"], None);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // logs: the whole log, its tail, an unknown container.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = berth(&["logs", "talker"], None);
        if run.stdout == "one\ntwo\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {}{}", run.stdout, run.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(berth(&["logs", "pod/talker", "-c", "main", "--tail", "1"], None).stdout, "two\n");
    let run = berth(&["logs", "talker", "-c", "nope"], None);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains("nope"), "{}", run.stderr);
    let run = berth(&["logs", "ghost"], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("NotFound"), "{}", run.stderr);

    // exec: both streams and the exit code; standard input with -i.
    let run = berth(&["exec", "talker", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str(), run.code), ("out\n", "err\n", 3));
    let script = "read line; echo \"got $line\"";
    let run = berth(&["exec", "-i", "talker", "--", "sh", "-c", script], Some("piped in\n"));
    assert_eq!((run.stdout.as_str(), run.code), ("got piped in\n", 0), "{}", run.stderr);

    // -t gives the command a terminal (which turns its newlines into CR LF).
    let run = berth(&["exec", "-t", "talker", "--", "sh", "-c", "test -t 1 && echo tty"], None);
    assert_eq!((run.stdout.as_str(), run.code), ("tty\r\n", 0), "{}", run.stderr);

    // attach -i: the container's own process reads what is piped in; with
    // stdinOnce its stdin ends with ours, and so does the attach.
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reader\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: oci:{}:busybox\n    stdin: true\n    stdinOnce: true\n    command: [sh, -c, 'read line; echo \"got $line\"; exit 2']\n",
        image_dir.display()
    );
    assert_eq!(berth(&["apply", "-f", "-"], Some(&manifest)).stdout, "pod/reader created\n");
    let run = berth(&["wait", "pod/reader", "--for=condition=Ready", "--timeout", "90s"], None);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let run = berth(&["attach", "-i", "reader"], Some("attached\n"));
    assert_eq!((run.stdout.as_str(), run.code), ("got attached\n", 0), "{}", run.stderr);
    let run = berth(&["attach", "reader", "--", "true"], None);
    assert_ne!(run.code, 0, "an attach takes no command: {}", run.stdout);

    // logs -f follows until the pod goes.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_CONFIG", &config)
        .args(["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = Client::new([grpc.clone()]).unwrap();
        let pods: Api<Pod> = Api::namespaced(&client, "default");
        pods.delete("talker", &Default::default()).await.unwrap();
    });
    let status = follower.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(follower.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.starts_with("one\ntwo\n"), "{out} ({status})");
}

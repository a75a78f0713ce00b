//! The real etcdctl 3.4 (Debian's etcd-client) against a 3-peer store.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Etcdctl {
    endpoints: String,
}

impl Etcdctl {
    fn found() -> bool {
        Command::new("etcdctl")
            .arg("version")
            .env("ETCDCTL_API", "3")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .arg("--command-timeout=10s")
            .args(args);
        cmd
    }

    /// Runs etcdctl off the async workers (the store serves it meanwhile).
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = self.command(args);
        let input = stdin.map(str::to_string);
        let label = args.join(" ");
        tokio::task::spawn_blocking(move || {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("etcdctl runs");
            let mut pipe = child.stdin.take().unwrap();
            if let Some(text) = input {
                use std::io::Write;
                pipe.write_all(text.as_bytes()).unwrap();
            }
            drop(pipe);
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "etcdctl {label}: {}{stdout}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_a_three_peer_store() {
    if !Etcdctl::found() {
        println!("SKIPPED: etcdctl not found (scripts/setup installs etcd-client)");
        return;
    }
    let cluster = Cluster::start(3).await;
    let endpoints: Vec<String> = cluster.peers.iter().map(|p| p.addr.clone()).collect();
    let ctl = Etcdctl { endpoints: endpoints.join(",") };
    let one = Etcdctl { endpoints: endpoints[2].clone() };

    assert_eq!(ctl.run(&["put", "/registry/pods/default/a", "one"], None).await.trim(), "OK");
    one.run(&["put", "/registry/pods/default/b", "two"], None).await;
    assert_eq!(
        ctl.run(&["get", "/registry/pods/default/a"], None).await,
        "/registry/pods/default/a\none\n"
    );
    let listed = ctl.run(&["get", "--prefix", "/registry/pods", "--keys-only"], None).await;
    assert!(
        listed.contains("/registry/pods/default/a") && listed.contains("/registry/pods/default/b"),
        "{listed}"
    );

    // --rev reads the past.
    let json = ctl.run(&["get", "/registry/pods/default/a", "-w", "json"], None).await;
    let header: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rev = header["kvs"][0]["mod_revision"].as_i64().unwrap();
    ctl.run(&["put", "/registry/pods/default/a", "changed"], None).await;
    let old = ctl
        .run(
            &["get", "/registry/pods/default/a", &format!("--rev={rev}"), "--print-value-only"],
            None,
        )
        .await;
    assert_eq!(old.trim(), "one");

    // txn: compare, then success or failure operations.
    let txn = "value(\"/registry/pods/default/a\") = \"changed\"\n\nput /txn/result yes\n\nput /txn/result no\n\n";
    let out = ctl.run(&["txn"], Some(txn)).await;
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(ctl.run(&["get", "/txn/result", "--print-value-only"], None).await.trim(), "yes");

    // del
    assert_eq!(ctl.run(&["del", "/registry/pods/default/b"], None).await.trim(), "1");

    // watch: start one, make a change, read what it printed.
    let mut watcher = one
        .command(&["watch", "/watched", "--prefix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch runs");
    let mut printed = String::new();
    let reader = {
        let stdout = watcher.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.push(line);
                if lines.len() >= 3 {
                    break;
                }
            }
            lines.join("\n")
        })
    };
    // The watch may register after our first put; keep writing until it reports.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() {
        assert!(std::time::Instant::now() < deadline, "etcdctl watch printed nothing");
        ctl.run(&["put", "/watched/x", "seen"], None).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    printed.push_str(&reader.join().unwrap());
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(printed.starts_with("PUT\n/watched/x\nseen"), "{printed}");

    // lease grant, attach, keep-alive once, time-to-live, revoke.
    let granted = ctl.run(&["lease", "grant", "60"], None).await;
    let id = granted.split_whitespace().nth(1).expect("lease id").to_string();
    ctl.run(&["put", "/leased", "v", &format!("--lease={id}")], None).await;
    let kept = ctl.run(&["lease", "keep-alive", "--once", &id], None).await;
    assert!(kept.contains("keepalived with TTL"), "{kept}");
    let ttl = ctl.run(&["lease", "timetolive", &id, "--keys"], None).await;
    assert!(ttl.contains("/leased"), "{ttl}");
    let revoked = ctl.run(&["lease", "revoke", &id], None).await;
    assert!(revoked.contains("revoked"), "{revoked}");
    assert_eq!(ctl.run(&["get", "/leased"], None).await, "");

    // member list and endpoint status.
    let members = ctl.run(&["member", "list"], None).await;
    assert_eq!(members.lines().count(), 3, "{members}");
    for addr in &endpoints {
        assert!(members.contains(addr.as_str()), "{members}");
    }
    let status = ctl.run(&["endpoint", "status", "-w", "json"], None).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let statuses = status.as_array().unwrap();
    assert_eq!(statuses.len(), 3);
    let leaders: Vec<u64> =
        statuses.iter().map(|s| s["Status"]["leader"].as_u64().unwrap()).collect();
    assert!(leaders.iter().all(|l| *l == leaders[0] && *l != 0), "{status}");
    cluster.shutdown().await;
}

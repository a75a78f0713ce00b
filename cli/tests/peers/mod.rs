//! A cluster of `berth server` processes for the verb and cluster-operation
//! tests, with a berth config file naming it, and a way to run `berth`
//! against it.

#![allow(dead_code)] // each test file uses its own part of this

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use super::common::free_addr;

pub struct Peer {
    pub id: u64,
    pub grpc: String,
    pub http: String,
    child: Option<Child>,
}

pub struct Cluster {
    pub name: String,
    pub peers: Vec<Peer>,
    pub dir: tempfile::TempDir,
    /// The berth config file, with context `test` naming every peer.
    pub config: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for peer in &mut self.peers {
            if let Some(mut child) = peer.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What a `berth` run printed and how it exited.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Cluster {
    /// Three voters of cluster `name`, ready to serve.
    pub fn start(name: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            name: name.into(),
            peers: Vec::new(),
            config: dir.path().join("berth-config"),
            dir,
        };
        let grpc: Vec<String> = (0..3).map(|_| free_addr()).collect();
        let initial: Vec<String> =
            grpc.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        for (i, addr) in grpc.iter().enumerate() {
            cluster.spawn(i as u64 + 1, addr, Some(&initial.join(",")));
        }
        cluster.write_config(&grpc);
        for addr in &grpc {
            cluster.wait_serving(addr);
        }
        cluster
    }

    /// Starts peer `id` at `grpc`: one of the initial peers, or (with no
    /// `initial`) an empty peer waiting to be added.
    pub fn spawn(&mut self, id: u64, grpc: &str, initial: Option<&str>) -> usize {
        let http = free_addr();
        let data = self.dir.path().join(format!("peer-{id}"));
        self.spawn_on(id, grpc, &http, &data, &self.name.clone(), initial)
    }

    pub fn spawn_on(
        &mut self,
        id: u64,
        grpc: &str,
        http: &str,
        data: &Path,
        cluster: &str,
        initial: Option<&str>,
    ) -> usize {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .args(["server", "--insecure", "--id", &id.to_string(), "--cluster", cluster])
            .args(["--listen", grpc, "--http", http])
            .arg("--data-dir")
            .arg(data)
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300-600"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(initial) = initial {
            command.args(["--peers", initial]);
        }
        let child = command.spawn().expect("berth server starts");
        self.peers.push(Peer { id, grpc: grpc.into(), http: http.into(), child: Some(child) });
        self.peers.len() - 1
    }

    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.peers[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.peers.iter().map(|p| p.grpc.clone()).collect()
    }

    pub fn write_config(&self, endpoints: &[String]) {
        let list = endpoints.join(", ");
        let text = format!(
            "current-context: test\nclusters:\n- name: test\n  endpoints: [{list}]\n\
             contexts:\n- name: test\n  cluster: test\n"
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Until the peer at `addr` answers a read of the bootstrap namespaces.
    pub fn wait_serving(&self, addr: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.berth(&["get", "ns", "kube-system", "--server", addr], None);
            if run.code == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "peer {addr} never served: {}", run.stderr);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `berth args` with this cluster's config file.
    pub fn berth(&self, args: &[&str], stdin: Option<&str>) -> Run {
        berth_with(&self.config, args, stdin)
    }

    /// Runs `berth`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    pub fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let run = self.berth(args, stdin);
        assert_eq!(run.code, 0, "berth {args:?} failed:\n{}{}", run.stdout, run.stderr);
        run.stdout
    }

    /// Runs `berth`, which must fail with exit code 1; returns its stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let run = self.berth(args, stdin);
        assert_eq!(run.code, 1, "berth {args:?} should fail:\n{}{}", run.stdout, run.stderr);
        run.stderr
    }

    /// A `berth` child with piped stdout, for -w and waits.
    pub fn spawn_berth(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .env("BERTH_CONFIG", &self.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth runs")
    }
}

pub fn berth_with(config: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_CONFIG", config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth runs");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out: Output = child.wait_with_output().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// A table with its ages replaced by `<age>` and each run of spaces by
/// one, so that it compares with a golden file whatever the ages were
/// (their width moves the columns).
pub fn normalise(table: &str) -> String {
    table
        .lines()
        .map(|line| {
            let words: Vec<&str> =
                line.split_whitespace().map(|w| if is_age(w) { "<age>" } else { w }).collect();
            words.join(" ") + "\n"
        })
        .collect()
}

fn is_age(word: &str) -> bool {
    let units = ['s', 'm', 'h', 'd', 'y'];
    !word.is_empty()
        && word.chars().next().is_some_and(|c| c.is_ascii_digit())
        && word.chars().last().is_some_and(|c| units.contains(&c))
        && word.chars().all(|c| c.is_ascii_digit() || units.contains(&c))
}

/// Compares `actual` with cli/tests/golden/`name`; BERTH_UPDATE_GOLDEN=1
/// writes it instead.
pub fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("BERTH_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (BERTH_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, want, "output differs from {}", path.display());
}

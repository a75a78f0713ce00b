//! What a new user meets first, on a real local cluster: the README's quick
//! start run command by command as written, and `berth exec -it` at a real
//! terminal (a pty: raw mode, typing, a window resize). Each test runs its
//! own `berth up` with its own HOME, so its directory, ports, config, bridge
//! and subnet are its own. Needs root, overlayfs, /bin/busybox and the CNI
//! plugins; prints `SKIPPED: <why>` without them.

mod common;
mod peers;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Two clusters at once starve each other on a small machine.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (the cluster's node runs pods)");
    }
    if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
        return Some("needs overlayfs in the kernel");
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (Debian package busybox-static)");
    }
    if !["/usr/lib/cni/bridge", "/opt/cni/bin/bridge"].iter().any(|p| Path::new(p).exists()) {
        return Some("needs the CNI plugins (Debian package containernetworking-plugins)");
    }
    None
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `berth up` in the foreground of a HOME of its own, with this build's
/// `berth` first on PATH; stopped with Ctrl-C (SIGINT) when dropped, and
/// what its node left on the host removed.
struct LocalCluster {
    home: tempfile::TempDir,
    up: Option<Child>,
    /// node-1's bridge, as `berth up` named it.
    bridge: Option<String>,
}

impl LocalCluster {
    /// Runs `command` (a `berth up` command line) and returns once it says
    /// the cluster is up.
    fn start(command: &str) -> LocalCluster {
        let home = tempfile::Builder::new().prefix("berth-qs-").tempdir().unwrap();
        let words: Vec<&str> = command.split_whitespace().collect();
        let mut cluster = LocalCluster { home, up: None, bridge: None };
        let mut child = cluster
            .command(words[0])
            .args(&words[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("berth up starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        cluster.up = Some(child);
        let mut seen = Vec::new();
        for line in lines.by_ref().map_while(Result::ok) {
            let done = line.contains("Ctrl-C stops the cluster");
            seen.push(line);
            if done {
                break;
            }
        }
        // The node's network, the cluster's own (removed at the end).
        let network = seen.iter().find(|l| l.contains("pod network: 10."));
        cluster.bridge = network.and_then(|l| l.split_whitespace().last()).map(String::from);
        assert!(
            seen.last().is_some_and(|l| l.contains("Ctrl-C stops the cluster")),
            "{command} never said the cluster was up: {seen:#?}"
        );
        // Each node had the test image made ready, with a line per layer.
        assert!(seen.iter().any(|l| l.contains("layer ") && l.contains("done, ")), "{seen:#?}");
        assert!(seen.iter().any(|l| l.contains("has berth.local/busybox:test (1 layer, ")));
        // Keep draining its status lines so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        cluster
    }

    /// A command run as the quick start's user: this HOME, this build's
    /// berth first on PATH, no berth config from the environment, in the
    /// repository.
    fn command(&self, program: &str) -> Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_berth")).parent().unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)),
        )
        .unwrap();
        let mut command = Command::new(program);
        command
            .env("HOME", self.home.path())
            .env("PATH", path)
            .env_remove("BERTH_CONFIG")
            .current_dir(repository());
        command
    }

    /// The cluster's data directory (`berth up`'s default, under HOME).
    fn dir(&self) -> PathBuf {
        self.home.path().join(".berth/up")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let Some(mut up) = self.up.take() else { return };
        let pid = nix::unistd::Pid::from_raw(up.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut clean = false;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = up.try_wait() {
                clean = status.success();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if up.try_wait().ok().flatten().is_none() {
            let _ = up.kill();
            let _ = up.wait();
        }
        if !clean {
            common::print_log_tails(&self.dir().join("logs"), 30);
            // The cluster did not stop its processes itself; what still runs
            // in this node's cgroups is ours (one cluster at a time).
            for pid in std::fs::read_to_string(self.dir().join("pids")).unwrap_or_default().lines()
            {
                if let Ok(pid) = pid.parse() {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            common::remove_node_leftovers(self.home.path(), "node-1");
        } else {
            // Stopped cleanly: its pods are gone; only unmount what may
            // remain and remove the node's empty cgroup directories.
            common::remove_node_mounts_and_cgroups(self.home.path(), "node-1");
        }
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).stderr(Stdio::null()).status();
        }
    }
}

/// The README's quick start: its fenced blocks, in order.
struct QuickStart {
    /// Commands of `sh` blocks.
    shell: Vec<Vec<String>>,
    /// `$ command` lines of `console` blocks, each with the output shown
    /// under it.
    console: Vec<(String, Vec<String>)>,
}

fn quick_start() -> QuickStart {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let start = readme.find("\n## Quick start\n").expect("README.md has a Quick start section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut quick = QuickStart { shell: Vec::new(), console: Vec::new() };
    let mut block: Option<&str> = None;
    for line in section.lines() {
        match (block, line.trim_end()) {
            (None, fence) if fence.starts_with("```") => {
                let kind = &fence[3..];
                if kind == "sh" {
                    quick.shell.push(Vec::new());
                }
                block = Some(if kind == "sh" { "sh" } else { "console" });
                assert!(kind == "sh" || kind == "console", "a {kind:?} block in the quick start");
            }
            (Some(_), "```") => block = None,
            (Some("sh"), text) if !text.is_empty() => {
                quick.shell.last_mut().unwrap().push(text.to_string())
            }
            (Some("console"), text) => match text.strip_prefix("$ ") {
                Some(command) => quick.console.push((command.to_string(), Vec::new())),
                None => {
                    quick.console.last_mut().expect("output before a command").1.push(text.into())
                }
            },
            _ => {}
        }
    }
    quick
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let quick = quick_start();
    // The build: this test's berth binary is what `cargo install --path
    // cli` installs, and scripts/setup ran before the suite (CI runs it).
    let build = ["scripts/setup", "cargo install --locked --path cli"];
    assert_eq!(quick.shell.first().map(Vec::as_slice), Some(&build.map(String::from)[..]));
    assert_eq!(quick.shell.len(), 2, "the quick start's blocks: build, then berth up");
    assert_eq!(quick.shell[1], ["berth up"], "the second block starts the cluster");
    assert!(!quick.console.is_empty(), "no console block in the quick start");

    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = LocalCluster::start(&quick.shell[1][0]);
    for (command, shown) in &quick.console {
        let out = cluster.command("sh").args(["-c", command]).output().unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("$ {command}\n{stdout}{stderr}");
        assert!(out.status.success(), "`{command}` failed ({}): {stdout}{stderr}", out.status);
        let shown = shown.iter().map(|l| format!("{l}\n")).collect::<String>();
        assert_eq!(
            peers::normalise(&stdout),
            peers::normalise(&shown),
            "`{command}` printed something else than the README shows"
        );
        // What the README says a wait tells: its pods' events, such as
        // the image being there.
        if command.starts_with("berth wait deployment/") {
            assert!(stderr.contains("berth.local/busybox:test\" already present"), "{stderr}");
        }
    }
    drop(cluster);
}

nix::ioctl_write_ptr_bad!(set_window_size, nix::libc::TIOCSWINSZ, nix::libc::winsize);
nix::ioctl_write_int_bad!(set_controlling_terminal, nix::libc::TIOCSCTTY);

/// A terminal's output as it arrives, read on a thread until the terminal
/// closes.
struct Screen {
    text: Arc<Mutex<String>>,
}

impl Screen {
    fn reading(master: &OwnedFd) -> Screen {
        let text = Arc::new(Mutex::new(String::new()));
        let mut file = std::fs::File::from(master.try_clone().unwrap());
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every slave is closed.
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Screen { text }
    }

    /// Waits until the output after `from` holds one of `wanted`; which
    /// one came first, and the offset after it.
    fn wait_for(&self, from: usize, wanted: &[&str]) -> (usize, usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text.lock().unwrap().clone();
            let rest = text.get(from..).unwrap_or_default();
            let found = wanted.iter().enumerate().filter_map(|(k, w)| Some((rest.find(w)?, k)));
            if let Some((i, k)) = found.min() {
                return (k, from + i + wanted[k].len());
            }
            assert!(Instant::now() < deadline, "no {wanted:?} in {rest:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn exec_it_gives_a_shell_a_real_terminal() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = LocalCluster::start("berth up");
    // The pod's image is pulled (from the layout `berth up` made the test
    // image from), and its Pulled event tells the size.
    let image = format!("oci:{}:busybox", cluster.dir().join("images/busybox").display());
    let pod = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: shell\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    command: [sleep, '1000']\n");
    let mut apply = cluster.command("berth");
    let apply = apply.args(["apply", "--wait", "--timeout=90s", "-f", "-"]);
    let mut apply = apply.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    apply.stdin.take().unwrap().write_all(pod.as_bytes()).unwrap();
    let applied = apply.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&applied.stdout);
    assert!(applied.status.success(), "{stdout}");
    assert_eq!(stdout, "pod/shell created\npod/shell condition met\n");
    let pulled = format!("Pulled image {image:?} (1 layer, ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let describe =
            cluster.command("berth").args(["describe", "pod", "shell"]).output().unwrap();
        if String::from_utf8_lossy(&describe.stdout).contains(&pulled) {
            break;
        }
        let text = String::from_utf8_lossy(&describe.stdout);
        assert!(Instant::now() < deadline, "no {pulled:?} event: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let size = nix::pty::Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let cooked = tcgetattr(&pty.master).unwrap();
    assert!(cooked.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO));
    let slave = pty.slave;
    let mut exec = cluster.command("berth");
    exec.args(["exec", "-it", "shell", "--", "sh"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl are async-signal-safe; the pty (now standard
    // input) becomes the session's controlling terminal, so a resize sends
    // SIGWINCH to berth as it would at a terminal.
    unsafe {
        exec.pre_exec(|| {
            nix::unistd::setsid()?;
            set_controlling_terminal(0, 0)?;
            Ok(())
        });
    }
    let mut berth = exec.spawn().unwrap();
    drop(slave);
    let screen = Screen::reading(&pty.master);
    let mut keys = std::fs::File::from(pty.master.try_clone().unwrap());
    let mut type_line = |line: &str| keys.write_all(format!("{line}\r").as_bytes()).unwrap();

    // The shell's prompt, then berth's terminal is raw: no echo, no line
    // editing, no signals on this side; the container's terminal does that.
    let (_, at) = screen.wait_for(0, &["# "]);
    let raw = tcgetattr(&pty.master).unwrap();
    assert!(!raw.local_flags.intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG));
    // Outputs that the typed lines do not hold themselves.
    type_line("echo $((6 * 7))");
    let (_, at) = screen.wait_for(at, &["42"]);

    // The terminal's size at the start, then after a resize (SIGWINCH to
    // berth, which sends it on; the shell may run before it lands).
    let size_line = "echo \"size=$(stty size)=\"";
    type_line(size_line);
    let (_, at) = screen.wait_for(at, &["size=24 80="]);
    let resized = nix::pty::Winsize { ws_row: 33, ws_col: 101, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    unsafe { set_window_size(pty.master.as_raw_fd(), &resized) }.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut from = at;
    loop {
        type_line(size_line);
        let (which, next) = screen.wait_for(from, &["size=33 101=", "size=24 80="]);
        from = next;
        if which == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the resize never reached the container");
    }

    // exit's code is berth's; the terminal is as berth found it.
    type_line("exit 7");
    let status = berth.wait().unwrap();
    let text = screen.text.lock().unwrap().clone();
    println!("the terminal showed: {text:?}");
    assert_eq!(status.code(), Some(7), "{:?}", text.get(from..));
    let after = tcgetattr(&pty.master).unwrap();
    assert!(after.local_flags.contains(LocalFlags::ICANON | LocalFlags::ECHO));
    drop(cluster);
}

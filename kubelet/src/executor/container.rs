//! A container's lifecycle: create, start, state, kill, wait, exec, delete.
//!
//! State lives in `<root>/<id>/`: `state.json` (what later commands need)
//! and, between create and start, `exec.fifo`, on which the container's init
//! blocks until `start` opens it for reading (runc's handshake, so create and
//! start can be separate processes).

use std::fs::{self, File};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{ContainerState, LinuxNamespaceType, LinuxResources, Process, Spec, State};
use serde::{Deserialize, Serialize};

use super::cgroups::{self, CgroupManager, CgroupStats, CgroupVersion, DeviceRule, Resources};
use super::channel::{recv, Message};
use super::console;
use super::error::{ExecutorError, Result};
use super::log::LogPump;
use super::process::{self, ChildStdio, InitPlan, Join};
use super::rootfs::DEFAULT_DEVICES;
use super::seccomp;

/// How long `start` waits for init to take the start signal.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a container's standard streams go.
#[derive(Debug, Clone)]
pub enum Stdio {
    /// Share the runtime's stdin, stdout and stderr (the runc CLI's behaviour).
    Inherit,
    /// /dev/null for all three.
    Null,
    /// stdin from /dev/null; stdout and stderr into this file in CRI format.
    CriLog(PathBuf),
    /// These descriptors as stdin, stdout and stderr (pipes, or a terminal's
    /// side thrice; with `process.terminal` it becomes the controlling one).
    Fds(std::sync::Arc<[OwnedFd; 3]>),
}

/// What `Container::create` needs.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub id: String,
    /// Directory with config.json and the rootfs.
    pub bundle: PathBuf,
    /// State root, one directory per container (runc's `--root`).
    pub root: PathBuf,
    /// Parent cgroup (relative to the hierarchy root) used when the spec has
    /// no `linux.cgroupsPath`; the container's cgroup is `<parent>/<id>`.
    pub cgroup_parent: PathBuf,
    pub stdio: Stdio,
    /// Where a spec with `process.terminal` sends its pty master (runc's
    /// `--console-socket`); the terminal then replaces `stdio`.
    pub console_socket: Option<PathBuf>,
    /// Instead of a path: one end of an already-connected socket (a
    /// socketpair), for callers that receive the master in-process with
    /// [`super::console::receive`].
    pub console_stream: Option<std::sync::Arc<OwnedFd>>,
}

impl CreateOptions {
    pub fn new(
        id: impl Into<String>,
        bundle: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
    ) -> Self {
        Self {
            id: id.into(),
            bundle: bundle.into(),
            root: root.into(),
            cgroup_parent: PathBuf::from("/berth"),
            stdio: Stdio::Inherit,
            console_socket: None,
            console_stream: None,
        }
    }
}

/// How a container's (or exec'd) process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(Signal),
}

impl ExitStatus {
    /// The shell's convention: the code, or 128 + signal number.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::Signaled(s) => 128 + *s as i32,
        }
    }
}

/// What later commands need to find and drive the container.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    bundle: PathBuf,
    pid: i32,
    /// /proc/<pid>/stat start time, so a reused pid is not taken for ours.
    pid_start: u64,
    created: String,
    cgroup_path: PathBuf,
    cgroup_version: CgroupVersion,
    /// /proc/<pid>/ns names of the container's namespaces, for exec.
    namespaces: Vec<String>,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

/// A container known to this runtime: created by this process, or loaded
/// from its state directory.
#[derive(Debug)]
pub struct Container {
    state_dir: PathBuf,
    record: Record,
    cgroup: Box<dyn CgroupManager>,
    /// The creator's end of the sync pipe, to catch exec failures at start.
    sync: Option<File>,
    log: Option<LogPump>,
    exit: Option<ExitStatus>,
}

/// A process started in a running container by `Container::exec`.
#[derive(Debug)]
pub struct ExecProcess {
    pid: Pid,
    log: Option<LogPump>,
    exit: Option<ExitStatus>,
}

impl ExecProcess {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the process to end and its output to be written.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let status = wait_child(self.pid, "exec")?;
        if let Some(log) = &mut self.log {
            log.finish();
        }
        self.exit = Some(status);
        Ok(status)
    }
}

/// Undoes a half-made container if create fails.
struct CreateGuard<'a> {
    state_dir: &'a Path,
    cgroup_path: Option<PathBuf>,
    pid: Option<Pid>,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some(path) = &self.cgroup_path {
            let cleanup =
                cgroups::manager_for(path).and_then(|cg| cg.kill_all().and_then(|_| cg.remove()));
            if let Err(e) = cleanup {
                tracing::warn!(error = %e, "cleaning up cgroup of failed create");
            }
        }
        let _ = fs::remove_dir_all(self.state_dir);
    }
}

impl Container {
    /// Creates the container: cgroup, namespaces, filesystem, and an init
    /// process that waits for `start` before running the user's program.
    pub fn create(opts: CreateOptions) -> Result<Container> {
        validate_id(&opts.id)?;
        let bundle = opts.bundle.canonicalize().map_err(ExecutorError::io(&opts.bundle))?;
        let spec = load_spec(&bundle)?;
        check_supported(&spec, opts.console_socket.is_some() || opts.console_stream.is_some())?;
        let root_path =
            spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_else(|| "rootfs".into());
        let rootfs = bundle.join(root_path);
        let rootfs = rootfs.canonicalize().map_err(ExecutorError::io(&rootfs))?;

        fs::create_dir_all(&opts.root).map_err(ExecutorError::io(&opts.root))?;
        let state_dir = opts.root.join(&opts.id);
        match fs::create_dir(&state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ExecutorError::AlreadyExists(opts.id));
            }
            Err(e) => return Err(ExecutorError::io(&state_dir)(e)),
        }
        let mut guard =
            CreateGuard { state_dir: &state_dir, cgroup_path: None, pid: None, armed: true };

        let linux = spec.linux().as_ref();
        let cgroup_path = linux
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_else(|| opts.cgroup_parent.join(&opts.id));
        let cgroup = cgroups::manager_for(&cgroup_path)?;
        guard.cgroup_path = Some(cgroup_path.clone());
        cgroup.apply(&resources_from_spec(&spec))?;

        let fifo = state_dir.join("exec.fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
            .map_err(ExecutorError::sys("mkfifo exec.fifo"))?;
        let state_fd = nix::fcntl::open(
            &state_dir,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(ExecutorError::sys("open state dir"))?;

        let mut join_ns = Vec::new();
        let mut new_namespaces = CloneFlags::empty();
        let mut new_userns = false;
        let mut ns_names = Vec::new();
        for ns in linux.and_then(|l| l.namespaces().as_deref()).unwrap_or_default() {
            let (name, flag) = namespace_kind(ns.typ())?;
            ns_names.push(name.to_string());
            match ns.path() {
                Some(path) => {
                    let fd = open_ns(path)?;
                    join_ns.push((fd, flag));
                }
                None if flag == CloneFlags::CLONE_NEWUSER => new_userns = true,
                None => new_namespaces |= flag,
            }
        }
        // A user namespace must be joined before the others it owns.
        join_ns.sort_by_key(|(_, f)| *f != CloneFlags::CLONE_NEWUSER);

        let seccomp = linux
            .and_then(|l| l.seccomp().as_ref())
            .map(seccomp::compile)
            .transpose()
            .map_err(ExecutorError::Seccomp)?;
        let (stdio, log) = child_stdio(&opts.stdio)?;
        let console = match (&opts.console_socket, &opts.console_stream) {
            (Some(path), _) => Some(console::connect(path)?),
            (None, Some(stream)) => {
                Some(stream.try_clone().map_err(ExecutorError::io("console socket"))?)
            }
            (None, None) => None,
        };
        let (sync_r, sync_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecutorError::sys("sync pipe"))?;
        let (go_r, go_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecutorError::sys("sync pipe"))?;
        let join = Join { cgroup_procs: cgroup.procs_files(), namespaces: join_ns, sync: sync_w };
        let plan = InitPlan {
            spec: &spec,
            rootfs,
            bundle: bundle.clone(),
            cgroup_views: cgroup.container_views(),
            cgroup_v2: cgroup.version() == CgroupVersion::V2,
            new_namespaces,
            new_userns,
            idmaps_done: go_r,
            state_dir: state_fd,
            stdio,
            console,
            seccomp,
        };

        // SAFETY: the child only runs `process::intermediate`, which sticks to
        // system calls and allocation and ends in _exit.
        let intermediate =
            match unsafe { nix::unistd::fork() }.map_err(ExecutorError::sys("fork"))? {
                ForkResult::Child => process::intermediate(
                    &join,
                    plan.new_namespaces,
                    || process::enter_new_userns(&plan, &join.sync),
                    || process::init(&plan, &join.sync),
                ),
                ForkResult::Parent { child } => child,
            };
        drop(join);
        drop(plan);

        let mut sync = File::from(sync_r);
        let mut pid = None;
        let mut ready = false;
        let outcome = loop {
            match recv(&mut sync).map_err(ExecutorError::io(&state_dir)) {
                Ok(Some(Message::NeedIdMaps)) => {
                    if let Err(e) = write_id_maps(intermediate, &spec) {
                        break Err(e);
                    }
                    let _ = nix::unistd::write(&go_w, b"1");
                }
                Ok(Some(Message::Pid(p))) => {
                    pid = Some(Pid::from_raw(p));
                    guard.pid = pid;
                }
                Ok(Some(Message::Ready)) => ready = true,
                Ok(Some(Message::Error(e))) => break Err(ExecutorError::Setup(e)),
                Ok(None) => {
                    break Err(ExecutorError::Setup("container process exited during setup".into()))
                }
                Err(e) => break Err(e),
            }
            if let (Some(pid), true) = (pid, ready) {
                break Ok(pid);
            }
        };
        let _ = waitpid(intermediate, None);
        let pid = outcome?;

        if let Some(adj) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
            let path = format!("/proc/{pid}/oom_score_adj");
            fs::write(&path, adj.to_string()).map_err(ExecutorError::io(path))?;
        }
        let record = Record {
            id: opts.id.clone(),
            bundle,
            pid: pid.as_raw(),
            pid_start: proc_stat(pid).map(|s| s.start_time).unwrap_or(0),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            cgroup_path,
            cgroup_version: cgroup.version(),
            namespaces: ns_names,
            annotations: spec.annotations().clone().unwrap_or_default(),
        };
        save_record(&state_dir, &record)?;
        guard.armed = false;
        drop(guard);
        tracing::info!(id = %record.id, pid = record.pid, "container created");
        Ok(Container { state_dir, record, cgroup, sync: Some(sync), log, exit: None })
    }

    /// Loads a container another runtime process created.
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        validate_id(id)?;
        let state_dir = root.join(id);
        let path = state_dir.join("state.json");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ExecutorError::NotFound(id.into()))
            }
            Err(e) => return Err(ExecutorError::io(path)(e)),
        };
        let record: Record = serde_json::from_str(&text).map_err(|e| {
            ExecutorError::CorruptState { path: path.clone(), reason: e.to_string() }
        })?;
        let cgroup = cgroups::manager_for(&record.cgroup_path)?;
        Ok(Container { state_dir, record, cgroup, sync: None, log: None, exit: None })
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The init process's pid as the runtime sees it.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.record.pid)
    }

    pub fn status(&self) -> ContainerState {
        match proc_stat(self.pid()) {
            Some(st) if st.start_time == self.record.pid_start && st.state != 'Z' => {
                if self.state_dir.join("exec.fifo").exists() {
                    ContainerState::Created
                } else {
                    ContainerState::Running
                }
            }
            _ => ContainerState::Stopped,
        }
    }

    /// The OCI runtime state document.
    pub fn state(&self) -> State {
        let status = self.status();
        let mut s = State::default();
        s.set_version(oci_spec::runtime::VERSION.to_string());
        s.set_id(self.record.id.clone());
        s.set_status(status);
        s.set_pid((status != ContainerState::Stopped).then_some(self.record.pid));
        s.set_bundle(self.record.bundle.clone());
        s.set_annotations(
            (!self.record.annotations.is_empty()).then(|| self.record.annotations.clone()),
        );
        s
    }

    /// Lets init exec the user's program.
    pub fn start(&mut self) -> Result<()> {
        let status = self.status();
        if status != ContainerState::Created {
            return Err(self.wrong_state(status, "only a created container can start"));
        }
        let fifo_path = self.state_dir.join("exec.fifo");
        let fifo = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo_path)
            .map_err(ExecutorError::io(&fifo_path))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut fds = [nix::poll::PollFd::new(fifo.as_fd(), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
            let mut byte = [0u8; 1];
            match nix::unistd::read(&fifo, &mut byte) {
                Ok(1) => break,
                Ok(_) | Err(nix::Error::EAGAIN) => {}
                Err(e) => return Err(ExecutorError::sys("read exec.fifo")(e)),
            }
            if self.status() == ContainerState::Stopped {
                return Err(ExecutorError::Setup("init exited before start".into()));
            }
            if Instant::now() > deadline {
                return Err(ExecutorError::Setup("init did not take the start signal".into()));
            }
        }
        fs::remove_file(&fifo_path).map_err(ExecutorError::io(&fifo_path))?;
        // The creator learns of a failed exec: the pipe closes on exec, or carries the error.
        if let Some(mut sync) = self.sync.take() {
            if let Ok(Some(Message::Error(e))) = recv(&mut sync) {
                return Err(ExecutorError::Setup(e));
            }
        }
        tracing::info!(id = %self.record.id, "container started");
        Ok(())
    }

    /// Sends `signal` to init, or with `all` to every process in the cgroup.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        let status = self.status();
        if status == ContainerState::Stopped {
            return Err(self.wrong_state(status, "cannot signal a stopped container"));
        }
        if all {
            for pid in self.cgroup.processes()? {
                let _ = nix::sys::signal::kill(pid, signal);
            }
            return Ok(());
        }
        nix::sys::signal::kill(self.pid(), signal)
            .map_err(ExecutorError::sys(format!("kill {}", self.record.pid)))
    }

    /// Waits for init to exit; only the creating process can (init is its child).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let status = wait_child(self.pid(), &self.record.id)?;
        if let Some(log) = &mut self.log {
            log.finish();
        }
        self.exit = Some(status);
        Ok(status)
    }

    /// Resource usage and OOM kills read from the container's cgroup.
    pub fn stats(&self) -> Result<CgroupStats> {
        self.cgroup.stats()
    }

    pub fn cgroup(&self) -> &dyn CgroupManager {
        self.cgroup.as_ref()
    }

    /// Runs `process` inside the running container: its cgroup and all its
    /// namespaces. Wait for it with `ExecProcess::wait`.
    pub fn exec(&self, process: &Process, stdio: Stdio) -> Result<ExecProcess> {
        let status = self.status();
        if status == ContainerState::Stopped {
            return Err(self.wrong_state(status, "cannot exec in a stopped container"));
        }
        let mut namespaces = Vec::new();
        for name in ["user", "cgroup", "ipc", "uts", "net", "pid", "mnt"] {
            if self.record.namespaces.iter().any(|n| n == name) {
                let path = PathBuf::from(format!("/proc/{}/ns/{name}", self.record.pid));
                namespaces.push((open_ns(&path)?, ns_flag(name)));
            }
        }
        // An exec'd process is filtered as the container's own is.
        let spec = load_spec(&self.record.bundle)?;
        let seccomp = spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(seccomp::compile)
            .transpose()
            .map_err(ExecutorError::Seccomp)?;
        let (stdio, log) = child_stdio(&stdio)?;
        let (sync_r, sync_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ExecutorError::sys("sync pipe"))?;
        let join = Join { cgroup_procs: self.cgroup.procs_files(), namespaces, sync: sync_w };
        // SAFETY: as in `create`, the child only runs `process::intermediate`.
        let intermediate =
            match unsafe { nix::unistd::fork() }.map_err(ExecutorError::sys("fork"))? {
                ForkResult::Child => process::intermediate(
                    &join,
                    CloneFlags::empty(),
                    || Ok(()),
                    || process::exec_process(process, &stdio, seccomp.as_ref()),
                ),
                ForkResult::Parent { child } => child,
            };
        drop(join);
        drop(stdio);
        let mut sync = File::from(sync_r);
        let mut pid = None;
        let outcome = loop {
            match recv(&mut sync) {
                Ok(Some(Message::Pid(p))) => pid = Some(Pid::from_raw(p)),
                Ok(Some(Message::Error(e))) => break Err(ExecutorError::Setup(e)),
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(e) => break Err(ExecutorError::io(&self.state_dir)(e)),
            }
        };
        let _ = waitpid(intermediate, None);
        if let Err(e) = outcome {
            if let Some(pid) = pid {
                let _ = waitpid(pid, None);
            }
            return Err(e);
        }
        let pid = pid.ok_or_else(|| ExecutorError::Setup("exec process never started".into()))?;
        Ok(ExecProcess { pid, log, exit: None })
    }

    /// Removes the container: kills what is left in its cgroup (only with
    /// `force` if it is running), removes the cgroup and the state directory.
    /// Its mounts live in its own mount namespace and go with its last process.
    pub fn delete(mut self, force: bool) -> Result<()> {
        let status = self.status();
        if status == ContainerState::Running && !force {
            return Err(self.wrong_state(status, "stop it first or delete with force"));
        }
        self.cgroup.kill_all()?;
        if self.exit.is_none() {
            reap_if_child(self.pid());
        }
        if let Some(log) = &mut self.log {
            log.finish();
        }
        self.cgroup.remove()?;
        fs::remove_dir_all(&self.state_dir).map_err(ExecutorError::io(&self.state_dir))?;
        tracing::info!(id = %self.record.id, "container deleted");
        Ok(())
    }

    fn wrong_state(&self, status: ContainerState, wanted: &'static str) -> ExecutorError {
        ExecutorError::WrongState { id: self.record.id.clone(), status: status.to_string(), wanted }
    }
}

fn wait_child(pid: Pid, what: &str) -> Result<ExitStatus> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitStatus::Signaled(sig)),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECHILD) => return Err(ExecutorError::NotParent(what.to_string())),
            Err(e) => return Err(ExecutorError::sys(format!("wait for {what}"))(e)),
        }
    }
}

/// Collects a killed init's exit if we are its parent, so no zombie stays;
/// gives up at once if we are not.
fn reap_if_child(pid: Pid) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
            _ => return,
        }
    }
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ExecutorError::InvalidId(id.into()))
    }
}

/// Reads `<bundle>/config.json`.
pub(crate) fn load_spec(bundle: &Path) -> Result<Spec> {
    Spec::load(bundle.join("config.json")).map_err(|e| ExecutorError::InvalidBundle {
        bundle: bundle.to_path_buf(),
        reason: e.to_string(),
    })
}

fn check_supported(spec: &Spec, has_console_socket: bool) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ExecutorError::Unsupported("a spec without process".into()))?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal != has_console_socket {
        return Err(ExecutorError::Unsupported(if terminal {
            "process.terminal needs a console socket to send the terminal to".into()
        } else {
            "a console socket is only used with process.terminal".into()
        }));
    }
    let namespaces =
        spec.linux().as_ref().and_then(|l| l.namespaces().as_deref()).unwrap_or_default();
    let has = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.typ() == t);
    if !has(LinuxNamespaceType::Mount) {
        return Err(ExecutorError::Unsupported("a container without a mount namespace".into()));
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !has(LinuxNamespaceType::Uts) {
        return Err(ExecutorError::Unsupported(
            "hostname without a UTS namespace would rename the host".into(),
        ));
    }
    Ok(())
}

fn namespace_kind(t: LinuxNamespaceType) -> Result<(&'static str, CloneFlags)> {
    Ok(match t {
        LinuxNamespaceType::Pid => ("pid", CloneFlags::CLONE_NEWPID),
        LinuxNamespaceType::Network => ("net", CloneFlags::CLONE_NEWNET),
        LinuxNamespaceType::Ipc => ("ipc", CloneFlags::CLONE_NEWIPC),
        LinuxNamespaceType::Uts => ("uts", CloneFlags::CLONE_NEWUTS),
        LinuxNamespaceType::Mount => ("mnt", CloneFlags::CLONE_NEWNS),
        LinuxNamespaceType::Cgroup => ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        LinuxNamespaceType::User => ("user", CloneFlags::CLONE_NEWUSER),
        LinuxNamespaceType::Time => {
            return Err(ExecutorError::Unsupported("time namespaces".into()))
        }
    })
}

fn ns_flag(name: &str) -> CloneFlags {
    match name {
        "pid" => CloneFlags::CLONE_NEWPID,
        "net" => CloneFlags::CLONE_NEWNET,
        "ipc" => CloneFlags::CLONE_NEWIPC,
        "uts" => CloneFlags::CLONE_NEWUTS,
        "mnt" => CloneFlags::CLONE_NEWNS,
        "cgroup" => CloneFlags::CLONE_NEWCGROUP,
        _ => CloneFlags::CLONE_NEWUSER,
    }
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(ExecutorError::sys(format!("open namespace {}", path.display())))
}

fn child_stdio(stdio: &Stdio) -> Result<(ChildStdio, Option<LogPump>)> {
    let null = || {
        nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(ExecutorError::sys("open /dev/null"))
    };
    Ok(match stdio {
        Stdio::Inherit => (None, None),
        Stdio::Null => (Some([null()?, null()?, null()?]), None),
        Stdio::CriLog(path) => {
            let pipes = LogPump::start(path)?;
            (Some([null()?, pipes.stdout, pipes.stderr]), Some(pipes.pump))
        }
        Stdio::Fds(fds) => {
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(ExecutorError::io("stdio descriptor"));
            (Some([dup(&fds[0])?, dup(&fds[1])?, dup(&fds[2])?]), None)
        }
    })
}

fn write_id_maps(pid: Pid, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let render = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    for (file, text) in [
        ("uid_map", render(linux.and_then(|l| l.uid_mappings().as_ref()))),
        ("gid_map", render(linux.and_then(|l| l.gid_mappings().as_ref()))),
    ] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, text).map_err(ExecutorError::io(path))?;
    }
    Ok(())
}

fn save_record(state_dir: &Path, record: &Record) -> Result<()> {
    let tmp = state_dir.join("state.json.tmp");
    let path = state_dir.join("state.json");
    let text = serde_json::to_vec_pretty(record)
        .map_err(|e| ExecutorError::CorruptState { path: path.clone(), reason: e.to_string() })?;
    fs::write(&tmp, text).map_err(ExecutorError::io(&tmp))?;
    fs::rename(&tmp, &path).map_err(ExecutorError::io(&path))
}

/// The fields of /proc/<pid>/stat we need.
struct ProcStat {
    state: char,
    start_time: u64,
}

fn proc_stat(pid: Pid) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The spec's resources plus the devices every container may use, as runc adds.
fn resources_from_spec(spec: &Spec) -> Resources {
    let linux = spec.linux().as_ref();
    let r: Option<&LinuxResources> = linux.and_then(|l| l.resources().as_ref());
    let mut out = Resources::default();
    if let Some(cpu) = r.and_then(|r| r.cpu().as_ref()) {
        out.cpu_shares = cpu.shares();
        out.cpu_quota = cpu.quota();
        out.cpu_period = cpu.period();
        out.cpuset_cpus = cpu.cpus().clone();
        out.cpuset_mems = cpu.mems().clone();
    }
    if let Some(mem) = r.and_then(|r| r.memory().as_ref()) {
        out.memory_limit = mem.limit();
        out.memory_swap = mem.swap();
    }
    if let Some(pids) = r.and_then(|r| r.pids().as_ref()) {
        out.pids_limit = Some(pids.limit());
    }
    for d in r.and_then(|r| r.devices().as_deref()).unwrap_or_default() {
        out.devices.push(DeviceRule {
            allow: d.allow(),
            kind: d.typ().map_or('a', |t| t.as_str().chars().next().unwrap_or('a')),
            major: d.major(),
            minor: d.minor(),
            access: d.access().clone().unwrap_or_else(|| "rwm".into()),
        });
    }
    let allow =
        |kind, major, minor| DeviceRule { allow: true, kind, major, minor, access: "rwm".into() };
    // mknod of anything (not access), as runc allows.
    for kind in ['c', 'b'] {
        out.devices.push(DeviceRule { access: "m".into(), ..allow(kind, None, None) });
    }
    for (_, major, minor) in DEFAULT_DEVICES {
        out.devices.push(allow('c', Some(major as i64), Some(minor as i64)));
    }
    out.devices.push(allow('c', Some(5), Some(2))); // /dev/ptmx
    out.devices.push(allow('c', Some(136), None)); // /dev/pts/*
                                                   // The nodes of linux.devices get no rule of their own: their access is
                                                   // what linux.resources.devices grants (a device plugin's "r" stays
                                                   // read-only), as in runc.
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_leave_the_root() {
        assert!(validate_id("ctr-1.a_b").is_ok());
        for bad in ["", "..", "a/b", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(Signal::SIGKILL).code(), 137);
    }
}

//! The cluster's processes: `berth server` peers (each inside its own
//! namespace through `ip netns exec`, which execs, so the pid is berth's),
//! scheduler and controller-manager replicas in the host namespace. Every
//! process is killed when [`Processes`] is dropped, and dies with the
//! harness (PDEATHSIG) if the harness itself is killed.

use crate::Error;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// What kind of replica a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Peer,
    Scheduler,
    ControllerManager,
}

struct Process {
    name: String,
    role: Role,
    namespace: Option<String>,
    args: Vec<String>,
    /// For control-plane replicas: the host port of /leaderz.
    http_port: Option<u16>,
    child: Option<Child>,
    stopped: bool,
}

/// Every process of one run.
pub struct Processes {
    berth: PathBuf,
    logs: PathBuf,
    list: Vec<Process>,
}

/// A loopback port nobody holds now.
pub(crate) fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Io { context: "find a free loopback port".into(), source })
}

impl Processes {
    pub fn new(berth: &Path, logs: &Path) -> Processes {
        Processes { berth: berth.into(), logs: logs.into(), list: Vec::new() }
    }

    /// Adds and starts a process; returns its index.
    pub fn add(
        &mut self,
        name: &str,
        role: Role,
        namespace: Option<String>,
        args: Vec<String>,
        http_port: Option<u16>,
    ) -> Result<usize, Error> {
        self.list.push(Process {
            name: name.into(),
            role,
            namespace,
            args,
            http_port,
            child: None,
            stopped: false,
        });
        let index = self.list.len() - 1;
        self.start(index)?;
        Ok(index)
    }

    /// Starts process `index` (again) with the arguments it was added with.
    pub fn start(&mut self, index: usize) -> Result<(), Error> {
        let process = &mut self.list[index];
        if process.child.is_some() {
            return Ok(());
        }
        let log_path = self.logs.join(format!("{}.log", process.name));
        let log =
            OpenOptions::new().create(true).append(true).open(&log_path).map_err(|source| {
                Error::Io { context: format!("open {}", log_path.display()), source }
            })?;
        let err = log
            .try_clone()
            .map_err(|source| Error::Io { context: "duplicate a log file".into(), source })?;
        let mut command = match &process.namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.berth);
                c
            }
            None => Command::new(&self.berth),
        };
        command.args(&process.args).stdin(Stdio::null()).stdout(log).stderr(err);
        command.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
        );
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|source| Error::Io { context: format!("start {}", process.name), source })?;
        process.child = Some(child);
        process.stopped = false;
        Ok(())
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self, index: usize) {
        let process = &mut self.list[index];
        if let Some(mut child) = process.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        process.stopped = false;
    }

    /// SIGSTOP (`stop`) or SIGCONT.
    pub fn pause(&mut self, index: usize, stop: bool) -> Result<(), Error> {
        let process = &mut self.list[index];
        let Some(child) = &process.child else {
            return Err(Error::Harness(format!("{} is not running", process.name)));
        };
        let signal = if stop {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
            .map_err(|e| Error::Harness(format!("signal {}: {e}", process.name)))?;
        process.stopped = stop;
        Ok(())
    }

    /// Resumes anything stopped and restarts anything killed.
    pub fn heal(&mut self) -> Result<(), Error> {
        for index in 0..self.list.len() {
            if self.list[index].stopped {
                self.pause(index, false)?;
            }
            if self.list[index].child.is_none() {
                self.start(index)?;
            }
        }
        Ok(())
    }

    /// A process that exited by itself is an error of the run.
    pub fn exited(&mut self) -> Vec<String> {
        let mut dead = Vec::new();
        for process in &mut self.list {
            if let Some(child) = &mut process.child {
                if let Ok(Some(status)) = child.try_wait() {
                    dead.push(format!("{} exited by itself: {status}", process.name));
                    process.child = None;
                }
            }
        }
        dead
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.list[index].child.is_some()
    }

    pub fn name(&self, index: usize) -> &str {
        &self.list[index].name
    }

    /// Indices of the processes of `role`.
    pub fn of(&self, role: Role) -> Vec<usize> {
        (0..self.list.len()).filter(|&i| self.list[i].role == role).collect()
    }

    pub fn http_port(&self, index: usize) -> Option<u16> {
        self.list[index].http_port
    }

    /// Every pid ever handed out that is still running.
    pub fn pids(&self) -> Vec<u32> {
        self.list.iter().filter_map(|p| p.child.as_ref().map(Child::id)).collect()
    }

    /// Kills every process of `role`.
    pub fn kill_role(&mut self, role: Role) {
        for index in self.of(role) {
            self.kill(index);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for index in 0..self.list.len() {
            self.kill(index);
        }
    }
}

/// Whether a process with this pid still exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

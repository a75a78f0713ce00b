//! A container's own standard streams, kept by the runtime as containerd's
//! shim keeps them: the output goes into the container's CRI log and to
//! whoever is attached; stdin (where the container has `stdin`) and the
//! terminal (where it has `tty`) stay open for attach.
//!
//! The runtime holds these ends in its own process, so a runtime that
//! restarts loses them: the container keeps running, but its later output
//! reaches neither the log nor an attach (decisions.md).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::error::{CriError, Result};
use super::streaming::{null, pipe, FdIo};
use crate::executor::{self, CreateOptions, LogPump, Stdio};

/// Chunks of output kept for attached clients that fall behind; one that
/// falls further loses the oldest (the log has all of it).
const BACKLOG: usize = 256;

/// A piece of the container's output: whether it came from stderr, and the
/// bytes.
pub(super) type Chunk = (bool, Arc<[u8]>);

/// What the runtime keeps of one container's standard streams.
pub(super) struct ContainerIo {
    tty: bool,
    stdin_once: bool,
    /// Where attached stdin goes: the pipe's write end or the terminal's
    /// master. None without stdin, and once `stdin_once` has closed it.
    stdin: Mutex<Option<Arc<FdIo>>>,
    /// The terminal's master, for resizes.
    terminal: Option<OwnedFd>,
    /// A receiver new attaches copy (`resubscribe`); the pump's thread holds
    /// the only sender, so receivers end when the output does.
    output: Mutex<broadcast::Receiver<Chunk>>,
    /// Set by the first attach that streams stdin.
    stdin_claimed: AtomicBool,
    _pump: LogPump,
}

/// How the executor is to wire a container's standard streams, and what
/// turns the result into its [`ContainerIo`] once the container exists.
pub(super) enum Wiring {
    /// The container's stdin, stdout and stderr are these pipes' ends.
    Pipes { stdio: Stdio, io: ContainerIo },
    /// A terminal: the container makes it and sends its master over
    /// `console` (the executor gets the socketpair's other end).
    Terminal { console: UnixStream, peer: Arc<OwnedFd> },
}

fn async_fd(fd: OwnedFd) -> Result<Arc<FdIo>> {
    FdIo::new(fd).map_err(CriError::io("container stdin"))
}

impl Wiring {
    /// Plans the streams of a container with `config`'s stdin and tty,
    /// whose output goes into `log` (blocking; in the runtime's context).
    pub(super) fn plan(log: &Path, stdin: bool, stdin_once: bool, tty: bool) -> Result<Wiring> {
        if tty {
            let (console, peer) = UnixStream::pair().map_err(CriError::io("console socket"))?;
            return Ok(Wiring::Terminal { console, peer: Arc::new(OwnedFd::from(peer)) });
        }
        let (child_in, stdin) = match stdin {
            true => {
                let (r, w) = pipe()?;
                (r, Some(async_fd(w)?))
            }
            false => (null()?, None),
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (tap, output) = tap();
        let pump = LogPump::spawn(log, out_r, Some(err_r), Some(tap))?;
        let io = ContainerIo {
            tty: false,
            stdin_once,
            stdin: Mutex::new(stdin),
            terminal: None,
            output: Mutex::new(output),
            stdin_claimed: AtomicBool::new(false),
            _pump: pump,
        };
        Ok(Wiring::Pipes { stdio: Stdio::Fds(Arc::new([child_in, out_w, err_w])), io })
    }

    /// Hands the executor the container's side.
    pub(super) fn wire(&mut self, opts: &mut CreateOptions) {
        match self {
            Wiring::Pipes { stdio, .. } => opts.stdio = std::mem::replace(stdio, Stdio::Null),
            Wiring::Terminal { peer, .. } => opts.console_stream = Some(peer.clone()),
        }
    }

    /// Completes the wiring once the executor has created the container
    /// (blocking: a terminal's master arrives on the console socket).
    pub(super) fn finish(self, log: &Path, stdin: bool, stdin_once: bool) -> Result<ContainerIo> {
        match self {
            Wiring::Pipes { io, .. } => Ok(io),
            Wiring::Terminal { console, peer } => {
                drop(peer);
                let (_, master) = executor::receive_console(&console)?;
                let dup = |fd: &OwnedFd| fd.try_clone().map_err(CriError::io("terminal"));
                let reader = dup(&master)?;
                let writer = match stdin {
                    true => Some(async_fd(dup(&master)?)?),
                    false => None,
                };
                let (tap, output) = tap();
                let pump = LogPump::spawn(log, reader, None, Some(tap))?;
                Ok(ContainerIo {
                    tty: true,
                    stdin_once,
                    stdin: Mutex::new(writer),
                    terminal: Some(master),
                    output: Mutex::new(output),
                    stdin_claimed: AtomicBool::new(false),
                    _pump: pump,
                })
            }
        }
    }
}

/// The pump's tap, sending every chunk to attached clients.
fn tap() -> (executor::Tap, broadcast::Receiver<Chunk>) {
    let (tx, rx) = broadcast::channel::<Chunk>(BACKLOG);
    let tap = move |stderr: bool, data: &[u8]| {
        // No receiver but the kept one is fine: nobody is attached.
        let _ = tx.send((stderr, Arc::from(data)));
    };
    (Box::new(tap), rx)
}

impl ContainerIo {
    pub(super) fn tty(&self) -> bool {
        self.tty
    }

    /// The output from now on, until the container's output ends.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Chunk> {
        self.output.lock().expect("output lock is never poisoned").resubscribe()
    }

    /// Where an attach's stdin goes, if the container has stdin still open.
    /// With `stdin_once`, only the first attach that asks gets it.
    pub(super) fn claim_stdin(&self) -> Option<Arc<FdIo>> {
        let stdin = self.stdin.lock().expect("stdin lock is never poisoned").clone()?;
        if self.stdin_once && self.stdin_claimed.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(stdin)
    }

    /// An attach that streamed stdin has ended: with `stdin_once` the
    /// container's stdin closes (it reads the end of its input).
    pub(super) fn release_stdin(&self) {
        if self.stdin_once {
            self.stdin.lock().expect("stdin lock is never poisoned").take();
        }
    }

    /// Resizes the terminal; nothing without one.
    pub(super) fn resize(&self, width: u32, height: u32) {
        if let Some(master) = &self.terminal {
            set_window_size(master, width, height);
        }
    }
}

/// TIOCSWINSZ on a terminal's master.
pub(super) fn set_window_size(master: &impl AsRawFd, width: u32, height: u32) {
    let size = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

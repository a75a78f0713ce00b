//! `process.terminal`: a pseudo-terminal made inside the container, from the
//! container's own devpts instance, as runc does. Its master goes to whoever
//! listens on the `--console-socket` (one SCM_RIGHTS message whose payload is
//! the pty's name); its slave becomes the process's stdin, stdout, stderr and
//! controlling terminal, and is bound over /dev/console.
//!
//! `connect` runs in the runtime; the rest runs in the forked init, so it
//! sticks to system calls and plain errors.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;

use super::error::{ExecutorError, Result};
use super::rootfs::{Context, Step};

/// Connects to the caller's console socket before the container is forked.
pub(crate) fn connect(path: &Path) -> Result<OwnedFd> {
    let stream = UnixStream::connect(path).map_err(ExecutorError::io(path))?;
    Ok(OwnedFd::from(stream))
}

/// The console socket's listening side: takes the one message a container
/// with `process.terminal` sends on `stream` (a connection to the console
/// socket), and returns the pty's name inside the container and its master.
pub fn receive(stream: &impl AsRawFd) -> Result<(String, OwnedFd)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::os::fd::{FromRawFd, RawFd};
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg =
        recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(ExecutorError::sys("receive the terminal from the console socket"))?;
    let mut fds: Vec<RawFd> = Vec::new();
    for c in msg.cmsgs().map_err(ExecutorError::sys("console socket message"))? {
        if let ControlMessageOwned::ScmRights(got) = c {
            fds.extend(got);
        }
    }
    let len = msg.bytes;
    // SAFETY: these fds just arrived in this process and nothing else owns them.
    let mut owned: Vec<OwnedFd> =
        fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    if owned.len() != 1 {
        return Err(ExecutorError::Setup(format!(
            "the console socket carried {} descriptors, not one pty master",
            owned.len()
        )));
    }
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    Ok((name, owned.remove(0)))
}

/// In init, after pivot_root: opens a pty pair, binds the slave over
/// /dev/console, sends the master over `socket` and returns the slave.
pub(crate) fn setup(socket: &OwnedFd) -> Step<OwnedFd> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::fcntl::open("/dev/ptmx", flags, Mode::empty())
        .ctx(|| "open /dev/ptmx (the spec needs a devpts mount with newinstance)".into())?;
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the live pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } != 0 {
        return Err(format!("unlock pty: {}", std::io::Error::last_os_error()));
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int to the live pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) } != 0 {
        return Err(format!("pty number: {}", std::io::Error::last_os_error()));
    }
    let name = format!("/dev/pts/{number}");
    let slave =
        nix::fcntl::open(name.as_str(), flags, Mode::empty()).ctx(|| format!("open {name}"))?;

    let console = Path::new("/dev/console");
    if !console.exists() {
        std::fs::File::create(console).ctx(|| "create /dev/console".into())?;
    }
    mount(Some(name.as_str()), console, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .ctx(|| format!("bind {name} on /dev/console"))?;

    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "send the pty master over the console socket".into())?;
    Ok(slave)
}

/// In init, once it leads its own session: the slave becomes fds 0, 1 and 2
/// and the controlling terminal.
pub(crate) fn attach(slave: &OwnedFd) -> Step {
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds, which the exec'd program expects.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(format!("dup2 terminal: {}", std::io::Error::last_os_error()));
        }
    }
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal).
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(format!("set controlling terminal: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

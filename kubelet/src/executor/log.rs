//! Container stdout/stderr into a file in the CRI log format:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <line>`, where P marks a
//! chunk of a line longer than `MAX_LINE` and F its end (or a whole line).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::error::{ExecutorError, Result};

/// Longest line written as one record; longer ones are split into P records.
const MAX_LINE: usize = 16 * 1024;

/// One record of a CRI log, as read back.
#[derive(Debug, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub time: &'a str,
    pub stderr: bool,
    /// The last (or only) piece of a line.
    pub full: bool,
    pub content: &'a [u8],
}

/// Reads one line of a CRI log (without its newline); `None` if it is not one.
pub fn parse_record(line: &[u8]) -> Option<LogRecord<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stderr = match parts.next()? {
        b"stdout" => false,
        b"stderr" => true,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(LogRecord { time, stderr, full, content: parts.next().unwrap_or_default() })
}

/// Copies a process's stdout and stderr pipes into a CRI log file on a
/// thread it owns. The thread ends when both pipes close, or when the pump
/// is stopped (after draining what is buffered) or dropped.
#[derive(Debug)]
pub struct LogPump {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// The write ends handed to the container process, and the pump reading them.
pub(crate) struct LogPipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub pump: LogPump,
}

/// Sees each chunk the pump reads, before it is written: whether it came
/// from stderr, and the bytes. Dropped when the pump's thread ends.
pub type Tap = Box<dyn FnMut(bool, &[u8]) + Send>;

impl LogPump {
    /// Opens (appending) `path` and starts the thread.
    pub(crate) fn start(path: &Path) -> Result<LogPipes> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(ExecutorError::sys("pipe for container logs"))
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let pump = LogPump::spawn(path, out_r, Some(err_r), None)?;
        Ok(LogPipes { stdout: out_w, stderr: err_w, pump })
    }

    /// Copies what can be read from `stdout` and `stderr` (None where a
    /// terminal merges them into `stdout`) into the CRI log at `path`
    /// (appending), and hands each chunk to `tap` too.
    pub fn spawn(
        path: &Path,
        stdout: OwnedFd,
        stderr: Option<OwnedFd>,
        tap: Option<Tap>,
    ) -> Result<LogPump> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(ExecutorError::io(path))?;
        let (stop_r, stop_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(ExecutorError::sys("pipe for container logs"))?;
        let mut streams = vec![Stream::new("stdout", stdout)];
        streams.extend(stderr.map(|fd| Stream::new("stderr", fd)));
        let thread = std::thread::Builder::new()
            .name("berth-cri-log".into())
            .spawn(move || pump(file, streams, stop_r, tap))
            .map_err(ExecutorError::io(path))?;
        Ok(LogPump { stop: Some(stop_w), thread: Some(thread) })
    }

    /// Drains what the pipes hold now, writes it, and joins the thread.
    /// Output from processes that outlive the container's main one is cut off.
    pub fn finish(&mut self) {
        // Closing the stop pipe wakes the thread.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("CRI log thread panicked");
            }
        }
    }
}

impl Drop for LogPump {
    fn drop(&mut self) {
        self.finish();
    }
}

fn pump(mut file: File, mut streams: Vec<Stream>, stop: OwnedFd, mut tap: Option<Tap>) {
    let mut stopping = false;
    loop {
        let open: Vec<usize> = (0..streams.len()).filter(|i| streams[*i].fd.is_some()).collect();
        if open.is_empty() {
            break;
        }
        let timeout = if stopping { PollTimeout::ZERO } else { PollTimeout::NONE };
        let mut fds: Vec<PollFd> = open
            .iter()
            .filter_map(|i| {
                streams[*i].fd.as_ref().map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            })
            .collect();
        if !stopping {
            fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) => break, // stopping and nothing left to read
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll on container log pipes");
                break;
            }
        }
        let ready: Vec<bool> =
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        if !stopping && ready.last() == Some(&true) {
            stopping = true;
        }
        for (slot, i) in open.iter().enumerate() {
            if ready[slot] {
                streams[*i].read_into(&mut file, tap.as_mut());
            }
        }
    }
    for s in &mut streams {
        s.flush_partial(&mut file);
    }
}

struct Stream {
    name: &'static str,
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
}

impl Stream {
    fn new(name: &'static str, fd: OwnedFd) -> Self {
        Self { name, fd: Some(fd), buf: Vec::new() }
    }

    fn read_into(&mut self, file: &mut File, tap: Option<&mut Tap>) {
        let Some(fd) = &self.fd else { return };
        let mut chunk = [0u8; 8192];
        match nix::unistd::read(fd, &mut chunk) {
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
            // A terminal whose other side has closed answers EIO: its end.
            Ok(0) | Err(_) => {
                self.fd = None;
                self.flush_partial(file);
            }
            Ok(n) => {
                if let Some(tap) = tap {
                    tap(self.name == "stderr", &chunk[..n]);
                }
                self.buf.extend_from_slice(&chunk[..n]);
                self.write_lines(file);
            }
        }
    }

    fn write_lines(&mut self, file: &mut File) {
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            write_record(file, self.name, 'F', &line[..line.len() - 1]);
        }
        while self.buf.len() >= MAX_LINE {
            let part: Vec<u8> = self.buf.drain(..MAX_LINE).collect();
            write_record(file, self.name, 'P', &part);
        }
    }

    fn flush_partial(&mut self, file: &mut File) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            write_record(file, self.name, 'F', &rest);
        }
    }
}

/// One record in one write, so records from the two streams never interleave.
fn write_record(file: &mut File, stream: &str, tag: char, line: &[u8]) {
    let mut record = format_prefix(stream, tag).into_bytes();
    record.extend_from_slice(line);
    record.push(b'\n');
    if let Err(e) = file.write_all(&record) {
        tracing::warn!(error = %e, "writing container log");
    }
}

fn format_prefix(stream: &str, tag: char) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    format!("{now} {stream} {tag} ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_cri_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut pipes = LogPump::start(&path).unwrap();
        nix::unistd::write(&pipes.stdout, b"hello\nworld").unwrap();
        nix::unistd::write(&pipes.stderr, &vec![b'x'; MAX_LINE + 3]).unwrap();
        drop(pipes.stdout);
        drop(pipes.stderr);
        pipes.pump.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<(&str, &str, &str)> = text
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let ts = p.next().unwrap();
                assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
                assert_eq!(ts.len(), "2016-10-06T00:17:09.669794202Z".len(), "{ts}");
                (p.next().unwrap(), p.next().unwrap(), p.next().unwrap_or(""))
            })
            .collect();
        let stdout: Vec<_> = records.iter().filter(|r| r.0 == "stdout").collect();
        assert_eq!(stdout, [&("stdout", "F", "hello"), &("stdout", "F", "world")]);
        let stderr: Vec<_> =
            records.iter().filter(|r| r.0 == "stderr").map(|r| (r.1, r.2.len())).collect();
        assert_eq!(stderr, [("P", MAX_LINE), ("F", 3)]);
    }
}

//! The framed pipe between the runtime and the processes it forks.
//!
//! Children write small messages (their init pid, "ready", or an error that
//! happened before the user's program ran); each frame is under PIPE_BUF, so
//! writes from the intermediate and init processes never interleave.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

/// A message from a forked child to the runtime.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// The intermediate process unshared a user namespace and needs its id maps.
    NeedIdMaps,
    /// The container process's pid, as the runtime sees it.
    Pid(i32),
    /// Init finished setting up and waits for start.
    Ready,
    /// Setup failed; the text says where.
    Error(String),
}

const MAX_FRAME: usize = 3072;

/// Writes one frame; used in forked children, so it only calls write(2).
pub(crate) fn send(fd: &OwnedFd, msg: &Message) {
    let (tag, payload): (u8, Vec<u8>) = match msg {
        Message::NeedIdMaps => (b'U', Vec::new()),
        Message::Pid(pid) => (b'P', pid.to_le_bytes().to_vec()),
        Message::Ready => (b'R', Vec::new()),
        Message::Error(text) => {
            let mut bytes = text.as_bytes().to_vec();
            bytes.truncate(MAX_FRAME);
            (b'E', bytes)
        }
    };
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(tag);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    // A failed write means the runtime is gone; nobody is left to tell.
    // SAFETY: writes from a live slice to an fd we own.
    let _ = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
}

/// Reads the next frame; None at end of file (every writer closed or exec'd).
pub(crate) fn recv(reader: &mut impl Read) -> std::io::Result<Option<Message>> {
    let mut header = [0u8; 5];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "oversized frame"));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    Ok(Some(match header[0] {
        b'U' => Message::NeedIdMaps,
        b'P' if len == 4 => {
            Message::Pid(i32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]))
        }
        b'R' => Message::Ready,
        b'E' => Message::Error(String::from_utf8_lossy(&payload).into_owned()),
        _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "unknown frame")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let (r, w) = nix::unistd::pipe().unwrap();
        send(&w, &Message::Pid(42));
        send(&w, &Message::Error("mount /proc: EPERM".into()));
        send(&w, &Message::Ready);
        drop(w);
        let mut r = std::fs::File::from(r);
        assert_eq!(recv(&mut r).unwrap(), Some(Message::Pid(42)));
        assert_eq!(recv(&mut r).unwrap(), Some(Message::Error("mount /proc: EPERM".into())));
        assert_eq!(recv(&mut r).unwrap(), Some(Message::Ready));
        assert_eq!(recv(&mut r).unwrap(), None);
    }
}

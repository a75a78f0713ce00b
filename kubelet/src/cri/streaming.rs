//! The runtime's streaming server. CRI `Exec` and `Attach` only prepare a
//! session and answer with a one-time URL here; the client (the node agent)
//! connects to it with a WebSocket and speaks Kubernetes' remote command
//! protocol (`v5.channel.k8s.io`, or `v4.channel.k8s.io`), as it would to
//! containerd's streaming server. An exec's command runs through the
//! executor's exec, on pipes or on a pseudo-terminal; an attach joins the
//! container's own streams ([`super::attach`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_proto::cri_v1 as cri;
use berth_proto::remotecommand as rc;
use futures::{SinkExt, StreamExt};
use oci_spec::runtime::Process;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::error::{CriError, Result};
use super::runtime::Runtime;
use crate::executor::Stdio;

/// How long a URL stays valid before the client connects (containerd: 1 min).
const URL_TTL: Duration = Duration::from_secs(60);
/// How long output is still relayed after the command exits (a background
/// child may hold its pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Sessions prepared by `Exec` and not yet connected to.
pub(super) struct Streams {
    listener: Mutex<Option<std::net::TcpListener>>,
    base: String,
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    container_id: String,
    job: Job,
    expires: Instant,
}

enum Job {
    Exec { process: Box<Process>, request: cri::ExecRequest },
    Attach(cri::AttachRequest),
}

impl Streams {
    /// Binds the server on a loopback port: only this node reaches it.
    pub(super) fn bind() -> Result<Arc<Streams>> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(CriError::io("streaming server socket"))?;
        let addr = listener.local_addr().map_err(CriError::io("streaming server socket"))?;
        Ok(Arc::new(Streams {
            listener: Mutex::new(Some(listener)),
            base: format!("http://{addr}"),
            pending: Mutex::default(),
        }))
    }

    /// Prepares an exec session and returns its URL.
    pub(super) fn exec(&self, runtime: &Runtime, request: cri::ExecRequest) -> Result<String> {
        if request.tty && request.stderr {
            return Err(CriError::InvalidArgument("tty and stderr cannot both be true".into()));
        }
        if !(request.stdin || request.stdout || request.stderr) {
            return Err(CriError::InvalidArgument(
                "one of stdin, stdout or stderr must be streamed".into(),
            ));
        }
        let process =
            runtime.exec_process(&request.container_id, request.cmd.clone(), request.tty)?;
        let id = request.container_id.clone();
        self.prepare(id, Job::Exec { process: Box::new(process), request }, "exec")
    }

    /// Prepares an attach session and returns its URL.
    pub(super) fn attach(&self, runtime: &Runtime, request: cri::AttachRequest) -> Result<String> {
        if !(request.stdin || request.stdout || request.stderr) {
            return Err(CriError::InvalidArgument(
                "one of stdin, stdout or stderr must be streamed".into(),
            ));
        }
        // Checked now so the caller hears of it; the request's tty is not:
        // the container's own decides, as in containerd.
        runtime.container_io(&request.container_id)?;
        let id = request.container_id.clone();
        self.prepare(id, Job::Attach(request), "attach")
    }

    fn prepare(&self, container_id: String, job: Job, kind: &str) -> Result<String> {
        let mut token = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token)
            .map_err(|_| CriError::Task("no randomness for a stream token".into()))?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let mut pending = self.pending.lock().expect("pending lock is never poisoned");
        let now = Instant::now();
        pending.retain(|_, p| p.expires > now);
        pending.insert(token.clone(), Pending { container_id, job, expires: now + URL_TTL });
        Ok(format!("{}/{kind}/{token}", self.base))
    }

    fn take(&self, path: &str) -> Option<Pending> {
        let token = path.strip_prefix("/exec/").or_else(|| path.strip_prefix("/attach/"))?;
        let pending = self.pending.lock().expect("pending lock is never poisoned").remove(token)?;
        (pending.expires > Instant::now()).then_some(pending)
    }

    /// Serves sessions until `stop`; open sessions end with it.
    pub(super) async fn serve(self: Arc<Self>, runtime: Arc<Runtime>, stop: CancellationToken) {
        let Some(listener) = self.listener.lock().expect("listener lock").take() else { return };
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "streaming server cannot listen");
                return;
            }
        };
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        sessions.spawn(session(self.clone(), runtime.clone(), tcp));
                    }
                    Err(e) => tracing::warn!(error = %e, "streaming server accept failed"),
                },
            }
        }
        sessions.shutdown().await;
    }
}

/// The remote command protocol the client offers that this server prefers.
fn choose_protocol(request: &Request) -> Option<&'static str> {
    let offered: Vec<String> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    rc::PROTOCOLS.into_iter().find(|p| offered.iter().any(|o| o == p))
}

fn refuse(status: http::StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_string()));
    *response.status_mut() = status;
    response
}

// The handshake callback's error type is tungstenite's, a whole response.
#[allow(clippy::result_large_err)]
async fn session(streams: Arc<Streams>, runtime: Arc<Runtime>, tcp: TcpStream) {
    let mut chosen = None;
    let handshake =
        tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, mut resp: Response| {
            let Some(protocol) = choose_protocol(req) else {
                return Err(refuse(http::StatusCode::BAD_REQUEST, "no supported stream protocol"));
            };
            let Some(pending) = streams.take(req.uri().path()) else {
                return Err(refuse(http::StatusCode::NOT_FOUND, "unknown or expired exec session"));
            };
            resp.headers_mut()
                .insert("sec-websocket-protocol", http::HeaderValue::from_static(protocol));
            chosen = Some((pending, protocol));
            Ok(resp)
        })
        .await;
    let ws = match handshake {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "exec stream handshake failed");
            return;
        }
    };
    let Some((pending, protocol)) = chosen else { return };
    if let Err(e) = run(ws, pending, protocol, runtime).await {
        tracing::debug!(error = %e, "exec stream ended with an error");
    }
}

/// A descriptor the relay reads or writes without blocking a thread.
pub(super) struct FdIo(AsyncFd<OwnedFd>);

impl FdIo {
    pub(super) fn new(fd: OwnedFd) -> io::Result<Arc<FdIo>> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: the OwnedFd is valid and stays open, unreplaced, for as
        // long as the AsyncFd that owns it.
        Ok(Arc::new(FdIo(unsafe { AsyncFd::register(fd)? })))
    }

    /// Reads some bytes; 0 at the end (a terminal whose other side closed
    /// answers EIO, which is its end too).
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    pub(super) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.0.writable().await?;
            match ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn resize(&self, width: u32, height: u32) {
        super::attach::set_window_size(self.0.get_ref(), width, height);
    }
}

/// What the command's side of a session looks like to the relay.
struct Ends {
    /// The command's stdin, stdout and stderr.
    child: [OwnedFd; 3],
    stdin: Option<Arc<FdIo>>,
    outputs: Vec<(u8, Arc<FdIo>)>,
    terminal: Option<Arc<FdIo>>,
}

pub(super) fn null() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(CriError::io("/dev/null"))
}

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(CriError::sys("pipe"))
}

fn ends(request: &cri::ExecRequest) -> Result<Ends> {
    let io = |fd| FdIo::new(fd).map_err(CriError::io("exec stream"));
    if request.tty {
        let pty = nix::pty::openpty(None, None).map_err(CriError::sys("openpty"))?;
        // Only the command gets the terminal, on its stdio.
        for fd in [&pty.master, &pty.slave] {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(CriError::sys("pty"))?;
        }
        let master = io(pty.master)?;
        let slave = pty.slave;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(CriError::io("terminal"));
        return Ok(Ends {
            child: [dup(&slave)?, dup(&slave)?, slave],
            stdin: request.stdin.then(|| master.clone()),
            outputs: vec![(rc::STDOUT, master.clone())],
            terminal: Some(master),
        });
    }
    let (child_in, stdin) = match request.stdin {
        true => {
            let (r, w) = pipe()?;
            (r, Some(io(w)?))
        }
        false => (null()?, None),
    };
    let mut outputs = Vec::new();
    let mut output = |wanted: bool, channel: u8| -> Result<OwnedFd> {
        if !wanted {
            return null();
        }
        let (r, w) = pipe()?;
        outputs.push((channel, io(r)?));
        Ok(w)
    };
    let child_out = output(request.stdout, rc::STDOUT)?;
    let child_err = output(request.stderr, rc::STDERR)?;
    Ok(Ends { child: [child_in, child_out, child_err], stdin, outputs, terminal: None })
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// The command's pid until it has been waited for.
struct KillUnlessExited(Option<nix::unistd::Pid>);

impl KillUnlessExited {
    fn kill(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for KillUnlessExited {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The close that ends a session well: clients take any other as an error.
fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

type WsError = tokio_tungstenite::tungstenite::Error;

async fn run(
    ws: Ws,
    pending: Pending,
    protocol: &'static str,
    runtime: Arc<Runtime>,
) -> std::result::Result<(), WsError> {
    let Pending { container_id, job, .. } = pending;
    match job {
        Job::Exec { process, request } => {
            run_exec(ws, container_id, *process, request, protocol, runtime).await
        }
        Job::Attach(request) => run_attach(ws, container_id, request, protocol, runtime).await,
    }
}

async fn run_exec(
    ws: Ws,
    container_id: String,
    process: Process,
    request: cri::ExecRequest,
    protocol: &'static str,
    runtime: Arc<Runtime>,
) -> std::result::Result<(), WsError> {
    let (mut sink, mut incoming) = ws.split();
    let started = match ends(&request) {
        Ok(Ends { child, stdin, outputs, terminal }) => {
            // The executor duplicates the descriptors for the command; ours
            // go with `child` on that thread, so the pipes end when the
            // command does.
            let rt = runtime.clone();
            tokio::task::spawn_blocking(move || {
                rt.spawn_exec(&container_id, &process, Stdio::Fds(Arc::new(child)))
            })
            .await
            .map_err(|e| CriError::Task(format!("exec: {e}")))
            .and_then(|spawned| spawned)
            .map(|exec| (exec, stdin, outputs, terminal))
        }
        Err(e) => Err(e),
    };
    let (mut exec, stdin, outputs, terminal) = match started {
        Ok(started) => started,
        Err(e) => {
            sink.send(Message::binary(rc::frame(rc::ERROR, &rc::failure(&e.to_string())))).await?;
            return sink.send(normal_close()).await;
        }
    };
    // Whatever ends this relay before the command does ends the command.
    let mut guard = KillUnlessExited(Some(exec.pid()));
    let mut tasks = JoinSet::new();
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    for (channel, fd) in outputs {
        let tx = out_tx.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n @ 1..) = fd.read(&mut buf).await {
                if tx.send((channel, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(out_tx);
    let mut stdin_tx = stdin.map(|fd| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tasks.spawn(async move {
            while let Some(data) = rx.recv().await {
                if fd.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        tx
    });
    let mut waiter = tokio::task::spawn_blocking(move || exec.wait());
    let mut exit: Option<i32> = None;
    let mut output_open = true;
    let mut input_open = true;
    let drain = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            chunk = out_rx.recv(), if output_open => match chunk {
                Some((channel, data)) => sink.send(Message::binary(rc::frame(channel, &data))).await?,
                None => output_open = false,
            },
            message = incoming.next(), if input_open => match message {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&rc::STDIN) => {
                        if let Some(tx) = &stdin_tx {
                            let _ = tx.send(data[1..].to_vec());
                        }
                    }
                    Some(&rc::RESIZE) => {
                        if let (Some(t), Some((w, h))) = (&terminal, rc::parse_resize(&data[1..])) {
                            t.resize(w, h);
                        }
                    }
                    Some(&rc::CLOSE) if protocol == rc::V5 && data.get(1) == Some(&rc::STDIN) => {
                        stdin_tx = None;
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client is gone: so is its command.
                    input_open = false;
                    stdin_tx = None;
                    guard.kill();
                }
                Some(Ok(_)) => {}
            },
            waited = &mut waiter, if exit.is_none() => {
                guard.0 = None;
                exit = Some(match waited {
                    Ok(Ok(status)) => status.code(),
                    _ => 255,
                });
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            },
            _ = &mut drain, if output_open => output_open = false,
        }
        if exit.is_some() && !output_open {
            break;
        }
    }
    drop(stdin_tx);
    tasks.shutdown().await;
    let code = exit.unwrap_or(255);
    if input_open {
        sink.send(Message::binary(rc::frame(rc::ERROR, &rc::exit_status(code)))).await?;
        sink.send(normal_close()).await?;
    }
    Ok(())
}

/// How long stdin still queued when an attach ends may take to reach the
/// container.
const STDIN_FLUSH: Duration = Duration::from_secs(1);

/// Relays one attach: the container's output (the streams the client asked
/// for) to the client, and the client's stdin and resizes to the container,
/// until the container's output ends or the client goes away.
async fn run_attach(
    ws: Ws,
    container_id: String,
    request: cri::AttachRequest,
    protocol: &'static str,
    runtime: Arc<Runtime>,
) -> std::result::Result<(), WsError> {
    let (mut sink, mut incoming) = ws.split();
    let io = match runtime.container_io(&container_id) {
        Ok(io) => io,
        Err(e) => {
            sink.send(Message::binary(rc::frame(rc::ERROR, &rc::failure(&e.to_string())))).await?;
            return sink.send(normal_close()).await;
        }
    };
    let mut output = io.subscribe();
    let stdin = if request.stdin { io.claim_stdin() } else { None };
    let claimed = stdin.is_some();
    // Writes go through a task, so a container that does not read its
    // stdin cannot stall the output.
    let mut writer = JoinSet::new();
    let mut stdin_tx = stdin.map(|fd| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        writer.spawn(async move {
            while let Some(data) = rx.recv().await {
                if fd.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        tx
    });
    let tty = io.tty();
    let mut client_open = true;
    loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Ok((stderr, data)) => {
                    let (channel, wanted) = match stderr && !tty {
                        true => (rc::STDERR, request.stderr),
                        false => (rc::STDOUT, request.stdout),
                    };
                    if wanted {
                        sink.send(Message::binary(rc::frame(channel, &data))).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(container = %container_id, missed, "attach fell behind the output");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(&rc::STDIN) => {
                        if let Some(tx) = &stdin_tx {
                            let _ = tx.send(data[1..].to_vec());
                        }
                    }
                    Some(&rc::RESIZE) => {
                        if let Some((w, h)) = rc::parse_resize(&data[1..]) {
                            io.resize(w, h);
                        }
                    }
                    Some(&rc::CLOSE) if protocol == rc::V5 && data.get(1) == Some(&rc::STDIN) => {
                        // The writer drains what is queued, then lets go;
                        // with stdinOnce the container then reads its end.
                        stdin_tx = None;
                        if claimed {
                            io.release_stdin();
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    client_open = false;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(stdin_tx);
    let _ =
        tokio::time::timeout(STDIN_FLUSH, async { while writer.join_next().await.is_some() {} })
            .await;
    writer.shutdown().await;
    if claimed {
        io.release_stdin();
    }
    if client_open {
        sink.send(Message::binary(rc::frame(rc::ERROR, &rc::exit_status(0)))).await?;
        sink.send(normal_close()).await?;
    }
    Ok(())
}

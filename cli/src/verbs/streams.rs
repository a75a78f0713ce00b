//! `berth logs`, `berth exec` and `berth attach`: the Pods service's
//! streams, which the API server relays from the pod's node. A stream opens on the first peer
//! that takes it; once open it stays on that peer.

use super::{NamespaceArgs, Session};
use crate::config::ConnectArgs;
use anyhow::{anyhow, Result};
use berth_proto::api_v1::pods_client::PodsClient;
use berth_proto::api_v1::{
    pod_exec_input, pod_exec_output, PodExecInput, PodExecStart, PodLogsRequest, TerminalSize,
};
use futures::StreamExt;
use std::io::Write;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// The container a stream is with, and how to reach the cluster.
#[derive(clap::Args)]
struct Target {
    /// The pod: NAME or pod/NAME
    pod: String,
    /// The container [default: the pod's only container]
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[command(flatten)]
    ns: NamespaceArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

impl Target {
    fn session(&self) -> Result<Session> {
        Session::open(&self.connect, &self.ns)
    }

    /// The start of an exec (or, without a command, an attach) here.
    fn start(
        &self,
        session: &Session,
        command: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> Result<PodExecStart> {
        Ok(PodExecStart {
            namespace: session.namespace.clone(),
            name: pod_name(&self.pod)?,
            container: self.container.clone().unwrap_or_default(),
            command,
            stdin,
            stdout: true,
            // A terminal carries both streams as one.
            stderr: !tty,
            tty,
        })
    }
}

#[derive(clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    target: Target,
    /// Keep printing the log as it grows
    #[arg(short = 'f', long)]
    follow: bool,
    /// The log of the container's previous run (after a restart)
    #[arg(short = 'p', long)]
    previous: bool,
    /// Only the last N lines (-1: all)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    tail: i64,
    /// Prefix each line with its time
    #[arg(long)]
    timestamps: bool,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    target: Target,
    /// Pass standard input to the command
    #[arg(short = 'i', long = "stdin")]
    stdin: bool,
    /// Give the command a terminal (with -i: an interactive shell)
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// The command and its arguments, after --
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct AttachArgs {
    #[command(flatten)]
    target: Target,
    /// Pass standard input to the container's process (it needs `stdin: true`)
    #[arg(short = 'i', long = "stdin")]
    stdin: bool,
    /// The container has a terminal (`tty: true`): use it, raw, from this one
    #[arg(short = 't', long = "tty")]
    tty: bool,
}

fn pod_name(arg: &str) -> Result<String> {
    match arg.split_once('/') {
        None => Ok(arg.to_string()),
        Some((kind, name)) if matches!(kind, "pod" | "pods" | "po") && !name.is_empty() => {
            Ok(name.to_string())
        }
        Some(_) => Err(anyhow!("{arg:?}: logs, exec and attach take a pod, as NAME or pod/NAME")),
    }
}

type Pods =
    PodsClient<tonic::service::interceptor::InterceptedService<Channel, crate::config::Bearer>>;

/// Calls `open` on each peer in turn until one does not answer
/// Unavailable; its answer (or the last refusal) is the result.
async fn on_some_peer<T, F, Fut>(session: &Session, mut open: F) -> Result<T>
where
    F: FnMut(Pods) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut last = anyhow!("no API server address was given");
    let bearer = session.auth.bearer()?;
    for addr in &session.endpoints {
        // Streams run as long as they run: no call timeout.
        let channel = match session.auth.channel(addr, None).await {
            Ok(channel) => channel,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match open(PodsClient::with_interceptor(channel, bearer.clone())).await {
            Ok(value) => return Ok(value),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                last = berth_client::Error::from(s).into();
            }
            Err(s) => return Err(berth_client::Error::from(s).into()),
        }
    }
    Err(last)
}

pub async fn logs(args: &LogsArgs) -> Result<()> {
    let session = args.target.session()?;
    let request = PodLogsRequest {
        namespace: session.namespace.clone(),
        name: pod_name(&args.target.pod)?,
        container: args.target.container.clone().unwrap_or_default(),
        follow: args.follow,
        tail_lines: (args.tail >= 0).then_some(args.tail),
        previous: args.previous,
        timestamps: args.timestamps,
        ..Default::default()
    };
    let mut stream = on_some_peer(&session, |mut pods| {
        let request = request.clone();
        async move { pods.logs(request).await.map(tonic::Response::into_inner) }
    })
    .await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(berth_client::Error::from)?;
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}

/// Runs the command; returns its exit code.
pub async fn exec(args: &ExecArgs) -> Result<i32> {
    let session = args.target.session()?;
    let start = args.target.start(&session, args.command.clone(), args.stdin, args.tty)?;
    relay(&session, start, false).await
}

/// Joins the container's own process until its output ends (0) or the
/// stream fails.
pub async fn attach(args: &AttachArgs) -> Result<i32> {
    let session = args.target.session()?;
    let start = args.target.start(&session, Vec::new(), args.stdin, args.tty)?;
    if args.stdin && args.tty {
        eprintln!("If you don't see a command prompt, try pressing enter.");
    }
    relay(&session, start, true).await
}

/// An exec (or, with `attach`, an attach) between this terminal and the
/// container; returns the exit code the stream ends with.
async fn relay(session: &Session, start: PodExecStart, attach: bool) -> Result<i32> {
    let what = if attach { "attach" } else { "exec" };
    let (stdin, tty) = (start.stdin, start.tty);
    // Raw only when the keys go to the container: with -t alone, Ctrl-C
    // still stops berth here.
    let terminal = if tty && stdin { Terminal::raw() } else { None };
    let (tx, rx) = mpsc::channel::<PodExecInput>(16);
    let first = |input| PodExecInput { input: Some(input) };
    tx.send(first(pod_exec_input::Input::Start(start)))
        .await
        .map_err(|_| anyhow!("the {what} stream closed before it started"))?;
    if let Some(size) = tty.then(Terminal::size).flatten() {
        let _ = tx.send(first(pod_exec_input::Input::Resize(size))).await;
    }
    // Only the first peer that takes the stream gets its input.
    let input = std::sync::Mutex::new(Some(rx));
    let mut output = on_some_peer(session, |mut pods| {
        let rx = input.lock().ok().and_then(|mut r| r.take());
        async move {
            let Some(rx) = rx else {
                return Err(tonic::Status::unavailable("the stream's input went to another peer"));
            };
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            let started = match attach {
                false => pods.exec(stream).await,
                true => pods.attach(stream).await,
            };
            started.map(tonic::Response::into_inner)
        }
    })
    .await?;

    // Owned here, stopped when the command ends.
    let mut feeders = tokio::task::JoinSet::new();
    if stdin {
        let tx = tx.clone();
        feeders.spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 << 10];
            loop {
                let input = match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => pod_exec_input::Input::CloseStdin(true),
                    Ok(n) => pod_exec_input::Input::Stdin(buf[..n].to_vec()),
                };
                let done = matches!(input, pod_exec_input::Input::CloseStdin(_));
                if tx.send(PodExecInput { input: Some(input) }).await.is_err() || done {
                    return;
                }
            }
        });
    }
    if tty {
        let tx = tx.clone();
        let mut changes =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        feeders.spawn(async move {
            while changes.recv().await.is_some() {
                if let Some(size) = Terminal::size() {
                    let input = PodExecInput { input: Some(pod_exec_input::Input::Resize(size)) };
                    if tx.send(input).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);

    let mut code = None;
    while let Some(message) = output.next().await {
        let message = message.map_err(berth_client::Error::from)?;
        match message.output {
            Some(pod_exec_output::Output::Stdout(bytes)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                out.flush()?;
            }
            Some(pod_exec_output::Output::Stderr(bytes)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&bytes)?;
                err.flush()?;
            }
            Some(pod_exec_output::Output::ExitCode(c)) => code = Some(c),
            None => {}
        }
    }
    feeders.abort_all();
    drop(terminal);
    code.ok_or_else(|| anyhow!("the {what} stream ended without an exit status"))
}

nix::ioctl_read_bad!(window_size, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// Standard input's terminal in raw mode, restored when dropped.
struct Terminal {
    saved: nix::sys::termios::Termios,
}

impl Terminal {
    /// None when standard input is not a terminal.
    fn raw() -> Option<Terminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Terminal { saved })
    }

    fn size() -> Option<TerminalSize> {
        let mut size = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
        unsafe { window_size(nix::libc::STDIN_FILENO, &mut size) }.ok()?;
        (size.ws_col > 0)
            .then_some(TerminalSize { width: size.ws_col.into(), height: size.ws_row.into() })
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

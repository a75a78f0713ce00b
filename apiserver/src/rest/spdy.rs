//! Kubernetes' remote command protocol over SPDY/3.1, which kubectl before
//! 1.30 uses for exec and attach (`Upgrade: SPDY/3.1`, with
//! `X-Stream-Protocol-Version: v4.channel.k8s.io`). The client opens one
//! SPDY stream per channel, naming it in a `streamType` header: error,
//! stdin, stdout, stderr, resize. Output goes out as DATA frames on the
//! stdout and stderr streams, the end as a v1 Status on the error stream,
//! then every stream is finished (FIN).
//!
//! Header blocks are zlib streams primed with SPDY/3's dictionary, one per
//! direction for the connection: incoming ones are inflated with that
//! dictionary; outgoing ones are written as stored (uncompressed) deflate
//! blocks, which any zlib reader accepts. Flow control: received data is
//! acknowledged with WINDOW_UPDATE; sending does not wait on the peer's
//! windows, since Kubernetes' SPDY library never sends WINDOW_UPDATE (see
//! docs/decisions.md).

use axum::http::HeaderMap;
use berth_proto::api_v1::{pod_exec_input, pod_exec_output, PodExecInput, PodExecOutput};
use berth_proto::remotecommand as rc;
use futures::StreamExt;
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The Upgrade token of SPDY/3.1.
pub(super) const UPGRADE: &str = "SPDY/3.1";
/// The header a client lists its stream protocols in, and the server names
/// the chosen one.
pub(super) const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// How long the client has to open every stream the request asked for.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the session waits, once all is sent, for the client to close.
const LINGER: Duration = Duration::from_secs(10);
/// The largest frame read; kubectl's are a few KiB.
const MAX_FRAME: usize = 1 << 20;
/// The most header text one connection may inflate.
const MAX_HEADER_BYTES: usize = 1 << 20;

const CONTROL: u8 = 0x80;
const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: a stream this server does not know what to do with.
const REFUSED_STREAM: u32 = 3;
/// GOAWAY status: the peer broke the protocol.
const PROTOCOL_ERROR: u32 = 1;

/// Whether a request asks to upgrade to SPDY/3.1.
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(UPGRADE))
}

/// The first stream protocol the client lists that berth serves over SPDY
/// (v5 adds nothing over v4 here: SPDY closes a stream with FIN).
pub(super) fn choose_protocol(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|offered| rc::PROTOCOLS.into_iter().find(|p| *p == offered.trim()))
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SpdyError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

fn protocol(message: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(message.into())
}

/// SPDY/3's header compression dictionary: length-prefixed words, then
/// text.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TEXT: &str = "100101201202205206300302303304305306307402405406407408409410411412\
            413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved \
            Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal \
            Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul \
            Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,\
            text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,\
            text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8\
            charset=iso-8859-1,utf-,*,enq=0.";
        let mut out = Vec::with_capacity(1423);
        for word in WORDS {
            out.extend_from_slice(&(word.len() as u32).to_be_bytes());
            out.extend_from_slice(word.as_bytes());
        }
        out.extend_from_slice(TEXT.as_bytes());
        out
    })
}

/// The receiving side of a connection's header compression: one zlib
/// stream over all header blocks, inflated with the dictionary as its
/// history.
struct Inflater {
    /// The zlib header's bytes until it is whole.
    zlib_header: Vec<u8>,
    header_done: bool,
    state: Box<DecompressorOxide>,
    /// The dictionary, then everything inflated so far (back references
    /// reach into both).
    out: Vec<u8>,
    pos: usize,
}

impl Inflater {
    fn new() -> Inflater {
        let out = dictionary().to_vec();
        let pos = out.len();
        Inflater { zlib_header: Vec::new(), header_done: false, state: Box::default(), out, pos }
    }

    /// One header block's text.
    fn block(&mut self, mut input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        while !self.header_done && !input.is_empty() {
            self.zlib_header.push(input[0]);
            input = &input[1..];
            if let [cmf, flg, rest @ ..] = self.zlib_header.as_slice() {
                if cmf & 0x0f != 8 || (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 != 0 {
                    return Err(protocol("a header block is not a zlib stream"));
                }
                // With a preset dictionary, its checksum follows.
                let wanted = if flg & 0x20 != 0 { 4 } else { 0 };
                self.header_done = rest.len() == wanted;
            }
        }
        let start = self.pos;
        let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
            | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        loop {
            if self.out.len() - self.pos < 4096 {
                if self.out.len() > MAX_HEADER_BYTES {
                    return Err(protocol("the connection's headers are too large"));
                }
                self.out.resize(self.out.len() + 16 * 1024, 0);
            }
            let (status, read, written) =
                decompress(&mut self.state, input, &mut self.out, self.pos, flags);
            self.pos += written;
            input = &input[read..];
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done if input.is_empty() => break,
                TINFLStatus::NeedsMoreInput => continue,
                other => {
                    return Err(protocol(format!("a header block does not inflate: {other:?}")))
                }
            }
        }
        Ok(self.out[start..self.pos].to_vec())
    }
}

/// The sending side: stored deflate blocks in one zlib stream, each header
/// block flushed as a sync flush would.
#[derive(Default)]
struct Deflater {
    started: bool,
}

impl Deflater {
    fn block(&mut self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 8);
        if !self.started {
            // Deflate with a 32 KiB window, no preset dictionary.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in text.chunks(u16::MAX as usize) {
            let len = chunk.len() as u16;
            out.push(0); // not final, stored
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block, as a sync flush ends: zlib readers (Go's
        // among them) hand out a stored block's text only once the next
        // block begins.
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        out
    }
}

/// A header block's name/value pairs (names are lower case on the wire).
fn parse_headers(text: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    fn take<'a>(text: &mut &'a [u8], n: usize) -> Result<&'a [u8], SpdyError> {
        if text.len() < n {
            return Err(protocol("a header block is cut short"));
        }
        let (head, rest) = text.split_at(n);
        *text = rest;
        Ok(head)
    }
    fn length(text: &mut &[u8]) -> Result<usize, SpdyError> {
        let b = take(text, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut text = text;
    let count = length(&mut text)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let n = length(&mut text)?;
        let name = String::from_utf8_lossy(take(&mut text, n)?).to_ascii_lowercase();
        let n = length(&mut text)?;
        let value = String::from_utf8_lossy(take(&mut text, n)?).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

/// One frame as this server cares about it.
#[derive(Debug, PartialEq)]
enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS and the rest: read and let be.
    Other,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads the next frame; `None` at a clean end of the connection.
async fn read_frame(
    io: &mut (impl AsyncRead + Unpin),
    inflater: &mut Inflater,
) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match io.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    io.read_exact(&mut head[1..]).await?;
    let flags = head[4];
    let length = (be32(&head[4..8]) & 0x00ff_ffff) as usize;
    if length > MAX_FRAME {
        return Err(protocol(format!("a frame of {length} bytes is too large")));
    }
    let mut body = vec![0u8; length];
    io.read_exact(&mut body).await?;
    let fin = flags & FLAG_FIN != 0;
    if head[0] & CONTROL == 0 {
        let stream = be32(&head[..4]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data { stream, fin, data: body }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(protocol(format!("SPDY version {version} is not served (only 3)")));
    }
    let short = || protocol("a control frame is cut short");
    Ok(Some(match u16::from_be_bytes([head[2], head[3]]) {
        SYN_STREAM => {
            // Stream id, associated stream id, priority and slot, headers.
            let block = body.get(10..).ok_or_else(short)?;
            let headers = parse_headers(&inflater.block(block)?)?;
            Frame::SynStream { stream: be32(&body) & 0x7fff_ffff, fin, headers }
        }
        RST_STREAM => Frame::RstStream { stream: be32(body.get(..4).ok_or_else(short)?) },
        PING => Frame::Ping(be32(body.get(..4).ok_or_else(short)?)),
        GOAWAY => Frame::GoAway,
        // SYN_REPLY and HEADERS still move the shared zlib stream along.
        SYN_REPLY | 8 => {
            inflater.block(body.get(4..).ok_or_else(short)?)?;
            Frame::Other
        }
        _ => Frame::Other,
    }))
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn data(stream: u32, fin: bool, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + bytes.len());
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    let flags = if fin { u32::from(FLAG_FIN) } else { 0 };
    out.extend_from_slice(&((flags << 24) | bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

fn syn_reply(deflater: &mut Deflater, stream: u32) -> Vec<u8> {
    // No headers: a count of zero.
    let mut body = stream.to_be_bytes().to_vec();
    body.extend(deflater.block(&0u32.to_be_bytes()));
    control(SYN_REPLY, 0, &body)
}

fn two_words(kind: u16, a: u32, b: u32) -> Vec<u8> {
    control(kind, 0, &[a.to_be_bytes(), b.to_be_bytes()].concat())
}

/// The channels of a session, as its request asked for them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The client's streams, by the channel each carries.
#[derive(Default)]
struct Streams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl Streams {
    fn complete(&self, wanted: Wanted) -> bool {
        self.error.is_some()
            && (!wanted.stdin || self.stdin.is_some())
            && (!wanted.stdout || self.stdout.is_some())
            // A terminal has one output stream.
            && (!wanted.stderr || wanted.tty || self.stderr.is_some())
            && (!wanted.tty || self.resize.is_some())
    }

    fn slot(&mut self, kind: &str) -> Option<&mut Option<u32>> {
        Some(match kind.to_ascii_lowercase().as_str() {
            "error" => &mut self.error,
            "stdin" => &mut self.stdin,
            "stdout" => &mut self.stdout,
            "stderr" => &mut self.stderr,
            "resize" => &mut self.resize,
            _ => return None,
        })
    }

    fn all(&self) -> impl Iterator<Item = u32> {
        [self.stdout, self.stderr, self.error, self.stdin, self.resize].into_iter().flatten()
    }
}

/// Resizes from the resize stream: JSON objects one after another.
#[derive(Default)]
struct Resizes {
    pending: Vec<u8>,
}

impl Resizes {
    fn feed(&mut self, data: &[u8]) -> Vec<(u32, u32)> {
        self.pending.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut used = 0;
        let mut values =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<serde_json::Value>();
        while let Some(Ok(value)) = values.next() {
            used = values.byte_offset();
            if let Some(size) = rc::parse_resize(value.to_string().as_bytes()) {
                sizes.push(size);
            }
        }
        self.pending.drain(..used);
        if self.pending.len() > 4096 {
            // Not JSON: drop it rather than grow.
            self.pending.clear();
        }
        sizes
    }
}

/// Serves one upgraded connection: waits for the client's streams, starts
/// the session with `start` (exec or attach on the pod's node), and relays
/// until it ends.
pub(super) async fn serve<F, Fut, S>(
    io: impl AsyncRead + AsyncWrite + Send + 'static,
    wanted: Wanted,
    start: F,
) where
    F: FnOnce(tokio_stream::wrappers::ReceiverStream<PodExecInput>) -> Fut,
    Fut: Future<Output = Result<S, String>>,
    S: futures::Stream<Item = Result<PodExecOutput, tonic::Status>> + Unpin,
{
    let (reader, mut writer) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(32);
    let goaway_tx = out_tx.clone();
    // The writer ends when every sender is dropped (the session's end).
    let write = async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    let session = async move {
        let result = session(frames(reader), out_tx, wanted, start).await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "SPDY session ended with an error");
            if matches!(e, SpdyError::Protocol(_)) {
                let _ = goaway_tx.send(two_words(GOAWAY, 0, PROTOCOL_ERROR)).await;
            }
        }
    };
    tokio::join!(write, session);
}

/// The connection's frames. Reading one goes on across polls, so waiting
/// for the next frame can be given up (in a select) without losing bytes.
fn frames(reader: impl AsyncRead + Unpin) -> impl futures::Stream<Item = Result<Frame, SpdyError>> {
    futures::stream::unfold(Some((reader, Inflater::new())), |state| async move {
        let (mut reader, mut inflater) = state?;
        match read_frame(&mut reader, &mut inflater).await {
            Ok(Some(frame)) => Some((Ok(frame), Some((reader, inflater)))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

async fn session<F, Fut, S>(
    frames: impl futures::Stream<Item = Result<Frame, SpdyError>>,
    out: mpsc::Sender<Vec<u8>>,
    wanted: Wanted,
    start: F,
) -> Result<(), SpdyError>
where
    F: FnOnce(tokio_stream::wrappers::ReceiverStream<PodExecInput>) -> Fut,
    Fut: Future<Output = Result<S, String>>,
    S: futures::Stream<Item = Result<PodExecOutput, tonic::Status>> + Unpin,
{
    let send = |bytes: Vec<u8>| {
        let out = out.clone();
        async move { out.send(bytes).await.map_err(|_| protocol("the connection is closed")) }
    };
    let mut frames = std::pin::pin!(frames);
    let mut deflater = Deflater::default();
    let mut streams = Streams::default();
    // Stdin sent before every stream is open waits for the session.
    let mut early: Vec<PodExecInput> = Vec::new();
    let mut resizes = Resizes::default();
    let input_of = |frame: Frame, streams: &Streams, resizes: &mut Resizes| -> Vec<PodExecInput> {
        let wrap = |i| PodExecInput { input: Some(i) };
        let mut inputs = Vec::new();
        match frame {
            Frame::Data { stream, fin, data } if Some(stream) == streams.stdin => {
                if !data.is_empty() {
                    inputs.push(wrap(pod_exec_input::Input::Stdin(data)));
                }
                if fin {
                    inputs.push(wrap(pod_exec_input::Input::CloseStdin(true)));
                }
            }
            Frame::Data { stream, data, .. } if Some(stream) == streams.resize => {
                for (width, height) in resizes.feed(&data) {
                    let size = berth_proto::api_v1::TerminalSize { width, height };
                    inputs.push(wrap(pod_exec_input::Input::Resize(size)));
                }
            }
            Frame::RstStream { stream } if Some(stream) == streams.stdin => {
                inputs.push(wrap(pod_exec_input::Input::CloseStdin(true)));
            }
            _ => {}
        }
        inputs
    };

    // Every frame is answered the same way in both phases: streams get a
    // reply, pings an echo, received data a window update.
    let mut answer = |frame: &Frame, streams: &mut Streams| -> Vec<Vec<u8>> {
        match frame {
            Frame::SynStream { stream, headers, .. } => {
                let kind = headers
                    .iter()
                    .find(|(name, _)| name == "streamtype")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                match streams.slot(kind) {
                    Some(slot) if slot.is_none() => {
                        *slot = Some(*stream);
                        vec![syn_reply(&mut deflater, *stream)]
                    }
                    _ => vec![two_words(RST_STREAM, *stream, REFUSED_STREAM)],
                }
            }
            Frame::Ping(id) => vec![control(PING, 0, &id.to_be_bytes())],
            Frame::Data { stream, data, .. } if !data.is_empty() => {
                let n = data.len() as u32;
                vec![two_words(WINDOW_UPDATE, *stream, n), two_words(WINDOW_UPDATE, 0, n)]
            }
            _ => Vec::new(),
        }
    };

    // Phase one: the client opens its streams.
    let deadline = tokio::time::Instant::now() + STREAMS_TIMEOUT;
    while !streams.complete(wanted) {
        let frame = match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) | Ok(Some(Err(_))) | Err(_) if streams.error.is_some() => {
                // Tell the client why, where it will look.
                let why = "the client did not open every stream the request asked for";
                if let Some(error) = streams.error {
                    send(data(error, true, &rc::failure(why))).await?;
                }
                return Ok(());
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(e),
            Err(_) => return Err(protocol("the client opened no error stream in time")),
        };
        if matches!(frame, Frame::GoAway) {
            return Ok(());
        }
        for bytes in answer(&frame, &mut streams) {
            send(bytes).await?;
        }
        early.extend(input_of(frame, &streams, &mut resizes));
    }
    let error_stream = streams.error.unwrap_or_default();

    let (input_tx, input_rx) = mpsc::channel::<PodExecInput>(16);
    for input in early {
        let _ = input_tx.try_send(input);
    }
    let mut output = match start(tokio_stream::wrappers::ReceiverStream::new(input_rx)).await {
        Ok(output) => Some(output),
        Err(message) => {
            send(data(error_stream, false, &rc::failure(&message))).await?;
            None
        }
    };

    // Phase two: relay until the command ends or the client goes.
    let mut input = Some(input_tx);
    while let Some(stream) = output.as_mut() {
        tokio::select! {
            frame = frames.next() => {
                let frame = match frame.transpose()? {
                    None | Some(Frame::GoAway) => return Ok(()),
                    Some(frame) => frame,
                };
                if let Frame::RstStream { stream } = frame {
                    if Some(stream) != streams.stdin {
                        // The client gave up: dropping the node's stream
                        // ends the command there.
                        return Ok(());
                    }
                }
                for bytes in answer(&frame, &mut streams) {
                    send(bytes).await?;
                }
                for message in input_of(frame, &streams, &mut resizes) {
                    let closes = matches!(message.input, Some(pod_exec_input::Input::CloseStdin(_)));
                    if let Some(tx) = &input {
                        if tx.send(message).await.is_err() {
                            input = None;
                        }
                    }
                    if closes {
                        input = None;
                    }
                }
            }
            message = stream.next() => {
                let bytes = match message.transpose() {
                    Ok(Some(PodExecOutput { output: Some(o) })) => match o {
                        pod_exec_output::Output::Stdout(bytes) => {
                            streams.stdout.map(|s| data(s, false, &bytes))
                        }
                        pod_exec_output::Output::Stderr(bytes) => {
                            streams.stderr.or(streams.stdout).map(|s| data(s, false, &bytes))
                        }
                        pod_exec_output::Output::ExitCode(code) => {
                            output = None;
                            Some(data(error_stream, false, &rc::exit_status(code)))
                        }
                    },
                    Ok(Some(_)) => None,
                    Ok(None) => {
                        output = None;
                        Some(data(error_stream, false, &rc::failure("the node ended the session without an exit status")))
                    }
                    Err(status) => {
                        output = None;
                        Some(data(error_stream, false, &rc::failure(status.message())))
                    }
                };
                if let Some(bytes) = bytes {
                    send(bytes).await?;
                }
            }
        }
    }
    drop(input);

    // The end: every stream finished.
    for stream in streams.all() {
        send(data(stream, true, &[])).await?;
    }
    // Until the client closes, or for a while.
    let linger = async {
        while let Some(Ok(frame)) = frames.next().await {
            if matches!(frame, Frame::GoAway) {
                break;
            }
            if let Frame::Ping(id) = frame {
                let _ = send(control(PING, 0, &id.to_be_bytes())).await;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::api_v1::pod_exec_output::Output;
    use std::collections::HashMap;

    #[test]
    fn the_dictionary_is_spdy_3s() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert_eq!(miniz_oxide::mz_adler32_oxide(1, dict), 0xe3c6_a7c2);
    }

    fn header_block(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_be_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_be_bytes());
            out.extend(k.as_bytes());
            out.extend((v.len() as u32).to_be_bytes());
            out.extend(v.as_bytes());
        }
        out
    }

    #[test]
    fn header_blocks_inflate_with_the_dictionary_across_frames() {
        // Two blocks of one zlib stream, compressed with SPDY/3's
        // dictionary and a sync flush each, as Go's SPDY framer writes them.
        const FIRST: &[u8] = &[
            120, 249, 227, 198, 167, 194, 2, 229, 14, 112, 58, 43, 41, 74, 77, 204, 133, 22, 37,
            172, 169, 160, 128, 198, 82, 198, 112, 33, 28, 7, 0, 0, 0, 255, 255,
        ];
        const SECOND: &[u8] =
            &[194, 170, 17, 152, 212, 83, 242, 193, 37, 56, 30, 157, 0, 0, 0, 0, 255, 255];
        let mut inflater = Inflater::new();
        let first = parse_headers(&inflater.block(FIRST).unwrap()).unwrap();
        assert_eq!(
            first,
            [("streamtype".into(), "error".into()), ("content-type".into(), "text/plain".into())]
        );
        let second = parse_headers(&inflater.block(SECOND).unwrap()).unwrap();
        assert_eq!(second[0], ("streamtype".into(), "stdout".into()));
        // What this server writes reads back the same way.
        let mut deflater = Deflater::default();
        let mut inflater = Inflater::new();
        for pairs in [&[("a", "1")][..], &[("streamtype", "resize"), ("b", "")][..]] {
            let block = deflater.block(&header_block(pairs));
            let read = parse_headers(&inflater.block(&block).unwrap()).unwrap();
            let read: Vec<(&str, &str)> =
                read.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(read, pairs);
        }
        assert!(Inflater::new().block(b"not zlib").is_err());
    }

    fn syn_stream(deflater: &mut Deflater, stream: u32, kind: &str) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend([0, 0, 0, 0, 0, 0]);
        body.extend(deflater.block(&header_block(&[("streamtype", kind)])));
        control(SYN_STREAM, 0, &body)
    }

    /// A node that echoes stdin to stdout and exits 3 when stdin ends.
    fn echo_node(
        input: tokio_stream::wrappers::ReceiverStream<PodExecInput>,
    ) -> impl futures::Stream<Item = Result<PodExecOutput, tonic::Status>> + Unpin {
        let out = |o| Ok(PodExecOutput { output: Some(o) });
        Box::pin(futures::stream::unfold(Some(input), move |input| async move {
            let mut input = input?;
            loop {
                match input.next().await.and_then(|i| i.input) {
                    Some(pod_exec_input::Input::Stdin(data)) => {
                        return Some((out(Output::Stdout(data)), Some(input)))
                    }
                    Some(pod_exec_input::Input::Resize(size)) => {
                        let text = format!("{}x{}", size.width, size.height).into_bytes();
                        return Some((out(Output::Stderr(text)), Some(input)));
                    }
                    Some(pod_exec_input::Input::CloseStdin(_)) | None => {
                        return Some((out(Output::ExitCode(3)), None))
                    }
                    Some(_) => {}
                }
            }
        }))
    }

    #[tokio::test]
    async fn a_session_relays_its_streams_and_ends_with_the_exit_status() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let wanted = Wanted { stdin: true, stdout: true, stderr: true, tty: true };
        let session = tokio::spawn(serve(server, wanted, |input| async { Ok(echo_node(input)) }));
        let (mut rx, mut tx) = tokio::io::split(client);
        let mut deflater = Deflater::default();
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
            tx.write_all(&syn_stream(&mut deflater, id, kind)).await.unwrap();
        }
        tx.write_all(&control(PING, 0, &9u32.to_be_bytes())).await.unwrap();
        tx.write_all(&data(3, false, b"hello")).await.unwrap();
        tx.write_all(&data(7, false, b"{\"Width\":80,\"Height\":24}\n")).await.unwrap();
        tx.write_all(&data(3, true, b"")).await.unwrap();

        // Read raw frames: replies, the ping, window updates, data.
        let mut replies = Vec::new();
        let mut pinged = false;
        let mut received: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut finished = Vec::new();
        while finished.len() < 4 {
            let mut head = [0u8; 8];
            rx.read_exact(&mut head).await.unwrap();
            let mut body = vec![0u8; (be32(&head[4..]) & 0x00ff_ffff) as usize];
            rx.read_exact(&mut body).await.unwrap();
            if head[0] & CONTROL == 0 {
                let stream = be32(&head);
                received.entry(stream).or_default().extend(&body);
                if head[4] & FLAG_FIN != 0 {
                    finished.push(stream);
                }
                continue;
            }
            match u16::from_be_bytes([head[2], head[3]]) {
                SYN_REPLY => replies.push(be32(&body)),
                PING => pinged = be32(&body) == 9,
                WINDOW_UPDATE | RST_STREAM => {}
                other => panic!("frame type {other}"),
            }
        }
        assert_eq!(replies, [1, 3, 5, 7]);
        assert!(pinged);
        finished.sort();
        assert_eq!(finished, [1, 3, 5, 7]);
        // The resize reached the node; a terminal has one output stream, so
        // what the node wrote to stderr comes on stdout.
        assert_eq!(received[&5], b"hello80x24");
        assert!(received[&7].is_empty());
        assert_eq!(rc::parse_status(&received[&1]), Ok(3));
        drop((rx, tx));
        session.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_opens_a_stream_twice_is_refused_it() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let wanted = Wanted { stdin: false, stdout: true, stderr: false, tty: false };
        let node = |_input| async {
            let outputs = [Output::Stdout(b"hi".to_vec()), Output::ExitCode(0)];
            let outputs = outputs.map(|o| Ok(PodExecOutput { output: Some(o) }));
            Ok(futures::stream::iter(outputs))
        };
        let session = tokio::spawn(serve(server, wanted, node));
        let (mut rx, mut tx) = tokio::io::split(client);
        let mut deflater = Deflater::default();
        for (id, kind) in [(1, "error"), (3, "error"), (5, "stdout")] {
            tx.write_all(&syn_stream(&mut deflater, id, kind)).await.unwrap();
        }
        let mut inflater = Inflater::new();
        let mut refused = false;
        let mut status = Vec::new();
        loop {
            let mut head = [0u8; 8];
            if rx.read_exact(&mut head).await.is_err() {
                break;
            }
            let mut body = vec![0u8; (be32(&head[4..]) & 0x00ff_ffff) as usize];
            rx.read_exact(&mut body).await.unwrap();
            let control_frame = head[0] & CONTROL != 0;
            if control_frame && u16::from_be_bytes([head[2], head[3]]) == RST_STREAM {
                refused = be32(&body) == 3;
            } else if control_frame && u16::from_be_bytes([head[2], head[3]]) == SYN_REPLY {
                inflater.block(&body[4..]).unwrap();
            } else if !control_frame && be32(&head) == 1 {
                status.extend(body);
                if head[4] & FLAG_FIN != 0 {
                    break;
                }
            }
        }
        assert!(refused);
        assert_eq!(rc::parse_status(&status), Ok(0));
        drop((rx, tx));
        session.await.unwrap();
    }
}

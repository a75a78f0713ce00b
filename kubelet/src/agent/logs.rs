//! Container logs as the runtime writes them (the CRI log format, one
//! record a line: `<RFC 3339 time> <stdout|stderr> <F|P> <content>`, P for
//! a piece of a longer line, F for its end), read back with the options of
//! Kubernetes' PodLogOptions: tail, since, timestamps, a byte limit, and
//! follow while the container runs.

use crate::executor::{parse_record as parse, LogRecord as Record};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};

/// How often a followed log is looked at for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// What to read, as in PodLogOptions.
#[derive(Clone, Debug, Default)]
pub(super) struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub timestamps: bool,
    pub limit_bytes: Option<i64>,
}

/// Renders records to what a client sees, keeping to the options' since
/// and byte limit; `sent` counts bytes across calls.
struct Renderer {
    since: Option<DateTime<FixedOffset>>,
    timestamps: bool,
    limit: Option<u64>,
    sent: u64,
}

impl Renderer {
    fn new(options: &LogOptions) -> Renderer {
        let since = options
            .since_seconds
            .filter(|s| *s > 0)
            .map(|s| (chrono::Utc::now() - chrono::Duration::seconds(s)).fixed_offset());
        Renderer {
            since,
            timestamps: options.timestamps,
            limit: options.limit_bytes.filter(|l| *l > 0).map(|l| l as u64),
            sent: 0,
        }
    }

    fn done(&self) -> bool {
        self.limit.is_some_and(|l| self.sent >= l)
    }

    /// Appends one record's output to `out`.
    fn render(&mut self, record: &Record, out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        if let Some(since) = self.since {
            match DateTime::parse_from_rfc3339(record.time) {
                Ok(t) if t < since => return,
                _ => {}
            }
        }
        let start = out.len();
        if self.timestamps {
            out.extend_from_slice(record.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(record.content);
        if record.full {
            out.push(b'\n');
        }
        let mut written = (out.len() - start) as u64;
        if let Some(limit) = self.limit {
            let room = limit - self.sent;
            if written > room {
                out.truncate(start + room as usize);
                written = room;
            }
        }
        self.sent += written;
    }
}

/// The offset in `text` where the last `n` lines begin.
fn tail_start(text: &[u8], n: i64) -> usize {
    if n < 0 {
        return 0;
    }
    let mut lines = 0;
    let mut start = text.len();
    let mut end = text.len();
    // Walk back record by record; a line is its P records and its F.
    while end > 0 {
        let begin =
            text[..end.saturating_sub(1)].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if parse(&text[begin..end.saturating_sub(1)]).is_some_and(|r| r.full) {
            if lines == n {
                break;
            }
            lines += 1;
        }
        start = begin;
        end = begin;
    }
    start
}

/// Renders every complete record of `text` (up to its last newline) and
/// returns how many bytes of `text` were consumed.
fn render_all(text: &[u8], renderer: &mut Renderer, out: &mut Vec<u8>) -> usize {
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for line in text[..complete].split(|b| *b == b'\n') {
        if let Some(record) = parse(line) {
            renderer.render(&record, out);
        }
    }
    complete
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LogError {
    #[error("cannot read the log {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>, LogError> {
    let err = |source| LogError::Read { path: path.display().to_string(), source };
    let mut file = std::fs::File::open(path).map_err(err)?;
    file.seek(SeekFrom::Start(offset)).map_err(err)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(err)?;
    Ok(text)
}

/// Sends the log at `path` to `send` in chunks; with follow, goes on while
/// `running` says the container runs, and ends once it has stopped and
/// the log is read to its end. Stops when `send` says the reader is gone.
pub(super) async fn stream<S, R>(
    path: &Path,
    options: &LogOptions,
    mut send: impl FnMut(Vec<u8>) -> S,
    mut running: impl FnMut() -> R,
) -> Result<(), LogError>
where
    S: std::future::Future<Output = bool>,
    R: std::future::Future<Output = bool>,
{
    let mut renderer = Renderer::new(options);
    let text = match read_from(path, 0) {
        Ok(text) => text,
        // A container that has not written yet may have no file.
        Err(LogError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let start = options.tail_lines.map_or(0, |n| tail_start(&text, n));
    let mut out = Vec::new();
    let mut offset = (start + render_all(&text[start..], &mut renderer, &mut out)) as u64;
    if !out.is_empty() && !send(out).await {
        return Ok(());
    }
    if !options.follow {
        return Ok(());
    }
    loop {
        if renderer.done() {
            return Ok(());
        }
        // Looked at before reading, so nothing written before the
        // container stopped is missed.
        let still_running = running().await;
        let text = match read_from(path, offset) {
            Ok(text) => text,
            Err(LogError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        offset += render_all(&text, &mut renderer, &mut out) as u64;
        if !out.is_empty() && !send(out).await {
            return Ok(());
        }
        if !still_running {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-01-01T00:00:00.000000001Z stdout F one\n\
2026-01-01T00:00:01Z stderr P tw\n\
2026-01-01T00:00:01Z stderr F o\n\
2026-01-01T00:00:02Z stdout F three\n\
2026-01-01T00:00:03Z stdout P part";

    fn render(text: &[u8], options: &LogOptions) -> String {
        let mut out = Vec::new();
        let start = options.tail_lines.map_or(0, |n| tail_start(text, n));
        render_all(&text[start..], &mut Renderer::new(options), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn records_become_lines_and_an_unfinished_record_waits() {
        assert_eq!(render(LOG, &LogOptions::default()), "one\ntwo\nthree\n");
    }

    #[test]
    fn tail_counts_whole_lines_from_the_end() {
        let tail = |n| render(LOG, &LogOptions { tail_lines: Some(n), ..Default::default() });
        assert_eq!(tail(1), "three\n");
        assert_eq!(tail(2), "two\nthree\n");
        assert_eq!(tail(10), "one\ntwo\nthree\n");
        assert_eq!(tail(0), "");
    }

    #[test]
    fn timestamps_and_limit_bytes() {
        let options = LogOptions { timestamps: true, limit_bytes: Some(40), ..Default::default() };
        assert_eq!(render(LOG, &options), "2026-01-01T00:00:00.000000001Z one\n2026-");
    }

    #[test]
    fn since_drops_older_records() {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let text = format!("2020-01-01T00:00:00Z stdout F old\n{now} stdout F new\n");
        let options = LogOptions { since_seconds: Some(60), ..Default::default() };
        assert_eq!(render(text.as_bytes(), &options), "new\n");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"t stdin F x"), None);
        assert_eq!(render(b"x y\n2026-01-01T00:00:00Z stdout F ok\n", &Default::default()), "ok\n");
    }
}

//! The audit log: one JSON line per API request (gRPC and REST alike),
//! saying who did what to which object, with what result and how long it
//! took. Requests hand their line to a bounded channel; one writer thread
//! owns the file, so a slow disk delays the log, never a request: when the
//! channel is full the line is dropped and counted in
//! `berth_apiserver_audit_events_dropped_total`.
//!
//! The file rotates as Kubernetes' does (`--audit-log-maxsize` MB,
//! `--audit-log-maxbackup` files): the full file is renamed to `path.1`,
//! older backups move up one (`path.1` to `path.2` ...), the oldest beyond
//! the count is removed, and a new file is started.
//!
//! Each request notes what it is about in a task-local [`Note`] as it
//! passes the filters, and the one place every request passes
//! (`Api::measured`) turns the note into the line once it is answered.

use super::limits::UserSlot;
use super::RequestInfo;
use crate::error::ApiError;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines waiting for the writer; more are dropped (and counted).
const QUEUE: usize = 4096;

/// Where and how the audit log is written.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// `--audit-log-path`.
    pub path: PathBuf,
    /// `--audit-log-maxsize`: the size in MB at which the file rotates; 0
    /// never rotates.
    pub max_size_mb: u64,
    /// `--audit-log-maxbackup`: rotated files kept; 0 keeps none.
    pub max_backups: usize,
}

/// One audit line.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// When the request was answered (RFC 3339, microseconds).
    pub time: String,
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The HTTP status code of the answer (200 for success).
    pub code: i32,
    pub latency_seconds: f64,
}

/// What one request noted about itself as it passed the filters; set for
/// the request's task by `Api::measured`.
#[derive(Default)]
pub(crate) struct Note {
    info: Mutex<Option<RequestInfo>>,
    /// Its place in its user's in-flight count, given back with the note.
    slot: Mutex<Option<UserSlot>>,
}

tokio::task_local! {
    static NOTE: Arc<Note>;
}

impl Note {
    /// Runs `call` with a fresh note, and returns the note with its result.
    pub(crate) async fn scope<T>(call: impl std::future::Future<Output = T>) -> (Arc<Note>, T) {
        let note = Arc::new(Note::default());
        let result = NOTE.scope(note.clone(), call).await;
        (note, result)
    }

    /// Notes what the current request is about (and, once authenticated,
    /// who asks); nothing outside a scope.
    pub(crate) fn about(info: &RequestInfo) {
        let _ = NOTE.try_with(|note| {
            *note.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.clone());
        });
    }

    /// Holds `slot` until the current request is answered; outside a
    /// scope it is given back at once.
    pub(crate) fn hold(slot: Option<UserSlot>) {
        let _ = NOTE.try_with(move |note| {
            *note.slot.lock().unwrap_or_else(|e| e.into_inner()) = slot;
        });
    }

    /// Gives back what the request held (its user slot).
    pub(crate) fn release(&self) {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The audit line of the request this note is about, answered with
    /// `result` after `latency`; `verb` and `resource` for a request that
    /// never got as far as the filters.
    pub(crate) fn event<T>(
        &self,
        verb: &str,
        resource: &str,
        result: &Result<T, ApiError>,
        latency: Duration,
    ) -> AuditEvent {
        let info = self.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let code = match result {
            Ok(_) => 200,
            Err(e) => e.http_code(),
        };
        let time = berth_proto::MicroTime::now().to_string();
        let latency_seconds = latency.as_secs_f64();
        match info {
            Some(info) => AuditEvent {
                time,
                user: info.user.name,
                groups: info.user.groups,
                verb: info.verb.into(),
                api_group: info.api_group.into(),
                resource: info.resource.into(),
                subresource: info.subresource.into(),
                namespace: info.namespace,
                name: info.name,
                code,
                latency_seconds,
            },
            None => AuditEvent {
                time,
                user: String::new(),
                groups: Vec::new(),
                verb: verb.into(),
                api_group: String::new(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: String::new(),
                name: String::new(),
                code,
                latency_seconds,
            },
        }
    }
}

/// What every request passes besides the filters: the audit log and the
/// per-user in-flight limit. The default: neither.
#[derive(Clone, Default)]
pub struct Oversight {
    audit: Option<AuditLog>,
    per_user: Option<Arc<super::limits::PerUser>>,
}

impl Oversight {
    /// Lines to `audit`; at most `max_per_user` requests of one user in
    /// flight (0: no limit).
    pub fn new(audit: Option<AuditLog>, max_per_user: usize) -> Oversight {
        let per_user = (max_per_user > 0).then(|| super::limits::PerUser::new(max_per_user));
        Oversight { audit, per_user }
    }

    /// Runs one request (`verb` on `resource`, for a request refused
    /// before the filters saw it) and writes its audit line.
    pub(crate) async fn run<T>(
        &self,
        verb: &str,
        resource: &str,
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let started = std::time::Instant::now();
        let (note, result) = Note::scope(call).await;
        note.release();
        if let Some(audit) = &self.audit {
            audit.record(note.event(verb, resource, &result, started.elapsed()));
        }
        result
    }

    /// Notes what the request is about; once `info.user` is known, takes
    /// the user's place in flight (TooManyRequests when they have too
    /// many), held until the request is answered.
    pub(crate) fn admit(&self, info: &RequestInfo) -> Result<(), ApiError> {
        Note::about(info);
        if let (Some(limit), false) = (&self.per_user, info.user.name.is_empty()) {
            Note::hold(limit.acquire(&info.user)?);
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {path}: {error}")]
    Open { path: String, error: std::io::Error },
    #[error("cannot start the audit log writer: {0}")]
    Spawn(std::io::Error),
}

/// Hands audit lines to the writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    lines: SyncSender<AuditEvent>,
}

impl AuditLog {
    /// Starts the writer of `config.path`; it stops, having written every
    /// line handed to it, when the returned [`AuditWriter`] is dropped.
    pub fn start(config: AuditConfig) -> Result<(AuditLog, AuditWriter), AuditError> {
        let file = RotatingFile::open(config)?;
        let (lines, receiver) = std::sync::mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn({
                let stop = stop.clone();
                move || write_lines(file, receiver, stop)
            })
            .map_err(AuditError::Spawn)?;
        Ok((AuditLog { lines }, AuditWriter { stop, thread: Some(thread) }))
    }

    /// Queues `event`; when the writer is behind, drops and counts it.
    pub fn record(&self, event: AuditEvent) {
        match self.lines.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("berth_apiserver_audit_events_dropped_total").increment(1);
            }
        }
    }
}

/// Owns the writer thread: dropping it writes what is queued and stops it.
pub struct AuditWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the writer looks whether it should stop while idle.
const IDLE_CHECK: Duration = Duration::from_millis(100);

fn write_lines(mut file: RotatingFile, lines: Receiver<AuditEvent>, stop: Arc<AtomicBool>) {
    loop {
        match lines.recv_timeout(IDLE_CHECK) {
            Ok(event) => {
                file.write(&event);
                // Write what else is queued before flushing once.
                while let Ok(event) = lines.try_recv() {
                    file.write(&event);
                }
                file.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if stop.load(Ordering::Relaxed) {
            while let Ok(event) = lines.try_recv() {
                file.write(&event);
            }
            break;
        }
    }
    file.flush();
}

/// The audit file, renamed to `path.1` ... once it reaches its size.
struct RotatingFile {
    config: AuditConfig,
    out: std::io::BufWriter<std::fs::File>,
    size: u64,
}

fn open_append(path: &Path) -> Result<std::fs::File, AuditError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|error| AuditError::Open { path: path.display().to_string(), error })
}

impl RotatingFile {
    fn open(config: AuditConfig) -> Result<RotatingFile, AuditError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| AuditError::Open {
                path: config.path.display().to_string(),
                error,
            })?;
        }
        let file = open_append(&config.path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile { out: std::io::BufWriter::new(file), size, config })
    }

    fn limit(&self) -> u64 {
        self.config.max_size_mb.saturating_mul(1024 * 1024)
    }

    fn write(&mut self, event: &AuditEvent) {
        let mut line = match serde_json::to_vec(event) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an audit event");
                return;
            }
        };
        line.push(b'\n');
        let limit = self.limit();
        if limit > 0 && self.size > 0 && self.size + line.len() as u64 > limit {
            self.rotate();
        }
        match self.out.write_all(&line) {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => {
                metrics::counter!("berth_apiserver_audit_events_dropped_total").increment(1);
                tracing::warn!(error = %e, path = %self.config.path.display(), "cannot write the audit log");
            }
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::warn!(error = %e, path = %self.config.path.display(), "cannot write the audit log");
        }
    }

    fn backup(&self, n: usize) -> PathBuf {
        let mut name = self.config.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// path -> path.1 -> path.2 ...; the oldest beyond the backups kept
    /// is removed. A failure keeps writing to the current file.
    fn rotate(&mut self) {
        self.flush();
        let kept = self.config.max_backups;
        let result = (|| -> std::io::Result<()> {
            if kept == 0 {
                std::fs::remove_file(&self.config.path)?;
                return Ok(());
            }
            let oldest = self.backup(kept);
            if oldest.exists() {
                std::fs::remove_file(&oldest)?;
            }
            for n in (1..kept).rev() {
                let from = self.backup(n);
                if from.exists() {
                    std::fs::rename(&from, self.backup(n + 1))?;
                }
            }
            std::fs::rename(&self.config.path, self.backup(1))
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %self.config.path.display(), "cannot rotate the audit log");
            return;
        }
        match open_append(&self.config.path) {
            Ok(file) => {
                self.out = std::io::BufWriter::new(file);
                self.size = 0;
            }
            Err(e) => tracing::warn!(error = %e, "cannot reopen the audit log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> AuditEvent {
        AuditEvent {
            time: berth_proto::MicroTime::now().to_string(),
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
            verb: "get".into(),
            api_group: String::new(),
            resource: "pods".into(),
            subresource: String::new(),
            namespace: "default".into(),
            name: name.into(),
            code: 200,
            latency_seconds: 0.001,
        }
    }

    fn read(path: &Path) -> Vec<AuditEvent> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn every_line_is_written_before_the_writer_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.log");
        let config = AuditConfig { path: path.clone(), max_size_mb: 0, max_backups: 0 };
        let (log, writer) = AuditLog::start(config).unwrap();
        for i in 0..100 {
            log.record(event(&format!("p{i}")));
        }
        drop(writer);
        let events = read(&path);
        assert_eq!(events.len(), 100);
        assert_eq!(events[0], AuditEvent { time: events[0].time.clone(), ..event("p0") });
        let line = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        for field in ["time", "user", "groups", "verb", "apiGroup", "resource", "subresource"] {
            assert!(first.get(field).is_some(), "{field} in {first}");
        }
        for field in ["namespace", "name", "code", "latencySeconds"] {
            assert!(first.get(field).is_some(), "{field} in {first}");
        }
    }

    #[test]
    fn the_file_rotates_to_numbered_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let config = AuditConfig { path: path.clone(), max_size_mb: 1, max_backups: 2 };
        let mut file = RotatingFile::open(config).unwrap();
        let line_len = serde_json::to_vec(&event("p00000")).unwrap().len() as u64 + 1;
        let per_file = (1024 * 1024) / line_len;
        let total = per_file * 3 + 5;
        for i in 0..total {
            file.write(&event(&format!("p{i:05}")));
        }
        file.flush();
        let current = read(&path);
        let first = read(&dir.path().join("audit.log.1"));
        let second = read(&dir.path().join("audit.log.2"));
        assert!(!dir.path().join("audit.log.3").exists());
        assert_eq!(current.len() as u64, 5);
        assert_eq!(first.len() as u64, per_file);
        assert_eq!(second.len() as u64, per_file);
        // Newest in the file, then .1, then .2; the oldest file was removed.
        assert_eq!(current[0].name, format!("p{:05}", per_file * 3));
        assert_eq!(first[0].name, format!("p{:05}", per_file * 2));
        assert_eq!(second[0].name, format!("p{:05}", per_file));
        for file in [&path, &dir.path().join("audit.log.1")] {
            assert!(std::fs::metadata(file).unwrap().len() <= 1024 * 1024);
        }
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (lines, receiver) = std::sync::mpsc::sync_channel(1);
        let log = AuditLog { lines };
        log.record(event("a"));
        // Nobody reads: the second line is dropped, not waited on.
        log.record(event("b"));
        assert_eq!(receiver.try_recv().unwrap().name, "a");
        assert!(receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_note_becomes_the_requests_line() {
        let (note, ()) = Note::scope(async {
            let mut info = super::super::request_info("get", "web");
            info.user = super::super::UserInfo { name: "bob".into(), groups: vec!["g".into()] };
            Note::about(&info);
        })
        .await;
        let err: Result<(), ApiError> = Err(ApiError::Forbidden("no".into()));
        let line = note.event("get", "pods", &err, Duration::from_millis(5));
        assert_eq!((line.user.as_str(), line.name.as_str(), line.code), ("bob", "web", 403));
        assert_eq!((line.verb.as_str(), line.resource.as_str()), ("get", "pods"));
        // Outside a scope, noting is harmless.
        Note::about(&super::super::request_info("get", "x"));
        let (bare, ()) = Note::scope(async {}).await;
        let line = bare.event("list", "nodes", &Ok::<(), ApiError>(()), Duration::ZERO);
        assert_eq!((line.verb.as_str(), line.resource.as_str(), line.code), ("list", "nodes", 200));
    }
}

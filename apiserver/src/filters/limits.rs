//! Limits against hostile input and greedy clients: the size of a REST
//! request body (also once decompressed), and the requests one user may
//! have in flight at once so that one client cannot starve the others.
//! JSON nesting is bounded by serde_json's recursion limit and YAML's by
//! serde_yaml_ng's; both are refused as BadRequest where bodies are decoded.

use super::UserInfo;
use crate::error::ApiError;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The largest REST request body, as Kubernetes allows (3 MiB); a gzip
/// body may not inflate beyond it either.
pub const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;

/// `berth server`'s token authentication, audit log and per-user limit.
/// The default: none of them (everyone anonymous, nothing audited, no
/// per-user limit).
#[derive(Clone, Debug, Default)]
pub struct Guards {
    /// `--token-auth-file`: static bearer tokens (Kubernetes' CSV).
    pub token_auth_file: Option<PathBuf>,
    /// `--service-account-key-file`: the PEM private key service-account
    /// tokens are signed and verified with.
    pub service_account_key_file: Option<PathBuf>,
    /// `--max-requests-in-flight-per-user`: 0 for no limit.
    pub max_requests_in_flight_per_user: usize,
    /// `--audit-log-path`, `--audit-log-maxsize`, `--audit-log-maxbackup`.
    pub audit: Option<super::AuditConfig>,
}

/// Why the guards cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum GuardsError {
    #[error(transparent)]
    TokenFile(#[from] super::TokenFileError),
    #[error(transparent)]
    ServiceAccountKey(#[from] super::ServiceAccountKeyError),
    #[error(transparent)]
    Audit(#[from] super::AuditError),
}

impl Guards {
    /// The token authenticators these settings name, read from their files.
    pub fn token_authenticators(&self) -> Result<Vec<Box<dyn super::Authenticator>>, GuardsError> {
        let mut chain: Vec<Box<dyn super::Authenticator>> = Vec::new();
        if let Some(path) = &self.token_auth_file {
            chain.push(Box::new(super::TokenFile::load(path)?));
        }
        if let Some(path) = &self.service_account_key_file {
            let key = super::ServiceAccountKey::load(path)?;
            chain.push(Box::new(super::ServiceAccounts::new(key)));
        }
        Ok(chain)
    }

    /// The audit log and per-user limit these settings name, and the
    /// audit writer, which the caller keeps until the server stops.
    pub fn oversight(&self) -> Result<(super::Oversight, Option<super::AuditWriter>), GuardsError> {
        let (audit, writer) = match &self.audit {
            Some(config) => {
                let (log, writer) = super::AuditLog::start(config.clone())?;
                (Some(log), Some(writer))
            }
            None => (None, None),
        };
        Ok((super::Oversight::new(audit, self.max_requests_in_flight_per_user), writer))
    }
}

/// Requests in flight per user; more than `max` for one user are refused
/// with TooManyRequests, for that user only.
pub(crate) struct PerUser {
    max: usize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One request's place in its user's count, given back when dropped.
pub(crate) struct UserSlot {
    owner: Arc<PerUser>,
    user: String,
}

impl PerUser {
    /// A limit of `max` requests per user; 0 for none.
    pub(crate) fn new(max: usize) -> Arc<PerUser> {
        Arc::new(PerUser { max, counts: Mutex::default() })
    }

    /// A slot for one more request of `user`, None when there is no limit.
    pub(crate) fn acquire(self: &Arc<Self>, user: &UserInfo) -> Result<Option<UserSlot>, ApiError> {
        if self.max == 0 {
            return Ok(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(user.name.clone()).or_default();
        if *count >= self.max {
            metrics::counter!("berth_apiserver_per_user_rejections_total").increment(1);
            return Err(ApiError::TooManyRequests(format!(
                "more than {} requests of user {:?} in flight on this peer; retry shortly",
                self.max, user.name
            )));
        }
        *count += 1;
        Ok(Some(UserSlot { owner: self.clone(), user: user.name.clone() }))
    }

    #[cfg(test)]
    fn in_flight(&self, user: &str) -> usize {
        self.counts.lock().unwrap().get(user).copied().unwrap_or(0)
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

/// A REST body as the handlers read it: at most [`MAX_REQUEST_BODY`]
/// bytes, gzip (Content-Encoding: gzip) inflated up to the same size; any
/// other content encoding is refused.
pub(crate) fn decode_body(
    encoding: Option<&str>,
    body: axum::body::Bytes,
) -> Result<axum::body::Bytes, ApiError> {
    if body.len() > MAX_REQUEST_BODY {
        return Err(too_large(body.len()));
    }
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") | Some("x-gzip") => {
            use std::io::Read;
            let mut inflated = Vec::new();
            let mut reader =
                flate2::read::GzDecoder::new(&body[..]).take(MAX_REQUEST_BODY as u64 + 1);
            reader.read_to_end(&mut inflated).map_err(|e| {
                ApiError::BadRequest(format!("the gzip body does not inflate: {e}"))
            })?;
            if inflated.len() > MAX_REQUEST_BODY {
                return Err(ApiError::TooLarge(format!(
                    "the gzip body inflates to more than the limit of {MAX_REQUEST_BODY} bytes"
                )));
            }
            Ok(inflated.into())
        }
        Some(other) => Err(ApiError::UnsupportedMediaType(format!("Content-Encoding: {other}"))),
    }
}

/// How deep a YAML body's flow collections (`[...]`, `{...}`) may nest:
/// serde_yaml_ng's recursion limit, checked before the parser, whose time
/// grows with the square of the nesting.
pub const MAX_YAML_FLOW_DEPTH: usize = 128;

/// Refuses, before it is parsed, a YAML body that would cost the parser
/// far more than its size: flow collections nested deeper than
/// [`MAX_YAML_FLOW_DEPTH`], and aliases (`*name`), which can expand a few
/// KiB into billions of nodes. Quoted scalars, comments and block scalars
/// (`|`, `>`) are skipped, so a `*` or a bracket in text is no alias and
/// no nesting.
pub(crate) fn check_yaml(body: &[u8]) -> Result<(), ApiError> {
    let text = String::from_utf8_lossy(body);
    let mut depth = 0usize;
    // The indentation of the line that opened a block scalar, while its
    // more indented lines follow.
    let mut block_scalar: Option<usize> = None;
    let mut quote: Option<char> = None;
    for (number, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_scalar {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let previous = if i == 0 { None } else { Some(chars[i - 1]) };
            let at_node = || {
                let before: String = chars[..i].iter().collect();
                let before = before.trim_end();
                let spaced = matches!(previous, Some(' ' | '\t'));
                before.is_empty()
                    || before.ends_with(['[', '{', ','])
                    // In a flow collection a value may follow its colon
                    // directly, as in JSON.
                    || (before.ends_with(':') && (spaced || depth > 0))
                    || (spaced && (before.ends_with('-') || before.ends_with('?')))
            };
            match quote {
                Some('"') => match c {
                    '\\' => i += 1,
                    '"' => quote = None,
                    _ => {}
                },
                Some(_) => {
                    if c == '\'' {
                        if chars.get(i + 1) == Some(&'\'') {
                            i += 1;
                        } else {
                            quote = None;
                        }
                    }
                }
                None => match c {
                    '#' if previous.is_none_or(|p| p == ' ' || p == '\t') => break,
                    '"' | '\'' if at_node() => quote = Some(c),
                    // A flow collection starts where a node does, or inside another.
                    '[' | '{' if depth > 0 || at_node() => {
                        depth += 1;
                        if depth > MAX_YAML_FLOW_DEPTH {
                            return Err(ApiError::BadRequest(format!(
                                "the YAML body nests deeper than {MAX_YAML_FLOW_DEPTH} levels \
                                 (line {})",
                                number + 1
                            )));
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    '*' if at_node() && chars.get(i + 1).is_some_and(|n| !n.is_whitespace()) => {
                        return Err(ApiError::BadRequest(format!(
                            "the YAML body uses an alias (line {}); aliases are not accepted \
                             in request bodies",
                            number + 1
                        )));
                    }
                    '|' | '>' if at_node() && depth == 0 => {
                        let rest: String = chars[i + 1..].iter().collect();
                        let indicator = rest.split('#').next().unwrap_or("").trim();
                        if indicator.chars().all(|c| matches!(c, '+' | '-' | '1'..='9')) {
                            block_scalar = Some(indent);
                            break;
                        }
                    }
                    _ => {}
                },
            }
            i += 1;
        }
    }
    Ok(())
}

fn too_large(len: usize) -> ApiError {
    ApiError::TooLarge(format!("the body is {len} bytes; the limit is {MAX_REQUEST_BODY} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserInfo {
        UserInfo { name: name.into(), groups: Vec::new() }
    }

    #[test]
    fn one_user_over_the_limit_is_refused_and_others_are_not() {
        let limit = PerUser::new(2);
        let a1 = limit.acquire(&user("a")).unwrap();
        let _a2 = limit.acquire(&user("a")).unwrap();
        let err = limit.acquire(&user("a")).err().unwrap();
        assert!(matches!(err, ApiError::TooManyRequests(_)), "{err:?}");
        assert_eq!(err.http_code(), 429);
        assert!(limit.acquire(&user("b")).unwrap().is_some());
        drop(a1);
        assert_eq!(limit.in_flight("a"), 1);
        assert!(limit.acquire(&user("a")).unwrap().is_some());
    }

    #[test]
    fn slots_are_given_back_and_no_limit_counts_nothing() {
        let limit = PerUser::new(1);
        drop(limit.acquire(&user("a")).unwrap());
        assert_eq!(limit.in_flight("a"), 0);
        assert!(limit.counts.lock().unwrap().is_empty());
        let none = PerUser::new(0);
        assert!(none.acquire(&user("a")).unwrap().is_none());
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn bodies_over_the_limit_are_too_large() {
        let big = axum::body::Bytes::from(vec![b' '; MAX_REQUEST_BODY + 1]);
        let err = decode_body(None, big).unwrap_err();
        assert_eq!(err.http_code(), 413, "{err}");
        let fits = axum::body::Bytes::from(vec![b' '; MAX_REQUEST_BODY]);
        assert_eq!(decode_body(None, fits).unwrap().len(), MAX_REQUEST_BODY);
    }

    #[test]
    fn gzip_bodies_inflate_up_to_the_limit() {
        let body = br#"{"kind":"Pod"}"#;
        let inflated = decode_body(Some("gzip"), gzip(body).into()).unwrap();
        assert_eq!(&inflated[..], body);
        // A small bomb: a few KiB that inflate past the limit.
        let bomb = gzip(&vec![0u8; MAX_REQUEST_BODY * 4]);
        assert!(bomb.len() < 64 * 1024);
        let err = decode_body(Some("gzip"), bomb.into()).unwrap_err();
        assert_eq!(err.http_code(), 413, "{err}");
        let err =
            decode_body(Some("gzip"), axum::body::Bytes::from_static(b"not gzip")).unwrap_err();
        assert_eq!(err.http_code(), 400, "{err}");
        let err = decode_body(Some("br"), axum::body::Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(err.http_code(), 415, "{err}");
    }

    #[test]
    fn hostile_yaml_is_refused_before_parsing() {
        let deep = format!("spec: {}{}", "{a: ".repeat(10_000), "}".repeat(10_000));
        let err = check_yaml(deep.as_bytes()).unwrap_err();
        assert_eq!(err.http_code(), 400);
        assert!(err.to_string().contains("nests deeper than 128"), "{err}");
        let seq = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(check_yaml(seq.as_bytes()).is_err());
        let laughs = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n";
        let err = check_yaml(laughs.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("alias (line 2)"), "{err}");
        for alias in ["- *x\n", "k: *x\n", "k: [a, *x]\n", "k: {a: *x}\n", "*x : 1\n"] {
            assert!(check_yaml(alias.as_bytes()).is_err(), "{alias:?}");
        }
    }

    #[test]
    fn ordinary_yaml_passes_the_check() {
        let manifest = r#"apiVersion: v1
kind: Pod
metadata:
  name: web  # a comment with * and [ {
  annotations:
    note: "a [quoted {string with *stars"
    other: 'it''s [here'
    plain: don't [worry
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "ls *.txt"]
    args:
    - ls *.txt
    - |
      for f in *; do
        echo [$f] {x
        *not an alias
      done
    - >-
      *folded [text
  nested: {a: [1, 2, {b: [3]}]}
"#;
        check_yaml(manifest.as_bytes()).unwrap();
        // JSON is YAML: brackets and stars in its strings are text.
        let json = format!(r#"{{"a":"{}*x","b":["*.txt"],"c":{{"d":"'"}}}}"#, "{[".repeat(200));
        check_yaml(json.as_bytes()).unwrap();
        let deep_ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        check_yaml(deep_ok.as_bytes()).unwrap();
    }

    #[test]
    fn deep_json_and_yaml_are_refused_not_overflowing() {
        let depth = 100_000;
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let err = serde_json::from_str::<serde_json::Value>(&json).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        let yaml = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let err = berth_proto::from_yaml::<serde_json::Value>(&yaml).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        // Flow maps cost the parser the square of their depth: check_yaml
        // refuses deep ones before it; here only past its recursion limit.
        let maps = format!("{}1{}", "{a: ".repeat(1000), "}".repeat(1000));
        let err = berth_proto::from_yaml::<serde_json::Value>(&maps).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
}

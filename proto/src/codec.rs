//! Strict JSON and YAML decoding with errors that name the field path, and
//! encoding in the Kubernetes JSON/YAML form.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// Why a document could not be decoded: the field path, what is wrong, and
/// where in the text (for YAML, and for JSON syntax errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Path of the offending field, such as `spec.containers[0].image`;
    /// empty when the document itself is malformed.
    pub path: String,
    pub message: String,
    /// 1-based line and column in the decoded text, when known.
    pub location: Option<(usize, usize)>,
}

impl DecodeError {
    pub(crate) fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError { path: path.into(), message: message.into(), location: None }
    }

    /// Moves the reported line by `lines`, for a document cut out of a
    /// larger multi-document text.
    pub(crate) fn shift_lines(mut self, lines: usize) -> Self {
        if let Some((line, column)) = self.location {
            self.location = Some((line + lines, column));
        }
        self
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one JSON document strictly.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let location = (inner.line() > 0).then(|| (inner.line(), inner.column()));
        let message = strip_json_position(&inner.to_string());
        DecodeError { location, ..describe(e.path(), &message) }
    })?;
    de.end().map_err(|e| DecodeError {
        location: Some((e.line(), e.column())),
        ..DecodeError::at("", "unexpected text after the JSON document")
    })?;
    Ok(value)
}

/// Decodes one YAML document strictly.
pub fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        let message = strip_yaml_decoration(&inner.to_string());
        DecodeError { location, ..describe(e.path(), &message) }
    })
}

/// Encodes as compact JSON.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own types to a Vec cannot fail: every map key is a string.
    serde_json::to_vec(value).expect("API objects always serialize to JSON")
}

/// Encodes as YAML.
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    serde_yaml_ng::to_string(value).expect("API objects always serialize to YAML")
}

/// Turns serde's "unknown field `x`, expected one of ..." into the
/// Kubernetes-style "path.x: unknown field" with a suggestion.
fn describe(path: &serde_path_to_error::Path, message: &str) -> DecodeError {
    let path = path.to_string();
    let path = if path == "." { String::new() } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let full = match path.rsplit_once('.') {
                _ if path.ends_with(field) => path.clone(),
                _ if path.is_empty() => field.to_string(),
                _ => format!("{path}.{field}"),
            };
            let mut message = "unknown field".to_string();
            if let Some(best) = closest(field, expected) {
                message.push_str(&format!(" (did you mean {best:?}?)"));
            }
            return DecodeError::at(full, message);
        }
    }
    DecodeError::at(path, message)
}

/// The expected name nearest to a misspelled one, if any is near enough.
fn closest(field: &str, expected: &str) -> Option<String> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (edit_distance(field, name), name))
        .filter(|(d, name)| *d <= 2.max(name.len() / 4))
        .min()
        .map(|(_, name)| name.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == cb { prev } else { 1 + prev.min(row[j]).min(cur) };
            prev = cur;
        }
    }
    row[b.len()]
}

fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// serde_yaml_ng prefixes its own path and appends the position; we report
/// both separately.
fn strip_yaml_decoration(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') => rest.to_string(),
        _ => message.to_string(),
    }
}

//! Registry authentication: the `WWW-Authenticate` challenge a registry
//! answers 401 with, and the bearer token a token service hands out for it
//! (the distribution token protocol; Docker Hub, Harbor, GHCR, quay all use it).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use http::{HeaderValue, Uri};
use serde::Deserialize;

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Credentials {
    pub(crate) fn basic_header(&self) -> Option<HeaderValue> {
        let raw = format!("{}:{}", self.username, self.password);
        let enc = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut v = HeaderValue::from_str(&format!("Basic {enc}")).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

/// One challenge of a `WWW-Authenticate` header: its scheme (lowercased) and
/// parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` value (RFC 9110 §11.6.1): one or more
/// challenges, each a scheme and comma-separated `name=value` or
/// `name="quoted, value"` parameters.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut lex = Lexer { s: header.as_bytes(), i: 0 };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        lex.skip_ws_and_commas();
        let Some(word) = lex.token() else { break };
        lex.skip_ws();
        if lex.peek() == Some(b'=') && !out.is_empty() {
            // A parameter of the current challenge.
            lex.i += 1;
            lex.skip_ws();
            let value = if lex.peek() == Some(b'"') {
                lex.quoted()
            } else {
                lex.token().unwrap_or_default()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
        } else if lex.peek() == Some(b'=') {
            // token68 or junk before any scheme: skip the value.
            lex.i += 1;
            let _ = lex.token();
        } else {
            out.push(Challenge { scheme: word.to_ascii_lowercase(), params: BTreeMap::new() });
        }
    }
    out
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The token service URL for a bearer challenge: its realm with `service`
/// and `scope` added (the challenge's own scope when it names one).
pub(crate) fn token_url(challenge: &Challenge, default_scope: &str) -> Option<Uri> {
    let realm = challenge.params.get("realm")?;
    let mut url = realm.clone();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    if let Some(service) = challenge.params.get("service") {
        url.push_str(&format!("{sep}service={}", percent_encode(service)));
        sep = '&';
    }
    let scope = challenge.params.get("scope").map_or(default_scope, String::as_str);
    url.push_str(&format!("{sep}scope={}", percent_encode(scope)));
    let uri: Uri = url.parse().ok()?;
    matches!(uri.scheme_str(), Some("http" | "https")).then_some(uri)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A token service's answer: `token` per the spec, `access_token` per OAuth2.
pub(crate) fn parse_token(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let t: TokenResponse = serde_json::from_slice(body).ok()?;
    t.token.or(t.access_token).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_style_bearer_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example.io/token",service="registry.example.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example.io/token");
        assert_eq!(c[0].params["service"], "registry.example.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");
    }

    #[test]
    fn parses_several_challenges_quotes_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="a, \"b\"" , Bearer realm=https://x/t, service=svc,error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], r#"a, "b""#);
        assert_eq!(c[1].params["realm"], "https://x/t");
        assert_eq!(c[1].params["service"], "svc");
        assert_eq!(c[1].params["error"], "insufficient_scope");
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn token_url_carries_service_and_scope() {
        let c = &parse_challenges(
            r#"Bearer realm="http://127.0.0.1:1/token?x=1",service="my registry""#,
        )[0];
        let url = token_url(c, "repository:a/b:pull").unwrap();
        assert_eq!(
            url.to_string(),
            "http://127.0.0.1:1/token?x=1&service=my%20registry&scope=repository%3Aa%2Fb%3Apull"
        );
        let c = &parse_challenges(r#"Bearer realm="file:///etc/passwd""#)[0];
        assert!(token_url(c, "s").is_none(), "only http(s) realms");
    }

    #[test]
    fn token_responses() {
        assert_eq!(parse_token(br#"{"token":"abc","expires_in":60}"#).as_deref(), Some("abc"));
        assert_eq!(parse_token(br#"{"access_token":"xyz"}"#).as_deref(), Some("xyz"));
        assert_eq!(parse_token(br#"{"token":""}"#), None);
        assert_eq!(parse_token(b"<html>"), None);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials { username: "u".into(), password: "secret".into() };
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.basic_header().unwrap().to_str().unwrap(), "Basic dTpzZWNyZXQ=");
    }
}

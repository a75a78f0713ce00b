//! Bearer tokens: the static token file (`--token-auth-file`), and the
//! guard that refuses a bearer token no token authenticator recognised.
//!
//! The file has Kubernetes' CSV format, one token a line:
//! `token,user,uid,"group1,group2"` (the group list optional; quotes as in
//! CSV, `""` for a quote inside a quoted field). Blank lines are skipped.

use super::authn::Authenticator;
use super::UserInfo;
use crate::error::ApiError;
use std::path::Path;
use subtle::ConstantTimeEq;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// The group of a caller no authenticator recognised (`system:anonymous`).
pub const UNAUTHENTICATED: &str = "system:unauthenticated";

/// The token of an `Authorization: Bearer <token>` header (gRPC metadata
/// `authorization`), if the request carries one. A header with another
/// scheme (Basic) is not a bearer token.
pub fn bearer_token(request: &tonic::Request<()>) -> Option<&str> {
    let value = request.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// `groups` with [`AUTHENTICATED`] added once.
pub(crate) fn authenticated(mut groups: Vec<String>) -> Vec<String> {
    if !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.into());
    }
    groups
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("token file {path}, line {line}: {reason}")]
    Line { path: String, line: usize, reason: String },
}

/// One user of the file; the token is kept only as its SHA-256 digest.
struct Entry {
    digest: [u8; 32],
    user: UserInfo,
}

/// The users of a static token file. A token in the file is its user;
/// any other bearer token is left to the next authenticator.
pub struct TokenFile {
    entries: Vec<Entry>,
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

impl TokenFile {
    /// Reads and parses `path`; a line that does not parse is an error
    /// naming it.
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| TokenFileError::Read { path: path.display().to_string(), error })?;
        TokenFile::parse(&text).map_err(|(line, reason)| TokenFileError::Line {
            path: path.display().to_string(),
            line,
            reason,
        })
    }

    /// The users of a token file's text; on error the line number (from 1)
    /// and why.
    pub fn parse(text: &str) -> Result<TokenFile, (usize, String)> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let fields = csv_fields(line).map_err(|reason| (number, reason))?;
            if fields.len() < 3 {
                return Err((
                    number,
                    format!(
                        "expected token,user,uid[,\"group1,group2\"], found {} field(s)",
                        fields.len()
                    ),
                ));
            }
            if fields.len() > 4 {
                return Err((
                    number,
                    format!(
                        "expected at most 4 fields, found {} (quote the group list)",
                        fields.len()
                    ),
                ));
            }
            let token = fields[0].as_str();
            if token.is_empty() {
                return Err((number, "the token is empty".into()));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err((number, "the token contains whitespace".into()));
            }
            if fields[1].is_empty() {
                return Err((number, "the user name is empty".into()));
            }
            let groups: Vec<String> = match fields.get(3) {
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect(),
                None => Vec::new(),
            };
            let digest = digest(token);
            if let Some(first) = entries.iter().position(|e| e.digest == digest) {
                return Err((number, format!("the token of line {} is used again", lines[first])));
            }
            let user = UserInfo { name: fields[1].clone(), groups: authenticated(groups) };
            entries.push(Entry { digest, user });
            lines.push(number);
        }
        Ok(TokenFile { entries })
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The user of `token`. Every entry is compared, each in constant
    /// time on digests, so neither the time nor which entry matched tells
    /// anything about the tokens.
    fn user_of(&self, token: &str) -> Option<&UserInfo> {
        let presented = digest(token);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&presented)) {
                found = Some(&entry.user);
            }
        }
        found
    }
}

impl Authenticator for TokenFile {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<Option<UserInfo>, ApiError> {
        Ok(bearer_token(request).and_then(|token| self.user_of(token)).cloned())
    }
}

/// Refuses every bearer token: placed after the token authenticators and
/// before Anonymous, it makes a token none of them recognised Unauthorized
/// instead of anonymous.
pub struct UnknownBearer;

impl Authenticator for UnknownBearer {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<Option<UserInfo>, ApiError> {
        match bearer_token(request) {
            Some(_) => Err(ApiError::Unauthorized("invalid bearer token".into())),
            None => Ok(None),
        }
    }
}

impl super::Filters {
    /// Bearer tokens are checked by `authenticators` (a token file, service
    /// accounts), asked first; a bearer token none of them recognises is
    /// Unauthorized ([`UnknownBearer`]), whatever comes after them.
    pub fn with_token_authenticators(
        mut self,
        authenticators: Vec<Box<dyn Authenticator>>,
    ) -> Self {
        if authenticators.is_empty() {
            return self;
        }
        let mut chain = authenticators;
        chain.push(Box::new(UnknownBearer));
        chain.append(&mut self.authenticators);
        self.authenticators = chain;
        self
    }
}

/// The fields of one CSV line: comma-separated, a field in double quotes
/// may hold commas and `""` for a quote; spaces around fields are trimmed.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t' || *c == '\r') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim_end().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote inside an unquoted field".into()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim_end().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    const FILE: &str = "\
secret-a,alice,1001,\"dev,ops\"\n\
\n\
secret-b,bob,1002\n\
  secret-c , carol , 1003 , \"system:masters\"\n";

    #[test]
    fn a_token_in_the_file_is_its_user_and_authenticated() {
        let file = TokenFile::parse(FILE).unwrap();
        assert_eq!(file.len(), 3);
        let alice = file.authenticate(&bearer("secret-a")).unwrap().unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", AUTHENTICATED]);
        let bob = file.authenticate(&bearer("secret-b")).unwrap().unwrap();
        assert_eq!(
            (bob.name.as_str(), bob.groups.as_slice()),
            ("bob", &[AUTHENTICATED.into()][..])
        );
        let carol = file.authenticate(&bearer("secret-c")).unwrap().unwrap();
        assert_eq!(carol.name, "carol");
        assert_eq!(carol.groups, ["system:masters", AUTHENTICATED]);
    }

    #[test]
    fn other_tokens_and_other_schemes_are_left_to_the_next_authenticator() {
        let file = TokenFile::parse(FILE).unwrap();
        assert_eq!(file.authenticate(&bearer("secret-z")).unwrap(), None);
        assert_eq!(file.authenticate(&bearer("secret-a-but-longer")).unwrap(), None);
        assert_eq!(file.authenticate(&tonic::Request::new(())).unwrap(), None);
        let mut basic = tonic::Request::new(());
        basic.metadata_mut().insert("authorization", "Basic c2VjcmV0LWE=".parse().unwrap());
        assert_eq!(file.authenticate(&basic).unwrap(), None);
    }

    #[test]
    fn a_bad_token_is_unauthorized_not_anonymous() {
        use super::super::authn::{authenticate, Anonymous};
        let chain: Vec<Box<dyn Authenticator>> = vec![
            Box::new(TokenFile::parse(FILE).unwrap()),
            Box::new(UnknownBearer),
            Box::new(Anonymous),
        ];
        let err = authenticate(&chain, &bearer("forged")).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)), "{err:?}");
        assert_eq!(authenticate(&chain, &bearer("secret-b")).unwrap().name, "bob");
        let anonymous = authenticate(&chain, &tonic::Request::new(())).unwrap();
        assert_eq!(anonymous.name, "system:anonymous");
    }

    #[test]
    fn a_line_that_does_not_parse_is_named() {
        for (text, line, reason) in [
            ("a,b,c\nonly-two,fields\n", 2, "found 2 field(s)"),
            ("a,b,c,\"g1,g2\",extra\n", 1, "at most 4 fields"),
            ("\n\n,user,uid\n", 3, "the token is empty"),
            ("tok,,uid\n", 1, "the user name is empty"),
            ("tok,user,uid,\"open\n", 1, "not closed"),
            ("tok,us\"er,uid\n", 1, "a quote inside"),
            ("tok en,user,uid\n", 1, "whitespace"),
            ("t1,a,1\nt2,b,2\nt1,c,3\n", 3, "line 1 is used again"),
        ] {
            match TokenFile::parse(text) {
                Err((n, why)) => {
                    assert_eq!(n, line, "{text:?}: {why}");
                    assert!(why.contains(reason), "{text:?}: {why}");
                }
                Ok(_) => panic!("{text:?} parsed"),
            }
        }
    }

    #[test]
    fn loading_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, "good,alice,1\nbad\n").unwrap();
        let err = TokenFile::load(&path).err().unwrap().to_string();
        assert!(err.contains("tokens.csv") && err.contains("line 2"), "{err}");
        let missing = TokenFile::load(&dir.path().join("missing.csv")).err().unwrap();
        assert!(matches!(missing, TokenFileError::Read { .. }), "{missing}");
    }

    #[test]
    fn the_bearer_header_is_read_case_insensitively_and_trimmed() {
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert("authorization", "bearer  tok  ".parse().unwrap());
        assert_eq!(bearer_token(&request), Some("tok"));
        let mut empty = tonic::Request::new(());
        empty.metadata_mut().insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&empty), None);
    }
}

//! Image references as users write them (`busybox`, `registry:5000/team/app:v1`,
//! `app@sha256:...`), normalized the way Docker and containerd do so the same
//! image has one name in the store.

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;
use super::error::{ImageError, Result};

/// Where an image reference without a registry goes.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// A normalized image reference: registry, repository, and a tag, a digest or
/// both (a digest wins when pulling; the tag is then only a name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host the distribution API is served from: Docker Hub's name
    /// differs from its API host.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The tag or digest to ask the registry for.
    pub fn manifest_key(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository at `digest`: how a pulled image is named by its
    /// content (a "repo digest").
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { tag: None, digest: Some(digest), ..self.clone() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && !t.starts_with(['.', '-'])
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad(
                    "tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_host(&registry) {
            return Err(bad("registry must be host[:port]"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(bad(
                "repository components must be lowercase letters and digits, joined by '.', '_', '__' or '-'",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference { registry, repository, tag, digest })
    }
}

fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => (host, Some(port)),
        _ => (h, None),
    };
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    host_ok
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // Separators: '.', '_', '__', or any run of '-'.
        let start = i;
        match b {
            b'.' => i += 1,
            b'_' => i += if bytes.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i > start && !bytes.get(i).is_some_and(|n| n.is_ascii_lowercase() || n.is_ascii_digit())
        {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn short_names_normalize_to_docker_hub() {
        assert_eq!(parse("busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(parse("team/app:1.0").to_string(), "docker.io/team/app:1.0");
        assert_eq!(parse("busybox").api_host(), "registry-1.docker.io");
    }

    #[test]
    fn registry_ports_tags_and_digests() {
        let r = parse("127.0.0.1:5000/a/b:v1");
        assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "a/b", Some("v1")));
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        let r = parse(&format!("localhost/app@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_key(), D);
        let r = parse(&format!("quay.io/x/y:t@{D}"));
        assert_eq!(r.manifest_key(), D, "a digest wins over the tag");
        assert_eq!(r.to_string(), format!("quay.io/x/y:t@{D}"));
        assert_eq!(parse("localhost:5000/app").tag(), Some("latest"));
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "UPPER/Case",
            "app:",
            "app:-tag",
            "a//b",
            "a/b/",
            "-a",
            "a@sha256:123",
            "host:port/app",
            "reg.io/a b",
            "a..b",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} parsed");
        }
        for ok in ["a__b", "a---b", "a.b_c", "my-registry.local:443/x/y.z:1.2_3-4"] {
            parse(ok);
        }
    }
}

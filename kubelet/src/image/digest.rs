//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the hasher that checks
//! content against them while it streams.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{ImageError, Result};

/// The hash functions OCI registries use; sha256 is what almost every image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            Algorithm::Sha256 => &ring::digest::SHA256,
            Algorithm::Sha512 => &ring::digest::SHA512,
        }
    }
}

/// A validated content digest: an algorithm and its lowercase hex value, so
/// it is safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(data);
        h.finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: s.to_string(),
            reason: format!("digest {reason}"),
        };
        let (alg, hex) = s.split_once(':').ok_or_else(|| bad("has no algorithm prefix"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(bad(&format!("algorithm {other:?} is not sha256 or sha512"))),
        };
        if hex.len() != algorithm.hex_len()
            || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(&format!(
                "value must be {} lowercase hex digits",
                algorithm.hex_len()
            )));
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes content as it streams and counts its bytes.
pub struct Hasher {
    algorithm: Algorithm,
    ctx: ring::digest::Context,
    len: u64,
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        Self { algorithm, ctx: ring::digest::Context::new(algorithm.ring()), len: 0 }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn finish(self) -> Digest {
        let hex = self.ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Digest { algorithm: self.algorithm, hex }
    }

    /// Finishes and compares with `expected` (and `size` when known).
    pub fn verify(self, what: &'static str, expected: &Digest, size: Option<u64>) -> Result<()> {
        let len = self.len;
        let actual = self.finish();
        if &actual != expected || size.is_some_and(|s| s != len) {
            return Err(ImageError::DigestMismatch {
                what,
                expected: expected.to_string(),
                actual: actual.to_string(),
                size: len,
            });
        }
        Ok(())
    }
}

/// A reader that hashes what passes through it (a layer's uncompressed tar,
/// to check it against the config's diff_id).
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        Self { inner, hasher: Hasher::new(algorithm) }
    }

    pub fn into_hasher(self) -> Hasher {
        self.hasher
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY);
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        assert!(h.finish().hex().starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn parse_rejects_what_could_not_be_a_file_name() {
        assert_eq!(EMPTY.parse::<Digest>().unwrap().to_string(), EMPTY);
        for bad in [
            "e3b0c442",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../etc/passwd",
            "sha256:e3b0",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn verify_checks_digest_and_size() {
        let want: Digest = EMPTY.parse().unwrap();
        assert!(Hasher::new(Algorithm::Sha256).verify("blob", &want, Some(0)).is_ok());
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"x");
        let err = h.verify("blob", &want, None).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { size: 1, .. }), "{err}");
        assert!(Hasher::new(Algorithm::Sha256).verify("blob", &want, Some(3)).is_err());
    }
}

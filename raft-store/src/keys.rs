//! How the store lays out its RocksDB keys. Revisions are big-endian so that
//! byte order is numeric order; user keys inside composite keys are escaped so
//! that byte order over the composite is byte order over the user key.

/// A revision as 8 big-endian bytes.
pub(crate) fn revision(rev: i64) -> [u8; 8] {
    (rev as u64).to_be_bytes()
}

pub(crate) fn parse_revision(bytes: &[u8]) -> Option<i64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) as i64)
}

/// An event's place in history: main revision, then its position within the
/// transaction that made it.
pub(crate) fn event(rev: i64, sub: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&revision(rev));
    out[8..].copy_from_slice(&sub.to_be_bytes());
    out
}

pub(crate) fn parse_event(bytes: &[u8]) -> Option<(i64, u32)> {
    let rev = parse_revision(bytes)?;
    let sub = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    Some((rev, sub))
}

/// Escapes a user key so that it can be followed by more fields: 0x00 becomes
/// 0x00 0xFF and the key ends with 0x00 0x00, which sorts before any
/// continuation of the key.
pub(crate) fn escaped(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// Splits an escaped key off the front of `bytes`; returns the user key and
/// the rest.
pub(crate) fn unescape(bytes: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut key = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0 {
            match bytes.get(i + 1)? {
                0 => return Some((key, &bytes[i + 2..])),
                0xFF => key.push(0),
                _ => return None,
            }
            i += 2;
        } else {
            key.push(b);
            i += 1;
        }
    }
    None
}

/// A key of the revision index: the user key's history, newest last.
pub(crate) fn history(key: &[u8], rev: i64) -> Vec<u8> {
    let mut out = escaped(key);
    out.extend_from_slice(&revision(rev));
    out
}

pub(crate) fn parse_history(bytes: &[u8]) -> Option<(Vec<u8>, i64)> {
    let (key, rest) = unescape(bytes)?;
    Some((key, parse_revision(rest)?))
}

/// The key attaching a user key to a lease.
pub(crate) fn lease_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut out = revision(lease).to_vec();
    out.extend_from_slice(key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_keeps_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\x00",
            b"\x00\x00",
            b"\x00\x01",
            b"\x01",
            b"a",
            b"a\x00",
            b"a\x00b",
            b"ab",
            b"b",
        ];
        for w in keys.windows(2) {
            assert!(escaped(w[0]) < escaped(w[1]), "{:?} < {:?}", w[0], w[1]);
            assert!(history(w[0], i64::MAX) < history(w[1], 0), "{:?} < {:?}", w[0], w[1]);
        }
        for k in keys {
            let h = history(k, 42);
            assert_eq!(parse_history(&h), Some((k.to_vec(), 42)));
        }
    }

    #[test]
    fn revisions_sort_numerically() {
        assert!(revision(255) < revision(256));
        assert!(event(5, 9) < event(6, 0));
        assert_eq!(parse_event(&event(7, 3)), Some((7, 3)));
    }
}

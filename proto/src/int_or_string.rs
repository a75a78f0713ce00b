//! Kubernetes' IntOrString: a port number or name, or a count or percentage
//! such as a Deployment's `maxSurge: 25%`.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;
use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

/// A value that is neither an integer nor a percentage where one is needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?}: must be an integer or a percentage such as \"25%\"")]
pub struct IntOrPercentError {
    value: String,
}

impl IntOrString {
    /// Resolves an int-or-percent against `total`, rounding a percentage up
    /// or down as the caller needs (Kubernetes rounds maxSurge up and
    /// maxUnavailable down).
    pub fn scaled_value(&self, total: i32, round_up: bool) -> Result<i32, IntOrPercentError> {
        match self {
            IntOrString::Int(n) => Ok(*n),
            IntOrString::String(s) => {
                let percent: i64 = s
                    .strip_suffix('%')
                    .and_then(|digits| digits.parse().ok())
                    .ok_or_else(|| IntOrPercentError { value: s.clone() })?;
                let product = percent * i64::from(total);
                let scaled = if round_up {
                    product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
                } else {
                    product.div_euclid(100)
                };
                i32::try_from(scaled).map_err(|_| IntOrPercentError { value: s.clone() })
            }
        }
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl serde::Serialize for IntOrString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(n) => s.serialize_i32(*n),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> serde::Deserialize<'de> for IntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} does not fit in 32 bits")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} does not fit in 32 bits")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

const TYPE_STRING: i64 = 1;

impl prost::Message for IntOrString {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            IntOrString::Int(n) => encoding::int32::encode(2, n, buf),
            IntOrString::String(s) => {
                encoding::int64::encode(1, &TYPE_STRING, buf);
                encoding::string::encode(3, s, buf);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => {
                let mut kind = 0i64;
                encoding::int64::merge(wire_type, &mut kind, buf, ctx)?;
                if kind == TYPE_STRING {
                    if let IntOrString::Int(_) = self {
                        *self = IntOrString::String(String::new());
                    }
                }
                Ok(())
            }
            2 => {
                let mut n = 0i32;
                encoding::int32::merge(wire_type, &mut n, buf, ctx)?;
                *self = IntOrString::Int(n);
                Ok(())
            }
            3 => {
                let mut s = String::new();
                encoding::string::merge(wire_type, &mut s, buf, ctx)?;
                *self = IntOrString::String(s);
                Ok(())
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            IntOrString::Int(n) => encoding::int32::encoded_len(2, n),
            IntOrString::String(s) => {
                encoding::int64::encoded_len(1, &TYPE_STRING) + encoding::string::encoded_len(3, s)
            }
        }
    }

    fn clear(&mut self) {
        *self = IntOrString::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn percentages_round_as_kubernetes_does() {
        let p = IntOrString::String("25%".into());
        assert_eq!(p.scaled_value(10, true).unwrap(), 3);
        assert_eq!(p.scaled_value(10, false).unwrap(), 2);
        assert_eq!(p.scaled_value(20, true).unwrap(), 5);
        assert_eq!(IntOrString::Int(7).scaled_value(100, false).unwrap(), 7);
    }

    #[test]
    fn non_percent_strings_are_rejected() {
        for bad in ["25", "abc%", "%", "2.5%"] {
            let err = IntOrString::String(bad.into()).scaled_value(10, true).unwrap_err();
            assert!(err.to_string().contains(bad));
        }
    }

    #[test]
    fn json_forms() {
        let v: IntOrString = serde_json::from_str("8080").unwrap();
        assert_eq!(v, IntOrString::Int(8080));
        let v: IntOrString = serde_json::from_str("\"http\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"http\"");
        assert!(serde_json::from_str::<IntOrString>("4294967296").is_err());
        assert!(serde_json::from_str::<IntOrString>("1.5").is_err());
    }

    #[test]
    fn protobuf_round_trip() {
        for v in [IntOrString::Int(0), IntOrString::Int(-3), IntOrString::String("25%".into())] {
            let back = IntOrString::decode(v.encode_to_vec().as_slice()).unwrap();
            assert_eq!(back, v);
        }
        let empty = IntOrString::String(String::new());
        assert_eq!(IntOrString::decode(empty.encode_to_vec().as_slice()).unwrap(), empty);
    }
}

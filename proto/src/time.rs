//! Kubernetes' two timestamp types: `Time` (second precision, written as
//! "2024-05-01T10:00:00Z") and `MicroTime` (microseconds, used by Lease and
//! Event). On the wire both are `{ int64 seconds = 1; int32 nanos = 2; }`.

use chrono::{DateTime, SecondsFormat, Utc};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;
use std::fmt;

macro_rules! timestamp {
    ($name:ident, $doc:literal, $precision:expr, $format:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name {
            seconds: i64,
            nanos: i32,
        }

        impl $name {
            /// The current time, cut to this type's precision.
            pub fn now() -> Self {
                Self::from_datetime(Utc::now())
            }

            /// A time from a Unix timestamp, cut to this type's precision.
            pub fn from_unix(seconds: i64, nanos: u32) -> Self {
                let nanos = nanos.min(999_999_999) as i32;
                Self { seconds, nanos: nanos - nanos % $precision }
            }

            pub fn from_datetime(at: DateTime<Utc>) -> Self {
                Self::from_unix(at.timestamp(), at.timestamp_subsec_nanos())
            }

            pub fn to_datetime(&self) -> DateTime<Utc> {
                DateTime::from_timestamp(self.seconds, self.nanos as u32).unwrap_or_default()
            }

            /// Seconds since the Unix epoch.
            pub fn unix_seconds(&self) -> i64 {
                self.seconds
            }

            /// Nanoseconds within the second.
            pub fn subsec_nanos(&self) -> u32 {
                self.nanos as u32
            }

            /// Parses RFC 3339 text with any offset and fraction.
            pub fn parse(text: &str) -> Result<Self, TimeError> {
                DateTime::parse_from_rfc3339(text)
                    .map(|t| Self::from_datetime(t.with_timezone(&Utc)))
                    .map_err(|e| TimeError { input: text.to_string(), reason: e.to_string() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_datetime().to_rfc3339_opts($format, true))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl prost::Message for $name {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                encode_parts(self.seconds, self.nanos, buf)
            }

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                merge_part(&mut self.seconds, &mut self.nanos, tag, wire_type, buf, ctx)?;
                // Finer than this type keeps would not survive its JSON form:
                // cut it, as from_unix does.
                self.nanos -= self.nanos % $precision;
                Ok(())
            }

            fn encoded_len(&self) -> usize {
                parts_len(self.seconds, self.nanos)
            }

            fn clear(&mut self) {
                *self = Self::default();
            }
        }
    };
}

timestamp!(
    Time,
    "A timestamp with second precision, as Kubernetes' metav1.Time.",
    1_000_000_000,
    SecondsFormat::Secs
);
timestamp!(
    MicroTime,
    "A timestamp with microsecond precision, as Kubernetes' metav1.MicroTime.",
    1_000,
    SecondsFormat::Micros
);

/// A timestamp that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?} (want RFC 3339, e.g. 2024-05-01T10:00:00Z): {reason}")]
pub struct TimeError {
    input: String,
    reason: String,
}

fn encode_parts(seconds: i64, nanos: i32, buf: &mut impl BufMut) {
    if seconds != 0 {
        encoding::int64::encode(1, &seconds, buf);
    }
    if nanos != 0 {
        encoding::int32::encode(2, &nanos, buf);
    }
}

fn parts_len(seconds: i64, nanos: i32) -> usize {
    let mut len = 0;
    if seconds != 0 {
        len += encoding::int64::encoded_len(1, &seconds);
    }
    if nanos != 0 {
        len += encoding::int32::encoded_len(2, &nanos);
    }
    len
}

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the times RFC 3339 text,
/// and so the JSON form, can hold.
const MIN_SECONDS: i64 = -62_167_219_200;
const MAX_SECONDS: i64 = 253_402_300_799;

fn merge_part(
    seconds: &mut i64,
    nanos: &mut i32,
    tag: u32,
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    match tag {
        1 => {
            encoding::int64::merge(wire_type, seconds, buf, ctx)?;
            if !(MIN_SECONDS..=MAX_SECONDS).contains(seconds) {
                return Err(crate::wire::invalid_value(format!(
                    "timestamp seconds out of range: {seconds} (years 0000 to 9999)"
                )));
            }
            Ok(())
        }
        2 => {
            encoding::int32::merge(wire_type, nanos, buf, ctx)?;
            if !(0..1_000_000_000).contains(nanos) {
                return Err(crate::wire::invalid_value(format!(
                    "timestamp nanos out of range: {nanos}"
                )));
            }
            Ok(())
        }
        _ => encoding::skip_field(wire_type, tag, buf, ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn time_prints_whole_seconds_in_utc() {
        let t = Time::parse("2024-05-01T12:00:00.750+02:00").unwrap();
        assert_eq!(t.to_string(), "2024-05-01T10:00:00Z");
    }

    #[test]
    fn micro_time_keeps_microseconds() {
        let t = MicroTime::parse("2024-05-01T10:00:00.123456789Z").unwrap();
        assert_eq!(t.to_string(), "2024-05-01T10:00:00.123456Z");
        let whole = MicroTime::parse("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(whole.to_string(), "2024-05-01T10:00:00.000000Z");
    }

    #[test]
    fn bad_timestamps_are_rejected_with_the_input_named() {
        for bad in ["", "yesterday", "2024-13-01T00:00:00Z", "2024-05-01 10:00:00"] {
            let err = Time::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn protobuf_round_trip() {
        let t = MicroTime::parse("2030-01-02T03:04:05.678901Z").unwrap();
        let back = MicroTime::decode(t.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, t);
        assert_eq!(Time::decode(&[][..]).unwrap(), Time::default());
    }

    #[test]
    fn protobuf_keeps_only_what_the_json_form_can_say() {
        let mut buf = Vec::new();
        encoding::int64::encode(1, &1_714_557_642, &mut buf);
        encoding::int32::encode(2, &123_456_789, &mut buf);
        let micro = MicroTime::decode(buf.as_slice()).unwrap();
        assert_eq!(micro, MicroTime::parse("2024-05-01T10:00:42.123456Z").unwrap());
        assert_eq!(MicroTime::parse(&micro.to_string()).unwrap(), micro);
        let time = Time::decode(buf.as_slice()).unwrap();
        assert_eq!(Time::parse(&time.to_string()).unwrap(), time);
        for seconds in [MAX_SECONDS + 1, MIN_SECONDS - 1, i64::MAX, i64::MIN] {
            let mut buf = Vec::new();
            encoding::int64::encode(1, &seconds, &mut buf);
            assert!(Time::decode(buf.as_slice()).is_err(), "{seconds}");
        }
        for edge in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
            let t = Time::parse(edge).unwrap();
            assert_eq!(Time::decode(t.encode_to_vec().as_slice()).unwrap(), t);
            assert_eq!(t.to_string(), edge);
        }
    }

    #[test]
    fn protobuf_rejects_out_of_range_nanos() {
        let mut buf = Vec::new();
        encoding::int32::encode(2, &1_000_000_000, &mut buf);
        assert!(Time::decode(buf.as_slice()).is_err());
    }
}

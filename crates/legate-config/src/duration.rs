//! `google.protobuf.Duration` as Envoy's YAML writes it: `"1.5s"` or `{seconds, nanos}`.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// A non-negative length of time from the config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

/// Parses proto3 JSON's duration string: decimal seconds with up to 9 fractional digits and an
/// `s` suffix. Negative durations are refused: no Envoy timeout accepts one.
pub fn parse_duration_str(s: &str) -> Result<std::time::Duration, String> {
    let body = s
        .strip_suffix('s')
        .ok_or_else(|| format!("invalid duration {s:?}: expected a number of seconds ending in 's', e.g. \"1.5s\""))?;
    if body.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, f),
        None => (body, ""),
    };
    let digits_ok = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_ok(whole) || !digits_ok(frac) || frac.len() > 9 {
        return Err(format!("invalid duration {s:?}: expected a number of seconds ending in 's', e.g. \"1.5s\""));
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("invalid duration {s:?}: seconds out of range"))?
    };
    // Pad the fraction to nanoseconds: "5" -> 500000000.
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().chain(std::iter::repeat(b'0')).take(9).enumerate() {
        let _ = i;
        nanos = nanos * 10 + u32::from(b - b'0');
    }
    // 315,576,000,000 s is proto Duration's documented maximum (10,000 years).
    if secs > 315_576_000_000 {
        return Err(format!("invalid duration {s:?}: seconds out of range"));
    }
    Ok(std::time::Duration::new(secs, nanos))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl<'de> Visitor<'de> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"1.5s\" or {seconds, nanos}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration_str(v).map(Duration).map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Duration, A::Error> {
                let mut seconds: i64 = 0;
                let mut nanos: i64 = 0;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "seconds" => seconds = map.next_value::<crate::core::Int64>()?.0,
                        "nanos" => nanos = map.next_value::<crate::core::Int64>()?.0,
                        other => return Err(de::Error::unknown_field(other, &["seconds", "nanos"])),
                    }
                }
                if seconds < 0 || nanos < 0 {
                    return Err(de::Error::custom("invalid duration: must not be negative"));
                }
                if nanos >= 1_000_000_000 {
                    return Err(de::Error::custom("invalid duration: nanos must be below 1000000000"));
                }
                Ok(Duration(std::time::Duration::new(seconds as u64, nanos as u32)))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proto3_strings() {
        assert_eq!(parse_duration_str("1.5s").unwrap(), std::time::Duration::from_millis(1500));
        assert_eq!(parse_duration_str("0.25s").unwrap(), std::time::Duration::from_millis(250));
        assert_eq!(parse_duration_str("5s").unwrap(), std::time::Duration::from_secs(5));
        assert_eq!(parse_duration_str("0.000000001s").unwrap(), std::time::Duration::from_nanos(1));
        assert_eq!(parse_duration_str(".5s").unwrap(), std::time::Duration::from_millis(500));
        for bad in ["5", "1.5ms", "-1s", "s", "1.0000000001s", "1e3s", "abc"] {
            assert!(parse_duration_str(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn parses_seconds_and_nanos() {
        let d: Duration = serde_json::from_str(r#"{"seconds": 2, "nanos": 5000}"#).unwrap();
        assert_eq!(d.0, std::time::Duration::new(2, 5000));
        let d: Duration = serde_json::from_str(r#"{"seconds": "3"}"#).unwrap();
        assert_eq!(d.0, std::time::Duration::from_secs(3));
        assert!(serde_json::from_str::<Duration>(r#"{"secs": 2}"#).is_err());
    }
}

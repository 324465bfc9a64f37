//! A call's deadline from its `grpc-timeout` header (the gRPC over HTTP/2 spec: at most 8 digits, then
//! a unit). tonic's own parser is private to its timeout layer, whose expiry it reports as `CANCELLED`;
//! the front keeps the deadline itself so that it ends a call with `DEADLINE_EXCEEDED` as the Python
//! front does, and hands it to the read path (no store call starts past it).

use std::time::{Duration, Instant};

/// The header carrying the timeout.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The timeout a `grpc-timeout` value names (None: malformed).
pub fn parse(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The instant a call that arrived at `now` with `header` must be over by (None: no deadline; a
/// malformed header counts as none, as grpcio takes it).
pub fn deadline(header: Option<&str>, now: Instant) -> Option<Instant> {
    header.and_then(parse).and_then(|t| now.checked_add(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_malformed_values() {
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("S"), None);
        assert_eq!(parse("5x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("-5S"), None);
    }
}

//! The 40-bit block expiry of the PSDB header (bytes 2..=6).
//!
//! Layout, as the reference writes it: `packed = year << 26 | day_of_year << 17 | second_of_day`
//! (14 + 9 + 17 bits), stored as the little-endian `u32` of `packed >> 8` followed by the low byte.
//! Five zero bytes mean "never expires". The format cannot express an expiry further than 513 days
//! ahead (the reference's limit); unlike the reference we reject such TTLs instead of silently
//! writing "never".

use crate::error::{Error, Result};

/// Seconds in a day.
const DAY: u64 = 86_400;
/// The longest TTL the reference accepts, in days.
pub const MAX_TTL_DAYS: u64 = 513;
/// The longest TTL a block can carry, in seconds (513 days).
pub const MAX_TTL_SECONDS: u64 = MAX_TTL_DAYS * DAY;

/// The year field has 14 bits.
const MAX_YEAR: u64 = (1 << 14) - 1;

/// Five zero bytes: the block never expires.
pub const NEVER: [u8; 5] = [0; 5];

/// Days from 1970-01-01 to January 1st of `year` (proleptic Gregorian, any year ≥ 0).
fn days_to_jan1(year: u64) -> i64 {
    let y = year as i64 - 1;
    // Days from 0001-01-01 to Jan 1 of `year`, minus the same for 1970.
    let days_since_year1 = |y: i64| y * 365 + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400);
    days_since_year1(y) - days_since_year1(1969)
}

/// Calendar year (UTC) that contains unix second `t`.
fn year_of(t: u64) -> u64 {
    // Estimate from the mean Gregorian year, then correct by at most one step either way.
    let days = (t / DAY) as i64;
    let mut year = 1970 + (days * 400).div_euclid(146_097) as u64;
    while days_to_jan1(year) > days {
        year -= 1;
    }
    while days_to_jan1(year + 1) <= days {
        year += 1;
    }
    year
}

/// Absolute expiry (unix seconds) for a block written at `now` with `ttl_seconds` (0 = never).
pub fn expiry_for_ttl(ttl_seconds: u64, now: u64) -> Result<u64> {
    if ttl_seconds == 0 {
        return Ok(0);
    }
    if ttl_seconds > MAX_TTL_SECONDS {
        return Err(Error::InvalidTtl(format!(
            "{ttl_seconds} s exceeds the block format's maximum of {MAX_TTL_SECONDS} s ({MAX_TTL_DAYS} days); use 0 for no expiry"
        )));
    }
    Ok(now + ttl_seconds)
}

/// Encodes an absolute expiry (0 = never). A non-zero expiry must lie in `(now, now + 513 days]`.
pub fn encode(expiry_at: u64, now: u64) -> Result<[u8; 5]> {
    if expiry_at == 0 {
        return Ok(NEVER);
    }
    if expiry_at <= now {
        return Err(Error::InvalidTtl(format!("expiry {expiry_at} is not in the future (now {now})")));
    }
    if expiry_at - now > MAX_TTL_SECONDS {
        return Err(Error::InvalidTtl(format!(
            "expiry {expiry_at} is more than {MAX_TTL_DAYS} days after now ({now})"
        )));
    }
    if year_of(expiry_at) > MAX_YEAR {
        return Err(Error::InvalidTtl(format!("expiry {expiry_at} is after the format's last year {MAX_YEAR}")));
    }
    Ok(pack(expiry_at))
}

/// Packs any expiry whose year fits in 14 bits, without the window check (used by tests and tools).
pub(crate) fn pack(expiry_at: u64) -> [u8; 5] {
    let year = year_of(expiry_at);
    let rest = expiry_at - days_to_jan1(year) as u64 * DAY;
    let packed = (year << 26) | ((rest / DAY) & 0x1FF) << 17 | (rest % DAY) & 0x1_FFFF;
    let hi = ((packed >> 8) as u32).to_le_bytes();
    [hi[0], hi[1], hi[2], hi[3], (packed & 0xFF) as u8]
}

/// Decodes the five expiry bytes: `None` = never expires, else the absolute unix second.
pub fn decode(bytes: [u8; 5]) -> Result<Option<u64>> {
    if bytes == NEVER {
        return Ok(None);
    }
    let packed = (u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])) << 8) | u64::from(bytes[4]);
    let year = packed >> 26;
    let day = (packed >> 17) & 0x1FF;
    let sec = packed & 0x1_FFFF;
    let days_in_year = (days_to_jan1(year + 1) - days_to_jan1(year)) as u64;
    if day >= days_in_year || sec >= DAY || year < 1970 {
        return Err(Error::corrupt(format!("expiry field out of range (year {year}, day {day}, second {sec})")));
    }
    Ok(Some(days_to_jan1(year) as u64 * DAY + day * DAY + sec))
}

/// True when the block has an expiry and `now` is past it.
pub fn is_expired(expiry_at: Option<u64>, now: u64) -> bool {
    matches!(expiry_at, Some(t) if now > t)
}

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_example() {
        // 2026-03-01T12:00:00Z: year 2026, day 59, second 43200.
        let t = 1_772_366_400;
        assert_eq!(pack(t), [0xa8, 0x76, 0xa8, 0x1f, 0xc0]);
        assert_eq!(decode(pack(t)).unwrap(), Some(t));
    }

    #[test]
    fn calendar_helpers() {
        assert_eq!(days_to_jan1(1970), 0);
        assert_eq!(days_to_jan1(1971), 365);
        assert_eq!(days_to_jan1(2000), 10_957);
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(951_782_400), 2000); // 2000-02-29
        assert_eq!(year_of(978_307_199), 2000); // 2000-12-31T23:59:59
        assert_eq!(year_of(978_307_200), 2001);
    }

    #[test]
    fn window_is_enforced() {
        let now = 1_772_366_400;
        assert_eq!(encode(0, now).unwrap(), NEVER);
        assert!(encode(now, now).is_err());
        assert!(encode(now + MAX_TTL_SECONDS + 1, now).is_err());
        assert!(encode(now + MAX_TTL_SECONDS, now).is_ok());
        assert!(expiry_for_ttl(MAX_TTL_SECONDS + 1, now).is_err());
        assert_eq!(expiry_for_ttl(0, now).unwrap(), 0);
    }

    #[test]
    fn years_beyond_the_field_are_rejected() {
        let now = 518_801_454_000; // year 18410
        assert!(matches!(encode(now + 3600, now), Err(Error::InvalidTtl(_))));
        // Day 365 exists only in leap years.
        assert!(decode(pack(1_767_225_599)).is_ok()); // 2025-12-31T23:59:59 is day 364
        let mut packed = (2025u64 << 26) | (365 << 17);
        let hi = ((packed >> 8) as u32).to_le_bytes();
        assert!(decode([hi[0], hi[1], hi[2], hi[3], (packed & 0xff) as u8]).is_err());
        packed = (2024u64 << 26) | (365 << 17);
        let hi = ((packed >> 8) as u32).to_le_bytes();
        assert!(decode([hi[0], hi[1], hi[2], hi[3], (packed & 0xff) as u8]).is_ok());
    }

    #[test]
    fn expiry_check() {
        assert!(!is_expired(None, u64::MAX));
        assert!(!is_expired(Some(10), 10));
        assert!(is_expired(Some(10), 11));
    }

    #[test]
    fn corrupt_fields_are_errors() {
        assert!(decode([0xff; 5]).is_err());
        // Year below the epoch.
        assert!(decode([0, 0, 0, 0, 1]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(t in 1u64..=253_402_300_799) {
            prop_assert_eq!(decode(pack(t)).unwrap(), Some(t));
        }

        #[test]
        fn year_matches_time_crate(t in 0i64..=253_402_300_799) {
            let dt = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
            prop_assert_eq!(year_of(t as u64) as i32, dt.year());
            prop_assert_eq!(u64::from(dt.ordinal() - 1), (t as u64 - days_to_jan1(year_of(t as u64)) as u64 * DAY) / DAY);
        }

        #[test]
        fn decode_never_panics(bytes in any::<[u8; 5]>()) {
            let _ = decode(bytes);
        }
    }
}

//! Request limits and fallible allocation.
//!
//! Every size that comes from a request or a schema is compared with its limit before anything is
//! read, built or allocated ([`Limits`]), and the allocations a request sizes go through [`try_vec`] /
//! [`try_reserve`], so an allocator that refuses is an [`Error::OutOfMemory`], never a process abort.

use crate::error::{Error, Result};

/// Name of the setting holding [`Limits::max_keys`], as errors name it.
pub const MAX_KEYS_SETTING: &str = "max_keys_per_request";
/// Name of the setting holding [`Limits::max_rows`].
pub const MAX_ROWS_SETTING: &str = "max_rows_per_persist";
/// Name of the setting holding [`Limits::max_bytes`].
pub const MAX_BYTES_SETTING: &str = "max_message_bytes";

/// The limits one request is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Keys of one retrieve.
    pub max_keys: usize,
    /// Rows of one persist.
    pub max_rows: usize,
    /// Bytes of one retrieve response (estimated from the plan before any read, and held while the
    /// response is built), and bytes of the blocks one persist builds.
    pub max_bytes: usize,
}

impl Limits {
    /// No limits (allocations stay fallible).
    pub const NONE: Limits = Limits { max_keys: usize::MAX, max_rows: usize::MAX, max_bytes: usize::MAX };

    /// Refuses a retrieve of more than [`Limits::max_keys`] keys; `what` names the request.
    pub fn check_keys(&self, keys: usize, what: impl FnOnce() -> String) -> Result<()> {
        over(keys as u64, self.max_keys, "keys", MAX_KEYS_SETTING, what)
    }

    /// Refuses a persist of more than [`Limits::max_rows`] rows; `what` names the request.
    pub fn check_rows(&self, rows: usize, what: impl FnOnce() -> String) -> Result<()> {
        over(rows as u64, self.max_rows, "rows", MAX_ROWS_SETTING, what)
    }

    /// Refuses `bytes` (an estimate, or what was built so far) over [`Limits::max_bytes`].
    pub fn check_bytes(&self, bytes: u64, what: impl FnOnce() -> String) -> Result<()> {
        over(bytes, self.max_bytes, "bytes", MAX_BYTES_SETTING, what)
    }
}

fn over(
    size: u64,
    limit: usize,
    unit: &'static str,
    setting: &'static str,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let limit = limit as u64;
    if size <= limit {
        return Ok(());
    }
    Err(Error::ResourceExhausted { what: what(), size, unit, limit, setting })
}

/// An empty `Vec` with room for `capacity` items, or [`Error::OutOfMemory`] naming `what`.
pub fn try_vec<T>(capacity: usize, what: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_reserve(&mut v, capacity, what)?;
    Ok(v)
}

/// `v.reserve(additional)`, or [`Error::OutOfMemory`] naming `what` (a capacity overflow included).
pub fn try_reserve<T>(v: &mut Vec<T>, additional: usize, what: &'static str) -> Result<()> {
    v.try_reserve(additional).map_err(|_| Error::OutOfMemory {
        what,
        bytes: (v.len() as u64).saturating_add(additional as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn limits_name_size_limit_and_setting() {
        let l = Limits { max_keys: 10, max_rows: 20, max_bytes: 100 };
        assert!(l.check_keys(10, || unreachable!()).is_ok());
        let e = l.check_keys(11, || "retrieve for entity \"user\"".into()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(
            e.to_string(),
            "retrieve for entity \"user\": 11 keys, over the limit of 10 keys (max_keys_per_request)"
        );
        assert!(l.check_rows(21, String::new).unwrap_err().to_string().contains("20 rows (max_rows_per_persist)"));
        let e = l.check_bytes(u64::MAX, || "response".into()).unwrap_err();
        assert!(e
            .to_string()
            .contains(&format!("{} bytes, over the limit of 100 bytes (max_message_bytes)", u64::MAX)));
        assert!(Limits::NONE.check_bytes(u64::MAX - 1, || unreachable!()).is_ok());
    }

    #[test]
    fn a_refused_allocation_is_an_error_not_an_abort() {
        // More than any allocator can give (and more than isize::MAX bytes): try_reserve must refuse.
        let e = try_vec::<u64>(usize::MAX / 4, "a test buffer").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e.to_string().starts_with("out of memory: cannot allocate"), "{e}");
        assert!(e.to_string().ends_with("for a test buffer"), "{e}");
        let mut v = vec![1u8; 16];
        assert!(try_reserve(&mut v, usize::MAX - 8, "more").is_err());
        assert_eq!(v, vec![1u8; 16], "a refused reservation leaves the vector as it was");
        let mut ok: Vec<u32> = try_vec(64, "small").unwrap();
        ok.push(1);
        assert!(ok.capacity() >= 64);
    }
}

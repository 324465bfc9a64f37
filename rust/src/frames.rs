//! Rows of a `SQLite` store read, as the store's query frames them into one value
//! (`online_feature_store.store.sqlite`): per row a 20-byte lowercase-hex header (key length: 8 digits,
//! FG id: 4, block length: 8), the key's UTF-8 bytes, then the block. One value per query lets Python's
//! `sqlite3` take one statement step per read instead of one per row.

use crate::error::{Error, Result};

const HEADER: usize = 20;

/// Every `(key, fg_id, block)` of a framed read, in order; anything that does not parse is
/// [`Error::Corrupt`].
pub fn sqlite_rows(data: &[u8]) -> Result<Vec<(&str, u16, &[u8])>> {
    let corrupt = |what: &str| Error::corrupt(format!("sqlite store read: {what}"));
    let mut rows = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let header = rest.get(..HEADER).ok_or_else(|| corrupt("row header truncated"))?;
        let hex = |range: std::ops::Range<usize>| {
            std::str::from_utf8(&header[range])
                .ok()
                .and_then(|digits| u32::from_str_radix(digits, 16).ok())
                .ok_or_else(|| corrupt("row header is not hex"))
        };
        let key_len = hex(0..8)? as usize;
        let fg_id = hex(8..12)? as u16; // 4 hex digits: lossless
        let block_len = hex(12..20)? as usize;
        rest = &rest[HEADER..];
        let key = rest.get(..key_len).ok_or_else(|| corrupt("key truncated"))?;
        let key = std::str::from_utf8(key).map_err(|_| corrupt("key is not UTF-8"))?;
        rest = &rest[key_len..];
        let block = rest.get(..block_len).ok_or_else(|| corrupt("block truncated"))?;
        rest = &rest[block_len..];
        rows.push((key, fg_id, block));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_in_order_with_every_byte() {
        let data = b"00000002000700000003k1abc00000000ffff0000000000000001000100000002\0\xff\0";
        let rows = sqlite_rows(data).unwrap();
        assert_eq!(rows, vec![("k1", 7, &b"abc"[..]), ("", 65535, &b""[..]), ("\0", 1, &b"\xff\0"[..])]);
        assert!(sqlite_rows(b"").unwrap().is_empty());
    }

    #[test]
    fn a_frame_that_does_not_parse_is_corrupt() {
        for (frame, reason) in [
            (&b"0000000200"[..], "header truncated"),
            (b"0000000z000700000003k1abc", "not hex"),
            (b"00000002000700000009k1abc", "block truncated"),
            (b"00000009000700000003k1abc", "key truncated"),
            (b"00000002000700000000\xff\xfe", "not UTF-8"),
        ] {
            let err = sqlite_rows(frame).unwrap_err();
            assert!(matches!(err, Error::Corrupt(_)), "{err}");
            assert!(err.to_string().contains(reason), "{err} should say {reason}");
        }
    }
}

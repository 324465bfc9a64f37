//! The protobuf encoding as every wire message reads and writes it by hand: a field iterator that
//! borrows from the message bytes (cells stay slices of a response), the length-delimited field
//! writer, and a pre-scan that counts a request's rows before it is decoded. The messages themselves
//! are in `retrieve` and `persist`, a module per message.

use prost::encoding::{encode_key, encode_varint, WireType};

use crate::error::{Error, Result};

/// One field of a protobuf message, borrowed from the message bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width fields (wire types 1 and 5) are skipped: no retrieve message uses them.
    Fixed,
}

/// Iterates the fields of one message without copying: cells stay slices of the response.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        use prost::encoding::{decode_key, decode_varint};
        if self.buf.is_empty() {
            return None;
        }
        let what = self.what;
        let bad = move |e: String| Error::corrupt(format!("malformed {what}: {e}"));
        let mut step = || -> Result<(u32, Field<'a>)> {
            let (tag, wire) = decode_key(&mut self.buf).map_err(|e| bad(e.to_string()))?;
            let field = match wire {
                WireType::Varint => Field::Varint(decode_varint(&mut self.buf).map_err(|e| bad(e.to_string()))?),
                WireType::LengthDelimited => {
                    let len = decode_varint(&mut self.buf).map_err(|e| bad(e.to_string()))?;
                    let len = usize::try_from(len).ok().filter(|&l| l <= self.buf.len());
                    let len = len.ok_or_else(|| bad(format!("field {tag} runs past the end")))?;
                    let (body, rest) = self.buf.split_at(len);
                    self.buf = rest;
                    Field::Bytes(body)
                }
                WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                    let n = if wire == WireType::SixtyFourBit { 8 } else { 4 };
                    if self.buf.len() < n {
                        return Err(bad(format!("field {tag} runs past the end")));
                    }
                    self.buf = &self.buf[n..];
                    Field::Fixed
                }
                WireType::StartGroup | WireType::EndGroup => return Err(bad("groups are not supported".into())),
            };
            Ok((tag, field))
        };
        let item = step();
        if item.is_err() {
            self.buf = &[]; // stop after the first error
        }
        Some(item)
    }
}

/// The fields of the message `buf`, `what` naming it in errors.
pub(crate) fn fields<'a>(buf: &'a [u8], what: &'static str) -> Fields<'a> {
    Fields { buf, what }
}

/// A string field's bytes as text, `what` naming it in errors.
pub(crate) fn utf8(b: &[u8], what: &str) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::corrupt(format!("{what} is not UTF-8")))
}

/// A length-delimited field.
pub(crate) fn put_bytes(out: &mut Vec<u8>, tag: u32, body: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// The first value of string field `label` and the number of occurrences of length-delimited field
/// `counted` at the top level of a protobuf message, read without decoding it: a request's entity and
/// key or row count are known before anything is allocated for it. Stops at the first malformed
/// field (the decode that follows reports it).
pub(crate) fn prescan(mut bytes: &[u8], label: u64, counted: u64) -> (String, usize) {
    use prost::encoding::decode_varint;
    let (mut first, mut n) = (None, 0usize);
    while !bytes.is_empty() {
        let Ok(key) = decode_varint(&mut bytes) else { break };
        let skip = match key & 7 {
            0 => match decode_varint(&mut bytes) {
                Ok(_) => 0,
                Err(_) => break,
            },
            1 => 8,
            2 => match decode_varint(&mut bytes) {
                Ok(len) => len,
                Err(_) => break,
            },
            5 => 4,
            _ => break,
        };
        let Some(skip) = usize::try_from(skip).ok().filter(|&s| s <= bytes.len()) else { break };
        if key & 7 == 2 {
            if key >> 3 == counted {
                n += 1;
            } else if key >> 3 == label && first.is_none() {
                first = Some(&bytes[..skip]);
            }
        }
        bytes = &bytes[skip..];
    }
    (first.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(), n)
}

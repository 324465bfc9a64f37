//! CSDB (cache storage data block): the PSDBs of several FGs of one entity key in one cache value.
//!
//! ```text
//! layout 1 (reference):  [1] { [fg id u16 LE] [len u16 LE] [len bytes: a PSDB] }*
//! layout 2 (ours):       [2] { [fg id u16 LE] [len u32 LE] [len bytes: a PSDB] }*
//! ```
//! `len == 0` is a negative entry: the FG is known to have no data for this key. Readers scan the
//! entries and skip the ones they do not want without touching their bytes. The reference wraps a
//! block over 65,535 bytes silently; layout 1 here refuses it, and [`encode_auto`] switches to
//! layout 2 (same shape, 32-bit lengths) only when some block needs it.

use crate::error::{Error, Result};

/// The reference's layout: 16-bit block lengths.
pub const LAYOUT_1: u8 = 1;
/// Our extension: 32-bit block lengths, for FG blocks over 64 KiB.
pub const LAYOUT_2: u8 = 2;

fn len_width(layout: u8) -> Result<usize> {
    match layout {
        LAYOUT_1 => Ok(2),
        LAYOUT_2 => Ok(4),
        l => Err(Error::corrupt(format!("unsupported CSDB layout {l}"))),
    }
}

/// Encodes `(fg_id, block)` pairs; an empty block is a negative entry. Order is preserved.
pub fn encode(entries: &[(u16, &[u8])], layout: u8) -> Result<Vec<u8>> {
    let width = len_width(layout).map_err(|_| Error::InvalidInput(format!("unsupported CSDB layout {layout}")))?;
    let mut out = Vec::with_capacity(1 + entries.iter().map(|(_, b)| 2 + width + b.len()).sum::<usize>());
    out.push(layout);
    for &(fg, block) in entries {
        out.extend_from_slice(&fg.to_le_bytes());
        if width == 2 {
            let len = u16::try_from(block.len()).map_err(|_| {
                Error::InvalidInput(format!(
                    "feature group {fg}: block of {} bytes does not fit CSDB layout 1 (max 65535)",
                    block.len()
                ))
            })?;
            out.extend_from_slice(&len.to_le_bytes());
        } else {
            let len = u32::try_from(block.len())
                .map_err(|_| Error::InvalidInput(format!("feature group {fg}: block over 4 GiB")))?;
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(block);
    }
    Ok(out)
}

/// Layout 1 when every block fits 16-bit lengths (reference-readable), else layout 2.
pub fn encode_auto(entries: &[(u16, &[u8])]) -> Vec<u8> {
    let layout = if entries.iter().all(|(_, b)| u16::try_from(b.len()).is_ok()) { LAYOUT_1 } else { LAYOUT_2 };
    encode(entries, layout).expect("layout chosen to fit")
}

/// Iterates the entries of a CSDB, validating bounds as it goes.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    rest: &'a [u8],
    width: usize,
    failed: bool,
}

/// Starts reading a CSDB.
pub fn entries(csdb: &[u8]) -> Result<Entries<'_>> {
    let (&layout, rest) = csdb.split_first().ok_or_else(|| Error::corrupt("empty CSDB"))?;
    Ok(Entries { rest, width: len_width(layout)?, failed: false })
}

impl<'a> Iterator for Entries<'a> {
    /// `(fg_id, block)`; an empty block is a negative entry.
    type Item = Result<(u16, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let prefix = 2 + self.width;
        let Some(head) = self.rest.get(..prefix) else {
            self.failed = true;
            return Some(Err(Error::corrupt("truncated CSDB entry header")));
        };
        let fg = u16::from_le_bytes([head[0], head[1]]);
        let len = if self.width == 2 {
            usize::from(u16::from_le_bytes([head[2], head[3]]))
        } else {
            u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize
        };
        let Some(block) = self.rest.get(prefix..prefix + len) else {
            self.failed = true;
            return Some(Err(Error::corrupt(format!("CSDB entry for feature group {fg} overruns the value"))));
        };
        self.rest = &self.rest[prefix + len..];
        Some(Ok((fg, block)))
    }
}

/// Looks up the wanted FGs in one pass, skipping the others. `out[i]` receives the block of
/// `wanted[i]`: `None` when the CSDB has no entry for it (a partial hit), `Some(&[])` for a negative
/// entry. Returns how many wanted FGs were found.
pub fn lookup<'a>(csdb: &'a [u8], wanted: &[u16], out: &mut [Option<&'a [u8]>]) -> Result<usize> {
    assert_eq!(wanted.len(), out.len(), "one output slot per wanted FG");
    out.fill(None);
    let mut found = 0;
    for entry in entries(csdb)? {
        let (fg, block) = entry?;
        for (slot, _) in out.iter_mut().zip(wanted).filter(|(s, &w)| w == fg && s.is_none()) {
            *slot = Some(block);
            found += 1;
        }
        if found == wanted.len() {
            break;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example() {
        let fp32 = hex_bytes("0200000000000010400000803f00002040000040c0");
        let csdb = encode(&[(3, &fp32), (7, &[])], LAYOUT_1).unwrap();
        assert_eq!(&csdb[..5], &[0x01, 0x03, 0x00, 0x15, 0x00]);
        assert_eq!(&csdb[26..], &[0x07, 0x00, 0x00, 0x00]);
        let mut out = [None; 3];
        assert_eq!(lookup(&csdb, &[7, 3, 9], &mut out).unwrap(), 2);
        assert_eq!(out, [Some(&[][..]), Some(&fp32[..]), None]);
    }

    #[test]
    fn large_blocks() {
        let big = vec![1u8; 70_000];
        assert!(encode(&[(1, &big)], LAYOUT_1).is_err());
        let csdb = encode_auto(&[(1, &big), (2, b"x")]);
        assert_eq!(csdb[0], LAYOUT_2);
        let got: Vec<_> = entries(&csdb).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(got, vec![(1, &big[..]), (2, &b"x"[..])]);
        assert_eq!(encode_auto(&[(1, b"x")])[0], LAYOUT_1);
    }

    #[test]
    fn corrupt_input() {
        assert!(entries(&[]).is_err());
        assert!(entries(&[9]).is_err());
        let mut out = [None];
        assert!(lookup(&[1, 3, 0, 5, 0, 1], &[3], &mut out).is_err());
        assert!(lookup(&[1, 3, 0], &[3], &mut out).is_err());
        assert_eq!(lookup(&[1], &[3], &mut out).unwrap(), 0);
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}

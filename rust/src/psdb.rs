//! PSDB (permanent storage data block), layout 1: all features of one FG for one entity key.
//!
//! ```text
//! byte 0-1  schema version (u16 LE)
//! byte 2-6  expiry (40-bit packed, see `expiry`), all zero = never
//! byte 7    layout (high nibble) | compression (bits 3..1) | data type bit 4 (bit 0)
//! byte 8    data type bits 3..0 (high nibble) | bool last-index (low nibble, bool types only;
//!           for our extension types, whose 5-bit type field reads 31, the type's offset from 31)
//! byte 9..  payload, zstd-compressed only when that makes it smaller
//! ```
//! Byte-compatible with the reference. Where the reference is lax we are strict: the low nibble of
//! byte 8 is always zeroed for non-bool types, a TTL the header cannot hold is an error (never a
//! silent "never expires"), and every value is range-checked before it is narrowed.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::dtype::{DataType, Element};
use crate::error::{Error, Result};
use crate::limits::{try_reserve, try_vec};
use crate::meta::BlockMeta;
use crate::values::{append_elements, append_q8, Values};
use crate::{bf16, expiry, float, q8};

/// Header length of layout 1.
pub const HEADER_LEN: usize = 9;
/// The only layout the reference implements.
pub const LAYOUT_1: u8 = 1;
/// zstd level used on the write path: fast, and close to the reference's ratio on feature data.
pub const ZSTD_LEVEL: i32 = 3;

/// Payload compression, a 3-bit header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// The decoded 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    /// Absolute unix second after which the block is expired; `None` = never.
    pub expiry_at: Option<u64>,
    pub layout: u8,
    pub compression: Compression,
    pub dtype: DataType,
    /// Bool types: bit position (0 = LSB) of the last valid bit of the final byte.
    pub bool_last_index: u8,
}

impl Header {
    /// Parses and validates the header of a non-empty block.
    pub fn parse(block: &[u8]) -> Result<Header> {
        let h: &[u8; HEADER_LEN] = block
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::corrupt(format!("{} bytes is shorter than the 9-byte header", block.len())))?;
        let layout = h[7] >> 4;
        if layout != LAYOUT_1 {
            return Err(Error::corrupt(format!("unsupported layout version {layout}")));
        }
        let compression = match (h[7] & 0x0E) >> 1 {
            0 => Compression::None,
            1 => Compression::Zstd,
            c => return Err(Error::corrupt(format!("unsupported compression type {c}"))),
        };
        let dtype = DataType::from_header_code(((h[7] & 0x01) << 4) | (h[8] >> 4), h[8] & 0x0F)
            .map_err(|e| Error::corrupt(format!("{e} in the header")))?;
        Ok(Header {
            version: u16::from_le_bytes([h[0], h[1]]),
            expiry_at: expiry::decode([h[2], h[3], h[4], h[5], h[6]])?,
            layout,
            compression,
            dtype,
            // An extension type's nibble is part of its number, not a bool index.
            bool_last_index: if dtype.is_extension() { 0 } else { h[8] & 0x0F },
        })
    }

    /// A never-expiring, uncompressed version-1 header, for wrapping a bare payload.
    pub(crate) fn bytes_for(dtype: DataType, last: u8) -> Vec<u8> {
        Header::write(1, expiry::NEVER, Compression::None, dtype, last).to_vec()
    }

    fn write(version: u16, expiry: [u8; 5], compression: Compression, dtype: DataType, last: u8) -> [u8; HEADER_LEN] {
        // The nibble holds the bool last-index for bool types only: zero for the others (the reference
        // leaves stale bits there), and the extension types' number offset.
        let (d, nibble) = dtype.header_code();
        let last = if dtype.element() == Some(Element::Bool) { last } else { 0 };
        let [v0, v1] = version.to_le_bytes();
        let [e0, e1, e2, e3, e4] = expiry;
        [
            v0,
            v1,
            e0,
            e1,
            e2,
            e3,
            e4,
            (LAYOUT_1 << 4) | ((compression as u8) << 1) | ((d >> 4) & 1),
            ((d & 0x0F) << 4) | ((last | nibble) & 0x0F),
        ]
    }
}

/// Bool last-index nibble for `n_bits` packed bits: `(8 - n % 8) % 8`.
pub fn bool_last_index(n_bits: usize) -> u8 {
    ((8 - n_bits % 8) % 8) as u8
}

/// Options of [`encode`].
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Absolute expiry in unix seconds, 0 = never. Must be within 513 days of `now`.
    pub expiry_at: u64,
    /// The clock used to validate `expiry_at`.
    pub now: u64,
    /// Try zstd and keep it only if it shrinks the payload.
    pub compress: bool,
    /// Clamp out-of-range floats to the type's largest finite value instead of rejecting them.
    pub saturate: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { expiry_at: 0, now: expiry::unix_now(), compress: true, saturate: false }
    }
}

thread_local! {
    /// This thread's compressors at `ZSTD_LEVEL` and at `ZSTD_FAST_LEVEL`.
    static COMPRESSORS: RefCell<(Option<zstd::bulk::Compressor<'static>>, Option<zstd::bulk::Compressor<'static>>)> = const { RefCell::new((None, None)) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_compress(payload: &[u8], level: i32) -> Result<Vec<u8>> {
    COMPRESSORS.with(|c| {
        let mut slots = c.borrow_mut();
        let slot = if level == ZSTD_LEVEL { &mut slots.0 } else { &mut slots.1 };
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(level).map_err(|e| Error::InvalidInput(e.to_string()))?);
        }
        let comp = slot.as_mut().expect("initialised above");
        comp.compress(payload).map_err(|e| Error::InvalidInput(format!("zstd: {e}")))
    })
}

/// zstd level tried on payloads whose bytes look random: its literals stay uncompressed, so it costs
/// under a microsecond on a small block and still finds repeated runs.
const ZSTD_FAST_LEVEL: i32 = -1;

/// The payload compressed, when that makes it smaller.
///
/// Level 3 gains over the fast level only by entropy-coding literals, and its Huffman attempt is what
/// makes it slow on incompressible input (~5.7 µs for 64 random fp32, against 1.5 µs for 64 zeros and
/// 0.9 µs at the fast level). So it runs only when the bytes' order-0 entropy says that coding could
/// pay for its table; otherwise the fast level runs, which still catches repeats (default-filled rows).
fn compress_if_smaller(payload: &[u8]) -> Result<Option<Vec<u8>>> {
    let level = if entropy_coding_may_pay(payload) {
        ZSTD_LEVEL
    } else if payload.len() >= REPEAT_SCAN_LIMIT || has_repeated_words(payload) {
        ZSTD_FAST_LEVEL
    } else {
        return Ok(None); // random-looking bytes without repeats: no zstd level can shrink them
    };
    let packed = zstd_compress(payload, level)?;
    Ok((packed.len() < payload.len()).then_some(packed))
}

/// Whether order-0 entropy coding of `payload` would come out clearly smaller than the payload: the
/// Shannon bound of its byte histogram plus ~64 bytes for the frame and the Huffman table, under 97 %.
fn entropy_coding_may_pay(payload: &[u8]) -> bool {
    // The last byte of each 4-byte word (a float's sign and exponent, an int's high byte) repeats the
    // most: counted in a table of its own, its increments do not wait on each other's stores as in one
    // table (together with the loop below: ~250 ns for 64 fp32 instead of ~440).
    let mut counts = [0u32; 256];
    let mut high = [0u32; 256];
    let mut words = payload.chunks_exact(4);
    for w in &mut words {
        counts[w[0] as usize] += 1;
        counts[w[1] as usize] += 1;
        counts[w[2] as usize] += 1;
        high[w[3] as usize] += 1;
    }
    for &b in words.remainder() {
        counts[b as usize] += 1;
    }
    // Σ c·log2(n/c) = n·log2(n) − Σ c·log2(c), with c·log2(c) from a table (0 for c < 2): a log2 per
    // distinct byte value cost more than the compression attempt it was saving. No branch on the count,
    // and eight running sums instead of one chain of additions.
    let table = x_log2_x_table();
    let mut sums = [0f64; 8];
    for (i, (&c, &h)) in counts.iter().zip(&high).enumerate() {
        let c = c + h;
        sums[i % 8] += table.get(c as usize).copied().unwrap_or_else(|| x_log2_x(c));
    }
    let sum_c_log_c: f64 = sums.iter().sum();
    let n = payload.len() as f64;
    let bits = n * n.log2() - sum_c_log_c;
    bits / 8.0 + 64.0 < 0.97 * n
}

/// Payloads at least this long always get the fast attempt (its cost is small per byte there).
const REPEAT_SCAN_LIMIT: usize = 4096;

/// Whether at least 8 of the payload's aligned 4-byte words repeat an earlier one: numeric values
/// repeat on their own alignment, and fewer repeats could not pay for a zstd frame's overhead.
fn has_repeated_words(payload: &[u8]) -> bool {
    const SLOTS: usize = 2 * REPEAT_SCAN_LIMIT / 4; // load factor ≤ 1/2
    let mut table = [0u64; SLOTS]; // word + 1, so 0 means empty
    let mut repeats = 0;
    for chunk in payload.chunks_exact(4) {
        let word = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        let mut slot = (word.wrapping_mul(0x9e37_79b1) >> 21) as usize % SLOTS;
        loop {
            match table[slot] {
                0 => {
                    table[slot] = u64::from(word) + 1;
                    break;
                }
                seen if seen == u64::from(word) + 1 => {
                    repeats += 1;
                    if repeats >= 8 {
                        return true;
                    }
                    break;
                }
                _ => slot = (slot + 1) % SLOTS,
            }
        }
    }
    false
}

/// `c · log2(c)` for the counts of payloads up to 4 KiB (0 for 0 and 1).
fn x_log2_x_table() -> &'static [f64] {
    const TABLE_LEN: usize = 4097;
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..TABLE_LEN).map(|c| if c < 2 { 0.0 } else { c as f64 * (c as f64).log2() }).collect())
}

/// `c · log2(c)`, from the table where it reaches.
fn x_log2_x(c: u32) -> f64 {
    match x_log2_x_table().get(c as usize) {
        Some(&v) => v,
        None => f64::from(c) * f64::from(c).log2(),
    }
}

/// Decompresses a zstd frame of at most `capacity` bytes with this thread's reused context.
pub(crate) fn zstd_decompress(payload: &[u8], capacity: usize) -> Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut slot = d.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| Error::corrupt(e.to_string()))?);
        }
        let dec = slot.as_mut().expect("initialised above");
        dec.decompress(payload, capacity).map_err(|e| match e.kind() {
            // zstd allocates its output fallibly: a refusal is memory, not a corrupt block.
            std::io::ErrorKind::OutOfMemory => {
                Error::OutOfMemory { what: "a decompressed block", bytes: capacity as u64 }
            }
            _ => Error::corrupt(format!("zstd: {e}")),
        })
    })
}

/// Encodes one block. `values` is the flat value stream described by `meta` (every value of every
/// feature in sequence order); its count, ranges and string lengths are all checked first, so a
/// failed encode never produces a partial block.
pub fn encode(meta: &BlockMeta, values: Values<'_>, opts: &EncodeOptions) -> Result<Vec<u8>> {
    let dtype = meta.dtype();
    let n = meta.n_values();
    if values.len() != n {
        return Err(Error::WrongCount { context: format!("{dtype} block"), expected: n, got: values.len() });
    }
    let expiry = expiry::encode(opts.expiry_at, opts.now)?;
    // The payload is built after a header-sized gap so the uncompressed path needs no second copy.
    // One allocation: header gap plus the exact payload size of fixed-width and bool types.
    let mut block = try_vec(HEADER_LEN + meta.fixed_payload_len().unwrap_or(0), "a block")?;
    block.resize(HEADER_LEN, 0);
    let mut last = 0;
    match meta.element() {
        Element::String => {
            let Values::Str(strings) = values else {
                return Err(Error::WrongValueKind { dtype, given: values.kind_name() });
            };
            encode_strings(meta, strings, &mut block)?;
        }
        Element::Bool => {
            let mut bits = try_vec(n, "a bool block")?;
            append_elements(&mut bits, dtype, values, false).map_err(|e| e.at_value(|i| locate(meta, i)))?;
            block.extend(pack_bits(&bits));
            last = bool_last_index(n);
        }
        Element::Q8 => {
            let lengths = (0..meta.n_features()).map(|p| meta.values_of(p));
            append_q8(&mut block, dtype, values, lengths, opts.saturate)
                .map_err(|e| e.at_value(|i| locate(meta, i)))?;
        }
        _ => {
            append_elements(&mut block, dtype, values, opts.saturate).map_err(|e| e.at_value(|i| locate(meta, i)))?;
        }
    }
    finish(block, meta.version(), expiry, dtype, last, opts.compress)
}

/// Encodes a block from one cell per feature (the response encoding, as produced by
/// [`crate::cell::encode`] or stored as defaults). Cells are checked against the layout.
pub fn encode_cells(meta: &BlockMeta, cells: &[&[u8]], opts: &EncodeOptions) -> Result<Vec<u8>> {
    let dtype = meta.dtype();
    if cells.len() != meta.n_features() {
        return Err(Error::WrongCount {
            context: format!("{dtype} block cells"),
            expected: meta.n_features(),
            got: cells.len(),
        });
    }
    let expiry = expiry::encode(opts.expiry_at, opts.now)?;
    let bad = |p: usize, what: &str| Error::InvalidInput(format!("feature {p}: {what}"));
    let mut block = vec![0u8; HEADER_LEN];
    let mut last = 0;
    match meta.element() {
        Element::Bool => {
            let bits: Vec<u8> = cells.concat();
            for (p, c) in cells.iter().enumerate() {
                if c.len() != meta.values_of(p) || c.iter().any(|&b| b > 1) {
                    return Err(bad(p, "bool cell must hold one 0/1 byte per value"));
                }
            }
            block.extend(pack_bits(&bits));
            last = bool_last_index(bits.len());
        }
        Element::String if !dtype.is_vector() => {
            let strings: Vec<&[u8]> = cells.to_vec();
            encode_strings(meta, &strings, &mut block)?;
        }
        Element::String => {
            let mut strings: Vec<&[u8]> = try_vec(meta.n_values(), "a string vector block")?;
            for (p, c) in cells.iter().enumerate() {
                let items = crate::values::string_vector_items(c, Some(meta.values_of(p)))
                    .map_err(|e| bad(p, &e.to_string()))?;
                strings.extend(items);
            }
            encode_strings(meta, &strings, &mut block)?;
        }
        e => {
            for (p, c) in cells.iter().enumerate() {
                if c.len() != meta.cell_len(p) {
                    return Err(bad(p, &format!("cell of {} bytes, expected {}", c.len(), meta.cell_len(p))));
                }
                if e == Element::Q8 {
                    q8::check_cell(c).map_err(|why| bad(p, &why))?;
                }
                block.extend_from_slice(c);
            }
        }
    }
    finish(block, meta.version(), expiry, dtype, last, opts.compress)
}

/// Writes the header into the gap left at the front of `block`, compressing the payload when smaller.
fn finish(
    mut block: Vec<u8>,
    version: u16,
    expiry: [u8; 5],
    dtype: DataType,
    last: u8,
    compress: bool,
) -> Result<Vec<u8>> {
    if compress && block.len() > HEADER_LEN {
        if let Some(packed) = compress_if_smaller(&block[HEADER_LEN..])? {
            block.truncate(HEADER_LEN);
            block.extend_from_slice(&packed);
            block[..HEADER_LEN].copy_from_slice(&Header::write(version, expiry, Compression::Zstd, dtype, last));
            return Ok(block);
        }
    }
    block[..HEADER_LEN].copy_from_slice(&Header::write(version, expiry, Compression::None, dtype, last));
    Ok(block)
}

/// Feature and (for vectors) element position of value `i` of the flat stream.
fn locate(meta: &BlockMeta, i: usize) -> (usize, Option<usize>) {
    let f = meta.feature_of_value(i);
    (f, meta.dtype().is_vector().then(|| i - meta.value_offset(f)))
}

fn encode_strings(meta: &BlockMeta, strings: &[&[u8]], out: &mut Vec<u8>) -> Result<()> {
    let mut total = 0usize;
    for (i, s) in strings.iter().enumerate() {
        let max = meta.string_len_of_value(i) as usize;
        if s.len() > max {
            return Err(Error::StringTooLong { feature: meta.feature_of_value(i), len: s.len(), max });
        }
        if std::str::from_utf8(s).is_err() {
            return Err(Error::InvalidInput(format!(
                "feature {}: string value {i} is not valid UTF-8",
                meta.feature_of_value(i)
            )));
        }
        total += s.len();
    }
    try_reserve(out, 2 * strings.len() + total, "a string block")?;
    for s in strings {
        // Fits: checked against the booked length, itself at most 65535.
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    }
    for s in strings {
        out.extend_from_slice(s);
    }
    Ok(())
}

/// Packs 0/1 bytes MSB-first: value 0 goes to bit 7 of byte 0.
pub(crate) fn pack_bits(bits: &[u8]) -> impl Iterator<Item = u8> + '_ {
    bits.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |acc, (j, &b)| acc | (b << (7 - j))))
}

fn bit(payload: &[u8], i: usize) -> u8 {
    (payload[i / 8] >> (7 - i % 8)) & 1
}

/// What a stored block says for one key.
#[derive(Debug)]
pub enum Block<'a> {
    /// Empty bytes: nothing stored (a negative entry).
    Missing,
    /// A valid block whose expiry has passed; its payload was not decompressed.
    Expired(Header),
    /// A live block.
    Present(BlockView<'a>),
}

/// Decodes a block with the metadata of its own schema version, checking expiry against `now`.
pub fn decode<'a>(block: &'a [u8], meta: &'a BlockMeta, now: u64) -> Result<Block<'a>> {
    if block.is_empty() {
        return Ok(Block::Missing);
    }
    let header = Header::parse(block)?;
    if header.dtype != meta.dtype() {
        return Err(Error::corrupt(format!("block holds {} but the feature group is {}", header.dtype, meta.dtype())));
    }
    if header.version != meta.version() {
        return Err(Error::corrupt(format!(
            "block has schema version {} but metadata of version {} was given",
            header.version,
            meta.version()
        )));
    }
    if expiry::is_expired(header.expiry_at, now) {
        return Ok(Block::Expired(header));
    }
    BlockView::new(header, &block[HEADER_LEN..], meta).map(Block::Present)
}

/// Upper bound of a version's payload, used to cap decompression (no zip bombs).
fn payload_capacity(meta: &BlockMeta) -> usize {
    meta.fixed_payload_len().unwrap_or_else(|| {
        (0..meta.n_values()).map(|i| 2 + meta.string_len_of_value(i) as usize).sum::<usize>().max(2 * 65_535)
    })
}

/// A live, validated block: the payload is decompressed and its size matches the metadata, so every
/// accessor below is infallible except for string UTF-8 checks.
#[derive(Debug)]
pub struct BlockView<'a> {
    header: Header,
    payload: Cow<'a, [u8]>,
    meta: &'a BlockMeta,
}

impl<'a> BlockView<'a> {
    fn new(header: Header, raw: &'a [u8], meta: &'a BlockMeta) -> Result<BlockView<'a>> {
        let payload: Cow<'a, [u8]> = match header.compression {
            Compression::None => Cow::Borrowed(raw),
            Compression::Zstd => Cow::Owned(zstd_decompress(raw, payload_capacity(meta))?),
        };
        match meta.fixed_payload_len() {
            Some(len) if payload.len() != len => {
                return Err(Error::corrupt(format!(
                    "payload of {} bytes, version {} of {} needs {len}",
                    payload.len(),
                    meta.version(),
                    meta.dtype()
                )))
            }
            Some(_) => {}
            None => check_strings(&payload, meta.n_values())?,
        }
        Ok(BlockView { header, payload, meta })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn meta(&self) -> &BlockMeta {
        self.meta
    }

    /// The decompressed payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The block re-serialized uncompressed (compression bits cleared), for in-process caches.
    pub fn to_uncompressed_block(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        let exp = self.header.expiry_at.map_or(expiry::NEVER, expiry::pack);
        out.extend_from_slice(&Header::write(
            self.header.version,
            exp,
            Compression::None,
            self.header.dtype,
            self.header.bool_last_index,
        ));
        out.extend_from_slice(&self.payload);
        out
    }

    /// Byte range of string value `idx` (strings only): walks the length table up to it.
    fn string_range(&self, idx: usize) -> std::ops::Range<usize> {
        let n = self.meta.n_values();
        let len_at = |k: usize| u16::from_le_bytes([self.payload[2 * k], self.payload[2 * k + 1]]) as usize;
        let start = 2 * n + (0..idx).map(len_at).sum::<usize>();
        start..start + len_at(idx)
    }

    /// Feature `pos` in the response encoding of the reference (§8.5): LE elements for numbers
    /// (vectors concatenated), one 0/1 byte per bool (vectors unpacked), raw bytes for a string, and
    /// `[u16 LE lengths][bytes]` for a string vector. Only this feature is touched.
    pub fn feature(&self, pos: usize) -> Cow<'_, [u8]> {
        assert!(pos < self.meta.n_features(), "feature {pos} out of range");
        let first = self.meta.value_offset(pos);
        let count = self.meta.values_of(pos);
        match self.meta.element() {
            Element::Bool => Cow::Owned((first..first + count).map(|i| bit(&self.payload, i)).collect()),
            Element::String if !self.meta.dtype().is_vector() => Cow::Borrowed(&self.payload[self.string_range(first)]),
            Element::String => {
                let ranges: Vec<_> = (first..first + count).map(|i| self.string_range(i)).collect();
                let mut out = Vec::with_capacity(2 * count + ranges.iter().map(ExactSizeIterator::len).sum::<usize>());
                for r in &ranges {
                    out.extend_from_slice(&(r.len() as u16).to_le_bytes());
                }
                for r in ranges {
                    out.extend_from_slice(&self.payload[r]);
                }
                Cow::Owned(out)
            }
            _ => {
                let start = self.meta.byte_offset(pos);
                Cow::Borrowed(&self.payload[start..start + self.meta.cell_len(pos)])
            }
        }
    }

    /// Every value, widened to its natural array type (fp8/fp16 → f32).
    pub fn to_array(&self) -> Result<Array> {
        let p: &[u8] = &self.payload;
        Ok(match self.meta.element() {
            Element::Fp32 => Array::F32(le_chunks(p, f32::from_le_bytes)),
            Element::Fp64 => Array::F64(le_chunks(p, f64::from_le_bytes)),
            Element::Fp16 => {
                let bits = le_chunks(p, u16::from_le_bytes);
                let mut out = vec![0f32; bits.len()];
                float::decode_f16_slice(&bits, &mut out);
                Array::F32(out)
            }
            Element::Fp8E4M3 => {
                let mut out = vec![0f32; p.len()];
                float::decode_e4m3_slice(p, &mut out);
                Array::F32(out)
            }
            Element::Fp8E5M2 => {
                let mut out = vec![0f32; p.len()];
                float::decode_e5m2_slice(p, &mut out);
                Array::F32(out)
            }
            Element::Bf16 => {
                let mut out = vec![0f32; p.len() / 2];
                bf16::decode_bf16_le(p, &mut out);
                Array::F32(out)
            }
            Element::Q8 => {
                let mut out = Vec::with_capacity(self.meta.n_values());
                for pos in 0..self.meta.n_features() {
                    q8::decode_append(&self.feature(pos), &mut out);
                }
                Array::F32(out)
            }
            Element::Int8 => Array::I8(p.iter().map(|&b| b as i8).collect()),
            Element::Int16 => Array::I16(le_chunks(p, i16::from_le_bytes)),
            Element::Int32 => Array::I32(le_chunks(p, i32::from_le_bytes)),
            Element::Int64 => Array::I64(le_chunks(p, i64::from_le_bytes)),
            Element::Uint8 => Array::U8(p.to_vec()),
            Element::Uint16 => Array::U16(le_chunks(p, u16::from_le_bytes)),
            Element::Uint32 => Array::U32(le_chunks(p, u32::from_le_bytes)),
            Element::Uint64 => Array::U64(le_chunks(p, u64::from_le_bytes)),
            Element::Bool => Array::Bool((0..self.meta.n_values()).map(|i| bit(p, i) == 1).collect()),
            Element::String => Array::Str(
                (0..self.meta.n_values())
                    .map(|i| {
                        std::str::from_utf8(&p[self.string_range(i)])
                            .map(str::to_owned)
                            .map_err(|_| Error::corrupt(format!("string value {i} is not valid UTF-8")))
                    })
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

/// Monomorphised per element type (not a `fn` pointer), so the conversion inlines and vectorises.
fn le_chunks<T, const W: usize>(p: &[u8], f: impl Fn([u8; W]) -> T) -> Vec<T> {
    p.chunks_exact(W).map(|c| f(c.try_into().expect("exact chunk"))).collect()
}

/// Checks the two-section string layout: `n` u16 lengths, then exactly their sum of bytes.
fn check_strings(payload: &[u8], n: usize) -> Result<()> {
    let table = payload
        .get(..2 * n)
        .ok_or_else(|| Error::corrupt(format!("string payload of {} bytes cannot hold {n} lengths", payload.len())))?;
    let total: usize = table.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as usize).sum();
    if payload.len() - 2 * n == total {
        Ok(())
    } else {
        Err(Error::corrupt(format!(
            "string lengths sum to {total} bytes but {} follow the length table",
            payload.len() - 2 * n
        )))
    }
}

/// Every value of a block in its natural array type.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    /// bfloat16 bit patterns, unwidened (retrieve's native form; [`BlockView::to_array`] widens to F32).
    Bf16(Vec<u16>),
    /// Q8 cells split for int8 arithmetic (retrieve's native form): every code, and one scale per
    /// vector, both in cell order.
    Q8 {
        codes: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl Array {
    /// Number of values held.
    pub fn len(&self) -> usize {
        match self {
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::U8(v) => v.len(),
            Array::U16(v) | Array::Bf16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
            Array::Q8 { codes, .. } => codes.len(),
        }
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_772_366_400;

    fn opts() -> EncodeOptions {
        EncodeOptions { expiry_at: 0, now: NOW, compress: false, saturate: false }
    }

    #[test]
    fn entropy_check_is_the_shannon_bound() {
        let direct = |p: &[u8]| {
            let mut counts = [0f64; 256];
            for &b in p {
                counts[b as usize] += 1.0;
            }
            let n = p.len() as f64;
            let bits: f64 = counts.iter().filter(|&&c| c > 0.0).map(|&c| c * (n / c).log2()).sum();
            bits / 8.0 + 64.0 < 0.97 * n
        };
        let floats: Vec<u8> = (0..64u32).flat_map(|i| (i as f32 / 64.0).to_le_bytes()).collect();
        let skewed: Vec<u8> = (0..9_999u32).map(|i| if i % 7 == 0 { (i % 251) as u8 } else { 0 }).collect();
        let mut x = 7u64;
        let noise: Vec<u8> = (0..1_001)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for p in [&floats[..], &skewed, &noise, &noise[..3], &[0u8; 5000][..], &(0..=255).collect::<Vec<u8>>()] {
            assert_eq!(entropy_coding_may_pay(p), direct(p), "{} bytes", p.len());
        }
    }

    #[test]
    fn reference_fp32_example() {
        let m = BlockMeta::scalar(DataType::Fp32, 2, 3).unwrap();
        let b = encode(&m, Values::F64(&[1.0, 2.5, -3.0]), &opts()).unwrap();
        assert_eq!(hex(&b), "0200000000000010400000803f00002040000040c0");
    }

    #[test]
    fn reference_bool_example() {
        let m = BlockMeta::scalar(DataType::Bool, 1, 10).unwrap();
        let v = [true, true, true, true, true, true, true, true, false, true];
        let b = encode(&m, Values::Bool(&v), &opts()).unwrap();
        assert_eq!(hex(&b), "0100000000000010f6ff40");
        let Block::Present(view) = decode(&b, &m, NOW).unwrap() else { panic!() };
        assert_eq!(view.to_array().unwrap(), Array::Bool(v.to_vec()));
        assert_eq!(&*view.feature(8), &[0]);
        assert_eq!(&*view.feature(9), &[1]);
    }

    #[test]
    fn reference_string_example() {
        let m = BlockMeta::new(DataType::String, 3, 3, vec![10, 10, 10], vec![]).unwrap();
        let b = encode(&m, Values::Str(&[b"ab", b"", b"xyz"]), &opts()).unwrap();
        assert_eq!(hex(&b), "0300000000000010e0020000000300616278797a");
        let Block::Present(view) = decode(&b, &m, NOW).unwrap() else { panic!() };
        assert_eq!(&*view.feature(2), b"xyz");
        assert_eq!(&*view.feature(1), b"");
    }

    #[test]
    fn vector_header_bits() {
        let m = BlockMeta::new(DataType::Fp32Vector, 1, 1, vec![], vec![2]).unwrap();
        let b = encode(&m, Values::F32(&[1.0, 2.0]), &opts()).unwrap();
        assert_eq!((b[7], b[8]), (0x11, 0x30));
    }

    #[test]
    fn expiry_and_missing() {
        let m = BlockMeta::scalar(DataType::Int32, 1, 1).unwrap();
        let o = EncodeOptions { expiry_at: NOW + 10, ..opts() };
        let b = encode(&m, Values::I32(&[7]), &o).unwrap();
        assert!(matches!(decode(&b, &m, NOW + 10).unwrap(), Block::Present(_)));
        assert!(matches!(decode(&b, &m, NOW + 11).unwrap(), Block::Expired(h) if h.expiry_at == Some(NOW + 10)));
        assert!(matches!(decode(&[], &m, NOW).unwrap(), Block::Missing));
        let too_far = EncodeOptions { expiry_at: NOW + expiry::MAX_TTL_SECONDS + 1, ..opts() };
        assert!(matches!(encode(&m, Values::I32(&[7]), &too_far), Err(Error::InvalidTtl(_))));
    }

    #[test]
    fn compression_only_when_smaller() {
        let m = BlockMeta::scalar(DataType::Int32, 1, 1000).unwrap();
        let zeros = vec![0i32; 1000];
        let b = encode(&m, Values::I32(&zeros), &EncodeOptions { compress: true, ..opts() }).unwrap();
        assert_eq!((b[7] >> 1) & 7, 1);
        assert!(b.len() < 100);
        let Block::Present(v) = decode(&b, &m, NOW).unwrap() else { panic!() };
        assert_eq!(v.to_array().unwrap(), Array::I32(zeros));
        assert_eq!(v.to_uncompressed_block().len(), HEADER_LEN + 4000);
        let tiny = BlockMeta::scalar(DataType::Int8, 1, 1).unwrap();
        let b = encode(&tiny, Values::I32(&[5]), &EncodeOptions { compress: true, ..opts() }).unwrap();
        assert_eq!(b.len(), HEADER_LEN + 1);
        assert_eq!((b[7] >> 1) & 7, 0);
    }

    #[test]
    fn the_compression_level_follows_what_the_bytes_can_gain() {
        // Random-looking floats: order-0 coding cannot pay, the fast level finds nothing: stored raw.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_000) as f32 / 1234.5 - 4.0
        };
        let random: Vec<f32> = (0..64).map(|_| next()).collect();
        let bytes: Vec<u8> = random.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(!entropy_coding_may_pay(&bytes));
        let m = BlockMeta::scalar(DataType::Fp32, 1, 64).unwrap();
        let b = encode(&m, Values::F32(&random), &EncodeOptions { compress: true, ..opts() }).unwrap();
        assert_eq!(((b[7] >> 1) & 7, b.len()), (0, HEADER_LEN + 256));
        // Few distinct byte values (small ints): entropy coding pays, level 3 runs and wins clearly.
        let small: Vec<i32> = (0..64).map(|i| (i * 37) % 100).collect();
        let bytes: Vec<u8> = small.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(entropy_coding_may_pay(&bytes));
        let m = BlockMeta::scalar(DataType::Int32, 1, 64).unwrap();
        let b = encode(&m, Values::I32(&small), &EncodeOptions { compress: true, ..opts() }).unwrap();
        assert_eq!((b[7] >> 1) & 7, 1);
        assert!(b.len() < HEADER_LEN + 160, "{}", b.len());
        let Block::Present(v) = decode(&b, &m, NOW).unwrap() else { panic!() };
        assert_eq!(v.to_array().unwrap(), Array::I32(small));
        // The same 16 random floats 4 times (256 bytes): repeats, which a zstd level finds.
        let four: Vec<f32> = random[..16].iter().copied().cycle().take(64).collect();
        let bytes: Vec<u8> = four.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(has_repeated_words(&bytes));
        let m64 = BlockMeta::scalar(DataType::Fp32, 1, 64).unwrap();
        let b = encode(&m64, Values::F32(&four), &EncodeOptions { compress: true, ..opts() }).unwrap();
        assert_eq!((b[7] >> 1) & 7, 1);
        assert!(b.len() < HEADER_LEN + 128, "{}", b.len());
        let Block::Present(v) = decode(&b, &m64, NOW).unwrap() else { panic!() };
        assert_eq!(v.to_array().unwrap(), Array::F32(four));
        assert!(!has_repeated_words(&random.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()));
        // A repeated run with high order-0 entropy (the same 64 random floats 16 times): the fast
        // level's matches still find it.
        let repeated: Vec<f32> = random.iter().copied().cycle().take(1024).collect();
        let m = BlockMeta::scalar(DataType::Fp32, 1, 1024).unwrap();
        let b = encode(&m, Values::F32(&repeated), &EncodeOptions { compress: true, ..opts() }).unwrap();
        assert_eq!((b[7] >> 1) & 7, 1);
        assert!(b.len() < HEADER_LEN + 400, "{}", b.len());
        let Block::Present(v) = decode(&b, &m, NOW).unwrap() else { panic!() };
        assert_eq!(v.to_array().unwrap(), Array::F32(repeated));
        // The table and the direct formula agree, past the table's end too.
        for c in [2u32, 3, 255, 4096, 4097, 100_000] {
            assert!((x_log2_x(c) - f64::from(c) * f64::from(c).log2()).abs() < 1e-6 * f64::from(c));
        }
    }

    #[test]
    fn decode_checks_type_version_and_size() {
        let m = BlockMeta::scalar(DataType::Int32, 1, 2).unwrap();
        let b = encode(&m, Values::I32(&[1, 2]), &opts()).unwrap();
        let other_type = BlockMeta::scalar(DataType::Uint32, 1, 2).unwrap();
        assert!(decode(&b, &other_type, NOW).is_err());
        let other_version = BlockMeta::scalar(DataType::Int32, 2, 2).unwrap();
        assert!(decode(&b, &other_version, NOW).is_err());
        assert!(decode(&b[..b.len() - 1], &m, NOW).is_err());
        assert!(decode(&b[..5], &m, NOW).is_err());
    }

    #[test]
    fn errors_name_feature_and_element() {
        let m = BlockMeta::new(DataType::Int8Vector, 1, 2, vec![], vec![2, 3]).unwrap();
        let e = encode(&m, Values::I32(&[1, 2, 3, 400, 5]), &opts()).unwrap_err();
        assert_eq!(e.to_string(), "feature 1 element 1: value 400 is out of range for DataTypeInt8Vector");
        let m = BlockMeta::scalar(DataType::Int16, 1, 3).unwrap();
        let e = encode(&m, Values::F64(&[1.0, 2.0, 2.5]), &opts()).unwrap_err();
        assert_eq!(e.to_string(), "feature 2: 2.5 is not an integer, as DataTypeInt16 requires");
    }

    #[test]
    fn extension_types_in_the_header_and_payload() {
        // BF16 (31): the 5-bit field reads 31, the nibble 0.
        let meta = BlockMeta::scalar(DataType::Bf16, 1, 2).unwrap();
        let block = encode(&meta, Values::F32(&[1.0, -2.0]), &opts()).unwrap();
        assert_eq!(hex(&block), ["0100", "0000000000", "11", "f0", "803f", "00c0"].concat());
        let header = Header::parse(&block).unwrap();
        assert_eq!((header.dtype, header.bool_last_index), (DataType::Bf16, 0));
        let Block::Present(view) = decode(&block, &meta, NOW).unwrap() else { panic!() };
        assert_eq!(view.to_array().unwrap(), Array::F32(vec![1.0, -2.0]));
        // Q8 vectors (33): nibble 2; per vector the scale, then the codes.
        let meta = BlockMeta::new(DataType::Q8Vector, 1, 2, vec![], vec![2, 3]).unwrap();
        let block = encode(&meta, Values::F32(&[0.0, -127.0, 1.0, 0.0, -0.5]), &opts()).unwrap();
        assert_eq!((block[7], block[8]), (0x11, 0xf2));
        let scale = 1f32 / 127.0;
        let payload = [&1f32.to_le_bytes()[..], &[0, 0x81], &scale.to_le_bytes(), &[127, 0, 0xc0]].concat();
        assert_eq!(&block[HEADER_LEN..], &payload[..]);
        let Block::Present(view) = decode(&block, &meta, NOW).unwrap() else { panic!() };
        assert_eq!(&*view.feature(1), &payload[6..]);
        assert_eq!(view.to_array().unwrap(), Array::F32(vec![0.0, -127.0, 127.0 * scale, 0.0, -64.0 * scale]));
        let err = encode(&meta, Values::F32(&[0.0, 1.0, 1.0, f32::INFINITY, 0.0]), &opts()).unwrap_err();
        assert!(err.to_string().starts_with("feature 1 element 1: inf cannot be stored as DataTypeQ8Vector"), "{err}");
        // Cells are checked: length with the scale, and a scale the encoder could have written.
        let cells: [&[u8]; 2] = [&payload[..6], &payload[6..]];
        assert_eq!(encode_cells(&meta, &cells, &opts()).unwrap(), block);
        assert!(encode_cells(&meta, &[&payload[..5], &payload[6..]], &opts()).is_err());
        let negative = [&(-1f32).to_le_bytes()[..], &[0, 0]].concat();
        assert!(encode_cells(&meta, &[&negative, &payload[6..]], &opts()).is_err());
        // An extension number past the last one is a corrupt block, not a misread.
        let mut bad = block.clone();
        bad[8] = 0xf9;
        assert!(decode(&bad, &meta, NOW).unwrap_err().to_string().contains("extension type 40"));
    }

    #[test]
    fn count_mismatch_is_an_error() {
        let m = BlockMeta::scalar(DataType::Fp32, 1, 3).unwrap();
        assert!(matches!(encode(&m, Values::F32(&[1.0]), &opts()), Err(Error::WrongCount { expected: 3, got: 1, .. })));
    }

    fn hex(b: &[u8]) -> String {
        hex::encode(b)
    }
}

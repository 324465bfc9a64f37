//! Rows of a batch load (`ofs push`, the Spark writers) encoded for the stores, from columns: key
//! columns in Arrow's string layout (offsets into one buffer of UTF-8 bytes) and each feature group's
//! values as one flat buffer. Keys are named ([`crate::keys`]) and every row of every FG encoded
//! ([`engine::encode_rows`]: the same checks and errors as a persist) before anything is written, with
//! no per-row object outside this module; [`EncodedRows::writes`] then hands the store its writes.

use crate::catalog::Entity;
use crate::engine;
use crate::error::{Error, Result};
use crate::expiry;
use crate::keys;
use crate::limits::{try_vec, Limits};
use crate::store::BlockWrite;
use crate::values::Values;

/// The offsets of an Arrow string column: `string` (32-bit) or `large_string` (64-bit).
#[derive(Debug, Clone, Copy)]
pub enum Offsets<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl Offsets<'_> {
    fn len(&self) -> usize {
        match self {
            Offsets::I32(o) => o.len(),
            Offsets::I64(o) => o.len(),
        }
    }

    fn at(&self, i: usize) -> Option<usize> {
        match self {
            Offsets::I32(o) => usize::try_from(o[i]).ok(),
            Offsets::I64(o) => usize::try_from(o[i]).ok(),
        }
    }
}

/// A column of strings in Arrow's layout: value `i` is `data[offsets[i]..offsets[i + 1]]`. The offsets
/// are checked once, when the column is made; each value's UTF-8 when it is read.
#[derive(Debug, Clone, Copy)]
pub struct StrColumn<'a> {
    offsets: Offsets<'a>,
    data: &'a [u8],
}

impl<'a> StrColumn<'a> {
    /// The column of `offsets` (one more than the values) into `data`; refused unless the offsets are
    /// non-negative, non-decreasing and within `data`.
    pub fn new(offsets: Offsets<'a>, data: &'a [u8]) -> Result<StrColumn<'a>> {
        let bad = |why: String| Err(Error::InvalidInput(format!("a string column's offsets {why}")));
        if offsets.len() == 0 {
            return bad("are empty (a column of n values has n + 1)".into());
        }
        let mut last = 0;
        for i in 0..offsets.len() {
            match offsets.at(i) {
                Some(o) if o >= last && o <= data.len() => last = o,
                _ => return bad(format!("at {i} are negative, decreasing or past the {} data bytes", data.len())),
            }
        }
        Ok(StrColumn { offsets, data })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i`'s bytes, as they are.
    pub fn bytes(&self, i: usize) -> &'a [u8] {
        // In range and in order: checked by `new`.
        let (start, end) = (self.offsets.at(i).unwrap_or(0), self.offsets.at(i + 1).unwrap_or(0));
        &self.data[start..end]
    }

    /// Value `i`, refused when it is not UTF-8.
    pub fn get(&self, i: usize) -> Result<&'a str> {
        std::str::from_utf8(self.bytes(i))
            .map_err(|e| Error::InvalidInput(format!("row {i}: a value that is not UTF-8: {e}")))
    }
}

/// One feature group's input values.
#[derive(Debug, Clone)]
pub enum GroupValues<'a> {
    /// Rows × values per row, row-major (what [`engine::encode_rows`] takes).
    Rows(Values<'a>),
    /// One column per value of a row (per feature, for scalar FGs), each one value per row and all of
    /// one kind: Arrow's columnar layout, interleaved into rows here.
    Columns(Vec<Values<'a>>),
}

/// Row-major values made from columns.
enum Interleaved<'a> {
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
    Str(Vec<&'a [u8]>),
}

impl Interleaved<'_> {
    fn values(&self) -> Values<'_> {
        match self {
            Interleaved::F32(v) => Values::F32(v),
            Interleaved::F64(v) => Values::F64(v),
            Interleaved::I8(v) => Values::I8(v),
            Interleaved::I16(v) => Values::I16(v),
            Interleaved::I32(v) => Values::I32(v),
            Interleaved::I64(v) => Values::I64(v),
            Interleaved::U8(v) => Values::U8(v),
            Interleaved::U16(v) => Values::U16(v),
            Interleaved::U32(v) => Values::U32(v),
            Interleaved::U64(v) => Values::U64(v),
            Interleaved::Bool(v) => Values::Bool(v),
            Interleaved::Str(v) => Values::Str(v),
        }
    }
}

/// `columns` (each `rows` long) as one row-major run: row `r` is every column's value `r`.
fn transpose<T: Copy>(columns: &[&[T]], rows: usize) -> Result<Vec<T>> {
    // Blocks of rows: a block takes one or two cache lines of each column and its rows stay in L1
    // while they fill. Row by row, columns a power of two bytes apart (as Arrow allocates them) evict
    // each other's lines, which is what made numpy's column_stack slow (~7 ns a value).
    const BLOCK: usize = 32;
    let n = columns.len();
    let Some(&first) = columns.first().and_then(|c| c.first()) else {
        return Ok(Vec::new());
    };
    let mut out = try_vec(rows * n, "a batch's values in rows")?;
    out.resize(rows * n, first);
    for start in (0..rows).step_by(BLOCK) {
        let end = (start + BLOCK).min(rows);
        for (c, column) in columns.iter().enumerate() {
            for (r, &v) in column[start..end].iter().enumerate() {
                out[(start + r) * n + c] = v;
            }
        }
    }
    Ok(out)
}

macro_rules! interleave_kinds {
    ($($variant:ident),*) => {
        /// `columns` interleaved into rows; refused unless each holds `rows` values of one kind.
        fn interleave<'a>(columns: &[Values<'a>], rows: usize, fg: &str) -> Result<Interleaved<'a>> {
            let bad = |i: usize, c: &Values<'_>| Error::InvalidInput(format!(
                "feature group {fg:?}: value column {i} holds {} {} values; the columns must hold {rows} \
                 values each, all of one kind (column 0: {})",
                c.len(), c.kind_name(), columns[0].kind_name()
            ));
            match columns.first() {
                None => Ok(Interleaved::F32(Vec::new())),
                $(Some(Values::$variant(_)) => {
                    let typed = columns.iter().enumerate().map(|(i, c)| match c {
                        Values::$variant(s) if s.len() == rows => Ok(*s),
                        other => Err(bad(i, other)),
                    }).collect::<Result<Vec<_>>>()?;
                    Ok(Interleaved::$variant(transpose(&typed, rows)?))
                })*
            }
        }
    };
}

interleave_kinds!(F32, F64, I8, I16, I32, I64, U8, U16, U32, U64, Bool, Str);

/// One feature group's blocks, one per row.
#[derive(Debug)]
pub struct EncodedGroup {
    pub fg_id: u16,
    pub label: String,
    /// The blocks' absolute expiry (unix seconds, 0 = never): what stores use as their own TTL.
    pub expires_at: u64,
    pub blocks: Vec<Vec<u8>>,
}

/// Rows of one entity, encoded: the canonical key name of each row and, per feature group, its block.
#[derive(Debug)]
pub struct EncodedRows {
    entity: String,
    /// Every row's canonical key name, back to back; row `i` ends at `name_ends[i]`.
    names: String,
    name_ends: Vec<usize>,
    groups: Vec<EncodedGroup>,
}

impl EncodedRows {
    /// Names the rows of `keys` (one column per key of `entity`, in its canonical key order) and
    /// encodes, for each `(fg label, values)` of `groups`, one block per row. Every row is checked — a key column of the wrong length, an empty
    /// or non-UTF-8 key value, and what [`engine::encode_rows`] refuses (errors `row N of feature group
    /// "label": …`) — before anything is returned; `limits` apply per FG as to a persist.
    pub fn encode(
        entity: &Entity,
        keys: &[StrColumn<'_>],
        groups: &[(&str, GroupValues<'_>)],
        now: u64,
        saturate: bool,
        limits: &Limits,
    ) -> Result<EncodedRows> {
        if keys.len() != entity.keys.len() {
            return Err(Error::InvalidInput(format!(
                "entity {:?} has {} key columns ({:?}); {} given",
                entity.label,
                entity.keys.len(),
                entity.keys,
                keys.len()
            )));
        }
        let rows = keys.first().map_or(0, StrColumn::len);
        if let Some((k, c)) = keys.iter().enumerate().find(|(_, c)| c.len() != rows) {
            return Err(Error::InvalidInput(format!(
                "key column {:?} of entity {:?} has {} values, the first {rows}",
                entity.keys[k],
                entity.label,
                c.len()
            )));
        }
        let (names, name_ends) = key_names(entity, keys, rows)?;
        let mut encoded = Vec::with_capacity(groups.len());
        for (label, values) in groups {
            let fg = entity.fg(label)?;
            let blocks = match values {
                GroupValues::Rows(v) => engine::encode_rows(fg, *v, rows, now, saturate, limits)?,
                GroupValues::Columns(columns) => {
                    let rows_of_values = interleave(columns, rows, label)?;
                    engine::encode_rows(fg, rows_of_values.values(), rows, now, saturate, limits)?
                }
            };
            let expires_at = expiry::expiry_for_ttl(fg.ttl_seconds, now)?;
            encoded.push(EncodedGroup { fg_id: fg.id, label: fg.label.clone(), expires_at, blocks });
        }
        Ok(EncodedRows { entity: entity.label.clone(), names, name_ends, groups: encoded })
    }

    /// The entity's label.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.name_ends.len()
    }

    /// Row `i`'s canonical key name.
    pub fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.name_ends[i - 1] };
        &self.names[start..self.name_ends[i]]
    }

    /// The feature groups, in the order they were given.
    pub fn groups(&self) -> &[EncodedGroup] {
        &self.groups
    }

    /// The store writes of the FGs in `fg_ids` (all when empty), row-major: a row's FGs side by side,
    /// as they lie in a store keyed by (key, FG).
    pub fn writes(&self, fg_ids: &[u16]) -> Vec<BlockWrite<'_>> {
        let groups: Vec<&EncodedGroup> =
            self.groups.iter().filter(|g| fg_ids.is_empty() || fg_ids.contains(&g.fg_id)).collect();
        let mut out = Vec::with_capacity(self.rows() * groups.len());
        for r in 0..self.rows() {
            let key = self.name(r);
            for g in &groups {
                out.push(BlockWrite { key, fg_id: g.fg_id, block: &g.blocks[r], expires_at: g.expires_at });
            }
        }
        out
    }
}

/// The canonical name of every row (`keys::push_value` over the key columns), back to back, and where
/// each ends. An empty key value is refused, naming its row.
fn key_names(entity: &Entity, keys: &[StrColumn<'_>], rows: usize) -> Result<(String, Vec<usize>)> {
    let bytes: usize = keys.iter().map(|c| c.data.len()).sum();
    let mut names = String::new();
    names.try_reserve(bytes + rows * keys.len()).map_err(|_| Error::OutOfMemory {
        what: "the key names of a batch",
        bytes: (bytes + rows * keys.len()) as u64,
    })?;
    let mut ends = try_vec(rows, "the key names of a batch")?;
    for r in 0..rows {
        for (i, column) in keys.iter().enumerate() {
            let value = column.get(r).map_err(|e| Error::InvalidInput(format!("key {:?}: {e}", entity.keys[i])))?;
            if value.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "row {r}: key {:?} of entity {:?} has an empty value",
                    entity.keys[i], entity.label
                )));
            }
            keys::push_value(&mut names, i, value);
        }
        ends.push(names.len());
    }
    Ok((names, ends))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, VersionSpec};
    use crate::dtype::DataType;
    use crate::psdb;

    const NOW: u64 = 1_772_366_400;

    fn catalog() -> Catalog {
        let mut c = Catalog::new(1);
        c.add_entity("user", &["id".into(), "region".into()]).unwrap();
        let version = |n: usize| VersionSpec {
            version: 1,
            labels: (0..n).map(|i| format!("f{i}")).collect(),
            string_lengths: vec![],
            vector_lengths: vec![],
            defaults: vec![0f32.to_le_bytes().to_vec(); n],
        };
        c.add_feature_group("user", 3, "a", DataType::Fp32, 1, 0, vec![version(2)]).unwrap();
        c.add_feature_group("user", 4, "b", DataType::Fp32, 1, 60, vec![version(1)]).unwrap();
        let half = VersionSpec { defaults: vec![vec![0, 0]], ..version(1) };
        c.add_feature_group("user", 5, "h", DataType::Fp16, 1, 0, vec![half]).unwrap();
        c
    }

    fn column<'a>(offsets: &'a [i32], data: &'a str) -> StrColumn<'a> {
        StrColumn::new(Offsets::I32(offsets), data.as_bytes()).unwrap()
    }

    #[test]
    fn names_encodes_and_writes_row_major() {
        let c = catalog();
        let e = c.entity("user").unwrap();
        let ids = column(&[0, 2, 5, 8], "u1a|bu:3");
        let regions = column(&[0, 2, 4, 6], "eueuus");
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f32, 8.0, 9.0];
        let groups = [("a", GroupValues::Rows(Values::F32(&a))), ("b", GroupValues::Rows(Values::F32(&b)))];
        let rows = EncodedRows::encode(e, &[ids, regions], &groups, NOW, false, &Limits::NONE).unwrap();
        assert_eq!(rows.rows(), 3);
        assert_eq!((rows.name(0), rows.name(1), rows.name(2)), ("u1|eu", "a\\|b|eu", "u\\:3|us"));
        assert_eq!(rows.groups()[0].expires_at, 0);
        assert_eq!(rows.groups()[1].expires_at, NOW + 60);
        let writes = rows.writes(&[]);
        let order: Vec<(&str, u16)> = writes.iter().map(|w| (w.key, w.fg_id)).collect();
        assert_eq!(
            order,
            [("u1|eu", 3), ("u1|eu", 4), ("a\\|b|eu", 3), ("a\\|b|eu", 4), ("u\\:3|us", 3), ("u\\:3|us", 4)]
        );
        let fg = e.fg("a").unwrap();
        let psdb::Block::Present(block) = psdb::decode(writes[2].block, &fg.active().meta, NOW).unwrap() else {
            panic!("a present block")
        };
        assert_eq!(block.to_array().unwrap(), psdb::Array::F32(vec![3.0, 4.0]));
        assert_eq!(rows.writes(&[4]).len(), 3);
        // The same bytes as a persist of the same rows.
        assert_eq!(
            rows.groups()[0].blocks,
            engine::encode_rows(fg, Values::F32(&a), 3, NOW, false, &Limits::NONE).unwrap()
        );
    }

    #[test]
    fn columns_make_the_same_blocks_as_rows() {
        let c = catalog();
        let e = c.entity("user").unwrap();
        let ids = column(&[0, 1, 2, 3], "xyz");
        let regions = column(&[0, 1, 2, 3], "abc");
        let rows = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let by_rows = [("a", GroupValues::Rows(Values::F32(&rows)))];
        let by_columns =
            [("a", GroupValues::Columns(vec![Values::F32(&[1.0, 3.0, 5.0]), Values::F32(&[2.0, 4.0, 6.0])]))];
        let one = EncodedRows::encode(e, &[ids, regions], &by_rows, NOW, false, &Limits::NONE).unwrap();
        let two = EncodedRows::encode(e, &[ids, regions], &by_columns, NOW, false, &Limits::NONE).unwrap();
        assert_eq!(one.groups()[0].blocks, two.groups()[0].blocks);
        // ints for a float FG, column by column, as from Arrow integer columns
        let ints = [("a", GroupValues::Columns(vec![Values::I64(&[1, 3, 5]), Values::I64(&[2, 4, 6])]))];
        let three = EncodedRows::encode(e, &[ids, regions], &ints, NOW, false, &Limits::NONE).unwrap();
        assert_eq!(one.groups()[0].blocks, three.groups()[0].blocks);
        let mixed = [("a", GroupValues::Columns(vec![Values::F32(&[1.0, 3.0, 5.0]), Values::F64(&[2.0, 4.0, 6.0])]))];
        let err = EncodedRows::encode(e, &[ids, regions], &mixed, NOW, false, &Limits::NONE).unwrap_err();
        assert!(err.to_string().contains("value column 1 holds 3 float64 values"), "{err}");
        let short = [("a", GroupValues::Columns(vec![Values::F32(&[1.0, 3.0, 5.0]), Values::F32(&[2.0])]))];
        assert!(EncodedRows::encode(e, &[ids, regions], &short, NOW, false, &Limits::NONE).is_err());
        let few = [("a", GroupValues::Columns(vec![Values::F32(&[1.0, 3.0, 5.0])]))];
        let err = EncodedRows::encode(e, &[ids, regions], &few, NOW, false, &Limits::NONE).unwrap_err();
        assert!(err.to_string().contains("expected 6"), "{err}");
    }

    #[test]
    fn refuses_bad_columns_and_rows_before_returning_anything() {
        let c = catalog();
        let e = c.entity("user").unwrap();
        let err = |keys: &[StrColumn<'_>], vals: &[f32]| {
            EncodedRows::encode(e, keys, &[("a", GroupValues::Rows(Values::F32(vals)))], NOW, false, &Limits::NONE)
                .unwrap_err()
                .to_string()
        };
        let two = column(&[0, 1, 2], "xy");
        let one = column(&[0, 1], "x");
        assert!(err(&[two], &[0.0; 4]).contains("has 2 key columns"));
        assert!(err(&[two, one], &[0.0; 4]).contains("has 1 values, the first 2"));
        let empty = column(&[0, 1, 1], "x");
        assert!(err(&[two, empty], &[0.0; 4]).contains("row 1: key \"region\" of entity \"user\" has an empty value"));
        let half = [("h", GroupValues::Rows(Values::F32(&[1.0, 70_000.0])))];
        let half = EncodedRows::encode(e, &[two, two], &half, NOW, false, &Limits::NONE);
        assert!(half.unwrap_err().to_string().contains("row 1 of feature group \"h\""));
        assert!(err(&[two, two], &[0.0; 3]).contains("expected 4"));
        let latin1 = StrColumn::new(Offsets::I64(&[0, 1]), b"\xe9").unwrap();
        assert!(EncodedRows::encode(e, &[latin1, one], &[], NOW, false, &Limits::NONE)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        for offsets in [&[][..], &[0, 2, 1][..], &[0, 3][..], &[-1, 0][..]] {
            assert!(StrColumn::new(Offsets::I32(offsets), b"xy").is_err(), "{offsets:?}");
        }
        let limits = Limits { max_rows: 1, ..Limits::NONE };
        let e2 = EncodedRows::encode(
            e,
            &[two, two],
            &[("a", GroupValues::Rows(Values::F32(&[0.0; 4])))],
            NOW,
            false,
            &limits,
        );
        assert!(e2.unwrap_err().to_string().contains("max_rows_per_persist"));
    }
}

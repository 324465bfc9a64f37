//! Property tests over every data type: encode → decode round trips, response encoding of each
//! feature, and garbage (random, truncated, bit-flipped) that must decode to an error, never a panic.

use ofs_core::psdb::{self, Block};
use ofs_core::{csdb, Array, BlockMeta, DataType, Element, EncodeOptions, Values};
use proptest::prelude::*;

const NOW: u64 = 1_772_366_400;
/// The last type number (the reference's 30 plus our extensions).
const LAST_TYPE: u8 = (DataType::ALL.len() - 1) as u8;

/// A layout plus a value stream that fits it, in the narrowest natural container.
#[derive(Debug, Clone)]
struct Case {
    meta: BlockMeta,
    data: Data,
}

#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Data {
    /// The numeric/bool value stream; strings are borrowed separately (see `encode_case`).
    fn values(&self) -> Values<'_> {
        match self {
            Data::F32(v) => Values::F32(v),
            Data::F64(v) => Values::F64(v),
            Data::I64(v) => Values::I64(v),
            Data::U64(v) => Values::U64(v),
            Data::Bool(v) => Values::Bool(v),
            Data::Str(_) => unreachable!("strings are passed as byte slices"),
        }
    }
}

fn float_in(max: f32) -> impl Strategy<Value = f32> {
    prop_oneof![-max..=max, Just(0.0f32), Just(-0.0), Just(max), Just(-max), Just(1e-7)]
}

fn int_range(e: Element) -> (i64, i64) {
    match e {
        Element::Int8 => (i8::MIN.into(), i8::MAX.into()),
        Element::Int16 => (i16::MIN.into(), i16::MAX.into()),
        Element::Int32 => (i32::MIN.into(), i32::MAX.into()),
        _ => (i64::MIN, i64::MAX),
    }
}

fn uint_max(e: Element) -> u64 {
    match e {
        Element::Uint8 => u8::MAX.into(),
        Element::Uint16 => u16::MAX.into(),
        Element::Uint32 => u32::MAX.into(),
        _ => u64::MAX,
    }
}

fn data_for(e: Element, n: usize, max_str: u32) -> BoxedStrategy<Data> {
    let len = n..=n;
    match e {
        Element::Fp8E4M3 => proptest::collection::vec(float_in(448.0), len).prop_map(Data::F32).boxed(),
        Element::Fp8E5M2 => proptest::collection::vec(float_in(57_344.0), len).prop_map(Data::F32).boxed(),
        Element::Fp16 => proptest::collection::vec(float_in(65_504.0), len).prop_map(Data::F32).boxed(),
        Element::Bf16 => proptest::collection::vec(float_in(3.389e38), len).prop_map(Data::F32).boxed(),
        // Finite values of any size, and some all-zero vectors.
        Element::Q8 => prop_oneof![
            proptest::collection::vec(float_in(1e30), len.clone()),
            proptest::collection::vec(float_in(1.0), len.clone()),
            proptest::collection::vec(Just(0.0f32), len),
        ]
        .prop_map(Data::F32)
        .boxed(),
        Element::Fp32 => proptest::collection::vec(any::<f32>(), len).prop_map(Data::F32).boxed(),
        Element::Fp64 => proptest::collection::vec(any::<f64>(), len).prop_map(Data::F64).boxed(),
        Element::Int8 | Element::Int16 | Element::Int32 | Element::Int64 => {
            let (lo, hi) = int_range(e);
            proptest::collection::vec(lo..=hi, len).prop_map(Data::I64).boxed()
        }
        Element::Uint8 | Element::Uint16 | Element::Uint32 | Element::Uint64 => {
            proptest::collection::vec(0..=uint_max(e), len).prop_map(Data::U64).boxed()
        }
        Element::Bool => proptest::collection::vec(any::<bool>(), len).prop_map(Data::Bool).boxed(),
        Element::String => {
            let pattern = format!("\\PC{{0,{}}}", max_str / 4);
            proptest::collection::vec(proptest::string::string_regex(&pattern).unwrap(), len)
                .prop_map(Data::Str)
                .boxed()
        }
    }
}

fn case() -> impl Strategy<Value = Case> {
    (1u8..=LAST_TYPE, 1usize..12, 1u16..=5)
        .prop_flat_map(|(t, n, version)| {
            let dtype = DataType::from_u8(t).unwrap();
            let vlens = if dtype.is_vector() {
                proptest::collection::vec(1u32..6, n..=n).boxed()
            } else {
                Just(Vec::new()).boxed()
            };
            (Just(dtype), Just(n), Just(version), vlens)
        })
        .prop_flat_map(|(dtype, n, version, vlens)| {
            let slens = if dtype.is_string() { vec![40; n] } else { Vec::new() };
            let meta = BlockMeta::new(dtype, version, n, slens, vlens).unwrap();
            let data = data_for(dtype.element().unwrap(), meta.n_values(), 40);
            (Just(meta), data)
        })
        .prop_map(|(meta, data)| Case { meta, data })
}

fn encode_case(c: &Case, compress: bool, expiry_at: u64) -> Vec<u8> {
    let opts = EncodeOptions { expiry_at, now: NOW, compress, saturate: false };
    match &c.data {
        Data::Str(v) => {
            let refs: Vec<&[u8]> = v.iter().map(String::as_bytes).collect();
            psdb::encode(&c.meta, Values::Str(&refs), &opts)
        }
        d => psdb::encode(&c.meta, d.values(), &opts),
    }
    .unwrap()
}

/// The values as f64 after the type's own rounding, for comparison with the decoded array.
fn expected_f64(c: &Case) -> Option<Vec<f64>> {
    let e = c.meta.element();
    let round = |x: f32| -> f64 {
        match e {
            Element::Fp8E4M3 => f64::from(ofs_core::float::e4m3_to_f32(ofs_core::float::f32_to_e4m3(x))),
            Element::Fp8E5M2 => f64::from(ofs_core::float::e5m2_to_f32(ofs_core::float::f32_to_e5m2(x))),
            Element::Fp16 => f64::from(ofs_core::float::f16_to_f32(ofs_core::float::f32_to_f16(x))),
            Element::Bf16 => f64::from(ofs_core::bf16::bf16_to_f32(ofs_core::bf16::f32_to_bf16(x))),
            _ => f64::from(x),
        }
    };
    match &c.data {
        // Q8 is lossy per vector: checked against its error bound instead.
        Data::F32(_) if e == Element::Q8 => None,
        Data::F32(v) => Some(v.iter().map(|&x| round(x)).collect()),
        Data::F64(v) => Some(v.clone()),
        _ => None,
    }
}

fn array_f64(a: &Array) -> Option<Vec<f64>> {
    match a {
        Array::F32(v) => Some(v.iter().map(|&x| f64::from(x)).collect()),
        Array::F64(v) => Some(v.clone()),
        _ => None,
    }
}

fn array_i128(a: &Array) -> Option<Vec<i128>> {
    Some(match a {
        Array::I8(v) => v.iter().map(|&x| i128::from(x)).collect(),
        Array::I16(v) => v.iter().map(|&x| i128::from(x)).collect(),
        Array::I32(v) => v.iter().map(|&x| i128::from(x)).collect(),
        Array::I64(v) => v.iter().map(|&x| i128::from(x)).collect(),
        Array::U8(v) => v.iter().map(|&x| i128::from(x)).collect(),
        Array::U16(v) => v.iter().map(|&x| i128::from(x)).collect(),
        Array::U32(v) => v.iter().map(|&x| i128::from(x)).collect(),
        Array::U64(v) => v.iter().map(|&x| i128::from(x)).collect(),
        _ => return None,
    })
}

fn same_float(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_every_type(c in case(), compress in any::<bool>(), ttl in prop_oneof![Just(0u64), 1u64..1000]) {
        let expiry_at = if ttl == 0 { 0 } else { NOW + ttl };
        let block = encode_case(&c, compress, expiry_at);
        let Block::Present(view) = psdb::decode(&block, &c.meta, NOW).unwrap() else {
            panic!("fresh block must be present");
        };
        prop_assert_eq!(view.header().version, c.meta.version());
        prop_assert_eq!(view.header().expiry_at, (expiry_at != 0).then_some(expiry_at));
        let arr = view.to_array().unwrap();
        match &c.data {
            Data::F32(v) if c.meta.element() == Element::Q8 => {
                let Array::F32(got) = &arr else { panic!("Q8 decodes to float32") };
                for pos in 0..c.meta.n_features() {
                    let r = c.meta.value_offset(pos)..c.meta.value_offset(pos) + c.meta.values_of(pos);
                    let scale = ofs_core::q8::cell_scale(&view.feature(pos)).unwrap();
                    let amax = v[r.clone()].iter().fold(0f32, |m, x| m.max(x.abs()));
                    prop_assert_eq!(scale.to_bits(), (amax / 127.0).to_bits());
                    for (x, y) in v[r.clone()].iter().zip(&got[r]) {
                        let bound = f64::from(scale) * 0.500_001 + f64::from(x.abs()) * 1e-6;
                        prop_assert!(f64::from((x - y).abs()) <= bound, "{} vs {} at scale {}", x, y, scale);
                    }
                }
            }
            Data::F32(_) | Data::F64(_) => {
                let want = expected_f64(&c).unwrap();
                let got = array_f64(&arr).unwrap();
                prop_assert!(want.iter().zip(&got).all(|(a, b)| same_float(*a, *b)), "{want:?} != {got:?}");
            }
            Data::I64(v) => prop_assert_eq!(array_i128(&arr).unwrap(), v.iter().map(|&x| i128::from(x)).collect::<Vec<_>>()),
            Data::U64(v) => prop_assert_eq!(array_i128(&arr).unwrap(), v.iter().map(|&x| i128::from(x)).collect::<Vec<_>>()),
            Data::Bool(v) => prop_assert_eq!(&arr, &Array::Bool(v.clone())),
            Data::Str(v) => prop_assert_eq!(&arr, &Array::Str(v.clone())),
        }
        // Every feature's response bytes have the documented size.
        for pos in 0..c.meta.n_features() {
            let f = view.feature(pos);
            let count = c.meta.values_of(pos);
            match c.meta.element() {
                Element::Bool => prop_assert_eq!(f.len(), count),
                Element::String => {
                    if c.meta.dtype().is_vector() {
                        prop_assert!(f.len() >= 2 * count);
                    }
                }
                e => prop_assert_eq!(f.len(), count * e.size() + e.vector_prefix()),
            }
        }
        // The same block is expired one second after its expiry, and never before.
        if expiry_at != 0 {
            prop_assert!(matches!(psdb::decode(&block, &c.meta, expiry_at + 1).unwrap(), Block::Expired(_)));
        }
        // An uncompressed copy (the in-process cache flavour) decodes to the same values.
        let plain = view.to_uncompressed_block();
        let Block::Present(again) = psdb::decode(&plain, &c.meta, NOW).unwrap() else { panic!() };
        prop_assert_eq!(again.payload(), view.payload());
    }

    /// Q8 on its own: codes symmetric within ±127, the largest magnitude at ±127, the error within half
    /// a step, and the bulk row form identical to the cell form.
    #[test]
    fn q8_vectors(x in proptest::collection::vec(prop_oneof![-1e6f32..1e6, -1.0f32..1.0, Just(0.0f32)], 0..300)) {
        let mut cell = Vec::new();
        ofs_core::q8::encode(&x, false, &mut cell).unwrap();
        let scale = ofs_core::q8::cell_scale(&cell).unwrap();
        let codes = ofs_core::q8::codes_of(&cell[4..]);
        prop_assert!(codes.iter().all(|&q| q != ofs_core::q8::NAN_CODE));
        if scale > 0.0 {
            prop_assert_eq!(codes.iter().map(|q| q.unsigned_abs()).max(), Some(127));
        } else {
            prop_assert!(codes.iter().all(|&q| q == 0));
        }
        let mut back = vec![0f32; x.len()];
        ofs_core::q8::decode_into(&cell, &mut back);
        for (a, b) in x.iter().zip(&back) {
            prop_assert!(f64::from((a - b).abs()) <= f64::from(scale) * 0.500_001 + f64::from(a.abs()) * 1e-6);
        }
        let (mut rows_codes, mut scales) = (vec![0i8; x.len()], vec![0f32; 1]);
        ofs_core::q8::encode_rows(&x, x.len(), false, &mut rows_codes, &mut scales).unwrap();
        if !x.is_empty() {
            prop_assert_eq!(&rows_codes[..], codes);
            prop_assert_eq!(scales[0].to_bits(), scale.to_bits());
        }
    }

    /// bf16: every value survives float32 → bf16 → float32 → bf16 unchanged, and the first step moves a
    /// finite value by at most half a bf16 step (2^-8 relative).
    #[test]
    fn bf16_values(x in proptest::num::f32::ANY) {
        use ofs_core::bf16::{bf16_to_f32, f32_to_bf16};
        let b = f32_to_bf16(x);
        let y = bf16_to_f32(b);
        if x.is_nan() {
            prop_assert!(y.is_nan());
        } else {
            prop_assert_eq!(f32_to_bf16(y), b);
            if y.is_finite() {
                // Subnormals step by 2^-133, so half a step there is 2^-134.
                prop_assert!(f64::from((x - y).abs()) <= f64::from(x.abs()) * 2f64.powi(-8) + 2f64.powi(-134));
            }
        }
    }

    #[test]
    fn corrupted_blocks_never_panic(c in case(), compress in any::<bool>(), flip in any::<(usize, u8)>(), cut in any::<usize>()) {
        let block = encode_case(&c, compress, 0);
        let mut bad = block.clone();
        let i = flip.0 % bad.len();
        bad[i] ^= flip.1 | 1;
        let _ = psdb::decode(&bad, &c.meta, NOW).map(|b| match b {
            Block::Present(v) => { let _ = v.to_array(); for p in 0..c.meta.n_features() { let _ = v.feature(p); } }
            Block::Expired(_) | Block::Missing => {}
        });
        let truncated = &block[..cut % block.len()];
        if !truncated.is_empty() {
            prop_assert!(psdb::decode(truncated, &c.meta, NOW).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), t in 1u8..=LAST_TYPE) {
        let dtype = DataType::from_u8(t).unwrap();
        let slens = if dtype.is_string() { vec![8; 3] } else { Vec::new() };
        let vlens = if dtype.is_vector() { vec![2; 3] } else { Vec::new() };
        let meta = BlockMeta::new(dtype, 1, 3, slens, vlens).unwrap();
        if let Ok(Block::Present(v)) = psdb::decode(&bytes, &meta, NOW) {
            let _ = v.to_array();
            for p in 0..3 { let _ = v.feature(p); }
        }
        let _ = psdb::Header::parse(&bytes);
        if let Ok(it) = csdb::entries(&bytes) { for e in it { let _ = e; } }
    }
}

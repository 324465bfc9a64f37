//! Property tests over every data type: encode → decode round trips, response encoding of each
//! feature, and garbage (random, truncated, bit-flipped) that must decode to an error, never a panic.

use ofs_core::psdb::{self, Block};
use ofs_core::{csdb, Array, BlockMeta, DataType, Element, EncodeOptions, Values};
use proptest::prelude::*;

const NOW: u64 = 1_772_366_400;

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
    (1u8..=30, 1usize..12, 1u16..=5)
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
            let slens = if dtype.element() == Some(Element::String) { vec![40; n] } else { Vec::new() };
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
            _ => f64::from(x),
        }
    };
    match &c.data {
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
                e => prop_assert_eq!(f.len(), count * e.size()),
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
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), t in 1u8..=30) {
        let dtype = DataType::from_u8(t).unwrap();
        let slens = if dtype.element() == Some(Element::String) { vec![8; 3] } else { Vec::new() };
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

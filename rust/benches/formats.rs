//! Criterion benchmarks of the storage formats: PSDB encode / decode / one-feature access, the
//! fp16 / fp8 slice codecs, and CSDB assembly and lookup.
//!
//! Real measurements: `bench/run_formats.sh` (or `cargo bench -p ofs-core --bench formats`).
//! Smoke mode: `cargo test -p ofs-core --benches` runs every benchmark function once (criterion's
//! test mode, also reachable as `cargo bench -p ofs-core --bench formats -- --test`).
//!
//! Benchmark ids are `<group>/<case>/<size>`; `bench/run_formats.sh` reads them back from
//! `target/criterion/**/new/estimates.json`, so keep them stable.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use ofs_core::psdb::{self, Block, EncodeOptions};
use ofs_core::{csdb, float, BlockMeta, DataType, Values};

/// A fixed clock, so no benchmark pays for a `SystemTime` call.
const NOW: u64 = 1_750_000_000;
/// Feature counts of the reference's published PSDB benchmark.
const SIZES: [usize; 3] = [100, 1_000, 10_000];
/// Values in each float-codec benchmark.
const FLOATS: usize = 1_000_000;

/// Deterministic pseudo-random stream (xorshift64*), so every run benchmarks the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Int32 features: counters in 0..100,000 (what counts and ids look like; partly compressible).
fn int32_values(n: usize) -> Vec<i32> {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    (0..n).map(|_| (r.next() % 100_000) as i32).collect()
}

/// FP32 features: scores and embeddings-like values in (-4, 4) (nearly incompressible).
fn fp32_values(n: usize) -> Vec<f32> {
    let mut r = Rng(0xD1B5_4A32_D192_ED03);
    (0..n).map(|_| (r.unit() - 0.5) * 8.0).collect()
}

fn opts(compress: bool) -> EncodeOptions {
    EncodeOptions { expiry_at: NOW + 86_400, now: NOW, compress, saturate: false }
}

/// One PSDB benchmark case: a type, its values and its metadata.
struct Case {
    name: &'static str,
    meta: BlockMeta,
    i32s: Vec<i32>,
    f32s: Vec<f32>,
}

impl Case {
    fn new(dtype: DataType, n: usize) -> Case {
        let meta = BlockMeta::scalar(dtype, 1, n).expect("valid layout");
        match dtype {
            DataType::Int32 => Case { name: "int32", meta, i32s: int32_values(n), f32s: Vec::new() },
            DataType::Fp32 => Case { name: "fp32", meta, i32s: Vec::new(), f32s: fp32_values(n) },
            other => unreachable!("no benchmark data for {other}"),
        }
    }

    fn values(&self) -> Values<'_> {
        if self.i32s.is_empty() {
            Values::F32(&self.f32s)
        } else {
            Values::I32(&self.i32s)
        }
    }

    fn encode(&self, compress: bool) -> Vec<u8> {
        psdb::encode(&self.meta, self.values(), &opts(compress)).expect("encodes")
    }
}

fn cases() -> Vec<Case> {
    [DataType::Int32, DataType::Fp32].into_iter().flat_map(|t| SIZES.map(|n| Case::new(t, n))).collect()
}

/// `raw` = compression disabled (the reference's published setting), `zstd` = compression enabled
/// (kept only when it shrinks the payload).
fn codec_name(compress: bool) -> &'static str {
    if compress {
        "zstd"
    } else {
        "raw"
    }
}

fn payload_bytes(case: &Case) -> u64 {
    case.meta.fixed_payload_len().expect("fixed-width type") as u64
}

fn bench_psdb_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("psdb_encode");
    for case in &cases() {
        for compress in [false, true] {
            g.throughput(Throughput::Bytes(payload_bytes(case)));
            let id = BenchmarkId::new(format!("{}_{}", case.name, codec_name(compress)), case.meta.n_features());
            let o = opts(compress);
            g.bench_with_input(id, case, |b, case| {
                b.iter(|| psdb::encode(black_box(&case.meta), black_box(case.values()), &o).expect("encodes"));
            });
        }
    }
    g.finish();
}

fn bench_psdb_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("psdb_decode");
    for case in &cases() {
        for compress in [false, true] {
            let block = case.encode(compress);
            g.throughput(Throughput::Bytes(payload_bytes(case)));
            let id = BenchmarkId::new(format!("{}_{}", case.name, codec_name(compress)), case.meta.n_features());
            g.bench_with_input(id, &block, |b, block| {
                b.iter(|| match psdb::decode(black_box(block), &case.meta, NOW).expect("decodes") {
                    Block::Present(view) => view.to_array().expect("fixed-width"),
                    _ => unreachable!("block is live"),
                });
            });
        }
    }
    g.finish();
}

/// Serving one feature of a stored block: header parse and validation (plus decompression of the
/// whole payload when it is zstd) and the slice of one feature at a pseudo-random position.
fn bench_psdb_feature(c: &mut Criterion) {
    let mut g = c.benchmark_group("psdb_feature");
    g.throughput(Throughput::Elements(1));
    for case in &cases() {
        for compress in [false, true] {
            let block = case.encode(compress);
            let n = case.meta.n_features();
            let id = BenchmarkId::new(format!("{}_{}", case.name, codec_name(compress)), n);
            g.bench_with_input(id, &block, |b, block| {
                let mut r = Rng(42);
                b.iter(|| {
                    let pos = (r.next() % n as u64) as usize;
                    match psdb::decode(black_box(block), &case.meta, NOW).expect("decodes") {
                        Block::Present(view) => view.feature(pos).len(),
                        _ => unreachable!("block is live"),
                    }
                });
            });
        }
    }
    g.finish();
}

fn bench_float_codecs(c: &mut Criterion) {
    let src = fp32_values(FLOATS);
    let mut f16 = vec![0u16; FLOATS];
    float::encode_f16_slice(&src, &mut f16);
    let mut e4m3 = vec![0u8; FLOATS];
    float::encode_e4m3_slice(&src, &mut e4m3);
    let mut e5m2 = vec![0u8; FLOATS];
    float::encode_e5m2_slice(&src, &mut e5m2);

    let mut g = c.benchmark_group("float");
    g.throughput(Throughput::Elements(FLOATS as u64));
    // Sub-millisecond iterations: flat sampling keeps 100 samples within a short measurement time.
    g.sampling_mode(SamplingMode::Flat);
    let mut codes16 = vec![0u16; FLOATS];
    let mut codes8 = vec![0u8; FLOATS];
    let mut back = vec![0f32; FLOATS];
    g.bench_function(BenchmarkId::new("fp16_encode", FLOATS), |b| {
        b.iter(|| float::encode_f16_slice(black_box(&src), &mut codes16));
    });
    g.bench_function(BenchmarkId::new("fp16_decode", FLOATS), |b| {
        b.iter(|| float::decode_f16_slice(black_box(&f16), &mut back));
    });
    g.bench_function(BenchmarkId::new("e4m3_encode", FLOATS), |b| {
        b.iter(|| float::encode_e4m3_slice(black_box(&src), &mut codes8));
    });
    g.bench_function(BenchmarkId::new("e4m3_decode", FLOATS), |b| {
        b.iter(|| float::decode_e4m3_slice(black_box(&e4m3), &mut back));
    });
    g.bench_function(BenchmarkId::new("e5m2_encode", FLOATS), |b| {
        b.iter(|| float::encode_e5m2_slice(black_box(&src), &mut codes8));
    });
    g.bench_function(BenchmarkId::new("e5m2_decode", FLOATS), |b| {
        b.iter(|| float::decode_e5m2_slice(black_box(&e5m2), &mut back));
    });
    g.finish();
}

/// Ten FG blocks of one entity, as a cache value holds them: FP32 blocks of 100 features
/// (409 bytes each), with FG ids 1..=10.
fn csdb_blocks() -> Vec<(u16, Vec<u8>)> {
    (1..=10u16)
        .map(|fg| {
            let meta = BlockMeta::scalar(DataType::Fp32, 1, 100).expect("valid layout");
            let vals: Vec<f32> = fp32_values(100).iter().map(|v| v + f32::from(fg)).collect();
            (fg, psdb::encode(&meta, Values::F32(&vals), &opts(false)).expect("encodes"))
        })
        .collect()
}

fn bench_csdb(c: &mut Criterion) {
    let blocks = csdb_blocks();
    let entries: Vec<(u16, &[u8])> = blocks.iter().map(|(fg, b)| (*fg, b.as_slice())).collect();
    let value = csdb::encode(&entries, csdb::LAYOUT_1).expect("fits layout 1");

    let mut g = c.benchmark_group("csdb");
    g.throughput(Throughput::Bytes(value.len() as u64));
    g.bench_function(BenchmarkId::new("encode", "10fg"), |b| {
        b.iter(|| csdb::encode(black_box(&entries), csdb::LAYOUT_1).expect("fits layout 1"));
    });
    // Three FGs spread over the value, the last one at the end (the worst case for a scan).
    let wanted = [2u16, 6, 10];
    g.throughput(Throughput::Elements(wanted.len() as u64));
    g.bench_function(BenchmarkId::new("lookup", "3_of_10fg"), |b| {
        let mut out = [None; 3];
        b.iter(|| csdb::lookup(black_box(&value), black_box(&wanted), &mut out).expect("valid"));
    });
    g.finish();
}

criterion_group!(benches, bench_psdb_encode, bench_psdb_decode, bench_psdb_feature, bench_float_codecs, bench_csdb);
criterion_main!(benches);

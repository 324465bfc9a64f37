//! Golden byte vectors (`tests/vectors/*.json` at the repository root) checked through `ofs_core`.
//!
//! The expected bytes come from an independent reference encoder (`tests/test_vectors.py`), written
//! from the reference system's format rules and its worked examples, never from this crate. Each
//! case is encoded and compared byte for byte, decoded back (NaN-aware, bit-exact for floats), and
//! its per-feature response bytes are checked; error cases must fail with the given message. The
//! case schema is documented in `tests/vectors/README.md`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use ofs_core::psdb::{self, Block};
use ofs_core::{bf16, csdb, expiry, float, q8, quant, Array, BlockMeta, DataType, Element, EncodeOptions, Values};
use serde::Deserialize;
use serde_json::Value;

/// One vector. Which fields are used depends on `kind` (see the README of the vector directory).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "default_kind")]
    kind: String,
    data_type: Option<String>,
    version: Option<u16>,
    n_features: Option<usize>,
    string_lengths: Option<Vec<u32>>,
    vector_lengths: Option<Vec<u32>>,
    values: Option<Vec<Value>>,
    decoded: Option<Vec<Value>>,
    now: Option<u64>,
    expiry_at: Option<u64>,
    #[serde(default)]
    compress: bool,
    #[serde(default)]
    saturate: bool,
    hex: Option<String>,
    features_hex: Option<Vec<String>>,
    expiry_hex: Option<String>,
    status: Option<String>,
    error: Option<String>,
    layout: Option<u8>,
    entries: Option<Vec<Entry>>,
    lookup: Option<Lookup>,
    from: Option<String>,
    to: Option<String>,
    src_hex: Option<String>,
    codec: Option<String>,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    fg_id: u16,
    hex: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Lookup {
    fg_ids: Vec<u16>,
    found: Vec<Option<String>>,
}

fn default_kind() -> String {
    "block".to_owned()
}

type Check = Result<(), String>;

fn need<'a, T>(field: Option<&'a T>, name: &str) -> Result<&'a T, String> {
    field.ok_or_else(|| format!("missing field {name:?}"))
}

/// Hex with optional whitespace-separated runs: `"0102 5a*300"` is 01 02 then 300 bytes of 5a.
fn expand_hex(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        let (part, count) = match token.split_once('*') {
            Some((p, n)) => (p, n.parse::<usize>().map_err(|e| format!("run count in {token:?}: {e}"))?),
            None => (token, 1),
        };
        let bytes = hex::decode(part).map_err(|e| format!("hex {part:?}: {e}"))?;
        for _ in 0..count {
            out.extend_from_slice(&bytes);
        }
    }
    Ok(out)
}

/// A JSON float: a number, or one of the strings "nan", "-nan", "inf", "-inf".
fn json_f64(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("not a float: {n}")),
        Value::String(s) => match s.as_str() {
            "nan" => Ok(f64::NAN),
            "-nan" => Ok(-f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            other => Err(format!("not a float: {other:?}")),
        },
        other => Err(format!("not a float: {other}")),
    }
}

fn json_int(v: &Value) -> Result<i128, String> {
    v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from)).ok_or_else(|| format!("not an integer: {v}"))
}

fn same_f64(got: f64, want: f64) -> bool {
    if want.is_nan() {
        got.is_nan() && got.is_sign_negative() == want.is_sign_negative()
    } else {
        got.to_bits() == want.to_bits()
    }
}

fn same_f32(got: f32, want: f32) -> bool {
    if want.is_nan() {
        got.is_nan() && got.is_sign_negative() == want.is_sign_negative()
    } else {
        got.to_bits() == want.to_bits()
    }
}

/// Input values owned in the container a caller would naturally use.
enum Input {
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Input {
    fn from_json(values: &[Value], element: Element) -> Result<Input, String> {
        if element == Element::String {
            let strings = values.iter().map(|v| v.as_str().map(str::to_owned).ok_or(format!("not a string: {v}")));
            return strings.collect::<Result<_, _>>().map(Input::Str);
        }
        if !values.is_empty() && values.iter().all(Value::is_boolean) {
            return Ok(Input::Bool(values.iter().map(|v| v.as_bool() == Some(true)).collect()));
        }
        if !element.is_float() {
            if let Some(ints) = values.iter().map(Value::as_i64).collect::<Option<Vec<_>>>() {
                return Ok(Input::I64(ints));
            }
            if let Some(ints) = values.iter().map(Value::as_u64).collect::<Option<Vec<_>>>() {
                return Ok(Input::U64(ints));
            }
        }
        values.iter().map(json_f64).collect::<Result<_, _>>().map(Input::F64)
    }

    fn with<R>(&self, f: impl FnOnce(Values<'_>) -> R) -> R {
        match self {
            Input::F64(v) => f(Values::F64(v)),
            Input::I64(v) => f(Values::I64(v)),
            Input::U64(v) => f(Values::U64(v)),
            Input::Bool(v) => f(Values::Bool(v)),
            Input::Str(v) => {
                let refs: Vec<&[u8]> = v.iter().map(String::as_bytes).collect();
                f(Values::Str(&refs))
            }
        }
    }
}

fn data_type(name: &str) -> Result<DataType, String> {
    let t: DataType = name.parse().map_err(|e| format!("{e}"))?;
    if t.name() == name {
        Ok(t)
    } else {
        Err(format!("{name:?} is not a reference type name"))
    }
}

fn meta_of(case: &Case) -> Result<BlockMeta, String> {
    let dtype = data_type(need(case.data_type.as_ref(), "data_type")?)?;
    let n = match (&case.vector_lengths, &case.string_lengths, case.n_features, &case.values) {
        (Some(v), ..) => v.len(),
        (None, Some(s), ..) => s.len(),
        (None, None, Some(n), _) => n,
        (None, None, None, Some(values)) => values.len(),
        _ => return Err("cannot tell the number of features".into()),
    };
    BlockMeta::new(
        dtype,
        *need(case.version.as_ref(), "version")?,
        n,
        case.string_lengths.clone().unwrap_or_default(),
        case.vector_lengths.clone().unwrap_or_default(),
    )
    .map_err(|e| format!("meta: {e}"))
}

/// Compares decoded values with the JSON ones (bit-exact floats, NaN by sign).
fn check_array(got: &Array, want: &[Value]) -> Check {
    let n = got.len();
    if n != want.len() {
        return Err(format!("decoded {n} values, want {}", want.len()));
    }
    for (i, w) in want.iter().enumerate() {
        let ok = match got {
            Array::F32(v) => same_f32(v[i], json_f64(w)? as f32),
            Array::F64(v) => same_f64(v[i], json_f64(w)?),
            Array::I8(v) => i128::from(v[i]) == json_int(w)?,
            Array::I16(v) => i128::from(v[i]) == json_int(w)?,
            Array::I32(v) => i128::from(v[i]) == json_int(w)?,
            Array::I64(v) => i128::from(v[i]) == json_int(w)?,
            Array::U8(v) => i128::from(v[i]) == json_int(w)?,
            Array::U16(v) => i128::from(v[i]) == json_int(w)?,
            Array::U32(v) => i128::from(v[i]) == json_int(w)?,
            Array::U64(v) => i128::from(v[i]) == json_int(w)?,
            Array::Bool(v) => Some(v[i]) == w.as_bool(),
            Array::Str(v) => Some(v[i].as_str()) == w.as_str(),
            Array::Bf16(v) => same_f32(ofs_core::bf16::bf16_to_f32(v[i]), json_f64(w)? as f32),
            Array::Q8 { .. } => return Err("decoding never yields the native Q8 form".into()),
        };
        if !ok {
            return Err(format!("decoded value {i} differs: got {got:?}, want {w}"));
        }
    }
    Ok(())
}

fn expect_error<T: std::fmt::Debug>(result: Result<T, String>, want: &str) -> Check {
    match result {
        Err(e) if e.contains(want) => Ok(()),
        Err(e) => Err(format!("error {e:?} does not contain {want:?}")),
        Ok(v) => Err(format!("expected an error containing {want:?}, got {v:?}")),
    }
}

fn run_block(case: &Case) -> Check {
    let meta = meta_of(case)?;
    let now = *need(case.now.as_ref(), "now")?;
    let expiry_at = *need(case.expiry_at.as_ref(), "expiry_at")?;
    let opts = EncodeOptions { expiry_at, now, compress: case.compress, saturate: case.saturate };
    let input = Input::from_json(need(case.values.as_ref(), "values")?, meta.element())?;
    let encoded = input.with(|v| psdb::encode(&meta, v, &opts)).map_err(|e| e.to_string());
    if let Some(want) = &case.error {
        return expect_error(encoded.map(hex::encode), want);
    }
    let block = encoded?;
    let want_hex = need(case.hex.as_ref(), "hex")?;
    if hex::encode(&block) != *want_hex {
        return Err(format!("encoded {}, want {want_hex}", hex::encode(&block)));
    }
    if expiry_at != 0 {
        let want = need(case.expiry_hex.as_ref(), "expiry_hex")?;
        let got = expiry::encode(expiry_at, now).map_err(|e| e.to_string())?;
        if hex::encode(got) != *want {
            return Err(format!("expiry bytes {}, want {want}", hex::encode(got)));
        }
        if expiry::decode(got).map_err(|e| e.to_string())? != Some(expiry_at) {
            return Err("expiry bytes do not decode back".into());
        }
    }
    check_live_block(case, &meta, &block, now)?;
    if expiry_at != 0 {
        check_live_block(case, &meta, &block, expiry_at)?;
        match psdb::decode(&block, &meta, expiry_at + 1).map_err(|e| e.to_string())? {
            Block::Expired(h) if h.expiry_at == Some(expiry_at) => {}
            other => return Err(format!("one second after the expiry: {other:?}")),
        }
    }
    Ok(())
}

fn check_live_block(case: &Case, meta: &BlockMeta, block: &[u8], now: u64) -> Check {
    let Block::Present(view) = psdb::decode(block, meta, now).map_err(|e| e.to_string())? else {
        return Err(format!("block is not present at {now}"));
    };
    let h = view.header();
    let dtype = meta.dtype();
    let expiry = case.expiry_at.filter(|&e| e != 0);
    if (h.version, h.dtype, h.layout, h.expiry_at) != (meta.version(), dtype, 1, expiry) {
        return Err(format!("header {h:?}"));
    }
    let array = view.to_array().map_err(|e| e.to_string())?;
    check_array(&array, case.decoded.as_ref().or(case.values.as_ref()).map_or(&[][..], Vec::as_slice))?;
    let features = need(case.features_hex.as_ref(), "features_hex")?;
    if features.len() != meta.n_features() {
        return Err(format!("{} feature strings for {} features", features.len(), meta.n_features()));
    }
    for (pos, want) in features.iter().enumerate() {
        let got = hex::encode(view.feature(pos));
        if got != *want {
            return Err(format!("feature {pos}: {got}, want {want}"));
        }
    }
    if view.to_uncompressed_block() != block {
        return Err("re-serialized block differs".into());
    }
    Ok(())
}

fn run_decode(case: &Case) -> Check {
    let meta = meta_of(case)?;
    let raw = expand_hex(need(case.hex.as_ref(), "hex")?)?;
    let outcome = psdb::decode(&raw, &meta, *need(case.now.as_ref(), "now")?).and_then(|b| match b {
        Block::Missing => Ok(("missing", None)),
        Block::Expired(_) => Ok(("expired", None)),
        Block::Present(view) => view.to_array().map(|a| ("present", Some(a))),
    });
    let outcome = outcome.map_err(|e| e.to_string());
    if let Some(want) = &case.error {
        return expect_error(outcome, want);
    }
    let (status, array) = outcome?;
    if status != need(case.status.as_ref(), "status")? {
        return Err(format!("status {status}"));
    }
    match (array, &case.values) {
        (Some(a), Some(want)) => check_array(&a, want),
        (None, None) => Ok(()),
        (a, _) => Err(format!("decoded values {a:?} against expected {:?}", case.values)),
    }
}

fn run_expiry_decode(case: &Case) -> Check {
    let raw = expand_hex(need(case.expiry_hex.as_ref(), "expiry_hex")?)?;
    let raw: [u8; 5] = raw.try_into().map_err(|_| "expiry is not 5 bytes")?;
    let got = expiry::decode(raw).map_err(|e| e.to_string());
    if let Some(want) = &case.error {
        return expect_error(got, want);
    }
    let got = got?;
    if got == case.expiry_at {
        Ok(())
    } else {
        Err(format!("decoded {got:?}, want {:?}", case.expiry_at))
    }
}

fn run_csdb(case: &Case) -> Check {
    let entries = need(case.entries.as_ref(), "entries")?
        .iter()
        .map(|e| expand_hex(&e.hex).map(|b| (e.fg_id, b)))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<(u16, &[u8])> = entries.iter().map(|(fg, b)| (*fg, b.as_slice())).collect();
    let layout = *need(case.layout.as_ref(), "layout")?;
    let encoded = csdb::encode(&refs, layout).map_err(|e| e.to_string());
    if let Some(want) = &case.error {
        return expect_error(encoded.map(|v| v.len()), want);
    }
    let value = encoded?;
    if value != expand_hex(need(case.hex.as_ref(), "hex")?)? {
        return Err("encoded CSDB differs".into());
    }
    let parsed = csdb::entries(&value).and_then(Iterator::collect::<ofs_core::Result<Vec<_>>>);
    if parsed.map_err(|e| e.to_string())? != refs {
        return Err("entries do not read back".into());
    }
    if layout == csdb::LAYOUT_1 && csdb::encode_auto(&refs) != value {
        return Err("encode_auto does not pick layout 1".into());
    }
    if let Some(lookup) = &case.lookup {
        let mut out = vec![None; lookup.fg_ids.len()];
        let found = csdb::lookup(&value, &lookup.fg_ids, &mut out).map_err(|e| e.to_string())?;
        let want =
            lookup.found.iter().map(|f| f.as_deref().map(expand_hex).transpose()).collect::<Result<Vec<_>, _>>()?;
        let got: Vec<Option<Vec<u8>>> = out.iter().map(|o| o.map(<[u8]>::to_vec)).collect();
        if got != want || found != want.iter().filter(|w| w.is_some()).count() {
            return Err(format!("lookup of {:?}: got {got:?} ({found} found)", lookup.fg_ids));
        }
    }
    Ok(())
}

fn run_csdb_decode(case: &Case) -> Check {
    let raw = expand_hex(need(case.hex.as_ref(), "hex")?)?;
    let want = need(case.error.as_ref(), "error")?;
    let parsed = csdb::entries(&raw).and_then(Iterator::collect::<ofs_core::Result<Vec<_>>>);
    expect_error(parsed.map_err(|e| e.to_string()), want)?;
    let mut out = [None];
    expect_error(csdb::lookup(&raw, &[u16::MAX], &mut out).map_err(|e| e.to_string()), want)
}

fn run_quantize(case: &Case) -> Check {
    let from = data_type(need(case.from.as_ref(), "from")?)?;
    let to = data_type(need(case.to.as_ref(), "to")?)?;
    let src = expand_hex(need(case.src_hex.as_ref(), "src_hex")?)?;
    let mut out = Vec::new();
    let result = quant::convert(&src, from, to, &mut out).map(|()| hex::encode(&out)).map_err(|e| e.to_string());
    if let Some(want) = &case.error {
        return expect_error(result, want);
    }
    let got = result?;
    if got == *need(case.hex.as_ref(), "hex")? {
        Ok(())
    } else {
        Err(format!("converted to {got}"))
    }
}

fn run_codec(case: &Case) -> Check {
    let xs = need(case.values.as_ref(), "values")?
        .iter()
        .map(|v| json_f64(v).map(|x| x as f32))
        .collect::<Result<Vec<_>, _>>()?;
    let sat = case.saturate;
    let (bytes, decoded): (Vec<u8>, Vec<f32>) = match need(case.codec.as_ref(), "codec")?.as_str() {
        "e4m3" => {
            let codes: Vec<u8> =
                xs.iter().map(|&x| if sat { float::f32_to_e4m3_sat(x) } else { float::f32_to_e4m3(x) }).collect();
            let back = codes.iter().map(|&c| float::e4m3_to_f32(c)).collect();
            (codes, back)
        }
        "e5m2" => {
            let codes: Vec<u8> =
                xs.iter().map(|&x| if sat { float::f32_to_e5m2_sat(x) } else { float::f32_to_e5m2(x) }).collect();
            let back = codes.iter().map(|&c| float::e5m2_to_f32(c)).collect();
            (codes, back)
        }
        "fp16" => {
            let codes: Vec<u16> =
                xs.iter().map(|&x| if sat { float::f32_to_f16_sat(x) } else { float::f32_to_f16(x) }).collect();
            let back = codes.iter().map(|&c| float::f16_to_f32(c)).collect();
            (codes.iter().flat_map(|c| c.to_le_bytes()).collect(), back)
        }
        "bf16" => {
            let codes: Vec<u16> =
                xs.iter().map(|&x| if sat { bf16::f32_to_bf16_sat(x) } else { bf16::f32_to_bf16(x) }).collect();
            let mut slice = vec![0u16; xs.len()];
            bf16::encode_bf16_slice(&xs, &mut slice);
            if !sat && slice != codes {
                return Err("the slice encoder differs from the scalar one".into());
            }
            let back = codes.iter().map(|&c| bf16::bf16_to_f32(c)).collect();
            (codes.iter().flat_map(|c| c.to_le_bytes()).collect(), back)
        }
        "q8" => {
            // `values` is one vector; the codes are its cell (scale, then int8 codes).
            let mut cell = Vec::new();
            let encoded =
                q8::encode(&xs, sat, &mut cell).map_err(|e| format!("element {}: {} is not finite", e.index, e.value));
            if let Some(want) = &case.error {
                return expect_error(encoded, want);
            }
            encoded?;
            let mut back = vec![0f32; xs.len()];
            q8::decode_into(&cell, &mut back);
            (cell, back)
        }
        other => return Err(format!("unknown codec {other:?}")),
    };
    let want = need(case.hex.as_ref(), "hex")?;
    if hex::encode(&bytes) != *want {
        return Err(format!("codes {}, want {want}", hex::encode(&bytes)));
    }
    check_array(&Array::F32(decoded), need(case.decoded.as_ref(), "decoded")?)
}

/// A cell in the response encoding renders as the reference's decoded string (made by Go itself,
/// `tests/vectors/go_format`).
fn run_render(case: &Case) -> Check {
    let dtype = data_type(need(case.data_type.as_ref(), "data_type")?)?;
    let cell = expand_hex(need(case.hex.as_ref(), "hex")?)?;
    let width = case.vector_lengths.as_ref().and_then(|v| v.first().copied()).unwrap_or(0);
    let got = ofs_core::render::cell_string(dtype, &cell, width).map_err(|e| e.to_string())?;
    let want = need(case.text.as_ref(), "text")?;
    if got == *want {
        Ok(())
    } else {
        Err(format!("rendered {got:?}, want {want:?}"))
    }
}

fn run(case: &Case) -> Check {
    match case.kind.as_str() {
        "render" => run_render(case),
        "block" => run_block(case),
        "decode" => run_decode(case),
        "expiry_decode" => run_expiry_decode(case),
        "csdb" => run_csdb(case),
        "csdb_decode" => run_csdb_decode(case),
        "quantize" => run_quantize(case),
        "codec" => run_codec(case),
        other => Err(format!("unknown kind {other:?}")),
    }
}

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors")
}

fn vector_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(vector_dir())
        .expect("tests/vectors exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Vec<Case> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_vector_file_passes() {
    let mut failures = String::new();
    let mut checked = 0;
    for path in vector_files() {
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        for case in load(&path) {
            checked += 1;
            if let Err(e) = run(&case) {
                let _ = writeln!(failures, "{file}: {}: {e}", case.name);
            }
        }
    }
    assert!(failures.is_empty(), "vector failures:\n{failures}");
    assert!(checked > 150, "only {checked} vectors found");
}

#[test]
fn all_topics_are_present() {
    let names: Vec<String> =
        vector_files().iter().filter_map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned())).collect();
    for topic in
        ["csdb.json", "decoded_format.json", "embeddings.json", "expiry.json", "fp8.json", "psdb.json", "quantize.json"]
    {
        assert!(names.iter().any(|n| n == topic), "{topic} missing from {}", vector_dir().display());
    }
}

#[test]
fn every_data_type_has_a_block_vector() {
    let mut seen = Vec::new();
    for path in vector_files() {
        for case in load(&path) {
            if case.kind == "block" && case.error.is_none() {
                seen.push(data_type(case.data_type.as_deref().unwrap_or_default()).expect("a type name"));
            }
        }
    }
    for t in &DataType::ALL[1..] {
        assert!(seen.contains(t), "no encoded vector for {t}");
    }
}

/// The runner itself must notice a wrong byte (guards against a check that silently passes).
#[test]
fn a_corrupted_expectation_fails() {
    let path = vector_dir().join("psdb.json");
    let mut case = load(&path).into_iter().find(|c| c.name.starts_with("appendix: FP32")).expect("appendix case");
    assert!(run(&case).is_ok());
    case.hex = case.hex.map(|h| h.replace("c0", "c1"));
    assert!(run(&case).is_err());
}

//! Go's float formatting, which the reference's decoded API uses for every float it prints:
//! `strconv.FormatFloat(x, 'g', -1, bits)` (what `fmt`'s `%v` does for a float32 or float64) and
//! `strconv.FormatFloat(x, 'f', -1, bits)` (its vector elements).
//!
//! Both start from the shortest decimal digits that read back to `x` at that width; of two such
//! digit strings equally near `x`, the even one (Go uses Dragonbox, which rounds ties to even). The
//! `ryu` crate computes the same digits (shortest, nearest, ties to even: checked against Go for
//! every float32 pattern and thousands of float64 values, `tests/vectors/decoded_format*`). Go's
//! layout rules, from `strconv/ftoa.go` (`formatDigits`, `fmtE`, `fmtF`), are reproduced here:
//!
//! - `'g'` with precision -1 writes the exponent form `d.ddde±XX` when the decimal exponent (the
//!   position of the first digit, `1.5` has 0) is below -4 or at least 6 (`eprec` is 6 for the
//!   shortest form, whatever the digit count): `1e+06`, `1.938266e+09`, `1e-05`, but `123456`,
//!   `0.0001`. The exponent has at least two digits.
//! - `'f'` with precision -1 never uses an exponent: `1e21` is `1000000000000000000000`.
//! - NaN is `NaN`, infinities `+Inf` and `-Inf`, negative zero `-0`.

use std::fmt::Write as _;

/// Shortest round-trip digits of a finite, non-zero value: `±0.d₁d₂…dₙ × 10^dp`, without leading or
/// trailing zeros (Go's `decimalSlice`).
struct Digits {
    neg: bool,
    buf: [u8; 17],
    nd: usize,
    dp: i32,
}

impl Digits {
    fn digits(&self) -> &[u8] {
        &self.buf[..self.nd]
    }

    /// Reads the digits and the point back out of `ryu`'s text (`"1.2345e-7"`, `"0.001"`, `"1e16"`).
    fn from_ryu(text: &str, neg: bool) -> Digits {
        let text = text.trim_start_matches('-');
        let (mantissa, exp) = match text.split_once('e') {
            Some((m, e)) => (m, e.parse::<i32>().expect("ryu writes an integer exponent")),
            None => (text, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut d = Digits { neg, buf: [0; 17], nd: 0, dp: int.len() as i32 + exp };
        for b in int.bytes().chain(frac.bytes()) {
            if d.nd == 0 && b == b'0' {
                d.dp -= 1; // a leading zero: the point is one place further left of the first digit
                continue;
            }
            d.buf[d.nd] = b;
            d.nd += 1;
        }
        while d.nd > 0 && d.buf[d.nd - 1] == b'0' {
            d.nd -= 1;
        }
        d
    }
}

/// A float at the width Go formats it with: `float32` (bit size 32) or `float64` (64). The low-precision
/// formats are rendered as the float32 they decode to, as the reference does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GoFloat {
    F32(f32),
    F64(f64),
}

impl From<f32> for GoFloat {
    fn from(x: f32) -> Self {
        GoFloat::F32(x)
    }
}

impl From<f64> for GoFloat {
    fn from(x: f64) -> Self {
        GoFloat::F64(x)
    }
}

impl GoFloat {
    /// The text of NaN, the infinities and the zeros, or the shortest digits of any other value.
    fn parts(self) -> Result<Digits, &'static str> {
        let (finite, zero, nan, positive) = match self {
            GoFloat::F32(x) => (x.is_finite(), x == 0.0, x.is_nan(), x.is_sign_positive()),
            GoFloat::F64(x) => (x.is_finite(), x == 0.0, x.is_nan(), x.is_sign_positive()),
        };
        match (finite, zero, nan, positive) {
            (_, _, true, _) => Err("NaN"),
            (false, _, _, true) => Err("+Inf"),
            (false, _, _, false) => Err("-Inf"),
            (true, true, _, true) => Err("0"),
            (true, true, _, false) => Err("-0"),
            (true, false, _, _) => {
                let mut buf = ryu::Buffer::new();
                let text = match self {
                    GoFloat::F32(x) => buf.format_finite(x),
                    GoFloat::F64(x) => buf.format_finite(x),
                };
                Ok(Digits::from_ryu(text, !positive))
            }
        }
    }
}

/// Appends Go's `FormatFloat(x, 'g', -1, bits)` (= `fmt.Sprint(x)`) to `out`.
pub fn push_g(out: &mut String, x: impl Into<GoFloat>) {
    let d = match x.into().parts() {
        Ok(d) => d,
        Err(special) => return out.push_str(special),
    };
    if d.neg {
        out.push('-');
    }
    let exp = d.dp - 1;
    if (-4..6).contains(&exp) {
        push_f_digits(out, &d);
    } else {
        push_e(out, &d);
    }
}

/// Appends Go's `FormatFloat(x, 'f', -1, bits)` to `out`.
pub fn push_f(out: &mut String, x: impl Into<GoFloat>) {
    let d = match x.into().parts() {
        Ok(d) => d,
        Err(special) => return out.push_str(special),
    };
    if d.neg {
        out.push('-');
    }
    push_f_digits(out, &d);
}

/// Go's `FormatFloat(x, 'g', -1, bits)` as a new string.
pub fn format_g(x: impl Into<GoFloat>) -> String {
    let mut s = String::new();
    push_g(&mut s, x);
    s
}

/// Go's `FormatFloat(x, 'f', -1, bits)` as a new string.
pub fn format_f(x: impl Into<GoFloat>) -> String {
    let mut s = String::new();
    push_f(&mut s, x);
    s
}

/// `fmtE` with precision `nd - 1`: `d.ddd` then `e`, the sign and at least two exponent digits.
fn push_e(out: &mut String, d: &Digits) {
    let digits = d.digits();
    out.push(char::from(digits[0]));
    if digits.len() > 1 {
        out.push('.');
        push_ascii(out, &digits[1..]);
    }
    let exp = d.dp - 1;
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    let exp = exp.unsigned_abs();
    if exp < 10 {
        out.push('0');
    }
    let _ = write!(out, "{exp}"); // writing to a String cannot fail
}

/// `fmtF` with precision `max(nd - dp, 0)`: the integer part padded with zeros, then every digit.
fn push_f_digits(out: &mut String, d: &Digits) {
    let digits = d.digits();
    let nd = digits.len() as i32;
    if d.dp > 0 {
        let m = nd.min(d.dp) as usize;
        push_ascii(out, &digits[..m]);
        push_zeros(out, (d.dp - m as i32) as usize);
    } else {
        out.push('0');
    }
    if nd > d.dp {
        out.push('.');
        // Zeros between the point and the first digit, then the digits after the integer part.
        push_zeros(out, (-d.dp).max(0) as usize);
        push_ascii(out, &digits[d.dp.max(0) as usize..]);
    }
}

fn push_ascii(out: &mut String, digits: &[u8]) {
    out.push_str(std::str::from_utf8(digits).expect("decimal digits are ASCII"));
}

fn push_zeros(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push('0');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_switches_to_the_exponent_at_minus_5_and_6() {
        for (x, want) in [
            (1e6, "1e+06"),
            (999_999.0, "999999"),
            (123_456.0, "123456"),
            (1_234_567.0, "1.234567e+06"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (0.000_123_45, "0.00012345"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (-2.5e-7, "-2.5e-07"),
            (1.5, "1.5"),
            (100.0, "100"),
        ] {
            assert_eq!(format_g(x), want, "{x:e} as float64");
        }
        assert_eq!(format_g(1_938_266_000f32), "1.938266e+09");
        assert_eq!(format_g(std::f64::consts::PI), "3.141592653589793");
        assert_eq!(format_g(std::f32::consts::PI), "3.1415927");
        assert_eq!(format_g(5e-324), "5e-324");
        assert_eq!(format_g(-1e300), "-1e+300");
        assert_eq!(format_g(f32::MAX), "3.4028235e+38");
    }

    #[test]
    fn ties_between_shortest_digits_go_to_even() {
        // 2720517.25 and -2.42578125, exact float32 values, each halfway between two 8-digit forms.
        let (a, b) = (f32::from_bits(0x4a26_0c15), f32::from_bits(0xc01b_4000));
        assert_eq!((f64::from(a), f64::from(b)), (2_720_517.25, -2.425_781_25));
        assert_eq!(format_g(a), "2.7205172e+06");
        assert_eq!(format_f(a), "2720517.2");
        assert_eq!(format_g(b), "-2.4257812");
        // 2^-12 = 0.000244140625: a tie at an exponent border (go1.22.8 says ...62; Go 1.26 ...63).
        assert_eq!(format_g(2f32.powi(-12)), "0.00024414062");
    }

    #[test]
    fn f_never_uses_an_exponent() {
        assert_eq!(format_f(1e21), "1000000000000000000000");
        assert_eq!(format_f(1e21f32), "1000000000000000000000");
        assert_eq!(format_f(1e-7), "0.0000001");
        assert_eq!(format_f(f32::from_bits(1)), format!("0.{}1", "0".repeat(44)));
        assert_eq!(format_f(-0.5f32), "-0.5");
        assert_eq!(format_f(120.0), "120");
    }

    #[test]
    fn specials() {
        for (x, want) in
            [(f64::NAN, "NaN"), (f64::INFINITY, "+Inf"), (f64::NEG_INFINITY, "-Inf"), (-0.0, "-0"), (0.0, "0")]
        {
            assert_eq!(format_g(x), want);
            assert_eq!(format_f(x), want);
            assert_eq!(format_g(x as f32), want);
            assert_eq!(format_f(x as f32), want);
        }
    }

    /// FNV-1a 64 of each string followed by a newline, as `tests/vectors/go_format` hashes them.
    fn fnv(h: &mut u64, s: &str) {
        for &b in s.as_bytes().iter().chain(b"\n") {
            *h ^= u64::from(b);
            *h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }

    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

    /// `(g, f)` hashes of every float32 whose top byte is `hi`, in bit-pattern order.
    fn sweep_chunk(hi: u32) -> (u64, u64) {
        let (mut g, mut f) = (FNV_OFFSET, FNV_OFFSET);
        let mut s = String::new();
        for lo in 0..1u32 << 24 {
            let x = f32::from_bits(hi << 24 | lo);
            s.clear();
            push_g(&mut s, x);
            fnv(&mut g, &s);
            s.clear();
            push_f(&mut s, x);
            fnv(&mut f, &s);
        }
        (g, f)
    }

    /// Chunks (top bytes of float32 patterns) the default sweep checks besides every 8th: subnormals,
    /// NaN and the infinities, the exponent-border tie ±2^-12 and the ties of the issue (2720517.25,
    /// -2.42578125), each with both signs.
    const SWEEP_ALWAYS: [u32; 8] = [0x00, 0x80, 0x7f, 0xff, 0x39, 0xb9, 0x4a, 0xc0];

    /// Float32 bit patterns (every one with `OFS_GOFMT_FULL_SWEEP=1`: 9 minutes of 2 busy cores here;
    /// else every 8th chunk of 2^24 and [`SWEEP_ALWAYS`], ~40 of 256) and every binary16 code, in both
    /// forms, against Go's strings (hashed per chunk in `tests/vectors/decoded_format_sweep.txt`, made
    /// by `tests/vectors/go_format -sweep`).
    #[test]
    #[ignore = "exhaustive: run with cargo test --release -- --ignored"]
    fn every_float32_and_float16_matches_go() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/decoded_format_sweep.txt");
        let text = std::fs::read_to_string(path).expect("the sweep file");
        let want: std::collections::HashMap<(String, String), u64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                ((cols[0].to_owned(), cols[1].to_owned()), u64::from_str_radix(cols[2], 16).expect("hex hash"))
            })
            .collect();
        assert_eq!(want.len(), 2 * 256 + 2, "{path}: rows");

        let full = std::env::var_os("OFS_GOFMT_FULL_SWEEP").is_some_and(|v| v == "1");
        let chunks: Vec<u32> = (0..256).filter(|hi| full || hi % 8 == 0 || SWEEP_ALWAYS.contains(hi)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut got: Vec<(u32, u64, u64)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&hi) = chunks.get(i) else {
                                return done;
                            };
                            let (g, f) = sweep_chunk(hi);
                            done.push((hi, g, f));
                        }
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("sweep worker")).collect()
        });
        got.sort_unstable();
        let mut bad = Vec::new();
        for (hi, g, f) in got {
            for (form, h) in [("g", g), ("f", f)] {
                if want[&(format!("f32:{hi:02x}"), form.to_owned())] != h {
                    bad.push(format!("float32 {hi:02x}xxxxxx '{form}'"));
                }
            }
        }
        let (mut g, mut f) = (FNV_OFFSET, FNV_OFFSET);
        for code in 0..=u16::MAX {
            let x = crate::float::f16_to_f32(code);
            fnv(&mut g, &format_g(x));
            fnv(&mut f, &format_f(x));
        }
        for (form, h) in [("g", g), ("f", f)] {
            if want[&("f16".to_owned(), form.to_owned())] != h {
                bad.push(format!("float16 '{form}'"));
            }
        }
        assert!(bad.is_empty(), "differ from Go: {bad:?}");
    }
}

package client

import "math"

// Decoders of the low-precision float cells (docs/formats.md). Each is exact: every FP16 and FP8 value
// is a float32, so widening loses nothing. NaN keeps its sign bit.

// fp16ToFloat32 widens an IEEE 754 binary16 value.
func fp16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal: rebias 15 → 127
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	default: // subnormal: mant · 2^-24
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			return -v
		}
		return v
	}
}

// e4m3ToFloat32 widens an FP8 E4M3 ("FN": no infinities, 0x7F/0xFF are NaN) value: 4 exponent bits
// with bias 7, 3 mantissa bits.
func e4m3ToFloat32(b uint8) float32 {
	neg := b&0x80 != 0
	mag := b & 0x7f
	if mag == 0x7f {
		return signedNaN(neg)
	}
	exp := int(mag >> 3)
	mant := float32(mag & 0x7)
	var v float32
	if exp == 0 {
		v = mant / 8 * (1.0 / 64) // subnormal: m/8 · 2^-6
	} else {
		v = (1 + mant/8) * pow2(exp-7)
	}
	if neg {
		return -v
	}
	return v
}

// e5m2ToFloat32 widens an FP8 E5M2 value (IEEE-like: 5 exponent bits with bias 15, 2 mantissa bits,
// with infinities and NaNs).
func e5m2ToFloat32(b uint8) float32 {
	neg := b&0x80 != 0
	exp := int(b>>2) & 0x1f
	mant := float32(b & 0x3)
	var v float32
	switch {
	case exp == 0x1f && mant == 0:
		v = float32(math.Inf(1))
	case exp == 0x1f:
		return signedNaN(neg)
	case exp == 0:
		v = mant / 4 * (1.0 / (1 << 14)) // subnormal: m/4 · 2^-14
	default:
		v = (1 + mant/4) * pow2(exp-15)
	}
	if neg {
		return -v
	}
	return v
}

// bf16ToFloat32 widens a bfloat16 value: its bits are the top half of the float32's (exact).
func bf16ToFloat32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// q8NaN is the Q8 code that stands for NaN (written only when a NaN is stored with saturation).
const q8NaN = -128

// q8Value is the value of a Q8 code at a vector's scale: code × scale (one float32 multiply).
func q8Value(code int8, scale float32) float32 {
	if code == q8NaN {
		return float32(math.NaN())
	}
	return float32(code) * scale
}

// pow2 is 2^e for the small exponents of the FP8 types (exact in float32).
func pow2(e int) float32 {
	return float32(math.Ldexp(1, e))
}

func signedNaN(neg bool) float32 {
	if neg {
		return math.Float32frombits(0xffc00000)
	}
	return math.Float32frombits(0x7fc00000)
}

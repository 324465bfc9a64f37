package main

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// The reference service is built with go1.22.8, whose strconv picks the shortest digits with Ryū:
// the fewest digits that read back to x, the nearest such digits, and of two equally near the even
// one. The Go installed to run this generator may be newer: Go 1.26 moved to Dragonbox, whose float32
// port keeps the float64 tie exponent (-77) where float32 needs -35, so the one float32 tie that falls
// on an exponent border, ±2^-12 = ±0.000244140625, comes out odd ("0.00024414063") there. So the
// strings written are made from digits computed here exactly (math/big), laid out by Go's own rules
// (goLayout), and checked against the installed strconv: any other difference stops the generator.

// exactShortest returns the shortest round-trip digits of |x| at the given bit size, nearest and
// ties to even, as (digits, dp) with x = 0.digits × 10^dp. x is finite and non-zero.
func exactShortest(x float64, bits int) (string, int) {
	x = math.Abs(x)
	xr := new(big.Rat).SetFloat64(x)
	var prev, next *big.Rat
	var even bool
	if bits == 32 {
		f := float32(x)
		even = math.Float32bits(f)&1 == 0
		prev = new(big.Rat).SetFloat64(float64(math.Nextafter32(f, 0)))
		if f == math.MaxFloat32 {
			next = new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), 128))
		} else {
			next = new(big.Rat).SetFloat64(float64(math.Nextafter32(f, float32(math.Inf(1)))))
		}
	} else {
		even = math.Float64bits(x)&1 == 0
		prev = new(big.Rat).SetFloat64(math.Nextafter(x, 0))
		if x == math.MaxFloat64 {
			next = new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), 1024))
		} else {
			next = new(big.Rat).SetFloat64(math.Nextafter(x, math.Inf(1)))
		}
	}
	half := big.NewRat(1, 2)
	lo := new(big.Rat).Mul(new(big.Rat).Add(prev, xr), half)
	hi := new(big.Rat).Mul(new(big.Rat).Add(xr, next), half)
	inside := func(v *big.Rat) bool {
		cl, ch := v.Cmp(lo), v.Cmp(hi)
		if even {
			return cl >= 0 && ch <= 0
		}
		return cl > 0 && ch < 0
	}
	// dp: the smallest e with x < 10^e.
	dp := int(math.Floor(math.Log10(x))) + 1
	for xr.Cmp(pow10Rat(dp)) >= 0 {
		dp++
	}
	for xr.Cmp(pow10Rat(dp-1)) < 0 {
		dp--
	}
	for n := 1; n <= 20; n++ {
		unit := pow10Rat(dp - n) // the value of one in the n-th digit
		t := new(big.Rat).Quo(xr, unit)
		down := new(big.Int).Quo(t.Num(), t.Denom())
		up := new(big.Int).Add(down, big.NewInt(1))
		vd := new(big.Rat).Mul(new(big.Rat).SetInt(down), unit)
		vu := new(big.Rat).Mul(new(big.Rat).SetInt(up), unit)
		okd, oku := inside(vd), inside(vu)
		var pick *big.Int
		switch {
		case okd && oku:
			c := new(big.Rat).Sub(xr, vd).Cmp(new(big.Rat).Sub(vu, xr))
			switch {
			case c < 0:
				pick = down
			case c > 0:
				pick = up
			case down.Bit(0) == 0:
				pick = down
			default:
				pick = up
			}
		case okd:
			pick = down
		case oku:
			pick = up
		default:
			continue
		}
		digits := pick.String()
		d := dp - n + len(digits) // a carry (99 -> 100) adds a digit in front
		return strings.TrimRight(digits, "0"), d
	}
	panic(fmt.Sprintf("no shortest digits for %v", x))
}

func pow10Rat(e int) *big.Rat {
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(e))), nil)
	if e >= 0 {
		return new(big.Rat).SetInt(p)
	}
	return new(big.Rat).SetFrac(big.NewInt(1), p)
}

func abs(e int) int {
	if e < 0 {
		return -e
	}
	return e
}

// goLayout writes digits (x = ±0.digits × 10^dp) as strconv's formatDigits does for precision -1:
// 'g' is %e (d.ddde±XX) when the exponent dp-1 is below -4 or at least 6 (eprec is 6 for the shortest
// form), else %f; 'f' is the integer part padded with zeros, then every remaining digit.
func goLayout(neg bool, digits string, dp int, form byte) string {
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	if exp := dp - 1; form == 'g' && (exp < -4 || exp >= 6) {
		b.WriteByte(digits[0])
		if len(digits) > 1 {
			b.WriteString("." + digits[1:])
		}
		sign := byte('+')
		if exp < 0 {
			sign, exp = '-', -exp
		}
		fmt.Fprintf(&b, "e%c%02d", sign, exp)
		return b.String()
	}
	if dp > 0 {
		m := min(len(digits), dp)
		b.WriteString(digits[:m] + strings.Repeat("0", dp-m))
	} else {
		b.WriteByte('0')
	}
	if len(digits) > dp {
		b.WriteString("." + strings.Repeat("0", max(-dp, 0)) + digits[max(dp, 0):])
	}
	return b.String()
}

// knownNewerGoDifference reports the patterns where the installed Go's shortest digits may differ
// from go1.22.8's (see above): float32 ±2^-12.
func knownNewerGoDifference(x float64, bits int) bool {
	return bits == 32 && math.Abs(x) == math.Ldexp(1, -12)
}

// goFloat is FormatFloat(x, form, -1, bits) as go1.22.8 writes it: exact digits in Go's layout,
// checked against the installed strconv (and fmt's %v for 'g').
func goFloat(x float64, form byte, bits int) string {
	var want string
	switch {
	case math.IsNaN(x):
		want = "NaN"
	case math.IsInf(x, 1):
		want = "+Inf"
	case math.IsInf(x, -1):
		want = "-Inf"
	case x == 0 && math.Signbit(x):
		want = "-0"
	case x == 0:
		want = "0"
	default:
		digits, dp := exactShortest(x, bits)
		want = goLayout(math.Signbit(x), digits, dp, form)
	}
	got := strconv.FormatFloat(x, form, -1, bits)
	if form == 'g' {
		var v any = x
		if bits == 32 {
			v = float32(x)
		}
		if s := fmt.Sprintf("%v", v); s != got {
			panic(fmt.Sprintf("%%v %q != FormatFloat 'g' %q", s, got))
		}
	}
	if got != want && !knownNewerGoDifference(x, bits) {
		panic(fmt.Sprintf("strconv.FormatFloat(%v, %c, -1, %d) = %q, exact digits in Go's layout give %q",
			x, form, bits, got, want))
	}
	return want
}

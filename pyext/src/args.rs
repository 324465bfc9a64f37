//! Range-checked integer arguments. `PyO3` alone answers an out-of-range int with a bare
//! `OverflowError`; callers get an `InvalidInputError` (a `ValueError`) that says what did not fit.

use pyo3::prelude::*;
use pyo3::types::PyInt;

use crate::errors::invalid;

/// An integer of type `T`, extracted with a range check.
#[derive(Debug, Clone, Copy)]
pub struct Int<T>(pub T);

/// Integer types with printable bounds.
pub trait Bounded: Sized + TryFrom<i128> {
    const NAME: &'static str;
    const LO: i128;
    const HI: i128;
}

macro_rules! bounded {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            const NAME: &'static str = stringify!($t);
            const LO: i128 = <$t>::MIN as i128;
            const HI: i128 = <$t>::MAX as i128;
        }
    )*};
}
bounded!(u8, u16, u32, u64, usize);

impl<'py, T: Bounded> FromPyObject<'_, 'py> for Int<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let out_of_range =
            |shown: String| invalid(format!("{shown} is out of range for {} ({}..={})", T::NAME, T::LO, T::HI));
        match obj.extract::<i128>() {
            Ok(wide) => T::try_from(wide).map(Int).map_err(|_| out_of_range(wide.to_string())),
            Err(_) if obj.is_instance_of::<PyInt>() => Err(out_of_range(obj.to_string())),
            Err(e) => Err(e),
        }
    }
}

/// The caller's `now` (unix seconds), or the clock.
pub fn now_or_clock(now: Option<Int<u64>>) -> u64 {
    now.map_or_else(ofs_core::expiry::unix_now, |Int(n)| n)
}

/// Unwraps a vector of checked integers.
pub fn ints<T>(v: Vec<Int<T>>) -> Vec<T> {
    v.into_iter().map(|Int(x)| x).collect()
}

//! The one mapping from core errors to the Python exception tree (`online_feature_store.errors`).

use ofs_core::{Error, ErrorKind};
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Raises `online_feature_store.errors.<class_name>(message)`.
pub fn raise(py: Python<'_>, class_name: &str, message: String) -> PyErr {
    let class = py
        .import("online_feature_store.errors")
        .and_then(|m| m.getattr(class_name))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
    match class {
        Ok(cls) => PyErr::from_type(cls, message),
        Err(e) => e,
    }
}

/// Every kind, in [`class_name`]'s order (the test below holds the two together).
pub const KINDS: [ErrorKind; 6] = [
    ErrorKind::InvalidInput,
    ErrorKind::Corrupt,
    ErrorKind::NotFound,
    ErrorKind::ResourceExhausted,
    ErrorKind::Unavailable,
    ErrorKind::DeadlineExceeded,
];

/// The class of `online_feature_store.errors` a core error of `kind` becomes.
pub fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "InvalidInputError",
        ErrorKind::Corrupt => "CorruptBlockError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::ResourceExhausted => "ResourceExhaustedError",
        ErrorKind::Unavailable => "UnavailableError",
        ErrorKind::DeadlineExceeded => "DeadlineExceededError",
    }
}

/// Converts a core error to its Python exception.
pub fn to_py(err: &Error) -> PyErr {
    Python::attach(|py| raise(py, class_name(err.kind()), err.to_string()))
}

/// `?`-friendly conversion for core results (errors that convert into [`Error`]).
pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T, E: Into<Error>> IntoPy<T> for Result<T, E> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(|e| to_py(&e.into()))
    }
}

/// Bad input detected in the bindings themselves (wrong Python types or shapes).
pub fn invalid(message: impl Into<String>) -> PyErr {
    Python::attach(|py| raise(py, "InvalidInputError", message.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_lists_every_kind_once() {
        // A kind missing from KINDS would reach the serving front's status table unmapped.
        let names: std::collections::HashSet<_> = KINDS.iter().map(|k| class_name(*k)).collect();
        assert_eq!(names.len(), KINDS.len());
        let every = |k: ErrorKind| match k {
            ErrorKind::InvalidInput
            | ErrorKind::Corrupt
            | ErrorKind::NotFound
            | ErrorKind::ResourceExhausted
            | ErrorKind::Unavailable
            | ErrorKind::DeadlineExceeded => KINDS.contains(&k),
        };
        assert!(KINDS.iter().all(|k| every(*k)));
    }
}

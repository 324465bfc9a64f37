//! The one error type of the core. Every variant names what is wrong; the bindings map each
//! [`ErrorKind`] to one Python exception class and the services map those to gRPC/HTTP statuses.

use crate::dtype::{DataType, UnknownDataType};

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse classification used by every boundary (Python exceptions, gRPC codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller sent something that cannot be accepted (bad value, count, length, name).
    InvalidInput,
    /// Stored or received bytes do not form a valid block.
    Corrupt,
    /// A named entity, feature group or feature does not exist.
    NotFound,
    /// The request is over a size limit, or memory for it could not be had: refused before the work.
    ResourceExhausted,
    /// A backing service (a store) could not answer: down, timed out, refused the connection.
    Unavailable,
    /// The call's deadline passed before the work (a store call) could start.
    DeadlineExceeded,
}

/// Everything that can go wrong in the core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    UnknownDataType(#[from] UnknownDataType),

    #[error("{context}: expected {expected} values, got {got}")]
    WrongCount { context: String, expected: usize, got: usize },

    /// `feature` is the feature's position; `element` the position inside a vector feature.
    #[error("feature {feature}{}: value {value} is out of range for {dtype}", element_suffix(*.element))]
    OutOfRange { feature: usize, element: Option<usize>, value: String, dtype: DataType },

    #[error("feature {feature}{}: {value} is not an integer, as {dtype} requires", element_suffix(*.element))]
    NotInteger { feature: usize, element: Option<usize>, value: String, dtype: DataType },

    /// NaN or ±Inf for a type that holds finite values only (Q8), without saturation.
    #[error(
        "feature {feature}{}: {value} cannot be stored as {dtype}, which holds finite values only (saturate stores ±Inf as the vector's largest magnitude and NaN as code -128)",
        element_suffix(*.element)
    )]
    NotFinite { feature: usize, element: Option<usize>, value: String, dtype: DataType },

    #[error("feature {feature}: string of {len} bytes exceeds its booked length {max}")]
    StringTooLong { feature: usize, len: usize, max: usize },

    #[error("{dtype} cannot be written from {given} values")]
    WrongValueKind { dtype: DataType, given: &'static str },

    #[error("invalid TTL: {0}")]
    InvalidTtl(String),

    #[error("invalid feature group metadata: {0}")]
    InvalidMeta(String),

    #[error("{0}")]
    InvalidInput(String),

    #[error("corrupt block: {0}")]
    Corrupt(String),

    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    /// A request over one of the [`crate::limits::Limits`]: `size` and `limit` in `unit`s, `setting`
    /// the name of the setting that holds the limit.
    #[error("{what}: {size} {unit}, over the limit of {limit} {unit} ({setting})")]
    ResourceExhausted { what: String, size: u64, unit: &'static str, limit: u64, setting: &'static str },

    /// An allocation the allocator refused: reported instead of aborting the process.
    #[error("out of memory: cannot allocate {bytes} bytes for {what}")]
    OutOfMemory { what: &'static str, bytes: u64 },

    /// A store could not perform a call (the message names the store and the call, then the cause). A
    /// store never answers "missing" for a read it could not perform.
    #[error("{0}")]
    Unavailable(String),

    /// The deadline of the call passed before `0` (the store calls of a request).
    #[error("deadline exceeded before {0}")]
    DeadlineExceeded(String),
}

fn element_suffix(element: Option<usize>) -> String {
    element.map(|e| format!(" element {e}")).unwrap_or_default()
}

impl Error {
    /// Rewrites a value-stream index (as produced by value conversion) into feature / element
    /// positions, using `locate(index) -> (feature, element within a vector feature)`.
    pub(crate) fn at_value(self, locate: impl Fn(usize) -> (usize, Option<usize>)) -> Error {
        match self {
            Error::OutOfRange { feature, value, dtype, .. } => {
                let (feature, element) = locate(feature);
                Error::OutOfRange { feature, element, value, dtype }
            }
            Error::NotInteger { feature, value, dtype, .. } => {
                let (feature, element) = locate(feature);
                Error::NotInteger { feature, element, value, dtype }
            }
            Error::NotFinite { feature, value, dtype, .. } => {
                let (feature, element) = locate(feature);
                Error::NotFinite { feature, element, value, dtype }
            }
            other => other,
        }
    }

    /// Which boundary class this error belongs to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::ResourceExhausted { .. } | Error::OutOfMemory { .. } => ErrorKind::ResourceExhausted,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            _ => ErrorKind::InvalidInput,
        }
    }

    pub(crate) fn corrupt(msg: impl Into<String>) -> Error {
        Error::Corrupt(msg.into())
    }
}

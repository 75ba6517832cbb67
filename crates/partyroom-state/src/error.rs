//! Errors returned when loading JSON into state.

use std::fmt;

/// Loading a snapshot or a packet into state failed.
///
/// The error names the path (dot-separated, from the root of the value being loaded) at which
/// the input did not fit the state's shape. Loading through [`crate::Tracker::load`] or
/// [`crate::load_into`] never leaves a half-applied state behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// Path segments from the root to the offending value.
    path: Vec<String>,
    /// What went wrong at that path.
    kind: LoadErrorKind,
}

/// What went wrong while loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadErrorKind {
    /// The JSON value has the wrong type for the field (message from serde).
    #[error("{0}")]
    Invalid(String),
    /// An object was expected (a struct or a map).
    #[error("expected an object, found {0}")]
    ExpectedObject(&'static str),
    /// An array (or an index-keyed object) was expected.
    #[error("expected an array, found {0}")]
    ExpectedArray(&'static str),
    /// `"$delete"` was given for a value that cannot be removed.
    #[error("\"$delete\" cannot remove a required field")]
    CannotDelete,
    /// An index-keyed object named an index that is not the next free one.
    #[error("index {0} is out of bounds")]
    IndexOutOfBounds(usize),
}

impl LoadError {
    /// A new error at the current (empty) path.
    pub fn new(kind: LoadErrorKind) -> Self {
        Self {
            path: Vec::new(),
            kind,
        }
    }

    /// A serde error at the current path.
    pub fn invalid(err: impl fmt::Display) -> Self {
        Self::new(LoadErrorKind::Invalid(err.to_string()))
    }

    /// Prefix the path with one segment (called while unwinding).
    #[must_use]
    pub fn at(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }

    /// The path as a dot-separated string (`players.abc.x`); empty for the root.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for (i, seg) in self.path.iter().rev().enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }

    /// What went wrong.
    pub fn kind(&self) -> &LoadErrorKind {
        &self.kind
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "at the root: {}", self.kind)
        } else {
            write!(f, "at `{}`: {}", self.path(), self.kind)
        }
    }
}

/// The JSON type name of a value, for error messages.
pub(crate) fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

use thiserror::Error;

/// Errors of a nested layer's configuration, found by its `check` before `init` (which
/// panics on the same problems, as Burn's layers do): model configs that users write call
/// `check` to report them.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NnError {
    /// The configuration cannot describe a layer.
    #[error("{layer}: {reason}")]
    InvalidConfig {
        /// The layer kind (`NestedMultiHeadAttention`, ...).
        layer: &'static str,
        /// What is wrong, with the values involved.
        reason: String,
    },
}

impl NnError {
    pub(crate) fn invalid(layer: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig { layer, reason: reason.into() }
    }
}

/// `Err` with the first of `problems` (a layer's checks, in order), if any.
pub(crate) fn first_problem(
    layer: &'static str,
    problems: impl IntoIterator<Item = Option<String>>,
) -> Result<(), NnError> {
    match problems.into_iter().flatten().next() {
        Some(problem) => Err(NnError::invalid(layer, problem)),
        None => Ok(()),
    }
}

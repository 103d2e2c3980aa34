//! Errors of the shared types.

/// A prompt version that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// No grading prompt has this version name.
    #[error("grade prompt `{version}` is not known (known: {known})")]
    UnknownGradePrompt {
        /// The version asked for.
        version: String,
        /// The known versions, comma-separated.
        known: String,
    },
}

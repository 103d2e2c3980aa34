//! Typed errors. Each one about a request names its record (`pair q1-d184`,
//! `document 12, query 2`), so a failed pair can be found and the others go on.

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API config: field `{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    /// A record that cannot be sent (nothing to grade, a field over the limit).
    #[error("record {record}: field `{field}`: {message}")]
    Input {
        record: String,
        field: String,
        message: String,
    },
    /// The server answered with an error status: one that is never retried (400, 401, 404, ...),
    /// or a retryable one (429, 5xx) that outlasted the retries.
    #[error("{record}: HTTP {status} after {attempts} attempt(s): {message}")]
    Status {
        record: String,
        status: u16,
        attempts: u32,
        /// The server's error message (`error.message` of the body, else the body itself).
        message: String,
    },
    /// No answer at all: connect errors and timeouts that outlasted the retries.
    #[error("{record}: no response after {attempts} attempt(s): {message}")]
    Transport {
        record: String,
        attempts: u32,
        message: String,
    },
    /// A 2xx answer that is not a chat completion (not JSON, no `choices`, ...).
    #[error("{record}: malformed response: {message}; body starts {excerpt:?}")]
    Malformed {
        record: String,
        message: String,
        excerpt: String,
    },
    /// A well-formed completion whose answer cannot be used (no grade in it).
    #[error("{record}: unusable answer {answer:?}: {message}")]
    Answer {
        record: String,
        answer: String,
        message: String,
    },
    #[error("response cache: {0}")]
    Cache(#[from] labelfleet_cache::CacheError),
    #[error("HTTP client: {0}")]
    Client(String),
}

impl ApiError {
    /// The record the error is about, when it is about one.
    pub fn record(&self) -> Option<&str> {
        match self {
            ApiError::Input { record, .. }
            | ApiError::Status { record, .. }
            | ApiError::Transport { record, .. }
            | ApiError::Malformed { record, .. }
            | ApiError::Answer { record, .. } => Some(record),
            ApiError::Config { .. } | ApiError::Cache(_) | ApiError::Client(_) => None,
        }
    }
}

/// At most `max` characters of `text`, for error messages.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

//! Typed errors of the engine. Every variant names the file, tensor or record at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SlmError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid model config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("weights {path}: tensor `{name}`: {message}")]
    Weights {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("record {record}: field `{field}`: {message}")]
    Input {
        record: String,
        field: String,
        message: String,
    },
    #[error("invalid argument: {0}")]
    Argument(String),
    #[error(transparent)]
    Prompt(#[from] labelfleet_types::PromptError),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, SlmError>;

impl SlmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SlmError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SlmError::Config {
            path: path.into(),
            message: message.into(),
        }
    }
    pub(crate) fn input(
        record: impl Into<String>,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        SlmError::Input {
            record: record.into(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

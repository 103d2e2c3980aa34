//! labelfleet's shared domain types, with no model runtime behind them (no libtorch, no
//! tokenizer): what the local engine (`labelfleet-slm`) and the API teacher
//! (`labelfleet-openai`) both speak.
//!
//! - [`pair`]: a (query, document) [`Pair`] to grade, and the [`InputLimits`] on its text;
//! - [`grading`]: the [`Grading`] a grader gives a pair;
//! - [`card`]: the model card of a student checkpoint;
//! - [`chat`]: [`ChatMessage`]s and the [`ChatTemplate`]s that render them to prompt text;
//! - [`prompt`]: the versioned prompts ([`GradePrompt`], `query-v1`, `query-meta-v1`) and the
//!   one definition of their chat messages;
//! - [`query`]: query synthesis: [`SeedDocument`]s, [`QueryIntent`]s, [`GeneratedQuery`]s and
//!   the clean-up of what a model writes;
//! - [`sanitize`]: stripping special-token strings from user text;
//! - [`qrels`]: the one writer of TREC qrels lines;
//! - [`sampling`]: [`SamplingParams`] of text generation;
//! - [`home`]: where labelfleet keeps its models and caches.
//!
//! Prompt bytes are a promise: a version's text never changes (tests pin them).

pub mod card;
pub mod chat;
pub mod error;
pub mod grading;
pub mod home;
pub mod pair;
pub mod prompt;
pub mod qrels;
pub mod query;
pub mod sampling;
pub mod sanitize;

pub use chat::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use error::PromptError;
pub use grading::Grading;
pub use home::{home_dir, resolve_model};
pub use pair::{InputLimits, Pair};
pub use prompt::GradePrompt;
pub use qrels::{push_qrels_line, qrels_line, QrelsError};
pub use query::{GeneratedQuery, QueryIntent, SeedDocument};
pub use sampling::SamplingParams;
pub use sanitize::strip_special_tokens;

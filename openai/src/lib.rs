//! labelfleet's API teacher: relevance grading and query synthesis over any OpenAI-compatible
//! `/v1/chat/completions` endpoint (OpenAI, Azure, vLLM, Ollama, llama.cpp's `llama-server`).
//!
//! It sends exactly the prompts of the local engine (`grade-v1`, `query-v1`, built by the
//! engine's own [`labelfleet_types::prompt::grade_messages`] and
//! [`labelfleet_types::prompt::query_messages`]), and reads a grade distribution from the
//! `top_logprobs` of the first answer token, as the local decoder grader reads the grade logits.
//! It depends on the torch-free `labelfleet-types`, never on the engine: no libtorch here. Around every request: bounded concurrency,
//! token-bucket rate limits (requests and tokens per minute), retries with exponential backoff
//! and jitter (honouring `Retry-After`), a content-keyed response cache (a re-run sends
//! nothing), and accounting of tokens and cost ([`Usage`]).

pub mod client;
pub mod config;
pub mod error;
pub mod grading;
pub mod querygen;
pub mod ratelimit;
pub mod usage;
mod wire;

pub use client::ApiClient;
pub use config::ApiConfig;
pub use error::ApiError;
pub use grading::{ApiGrading, GradeSource};
pub use usage::{Tally, Usage};

//! The client's settings. Serde, so they come from flags, the environment or a file alike;
//! every field but `base_url` and `model` has a default.

use crate::error::ApiError;
use labelfleet_types::GradePrompt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The API root that `/chat/completions` is appended to, e.g. `https://api.openai.com/v1`
    /// or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model name sent with each request.
    pub model: String,
    /// Environment variable holding the API key. Unset or empty: no `Authorization` header
    /// (local servers).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// Limit on one HTTP attempt, connecting included, in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Retries after the first attempt (connect errors, timeouts, 429 and 5xx only).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff delay; it doubles with each retry, up to `backoff_max_ms`, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests per minute (token bucket); none = unlimited.
    #[serde(default)]
    pub requests_per_minute: Option<f64>,
    /// Prompt plus completion tokens per minute (token bucket); none = unlimited.
    #[serde(default)]
    pub tokens_per_minute: Option<f64>,
    /// Seconds of allowance the rate buckets hold (the largest burst): a minute by default,
    /// as providers count; a worker's share of a job-wide limit holds one second.
    #[serde(default = "default_rate_burst_s")]
    pub rate_burst_s: f64,
    /// USD per million prompt tokens, for the cost in [`crate::Usage`].
    #[serde(default)]
    pub price_input_per_mtok: f64,
    /// USD per million completion tokens.
    #[serde(default)]
    pub price_output_per_mtok: f64,
    /// Alternatives asked for at the answer position when grading (OpenAI allows up to 20).
    #[serde(default = "default_top_logprobs")]
    pub top_logprobs: u32,
    /// Grades 0..N-1, each answered as one digit.
    #[serde(default = "default_num_grades")]
    pub num_grades: usize,
    /// The grading prompt version (`grade-v1`, `grade-v2`), as the local engine's.
    #[serde(default)]
    pub grade_prompt: GradePrompt,
    /// Document bodies are cut to this many bytes (on a character boundary) before they go
    /// into a prompt; a grade records whether its document was cut.
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: usize,
}

fn default_api_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_timeout_s() -> f64 {
    120.0
}
fn default_max_retries() -> u32 {
    6
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    60_000
}
fn default_rate_burst_s() -> f64 {
    60.0
}
fn default_concurrency() -> usize {
    8
}
fn default_top_logprobs() -> u32 {
    20
}
fn default_num_grades() -> usize {
    4
}
fn default_max_document_bytes() -> usize {
    32 * 1024
}

impl ApiConfig {
    /// A config with every default, for `base_url` and `model`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        ApiConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: default_api_key_env(),
            timeout_s: default_timeout_s(),
            max_retries: default_max_retries(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            concurrency: default_concurrency(),
            requests_per_minute: None,
            tokens_per_minute: None,
            rate_burst_s: default_rate_burst_s(),
            price_input_per_mtok: 0.0,
            price_output_per_mtok: 0.0,
            top_logprobs: default_top_logprobs(),
            num_grades: default_num_grades(),
            grade_prompt: GradePrompt::default(),
            max_document_bytes: default_max_document_bytes(),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |field: &'static str, message: String| Err(ApiError::Config { field, message });
        let url = self.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad(
                "base_url",
                format!("`{url}` is not an http:// or https:// URL"),
            );
        }
        if self.model.trim().is_empty() {
            return bad("model", "empty".into());
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return bad(
                "timeout_s",
                format!("{} is not a positive number", self.timeout_s),
            );
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1".into());
        }
        for (field, v) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return bad(field, format!("{v} is not a positive number"));
                }
            }
        }
        if !(self.rate_burst_s.is_finite() && self.rate_burst_s > 0.0) {
            return bad(
                "rate_burst_s",
                format!("{} is not a positive number", self.rate_burst_s),
            );
        }
        for (field, v) in [
            ("price_input_per_mtok", self.price_input_per_mtok),
            ("price_output_per_mtok", self.price_output_per_mtok),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("{v} is not a price"));
            }
        }
        if !(2..=10).contains(&self.num_grades) {
            return bad(
                "num_grades",
                format!(
                    "{}: grades are single digits, 2 to 10 of them",
                    self.num_grades
                ),
            );
        }
        if self.top_logprobs == 0 {
            return bad(
                "top_logprobs",
                "must be at least 1 to read a distribution".into(),
            );
        }
        if self.max_document_bytes < 64 {
            return bad(
                "max_document_bytes",
                format!("{} is too small for a document", self.max_document_bytes),
            );
        }
        Ok(())
    }

    /// `<base_url>/chat/completions`.
    pub fn chat_url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.base_url.trim().trim_end_matches('/')
        )
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// The API key from `api_key_env`, if it is set and not empty.
    pub fn api_key(&self) -> Option<String> {
        std::env::var(&self.api_key_env)
            .ok()
            .filter(|k| !k.trim().is_empty())
    }

    /// The grade labels "0".."N-1".
    pub fn grade_labels(&self) -> Vec<String> {
        (0..self.num_grades).map(|g| g.to_string()).collect()
    }

    /// USD for the given tokens at this config's prices.
    pub fn cost_usd(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.price_input_per_mtok
            + completion_tokens as f64 * self.price_output_per_mtok)
            / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_a_minimal_file_and_unknown_fields_are_refused() {
        let c: ApiConfig =
            serde_json::from_str(r#"{"base_url": "http://127.0.0.1:8080/v1/", "model": "m"}"#)
                .unwrap();
        assert_eq!(c, ApiConfig::new("http://127.0.0.1:8080/v1/", "m"));
        assert_eq!(c.grade_prompt, GradePrompt::V1);
        let v2: ApiConfig = serde_json::from_str(
            r#"{"base_url": "http://h/v1", "model": "m", "grade_prompt": "grade-v2"}"#,
        )
        .unwrap();
        assert_eq!(v2.grade_prompt, GradePrompt::V2);
        assert_eq!(c.chat_url(), "http://127.0.0.1:8080/v1/chat/completions");
        c.validate().unwrap();
        let e = serde_json::from_str::<ApiConfig>(
            r#"{"base_url": "http://x/v1", "model": "m", "concurency": 3}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("concurency"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = ApiConfig::new("127.0.0.1:8080", "m");
        assert!(c.validate().unwrap_err().to_string().contains("`base_url`"));
        c.base_url = "http://h/v1".into();
        c.tokens_per_minute = Some(0.0);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`tokens_per_minute`"));
        c.tokens_per_minute = None;
        c.num_grades = 11;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`num_grades`"));
    }

    #[test]
    fn cost_follows_prices() {
        let mut c = ApiConfig::new("http://h/v1", "m");
        c.price_input_per_mtok = 2.5;
        c.price_output_per_mtok = 10.0;
        assert!((c.cost_usd(1_000_000, 100_000) - 3.5).abs() < 1e-12);
    }
}

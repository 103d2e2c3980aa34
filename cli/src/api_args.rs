//! The API-teacher flags: grade or write queries through any OpenAI-compatible
//! `/v1/chat/completions` endpoint instead of a local model. Shared by `score`, `generate` and
//! `run`. Each flag also answers to a `--teacher-` form (`--teacher-api-base`, ...), which reads
//! better where a command has a student too.

use anyhow::{bail, Result};
use clap::Args;
use labelfleet_openai::{ApiClient, ApiConfig, Usage};
use labelfleet_slm::grading::GradePrompt;
use std::path::PathBuf;

#[derive(Args, Clone, Debug, Default)]
pub struct ApiArgs {
    /// OpenAI-compatible API root, e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1:
    /// the teacher runs there instead of a local --model.
    #[arg(long, value_name = "URL", alias = "teacher-api-base")]
    pub api_base: Option<String>,
    /// Model name sent to the API (required with --api-base).
    #[arg(long, value_name = "NAME", alias = "teacher-api-model")]
    pub api_model: Option<String>,
    /// Environment variable holding the API key; unset means no Authorization header. With
    /// `run`, the workers read it (a worker without it fails the task): pass an empty name
    /// (`--api-key-env ''`) for a server that takes no key.
    #[arg(
        long,
        value_name = "VAR",
        default_value = "OPENAI_API_KEY",
        alias = "teacher-api-key-env"
    )]
    pub api_key_env: String,
    /// Requests in flight at once.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        alias = "teacher-api-concurrency"
    )]
    pub api_concurrency: usize,
    /// Requests per minute (default: unlimited).
    #[arg(long, value_name = "N", alias = "teacher-api-rpm")]
    pub api_rpm: Option<f64>,
    /// Prompt plus completion tokens per minute (default: unlimited).
    #[arg(long, value_name = "N", alias = "teacher-api-tpm")]
    pub api_tpm: Option<f64>,
    /// Retries of a request after connect errors, timeouts, 429 and 5xx.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 6,
        alias = "teacher-api-max-retries"
    )]
    pub api_max_retries: u32,
    /// Limit on one request, in seconds.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 120.0,
        alias = "teacher-api-timeout-s"
    )]
    pub api_timeout_s: f64,
    /// Response cache (JSONL, keyed by URL, model and request body): a re-run sends nothing.
    #[arg(long, value_name = "FILE", alias = "teacher-api-cache")]
    pub api_cache: Option<PathBuf>,
    /// USD per million prompt tokens, for the cost report.
    #[arg(
        long,
        value_name = "USD",
        default_value_t = 0.0,
        alias = "teacher-price-input-per-mtok"
    )]
    pub price_input_per_mtok: f64,
    /// USD per million completion tokens.
    #[arg(
        long,
        value_name = "USD",
        default_value_t = 0.0,
        alias = "teacher-price-output-per-mtok"
    )]
    pub price_output_per_mtok: f64,
}

impl ApiArgs {
    /// The client config, or `None` without `--api-base`. Errors name the flag.
    pub fn config(&self) -> Result<Option<ApiConfig>> {
        let Some(base) = &self.api_base else {
            if self.api_model.is_some() {
                bail!("--api-model needs --api-base");
            }
            return Ok(None);
        };
        let Some(model) = &self.api_model else {
            bail!("--api-base needs --api-model (the model name the API serves)");
        };
        let mut c = ApiConfig::new(base.clone(), model.clone());
        c.api_key_env = self.api_key_env.clone();
        c.concurrency = self.api_concurrency;
        c.requests_per_minute = self.api_rpm;
        c.tokens_per_minute = self.api_tpm;
        c.max_retries = self.api_max_retries;
        c.timeout_s = self.api_timeout_s;
        c.price_input_per_mtok = self.price_input_per_mtok;
        c.price_output_per_mtok = self.price_output_per_mtok;
        c.validate()?;
        Ok(Some(c))
    }

    /// The client, with the response cache when `--api-cache` is given; `None` without
    /// `--api-base`. It grades with the default prompt (`grade-v1`).
    pub fn client(&self) -> Result<Option<ApiClient>> {
        self.client_with_prompt(GradePrompt::default())
    }

    /// [`Self::client`] grading with the given prompt version.
    pub fn client_with_prompt(&self, prompt: GradePrompt) -> Result<Option<ApiClient>> {
        let Some(mut config) = self.config()? else {
            return Ok(None);
        };
        config.grade_prompt = prompt;
        let mut client = ApiClient::new(config)?;
        if let Some(path) = &self.api_cache {
            client = client.with_cache(path)?;
        }
        Ok(Some(client))
    }
}

/// The usage table printed at the end of an API run.
pub fn usage_table(usage: &Usage) -> String {
    crate::progress::table(
        &[
            "requests",
            "retries",
            "failed",
            "cache hits",
            "prompt tokens",
            "completion tokens",
            "cost (USD)",
        ],
        vec![vec![
            usage.requests.to_string(),
            usage.retries.to_string(),
            usage.failures.to_string(),
            usage.cache_hits.to_string(),
            usage.prompt_tokens.to_string(),
            usage.completion_tokens.to_string(),
            format!("{:.4}", usage.cost_usd),
        ]],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
    }

    #[test]
    fn flags_build_the_client_config() {
        let cli = Cli::parse_from([
            "x",
            "--api-base",
            "http://127.0.0.1:8080/v1",
            "--api-model",
            "m",
            "--api-concurrency",
            "3",
            "--api-tpm",
            "90000",
            "--price-input-per-mtok",
            "2.5",
        ]);
        let c = cli.api.config().unwrap().unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!((c.model.as_str(), c.concurrency), ("m", 3));
        assert_eq!(c.tokens_per_minute, Some(90000.0));
        assert_eq!(c.requests_per_minute, None);
        assert_eq!(c.price_input_per_mtok, 2.5);
        assert_eq!(c.api_key_env, "OPENAI_API_KEY");
        // the --teacher- forms are the same flags
        let cli = Cli::parse_from([
            "x",
            "--teacher-api-base",
            "https://api.openai.com/v1",
            "--teacher-api-model",
            "gpt-4o",
        ]);
        assert_eq!(cli.api.config().unwrap().unwrap().model, "gpt-4o");
        assert!(Cli::parse_from(["x"]).api.config().unwrap().is_none());
        let e = Cli::parse_from(["x", "--api-base", "http://h/v1"])
            .api
            .config()
            .unwrap_err();
        assert!(e.to_string().contains("--api-model"), "{e}");
    }
}

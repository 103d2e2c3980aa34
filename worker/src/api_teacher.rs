//! The API teacher on the worker: GRADE and SYNTHESIZE_QUERIES tasks whose model is an
//! OpenAI-compatible endpoint (`ModelRef.openai`) run here, on tokio, concurrently with the
//! engine thread (they wait on the network, not on the CPU), through `labelfleet-openai`.
//!
//! - One [`ApiClient`] per endpoint (URL, model, key variable, prices), kept across tasks, so
//!   its rate limiter and usage totals hold for every task that calls the endpoint.
//! - The leader writes this worker's share of the job's limits into each task it leases; the
//!   client's limits follow the latest share received (buckets of one second's allowance, so
//!   the fleet's bursts stay small).
//! - The API key is read here, from the variable the endpoint names; a worker without it fails
//!   the task, not retried, naming the variable. An endpoint that names none takes no key.
//! - What a task spent (requests, tokens, USD) goes back with its results.

use crate::engine::{label, to_pair, to_seed, Outcome};
use labelfleet_openai::{ApiClient, ApiConfig, ApiError, Tally, Usage};
use labelfleet_proto::v1::{
    model_ref, ApiUsage, Label, OpenAiEndpoint, SyntheticQuery, Task, TaskKind,
};
use labelfleet_slm::host::QUERY_MAX_NEW_TOKENS;
use labelfleet_types::{GradePrompt, SamplingParams};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use thiserror::Error;

/// Seconds of allowance a worker's rate buckets hold.
const WORKER_BURST_S: f64 = 1.0;

/// Why an API task failed.
#[derive(Debug, Error)]
pub enum ApiTaskError {
    #[error(
        "API key: environment variable `{0}` (named by model.openai.api_key_env) is not set on \
         this worker"
    )]
    MissingKey(String),
    #[error("model.openai: {0}")]
    Endpoint(ApiError),
    /// The task itself is unusable (prompt version, grade labels, a pair).
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl ApiTaskError {
    /// Whether another attempt (perhaps on another worker) could succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ApiTaskError::MissingKey(_) | ApiTaskError::Endpoint(_) | ApiTaskError::Input(_) => {
                false
            }
            ApiTaskError::Api(e) => api_error_retryable(e),
        }
    }
}

/// Transport faults, rate limits and server errors may clear; bad input, a refused request
/// (400, 401, 404...) or an answer with no grade in it (temperature 0) would come back the same.
fn api_error_retryable(e: &ApiError) -> bool {
    match e {
        ApiError::Transport { .. }
        | ApiError::Malformed { .. }
        | ApiError::Client(_)
        | ApiError::Cache(_) => true,
        ApiError::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
        ApiError::Input { .. } | ApiError::Answer { .. } | ApiError::Config { .. } => false,
    }
}

/// What identifies an endpoint's client: its limits are not part of it (they change).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EndpointKey {
    base_url: String,
    model: String,
    api_key_env: String,
    prices: (u64, u64),
}

impl EndpointKey {
    fn of(o: &OpenAiEndpoint) -> Self {
        EndpointKey {
            base_url: o.base_url.trim().to_string(),
            model: o.model.trim().to_string(),
            api_key_env: o.api_key_env.trim().to_string(),
            prices: (
                o.usd_per_million_input_tokens.to_bits(),
                o.usd_per_million_output_tokens.to_bits(),
            ),
        }
    }
}

/// The limits a task carries (this worker's share), as the client counts them.
pub fn limits_of(o: &OpenAiEndpoint) -> (Option<f64>, Option<f64>) {
    let positive = |v: f64| (v.is_finite() && v > 0.0).then_some(v);
    (
        positive(o.requests_per_second).map(|r| r * 60.0),
        positive(o.tokens_per_minute),
    )
}

/// The client config of an endpoint; errors name the field.
pub fn endpoint_config(o: &OpenAiEndpoint) -> Result<ApiConfig, ApiTaskError> {
    let mut c = ApiConfig::new(o.base_url.trim(), o.model.trim());
    c.api_key_env = o.api_key_env.trim().to_string();
    c.price_input_per_mtok = o.usd_per_million_input_tokens;
    c.price_output_per_mtok = o.usd_per_million_output_tokens;
    (c.requests_per_minute, c.tokens_per_minute) = limits_of(o);
    c.rate_burst_s = WORKER_BURST_S;
    c.validate().map_err(ApiTaskError::Endpoint)?;
    Ok(c)
}

/// Checks that the key the endpoint names is in this worker's environment.
pub fn check_key(config: &ApiConfig) -> Result<(), ApiTaskError> {
    if !config.api_key_env.is_empty() && config.api_key().is_none() {
        return Err(ApiTaskError::MissingKey(config.api_key_env.clone()));
    }
    Ok(())
}

/// The worker's API clients, one per endpoint.
pub struct ApiTeacher {
    clients: Mutex<HashMap<EndpointKey, Arc<ApiClient>>>,
    /// Pairs graded (shared with the engine's count, for the worker's metrics).
    pairs: Arc<AtomicU64>,
}

impl ApiTeacher {
    pub fn new(pairs: Arc<AtomicU64>) -> Self {
        ApiTeacher {
            clients: Mutex::new(HashMap::new()),
            pairs,
        }
    }

    /// Runs an API task: its grades or queries, and what it spent; or why it failed.
    pub async fn run(&self, task: &Task) -> Outcome {
        let start = Instant::now();
        let result = match self.run_task(task).await {
            Ok(done) => done,
            Err(e) => {
                return Outcome::Failed {
                    reason: e.to_string(),
                    retryable: e.retryable(),
                }
            }
        };
        let (labels, queries, usage) = result;
        self.pairs.fetch_add(labels.len() as u64, Ordering::Relaxed);
        Outcome::Done {
            labels,
            queries,
            hits: Vec::new(),
            seconds: start.elapsed().as_secs_f64(),
            api_usage: Some(to_proto_usage(&usage)),
        }
    }

    async fn run_task(
        &self,
        task: &Task,
    ) -> Result<(Vec<Label>, Vec<SyntheticQuery>, Usage), ApiTaskError> {
        let Some(model_ref::Source::Openai(endpoint)) =
            task.model.as_ref().and_then(|m| m.source.as_ref())
        else {
            return Err(ApiTaskError::Input("model: not an OpenAI endpoint".into()));
        };
        let client = self.client(endpoint)?;
        let tally = Tally::default();
        if task.kind == TaskKind::SynthesizeQueries as i32 {
            let queries = synthesize(&client, task, &tally).await?;
            Ok((Vec::new(), queries, tally.usage()))
        } else {
            let labels = grade(&client, task, &tally).await?;
            Ok((labels, Vec::new(), tally.usage()))
        }
    }

    /// The endpoint's client (made on first use), with its limits set to the task's share.
    fn client(&self, endpoint: &OpenAiEndpoint) -> Result<Arc<ApiClient>, ApiTaskError> {
        let key = EndpointKey::of(endpoint);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let client = match clients.get(&key) {
            Some(c) => c.clone(),
            None => {
                let config = endpoint_config(endpoint)?;
                check_key(&config)?;
                let client = Arc::new(ApiClient::new(config).map_err(ApiTaskError::Endpoint)?);
                tracing::info!(endpoint = %client.describe(), "API client made");
                clients.insert(key, client.clone());
                client
            }
        };
        let (rpm, tpm) = limits_of(endpoint);
        client.set_limits(rpm, tpm);
        Ok(client)
    }
}

/// What a task spent, as the results carry it.
pub fn to_proto_usage(u: &Usage) -> ApiUsage {
    ApiUsage {
        requests: u.requests,
        retries: u.retries,
        failures: u.failures,
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        cost_usd: u.cost_usd,
    }
}

/// The grades are digits 0..N-1: a task may name those labels, or none (the default).
fn check_grade_labels(task: &Task, num_grades: usize) -> Result<(), ApiTaskError> {
    let digits: Vec<String> = (0..num_grades).map(|g| g.to_string()).collect();
    if task.grade_labels.is_empty() || task.grade_labels == digits {
        return Ok(());
    }
    Err(ApiTaskError::Input(format!(
        "grade_labels: an API teacher grades on {}; got {:?}",
        digits.join(", "),
        task.grade_labels
    )))
}

async fn grade(client: &ApiClient, task: &Task, tally: &Tally) -> Result<Vec<Label>, ApiTaskError> {
    let prompt = GradePrompt::parse(&task.prompt_version)
        .map_err(|e| ApiTaskError::Input(format!("prompt_version: {e}")))?;
    check_grade_labels(task, client.config().num_grades)?;
    let pairs = task
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            to_pair(p).map_err(|field| {
                ApiTaskError::Input(format!("pair `{}` (#{i}): {field}", p.pair_id))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let gradings = client
        .grade_pairs_with(&pairs, prompt, Some(tally), &|| {})
        .await;
    let model = client.describe();
    let prompt_version = prompt.version().to_string();
    task.pairs
        .iter()
        .zip(gradings)
        .map(|(p, g)| Ok(label(p, g?.grading, &model, "", &prompt_version)))
        .collect()
}

async fn synthesize(
    client: &ApiClient,
    task: &Task,
    tally: &Tally,
) -> Result<Vec<SyntheticQuery>, ApiTaskError> {
    let seeds: Vec<_> = task.documents.iter().map(to_seed).collect();
    // the engine's sampling; each request's seed mixes the document id into the job's seed
    let params = SamplingParams {
        max_new_tokens: QUERY_MAX_NEW_TOKENS,
        temperature: 0.8,
        top_p: 0.95,
        seed: task.seed,
    };
    let written = client
        .synthesize_with(
            &seeds,
            task.queries_per_document.max(1) as usize,
            task.metadata_queries_per_document as usize,
            &params,
            Some(tally),
            &|| {},
        )
        .await;
    let mut queries = Vec::new();
    for generated in written {
        for (n, g) in generated?.into_iter().enumerate() {
            queries.push(SyntheticQuery {
                query_id: format!("{}-q{}", g.doc_id, n + 1),
                doc_id: g.doc_id,
                text: g.query,
                prompt_version: g.prompt_version,
                metadata_field: g.metadata_field.unwrap_or_default(),
            });
        }
    }
    Ok(queries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::ModelRef;

    fn endpoint(key_env: &str) -> OpenAiEndpoint {
        OpenAiEndpoint {
            base_url: "http://127.0.0.1:9/v1".into(),
            model: "m".into(),
            api_key_env: key_env.into(),
            requests_per_second: 2.5,
            ..Default::default()
        }
    }

    fn grade_task(endpoint: OpenAiEndpoint) -> Task {
        Task {
            task_id: "j-t0".into(),
            kind: TaskKind::Grade as i32,
            model: Some(ModelRef {
                source: Some(model_ref::Source::Openai(endpoint)),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_worker_without_the_key_fails_the_task_naming_the_variable() {
        let var = "LABELFLEET_TEST_KEY_THAT_IS_NEVER_SET";
        assert!(std::env::var_os(var).is_none());
        let teacher = ApiTeacher::new(Arc::default());
        match teacher.run(&grade_task(endpoint(var))).await {
            Outcome::Failed { reason, retryable } => {
                assert!(!retryable, "{reason}");
                assert!(reason.contains(&format!("`{var}`")), "{reason}");
                assert!(reason.contains("not set on this worker"), "{reason}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        // no client is kept for an endpoint that could not be used
        assert!(teacher.clients.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_bad_endpoint_or_prompt_fails_without_retry_naming_the_field() {
        let teacher = ApiTeacher::new(Arc::default());
        let mut bad = endpoint("");
        bad.base_url = "127.0.0.1:8080".into();
        let Outcome::Failed { reason, retryable } = teacher.run(&grade_task(bad)).await else {
            panic!("a base_url without a scheme was accepted");
        };
        assert!(!retryable && reason.contains("`base_url`"), "{reason}");
        let mut task = grade_task(endpoint(""));
        task.prompt_version = "grade-v9".into();
        let Outcome::Failed { reason, retryable } = teacher.run(&task).await else {
            panic!("an unknown prompt version was accepted");
        };
        assert!(
            !retryable && reason.starts_with("prompt_version:"),
            "{reason}"
        );
    }

    #[test]
    fn the_share_in_the_task_sets_the_clients_limits() {
        let mut o = endpoint("");
        assert_eq!(limits_of(&o), (Some(150.0), None));
        o.tokens_per_minute = 9000.0;
        o.requests_per_second = 0.0;
        assert_eq!(limits_of(&o), (None, Some(9000.0)));
        let c = endpoint_config(&o).unwrap();
        assert_eq!(c.rate_burst_s, WORKER_BURST_S);
        assert_eq!(c.api_key_env, "");
        check_key(&c).unwrap();
    }

    #[test]
    fn only_faults_that_may_clear_are_retried() {
        let status = |status| ApiError::Status {
            record: "pair p".into(),
            status,
            attempts: 3,
            message: String::new(),
        };
        assert!(ApiTaskError::Api(status(429)).retryable());
        assert!(ApiTaskError::Api(status(503)).retryable());
        assert!(!ApiTaskError::Api(status(401)).retryable());
        assert!(!ApiTaskError::MissingKey("K".into()).retryable());
    }
}

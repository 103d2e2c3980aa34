//! The HTTP side: one chat completion at a time, with the response cache in front, then rate
//! limits, bounded concurrency and retries around each attempt, and accounting of everything.

use crate::config::ApiConfig;
use crate::error::{excerpt, ApiError};
use crate::ratelimit::Limiter;
use crate::usage::{Tally, Usage};
use crate::wire::{error_message, ChatRequest, ChatResponse};
use labelfleet_cache::Cache;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A client of one OpenAI-compatible endpoint and model. Share it (`&ApiClient` or an `Arc`)
/// between tasks: its limits and accounting hold for all of them together.
pub struct ApiClient {
    config: ApiConfig,
    chat_url: String,
    api_key: Option<String>,
    http: reqwest::Client,
    limiter: Limiter,
    in_flight: tokio::sync::Semaphore,
    cache: Option<Mutex<Cache<ChatResponse>>>,
    usage: Mutex<Usage>,
}

/// What one HTTP attempt gave.
enum Attempt {
    /// A response: its status, `Retry-After`, and body.
    Answered {
        status: reqwest::StatusCode,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    /// No response: connect error, timeout, connection cut.
    Failed(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // every update under these locks is complete before it unlocks, so a panic elsewhere
    // cannot leave a half-written state behind
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Statuses worth another attempt: rate limits, timeouts and server errors.
fn retryable(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The wait a server asks for: `retry-after-ms` (OpenAI) or `Retry-After` in seconds. An
/// HTTP-date `Retry-After` is not read; the backoff applies then.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let v: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    number("retry-after").map(Duration::from_secs_f64)
}

/// The longest `Retry-After` honoured as given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The wait before retry number `retry` (1 = the first retry). A server's `Retry-After` is
/// honoured as given. Otherwise exponential: `initial * 2^(retry-1)`, capped at `max`, of which
/// the upper half is jitter (`jitter` in [0, 1]), so clients that failed together do not
/// retry together.
pub fn backoff_delay(
    retry: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(MAX_RETRY_AFTER);
    }
    let exp = initial
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(max);
    exp / 2 + exp.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// A reqwest error with its causes, which hold the useful part (`connection refused`).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {:.1} s", timeout.as_secs_f64());
    }
    let mut s = if e.is_connect() {
        "connect error".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

impl ApiClient {
    /// A client for `config` (checked first), with no cache. The API key is read now from the
    /// variable `config.api_key_env`.
    pub fn new(config: ApiConfig) -> Result<Self, ApiError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout().min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.concurrency)
            .user_agent(concat!("labelfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Client(e.to_string()))?;
        Ok(ApiClient {
            chat_url: config.chat_url(),
            api_key: config.api_key(),
            http,
            limiter: Limiter::with_burst(
                config.requests_per_minute,
                config.tokens_per_minute,
                config.rate_burst_s,
            ),
            in_flight: tokio::sync::Semaphore::new(config.concurrency),
            cache: None,
            usage: Mutex::new(Usage::default()),
            config,
        })
    }

    /// Keeps every usable response in the append-only JSONL file at `path`, keyed by the URL,
    /// the model and the exact request body, and answers from it: a re-run sends nothing.
    pub fn with_cache(mut self, path: &Path) -> Result<Self, ApiError> {
        self.cache = Some(Mutex::new(Cache::open(path)?));
        Ok(self)
    }

    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// The model and endpoint, for provenance: `api:<model>@<base_url>`.
    pub fn describe(&self) -> String {
        format!("api:{}@{}", self.config.model, self.config.base_url.trim())
    }

    /// What the client has spent so far.
    pub fn usage(&self) -> Usage {
        lock(&self.usage).clone()
    }

    /// Changes the rate limits from now on (a worker's share of a job-wide limit moves as
    /// workers join and leave). `None` lifts a limit.
    pub fn set_limits(&self, requests_per_minute: Option<f64>, tokens_per_minute: Option<f64>) {
        self.limiter
            .set_limits(requests_per_minute, tokens_per_minute);
    }

    /// Books `f` in the client's totals and in the caller's tally, if any.
    fn count(&self, tally: Option<&Tally>, f: impl Fn(&mut Usage)) {
        f(&mut lock(&self.usage));
        if let Some(t) = tally {
            t.add(f);
        }
    }

    /// One chat completion, read by `interpret`. The cache answers first; a response is cached
    /// only once `interpret` accepted it, so an unusable answer is asked again next run.
    pub(crate) async fn complete<T>(
        &self,
        record: &str,
        request: &ChatRequest<'_>,
        tally: Option<&Tally>,
        interpret: impl Fn(&ChatResponse) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_string(request)
            .map_err(|e| ApiError::Client(format!("{record}: request does not serialize: {e}")))?;
        let key = labelfleet_cache::key(&[&self.chat_url, &self.config.model, &body]);
        if let Some(cache) = &self.cache {
            let hit = lock(cache).get(&key).cloned();
            if let Some(Ok(value)) = hit.as_ref().map(&interpret) {
                self.count(tally, |u| u.cache_hits += 1);
                return Ok(value);
            }
        }
        // about 4 bytes a token, plus the whole completion budget
        let estimate = (request.text_bytes() as f64 / 4.0).ceil() + request.max_tokens as f64;
        let result = match self.send(record, body, estimate, tally).await {
            Ok(response) => interpret(&response).and_then(|value| {
                if let Some(cache) = &self.cache {
                    lock(cache).insert(key, response)?;
                }
                Ok(value)
            }),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.count(tally, |u| u.failures += 1);
        }
        result
    }

    /// Sends `body` until it gets a usable 2xx response, retrying connect errors, timeouts,
    /// 429 and 5xx up to `max_retries` times.
    async fn send(
        &self,
        record: &str,
        body: String,
        estimate: f64,
        tally: Option<&Tally>,
    ) -> Result<ChatResponse, ApiError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            self.limiter.acquire(estimate).await;
            let outcome = {
                let _permit = self
                    .in_flight
                    .acquire()
                    .await
                    .map_err(|e| ApiError::Client(e.to_string()))?;
                self.count(tally, |u| {
                    u.requests += 1;
                    if attempt > 1 {
                        u.retries += 1;
                    }
                });
                self.attempt(body.clone()).await
            };
            let (wait, failure) = match outcome {
                Attempt::Answered { status, body, .. } if status.is_success() => {
                    return self.parse(record, &body, estimate, tally);
                }
                Attempt::Answered {
                    status,
                    retry_after,
                    body,
                } => {
                    let error = ApiError::Status {
                        record: record.to_string(),
                        status: status.as_u16(),
                        attempts: attempt,
                        message: error_message(&String::from_utf8_lossy(&body)),
                    };
                    if !retryable(status) {
                        return Err(error);
                    }
                    (retry_after, error)
                }
                Attempt::Failed(message) => (
                    None,
                    ApiError::Transport {
                        record: record.to_string(),
                        attempts: attempt,
                        message,
                    },
                ),
            };
            if attempt > self.config.max_retries {
                return Err(failure);
            }
            let delay = backoff_delay(
                attempt,
                Duration::from_millis(self.config.backoff_initial_ms),
                Duration::from_millis(self.config.backoff_max_ms),
                wait,
                rand::random::<f64>(),
            );
            tracing::warn!(
                record,
                attempt,
                delay_ms = delay.as_millis() as u64,
                retry_after_s = wait.map(|w| w.as_secs_f64()),
                "retrying: {failure}"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: String) -> Attempt {
        let mut request = self
            .http
            .post(&self.chat_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(describe(&e, self.config.timeout())),
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        match response.bytes().await {
            Ok(body) => Attempt::Answered {
                status,
                retry_after: wait,
                body: body.to_vec(),
            },
            Err(e) => Attempt::Failed(format!(
                "HTTP {status}, then reading the body: {}",
                describe(&e, self.config.timeout())
            )),
        }
    }

    /// Reads a 2xx body as a chat completion and books its tokens.
    fn parse(
        &self,
        record: &str,
        body: &[u8],
        estimate: f64,
        tally: Option<&Tally>,
    ) -> Result<ChatResponse, ApiError> {
        let text = String::from_utf8_lossy(body);
        let malformed = |message: String| ApiError::Malformed {
            record: record.to_string(),
            message,
            excerpt: excerpt(&text, 200),
        };
        let response: ChatResponse = serde_json::from_slice(body)
            .map_err(|e| malformed(format!("not a chat completion: {e}")))?;
        if response.choices.is_empty() {
            return Err(malformed("`choices` is empty".into()));
        }
        if let Some(u) = response.usage {
            let cost = self.config.cost_usd(u.prompt_tokens, u.completion_tokens);
            self.count(tally, |usage| {
                usage.prompt_tokens += u.prompt_tokens;
                usage.completion_tokens += u.completion_tokens;
                usage.cost_usd += cost;
            });
            self.limiter
                .correct_tokens(estimate, (u.prompt_tokens + u.completion_tokens) as f64);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let ms = Duration::from_millis;
        let d = |retry, jitter| backoff_delay(retry, ms(500), ms(8_000), None, jitter);
        assert_eq!(d(1, 0.0), ms(250));
        assert_eq!(d(1, 1.0), ms(500));
        assert_eq!(d(2, 0.0), ms(500));
        assert_eq!(d(3, 0.5), ms(1_500));
        assert_eq!(d(5, 1.0), ms(8_000));
        assert_eq!(d(60, 1.0), ms(8_000), "no overflow on many retries");
        assert_eq!(d(60, 0.0), ms(4_000));
        // a server's Retry-After wins, even over the cap
        assert_eq!(
            backoff_delay(1, ms(500), ms(8_000), Some(ms(20_000)), 1.0),
            ms(20_000)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn only_rate_limits_timeouts_and_server_errors_are_retried() {
        for s in [429, 408, 500, 502, 503, 504] {
            assert!(retryable(reqwest::StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!retryable(reqwest::StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}

//! What a client spent: requests, retries, failures, cache hits, tokens and cost.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// A snapshot of a client's accounting since it was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Requests that were retries of an earlier attempt (after a connect error, a timeout,
    /// 429 or 5xx).
    pub retries: u64,
    /// Calls (one pair, or one query) that sent a request and ended in an error, after any
    /// retries. Input the client refuses before sending (an empty query) is not counted.
    pub failures: u64,
    /// Calls answered from the response cache, without a request.
    pub cache_hits: u64,
    /// Tokens billed, from the responses' `usage` (cache hits add nothing).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// From the tokens and the configured prices.
    pub cost_usd: f64,
}

impl Usage {
    /// One line for logs and the CLI.
    pub fn summary(&self) -> String {
        format!(
            "{} requests ({} retries, {} failed calls, {} cache hits), {} prompt + {} completion tokens, ${:.4}",
            self.requests,
            self.retries,
            self.failures,
            self.cache_hits,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost_usd
        )
    }
}

/// The accounting of a group of calls (one task's), kept besides the client's own totals,
/// which sum every call of every group. Concurrent groups on one client each see only their
/// own calls.
#[derive(Debug, Default)]
pub struct Tally(Mutex<Usage>);

impl Tally {
    /// What the group's calls spent so far.
    pub fn usage(&self) -> Usage {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn add(&self, f: impl FnOnce(&mut Usage)) {
        // every update is complete before the lock is released
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

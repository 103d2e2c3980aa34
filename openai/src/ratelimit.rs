//! Token-bucket rate limits: requests per minute and tokens per minute.
//!
//! A bucket holds `burst` seconds of its allowance (a minute by default, as providers count;
//! a worker given a share of a job's per-second limit keeps one second's worth, so the fleet's
//! bursts stay small). Its rate can change while it runs ([`Limiter::set_limits`]): the level is
//! kept, capped by the new capacity.
//!
//! The buckets take the time as an argument (a `Duration` since any fixed origin), so they are
//! tested with a clock the test controls. [`Limiter`] drives them with tokio's clock, which
//! tests can pause and advance too.
//!
//! Tokens are estimated before a request is sent (from its length) and corrected when the
//! response's `usage` tells the real count: a bucket may go below zero after an
//! under-estimate, and the requests after it wait for the debt to refill.

use std::sync::Mutex;
use std::time::Duration;

/// A bucket that holds up to one minute's allowance and refills continuously.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    level: f64,
    at: Duration,
}

impl TokenBucket {
    /// A full bucket allowing `per_minute` units per minute, as of `now`.
    pub fn per_minute(per_minute: f64, now: Duration) -> Self {
        Self::with_burst(per_minute, 60.0, now)
    }

    /// A full bucket allowing `per_minute` units per minute that holds `burst_s` seconds of
    /// that allowance, and at least one unit, as of `now`.
    pub fn with_burst(per_minute: f64, burst_s: f64, now: Duration) -> Self {
        let capacity = Self::capacity_of(per_minute, burst_s);
        TokenBucket {
            capacity,
            per_second: per_minute / 60.0,
            level: capacity,
            at: now,
        }
    }

    fn capacity_of(per_minute: f64, burst_s: f64) -> f64 {
        (per_minute * burst_s / 60.0).max(1.0)
    }

    /// Changes the rate as of `now`: what was earned so far at the old rate is kept, up to the
    /// new capacity.
    pub fn set_rate(&mut self, per_minute: f64, burst_s: f64, now: Duration) {
        self.refill(now);
        self.per_second = per_minute / 60.0;
        self.capacity = Self::capacity_of(per_minute, burst_s);
        self.level = self.level.min(self.capacity);
    }

    fn refill(&mut self, now: Duration) {
        if now > self.at {
            let gained = (now - self.at).as_secs_f64() * self.per_second;
            self.level = (self.level + gained).min(self.capacity);
            self.at = now;
        }
    }

    /// Units available at `now` (negative while paying back an under-estimate).
    pub fn level(&mut self, now: Duration) -> f64 {
        self.refill(now);
        self.level
    }

    /// How long from `now` until `amount` can be taken. An amount over the capacity waits for a
    /// full bucket (then takes it all and more), so it is slow but never stuck.
    pub fn wait_for(&mut self, amount: f64, now: Duration) -> Duration {
        self.refill(now);
        let need = amount.min(self.capacity);
        if self.level >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.level) / self.per_second)
        }
    }

    /// Takes `amount` (negative gives back), whatever the level; callers check [`Self::wait_for`].
    pub fn take(&mut self, amount: f64, now: Duration) {
        self.refill(now);
        self.level = (self.level - amount).min(self.capacity);
    }
}

/// Requests-per-minute and tokens-per-minute buckets, either optional.
#[derive(Debug, Clone)]
pub struct RateLimits {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
    burst_s: f64,
}

impl RateLimits {
    pub fn new(
        requests_per_minute: Option<f64>,
        tokens_per_minute: Option<f64>,
        now: Duration,
    ) -> Self {
        Self::with_burst(requests_per_minute, tokens_per_minute, 60.0, now)
    }

    /// Buckets that hold `burst_s` seconds of their allowance.
    pub fn with_burst(
        requests_per_minute: Option<f64>,
        tokens_per_minute: Option<f64>,
        burst_s: f64,
        now: Duration,
    ) -> Self {
        RateLimits {
            requests: requests_per_minute.map(|r| TokenBucket::with_burst(r, burst_s, now)),
            tokens: tokens_per_minute.map(|t| TokenBucket::with_burst(t, burst_s, now)),
            burst_s,
        }
    }

    /// New limits as of `now`. A bucket that stays keeps its level (capped by its new
    /// capacity); a new one starts full; `None` removes the limit.
    pub fn set_limits(
        &mut self,
        requests_per_minute: Option<f64>,
        tokens_per_minute: Option<f64>,
        now: Duration,
    ) {
        let burst_s = self.burst_s;
        for (bucket, rate) in [
            (&mut self.requests, requests_per_minute),
            (&mut self.tokens, tokens_per_minute),
        ] {
            match (bucket.as_mut(), rate) {
                (Some(b), Some(r)) => b.set_rate(r, burst_s, now),
                (None, Some(r)) => *bucket = Some(TokenBucket::with_burst(r, burst_s, now)),
                (_, None) => *bucket = None,
            }
        }
    }

    /// Takes one request and `tokens` tokens when both buckets allow it at `now`; otherwise
    /// takes nothing and returns how long to wait before trying again.
    pub fn try_acquire(&mut self, tokens: f64, now: Duration) -> Result<(), Duration> {
        let wait_requests = self
            .requests
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(1.0, now));
        let wait_tokens = self
            .tokens
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(tokens, now));
        let wait = wait_requests.max(wait_tokens);
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = &mut self.requests {
            b.take(1.0, now);
        }
        if let Some(b) = &mut self.tokens {
            b.take(tokens, now);
        }
        Ok(())
    }

    /// Corrects the token bucket once the real count is known: `actual - estimated` more
    /// tokens were used (fewer when negative).
    pub fn correct_tokens(&mut self, estimated: f64, actual: f64, now: Duration) {
        if let Some(b) = &mut self.tokens {
            b.take(actual - estimated, now);
        }
    }
}

/// [`RateLimits`] shared by concurrent requests, on tokio's clock.
#[derive(Debug)]
pub struct Limiter {
    limits: Mutex<RateLimits>,
    origin: tokio::time::Instant,
}

impl Limiter {
    pub fn new(requests_per_minute: Option<f64>, tokens_per_minute: Option<f64>) -> Self {
        Self::with_burst(requests_per_minute, tokens_per_minute, 60.0)
    }

    /// A limiter whose buckets hold `burst_s` seconds of their allowance.
    pub fn with_burst(
        requests_per_minute: Option<f64>,
        tokens_per_minute: Option<f64>,
        burst_s: f64,
    ) -> Self {
        Limiter {
            limits: Mutex::new(RateLimits::with_burst(
                requests_per_minute,
                tokens_per_minute,
                burst_s,
                Duration::ZERO,
            )),
            origin: tokio::time::Instant::now(),
        }
    }

    /// Changes the limits from now on (see [`RateLimits::set_limits`]).
    pub fn set_limits(&self, requests_per_minute: Option<f64>, tokens_per_minute: Option<f64>) {
        let now = self.now();
        self.limits()
            .set_limits(requests_per_minute, tokens_per_minute, now);
    }

    fn now(&self) -> Duration {
        tokio::time::Instant::now() - self.origin
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, RateLimits> {
        // the state stays consistent even if a holder panicked: every update is one assignment
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until one request of about `estimated_tokens` tokens may be sent, and takes it.
    pub async fn acquire(&self, estimated_tokens: f64) {
        loop {
            let result = self.limits().try_acquire(estimated_tokens, self.now());
            match result {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    pub fn correct_tokens(&self, estimated: f64, actual: f64) {
        let now = self.now();
        self.limits().correct_tokens(estimated, actual, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn close(a: Duration, b: Duration) -> bool {
        (a.as_secs_f64() - b.as_secs_f64()).abs() < 1e-9
    }

    #[test]
    fn requests_per_minute_allow_a_burst_then_refill_at_the_rate() {
        let mut l = RateLimits::new(Some(60.0), None, s(0.0));
        for i in 0..60 {
            assert_eq!(
                l.try_acquire(0.0, s(0.0)),
                Ok(()),
                "request {i} of the burst"
            );
        }
        // empty: one request per second from now on
        let wait = l.try_acquire(0.0, s(0.0)).unwrap_err();
        assert!(close(wait, s(1.0)), "{wait:?}");
        assert!(l.try_acquire(0.0, s(0.5)).is_err());
        assert_eq!(l.try_acquire(0.0, s(1.0)), Ok(()));
        assert!(l.try_acquire(0.0, s(1.0)).is_err());
        // a long pause refills up to the capacity, never more
        for _ in 0..60 {
            assert_eq!(l.try_acquire(0.0, s(1000.0)), Ok(()));
        }
        assert!(l.try_acquire(0.0, s(1000.0)).is_err());
    }

    #[test]
    fn tokens_per_minute_wait_for_the_amount_and_take_nothing_while_waiting() {
        let mut l = RateLimits::new(Some(1000.0), Some(600.0), s(0.0));
        assert_eq!(l.try_acquire(500.0, s(0.0)), Ok(()));
        // 100 left, 10 tokens/s: 300 tokens need 20 s more
        let wait = l.try_acquire(300.0, s(0.0)).unwrap_err();
        assert!(close(wait, s(20.0)), "{wait:?}");
        // the refused attempt took no request either: the request bucket is still almost full
        assert_eq!(l.requests.as_mut().unwrap().level(s(0.0)), 999.0);
        assert!(l.try_acquire(300.0, s(19.9)).is_err());
        assert_eq!(l.try_acquire(300.0, s(20.0)), Ok(()));
    }

    #[test]
    fn usage_corrects_the_estimate_both_ways() {
        let mut l = RateLimits::new(None, Some(600.0), s(0.0));
        assert_eq!(l.try_acquire(100.0, s(0.0)), Ok(()));
        // it really used 700: the bucket owes 100, paid back at 10 tokens/s
        l.correct_tokens(100.0, 700.0, s(0.0));
        let wait = l.try_acquire(10.0, s(0.0)).unwrap_err();
        assert!(close(wait, s(11.0)), "{wait:?}");
        assert_eq!(l.try_acquire(10.0, s(11.0)), Ok(()));
        // an over-estimate gives tokens back, up to the capacity
        let mut l = RateLimits::new(None, Some(600.0), s(0.0));
        assert_eq!(l.try_acquire(600.0, s(0.0)), Ok(()));
        l.correct_tokens(600.0, 50.0, s(0.0));
        assert_eq!(l.tokens.as_mut().unwrap().level(s(0.0)), 550.0);
        l.correct_tokens(600.0, 0.0, s(0.0));
        assert_eq!(l.tokens.as_mut().unwrap().level(s(0.0)), 600.0);
    }

    #[test]
    fn a_request_larger_than_the_bucket_waits_for_a_full_one() {
        let mut l = RateLimits::new(None, Some(60.0), s(0.0));
        assert_eq!(l.try_acquire(30.0, s(0.0)), Ok(()));
        let wait = l.try_acquire(100.0, s(0.0)).unwrap_err();
        assert!(close(wait, s(30.0)), "{wait:?}");
        assert_eq!(l.try_acquire(100.0, s(30.0)), Ok(()));
        // and leaves a debt of 40 behind
        assert!(close(l.try_acquire(1.0, s(30.0)).unwrap_err(), s(41.0)));
    }

    #[test]
    fn no_limits_never_wait() {
        let mut l = RateLimits::new(None, None, s(0.0));
        for _ in 0..10_000 {
            assert_eq!(l.try_acquire(1e6, s(0.0)), Ok(()));
        }
    }

    #[test]
    fn a_one_second_burst_holds_a_seconds_allowance_and_at_least_one_request() {
        // 3 requests per second, one second of burst: 3 at once, then one every 1/3 s
        let mut l = RateLimits::with_burst(Some(180.0), None, 1.0, s(0.0));
        for _ in 0..3 {
            assert_eq!(l.try_acquire(0.0, s(0.0)), Ok(()));
        }
        assert!(close(l.try_acquire(0.0, s(0.0)).unwrap_err(), s(1.0 / 3.0)));
        // a share under one request per second still lets one request through at a time
        let mut l = RateLimits::with_burst(Some(15.0), None, 1.0, s(0.0));
        assert_eq!(l.try_acquire(0.0, s(0.0)), Ok(()));
        assert!(close(l.try_acquire(0.0, s(0.0)).unwrap_err(), s(4.0)));
    }

    #[test]
    fn limits_change_in_place_keeping_the_level_up_to_the_new_capacity() {
        let mut l = RateLimits::with_burst(Some(600.0), None, 1.0, s(0.0));
        // 10 per second, 10 in the bucket; take 4
        for _ in 0..4 {
            assert_eq!(l.try_acquire(0.0, s(0.0)), Ok(()));
        }
        // halved (another worker joined): capacity 5, level stays 5 of the 6 left
        l.set_limits(Some(300.0), None, s(0.0));
        for _ in 0..5 {
            assert_eq!(l.try_acquire(0.0, s(0.0)), Ok(()));
        }
        assert!(close(l.try_acquire(0.0, s(0.0)).unwrap_err(), s(0.2)));
        // a token limit added starts full; removing the request limit lets requests through
        l.set_limits(None, Some(60.0), s(0.0));
        assert_eq!(l.try_acquire(60.0, s(0.0)), Ok(()));
        assert!(l.try_acquire(1.0, s(0.0)).is_err());
        l.set_limits(None, None, s(0.0));
        assert_eq!(l.try_acquire(1e9, s(0.0)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_requests_on_the_paused_tokio_clock() {
        // 120 requests per minute: a burst of 120, then one every 0.5 s
        let limiter = Limiter::new(Some(120.0), None);
        let start = tokio::time::Instant::now();
        for _ in 0..120 {
            limiter.acquire(0.0).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..4 {
            limiter.acquire(0.0).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((took - 2.0).abs() < 0.01, "4 more requests took {took} s");
    }
}

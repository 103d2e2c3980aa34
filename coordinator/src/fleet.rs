//! The live workers, and each one's share of a job's API rate limits.
//!
//! An API teacher's `requests_per_second` and `tokens_per_minute` are limits for the whole job
//! (the provider counts them per key, whoever sends). Workers call the endpoint themselves, so
//! the leader divides the limits among the live workers: every task it leases carries the
//! job's limits divided by the number of workers heard from within the last task lease, and
//! the worker sets its limiter for the endpoint to the latest share it was given. When a
//! worker joins, the others get the smaller share with their next lease (each worker leases
//! again as soon as a task ends); when one leaves, the others' shares grow after one lease
//! period. Workers that hold no API task still count, so the shares may under-use the limit
//! (never exceed it, but for a joining worker until the others' next lease).

use labelfleet_proto::v1::{model_ref, Task};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When each worker was last heard from (registration, lease request, heartbeat).
#[derive(Debug, Default)]
pub struct Fleet {
    seen: HashMap<String, Instant>,
}

impl Fleet {
    /// `worker` is alive at `now`.
    pub fn touch(&mut self, worker: &str, now: Instant) {
        match self.seen.get_mut(worker) {
            Some(at) => *at = now.max(*at),
            None => {
                self.seen.insert(worker.to_string(), now);
            }
        }
    }

    /// `worker` left the cluster (its registration is gone).
    pub fn forget(&mut self, worker: &str) {
        self.seen.remove(worker);
    }

    /// Workers heard from within `window` before `now`; the others are dropped.
    pub fn live(&mut self, now: Instant, window: Duration) -> usize {
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) <= window);
        self.seen.len()
    }
}

/// One worker's share of a job-wide limit among `workers` workers; 0 (no limit) stays 0.
pub fn share(limit: f64, workers: usize) -> f64 {
    if !(limit.is_finite() && limit > 0.0) {
        return 0.0;
    }
    limit / workers.max(1) as f64
}

/// Rewrites an API task's job-wide limits into one worker's share; other tasks are untouched.
pub fn divide_limits(task: &mut Task, workers: usize) {
    let Some(model_ref::Source::Openai(o)) = task.model.as_mut().and_then(|m| m.source.as_mut())
    else {
        return;
    };
    o.requests_per_second = share(o.requests_per_second, workers);
    o.tokens_per_minute = share(o.tokens_per_minute, workers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::{ModelRef, OpenAiEndpoint};

    fn api_task(rps: f64, tpm: f64) -> Task {
        Task {
            model: Some(ModelRef {
                source: Some(model_ref::Source::Openai(OpenAiEndpoint {
                    base_url: "http://h/v1".into(),
                    model: "m".into(),
                    requests_per_second: rps,
                    tokens_per_minute: tpm,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }
    }

    fn limits(t: &Task) -> (f64, f64) {
        match t.model.as_ref().and_then(|m| m.source.as_ref()) {
            Some(model_ref::Source::Openai(o)) => (o.requests_per_second, o.tokens_per_minute),
            _ => panic!("not an API task"),
        }
    }

    #[test]
    fn the_limit_is_divided_by_the_live_workers() {
        assert_eq!(share(10.0, 4), 2.5);
        assert_eq!(share(3.0, 1), 3.0);
        // nobody known yet (the asking worker is live anyway): the whole limit
        assert_eq!(share(3.0, 0), 3.0);
        // no limit stays no limit, whatever the fleet
        assert_eq!(share(0.0, 5), 0.0);
        assert_eq!(share(f64::NAN, 5), 0.0);
        let mut t = api_task(6.0, 90_000.0);
        divide_limits(&mut t, 3);
        assert_eq!(limits(&t), (2.0, 30_000.0));
        // the shares of all workers add up to the job's limit
        let n = 7;
        let total: f64 = (0..n).map(|_| share(5.0, n)).sum();
        assert!((total - 5.0).abs() < 1e-12);
        // a local model's task is left alone
        let mut local = Task {
            model: Some(ModelRef {
                source: Some(model_ref::Source::LocalPath("smollm2".into())),
            }),
            ..Default::default()
        };
        let before = local.clone();
        divide_limits(&mut local, 3);
        assert_eq!(local, before);
    }

    #[test]
    fn workers_count_while_heard_from_within_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(4);
        let mut fleet = Fleet::default();
        fleet.touch("w0", t0);
        assert_eq!(fleet.live(t0, window), 1);
        // a second worker joins: the share halves from the next lease on
        fleet.touch("w1", t0 + Duration::from_secs(1));
        assert_eq!(fleet.live(t0 + Duration::from_secs(1), window), 2);
        assert_eq!(share(4.0, 2), 2.0);
        // w0 keeps leasing; w1 goes silent and drops out after the window
        fleet.touch("w0", t0 + Duration::from_secs(5));
        assert_eq!(fleet.live(t0 + Duration::from_secs(5), window), 2);
        fleet.touch("w0", t0 + Duration::from_secs(6));
        assert_eq!(fleet.live(t0 + Duration::from_secs(6), window), 1);
        // a worker whose registration is gone leaves at once; a late touch never goes back
        fleet.touch("w2", t0 + Duration::from_secs(6));
        fleet.touch("w2", t0);
        assert_eq!(fleet.live(t0 + Duration::from_secs(9), window), 2);
        fleet.forget("w2");
        assert_eq!(fleet.live(t0 + Duration::from_secs(9), window), 1);
    }
}

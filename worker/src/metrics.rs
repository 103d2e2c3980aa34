//! The worker's metrics: pairs graded and their rate, tasks by kind and outcome with their
//! run time, checkpoint pushes, drain state, and the gRPC calls of its control port.

use crate::control::ControlState;
use crate::RateMeter;
use labelfleet_cluster::metrics::{latency_histogram, Counter, Exposition, GaugeF64, GrpcMetrics};
use labelfleet_proto::v1::TaskKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Tasks run, by kind and outcome, and their run time by kind.
#[derive(Clone, Debug)]
pub struct TaskMetrics {
    runs: Family<TaskLabels, prometheus_client::metrics::counter::Counter>,
    seconds: Family<KindLabels, Histogram>,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        TaskMetrics {
            runs: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl TaskMetrics {
    /// Records one task: its kind, whether it was done, and how long it ran.
    pub fn observe(&self, kind: i32, done: bool, seconds: f64) {
        let kind = match TaskKind::try_from(kind) {
            Ok(TaskKind::Grade) => "grade",
            Ok(TaskKind::SynthesizeQueries) => "synthesize_queries",
            Ok(TaskKind::Search) => "search",
            _ => "other",
        };
        let outcome = if done { "done" } else { "failed" };
        self.runs.get_or_create(&TaskLabels { kind, outcome }).inc();
        self.seconds
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }
}

/// Everything the worker exports, and what is read at each scrape.
pub struct WorkerMetrics {
    exposition: Exposition,
    state: Arc<ControlState>,
    /// Pairs the engine thread counts, mirrored into a counter at each scrape.
    engine_pairs: Arc<AtomicU64>,
    pairs: Counter,
    pairs_seen: AtomicU64,
    /// The pairs-per-second meter the heartbeats report from too.
    rate: Arc<Mutex<RateMeter>>,
    pairs_per_second: GaugeF64,
    in_flight: GaugeF64,
    draining: GaugeF64,
}

impl WorkerMetrics {
    /// Registers the worker's metrics and its control server's gRPC calls (returned).
    pub fn new(
        state: Arc<ControlState>,
        engine_pairs: Arc<AtomicU64>,
        rate: Arc<Mutex<RateMeter>>,
    ) -> (Self, GrpcMetrics) {
        let mut e = Exposition::new();
        let pairs = Counter::default();
        e.counter("labelfleet_worker_pairs_total", "Pairs graded", &pairs);
        for (name, help, counter) in [
            (
                "labelfleet_worker_checkpoints_installed_total",
                "Checkpoint pushes installed",
                &state.checkpoints_installed,
            ),
            (
                "labelfleet_worker_pushes_rejected_total",
                "Checkpoint pushes discarded (aborted or bad checksum)",
                &state.pushes_rejected,
            ),
            (
                "labelfleet_worker_checkpoint_conflicts_total",
                "Checkpoint pushes refused because the id was installed with other content",
                &state.checkpoint_conflicts,
            ),
        ] {
            e.counter(name, help, counter);
        }
        e.register(
            "labelfleet_worker_tasks",
            "Tasks run, by kind and outcome (done: results reported; failed: a failure reported)",
            state.tasks.runs.clone(),
        );
        e.register(
            "labelfleet_worker_task_seconds",
            "Seconds a task ran on this worker, by kind",
            state.tasks.seconds.clone(),
        );
        let grpc = GrpcMetrics::register(
            &mut e,
            &["labelfleet.v1.WorkerControl", "grpc.health.v1.Health"],
        );
        let metrics = WorkerMetrics {
            pairs_per_second: e.gauge(
                "labelfleet_worker_pairs_per_second",
                "Pairs graded per second, last minute",
            ),
            in_flight: e.gauge("labelfleet_worker_tasks_in_flight", "Tasks held"),
            draining: e.gauge("labelfleet_worker_draining", "1 while draining"),
            exposition: e,
            state,
            engine_pairs,
            pairs,
            pairs_seen: AtomicU64::new(0),
            rate,
        };
        (metrics, grpc)
    }

    /// The metrics now, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let total = self.engine_pairs.load(Ordering::Relaxed);
        let seen = self.pairs_seen.swap(total, Ordering::Relaxed);
        self.pairs.add(total.saturating_sub(seen));
        let pps = self.rate.lock().map(|mut r| r.rate(total)).unwrap_or(0.0);
        self.pairs_per_second.set(pps);
        self.in_flight
            .set(self.state.in_flight.load(Ordering::Relaxed) as f64);
        self.draining
            .set(self.state.draining.load(Ordering::Relaxed) as u8 as f64);
        self.exposition.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_pairs_and_state_are_exported() {
        let state = Arc::new(ControlState::default());
        let engine_pairs = Arc::new(AtomicU64::new(0));
        let (m, _grpc) = WorkerMetrics::new(state.clone(), engine_pairs.clone(), Arc::default());
        state.tasks.observe(TaskKind::Grade as i32, true, 0.4);
        state.tasks.observe(TaskKind::Grade as i32, false, 2.0);
        state.checkpoints_installed.add(1);
        engine_pairs.store(500, Ordering::Relaxed);
        let first = m.render();
        engine_pairs.store(700, Ordering::Relaxed);
        let text = m.render();
        assert!(
            first.contains("labelfleet_worker_pairs_total 500"),
            "{first}"
        );
        assert!(text.contains("labelfleet_worker_pairs_total 700"), "{text}");
        assert!(
            text.contains(r#"labelfleet_worker_tasks_total{kind="grade",outcome="done"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"labelfleet_worker_tasks_total{kind="grade",outcome="failed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"labelfleet_worker_task_seconds_count{kind="grade"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("labelfleet_worker_checkpoints_installed_total 1"),
            "{text}"
        );
        assert!(text.contains("labelfleet_worker_draining 0"), "{text}");
    }
}

//! The task scheduler: the leader's in-memory view of jobs and their tasks.
//!
//! Pure logic, no I/O and no clock of its own (every call takes `now`), so every rule is unit
//! tested. The service around it persists each decision (etcd marks, result objects) before it
//! tells a worker the decision holds.
//!
//! Rules:
//! - a task is leased to one worker at a time, with a deadline; heartbeats extend it;
//! - an expired lease re-queues the task, until `max_attempts` leases have been granted, then the
//!   task fails with the reason recorded;
//! - a completion is accepted from any attempt of a task that is not yet done (all attempts run
//!   the same inputs on the same pinned model), and the first one wins: later ones are duplicates;
//! - a non-retryable failure (bad input) fails that task alone; the job goes on.

use labelfleet_proto::v1::{Job, JobState, StageProgress, Task, TaskKind, TaskLease};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Where a task stands.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    Pending,
    Leased {
        worker: String,
        attempt: u32,
        deadline: Instant,
    },
    Done {
        attempt: u32,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug)]
struct TaskEntry {
    /// The task's inputs; `attempt`, deadline and fencing token are filled in per lease.
    task: Task,
    pairs: u64,
    /// Leases granted so far.
    attempts: u32,
    state: TaskState,
}

/// Progress of one job, for `GetJob` and metrics.
#[derive(Debug, Clone, Default)]
pub struct JobCounts {
    pub tasks: usize,
    pub tasks_done: usize,
    pub tasks_failed: usize,
    pub pairs: u64,
    pub pairs_done: u64,
    pub pairs_failed: u64,
}

#[derive(Debug)]
struct JobEntry {
    job: Job,
    tasks: Vec<TaskEntry>,
    counts: JobCounts,
    /// When this leader started tracking the job, and how many pairs were done then: the rate
    /// is measured over what this leader saw.
    since: Instant,
    pairs_done_at_since: u64,
    /// When the job reached a final state: its rate stops there.
    ended: Option<Instant>,
    first_failure: Option<String>,
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    pub lease: Duration,
    pub max_attempts: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease: Duration::from_secs(30),
            max_attempts: 4,
        }
    }
}

/// What a completion amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The task is not done: commit the results.
    Accept { job_id: String },
    /// Another attempt already committed: drop these results.
    Duplicate,
    /// The job was cancelled or the task failed for good: drop them.
    Rejected(String),
}

/// A job that reached a final state during a call, so the caller persists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub job_id: String,
    pub state: JobState,
}

/// An expired lease, for logs and metrics.
#[derive(Debug, Clone)]
pub struct Expired {
    pub task_id: String,
    pub worker: String,
    pub attempt: u32,
    /// True when the task is out of attempts and failed.
    pub failed: bool,
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    fencing_token: u64,
    jobs: BTreeMap<String, JobEntry>,
    index: HashMap<String, (String, usize)>,
    queue: VecDeque<(String, usize)>,
    lease_expiries: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, fencing_token: u64) -> Self {
        Scheduler {
            config,
            fencing_token,
            jobs: BTreeMap::new(),
            index: HashMap::new(),
            queue: VecDeque::new(),
            lease_expiries: 0,
        }
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// Adds a job with its tasks. `done` and `failed` name tasks already final (loaded from the
    /// metadata store by a new leader); the rest are queued.
    pub fn add_job(
        &mut self,
        job: Job,
        tasks: Vec<Task>,
        done: &HashMap<String, u32>,
        failed: &HashMap<String, String>,
        now: Instant,
    ) -> Option<Finished> {
        let job_id = job.job_id.clone();
        let running =
            job.state == JobState::Running as i32 || job.state == JobState::Pending as i32;
        let mut entries = Vec::with_capacity(tasks.len());
        let mut counts = JobCounts::default();
        let mut first_failure = None;
        for (i, task) in tasks.into_iter().enumerate() {
            let pairs = task.pairs.len().max(task.documents.len()) as u64;
            counts.tasks += 1;
            counts.pairs += pairs;
            let state = if let Some(&attempt) = done.get(&task.task_id) {
                counts.tasks_done += 1;
                counts.pairs_done += pairs;
                TaskState::Done { attempt }
            } else if let Some(reason) = failed.get(&task.task_id) {
                counts.tasks_failed += 1;
                counts.pairs_failed += pairs;
                first_failure.get_or_insert_with(|| format!("{}: {reason}", task.task_id));
                TaskState::Failed {
                    reason: reason.clone(),
                }
            } else {
                if running {
                    self.queue.push_back((job_id.clone(), i));
                }
                TaskState::Pending
            };
            self.index.insert(task.task_id.clone(), (job_id.clone(), i));
            entries.push(TaskEntry {
                task,
                pairs,
                attempts: 0,
                state,
            });
        }
        let pairs_done = counts.pairs_done;
        let mut entry = JobEntry {
            job,
            tasks: entries,
            counts,
            since: now,
            pairs_done_at_since: pairs_done,
            ended: None,
            first_failure,
        };
        let finished = if running {
            entry.job.state = JobState::Running as i32;
            Self::finish_if_complete(&mut entry)
        } else {
            None
        };
        self.jobs.insert(job_id, entry);
        finished
    }

    /// Grants up to `max` leases to `worker`, oldest job first.
    pub fn lease(&mut self, worker: &str, max: usize, now: Instant) -> Vec<Task> {
        let mut granted = Vec::new();
        while granted.len() < max {
            let Some((job_id, i)) = self.queue.pop_front() else {
                break;
            };
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            if job.job.state != JobState::Running as i32 {
                continue;
            }
            let entry = &mut job.tasks[i];
            if entry.state != TaskState::Pending {
                continue;
            }
            entry.attempts += 1;
            let deadline = now + self.config.lease;
            entry.state = TaskState::Leased {
                worker: worker.to_string(),
                attempt: entry.attempts,
                deadline,
            };
            let mut task = entry.task.clone();
            task.attempt = entry.attempts;
            task.fencing_token = self.fencing_token;
            task.lease_deadline_unix_ms = unix_ms_after(self.config.lease);
            granted.push(task);
        }
        granted
    }

    /// Extends the leases `worker` still holds; returns (extended, revoked).
    pub fn heartbeat(
        &mut self,
        worker: &str,
        leases: &[TaskLease],
        now: Instant,
    ) -> (Vec<TaskLease>, Vec<TaskLease>) {
        let (mut extended, mut revoked) = (Vec::new(), Vec::new());
        for lease in leases {
            let held = self.index.get(&lease.task_id).and_then(|(job_id, i)| {
                let job = self.jobs.get_mut(job_id)?;
                if job.job.state != JobState::Running as i32 {
                    return None;
                }
                match &mut job.tasks[*i].state {
                    TaskState::Leased {
                        worker: w,
                        attempt,
                        deadline,
                    } if w == worker && *attempt == lease.attempt => {
                        *deadline = now + self.config.lease;
                        Some(())
                    }
                    _ => None,
                }
            });
            if held.is_some() {
                extended.push(lease.clone());
            } else {
                revoked.push(lease.clone());
            }
        }
        (extended, revoked)
    }

    /// Decides whether results of (`task_id`, `attempt`) should be committed.
    pub fn check_completion(&self, task_id: &str) -> Option<Completion> {
        let (job_id, i) = self.index.get(task_id)?;
        let job = self.jobs.get(job_id)?;
        Some(match &job.tasks[*i].state {
            TaskState::Done { .. } => Completion::Duplicate,
            TaskState::Failed { reason } => Completion::Rejected(format!("task failed: {reason}")),
            _ if job.job.state == JobState::Cancelled as i32 => {
                Completion::Rejected("job cancelled".into())
            }
            _ => Completion::Accept {
                job_id: job_id.clone(),
            },
        })
    }

    /// Marks a task done once its results are durably committed. Returns whether this call
    /// made it done (false: another attempt got there first) and the job if it just finished.
    pub fn mark_done(&mut self, task_id: &str, attempt: u32) -> (bool, Option<Finished>) {
        let Some((job_id, i)) = self.index.get(task_id).cloned() else {
            return (false, None);
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return (false, None);
        };
        let entry = &mut job.tasks[i];
        if matches!(
            entry.state,
            TaskState::Done { .. } | TaskState::Failed { .. }
        ) {
            return (false, None);
        }
        entry.state = TaskState::Done { attempt };
        job.counts.tasks_done += 1;
        job.counts.pairs_done += entry.pairs;
        (true, Self::finish_if_complete(job))
    }

    /// Records a worker's failure report. Returns whether the task will be retried, and the
    /// job if it just finished. Only the current lease holder can fail a task.
    pub fn fail(
        &mut self,
        task_id: &str,
        attempt: u32,
        reason: &str,
        retryable: bool,
    ) -> (bool, Option<Finished>) {
        let Some((job_id, i)) = self.index.get(task_id).cloned() else {
            return (false, None);
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return (false, None);
        };
        let entry = &mut job.tasks[i];
        match &entry.state {
            TaskState::Leased { attempt: a, .. } if *a == attempt => {}
            _ => return (false, None),
        }
        if retryable && entry.attempts < self.config.max_attempts {
            entry.state = TaskState::Pending;
            self.queue.push_back((job_id, i));
            return (true, None);
        }
        let reason = if retryable {
            format!("{reason} (after {} attempts)", entry.attempts)
        } else {
            reason.to_string()
        };
        (false, Self::record_failure(job, i, reason))
    }

    /// Re-queues every lease whose deadline passed (or fails the task when it is out of
    /// attempts). Returns what expired and the jobs that finished.
    pub fn expire(&mut self, now: Instant) -> (Vec<Expired>, Vec<Finished>) {
        let mut expired = Vec::new();
        let mut finished = Vec::new();
        for (job_id, job) in self.jobs.iter_mut() {
            if job.job.state != JobState::Running as i32 {
                continue;
            }
            for i in 0..job.tasks.len() {
                let (worker, attempt) = match &job.tasks[i].state {
                    TaskState::Leased {
                        worker,
                        attempt,
                        deadline,
                    } if *deadline <= now => (worker.clone(), *attempt),
                    _ => continue,
                };
                self.lease_expiries += 1;
                let entry = &mut job.tasks[i];
                let out_of_attempts = entry.attempts >= self.config.max_attempts;
                expired.push(Expired {
                    task_id: entry.task.task_id.clone(),
                    worker: worker.clone(),
                    attempt,
                    failed: out_of_attempts,
                });
                if out_of_attempts {
                    let reason = format!(
                        "lease expired {} times (last on worker {worker})",
                        entry.attempts
                    );
                    if let Some(f) = Self::record_failure(job, i, reason) {
                        finished.push(f);
                    }
                } else {
                    entry.state = TaskState::Pending;
                    self.queue.push_back((job_id.clone(), i));
                }
            }
        }
        (expired, finished)
    }

    /// Re-queues every task a worker holds (it left the cluster: its etcd lease is gone).
    pub fn release_worker(&mut self, worker: &str) -> usize {
        let mut released = 0;
        for (job_id, job) in self.jobs.iter_mut() {
            for (i, entry) in job.tasks.iter_mut().enumerate() {
                if matches!(&entry.state, TaskState::Leased { worker: w, .. } if w == worker) {
                    entry.state = TaskState::Pending;
                    self.queue.push_back((job_id.clone(), i));
                    released += 1;
                }
            }
        }
        released
    }

    /// Cancels a running job: its queued tasks are skipped and its leases revoked.
    pub fn cancel(&mut self, job_id: &str, reason: &str) -> Option<&Job> {
        let job = self.jobs.get_mut(job_id)?;
        if job.job.state == JobState::Running as i32 || job.job.state == JobState::Pending as i32 {
            job.job.state = JobState::Cancelled as i32;
            job.job.error = format!("cancelled: {reason}");
            job.ended = Some(Instant::now());
        }
        Some(&job.job)
    }

    /// A snapshot of the job with its progress.
    pub fn job(&self, job_id: &str, now: Instant) -> Option<Job> {
        let entry = self.jobs.get(job_id)?;
        let mut job = entry.job.clone();
        let c = &entry.counts;
        let elapsed = entry
            .ended
            .unwrap_or(now)
            .duration_since(entry.since)
            .as_secs_f64();
        let rate = if elapsed > 0.0 {
            (c.pairs_done - entry.pairs_done_at_since) as f64 / elapsed
        } else {
            0.0
        };
        let remaining = c.pairs - c.pairs_done - c.pairs_failed;
        let synthesis = entry
            .tasks
            .first()
            .is_some_and(|t| t.task.kind == TaskKind::SynthesizeQueries as i32);
        job.stages = vec![StageProgress {
            // Synthesis counts documents; labeling counts pairs.
            stage: if synthesis { "synthesize" } else { "label" }.into(),
            done: c.pairs_done,
            total: c.pairs,
            failed: c.pairs_failed,
            items_per_second: rate,
            eta_seconds: if rate > 0.0 {
                remaining as f64 / rate
            } else {
                0.0
            },
        }];
        Some(job)
    }

    /// The job a task belongs to.
    pub fn job_of(&self, task_id: &str) -> Option<String> {
        self.index.get(task_id).map(|(j, _)| j.clone())
    }

    /// A task's inputs.
    pub fn task(&self, job_id: &str, task_id: &str) -> Option<&Task> {
        let (j, i) = self.index.get(task_id)?;
        if j != job_id {
            return None;
        }
        Some(&self.jobs.get(j)?.tasks[*i].task)
    }

    pub fn job_ids(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    pub fn counts(&self, job_id: &str) -> Option<JobCounts> {
        self.jobs.get(job_id).map(|j| j.counts.clone())
    }

    /// Task ids of a job in order, with their state.
    pub fn task_states(&self, job_id: &str) -> Vec<(String, TaskState)> {
        self.jobs
            .get(job_id)
            .map(|j| {
                j.tasks
                    .iter()
                    .map(|t| (t.task.task_id.clone(), t.state.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tasks waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queue
            .iter()
            .filter(|(j, i)| {
                self.jobs.get(j).is_some_and(|job| {
                    job.job.state == JobState::Running as i32
                        && job.tasks[*i].state == TaskState::Pending
                })
            })
            .count()
    }

    pub fn in_flight(&self) -> usize {
        self.jobs
            .values()
            .flat_map(|j| j.tasks.iter())
            .filter(|t| matches!(t.state, TaskState::Leased { .. }))
            .count()
    }

    pub fn lease_expiries(&self) -> u64 {
        self.lease_expiries
    }

    fn record_failure(job: &mut JobEntry, i: usize, reason: String) -> Option<Finished> {
        let entry = &mut job.tasks[i];
        job.first_failure
            .get_or_insert_with(|| format!("{}: {reason}", entry.task.task_id));
        entry.state = TaskState::Failed { reason };
        job.counts.tasks_failed += 1;
        job.counts.pairs_failed += entry.pairs;
        Self::finish_if_complete(job)
    }

    fn finish_if_complete(job: &mut JobEntry) -> Option<Finished> {
        let c = &job.counts;
        if job.job.state != JobState::Running as i32 || c.tasks_done + c.tasks_failed < c.tasks {
            return None;
        }
        job.job.state = JobState::Succeeded as i32;
        job.ended = Some(Instant::now());
        if c.tasks_failed > 0 {
            job.job.error = format!(
                "{} of {} tasks failed ({} pairs); first: {}",
                c.tasks_failed,
                c.tasks,
                c.pairs_failed,
                job.first_failure.as_deref().unwrap_or("")
            );
        }
        if c.tasks_done == 0 && c.tasks > 0 {
            job.job.state = JobState::Failed as i32;
        }
        Some(Finished {
            job_id: job.job.job_id.clone(),
            state: JobState::try_from(job.job.state).unwrap_or(JobState::Failed),
        })
    }
}

fn unix_ms_after(d: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now + d).as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::PairInput;

    fn job(id: &str, tasks: usize) -> (Job, Vec<Task>) {
        let job = Job {
            job_id: id.into(),
            state: JobState::Running as i32,
            ..Default::default()
        };
        let tasks = (0..tasks)
            .map(|i| Task {
                task_id: format!("{id}-t{i}"),
                job_id: id.into(),
                pairs: vec![PairInput::default(); 10],
                ..Default::default()
            })
            .collect();
        (job, tasks)
    }

    fn sched(max_attempts: u32) -> Scheduler {
        Scheduler::new(
            SchedulerConfig {
                lease: Duration::from_secs(10),
                max_attempts,
            },
            7,
        )
    }

    #[test]
    fn leases_each_task_once_and_finishes_the_job() {
        let now = Instant::now();
        let mut s = sched(3);
        let (j, t) = job("a", 3);
        assert!(s
            .add_job(j, t, &HashMap::new(), &HashMap::new(), now)
            .is_none());
        let got = s.lease("w1", 2, now);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].attempt, got[0].fencing_token), (1, 7));
        let more = s.lease("w2", 5, now);
        assert_eq!(more.len(), 1);
        assert!(s.lease("w3", 5, now).is_empty());
        assert_eq!(s.in_flight(), 3);
        for t in got.iter().chain(&more) {
            assert_eq!(
                s.check_completion(&t.task_id),
                Some(Completion::Accept { job_id: "a".into() })
            );
        }
        assert_eq!(s.mark_done("a-t0", 1), (true, None));
        assert_eq!(s.mark_done("a-t1", 1), (true, None));
        let (made, fin) = s.mark_done("a-t2", 1);
        assert!(made);
        assert_eq!(fin.unwrap().state, JobState::Succeeded);
        let snap = s.job("a", now).unwrap();
        assert_eq!(snap.stages[0].done, 30);
        assert_eq!(snap.stages[0].total, 30);
    }

    #[test]
    fn expired_lease_requeues_and_late_duplicate_is_dropped() {
        let now = Instant::now();
        let mut s = sched(3);
        let (j, t) = job("a", 1);
        s.add_job(j, t, &HashMap::new(), &HashMap::new(), now);
        let first = s.lease("w1", 1, now);
        assert_eq!(first[0].attempt, 1);
        let (expired, _) = s.expire(now + Duration::from_secs(11));
        assert_eq!(expired.len(), 1);
        assert!(!expired[0].failed);
        assert_eq!(s.lease_expiries(), 1);
        let second = s.lease("w2", 1, now + Duration::from_secs(11));
        assert_eq!(second[0].attempt, 2);
        // w1's heartbeat for the old attempt is revoked.
        let (ext, rev) = s.heartbeat(
            "w1",
            &[TaskLease {
                task_id: "a-t0".into(),
                attempt: 1,
            }],
            now,
        );
        assert!(ext.is_empty() && rev.len() == 1);
        // w2 commits first; w1's late results are a duplicate.
        assert!(s.mark_done("a-t0", 2).0);
        assert_eq!(s.check_completion("a-t0"), Some(Completion::Duplicate));
        assert_eq!(s.mark_done("a-t0", 1), (false, None));
        assert_eq!(s.counts("a").unwrap().pairs_done, 10);
    }

    #[test]
    fn retries_are_bounded_and_the_failure_is_recorded() {
        let now = Instant::now();
        let mut s = sched(2);
        let (j, t) = job("a", 2);
        s.add_job(j, t, &HashMap::new(), &HashMap::new(), now);
        let t0 = s.lease("w1", 1, now);
        let (retry, _) = s.fail(&t0[0].task_id, 1, "cuda oom", true);
        assert!(retry);
        let again = s.lease("w1", 1, now);
        assert_eq!(again[0].task_id, "a-t1");
        let t0b = s.lease("w1", 1, now);
        assert_eq!((t0b[0].task_id.as_str(), t0b[0].attempt), ("a-t0", 2));
        let (retry, fin) = s.fail("a-t0", 2, "cuda oom", true);
        assert!(!retry && fin.is_none());
        let (_, fin) = s.mark_done("a-t1", 1);
        let fin = fin.unwrap();
        assert_eq!(fin.state, JobState::Succeeded);
        let snap = s.job("a", now).unwrap();
        assert_eq!(snap.stages[0].failed, 10);
        assert!(
            snap.error.contains("a-t0: cuda oom (after 2 attempts)"),
            "{}",
            snap.error
        );
    }

    #[test]
    fn bad_input_fails_one_task_at_once() {
        let now = Instant::now();
        let mut s = sched(5);
        let (j, t) = job("a", 2);
        s.add_job(j, t, &HashMap::new(), &HashMap::new(), now);
        let got = s.lease("w1", 2, now);
        let (retry, _) = s.fail(&got[0].task_id, 1, "pair p3: query is empty", false);
        assert!(!retry);
        // A stale attempt cannot fail a task it no longer holds.
        assert_eq!(s.fail(&got[1].task_id, 9, "x", false), (false, None));
        let (_, fin) = s.mark_done(&got[1].task_id, 1);
        assert_eq!(fin.unwrap().state, JobState::Succeeded);
        assert_eq!(s.counts("a").unwrap().tasks_failed, 1);
    }

    #[test]
    fn a_new_leader_resumes_from_the_recorded_marks() {
        let now = Instant::now();
        let mut s = sched(3);
        let (j, t) = job("a", 4);
        let done = HashMap::from([("a-t0".to_string(), 1), ("a-t2".to_string(), 3)]);
        let failed = HashMap::from([("a-t3".to_string(), "bad".to_string())]);
        assert!(s.add_job(j, t, &done, &failed, now).is_none());
        let got = s.lease("w", 10, now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].task_id, "a-t1");
        assert_eq!(s.mark_done("a-t1", 1).1.unwrap().state, JobState::Succeeded);
    }

    #[test]
    fn cancel_revokes_leases_and_drops_results() {
        let now = Instant::now();
        let mut s = sched(3);
        let (j, t) = job("a", 2);
        s.add_job(j, t, &HashMap::new(), &HashMap::new(), now);
        let got = s.lease("w", 1, now);
        s.cancel("a", "user");
        assert!(s.lease("w", 1, now).is_empty());
        let lease = TaskLease {
            task_id: got[0].task_id.clone(),
            attempt: 1,
        };
        assert_eq!(s.heartbeat("w", &[lease], now).1.len(), 1);
        assert!(matches!(
            s.check_completion(&got[0].task_id),
            Some(Completion::Rejected(_))
        ));
        assert_eq!(s.queue_depth(), 0);
    }

    #[test]
    fn a_departed_worker_releases_its_tasks() {
        let now = Instant::now();
        let mut s = sched(3);
        let (j, t) = job("a", 3);
        s.add_job(j, t, &HashMap::new(), &HashMap::new(), now);
        s.lease("dead", 2, now);
        assert_eq!(s.release_worker("dead"), 2);
        assert_eq!(s.lease("alive", 5, now).len(), 3);
    }
}

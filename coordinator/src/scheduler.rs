//! The task scheduler: the leader's in-memory view of jobs and their tasks.
//!
//! Pure logic, no I/O and no clock of its own (every call takes `now`), so every rule is unit
//! tested. The service around it persists each decision (result objects, etcd records) before
//! it tells a worker the decision holds.
//!
//! Rules:
//! - a task is leased to one worker at a time, with a deadline; heartbeats extend it;
//! - an expired lease re-queues the task, until the job's `max_attempts` leases have been
//!   granted, then the task fails with the reason recorded;
//! - a completion is accepted from any attempt of a task that is not yet done (all attempts run
//!   the same inputs on the same pinned model), and the first one wins: later ones are duplicates;
//! - a non-retryable failure (bad input) fails that task alone; the job goes on.
//!
//! Memory: the scheduler never holds a task's inputs (they are objects in the store, read when
//! the task is leased). A job costs one byte-sized slot per task, plus an entry per lease in
//! flight and per failed task, so a 10-million-pair job at 100 pairs per task is 100,000 slots.
//! Tasks are handed out in order by a cursor, so nothing is queued up front.

use labelfleet_proto::v1::{Job, JobState, StageProgress, TaskKind, TaskLease};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The stage a job of tasks of `kind` reports, and the results it has.
pub fn stage_name(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::SynthesizeQueries => "synthesize",
        TaskKind::Search => "search",
        TaskKind::Grade | TaskKind::Unspecified => "label",
    }
}

/// The id of task `index` of `job_id`.
pub fn task_id(job_id: &str, index: u32) -> String {
    format!("{job_id}-t{index:05}")
}

/// The job id and task index a task id names (the inverse of [`task_id`]).
pub fn parse_task_id(task_id: &str) -> Option<(&str, u32)> {
    let (job, n) = task_id.rsplit_once("-t")?;
    if job.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((job, n.parse().ok()?))
}

/// The shape of a job's tasks: `tasks` tasks of `task_size` items (pairs, or seed documents
/// for synthesis), the last one holding the rest. Recorded with the job, so a new leader knows
/// every task without reading any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobPlan {
    pub tasks: u32,
    pub task_size: u32,
    pub items: u64,
}

impl JobPlan {
    pub fn new(items: u64, task_size: u32) -> Self {
        let size = task_size.max(1);
        JobPlan {
            tasks: items.div_ceil(size as u64) as u32,
            task_size: size,
            items,
        }
    }

    /// Items in task `index`.
    pub fn items_in(&self, index: u32) -> u64 {
        let start = index as u64 * self.task_size as u64;
        self.items.saturating_sub(start).min(self.task_size as u64)
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pending,
    Leased,
    Done,
    Failed,
}

/// A lease in flight.
#[derive(Debug, Clone)]
struct Lease {
    worker: String,
    attempt: u32,
    deadline: Instant,
}

/// Progress of one job, for `GetJob`, records and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub tasks: u64,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub items: u64,
    pub items_done: u64,
    pub items_failed: u64,
}

/// What a new leader knows of a job's progress when it adds the job.
#[derive(Debug, Clone)]
pub enum Resume {
    /// Nothing done yet (a new job).
    Fresh,
    /// A running job: the tasks whose results are committed, and those failed for good.
    Running {
        done: HashSet<u32>,
        failed: HashMap<u32, String>,
    },
    /// A job that already reached its final state: only its counts are kept.
    Finished(JobCounts),
}

#[derive(Debug)]
struct JobEntry {
    job: Job,
    plan: JobPlan,
    /// What every task of the job is (grading, query synthesis or BM25 search).
    kind: TaskKind,
    max_attempts: u32,
    /// One per task while the job runs; emptied when it ends (the counts remain).
    slots: Vec<Slot>,
    /// Leases granted per task (attempt numbers), while the job runs.
    attempts: Vec<u8>,
    /// Next task never leased.
    cursor: u32,
    /// Tasks handed back (expired, released, retryable failure), leased before the cursor.
    retry: VecDeque<u32>,
    /// Tasks in `Slot::Pending` (the queue depth).
    pending: u64,
    leases: HashMap<u32, Lease>,
    /// Tasks whose results are being written: they neither expire nor fail meanwhile.
    committing: HashSet<u32>,
    failures: BTreeMap<u32, String>,
    counts: JobCounts,
    /// When this leader started tracking the job, and how many items were done then: the rate
    /// is measured over what this leader saw.
    since: Instant,
    done_at_since: u64,
    /// When the job reached a final state: its rate stops there.
    ended: Option<Instant>,
}

impl JobEntry {
    fn running(&self) -> bool {
        self.job.state == JobState::Running as i32
    }

    fn pending(&self) -> u64 {
        if self.running() {
            self.pending
        } else {
            0
        }
    }

    /// Hands task `i` back to the queue (its lease is gone).
    fn requeue(&mut self, i: u32) {
        self.slots[i as usize] = Slot::Pending;
        self.retry.push_back(i);
        self.pending += 1;
    }
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    pub lease: Duration,
    /// Leases per task before it fails, unless the job's spec sets its own.
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

/// Most leases any job may grant a task (attempt numbers are kept in a byte).
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

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

/// A lease granted: the caller reads the task's inputs and hands them to the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub job_id: String,
    pub task_id: String,
    pub attempt: u32,
}

/// An expired lease, for logs and metrics.
#[derive(Debug, Clone)]
pub struct Expired {
    pub job_id: String,
    pub task_id: String,
    pub worker: String,
    pub attempt: u32,
    /// True when the task is out of attempts and failed.
    pub failed: bool,
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    jobs: BTreeMap<String, JobEntry>,
    lease_expiries: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            jobs: BTreeMap::new(),
            lease_expiries: 0,
        }
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// Adds a job whose tasks are all of `kind`; `max_attempts` of 0 takes the scheduler's
    /// default.
    pub fn add_job(
        &mut self,
        job: Job,
        plan: JobPlan,
        kind: TaskKind,
        max_attempts: u32,
        resume: Resume,
        now: Instant,
    ) -> Option<Finished> {
        let job_id = job.job_id.clone();
        let live = job.state == JobState::Running as i32 || job.state == JobState::Pending as i32;
        let n = plan.tasks as usize;
        let mut entry = JobEntry {
            job,
            plan,
            kind,
            max_attempts: match max_attempts {
                0 => self.config.max_attempts,
                m => m,
            }
            .min(MAX_ATTEMPTS_LIMIT),
            slots: Vec::new(),
            attempts: Vec::new(),
            cursor: 0,
            retry: VecDeque::new(),
            pending: 0,
            leases: HashMap::new(),
            committing: HashSet::new(),
            failures: BTreeMap::new(),
            counts: JobCounts {
                tasks: plan.tasks as u64,
                items: plan.items,
                ..Default::default()
            },
            since: now,
            done_at_since: 0,
            ended: None,
        };
        match resume {
            Resume::Finished(counts) => {
                entry.counts = counts;
                entry.ended = Some(now);
            }
            Resume::Fresh | Resume::Running { .. } if !live => entry.ended = Some(now),
            Resume::Fresh => {
                entry.slots = vec![Slot::Pending; n];
                entry.attempts = vec![0; n];
            }
            Resume::Running { done, failed } => {
                entry.slots = vec![Slot::Pending; n];
                entry.attempts = vec![0; n];
                for i in done.into_iter().filter(|&i| i < plan.tasks) {
                    entry.slots[i as usize] = Slot::Done;
                    entry.counts.tasks_done += 1;
                    entry.counts.items_done += plan.items_in(i);
                }
                for (i, reason) in failed.into_iter().filter(|(i, _)| *i < plan.tasks) {
                    // A committed result wins over a failure mark (the object is the commit).
                    if entry.slots[i as usize] == Slot::Pending {
                        Self::set_failed(&mut entry, i, reason);
                    }
                }
            }
        }
        entry.pending = entry.slots.iter().filter(|s| **s == Slot::Pending).count() as u64;
        entry.done_at_since = entry.counts.items_done;
        let finished = if live {
            entry.job.state = JobState::Running as i32;
            Self::finish_if_complete(&mut entry, now)
        } else {
            None
        };
        self.jobs.insert(job_id, entry);
        finished
    }

    /// Grants up to `max` leases to `worker` of tasks of the given kinds (any kind when
    /// `kinds` is empty), oldest job first.
    pub fn lease(
        &mut self,
        worker: &str,
        max: usize,
        kinds: &[TaskKind],
        now: Instant,
    ) -> Vec<Grant> {
        let mut granted = Vec::new();
        let lease = self.config.lease;
        for (job_id, job) in self.jobs.iter_mut() {
            if granted.len() >= max {
                break;
            }
            if !job.running() || !(kinds.is_empty() || kinds.contains(&job.kind)) {
                continue;
            }
            while granted.len() < max {
                let Some(i) = Self::next_pending(job) else {
                    break;
                };
                job.slots[i as usize] = Slot::Leased;
                job.pending -= 1;
                job.attempts[i as usize] = job.attempts[i as usize].saturating_add(1);
                let attempt = job.attempts[i as usize] as u32;
                job.leases.insert(
                    i,
                    Lease {
                        worker: worker.to_string(),
                        attempt,
                        deadline: now + lease,
                    },
                );
                granted.push(Grant {
                    job_id: job_id.clone(),
                    task_id: task_id(job_id, i),
                    attempt,
                });
            }
        }
        granted
    }

    fn next_pending(job: &mut JobEntry) -> Option<u32> {
        while let Some(i) = job.retry.pop_front() {
            if job.slots[i as usize] == Slot::Pending {
                return Some(i);
            }
        }
        while job.cursor < job.plan.tasks {
            let i = job.cursor;
            job.cursor += 1;
            if job.slots[i as usize] == Slot::Pending {
                return Some(i);
            }
        }
        None
    }

    /// Extends the leases `worker` still holds; returns (extended, revoked).
    pub fn heartbeat(
        &mut self,
        worker: &str,
        leases: &[TaskLease],
        now: Instant,
    ) -> (Vec<TaskLease>, Vec<TaskLease>) {
        let (mut extended, mut revoked) = (Vec::new(), Vec::new());
        let ttl = self.config.lease;
        for lease in leases {
            let held = self.entry_mut(&lease.task_id).and_then(|(job, i)| {
                if !job.running() {
                    return None;
                }
                let l = job.leases.get_mut(&i)?;
                (l.worker == worker && l.attempt == lease.attempt).then(|| l.deadline = now + ttl)
            });
            if held.is_some() {
                extended.push(lease.clone());
            } else {
                revoked.push(lease.clone());
            }
        }
        (extended, revoked)
    }

    /// Decides whether results of a task should be committed; on `Accept` the task is marked
    /// as committing until [`Scheduler::mark_done`] or [`Scheduler::abort_completion`].
    pub fn begin_completion(&mut self, task_id: &str) -> Option<Completion> {
        let decision = self.check_completion(task_id)?;
        if matches!(decision, Completion::Accept { .. }) {
            if let Some((job, i)) = self.entry_mut(task_id) {
                job.committing.insert(i);
            }
        }
        Some(decision)
    }

    /// The results of a task could not be written: it may expire or fail again.
    pub fn abort_completion(&mut self, task_id: &str) {
        if let Some((job, i)) = self.entry_mut(task_id) {
            job.committing.remove(&i);
        }
    }

    /// Decides whether results of a task should be committed.
    pub fn check_completion(&self, task_id: &str) -> Option<Completion> {
        let (job_id, i) = parse_task_id(task_id)?;
        let job = self.jobs.get(job_id)?;
        if job.job.state == JobState::Cancelled as i32 {
            return Some(Completion::Rejected("job cancelled".into()));
        }
        if i >= job.plan.tasks {
            return None;
        }
        Some(match job.slots.get(i as usize) {
            // A finished job keeps no slots: everything in it is final.
            None => Completion::Duplicate,
            Some(Slot::Done) => Completion::Duplicate,
            Some(Slot::Failed) => Completion::Rejected(format!(
                "task failed: {}",
                job.failures.get(&i).map(String::as_str).unwrap_or("")
            )),
            Some(_) => Completion::Accept {
                job_id: job_id.to_string(),
            },
        })
    }

    /// Marks a task done once its results are durably committed. Returns whether this call
    /// made it done (false: another attempt got there first) and the job if it just finished.
    pub fn mark_done(&mut self, task_id: &str, now: Instant) -> (bool, Option<Finished>) {
        let Some((job, i)) = self.entry_mut(task_id) else {
            return (false, None);
        };
        match job.slots.get(i as usize) {
            // A late attempt can commit after its lease expired and the task was re-queued.
            Some(Slot::Pending) => job.pending -= 1,
            Some(Slot::Leased) => {}
            _ => return (false, None),
        }
        job.slots[i as usize] = Slot::Done;
        job.leases.remove(&i);
        job.committing.remove(&i);
        job.counts.tasks_done += 1;
        job.counts.items_done += job.plan.items_in(i);
        (true, Self::finish_if_complete(job, now))
    }

    /// Records a worker's failure report. Returns whether the task will be retried, and the
    /// job if it just finished. Only the current lease holder can fail a task.
    pub fn fail(
        &mut self,
        task_id: &str,
        worker: &str,
        attempt: u32,
        reason: &str,
        retryable: bool,
        now: Instant,
    ) -> (bool, Option<Finished>) {
        let Some((job, i)) = self.entry_mut(task_id) else {
            return (false, None);
        };
        if job.committing.contains(&i) {
            return (false, None);
        }
        match job.leases.get(&i) {
            Some(l) if l.attempt == attempt && l.worker == worker => {}
            _ => return (false, None),
        }
        job.leases.remove(&i);
        let attempts = job.attempts[i as usize] as u32;
        if retryable && attempts < job.max_attempts {
            job.requeue(i);
            return (true, None);
        }
        let reason = if retryable {
            format!("{reason} (after {attempts} attempts)")
        } else {
            reason.to_string()
        };
        Self::set_failed(job, i, reason);
        (false, Self::finish_if_complete(job, now))
    }

    /// Re-queues every lease whose deadline passed (or fails the task when it is out of
    /// attempts). Looks only at leases in flight. Returns what expired and the jobs that
    /// finished.
    pub fn expire(&mut self, now: Instant) -> (Vec<Expired>, Vec<Finished>) {
        let mut expired = Vec::new();
        let mut finished = Vec::new();
        for (job_id, job) in self.jobs.iter_mut() {
            if !job.running() {
                continue;
            }
            let mut late: Vec<u32> = job
                .leases
                .iter()
                .filter(|(i, l)| l.deadline <= now && !job.committing.contains(i))
                .map(|(&i, _)| i)
                .collect();
            late.sort_unstable();
            for i in late {
                let Some(lease) = job.leases.remove(&i) else {
                    continue;
                };
                self.lease_expiries += 1;
                let out_of_attempts = job.attempts[i as usize] as u32 >= job.max_attempts;
                expired.push(Expired {
                    job_id: job_id.clone(),
                    task_id: task_id(job_id, i),
                    worker: lease.worker.clone(),
                    attempt: lease.attempt,
                    failed: out_of_attempts,
                });
                if out_of_attempts {
                    let reason = format!(
                        "lease expired {} times (last on worker {})",
                        job.attempts[i as usize], lease.worker
                    );
                    Self::set_failed(job, i, reason);
                } else {
                    job.requeue(i);
                }
            }
            if let Some(f) = Self::finish_if_complete(job, now) {
                finished.push(f);
            }
        }
        (expired, finished)
    }

    /// Re-queues every task a worker holds (it left the cluster: its etcd lease is gone).
    pub fn release_worker(&mut self, worker: &str) -> usize {
        let mut released = 0;
        for job in self.jobs.values_mut() {
            let held: Vec<u32> = job
                .leases
                .iter()
                .filter(|(i, l)| l.worker == worker && !job.committing.contains(i))
                .map(|(&i, _)| i)
                .collect();
            for i in held {
                job.leases.remove(&i);
                job.requeue(i);
                released += 1;
            }
        }
        released
    }

    /// Cancels a running job: its queued tasks are skipped and its leases revoked.
    pub fn cancel(&mut self, job_id: &str, reason: &str, now: Instant) -> Option<&Job> {
        let job = self.jobs.get_mut(job_id)?;
        if job.job.state == JobState::Running as i32 || job.job.state == JobState::Pending as i32 {
            job.job.state = JobState::Cancelled as i32;
            job.job.error = format!("cancelled: {reason}");
            Self::end(job, now);
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
            c.items_done.saturating_sub(entry.done_at_since) as f64 / elapsed
        } else {
            0.0
        };
        let remaining = c.items.saturating_sub(c.items_done + c.items_failed);
        job.stages = vec![StageProgress {
            // Synthesis counts documents, search counts (query, shard) searches, labeling pairs.
            stage: stage_name(entry.kind).into(),
            done: c.items_done,
            total: c.items,
            failed: c.items_failed,
            items_per_second: rate,
            eta_seconds: if rate > 0.0 {
                remaining as f64 / rate
            } else {
                0.0
            },
        }];
        Some(job)
    }

    /// The reason a task failed for good, if it did.
    pub fn failure(&self, task_id: &str) -> Option<String> {
        let (job_id, i) = parse_task_id(task_id)?;
        self.jobs.get(job_id)?.failures.get(&i).cloned()
    }

    pub fn job_ids(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    pub fn contains(&self, job_id: &str) -> bool {
        self.jobs.contains_key(job_id)
    }

    pub fn counts(&self, job_id: &str) -> Option<JobCounts> {
        self.jobs.get(job_id).map(|j| j.counts.clone())
    }

    /// What the job's tasks are.
    pub fn kind(&self, job_id: &str) -> Option<TaskKind> {
        self.jobs.get(job_id).map(|j| j.kind)
    }

    pub fn plan(&self, job_id: &str) -> Option<JobPlan> {
        self.jobs.get(job_id).map(|j| j.plan)
    }

    /// Jobs in a final state whose last update is older than `cutoff_unix_ms`.
    pub fn ended_before(&self, cutoff_unix_ms: i64) -> Vec<String> {
        self.jobs
            .values()
            .filter(|j| j.ended.is_some() && j.job.updated_unix_ms < cutoff_unix_ms)
            .map(|j| j.job.job_id.clone())
            .collect()
    }

    /// Forgets a job (after its data was deleted).
    pub fn remove(&mut self, job_id: &str) -> bool {
        self.jobs.remove(job_id).is_some()
    }

    /// Sets the time a job's record was last written.
    pub fn touch(&mut self, job_id: &str, updated_unix_ms: i64) {
        if let Some(j) = self.jobs.get_mut(job_id) {
            j.job.updated_unix_ms = updated_unix_ms;
        }
    }

    /// Tasks waiting for a worker.
    pub fn queue_depth(&self) -> u64 {
        self.jobs.values().map(JobEntry::pending).sum()
    }

    pub fn in_flight(&self) -> usize {
        self.jobs.values().map(|j| j.leases.len()).sum()
    }

    pub fn lease_expiries(&self) -> u64 {
        self.lease_expiries
    }

    fn entry_mut(&mut self, task_id: &str) -> Option<(&mut JobEntry, u32)> {
        let (job_id, i) = parse_task_id(task_id)?;
        let job = self.jobs.get_mut(job_id)?;
        ((i as usize) < job.slots.len()).then_some((job, i))
    }

    fn set_failed(job: &mut JobEntry, i: u32, reason: String) {
        job.slots[i as usize] = Slot::Failed;
        job.counts.tasks_failed += 1;
        job.counts.items_failed += job.plan.items_in(i);
        job.failures.insert(i, reason);
    }

    /// A job in a final state keeps only its counts and its first failures.
    fn end(job: &mut JobEntry, now: Instant) {
        job.ended = Some(now);
        job.slots = Vec::new();
        job.attempts = Vec::new();
        job.retry = VecDeque::new();
        job.pending = 0;
        job.leases = HashMap::new();
        job.cursor = job.plan.tasks;
    }

    fn finish_if_complete(job: &mut JobEntry, now: Instant) -> Option<Finished> {
        let c = &job.counts;
        if !job.running() || c.tasks_done + c.tasks_failed < c.tasks {
            return None;
        }
        job.job.state = JobState::Succeeded as i32;
        if c.tasks_failed > 0 {
            let (first, reason) = job
                .failures
                .iter()
                .next()
                .map(|(i, r)| (task_id(&job.job.job_id, *i), r.as_str()))
                .unwrap_or_default();
            job.job.error = format!(
                "{} of {} tasks failed ({} items); first: {first}: {reason}",
                c.tasks_failed, c.tasks, c.items_failed
            );
        }
        if c.tasks_done == 0 && c.tasks > 0 {
            job.job.state = JobState::Failed as i32;
        }
        Self::end(job, now);
        Some(Finished {
            job_id: job.job.job_id.clone(),
            state: JobState::try_from(job.job.state).unwrap_or(JobState::Failed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            job_id: id.into(),
            state: JobState::Running as i32,
            ..Default::default()
        }
    }

    /// `tasks` tasks of 10 pairs.
    fn plan(tasks: u32) -> JobPlan {
        JobPlan::new(tasks as u64 * 10, 10)
    }

    fn sched(max_attempts: u32) -> Scheduler {
        Scheduler::new(SchedulerConfig {
            lease: Duration::from_secs(10),
            max_attempts,
        })
    }

    fn add(s: &mut Scheduler, id: &str, tasks: u32, now: Instant) {
        assert!(s
            .add_job(job(id), plan(tasks), TaskKind::Grade, 0, Resume::Fresh, now)
            .is_none());
    }

    #[test]
    fn task_ids_round_trip_and_plans_split_items() {
        assert_eq!(task_id("job-1-ab", 7), "job-1-ab-t00007");
        assert_eq!(parse_task_id("job-1-ab-t00007"), Some(("job-1-ab", 7)));
        assert_eq!(
            parse_task_id("job-1-ab-t1234567"),
            Some(("job-1-ab", 1234567))
        );
        assert_eq!(parse_task_id("job-1-ab"), None);
        assert_eq!(parse_task_id("-t5"), None);
        assert_eq!(parse_task_id("x-t5a"), None);
        let p = JobPlan::new(25, 10);
        assert_eq!(p.tasks, 3);
        assert_eq!((p.items_in(0), p.items_in(2), p.items_in(3)), (10, 5, 0));
        assert_eq!(JobPlan::new(0, 10).tasks, 0);
    }

    #[test]
    fn leases_each_task_once_and_finishes_the_job() {
        let now = Instant::now();
        let mut s = sched(3);
        add(&mut s, "a", 3, now);
        let got = s.lease("w1", 2, &[], now);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].task_id.as_str(), got[0].attempt), ("a-t00000", 1));
        let more = s.lease("w2", 5, &[], now);
        assert_eq!(more.len(), 1);
        assert!(s.lease("w3", 5, &[], now).is_empty());
        assert_eq!(s.in_flight(), 3);
        assert_eq!(s.queue_depth(), 0);
        for t in got.iter().chain(&more) {
            assert_eq!(
                s.check_completion(&t.task_id),
                Some(Completion::Accept { job_id: "a".into() })
            );
        }
        assert_eq!(s.mark_done("a-t00000", now), (true, None));
        assert_eq!(s.mark_done("a-t00001", now), (true, None));
        let (made, fin) = s.mark_done("a-t00002", now);
        assert!(made);
        assert_eq!(fin.unwrap().state, JobState::Succeeded);
        let snap = s.job("a", now).unwrap();
        assert_eq!((snap.stages[0].done, snap.stages[0].total), (30, 30));
        // A finished job keeps no per-task state, and late results are duplicates.
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.check_completion("a-t00001"), Some(Completion::Duplicate));
        assert_eq!(s.check_completion("a-t00009"), None);
    }

    #[test]
    fn expired_lease_requeues_and_late_duplicate_is_dropped() {
        let now = Instant::now();
        let mut s = sched(3);
        add(&mut s, "a", 2, now);
        let first = s.lease("w1", 1, &[], now);
        assert_eq!(first[0].attempt, 1);
        let (expired, _) = s.expire(now + Duration::from_secs(11));
        assert_eq!(expired.len(), 1);
        assert!(!expired[0].failed);
        assert_eq!(s.lease_expiries(), 1);
        // The expired task goes out again before the never-leased one.
        let second = s.lease("w2", 1, &[], now + Duration::from_secs(11));
        assert_eq!(
            (second[0].task_id.as_str(), second[0].attempt),
            ("a-t00000", 2)
        );
        let lease = TaskLease {
            task_id: "a-t00000".into(),
            attempt: 1,
            ..Default::default()
        };
        let (ext, rev) = s.heartbeat("w1", &[lease], now);
        assert!(ext.is_empty() && rev.len() == 1);
        assert!(s.mark_done("a-t00000", now).0);
        assert_eq!(s.check_completion("a-t00000"), Some(Completion::Duplicate));
        assert_eq!(s.mark_done("a-t00000", now), (false, None));
        assert_eq!(s.counts("a").unwrap().items_done, 10);
    }

    #[test]
    fn retries_are_bounded_and_the_failure_is_recorded() {
        let now = Instant::now();
        let mut s = sched(2);
        add(&mut s, "a", 2, now);
        let t0 = s.lease("w1", 1, &[], now);
        let (retry, _) = s.fail(&t0[0].task_id, "w1", 1, "cuda oom", true, now);
        assert!(retry);
        let again = s.lease("w1", 1, &[], now);
        assert_eq!(again[0].task_id, "a-t00000");
        assert_eq!(again[0].attempt, 2);
        let t1 = s.lease("w1", 1, &[], now);
        assert_eq!(t1[0].task_id, "a-t00001");
        let (retry, fin) = s.fail("a-t00000", "w1", 2, "cuda oom", true, now);
        assert!(!retry && fin.is_none());
        assert_eq!(
            s.failure("a-t00000").as_deref(),
            Some("cuda oom (after 2 attempts)")
        );
        let (_, fin) = s.mark_done("a-t00001", now);
        assert_eq!(fin.unwrap().state, JobState::Succeeded);
        let snap = s.job("a", now).unwrap();
        assert_eq!(snap.stages[0].failed, 10);
        assert!(
            snap.error.contains("a-t00000: cuda oom (after 2 attempts)"),
            "{}",
            snap.error
        );
    }

    #[test]
    fn a_task_being_committed_neither_expires_nor_fails() {
        let now = Instant::now();
        let mut s = sched(1);
        add(&mut s, "a", 1, now);
        let got = s.lease("w1", 1, &[], now);
        let id = got[0].task_id.clone();
        assert!(matches!(
            s.begin_completion(&id),
            Some(Completion::Accept { .. })
        ));
        // out of attempts and past its deadline while the results are being written
        let (expired, finished) = s.expire(now + Duration::from_secs(60));
        assert!(expired.is_empty() && finished.is_empty());
        assert_eq!(s.fail(&id, "w1", 1, "late", false, now), (false, None));
        assert_eq!(s.release_worker("w1"), 0);
        let (made_done, fin) = s.mark_done(&id, now);
        assert!(made_done);
        assert_eq!(fin.unwrap().state, JobState::Succeeded);
        assert_eq!(s.counts("a").unwrap().tasks_failed, 0);
        // a write that failed lets the lease expire again
        let mut s = sched(1);
        add(&mut s, "b", 1, now);
        let id = s.lease("w1", 1, &[], now)[0].task_id.clone();
        s.begin_completion(&id);
        s.abort_completion(&id);
        let (expired, _) = s.expire(now + Duration::from_secs(60));
        assert_eq!(expired.len(), 1);
    }

    #[test]
    fn a_job_may_set_its_own_attempt_limit() {
        let now = Instant::now();
        let mut s = sched(5);
        s.add_job(job("a"), plan(1), TaskKind::Grade, 1, Resume::Fresh, now);
        s.lease("w", 1, &[], now);
        let (expired, finished) = s.expire(now + Duration::from_secs(11));
        assert!(expired[0].failed);
        assert_eq!(finished[0].state, JobState::Failed);
    }

    #[test]
    fn bad_input_fails_one_task_at_once() {
        let now = Instant::now();
        let mut s = sched(5);
        add(&mut s, "a", 2, now);
        let got = s.lease("w1", 2, &[], now);
        let (retry, _) = s.fail(
            &got[0].task_id,
            "w1",
            1,
            "pair p3: query is empty",
            false,
            now,
        );
        assert!(!retry);
        // A stale attempt cannot fail a task it no longer holds, nor can another worker.
        assert_eq!(
            s.fail(&got[1].task_id, "w1", 9, "x", false, now),
            (false, None)
        );
        assert_eq!(
            s.fail(&got[1].task_id, "w2", 1, "x", false, now),
            (false, None)
        );
        let (_, fin) = s.mark_done(&got[1].task_id, now);
        assert_eq!(fin.unwrap().state, JobState::Succeeded);
        assert_eq!(s.counts("a").unwrap().tasks_failed, 1);
    }

    #[test]
    fn a_new_leader_resumes_from_the_recorded_progress() {
        let now = Instant::now();
        let mut s = sched(3);
        let resume = Resume::Running {
            done: HashSet::from([0, 2]),
            failed: HashMap::from([(3, "bad".to_string()), (2, "ignored".to_string())]),
        };
        assert!(s
            .add_job(job("a"), plan(4), TaskKind::Grade, 0, resume, now)
            .is_none());
        assert_eq!(s.queue_depth(), 1);
        let got = s.lease("w", 10, &[], now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].task_id, "a-t00001");
        let fin = s.mark_done("a-t00001", now).1.unwrap();
        assert_eq!(fin.state, JobState::Succeeded);
        let c = s.counts("a").unwrap();
        assert_eq!((c.tasks_done, c.tasks_failed, c.items_done), (3, 1, 30));
        // A finished job comes back with its counts only.
        let counts = c.clone();
        let mut t = sched(3);
        let mut done = job("b");
        done.state = JobState::Succeeded as i32;
        t.add_job(
            done,
            plan(4),
            TaskKind::Grade,
            0,
            Resume::Finished(counts),
            now,
        );
        assert_eq!(t.counts("b"), Some(c));
        assert!(t.lease("w", 10, &[], now).is_empty());
    }

    #[test]
    fn cancel_revokes_leases_and_drops_results() {
        let now = Instant::now();
        let mut s = sched(3);
        add(&mut s, "a", 2, now);
        let got = s.lease("w", 1, &[], now);
        s.cancel("a", "user", now);
        assert!(s.lease("w", 1, &[], now).is_empty());
        let lease = TaskLease {
            task_id: got[0].task_id.clone(),
            attempt: 1,
            ..Default::default()
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
        add(&mut s, "a", 3, now);
        s.lease("dead", 2, &[], now);
        assert_eq!(s.release_worker("dead"), 2);
        assert_eq!(s.lease("alive", 5, &[], now).len(), 3);
    }

    #[test]
    fn oldest_job_first_and_old_finished_jobs_are_found() {
        let now = Instant::now();
        let mut s = sched(3);
        add(&mut s, "job-1", 1, now);
        add(&mut s, "job-2", 1, now);
        let got = s.lease("w", 2, &[], now);
        assert_eq!(got[0].job_id, "job-1");
        assert_eq!(got[1].job_id, "job-2");
        s.mark_done(&got[0].task_id, now);
        s.touch("job-1", 1_000);
        s.touch("job-2", 500);
        assert_eq!(s.ended_before(2_000), vec!["job-1".to_string()]);
        assert!(s.remove("job-1"));
        assert_eq!(s.job_ids(), vec!["job-2".to_string()]);
    }

    #[test]
    fn a_worker_is_leased_only_the_kinds_it_asks_for() {
        let now = Instant::now();
        let mut s = sched(3);
        s.add_job(
            job("grade"),
            plan(2),
            TaskKind::Grade,
            0,
            Resume::Fresh,
            now,
        );
        s.add_job(
            job("search"),
            plan(2),
            TaskKind::Search,
            0,
            Resume::Fresh,
            now,
        );
        let searches = s.lease("w1", 10, &[TaskKind::Search], now);
        assert_eq!(searches.len(), 2);
        assert!(searches.iter().all(|g| g.job_id == "search"));
        let grades = s.lease(
            "w2",
            10,
            &[TaskKind::Grade, TaskKind::SynthesizeQueries],
            now,
        );
        assert_eq!(grades.len(), 2);
        assert!(grades.iter().all(|g| g.job_id == "grade"));
        assert_eq!(s.job("search", now).unwrap().stages[0].stage, "search");
        assert_eq!(s.kind("grade"), Some(TaskKind::Grade));
    }

    #[test]
    fn a_large_job_costs_slots_not_task_inputs() {
        let now = Instant::now();
        let mut s = sched(3);
        // 10M pairs at 100 per task: 100,000 tasks, dispatched without scanning them all.
        s.add_job(
            job("big"),
            JobPlan::new(10_000_000, 100),
            TaskKind::Grade,
            0,
            Resume::Fresh,
            now,
        );
        assert_eq!(s.queue_depth(), 100_000);
        let mut leased = 0;
        loop {
            let got = s.lease("w", 64, &[], now);
            if got.is_empty() {
                break;
            }
            for g in &got {
                s.mark_done(&g.task_id, now);
            }
            leased += got.len();
        }
        assert_eq!(leased, 100_000);
        assert_eq!(s.job("big", now).unwrap().state, JobState::Succeeded as i32);
        assert_eq!(s.counts("big").unwrap().items_done, 10_000_000);
    }
}

//! The leader's gRPC services: `JobService` for clients and `TaskService` for workers.
//!
//! A standby serves the same endpoints but answers `UNAVAILABLE` (and its health reports
//! NOT_SERVING) until it wins the election and has reloaded state.

use labelfleet_cluster::blobs::{Blobs, Created};
use crate::error::{CoordinatorError, Result};
use crate::jobs::{self, CorpusBuilder};
use labelfleet_cluster::meta::{keys, Fence, MetaStore};
use labelfleet_cluster::metrics::Counter;
use crate::scheduler::{Completion, Finished, Scheduler, TaskState};
use labelfleet_proto::v1::job_service_server::JobService;
use labelfleet_proto::v1::task_service_server::TaskService;
use labelfleet_proto::v1::*;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Counters every coordinator keeps (exported at `/metrics`).
#[derive(Debug, Default)]
pub struct CoordinatorMetrics {
    pub pairs_committed: Counter,
    pub queries_committed: Counter,
    pub tasks_committed: Counter,
    pub duplicates_dropped: Counter,
    pub lease_expiries: Counter,
    pub tasks_failed: Counter,
    pub tasks_leased: Counter,
}

/// The job record kept in the metadata store (the spec and tasks are objects).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub state: i32,
    pub error: String,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
}

/// What the elected leader holds.
pub struct Leader {
    pub fence: Fence,
    pub sched: Mutex<Scheduler>,
    /// When each job's record was created (kept for `Job.created_unix_ms`).
    created: Mutex<HashMap<String, i64>>,
}

impl Leader {
    pub fn sched(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// State shared by the services of one coordinator replica.
pub struct Coordinator {
    pub meta: MetaStore,
    pub blobs: Blobs,
    pub metrics: CoordinatorMetrics,
    pub leader: RwLock<Option<Arc<Leader>>>,
    /// Workers that registered with this replica.
    pub workers: Mutex<HashSet<String>>,
    /// Workers registered in etcd at the last look.
    members: Mutex<HashSet<String>>,
    pub heartbeat_interval: Duration,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

impl Coordinator {
    pub fn new(meta: MetaStore, blobs: Blobs, heartbeat_interval: Duration) -> Self {
        Coordinator {
            meta,
            blobs,
            metrics: CoordinatorMetrics::default(),
            leader: RwLock::new(None),
            workers: Mutex::new(HashSet::new()),
            members: Mutex::new(HashSet::new()),
            heartbeat_interval,
        }
    }

    pub fn leader(&self) -> std::result::Result<Arc<Leader>, Status> {
        self.leader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Status::unavailable("this coordinator is a standby, not the leader"))
    }

    /// Loads every job from the metadata store and the object store into a fresh scheduler:
    /// what a standby does when it wins the election.
    pub async fn load(
        &self,
        fence: Fence,
        config: crate::scheduler::SchedulerConfig,
    ) -> Result<Leader> {
        let prefix = self.meta.prefix().to_string();
        let entries = self.meta.list(&keys::jobs(&prefix)).await?;
        let mut records = Vec::new();
        let mut done: HashMap<String, HashMap<String, u32>> = HashMap::new();
        let mut failed: HashMap<String, HashMap<String, String>> = HashMap::new();
        for (key, value) in entries {
            let rest = &key[keys::jobs(&prefix).len()..];
            let parts: Vec<&str> = rest.splitn(3, '/').collect();
            match parts.as_slice() {
                [_, "record"] => {
                    let rec: JobRecord =
                        serde_json::from_slice(&value).map_err(|e| CoordinatorError::Decode {
                            key: key.clone(),
                            message: e.to_string(),
                        })?;
                    records.push(rec);
                }
                [job, "done", task] => {
                    let attempt = String::from_utf8_lossy(&value).parse().unwrap_or(0);
                    done.entry(job.to_string())
                        .or_default()
                        .insert(task.to_string(), attempt);
                }
                [job, "failed", task] => {
                    failed.entry(job.to_string()).or_default().insert(
                        task.to_string(),
                        String::from_utf8_lossy(&value).into_owned(),
                    );
                }
                _ => {}
            }
        }
        let mut sched = Scheduler::new(config, fence.token);
        let mut created = HashMap::new();
        let now = Instant::now();
        for rec in records {
            let (job, tasks) = self.load_job(&rec).await?;
            let mut job_done = done.remove(&rec.job_id).unwrap_or_default();
            // A result object written just before a crash, whose mark never made it to etcd, is
            // committed all the same: the object is the commit point.
            for key in self.blobs.list(&jobs::results_prefix(&rec.job_id)).await? {
                if let Some(task) = jobs::task_id_of_key(&key) {
                    job_done.entry(task.to_string()).or_insert(0);
                }
            }
            let job_failed = failed.remove(&rec.job_id).unwrap_or_default();
            created.insert(rec.job_id.clone(), rec.created_unix_ms);
            sched.add_job(job, tasks, &job_done, &job_failed, now);
        }
        tracing::info!(jobs = created.len(), token = fence.token, "state loaded");
        Ok(Leader {
            fence,
            sched: Mutex::new(sched),
            created: Mutex::new(created),
        })
    }

    async fn load_job(&self, rec: &JobRecord) -> Result<(Job, Vec<Task>)> {
        let spec_key = jobs::spec_key(&rec.job_id);
        let spec = match self.blobs.get(&spec_key).await? {
            Some(b) => JobSpec::decode(b).map_err(|e| CoordinatorError::Decode {
                key: spec_key.clone(),
                message: e.to_string(),
            })?,
            None => JobSpec::default(),
        };
        let mut tasks = Vec::new();
        for key in self.blobs.list(&jobs::tasks_prefix(&rec.job_id)).await? {
            if let Some(b) = self.blobs.get(&key).await? {
                tasks.push(Task::decode(b).map_err(|e| CoordinatorError::Decode {
                    key: key.clone(),
                    message: e.to_string(),
                })?);
            }
        }
        let job = Job {
            job_id: rec.job_id.clone(),
            spec: Some(JobSpec {
                label_pairs: Vec::new(),
                ..spec
            }),
            state: rec.state,
            error: rec.error.clone(),
            created_unix_ms: rec.created_unix_ms,
            updated_unix_ms: rec.updated_unix_ms,
            ..Default::default()
        };
        Ok((job, tasks))
    }

    /// Persists the record of a job (fenced).
    pub async fn persist_job(&self, leader: &Leader, job_id: &str) -> Result<()> {
        let Some(job) = leader.sched().job(job_id, Instant::now()) else {
            return Ok(());
        };
        let created = leader
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job_id)
            .copied()
            .unwrap_or_else(now_ms);
        let rec = JobRecord {
            job_id: job_id.to_string(),
            state: job.state,
            error: job.error,
            created_unix_ms: created,
            updated_unix_ms: now_ms(),
        };
        let key = keys::job(self.meta.prefix(), job_id);
        self.meta
            .put_fenced(
                &leader.fence,
                &key,
                serde_json::to_vec(&rec).unwrap_or_default(),
            )
            .await?;
        Ok(())
    }

    pub async fn persist_finished(
        &self,
        leader: &Leader,
        finished: Option<Finished>,
    ) -> Result<()> {
        if let Some(f) = finished {
            tracing::info!(job = %f.job_id, state = ?f.state, "job finished");
            self.persist_job(leader, &f.job_id).await?;
        }
        Ok(())
    }

    /// Records a task's failure for good (fenced) so a new leader does not run it again.
    pub async fn persist_failure(
        &self,
        leader: &Leader,
        job_id: &str,
        task_id: &str,
    ) -> Result<()> {
        let reason = leader
            .sched()
            .task_states(job_id)
            .into_iter()
            .find(|(t, _)| t == task_id)
            .and_then(|(_, s)| match s {
                TaskState::Failed { reason } => Some(reason),
                _ => None,
            });
        if let Some(reason) = reason {
            let key = keys::failed(self.meta.prefix(), job_id, task_id);
            self.meta
                .put_fenced(&leader.fence, &key, reason.into_bytes())
                .await?;
        }
        Ok(())
    }

    /// Re-queues expired leases; persists what failed or finished. Run periodically.
    pub async fn reap(&self, leader: &Leader) -> Result<()> {
        let (expired, finished) = leader.sched().expire(Instant::now());
        for e in &expired {
            self.metrics.lease_expiries.add(1);
            tracing::warn!(task = %e.task_id, worker = %e.worker, attempt = e.attempt, failed = e.failed, "lease expired");
            if e.failed {
                self.metrics.tasks_failed.add(1);
                let job_id = leader.sched().job_of(&e.task_id).unwrap_or_default();
                self.persist_failure(leader, &job_id, &e.task_id).await?;
            }
        }
        for f in finished {
            self.persist_finished(leader, Some(f)).await?;
        }
        Ok(())
    }

    /// Releases the tasks of workers whose etcd registration is gone. Run periodically.
    /// Only workers once seen in etcd are tracked; others (embedded mode) are covered by
    /// lease expiry alone.
    pub async fn release_departed(&self, leader: &Leader) -> Result<()> {
        if matches!(self.meta, MetaStore::Memory(_)) {
            return Ok(());
        }
        let prefix = keys::workers(self.meta.prefix());
        let live: HashSet<String> = self
            .meta
            .list(&prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_string())
            .collect();
        let departed: Vec<String> = {
            let mut known = self.members.lock().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<String> = known.difference(&live).cloned().collect();
            *known = live;
            gone
        };
        for w in departed {
            let n = leader.sched().release_worker(&w);
            tracing::warn!(worker = %w, released = n, "worker left the cluster; its tasks are re-queued");
        }
        Ok(())
    }

    async fn submit(&self, req: SubmitJobRequest) -> Result<Job> {
        let leader = self
            .leader()
            .map_err(|s| CoordinatorError::NotLeader(s.message().into()))?;
        let spec = req
            .spec
            .ok_or_else(|| CoordinatorError::Invalid("spec: missing".into()))?;
        jobs::validate_spec(&spec)?;
        let job_id = format!("job-{}-{:04x}", now_ms(), rand::random::<u16>());
        if !req.idempotency_key.is_empty() {
            let key = keys::idempotency(self.meta.prefix(), &req.idempotency_key);
            if let Some(existing) = self
                .meta
                .put_if_absent(&key, job_id.clone().into_bytes())
                .await?
            {
                let existing = String::from_utf8_lossy(&existing).into_owned();
                // The first submit may have died before writing the job; fall through then.
                if let Some(job) = leader.sched().job(&existing, Instant::now()) {
                    return Ok(job);
                }
            }
        }
        let corpus = if spec.corpus_id.is_empty() {
            HashMap::new()
        } else {
            jobs::load_corpus(&self.blobs, &spec.corpus_id).await?
        };
        let tasks = if jobs::is_synthesis(&spec) {
            jobs::plan_synthesis_tasks(&job_id, &spec, &corpus)?
        } else {
            jobs::plan_tasks(&job_id, &spec, &corpus)?
        };
        for t in &tasks {
            self.blobs
                .put(&jobs::task_key(&job_id, &t.task_id), t.encode_to_vec())
                .await?;
        }
        self.blobs
            .put(&jobs::spec_key(&job_id), spec.encode_to_vec())
            .await?;
        let created = now_ms();
        let job = Job {
            job_id: job_id.clone(),
            spec: Some(JobSpec {
                label_pairs: Vec::new(),
                ..spec
            }),
            state: JobState::Running as i32,
            checkpoint_id: String::new(),
            created_unix_ms: created,
            updated_unix_ms: created,
            ..Default::default()
        };
        // The record is the commit point of a submit: objects without one are ignored.
        let rec = JobRecord {
            job_id: job_id.clone(),
            state: job.state,
            error: String::new(),
            created_unix_ms: created,
            updated_unix_ms: created,
        };
        self.meta
            .put_fenced(
                &leader.fence,
                &keys::job(self.meta.prefix(), &job_id),
                serde_json::to_vec(&rec).unwrap_or_default(),
            )
            .await?;
        leader
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.clone(), created);
        let n = tasks.len();
        let finished =
            leader
                .sched()
                .add_job(job, tasks, &HashMap::new(), &HashMap::new(), Instant::now());
        self.persist_finished(&leader, finished).await?;
        tracing::info!(job = %job_id, tasks = n, "job submitted");
        let job = leader.sched().job(&job_id, Instant::now());
        job.ok_or_else(|| CoordinatorError::Invalid("job vanished".into()))
    }

    async fn complete(&self, req: CompleteTaskRequest) -> Result<CompleteTaskResponse> {
        let leader = self
            .leader()
            .map_err(|s| CoordinatorError::NotLeader(s.message().into()))?;
        let decision = leader.sched().check_completion(&req.task_id);
        let job_id = match decision {
            None => {
                return Err(CoordinatorError::Invalid(format!(
                    "task `{}`: unknown task",
                    req.task_id
                )))
            }
            Some(Completion::Duplicate) | Some(Completion::Rejected(_)) => {
                self.metrics.duplicates_dropped.add(1);
                return Ok(CompleteTaskResponse {
                    committed: false,
                    duplicate: true,
                });
            }
            Some(Completion::Accept { job_id }) => job_id,
        };
        self.check_results(&leader, &job_id, &req)?;
        let batch = ResultBatch {
            labels: req.labels.clone(),
            queries: req.queries.clone(),
            offset: 0,
        };
        // Commit point: the result object is created once; a second attempt finds it there.
        let created = self
            .blobs
            .put_once(
                &jobs::result_key(&job_id, &req.task_id),
                batch.encode_to_vec(),
            )
            .await?;
        let mark = keys::done(self.meta.prefix(), &job_id, &req.task_id);
        self.meta
            .put_fenced(&leader.fence, &mark, req.attempt.to_string().into_bytes())
            .await?;
        let (made_done, finished) = leader.sched().mark_done(&req.task_id, req.attempt);
        // Whichever attempt wrote the object, its labels are stored exactly once; the attempt that
        // turns the task done reports the commit, any other is told it was a duplicate.
        let committed = made_done;
        if created == Created::AlreadyExists {
            tracing::debug!(task = %req.task_id, "result object already present");
        }
        if made_done {
            self.metrics.tasks_committed.add(1);
            self.metrics.pairs_committed.add(req.labels.len() as u64);
            self.metrics.queries_committed.add(req.queries.len() as u64);
        } else {
            self.metrics.duplicates_dropped.add(1);
        }
        self.persist_finished(&leader, finished).await?;
        Ok(CompleteTaskResponse {
            committed,
            duplicate: !committed,
        })
    }

    /// A completion must label exactly the task's pairs, or (synthesis) write queries only for
    /// the task's documents: a buggy worker cannot drop, add or repeat results.
    fn check_results(
        &self,
        leader: &Leader,
        job_id: &str,
        req: &CompleteTaskRequest,
    ) -> Result<()> {
        let sched = leader.sched();
        let Some(task) = sched.task(job_id, &req.task_id) else {
            return Ok(());
        };
        if task.kind == TaskKind::SynthesizeQueries as i32 {
            let docs: HashSet<&str> = task.documents.iter().map(|d| d.id.as_str()).collect();
            let mut ids = HashSet::new();
            for q in &req.queries {
                if !docs.contains(q.doc_id.as_str()) || !ids.insert(q.query_id.as_str()) {
                    return Err(CoordinatorError::Invalid(format!(
                        "task `{}` attempt {}: query `{}` names document `{}`, not one of the task's, or repeats an id",
                        req.task_id, req.attempt, q.query_id, q.doc_id
                    )));
                }
            }
            if !req.labels.is_empty() {
                return Err(CoordinatorError::Invalid(format!(
                    "task `{}`: a synthesis task returns queries, not labels",
                    req.task_id
                )));
            }
            return Ok(());
        }
        let mut a: Vec<&str> = task.pairs.iter().map(|p| p.pair_id.as_str()).collect();
        let mut b: Vec<&str> = req.labels.iter().map(|l| l.pair_id.as_str()).collect();
        a.sort_unstable();
        b.sort_unstable();
        if a != b {
            return Err(CoordinatorError::Invalid(format!(
                "task `{}` attempt {}: results label {} pairs, the task has {} (they must match one to one)",
                req.task_id,
                req.attempt,
                b.len(),
                a.len()
            )));
        }
        Ok(())
    }
}

fn status(e: CoordinatorError) -> Status {
    e.into()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

/// `JobService` over a shared coordinator.
#[derive(Clone)]
pub struct JobApi(pub Arc<Coordinator>);

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(
        &self,
        req: Request<SubmitJobRequest>,
    ) -> std::result::Result<Response<Job>, Status> {
        self.0
            .submit(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_job(
        &self,
        req: Request<GetJobRequest>,
    ) -> std::result::Result<Response<Job>, Status> {
        let leader = self.0.leader()?;
        let id = req.into_inner().job_id;
        let job = leader.sched().job(&id, Instant::now());
        job.map(Response::new)
            .ok_or_else(|| Status::not_found(format!("job `{id}`: no such job")))
    }

    async fn list_jobs(
        &self,
        req: Request<ListJobsRequest>,
    ) -> std::result::Result<Response<ListJobsResponse>, Status> {
        let leader = self.0.leader()?;
        let req = req.into_inner();
        let page = if req.page_size == 0 {
            100
        } else {
            req.page_size as usize
        };
        let sched = leader.sched();
        let now = Instant::now();
        let mut jobs: Vec<Job> = sched
            .job_ids()
            .into_iter()
            .filter(|id| req.page_token.is_empty() || *id > req.page_token)
            .filter_map(|id| sched.job(&id, now))
            .filter(|j| req.state == 0 || j.state == req.state)
            .take(page + 1)
            .collect();
        let next = if jobs.len() > page {
            jobs.truncate(page);
            jobs.last().map(|j| j.job_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token: next,
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<CancelJobRequest>,
    ) -> std::result::Result<Response<Job>, Status> {
        let leader = self.0.leader()?;
        let req = req.into_inner();
        let found = leader.sched().cancel(&req.job_id, &req.reason).is_some();
        if !found {
            return Err(Status::not_found(format!(
                "job `{}`: no such job",
                req.job_id
            )));
        }
        self.0
            .persist_job(&leader, &req.job_id)
            .await
            .map_err(status)?;
        let job = leader.sched().job(&req.job_id, Instant::now());
        job.map(Response::new)
            .ok_or_else(|| Status::not_found("job vanished"))
    }

    type WatchJobStream = BoxStream<Job>;

    async fn watch_job(
        &self,
        req: Request<WatchJobRequest>,
    ) -> std::result::Result<Response<Self::WatchJobStream>, Status> {
        let coord = self.0.clone();
        let id = req.into_inner().job_id;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let snap = coord.leader().and_then(|l| {
                    l.sched()
                        .job(&id, Instant::now())
                        .ok_or_else(|| Status::not_found(format!("job `{id}`: no such job")))
                });
                let terminal = match &snap {
                    Ok(j) => j.state >= JobState::Succeeded as i32,
                    Err(_) => true,
                };
                if tx.send(snap).await.is_err() || terminal {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type FetchResultsStream = BoxStream<ResultBatch>;

    async fn fetch_results(
        &self,
        req: Request<FetchResultsRequest>,
    ) -> std::result::Result<Response<Self::FetchResultsStream>, Status> {
        let leader = self.0.leader()?;
        let req = req.into_inner();
        let tasks = leader.sched().task_states(&req.job_id);
        if tasks.is_empty() {
            return Err(Status::not_found(format!(
                "job `{}`: no such job",
                req.job_id
            )));
        }
        let blobs = self.0.blobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut offset = 0u64;
            for (task_id, state) in tasks {
                if !matches!(state, TaskState::Done { .. }) {
                    continue;
                }
                let key = jobs::result_key(&req.job_id, &task_id);
                let batch = match blobs.get(&key).await {
                    Ok(Some(b)) => {
                        ResultBatch::decode(b).map_err(|e| Status::data_loss(format!("{key}: {e}")))
                    }
                    Ok(None) => Err(Status::data_loss(format!("{key}: committed but missing"))),
                    Err(e) => Err(status(e.into())),
                };
                let batch = match batch {
                    Ok(b) => b,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                let n = (batch.labels.len() + batch.queries.len()) as u64;
                if offset + n <= req.offset {
                    offset += n;
                    continue;
                }
                let skip = req.offset.saturating_sub(offset) as usize;
                let out = ResultBatch {
                    labels: batch.labels.into_iter().skip(skip).collect(),
                    queries: batch.queries,
                    offset: offset + skip as u64,
                };
                offset += n;
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn upload_corpus(
        &self,
        req: Request<Streaming<CorpusChunk>>,
    ) -> std::result::Result<Response<UploadCorpusResponse>, Status> {
        self.0.leader()?;
        let mut stream = req.into_inner();
        let mut builder = CorpusBuilder::default();
        while let Some(chunk) = stream.message().await? {
            builder.add_chunk(chunk);
        }
        let rejected = std::mem::take(&mut builder.rejected);
        let (corpus_id, accepted) = builder.store(&self.0.blobs).await.map_err(status)?;
        tracing::info!(corpus = %corpus_id, accepted, rejected = rejected.len(), "corpus stored");
        Ok(Response::new(UploadCorpusResponse {
            corpus_id,
            accepted,
            rejected,
        }))
    }
}

/// `TaskService` over a shared coordinator.
#[derive(Clone)]
pub struct TaskApi(pub Arc<Coordinator>);

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn register_worker(
        &self,
        req: Request<RegisterWorkerRequest>,
    ) -> std::result::Result<Response<RegisterWorkerResponse>, Status> {
        let leader = self.0.leader()?;
        let req = req.into_inner();
        tracing::info!(worker = %req.worker_id, device = %req.device, capacity = req.capacity, "worker registered");
        self.0
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.worker_id);
        let lease = leader.sched().config().lease;
        Ok(Response::new(RegisterWorkerResponse {
            heartbeat_interval_ms: self.0.heartbeat_interval.as_millis() as u32,
            lease_ttl_ms: lease.as_millis() as u32,
        }))
    }

    async fn lease_tasks(
        &self,
        req: Request<LeaseTasksRequest>,
    ) -> std::result::Result<Response<LeaseTasksResponse>, Status> {
        let leader = self.0.leader()?;
        let req = req.into_inner();
        let tasks = leader.sched().lease(
            &req.worker_id,
            req.max_tasks.min(64) as usize,
            Instant::now(),
        );
        self.0.metrics.tasks_leased.add(tasks.len() as u64);
        Ok(Response::new(LeaseTasksResponse { tasks }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> std::result::Result<Response<HeartbeatResponse>, Status> {
        let leader = self.0.leader()?;
        let req = req.into_inner();
        let (extended, revoked) =
            leader
                .sched()
                .heartbeat(&req.worker_id, &req.leases, Instant::now());
        Ok(Response::new(HeartbeatResponse {
            extended,
            revoked,
            drain: false,
        }))
    }

    async fn complete_task(
        &self,
        req: Request<CompleteTaskRequest>,
    ) -> std::result::Result<Response<CompleteTaskResponse>, Status> {
        self.0
            .complete(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn fail_task(
        &self,
        req: Request<FailTaskRequest>,
    ) -> std::result::Result<Response<FailTaskResponse>, Status> {
        let leader = self.0.leader()?;
        let req = req.into_inner();
        let (will_retry, finished) =
            leader
                .sched()
                .fail(&req.task_id, req.attempt, &req.reason, req.retryable);
        tracing::warn!(task = %req.task_id, worker = %req.worker_id, reason = %req.reason, will_retry, "task failed");
        if !will_retry {
            let job_id = leader.sched().job_of(&req.task_id).unwrap_or_default();
            let failed_now = leader
                .sched()
                .task_states(&job_id)
                .iter()
                .any(|(t, s)| t == &req.task_id && matches!(s, TaskState::Failed { .. }));
            if failed_now {
                self.0.metrics.tasks_failed.add(1);
                self.0
                    .persist_failure(&leader, &job_id, &req.task_id)
                    .await
                    .map_err(status)?;
            }
        }
        self.0
            .persist_finished(&leader, finished)
            .await
            .map_err(status)?;
        Ok(Response::new(FailTaskResponse { will_retry }))
    }
}

//! The leader's gRPC services: `JobService` for clients and `TaskService` for workers.
//!
//! A standby serves the same endpoints but answers `UNAVAILABLE` (and its health reports
//! NOT_SERVING) until it wins the election and has reloaded state.

use crate::corpus_job::{self, CorpusJobs, DriverEnv};
use crate::error::{CoordinatorError, Result};
use crate::fleet::{self, Fleet};
use crate::forward::{self, Forwarder};
use crate::jobs::{self, CorpusBuilder};
use crate::lease_token::LeaseSigner;
use crate::planner::{self, Planner};
use crate::recovery::{self, JobRecord};
use crate::scheduler::{parse_task_id, Completion, Finished, JobPlan, Resume, Scheduler};
use crate::search_job;
use labelfleet_cluster::blobs::{Blobs, Created};
use labelfleet_cluster::limits::Limits;
use labelfleet_cluster::meta::{keys, Fence, LeaseClock, MetaStore};
use labelfleet_cluster::metrics::Counter;
use labelfleet_cluster::security::{Access, Role};
use labelfleet_cluster::tokens::{Caller, ClientAuth, Permission};
use labelfleet_proto::v1::job_service_server::JobService;
use labelfleet_proto::v1::task_service_server::TaskService;
use labelfleet_proto::v1::*;
use prost::Message;
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

/// What the elected leader holds.
pub struct Leader {
    pub fence: Fence,
    /// Until when the election lease is surely held: past it, this replica serves nothing.
    pub clock: LeaseClock,
    /// Signs the lease tokens that bind each lease to its worker.
    pub signer: LeaseSigner,
    pub sched: Mutex<Scheduler>,
    /// Inputs of tasks leased and not yet final, read from the store at lease time, so a
    /// completion is checked against them without reading the object again.
    inputs: Mutex<HashMap<String, Arc<Task>>>,
    /// Corpus jobs (no tasks of their own; their drivers run on this leader).
    corpus: CorpusJobs,
}

impl Leader {
    pub fn new(fence: Fence, clock: LeaseClock, signer: LeaseSigner, sched: Scheduler) -> Self {
        Leader {
            fence,
            clock,
            signer,
            sched: Mutex::new(sched),
            inputs: Mutex::new(HashMap::new()),
            corpus: CorpusJobs::default(),
        }
    }

    pub fn corpus(&self) -> &CorpusJobs {
        &self.corpus
    }

    pub fn sched(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inputs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Task>>> {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the cached inputs of a job that ended (leases it still had when cancelled).
    fn forget_inputs(&self, job_id: &str) {
        let prefix = format!("{job_id}-t");
        self.inputs().retain(|task, _| !task.starts_with(&prefix));
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
    /// When each worker was last heard from: API rate limits are divided among the live ones.
    pub fleet: Mutex<Fleet>,
    pub heartbeat_interval: Duration,
    /// Set when the replica knows its trainer: it can run corpus jobs.
    driver_env: std::sync::OnceLock<DriverEnv>,
    /// Who may call `TaskService` (worker certificates over TLS).
    pub access: Access,
    /// Who may call `JobService` (tokens, operator and coordinator certificates).
    pub auth: ClientAuth,
    pub limits: Limits,
    /// `WatchJob` streams open per client.
    watches: Arc<Mutex<HashMap<String, usize>>>,
    /// One lock per idempotency key with a submit under way: submits with the same key run
    /// one after the other, so a retry gets the first one's job.
    submit_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set on a replica of an elected cluster: while a standby, it forwards `JobService` calls
    /// to the leader.
    forwarder: std::sync::OnceLock<Forwarder>,
}

/// Seconds the last state load of this process took (f64 bits; NaN before any load).
static LAST_LOAD_SECONDS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(u64::MAX);

/// Seconds the last state load of a leader in this process took.
pub fn last_load_seconds() -> Option<f64> {
    let bits = LAST_LOAD_SECONDS.load(std::sync::atomic::Ordering::Relaxed);
    (bits != u64::MAX).then(|| f64::from_bits(bits))
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
            fleet: Mutex::new(Fleet::default()),
            heartbeat_interval,
            driver_env: std::sync::OnceLock::new(),
            access: Access::Open,
            auth: ClientAuth::open(),
            limits: Limits::default(),
            watches: Arc::default(),
            submit_locks: Mutex::new(HashMap::new()),
            forwarder: std::sync::OnceLock::new(),
        }
    }

    /// Lets this replica forward client calls to the leader while it is a standby.
    pub fn set_forwarder(&self, forwarder: Forwarder) {
        let _ = self.forwarder.set(forwarder);
    }

    /// The forwarder, when this replica is a standby that forwards client calls.
    fn forwarding(&self) -> Option<&Forwarder> {
        self.forwarder.get().filter(|_| self.leader().is_err())
    }

    /// Sets who may call what (the transport's access, the clients' tokens) and the limits.
    pub fn secured(mut self, access: Access, auth: ClientAuth, limits: Limits) -> Self {
        self.access = access;
        self.auth = auth;
        self.limits = limits;
        self
    }

    /// Counts a `WatchJob` stream against its caller's limit; the slot frees itself when the
    /// stream ends. Callers are told apart by token or certificate, else by address.
    fn open_watch<T>(
        &self,
        caller: &Caller,
        req: &Request<T>,
    ) -> std::result::Result<WatchSlot, Status> {
        let who = match caller {
            // a standby forwarding its clients' watches: each was limited where it came in
            Caller::Certificate(Role::Coordinator) => {
                return Ok(WatchSlot {
                    who: String::new(),
                    open: Arc::default(),
                })
            }
            Caller::Anonymous => req
                .remote_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
            c => c.to_string(),
        };
        let mut open = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(who.clone()).or_default();
        if *n >= self.limits.max_watches_per_client {
            return Err(Status::resource_exhausted(format!(
                "WatchJob: {who} already has {n} watch streams open (the limit is {})",
                self.limits.max_watches_per_client
            )));
        }
        *n += 1;
        Ok(WatchSlot {
            who,
            open: self.watches.clone(),
        })
    }

    /// Checks that a `TaskService` call comes from a worker (over TLS), and that a certificate
    /// bound to one worker id is used only for that id.
    fn require_worker<T>(
        &self,
        req: &Request<T>,
        call: &str,
        worker_id: &str,
    ) -> std::result::Result<(), Status> {
        labelfleet_cluster::ids::check_id("worker_id", worker_id)
            .map_err(|m| Status::invalid_argument(format!("{call}: {m}")))?;
        let peer = self.access.require(req, call, &[Role::Worker])?;
        match peer.and_then(|p| p.name) {
            Some(name) if name != worker_id => Err(Status::permission_denied(format!(
                "{call}: this certificate belongs to worker `{name}`, not `{worker_id}`"
            ))),
            _ => Ok(()),
        }
    }

    /// Lets this replica run corpus jobs (set once, when it knows its address and trainer).
    pub fn set_driver_env(&self, env: DriverEnv) {
        let _ = self.driver_env.set(env);
    }

    pub fn driver_env(&self) -> Option<DriverEnv> {
        self.driver_env.get().cloned()
    }

    pub fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `leader` is still this replica's leadership.
    pub fn is_leader(&self, leader: &Arc<Leader>) -> bool {
        matches!(self.leader().ok(), Some(l) if Arc::ptr_eq(&l, leader))
    }

    /// A job as clients see it: a labeling or synthesis job, or a corpus job.
    pub fn job_view(&self, leader: &Leader, job_id: &str) -> Option<Job> {
        let job = leader.sched().job(job_id, Instant::now());
        job.or_else(|| leader.corpus().view(job_id))
    }

    /// Cancels a labeling or synthesis job and records it.
    pub async fn cancel_job(&self, leader: &Leader, job_id: &str, reason: &str) -> Result<()> {
        let found = leader
            .sched()
            .cancel(job_id, reason, Instant::now())
            .is_some();
        if !found {
            return Err(CoordinatorError::NotFound(format!(
                "job `{job_id}`: no such job"
            )));
        }
        leader.forget_inputs(job_id);
        self.persist_job(leader, job_id).await
    }

    pub fn leader(&self) -> std::result::Result<Arc<Leader>, Status> {
        self.leader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|l| l.clock.held())
            .ok_or_else(|| Status::unavailable("this coordinator is a standby, not the leader"))
    }

    /// Loads every job from the metadata store and the object store into a fresh scheduler:
    /// what a standby does when it wins the election (see [`recovery`]).
    pub async fn load(
        &self,
        fence: Fence,
        clock: LeaseClock,
        config: crate::scheduler::SchedulerConfig,
    ) -> Result<Leader> {
        let started = Instant::now();
        let mut sched = Scheduler::new(config);
        let recovery::Loaded {
            report,
            broken,
            corpus,
        } = recovery::load_jobs(&self.meta, &self.blobs, &mut sched).await?;
        let signer = LeaseSigner::load(&self.meta).await?;
        let leader = Leader::new(fence, clock, signer, sched);
        leader.corpus().restore(corpus);
        for b in broken {
            self.fail_unloadable(&leader, &b.job_id, &b.reason).await?;
        }
        LAST_LOAD_SECONDS.store(
            started.elapsed().as_secs_f64().to_bits(),
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::info!(
            jobs = report.jobs,
            running = report.running,
            failed_to_load = report.failed_to_load,
            token = leader.fence.token,
            seconds = started.elapsed().as_secs_f64(),
            "state loaded"
        );
        Ok(leader)
    }

    /// Records a job whose objects could not be read back as failed, so it stops there.
    async fn fail_unloadable(&self, leader: &Leader, job_id: &str, reason: &str) -> Result<()> {
        let rec = JobRecord {
            job_id: job_id.to_string(),
            state: JobState::Failed as i32,
            error: format!("could not be restored by a new leader: {reason}"),
            updated_unix_ms: now_ms(),
            ..Default::default()
        };
        let job = Job {
            job_id: rec.job_id.clone(),
            state: rec.state,
            error: rec.error.clone(),
            updated_unix_ms: rec.updated_unix_ms,
            ..Default::default()
        };
        leader.sched().add_job(
            job,
            rec.plan(),
            TaskKind::Grade,
            0,
            Resume::Finished(rec.counts()),
            Instant::now(),
        );
        self.write_record(leader, &rec).await
    }

    pub(crate) async fn write_record(&self, leader: &Leader, rec: &JobRecord) -> Result<()> {
        let key = keys::job(self.meta.prefix(), &rec.job_id);
        let value =
            serde_json::to_vec(rec).map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
        self.meta.put_fenced(&leader.fence, &key, value).await?;
        Ok(())
    }

    /// Persists the record of a job (fenced): its state, plan and counts.
    pub async fn persist_job(&self, leader: &Leader, job_id: &str) -> Result<()> {
        let updated = now_ms();
        let rec = {
            let mut sched = leader.sched();
            sched.touch(job_id, updated);
            let (Some(job), Some(plan), Some(c)) = (
                sched.job(job_id, Instant::now()),
                sched.plan(job_id),
                sched.counts(job_id),
            ) else {
                return Ok(());
            };
            let spec = job.spec.unwrap_or_default();
            let mut rec = JobRecord {
                job_id: job_id.to_string(),
                state: job.state,
                error: job.error,
                created_unix_ms: job.created_unix_ms,
                updated_unix_ms: updated,
                tasks: plan.tasks,
                task_size: plan.task_size,
                items: plan.items,
                max_attempts: spec.max_task_attempts,
                tasks_done: c.tasks_done,
                tasks_failed: c.tasks_failed,
                items_done: c.items_done,
                items_failed: c.items_failed,
                ..Default::default()
            };
            rec.set_task_kind(sched.kind(job_id).unwrap_or(TaskKind::Grade));
            rec
        };
        self.write_record(leader, &rec).await
    }

    pub async fn persist_finished(
        &self,
        leader: &Leader,
        finished: Option<Finished>,
    ) -> Result<()> {
        if let Some(f) = finished {
            tracing::info!(job = %f.job_id, state = ?f.state, "job finished");
            leader.forget_inputs(&f.job_id);
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
        leader.inputs().remove(task_id);
        let reason = leader.sched().failure(task_id);
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
                self.persist_failure(leader, &e.job_id, &e.task_id).await?;
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
            self.fleet().forget(&w);
            let n = leader.sched().release_worker(&w);
            tracing::warn!(worker = %w, released = n, "worker left the cluster; its tasks are re-queued");
        }
        Ok(())
    }

    /// Runs the body of a submit under its idempotency key. A key already used gets that
    /// key's job back (after the submit that holds it finished, when it is under way here);
    /// otherwise `body` creates the job under a fresh id. A body that fails leaves nothing
    /// behind: its objects, a record it may have written, and the key are removed, so a retry
    /// starts afresh. Callers run this on a task of its own (see [`Coordinator::detached`]),
    /// so a client that goes away does not stop a submit half-way.
    pub(crate) async fn submit_once<F, Fut>(
        &self,
        leader: &Leader,
        idempotency_key: &str,
        body: F,
    ) -> Result<Job>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<Job>>,
    {
        let lock = self.submit_lock(idempotency_key);
        let guard = match &lock {
            Some(l) => Some(l.clone().lock_owned().await),
            None => None,
        };
        let result = match self.claim_job_id(leader, idempotency_key).await {
            Ok(Err(existing)) => Ok(existing),
            Ok(Ok(job_id)) => {
                let created = body(job_id.clone()).await;
                if created.is_err() {
                    self.abandon(leader, idempotency_key, &job_id).await;
                }
                created
            }
            Err(e) => Err(e),
        };
        drop(guard);
        self.release_submit_lock(idempotency_key, lock);
        result
    }

    /// Runs a submit on a task of its own and waits for it: when the client cancels the call
    /// (the RPC future is dropped), the submit still runs to its end, committed or cleaned up.
    pub async fn detached<Fut>(submit: Fut) -> Result<Job>
    where
        Fut: std::future::Future<Output = Result<Job>> + Send + 'static,
    {
        tokio::spawn(submit).await.unwrap_or_else(|e| {
            Err(CoordinatorError::Io(std::io::Error::other(format!(
                "submit task: {e}"
            ))))
        })
    }

    /// The lock of an idempotency key (none for a submit without one).
    fn submit_lock(&self, key: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        if key.is_empty() {
            return None;
        }
        let mut locks = self.submit_locks.lock().unwrap_or_else(|p| p.into_inner());
        Some(locks.entry(key.to_string()).or_default().clone())
    }

    /// Drops the lock of a key once no other submit waits on it.
    fn release_submit_lock(&self, key: &str, lock: Option<Arc<tokio::sync::Mutex<()>>>) {
        let Some(lock) = lock else { return };
        let mut locks = self.submit_locks.lock().unwrap_or_else(|p| p.into_inner());
        // ours and the map's: nobody else holds or waits for it (clones are made under the
        // map's lock, so none can appear meanwhile)
        if Arc::strong_count(&lock) == 2 {
            locks.remove(key);
        }
    }

    /// A new job id, or the job an earlier submit with the same idempotency key created. A
    /// key naming a job this leader does not have is left by a submit that never committed
    /// (its leader died or was deposed mid-way; here, submits with one key run one at a time)
    /// or names a job deleted past its retention: it is taken over for a new job, and the
    /// uncommitted submit's objects are deleted.
    pub(crate) async fn claim_job_id(
        &self,
        leader: &Leader,
        idempotency_key: &str,
    ) -> Result<std::result::Result<String, Job>> {
        if !idempotency_key.is_empty() {
            labelfleet_cluster::ids::check_key("request.idempotency_key", idempotency_key)
                .map_err(CoordinatorError::Invalid)?;
        }
        let job_id = format!("job-{}-{:04x}", now_ms(), rand::random::<u16>());
        if idempotency_key.is_empty() {
            return Ok(Ok(job_id));
        }
        let key = keys::idempotency(self.meta.prefix(), idempotency_key);
        for _ in 0..3 {
            let Some(existing) = self
                .meta
                .put_if_absent(&key, job_id.clone().into_bytes())
                .await?
            else {
                return Ok(Ok(job_id));
            };
            let existing_id = String::from_utf8_lossy(&existing).into_owned();
            if let Some(job) = self.job_view(leader, &existing_id) {
                return Ok(Err(job));
            }
            let new = Some(job_id.clone().into_bytes());
            if self.meta.replace_if(&key, &existing, new).await? {
                tracing::warn!(key = %idempotency_key, orphan = %existing_id, job = %job_id, "idempotency key of a job that does not exist taken over");
                self.drop_uncommitted(&existing_id).await;
                return Ok(Ok(job_id));
            }
        }
        Err(CoordinatorError::FailedPrecondition(format!(
            "idempotency key `{idempotency_key}`: changed while being claimed; submit again"
        )))
    }

    /// Deletes the objects of a job that has no record (they would only be ignored).
    async fn drop_uncommitted(&self, job_id: &str) {
        match self.meta.get(&keys::job(self.meta.prefix(), job_id)).await {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                tracing::warn!(job = %job_id, error = %e, "could not check an uncommitted job's record");
                return;
            }
        }
        if let Err(e) = self.blobs.delete_prefix(&jobs::job_prefix(job_id)).await {
            tracing::warn!(job = %job_id, error = %e, "could not delete an uncommitted submit's objects");
        }
    }

    /// Undoes a submit that failed before its job was scheduled: deletes the record (when
    /// the commit got that far), the objects, and the idempotency key if it still names the
    /// job. Best effort: what is left is found by the next submit with the key.
    async fn abandon(&self, leader: &Leader, idempotency_key: &str, job_id: &str) {
        if self.job_view(leader, job_id).is_some() {
            return; // scheduled: the job exists, whatever failed after
        }
        let prefix = self.meta.prefix();
        let (record, failed) = (
            keys::job(prefix, job_id),
            keys::failed_of_job(prefix, job_id),
        );
        if let Err(e) = self
            .meta
            .delete_fenced(&leader.fence, &record, &failed)
            .await
        {
            tracing::warn!(job = %job_id, error = %e, "could not delete a failed submit's record");
        }
        if let Err(e) = self.blobs.delete_prefix(&jobs::job_prefix(job_id)).await {
            tracing::warn!(job = %job_id, error = %e, "could not delete a failed submit's objects");
        }
        if idempotency_key.is_empty() {
            return;
        }
        let key = keys::idempotency(prefix, idempotency_key);
        if let Err(e) = self.meta.replace_if(&key, job_id.as_bytes(), None).await {
            tracing::warn!(job = %job_id, key = %idempotency_key, error = %e, "could not release a failed submit's idempotency key");
        }
    }

    /// A job submitted with its pairs streamed: the pairs are spilled to the store grouped by
    /// the shard of their document as they arrive, then cut into tasks shard by shard.
    pub async fn submit_stream(&self, mut chunks: Streaming<SubmitJobChunk>) -> Result<Job> {
        let leader = self
            .leader()
            .map_err(|s| CoordinatorError::NotLeader(s.message().into()))?;
        let next = |r: std::result::Result<Option<SubmitJobChunk>, Status>| {
            r.map_err(|s| CoordinatorError::Invalid(format!("submit stream: {}", s.message())))
        };
        let first = next(chunks.message().await)?
            .ok_or_else(|| CoordinatorError::Invalid("submit stream: no message".into()))?;
        let req = first.request.ok_or_else(|| {
            CoordinatorError::Invalid("request: the first message must carry the request".into())
        })?;
        let mut spec = req
            .spec
            .ok_or_else(|| CoordinatorError::Invalid("request.spec: missing".into()))?;
        jobs::validate_spec_settings(&spec)?;
        if jobs::is_synthesis(&spec) || jobs::is_corpus(&spec) || spec.seed_documents > 0 {
            return Err(CoordinatorError::Invalid(
                "request.spec.seed_documents: a streamed submit labels pairs; submit synthesis and corpus jobs with SubmitJob".into(),
            ));
        }
        let leader_ref = &leader;
        self.submit_once(&leader, &req.idempotency_key, |job_id| async move {
            let leading = std::mem::take(&mut spec.label_pairs);
            let planned = self
                .spill_and_cut(&job_id, &spec, leading, first.pairs, &mut chunks)
                .await;
            let planned = planned.and_then(|n| self.within_pair_limit(n).map(|_| n));
            let items = self.dropped_if_failed(&job_id, planned).await?;
            if items == 0 {
                return Err(CoordinatorError::Invalid(
                    "spec.label_pairs: no pairs to label".into(),
                ));
            }
            let plan = jobs::plan_of(&spec, items);
            self.commit_job(leader_ref, &job_id, spec, plan, TaskKind::Grade)
                .await
        })
        .await
    }

    /// Takes a streamed job's pairs into a spill, then cuts and writes its tasks; returns the
    /// number of pairs.
    async fn spill_and_cut(
        &self,
        job_id: &str,
        spec: &JobSpec,
        leading: Vec<PairInput>,
        first: Vec<PairInput>,
        chunks: &mut Streaming<SubmitJobChunk>,
    ) -> Result<u64> {
        let planner = Planner::new(&self.blobs);
        let mut spill = planner.spill(job_id, spec).await?;
        let mut pairs = 0u64;
        for pair in leading.into_iter().chain(first) {
            pairs += 1;
            spill.push(pair).await?;
        }
        loop {
            let chunk = chunks
                .message()
                .await
                .map_err(|s| CoordinatorError::Invalid(format!("submit stream: {}", s.message())));
            let Some(chunk) = chunk? else { break };
            pairs += chunk.pairs.len() as u64;
            // refused as soon as the stream passes the limit, not after storing it all
            self.within_pair_limit(pairs)?;
            for pair in chunk.pairs {
                spill.push(pair).await?;
            }
        }
        spill.cut().await
    }

    /// Refuses a job of more pairs than this coordinator's limit (`--max-pairs-per-job`).
    fn within_pair_limit(&self, pairs: u64) -> Result<()> {
        let max = self.limits.max_pairs_per_job;
        if pairs > max {
            return Err(CoordinatorError::LimitExceeded(format!(
                "the job has {pairs} pairs, over this coordinator's limit of {max} (--max-pairs-per-job); split it"
            )));
        }
        Ok(())
    }

    /// Deletes the objects of a job whose planning failed (they have no record, so they would
    /// only be ignored), then passes the outcome on.
    async fn dropped_if_failed<T>(&self, job_id: &str, planned: Result<T>) -> Result<T> {
        if planned.is_err() {
            if let Err(e) = self.blobs.delete_prefix(&jobs::job_prefix(job_id)).await {
                tracing::warn!(job = %job_id, error = %e, "could not delete a failed submit's objects");
            }
        }
        planned
    }

    pub async fn submit(&self, req: SubmitJobRequest) -> Result<Job> {
        let leader = self
            .leader()
            .map_err(|s| CoordinatorError::NotLeader(s.message().into()))?;
        let spec = req
            .spec
            .ok_or_else(|| CoordinatorError::Invalid("spec: missing".into()))?;
        jobs::validate_spec(&spec)?;
        self.within_pair_limit(spec.label_pairs.len() as u64)?;
        self.submit_once(&leader, &req.idempotency_key, |job_id| {
            self.plan_and_commit(&leader, job_id, spec)
        })
        .await
    }

    /// Plans a labeling, synthesis or search job, writes its tasks, and commits it.
    async fn plan_and_commit(&self, leader: &Leader, job_id: String, spec: JobSpec) -> Result<Job> {
        let kind = jobs::task_kind(&spec);
        let (tasks, plan) = match kind {
            TaskKind::Search => {
                let shards = jobs::corpus_shards(&self.blobs, &spec.corpus_id).await?;
                if shards.is_empty() {
                    return Err(CoordinatorError::Invalid(format!(
                        "spec.corpus_id: `{}`: no such corpus (upload it first)",
                        spec.corpus_id
                    )));
                }
                search_job::plan_tasks(&job_id, &spec, shards.len() as u32)
            }
            TaskKind::SynthesizeQueries => {
                let tasks = Planner::new(&self.blobs)
                    .plan_synthesis(&job_id, &spec)
                    .await?;
                let items = tasks.iter().map(|t| t.documents.len() as u64).sum();
                (tasks, jobs::plan_of(&spec, items))
            }
            _ => {
                // Written as they are cut: a task holds its documents.
                let planned = Planner::new(&self.blobs)
                    .plan_labeling(&job_id, &spec)
                    .await;
                let planned = planned.and_then(|n| self.within_pair_limit(n).map(|_| n));
                let items = self.dropped_if_failed(&job_id, planned).await?;
                (Vec::new(), jobs::plan_of(&spec, items))
            }
        };
        self.write_tasks(&job_id, tasks).await?;
        self.commit_job(leader, &job_id, spec, plan, kind).await
    }

    /// Stores the spec and the job record (the commit point of a submit: objects without a
    /// record are ignored), then schedules the job.
    async fn commit_job(
        &self,
        leader: &Leader,
        job_id: &str,
        spec: JobSpec,
        plan: JobPlan,
        kind: TaskKind,
    ) -> Result<Job> {
        let job_id = job_id.to_string();
        // The pairs live in the task objects; the spec object keeps the rest, so reading it
        // back costs the same for a job of ten pairs or ten million.
        let stored = JobSpec {
            label_pairs: Vec::new(),
            ..spec.clone()
        };
        self.blobs
            .put(&jobs::spec_key(&job_id), stored.encode_to_vec())
            .await?;
        let created = now_ms();
        let job = Job {
            job_id: job_id.clone(),
            spec: Some(JobSpec {
                label_pairs: Vec::new(),
                ..spec
            }),
            state: JobState::Running as i32,
            created_unix_ms: created,
            updated_unix_ms: created,
            ..Default::default()
        };
        // The record is the commit point of a submit: objects without one are ignored.
        let mut rec = JobRecord {
            job_id: job_id.clone(),
            state: job.state,
            created_unix_ms: created,
            updated_unix_ms: created,
            tasks: plan.tasks,
            task_size: plan.task_size,
            items: plan.items,
            max_attempts: job.spec.as_ref().map_or(0, |s| s.max_task_attempts),
            ..Default::default()
        };
        rec.set_task_kind(kind);
        self.write_record(leader, &rec).await?;
        let finished = leader.sched().add_job(
            job,
            plan,
            kind,
            rec.max_attempts,
            Resume::Fresh,
            Instant::now(),
        );
        self.persist_finished(leader, finished).await?;
        tracing::info!(job = %job_id, tasks = plan.tasks, items = plan.items, "job submitted");
        let job = leader.sched().job(&job_id, Instant::now());
        job.ok_or_else(|| CoordinatorError::Invalid("job vanished".into()))
    }

    /// Writes task objects, several at a time.
    async fn write_tasks(&self, job_id: &str, tasks: Vec<Task>) -> Result<()> {
        planner::write_tasks(&self.blobs, job_id, tasks).await
    }

    /// Reads the inputs of a leased task (from the cache of tasks in flight, or the store).
    async fn task_inputs(&self, leader: &Leader, job_id: &str, task_id: &str) -> Result<Arc<Task>> {
        if let Some(t) = leader.inputs().get(task_id) {
            return Ok(t.clone());
        }
        let key = jobs::task_key(job_id, task_id);
        let bytes =
            self.blobs.get(&key).await?.ok_or_else(|| {
                CoordinatorError::DataLoss(format!("task object `{key}` is missing"))
            })?;
        let task = Task::decode(bytes).map_err(|e| {
            CoordinatorError::DataLoss(format!("task object `{key}` undecodable: {e}"))
        })?;
        let task = Arc::new(task);
        leader.inputs().insert(task_id.to_string(), task.clone());
        Ok(task)
    }

    /// Leases tasks to a worker, with their inputs. A task whose object is missing or
    /// undecodable fails alone; one the store could not read now goes back to the queue.
    async fn lease(&self, req: LeaseTasksRequest) -> Result<Vec<Task>> {
        let leader = self
            .leader()
            .map_err(|s| CoordinatorError::NotLeader(s.message().into()))?;
        let kinds: Vec<TaskKind> = req
            .kinds
            .iter()
            .filter_map(|k| TaskKind::try_from(*k).ok())
            .collect();
        let grants = leader.sched().lease(
            &req.worker_id,
            req.max_tasks.min(64) as usize,
            &kinds,
            Instant::now(),
        );
        let lease = leader.sched().config().lease;
        let live = {
            let mut fleet = self.fleet();
            fleet.touch(&req.worker_id, Instant::now());
            fleet.live(Instant::now(), lease)
        };
        let mut out = Vec::with_capacity(grants.len());
        for g in grants {
            match self.task_inputs(&leader, &g.job_id, &g.task_id).await {
                Ok(inputs) => {
                    let mut task = (*inputs).clone();
                    fleet::divide_limits(&mut task, live);
                    task.attempt = g.attempt;
                    task.lease_token = leader.signer.token(&g.task_id, g.attempt, &req.worker_id);
                    task.fencing_token = leader.fence.token;
                    task.lease_deadline_unix_ms = now_ms() + lease.as_millis() as i64;
                    out.push(task);
                }
                Err(e) => {
                    let retryable = !matches!(e, CoordinatorError::DataLoss(_));
                    tracing::error!(task = %g.task_id, error = %e, retryable, "task inputs unreadable");
                    let (_, finished) = leader.sched().fail(
                        &g.task_id,
                        &req.worker_id,
                        g.attempt,
                        &e.to_string(),
                        retryable,
                        Instant::now(),
                    );
                    if leader.sched().failure(&g.task_id).is_some() {
                        self.metrics.tasks_failed.add(1);
                        self.persist_failure(&leader, &g.job_id, &g.task_id).await?;
                    }
                    self.persist_finished(&leader, finished).await?;
                }
            }
        }
        self.metrics.tasks_leased.add(out.len() as u64);
        Ok(out)
    }

    /// Deletes the data of jobs that ended more than `retention` ago: their objects, failure
    /// marks and record. Run periodically by the leader.
    pub async fn collect_garbage(&self, leader: &Leader, retention: Duration) -> Result<usize> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        let mut old = leader.sched().ended_before(cutoff);
        old.extend(leader.corpus().ended_before(cutoff));
        for job_id in &old {
            let deleted = self.blobs.delete_prefix(&jobs::job_prefix(job_id)).await?;
            let prefix = self.meta.prefix();
            self.meta
                .delete_fenced(
                    &leader.fence,
                    &keys::job(prefix, job_id),
                    &keys::failed_of_job(prefix, job_id),
                )
                .await?;
            leader.sched().remove(job_id);
            leader.corpus().remove(job_id);
            tracing::info!(job = %job_id, objects = deleted, "finished job past its retention deleted");
        }
        Ok(old.len())
    }

    async fn complete(&self, req: CompleteTaskRequest) -> Result<CompleteTaskResponse> {
        let leader = self
            .leader()
            .map_err(|s| CoordinatorError::NotLeader(s.message().into()))?;
        leader.signer.check(
            "CompleteTask",
            &req.task_id,
            req.attempt,
            &req.worker_id,
            &req.lease_token,
        )?;
        let decision = leader.sched().begin_completion(&req.task_id);
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
        // While the results are written the task cannot expire or fail: once its object
        // exists, the task is done whatever else happens.
        let written = self.write_results(&leader, &job_id, &req).await;
        if written.is_err() {
            leader.sched().abort_completion(&req.task_id);
        }
        let created = written?;
        // No per-task mark goes to etcd: the object is the commit, and a new leader lists them.
        let (made_done, finished) = leader.sched().mark_done(&req.task_id, Instant::now());
        leader.inputs().remove(&req.task_id);
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

    /// Checks a completion's results and writes them: the commit point. The result object is
    /// created once; a second attempt finds it there.
    async fn write_results(
        &self,
        leader: &Leader,
        job_id: &str,
        req: &CompleteTaskRequest,
    ) -> Result<Created> {
        self.check_results(leader, job_id, req).await?;
        let batch = ResultBatch {
            labels: req.labels.clone(),
            queries: req.queries.clone(),
            hits: req.hits.clone(),
            offset: 0,
            api_usage: req.api_usage,
        };
        let key = jobs::result_key(job_id, &req.task_id);
        Ok(self.blobs.put_once(&key, batch.encode_to_vec()).await?)
    }

    /// A completion must label exactly the task's pairs, or (synthesis) write queries only for
    /// the task's documents: a buggy worker cannot drop, add or repeat results.
    async fn check_results(
        &self,
        leader: &Leader,
        job_id: &str,
        req: &CompleteTaskRequest,
    ) -> Result<()> {
        let task = self.task_inputs(leader, job_id, &req.task_id).await?;
        if task.kind == TaskKind::Search as i32 {
            if !req.labels.is_empty() || !req.queries.is_empty() {
                return Err(CoordinatorError::Invalid(format!(
                    "task `{}`: a search task returns hits, not labels or queries",
                    req.task_id
                )));
            }
            return search_job::check_hits(&task, &req.hits);
        }
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

/// One open `WatchJob` stream of a client.
struct WatchSlot {
    who: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.who) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.who);
            }
        }
    }
}

fn status(e: CoordinatorError) -> Status {
    e.into()
}

/// Bytes per message of a streamed artifact.
const ARTIFACT_CHUNK_BYTES: usize = 1 << 20;

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
        self.0.auth.check(&req, "SubmitJob", Permission::Submit)?;
        if let Some(fw) = self.0.forwarding() {
            return fw.leader().await?.submit_job(forward::onward(req)).await;
        }
        let (req, coord) = (req.into_inner(), self.0.clone());
        let submitted = Coordinator::detached(async move {
            match req.spec.as_ref().is_some_and(jobs::is_corpus) {
                true => corpus_job::submit(coord, req).await,
                false => coord.submit(req).await,
            }
        });
        submitted.await.map(Response::new).map_err(status)
    }

    async fn submit_job_stream(
        &self,
        req: Request<Streaming<SubmitJobChunk>>,
    ) -> std::result::Result<Response<Job>, Status> {
        self.0
            .auth
            .check(&req, "SubmitJobStream", Permission::Submit)?;
        if let Some(fw) = self.0.forwarding() {
            let (mut leader, auth) = (fw.leader().await?, forward::auth_of(&req));
            return forward::forward_client_stream(req.into_inner(), |s| {
                leader.submit_job_stream(forward::with_auth(auth, s))
            })
            .await;
        }
        let (chunks, coord) = (req.into_inner(), self.0.clone());
        Coordinator::detached(async move { coord.submit_stream(chunks).await })
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_job(
        &self,
        req: Request<GetJobRequest>,
    ) -> std::result::Result<Response<Job>, Status> {
        self.0.auth.check(&req, "GetJob", Permission::Read)?;
        if let Some(fw) = self.0.forwarding() {
            return fw.leader().await?.get_job(forward::onward(req)).await;
        }
        let leader = self.0.leader()?;
        let id = req.into_inner().job_id;
        let job = self.0.job_view(&leader, &id);
        job.map(Response::new)
            .ok_or_else(|| Status::not_found(format!("job `{id}`: no such job")))
    }

    async fn list_jobs(
        &self,
        req: Request<ListJobsRequest>,
    ) -> std::result::Result<Response<ListJobsResponse>, Status> {
        self.0.auth.check(&req, "ListJobs", Permission::Read)?;
        if let Some(fw) = self.0.forwarding() {
            return fw.leader().await?.list_jobs(forward::onward(req)).await;
        }
        let leader = self.0.leader()?;
        let req = req.into_inner();
        let page = if req.page_size == 0 {
            100
        } else {
            req.page_size as usize
        };
        let mut ids = leader.sched().job_ids();
        ids.extend(leader.corpus().ids());
        ids.sort();
        let mut jobs: Vec<Job> = ids
            .into_iter()
            .filter(|id| req.page_token.is_empty() || *id > req.page_token)
            .filter_map(|id| self.0.job_view(&leader, &id))
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
        self.0.auth.check(&req, "CancelJob", Permission::Cancel)?;
        if let Some(fw) = self.0.forwarding() {
            return fw.leader().await?.cancel_job(forward::onward(req)).await;
        }
        let leader = self.0.leader()?;
        let req = req.into_inner();
        if leader.corpus().contains(&req.job_id) {
            let job = corpus_job::cancel(&self.0, &leader, &req.job_id, &req.reason).await;
            return job.map(Response::new).map_err(status);
        }
        self.0
            .cancel_job(&leader, &req.job_id, &req.reason)
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
        let caller = self.0.auth.check(&req, "WatchJob", Permission::Read)?;
        let slot = self.0.open_watch(&caller, &req)?;
        if let Some(fw) = self.0.forwarding() {
            let stream = fw.leader().await?.watch_job(forward::onward(req)).await?;
            // the slot stays taken while the forwarded stream lives
            let stream = tokio_stream::StreamExt::map(stream.into_inner(), move |job| {
                let _held = &slot;
                job
            });
            return Ok(Response::new(Box::pin(stream)));
        }
        let coord = self.0.clone();
        let id = req.into_inner().job_id;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let snap = coord.leader().and_then(|l| {
                    coord
                        .job_view(&l, &id)
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
        self.0.auth.check(&req, "FetchResults", Permission::Read)?;
        if let Some(fw) = self.0.forwarding() {
            let stream = fw
                .leader()
                .await?
                .fetch_results(forward::onward(req))
                .await?;
            return Ok(Response::new(Box::pin(stream.into_inner())));
        }
        let leader = self.0.leader()?;
        let req = req.into_inner();
        if let Some(job) = leader.corpus().view(&req.job_id) {
            return Err(Status::invalid_argument(format!(
                "job `{}` is a corpus job: its outputs are artifacts, read with FetchArtifact ({})",
                req.job_id,
                job.artifacts.join(", ")
            )));
        }
        let Some(kind) = leader.sched().kind(&req.job_id) else {
            return Err(Status::not_found(format!(
                "job `{}`: no such job",
                req.job_id
            )));
        };
        let expected = match kind {
            TaskKind::SynthesizeQueries => "queries",
            TaskKind::Search => "hits",
            TaskKind::Grade | TaskKind::Unspecified => "labels",
        };
        if !req.stage.is_empty() && req.stage != expected {
            return Err(Status::invalid_argument(format!(
                "stage: job `{}` has results of stage `{expected}`, not `{}`",
                req.job_id, req.stage
            )));
        }
        // Results are read from the committed objects in task order.
        let keys = recovery::result_keys(&self.0.blobs, &req.job_id)
            .await
            .map_err(status)?;
        let blobs = self.0.blobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut offset = 0u64;
            for (_, key) in keys {
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
                let n = (batch.labels.len() + batch.queries.len() + batch.hits.len()) as u64;
                // a fetch from the start sends every task's batch, empty ones too (a synthesis
                // task may write no query, and still reports what it spent)
                if req.offset > 0 && offset + n <= req.offset {
                    offset += n;
                    continue;
                }
                let skip = req.offset.saturating_sub(offset) as usize;
                let out = ResultBatch {
                    labels: batch.labels.into_iter().skip(skip).collect(),
                    queries: batch.queries.into_iter().skip(skip).collect(),
                    hits: batch.hits.into_iter().skip(skip).collect(),
                    offset: offset + skip as u64,
                    // sent once, with the task's first result
                    api_usage: batch.api_usage.filter(|_| skip == 0),
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

    type FetchArtifactStream = BoxStream<ArtifactChunk>;

    async fn fetch_artifact(
        &self,
        req: Request<FetchArtifactRequest>,
    ) -> std::result::Result<Response<Self::FetchArtifactStream>, Status> {
        self.0.auth.check(&req, "FetchArtifact", Permission::Read)?;
        if let Some(fw) = self.0.forwarding() {
            let stream = fw
                .leader()
                .await?
                .fetch_artifact(forward::onward(req))
                .await?;
            return Ok(Response::new(Box::pin(stream.into_inner())));
        }
        let leader = self.0.leader()?;
        let req = req.into_inner();
        let job = leader.corpus().view(&req.job_id).ok_or_else(|| {
            Status::not_found(format!("corpus job `{}`: no such job", req.job_id))
        })?;
        if !job.artifacts.contains(&req.name) {
            return Err(Status::not_found(format!(
                "job `{}` has no artifact `{}` (it has: {})",
                req.job_id,
                req.name,
                job.artifacts.join(", ")
            )));
        }
        let key = corpus_job::artifact_key(&req.job_id, &req.name);
        let data = self
            .0
            .blobs
            .get(&key)
            .await
            .map_err(|e| status(e.into()))?
            .ok_or_else(|| Status::data_loss(format!("{key}: recorded but missing")))?;
        let chunks: Vec<std::result::Result<ArtifactChunk, Status>> = data
            .chunks(ARTIFACT_CHUNK_BYTES)
            .map(|c| Ok(ArtifactChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn upload_corpus(
        &self,
        req: Request<Streaming<CorpusChunk>>,
    ) -> std::result::Result<Response<UploadCorpusResponse>, Status> {
        self.0
            .auth
            .check(&req, "UploadCorpus", Permission::Submit)?;
        if let Some(fw) = self.0.forwarding() {
            let (mut leader, auth) = (fw.leader().await?, forward::auth_of(&req));
            return forward::forward_client_stream(req.into_inner(), |s| {
                leader.upload_corpus(forward::with_auth(auth, s))
            })
            .await;
        }
        self.0.leader()?;
        let mut stream = req.into_inner();
        let mut builder = CorpusBuilder::with_limit(self.0.limits.max_upload_bytes);
        loop {
            let step = match stream.message().await {
                Ok(Some(chunk)) => builder
                    .add_chunk(chunk, &self.0.blobs)
                    .await
                    .map_err(status),
                Ok(None) => break,
                Err(s) => Err(s),
            };
            if let Err(s) = step {
                if let Err(e) = builder.abandon(&self.0.blobs).await {
                    tracing::warn!(error = %e, "could not delete a broken upload's shards");
                }
                return Err(s);
            }
        }
        let rejected = std::mem::take(&mut builder.rejected);
        let (corpus_id, accepted) = builder.finish(&self.0.blobs).await.map_err(status)?;
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
        self.0
            .require_worker(&req, "RegisterWorker", &req.get_ref().worker_id)?;
        let leader = self.0.leader()?;
        let req = req.into_inner();
        tracing::info!(worker = %req.worker_id, device = %req.device, capacity = req.capacity, "worker registered");
        self.0.fleet().touch(&req.worker_id, Instant::now());
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
        self.0
            .require_worker(&req, "LeaseTasks", &req.get_ref().worker_id)?;
        let tasks = self.0.lease(req.into_inner()).await.map_err(status)?;
        Ok(Response::new(LeaseTasksResponse { tasks }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> std::result::Result<Response<HeartbeatResponse>, Status> {
        self.0
            .require_worker(&req, "Heartbeat", &req.get_ref().worker_id)?;
        let leader = self.0.leader()?;
        let req = req.into_inner();
        for l in &req.leases {
            leader
                .signer
                .check(
                    "Heartbeat",
                    &l.task_id,
                    l.attempt,
                    &req.worker_id,
                    &l.lease_token,
                )
                .map_err(status)?;
        }
        self.0.fleet().touch(&req.worker_id, Instant::now());
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
            .require_worker(&req, "CompleteTask", &req.get_ref().worker_id)?;
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
        self.0
            .require_worker(&req, "FailTask", &req.get_ref().worker_id)?;
        let leader = self.0.leader()?;
        let req = req.into_inner();
        leader
            .signer
            .check(
                "FailTask",
                &req.task_id,
                req.attempt,
                &req.worker_id,
                &req.lease_token,
            )
            .map_err(status)?;
        let (will_retry, finished) = leader.sched().fail(
            &req.task_id,
            &req.worker_id,
            req.attempt,
            &req.reason,
            req.retryable,
            Instant::now(),
        );
        tracing::warn!(task = %req.task_id, worker = %req.worker_id, reason = %req.reason, will_retry, "task failed");
        let failed_now = leader.sched().failure(&req.task_id).is_some();
        if !will_retry && failed_now {
            if let Some((job_id, _)) = parse_task_id(&req.task_id) {
                self.0.metrics.tasks_failed.add(1);
                self.0
                    .persist_failure(&leader, job_id, &req.task_id)
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

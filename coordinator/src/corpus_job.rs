//! Corpus jobs: the whole method as one job, run by the leader.
//!
//! A corpus job has no tasks of its own. The leader runs a **driver** for it: a thread that
//! runs the pipeline's stages (`labelfleet-pipeline`) as a client of this very cluster, each
//! stage an ordinary child job (query synthesis, teacher grades, student labels) or a trainer
//! run (distillation, then the checkpoint push), with BM25 negatives and the distillation
//! dataset computed in between. Every child job is submitted with the idempotency key
//! `<corpus job>/<stage>/<content>` and the trainer run with the job id `<corpus job>/distill`,
//! so the stages are safe to run again:
//!
//! - The record (etcd) says the job is a corpus job and which stage it is in. A new leader
//!   restarts the driver of every running corpus job; the driver runs the stages again, gets
//!   the child jobs that exist back (with their committed progress) and the trainer's run,
//!   and goes on. The stages between child jobs are deterministic functions of the previous
//!   stage's results and the seed, so nothing else needs to be stored.
//! - When the job ends, its outputs (queries, teacher labels, the student's labels of the
//!   targets, the agreement report and figure, the student checkpoint) go to the object store
//!   under `jobs/<job>/outputs/`, named in `Job.artifacts` and read with `FetchArtifact`.

use crate::error::{CoordinatorError, Result};
use crate::jobs;
use crate::recovery::JobRecord;
use crate::service::{now_ms, Coordinator, Leader};
use labelfleet_cluster::blobs::Blobs;
use labelfleet_pipeline::{Cluster, ClusterAddress, Config, Observer, PipelineError};
use labelfleet_proto::v1::{
    model_ref, Job, JobSpec, JobState, RankSampling, StageProgress, SubmitJobRequest,
};
use labelfleet_types::GradePrompt;
use prost::Message;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The stages of a corpus job, in order (`Job.stage`, `Job.stages`).
pub const STAGES: [&str; 7] = [
    "corpus",
    "queries",
    "negatives",
    "teacher",
    "distill",
    "student",
    "report",
];

/// Defaults of the spec's zero values (those of `labelfleet run`).
const DEFAULT_TEACHER: &str = "smollm2";
const DEFAULT_STUDENT: &str = "minilm";
const DEFAULT_MAX_TOKENS: u32 = 512;
const DEFAULT_STUDENT_MAX_TOKENS: u32 = 256;
const DEFAULT_BM25_DEPTH: u32 = 100;
const DEFAULT_NEGATIVES: u32 = 10;
const DEFAULT_EPOCHS: u32 = 6;
const DEFAULT_LEARNING_RATE: f64 = 3e-5;
const DEFAULT_HELDOUT: f64 = 0.2;
const DEFAULT_CANDIDATES: u32 = 10;
/// Limits that keep one spec from asking for unbounded work or memory.
const MAX_SEED_DOCUMENTS: u32 = 100_000;
const MAX_QUERIES_PER_DOCUMENT: u32 = 16;
const MAX_LABEL_QUERIES: usize = 100_000;
const MAX_CANDIDATES: u32 = 1_000;

/// Where a driver finds the rest of the cluster.
#[derive(Clone, Debug)]
pub struct DriverEnv {
    /// The trainer's address (`host:port`).
    pub trainer: String,
    /// This replica's own address: the driver is a client of its own leader.
    pub own_address: String,
    /// The object store, as the roles were given it.
    pub store: String,
    /// Local folder for corpus copies, per-job outputs and the content-keyed caches (keyed
    /// by content, so shared by every corpus job of this replica).
    pub scratch: PathBuf,
    /// This replica's transport: over TLS the driver presents the coordinator's certificate
    /// to its own leader and to the trainer.
    pub transport: labelfleet_cluster::security::Transport,
}

/// A corpus job as the leader holds it.
struct Entry {
    job: Job,
    rec: JobRecord,
    /// Child jobs it submitted, for cancellation.
    children: Vec<String>,
    /// Set by a cancel: the driver stops at its next look.
    cancelled: Option<String>,
}

/// The leader's corpus jobs.
#[derive(Default)]
pub struct CorpusJobs {
    jobs: Mutex<BTreeMap<String, Entry>>,
}

impl CorpusJobs {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes back the corpus jobs a load read.
    pub fn restore(&self, loaded: Vec<(JobRecord, Job)>) {
        let mut jobs = self.lock();
        for (rec, mut job) in loaded {
            job.stage = rec.stage.clone();
            job.checkpoint_id = rec.checkpoint_id.clone();
            job.artifacts = rec.artifacts.clone();
            jobs.insert(
                rec.job_id.clone(),
                Entry {
                    job,
                    rec,
                    children: vec![],
                    cancelled: None,
                },
            );
        }
    }

    fn insert(&self, rec: JobRecord, job: Job) {
        self.lock().insert(
            rec.job_id.clone(),
            Entry {
                job,
                rec,
                children: vec![],
                cancelled: None,
            },
        );
    }

    pub fn view(&self, job_id: &str) -> Option<Job> {
        self.lock().get(job_id).map(|e| e.job.clone())
    }

    pub fn contains(&self, job_id: &str) -> bool {
        self.lock().contains_key(job_id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Corpus jobs still running (their drivers must run).
    pub fn running(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.job.state == JobState::Running as i32)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Finished corpus jobs last updated before `cutoff_unix_ms`.
    pub fn ended_before(&self, cutoff_unix_ms: i64) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| {
                e.job.state >= JobState::Succeeded as i32 && e.rec.updated_unix_ms < cutoff_unix_ms
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn remove(&self, job_id: &str) {
        self.lock().remove(job_id);
    }

    /// Enters `stage`; the record to persist when the stage changed.
    fn set_stage(&self, job_id: &str, stage: &str) -> Option<JobRecord> {
        let mut jobs = self.lock();
        let e = jobs.get_mut(job_id)?;
        if e.job.state != JobState::Running as i32 {
            return None;
        }
        if !e.job.stages.iter().any(|s| s.stage == stage) {
            e.job.stages.push(StageProgress {
                stage: stage.to_string(),
                ..Default::default()
            });
        }
        if e.rec.stage == stage {
            return None;
        }
        let now = now_ms();
        e.job.stage = stage.to_string();
        e.job.updated_unix_ms = now;
        e.rec.stage = stage.to_string();
        e.rec.updated_unix_ms = now;
        Some(e.rec.clone())
    }

    fn progress(&self, job_id: &str, stage: &str, done: u64, total: u64) {
        if let Some(e) = self.lock().get_mut(job_id) {
            if let Some(s) = e.job.stages.iter_mut().rev().find(|s| s.stage == stage) {
                s.done = done;
                s.total = total;
            }
        }
    }

    fn child(&self, job_id: &str, child: &str) {
        if let Some(e) = self.lock().get_mut(job_id) {
            if !e.children.iter().any(|c| c == child) {
                e.children.push(child.to_string());
            }
        }
    }

    fn stop_reason(&self, job_id: &str) -> Option<String> {
        match self.lock().get(job_id) {
            Some(e) => e.cancelled.clone(),
            None => Some("the job is gone".into()),
        }
    }

    /// Cancels a running corpus job: the record to persist and the child jobs to cancel.
    pub fn cancel(&self, job_id: &str, reason: &str) -> Option<(JobRecord, Vec<String>)> {
        let mut jobs = self.lock();
        let e = jobs.get_mut(job_id)?;
        if e.job.state != JobState::Running as i32 {
            return Some((e.rec.clone(), vec![]));
        }
        let error = format!("cancelled: {reason}");
        e.cancelled = Some(error.clone());
        let now = now_ms();
        e.job.state = JobState::Cancelled as i32;
        e.job.error = error.clone();
        e.job.updated_unix_ms = now;
        e.rec.state = e.job.state;
        e.rec.error = error;
        e.rec.updated_unix_ms = now;
        Some((e.rec.clone(), e.children.clone()))
    }

    /// Ends a running corpus job; the record to persist (None if it already ended).
    fn finish(&self, job_id: &str, end: End) -> Option<JobRecord> {
        let mut jobs = self.lock();
        let e = jobs.get_mut(job_id)?;
        if e.job.state != JobState::Running as i32 {
            return None;
        }
        let now = now_ms();
        match end {
            End::Succeeded {
                checkpoint_id,
                artifacts,
            } => {
                e.job.state = JobState::Succeeded as i32;
                e.job.checkpoint_id = checkpoint_id.clone();
                e.job.artifacts = artifacts.clone();
                e.rec.checkpoint_id = checkpoint_id;
                e.rec.artifacts = artifacts;
            }
            End::Failed(error) => {
                e.job.state = JobState::Failed as i32;
                e.job.error = error.clone();
                e.rec.error = error;
            }
        }
        e.rec.state = e.job.state;
        e.job.updated_unix_ms = now;
        e.rec.updated_unix_ms = now;
        Some(e.rec.clone())
    }
}

enum End {
    Succeeded {
        checkpoint_id: String,
        artifacts: Vec<String>,
    },
    Failed(String),
}

fn invalid(message: String) -> Result<()> {
    Err(CoordinatorError::Invalid(message))
}

/// Checks a corpus job's spec; errors name the field (and the record).
pub fn validate(spec: &JobSpec) -> Result<()> {
    if spec.corpus_id.is_empty() {
        return invalid("spec.corpus_id: a corpus job runs over an uploaded corpus".into());
    }
    if spec.seed_documents == 0 || spec.seed_documents > MAX_SEED_DOCUMENTS {
        return invalid(format!(
            "spec.seed_documents: {} is not within 1..={MAX_SEED_DOCUMENTS}",
            spec.seed_documents
        ));
    }
    for (field, n) in [
        ("queries_per_document", spec.queries_per_document),
        (
            "metadata_queries_per_document",
            spec.metadata_queries_per_document,
        ),
    ] {
        if n > MAX_QUERIES_PER_DOCUMENT {
            return invalid(format!(
                "spec.{field}: {n} is over the limit of {MAX_QUERIES_PER_DOCUMENT}"
            ));
        }
    }
    if spec.queries_per_document + spec.metadata_queries_per_document == 0 {
        return invalid(
            "spec.queries_per_document: a corpus job needs queries to learn from".into(),
        );
    }
    // what a corpus job does not run is refused by name, not ignored
    let unused = [
        ("label_pairs", !spec.label_pairs.is_empty()),
        ("task_size", spec.task_size != 0),
        ("max_task_attempts", spec.max_task_attempts != 0),
        ("grade_labels", !spec.grade_labels.is_empty()),
        (
            "query_prompt_version",
            !spec.query_prompt_version.is_empty(),
        ),
    ];
    let unused: Vec<&str> = unused
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
    if !unused.is_empty() {
        return invalid(format!(
            "spec.{}: a corpus job does not take these (its targets are the BM25 candidates of \
             label_queries; label a pairs file with a labeling job pinned to the corpus job's \
             checkpoint)",
            unused.join(", spec.")
        ));
    }
    match spec.teacher.as_ref().and_then(|m| m.source.as_ref()) {
        Some(model_ref::Source::CheckpointId(_)) => {
            return invalid("spec.teacher: a teacher is a decoder (local_path) or an OpenAI endpoint, not a cross-encoder checkpoint".into())
        }
        Some(model_ref::Source::Openai(o)) => jobs::validate_endpoint("spec.teacher.openai", o)?,
        Some(model_ref::Source::Committee(_)) => {
            return invalid("spec.teacher: the teacher writes the queries, which a committee does not; put the committee in spec.committee".into())
        }
        _ => {}
    }
    if let Some(c) = &spec.committee {
        jobs::validate_committee("spec.committee", c, spec)?;
    }
    match spec.student.as_ref().and_then(|m| m.source.as_ref()) {
        Some(model_ref::Source::LocalPath(_)) | None => {}
        Some(_) => {
            return invalid("spec.student: the base model to distil (local_path); a corpus job trains its own checkpoint".into())
        }
    }
    if !spec.grade_prompt_version.is_empty() {
        GradePrompt::parse(&spec.grade_prompt_version)
            .map_err(|e| CoordinatorError::Invalid(format!("spec.grade_prompt_version: {e}")))?;
    }
    if spec.max_tokens != 0 && spec.max_tokens < 128 {
        return invalid(format!(
            "spec.max_tokens: {} is too short for the grading and query prompts (at least 128)",
            spec.max_tokens
        ));
    }
    if spec.heldout_fraction < 0.0 || spec.heldout_fraction >= 1.0 {
        return invalid(format!(
            "spec.heldout_fraction: {} is not within [0, 1)",
            spec.heldout_fraction
        ));
    }
    if spec.learning_rate < 0.0 || !spec.learning_rate.is_finite() {
        return invalid(format!("spec.learning_rate: {}", spec.learning_rate));
    }
    if spec.label_candidates_per_query > MAX_CANDIDATES {
        return invalid(format!(
            "spec.label_candidates_per_query: {} is over the limit of {MAX_CANDIDATES}",
            spec.label_candidates_per_query
        ));
    }
    validate_targets(spec)
}

/// The targets: unique, non-empty queries, and judgments of those queries only.
fn validate_targets(spec: &JobSpec) -> Result<()> {
    if spec.label_queries.len() > MAX_LABEL_QUERIES {
        return invalid(format!(
            "spec.label_queries: {} queries, over the limit of {MAX_LABEL_QUERIES}",
            spec.label_queries.len()
        ));
    }
    let mut ids = HashSet::new();
    for (i, q) in spec.label_queries.iter().enumerate() {
        let bad_id = q.query_id.trim().is_empty() || q.query_id.contains(char::is_whitespace);
        if bad_id {
            return invalid(format!(
                "spec.label_queries[{i}].query_id: `{}` is empty or has white space",
                q.query_id
            ));
        }
        if q.text.trim().is_empty() || q.text.contains(['\t', '\n']) {
            return invalid(format!(
                "spec.label_queries[{i}] (query `{}`).text: empty, or has a tab or newline",
                q.query_id
            ));
        }
        if !ids.insert(q.query_id.as_str()) {
            return invalid(format!(
                "spec.label_queries[{i}].query_id: `{}` is a duplicate",
                q.query_id
            ));
        }
    }
    for (i, j) in spec.human_judgments.iter().enumerate() {
        if !ids.contains(j.query_id.as_str()) {
            return invalid(format!(
                "spec.human_judgments[{i}].query_id: `{}` is not among spec.label_queries",
                j.query_id
            ));
        }
        if j.doc_id.trim().is_empty() || j.doc_id.contains(char::is_whitespace) {
            return invalid(format!(
                "spec.human_judgments[{i}] (query `{}`).doc_id: `{}` is empty or has white space",
                j.query_id, j.doc_id
            ));
        }
    }
    Ok(())
}

/// Submits a corpus job: checks the spec and the corpus, stores the spec and the record (the
/// commit point), and starts the driver. A retried submit with the same idempotency key
/// returns the first job.
pub async fn submit(coord: Arc<Coordinator>, req: SubmitJobRequest) -> Result<Job> {
    let leader = coord
        .leader()
        .map_err(|s| CoordinatorError::NotLeader(s.message().into()))?;
    let spec = req
        .spec
        .ok_or_else(|| CoordinatorError::Invalid("spec: missing".into()))?;
    validate(&spec)?;
    if coord.driver_env().is_none() {
        return Err(CoordinatorError::FailedPrecondition(
            "this coordinator was started without --trainer, so it cannot run corpus jobs".into(),
        ));
    }
    if jobs::corpus_shards(&coord.blobs, &spec.corpus_id)
        .await?
        .is_empty()
    {
        return Err(CoordinatorError::NotFound(format!(
            "spec.corpus_id: `{}`: no such corpus (upload it first)",
            spec.corpus_id
        )));
    }
    let body = |job_id: String| commit(coord.clone(), leader.clone(), job_id, spec);
    coord.submit_once(&leader, &req.idempotency_key, body).await
}

/// Stores a corpus job's spec and record (the commit point), and starts its driver.
async fn commit(
    coord: Arc<Coordinator>,
    leader: Arc<Leader>,
    job_id: String,
    spec: JobSpec,
) -> Result<Job> {
    coord
        .blobs
        .put(&jobs::spec_key(&job_id), spec.encode_to_vec())
        .await?;
    let created = now_ms();
    let rec = JobRecord {
        job_id: job_id.clone(),
        state: JobState::Running as i32,
        created_unix_ms: created,
        updated_unix_ms: created,
        corpus: true,
        ..Default::default()
    };
    coord.write_record(&leader, &rec).await?;
    let job = Job {
        job_id: job_id.clone(),
        spec: Some(spec),
        state: JobState::Running as i32,
        created_unix_ms: created,
        updated_unix_ms: created,
        ..Default::default()
    };
    leader.corpus().insert(rec, job);
    tracing::info!(job = %job_id, "corpus job submitted");
    start_driver(coord, leader.clone(), job_id.clone())?;
    leader
        .corpus()
        .view(&job_id)
        .ok_or_else(|| CoordinatorError::NotFound(format!("job `{job_id}` vanished")))
}

/// Starts the drivers of the running corpus jobs (a new leader, after its load).
pub fn resume_all(coord: &Arc<Coordinator>, leader: &Arc<Leader>) -> Result<()> {
    for job_id in leader.corpus().running() {
        tracing::info!(job = %job_id, "resuming the corpus job's driver");
        start_driver(coord.clone(), leader.clone(), job_id)?;
    }
    Ok(())
}

/// Cancels a corpus job and the child jobs it submitted; the job as it is now.
pub async fn cancel(
    coord: &Coordinator,
    leader: &Leader,
    job_id: &str,
    reason: &str,
) -> Result<Job> {
    let (rec, children) = leader
        .corpus()
        .cancel(job_id, reason)
        .ok_or_else(|| CoordinatorError::NotFound(format!("job `{job_id}`: no such job")))?;
    coord.write_record(leader, &rec).await?;
    for child in children {
        // a child that already ended, or was deleted past its retention, has nothing to stop
        if let Err(e) = coord.cancel_job(leader, &child, reason).await {
            if e.is_not_leader() {
                return Err(e);
            }
            tracing::warn!(job = %job_id, child = %child, error = %e, "child job not cancelled");
        }
    }
    leader
        .corpus()
        .view(job_id)
        .ok_or_else(|| CoordinatorError::NotFound(format!("job `{job_id}` vanished")))
}

/// Runs the driver of `job_id` on a thread of its own (the pipeline's stages block).
fn start_driver(coord: Arc<Coordinator>, leader: Arc<Leader>, job_id: String) -> Result<()> {
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name(format!("driver-{job_id}"))
        .spawn(move || drive(coord, leader, job_id, handle))?;
    Ok(())
}

/// The driver: runs the stages, stores the outputs, and records how the job ended.
fn drive(coord: Arc<Coordinator>, leader: Arc<Leader>, job_id: String, rt: tokio::runtime::Handle) {
    let follow = Arc::new(Follow {
        coord: coord.clone(),
        leader: leader.clone(),
        job_id: job_id.clone(),
        rt: rt.clone(),
    });
    let ran = run_stages(&coord, &job_id, follow.clone(), &rt);
    // the working copy (corpus, outputs) goes whatever happened; the caches stay
    if let Some(env) = coord.driver_env() {
        let _ = std::fs::remove_dir_all(env.scratch.join("jobs").join(&job_id));
    }
    let end = match ran {
        Ok(end) => end,
        Err(DriverError::Stopped(why)) => {
            tracing::info!(job = %job_id, %why, "corpus job driver stopped");
            return;
        }
        Err(DriverError::Failed(error)) => End::Failed(error),
    };
    let Some(rec) = leader.corpus().finish(&job_id, end) else {
        return;
    };
    if follow.stop().is_some() {
        return;
    }
    match rt.block_on(coord.write_record(&leader, &rec)) {
        Ok(()) => {
            tracing::info!(job = %job_id, state = rec.state, error = %rec.error, "corpus job ended")
        }
        Err(e) => {
            tracing::error!(job = %job_id, error = %e, "could not record the corpus job's end")
        }
    }
}

enum DriverError {
    /// Cancelled, or this replica stopped leading: nothing to record.
    Stopped(String),
    /// The job fails with this error.
    Failed(String),
}

impl From<PipelineError> for DriverError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Stopped(why) => DriverError::Stopped(why),
            other => DriverError::Failed(other.to_string()),
        }
    }
}

fn failed(what: &str) -> impl FnOnce(String) -> DriverError + '_ {
    move |e| DriverError::Failed(format!("{what}: {e}"))
}

/// The stages, on the corpus and the spec; the outputs are stored when they succeed.
fn run_stages(
    coord: &Coordinator,
    job_id: &str,
    follow: Arc<Follow>,
    rt: &tokio::runtime::Handle,
) -> std::result::Result<End, DriverError> {
    let env = coord
        .driver_env()
        .ok_or_else(|| DriverError::Failed("no --trainer: corpus jobs cannot run".into()))?;
    let spec = follow
        .leader
        .corpus()
        .view(job_id)
        .and_then(|j| j.spec)
        .ok_or_else(|| DriverError::Stopped("the job is gone".into()))?;
    let dir = env.scratch.join("jobs").join(job_id);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| failed("scratch")(format!("{}: {e}", dir.display())))?;
    follow.stage("corpus");
    let corpus = dir.join("corpus.jsonl");
    rt.block_on(write_corpus(&coord.blobs, &spec.corpus_id, &corpus))
        .map_err(|e| failed("corpus")(e.to_string()))?;
    let (queries, qrels) = write_targets(&spec, &dir).map_err(failed("targets"))?;
    let cfg = config_of(&spec, &env, &dir, corpus, queries, qrels).map_err(failed("spec"))?;
    let address = ClusterAddress {
        coordinators: env.own_address.clone(),
        trainer: env.trainer.clone(),
        store: env.store.clone(),
        credentials: labelfleet_pipeline::Credentials {
            transport: env.transport.clone(),
            token: None,
        },
    };
    let mut cluster = Cluster::connect(&address)?;
    cluster.observe(follow, job_id);
    labelfleet_pipeline::run(&cfg, &mut cluster)?;
    let artifacts = rt
        .block_on(store_outputs(&coord.blobs, job_id, &cfg.out))
        .map_err(|e| failed("storing the outputs")(e.to_string()))?;
    let checkpoint_id = checkpoint_of(&cfg.out.join("student")).unwrap_or_default();
    Ok(End::Succeeded {
        checkpoint_id,
        artifacts,
    })
}

/// Writes the corpus's shards, in upload order, as the JSONL the pipeline ingests.
async fn write_corpus(blobs: &Blobs, corpus_id: &str, path: &Path) -> Result<()> {
    let mut out = Vec::new();
    for key in jobs::corpus_shards(blobs, corpus_id).await? {
        let chunk = jobs::read_shard(blobs, &key).await?.ok_or_else(|| {
            CoordinatorError::DataLoss(format!("corpus shard `{key}` is missing"))
        })?;
        for d in &chunk.documents {
            serde_json::to_writer(&mut out, &labelfleet_pipeline::cluster::corpus_record(d))
                .map_err(|e| CoordinatorError::Invalid(e.to_string()))?;
            out.push(b'\n');
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// The targets as the pipeline reads them: `qid<TAB>text` lines and TREC qrels.
fn write_targets(
    spec: &JobSpec,
    dir: &Path,
) -> std::result::Result<(Option<PathBuf>, Option<PathBuf>), String> {
    if spec.label_queries.is_empty() {
        return Ok((None, None));
    }
    let queries = dir.join("label_queries.tsv");
    let text: String = spec
        .label_queries
        .iter()
        .map(|q| format!("{}\t{}\n", q.query_id, q.text))
        .collect();
    std::fs::write(&queries, text).map_err(|e| e.to_string())?;
    if spec.human_judgments.is_empty() {
        return Ok((Some(queries), None));
    }
    let qrels = dir.join("human.qrels");
    let mut text = String::new();
    for (i, j) in spec.human_judgments.iter().enumerate() {
        let name = format!("human judgment {i}");
        labelfleet_types::push_qrels_line(
            &mut text,
            &name,
            &j.query_id,
            &j.doc_id,
            j.grade as usize,
        )
        .map_err(|e| e.to_string())?;
    }
    std::fs::write(&qrels, text).map_err(|e| e.to_string())?;
    Ok((Some(queries), Some(qrels)))
}

fn or<T: PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

/// The pipeline's configuration from the spec (zero values take `labelfleet run`'s defaults).
fn config_of(
    spec: &JobSpec,
    env: &DriverEnv,
    dir: &Path,
    corpus: PathBuf,
    eval_queries: Option<PathBuf>,
    eval_qrels: Option<PathBuf>,
) -> std::result::Result<Config, String> {
    let local = |m: &Option<labelfleet_proto::v1::ModelRef>, default: &str| match m
        .as_ref()
        .and_then(|m| m.source.as_ref())
    {
        Some(model_ref::Source::LocalPath(p)) => p.clone(),
        _ => default.to_string(),
    };
    let teacher_prompt = match spec.grade_prompt_version.as_str() {
        "" => GradePrompt::default(),
        v => GradePrompt::parse(v).map_err(|e| e.to_string())?,
    };
    let rank_sampling = match RankSampling::try_from(spec.rank_sampling) {
        Ok(RankSampling::Top) => labelfleet_corpus::bm25::RankSampling::Top,
        Ok(RankSampling::Uniform) => labelfleet_corpus::bm25::RankSampling::Uniform,
        _ => labelfleet_corpus::bm25::RankSampling::Stratified,
    };
    Ok(Config {
        corpus,
        corpus_id: spec.corpus_id.clone(),
        out: dir.join("out"),
        cache: Some(env.scratch.join("cache")),
        teacher: local(&spec.teacher, DEFAULT_TEACHER),
        teacher_api: match spec.teacher.as_ref().and_then(|m| m.source.as_ref()) {
            Some(model_ref::Source::Openai(o)) => Some(o.clone()),
            _ => None,
        },
        teacher_prompt,
        committee: spec.committee.clone(),
        student: local(&spec.student, DEFAULT_STUDENT),
        student_layers: spec.student_layers as usize,
        student_max_len: or(spec.student_max_tokens, DEFAULT_STUDENT_MAX_TOKENS) as usize,
        seed_docs: spec.seed_documents as usize,
        queries_per_doc: spec.queries_per_document as usize,
        metadata_queries_per_doc: spec.metadata_queries_per_document as usize,
        bm25_depth: or(spec.bm25_depth, DEFAULT_BM25_DEPTH) as usize,
        consistency_depth: spec.consistency_depth as usize,
        negatives_per_query: or(spec.negatives_per_query, DEFAULT_NEGATIVES) as usize,
        rank_sampling,
        heldout: or(spec.heldout_fraction, DEFAULT_HELDOUT),
        epochs: or(spec.epochs, DEFAULT_EPOCHS) as usize,
        learning_rate: or(spec.learning_rate, DEFAULT_LEARNING_RATE),
        seed: spec.seed,
        eval_queries,
        eval_qrels,
        eval_sample: match spec.label_queries_sample {
            0 => usize::MAX,
            n => n as usize,
        },
        pool_k: or(spec.label_candidates_per_query, DEFAULT_CANDIDATES) as usize,
        price_per_hour: None,
        max_len: or(spec.max_tokens, DEFAULT_MAX_TOKENS) as usize,
    })
}

/// Uploads every file under `out` to `jobs/<job>/outputs/`; returns their names.
async fn store_outputs(blobs: &Blobs, job_id: &str, out: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut folders = vec![out.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let name = path
                .strip_prefix(out)
                .map_err(|e| CoordinatorError::Invalid(e.to_string()))?
                .to_string_lossy()
                .replace('\\', "/");
            blobs
                .put(&artifact_key(job_id, &name), std::fs::read(&path)?)
                .await?;
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Where output `name` of a corpus job is stored.
pub fn artifact_key(job_id: &str, name: &str) -> String {
    format!("{}outputs/{name}", jobs::job_prefix(job_id))
}

/// The trainer's checkpoint id recorded in the student's `labelfleet.json`.
fn checkpoint_of(student: &Path) -> Option<String> {
    let text = std::fs::read_to_string(student.join("labelfleet.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
    meta["provenance"]["checkpoint_id"]
        .as_str()
        .map(str::to_string)
}

/// The driver's observer: records the stage (persisted) and the progress, and stops the run
/// when the job is cancelled or this replica no longer leads.
struct Follow {
    coord: Arc<Coordinator>,
    leader: Arc<Leader>,
    job_id: String,
    rt: tokio::runtime::Handle,
}

impl Observer for Follow {
    fn stage(&self, stage: &str) {
        let Some(rec) = self.leader.corpus().set_stage(&self.job_id, stage) else {
            return;
        };
        tracing::info!(job = %self.job_id, stage, "corpus job stage");
        if let Err(e) = self
            .rt
            .block_on(self.coord.write_record(&self.leader, &rec))
        {
            tracing::warn!(job = %self.job_id, error = %e, "could not record the stage");
        }
    }

    fn progress(&self, stage: &str, done: u64, total: u64) {
        self.leader
            .corpus()
            .progress(&self.job_id, stage, done, total);
    }

    fn child_job(&self, _stage: &str, job_id: &str) {
        self.leader.corpus().child(&self.job_id, job_id);
    }

    fn stop(&self) -> Option<String> {
        if !self.coord.is_leader(&self.leader) {
            return Some("this coordinator no longer leads".into());
        }
        self.leader.corpus().stop_reason(&self.job_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use labelfleet_proto::v1::{HumanJudgment, JobKind, PairInput, QueryInput};

    fn spec() -> JobSpec {
        JobSpec {
            kind: JobKind::Corpus as i32,
            corpus_id: "c-1".into(),
            seed_documents: 8,
            queries_per_document: 1,
            label_queries: vec![QueryInput {
                query_id: "q1".into(),
                text: "wing flutter".into(),
            }],
            human_judgments: vec![HumanJudgment {
                query_id: "q1".into(),
                doc_id: "d3".into(),
                grade: 2,
            }],
            ..Default::default()
        }
    }

    /// Why `spec` is refused.
    fn driver_env() -> DriverEnv {
        DriverEnv {
            trainer: "t".into(),
            own_address: "a".into(),
            store: "s".into(),
            scratch: PathBuf::from("/scratch"),
            transport: labelfleet_cluster::security::Transport::Plaintext,
        }
    }

    fn refusal(spec: &JobSpec) -> String {
        validate(spec).unwrap_err().to_string()
    }

    #[test]
    fn a_corpus_spec_with_targets_and_judgments_is_accepted() {
        validate(&spec()).unwrap();
    }

    #[test]
    fn what_a_corpus_job_does_not_run_is_refused_by_name() {
        let s = JobSpec {
            task_size: 10,
            label_pairs: vec![PairInput::default()],
            ..spec()
        };
        let err = refusal(&s);
        assert!(err.contains("spec.label_pairs, spec.task_size"), "{err}");
    }

    #[test]
    fn a_judgment_of_a_query_not_among_the_targets_is_named() {
        let mut s = spec();
        s.human_judgments[0].query_id = "q9".into();
        let err = refusal(&s);
        assert!(
            err.contains("spec.human_judgments[0].query_id: `q9` is not among"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_target_queries_are_named() {
        let mut s = spec();
        s.label_queries.push(s.label_queries[0].clone());
        let err = refusal(&s);
        assert!(
            err.contains("spec.label_queries[1].query_id: `q1` is a duplicate"),
            "{err}"
        );
    }

    #[test]
    fn a_committee_grades_in_spec_committee_and_never_as_the_teacher() {
        use labelfleet_proto::v1::{judge, Committee, Judge, ModelRef, SimilarityJudge};
        let committee = Committee {
            judges: vec![Judge {
                name: "similarity".into(),
                weight: 1.0,
                kind: Some(judge::Kind::Similarity(SimilarityJudge {
                    encoder: "minilm".into(),
                    corpus_id: "c-1".into(),
                    feedback_depth: 5,
                    feedback_weight: 1.0,
                })),
            }],
        };
        let mut s = spec();
        s.committee = Some(committee.clone());
        validate(&s).unwrap();
        let env = driver_env();
        let cfg = config_of(&s, &env, Path::new("/d"), "c.jsonl".into(), None, None).unwrap();
        assert_eq!(cfg.committee, Some(committee.clone()));

        let mut bad = s.clone();
        bad.committee.as_mut().unwrap().judges[0].weight = -1.0;
        let err = refusal(&bad);
        assert!(err.contains("spec.committee.judges[0].weight"), "{err}");
        let mut teacher = spec();
        teacher.teacher = Some(ModelRef {
            source: Some(model_ref::Source::Committee(committee)),
        });
        let err = refusal(&teacher);
        assert!(
            err.contains("spec.teacher: the teacher writes the queries"),
            "{err}"
        );
    }

    #[test]
    fn zero_values_take_the_run_defaults() {
        let env = driver_env();
        let cfg = config_of(&spec(), &env, Path::new("/d"), "c.jsonl".into(), None, None).unwrap();
        assert_eq!(cfg.teacher, DEFAULT_TEACHER);
        assert_eq!(cfg.student, DEFAULT_STUDENT);
        assert_eq!(cfg.bm25_depth, 100);
        assert_eq!(cfg.negatives_per_query, 10);
        assert_eq!((cfg.epochs, cfg.learning_rate), (6, 3e-5));
        assert_eq!(cfg.committee, None);
        assert_eq!(cfg.max_len, 512);
        assert_eq!(cfg.eval_sample, usize::MAX);
        assert_eq!(cfg.cache, Some(PathBuf::from("/scratch/cache")));
    }
}

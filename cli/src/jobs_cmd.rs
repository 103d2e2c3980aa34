//! The client commands of a cluster (`submit`, `synthesize`, `status`, `watch`, `list`,
//! `cancel`, `fetch`, `distill`), all through the one cluster client, `labelfleet-client`.

use crate::{jsonl, progress};
use anyhow::{bail, Context, Result};
use clap::Args;
use labelfleet_client::Client;
use labelfleet_proto::v1::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// How a client reaches the leader.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Coordinator addresses, comma-separated; the leader among them is found by trying each.
    #[arg(
        long,
        env = "LABELFLEET_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    coordinator: String,
    #[command(flatten)]
    security: crate::security_cmd::ClientSecurityArgs,
}

impl ClientArgs {
    /// A client of the replica that answers as leader (waiting up to 30 s for one).
    async fn connect(&self) -> Result<Client> {
        Ok(Client::connect_with(
            labelfleet_client::endpoints(&self.coordinator),
            Duration::from_secs(30),
            self.security.credentials()?,
        )
        .await?)
    }
}

#[derive(serde::Deserialize)]
struct PairRecord {
    id: String,
    #[serde(default)]
    query_id: String,
    query: String,
    doc_id: String,
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Corpus JSONL ({id, title?, body, author?, path?, ...}), uploaded first.
    #[arg(long)]
    corpus: PathBuf,
    /// Pairs to label, JSONL of {id, query_id?, query, doc_id}.
    #[arg(long)]
    pairs: PathBuf,
    /// Model on the workers: a bundled name (minilm, smollm2) or a folder path there.
    #[arg(long, default_value = "minilm", conflicts_with = "checkpoint")]
    model: String,
    /// A checkpoint id pushed to the workers (pins the job to it).
    #[arg(long)]
    checkpoint: Option<String>,
    #[arg(long, default_value = "")]
    name: String,
    /// Pairs per task.
    #[arg(long, default_value_t = 200)]
    task_size: u32,
    /// Longest model input in tokens.
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
    /// A retried submit with the same key returns the first job.
    #[arg(long, default_value = "")]
    idempotency_key: String,
    /// Follow progress until the job ends.
    #[arg(long)]
    watch: bool,
}

/// Submits a labeling job, streaming its pairs from the file: bad lines and repeated ids are
/// reported by line and skipped, every other pair is sent, and neither side holds the file.
pub fn submit(a: SubmitArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = a.client.connect().await?;
        let corpus_id = upload_corpus(&mut client, &a.corpus).await?;
        let student = Some(ModelRef {
            source: Some(match &a.checkpoint {
                Some(id) => model_ref::Source::CheckpointId(id.clone()),
                None => model_ref::Source::LocalPath(a.model.clone()),
            }),
        });
        let spec = JobSpec {
            name: a.name.clone(),
            corpus_id,
            student,
            task_size: a.task_size,
            max_tokens: a.max_tokens,
            ..Default::default()
        };
        let rejected = Arc::new(AtomicUsize::new(0));
        let pairs = pair_stream(&a.pairs, rejected.clone())?;
        let job = client
            .submit_pairs(spec, &a.idempotency_key, pairs)
            .await
            .context("submit refused")?;
        let rejected = rejected.load(Ordering::Relaxed);
        println!("{}", job.job_id);
        eprintln!(
            "submitted {} ({} pairs; {rejected} pair lines rejected)",
            job.job_id,
            total(&job)
        );
        if a.watch {
            let job = watch_job(&mut client, &job.job_id).await?;
            succeeded(&job)?;
        }
        if rejected > 0 {
            return Err(crate::Rejected(rejected).into());
        }
        Ok(())
    })
}

/// The pairs of a JSONL file, read as they are sent. A line that does not parse, or repeats an
/// id, is reported with its line number and counted in `rejected`.
fn pair_stream(
    path: &std::path::Path,
    rejected: Arc<AtomicUsize>,
) -> Result<impl Iterator<Item = PairInput> + Send + 'static> {
    let mut seen: HashSet<u128> = HashSet::new();
    let file = path.display().to_string();
    Ok(jsonl::lines::<PairRecord>(path)?.filter_map(move |r| {
        let l = match r {
            Ok(l) => l,
            Err(e) => {
                eprintln!("rejected: {e}");
                rejected.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        if !seen.insert(id_digest(&l.value.id)) {
            eprintln!(
                "rejected: {file}:{}: record {}: field `id`: repeats an earlier pair's id",
                l.line, l.value.id
            );
            rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(PairInput {
            pair_id: l.value.id,
            query_id: l.value.query_id,
            query: l.value.query,
            document: Some(pair_input::Document::DocId(l.value.doc_id)),
        })
    }))
}

/// 128 bits of SHA-256 of an id: a set of these finds repeats in memory independent of the
/// ids' length (collisions are out of reach at any file size).
fn id_digest(id: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

/// Validates a corpus (a JSONL file or a folder) here, uploads the accepted documents, and
/// returns the corpus id.
pub(crate) async fn upload_corpus(client: &mut Client, path: &std::path::Path) -> Result<String> {
    let report = labelfleet_corpus::ingest_path(path, Default::default())?;
    for r in report.rejected.iter().take(20) {
        eprintln!("rejected: {r}");
    }
    let docs: Vec<Document> = report
        .accepted
        .iter()
        .map(labelfleet_pipeline::cluster::to_proto_document)
        .collect();
    let uploaded = client
        .upload_corpus(&path.display().to_string(), docs)
        .await
        .context("uploading the corpus")?;
    for r in uploaded.rejected.iter().take(20) {
        eprintln!(
            "rejected by the coordinator: {} {} {}: {}",
            r.location, r.id, r.field, r.message
        );
    }
    eprintln!(
        "corpus {}: {} documents ({} rejected here, {} there)",
        uploaded.corpus_id,
        uploaded.accepted,
        report.rejected.len(),
        uploaded.rejected.len()
    );
    Ok(uploaded.corpus_id)
}

#[derive(Args)]
pub struct SynthesizeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Corpus JSONL, uploaded first; seed documents are sampled from it.
    #[arg(long)]
    corpus: PathBuf,
    /// Seed documents to sample.
    #[arg(long, default_value_t = 24)]
    seed_documents: u32,
    #[arg(long, default_value_t = 3)]
    queries_per_document: u32,
    /// Metadata queries (naming the author, path, file name or source) per seed document.
    #[arg(long, default_value_t = 1)]
    metadata_queries_per_document: u32,
    /// Generator on the workers (a local decoder LM).
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Documents per task.
    #[arg(long, default_value_t = 8)]
    task_size: u32,
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "")]
    name: String,
    #[arg(long)]
    watch: bool,
}

/// Submits a query-synthesis job: workers write queries for sampled seed documents.
pub fn synthesize(a: SynthesizeArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = a.client.connect().await?;
        let corpus_id = upload_corpus(&mut client, &a.corpus).await?;
        let spec = JobSpec {
            name: a.name.clone(),
            corpus_id,
            seed_documents: a.seed_documents,
            queries_per_document: a.queries_per_document,
            metadata_queries_per_document: a.metadata_queries_per_document,
            teacher: Some(ModelRef {
                source: Some(model_ref::Source::LocalPath(a.model.clone())),
            }),
            task_size: a.task_size,
            max_tokens: a.max_tokens,
            seed: a.seed,
            ..Default::default()
        };
        let job = client.submit(spec, "").await.context("submit refused")?;
        println!("{}", job.job_id);
        eprintln!("submitted {} ({} seed documents)", job.job_id, total(&job));
        if a.watch {
            let job = watch_job(&mut client, &job.job_id).await?;
            succeeded(&job)?;
        }
        Ok(())
    })
}

fn total(job: &Job) -> u64 {
    job.stages.first().map(|s| s.total).unwrap_or(0)
}

fn state_name(state: i32) -> String {
    JobState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state {state}"))
}

/// Follows a job to its end with a progress bar, through leader changes.
/// A job that ended FAILED or CANCELLED is an error of its own (exit code 4), so a script or
/// a Kubernetes Job that waits on it fails too.
fn succeeded(job: &Job) -> Result<()> {
    if job.state == JobState::Succeeded as i32 {
        return Ok(());
    }
    Err(crate::JobNotSucceeded {
        job_id: job.job_id.clone(),
        state: state_name(job.state),
        error: job.error.clone(),
    }
    .into())
}

async fn watch_job(client: &mut Client, job_id: &str) -> Result<Job> {
    let mut bar: Option<crate::progress::Progress> = None;
    let job = client
        .watch(job_id, |job| {
            let stage = job.stages.first().cloned().unwrap_or_default();
            let pb = bar.get_or_insert_with(|| progress::bar(stage.total, "pairs"));
            pb.set_position(stage.done + stage.failed);
        })
        .await?;
    if let Some(pb) = bar {
        pb.finish();
    }
    let stage = job.stages.first().cloned().unwrap_or_default();
    let what = if stage.stage == "synthesize" {
        "documents given queries"
    } else {
        "pairs labeled"
    };
    eprintln!(
        "{job_id}: {} — {}/{} {what}, {} failed{}",
        state_name(job.state),
        stage.done,
        stage.total,
        stage.failed,
        if job.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", job.error)
        }
    );
    Ok(job)
}

#[derive(Args)]
pub struct JobArgs {
    #[command(flatten)]
    client: ClientArgs,
    job_id: String,
    /// `table` for people; `json` for scripts (one object per job, on one line).
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, env = "LABELFLEET_OUTPUT_FORMAT")]
    output: OutputFormat,
}

/// How `status`, `watch` and `list` print jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

pub fn status(a: JobArgs) -> Result<()> {
    runtime()?.block_on(async {
        let job = a.client.connect().await?.get(&a.job_id).await?;
        print_jobs(&[job], a.output)
    })
}

pub fn watch(a: JobArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = a.client.connect().await?;
        let job = watch_job(&mut client, &a.job_id).await?;
        print_jobs(std::slice::from_ref(&job), a.output)?;
        succeeded(&job)
    })
}

fn print_jobs(jobs: &[Job], format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Table => println!("{}", job_table(jobs)),
        OutputFormat::Json => {
            for job in jobs {
                println!("{}", serde_json::to_string(&job_json(job))?);
            }
        }
    }
    Ok(())
}

/// A job as JSON: what the table shows, every stage, and the job's outputs.
fn job_json(j: &Job) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = j
        .stages
        .iter()
        .map(|s| {
            serde_json::json!({
                "stage": s.stage,
                "done": s.done,
                "total": s.total,
                "failed": s.failed,
                "items_per_second": s.items_per_second,
                "eta_seconds": s.eta_seconds,
            })
        })
        .collect();
    serde_json::json!({
        "job_id": j.job_id,
        "name": j.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
        "state": state_name(j.state),
        "stage": j.stage,
        "stages": stages,
        "checkpoint_id": j.checkpoint_id,
        "error": j.error,
        "artifacts": j.artifacts,
        "created_unix_ms": j.created_unix_ms,
        "updated_unix_ms": j.updated_unix_ms,
    })
}

#[derive(Args)]
pub struct CancelArgs {
    #[command(flatten)]
    client: ClientArgs,
    job_id: String,
    #[arg(long, default_value = "cancelled by user")]
    reason: String,
}

pub fn cancel(a: CancelArgs) -> Result<()> {
    runtime()?.block_on(async {
        let job = a
            .client
            .connect()
            .await?
            .jobs()
            .cancel_job(CancelJobRequest {
                job_id: a.job_id.clone(),
                reason: a.reason.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        println!("{}", job_table(&[job]));
        Ok(())
    })
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// `table` for people; `json` for scripts (one object per job per line).
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, env = "LABELFLEET_OUTPUT_FORMAT")]
    output: OutputFormat,
}

pub fn list(a: ListArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = a.client.connect().await?;
        let mut jobs = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .jobs()
                .list_jobs(ListJobsRequest {
                    page_size: 100,
                    page_token: token.clone(),
                    state: 0,
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            jobs.extend(page.jobs);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        print_jobs(&jobs, a.output)
    })
}

fn job_table(jobs: &[Job]) -> String {
    let rows = jobs
        .iter()
        .map(|j| {
            // a corpus job shows the stage it is in and that stage's progress
            let s = match j.stage.is_empty() {
                true => j.stages.first().cloned().unwrap_or_default(),
                false => j.stages.last().cloned().unwrap_or_default(),
            };
            let state = match j.stage.is_empty() {
                true => state_name(j.state),
                false => format!("{} ({})", state_name(j.state), j.stage),
            };
            vec![
                j.job_id.clone(),
                j.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                state,
                format!("{}/{}", s.done, s.total),
                s.failed.to_string(),
                format!("{:.1}", s.items_per_second),
                if s.eta_seconds > 0.0 {
                    format!("{:.0}s", s.eta_seconds)
                } else {
                    "-".into()
                },
                j.error.clone(),
            ]
        })
        .collect();
    progress::table(
        &[
            "job", "name", "state", "labeled", "failed", "pairs/s", "ETA", "note",
        ],
        rows,
    )
}

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    client: ClientArgs,
    job_id: String,
    /// Labels JSONL: pair, query and document ids, grade, distribution, expected grade,
    /// provenance.
    #[arg(long, short)]
    output: PathBuf,
    /// Also write TREC qrels (query_id 0 doc_id grade); a label without a query id is left
    /// out and makes the command fail.
    #[arg(long)]
    qrels: Option<PathBuf>,
    /// Fetch from a job that is still running: the results committed so far (without this, a
    /// running job is refused).
    #[arg(long)]
    allow_partial: bool,
}

#[derive(serde::Serialize)]
struct LabelRecord<'a> {
    id: &'a str,
    query_id: &'a str,
    doc_id: &'a str,
    grade: u32,
    expected: f32,
    distribution: &'a [f32],
    model: &'a str,
    checkpoint_id: &'a str,
    prompt_version: &'a str,
    /// A committee's judges, each with its own distribution.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    judges: Vec<JudgeRecord<'a>>,
}

#[derive(serde::Serialize)]
struct JudgeRecord<'a> {
    judge: &'a str,
    model: &'a str,
    distribution: &'a [f32],
}

/// Writes a job's results as they arrive (labels JSONL, optional qrels; queries for a
/// synthesis job). The client resumes a broken stream from the count received, and a job that
/// has ended must deliver every result it committed, or this fails.
pub fn fetch(a: FetchArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = a.client.connect().await?;
        let job = client.get(&a.job_id).await?;
        if job.state < JobState::Succeeded as i32 {
            if !a.allow_partial {
                bail!(
                    "{} is still {}: wait for it, or pass --allow-partial for the results committed so far",
                    a.job_id,
                    state_name(job.state)
                );
            }
            eprintln!(
                "warning: {} is still {}: these are the results committed so far",
                a.job_id,
                state_name(job.state)
            );
        }
        // Written under temporary names and renamed into place once every result is in: a
        // fetch cut short leaves no file that looks complete.
        let output = Staged::new(&a.output);
        let qrels_file = a.qrels.as_deref().map(Staged::new);
        let mut out = jsonl::Writer::create(output.writing())
            .with_context(|| output.writing().display().to_string())?;
        let mut qrels = match &qrels_file {
            Some(staged) => Some(std::io::BufWriter::new(
                std::fs::File::create(staged.writing())
                    .with_context(|| staged.writing().display().to_string())?,
            )),
            None => None,
        };
        let (mut labels, mut queries, mut no_query_id) = (0u64, 0u64, 0u64);
        let mut write = |batch: ResultBatch| -> std::io::Result<()> {
            use std::io::Write;
            for q in &batch.queries {
                let mut record = serde_json::json!({
                    "query_id": q.query_id, "doc_id": q.doc_id, "query": q.text,
                    "prompt_version": q.prompt_version,
                });
                // a metadata query names the field it was written from
                if !q.metadata_field.is_empty() {
                    record["metadata_field"] = q.metadata_field.clone().into();
                }
                out.write(&record)?;
            }
            for l in &batch.labels {
                out.write(&LabelRecord {
                    id: &l.pair_id,
                    query_id: &l.query_id,
                    doc_id: &l.doc_id,
                    grade: l.grade,
                    expected: l.expected_grade,
                    distribution: &l.distribution,
                    model: &l.model,
                    checkpoint_id: &l.checkpoint_id,
                    prompt_version: &l.prompt_version,
                    judges: l
                        .judges
                        .iter()
                        .map(|j| JudgeRecord {
                            judge: &j.judge,
                            model: &j.model,
                            distribution: &j.distribution,
                        })
                        .collect(),
                })?;
                match qrels.as_mut() {
                    Some(_) if l.query_id.is_empty() => no_query_id += 1,
                    Some(q) => q.write_all(
                        labelfleet_types::qrels_line(
                            &l.pair_id,
                            &l.query_id,
                            &l.doc_id,
                            l.grade as usize,
                        )
                        .map_err(std::io::Error::other)?
                        .as_bytes(),
                    )?,
                    None => {}
                }
            }
            labels += batch.labels.len() as u64;
            queries += batch.queries.len() as u64;
            Ok(())
        };
        client
            .fetch(&a.job_id, "", |batch| {
                write(batch).map_err(|e| labelfleet_client::ClientError::Caller(e.to_string()))
            })
            .await?;
        out.finish()?;
        if let Some(q) = qrels {
            q.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        check_count(&job, labels)?;
        output.commit()?;
        if let Some(staged) = &qrels_file {
            staged.commit()?;
        }
        eprintln!(
            "{labels} labels and {queries} queries written to {}",
            a.output.display()
        );
        if no_query_id > 0 {
            bail!(
                "{no_query_id} labels have no query_id, so they are not in the qrels (they are in {}); give pairs a query_id to get TREC qrels",
                a.output.display()
            );
        }
        Ok(())
    })
}

/// A fetch that received fewer labels than its (ended) job committed.
#[derive(Debug, thiserror::Error)]
#[error("fetch {job_id}: expected {expected} labels, received {received}; nothing was written")]
pub struct ShortFetch {
    pub job_id: String,
    pub expected: u64,
    pub received: u64,
}

/// Checks the labels written against what the job committed: one per pair done, for a
/// labeling job that has ended (a running job's results are partial by design).
fn check_count(job: &Job, received: u64) -> Result<()> {
    let Some(stage) = job.stages.first().filter(|s| s.stage == "label") else {
        return Ok(());
    };
    if job.state < JobState::Succeeded as i32 || received >= stage.done {
        return Ok(());
    }
    Err(ShortFetch {
        job_id: job.job_id.clone(),
        expected: stage.done,
        received,
    }
    .into())
}

/// An output file written under a temporary name beside it (`.<name>.partial`), renamed into
/// place by `commit`; dropped without a commit, the temporary file is deleted. `-` (stdout)
/// is written as it goes.
struct Staged {
    path: PathBuf,
    temp: Option<PathBuf>,
}

impl Staged {
    fn new(path: &std::path::Path) -> Self {
        let temp = (path != std::path::Path::new("-")).then(|| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            path.with_file_name(format!(".{name}.partial"))
        });
        Staged {
            path: path.to_path_buf(),
            temp,
        }
    }

    /// Where to write.
    fn writing(&self) -> &std::path::Path {
        self.temp.as_deref().unwrap_or(&self.path)
    }

    /// Moves the written file into place.
    fn commit(&self) -> Result<()> {
        if let Some(temp) = &self.temp {
            std::fs::rename(temp, &self.path)
                .with_context(|| format!("{} -> {}", temp.display(), self.path.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            let _ = std::fs::remove_file(temp);
        }
    }
}

#[derive(Args)]
pub struct DistillArgs {
    /// Trainer address.
    #[arg(
        long,
        env = "LABELFLEET_TRAINER",
        default_value = "http://127.0.0.1:7072"
    )]
    trainer: String,
    #[command(flatten)]
    security: crate::security_cmd::ClientSecurityArgs,
    /// Base model of the student (bundled name or folder on the trainer).
    #[arg(long, default_value = "minilm")]
    base: String,
    /// Object-store key of the teacher labels: JSONL of {id, query, title?, body, distribution}.
    #[arg(long)]
    dataset: String,
    #[arg(long, default_value = "")]
    job_id: String,
    #[arg(long, default_value_t = 3)]
    epochs: u32,
    #[arg(long, default_value_t = 5e-5)]
    learning_rate: f64,
    #[arg(long, default_value_t = 0.2)]
    heldout_fraction: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Layers a cross-encoder student keeps from its base (the bottom ones; 0: all).
    #[arg(long, default_value_t = 0)]
    keep_layers: u32,
    /// Pairs per optimizer step (0: 16).
    #[arg(long, default_value_t = 0)]
    batch_size: u32,
    /// Wait until the checkpoint is trained and pushed.
    #[arg(long)]
    wait: bool,
}

pub fn distill(a: DistillArgs) -> Result<()> {
    use labelfleet_proto::v1::trainer_service_client::TrainerServiceClient;
    runtime()?.block_on(async {
        let transport = a.security.credentials()?.transport;
        let channel = transport
            .endpoint(&a.trainer, labelfleet_cluster::security::Role::Trainer)?
            .connect()
            .await
            .with_context(|| format!("connecting to the trainer at {}", a.trainer))?;
        let mut client = TrainerServiceClient::new(channel);
        let run = client
            .start_distillation(DistillRequest {
                job_id: a.job_id.clone(),
                base: Some(ModelRef {
                    source: Some(model_ref::Source::LocalPath(a.base.clone())),
                }),
                dataset: a.dataset.clone(),
                epochs: a.epochs,
                learning_rate: a.learning_rate,
                heldout_fraction: a.heldout_fraction,
                seed: a.seed,
                keep_layers: a.keep_layers,
                batch_size: a.batch_size,
                max_tokens: 0,
            })
            .await
            .map_err(|s| anyhow::anyhow!("distill refused: {}", s.message()))?
            .into_inner();
        println!("{}", run.run_id);
        if !a.wait {
            return Ok(());
        }
        let mut bar: Option<crate::progress::Progress> = None;
        if let Ok(stream) = client
            .watch_training(GetTrainingRunRequest {
                run_id: run.run_id.clone(),
            })
            .await
        {
            let mut stream = stream.into_inner();
            while let Ok(Some(m)) = stream.message().await {
                let pb = bar.get_or_insert_with(|| progress::bar(m.total_steps as u64, "train"));
                pb.set_position(m.step as u64 + 1);
                pb.set_message(format!("loss {:.3}", m.loss));
            }
        }
        if let Some(pb) = bar {
            pb.finish();
        }
        loop {
            let run = client
                .get_training_run(GetTrainingRunRequest {
                    run_id: run.run_id.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            match run.state.as_str() {
                "done" => {
                    println!(
                        "{}",
                        progress::table(
                            &[
                                "run",
                                "checkpoint",
                                "held-out agreement with teacher",
                                "majority class"
                            ],
                            vec![vec![
                                run.run_id.clone(),
                                run.checkpoint_id.clone(),
                                format!("{:.3}", run.heldout_agreement_with_teacher),
                                format!("{:.3}", run.majority_baseline),
                            ]],
                        )
                    );
                    return Ok(());
                }
                "failed" => bail!("run {} failed: {}", run.run_id, run.error),
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_job(state: JobState, total: u64, done: u64) -> Job {
        Job {
            job_id: "job-7".into(),
            state: state as i32,
            stages: vec![StageProgress {
                stage: "label".into(),
                total,
                done,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_short_fetch_of_an_ended_job_names_the_job_and_both_counts() {
        let err = check_count(&label_job(JobState::Succeeded, 100, 97), 90).unwrap_err();
        let short = err.downcast_ref::<ShortFetch>().expect("a ShortFetch");
        assert_eq!((short.expected, short.received), (97, 90));
        let msg = err.to_string();
        assert!(
            msg.contains("job-7") && msg.contains("97") && msg.contains("90"),
            "{msg}"
        );
        // every committed label (failed pairs have none), or a running job: fine
        assert!(check_count(&label_job(JobState::Succeeded, 100, 97), 97).is_ok());
        assert!(check_count(&label_job(JobState::Running, 100, 50), 10).is_ok());
        assert!(check_count(&label_job(JobState::Cancelled, 100, 50), 10).is_err());
    }

    #[test]
    fn a_staged_output_appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl");
        {
            let staged = Staged::new(&path);
            std::fs::write(staged.writing(), b"{\"id\":\"p1\"}\n").unwrap();
            assert_ne!(staged.writing(), path.as_path());
            // cut short: dropped without a commit
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "no file, complete-looking or partial: {left:?}"
        );
        let staged = Staged::new(&path);
        std::fs::write(staged.writing(), b"{\"id\":\"p1\"}\n").unwrap();
        staged.commit().unwrap();
        drop(staged);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"id\":\"p1\"}\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // stdout is written in place
        assert_eq!(
            Staged::new(std::path::Path::new("-")).writing(),
            std::path::Path::new("-")
        );
    }
}

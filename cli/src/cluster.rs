//! Cluster roles (`coordinator`, `worker`) and the gRPC client commands a user drives
//! (`submit`, `status`, `watch`, `list`, `cancel`, `fetch`).

use crate::{jsonl, progress};
use anyhow::{bail, Context, Result};
use clap::Args;
use labelfleet_cluster::MAX_MESSAGE_BYTES;
use labelfleet_coordinator::server::CoordinatorConfig;
use labelfleet_proto::v1::job_service_client::JobServiceClient;
use labelfleet_proto::v1::*;
use labelfleet_worker::WorkerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The `--store` value with `--store-endpoint` folded in, checked before any role starts.
fn store_url(store: &str, endpoint: Option<&str>) -> Result<String> {
    let url = labelfleet_cluster::blobs::with_endpoint(store, endpoint);
    labelfleet_cluster::blobs::StoreUrl::parse(&url)?;
    Ok(url)
}

fn endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Args)]
pub struct CoordinatorArgs {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "LABELFLEET_LISTEN", default_value = "0.0.0.0:7070")]
    listen: SocketAddr,
    /// Address peers reach this replica at (default: the bound address).
    #[arg(long, env = "LABELFLEET_ADVERTISE")]
    advertise: Option<String>,
    /// etcd endpoints, comma-separated. Without etcd, one replica runs with in-process metadata.
    #[arg(long, env = "LABELFLEET_ETCD", default_value = "")]
    etcd: String,
    #[arg(long, env = "LABELFLEET_ETCD_PREFIX", default_value = "/labelfleet")]
    etcd_prefix: String,
    /// Object store: a directory (shared by the nodes), or a bucket URL: s3://bucket/prefix,
    /// gs://bucket/prefix, az://container/prefix. Credentials and region come from the
    /// backend's environment variables (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT_URL,
    /// AWS_ALLOW_HTTP, GOOGLE_*, AZURE_*); `?key=value` options override them.
    #[arg(long, env = "LABELFLEET_STORE", default_value = "labelfleet-data")]
    store: String,
    /// Endpoint of an S3-compatible server (MinIO, Ceph...) for an s3:// store, e.g.
    /// http://minio:9000 (an http:// endpoint allows plain HTTP).
    #[arg(long, env = "LABELFLEET_STORE_ENDPOINT")]
    store_endpoint: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "LABELFLEET_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// How long a task lease lasts without a heartbeat.
    #[arg(long, default_value_t = 30_000)]
    task_lease_ms: u64,
    /// Leases granted per task before it fails for good.
    #[arg(long, default_value_t = 4)]
    max_attempts: u32,
    /// TTL of the election lease: how soon a standby takes over from a dead leader.
    #[arg(long, default_value_t = 10)]
    election_ttl_s: u64,
    /// Hours a finished job's results, tasks and record are kept before they are deleted
    /// (0 keeps them forever).
    #[arg(long, env = "LABELFLEET_JOB_RETENTION_H", default_value_t = 168.0)]
    job_retention_h: f64,
}

pub fn coordinator(a: CoordinatorArgs) -> Result<()> {
    let config = CoordinatorConfig {
        listen: a.listen,
        advertise: a.advertise,
        etcd: endpoints(&a.etcd),
        etcd_prefix: a.etcd_prefix,
        store: store_url(&a.store, a.store_endpoint.as_deref())?,
        metrics_listen: a.metrics_listen,
        task_lease: Duration::from_millis(a.task_lease_ms),
        max_attempts: a.max_attempts,
        election_ttl: Duration::from_secs(a.election_ttl_s),
        job_retention: Duration::from_secs_f64(a.job_retention_h.max(0.0) * 3600.0),
        ..Default::default()
    };
    runtime()?
        .block_on(labelfleet_coordinator::server::run(
            config,
            shutdown_signal(),
        ))
        .context("coordinator")
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Unique worker id (default: host name and process id).
    #[arg(long, env = "LABELFLEET_WORKER_ID")]
    id: Option<String>,
    /// Address of this worker's WorkerControl server (checkpoint pushes, drain).
    #[arg(long, env = "LABELFLEET_LISTEN", default_value = "0.0.0.0:7071")]
    listen: SocketAddr,
    #[arg(long, env = "LABELFLEET_ADVERTISE")]
    advertise: Option<String>,
    #[arg(long, env = "LABELFLEET_ETCD", default_value = "")]
    etcd: String,
    #[arg(long, env = "LABELFLEET_ETCD_PREFIX", default_value = "/labelfleet")]
    etcd_prefix: String,
    /// Coordinator address when there is no etcd to find the leader in.
    #[arg(long, env = "LABELFLEET_COORDINATOR")]
    coordinator: Option<String>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, env = "LABELFLEET_DEVICE", default_value = "auto")]
    device: String,
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// libtorch intra-op threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Tasks held at once.
    #[arg(long, default_value_t = 2)]
    capacity: u32,
    /// Folder for pushed checkpoints (default: $LABELFLEET_HOME/checkpoints).
    #[arg(long, env = "LABELFLEET_CHECKPOINTS")]
    checkpoints: Option<PathBuf>,
    #[arg(long, env = "LABELFLEET_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// TTL of the etcd registration: how soon the cluster notices this worker died.
    #[arg(long, default_value_t = 10)]
    registration_ttl_s: u64,
}

pub fn worker(a: WorkerArgs) -> Result<()> {
    let placement = labelfleet_slm::Placement::parse(&a.device, Some(&a.dtype))?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let config = WorkerConfig {
        worker_id: a
            .id
            .unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        listen: a.listen,
        advertise: a.advertise,
        etcd: endpoints(&a.etcd),
        etcd_prefix: a.etcd_prefix,
        coordinator: a.coordinator,
        placement,
        threads: a.threads,
        capacity: a.capacity.max(1),
        checkpoints: a
            .checkpoints
            .unwrap_or_else(|| labelfleet_slm::home_dir().join("checkpoints")),
        metrics_listen: a.metrics_listen,
        registration_ttl: Duration::from_secs(a.registration_ttl_s),
    };
    runtime()?
        .block_on(labelfleet_worker::run(config, shutdown_signal()))
        .context("worker")
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
}

impl ClientArgs {
    /// A client for the replica that answers as leader.
    async fn connect(&self) -> Result<JobServiceClient<Channel>> {
        let mut last = None;
        for _round in 0..60 {
            for address in endpoints(&self.coordinator) {
                let url = if address.starts_with("http") {
                    address.clone()
                } else {
                    format!("http://{address}")
                };
                let channel = match tonic::transport::Endpoint::from_shared(url.clone())?
                    .connect_timeout(Duration::from_secs(2))
                    .connect()
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        last = Some(format!("{address}: {e}"));
                        continue;
                    }
                };
                let mut client = JobServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES);
                // A standby answers UNAVAILABLE; the leader answers (even NOT_FOUND).
                match client
                    .get_job(GetJobRequest {
                        job_id: String::new(),
                    })
                    .await
                {
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        last = Some(format!("{address}: {}", s.message()));
                    }
                    _ => return Ok(client),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!(
            "no leader among {}: {}",
            self.coordinator,
            last.unwrap_or_default()
        )
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

pub fn submit(a: SubmitArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = a.client.connect().await?;
        let corpus_id = upload_corpus(&mut client, &a.corpus).await?;
        let mut pairs = Vec::new();
        let mut rejected = 0usize;
        for r in jsonl::read::<PairRecord>(&a.pairs)? {
            match r {
                Ok(l) => pairs.push(PairInput {
                    pair_id: l.value.id,
                    query_id: l.value.query_id,
                    query: l.value.query,
                    document: Some(pair_input::Document::DocId(l.value.doc_id)),
                }),
                Err(e) => {
                    rejected += 1;
                    eprintln!("rejected: {e}");
                }
            }
        }
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
            label_pairs: pairs,
            task_size: a.task_size,
            max_tokens: a.max_tokens,
            ..Default::default()
        };
        let job = client
            .submit_job(SubmitJobRequest {
                spec: Some(spec),
                idempotency_key: a.idempotency_key.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("submit refused: {}", s.message()))?
            .into_inner();
        println!("{}", job.job_id);
        eprintln!(
            "submitted {} ({} pairs; {rejected} pair lines rejected)",
            job.job_id,
            total(&job)
        );
        if a.watch {
            watch_job(&a.client, &job.job_id).await?;
        }
        if rejected > 0 {
            return Err(crate::Rejected(rejected).into());
        }
        Ok(())
    })
}

/// Validates a corpus file here, uploads the accepted documents, and returns the corpus id.
async fn upload_corpus(
    client: &mut JobServiceClient<Channel>,
    path: &std::path::Path,
) -> Result<String> {
    let report = labelfleet_corpus::ingest::ingest_jsonl(path, Default::default())?;
    for r in report.rejected.iter().take(20) {
        eprintln!("rejected: {r}");
    }
    let docs: Vec<Document> = report.accepted.iter().map(to_proto_document).collect();
    let name = path.display().to_string();
    let chunks: Vec<CorpusChunk> = docs
        .chunks(500)
        .enumerate()
        .map(|(i, c)| CorpusChunk {
            corpus_name: if i == 0 { name.clone() } else { String::new() },
            documents: c.to_vec(),
        })
        .collect();
    let uploaded = client
        .upload_corpus(tokio_stream::iter(chunks))
        .await
        .context("uploading the corpus")?
        .into_inner();
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
        let job = client
            .submit_job(SubmitJobRequest {
                spec: Some(spec),
                idempotency_key: String::new(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("submit refused: {}", s.message()))?
            .into_inner();
        println!("{}", job.job_id);
        eprintln!("submitted {} ({} seed documents)", job.job_id, total(&job));
        if a.watch {
            watch_job(&a.client, &job.job_id).await?;
        }
        Ok(())
    })
}

pub(crate) fn to_proto_document(d: &labelfleet_corpus::ingest::Document) -> Document {
    Document {
        id: d.id.clone(),
        title: d.title.clone().unwrap_or_default(),
        body: d.body.clone(),
        author: d.author.clone().unwrap_or_default(),
        path: d.path.clone().unwrap_or_default(),
        modified: d.modified.clone().unwrap_or_default(),
        metadata: d
            .metadata
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect(),
    }
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

async fn watch_job(client_args: &ClientArgs, job_id: &str) -> Result<Job> {
    let mut bar: Option<indicatif::ProgressBar> = None;
    loop {
        let mut client = client_args.connect().await?;
        let mut stream = match client
            .watch_job(WatchJobRequest {
                job_id: job_id.to_string(),
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => continue,
            Err(s) => bail!("watch {job_id}: {}", s.message()),
        };
        // Until the stream ends or breaks (a leader change): then reconnect and go on.
        while let Ok(Some(job)) = stream.message().await {
            let stage = job.stages.first().cloned().unwrap_or_default();
            let pb = bar.get_or_insert_with(|| progress::bar(stage.total, "pairs"));
            pb.set_position(stage.done + stage.failed);
            if job.state >= JobState::Succeeded as i32 {
                pb.finish();
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
                return Ok(job);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[derive(Args)]
pub struct JobArgs {
    #[command(flatten)]
    client: ClientArgs,
    job_id: String,
}

pub fn status(a: JobArgs) -> Result<()> {
    runtime()?.block_on(async {
        let job = a
            .client
            .connect()
            .await?
            .get_job(GetJobRequest {
                job_id: a.job_id.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        println!("{}", job_table(&[job]));
        Ok(())
    })
}

pub fn watch(a: JobArgs) -> Result<()> {
    runtime()?.block_on(async {
        let job = watch_job(&a.client, &a.job_id).await?;
        println!("{}", job_table(&[job]));
        Ok(())
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
}

pub fn list(a: ListArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = a.client.connect().await?;
        let mut jobs = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
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
        println!("{}", job_table(&jobs));
        Ok(())
    })
}

fn job_table(jobs: &[Job]) -> String {
    let rows = jobs
        .iter()
        .map(|j| {
            let s = j.stages.first().cloned().unwrap_or_default();
            vec![
                j.job_id.clone(),
                j.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                state_name(j.state),
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
    /// Also write TREC qrels (query_id 0 doc_id grade).
    #[arg(long)]
    qrels: Option<PathBuf>,
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
}

pub fn fetch(a: FetchArgs) -> Result<()> {
    runtime()?.block_on(async {
        let job = a
            .client
            .connect()
            .await?
            .get_job(GetJobRequest {
                job_id: a.job_id.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        if job.state < JobState::Succeeded as i32 {
            eprintln!(
                "warning: {} is still {}: these are the results committed so far",
                a.job_id,
                state_name(job.state)
            );
        }
        let mut labels: Vec<Label> = Vec::new();
        let mut queries: Vec<SyntheticQuery> = Vec::new();
        // Resumes from the count already received after a broken stream (leader change).
        'outer: for _ in 0..20 {
            let mut client = a.client.connect().await?;
            let mut stream = client
                .fetch_results(FetchResultsRequest {
                    job_id: a.job_id.clone(),
                    stage: String::new(),
                    offset: (labels.len() + queries.len()) as u64,
                })
                .await
                .map_err(|s| anyhow::anyhow!("fetch {}: {}", a.job_id, s.message()))?
                .into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(batch)) => {
                        labels.extend(batch.labels);
                        queries.extend(batch.queries);
                    }
                    Ok(None) => break 'outer,
                    Err(s) if s.code() == tonic::Code::DataLoss => bail!("{}", s.message()),
                    Err(_) => continue 'outer,
                }
            }
        }
        let mut out = jsonl::Writer::create(&a.output)?;
        for q in &queries {
            out.write(&serde_json::json!({
                "query_id": q.query_id, "doc_id": q.doc_id, "query": q.text,
                "prompt_version": q.prompt_version,
            }))?;
        }
        for l in &labels {
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
            })?;
        }
        out.finish()?;
        if let Some(path) = &a.qrels {
            let mut text = String::new();
            for l in &labels {
                text.push_str(&format!("{} 0 {} {}\n", l.query_id, l.doc_id, l.grade));
            }
            std::fs::write(path, text).with_context(|| path.display().to_string())?;
        }
        eprintln!(
            "{} labels and {} queries written to {}",
            labels.len(),
            queries.len(),
            a.output.display()
        );
        Ok(())
    })
}

#[derive(Args)]
pub struct TrainerArgs {
    #[arg(long, env = "LABELFLEET_LISTEN", default_value = "0.0.0.0:7072")]
    listen: SocketAddr,
    #[arg(long, env = "LABELFLEET_ETCD", default_value = "")]
    etcd: String,
    #[arg(long, env = "LABELFLEET_ETCD_PREFIX", default_value = "/labelfleet")]
    etcd_prefix: String,
    /// Object store shared with the coordinator (datasets in, checkpoints out): a directory or
    /// a bucket URL, as the coordinator's --store.
    #[arg(long, env = "LABELFLEET_STORE", default_value = "labelfleet-data")]
    store: String,
    /// Endpoint of an S3-compatible server (MinIO, Ceph...) for an s3:// store, e.g.
    /// http://minio:9000 (an http:// endpoint allows plain HTTP).
    #[arg(long, env = "LABELFLEET_STORE_ENDPOINT")]
    store_endpoint: Option<String>,
    /// Local folder where datasets are downloaded, students trained and checkpoints kept for
    /// pushing (default: $LABELFLEET_HOME/trainer).
    #[arg(long, env = "LABELFLEET_TRAINER_SCRATCH")]
    scratch: Option<PathBuf>,
    #[arg(long, env = "LABELFLEET_DEVICE", default_value = "auto")]
    device: String,
    #[arg(long, default_value = "auto")]
    dtype: String,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Longest training input in tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Push bandwidth per worker, MiB/s (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    push_rate_mib_s: f64,
    /// Seconds between checks that every live worker holds every registered checkpoint
    /// (workers that joined later get them then).
    #[arg(long, default_value_t = 15)]
    reconcile_interval_s: u64,
    #[arg(long, env = "LABELFLEET_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

pub fn trainer(a: TrainerArgs) -> Result<()> {
    let config = labelfleet_trainer::TrainerConfig {
        listen: a.listen,
        etcd: endpoints(&a.etcd),
        etcd_prefix: a.etcd_prefix,
        store: store_url(&a.store, a.store_endpoint.as_deref())?,
        scratch: a
            .scratch
            .unwrap_or_else(|| labelfleet_slm::home_dir().join("trainer")),
        placement: labelfleet_slm::Placement::parse(&a.device, Some(&a.dtype))?,
        threads: a.threads,
        max_tokens: a.max_tokens,
        push_rate_mib_s: a.push_rate_mib_s,
        reconcile_interval: Duration::from_secs(a.reconcile_interval_s.max(1)),
        metrics_listen: a.metrics_listen,
    };
    runtime()?
        .block_on(labelfleet_trainer::run(config, shutdown_signal()))
        .context("trainer")
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
        let mut client = TrainerServiceClient::connect(a.trainer.clone())
            .await
            .with_context(|| format!("connecting to the trainer at {}", a.trainer))?;
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
            })
            .await
            .map_err(|s| anyhow::anyhow!("distill refused: {}", s.message()))?
            .into_inner();
        println!("{}", run.run_id);
        if !a.wait {
            return Ok(());
        }
        let mut bar: Option<indicatif::ProgressBar> = None;
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

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the gRPC API (the same JobService a cluster serves).
    #[arg(long, env = "LABELFLEET_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Trainer address.
    #[arg(long, default_value = "127.0.0.1:7072")]
    trainer_listen: SocketAddr,
    /// In-process workers.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Object store: a directory, or a bucket URL as the coordinator's --store (pushed
    /// checkpoints and the trainer's scratch then live under $LABELFLEET_HOME/embedded).
    #[arg(long, env = "LABELFLEET_STORE", default_value = "labelfleet-data")]
    store: String,
    /// Endpoint of an S3-compatible server (MinIO, Ceph...) for an s3:// store, e.g.
    /// http://minio:9000 (an http:// endpoint allows plain HTTP).
    #[arg(long, env = "LABELFLEET_STORE_ENDPOINT")]
    store_endpoint: Option<String>,
    #[arg(long, env = "LABELFLEET_DEVICE", default_value = "auto")]
    device: String,
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// libtorch intra-op threads per worker (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, env = "LABELFLEET_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

/// Embedded mode: the coordinator, in-process workers and the trainer in one process, on one
/// in-process metadata store and an object store (a local directory by default). No etcd.
/// Clients use it like a cluster.
pub fn serve(a: ServeArgs) -> Result<()> {
    let placement = labelfleet_slm::Placement::parse(&a.device, Some(&a.dtype))?;
    let cluster = crate::embedded::EmbeddedCluster::start(crate::embedded::EmbeddedOptions {
        store: store_url(&a.store, a.store_endpoint.as_deref())?,
        listen: a.listen,
        trainer_listen: a.trainer_listen,
        workers: a.workers.max(1),
        placement,
        threads: a.threads,
        trainer_max_tokens: 256,
        metrics_listen: a.metrics_listen,
    })?;
    eprintln!(
        "labelfleet serving on {} ({} in-process worker(s), trainer on {}); Ctrl-C to stop",
        cluster.address,
        a.workers.max(1),
        cluster.trainer_address
    );
    cluster.block_on(shutdown_signal());
    eprintln!("stopping: workers finish the tasks they hold");
    cluster.shutdown()
}

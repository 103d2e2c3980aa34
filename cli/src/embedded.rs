//! The embedded cluster: the coordinator, in-process workers and the trainer of a real cluster,
//! in this process, on one in-process metadata store (no etcd) and a local object-store
//! directory. They talk real gRPC over loopback, as a cluster's nodes do.
//!
//! `labelfleet serve` runs it and waits for clients; `labelfleet run` drives its stages through
//! it as a client would: query synthesis and grading are jobs the coordinator splits into
//! tasks for the workers, and distillation is a run of the trainer, which pushes the checkpoint
//! to the workers.

use crate::progress;
use anyhow::{bail, Context, Result};
use labelfleet_cluster::meta::MetaStore;
use labelfleet_cluster::MAX_MESSAGE_BYTES;
use labelfleet_coordinator::server::CoordinatorConfig;
use labelfleet_proto::v1::job_service_client::JobServiceClient;
use labelfleet_proto::v1::trainer_service_client::TrainerServiceClient;
use labelfleet_proto::v1::*;
use labelfleet_slm::grading::{GradePrompt, Grading, Pair};
use labelfleet_slm::Placement;
use labelfleet_worker::WorkerConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// What to start.
pub struct EmbeddedOptions {
    /// Object store (results, tasks, datasets, checkpoints): a directory or a bucket URL
    /// (`--store`).
    pub store: String,
    /// Coordinator gRPC address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Trainer gRPC address; port 0 picks a free one.
    pub trainer_listen: SocketAddr,
    pub workers: usize,
    pub placement: Placement,
    /// libtorch intra-op threads per worker and for the trainer (0: all cores).
    pub threads: usize,
    /// Longest student input of the trainer, in tokens.
    pub trainer_max_tokens: usize,
    pub metrics_listen: Option<SocketAddr>,
}

pub struct EmbeddedCluster {
    rt: tokio::runtime::Runtime,
    pub address: SocketAddr,
    pub trainer_address: SocketAddr,
    client: JobServiceClient<Channel>,
    trainer: TrainerServiceClient<Channel>,
    stop_workers: broadcast::Sender<()>,
    stop_rest: broadcast::Sender<()>,
    worker_tasks: Vec<JoinHandle<Result<()>>>,
    coordinator_task: JoinHandle<Result<()>>,
    trainer_task: JoinHandle<Result<()>>,
}

fn stopped(tx: &broadcast::Sender<()>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = tx.subscribe();
    async move {
        let _ = rx.recv().await;
    }
}

/// `addr`, with port 0 replaced by a free port.
fn resolve_port(addr: SocketAddr) -> Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    Ok(std::net::TcpListener::bind(addr)?.local_addr()?)
}

/// A label job's pair for the engine's pair: the document goes inline.
fn to_pair_input(index: usize, p: &Pair) -> PairInput {
    PairInput {
        pair_id: index.to_string(),
        query_id: String::new(),
        query: p.query.clone(),
        document: Some(pair_input::Document::Inline(Document {
            id: p.id.clone(),
            title: p.title.clone().unwrap_or_default(),
            body: p.body.clone(),
            metadata: p
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Default::default()
        })),
    }
}

fn status(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what}: {}", s.message())
}

impl EmbeddedCluster {
    pub fn start(o: EmbeddedOptions) -> Result<EmbeddedCluster> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let address = resolve_port(o.listen)?;
        let trainer_address = resolve_port(o.trainer_listen)?;
        let meta = MetaStore::memory();
        // The workers' installed checkpoints and the trainer's scratch are local folders: in
        // the store's directory when it is one (as always), else under $LABELFLEET_HOME.
        let local = labelfleet_cluster::blobs::local_dir(&o.store)
            .unwrap_or_else(|| labelfleet_slm::home_dir().join("embedded"));
        // Workers stop first (finishing and committing what they hold), then the rest.
        let (stop_workers, _) = broadcast::channel(1);
        let (stop_rest, _) = broadcast::channel(1);
        let coordinator_task = rt.spawn({
            let config = CoordinatorConfig {
                listen: address,
                store: o.store.clone(),
                metrics_listen: o.metrics_listen,
                ..Default::default()
            };
            let (meta, stop) = (meta.clone(), stopped(&stop_rest));
            async move {
                labelfleet_coordinator::server::run_with_meta(config, meta, stop)
                    .await
                    .context("embedded coordinator")
            }
        });
        let mut worker_tasks = Vec::new();
        for i in 0..o.workers.max(1) {
            let config = WorkerConfig {
                worker_id: format!("embedded-{i}"),
                listen: "127.0.0.1:0".parse()?,
                advertise: None,
                etcd: Vec::new(),
                etcd_prefix: "/labelfleet".into(),
                coordinator: Some(address.to_string()),
                placement: o.placement,
                threads: o.threads,
                capacity: 2,
                checkpoints: local.join("worker-checkpoints").join(i.to_string()),
                metrics_listen: None,
                registration_ttl: Duration::from_secs(10),
            };
            let (meta, stop) = (meta.clone(), stopped(&stop_workers));
            worker_tasks.push(rt.spawn(async move {
                labelfleet_worker::run_with_meta(config, meta, stop)
                    .await
                    .context("embedded worker")
            }));
        }
        let trainer_task = rt.spawn({
            let config = labelfleet_trainer::TrainerConfig {
                listen: trainer_address,
                etcd: Vec::new(),
                etcd_prefix: "/labelfleet".into(),
                store: o.store.clone(),
                scratch: local.join("trainer-scratch"),
                placement: o.placement,
                threads: o.threads,
                max_tokens: o.trainer_max_tokens,
                push_rate_mib_s: 0.0,
                reconcile_interval: Duration::from_secs(15),
                metrics_listen: None,
            };
            let (meta, stop) = (meta.clone(), stopped(&stop_rest));
            async move {
                labelfleet_trainer::run_with_meta(config, meta, stop)
                    .await
                    .context("embedded trainer")
            }
        });
        let (client, trainer) = rt.block_on(async {
            let client = connect_leader(address).await?;
            let url = format!("http://{trainer_address}");
            for _ in 0..400 {
                if let Ok(t) = TrainerServiceClient::connect(url.clone()).await {
                    return Ok((client, t));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            bail!("the embedded trainer did not start on {trainer_address}")
        })?;
        Ok(EmbeddedCluster {
            rt,
            address,
            trainer_address,
            client,
            trainer,
            stop_workers,
            stop_rest,
            worker_tasks,
            coordinator_task,
            trainer_task,
        })
    }

    /// Runs `f` to completion on the cluster's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Submits a job and follows it with a progress bar until it ends.
    async fn run_job(client: &mut JobServiceClient<Channel>, spec: JobSpec, what: &str) -> Result<Job> {
        let job = client
            .submit_job(SubmitJobRequest {
                spec: Some(spec),
                idempotency_key: String::new(),
            })
            .await
            .map_err(status("embedded submit"))?
            .into_inner();
        let mut stream = client
            .watch_job(WatchJobRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .map_err(status("embedded watch"))?
            .into_inner();
        let mut bar: Option<indicatif::ProgressBar> = None;
        let mut last = job;
        while let Some(job) = stream.message().await.map_err(status("embedded watch"))? {
            let stage = job.stages.first().cloned().unwrap_or_default();
            let pb = bar.get_or_insert_with(|| progress::bar(stage.total, what));
            pb.set_position(stage.done + stage.failed);
            let ended = job.state >= JobState::Succeeded as i32;
            last = job;
            if ended {
                break;
            }
        }
        if let Some(pb) = bar {
            pb.finish();
        }
        let stage = last.stages.first().cloned().unwrap_or_default();
        if last.state != JobState::Succeeded as i32 || stage.failed > 0 {
            bail!(
                "{what}: job {} ended {} with {} of {} failed: {}",
                last.job_id,
                JobState::try_from(last.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?"),
                stage.failed,
                stage.total,
                last.error
            );
        }
        Ok(last)
    }

    async fn results(
        client: &mut JobServiceClient<Channel>,
        job_id: &str,
    ) -> Result<(Vec<Label>, Vec<SyntheticQuery>)> {
        let mut stream = client
            .fetch_results(FetchResultsRequest {
                job_id: job_id.to_string(),
                stage: String::new(),
                offset: 0,
            })
            .await
            .map_err(status("embedded fetch"))?
            .into_inner();
        let (mut labels, mut queries) = (vec![], vec![]);
        while let Some(batch) = stream.message().await.map_err(status("embedded fetch"))? {
            labels.extend(batch.labels);
            queries.extend(batch.queries);
        }
        Ok((labels, queries))
    }

    /// Grades `pairs` with `model` (a decoder with the `prompt` version) as one labeling job of
    /// `task_size`-pair tasks. Grades come back in input order; a failed task fails the call
    /// with its reason.
    pub fn grade(
        &mut self,
        model: model_ref::Source,
        prompt: GradePrompt,
        pairs: &[Pair],
        max_tokens: usize,
        task_size: u32,
        what: &str,
    ) -> Result<Vec<Grading>> {
        let spec = JobSpec {
            name: what.to_string(),
            grade_prompt_version: prompt.version().to_string(),
            student: Some(ModelRef {
                source: Some(model),
            }),
            label_pairs: pairs
                .iter()
                .enumerate()
                .map(|(i, p)| to_pair_input(i, p))
                .collect(),
            task_size,
            max_tokens: max_tokens as u32,
            ..Default::default()
        };
        let client = &mut self.client;
        self.rt.block_on(async {
            let job = Self::run_job(client, spec, what).await?;
            let (labels, _) = Self::results(client, &job.job_id).await?;
            let mut out: Vec<Option<Grading>> = vec![None; pairs.len()];
            for l in labels {
                let i: usize = l
                    .pair_id
                    .parse()
                    .with_context(|| format!("{what}: label for unknown pair `{}`", l.pair_id))?;
                match out.get_mut(i) {
                    Some(slot) => *slot = Some(Grading::from_distribution(l.distribution)),
                    None => bail!("{what}: label for unknown pair #{i}"),
                }
            }
            out.into_iter()
                .enumerate()
                .map(|(i, g)| g.with_context(|| format!("{what}: no label for pair #{i}")))
                .collect()
        })
    }

    /// Writes queries for `docs` with the decoder LM `model` on the workers: the documents are
    /// uploaded as a corpus, and the synthesis job takes every one of them as a seed.
    pub fn synthesize(
        &mut self,
        model: &Path,
        docs: Vec<Document>,
        queries_per_document: u32,
        metadata_queries_per_document: u32,
        max_tokens: usize,
        seed: u64,
    ) -> Result<Vec<SyntheticQuery>> {
        let n = docs.len() as u32;
        let chunks: Vec<CorpusChunk> = docs
            .chunks(500)
            .enumerate()
            .map(|(i, c)| CorpusChunk {
                corpus_name: if i == 0 { "seeds".into() } else { String::new() },
                documents: c.to_vec(),
            })
            .collect();
        let client = &mut self.client;
        self.rt.block_on(async {
            let uploaded = client
                .upload_corpus(tokio_stream::iter(chunks))
                .await
                .map_err(status("embedded upload"))?
                .into_inner();
            if let Some(r) = uploaded.rejected.first() {
                bail!(
                    "seed document {} rejected by the coordinator: field `{}`: {}",
                    r.id,
                    r.field,
                    r.message
                );
            }
            let spec = JobSpec {
                name: "queries".into(),
                corpus_id: uploaded.corpus_id,
                seed_documents: n,
                queries_per_document,
                metadata_queries_per_document,
                teacher: Some(ModelRef {
                    source: Some(model_ref::Source::LocalPath(model.display().to_string())),
                }),
                task_size: 8,
                max_tokens: max_tokens as u32,
                seed,
                ..Default::default()
            };
            let job = Self::run_job(client, spec, "queries").await?;
            let (_, queries) = Self::results(client, &job.job_id).await?;
            Ok(queries)
        })
    }

    /// Distils a student on the trainer from a dataset in the object store, and waits until
    /// the checkpoint is registered and pushed to the workers.
    pub fn distill(&mut self, request: DistillRequest) -> Result<TrainingRun> {
        let trainer = &mut self.trainer;
        self.rt.block_on(async {
            let run = trainer
                .start_distillation(request)
                .await
                .map_err(status("embedded distillation"))?
                .into_inner();
            let mut bar: Option<indicatif::ProgressBar> = None;
            if let Ok(stream) = trainer
                .watch_training(GetTrainingRunRequest {
                    run_id: run.run_id.clone(),
                })
                .await
            {
                let mut stream = stream.into_inner();
                while let Ok(Some(m)) = stream.message().await {
                    let pb =
                        bar.get_or_insert_with(|| progress::bar(m.total_steps as u64, "distill"));
                    pb.set_position(m.step as u64 + 1);
                    pb.set_message(format!("loss {:.3}", m.loss));
                }
            }
            if let Some(pb) = bar {
                pb.finish();
            }
            loop {
                let run = trainer
                    .get_training_run(GetTrainingRunRequest {
                        run_id: run.run_id.clone(),
                    })
                    .await
                    .map_err(status("embedded training run"))?
                    .into_inner();
                match run.state.as_str() {
                    "done" => return Ok(run),
                    "failed" => bail!("distillation run {} failed: {}", run.run_id, run.error),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    }

    /// Stops the workers (they finish and commit what they hold), then the coordinator and the
    /// trainer.
    pub fn shutdown(self) -> Result<()> {
        let _ = self.stop_workers.send(());
        self.rt.block_on(async {
            for w in self.worker_tasks {
                w.await??;
            }
            let _ = self.stop_rest.send(());
            self.trainer_task.await??;
            self.coordinator_task.await??;
            Ok(())
        })
    }
}

/// A client of the coordinator at `address`, once it leads.
async fn connect_leader(address: SocketAddr) -> Result<JobServiceClient<Channel>> {
    let url = format!("http://{address}");
    for _ in 0..400 {
        if let Ok(c) = JobServiceClient::connect(url.clone()).await {
            let mut probe = c.clone();
            let ready = !matches!(
                probe.get_job(GetJobRequest { job_id: String::new() }).await,
                Err(s) if s.code() == tonic::Code::Unavailable
            );
            if ready {
                return Ok(c
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES));
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("the embedded coordinator did not start on {address}")
}

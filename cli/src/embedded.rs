//! The embedded cluster that `labelfleet run` grades through: the same coordinator and worker
//! code as a cluster, in this process, on an in-process metadata store and a local directory
//! (no etcd). Grading jobs go over real gRPC on loopback, as a client's would.

use crate::progress;
use anyhow::{bail, Context, Result};
use labelfleet_coordinator::meta::MetaStore;
use labelfleet_coordinator::server::{CoordinatorConfig, MAX_MESSAGE_BYTES};
use labelfleet_proto::v1::job_service_client::JobServiceClient;
use labelfleet_proto::v1::*;
use labelfleet_slm::grading::{Grading, Pair};
use labelfleet_slm::Placement;
use labelfleet_worker::WorkerConfig;
use std::path::Path;
use std::time::Duration;
use tokio::sync::broadcast;

/// Pairs per task of the embedded grading jobs.
const TASK_SIZE: u32 = 64;

pub struct Embedded {
    rt: tokio::runtime::Runtime,
    client: JobServiceClient<tonic::transport::Channel>,
    stop_workers: broadcast::Sender<()>,
    stop_coordinator: broadcast::Sender<()>,
    worker: tokio::task::JoinHandle<Result<()>>,
    coordinator: tokio::task::JoinHandle<Result<()>>,
}

fn stopped(tx: &broadcast::Sender<()>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = tx.subscribe();
    async move {
        let _ = rx.recv().await;
    }
}

impl Embedded {
    /// Starts a coordinator and one worker (which uses `threads` libtorch threads, 0: all).
    pub fn start(store: &Path, placement: Placement, threads: usize) -> Result<Embedded> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let meta = MetaStore::memory();
        let (stop_workers, _) = broadcast::channel(1);
        let (stop_coordinator, _) = broadcast::channel(1);
        let coordinator = rt.spawn({
            let config = CoordinatorConfig {
                listen,
                store: store.to_path_buf(),
                ..Default::default()
            };
            let (meta, stop) = (meta.clone(), stopped(&stop_coordinator));
            async move {
                labelfleet_coordinator::server::run_with_meta(config, meta, stop)
                    .await
                    .context("embedded coordinator")
            }
        });
        let worker = rt.spawn({
            let config = WorkerConfig {
                worker_id: "embedded-0".into(),
                listen: "127.0.0.1:0".parse()?,
                advertise: None,
                etcd: Vec::new(),
                etcd_prefix: "/labelfleet".into(),
                coordinator: Some(listen.to_string()),
                placement,
                threads,
                capacity: 2,
                checkpoints: store.join("worker-checkpoints"),
                metrics_listen: None,
                registration_ttl: Duration::from_secs(10),
            };
            let stop = stopped(&stop_workers);
            async move {
                labelfleet_worker::run_with_meta(config, meta, stop)
                    .await
                    .context("embedded worker")
            }
        });
        let client = rt.block_on(async {
            let url = format!("http://{listen}");
            for _ in 0..200 {
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
            bail!("the embedded coordinator did not start on {listen}")
        })?;
        Ok(Embedded {
            rt,
            client,
            stop_workers,
            stop_coordinator,
            worker,
            coordinator,
        })
    }

    /// Grades `pairs` with the model in `model_dir` as one labeling job, with a progress bar.
    /// Grades come back in input order; any failed task fails the call with its reason.
    pub fn grade(
        &mut self,
        model_dir: &Path,
        pairs: &[Pair],
        max_tokens: usize,
        what: &str,
    ) -> Result<Vec<Grading>> {
        let label_pairs: Vec<PairInput> = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| PairInput {
                pair_id: i.to_string(),
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
            })
            .collect();
        let spec = JobSpec {
            name: what.to_string(),
            student: Some(ModelRef {
                source: Some(model_ref::Source::LocalPath(
                    model_dir.display().to_string(),
                )),
            }),
            label_pairs,
            task_size: TASK_SIZE,
            max_tokens: max_tokens as u32,
            ..Default::default()
        };
        let client = &mut self.client;
        self.rt.block_on(async {
            let job = client
                .submit_job(SubmitJobRequest {
                    spec: Some(spec),
                    idempotency_key: String::new(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("embedded submit: {}", s.message()))?
                .into_inner();
            let pb = progress::bar(pairs.len() as u64, what);
            let job = loop {
                let job = client
                    .get_job(GetJobRequest {
                        job_id: job.job_id.clone(),
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("embedded job: {}", s.message()))?
                    .into_inner();
                let stage = job.stages.first().cloned().unwrap_or_default();
                pb.set_position(stage.done + stage.failed);
                if job.state >= JobState::Succeeded as i32 {
                    break job;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            pb.finish();
            let stage = job.stages.first().cloned().unwrap_or_default();
            if job.state != JobState::Succeeded as i32 || stage.failed > 0 {
                bail!("{what}: grading job {} failed: {}", job.job_id, job.error);
            }
            let mut out: Vec<Option<Grading>> = vec![None; pairs.len()];
            let mut stream = client
                .fetch_results(FetchResultsRequest {
                    job_id: job.job_id.clone(),
                    stage: "labels".into(),
                    offset: 0,
                })
                .await
                .map_err(|s| anyhow::anyhow!("embedded fetch: {}", s.message()))?
                .into_inner();
            while let Some(batch) = stream
                .message()
                .await
                .map_err(|s| anyhow::anyhow!("embedded fetch: {}", s.message()))?
            {
                for l in batch.labels {
                    let i: usize = l.pair_id.parse().context("label pair id")?;
                    if let Some(slot) = out.get_mut(i) {
                        *slot = Some(Grading::from_distribution(l.distribution));
                    }
                }
            }
            out.into_iter()
                .enumerate()
                .map(|(i, g)| g.with_context(|| format!("{what}: no label for pair #{i}")))
                .collect()
        })
    }

    /// Stops the worker (it finishes what it holds), then the coordinator.
    pub fn shutdown(self) -> Result<()> {
        let _ = self.stop_workers.send(());
        self.rt.block_on(async {
            self.worker.await??;
            let _ = self.stop_coordinator.send(());
            self.coordinator.await??;
            Ok(())
        })
    }
}

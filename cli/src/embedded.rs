//! The embedded cluster: the coordinator, in-process workers and the trainer of a real cluster,
//! in this process, on one in-process metadata store (no etcd) and a local object-store
//! directory. They talk real gRPC over loopback, as a cluster's nodes do.
//!
//! `labelfleet serve` runs it and waits for clients; `labelfleet run` starts it and runs the
//! pipeline (`labelfleet-pipeline`) against it through the cluster client, exactly as against a
//! real cluster: query synthesis and grading are jobs the coordinator splits into tasks for the
//! workers, and distillation is a run of the trainer, which pushes the checkpoint to the
//! workers.

use anyhow::{bail, Context, Result};
use labelfleet_cluster::limits::Limits;
use labelfleet_cluster::meta::EtcdSecurity;
use labelfleet_cluster::meta::MetaStore;
use labelfleet_cluster::security::Transport;
use labelfleet_coordinator::server::CoordinatorConfig;
use labelfleet_proto::v1::job_service_client::JobServiceClient;
use labelfleet_proto::v1::trainer_service_client::TrainerServiceClient;
use labelfleet_proto::v1::*;
use labelfleet_slm::Placement;
use labelfleet_worker::WorkerConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

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
    /// Folders the workers load tasks' local models from (see `--model-root`).
    pub model_roots: Vec<std::path::PathBuf>,
}

pub struct EmbeddedCluster {
    rt: tokio::runtime::Runtime,
    pub address: SocketAddr,
    pub trainer_address: SocketAddr,
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
                trainer: Some(trainer_address.to_string()),
                scratch: local.join("coordinator-scratch"),
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
                // and the coordinator's cached student checkpoints (a corpus job that
                // reuses one labels with its local copy)
                model_roots: o
                    .model_roots
                    .iter()
                    .cloned()
                    .chain([local.join("coordinator-scratch/cache/students")])
                    .collect(),
                metrics_listen: None,
                registration_ttl: Duration::from_secs(10),
                store: Some(o.store.clone()),
                // one process on loopback: plaintext, as the coordinator and trainer
                transport: Transport::Plaintext,
                limits: Limits::default(),
                etcd_security: EtcdSecurity::default(),
                health_listen: None,
                // models load on their first task: the embedded cluster serves one user
                warm_models: Vec::new(),
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
                transport: Transport::Plaintext,
                limits: Limits::default(),
                etcd_security: EtcdSecurity::default(),
                health_listen: None,
            };
            let (meta, stop) = (meta.clone(), stopped(&stop_rest));
            async move {
                labelfleet_trainer::run_with_meta(config, meta, stop)
                    .await
                    .context("embedded trainer")
            }
        });
        // ready when the coordinator leads and the trainer listens
        rt.block_on(async {
            connect_leader(address).await?;
            let url = format!("http://{trainer_address}");
            for _ in 0..400 {
                if TrainerServiceClient::connect(url.clone()).await.is_ok() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            bail!("the embedded trainer did not start on {trainer_address}")
        })?;
        Ok(EmbeddedCluster {
            rt,
            address,
            trainer_address,
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

/// Waits until the coordinator at `address` leads.
async fn connect_leader(address: SocketAddr) -> Result<()> {
    let url = format!("http://{address}");
    for _ in 0..400 {
        if let Ok(c) = JobServiceClient::connect(url.clone()).await {
            let mut probe = c.clone();
            let ready = !matches!(
                probe.get_job(GetJobRequest { job_id: String::new() }).await,
                Err(s) if s.code() == tonic::Code::Unavailable
            );
            if ready {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("the embedded coordinator did not start on {address}")
}

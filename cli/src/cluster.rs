//! The cluster roles (`coordinator`, `worker`, `trainer`) and embedded mode (`serve`). The
//! client commands a user drives are in `jobs_cmd`.

use crate::security_cmd::{LimitArgs, RoleSecurityArgs};
use anyhow::{Context, Result};
use clap::Args;
use labelfleet_cluster::security::Role;
use labelfleet_coordinator::server::CoordinatorConfig;
use labelfleet_worker::WorkerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// The trainer (`host:port`): with it, this replica runs corpus jobs (the whole method as
    /// one job); without it, it refuses them.
    #[arg(long, env = "LABELFLEET_TRAINER")]
    trainer: Option<String>,
    /// Local folder for corpus jobs' working files and content-keyed caches.
    #[arg(long, env = "LABELFLEET_SCRATCH")]
    scratch: Option<PathBuf>,
    /// Clients' bearer tokens (`labelfleet tokens add`); only their hashes are in the file.
    #[arg(long, env = "LABELFLEET_TOKENS")]
    tokens: Option<PathBuf>,
    #[command(flatten)]
    security: RoleSecurityArgs,
    #[command(flatten)]
    limits: LimitArgs,
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
        trainer: a.trainer,
        scratch: a
            .scratch
            .unwrap_or_else(|| labelfleet_slm::home_dir().join("coordinator-scratch")),
        transport: a.security.transport(Role::Coordinator)?,
        tokens: a.tokens,
        limits: a.limits.limits(),
        etcd_security: a.security.etcd()?,
        health_listen: a.security.health_listen,
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
    /// libtorch intra-op threads (0: the CPUs this process may use, its container's CPU quota
    /// included).
    #[arg(long, env = "LABELFLEET_THREADS", default_value_t = 0)]
    threads: usize,
    /// Tasks held at once.
    #[arg(long, env = "LABELFLEET_CAPACITY", default_value_t = 2)]
    capacity: u32,
    /// Models to load and warm with one batch before the worker reports SERVING (repeatable;
    /// in the environment a comma-separated list): a bundled name (`minilm`, `smollm2`) or a
    /// folder inside the model roots.
    #[arg(
        long = "warm-model",
        env = "LABELFLEET_WARM_MODELS",
        value_delimiter = ','
    )]
    warm_models: Vec<String>,
    /// Folder for pushed checkpoints (default: $LABELFLEET_HOME/checkpoints).
    #[arg(long, env = "LABELFLEET_CHECKPOINTS")]
    checkpoints: Option<PathBuf>,
    /// A folder tasks' local models must be inside (repeatable; in the environment a
    /// ':'-separated list). Default: $LABELFLEET_HOME/models, where scripts/setup.sh installs
    /// them. Pushed checkpoints are always allowed.
    #[arg(
        long = "model-root",
        env = "LABELFLEET_MODEL_ROOT",
        value_delimiter = ':'
    )]
    model_roots: Vec<PathBuf>,
    #[arg(long, env = "LABELFLEET_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// TTL of the etcd registration: how soon the cluster notices this worker died.
    #[arg(long, default_value_t = 10)]
    registration_ttl_s: u64,
    /// The cluster's object store (the coordinator's `--store`): a directory, s3://, gs:// or
    /// az://. BM25 search tasks read corpus shards and their indexes there; a worker without
    /// one takes no search tasks.
    #[arg(long, env = "LABELFLEET_STORE")]
    store: Option<String>,
    #[command(flatten)]
    security: RoleSecurityArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// The `--model-root` folders, or the default ones.
fn model_roots(given: Vec<PathBuf>) -> Vec<PathBuf> {
    let given: Vec<PathBuf> = given
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    match given.is_empty() {
        true => labelfleet_worker::engine::default_model_roots(),
        false => given,
    }
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
        threads: engine_threads(a.threads),
        capacity: a.capacity.max(1),
        warm_models: a.warm_models,
        checkpoints: a
            .checkpoints
            .unwrap_or_else(|| labelfleet_slm::home_dir().join("checkpoints")),
        model_roots: model_roots(a.model_roots),
        metrics_listen: a.metrics_listen,
        registration_ttl: Duration::from_secs(a.registration_ttl_s),
        store: a.store,
        transport: a.security.transport(Role::Worker)?,
        limits: a.limits.limits(),
        etcd_security: a.security.etcd()?,
        health_listen: a.security.health_listen,
    };
    runtime()?
        .block_on(labelfleet_worker::run(config, shutdown_signal()))
        .context("worker")
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
    /// libtorch intra-op threads (0: the CPUs this process may use, its container's CPU quota
    /// included).
    #[arg(long, env = "LABELFLEET_THREADS", default_value_t = 0)]
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
    #[command(flatten)]
    security: RoleSecurityArgs,
    #[command(flatten)]
    limits: LimitArgs,
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
        threads: engine_threads(a.threads),
        max_tokens: a.max_tokens,
        push_rate_mib_s: a.push_rate_mib_s,
        reconcile_interval: Duration::from_secs(a.reconcile_interval_s.max(1)),
        metrics_listen: a.metrics_listen,
        transport: a.security.transport(Role::Trainer)?,
        limits: a.limits.limits(),
        etcd_security: a.security.etcd()?,
        health_listen: a.security.health_listen,
    };
    runtime()?
        .block_on(labelfleet_trainer::run(config, shutdown_signal()))
        .context("trainer")
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
    /// libtorch intra-op threads per worker (0: the CPUs this process may use, its container's
    /// CPU quota included).
    #[arg(long, env = "LABELFLEET_THREADS", default_value_t = 0)]
    threads: usize,
    #[arg(long, env = "LABELFLEET_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// A folder tasks' local models must be inside (repeatable; in the environment a
    /// ':'-separated list). Default: $LABELFLEET_HOME/models.
    #[arg(
        long = "model-root",
        env = "LABELFLEET_MODEL_ROOT",
        value_delimiter = ':'
    )]
    model_roots: Vec<PathBuf>,
}

/// libtorch's intra-op threads: `n`, or when 0 the CPUs this process may use. Rust reads the
/// cgroup CPU quota (a container's CPU limit) and the affinity mask; libtorch alone would take
/// every core of the node, whatever the pod's limit.
pub fn engine_threads(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |p| p.get()),
        n => n,
    }
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
        threads: engine_threads(a.threads),
        trainer_max_tokens: 256,
        metrics_listen: a.metrics_listen,
        model_roots: model_roots(a.model_roots),
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

//! The labelfleet worker.
//!
//! It registers under an etcd lease (so the cluster sees it leave when it dies), finds the
//! leader through the election key, leases tasks up to its capacity, grades them on the
//! engine thread, heartbeats its leases, and commits results, retrying through leader changes
//! and etcd restarts. SIGTERM (or `Drain`) stops leasing; it finishes what it holds, then exits.

pub mod api_teacher;
mod committee;
pub mod control;
pub mod engine;
pub mod metrics;
pub mod search;

use api_teacher::ApiTeacher;
use control::{ControlApi, ControlState};
use engine::{Engine, ModelSources, Outcome};
use labelfleet_cluster::blobs::Blobs;
use labelfleet_cluster::limits::Limits;
use labelfleet_cluster::meta::{keys, spawn_lease_keeper, EtcdSecurity, MetaStore};
use labelfleet_cluster::security::{self, Access, ClientCerts, Role, Transport};
use labelfleet_cluster::{open_meta, MAX_MESSAGE_BYTES};
use labelfleet_proto::v1::task_service_client::TaskServiceClient;
use labelfleet_proto::v1::worker_control_server::WorkerControlServer;
use labelfleet_proto::v1::*;
use labelfleet_slm::Placement;
use search::Searcher;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tonic::transport::Channel;
use tonic_health::ServingStatus;

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error(transparent)]
    Cluster(#[from] labelfleet_cluster::ClusterError),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
    /// A `--warm-model` could not be loaded or run: the worker never reports ready.
    #[error("{0}")]
    WarmUp(String),
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker_id: String,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub etcd: Vec<String>,
    pub etcd_prefix: String,
    /// Coordinator address, when there is no etcd to find the leader in.
    pub coordinator: Option<String>,
    pub placement: Placement,
    pub threads: usize,
    /// Tasks held at once (one running, the rest queued on the engine).
    pub capacity: u32,
    /// Folder for pushed checkpoints.
    pub checkpoints: PathBuf,
    /// Folders a task's local model must be inside (`engine::default_model_roots()` for the
    /// models `scripts/setup.sh` installs); pushed checkpoints are always allowed.
    pub model_roots: Vec<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    /// TTL of the etcd registration lease.
    pub registration_ttl: Duration,
    /// The cluster's object store (a `--store` value), where BM25 search tasks read corpus
    /// shards and their indexes. Without one the worker leases no search tasks.
    pub store: Option<String>,
    /// TLS with the worker's certificate (the control port then takes checkpoint pushes only
    /// from the trainer and drains only from an operator), or plaintext.
    pub transport: Transport,
    pub limits: Limits,
    pub etcd_security: EtcdSecurity,
    /// A plaintext port serving only `grpc.health.v1` (for kubelet's probes, which cannot
    /// speak TLS).
    pub health_listen: Option<SocketAddr>,
    /// Models loaded and warmed with one batch before the worker reports SERVING and leases.
    pub warm_models: Vec<String>,
}

/// Runs a worker until it has drained (after `shutdown` or a Drain call).
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let meta = open_meta(&config.etcd, &config.etcd_prefix, &config.etcd_security).await?;
    run_with_meta(config, meta, shutdown).await
}

/// Runs a worker on a given metadata store (embedded mode shares one among its roles).
pub async fn run_with_meta(
    config: WorkerConfig,
    meta: MetaStore,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    std::fs::create_dir_all(&config.checkpoints)?;
    let blobs = config.store.as_deref().map(Blobs::open).transpose()?;
    let searcher = blobs.clone().map(|b| Arc::new(Searcher::new(b)));
    let mut kinds = vec![TaskKind::Grade as i32, TaskKind::SynthesizeQueries as i32];
    if searcher.is_some() {
        kinds.push(TaskKind::Search as i32);
    }
    let state = Arc::new(ControlState::default());
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let bound = listener.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    if let Some(addr) = config.health_listen {
        let bound = security::serve_health(addr, health_service.clone()).await?;
        tracing::info!(%bound, "health (plaintext) at grpc.health.v1");
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(labelfleet_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| WorkerError::Config(format!("reflection: {e}")))?;
    let control = ControlApi {
        state: state.clone(),
        checkpoints: config.checkpoints.clone(),
        access: Access::from(&config.transport),
        meta: meta.clone(),
    };
    let engine = Engine::start(
        config.placement,
        config.threads,
        ModelSources {
            checkpoints: config.checkpoints.clone(),
            model_roots: config.model_roots.clone(),
        },
        blobs,
    )?;
    let rate = Arc::new(Mutex::new(RateMeter::default()));
    let (worker_metrics, grpc_metrics) =
        metrics::WorkerMetrics::new(state.clone(), engine.pairs.clone(), rate.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = security::server_builder(
        &config.transport,
        ClientCerts::Required,
        &config.limits,
        &grpc_metrics,
    )
    .map_err(|e| WorkerError::Config(e.to_string()))?;
    let server = tokio::spawn(
        builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                WorkerControlServer::new(control)
                    .max_decoding_message_size(config.limits.max_message_bytes),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );

    let api = Arc::new(ApiTeacher::new(engine.pairs.clone()));
    if let Some(addr) = config.metrics_listen {
        let bound =
            labelfleet_cluster::metrics::serve(addr, Arc::new(move || worker_metrics.render()))
                .await?;
        tracing::info!(%bound, "metrics at /metrics");
    }

    // Registration: a key under a lease, so the leader re-queues our tasks soon after we die.
    let info = serde_json::json!({
        "control_address": advertise,
        "device": config.placement.describe(),
        "capacity": config.capacity,
    });
    if let MetaStore::Memory(_) = &meta {
        // Embedded: the process is the cluster; the key only tells the trainer where we are.
        meta.put(
            &keys::worker(meta.prefix(), &config.worker_id),
            info.to_string().into_bytes(),
        )
        .await?;
    }
    if let MetaStore::Etcd { client, .. } = &meta {
        let ttl = config.registration_ttl.as_secs().max(1) as i64;
        let lease = client.clone().lease_grant(ttl, None).await?;
        meta.put_with_lease(
            &keys::worker(meta.prefix(), &config.worker_id),
            info.to_string().into_bytes(),
            lease.id(),
        )
        .await?;
        let lost = spawn_lease_keeper(client.clone(), lease.id(), config.registration_ttl);
        let (c, m, id, info) = (
            client.clone(),
            meta.clone(),
            config.worker_id.clone(),
            info.to_string(),
        );
        // If the lease is lost (etcd was down longer than the TTL), register again.
        tokio::spawn(reregister(c, m, id, info, config.registration_ttl, lost));
    }
    for model in &config.warm_models {
        let start = std::time::Instant::now();
        let pairs = engine.warm_up(model).await.map_err(WorkerError::WarmUp)?;
        tracing::info!(%model, pairs, seconds = start.elapsed().as_secs_f64(), "model warm");
    }
    health.set_service_status("", ServingStatus::Serving).await;
    tracing::info!(worker = %config.worker_id, %bound, device = %config.placement.describe(), "worker ready");

    let draining = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown signal: draining");
        draining.draining.store(true, Ordering::SeqCst);
    });

    let link = Arc::new(LeaderLink::new(
        meta,
        config.coordinator.clone(),
        config.transport.clone(),
    ));
    let held: Arc<Mutex<HashMap<(String, u32), String>>> = Arc::default();
    let revoked: Arc<Mutex<HashSet<(String, u32)>>> = Arc::default();
    // The leader says how often to heartbeat (a third of its task lease).
    let heartbeat_ms = Arc::new(std::sync::atomic::AtomicU64::new(1000));
    let hb = tokio::spawn(heartbeat_loop(
        heartbeat_ms.clone(),
        link.clone(),
        config.worker_id.clone(),
        held.clone(),
        revoked.clone(),
        rate.clone(),
        engine.clone(),
    ));

    let mut registered_with: Option<String> = None;
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        let in_flight = state.in_flight.load(Ordering::SeqCst);
        if state.draining.load(Ordering::SeqCst) {
            if in_flight == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let room = (config.capacity as u64).saturating_sub(in_flight);
        if room == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Some((address, mut client)) = link.client().await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        if registered_with.as_deref() != Some(address.as_str()) {
            let req = RegisterWorkerRequest {
                worker_id: config.worker_id.clone(),
                control_address: advertise.clone(),
                device: config.placement.describe(),
                capacity: config.capacity,
                checkpoints: Vec::new(),
            };
            match client.register_worker(req).await {
                Ok(r) => {
                    let ms = r.into_inner().heartbeat_interval_ms.clamp(100, 10_000);
                    heartbeat_ms.store(ms as u64, Ordering::Relaxed);
                    registered_with = Some(address.clone());
                }
                Err(e) => {
                    link.forget(&address);
                    tracing::debug!(error = %e.message(), "register failed; finding the leader again");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            }
        }
        let req = LeaseTasksRequest {
            worker_id: config.worker_id.clone(),
            max_tasks: room as u32,
            kinds: kinds.clone(),
        };
        let tasks = match client.lease_tasks(req).await {
            Ok(r) => r.into_inner().tasks,
            Err(e) => {
                link.forget(&address);
                registered_with = None;
                tracing::debug!(error = %e.message(), "lease failed; finding the leader again");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        if tasks.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for task in tasks {
            state.in_flight.fetch_add(1, Ordering::SeqCst);
            let key = (task.task_id.clone(), task.attempt);
            held.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), task.lease_token.clone());
            let (engine, searcher, api, link, state, held, revoked, worker) = (
                engine.clone(),
                searcher.clone(),
                api.clone(),
                link.clone(),
                state.clone(),
                held.clone(),
                revoked.clone(),
                config.worker_id.clone(),
            );
            running.spawn(async move {
                let skip = revoked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                if !skip {
                    let started = Instant::now();
                    let outcome = match runner_of(&task, searcher.as_deref()) {
                        Runner::Engine => engine.run(task.clone()).await,
                        Runner::Api => api.run(&task).await,
                        Runner::Search(searcher) => searcher.run(&task).await,
                        Runner::Unable(reason) => Outcome::Failed {
                            reason,
                            retryable: true,
                        },
                    };
                    let done = matches!(outcome, Outcome::Done { .. });
                    let seconds = started.elapsed().as_secs_f64();
                    state.tasks.observe(task.kind, done, seconds);
                    report(&link, &worker, &task, outcome).await;
                }
                held.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                // a revocation that came while it ran is of no use any more
                revoked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
    tracing::info!("drained; stopping");
    hb.abort();
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}

/// What runs a task on this worker.
enum Runner<'a> {
    /// The engine thread: local models and pushed checkpoints.
    Engine,
    /// The API teacher, on tokio: an OpenAI-compatible endpoint.
    Api,
    /// BM25 search of a corpus shard, on the blocking pool.
    Search(&'a Searcher),
    /// Nothing here can run it (why).
    Unable(String),
}

/// The task's kind first (a search has no model), then its model.
fn runner_of<'a>(task: &Task, searcher: Option<&'a Searcher>) -> Runner<'a> {
    if task.kind == TaskKind::Search as i32 {
        return match searcher {
            Some(s) => Runner::Search(s),
            None => Runner::Unable("this worker has no --store to read corpus shards from".into()),
        };
    }
    match task.model.as_ref().and_then(|m| m.source.as_ref()) {
        Some(model_ref::Source::Openai(_)) => Runner::Api,
        _ => Runner::Engine,
    }
}

async fn reregister(
    client: etcd_client::Client,
    meta: MetaStore,
    worker_id: String,
    info: String,
    ttl: Duration,
    mut lost: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if lost.changed().await.is_err() || !*lost.borrow() {
            return;
        }
        loop {
            let attempt = async {
                let lease = client
                    .clone()
                    .lease_grant(ttl.as_secs().max(1) as i64, None)
                    .await?;
                meta.put_with_lease(
                    &keys::worker(meta.prefix(), &worker_id),
                    info.clone().into_bytes(),
                    lease.id(),
                )
                .await
                .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?;
                Ok::<_, etcd_client::Error>(lease.id())
            }
            .await;
            match attempt {
                Ok(id) => {
                    tracing::info!("registered again in etcd");
                    lost = spawn_lease_keeper(client.clone(), id, ttl);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "re-registration failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Sends the outcome of a task to the leader, retrying through leader changes and etcd
/// outages until the leader answers. Results are only dropped when the leader says they are
/// not wanted (duplicate, cancelled, unknown task).
async fn report(link: &LeaderLink, worker: &str, task: &Task, outcome: Outcome) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let Some((address, mut client)) = link.client().await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let result = match &outcome {
            Outcome::Done {
                labels,
                queries,
                hits,
                seconds,
                api_usage,
            } => client
                .complete_task(CompleteTaskRequest {
                    worker_id: worker.to_string(),
                    task_id: task.task_id.clone(),
                    attempt: task.attempt,
                    fencing_token: task.fencing_token,
                    lease_token: task.lease_token.clone(),
                    labels: labels.clone(),
                    queries: queries.clone(),
                    hits: hits.clone(),
                    seconds: *seconds,
                    api_usage: *api_usage,
                })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    tracing::debug!(task = %task.task_id, committed = r.committed, duplicate = r.duplicate, "completed");
                }),
            Outcome::Failed { reason, retryable } => client
                .fail_task(FailTaskRequest {
                    worker_id: worker.to_string(),
                    task_id: task.task_id.clone(),
                    attempt: task.attempt,
                    reason: reason.clone(),
                    retryable: *retryable,
                    lease_token: task.lease_token.clone(),
                })
                .await
                .map(|_| tracing::warn!(task = %task.task_id, %reason, "task failed")),
        };
        match result {
            Ok(()) => return,
            // Refused for good: bad results, an unknown task, a lease this worker does not
            // hold (any more), or credentials the leader does not accept.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::NotFound
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::PermissionDenied
                ) =>
            {
                tracing::error!(task = %task.task_id, error = %s.message(), "leader refused the results");
                return;
            }
            Err(s) => {
                if Instant::now() > deadline {
                    tracing::error!(task = %task.task_id, error = %s.message(), "giving up on reporting");
                    return;
                }
                link.forget(&address);
                tracing::debug!(task = %task.task_id, error = %s.message(), "report failed; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

async fn heartbeat_loop(
    interval_ms: Arc<std::sync::atomic::AtomicU64>,
    link: Arc<LeaderLink>,
    worker: String,
    held: Arc<Mutex<HashMap<(String, u32), String>>>,
    revoked: Arc<Mutex<HashSet<(String, u32)>>>,
    rate: Arc<Mutex<RateMeter>>,
    engine: Engine,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(interval_ms.load(Ordering::Relaxed))).await;
        let leases: Vec<TaskLease> = held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((t, a), token)| TaskLease {
                task_id: t.clone(),
                attempt: *a,
                lease_token: token.clone(),
            })
            .collect();
        let Some((address, mut client)) = link.client().await else {
            continue;
        };
        let pps = rate
            .lock()
            .map(|mut r| r.rate(engine.pairs.load(Ordering::Relaxed)))
            .unwrap_or(0.0);
        match client
            .heartbeat(HeartbeatRequest {
                worker_id: worker.clone(),
                leases,
                pairs_per_second: pps,
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                let live = held.lock().unwrap_or_else(|p| p.into_inner());
                let mut rv = revoked.lock().unwrap_or_else(|p| p.into_inner());
                for l in r.revoked {
                    rv.insert((l.task_id, l.attempt));
                }
                prune_revoked(&mut rv, &live);
            }
            Err(_) => link.forget(&address),
        }
    }
}

/// Drops the revocations of leases this worker no longer holds (their tasks ended, or were
/// never started here), so the set stays as small as the tasks in flight.
fn prune_revoked(revoked: &mut HashSet<(String, u32)>, held: &HashMap<(String, u32), String>) {
    revoked.retain(|lease| held.contains_key(lease));
}

/// The current leader's address and a client for it, found through etcd (or fixed).
pub struct LeaderLink {
    meta: MetaStore,
    fixed: Option<String>,
    transport: Transport,
    cached: Mutex<Option<(String, TaskServiceClient<Channel>)>>,
}

impl LeaderLink {
    pub fn new(meta: MetaStore, fixed: Option<String>, transport: Transport) -> Self {
        LeaderLink {
            meta,
            fixed,
            transport,
            cached: Mutex::new(None),
        }
    }

    pub async fn client(&self) -> Option<(String, TaskServiceClient<Channel>)> {
        if let Some(c) = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(c);
        }
        let address = match &self.fixed {
            Some(a) => a.clone(),
            None => self.meta.leader_address().await.ok().flatten()?,
        };
        let endpoint = match self.transport.endpoint(&address, Role::Coordinator) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(%address, error = %e, "leader address unusable");
                return None;
            }
        };
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        let client = TaskServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((address.clone(), client.clone()));
        Some((address, client))
    }

    /// Drops the cached leader after an error, so the next call looks it up again.
    pub fn forget(&self, address: &str) {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.as_ref().is_some_and(|(a, _)| a == address) {
            *c = None;
        }
    }
}

/// Pairs per second over roughly the last minute.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub fn rate(&mut self, total: u64) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, total));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(60))
        {
            self.samples.pop_front();
        }
        let (t0, n0) = self.samples.front().copied().unwrap_or((now, total));
        let dt = now.duration_since(t0).as_secs_f64();
        if dt > 0.0 {
            (total - n0) as f64 / dt
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(task: &str, attempt: u32) -> (String, u32) {
        (task.to_string(), attempt)
    }

    /// Revocations are kept for leases in flight only: over many heartbeats of tasks that
    /// come and go, the set never outgrows what is held.
    #[test]
    fn revocations_of_leases_no_longer_held_are_pruned() {
        let mut revoked = HashSet::new();
        let mut held = HashMap::new();
        for round in 0..1000u32 {
            let task = format!("job-t{round}");
            held.insert(lease(&task, 1), String::new());
            // the leader revokes this lease, and (late) ones of tasks already ended
            revoked.insert(lease(&task, 1));
            revoked.insert(lease(&format!("job-t{}", round.saturating_sub(3)), 1));
            if round >= 2 {
                held.remove(&lease(&format!("job-t{}", round - 2), 1));
            }
            prune_revoked(&mut revoked, &held);
            assert!(
                revoked.iter().all(|l| held.contains_key(l)),
                "round {round}"
            );
            assert!(revoked.len() <= 2, "round {round}: {}", revoked.len());
            assert!(
                revoked.contains(&lease(&task, 1)),
                "a held revocation is kept"
            );
        }
        // an older attempt of a held task is not the held lease
        held.insert(lease("job-tx", 2), String::new());
        revoked.insert(lease("job-tx", 1));
        prune_revoked(&mut revoked, &held);
        assert!(!revoked.contains(&lease("job-tx", 1)));
    }
}

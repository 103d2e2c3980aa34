//! One coordinator replica: serves gRPC from the start (as a standby: UNAVAILABLE and
//! NOT_SERVING), campaigns in the etcd election, and on winning reloads state and leads until
//! its lease is lost, when it exits (fail-stop) so a fresh process campaigns again.

use crate::corpus_job::{self, DriverEnv};
use crate::error::{CoordinatorError, Result};
use crate::forward::Forwarder;
use crate::scheduler::SchedulerConfig;
use crate::service::{Coordinator, JobApi, TaskApi};
use labelfleet_cluster::blobs::Blobs;
use labelfleet_cluster::limits::Limits;
use labelfleet_cluster::meta::{EtcdSecurity, Leadership, MetaStore};
use labelfleet_cluster::metrics::{self, Exposition, GaugeF64, GrpcMetrics};
use labelfleet_cluster::security::{self, Access, ClientCerts, Transport};
use labelfleet_cluster::tokens::{ClientAuth, Tokens};
use labelfleet_proto::v1::job_service_server::JobServiceServer;
use labelfleet_proto::v1::task_service_server::TaskServiceServer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic_health::ServingStatus;

use labelfleet_cluster::open_meta;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    /// Address peers use to reach this replica (default: the bound address).
    pub advertise: Option<String>,
    /// etcd endpoints; empty means the embedded in-process metadata store (one replica).
    pub etcd: Vec<String>,
    pub etcd_prefix: String,
    /// Object store: a directory, or a bucket URL (`s3://`, `gs://`, `az://`; see `Blobs::open`).
    pub store: String,
    pub metrics_listen: Option<SocketAddr>,
    pub task_lease: Duration,
    pub max_attempts: u32,
    pub election_ttl: Duration,
    /// How long a finished job's data (results, tasks, record) is kept; zero keeps it forever.
    pub job_retention: Duration,
    /// How often the leader looks for finished jobs past their retention.
    pub gc_interval: Duration,
    /// The trainer (`host:port`): with it, the replica runs corpus jobs.
    pub trainer: Option<String>,
    /// Local folder of corpus jobs' working files and caches.
    pub scratch: PathBuf,
    /// TLS (and with it, role checks on every call) or plaintext.
    pub transport: Transport,
    /// The clients' bearer tokens (hashed); without a file, over TLS only operator and
    /// coordinator certificates may use `JobService`.
    pub tokens: Option<PathBuf>,
    pub limits: Limits,
    pub etcd_security: EtcdSecurity,
    /// A plaintext port serving only `grpc.health.v1` (for kubelet's probes, which cannot
    /// speak TLS).
    pub health_listen: Option<SocketAddr>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: "127.0.0.1:7070".parse().expect("static address"),
            advertise: None,
            etcd: Vec::new(),
            etcd_prefix: "/labelfleet".into(),
            store: "labelfleet-data".into(),
            metrics_listen: None,
            task_lease: Duration::from_secs(30),
            max_attempts: 4,
            election_ttl: Duration::from_secs(10),
            job_retention: Duration::from_secs(7 * 24 * 3600),
            gc_interval: Duration::from_secs(60),
            trainer: None,
            scratch: std::env::temp_dir().join("labelfleet-coordinator"),
            transport: Transport::Plaintext,
            tokens: None,
            limits: Limits::default(),
            etcd_security: EtcdSecurity::default(),
            health_listen: None,
        }
    }
}

/// Runs a replica until `shutdown` resolves (Ok) or leadership is lost (Err).
pub async fn run(
    config: CoordinatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let meta = open_meta(&config.etcd, &config.etcd_prefix, &config.etcd_security).await?;
    run_with_meta(config, meta, shutdown).await
}

/// Runs a replica on a given metadata store (embedded mode shares one among its roles).
pub async fn run_with_meta(
    config: CoordinatorConfig,
    meta: MetaStore,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let blobs = Blobs::open(&config.store)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let bound = listener.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let tokens = match &config.tokens {
        Some(path) => {
            Some(Tokens::load(path).map_err(|e| CoordinatorError::Invalid(e.to_string()))?)
        }
        None => None,
    };
    let access = Access::from(&config.transport);
    if access == Access::Verified && tokens.is_none() {
        tracing::warn!(
            "no --tokens file: only operator and coordinator certificates may use JobService"
        );
    }
    let coord = Arc::new(
        Coordinator::new(
            meta.clone(),
            blobs,
            (config.task_lease / 3).max(Duration::from_millis(100)),
        )
        .secured(access, ClientAuth::new(access, tokens), config.limits),
    );
    if let Some(trainer) = &config.trainer {
        // the driver of a corpus job is a client of this replica, over loopback when it
        // listens on every interface
        let own = match bound.ip().is_unspecified() {
            true => format!("127.0.0.1:{}", bound.port()),
            false => bound.to_string(),
        };
        coord.set_driver_env(DriverEnv {
            trainer: trainer.clone(),
            own_address: own,
            store: config.store.clone(),
            scratch: config.scratch.clone(),
            transport: config.transport.clone(),
        });
    }

    coord.set_forwarder(Forwarder::new(
        meta.clone(),
        config.transport.clone(),
        advertise.clone(),
        config.limits.max_message_bytes,
    ));
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in CLIENT_SERVICES.iter().chain(LEADER_SERVICES) {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    let readiness = tokio::spawn(report_readiness(
        coord.clone(),
        meta.clone(),
        advertise.clone(),
        health.clone(),
    ));
    if let Some(addr) = config.health_listen {
        let bound = security::serve_health(addr, health_service.clone()).await?;
        tracing::info!(%bound, "health (plaintext) at grpc.health.v1");
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(labelfleet_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| CoordinatorError::Invalid(format!("reflection: {e}")))?;
    let max = config.limits.max_message_bytes;
    let (metrics_export, grpc_metrics) = CoordinatorMetricsExport::new(&coord);
    let router = security::server_builder(
        &config.transport,
        ClientCerts::Optional,
        &config.limits,
        &grpc_metrics,
    )
    .map_err(|e| CoordinatorError::Invalid(e.to_string()))?
    .add_service(health_service)
    .add_service(reflection)
    .add_service(
        JobServiceServer::new(JobApi(coord.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
    .add_service(
        TaskServiceServer::new(TaskApi(coord.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
    });
    tracing::info!(%bound, %advertise, tls = config.transport.is_tls(), "coordinator serving (standby until elected)");

    if let Some(addr) = config.metrics_listen {
        let c = coord.clone();
        let bound = metrics::serve(addr, Arc::new(move || metrics_export.render(&c))).await?;
        tracing::info!(%bound, "metrics at /metrics");
    }

    let sched_config = SchedulerConfig {
        lease: config.task_lease,
        max_attempts: config.max_attempts,
    };
    // The won election, kept to resign it on a clean shutdown.
    let elected: Arc<std::sync::OnceLock<Leadership>> = Arc::default();
    let lead = {
        let coord = coord.clone();
        let health = health.clone();
        let (meta, elected) = (meta.clone(), elected.clone());
        async move {
            let leadership = meta.campaign(&advertise, config.election_ttl).await?;
            let _ = elected.set(leadership.clone());
            let mut lost = leadership.lost.clone();
            tracing::info!(
                token = leadership.fence.token,
                "elected leader; loading state"
            );
            let leader = Arc::new(
                coord
                    .load(leadership.fence, leadership.clock, sched_config)
                    .await?,
            );
            *coord.leader.write().unwrap_or_else(|p| p.into_inner()) = Some(leader.clone());
            corpus_job::resume_all(&coord, &leader)?;
            for name in CLIENT_SERVICES.iter().chain(LEADER_SERVICES) {
                health
                    .set_service_status(*name, ServingStatus::Serving)
                    .await;
            }
            tracing::info!("leading");
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut ticks = 0u64;
            let mut last_gc = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = lost.changed() => {}
                }
                if *lost.borrow() {
                    return Err(CoordinatorError::NotLeader("election lease lost".into()));
                }
                // Frozen (SIGSTOP) or cut off past the lease's sure life: a successor may be
                // elected any moment, so stop now rather than serve beside it.
                if !leader.clock.held() {
                    return Err(CoordinatorError::NotLeader(
                        "the election lease was not renewed in time".into(),
                    ));
                }
                ticks += 1;
                let reaped = coord.reap(&leader).await;
                let released = if ticks.is_multiple_of(4) {
                    coord.release_departed(&leader).await
                } else {
                    Ok(())
                };
                // Now and then, delete what finished jobs left past their retention.
                let gc_due = last_gc.elapsed() >= config.gc_interval;
                let collected = if gc_due && !config.job_retention.is_zero() {
                    last_gc = std::time::Instant::now();
                    coord
                        .collect_garbage(&leader, config.job_retention)
                        .await
                        .map(|_| ())
                } else {
                    Ok(())
                };
                for r in [reaped, released, collected] {
                    match r {
                        Err(e) if e.is_not_leader() => return Err(e),
                        // etcd briefly unreachable (a restart): keep leading, retry next tick.
                        Err(e) => tracing::warn!(error = %e, "housekeeping failed; retrying"),
                        Ok(()) => {}
                    }
                }
            }
        }
    };
    let result = tokio::select! {
        r = lead => r,
        _ = shutdown => Ok(()),
    };
    readiness.abort();
    let _ = stop_tx.send(());
    let _ = server.await;
    // A clean stop resigns, so a standby leads at once instead of after the TTL.
    if let (Ok(()), Some(leadership)) = (&result, elected.get()) {
        match meta.resign(leadership).await {
            Ok(()) => tracing::info!("resigned the leadership"),
            Err(e) => tracing::warn!(error = %e, "could not resign; a standby leads after the TTL"),
        }
    }
    result
}

/// Health names every replica serves while it can answer clients: itself as leader, or a
/// standby that forwards to an elected leader. Kubernetes' readiness probe checks "".
pub const CLIENT_SERVICES: &[&str] = &["", "labelfleet.v1.JobService"];
/// Health names only the leader serves: `TaskService` (workers lease from the leader) and
/// `labelfleet.v1.Leader`, the signal for whoever must reach the leader itself.
pub const LEADER_SERVICES: &[&str] = &["labelfleet.v1.TaskService", "labelfleet.v1.Leader"];

/// Keeps the health answers true every second: SERVING for clients while this replica leads,
/// or while another replica is elected (a standby forwards to it); the leader-only names on the
/// leader alone.
async fn report_readiness(
    coord: Arc<Coordinator>,
    meta: MetaStore,
    own: String,
    health: tonic_health::server::HealthReporter,
) {
    let mut last: Option<(bool, bool)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let leading = coord.leader().is_ok();
        let serving = leading || matches!(meta.leader_address().await, Ok(Some(a)) if a != own);
        if last == Some((serving, leading)) {
            continue;
        }
        let status = |on: bool| match on {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        for name in CLIENT_SERVICES {
            health.set_service_status(*name, status(serving)).await;
        }
        for name in LEADER_SERVICES {
            health.set_service_status(*name, status(leading)).await;
        }
        tracing::info!(serving, leading, "health");
        last = Some((serving, leading));
    }
}

/// The coordinator's metrics: its counters, gauges read at each scrape, and its gRPC calls.
pub struct CoordinatorMetricsExport {
    exposition: Exposition,
    is_leader: GaugeF64,
    queue_depth: GaugeF64,
    in_flight: GaugeF64,
    workers: GaugeF64,
    workers_live: GaugeF64,
}

impl CoordinatorMetricsExport {
    /// Registers every metric of `c`, and the gRPC calls of its server (returned).
    pub fn new(c: &Coordinator) -> (Self, GrpcMetrics) {
        let mut e = Exposition::new();
        let m = &c.metrics;
        for (name, help, counter) in [
            (
                "labelfleet_pairs_total",
                "Pairs whose labels were committed",
                &m.pairs_committed,
            ),
            (
                "labelfleet_tasks_committed_total",
                "Tasks committed",
                &m.tasks_committed,
            ),
            (
                "labelfleet_tasks_leased_total",
                "Leases granted",
                &m.tasks_leased,
            ),
            (
                "labelfleet_duplicates_dropped_total",
                "Late or repeated results dropped",
                &m.duplicates_dropped,
            ),
            (
                "labelfleet_lease_expiries_total",
                "Leases that expired and were re-queued",
                &m.lease_expiries,
            ),
            (
                "labelfleet_tasks_failed_total",
                "Tasks that failed for good",
                &m.tasks_failed,
            ),
        ] {
            e.counter(name, help, counter);
        }
        let grpc = GrpcMetrics::register(
            &mut e,
            &[
                "labelfleet.v1.JobService",
                "labelfleet.v1.TaskService",
                "grpc.health.v1.Health",
            ],
        );
        let export = CoordinatorMetricsExport {
            is_leader: e.gauge("labelfleet_is_leader", "1 on the elected leader"),
            queue_depth: e.gauge("labelfleet_queue_depth", "Tasks waiting for a worker"),
            in_flight: e.gauge("labelfleet_tasks_in_flight", "Tasks leased to workers"),
            workers: e.gauge("labelfleet_workers", "Workers known to this coordinator"),
            workers_live: e.gauge(
                "labelfleet_workers_live",
                "Workers heard from within a task lease (they share a job's API rate limits)",
            ),
            exposition: e,
        };
        (export, grpc)
    }

    /// The metrics now, in the OpenMetrics text format.
    pub fn render(&self, c: &Coordinator) -> String {
        let leader = c.leader.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (depth, in_flight, lease) = leader
            .as_ref()
            .map(|l| {
                let s = l.sched();
                (s.queue_depth(), s.in_flight(), s.config().lease)
            })
            .unwrap_or_default();
        self.is_leader.set(leader.is_some() as u8 as f64);
        self.queue_depth.set(depth as f64);
        self.in_flight.set(in_flight as f64);
        let workers = c.workers.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.workers.set(workers as f64);
        let live = c.fleet().live(std::time::Instant::now(), lease);
        self.workers_live.set(live as f64);
        self.exposition.encode()
    }
}

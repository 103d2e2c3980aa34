//! The labelfleet trainer: distills a student on teacher grade distributions, registers the
//! checkpoint (object store + etcd) and pushes it to every live worker.
//!
//! Pushes are resumable: the registry records which workers verified the checkpoint, and a
//! trainer that starts (after a crash mid-push, say) finishes every push left incomplete.
//!
//! The store is any `--store` of the cluster (a directory or a bucket): libtorch reads and
//! writes files, so the trainer downloads the dataset into a local scratch folder, trains and
//! saves there, uploads the checkpoint folder to `checkpoints/<id>/` in the store, and only then
//! registers it. A push reads the scratch copy, or downloads it from the store first (a trainer
//! that restarted elsewhere).

use labelfleet_cluster::blobs::Blobs;
pub use labelfleet_cluster::checkpoint::CheckpointRecord;
use labelfleet_cluster::checkpoint::{
    checkpoint_digest, checkpoint_id_of, push_checkpoint, store_location, CheckpointError,
    CHUNK_BYTES,
};
use labelfleet_cluster::limits::Limits;
use labelfleet_cluster::meta::{keys, EtcdSecurity, MetaStore};
use labelfleet_cluster::metrics::{self, Counter, Exposition, GrpcMetrics};
use labelfleet_cluster::open_meta;
use labelfleet_cluster::security::{self, Access, ClientCerts, Role, Transport};
use labelfleet_proto::v1::trainer_service_server::{TrainerService, TrainerServiceServer};
use labelfleet_proto::v1::{
    model_ref, DistillRequest, GetTrainingRunRequest, TrainingMetrics, TrainingRun,
};
use labelfleet_slm::grading::{
    default_grade_labels, detect_kind, load_grader, EncoderGrader, Grader, GraderKind, Pair,
};
use labelfleet_slm::train::{
    calibrate_grades, evaluate, train, train_with_early_stopping, Example, StepReport, TrainConfig,
};
use labelfleet_slm::Placement;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

#[derive(Debug, Error)]
pub enum TrainerError {
    #[error(transparent)]
    Cluster(#[from] labelfleet_cluster::ClusterError),
    #[error(transparent)]
    Engine(#[from] labelfleet_slm::SlmError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("dataset `{key}` line {line}: {message}")]
    Dataset {
        key: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// A registry record (or the files it names) is not what it claims to be.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

type Result<T> = std::result::Result<T, TrainerError>;

#[derive(Debug, Clone)]
pub struct TrainerConfig {
    pub listen: SocketAddr,
    pub etcd: Vec<String>,
    pub etcd_prefix: String,
    /// Object store (`--store`: a directory or a bucket URL, shared with the coordinator):
    /// datasets in, checkpoints out.
    pub store: String,
    /// Local folder for downloaded datasets, training output and the checkpoint copies pushed
    /// to workers.
    pub scratch: PathBuf,
    pub placement: Placement,
    pub threads: usize,
    /// Longest input in tokens during training.
    pub max_tokens: usize,
    /// Push bandwidth per worker in MiB/s (0: unlimited), so a push does not starve labeling.
    pub push_rate_mib_s: f64,
    /// How often to check that every live worker holds every registered checkpoint.
    pub reconcile_interval: Duration,
    pub metrics_listen: Option<SocketAddr>,
    /// TLS with the trainer's certificate: only coordinators and operators may call it, and
    /// pushes go only to workers that prove they are workers. Or plaintext.
    pub transport: Transport,
    pub limits: Limits,
    pub etcd_security: EtcdSecurity,
    /// A plaintext port serving only `grpc.health.v1` (for kubelet's probes, which cannot
    /// speak TLS).
    pub health_listen: Option<SocketAddr>,
}

/// One line of a distillation dataset: a pair and the teacher's grade distribution.
#[derive(Debug, Clone, Deserialize)]
pub struct TeacherExample {
    #[serde(flatten)]
    pub pair: Pair,
    pub distribution: Vec<f32>,
}

struct Shared {
    meta: MetaStore,
    blobs: Blobs,
    config: TrainerConfig,
    runs: Mutex<HashMap<String, TrainingRun>>,
    /// (job id, dataset, the whole request) -> run id of the runs started for a job, so a
    /// request repeated by a new coordinator leader after a failover gets the run already under
    /// way (or done).
    runs_by_job: Mutex<HashMap<(String, String, String), String>>,
    metrics_tx: broadcast::Sender<TrainingMetrics>,
    pushes: Counter,
    push_failures: Counter,
    /// One push campaign at a time, so two never rewrite the same registry record.
    pushing: tokio::sync::Mutex<()>,
}

/// Runs the trainer until `shutdown`.
pub async fn run(
    config: TrainerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let meta = open_meta(&config.etcd, &config.etcd_prefix, &config.etcd_security).await?;
    run_with_meta(config, meta, shutdown).await
}

/// Runs the trainer on a given metadata store (embedded mode shares one among its roles).
pub async fn run_with_meta(
    config: TrainerConfig,
    meta: MetaStore,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let blobs = Blobs::open(&config.store)?;
    std::fs::create_dir_all(config.scratch.join("checkpoints"))?;
    tracing::info!(store = %blobs, scratch = %config.scratch.display(), "trainer store");
    let (metrics_tx, _) = broadcast::channel(256);
    let shared = Arc::new(Shared {
        meta,
        blobs,
        config: config.clone(),
        runs: Mutex::new(HashMap::new()),
        runs_by_job: Mutex::new(HashMap::new()),
        metrics_tx,
        pushes: Counter::default(),
        push_failures: Counter::default(),
        pushing: tokio::sync::Mutex::new(()),
    });
    let mut exposition = Exposition::new();
    exposition.counter(
        "labelfleet_trainer_pushes_total",
        "Checkpoint pushes verified by a worker",
        &shared.pushes,
    );
    exposition.counter(
        "labelfleet_trainer_push_failures_total",
        "Checkpoint pushes that failed",
        &shared.push_failures,
    );
    let grpc_metrics = GrpcMetrics::register(
        &mut exposition,
        &["labelfleet.v1.TrainerService", "grpc.health.v1.Health"],
    );
    if let Some(addr) = config.metrics_listen {
        metrics::serve(addr, Arc::new(move || exposition.encode())).await?;
    }
    // Finish pushes a previous trainer left incomplete, and bring workers that joined later
    // up to date, now and then every `reconcile_interval`.
    {
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = reconcile_pushes(&s).await {
                    tracing::warn!(error = %e, "reconciling pushes failed; retrying");
                }
                tokio::time::sleep(s.config.reconcile_interval).await;
            }
        });
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    if let Some(addr) = config.health_listen {
        let bound = security::serve_health(addr, health_service.clone()).await?;
        tracing::info!(%bound, "health (plaintext) at grpc.health.v1");
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(labelfleet_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| TrainerError::Invalid(format!("reflection: {e}")))?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(bound = %listener.local_addr()?, "trainer serving");
    let max = config.limits.max_message_bytes;
    security::server_builder(
        &config.transport,
        ClientCerts::Required,
        &config.limits,
        &grpc_metrics,
    )
    .map_err(|e| TrainerError::Invalid(e.to_string()))?
    .add_service(health_service)
    .add_service(reflection)
    .add_service(
        TrainerServiceServer::new(TrainerApi(shared))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
    .serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        shutdown,
    )
    .await
    .map_err(|e| TrainerError::Invalid(format!("server: {e}")))?;
    Ok(())
}

/// Pushes every registered checkpoint to the live workers that have not verified it.
async fn reconcile_pushes(s: &Arc<Shared>) -> Result<()> {
    let prefix = format!("{}/checkpoints/", s.meta.prefix());
    let workers_prefix = keys::workers(s.meta.prefix());
    let live: BTreeSet<String> = s
        .meta
        .list(&workers_prefix)
        .await?
        .into_iter()
        .map(|(k, _)| k[workers_prefix.len()..].to_string())
        .collect();
    for (_, value) in s.meta.list(&prefix).await? {
        let Ok(rec) = serde_json::from_slice::<CheckpointRecord>(&value) else {
            continue;
        };
        if let Err(e) = rec.check() {
            // A forged or legacy record: never pushed (and not rewritten).
            tracing::error!(error = %e, "registry record refused; not pushing it");
            continue;
        }
        if rec.state == "pushing" || !live.is_subset(&rec.pushed_to) {
            tracing::info!(checkpoint = %rec.checkpoint_id, verified = rec.pushed_to.len(), live = live.len(), "pushing to workers that lack the checkpoint");
            push_everywhere(s, rec).await?;
        }
    }
    Ok(())
}

/// Pushes a registered checkpoint to every live worker not yet holding it, recording each
/// verified push in the registry.
async fn push_everywhere(s: &Arc<Shared>, mut rec: CheckpointRecord) -> Result<CheckpointRecord> {
    rec.check()?;
    let _one_at_a_time = s.pushing.lock().await;
    // Re-read the record under the lock: another campaign may have pushed meanwhile.
    let key = keys::checkpoint(s.meta.prefix(), &rec.checkpoint_id);
    if let Some(current) = s.meta.get(&key).await? {
        if let Ok(current) = serde_json::from_slice::<CheckpointRecord>(&current) {
            rec.pushed_to.extend(current.pushed_to);
        }
    }
    let workers_prefix = keys::workers(s.meta.prefix());
    let wanted: Vec<(String, String)> = s
        .meta
        .list(&workers_prefix)
        .await?
        .into_iter()
        .map(|(k, v)| (k[workers_prefix.len()..].to_string(), v))
        .filter(|(worker, _)| !rec.pushed_to.contains(worker))
        .map(|(worker, v)| (worker, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let dir = if wanted.is_empty() {
        None
    } else {
        Some(local_copy(s, &rec).await?)
    };
    let pause = if s.config.push_rate_mib_s > 0.0 {
        Duration::from_secs_f64(CHUNK_BYTES as f64 / (s.config.push_rate_mib_s * 1024.0 * 1024.0))
    } else {
        Duration::ZERO
    };
    for (worker, v) in wanted {
        let Some(dir) = dir.as_deref() else { break };
        let info: serde_json::Value = serde_json::from_str(&v).unwrap_or_default();
        let Some(address) = info["control_address"].as_str() else {
            continue;
        };
        tracing::info!(checkpoint = %rec.checkpoint_id, %worker, %address, "pushing checkpoint");
        let transport = &s.config.transport;
        match push_checkpoint(address, transport, dir, &rec.checkpoint_id, pause).await {
            Ok(r) if r.verified => {
                s.pushes.add(1);
                rec.pushed_to.insert(worker.clone());
                s.meta
                    .put(&key, serde_json::to_vec(&rec).unwrap_or_default())
                    .await?;
                tracing::info!(checkpoint = %rec.checkpoint_id, %worker, bytes = r.bytes, "push verified");
            }
            Ok(_) => {
                s.push_failures.add(1);
                tracing::warn!(checkpoint = %rec.checkpoint_id, %worker, "push not verified; the worker keeps its models");
            }
            Err(e) => {
                s.push_failures.add(1);
                tracing::warn!(checkpoint = %rec.checkpoint_id, %worker, code = ?e.code(), error = %e.message(), "push failed; the worker keeps its models");
            }
        }
    }
    rec.state = "pushed".into();
    s.meta
        .put(&key, serde_json::to_vec(&rec).unwrap_or_default())
        .await?;
    Ok(rec)
}

/// The local folder of a checkpoint in the scratch folder.
fn scratch_checkpoint(config: &TrainerConfig, checkpoint_id: &str) -> PathBuf {
    config.scratch.join("checkpoints").join(checkpoint_id)
}

/// A local folder holding the registered checkpoint `rec`, for pushing: the scratch copy when
/// its digest is the registered one, else a fresh download from the store. The record must
/// name its content (id = name of its digest) and point at `checkpoints/<id>` in the store:
/// a forged record cannot make the trainer read, and push, anything else.
async fn local_copy(s: &Shared, rec: &CheckpointRecord) -> Result<PathBuf> {
    rec.check()?;
    let dir = scratch_checkpoint(&s.config, &rec.checkpoint_id);
    let (d, want) = (dir.clone(), rec.sha256.clone());
    let fresh = tokio::task::spawn_blocking(move || {
        d.is_dir() && checkpoint_digest(&d).is_ok_and(|got| got == want)
    })
    .await
    .unwrap_or(false);
    if fresh {
        return Ok(dir);
    }
    let staging = s.config.scratch.join("checkpoints").join(format!(
        ".download-{}-{}",
        rec.checkpoint_id,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let n = s.blobs.get_dir(&rec.location, &staging).await?;
    let got = {
        let st = staging.clone();
        tokio::task::spawn_blocking(move || checkpoint_digest(&st))
            .await
            .map_err(|e| TrainerError::Invalid(format!("digest thread: {e}")))??
    };
    if n == 0 || got != rec.sha256 {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(TrainerError::Invalid(format!(
            "checkpoint `{}`: {n} files under `{}` in the store {}, digest {got}, registered {}",
            rec.checkpoint_id, rec.location, s.blobs, rec.sha256
        )));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&staging, &dir)?;
    tracing::info!(checkpoint = %rec.checkpoint_id, files = n, "checkpoint downloaded from the store for pushing");
    Ok(dir)
}

/// Checks that a dataset key names an object inside the store.
fn check_dataset_key(key: &str) -> Result<()> {
    if key.is_empty() || key.split('/').any(|s| s == ".." || s == ".") || key.starts_with('/') {
        return Err(TrainerError::Invalid(format!(
            "dataset `{key}`: must be a key inside the object store"
        )));
    }
    Ok(())
}

/// Parses a dataset downloaded to `path`; errors name the dataset's key and line.
fn read_dataset(path: &Path, key: &str) -> Result<Vec<TeacherExample>> {
    use std::io::BufRead;
    let file = std::fs::File::open(path)
        .map_err(|e| TrainerError::Invalid(format!("dataset `{key}` ({}): {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TrainerError::Dataset {
            key: key.into(),
            line: i + 1,
            message: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let ex: TeacherExample =
            serde_json::from_str(&line).map_err(|e| TrainerError::Dataset {
                key: key.into(),
                line: i + 1,
                message: e.to_string(),
            })?;
        let sum: f32 = ex.distribution.iter().sum();
        if ex.distribution.iter().any(|p| !p.is_finite() || *p < 0.0) || (sum - 1.0).abs() > 1e-3 {
            return Err(TrainerError::Dataset {
                key: key.into(),
                line: i + 1,
                message: format!(
                    "field `distribution`: not a probability distribution (sum {sum})"
                ),
            });
        }
        out.push(ex);
    }
    if out.is_empty() {
        return Err(TrainerError::Invalid(format!(
            "dataset `{key}`: no examples"
        )));
    }
    Ok(out)
}

/// Held-out split by query, so no query is in both halves.
fn is_heldout(query: &str, fraction: f64, seed: u64) -> bool {
    let h = Sha256::digest(format!("{seed}:{query}").as_bytes());
    let x = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as f64 / u32::MAX as f64;
    x < fraction
}

/// Downloads the dataset, trains, saves the checkpoint in the scratch folder and uploads it to
/// the store; the caller registers the record returned.
async fn train_and_store(
    s: &Arc<Shared>,
    run_id: &str,
    req: &DistillRequest,
) -> Result<CheckpointRecord> {
    check_dataset_key(&req.dataset)?;
    let local = s
        .config
        .scratch
        .join("datasets")
        .join(format!("{run_id}.jsonl"));
    if !s.blobs.get_to_file(&req.dataset, &local).await? {
        return Err(TrainerError::Invalid(format!(
            "dataset `{}`: no such object in the store {}",
            req.dataset, s.blobs
        )));
    }
    let (sh, rid, r, path) = (s.clone(), run_id.to_string(), req.clone(), local.clone());
    let trained = tokio::task::spawn_blocking(move || distill(&sh, &rid, &r, &path)).await;
    let _ = std::fs::remove_file(&local);
    let rec = trained.map_err(|e| TrainerError::Invalid(format!("training thread: {e}")))??;
    // Upload, then drop any object of an older upload under the same id that is not part of
    // this one, so the store holds exactly the folder whose digest is registered.
    let dir = scratch_checkpoint(&s.config, &rec.checkpoint_id);
    let written = s.blobs.put_dir(&rec.location, &dir).await?;
    for key in s.blobs.list(&rec.location).await? {
        if !written.contains(&key) {
            s.blobs.delete(&key).await?;
        }
    }
    tracing::info!(checkpoint = %rec.checkpoint_id, files = written.len(), store = %s.blobs, location = %rec.location, "checkpoint uploaded");
    Ok(rec)
}

/// Trains and saves a checkpoint into the scratch folder. Blocking (runs on its own thread).
fn distill(
    s: &Shared,
    run_id: &str,
    req: &DistillRequest,
    dataset: &Path,
) -> Result<CheckpointRecord> {
    if s.config.threads > 0 {
        tch::set_num_threads(s.config.threads as i32);
    }
    let base = match req.base.as_ref().and_then(|m| m.source.as_ref()) {
        Some(model_ref::Source::LocalPath(p)) => p.clone(),
        _ => {
            return Err(TrainerError::Invalid(
                "base: a local model (local_path) is required".into(),
            ))
        }
    };
    // the request's input length (a corpus job's `student_max_tokens`), else the trainer's
    let max_tokens = match req.max_tokens {
        0 => s.config.max_tokens,
        n => n as usize,
    };
    let examples = read_dataset(dataset, &req.dataset)?;
    let base_dir = labelfleet_slm::resolve_model(&base);
    // A cross-encoder's classification head is new, drawn from libtorch's global generator
    // when the student loads: seed it from the request, so the same request trains the same
    // student whatever the process did before (a trainer that trained other runs, or the
    // embedded cluster whose workers sampled queries in the same process).
    tch::manual_seed(req.seed as i64);
    let mut student: Box<dyn Grader> = match (req.keep_layers, detect_kind(&base_dir)?) {
        (0, _) => load_grader(
            &base_dir,
            &default_grade_labels(),
            s.config.placement,
            max_tokens,
        )?,
        (k, GraderKind::CrossEncoder) => Box::new(EncoderGrader::load_layers(
            &base_dir,
            &default_grade_labels(),
            s.config.placement,
            max_tokens,
            Some(k as usize),
        )?),
        (_, GraderKind::Decoder) => {
            return Err(TrainerError::Invalid(
                "keep_layers: only a cross-encoder student can drop layers".into(),
            ))
        }
    };
    let fraction = if req.heldout_fraction > 0.0 {
        req.heldout_fraction
    } else {
        0.2
    };
    let (mut train_set, mut held_set) = (Vec::new(), Vec::new());
    for (i, ex) in examples.iter().enumerate() {
        let input = student
            .encode_pair(&ex.pair)
            .map_err(|e| TrainerError::Dataset {
                key: req.dataset.clone(),
                line: i + 1,
                message: e.to_string(),
            })?;
        let e = Example {
            input,
            target: ex.distribution.clone(),
        };
        if is_heldout(&ex.pair.query, fraction, req.seed) {
            held_set.push(e);
        } else {
            train_set.push(e);
        }
    }
    let cfg = TrainConfig {
        epochs: req.epochs.max(1) as usize,
        learning_rate: if req.learning_rate > 0.0 {
            req.learning_rate
        } else {
            5e-5
        },
        seed: req.seed,
        batch_size: if req.batch_size > 0 {
            req.batch_size as usize
        } else {
            TrainConfig::default().batch_size
        },
        ..Default::default()
    };
    let tx = s.metrics_tx.clone();
    let run = run_id.to_string();
    let mut on_step = |r: &StepReport| {
        let _ = tx.send(TrainingMetrics {
            run_id: run.clone(),
            step: r.step as u32,
            total_steps: r.total_steps as u32,
            loss: r.loss,
            learning_rate: r.learning_rate,
        });
    };
    // early stopping on the held-out queries: the epoch whose loss against the teacher there
    // was lowest (the teacher's labels only; no human judgment is seen)
    let stopped = if held_set.is_empty() {
        train(student.as_ref(), &train_set, &cfg, &mut on_step)?;
        None
    } else {
        let (_, stopped) = train_with_early_stopping(
            student.as_ref(),
            &train_set,
            &held_set,
            &cfg,
            8192,
            &mut on_step,
        )?;
        tracing::info!(
            best_epoch = stopped.best_epoch,
            losses = ?stopped.heldout_losses,
            "early stopping on held-out queries"
        );
        Some(stopped)
    };
    // the student's grades, not only its order: cutpoints on its expected grade that give
    // each grade about as often as the teacher does on the held-out queries
    let calibration = calibrate_grades(student.as_mut(), &held_set, 8192)?;
    if let Some(c) = &calibration {
        tracing::info!(cutpoints = ?c.cutpoints, teacher = ?c.teacher_counts, most_likely = ?c.most_likely, calibrated = ?c.calibrated, "grades calibrated on held-out queries");
    }
    let (held, held_mae) = if held_set.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        let r = evaluate(student.as_ref(), &held_set, 8192)?;
        (r.agreement, r.expected_grade_mae)
    };
    let (majority, majority_mae) = {
        let mut counts = HashMap::new();
        for e in &held_set {
            let g = e
                .target
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|x| x.0)
                .unwrap_or(0);
            *counts.entry(g).or_insert(0usize) += 1;
        }
        let (grade, top) = counts
            .iter()
            .max_by_key(|(g, n)| (**n, std::cmp::Reverse(**g)))
            .map(|(g, n)| (*g, *n))
            .unwrap_or((0, 0));
        let n = held_set.len().max(1) as f64;
        let mae = held_set
            .iter()
            .map(|e| {
                let expected: f64 = e
                    .target
                    .iter()
                    .enumerate()
                    .map(|(i, p)| i as f64 * *p as f64)
                    .sum();
                (grade as f64 - expected).abs()
            })
            .sum::<f64>()
            / n;
        (top as f64 / n, mae)
    };
    // The id names the checkpoint's content (its digest), so no other bytes can carry it.
    let staging = s
        .config
        .scratch
        .join(format!("checkpoints/.staging-{run_id}"));
    let _ = std::fs::remove_dir_all(&staging);
    student.save(
        &staging,
        serde_json::json!({
            "base": base, "dataset": req.dataset, "run_id": run_id, "job_id": req.job_id,
            "train_pairs": train_set.len(), "heldout_pairs": held_set.len(), "train_config": cfg,
            "heldout_agreement_with_teacher": held, "majority_baseline": majority,
            "heldout_expected_grade_mae": held_mae, "majority_expected_grade_mae": majority_mae,
            "early_stopping": stopped, "grade_calibration": calibration,
        }),
    )?;
    let sha256 = checkpoint_digest(&staging)?;
    let checkpoint_id = checkpoint_id_of(&sha256);
    let location = store_location(&checkpoint_id);
    let dir = scratch_checkpoint(&s.config, &checkpoint_id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&staging, &dir)?;
    Ok(CheckpointRecord {
        checkpoint_id,
        run_id: run_id.into(),
        base,
        dataset: req.dataset.clone(),
        location,
        sha256,
        heldout_agreement_with_teacher: held,
        majority_baseline: majority,
        heldout_expected_grade_mae: held_mae,
        majority_expected_grade_mae: majority_mae,
        state: "pushing".into(),
        pushed_to: BTreeSet::new(),
    })
}

#[derive(Clone)]
struct TrainerApi(Arc<Shared>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

impl TrainerApi {
    fn set_run(&self, run: TrainingRun) {
        self.0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run.run_id.clone(), run);
    }
}

impl TrainerApi {
    /// Over TLS, only coordinators (a corpus job's driver) and operators call the trainer.
    fn require<T>(&self, req: &Request<T>, call: &str) -> std::result::Result<(), Status> {
        Access::from(&self.0.config.transport)
            .require(req, call, &[Role::Coordinator, Role::Operator])
            .map(|_| ())
    }
}

#[tonic::async_trait]
impl TrainerService for TrainerApi {
    async fn start_distillation(
        &self,
        req: Request<DistillRequest>,
    ) -> std::result::Result<Response<TrainingRun>, Status> {
        self.require(&req, "StartDistillation")?;
        let req = req.into_inner();
        if req.dataset.is_empty() {
            return Err(Status::invalid_argument("dataset: required"));
        }
        let run_id = format!(
            "run-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        let run = TrainingRun {
            run_id: run_id.clone(),
            job_id: req.job_id.clone(),
            state: "training".into(),
            ..Default::default()
        };
        // Idempotent by job id: a new coordinator leader re-requests the distillation of the
        // job it took over. The same non-empty job id with the same dataset (and the same
        // request otherwise: a changed epoch count or depth trains anew) gets the run already
        // started for it, unless that run failed (then it is tried afresh). Looked up and
        // recorded under one lock, so two concurrent requests start one run.
        if !req.job_id.is_empty() {
            let mut by_job = self.0.runs_by_job.lock().unwrap_or_else(|p| p.into_inner());
            let key = (req.job_id.clone(), req.dataset.clone(), format!("{req:?}"));
            let runs = self.0.runs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(existing) = by_job.get(&key).and_then(|id| runs.get(id)) {
                if existing.state != "failed" {
                    tracing::info!(run = %existing.run_id, job = %req.job_id, "distillation already requested for this job; returning its run");
                    return Ok(Response::new(existing.clone()));
                }
            }
            drop(runs);
            by_job.insert(key, run_id.clone());
            self.set_run(run.clone());
        } else {
            self.set_run(run.clone());
        }
        let api = self.clone();
        tokio::spawn(async move {
            let trained = train_and_store(&api.0, &run_id, &req).await;
            let mut run = TrainingRun {
                run_id: run_id.clone(),
                job_id: req.job_id.clone(),
                ..Default::default()
            };
            let rec = match trained {
                Ok(rec) => rec,
                Err(e) => {
                    run.state = "failed".into();
                    run.error = e.to_string();
                    tracing::error!(run = %run_id, error = %e, "distillation failed");
                    api.set_run(run);
                    return;
                }
            };
            run.checkpoint_id = rec.checkpoint_id.clone();
            run.heldout_agreement_with_teacher = rec.heldout_agreement_with_teacher;
            run.majority_baseline = rec.majority_baseline;
            run.heldout_expected_grade_mae = rec.heldout_expected_grade_mae;
            run.majority_expected_grade_mae = rec.majority_expected_grade_mae;
            run.state = "pushing".into();
            api.set_run(run.clone());
            let key = keys::checkpoint(api.0.meta.prefix(), &rec.checkpoint_id);
            if let Err(e) = api
                .0
                .meta
                .put(&key, serde_json::to_vec(&rec).unwrap_or_default())
                .await
            {
                run.state = "failed".into();
                run.error = format!("registering the checkpoint: {e}");
                api.set_run(run);
                return;
            }
            tracing::info!(checkpoint = %rec.checkpoint_id, agreement = rec.heldout_agreement_with_teacher, "checkpoint registered");
            match push_everywhere(&api.0, rec).await {
                Ok(_) => run.state = "done".into(),
                Err(e) => {
                    run.state = "failed".into();
                    run.error = format!("push: {e}");
                }
            }
            api.set_run(run);
        });
        Ok(Response::new(run))
    }

    async fn get_training_run(
        &self,
        req: Request<GetTrainingRunRequest>,
    ) -> std::result::Result<Response<TrainingRun>, Status> {
        self.require(&req, "GetTrainingRun")?;
        let id = req.into_inner().run_id;
        self.0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("run `{id}`: no such run")))
    }

    type WatchTrainingStream = BoxStream<TrainingMetrics>;

    async fn watch_training(
        &self,
        req: Request<GetTrainingRunRequest>,
    ) -> std::result::Result<Response<Self::WatchTrainingStream>, Status> {
        self.require(&req, "WatchTraining")?;
        let id = req.into_inner().run_id;
        let mut rx = self.0.metrics_tx.subscribe();
        let shared = self.0.clone();
        // The stream also ends once the run is no longer training (or is unknown): a run that
        // StartDistillation handed back to a repeated request may be past its last step, or
        // done, and sends no more metrics.
        let training = move |id: &str| {
            shared
                .runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .is_some_and(|r| r.state == "training")
        };
        let stream = async_stream(move |tx| async move {
            let mut check = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Ok(m) if m.run_id == id => {
                            let last = m.step + 1 >= m.total_steps;
                            if tx.send(Ok(m)).await.is_err() || last {
                                return;
                            }
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = check.tick() => {
                        if !training(&id) {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

fn async_stream<T, F, Fut>(f: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<std::result::Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(scratch: &Path) -> TrainerApi {
        let (metrics_tx, _) = broadcast::channel(16);
        TrainerApi(Arc::new(Shared {
            meta: MetaStore::memory(),
            blobs: Blobs::local(&scratch.join("store")).unwrap(),
            config: TrainerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                etcd: vec![],
                etcd_prefix: "/t".into(),
                store: scratch.join("store").display().to_string(),
                scratch: scratch.to_path_buf(),
                placement: Placement::cpu(),
                threads: 1,
                max_tokens: 32,
                push_rate_mib_s: 0.0,
                reconcile_interval: Duration::from_secs(60),
                metrics_listen: None,
                transport: Transport::Plaintext,
                limits: Limits::default(),
                etcd_security: EtcdSecurity::default(),
                health_listen: None,
            },
            runs: Mutex::new(HashMap::new()),
            runs_by_job: Mutex::new(HashMap::new()),
            metrics_tx,
            pushes: Counter::default(),
            push_failures: Counter::default(),
            pushing: tokio::sync::Mutex::new(()),
        }))
    }

    async fn start(api: &TrainerApi, job_id: &str, epochs: u32) -> TrainingRun {
        api.start_distillation(Request::new(DistillRequest {
            job_id: job_id.into(),
            // No such object: the run fails as soon as it starts.
            dataset: "datasets/missing.jsonl".into(),
            epochs,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
    }

    /// A repeated request of a job gets its run back, until that run failed; another request
    /// (another job, or other settings) starts its own run.
    #[tokio::test(flavor = "current_thread")]
    async fn start_distillation_is_idempotent_by_job_id() {
        let scratch =
            std::env::temp_dir().join(format!("labelfleet-trainer-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let api = api(&scratch);
        // On a current-thread runtime the spawned training has not run yet: the run is "training".
        let first = start(&api, "job-1/distill", 1).await;
        assert_eq!(first.state, "training");
        let again = start(&api, "job-1/distill", 1).await;
        assert_eq!(again.run_id, first.run_id);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let other = start(&api, "job-1/distill", 2).await;
        assert_ne!(other.run_id, first.run_id, "other settings train anew");
        // Once the run failed, the same request starts afresh.
        for _ in 0..200 {
            let run = api
                .0
                .runs
                .lock()
                .unwrap()
                .get(&first.run_id)
                .cloned()
                .unwrap();
            if run.state == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let retried = start(&api, "job-1/distill", 1).await;
        assert_ne!(
            retried.run_id, first.run_id,
            "a failed run is not handed back"
        );
        let _ = std::fs::remove_dir_all(&scratch);
    }

    /// A registry record whose location is outside `checkpoints/<id>` (here: another object
    /// of the store, with the digest the record claims) is refused before anything is read:
    /// nothing is downloaded to the scratch folder, pushed, or rewritten in the registry.
    #[tokio::test(flavor = "current_thread")]
    async fn a_forged_record_outside_the_checkpoint_prefix_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let api = api(scratch.path());
        let s = api.0.clone();
        // The object the forged record points at, and its digest as a checkpoint folder.
        s.blobs
            .put("datasets/secret/config.json", b"{\"private\": 1}".to_vec())
            .await
            .unwrap();
        let probe = scratch.path().join("probe");
        s.blobs.get_dir("datasets/secret", &probe).await.unwrap();
        let sha256 = checkpoint_digest(&probe).unwrap();
        let id = checkpoint_id_of(&sha256);
        // A live worker that lacks it, so a push would start.
        s.meta
            .put(
                &keys::worker(s.meta.prefix(), "w1"),
                br#"{"control_address":"127.0.0.1:9"}"#.to_vec(),
            )
            .await
            .unwrap();
        for location in [
            "datasets/secret".to_string(),
            format!("checkpoints/{id}/../../datasets/secret"),
            "checkpoints/../datasets/secret".to_string(),
        ] {
            let rec = CheckpointRecord {
                checkpoint_id: id.clone(),
                location: location.clone(),
                sha256: sha256.clone(),
                state: "pushing".into(),
                ..Default::default()
            };
            let key = keys::checkpoint(s.meta.prefix(), &id);
            let stored = serde_json::to_vec(&rec).unwrap();
            s.meta.put(&key, stored.clone()).await.unwrap();

            let err = local_copy(&s, &rec).await.unwrap_err();
            assert!(
                matches!(
                    &err,
                    TrainerError::Checkpoint(CheckpointError::Location { .. })
                ),
                "{err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&id) && msg.contains(&location), "{msg}");
            let err = push_everywhere(&s, rec.clone()).await.unwrap_err();
            assert!(matches!(err, TrainerError::Checkpoint(_)), "{err}");
            // the reconciler skips it too
            reconcile_pushes(&s).await.unwrap();

            assert_eq!(
                s.meta.get(&key).await.unwrap().unwrap(),
                stored,
                "registry unchanged"
            );
            let checkpoints = scratch.path().join("checkpoints");
            let left: Vec<_> = std::fs::read_dir(&checkpoints)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "nothing downloaded: {left:?}");
            assert_eq!(s.pushes.get(), 0);
            assert_eq!(s.push_failures.get(), 0);
        }
    }
}

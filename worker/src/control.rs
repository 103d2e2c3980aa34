//! `WorkerControl`: checkpoint pushes (chunked, SHA-256 checked against the checkpoint
//! registry, installed atomically) and drain. The client side of a push is
//! `labelfleet_cluster::checkpoint::push_checkpoint`.
//!
//! A push is installed only when its id has a registry record, its bytes have the record's
//! digest and the id is the name of that digest. A checkpoint already installed under the id
//! with other content is never kept: the push is refused, the copy set aside (where no task
//! loads it), and the conflict counted and logged; the next push installs the registered one.

use crate::engine::checkpoint_dir;
use labelfleet_cluster::checkpoint::{
    check_content_name, checkpoint_digest, registered, CheckpointError, CheckpointRecord,
};
use labelfleet_cluster::meta::MetaStore;
use labelfleet_cluster::metrics::Counter;
use labelfleet_cluster::security::{Access, Role};
use labelfleet_proto::v1::worker_control_server::WorkerControl;
use labelfleet_proto::v1::{CheckpointChunk, DrainRequest, DrainResponse, PushCheckpointResponse};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// State the control server shares with the worker loop.
#[derive(Debug, Default)]
pub struct ControlState {
    pub draining: AtomicBool,
    pub in_flight: AtomicU64,
    pub checkpoints_installed: Counter,
    pub pushes_rejected: Counter,
    /// Pushes that found the id installed with other content (that copy is set aside).
    pub checkpoint_conflicts: Counter,
    /// Tasks run, by kind and outcome, with their run time.
    pub tasks: crate::metrics::TaskMetrics,
}

pub struct ControlApi {
    pub state: Arc<ControlState>,
    pub checkpoints: PathBuf,
    /// Over TLS: pushes only from the trainer, drains only from an operator.
    pub access: Access,
    /// The cluster's metadata, holding the checkpoint registry pushes are checked against.
    pub meta: MetaStore,
}

/// The gRPC status of a checkpoint that is not what its push claims.
fn refused(e: CheckpointError) -> Status {
    match e {
        CheckpointError::NotContentName { .. } => Status::invalid_argument(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// The registry record of the checkpoint a push names (UNAVAILABLE while etcd is down).
async fn record_of(meta: &MetaStore, id: &str) -> Result<CheckpointRecord, Status> {
    registered(meta, id)
        .await
        .map_err(|e| Status::unavailable(format!("checkpoint `{id}`: reading the registry: {e}")))?
        .map_err(refused)
}

/// Checks a received checkpoint's digest: the registry has it under the id, and the id is
/// its name.
fn check_digest(id: &str, digest: &str, rec: &CheckpointRecord) -> Result<(), Status> {
    if digest != rec.sha256 {
        return Err(refused(CheckpointError::DigestMismatch {
            id: id.to_string(),
            got: digest.to_string(),
            registered: rec.sha256.clone(),
        }));
    }
    check_content_name(id, digest).map_err(refused)
}

/// The digest of a folder, on the blocking pool.
async fn digest_of(dir: PathBuf) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || checkpoint_digest(&dir))
        .await
        .map_err(|e| Status::internal(format!("digest thread: {e}")))?
        .map_err(|e| Status::internal(e.to_string()))
}

fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ControlApi {
    /// Moves a verified push (`staging`, digest `digest`) into place as checkpoint `id`. The
    /// same content already there is a repeated push (kept); other content under the id is
    /// refused, and that copy set aside so that no task loads it.
    async fn install(&self, id: &str, staging: &Path, digest: &str) -> Result<(), Status> {
        let final_dir = checkpoint_dir(&self.checkpoints, id).map_err(Status::invalid_argument)?;
        if !final_dir.exists() {
            match std::fs::rename(staging, &final_dir) {
                Ok(()) => return Ok(()),
                // Another push of the id got there first: compare with it below.
                Err(_) if final_dir.exists() => {}
                Err(e) => return Err(Status::internal(format!("{}: {e}", final_dir.display()))),
            }
        }
        let installed = digest_of(final_dir.clone()).await?;
        let _ = std::fs::remove_dir_all(staging);
        if installed == digest {
            return Ok(());
        }
        let aside = self
            .checkpoints
            .join(format!(".conflict-{id}-{}", rand_suffix()));
        let set_aside = std::fs::rename(&final_dir, &aside);
        self.state.checkpoint_conflicts.add(1);
        tracing::error!(checkpoint = %id, installed = %installed, pushed = %digest, aside = %aside.display(), set_aside = set_aside.is_ok(), "checkpoint id installed with other content; refused");
        if let Err(e) = set_aside {
            return Err(Status::internal(format!(
                "checkpoint `{id}`: installed with other content (digest {installed}), and \
                 setting it aside failed: {e}"
            )));
        }
        Err(Status::failed_precondition(format!(
            "checkpoint `{id}`: already installed with other content (digest {installed}, \
             pushed {digest}); that copy was set aside, push again to install the registered one"
        )))
    }
}

#[tonic::async_trait]
impl WorkerControl for ControlApi {
    async fn push_checkpoint(
        &self,
        req: Request<Streaming<CheckpointChunk>>,
    ) -> Result<Response<PushCheckpointResponse>, Status> {
        if let Err(denied) = self
            .access
            .require(&req, "PushCheckpoint", &[Role::Trainer])
        {
            self.state.pushes_rejected.add(1);
            return Err(denied);
        }
        let mut stream = req.into_inner();
        let mut id = String::new();
        let mut record: Option<CheckpointRecord> = None;
        let mut staging: Option<PathBuf> = None;
        let mut seen = std::collections::HashSet::new();
        let mut current: Option<(String, std::fs::File, u64)> = None;
        let mut total = 0u64;
        let result: Result<PushCheckpointResponse, Status> = async {
            loop {
                let chunk = stream
                    .message()
                    .await?
                    .ok_or_else(|| Status::aborted("push ended before its last chunk"))?;
                if id.is_empty() {
                    id = chunk.checkpoint_id.clone();
                    checkpoint_dir(&self.checkpoints, &id).map_err(Status::invalid_argument)?;
                    // Refused before any byte is written: an id the registry does not have.
                    record = Some(record_of(&self.meta, &id).await?);
                    let dir = self.checkpoints.join(format!(
                        ".incoming-{id}-{}",
                        std::process::id() as u64 * 1_000_000 + rand_suffix()
                    ));
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
                    staging = Some(dir);
                }
                let dir = staging.as_ref().expect("set on the first chunk");
                if !chunk.file.is_empty() {
                    if !plain_file_name(&chunk.file) {
                        return Err(Status::invalid_argument(format!(
                            "chunk file `{}`: not a plain file name",
                            chunk.file
                        )));
                    }
                    let same = current.as_ref().is_some_and(|(n, _, _)| *n == chunk.file);
                    if !same {
                        if !seen.insert(chunk.file.clone()) {
                            return Err(Status::invalid_argument(format!(
                                "chunk file `{}`: sent again after another file",
                                chunk.file
                            )));
                        }
                        if let Some((_, f, _)) = current.take() {
                            f.sync_all().map_err(|e| Status::internal(e.to_string()))?;
                        }
                        let f = std::fs::File::create(dir.join(&chunk.file))
                            .map_err(|e| Status::internal(e.to_string()))?;
                        current = Some((chunk.file.clone(), f, 0));
                    }
                    let (name, f, written) = current.as_mut().expect("just set");
                    if chunk.offset != *written {
                        return Err(Status::invalid_argument(format!(
                            "file `{name}`: chunk at offset {} but {} bytes received",
                            chunk.offset, written
                        )));
                    }
                    f.write_all(&chunk.data)
                        .map_err(|e| Status::internal(e.to_string()))?;
                    *written += chunk.data.len() as u64;
                    total += chunk.data.len() as u64;
                }
                if chunk.last {
                    if let Some((_, f, _)) = current.take() {
                        f.sync_all().map_err(|e| Status::internal(e.to_string()))?;
                    }
                    // The digest of what is on disk, as the trainer computed it.
                    let digest = digest_of(dir.clone()).await?;
                    if digest != chunk.sha256 {
                        return Err(Status::data_loss(format!(
                            "checkpoint `{id}`: SHA-256 {digest} does not match the sender's {}",
                            chunk.sha256
                        )));
                    }
                    let rec = record.as_ref().expect("read on the first chunk");
                    check_digest(&id, &digest, rec)?;
                    self.install(&id, dir, &digest).await?;
                    return Ok(PushCheckpointResponse {
                        checkpoint_id: id.clone(),
                        bytes: total,
                        verified: true,
                    });
                }
            }
        }
        .await;
        match &result {
            Ok(_) => {
                self.state.checkpoints_installed.add(1);
                tracing::info!(checkpoint = %id, bytes = total, "checkpoint installed");
            }
            Err(e) => {
                self.state.pushes_rejected.add(1);
                tracing::warn!(checkpoint = %id, error = %e.message(), "checkpoint push discarded");
                if let Some(dir) = staging {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        result.map(Response::new)
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        self.access.require(&req, "Drain", &[Role::Operator])?;
        self.state.draining.store(true, Ordering::SeqCst);
        tracing::info!("drain requested");
        Ok(Response::new(DrainResponse {
            tasks_in_flight: self.state.in_flight.load(Ordering::SeqCst) as u32,
        }))
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 % 1_000_000)
        .unwrap_or(0)
}

//! `WorkerControl`: checkpoint pushes (chunked, SHA-256 checked, installed atomically) and
//! drain. The client side of a push is `labelfleet_cluster::checkpoint::push_checkpoint`.

use crate::engine::checkpoint_dir;
use labelfleet_cluster::security::{Access, Role};
use labelfleet_proto::v1::worker_control_server::WorkerControl;
use labelfleet_proto::v1::{CheckpointChunk, DrainRequest, DrainResponse, PushCheckpointResponse};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// State the control server shares with the worker loop.
#[derive(Debug, Default)]
pub struct ControlState {
    pub draining: AtomicBool,
    pub in_flight: AtomicU64,
    pub checkpoints_installed: AtomicU64,
    pub pushes_rejected: AtomicU64,
}

pub struct ControlApi {
    pub state: Arc<ControlState>,
    pub checkpoints: PathBuf,
    /// Over TLS: pushes only from the trainer, drains only from an operator.
    pub access: Access,
}

fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[tonic::async_trait]
impl WorkerControl for ControlApi {
    async fn push_checkpoint(
        &self,
        req: Request<Streaming<CheckpointChunk>>,
    ) -> Result<Response<PushCheckpointResponse>, Status> {
        if let Err(refused) = self
            .access
            .require(&req, "PushCheckpoint", &[Role::Trainer])
        {
            self.state.pushes_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(refused);
        }
        let mut stream = req.into_inner();
        let mut id = String::new();
        let mut staging: Option<PathBuf> = None;
        let mut hasher = Sha256::new();
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
                    let final_dir =
                        checkpoint_dir(&self.checkpoints, &id).map_err(Status::invalid_argument)?;
                    let dir = self.checkpoints.join(format!(
                        ".incoming-{id}-{}",
                        std::process::id() as u64 * 1_000_000 + rand_suffix()
                    ));
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
                    staging = Some(dir);
                    let _ = final_dir;
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
                        let f = std::fs::File::create(dir.join(&chunk.file))
                            .map_err(|e| Status::internal(e.to_string()))?;
                        hasher.update(chunk.file.as_bytes());
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
                    hasher.update(&chunk.data);
                    *written += chunk.data.len() as u64;
                    total += chunk.data.len() as u64;
                }
                if chunk.last {
                    if let Some((_, f, _)) = current.take() {
                        f.sync_all().map_err(|e| Status::internal(e.to_string()))?;
                    }
                    let digest = hex::encode(std::mem::take(&mut hasher).finalize());
                    if digest != chunk.sha256 {
                        return Err(Status::data_loss(format!(
                            "checkpoint `{id}`: SHA-256 {digest} does not match the sender's {}",
                            chunk.sha256
                        )));
                    }
                    let final_dir =
                        checkpoint_dir(&self.checkpoints, &id).map_err(Status::invalid_argument)?;
                    if final_dir.exists() {
                        // Already installed (a repeated push): keep the installed copy.
                        let _ = std::fs::remove_dir_all(dir);
                    } else {
                        std::fs::rename(dir, &final_dir)
                            .map_err(|e| Status::internal(e.to_string()))?;
                    }
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
                self.state
                    .checkpoints_installed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(checkpoint = %id, bytes = total, "checkpoint installed");
            }
            Err(e) => {
                self.state.pushes_rejected.fetch_add(1, Ordering::Relaxed);
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

//! Checkpoint transfer: the digest of a checkpoint folder and the chunked, verified push of
//! that folder to a worker's `WorkerControl` service.

use crate::security::{Role, Transport};
use labelfleet_proto::v1::worker_control_client::WorkerControlClient;
use labelfleet_proto::v1::{CheckpointChunk, PushCheckpointResponse};
use sha2::{Digest, Sha256};
use std::path::Path;
use tonic::Status;

/// Bytes per chunk of a push.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The files of a checkpoint folder in push order (sorted names, regular files only).
pub fn checkpoint_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// SHA-256 over the files in push order, each as its name then its bytes.
pub fn checkpoint_digest(dir: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    for name in checkpoint_files(dir)? {
        h.update(name.as_bytes());
        h.update(std::fs::read(dir.join(&name))?);
    }
    Ok(hex::encode(h.finalize()))
}

/// Pushes a checkpoint folder to one worker. `pause` is slept between chunks (tests use it
/// to kill a pusher mid-stream).
pub async fn push_checkpoint(
    address: &str,
    transport: &Transport,
    dir: &Path,
    checkpoint_id: &str,
    pause: std::time::Duration,
) -> Result<PushCheckpointResponse, Status> {
    // Over TLS the worker must present a worker certificate, whatever its address.
    let endpoint = transport
        .endpoint(address, Role::Worker)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("{address}: {e}")))?;
    let mut client = WorkerControlClient::new(channel);
    let digest = checkpoint_digest(dir).map_err(|e| Status::internal(e.to_string()))?;
    let files = checkpoint_files(dir).map_err(|e| Status::internal(e.to_string()))?;
    let id = checkpoint_id.to_string();
    let dir = dir.to_path_buf();
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        for name in files {
            let Ok(bytes) = std::fs::read(dir.join(&name)) else {
                return;
            };
            let mut offset = 0usize;
            // An empty file still sends one chunk, so it exists on the worker.
            loop {
                let end = (offset + CHUNK_BYTES).min(bytes.len());
                let chunk = CheckpointChunk {
                    checkpoint_id: id.clone(),
                    file: name.clone(),
                    offset: offset as u64,
                    data: bytes[offset..end].to_vec(),
                    sha256: String::new(),
                    last: false,
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                offset = end;
                if offset >= bytes.len() {
                    break;
                }
            }
        }
        let _ = tx
            .send(CheckpointChunk {
                checkpoint_id: id,
                sha256: digest,
                last: true,
                ..Default::default()
            })
            .await;
    });
    let resp = client
        .push_checkpoint(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    Ok(resp.into_inner())
}

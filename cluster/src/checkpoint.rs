//! Checkpoint transfer: the digest of a checkpoint folder, the registry record that names
//! it, and the chunked, verified push of that folder to a worker's `WorkerControl` service.
//!
//! A checkpoint is named after its content: its id is [`checkpoint_id_of`] its digest, so an
//! id cannot be given to other bytes. The trainer registers each checkpoint in etcd
//! ([`CheckpointRecord`] under `keys::checkpoint`) before pushing it, and a worker installs
//! only a push whose bytes have the digest of the record that its id names.

use crate::meta::{keys, MetaStore};
use crate::security::{Role, Transport};
use labelfleet_proto::v1::worker_control_client::WorkerControlClient;
use labelfleet_proto::v1::{CheckpointChunk, PushCheckpointResponse};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use thiserror::Error;
use tonic::Status;

/// Hex digits of the digest in a checkpoint id (128 bits).
pub const ID_DIGEST_HEX: usize = 32;

/// Object-store prefix of the checkpoint folders (`checkpoints/<id>`).
pub const STORE_PREFIX: &str = "checkpoints";

/// A checkpoint in the registry (`<prefix>/checkpoints/<id>` in etcd).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CheckpointRecord {
    pub checkpoint_id: String,
    pub run_id: String,
    pub base: String,
    pub dataset: String,
    /// Object-store key prefix holding the checkpoint files (`checkpoints/<id>`).
    pub location: String,
    pub sha256: String,
    pub heldout_agreement_with_teacher: f64,
    pub majority_baseline: f64,
    /// Mean |student expected grade - teacher expected grade| on the held-out pairs.
    #[serde(default)]
    pub heldout_expected_grade_mae: f64,
    /// The same for the majority-class baseline (always the most frequent teacher grade).
    #[serde(default)]
    pub majority_expected_grade_mae: f64,
    /// "pushing" until every live worker verified it, then "pushed".
    pub state: String,
    pub pushed_to: BTreeSet<String>,
}

/// Why a checkpoint (its id, its record, or pushed bytes) is not what it claims to be.
#[derive(Debug, Error, PartialEq)]
pub enum CheckpointError {
    /// The id is not `ckpt-` and the first [`ID_DIGEST_HEX`] hex digits of the content digest.
    #[error("checkpoint `{id}`: the id is not the name of its content (expected `{expected}`)")]
    NotContentName { id: String, expected: String },
    /// No registry record under the id.
    #[error("checkpoint `{id}`: not in the registry")]
    Unregistered { id: String },
    /// The registry record could not be read.
    #[error("checkpoint `{id}`: registry record unreadable: {message}")]
    BadRecord { id: String, message: String },
    /// The bytes have another digest than the registry's.
    #[error("checkpoint `{id}`: content digest {got} differs from the registry's {registered}")]
    DigestMismatch {
        id: String,
        got: String,
        registered: String,
    },
    /// The record points outside the store's checkpoint prefix.
    #[error("checkpoint `{id}`: registered location `{location}` is not `{STORE_PREFIX}/{id}`")]
    Location { id: String, location: String },
}

/// The id of a checkpoint whose content digest is `digest` (hex SHA-256).
pub fn checkpoint_id_of(digest: &str) -> String {
    let n = digest.len().min(ID_DIGEST_HEX);
    format!("ckpt-{}", &digest[..n])
}

/// Checks that `id` is the name of content with digest `digest`.
pub fn check_content_name(id: &str, digest: &str) -> Result<(), CheckpointError> {
    let expected = checkpoint_id_of(digest);
    if digest.len() < ID_DIGEST_HEX || id != expected {
        return Err(CheckpointError::NotContentName {
            id: id.to_string(),
            expected,
        });
    }
    Ok(())
}

/// The object-store location of checkpoint `id`.
pub fn store_location(id: &str) -> String {
    format!("{STORE_PREFIX}/{id}")
}

impl CheckpointRecord {
    /// Checks the record against itself: its id names its digest, and its files are at the
    /// store location of that id (so a forged record cannot point a download elsewhere).
    pub fn check(&self) -> Result<(), CheckpointError> {
        check_content_name(&self.checkpoint_id, &self.sha256)?;
        if self.location != store_location(&self.checkpoint_id) {
            return Err(CheckpointError::Location {
                id: self.checkpoint_id.clone(),
                location: self.location.clone(),
            });
        }
        Ok(())
    }
}

/// The registry record of checkpoint `id`, checked against itself. Errors of the metadata
/// store itself are the outer error (transient); a missing or bad record the inner one.
pub async fn registered(
    meta: &MetaStore,
    id: &str,
) -> crate::Result<Result<CheckpointRecord, CheckpointError>> {
    let Some(bytes) = meta.get(&keys::checkpoint(meta.prefix(), id)).await? else {
        return Ok(Err(CheckpointError::Unregistered { id: id.to_string() }));
    };
    let rec = match serde_json::from_slice::<CheckpointRecord>(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return Ok(Err(CheckpointError::BadRecord {
                id: id.to_string(),
                message: e.to_string(),
            }))
        }
    };
    if rec.checkpoint_id != id {
        return Ok(Err(CheckpointError::BadRecord {
            id: id.to_string(),
            message: format!("the record names checkpoint `{}`", rec.checkpoint_id),
        }));
    }
    Ok(rec.check().map(|_| rec))
}

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

/// SHA-256 over the files in push order, each framed as the length of its name, its name,
/// its size and its bytes (lengths as 8-byte little-endian), so that two folders have the
/// same digest only when they hold the same files with the same bytes.
pub fn checkpoint_digest(dir: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    for name in checkpoint_files(dir)? {
        let bytes = std::fs::read(dir.join(&name))?;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, sha: &str, location: &str) -> CheckpointRecord {
        CheckpointRecord {
            checkpoint_id: id.into(),
            sha256: sha.into(),
            location: location.into(),
            ..Default::default()
        }
    }

    /// Folders that differ only in where one file ends and the next begins have different
    /// digests (the unframed name-then-bytes digest gave both the digest of "abcd").
    #[test]
    fn the_digest_frames_names_and_contents() {
        let one = tempfile::tempdir().unwrap();
        std::fs::write(one.path().join("a"), b"bcd").unwrap();
        let two = tempfile::tempdir().unwrap();
        std::fs::write(two.path().join("a"), b"").unwrap();
        std::fs::write(two.path().join("b"), b"cd").unwrap();
        let (d1, d2) = (
            checkpoint_digest(one.path()).unwrap(),
            checkpoint_digest(two.path()).unwrap(),
        );
        assert_ne!(d1, d2);
        // the same files give the same digest
        let three = tempfile::tempdir().unwrap();
        std::fs::write(three.path().join("a"), b"bcd").unwrap();
        assert_eq!(checkpoint_digest(three.path()).unwrap(), d1);
    }

    #[test]
    fn ids_name_their_content() {
        let sha = "ab".repeat(32);
        let id = checkpoint_id_of(&sha);
        assert_eq!(id, format!("ckpt-{}", &sha[..32]));
        assert_eq!(check_content_name(&id, &sha), Ok(()));
        let other = "cd".repeat(32);
        assert!(matches!(
            check_content_name(&id, &other),
            Err(CheckpointError::NotContentName { expected, .. }) if expected == checkpoint_id_of(&other)
        ));
        // a short digest names nothing
        assert!(check_content_name("ckpt-ab", "ab").is_err());
    }

    #[test]
    fn a_record_points_at_its_own_store_folder_only() {
        let sha = "ef".repeat(32);
        let id = checkpoint_id_of(&sha);
        assert_eq!(record(&id, &sha, &store_location(&id)).check(), Ok(()));
        for bad in [
            "datasets/x".to_string(),
            format!("checkpoints/{id}/../../jobs"),
            format!("checkpoints/../{id}"),
            "/etc".to_string(),
            format!("checkpoints/{id}/"),
        ] {
            let err = record(&id, &sha, &bad).check().unwrap_err();
            assert!(
                matches!(&err, CheckpointError::Location { location, .. } if *location == bad),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&id), "{err}");
        }
        // an id that is not the digest's name is refused before the location is looked at
        assert!(matches!(
            record("ckpt-legacy", &sha, "checkpoints/ckpt-legacy").check(),
            Err(CheckpointError::NotContentName { .. })
        ));
    }

    #[tokio::test]
    async fn registered_reads_and_checks_the_record() {
        let meta = MetaStore::memory();
        let sha = "01".repeat(32);
        let id = checkpoint_id_of(&sha);
        assert_eq!(
            registered(&meta, &id).await.unwrap().unwrap_err(),
            CheckpointError::Unregistered { id: id.clone() }
        );
        let rec = record(&id, &sha, &store_location(&id));
        meta.put(
            &keys::checkpoint(meta.prefix(), &id),
            serde_json::to_vec(&rec).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(registered(&meta, &id).await.unwrap().unwrap().sha256, sha);
        // a record filed under another id is not this checkpoint's
        meta.put(
            &keys::checkpoint(meta.prefix(), "ckpt-other"),
            serde_json::to_vec(&rec).unwrap(),
        )
        .await
        .unwrap();
        assert!(matches!(
            registered(&meta, "ckpt-other").await.unwrap(),
            Err(CheckpointError::BadRecord { .. })
        ));
    }
}

//! Checkpoint pushes over real gRPC on loopback, against the checkpoint registry of an
//! in-process metadata store: only the registered content is installed under an id.

use labelfleet_cluster::checkpoint::{
    checkpoint_digest, checkpoint_id_of, push_checkpoint, store_location, CheckpointRecord,
};
use labelfleet_cluster::meta::{keys, MetaStore};
use labelfleet_cluster::security::{Access, Transport};
use labelfleet_proto::v1::worker_control_server::WorkerControlServer;
use labelfleet_worker::control::{ControlApi, ControlState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

struct Worker {
    address: String,
    state: Arc<ControlState>,
    checkpoints: PathBuf,
    meta: MetaStore,
    _dir: tempfile::TempDir,
}

/// A worker's control server on a free loopback port.
async fn worker() -> Worker {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    let meta = MetaStore::memory();
    let state = Arc::new(ControlState::default());
    let api = ControlApi {
        state: state.clone(),
        checkpoints: checkpoints.clone(),
        access: Access::Open,
        meta: meta.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerControlServer::new(api))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Worker {
        address,
        state,
        checkpoints,
        meta,
        _dir: dir,
    }
}

/// A checkpoint folder with `files`.
fn folder(root: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, bytes) in files {
        std::fs::write(dir.join(f), bytes).unwrap();
    }
    dir
}

/// Registers `dir` as the trainer does, under `id` (default: the name of its digest).
async fn register(meta: &MetaStore, dir: &Path, id: Option<&str>) -> (String, String) {
    let sha256 = checkpoint_digest(dir).unwrap();
    let id = id.map_or_else(|| checkpoint_id_of(&sha256), str::to_string);
    let rec = CheckpointRecord {
        checkpoint_id: id.clone(),
        location: store_location(&id),
        sha256: sha256.clone(),
        state: "pushing".into(),
        ..Default::default()
    };
    meta.put(
        &keys::checkpoint(meta.prefix(), &id),
        serde_json::to_vec(&rec).unwrap(),
    )
    .await
    .unwrap();
    (id, sha256)
}

impl Worker {
    async fn push(&self, dir: &Path, id: &str) -> Result<bool, tonic::Status> {
        push_checkpoint(
            &self.address,
            &Transport::Plaintext,
            dir,
            id,
            Duration::ZERO,
        )
        .await
        .map(|r| r.verified)
    }

    /// The names in the checkpoint folder (installed ids, and anything set aside).
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.checkpoints)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn assert_nothing_installed(&self) {
        let entries = self.entries();
        assert!(entries.is_empty(), "nothing installed: {entries:?}");
    }

    fn installed_digest(&self, id: &str) -> Option<String> {
        let dir = self.checkpoints.join(id);
        dir.is_dir().then(|| checkpoint_digest(&dir).unwrap())
    }
}

fn real_files() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("config.json", b"{\"model\": \"student\"}"),
        ("model.safetensors", b"the registered weights"),
    ]
}

#[tokio::test]
async fn a_registered_push_is_installed_and_a_repeat_is_idempotent() {
    let w = worker().await;
    let src = tempfile::tempdir().unwrap();
    let dir = folder(src.path(), "real", &real_files());
    let (id, sha) = register(&w.meta, &dir, None).await;
    assert!(w.push(&dir, &id).await.expect("installed"));
    assert_eq!(w.installed_digest(&id), Some(sha.clone()));
    // the same content again: verified, nothing changes
    assert!(w.push(&dir, &id).await.expect("installed"));
    assert_eq!(w.installed_digest(&id), Some(sha));
    assert_eq!(w.entries(), vec![id]);
    assert_eq!(w.state.checkpoints_installed.get(), 2);
    assert_eq!(w.state.pushes_rejected.get(), 0);
}

#[tokio::test]
async fn a_push_whose_bytes_differ_from_the_record_is_refused() {
    let w = worker().await;
    let src = tempfile::tempdir().unwrap();
    let real = folder(src.path(), "real", &real_files());
    let (id, sha) = register(&w.meta, &real, None).await;
    let fake = folder(
        src.path(),
        "fake",
        &[
            ("config.json", b"{}"),
            ("model.safetensors", b"other weights"),
        ],
    );
    let err = w.push(&fake, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&id) && err.message().contains(&sha),
        "names the checkpoint and the registered digest: {}",
        err.message()
    );
    w.assert_nothing_installed();
    assert_eq!(w.state.pushes_rejected.get(), 1);
    assert_eq!(w.state.checkpoints_installed.get(), 0);
}

#[tokio::test]
async fn a_push_for_an_unregistered_id_is_refused() {
    let w = worker().await;
    let src = tempfile::tempdir().unwrap();
    let dir = folder(src.path(), "real", &real_files());
    let id = checkpoint_id_of(&checkpoint_digest(&dir).unwrap());
    let err = w.push(&dir, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&id) && err.message().contains("not in the registry"),
        "{}",
        err.message()
    );
    w.assert_nothing_installed();
}

#[tokio::test]
async fn a_push_under_an_id_that_is_not_its_digest_is_refused() {
    let w = worker().await;
    let src = tempfile::tempdir().unwrap();
    let dir = folder(src.path(), "real", &real_files());
    // A record under a chosen name, with the content's true digest: the id is not its name.
    let (id, sha) = register(&w.meta, &dir, Some("ckpt-0000000000000000")).await;
    let err = w.push(&dir, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(&id)
            && err.message().contains("not the name of its content")
            && err.message().contains(&checkpoint_id_of(&sha)),
        "{}",
        err.message()
    );
    w.assert_nothing_installed();
    assert_eq!(w.state.checkpoints_installed.get(), 0);
}

/// A squatter pushes other bytes under the real checkpoint's id before the real push: its push
/// is refused and nothing is installed, and the real push then installs the real content.
#[tokio::test]
async fn a_squatted_push_is_refused_before_the_real_one() {
    let w = worker().await;
    let src = tempfile::tempdir().unwrap();
    let real = folder(src.path(), "real", &real_files());
    let squat = folder(src.path(), "squat", &[("config.json", b"{\"evil\": 1}")]);
    let id = checkpoint_id_of(&checkpoint_digest(&real).unwrap());
    // before the record exists
    let err = w.push(&squat, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(w.entries().is_empty(), "{:?}", w.entries());
    // and after
    let (_, sha) = register(&w.meta, &real, None).await;
    let err = w.push(&squat, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(w.entries().is_empty(), "{:?}", w.entries());
    assert!(w.push(&real, &id).await.expect("installed"));
    assert_eq!(w.installed_digest(&id), Some(sha));
    assert_eq!(w.state.pushes_rejected.get(), 2);
}

/// A copy under the id with other content already on the worker (put there by a worker
/// that did not check pushes): the real push is refused and reported, the copy is set aside
/// so no task loads it, and the next push installs the registered content.
#[tokio::test]
async fn an_id_installed_with_other_content_is_refused_reported_and_set_aside() {
    let w = worker().await;
    let src = tempfile::tempdir().unwrap();
    let real = folder(src.path(), "real", &real_files());
    let (id, sha) = register(&w.meta, &real, None).await;
    folder(&w.checkpoints, &id, &[("config.json", b"{\"evil\": 1}")]);
    let planted = w.installed_digest(&id).unwrap();

    let err = w.push(&real, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&id)
            && err
                .message()
                .contains("already installed with other content")
            && err.message().contains(&planted),
        "{}",
        err.message()
    );
    assert_eq!(w.state.checkpoint_conflicts.get(), 1);
    assert_eq!(w.state.checkpoints_installed.get(), 0);
    // nothing is installed under the id: the other copy is set aside (a dot-folder, which no
    // checkpoint id can name)
    assert_eq!(w.installed_digest(&id), None);
    let entries = w.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].starts_with(&format!(".conflict-{id}-")),
        "{entries:?}"
    );

    // the next push installs the registered content
    assert!(w.push(&real, &id).await.expect("installed"));
    assert_eq!(w.installed_digest(&id), Some(sha));
}

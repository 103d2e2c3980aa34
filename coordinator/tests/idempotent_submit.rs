//! Submits with an idempotency key over real gRPC on loopback (in-process metadata store, a
//! real object-store directory): retried and concurrent submits make one job, and a submit
//! the client walks away from is either finished (and found by the retry) or leaves nothing,
//! before and after a new leader takes over.

mod common;

use common::{label_spec, pair, start};
use labelfleet_cluster::meta::{keys, MetaStore};
use labelfleet_proto::v1::job_service_client::JobServiceClient;
use labelfleet_proto::v1::*;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

fn request(spec: JobSpec, key: &str) -> SubmitJobRequest {
    SubmitJobRequest {
        spec: Some(spec),
        idempotency_key: key.into(),
    }
}

async fn job_ids(jobs: &mut JobServiceClient<Channel>) -> Vec<String> {
    let mut ids: Vec<String> = jobs
        .list_jobs(ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    ids.sort();
    ids
}

/// The job records in the metadata store (what a new leader loads).
async fn records(meta: &MetaStore) -> Vec<String> {
    meta.list(&keys::jobs(meta.prefix()))
        .await
        .expect("list records")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

async fn key_value(meta: &MetaStore, key: &str) -> Option<String> {
    meta.get(&keys::idempotency(meta.prefix(), key))
        .await
        .expect("get key")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The files under the store's `jobs/` folder.
fn job_objects(store: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&store.join("jobs"), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_retried_submits_with_one_key_make_one_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::memory();
    let first = start(&meta, dir.path()).await;
    let mut jobs = first.jobs().await;
    let corpus = common::upload_corpus(&mut jobs).await.corpus_id;
    let spec = label_spec(&corpus, 2000, 10);

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (mut client, req) = (jobs.clone(), request(spec.clone(), "same-key"));
        calls.spawn(async move { client.submit_job(req).await.map(|r| r.into_inner().job_id) });
    }
    let mut ids = Vec::new();
    while let Some(r) = calls.join_next().await {
        ids.push(r.expect("join").expect("submit"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one job for one key: {ids:?}");
    let retried = jobs
        .submit_job(request(spec.clone(), "same-key"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried.job_id, ids[0]);
    assert_eq!(job_ids(&mut jobs).await, ids);
    assert_eq!(records(&meta).await.len(), 1);
    assert_eq!(
        key_value(&meta, "same-key").await.as_deref(),
        Some(ids[0].as_str())
    );

    // a new leader has the one job, and hands it back to the same key
    first.stop().await;
    let second = start(&meta, dir.path()).await;
    let mut jobs = second.jobs().await;
    assert_eq!(job_ids(&mut jobs).await, ids);
    let again = jobs
        .submit_job(request(spec, "same-key"))
        .await
        .expect("retry after failover")
        .into_inner();
    assert_eq!(again.job_id, ids[0]);
    second.stop().await;
}

/// A key left by a submit that never committed (its leader died mid-way) does not block or
/// mislead a retry: the retry makes the job, and the dead submit's objects are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_job_is_taken_over_by_the_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::memory();
    let orphan = "job-1-dead";
    meta.put(
        &keys::idempotency(meta.prefix(), "k"),
        orphan.as_bytes().to_vec(),
    )
    .await
    .unwrap();
    let leftover = dir.path().join(format!("jobs/{orphan}/tasks/t0"));
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    std::fs::write(&leftover, b"half a submit").unwrap();

    let replica = start(&meta, dir.path()).await;
    let mut jobs = replica.jobs().await;
    let corpus = common::upload_corpus(&mut jobs).await.corpus_id;
    let job = jobs
        .submit_job(request(label_spec(&corpus, 30, 10), "k"))
        .await
        .expect("submit")
        .into_inner();
    assert_ne!(job.job_id, orphan);
    assert_eq!(key_value(&meta, "k").await, Some(job.job_id.clone()));
    assert_eq!(job_ids(&mut jobs).await, vec![job.job_id.clone()]);
    assert!(!leftover.exists(), "the dead submit's objects are deleted");
    replica.stop().await;
}

/// The client cancels a streamed submit after its first message: the submit fails on its
/// own task and leaves no record, key or object; the retry makes the one job, which a new
/// leader has too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_submit_cancelled_by_the_client_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::memory();
    let first = start(&meta, dir.path()).await;
    let mut jobs = first.jobs().await;
    let corpus = common::upload_corpus(&mut jobs).await.corpus_id;
    let spec = label_spec(&corpus, 0, 10);
    let first_chunk = SubmitJobChunk {
        request: Some(request(spec.clone(), "stream-key")),
        pairs: (0..100).map(pair).collect(),
    };

    // The client runs on a runtime of its own, which is shut down mid-stream: its connection
    // goes away as with a client that was killed (the stream is never closed cleanly).
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    let (url, chunk) = (first.url.clone(), first_chunk.clone());
    client_rt.spawn(async move {
        let mut client = JobServiceClient::connect(url).await.expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(chunk).await.expect("first chunk");
        let _open = tx; // the stream stays open until the runtime dies
        let _ = client
            .submit_job_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
    });
    // the coordinator claimed the key: the submit is under way
    let mut claimed = None;
    for _ in 0..500 {
        claimed = key_value(&meta, "stream-key").await;
        if claimed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let claimed = claimed.expect("the submit started");
    client_rt.shutdown_background();

    // the submit is undone: no key, no record, no objects
    let mut left = (Some(String::new()), 1, 1);
    for _ in 0..500 {
        left = (
            key_value(&meta, "stream-key").await,
            records(&meta).await.len(),
            job_objects(dir.path()).len(),
        );
        if left == (None, 0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left, (None, 0, 0), "key, records, objects of {claimed}");
    assert!(job_ids(&mut jobs).await.is_empty());

    // the retry makes one job; a new leader has that one job only
    let mut chunks = vec![first_chunk];
    chunks.push(SubmitJobChunk {
        request: None,
        pairs: (100..150).map(pair).collect(),
    });
    let job = jobs
        .submit_job_stream(tokio_stream::iter(chunks))
        .await
        .expect("retried submit")
        .into_inner();
    assert_eq!(job.stages[0].total, 150);
    first.stop().await;
    let second = start(&meta, dir.path()).await;
    let mut jobs = second.jobs().await;
    assert_eq!(job_ids(&mut jobs).await, vec![job.job_id.clone()]);
    second.stop().await;
}

/// The client gives up on a unary submit before the answer: the submit runs to its end
/// anyway, and the retry with the key gets that job (no second one, before or after a new
/// leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_submit_abandoned_by_the_client_commits_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::memory();
    let first = start(&meta, dir.path()).await;
    let mut jobs = first.jobs().await;
    let corpus = common::upload_corpus(&mut jobs).await.corpus_id;
    let spec = label_spec(&corpus, 20_000, 100);

    let mut client = jobs.clone();
    let req = request(spec.clone(), "unary-key");
    let call = tokio::spawn(async move { client.submit_job(req).await });
    for _ in 0..500 {
        if key_value(&meta, "unary-key").await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    call.abort(); // the client goes away (the submit may or may not be done by now)
    let _ = call.await;

    let retried = jobs
        .submit_job(request(spec.clone(), "unary-key"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried.stages[0].total, 20_000);
    assert_eq!(job_ids(&mut jobs).await, vec![retried.job_id.clone()]);
    assert_eq!(records(&meta).await.len(), 1);
    first.stop().await;
    let second = start(&meta, dir.path()).await;
    let mut jobs = second.jobs().await;
    assert_eq!(job_ids(&mut jobs).await, vec![retried.job_id]);
    second.stop().await;
}

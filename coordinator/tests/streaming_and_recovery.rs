//! A coordinator over real gRPC on loopback (in-process metadata store, a real object-store
//! directory): a job submitted by streaming its pairs, part of it committed, the leader
//! stopped, a successor started on the same metadata and store, the rest committed. Every pair
//! is labeled exactly once.

mod common;

use common::{label_spec, pair, start, start_with, upload_corpus};
use labelfleet_cluster::meta::MetaStore;
use labelfleet_coordinator::server::CoordinatorConfig;
use labelfleet_proto::v1::task_service_client::TaskServiceClient;
use labelfleet_proto::v1::*;
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::Channel;

/// Leases up to `max_tasks` tasks and commits one label per pair; returns the pairs committed.
async fn work(tasks: &mut TaskServiceClient<Channel>, max_tasks: usize) -> usize {
    let mut committed = 0;
    for _ in 0..max_tasks {
        let leased = tasks
            .lease_tasks(LeaseTasksRequest {
                worker_id: "w1".into(),
                max_tasks: 1,
                kinds: vec![],
            })
            .await
            .expect("lease")
            .into_inner()
            .tasks;
        let Some(task) = leased.into_iter().next() else {
            break;
        };
        // The document was resolved from the corpus and inlined by the coordinator.
        assert!(task.pairs.iter().all(|p| matches!(
            &p.document,
            Some(pair_input::Document::Inline(d)) if d.body.starts_with("body of d")
        )));
        let labels = task
            .pairs
            .iter()
            .map(|p| Label {
                pair_id: p.pair_id.clone(),
                query_id: p.query_id.clone(),
                grade: 2,
                ..Default::default()
            })
            .collect::<Vec<_>>();
        let n = labels.len();
        let r = tasks
            .complete_task(CompleteTaskRequest {
                worker_id: "w1".into(),
                task_id: task.task_id,
                attempt: task.attempt,
                fencing_token: task.fencing_token,
                lease_token: task.lease_token.clone(),
                labels,
                ..Default::default()
            })
            .await
            .expect("complete")
            .into_inner();
        assert!(r.committed);
        committed += n;
    }
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_job_survives_a_new_leader_with_every_pair_labeled_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::memory();
    let first = start(&meta, dir.path()).await;
    let (mut jobs, mut tasks) = first.clients().await;
    let corpus = upload_corpus(&mut jobs).await;

    // 1,003 pairs in chunks of 100, 10 per task: 101 tasks, the last one of 3 pairs.
    let spec = label_spec(&corpus.corpus_id, 0, 10);
    let mut chunks = vec![SubmitJobChunk {
        request: Some(SubmitJobRequest {
            spec: Some(spec.clone()),
            idempotency_key: String::new(),
        }),
        pairs: Vec::new(),
    }];
    for start in (0..1003).step_by(100) {
        chunks.push(SubmitJobChunk {
            request: None,
            pairs: (start..(start + 100).min(1003)).map(pair).collect(),
        });
    }
    let job = jobs
        .submit_job_stream(tokio_stream::iter(chunks))
        .await
        .expect("streamed submit")
        .into_inner();
    assert_eq!(job.stages[0].total, 1003);

    let before = work(&mut tasks, 40).await;
    assert_eq!(before, 400);
    first.stop().await;

    // The successor resumes from the record and the committed result objects.
    let second = start(&meta, dir.path()).await;
    let (mut jobs, mut tasks) = second.clients().await;
    let resumed = jobs
        .get_job(GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .expect("job after failover")
        .into_inner();
    assert_eq!(resumed.stages[0].done, 400);
    assert_eq!(resumed.state, JobState::Running as i32);
    let after = work(&mut tasks, 1000).await;
    assert_eq!(after, 603);
    let done = jobs
        .get_job(GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .expect("job")
        .into_inner();
    assert_eq!(done.state, JobState::Succeeded as i32);

    // Every pair exactly once in the fetched results.
    let mut stream = jobs
        .fetch_results(FetchResultsRequest {
            job_id: job.job_id.clone(),
            stage: "labels".into(),
            offset: 0,
        })
        .await
        .expect("fetch")
        .into_inner();
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Some(batch) = stream.message().await.expect("batch") {
        for l in batch.labels {
            *seen.entry(l.pair_id).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 1003);
    assert!(seen.values().all(|&n| n == 1));

    // A stage the job does not have, and a pair naming a document the corpus lacks.
    let wrong = jobs
        .fetch_results(FetchResultsRequest {
            job_id: job.job_id.clone(),
            stage: "queries".into(),
            offset: 0,
        })
        .await
        .expect_err("a label job has no queries");
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    let mut bad = pair(5);
    bad.document = Some(pair_input::Document::DocId("nope".into()));
    let err = jobs
        .submit_job_stream(tokio_stream::iter(vec![
            SubmitJobChunk {
                request: Some(SubmitJobRequest {
                    spec: Some(spec),
                    idempotency_key: String::new(),
                }),
                pairs: vec![pair(0)],
            },
            SubmitJobChunk {
                request: None,
                pairs: vec![bad],
            },
        ]))
        .await
        .expect_err("unknown document");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("label_pairs[1] (pair `p5`).doc_id: `nope`"),
        "{}",
        err.message()
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_deleted_after_its_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::memory();
    let replica = start_with(
        &meta,
        dir.path(),
        CoordinatorConfig {
            job_retention: Duration::from_millis(300),
            gc_interval: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await;
    let (mut jobs, mut tasks) = replica.clients().await;
    let corpus = upload_corpus(&mut jobs).await;
    let job = jobs
        .submit_job(SubmitJobRequest {
            spec: Some(label_spec(&corpus.corpus_id, 20, 10)),
            idempotency_key: String::new(),
        })
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(work(&mut tasks, 10).await, 20);
    let job_dir = dir.path().join("jobs").join(&job.job_id);
    assert!(job_dir.join("results").is_dir());
    // Kept while its retention runs, then gone: the record, the tasks and the results.
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = jobs
            .get_job(GetJobRequest {
                job_id: job.job_id.clone(),
            })
            .await;
        if matches!(&r, Err(s) if s.code() == tonic::Code::NotFound) {
            gone = true;
            break;
        }
    }
    assert!(gone, "the job outlived its retention");
    let left = walk_files(&job_dir);
    assert!(left.is_empty(), "objects left: {left:?}");
    let records = meta
        .list(&format!("{}/jobs/", meta.prefix()))
        .await
        .expect("list");
    assert!(records.is_empty(), "{records:?}");
    replica.stop().await;
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_files(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_object_fails_its_own_job_and_the_new_leader_still_leads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = MetaStore::memory();
    let first = start(&meta, dir.path()).await;
    let (mut jobs, _) = first.clients().await;
    let corpus = upload_corpus(&mut jobs).await;
    let submit = |name: &'static str| {
        let mut jobs = jobs.clone();
        let corpus_id = corpus.corpus_id.clone();
        async move {
            jobs.submit_job(SubmitJobRequest {
                spec: Some(JobSpec {
                    name: name.into(),
                    ..label_spec(&corpus_id, 20, 10)
                }),
                idempotency_key: String::new(),
            })
            .await
            .expect("submit")
            .into_inner()
        }
    };
    let broken = submit("broken").await;
    let healthy = submit("healthy").await;
    first.stop().await;
    let spec = dir.path().join("jobs").join(&broken.job_id).join("spec.pb");
    std::fs::write(&spec, b"\xff\xff\xff not a spec").expect("corrupt the spec");

    let second = start(&meta, dir.path()).await;
    let (mut jobs, mut tasks) = second.clients().await;
    let failed = jobs
        .get_job(GetJobRequest {
            job_id: broken.job_id.clone(),
        })
        .await
        .expect("the broken job is still known")
        .into_inner();
    assert_eq!(failed.state, JobState::Failed as i32);
    assert!(
        failed.error.contains("spec.pb") && failed.error.contains("undecodable"),
        "{}",
        failed.error
    );
    // The other job is untouched and runs to the end.
    assert_eq!(work(&mut tasks, 10).await, 20);
    let done = jobs
        .get_job(GetJobRequest {
            job_id: healthy.job_id.clone(),
        })
        .await
        .expect("job")
        .into_inner();
    assert_eq!(done.state, JobState::Succeeded as i32);
    second.stop().await;
}

/// A corpus job over the seven documents.
fn corpus_spec(corpus_id: &str) -> JobSpec {
    JobSpec {
        kind: JobKind::Corpus as i32,
        corpus_id: corpus_id.into(),
        seed_documents: 4,
        queries_per_document: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_jobs_are_refused_with_the_reason_cancelled_and_recorded_for_a_new_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let meta = MetaStore::memory();
    // without a trainer, a replica cannot run corpus jobs: FAILED_PRECONDITION, not a retry
    let plain = start(&meta, dir.path()).await;
    let (mut jobs, _) = plain.clients().await;
    let corpus = upload_corpus(&mut jobs).await;
    let refused = jobs
        .submit_job(SubmitJobRequest {
            spec: Some(corpus_spec(&corpus.corpus_id)),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("no trainer");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    // a corpus-only field in a labeling job is refused by name
    let mut labeling = label_spec(&corpus.corpus_id, 10, 10);
    labeling.label_queries.push(QueryInput {
        query_id: "q1".into(),
        text: "wings".into(),
    });
    let refused = jobs
        .submit_job(SubmitJobRequest {
            spec: Some(labeling),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("corpus-only field");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("spec.label_queries"),
        "{refused:?}"
    );
    plain.stop().await;

    // with a trainer that never answers, the driver waits on it; the job is cancelled meanwhile
    let dead_trainer = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let with_trainer = CoordinatorConfig {
        trainer: Some(dead_trainer.to_string()),
        scratch: dir.path().join("scratch"),
        ..Default::default()
    };
    let leader = start_with(&meta, &dir.path().join("store"), with_trainer.clone()).await;
    let (mut jobs, _) = leader.clients().await;
    let corpus = upload_corpus(&mut jobs).await;
    let submit = SubmitJobRequest {
        spec: Some(corpus_spec(&corpus.corpus_id)),
        idempotency_key: "corpus-1".into(),
    };
    let job = jobs
        .submit_job(submit.clone())
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(job.state, JobState::Running as i32);
    // a retried submit gets the same corpus job
    let again = jobs
        .submit_job(submit)
        .await
        .expect("resubmit")
        .into_inner();
    assert_eq!(again.job_id, job.job_id);
    let cancelled = jobs
        .cancel_job(CancelJobRequest {
            job_id: job.job_id.clone(),
            reason: "test".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.state, JobState::Cancelled as i32);
    // a corpus job's results are artifacts, not labels
    let fetched = jobs
        .fetch_results(FetchResultsRequest {
            job_id: job.job_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("corpus job results");
    assert_eq!(fetched.code(), tonic::Code::InvalidArgument);
    leader.stop().await;

    // a new leader reads the corpus job back as it was recorded, and starts no driver for it
    let successor = start_with(&meta, &dir.path().join("store"), with_trainer).await;
    let (mut jobs, _) = successor.clients().await;
    let seen = jobs
        .get_job(GetJobRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(seen.state, JobState::Cancelled as i32, "{seen:?}");
    assert!(seen.error.contains("test"), "{seen:?}");
    let kinds: Vec<i32> = jobs
        .list_jobs(ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .jobs
        .iter()
        .map(|j| j.spec.as_ref().map_or(0, |s| s.kind))
        .collect();
    assert_eq!(kinds, vec![JobKind::Corpus as i32]);
    successor.stop().await;
}

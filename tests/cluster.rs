//! The cluster on loopback with a real etcd, real processes and the real engine (MiniLM
//! cross-encoder on CPU). Every test proves its claim by counting labels, both as fetched
//! through the client and as stored in the object store.
//!
//! Each fault test runs twice: on a local store directory, and (`s3_...`) on a bucket of a real
//! S3-compatible server (moto) that the test starts, every role given `--store s3://...`.

mod harness;

use harness::{cranfield_pairs, Cluster, Options, S3Server, Store, BUCKET};
use labelfleet_cluster::blobs::{Blobs, Created};
use labelfleet_proto::v1::JobState;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(900);

/// Every pair except `missing` has exactly one label; none has more; nothing else is labeled.
fn assert_exactly_once(counts: &HashMap<String, usize>, n: usize, missing: &[String], what: &str) {
    let dup: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).take(5).collect();
    assert!(dup.is_empty(), "{what}: duplicated labels: {dup:?}");
    let lost: Vec<String> = (0..n)
        .map(|i| format!("p{i}"))
        .filter(|p| !counts.contains_key(p) && !missing.contains(p))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "{what}: lost labels, e.g. {lost:?}");
    for m in missing {
        assert!(!counts.contains_key(m), "{what}: {m} should have no label");
    }
    assert_eq!(counts.len(), n - missing.len(), "{what}: label count");
}

fn check_job(cluster: &Cluster, job_id: &str, n: usize, missing: &[String]) {
    let fetched = cluster.fetch_label_counts(job_id);
    assert_exactly_once(&fetched, n, missing, "fetched");
    let stored = cluster.stored_label_counts(job_id);
    assert_exactly_once(&stored, n, missing, "stored");
}

/// The S3 server's create-once write, checked before any cluster test relies on it: of two
/// writers of one key the second is refused, and of many concurrent ones exactly one wins; the
/// store's prefix inside the bucket is honoured.
#[test]
fn s3_server_refuses_a_second_create_once_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start(dir.path());
    let blobs = s3.blobs(&format!("s3://{BUCKET}/check/prefix"));
    let rt = harness::runtime();
    rt.block_on(async {
        let first = blobs
            .put_once("jobs/j/results/t.pb", b"first".to_vec())
            .await;
        assert_eq!(first.expect("first writer"), Created::Written);
        let second = blobs
            .put_once("jobs/j/results/t.pb", b"second".to_vec())
            .await;
        assert_eq!(second.expect("second writer"), Created::AlreadyExists);
        let kept = blobs.get("jobs/j/results/t.pb").await.expect("get");
        assert_eq!(
            kept.as_deref(),
            Some(&b"first"[..]),
            "the first write is kept"
        );
        // Racing writers: exactly one creates the object.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let b = blobs.clone();
                tokio::spawn(async move { b.put_once("race", vec![i]).await })
            })
            .collect();
        let mut written = 0;
        for r in racers {
            if r.await.expect("task").expect("put_once") == Created::Written {
                written += 1;
            }
        }
        assert_eq!(written, 1, "exactly one racing writer creates the object");
        // Keys live under the prefix inside the bucket.
        let root = s3.blobs(&format!("s3://{BUCKET}"));
        let keys = root.list("check").await.expect("list");
        assert_eq!(
            keys,
            vec!["check/prefix/jobs/j/results/t.pb", "check/prefix/race"]
        );
    });
}

#[test]
fn ten_thousand_pairs_each_labeled_once_and_a_bad_task_fails_alone() {
    ten_thousand_pairs(Store::Local);
}

#[test]
fn s3_ten_thousand_pairs_each_labeled_once_and_a_bad_task_fails_alone() {
    ten_thousand_pairs(Store::S3);
}

fn ten_thousand_pairs(store: Store) {
    let cluster = Cluster::start(Options {
        store,
        ..Options::default()
    });
    // The full cast: leader, standby, three workers and a trainer.
    let mut trainer = cluster.spawn_trainer("trainer", harness::free_port(), 0.0);
    let n = 10_000;
    // p4321 has an empty query: its task (pairs 4300..4399 at 100 per task) must fail with the
    // reason recorded, and every other pair must be labeled.
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &["p4321"]);
    let job_id = cluster.submit(&corpus, &pairs, 100);
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    let stage = &job.stages[0];
    assert_eq!(
        (stage.total, stage.done, stage.failed),
        (n as u64, 9_900, 100)
    );
    assert!(
        job.error.contains("p4321") && job.error.contains("query"),
        "the failure names the pair and field: {}",
        job.error
    );
    let missing: Vec<String> = (4300..4400).map(|i| format!("p{i}")).collect();
    check_job(&cluster, &job_id, n, &missing);
    // The leader's Prometheus metrics agree with the counts.
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let m = cluster.metrics(leader);
    assert_eq!(m["labelfleet_is_leader"], 1.0);
    assert_eq!(m["labelfleet_pairs_total"], 9_900.0);
    assert_eq!(m["labelfleet_tasks_committed_total"], 99.0);
    assert_eq!(m["labelfleet_tasks_failed_total"], 1.0);
    assert_eq!(m["labelfleet_queue_depth"], 0.0);
    assert_eq!(m["labelfleet_tasks_in_flight"], 0.0);
    assert_eq!(m["labelfleet_workers"], 3.0);
    // every gRPC call is counted by method and code, and timed
    let completed = r#"labelfleet_grpc_server_calls_total{method="labelfleet.v1.TaskService/CompleteTask",code="Ok"}"#;
    assert!(m.get(completed).is_some_and(|&n| n >= 99.0), "{m:?}");
    let timed =
        r#"labelfleet_grpc_server_seconds_count{method="labelfleet.v1.TaskService/CompleteTask"}"#;
    assert!(m.get(timed).is_some_and(|&n| n >= 99.0), "{m:?}");
    let standby = cluster.metrics(1 - leader);
    assert_eq!(standby["labelfleet_is_leader"], 0.0);
    assert!(
        trainer.alive(),
        "the trainer ran throughout\n{}",
        trainer.log_tail(10)
    );
    // Every worker took part (the leader spread the tasks).
    for w in &cluster.workers {
        let log = std::fs::read_to_string(&w.log).unwrap_or_default();
        assert!(
            log.contains("model loaded"),
            "{} did no work:\n{}",
            w.name,
            w.log_tail(20)
        );
    }
}

#[test]
fn workers_killed_or_drained_mid_job_lose_nothing() {
    workers_killed_or_drained(Store::Local);
}

#[test]
fn s3_workers_killed_or_drained_mid_job_lose_nothing() {
    workers_killed_or_drained(Store::S3);
}

fn workers_killed_or_drained(store: Store) {
    let mut cluster = Cluster::start(Options {
        store,
        ..Options::default()
    });
    let n = 3_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    cluster.wait_progress(&job_id, 0.3, TIMEOUT);
    cluster.workers[0].kill9();
    // SIGTERM: the worker stops leasing, finishes what it holds, commits it and exits 0.
    cluster.wait_progress(&job_id, 0.5, TIMEOUT);
    cluster.workers[1].sigterm();
    let status = cluster.workers[1].child.wait().expect("worker exit status");
    assert!(
        status.success(),
        "a drained worker exits cleanly: {status:?}"
    );
    let log = std::fs::read_to_string(&cluster.workers[1].log).unwrap_or_default();
    assert!(
        log.contains("drained; stopping"),
        "{}",
        cluster.workers[1].log_tail(10)
    );
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.stages[0].done, n as u64);
    check_job(&cluster, &job_id, n, &[]);
}

#[test]
fn the_standby_takes_over_when_the_leader_is_killed() {
    standby_takes_over(Store::Local);
}

#[test]
fn s3_the_standby_takes_over_when_the_leader_is_killed() {
    standby_takes_over(Store::S3);
}

fn standby_takes_over(store: Store) {
    let mut cluster = Cluster::start(Options {
        store,
        ..Options::default()
    });
    let n = 3_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    cluster.wait_progress(&job_id, 0.3, TIMEOUT);
    let old = cluster.wait_leader(Duration::from_secs(10));
    // Both replicas are ready (a standby forwards clients to the leader); only the leader
    // carries the leader signal.
    wait_health(&cluster, 1 - old, "", "SERVING");
    assert_eq!(cluster.health(old), "SERVING");
    assert_eq!(cluster.health_of(old, "labelfleet.v1.Leader"), "SERVING");
    assert_eq!(
        cluster.health_of(1 - old, "labelfleet.v1.Leader"),
        "NOT_SERVING"
    );
    cluster.coordinators[old].kill9();
    let new = cluster.wait_leader(Duration::from_secs(60));
    assert_ne!(old, new, "a standby must lead now");
    assert_eq!(cluster.health(new), "SERVING");
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.stages[0].done, n as u64);
    check_job(&cluster, &job_id, n, &[]);
    let log = std::fs::read_to_string(&cluster.coordinators[new].log).unwrap_or_default();
    assert!(
        log.contains("state loaded"),
        "the new leader reloaded state"
    );
}

/// Waits (up to 10 s: readiness is re-checked every second) for a health answer.
fn wait_health(cluster: &Cluster, coordinator: usize, service: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = cluster.health_of(coordinator, service);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "coordinator{coordinator} health({service:?}) is {got}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every replica serves clients: a client that knows only the standby uploads, submits,
/// watches, lists and fetches through it, and gets the leader's answers (each pair labeled
/// once). Workers lease from the leader alone: TaskService is SERVING there only.
#[test]
fn a_client_of_the_standby_gets_its_answers_from_the_leader() {
    let cluster = Cluster::start(Options::default());
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let standby = 1 - leader;
    wait_health(&cluster, standby, "", "SERVING");
    assert_eq!(
        cluster.health_of(standby, "labelfleet.v1.JobService"),
        "SERVING"
    );
    assert_eq!(
        cluster.health_of(standby, "labelfleet.v1.TaskService"),
        "NOT_SERVING"
    );
    assert_eq!(
        cluster.health_of(leader, "labelfleet.v1.TaskService"),
        "SERVING"
    );

    let url = format!("http://127.0.0.1:{}", cluster.coordinator_ports[standby]);
    let n = 600;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let (corpus, pairs) = (corpus.display().to_string(), pairs.display().to_string());
    let submitted = cluster.cli(&[
        "submit",
        "--coordinator",
        &url,
        "--corpus",
        &corpus,
        "--pairs",
        &pairs,
        "--task-size",
        "50",
        "--model",
        "minilm",
        "--watch",
    ]);
    let job_id = submitted.lines().next().expect("job id").trim().to_string();
    let status: serde_json::Value = serde_json::from_str(
        cluster
            .cli(&["status", "--coordinator", &url, &job_id, "-o", "json"])
            .trim(),
    )
    .expect("status -o json");
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["stages"][0]["done"], n as u64, "{status}");
    let listed = cluster.cli(&["list", "--coordinator", &url, "-o", "json"]);
    assert!(
        listed
            .lines()
            .any(|l| serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|j| j["job_id"] == job_id.as_str())),
        "{listed}"
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for label in cluster.fetch_labels_via(&url, &job_id) {
        *counts
            .entry(label["id"].as_str().expect("id").to_string())
            .or_insert(0) += 1;
    }
    assert_exactly_once(&counts, n, &[], "labels fetched through the standby");
    // it was the leader that ran the job: the standby never led
    assert_eq!(cluster.leader(), Some(leader));
    let log = std::fs::read_to_string(&cluster.coordinators[standby].log).unwrap_or_default();
    assert!(!log.contains("elected leader"), "{log}");
}

/// A worker told to warm a model reports SERVING only once the model is loaded and has graded
/// its warm-up batch; then it labels like any other.
#[test]
fn a_worker_is_ready_only_after_its_warm_up_batch() {
    let health_port = harness::free_port();
    let mut cluster = Cluster::start(Options {
        coordinators: 1,
        workers: 0,
        worker_env: vec![
            ("LABELFLEET_WARM_MODELS".into(), "minilm".into()),
            (
                "LABELFLEET_HEALTH_LISTEN".into(),
                format!("127.0.0.1:{health_port}"),
            ),
        ],
        ..Options::default()
    });
    let port = harness::free_port();
    cluster.worker_ports.push(port);
    let worker = cluster.spawn_worker(0, port);
    cluster.workers.push(worker);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answers = BTreeSet::new();
    loop {
        let status = harness::health_status(health_port, "");
        answers.insert(status.clone());
        if status == "SERVING" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // the warm-up was logged before the worker said SERVING
    let log = std::fs::read_to_string(&cluster.workers[0].log).unwrap_or_default();
    let warm = log
        .find("model warm")
        .unwrap_or_else(|| panic!("no warm-up in the log:\n{log}"));
    let ready = log.find("worker ready").expect("ready line");
    assert!(warm < ready, "{log}");
    assert!(log[warm..].contains("pairs=8"), "{log}");
    assert!(
        answers
            .iter()
            .all(|a| ["SERVING", "NOT_SERVING", "UNREACHABLE"].contains(&a.as_str())),
        "{answers:?}"
    );
    let n = 200;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    check_job(&cluster, &job_id, n, &[]);

    // A job that ends FAILED makes `submit --watch` fail (exit code 4), so the Kubernetes Job
    // that ran it fails too: a model outside the worker's model roots fails every task for good.
    let outside = cluster.dir.path().join("not-a-model");
    let watched = std::process::Command::new(harness::binary())
        .args([
            "submit",
            "--coordinator",
            &cluster.coordinator_list(),
            "--corpus",
        ])
        .arg(&corpus)
        .arg("--pairs")
        .arg(&pairs)
        .args(["--task-size", "100", "--model"])
        .arg(&outside)
        .arg("--watch")
        .output()
        .expect("labelfleet submit");
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert_eq!(watched.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("FAILED") || stderr.contains("failed"),
        "{stderr}"
    );
}

/// An upload cut off mid-stream through the standby commits nothing on the leader: the
/// forwarded call is cancelled, never ended as if the corpus were whole. The same upload
/// completed through the standby is stored.
#[test]
fn an_upload_cut_off_through_the_standby_commits_nothing() {
    use labelfleet_proto::v1::job_service_client::JobServiceClient;
    use labelfleet_proto::v1::{CorpusChunk, Document};
    let cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    });
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let standby = 1 - leader;
    wait_health(&cluster, standby, "", "SERVING");
    let url = format!("http://127.0.0.1:{}", cluster.coordinator_ports[standby]);
    let chunk = |name: &str| CorpusChunk {
        corpus_name: name.to_string(),
        documents: (0..100)
            .map(|i| Document {
                id: format!("d{i}"),
                body: format!("document number {i} about boundary layers"),
                ..Default::default()
            })
            .collect(),
    };
    let blobs = cluster.blobs();
    let rt = harness::runtime();
    let corpora = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .expect("standby");
        // cut off: one chunk sent, then the client goes away without ending the stream
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut client = JobServiceClient::new(channel.clone());
        let call = tokio::spawn(async move {
            client
                .upload_corpus(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        tx.send(chunk("cut")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        call.abort();
        let _ = call.await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(tx);
        let cut = blobs.list("corpora/").await.expect("listing corpora");
        // whole: the same upload, ended, is stored
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut client = JobServiceClient::new(channel);
        tx.send(chunk("whole")).await.unwrap();
        drop(tx);
        let stored = client
            .upload_corpus(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("upload through the standby")
            .into_inner();
        assert_eq!(stored.accepted, 100);
        let whole = blobs.list("corpora/").await.expect("listing corpora");
        (cut, whole)
    });
    assert!(corpora.0.is_empty(), "a cut upload left {:?}", corpora.0);
    assert!(!corpora.1.is_empty(), "the whole upload is stored");
}

#[test]
fn an_etcd_restart_mid_job_loses_nothing() {
    etcd_restart(Store::Local);
}

#[test]
fn s3_an_etcd_restart_mid_job_loses_nothing() {
    etcd_restart(Store::S3);
}

fn etcd_restart(store: Store) {
    let mut cluster = Cluster::start(Options {
        store,
        election_ttl_s: 10,
        registration_ttl_s: 10,
        ..Options::default()
    });
    let n = 3_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_id = cluster.submit(&corpus, &pairs, 50);
    cluster.wait_progress(&job_id, 0.3, TIMEOUT);
    cluster.kill_etcd();
    std::thread::sleep(Duration::from_secs(2));
    cluster.start_etcd();
    let job = cluster.wait_finished(&job_id, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    assert_eq!(job.stages[0].done, n as u64);
    check_job(&cluster, &job_id, n, &[]);
}

/// A teacher-labels dataset for the trainer, from Cranfield text with a lexical-overlap
/// "teacher" (no human judgments are used for training), put into the cluster's store.
fn write_teacher_dataset(cluster: &Cluster, n: usize) -> String {
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let docs: HashMap<String, serde_json::Value> = std::fs::read_to_string(corpus)
        .expect("corpus")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("doc");
            (v["id"].as_str().expect("id").to_string(), v)
        })
        .collect();
    let mut out = String::new();
    for line in std::fs::read_to_string(pairs).expect("pairs").lines() {
        let p: serde_json::Value = serde_json::from_str(line).expect("pair");
        let d = &docs[p["doc_id"].as_str().expect("doc_id")];
        let query = p["query"].as_str().expect("query");
        let body = d["body"].as_str().unwrap_or("");
        let overlap = query
            .split_whitespace()
            .filter(|w| w.len() > 3 && body.contains(*w))
            .count()
            .min(3);
        let mut dist = [0.05f64; 4];
        dist[overlap] = 0.85;
        out.push_str(
            &serde_json::json!({
                "id": p["id"], "query": query, "title": d["title"], "body": body,
                "distribution": dist,
            })
            .to_string(),
        );
        out.push('\n');
    }
    let key = "datasets/teacher.jsonl";
    harness::runtime()
        .block_on(cluster.blobs().put(key, out.into_bytes()))
        .expect("dataset");
    key.to_string()
}

/// The checkpoints in the store: the `ckpt-*` folders under `checkpoints/`.
fn checkpoint_ids(blobs: &Blobs) -> Vec<String> {
    let keys = harness::runtime()
        .block_on(blobs.list("checkpoints"))
        .expect("listing checkpoints");
    let ids: BTreeSet<String> = keys
        .iter()
        .filter_map(|k| k.split('/').nth(1))
        .filter(|n| n.starts_with("ckpt-"))
        .map(String::from)
        .collect();
    ids.into_iter().collect()
}

#[test]
fn a_trainer_killed_during_a_push_loses_nothing_and_the_push_resumes() {
    trainer_killed_during_a_push(Store::Local);
}

#[test]
fn s3_a_trainer_killed_during_a_push_loses_nothing_and_the_push_resumes() {
    trainer_killed_during_a_push(Store::S3);
}

fn trainer_killed_during_a_push(store: Store) {
    let cluster = Cluster::start(Options {
        store,
        ..Options::default()
    });
    let n = 2_000;
    let (corpus, pairs) = cranfield_pairs(cluster.dir.path(), n, &[]);
    let job_a = cluster.submit(&corpus, &pairs, 50);

    // Distill a student and push it at 15 MiB/s (a ~90 MB MiniLM checkpoint: ~6 s a worker).
    let trainer_port = harness::free_port();
    let mut trainer = cluster.spawn_trainer("trainer", trainer_port, 15.0);
    let dataset = write_teacher_dataset(&cluster, 96);
    let url = format!("http://127.0.0.1:{trainer_port}");
    let mut started = false;
    for _ in 0..100 {
        let out = std::process::Command::new(harness::binary())
            .args([
                "distill",
                "--trainer",
                &url,
                "--dataset",
                &dataset,
                "--epochs",
                "1",
            ])
            .output()
            .expect("distill");
        if out.status.success() {
            started = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        started,
        "the trainer accepted the distillation\n{}",
        trainer.log_tail(20)
    );
    let deadline = Instant::now() + TIMEOUT;
    while !std::fs::read_to_string(&trainer.log)
        .unwrap_or_default()
        .contains("pushing checkpoint")
    {
        assert!(
            Instant::now() < deadline,
            "no push started\n{}",
            trainer.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    trainer.kill9();

    // Labeling went on; the cut push was discarded, not installed.
    let job = cluster.wait_finished(&job_a, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    check_job(&cluster, &job_a, n, &[]);
    let ids = checkpoint_ids(&cluster.blobs());
    assert_eq!(ids.len(), 1, "one checkpoint stored: {ids:?}");
    let ckpt = ids[0].clone();
    let worker_dirs: Vec<PathBuf> = (0..cluster.workers.len())
        .map(|i| cluster.dir.path().join(format!("checkpoints-w{i}")))
        .collect();
    let discarded = cluster.workers.iter().any(|w| {
        std::fs::read_to_string(&w.log)
            .unwrap_or_default()
            .contains("checkpoint push discarded")
    });
    assert!(
        discarded,
        "a worker saw the push cut and discarded it\n{}",
        cluster.logs()
    );

    // A new trainer finishes the push to every worker.
    let _trainer2 = cluster.spawn_trainer("trainer2", harness::free_port(), 0.0);
    let deadline = Instant::now() + TIMEOUT;
    while !worker_dirs
        .iter()
        .all(|d| d.join(&ckpt).join("config.json").is_file())
    {
        assert!(
            Instant::now() < deadline,
            "the push did not resume\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for d in &worker_dirs {
        let leftovers: Vec<_> = std::fs::read_dir(d)
            .expect("checkpoint folder")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".incoming"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "partial pushes are cleaned up: {leftovers:?}"
        );
    }

    // A worker that joins later is brought up to date by the trainer.
    let late = cluster.spawn_worker(3, harness::free_port());
    let late_dir = cluster.dir.path().join("checkpoints-w3").join(&ckpt);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !late_dir.join("config.json").is_file() {
        assert!(
            Instant::now() < deadline,
            "the late worker never got the checkpoint\n{}",
            late.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A job pinned to the pushed checkpoint labels with it.
    let (corpus, pairs_b) = cranfield_pairs(cluster.dir.path(), 600, &[]);
    let job_b = cluster.submit_with(&corpus, &pairs_b, 50, &["--checkpoint", &ckpt]);
    let job = cluster.wait_finished(&job_b, TIMEOUT);
    assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    let labels = cluster.fetch_labels(&job_b);
    assert_eq!(labels.len(), 600);
    assert!(labels.iter().all(|l| l["checkpoint_id"] == ckpt.as_str()));
    check_job(&cluster, &job_b, 600, &[]);
}

#[test]
fn embedded_mode_serves_the_same_api_without_etcd() {
    embedded_mode(Store::Local);
}

/// `serve` on a bucket, the endpoint given by `--store-endpoint` (credentials from the
/// standard AWS variables).
#[test]
fn s3_embedded_mode_serves_the_same_api_without_etcd() {
    embedded_mode(Store::S3);
}

fn embedded_mode(store: Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = (store == Store::S3).then(|| S3Server::start(dir.path()));
    let (store_arg, mut env) = match &s3 {
        Some(s3) => (
            format!("s3://{BUCKET}/embedded/store"),
            s3.env()
                .into_iter()
                .filter(|(k, _)| !k.contains("ENDPOINT"))
                .collect(),
        ),
        None => (dir.path().join("store").display().to_string(), Vec::new()),
    };
    if let Some(s3) = &s3 {
        env.push(("LABELFLEET_STORE_ENDPOINT".to_string(), s3.endpoint()));
    }
    let (api, trainer) = (harness::free_port(), harness::free_port());
    let args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--trainer-listen",
        &format!("127.0.0.1:{trainer}"),
        "--workers",
        "2",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--store",
        &store_arg,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut serve = harness::spawn_env("serve", &harness::binary(), &args, dir.path(), &env);
    let n = 400;
    let (corpus, pairs) = cranfield_pairs(dir.path(), n, &[]);
    let url = format!("http://127.0.0.1:{api}");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(harness::binary())
            .args(args)
            .output()
            .expect("labelfleet");
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            serve.log_tail(20)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (corpus_arg, pairs_arg) = (corpus.display().to_string(), pairs.display().to_string());
    let submit_args = [
        "submit",
        "--coordinator",
        &url,
        "--corpus",
        &corpus_arg,
        "--pairs",
        &pairs_arg,
        "--task-size",
        "50",
        "--max-tokens",
        "48",
    ];
    let submitted = run(&[&submit_args[..], &["--watch"]].concat());
    let job_id = submitted.lines().next().expect("job id").trim().to_string();
    let out = dir.path().join("labels.jsonl");
    let qrels = dir.path().join("labels.qrels");
    run(&[
        "fetch",
        "--coordinator",
        &url,
        &job_id,
        "--output",
        &out.display().to_string(),
        "--qrels",
        &qrels.display().to_string(),
    ]);
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(&out).expect("labels").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("label");
        *counts
            .entry(v["id"].as_str().expect("id").to_string())
            .or_insert(0usize) += 1;
    }
    assert_exactly_once(&counts, n, &[], "embedded");
    // The results were committed in the store the flag named.
    let blobs = match &s3 {
        Some(s3) => s3.blobs(&store_arg),
        None => Blobs::local(&dir.path().join("store")).expect("local store"),
    };
    let results = harness::runtime()
        .block_on(blobs.list(&format!("jobs/{job_id}/results")))
        .expect("listing results");
    assert_eq!(
        results.len(),
        n / 50,
        "one result object per task: {results:?}"
    );
    assert_eq!(s3.is_none(), dir.path().join("store").is_dir());
    let qrel_lines = std::fs::read_to_string(&qrels).expect("qrels");
    assert_eq!(qrel_lines.lines().count(), n);
    assert!(qrel_lines
        .lines()
        .all(|l| l.split_whitespace().count() == 4));

    // A query-synthesis job: workers write queries for sampled seed documents with SmolLM2.
    let submitted = run(&[
        "synthesize",
        "--coordinator",
        &url,
        "--corpus",
        &corpus.display().to_string(),
        "--seed-documents",
        "4",
        "--queries-per-document",
        "2",
        "--task-size",
        "2",
        "--watch",
    ]);
    let job_id = submitted.lines().next().expect("job id").trim().to_string();
    let out = dir.path().join("queries.jsonl");
    run(&[
        "fetch",
        "--coordinator",
        &url,
        &job_id,
        "--output",
        &out.display().to_string(),
    ]);
    let mut per_doc: HashMap<String, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for line in std::fs::read_to_string(&out).expect("queries").lines() {
        let q: serde_json::Value = serde_json::from_str(line).expect("query");
        assert!(
            ids.insert(q["query_id"].as_str().expect("query_id").to_string()),
            "{line}"
        );
        assert!(
            q["query"].as_str().is_some_and(|t| !t.trim().is_empty()),
            "{line}"
        );
        // two topic queries a document, and (the CLI's default) one naming its metadata
        match q["prompt_version"].as_str() {
            Some("query-v1") => assert!(q.get("metadata_field").is_none(), "{line}"),
            Some("query-meta-v1") => assert!(q["metadata_field"].is_string(), "{line}"),
            other => panic!("prompt version {other:?}: {line}"),
        }
        *per_doc
            .entry(q["doc_id"].as_str().expect("doc_id").to_string())
            .or_insert(0) += 1;
    }
    assert!(
        per_doc.len() <= 4 && per_doc.values().all(|&n| n <= 3),
        "{per_doc:?}"
    );
    let status_out = run(&["status", "--coordinator", &url, &job_id]);
    assert!(
        status_out.contains("succeeded") && status_out.contains("4/4"),
        "{status_out}"
    );

    // A job that ends CANCELLED makes `watch` fail (exit code 4), so whatever waits on it
    // (a script, a Kubernetes Job) fails too.
    let submitted = run(&submit_args);
    let job_id = submitted.lines().next().expect("job id").trim().to_string();
    run(&["cancel", "--coordinator", &url, &job_id]);
    let watched = std::process::Command::new(harness::binary())
        .args(["watch", "--coordinator", &url, &job_id])
        .output()
        .expect("labelfleet watch");
    assert_eq!(
        watched.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(
        String::from_utf8_lossy(&watched.stderr).contains("CANCELLED")
            || String::from_utf8_lossy(&watched.stderr).contains("cancelled")
    );

    serve.sigterm();
    let status = serve.child.wait().expect("serve exit");
    assert!(
        status.success(),
        "serve stops cleanly on SIGTERM: {status:?}"
    );
}

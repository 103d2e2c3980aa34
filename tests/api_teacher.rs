//! The API teacher runs on the workers, with the job's rate limit divided among them: a real
//! etcd, a coordinator and two workers (real `labelfleet` processes on loopback), and llama.cpp's
//! `llama-server` serving SmolLM2-135M-Instruct as the OpenAI-compatible endpoint, started with
//! `--api-key` so that it refuses any request without the key. Only the workers have the key in
//! their environment: every answered request was sent by a worker. A counting proxy in front of
//! the server (the API teacher's own test proxy) records when each request arrived.

mod harness;

#[path = "../openai/tests/common/mod.rs"]
mod api;

use harness::{Cluster, Options};
use labelfleet_proto::v1::{
    model_ref, pair_input, Document, JobKind, JobSpec, JobState, ModelRef, OpenAiEndpoint,
    PairInput, ResultBatch,
};
use prost::Message;
use std::time::Duration;

const MODEL: &str = "smollm2-135m-instruct";
const KEY_VAR: &str = "LABELFLEET_TEST_WORKER_API_KEY";
const KEY: &str = "test-key-only-the-workers-have";
/// The job-wide limit at most; each of the two workers gets half. On a machine where the
/// server alone is slow, the test sets a third of the server's own pace instead, so that the
/// limit, not the server, sets the labeling job's pace.
const MAX_JOB_RPS: f64 = 1.0;
/// Below this pace the limited job would take minutes: the machine is too slow for the test.
const SLOWEST_SERVER_RPS: f64 = 0.5;
const WORKERS: usize = 2;
const PAIRS: usize = 20;

/// Cranfield documents with a body, as the coordinator takes them.
fn documents(n: usize) -> Vec<Document> {
    std::fs::read_to_string(harness::cranfield_dir().join("corpus.jsonl"))
        .expect("corpus")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("corpus JSON"))
        .filter(|v| v["body"].as_str().is_some_and(|b| !b.trim().is_empty()))
        .take(n)
        .map(|v| Document {
            id: v["id"].as_str().unwrap_or_default().to_string(),
            title: v["title"].as_str().unwrap_or_default().to_string(),
            body: v["body"].as_str().unwrap_or_default().to_string(),
            author: v["author"].as_str().unwrap_or_default().to_string(),
            ..Default::default()
        })
        .collect()
}

fn queries(n: usize) -> Vec<(String, String)> {
    std::fs::read_to_string(harness::cranfield_dir().join("queries.tsv"))
        .expect("queries")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .take(n)
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The endpoint with a job-wide limit of `rps` requests per second (0: none).
fn endpoint_at(base_url: String, rps: f64) -> ModelRef {
    ModelRef {
        source: Some(model_ref::Source::Openai(OpenAiEndpoint {
            base_url,
            model: MODEL.into(),
            api_key_env: KEY_VAR.into(),
            requests_per_second: rps,
            usd_per_million_input_tokens: 0.15,
            usd_per_million_output_tokens: 0.60,
            ..Default::default()
        })),
    }
}

/// Requests per second over a run of requests (first to last).
fn pace(seen: &[api::Seen]) -> f64 {
    let first = seen.iter().map(|s| s.received).min().expect("requests");
    let last = seen.iter().map(|s| s.received).max().expect("requests");
    (seen.len() - 1) as f64 / last.duration_since(first).as_secs_f64()
}

/// Every result object of a job, read from the store.
fn stored_batches(cluster: &Cluster, job_id: &str) -> Vec<ResultBatch> {
    let blobs = cluster.blobs();
    let rt = harness::runtime();
    let keys = rt
        .block_on(blobs.list(&format!("jobs/{job_id}/results")))
        .expect("listing results");
    keys.iter()
        .filter(|k| k.ends_with(".pb"))
        .map(|k| {
            let bytes = rt.block_on(blobs.get(k)).expect("get").expect("object");
            ResultBatch::decode(bytes.as_ref()).expect("result batch")
        })
        .collect()
}

fn submit(cluster: &Cluster, spec: JobSpec) -> String {
    cluster.submit_spec(spec).expect("submit")
}

#[test]
fn workers_call_the_api_teacher_within_the_job_wide_rate_limit() {
    let Some(bin) = api::llama_server_bin() else {
        return;
    };
    let server = api::LlamaServer::start_with(&bin, 2, 2048, &["--api-key", KEY]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let proxy = rt.block_on(api::Proxy::start(server.addr, |_, _| api::Action::Forward));

    let cluster = Cluster::start(Options {
        coordinators: 1,
        workers: WORKERS,
        worker_env: vec![(KEY_VAR.into(), KEY.into())],
        ..Options::default()
    });
    // the limit is divided among the workers the leader has heard from: wait for both
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster.metrics(0).get("labelfleet_workers_live").copied() != Some(WORKERS as f64) {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers did not register\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let docs = documents(PAIRS);
    let qs = queries(PAIRS);
    let pairs: Vec<PairInput> = (0..PAIRS)
        .map(|i| PairInput {
            pair_id: format!("p{i}"),
            query_id: qs[i].0.clone(),
            query: qs[i].1.clone(),
            document: Some(pair_input::Document::Inline(docs[i].clone())),
        })
        .collect();

    // ---- the server's own pace: the same pairs with no limit. The limited job below proves
    // the limit only if the server alone answers well faster than it.
    let unlimited = JobSpec {
        kind: JobKind::Label as i32,
        name: "api teacher, no limit".into(),
        student: Some(endpoint_at(proxy.base_url(), 0.0)),
        grade_prompt_version: "grade-v1".into(),
        label_pairs: pairs.clone(),
        task_size: 4,
        ..Default::default()
    };
    let job_id = submit(&cluster, unlimited);
    let job = cluster.wait_finished(&job_id, Duration::from_secs(300));
    assert_eq!(job.state, JobState::Succeeded as i32, "{}", job.error);
    let baseline = proxy.seen();
    let free_pace = pace(&baseline);
    eprintln!(
        "no limit: {} requests at {free_pace:.2} requests/s",
        baseline.len()
    );
    assert!(
        free_pace >= SLOWEST_SERVER_RPS,
        "the server alone answers {free_pace:.2} requests/s: too slow to show a limit in minutes"
    );
    let job_rps = (free_pace / 3.0).min(MAX_JOB_RPS);

    // ---- a labeling job whose model is the endpoint, with the job-wide limit
    let spec = JobSpec {
        kind: JobKind::Label as i32,
        name: "api teacher".into(),
        student: Some(endpoint_at(proxy.base_url(), job_rps)),
        grade_prompt_version: "grade-v1".into(),
        label_pairs: pairs,
        task_size: 4,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let job_id = submit(&cluster, spec);
    let job = cluster.wait_finished(&job_id, Duration::from_secs(300));
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(
        job.state,
        JobState::Succeeded as i32,
        "{}\n{}",
        job.error,
        cluster.logs()
    );

    // every pair labeled once, with a grade and a distribution, by the endpoint
    let counts = cluster.stored_label_counts(&job_id);
    assert_eq!(counts.len(), PAIRS, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let labels = cluster.fetch_labels(&job_id);
    assert_eq!(labels.len(), PAIRS);
    for l in &labels {
        assert_eq!(
            l["model"].as_str(),
            Some(format!("api:{MODEL}@{}", proxy.base_url()).as_str()),
            "{l}"
        );
        assert_eq!(l["prompt_version"].as_str(), Some("grade-v1"), "{l}");
        assert!(l["expected"].as_f64().is_some(), "{l}");
    }

    // the requests: all sent with the key (only the workers have it), all answered
    let seen: Vec<_> = proxy.seen().into_iter().skip(baseline.len()).collect();
    assert!(seen.len() >= PAIRS, "{} requests", seen.len());
    assert!(seen.iter().all(|s| s.authorized && s.status == 200));
    // both workers ran API tasks (each makes its endpoint's client on its first one)
    for w in &cluster.workers {
        assert!(
            std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .contains("API client made"),
            "{} ran no API task\n{}",
            w.name,
            cluster.logs()
        );
    }

    // the rate: each worker's bucket holds one second of its share (at least one request), so
    // R requests over the job-wide limit L take at least (R - workers) / L seconds
    let first = seen.iter().map(|s| s.received).min().expect("requests");
    let last = seen.iter().map(|s| s.received).max().expect("requests");
    let span = last.duration_since(first).as_secs_f64();
    let r = seen.len();
    let bound = (r - WORKERS) as f64 / job_rps;
    let observed = (r - 1) as f64 / span;
    eprintln!(
        "{r} requests for {PAIRS} pairs in {span:.2} s (job {wall:.1} s): {observed:.3} requests/s \
         against a job-wide limit of {job_rps:.2}/s (bound: span >= {bound:.1} s)"
    );
    // 2% for the clocks of three processes
    assert!(
        span >= bound * 0.98,
        "{r} requests in {span:.2} s: over the job-wide limit of {job_rps:.2}/s"
    );

    // what the tasks spent came back with their results, and matches what the server saw
    let batches = stored_batches(&cluster, &job_id);
    let usage: Vec<_> = batches
        .iter()
        .map(|b| b.api_usage.expect("usage"))
        .collect();
    let requests: u64 = usage.iter().map(|u| u.requests).sum();
    assert_eq!(requests as usize, r, "{usage:?}");
    assert!(
        usage
            .iter()
            .all(|u| u.prompt_tokens > 0 && u.cost_usd > 0.0),
        "{usage:?}"
    );

    // ---- a synthesis job whose generator is the endpoint
    let before = proxy.seen().len();
    let corpus_id = harness::runtime().block_on(async {
        let mut client = labelfleet_client::Client::connect(
            labelfleet_client::endpoints(&cluster.coordinator_list()),
            Duration::from_secs(30),
        )
        .await
        .expect("client");
        client
            .upload_corpus("seeds", documents(4))
            .await
            .expect("upload")
            .corpus_id
    });
    let spec = JobSpec {
        kind: JobKind::Synthesize as i32,
        name: "api queries".into(),
        corpus_id,
        seed_documents: 4,
        queries_per_document: 1,
        teacher: Some(endpoint_at(proxy.base_url(), job_rps)),
        task_size: 2,
        seed: 7,
        ..Default::default()
    };
    let job_id = submit(&cluster, spec);
    let job = cluster.wait_finished(&job_id, Duration::from_secs(120));
    assert_eq!(job.state, JobState::Succeeded as i32, "{}", job.error);
    let batches = stored_batches(&cluster, &job_id);
    assert_eq!(batches.len(), 2);
    let requests: u64 = batches
        .iter()
        .map(|b| b.api_usage.expect("usage").requests)
        .sum();
    assert_eq!(requests as usize, proxy.seen().len() - before);
    let written: usize = batches.iter().map(|b| b.queries.len()).sum();
    eprintln!("synthesis: {requests} requests, {written} usable queries for 4 documents");
    for q in batches.iter().flat_map(|b| &b.queries) {
        assert!(
            !q.text.trim().is_empty() && q.query_id.starts_with(&q.doc_id),
            "{q:?}"
        );
    }
    drop(server);
}

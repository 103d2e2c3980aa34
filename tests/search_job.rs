//! BM25 search jobs on the cluster: a corpus of three shards, searched shard by shard on the
//! workers, each shard's tantivy index built once by a worker and kept in the object store.
//! The hits must be exactly those of an index of the same shard built in this process, and a
//! second job must reuse the stored indexes rather than build them again.
//!
//! Runs on a local store directory and (`s3_...`) on a bucket of a real S3-compatible server.

mod harness;

use harness::{cranfield_dir, runtime, Cluster, Options, Store};
use labelfleet_corpus::{Bm25Index, IndexedText};
use labelfleet_proto::v1::{
    Document, JobKind, JobSpec, JobState, QueryHits, QueryInput, ResultBatch,
};
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(600);
/// Documents per corpus shard (the coordinator's `SHARD_DOCUMENTS`).
const SHARD: usize = 5_000;
const DEPTH: u32 = 10;

/// 12,000 documents (three shards: 5,000, 5,000, 2,000): Cranfield's abstracts, each copy
/// under its own id with a word of its own, so the copies do not tie.
fn documents() -> Vec<Document> {
    let text = std::fs::read_to_string(cranfield_dir().join("corpus.jsonl")).expect("corpus");
    let base: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("corpus JSON"))
        .filter(|v: &serde_json::Value| v["body"].as_str().is_some_and(|b| !b.trim().is_empty()))
        .collect();
    (0..12_000)
        .map(|i| {
            let v = &base[i % base.len()];
            let copy = i / base.len();
            Document {
                id: format!("c{copy}-{}", v["id"].as_str().expect("id")),
                title: v["title"].as_str().unwrap_or_default().to_string(),
                body: format!("{} copy{copy}", v["body"].as_str().unwrap_or_default()),
                author: v["author"].as_str().unwrap_or_default().to_string(),
                ..Default::default()
            }
        })
        .collect()
}

fn queries(skip: usize, n: usize) -> Vec<QueryInput> {
    std::fs::read_to_string(cranfield_dir().join("queries.tsv"))
        .expect("queries")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .skip(skip)
        .take(n)
        .map(|(id, text)| QueryInput {
            query_id: id.to_string(),
            text: text.to_string(),
        })
        .collect()
}

/// Submits a search job, waits for it, and returns its hits by (query, shard).
fn search(
    cluster: &Cluster,
    corpus_id: &str,
    queries: &[QueryInput],
) -> BTreeMap<(String, u32), QueryHits> {
    let spec = JobSpec {
        kind: JobKind::Search as i32,
        corpus_id: corpus_id.to_string(),
        label_queries: queries.to_vec(),
        bm25_depth: DEPTH,
        task_size: 20,
        ..Default::default()
    };
    let endpoints = labelfleet_client::endpoints(&cluster.coordinator_list());
    let job = runtime().block_on(async {
        let mut client = labelfleet_client::Client::connect(endpoints, Duration::from_secs(30))
            .await
            .expect("connect");
        client.submit(spec, "").await.expect("submit")
    });
    let job = cluster.wait_finished(&job.job_id, TIMEOUT);
    assert_eq!(
        job.state,
        JobState::Succeeded as i32,
        "{job:?}\n{}",
        cluster.logs()
    );
    let stage = &job.stages[0];
    assert_eq!(stage.stage, "search");
    // three shards times ceil(queries / 20) batches, each one item
    let tasks = 3 * queries.len().div_ceil(20) as u64;
    assert_eq!((stage.total, stage.done, stage.failed), (tasks, tasks, 0));
    let endpoints = labelfleet_client::endpoints(&cluster.coordinator_list());
    let mut out = BTreeMap::new();
    runtime().block_on(async {
        let mut client = labelfleet_client::Client::connect(endpoints, Duration::from_secs(30))
            .await
            .expect("connect");
        client
            .fetch(&job.job_id, "hits", |batch: ResultBatch| {
                for h in batch.hits {
                    let key = (h.query_id.clone(), h.shard);
                    assert!(
                        out.insert(key, h).is_none(),
                        "a (query, shard) answered twice"
                    );
                }
                Ok(())
            })
            .await
            .expect("fetch hits");
    });
    out
}

fn upload(cluster: &Cluster, docs: Vec<Document>) -> String {
    let endpoints = labelfleet_client::endpoints(&cluster.coordinator_list());
    runtime().block_on(async {
        let mut client = labelfleet_client::Client::connect(endpoints, Duration::from_secs(30))
            .await
            .expect("connect");
        let r = client
            .upload_corpus("search-test", docs)
            .await
            .expect("upload");
        assert_eq!((r.accepted, r.rejected.len()), (12_000, 0));
        r.corpus_id
    })
}

fn index_objects(cluster: &Cluster, corpus_id: &str) -> BTreeMap<String, Vec<u8>> {
    let blobs = cluster.blobs();
    runtime().block_on(async {
        let mut out = BTreeMap::new();
        for key in blobs
            .list(&format!("indexes/{corpus_id}/"))
            .await
            .expect("list")
        {
            let bytes = blobs.get(&key).await.expect("get").expect("object");
            out.insert(key, bytes.to_vec());
        }
        out
    })
}

fn searches_each_shard_on_the_workers(store: Store) {
    let cluster = Cluster::start(Options {
        store,
        ..Options::default()
    });
    let docs = documents();
    let corpus_id = upload(&cluster, docs.clone());
    let reference: Vec<Bm25Index> = docs
        .chunks(SHARD)
        .map(|shard| {
            let texts = shard.iter().map(|d| IndexedText {
                id: &d.id,
                title: &d.title,
                body: &d.body,
                author: &d.author,
                path: &d.path,
            });
            Bm25Index::build_texts(texts, None).expect("reference index")
        })
        .collect();

    let first = queries(0, 45);
    let hits = search(&cluster, &corpus_id, &first);
    assert_eq!(hits.len(), first.len() * 3, "one answer per (query, shard)");
    for q in &first {
        for (shard, index) in reference.iter().enumerate() {
            let got = &hits[&(q.query_id.clone(), shard as u32)].hits;
            let want = index.search(&q.text, DEPTH as usize).expect("search");
            let got: Vec<(&str, f32)> = got.iter().map(|h| (h.doc_id.as_str(), h.score)).collect();
            let want: Vec<(&str, f32)> = want.iter().map(|h| (h.id.as_str(), h.score)).collect();
            assert_eq!(got, want, "query {} on shard {shard}", q.query_id);
            assert_eq!(
                got.len(),
                DEPTH as usize,
                "query {} on shard {shard}",
                q.query_id
            );
        }
    }

    // Each shard's index was built once and kept; a second job reads them back.
    let stored = index_objects(&cluster, &corpus_id);
    assert_eq!(stored.len(), 3, "{:?}", stored.keys().collect::<Vec<_>>());
    let second = queries(45, 30);
    let hits = search(&cluster, &corpus_id, &second);
    assert_eq!(hits.len(), second.len() * 3);
    assert_eq!(
        index_objects(&cluster, &corpus_id),
        stored,
        "the second job rebuilt or rewrote a shard's index"
    );
    let q = &second[0];
    let want = reference[2]
        .search(&q.text, DEPTH as usize)
        .expect("search");
    assert_eq!(
        hits[&(q.query_id.clone(), 2)]
            .hits
            .iter()
            .map(|h| h.doc_id.as_str())
            .collect::<Vec<_>>(),
        want.iter().map(|h| h.id.as_str()).collect::<Vec<_>>()
    );
}

#[test]
fn a_search_job_searches_each_shard_once_on_the_workers_and_keeps_the_indexes() {
    searches_each_shard_on_the_workers(Store::Local);
}

#[test]
fn s3_a_search_job_searches_each_shard_once_on_the_workers_and_keeps_the_indexes() {
    searches_each_shard_on_the_workers(Store::S3);
}

//! A committee teacher on the cluster: a labeling job whose model is a committee of a
//! similarity judge (MiniLM, with feedback from and calibration against an uploaded corpus,
//! which each worker reads from the object store) and a decoder judge (SmolLM2). Every label
//! must be the weighted mean of its judges' distributions and keep each of them; each judge's
//! distribution must be what the engine gives in this process for the same pairs (so the
//! workers read the corpus and ran the judges right). A committee that breaks the rules is
//! refused at submit, naming the field, and a judge whose corpus is not uploaded fails the job
//! without retries.

mod harness;

use harness::{cranfield_dir, Cluster, Options};
use labelfleet_proto::v1::{
    judge, model_ref, pair_input, Committee, Document, JobKind, JobSpec, JobState, Judge, Label,
    ModelRef, PairInput, SimilarityJudge,
};
use std::collections::BTreeMap;
use std::time::Duration;

const DOCS: usize = 300;
const QUERIES: usize = 6;
const DOCS_PER_QUERY: usize = 3;
const MAX_TOKENS: u32 = 256;
const SIMILARITY_WEIGHT: f64 = 2.0;
const DECODER_WEIGHT: f64 = 1.0;

/// The first Cranfield documents with a body.
fn documents() -> Vec<Document> {
    let text = std::fs::read_to_string(cranfield_dir().join("corpus.jsonl")).expect("corpus");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("corpus JSON"))
        .filter(|v| v["body"].as_str().is_some_and(|b| !b.trim().is_empty()))
        .take(DOCS)
        .map(|v| Document {
            id: v["id"].as_str().expect("id").to_string(),
            title: v["title"].as_str().unwrap_or_default().to_string(),
            body: v["body"].as_str().unwrap_or_default().to_string(),
            author: v["author"].as_str().unwrap_or_default().to_string(),
            ..Default::default()
        })
        .collect()
}

/// Cranfield queries, each with a few corpus documents spread over it.
fn pairs(docs: &[Document]) -> Vec<PairInput> {
    let queries: Vec<(String, String)> =
        std::fs::read_to_string(cranfield_dir().join("queries.tsv"))
            .expect("queries")
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .take(QUERIES)
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    let mut out = vec![];
    for (qi, (qid, text)) in queries.iter().enumerate() {
        for k in 0..DOCS_PER_QUERY {
            let d = &docs[(qi * 37 + k * 101) % docs.len()];
            out.push(PairInput {
                pair_id: format!("q{qid}-d{}", d.id),
                query_id: qid.clone(),
                query: text.clone(),
                document: Some(pair_input::Document::Inline(d.clone())),
            });
        }
    }
    out
}

/// The similarity judge `labelfleet score --similarity-corpus` runs by default.
fn similarity_judge(corpus_id: &str, weight: f64) -> Judge {
    Judge {
        name: "similarity".into(),
        weight,
        kind: Some(judge::Kind::Similarity(SimilarityJudge {
            encoder: "minilm".into(),
            corpus_id: corpus_id.into(),
            feedback_depth: 5,
            feedback_weight: 1.0,
        })),
    }
}

fn committee_spec(judges: Vec<Judge>, pairs: Vec<PairInput>) -> JobSpec {
    JobSpec {
        kind: JobKind::Label as i32,
        name: "committee".into(),
        student: Some(ModelRef {
            source: Some(model_ref::Source::Committee(Committee { judges })),
        }),
        grade_prompt_version: "grade-v1".into(),
        label_pairs: pairs,
        task_size: 6,
        max_tokens: MAX_TOKENS,
        ..Default::default()
    }
}

fn upload(cluster: &Cluster, docs: Vec<Document>) -> String {
    let endpoints = labelfleet_client::endpoints(&cluster.coordinator_list());
    harness::runtime().block_on(async {
        let mut client = labelfleet_client::Client::connect(endpoints, Duration::from_secs(30))
            .await
            .expect("connect");
        let r = client
            .upload_corpus("committee-test", docs)
            .await
            .expect("upload");
        assert_eq!((r.accepted as usize, r.rejected.len()), (DOCS, 0));
        r.corpus_id
    })
}

/// What `labelfleet score` gives in one process for the same pairs: the similarity judge's
/// (over the same documents, written as a corpus file) and the decoder's distributions, by
/// pair id.
fn reference(
    cluster: &Cluster,
    docs: &[Document],
    pairs: &[PairInput],
) -> BTreeMap<String, (Vec<f32>, Vec<f32>)> {
    let dir = cluster.dir.path();
    let corpus = dir.join("reference-corpus.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .map(|d| {
            serde_json::json!({"id": d.id, "title": d.title, "body": d.body, "author": d.author})
                .to_string()
        })
        .collect();
    std::fs::write(&corpus, lines.join("\n") + "\n").expect("corpus file");
    let input = dir.join("reference-pairs.jsonl");
    let lines: Vec<String> = pairs
        .iter()
        .map(|p| match &p.document {
            Some(pair_input::Document::Inline(d)) => serde_json::json!({
                "id": p.pair_id, "query": p.query, "title": d.title, "body": d.body,
                "metadata": {"author": d.author},
            })
            .to_string(),
            _ => unreachable!("the test inlines its documents"),
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("pairs file");
    let max_len = MAX_TOKENS.to_string();
    let score = |name: &str, extra: &[&str]| -> BTreeMap<String, Vec<f32>> {
        let out = dir.join(format!("reference-{name}.jsonl"));
        let (input, out_s) = (input.display().to_string(), out.display().to_string());
        let mut args = vec![
            "score",
            "--device",
            "cpu",
            "--max-len",
            &max_len,
            "-i",
            &input,
            "-o",
            &out_s,
        ];
        args.extend_from_slice(extra);
        cluster.cli(&args);
        std::fs::read_to_string(&out)
            .expect("scores")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("score JSON");
                let dist = v["distribution"]
                    .as_array()
                    .expect("distribution")
                    .iter()
                    .map(|x| x.as_f64().expect("probability") as f32)
                    .collect();
                (v["id"].as_str().expect("id").to_string(), dist)
            })
            .collect()
    };
    let corpus = corpus.display().to_string();
    let similar = score(
        "similarity",
        &["--model", "minilm", "--similarity-corpus", &corpus],
    );
    let decoder = score("decoder", &["--model", "smollm2"]);
    similar
        .into_iter()
        .map(|(id, s)| {
            let d = decoder[&id].clone();
            (id, (s, d))
        })
        .collect()
}

fn close(a: &[f32], b: &[f32], tolerance: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance)
}

fn check_label(l: &Label, want: &(Vec<f32>, Vec<f32>)) {
    let names: Vec<&str> = l.judges.iter().map(|j| j.judge.as_str()).collect();
    assert_eq!(names, ["similarity", "decoder"], "{l:?}");
    let (sim, dec) = (&l.judges[0].distribution, &l.judges[1].distribution);
    assert!(l.judges[0].model.starts_with("similarity:"), "{l:?}");
    assert!(l.judges[1].model.starts_with("decoder:"), "{l:?}");
    // the workers read the corpus and ran each judge as the engine does here
    assert!(
        close(sim, &want.0, 2e-3),
        "similarity {sim:?} vs {:?}",
        want.0
    );
    assert!(close(dec, &want.1, 2e-3), "decoder {dec:?} vs {:?}", want.1);
    // the label is their weighted mean
    let total = SIMILARITY_WEIGHT + DECODER_WEIGHT;
    let pooled: Vec<f32> = sim
        .iter()
        .zip(dec)
        .map(|(s, d)| ((*s as f64 * SIMILARITY_WEIGHT + *d as f64 * DECODER_WEIGHT) / total) as f32)
        .collect();
    assert!(close(&l.distribution, &pooled, 1e-6), "{l:?}");
    let argmax = (0..4)
        .max_by(|&a, &b| pooled[a].total_cmp(&pooled[b]))
        .unwrap();
    assert_eq!(l.grade as usize, argmax, "{l:?}");
    assert_eq!(l.model, "committee:similarity=2+decoder=1");
    assert_eq!(l.prompt_version, "grade-v1");
}

#[test]
fn a_committee_pools_its_judges_on_the_workers_and_keeps_each_judge_in_the_label() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        workers: 2,
        ..Options::default()
    });
    let docs = documents();
    let corpus_id = upload(&cluster, docs.clone());
    let pairs = pairs(&docs);
    let judges = vec![
        similarity_judge(&corpus_id, SIMILARITY_WEIGHT),
        Judge {
            name: "decoder".into(),
            weight: DECODER_WEIGHT,
            kind: Some(judge::Kind::LocalPath("smollm2".into())),
        },
    ];

    // ---- a committee that breaks the rules is refused at submit, by field
    let mut bad = judges.clone();
    bad[1].weight = 0.0;
    let err = cluster
        .submit_spec(committee_spec(bad, pairs.clone()))
        .expect_err("a zero weight is refused")
        .to_string();
    assert!(
        err.contains("spec.student.committee.judges[1].weight") && err.contains("InvalidArgument"),
        "{err}"
    );

    // ---- the committee grades every pair
    let job_id = cluster
        .submit_spec(committee_spec(judges.clone(), pairs.clone()))
        .expect("submit");
    let job = cluster.wait_finished(&job_id, Duration::from_secs(600));
    assert_eq!(
        job.state,
        JobState::Succeeded as i32,
        "{}\n{}",
        job.error,
        cluster.logs()
    );
    let labels: Vec<Label> = cluster
        .results(&job_id, "")
        .into_iter()
        .flat_map(|b| b.labels)
        .collect();
    assert_eq!(labels.len(), pairs.len());
    let want = reference(&cluster, &docs, &pairs);
    for l in &labels {
        check_label(l, &want[&l.pair_id]);
    }
    // the judges disagree somewhere, or the pool would prove nothing
    assert!(
        labels
            .iter()
            .any(|l| !close(&l.judges[0].distribution, &l.judges[1].distribution, 0.05)),
        "the two judges gave the same distributions"
    );
    // the similarity judge's grades spread over the scale: it is not constant
    let grades: std::collections::BTreeSet<usize> = want
        .values()
        .map(|(s, _)| labelfleet_types::Grading::from_distribution(s.clone()).grade)
        .collect();
    assert!(grades.len() >= 2, "similarity grades {grades:?}");

    // ---- a similarity judge over a corpus that is not uploaded fails the job, not retried
    let missing = vec![similarity_judge("no-such-corpus", 1.0)];
    let job_id = cluster
        .submit_spec(committee_spec(missing, pairs[..2].to_vec()))
        .expect("submit");
    let job = cluster.wait_finished(&job_id, Duration::from_secs(120));
    let stage = &job.stages[0];
    assert_eq!((stage.done, stage.failed), (0, 2), "{job:?}");
    let log = cluster.logs();
    assert!(
        log.contains("corpus `no-such-corpus` is not uploaded"),
        "the reason names the corpus\n{log}"
    );
}

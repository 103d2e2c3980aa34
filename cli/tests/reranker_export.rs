//! A student checkpoint exported as a one-score reranker loads in sentence-transformers'
//! `CrossEncoder` and scores and ranks exactly as labelfleet's expected grade. The checkpoint is
//! a real cross-encoder (all-MiniLM-L6-v2's encoder, 3 layers) trained for a few steps and saved
//! as the trainer saves students: the test is about the export, not about quality.

mod common;

use labelfleet_slm::grading::default_grade_labels;
use labelfleet_slm::train::{train, Example, TrainConfig};
use labelfleet_slm::{EncoderGrader, Grader, Pair, Placement};
use std::path::Path;
use std::process::Command;

/// A 4-grade cross-encoder checkpoint, trained as the trainer trains students (soft targets)
/// for a few steps on `pairs`, with targets from word overlap so its grades spread out.
fn make_checkpoint(dir: &Path, pairs: &[serde_json::Value]) {
    tch::manual_seed(7);
    let minilm = labelfleet_slm::resolve_model("minilm");
    let grader = EncoderGrader::load_layers(
        &minilm,
        &default_grade_labels(),
        Placement::cpu(),
        256,
        Some(3),
    )
    .expect("MiniLM (run scripts/setup.sh)");
    let examples: Vec<Example> = pairs
        .iter()
        .map(|p| {
            let pair: Pair = serde_json::from_value(p.clone()).unwrap();
            let body = pair.body.to_lowercase();
            let overlap = pair
                .query
                .split_whitespace()
                .filter(|w| body.contains(*w))
                .count();
            let mut target = vec![0.05f32; 4];
            target[overlap.min(3)] = 0.85;
            Example {
                input: grader.encode_pair(&pair).unwrap(),
                target,
            }
        })
        .collect();
    let cfg = TrainConfig {
        epochs: 8,
        batch_size: 8,
        learning_rate: 3e-4,
        ..Default::default()
    };
    train(&grader, &examples, &cfg, &mut |_| {}).expect("training");
    grader
        .save(
            dir,
            serde_json::json!({"base": minilm.display().to_string(), "train_pairs": pairs.len()}),
        )
        .expect("save");
}

/// 40 Cranfield (query, document) pairs: 4 queries x 10 documents, with titles and authors.
fn write_pairs(path: &Path) -> Vec<serde_json::Value> {
    let corpus =
        std::fs::read_to_string(common::data_dir().join("cranfield/corpus.jsonl")).unwrap();
    let docs: Vec<serde_json::Value> = corpus
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|d: &serde_json::Value| d["body"].as_str().is_some_and(|b| !b.trim().is_empty()))
        .take(10)
        .collect();
    let queries = [
        "boundary layer transition",
        "heat transfer at hypersonic speed",
        "wing flutter",
        "shell buckling",
    ];
    let mut pairs = vec![];
    for (qi, q) in queries.iter().enumerate() {
        for d in &docs {
            pairs.push(serde_json::json!({
                "id": format!("q{qi}-d{}", d["id"].as_str().unwrap()), "query": q,
                "title": d["title"], "body": d["body"], "metadata": {"author": d["author"]},
            }));
        }
    }
    let lines: Vec<String> = pairs.iter().map(|p| p.to_string()).collect();
    std::fs::write(path, lines.join("\n")).unwrap();
    pairs
}

const CHECK: &str = r#"
import json, sys
from sentence_transformers import CrossEncoder
model = CrossEncoder(sys.argv[1], trust_remote_code=True, max_length=256, device="cpu")
pairs = [json.loads(l) for l in open(sys.argv[2])]
def doc(p):
    head = "Title: %s\n" % p["title"].strip() if p.get("title", "").strip() else ""
    for k in sorted(p.get("metadata", {})):
        v = p["metadata"][k].strip()
        if v:
            head += "%s: %s\n" % (k, v)
    return head + p["body"].strip()
scores = model.predict([(p["query"].strip(), doc(p)) for p in pairs], batch_size=8)
ranked = {}
for q in sorted({p["query"] for p in pairs}):
    group = [p for p in pairs if p["query"] == q]
    ranked[q] = [group[r["corpus_id"]]["id"] for r in model.rank(q, [doc(p) for p in group])]
json.dump({"scores": [float(s) for s in scores], "ranked": ranked}, sys.stdout)
"#;

#[test]
fn the_exported_reranker_scores_as_labelfleets_expected_grade() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, export) = (dir.path().join("student"), dir.path().join("reranker"));
    let pairs_path = dir.path().join("pairs.jsonl");
    let pairs = write_pairs(&pairs_path);
    make_checkpoint(&ckpt, &pairs);
    let card =
        std::fs::read_to_string(ckpt.join("README.md")).expect("the checkpoint's model card");
    assert!(
        card.contains("## Input format") && card.contains("base model"),
        "{card}"
    );
    let pairs_path = dir.path().join("pairs.jsonl");
    let pairs = write_pairs(&pairs_path);
    let graded = dir.path().join("graded.jsonl");
    let bin = env!("CARGO_BIN_EXE_labelfleet");
    let run = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ckpt_s, export_s) = (ckpt.display().to_string(), export.display().to_string());
    run(&[
        "score",
        "--model",
        &ckpt_s,
        "--max-len",
        "256",
        "--input",
        pairs_path.to_str().unwrap(),
        "--output",
        graded.to_str().unwrap(),
    ]);
    run(&[
        "export-reranker",
        "--checkpoint",
        &ckpt_s,
        "--output",
        &export_s,
    ]);
    let ours: Vec<(String, f64)> = std::fs::read_to_string(&graded)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["expected"].as_f64().unwrap(),
            )
        })
        .collect();
    let python = labelfleet_slm::home_dir().join("venv/bin/python");
    let out = Command::new(&python)
        .args(["-c", CHECK, &export_s, pairs_path.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scores: Vec<f64> = theirs["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), pairs.len());
    let spread = ours.iter().map(|o| o.1).fold(f64::MIN, f64::max)
        - ours.iter().map(|o| o.1).fold(f64::MAX, f64::min);
    assert!(
        spread > 0.05,
        "the head spreads the expected grades: {spread}"
    );
    for ((id, e), s) in ours.iter().zip(&scores) {
        assert!(
            (e - s).abs() < 2e-4,
            "{id}: labelfleet {e}, CrossEncoder {s}"
        );
    }
    // CrossEncoder.rank orders each query's documents as labelfleet's expected grade does
    for (q, ranked) in theirs["ranked"].as_object().unwrap() {
        let mut mine: Vec<&(String, f64)> = pairs
            .iter()
            .zip(&ours)
            .filter(|(p, _)| p["query"] == q.as_str())
            .map(|(_, o)| o)
            .collect();
        mine.sort_by(|a, b| b.1.total_cmp(&a.1));
        let ranked: Vec<&str> = ranked
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        // equal up to ties closer than the numeric tolerance (fp32 in both)
        for (i, (m, r)) in mine.iter().zip(&ranked).enumerate() {
            if m.0 != *r {
                let other = mine.iter().find(|x| x.0 == *r).unwrap();
                assert!(
                    (m.1 - other.1).abs() < 2e-4,
                    "{q}: rank {i}: {} vs {r}",
                    m.0
                );
            }
        }
    }
}

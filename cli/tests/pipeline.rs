//! `labelfleet run` end to end on a small slice, with the real models, tantivy and files:
//! every stage runs and writes its documented outputs.

use std::path::PathBuf;
use std::process::Command;

fn data_dir() -> PathBuf {
    let d = std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        d.join("cranfield/corpus.jsonl").is_file(),
        "Cranfield not found under {}",
        d.display()
    );
    d
}

fn read_jsonl(p: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn run_writes_every_stage() {
    let data = data_dir().join("cranfield");
    let dir = tempfile::tempdir().unwrap();
    // a 300-document slice of the corpus keeps the test near two minutes on two cores
    let slice = dir.path().join("corpus.jsonl");
    let corpus = std::fs::read_to_string(data.join("corpus.jsonl")).unwrap();
    std::fs::write(
        &slice,
        corpus.lines().take(300).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_labelfleet"))
            .args([
                "run",
                "--device",
                "cpu",
                "--seed-docs",
                "8",
                "--queries-per-doc",
                "2",
                "--epochs",
                "2",
                "--eval-sample",
                "3",
                "--pool-k",
                "5",
                "--seed",
                "3",
            ])
            .arg("--corpus")
            .arg(&slice)
            .arg("--eval-queries")
            .arg(data.join("queries.tsv"))
            .arg("--eval-qrels")
            .arg(data.join("qrels.txt"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("Agreement with human judgments"),
        "{stdout}"
    );

    let queries = read_jsonl(&out.join("queries.jsonl"));
    assert!(queries.len() >= 5, "{stderr}");
    for q in &queries {
        assert!(q["doc_id"].is_string() && q["query"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(q["prompt_version"], "query-v1");
    }
    let labels = read_jsonl(&out.join("teacher_labels.jsonl"));
    assert!(
        labels.len() > queries.len(),
        "each query has its positive and BM25 negatives"
    );
    for l in &labels {
        let p: f64 = l["distribution"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-4);
        assert!(l["grade"].as_u64().unwrap() < 4);
        assert!(l["model"].as_str().unwrap().contains("prompt=grade-v1"));
    }
    // the student checkpoint is a transformers cross-encoder folder with provenance
    let ckpt = out.join("student");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "labelfleet.json",
    ] {
        assert!(ckpt.join(f).is_file(), "student/{f} missing");
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("labelfleet.json")).unwrap())
            .unwrap();
    assert!(meta["provenance"]["teacher"]
        .as_str()
        .unwrap()
        .starts_with("decoder:"));
    // evaluation labels: JSONL and TREC qrels for the same pool
    let eval = read_jsonl(&out.join("eval_student_labels.jsonl"));
    let qrels = std::fs::read_to_string(out.join("eval_student.qrels")).unwrap();
    assert_eq!(eval.len(), qrels.lines().count());
    assert!(qrels.lines().all(|l| l.split_whitespace().count() == 4));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let rows = report["agreement_with_humans"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows[2]["pairs_per_s"].as_f64().unwrap() > rows[1]["pairs_per_s"].as_f64().unwrap(),
        "the student is faster than the teacher"
    );

    // A second run over the same inputs does no model work and writes the same labels.
    let first_labels = std::fs::read_to_string(out.join("teacher_labels.jsonl")).unwrap();
    let first_qrels = std::fs::read_to_string(out.join("eval_student.qrels")).unwrap();
    let again = run();
    let stderr2 = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr2}");
    for line in [
        "model work: query synthesis: 0 documents generated, 8 from cache",
        "model work: teacher grading (synthetic pairs): 0 graded",
        "model work: distillation: reused the checkpoint",
        "model work: evaluation pool: teacher graded 0, student graded 0",
    ] {
        assert!(stderr2.contains(line), "missing `{line}` in:\n{stderr2}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("teacher_labels.jsonl")).unwrap(),
        first_labels
    );
    assert_eq!(
        std::fs::read_to_string(out.join("eval_student.qrels")).unwrap(),
        first_qrels
    );
}

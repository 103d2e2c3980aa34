//! `labelfleet run` end to end on a small slice, with the real models, tantivy and files:
//! every stage runs and writes its documented outputs.

use std::process::Command;

mod common;

fn read_jsonl(p: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn run_writes_every_stage() {
    let data = common::data_dir().join("cranfield");
    let dir = tempfile::tempdir().unwrap();
    let slice = common::cranfield_slice(dir.path(), 300);
    let out = dir.path().join("out");
    let run = |teacher_prompt: &str| {
        Command::new(env!("CARGO_BIN_EXE_labelfleet"))
            .args([
                "run",
                "--device",
                "cpu",
                "--seed-docs",
                "16",
                "--queries-per-doc",
                "2",
                "--metadata-queries-per-doc",
                "1",
                "--student-layers",
                "3",
                "--epochs",
                "2",
                // four negatives a query (the default is 10): the decoder grades every pair,
                // twice in this test, at a few pairs a second
                "--negatives-per-query",
                "4",
                "--eval-sample",
                "3",
                "--pool-k",
                "5",
                "--seed",
                "3",
                "--teacher-prompt",
                teacher_prompt,
                // the decoder grades alone: this test follows its prompt versions (the default
                // committee is tested by tests/corpus_job.rs and tests/committee.rs)
                "--judges",
                "teacher",
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
    let o = run("grade-v1");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("Agreement with human judgments"),
        "{stdout}"
    );

    let queries = read_jsonl(&out.join("queries.jsonl"));
    assert!(queries.len() >= 5, "{stderr}");
    let docs: std::collections::HashMap<String, serde_json::Value> =
        std::fs::read_to_string(&slice)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["id"].to_string().trim_matches('"').to_string(), v)
            })
            .collect();
    for q in &queries {
        let text = q["query"].as_str().unwrap();
        assert!(q["doc_id"].is_string() && !text.is_empty());
        match q["prompt_version"].as_str().unwrap() {
            "query-v1" => assert!(q.get("metadata_field").is_none()),
            "query-meta-v1" => {
                // a metadata query names its document's author (Cranfield's metadata)
                let field = q["metadata_field"].as_str().unwrap();
                let value = docs[q["doc_id"].as_str().unwrap()][field].as_str().unwrap();
                let lower = text.to_lowercase();
                assert!(
                    value
                        .split(|c: char| !c.is_alphanumeric())
                        .filter(|t| t.len() >= 3)
                        .any(|t| lower.contains(&t.to_lowercase())),
                    "{text} does not name {field} {value}"
                );
            }
            other => panic!("prompt version {other}"),
        }
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
        assert_eq!(l["prompt_version"], "grade-v1");
        assert_eq!(
            l["checkpoint"].as_str().unwrap().len(),
            32,
            "teacher fingerprint"
        );
    }
    // the run is one corpus job, whose outputs are in the store, and whose stages are child
    // jobs: the teacher graded every pair on the embedded cluster's worker, and each grading
    // and query job left its task and result objects in the store
    let (corpus_jobs, jobs): (Vec<_>, Vec<_>) = std::fs::read_dir(out.join("cluster/jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .partition(|j| j.join("outputs").is_dir());
    assert_eq!(corpus_jobs.len(), 1, "{corpus_jobs:?}");
    assert!(corpus_jobs[0]
        .join("outputs/teacher_labels.jsonl")
        .is_file());
    assert!(
        jobs.len() >= 4,
        "synthesis, teacher, teacher (pool), student jobs: {jobs:?}"
    );
    for j in &jobs {
        let n = |d: &str| std::fs::read_dir(j.join(d)).map(|r| r.count()).unwrap_or(0);
        assert!(
            n("tasks") > 0 && n("tasks") == n("results"),
            "{}",
            j.display()
        );
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
    // distilled by the trainer, three layers kept, and pushed to the worker that graded with it
    let ckpt_id = meta["provenance"]["checkpoint_id"].as_str().unwrap();
    assert!(ckpt_id.starts_with("ckpt-"), "{ckpt_id}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 3);
    assert!(out
        .join("cluster/worker-checkpoints/0")
        .join(ckpt_id)
        .join("model.safetensors")
        .is_file());
    // evaluation labels: JSONL and TREC qrels for the same pool
    let eval = read_jsonl(&out.join("eval_student_labels.jsonl"));
    assert!(eval.iter().all(|l| l["checkpoint"] == ckpt_id));
    let qrels = std::fs::read_to_string(out.join("eval_student.qrels")).unwrap();
    assert_eq!(eval.len(), qrels.lines().count());
    assert!(qrels.lines().all(|l| l.split_whitespace().count() == 4));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    // the student learned from its teacher: on held-out queries its expected grades are closer
    // to the teacher's than the majority-class baseline's are
    let (student_err, majority_err) = (
        report["student_heldout_expected_grade_mae"]
            .as_f64()
            .unwrap(),
        report["heldout_majority_expected_grade_mae"]
            .as_f64()
            .unwrap(),
    );
    assert!(
        student_err < majority_err,
        "{student_err} vs {majority_err}"
    );
    let agreement = &report["agreement_with_humans"];
    let rows = agreement["labelers"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "BM25, teacher, student");
    assert!(
        rows[2]["pairs_per_s"].as_f64().unwrap() > rows[1]["pairs_per_s"].as_f64().unwrap(),
        "the student is faster than the teacher"
    );
    for r in &rows[1..] {
        let hours = r["cost_per_million"]["hours_per_million"].as_f64().unwrap();
        assert!(hours > 0.0 && hours.is_finite());
    }
    // the student against its teacher: a paired difference with an interval and a verdict for
    // every measure
    let measures = agreement["student_vs_teacher"]["measures"]
        .as_array()
        .unwrap();
    assert_eq!(measures.len(), 7);
    for m in measures {
        assert!(
            m["verdict"].is_string() && m["ci"]["used"].as_u64().is_some(),
            "{m}"
        );
    }
    assert!(
        stdout.contains("Student against teacher on the same"),
        "{stdout}"
    );
    let png = std::fs::read(out.join("agreement.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // A second run over the same inputs does no model work and writes the same labels.
    let first_labels = std::fs::read_to_string(out.join("teacher_labels.jsonl")).unwrap();
    let first_qrels = std::fs::read_to_string(out.join("eval_student.qrels")).unwrap();
    let again = run("grade-v1");
    let stderr2 = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr2}");
    for line in [
        "model work: query synthesis: 0 documents generated, 16 from cache",
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

    // A new teacher prompt version re-grades with the teacher and redoes what depends on the
    // grades (the student), but writes no query again.
    let v2 = run("grade-v2");
    let stderr3 = String::from_utf8_lossy(&v2.stderr);
    assert!(v2.status.success(), "{stderr3}");
    let n = labels.len();
    for line in [
        "model work: query synthesis: 0 documents generated, 16 from cache".to_string(),
        format!("model work: teacher grading (synthetic pairs): {n} graded, 0 from cache"),
        "model work: distillation: trained checkpoint".to_string(),
    ] {
        assert!(stderr3.contains(&line), "missing `{line}` in:\n{stderr3}");
    }
    let relabeled = read_jsonl(&out.join("teacher_labels.jsonl"));
    assert_eq!(relabeled.len(), n);
    assert!(relabeled.iter().all(|l| l["prompt_version"] == "grade-v2"));
}

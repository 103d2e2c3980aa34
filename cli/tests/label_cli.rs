//! `labelfleet label`: queries over a corpus, BM25 candidates graded by a real model, written as
//! JSONL with provenance and as TREC qrels.

use std::path::PathBuf;
use std::process::Command;

fn cranfield() -> PathBuf {
    let d = std::env::var_os("LABELFLEET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
        .join("cranfield");
    assert!(
        d.join("corpus.jsonl").is_file(),
        "Cranfield not found under {}",
        d.display()
    );
    d
}

#[test]
fn labels_bm25_candidates_with_provenance() {
    let data = cranfield();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let text = std::fs::read_to_string(data.join("corpus.jsonl")).unwrap();
    std::fs::write(
        &corpus,
        text.lines().take(200).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let queries = dir.path().join("q.tsv");
    std::fs::write(
        &queries,
        "a\tboundary layer transition\nb\tbuckling of cylindrical shells\nc\theat transfer in hypersonic flow\n",
    )
    .unwrap();
    let (out, qrels) = (
        dir.path().join("labels.jsonl"),
        dir.path().join("labels.qrels"),
    );
    let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args([
            "label", "--model", "minilm", "--device", "cpu", "--top-k", "5",
        ])
        .arg("--corpus")
        .arg(&corpus)
        .arg("--queries")
        .arg(&queries)
        .arg("--output")
        .arg(&out)
        .arg("--qrels")
        .arg(&qrels)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 15, "3 queries x top-5 candidates");
    let corpus_ids: std::collections::HashSet<String> = text
        .lines()
        .take(200)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .to_string()
                .trim_matches('"')
                .to_string()
        })
        .collect();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["query_id"], ["a", "b", "c"][i / 5]);
        assert_eq!(
            l["bm25_rank"].as_u64().unwrap() as usize,
            i % 5 + 1,
            "ranks in order"
        );
        assert!(corpus_ids.contains(l["doc_id"].as_str().unwrap()));
        let dist: Vec<f64> = l["distribution"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(dist.len(), 4);
        assert!((dist.iter().sum::<f64>() - 1.0).abs() < 1e-4);
        let expected: f64 = dist.iter().enumerate().map(|(g, p)| g as f64 * p).sum();
        assert!((l["expected"].as_f64().unwrap() - expected).abs() < 1e-3);
        assert!(l["model"].as_str().unwrap().starts_with("cross-encoder:"));
        assert_eq!(
            l["checkpoint"].as_str().unwrap().len(),
            32,
            "model fingerprint"
        );
        assert_eq!(l["prompt_version"], "grade-v1");
    }
    // the qrels hold the same labels
    let q = std::fs::read_to_string(&qrels).unwrap();
    let rows: Vec<Vec<&str>> = q.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 15);
    for (r, l) in rows.iter().zip(&lines) {
        assert_eq!(r[0], l["query_id"].as_str().unwrap());
        assert_eq!(r[2], l["doc_id"].as_str().unwrap());
        assert_eq!(r[3], l["grade"].to_string());
    }

    // a queries file with a duplicate id is refused, naming the line and field
    std::fs::write(&queries, "a\tx\na\ty\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args(["label", "--model", "minilm", "--device", "cpu"])
        .arg("--corpus")
        .arg(&corpus)
        .arg("--queries")
        .arg(&queries)
        .arg("--output")
        .arg(dir.path().join("x.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("q.tsv:2: record a: field `id`: duplicate of line 1"),
        "{stderr}"
    );
}

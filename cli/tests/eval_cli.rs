//! `labelfleet eval` joins labels with human qrels and reports the measures of labelfleet-eval.

use std::process::Command;

#[test]
fn eval_scores_jsonl_and_qrels_labels_against_human_qrels() {
    let dir = tempfile::tempdir().unwrap();
    let human = dir.path().join("human.qrels");
    std::fs::write(
        &human,
        "1 0 a 3\n1 0 b 1\n1 0 c 0\n2 0 d 2\n2 0 e 0\n3 0 z 3\n",
    )
    .unwrap();
    // JSONL labels: perfect on query 1, one miss on query 2, plus an unjudged pair
    let labels = dir.path().join("labels.jsonl");
    let rows = [
        r#"{"query_id": "1", "doc_id": "a", "grade": 3, "expected": 2.9}"#,
        r#"{"query_id": "1", "doc_id": "b", "grade": 1, "expected": 1.2}"#,
        r#"{"query_id": "1", "doc_id": "c", "grade": 0, "expected": 0.1}"#,
        r#"{"query_id": 2, "doc_id": "d", "grade": 1, "expected": 1.4}"#,
        r#"{"query_id": "2", "doc_id": "e", "grade": 0, "expected": 0.2}"#,
        r#"{"query_id": "2", "doc_id": "x", "grade": 0, "expected": 0.3}"#,
    ];
    std::fs::write(&labels, rows.join("\n")).unwrap();
    let json = dir.path().join("agreement.json");
    let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args(["eval", "--qrels"])
        .arg(&human)
        .arg("--labels")
        .arg(&labels)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("5 pairs compared; 1 labeled pairs not judged by humans were left out"),
        "{err}"
    );
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(a["pairs"], 5);
    assert_eq!(a["queries"], 2);
    assert!((a["accuracy"].as_f64().unwrap() - 0.8).abs() < 1e-12);
    assert_eq!(
        a["pairwise_accuracy"].as_f64().unwrap(),
        1.0,
        "the scores order every judged pair right"
    );
    assert_eq!(a["confusion"][2][1], 1);

    // the same labels as TREC qrels, with the unjudged pair scored as grade 0 (pooling rule)
    let qrels = dir.path().join("labels.qrels");
    std::fs::write(
        &qrels,
        "1 0 a 3\n1 0 b 1\n1 0 c 0\n2 0 d 1\n2 0 e 0\n2 0 x 0\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args(["eval", "--unjudged-as-zero", "--qrels"])
        .arg(&human)
        .arg("--labels")
        .arg(&qrels)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(
            "6 pairs compared; 1 labeled pairs not judged by humans were scored as grade 0"
        ),
        "{err}"
    );
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(a["pairs"], 6);
    assert!((a["accuracy"].as_f64().unwrap() - 5.0 / 6.0).abs() < 1e-12);

    // a label outside the scale is named
    std::fs::write(&qrels, "1 0 a 7\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args(["eval", "--qrels"])
        .arg(&human)
        .arg("--labels")
        .arg(&qrels)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("label for (1, a) has grade 7, outside 0..3")
    );
}

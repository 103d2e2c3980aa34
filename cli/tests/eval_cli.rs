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

/// 12 queries x 4 documents, every grade once per query.
fn fixture(dir: &std::path::Path) -> (std::path::PathBuf, Vec<(String, String, usize)>) {
    let mut pool = vec![];
    for q in 1..=12 {
        for (i, d) in ["a", "b", "c", "d"].iter().enumerate() {
            pool.push((q.to_string(), d.to_string(), (i + q) % 4));
        }
    }
    let human = dir.join("human.qrels");
    let text: String = pool
        .iter()
        .map(|(q, d, g)| format!("{q} 0 {d} {g}\n"))
        .collect();
    std::fs::write(&human, text).unwrap();
    (human, pool)
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn eval_compares_labelers_with_intervals_verdicts_plot_json_and_cost() {
    let dir = tempfile::tempdir().unwrap();
    let (human, pool) = fixture(dir.path());
    // `good` gives the human grades (JSONL with expected grades); `weak` (qrels) gives them on
    // a third of the queries and inverts them on the others; `copy` is `weak` again
    let good = dir.path().join("good.jsonl");
    let rows: Vec<String> = pool
        .iter()
        .map(|(q, d, g)| {
            format!(
                r#"{{"query_id": "{q}", "doc_id": "{d}", "grade": {g}, "expected": {}}}"#,
                *g as f64 + 0.1
            )
        })
        .collect();
    std::fs::write(&good, rows.join("\n")).unwrap();
    let weak = dir.path().join("weak.qrels");
    let inverted: String = pool
        .iter()
        .map(|(q, d, g)| {
            let grade = if q.parse::<usize>().unwrap() % 3 == 0 {
                *g
            } else {
                3 - g
            };
            format!("{q} 0 {d} {grade}\n")
        })
        .collect();
    std::fs::write(&weak, &inverted).unwrap();
    let copy = dir.path().join("copy.qrels");
    std::fs::write(&copy, &inverted).unwrap();
    let (png, json) = (
        dir.path().join("agreement.png"),
        dir.path().join("agreement.json"),
    );

    let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args(["eval", "--qrels"])
        .arg(&human)
        .arg("--labels")
        .arg(&weak)
        .arg("--labels")
        .arg(&good)
        .arg("--labels")
        .arg(&copy)
        .args(["--name", "weak", "--name", "good"]) // the third keeps its stem, `copy`
        .args(["--pairs-per-s", "weak=2", "--pairs-per-s", "good=34"])
        .args([
            "--price-per-hour",
            "1.5",
            "--resamples",
            "500",
            "--seed",
            "7",
        ])
        .arg("--plot")
        .arg(&png)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(err.contains("good: 48 pairs compared"), "{err}");
    // the measures table, with intervals, and the cost rows
    let row = |name: &str| {
        out.lines()
            .find(|l| l.trim_start_matches(['│', ' ']).starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // weak is right on a third of the queries; its interval has width, good's has none
    let accuracy = row("accuracy");
    assert!(
        accuracy.starts_with("│ accuracy 0.333 [0.")
            && accuracy.contains("] 1.000 [1.000, 1.000] 0.333 [0."),
        "{accuracy}"
    );
    assert!(
        out.contains("over 500 resamples of the queries (seed 7)"),
        "{out}"
    );
    assert!(out.contains("USD / M labels"), "{out}");
    assert!(
        out.contains("good: 17.0x the throughput of weak, 17.0x cheaper per label"),
        "{out}"
    );
    // the verdicts against the baseline (the first labeler)
    assert!(
        out.contains("good vs weak (baseline), paired on 48 pairs of 12 queries"),
        "{out}"
    );
    assert!(
        out.contains("| good better") || out.contains("good better"),
        "{out}"
    );
    assert!(out.contains("verdict: good agrees with the human judges at least as well as weak (non-inferior at margin 0.05) on 7 of 7 measures"), "{out}");
    assert!(out.contains("copy vs weak (baseline)"), "{out}");
    assert!(out.contains("+0.000 [+0.000, +0.000]"), "{out}");
    assert!(out.contains("verdict: copy agrees with the human judges at least as well as weak (non-inferior at margin 0.05) on 7 of 7 measures"), "{out}");

    // the figure: a PNG three panels wide
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), (1800, 1100));
    // the JSON: the baseline's measures on top, then everything
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(a["pairs"], 48);
    assert!((a["accuracy"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(a["baseline"], "weak");
    assert_eq!(a["bootstrap"]["resamples"], 500);
    let labelers = a["labelers"].as_array().unwrap();
    assert_eq!(labelers.len(), 3);
    assert_eq!(labelers[1]["name"], "good");
    assert_eq!(labelers[1]["agreement"]["confusion"][2][2], 12);
    assert_eq!(labelers[1]["measures"][0]["measure"], "accuracy");
    assert_eq!(labelers[1]["measures"][0]["ci"]["used"], 500);
    assert!(
        (labelers[1]["calibration"][3]["mean_score"]
            .as_f64()
            .unwrap()
            - 3.1)
            .abs()
            < 1e-9
    );
    assert!(
        (labelers[1]["throughput"]["cost"]["usd_per_million"]
            .as_f64()
            .unwrap()
            - 1.5 * 1e6 / 34.0 / 3600.0)
            .abs()
            < 1e-9
    );
    let cmp = &a["comparisons"][0];
    assert_eq!(
        (cmp["baseline"].as_str(), cmp["labeler"].as_str()),
        (Some("weak"), Some("good"))
    );
    for m in cmp["measures"].as_array().unwrap() {
        assert_eq!(m["verdict"], "better", "{m}");
        assert!(m["ci"]["lo"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert!((cmp["cost_ratio"]["speedup"].as_f64().unwrap() - 17.0).abs() < 1e-9);
    assert_eq!(a["comparisons"][1]["measures"][0]["verdict"], "on_par");

    // another baseline, by name: weak is then worse than good
    let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args(["eval", "--qrels"])
        .arg(&human)
        .arg("--labels")
        .arg(&weak)
        .arg("--labels")
        .arg(&good)
        .args(["--baseline", "good", "--resamples", "300"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("weak vs good (baseline)"), "{out}");
    assert!(out.contains("weak worse"), "{out}");
}

#[test]
fn eval_names_bad_options_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (human, _) = fixture(dir.path());
    let labels = dir.path().join("labels.qrels");
    let run = |labels_text: &str, extra: &[&str]| {
        std::fs::write(&labels, labels_text).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_labelfleet"))
            .args(["eval", "--qrels"])
            .arg(&human)
            .arg("--labels")
            .arg(&labels)
            .args(extra)
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let ok = "1 0 a 1\n1 0 b 2\n";
    let err = run("1 0 a 1\n1 0 b 2\n1 0 a 3\n", &[]);
    assert!(
        err.contains("labels.qrels:3: pair (1, a) is already labeled on line 1"),
        "{err}"
    );
    let err = run(r#"{"query_id": "1", "doc_id": "a", "grade": "high"}"#, &[]);
    assert!(err.contains("labels.qrels:1: field `grade`"), "{err}");
    let err = run("1 0 a 1\n1 0 b 5\n", &[]);
    assert!(
        err.contains("labels.qrels:2: field `grade`: label for (1, b) has grade 5, outside 0..3"),
        "{err}"
    );
    let err = run(ok, &["--pairs-per-s", "nobody=3"]);
    assert!(
        err.contains("--pairs-per-s `nobody=3`: no labeler named `nobody` (labelers: labels)"),
        "{err}"
    );
    let err = run(ok, &["--pairs-per-s", "labels=fast"]);
    assert!(err.contains("`fast` is not a number"), "{err}");
    let err = run(ok, &["--name", "a", "--name", "b"]);
    assert!(err.contains("2 --name for 1 --labels"), "{err}");
    let err = run(ok, &["--baseline", "7"]);
    assert!(
        err.contains("--baseline `7`: no labeler of that name or index"),
        "{err}"
    );
}

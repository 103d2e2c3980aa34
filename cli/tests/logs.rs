//! What `kubectl logs` sees: with stderr not a terminal, long work prints progress lines at a
//! steady interval (done, rate, ETA), logs carry no colour codes, and `--log-format json`
//! writes one JSON object per log line.

mod common;

use std::process::Command;

/// 120 Cranfield (query, document) pairs as a score input.
fn pairs_file(dir: &std::path::Path) -> std::path::PathBuf {
    let corpus =
        std::fs::read_to_string(common::data_dir().join("cranfield/corpus.jsonl")).unwrap();
    let path = dir.join("pairs.jsonl");
    let mut lines = vec![];
    for (i, line) in corpus.lines().take(125).enumerate() {
        let d: serde_json::Value = serde_json::from_str(line).unwrap();
        if d["body"].as_str().is_some_and(|b| !b.trim().is_empty()) {
            lines.push(
                serde_json::json!({"id": format!("p{i}"), "query": "heat transfer in boundary layers",
                    "title": d["title"], "body": d["body"]})
                .to_string(),
            );
        }
    }
    lines.truncate(120);
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn score(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let input = pairs_file(dir);
    let output = dir.join("grades.jsonl");
    Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args(["score", "--model", "minilm", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .args(extra)
        .env("LABELFLEET_PROGRESS_INTERVAL", "0.3")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .output()
        .expect("labelfleet score")
}

#[test]
fn progress_lines_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = score(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progress grading: "))
        .collect();
    assert!(
        lines.len() >= 2,
        "steady progress lines expected:\n{stderr}"
    );
    // counts never go back, and the last line says the work is done
    let done: Vec<u64> = lines
        .iter()
        .map(|l| {
            let field = l.trim_start_matches("progress grading: ");
            field.split('/').next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("120/120 (100.0%)") && last.ends_with(" done"),
        "{last}"
    );
    assert!(lines.iter().any(|l| l.contains("/s")), "a rate: {lines:?}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes off a terminal:\n{stderr}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = score(dir.path(), &["--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let loaded = logs
        .iter()
        .find(|l| l["fields"]["message"] == "model loaded")
        .unwrap_or_else(|| panic!("the model-loaded log line:\n{stderr}"));
    assert_eq!(loaded["level"], "INFO");
    assert!(
        loaded["fields"]["model"]
            .as_str()
            .is_some_and(|m| m.contains("all-minilm-l6-v2")),
        "{loaded}"
    );
    assert!(loaded["fields"]["seconds"].as_f64().is_some(), "{loaded}");
}

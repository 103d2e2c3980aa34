//! Bad input through the real binary: every error names what is wrong, and the records that
//! were fine are still graded and written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn labelfleet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labelfleet"))
        .args(args)
        .output()
        .expect("run labelfleet")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn model(name: &str) -> PathBuf {
    let dir = labelfleet_slm::resolve_model(name);
    assert!(
        dir.join("config.json").is_file(),
        "{} missing: run `bash scripts/setup.sh`",
        dir.display()
    );
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn pair(id: &str, query: &str, body: &str) -> String {
    serde_json::json!({"id": id, "query": query, "title": "Doc", "body": body}).to_string()
}

#[test]
fn bad_records_are_named_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.jsonl");
    let huge = "lift ".repeat(1024 * 1024 / 5 + 1);
    let lines = [
        pair("ok-1", "wing lift", "the lift of a wing in a slipstream"),
        pair("empty-query", "  ", "some text"),
        "{\"id\": \"broken\", \"query\": ".to_string(),
        pair("huge-doc", "lift", &huge),
        serde_json::json!({"query": "no id here", "body": "x"}).to_string(),
        serde_json::json!({"id": "empty-doc", "query": "lift", "body": " "}).to_string(),
        pair("ok-2", "heat transfer", "heat transfer in hypersonic flow"),
    ];
    write(&input, &(lines.join("\n") + "\n"));
    let out = dir.path().join("grades.jsonl");
    let rejects = dir.path().join("rejects.jsonl");
    let o = labelfleet(&[
        "score",
        "--model",
        model("all-minilm-l6-v2").to_str().unwrap(),
        "--device",
        "cpu",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--rejects",
        rejects.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(3),
        "rejects make the exit code 3: {err}"
    );
    assert!(
        err.contains("pairs.jsonl:2: record empty-query: field `query`: empty"),
        "{err}"
    );
    assert!(
        err.contains("pairs.jsonl:3: EOF while parsing a value at column 26"),
        "malformed JSON names its line: {err}"
    );
    assert!(
        err.contains("record huge-doc: field `body`") && err.contains("over the limit"),
        "{err}"
    );
    assert!(
        err.contains("pairs.jsonl:5: missing field `id` at column 33"),
        "{err}"
    );
    assert!(
        err.contains("record empty-doc: field `body`: empty document"),
        "{err}"
    );
    assert!(err.contains("5 record(s) rejected"), "{err}");
    let graded: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = graded.iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        vec!["ok-1", "ok-2"],
        "accepted records are all written, in order"
    );
    for g in &graded {
        let p: f64 = g["distribution"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-4);
        assert!(g["grade"].as_u64().unwrap() < 4);
    }
    assert_eq!(
        std::fs::read_to_string(&rejects).unwrap().lines().count(),
        5
    );
}

#[test]
fn missing_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("p.jsonl");
    write(&input, &pair("a", "q", "d"));
    let o = labelfleet(&[
        "score",
        "--model",
        dir.path().join("nowhere").to_str().unwrap(),
        "--device",
        "cpu",
        "--input",
        input.to_str().unwrap(),
        "--output",
        "-",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nowhere/config.json"), "{}", stderr(&o));

    let o = labelfleet(&[
        "score",
        "--model",
        "minilm",
        "--device",
        "cpu",
        "--input",
        dir.path().join("absent.jsonl").to_str().unwrap(),
        "--output",
        "-",
    ]);
    assert!(
        stderr(&o).contains("absent.jsonl: No such file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn wrong_config_and_mismatched_tokenizer_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("p.jsonl");
    write(&input, &pair("a", "q", "d"));
    // an unsupported architecture
    let gpt2 = dir.path().join("gpt2");
    std::fs::create_dir(&gpt2).unwrap();
    write(
        &gpt2.join("config.json"),
        r#"{"model_type": "gpt2", "n_embd": 768}"#,
    );
    let o = labelfleet(&[
        "score",
        "--model",
        gpt2.to_str().unwrap(),
        "--device",
        "cpu",
        "--input",
        input.to_str().unwrap(),
        "--output",
        "-",
    ]);
    assert!(
        stderr(&o).contains("model_type `gpt2` is not supported"),
        "{}",
        stderr(&o)
    );

    // SmolLM2 weights with MiniLM's tokenizer
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    let smol = model("smollm2-135m-instruct");
    for f in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(smol.join(f), mixed.join(f)).unwrap();
    }
    std::fs::copy(
        model("all-minilm-l6-v2").join("tokenizer.json"),
        mixed.join("tokenizer.json"),
    )
    .unwrap();
    let o = labelfleet(&[
        "score",
        "--model",
        mixed.to_str().unwrap(),
        "--device",
        "cpu",
        "--input",
        input.to_str().unwrap(),
        "--output",
        "-",
    ]);
    assert!(
        stderr(&o)
            .contains("does not match the model: 30522 tokens, the model's vocab_size is 49152"),
        "{}",
        stderr(&o)
    );

    // a config whose shapes disagree with the weights
    let shrunk = dir.path().join("shrunk");
    std::fs::create_dir(&shrunk).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(smol.join("config.json")).unwrap()).unwrap();
    cfg["intermediate_size"] = serde_json::json!(1024);
    write(&shrunk.join("config.json"), &cfg.to_string());
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::os::unix::fs::symlink(smol.join(f), shrunk.join(f)).unwrap();
    }
    let o = labelfleet(&[
        "score",
        "--model",
        shrunk.to_str().unwrap(),
        "--device",
        "cpu",
        "--input",
        input.to_str().unwrap(),
        "--output",
        "-",
    ]);
    let e = stderr(&o);
    assert!(e.contains("tensor `model.layers.0.mlp.down_proj.weight`: shape [576, 1536] in the file, the config implies [576, 1024]"), "{e}");
}

#[test]
fn unavailable_device_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("p.jsonl");
    write(&input, &pair("a", "q", "d"));
    let o = labelfleet(&[
        "score",
        "--model",
        "minilm",
        "--device",
        "cuda:7",
        "--input",
        input.to_str().unwrap(),
        "--output",
        "-",
    ]);
    assert!(
        stderr(&o).contains("device cuda:7 requested but"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn generate_writes_queries_for_documents() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.jsonl");
    let docs = [
        serde_json::json!({"id": "hr-1", "title": "Parental leave policy", "body": "Employees may take 16 weeks of paid parental leave. Apply through the HR portal at least 8 weeks before.", "metadata": {"author": "People team", "path": "/hr/policies/parental-leave.md"}}),
        serde_json::json!({"id": "empty", "body": ""}),
        serde_json::json!({"id": "it-7", "title": "VPN setup", "body": "Install the client, sign in with your SSO account, and choose the nearest gateway."}),
    ];
    write(
        &input,
        &docs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let out = dir.path().join("queries.jsonl");
    let o = labelfleet(&[
        "generate",
        "--model",
        "smollm2",
        "--device",
        "cpu",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        // SmolLM2-135M's queries are often dropped by the filters (chatter, not grounded in
        // the document): 6 per document keep some whatever the sampler draws
        "--per-doc",
        "6",
        "--max-new-tokens",
        "24",
        "--seed",
        "1",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("record empty: field `body`: empty document"),
        "{err}"
    );
    let queries: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!queries.is_empty(), "no queries written: {err}");
    for q in &queries {
        let text = q["query"].as_str().unwrap();
        assert!(["hr-1", "it-7"].contains(&q["doc_id"].as_str().unwrap()));
        assert!(
            (2..=16).contains(&text.split_whitespace().count()),
            "{text}"
        );
        match q["prompt_version"].as_str().unwrap() {
            "query-v1" => assert!(q.get("metadata_field").is_none(), "{q}"),
            // a metadata query names the field it was asked for
            "query-meta-v1" => assert!(q["metadata_field"].is_string(), "{q}"),
            other => panic!("prompt version {other}"),
        }
    }
}

//! What a student checkpoint tells its users, and how it leaves labelfleet:
//!
//! - [`model_card`]: the `README.md` of a checkpoint (base model, teacher, data, measured
//!   agreement and throughput, input format, intended use), rendered from its provenance;
//! - [`export_reranker`]: the student as a one-score reranker for sentence-transformers'
//!   `CrossEncoder`: the score is the expected grade, the sum of grade x probability over the
//!   student's 0-3 head, computed in the model's forward (a small `modeling_labelfleet.py`
//!   loaded with `trust_remote_code=True`). The expected grade is not a linear function of the
//!   encoder's output, so no single linear logit ranks as it does: servers that run only stock
//!   architectures (TEI's `/rerank`) cannot serve it exactly, and the card says so.

use crate::error::{Result, SlmError};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

/// The Python class of the exported reranker (loaded by `transformers` as remote code).
const MODELING: &str = include_str!("modeling_labelfleet.py");

/// Files of a checkpoint the reranker export takes as they are.
const COPIED: &[&str] = &[
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "labelfleet.json",
];

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| SlmError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| SlmError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| SlmError::io(path, e))
}

/// Measured figures the card reports beside the checkpoint's own provenance.
#[derive(Debug, Clone, Default)]
pub struct CardFigures {
    /// The teacher whose grades the student learned (model and prompt version).
    pub teacher: Option<String>,
    /// Agreement with human judgments: (measure, teacher, student) rows, and what was judged.
    pub human_agreement: Vec<(String, f64, f64)>,
    pub human_agreement_on: Option<String>,
    /// Pairs per second of the student and of the teacher, and on what.
    pub throughput: Option<(f64, f64, String)>,
}

/// The model card of a cross-encoder checkpoint: its provenance (`labelfleet.json`) and any
/// measured figures, in Markdown.
pub fn model_card(labelfleet_json: &Value, figures: &CardFigures) -> String {
    let p = &labelfleet_json["provenance"];
    let grades = labelfleet_json["grade_labels"]
        .as_array()
        .map_or(4, |g| g.len());
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "not recorded".to_string(),
        other => other.to_string(),
    };
    let mut s = String::new();
    let _ = writeln!(s, "---\nlibrary_name: transformers\npipeline_tag: text-classification\ntags: [labelfleet, cross-encoder, relevance, reranker]\n---\n");
    let _ = writeln!(
        s,
        "# labelfleet student: a search-relevance cross-encoder\n"
    );
    let _ = writeln!(s, "Grades a (query, document) pair on a 0-{} relevance scale, as a distribution over the grades. Distilled by labelfleet from a teacher's grade distributions (soft labels).\n", grades - 1);
    let _ = writeln!(s, "## Provenance\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| base model | {} |", text(&p["base"]));
    let _ = writeln!(
        s,
        "| teacher | {} |",
        figures
            .teacher
            .as_deref()
            .unwrap_or("see the distillation dataset")
    );
    let _ = writeln!(s, "| distillation dataset | {} |", text(&p["dataset"]));
    let _ = writeln!(
        s,
        "| training pairs / held-out pairs | {} / {} |",
        text(&p["train_pairs"]),
        text(&p["heldout_pairs"])
    );
    let _ = writeln!(s, "| training run | {} |", text(&p["run_id"]));
    let _ = writeln!(
        s,
        "| grading prompt of the teacher | {} |",
        text(&labelfleet_json["prompt_version"])
    );
    let _ = writeln!(s, "\n## Measured\n");
    let _ = writeln!(s, "- Agreement with the teacher on held-out synthetic queries: {} (top grade; the majority class scores {}); expected-grade error {} (majority class {}).", num(&p["heldout_agreement_with_teacher"]), num(&p["majority_baseline"]), num(&p["heldout_expected_grade_mae"]), num(&p["majority_expected_grade_mae"]));
    if !figures.human_agreement.is_empty() {
        let _ = writeln!(
            s,
            "- Agreement with human judgments ({}):\n",
            figures
                .human_agreement_on
                .as_deref()
                .unwrap_or("an evaluation pool")
        );
        let _ = writeln!(s, "  | measure | teacher | student |\n  |---|---|---|");
        for (m, t, st) in &figures.human_agreement {
            let _ = writeln!(s, "  | {m} | {t:.3} | {st:.3} |");
        }
    }
    if let Some((student, teacher, on)) = &figures.throughput {
        let _ = writeln!(s, "- Throughput on {on}: student {student:.1} pairs/s, teacher {teacher:.1} pairs/s ({:.1}x).", student / teacher.max(1e-9));
    }
    let _ = writeln!(s, "\n## Input format\n");
    let _ = writeln!(s, "A BERT pair input: `[CLS] query [SEP] document [SEP]`, token types 0 then 1. The query is trimmed and never cut; the document is cut to fit the model's length. The document text is its title and metadata lines, then its body:\n\n```\nTitle: <title>\n<metadata key>: <value>     (one line per non-empty field, keys in sorted order)\n<body>\n```\n\nThe head has {grades} logits, one per grade 0-{}; softmax gives the grade distribution, and the expected grade (sum of grade x probability) is the relevance score.", grades - 1);
    let _ = writeln!(s, "\n## Use\n");
    let _ = writeln!(s, "- With labelfleet: `labelfleet score --model <this folder>`, `labelfleet label --model <this folder>`, or as a cluster checkpoint.");
    let _ = writeln!(s, "- In Python: `transformers.AutoModelForSequenceClassification` loads it as `BertForSequenceClassification` with {grades} labels.");
    let _ = writeln!(s, "- As a one-score reranker: `labelfleet export-reranker --checkpoint <this folder> --output <dir>` writes a folder that sentence-transformers' `CrossEncoder(<dir>, trust_remote_code=True)` loads, scoring by the expected grade.");
    let _ = writeln!(s, "\nIntended use: labeling and reranking search results for the kind of corpus and queries it was distilled on. Its grades are only as good as its teacher's: check agreement with human judgments on your own data (`labelfleet eval`) before trusting them.");
    s
}

fn num(v: &Value) -> String {
    v.as_f64()
        .map_or("not recorded".into(), |x| format!("{x:.3}"))
}

/// Writes the reranker export of a cross-encoder checkpoint to `out`; returns the number of
/// grades of its head.
pub fn export_reranker(checkpoint: &Path, out: &Path) -> Result<usize> {
    let lf = read_json(&checkpoint.join("labelfleet.json"))?;
    if lf["kind"] != "cross-encoder" {
        return Err(SlmError::Config {
            path: checkpoint.join("labelfleet.json"),
            message: format!(
                "kind {}: only a cross-encoder student exports as a reranker",
                lf["kind"]
            ),
        });
    }
    let mut config = read_json(&checkpoint.join("config.json"))?;
    let grades = config["num_labels"]
        .as_u64()
        .filter(|&n| n >= 2)
        .ok_or_else(|| SlmError::Config {
            path: checkpoint.join("config.json"),
            message: "num_labels: a grade head of at least 2 grades is needed".into(),
        })? as usize;
    std::fs::create_dir_all(out).map_err(|e| SlmError::io(out, e))?;
    for f in COPIED {
        let src = checkpoint.join(f);
        if src.is_file() {
            std::fs::copy(&src, out.join(f)).map_err(|e| SlmError::io(&src, e))?;
        }
    }
    config["architectures"] = json!(["LabelfleetExpectedGrade"]);
    config["auto_map"] = json!({
        "AutoModelForSequenceClassification": "modeling_labelfleet.LabelfleetExpectedGrade"
    });
    config["labelfleet_num_grades"] = json!(grades);
    config["num_labels"] = json!(1);
    config["id2label"] = json!({"0": "expected_grade"});
    config["label2id"] = json!({"expected_grade": 0});
    // CrossEncoder returns the score as it is (no sigmoid): the expected grade, 0..grades-1
    config["sentence_transformers"] = json!({"activation_fn": "torch.nn.modules.linear.Identity"});
    let config_text = serde_json::to_string_pretty(&config).expect("JSON values serialize");
    write_text(&out.join("config.json"), &config_text)?;
    write_text(&out.join("modeling_labelfleet.py"), MODELING)?;
    let mut card = match read_json(&checkpoint.join("labelfleet.json")) {
        Ok(v) => model_card(&v, &CardFigures::default()),
        Err(_) => String::new(),
    };
    let readme = checkpoint.join("README.md");
    if readme.is_file() {
        card = std::fs::read_to_string(&readme).map_err(|e| SlmError::io(&readme, e))?;
    }
    card.push_str(&format!(
        "\n## This export: a one-score reranker\n\n```python\nfrom sentence_transformers import CrossEncoder\nmodel = CrossEncoder(\"<this folder>\", trust_remote_code=True)\nmodel.rank(\"vpn setup\", [document_text_1, document_text_2])  # score = expected grade, 0-{}\n```\n\nThe score is computed in `modeling_labelfleet.py` from the {grades}-grade head. Servers that run only stock architectures (TEI's `/rerank`) cannot load it: the expected grade is not one linear logit. For those, serve the checkpoint itself as a {grades}-label classifier and take the expected grade from its probabilities.\n",
        grades - 1
    ));
    write_text(&out.join("README.md"), &card)?;
    Ok(grades)
}

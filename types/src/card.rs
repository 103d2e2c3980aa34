//! The model card (`README.md`) of a student checkpoint: base model, teacher, data, measured
//! agreement and throughput, input format and intended use, rendered from the checkpoint's
//! provenance (`labelfleet.json`) and whatever was measured after training.

use serde_json::Value;
use std::fmt::Write as _;

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
    if let Some(prompt) = labelfleet_json["prompt_version"].as_str() {
        let _ = writeln!(s, "| grading prompt of the teacher | {prompt} |");
    }
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

//! What a student checkpoint tells its users, and how it leaves labelfleet:
//!
//! - the `README.md` of a checkpoint is [`labelfleet_types::card::model_card`] (torch-free, so
//!   the pipeline can complete it with the agreement it measured);
//! - [`export_reranker`]: the student as a one-score reranker for sentence-transformers'
//!   `CrossEncoder`: the score is the expected grade, the sum of grade x probability over the
//!   student's 0-3 head, computed in the model's forward (a small `modeling_labelfleet.py`
//!   loaded with `trust_remote_code=True`). The expected grade is not a linear function of the
//!   encoder's output, so no single linear logit ranks as it does: servers that run only stock
//!   architectures (TEI's `/rerank`) cannot serve it exactly, and the card says so.

use crate::config::read_json;
use crate::error::{Result, SlmError};
use serde_json::json;
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

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| SlmError::io(path, e))
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
    // the checkpoint's own card when it has one (it may carry measured figures)
    let readme = checkpoint.join("README.md");
    let mut card = match readme.is_file() {
        true => std::fs::read_to_string(&readme).map_err(|e| SlmError::io(&readme, e))?,
        false => labelfleet_types::card::model_card(&lf, &Default::default()),
    };
    card.push_str(&format!(
        "\n## This export: a one-score reranker\n\n```python\nfrom sentence_transformers import CrossEncoder\nmodel = CrossEncoder(\"<this folder>\", trust_remote_code=True)\nmodel.rank(\"vpn setup\", [document_text_1, document_text_2])  # score = expected grade, 0-{}\n```\n\nThe score is computed in `modeling_labelfleet.py` from the {grades}-grade head. Servers that run only stock architectures (TEI's `/rerank`) cannot load it: the expected grade is not one linear logit. For those, serve the checkpoint itself as a {grades}-label classifier and take the expected grade from its probabilities.\n",
        grades - 1
    ));
    write_text(&out.join("README.md"), &card)?;
    Ok(grades)
}
